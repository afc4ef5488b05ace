//! Replay: the same detector, anomaly detector and verdict rules as the
//! daemon, driven in time order over recorded observations and bounces,
//! with no network and no database. Each bounce gets the verdict the live
//! daemon would have given when it arrived (`initial`) and the verdict in
//! the light of everything recorded (`final`): windows found late (an
//! anomaly recognised after N bounces, a window whose grace ran on) turn
//! early suppressions into reinstatements.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::anomaly;
use crate::bounce::{Bounce, Kind};
use crate::detect::{self, DomainState, Params, Window};
use crate::domain::{DomainName, Mx, MxHost};
use crate::provider::Providers;
use crate::resolve::{Answer, Observation, Outcome};
use crate::verdict::{self, Evidence, EvidenceKind, Judgement, Scope, Verdict};

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
    /// What the daemon would have answered when the bounce arrived.
    pub initial: Judgement,
    /// With every window the recording reveals.
    pub final_judgement: Judgement,
}

impl Replayed {
    /// Suppressed when it arrived, transient in hindsight.
    pub fn is_reinstatement(&self) -> bool {
        self.initial.verdict == Verdict::Suppress
            && self.final_judgement.verdict == Verdict::Transient
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

#[derive(Default)]
struct DomainTrack {
    state: DomainState,
    /// Every window this domain has had, as last known.
    windows: Vec<Window>,
    /// Consensus answers over time, for "the MX at time T".
    answers: Vec<(DateTime<Utc>, Answer)>,
}

impl DomainTrack {
    fn mx_at(&self, at: DateTime<Utc>) -> Option<&[Mx]> {
        self.answers
            .iter()
            .rev()
            .find(|(t, _)| *t <= at)
            .and_then(|(_, a)| match a {
                Answer::Records(mx) => Some(mx.as_slice()),
                _ => None,
            })
    }

    fn evidence(&self) -> Vec<Evidence> {
        self.windows
            .iter()
            .map(|w| Evidence {
                id: None,
                kind: EvidenceKind::MxChange,
                scope: Scope::Domain,
                start: w.start,
                end: w.end,
                detail: format!("{} → {}", w.before, w.current),
            })
            .collect()
    }
}

/// Replays observations and bounces in time order (a bounce at the same
/// moment as a check comes after it).
pub fn replay(
    observations: &[Recorded],
    bounces: &[Bounce],
    params: &Params,
    anomaly_params: anomaly::Params,
    providers: &Providers,
) -> (Vec<Replayed>, Summary) {
    // Checks: observations of one domain at one moment, all upstreams.
    let mut checks: Vec<(DateTime<Utc>, DomainName, Vec<Observation>)> = Vec::new();
    let mut index: HashMap<(DomainName, DateTime<Utc>), usize> = HashMap::new();
    for r in observations {
        let key = (r.domain.clone(), r.at);
        match index.get(&key) {
            Some(&i) => checks[i].2.push(r.observation.clone()),
            None => {
                index.insert(key, checks.len());
                checks.push((r.at, r.domain.clone(), vec![r.observation.clone()]));
            }
        }
    }
    checks.sort_by_key(|c| c.0);
    let mut order: Vec<usize> = (0..bounces.len()).collect();
    order.sort_by_key(|&i| bounces[i].at);

    let mut tracks: HashMap<String, DomainTrack> = HashMap::new();
    let mut anomalies = anomaly::Detector::new(anomaly_params);
    let mut found: Vec<anomaly::Anomaly> = Vec::new();
    let mut initial: Vec<Option<Judgement>> = vec![None; bounces.len()];
    let mut ci = 0;
    let anomaly_evidence =
        |list: &[anomaly::Anomaly], domain: &str, provider: Option<&str>| -> Vec<Evidence> {
            list.iter()
                .filter(|a| a.scope == domain || Some(a.scope.as_str()) == provider)
                .map(|a| Evidence {
                    id: None,
                    kind: EvidenceKind::Anomaly,
                    scope: if a.scope == domain {
                        Scope::Domain
                    } else {
                        Scope::Provider
                    },
                    start: a.start,
                    end: a.end,
                    detail: format!("{}: {}", a.scope, a.detail),
                })
                .collect()
        };
    for &bi in &order {
        let b = &bounces[bi];
        let at = b.at.unwrap_or(DateTime::<Utc>::MIN_UTC);
        while ci < checks.len() && checks[ci].0 <= at {
            apply_check(&mut tracks, &checks[ci], params, providers);
            ci += 1;
        }
        for ev in anomalies.close_idle(at) {
            if let anomaly::Event::Closed(a) = ev
                && let Some(x) = found
                    .iter_mut()
                    .find(|x| x.scope == a.scope && x.start == a.start)
            {
                *x = a;
            }
        }
        let track = tracks.get(&b.domain);
        let mx_at = track.and_then(|t| t.mx_at(at));
        let provider = mx_at.and_then(|mx| providers.of_set(mx).into_iter().next());
        if b.kind == Kind::UserUnknown {
            for scope in [Some(b.domain.clone()), provider.clone()]
                .into_iter()
                .flatten()
            {
                if let Some(anomaly::Event::Opened(a)) = anomalies.observe(&scope, at, &b.recipient)
                {
                    found.push(a);
                }
            }
        }
        let mut windows = track.map(|t| t.evidence()).unwrap_or_default();
        windows.extend(anomaly_evidence(&found, &b.domain, provider.as_deref()));
        initial[bi] = Some(verdict::judge_bounce(b, at, &windows, mx_at, providers));
    }
    // Hindsight: every window with its final extent.
    for check in &checks[ci..] {
        apply_check(&mut tracks, check, params, providers);
    }
    for ev in anomalies.close_idle(DateTime::<Utc>::MAX_UTC) {
        if let anomaly::Event::Closed(a) = ev
            && let Some(x) = found
                .iter_mut()
                .find(|x| x.scope == a.scope && x.start == a.start)
        {
            *x = a;
        }
    }
    let mut out = Vec::new();
    let mut summary = Summary::default();
    for (i, b) in bounces.iter().enumerate() {
        let at = b.at.unwrap_or(DateTime::<Utc>::MIN_UTC);
        let track = tracks.get(&b.domain);
        let mx_at = track.and_then(|t| t.mx_at(at));
        let provider = mx_at.and_then(|mx| providers.of_set(mx).into_iter().next());
        let mut windows = track.map(|t| t.evidence()).unwrap_or_default();
        windows.extend(anomaly_evidence(&found, &b.domain, provider.as_deref()));
        let final_judgement = verdict::judge_bounce(b, at, &windows, mx_at, providers);
        let r = Replayed {
            bounce: b.clone(),
            initial: initial[i].clone().expect("every bounce judged"),
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
    (out, summary)
}

/// Runs one check through the detector and records what it changed.
fn apply_check(
    tracks: &mut HashMap<String, DomainTrack>,
    (t, domain, obs): &(DateTime<Utc>, DomainName, Vec<Observation>),
    params: &Params,
    providers: &Providers,
) {
    let track = tracks.entry(domain.as_str().to_string()).or_default();
    let det = detect::detect(&track.state, obs, *t, &[], providers, params);
    if let Some(a) = &det.consensus.answer
        && track.answers.last().is_none_or(|(_, last)| last != a)
    {
        track.answers.push((*t, a.clone()));
    }
    if let Some((_, w)) = &det.window {
        match track.windows.iter_mut().find(|x| x.start == w.start) {
            Some(x) => *x = w.clone(),
            None => track.windows.push(w.clone()),
        }
    }
    track.state = det.state;
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

    fn params() -> Params {
        Params {
            grace: std::time::Duration::from_secs(3600),
            settle: std::time::Duration::from_secs(72 * 3600),
        }
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

    #[test]
    fn a_flip_to_icloud_makes_its_bounces_transient() {
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
        let (out, summary) = replay(
            &obs,
            &bounces,
            &params(),
            anomaly::Params::default(),
            &Providers::default(),
        );
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

    #[test]
    fn an_apple_like_burst_reinstates_the_early_suppressions() {
        let mut bounces = Vec::new();
        for i in 0..60 {
            bounces.push(bounce(
                &format!("user{i}@icloud.com"),
                t(11, 0) + chrono::Duration::minutes(i),
                None,
            ));
        }
        let (out, summary) = replay(
            &[],
            &bounces,
            &params(),
            anomaly::Params::default(),
            &Providers::default(),
        );
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
            EvidenceKind::Anomaly
        );
    }
}
