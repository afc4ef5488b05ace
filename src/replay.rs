//! Replay: the daemon itself, driven in time order over recorded
//! observations and bounces, with no network. A [`Monitor`] that asks
//! nothing takes each recorded check through the same resolver-health and
//! domain detectors and the same writer as a live check; bounces go through
//! the writer's intake, where the daemon judges them, counts them for
//! anomalies and reinstates what late windows cover. It all lands in a
//! temporary database, so replay and the daemon cannot drift apart: there
//! is one implementation (a test feeds both the same and compares every
//! verdict).
//!
//! Each bounce gets the verdict the daemon gave when it arrived
//! (`initial`) and the verdict in the light of everything recorded
//! (`final`): windows found late (an anomaly recognised after N bounces, an
//! outage noticed after it began) turn early suppressions into
//! reinstatements.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::bounce::{Bounce, Delivered, Kind};
use crate::config::{Config, WatchedDomain};
use crate::dns::{Observation, Outcome};
use crate::domain::{DomainName, Mx, MxHost};
use crate::monitor::Monitor;
use crate::store::{self, Knowledge, Store, Writer};
use crate::verdict::{Judgement, Verdict};

/// One line of OBS.jsonl.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObservationLine {
    pub domain: String,
    pub at: DateTime<Utc>,
    #[serde(default)]
    pub upstream: Option<String>,
    pub outcome: String,
    #[serde(default)]
    pub mx: Vec<MxLine>,
    #[serde(default)]
    pub ttl: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MxLine {
    pub preference: u16,
    pub exchange: String,
}

/// A parsed observation: which domain, when, what.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub domain: DomainName,
    pub at: DateTime<Utc>,
    pub observation: Observation,
}

/// Reads OBS.jsonl: good lines, and `(line, message)` for bad ones.
pub fn read_observations(text: &str) -> (Vec<Recorded>, Vec<(usize, String)>) {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parsed = serde_json::from_str::<ObservationLine>(line)
            .map_err(|e| e.to_string())
            .and_then(|l| {
                let domain = DomainName::parse(&l.domain).map_err(|e| e.to_string())?;
                let outcome: Outcome = l.outcome.parse()?;
                let mut mx = Vec::new();
                for m in &l.mx {
                    mx.push(Mx {
                        preference: m.preference,
                        exchange: MxHost::parse(&m.exchange).map_err(|e| e.to_string())?,
                    });
                }
                let upstream = l.upstream.unwrap_or_else(|| "recorded".into());
                let observation = match outcome {
                    Outcome::Records | Outcome::NullMx => {
                        Observation::from_records(&upstream, mx, l.ttl)
                    }
                    other => Observation {
                        upstream,
                        outcome: other,
                        mx: vec![],
                        ttl: l.ttl,
                        implicit_mx: false,
                        detail: None,
                    },
                };
                Ok(Recorded {
                    domain,
                    at: l.at,
                    observation,
                })
            });
        match parsed {
            Ok(r) => out.push(r),
            Err(e) => problems.push((i + 1, e)),
        }
    }
    (out, problems)
}

/// One bounce's outcome.
#[derive(Debug, Clone)]
pub struct Replayed {
    pub bounce: Bounce,
    /// What the daemon answered when the bounce arrived.
    pub initial: Judgement,
    /// With every window the recording reveals.
    pub final_judgement: Judgement,
}

impl Replayed {
    /// Suppressed when it arrived, not in hindsight.
    pub fn is_reinstatement(&self) -> bool {
        self.initial.verdict == Verdict::Suppress
            && self.final_judgement.verdict != Verdict::Suppress
    }
}

/// Totals for the summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub bounces: usize,
    /// Hard bounces a conventional handler would suppress that the final
    /// verdict does not.
    pub prevented: usize,
    pub reinstatements: usize,
}

/// What happens next in the recording.
enum Step<'a> {
    Check(DateTime<Utc>, &'a DomainName, Vec<Observation>),
    /// Bounces (indexes into the input) between two checks.
    Bounces(Vec<usize>),
}

/// The recording in time order: checks (the observations of one domain at
/// one moment, all upstreams) and, between them, the bounces that came
/// before the next check (a bounce at a check's moment comes after it;
/// bounces without a time come last).
fn steps<'a>(observations: &'a [Recorded], bounces: &[Bounce]) -> Vec<Step<'a>> {
    // Checks: the observations of one domain at one moment, all upstreams.
    let mut checks: Vec<(DateTime<Utc>, &DomainName, Vec<Observation>)> = Vec::new();
    let mut index: HashMap<(&DomainName, DateTime<Utc>), usize> = HashMap::new();
    for r in observations {
        match index.get(&(&r.domain, r.at)) {
            Some(&i) => checks[i].2.push(r.observation.clone()),
            None => {
                index.insert((&r.domain, r.at), checks.len());
                checks.push((r.at, &r.domain, vec![r.observation.clone()]));
            }
        }
    }
    checks.sort_by_key(|c| c.0);
    let mut order: Vec<usize> = (0..bounces.len()).collect();
    order.sort_by_key(|&i| (bounces[i].at.is_none(), bounces[i].at));
    let mut steps: Vec<Step> = Vec::new();
    let mut pending: Vec<usize> = Vec::new();
    let mut checks = checks.into_iter().peekable();
    for i in order {
        while let Some(c) = checks.next_if(|c| bounces[i].at.is_none_or(|at| c.0 <= at)) {
            if !pending.is_empty() {
                steps.push(Step::Bounces(std::mem::take(&mut pending)));
            }
            steps.push(Step::Check(c.0, c.1, c.2));
        }
        pending.push(i);
    }
    if !pending.is_empty() {
        steps.push(Step::Bounces(pending));
    }
    steps.extend(checks.map(|c| Step::Check(c.0, c.1, c.2)));

    steps
}

/// How many bounces one writer batch takes at most.
const BATCH: usize = 5_000;

/// Replays `observations` and `bounces` in time order through the daemon's
/// own code (a bounce at the same moment as a check comes after it; bounces
/// without a time come last). `config` gives the watchlist's settings (and
/// a recorded domain's own entry, when it has one); the watched set is the
/// domains the recording checks, and only those: a domain the watchlist
/// names but the recording never checked would count as one that must
/// vouch for our resolver and never does.
pub async fn replay(
    config: &Config,
    observations: &[Recorded],
    bounces: &[Bounce],
    delivered: &[Delivered],
    passive: &[crate::passive::Sighting],
) -> anyhow::Result<(Vec<Replayed>, Summary)> {
    let dir = tempfile::tempdir()?;
    let mut config = config.clone();
    config.database = dir.path().join("replay.db");
    config.domains = recorded_domains(&config.domains, observations);
    let (initial, last) = feed(&config, observations, bounces, delivered, passive).await?;
    let store = Store::open(&config.database)?;
    Ok(hindsight(
        &store,
        &config.judging(),
        bounces,
        initial,
        last,
    )?)
}

/// The domains a recording checks, each with its watchlist entry when it
/// has one, in the order first checked.
fn recorded_domains(listed: &[WatchedDomain], observations: &[Recorded]) -> Vec<WatchedDomain> {
    let mut out: Vec<WatchedDomain> = Vec::new();
    for r in observations {
        if out.iter().any(|d| d.name == r.domain) {
            continue;
        }
        out.push(
            listed
                .iter()
                .find(|d| d.name == r.domain)
                .cloned()
                .unwrap_or_else(|| WatchedDomain {
                    name: r.domain.clone(),
                    schedule: None,
                    tags: Vec::new(),
                    expect: Vec::new(),
                }),
        );
    }
    out
}

/// Feeds the recording through a monitor and a writer of its own, as
/// the daemon would have met it; returns each bounce's verdict on arrival
/// and the recording's last moment.
async fn feed(
    config: &Config,
    observations: &[Recorded],
    bounces: &[Bounce],
    delivered: &[Delivered],
    passive: &[crate::passive::Sighting],
) -> anyhow::Result<(Vec<Judgement>, DateTime<Utc>)> {
    // Deliveries go with the bounces of their time (undated ones last).
    let mut delivered = delivered.to_vec();
    delivered.sort_by_key(|d| (d.at.is_none(), d.at));
    let mut delivered = delivered.into_iter().peekable();
    let lock = store::MonitorLock::acquire(&config.database)?;
    let (writer, writer_task) = Writer::start(&config.database, config.judging())?;
    // Passive DNS is history from before the recording: stored first.
    if !passive.is_empty() {
        let mut sightings = passive.to_vec();
        let excursions = crate::passive::all_excursions(&mut sightings);
        let now = crate::clock::Clock::now(&crate::clock::SystemClock);
        writer.passive(sightings, excursions, now).await?;
    }
    let clock: Arc<dyn crate::clock::Clock> = Arc::new(crate::clock::SystemClock);
    let monitor = Monitor::recorded(
        &config.monitoring(),
        writer.clone(),
        store::Memory::default(),
        clock,
        lock,
    );
    let mut initial: Vec<Option<Judgement>> = vec![None; bounces.len()];
    let mut last = DateTime::<Utc>::MIN_UTC;
    for step in steps(observations, bounces) {
        match step {
            Step::Check(at, domain, obs) => {
                last = last.max(at);
                monitor.record(domain, at, obs).await?;
            }
            Step::Bounces(list) => {
                for chunk in list.chunks(BATCH) {
                    let batch: Vec<Bounce> = chunk.iter().map(|&i| bounces[i].clone()).collect();
                    let now = latest(batch.iter().filter_map(|b| b.at), last);
                    last = now;
                    let mut sent = Vec::new();
                    while let Some(d) = delivered.next_if(|d| d.at.is_some_and(|at| at <= now)) {
                        sent.push(d);
                    }
                    let intake = writer.feed(batch, sent, now).await?;
                    for (&i, j) in chunk.iter().zip(intake.judgements) {
                        initial[i] = Some(j);
                    }
                }
            }
        }
    }
    let rest: Vec<Delivered> = delivered.collect();
    if !rest.is_empty() {
        let now = latest(rest.iter().filter_map(|d| d.at), last);
        writer.feed(Vec::new(), rest, now).await?;
    }
    // The recording is over: bursts whose bounces stopped end, as the
    // daemon's tick would end them.
    let after = last
        .checked_add_signed(chrono::Duration::from_std(config.anomaly.window).unwrap_or_default())
        .unwrap_or(last);
    writer.tick(after).await?;
    writer.flush().await?;
    drop(monitor);
    writer.close().await?;
    drop(writer);
    writer_task.await?;
    let initial = initial
        .into_iter()
        .map(|j| j.expect("every bounce judged"))
        .collect();
    Ok((initial, last))
}

/// The latest of `times` and `last`: the moment a batch is fed at (time
/// never runs backwards in a replay).
fn latest(times: impl Iterator<Item = DateTime<Utc>>, last: DateTime<Utc>) -> DateTime<Utc> {
    times.max().unwrap_or(last).max(last)
}

/// Each bounce judged again with everything the recording taught.
fn hindsight(
    store: &Store,
    judging: &crate::store::Judging,
    bounces: &[Bounce],
    initial: Vec<Judgement>,
    last: DateTime<Utc>,
) -> Result<(Vec<Replayed>, Summary), crate::store::StoreError> {
    let mut out = Vec::new();
    let mut summary = Summary::default();
    for (b, initial) in bounces.iter().zip(initial) {
        let at = b.at.unwrap_or(last);
        let c = store.circumstances(&b.domain, at, b.remote_mta.as_deref(), &judging.providers)?;
        let final_judgement = c.judge(b, at, judging);
        let r = Replayed {
            bounce: b.clone(),
            initial,
            final_judgement,
        };
        summary.bounces += 1;
        let conventional = b.hard
            && matches!(
                b.kind,
                Kind::UserUnknown | Kind::MailboxDisabled | Kind::DomainUnknown
            );
        summary.prevented += usize::from(conventional && !r.final_judgement.suppress);
        summary.reinstatements += usize::from(r.is_reinstatement());
        out.push(r);
    }
    Ok((out, summary))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bounce::{Action, Source};
    use chrono::TimeZone;

    fn t(h: u32, m: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2021, 4, 26, h, m, 0).unwrap()
    }

    fn bounce(who: &str, at: DateTime<Utc>, remote: Option<&str>) -> Bounce {
        let (recipient, domain) = crate::bounce::normalise_address(who).unwrap();
        Bounce {
            recipient,
            domain,
            at: Some(at),
            action: Some(Action::Failed),
            status: Some("5.1.1".into()),
            reply_code: Some(550),
            diagnostic: Some("550 5.1.1 user lookup success but no user record found".into()),
            remote_mta: remote.map(str::to_string),
            reporting_mta: None,
            kind: Kind::UserUnknown,
            hard: true,
            source: Source::Jsonl,
            message_id: None,
        }
    }

    fn config() -> Config {
        Config::from_yaml(
            "domains: []\ngrace: 1h\nsettle: 72h\n",
            std::path::Path::new("test.yaml"),
        )
        .unwrap()
    }

    #[test]
    fn observations_parse_with_locations() {
        let text = r#"{"domain":"web.de","at":"2021-04-26T10:00:00Z","outcome":"records","mx":[{"preference":10,"exchange":"mx00.web.de"}],"ttl":300}
not json
{"domain":"web.de","at":"2021-04-26T10:05:00Z","outcome":"sideways"}
{"domain":"web.de","at":"2021-04-26T10:10:00Z","upstream":"auth","outcome":"nxdomain"}
"#;
        let (ok, bad) = read_observations(text);
        assert_eq!(ok.len(), 2);
        assert_eq!(bad.iter().map(|(l, _)| *l).collect::<Vec<_>>(), [2, 3]);
        assert!(bad[1].1.contains("unknown outcome"));
        assert_eq!(ok[1].observation.outcome, Outcome::NxDomain);
    }

    #[tokio::test]
    async fn a_flip_to_icloud_makes_its_bounces_transient() {
        let own = r#""mx":[{"preference":10,"exchange":"mx00.web.de"}]"#;
        let icloud = r#""mx":[{"preference":10,"exchange":"mx01.mail.icloud.com"}]"#;
        let text = format!(
            "{{\"domain\":\"web.de\",\"at\":\"2021-04-26T10:00:00Z\",\"outcome\":\"records\",{own},\"ttl\":300}}\n\
             {{\"domain\":\"web.de\",\"at\":\"2021-04-26T11:00:00Z\",\"outcome\":\"records\",{icloud},\"ttl\":300}}\n\
             {{\"domain\":\"web.de\",\"at\":\"2021-04-26T13:00:00Z\",\"outcome\":\"records\",{own},\"ttl\":300}}\n"
        );
        let (obs, bad) = read_observations(&text);
        assert!(bad.is_empty());
        let bounces = [
            bounce("a@web.de", t(9, 0), None),
            bounce("b@web.de", t(12, 0), Some("mx01.mail.icloud.com")),
            bounce("c@web.de", t(13, 30), None),
            bounce("d@web.de", t(15, 0), None),
        ];
        let (out, summary) = replay(&config(), &obs, &bounces, &[], &[]).await.unwrap();
        let finals: Vec<Verdict> = out.iter().map(|r| r.final_judgement.verdict).collect();
        assert_eq!(
            finals,
            [
                Verdict::Suppress,
                Verdict::Transient,
                Verdict::Transient,
                Verdict::Suppress
            ],
            "before, inside, inside the grace, after"
        );
        assert_eq!(summary.prevented, 2);
        assert_eq!(
            out[1].initial.verdict,
            Verdict::Transient,
            "the window was open when it arrived"
        );
    }

    #[tokio::test]
    async fn an_apple_like_burst_reinstates_the_early_suppressions() {
        let mut bounces = Vec::new();
        // A day of ordinary life first: anomaly detection is warm.
        for i in 0..3 {
            bounces.push(bounce(
                &format!("old{i}@icloud.com"),
                t(11, 0) - chrono::Duration::hours(24 - 8 * i),
                None,
            ));
        }
        for i in 0..60 {
            bounces.push(bounce(
                &format!("user{i}@icloud.com"),
                t(11, 0) + chrono::Duration::minutes(i),
                None,
            ));
        }
        let (out, summary) = replay(&config(), &[], &bounces, &[], &[]).await.unwrap();
        let out = &out[3..];
        // The first 19 were answered `suppress` before the burst was recognised.
        assert_eq!(out[0].initial.verdict, Verdict::Suppress);
        assert_eq!(out[18].initial.verdict, Verdict::Suppress);
        assert_eq!(
            out[19].initial.verdict,
            Verdict::Transient,
            "recognised at the 20th"
        );
        assert!(
            out.iter()
                .all(|r| r.final_judgement.verdict == Verdict::Transient)
        );
        assert_eq!(summary.reinstatements, 19);
        assert_eq!(summary.prevented, 60);
        assert_eq!(
            out[0].final_judgement.evidence[0].kind,
            crate::verdict::EvidenceKind::Anomaly
        );
    }
}
