//! Change detection: pure functions from (state, check) to (state, events).
//!
//! No IO and no clock: the time of a check is a parameter, so the daemon,
//! the tests and a replay of recorded observations get the same answer.
//!
//! The life of a window:
//! ```text
//!  baseline ──answer differs──► Open ──answer = baseline──► Closing(until = t + grace)
//!                                 ▲  │                         │        │
//!                                 │  └─stable for `settle`─►   │        └─ t ≥ until ─► Closed (reverted)
//!                                 │      Closed (settled,      │
//!                                 │      new baseline)         │
//!                                 └──── differs again (a flap: same window, flaps + 1)
//! ```
//! A window starts at the last moment the old answer was seen: the change
//! may have happened any time after it. Failures (SERVFAIL, time-outs) are
//! a separate condition and never a records change.

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::provider::Providers;
use crate::resolve::{Answer, Observation};

/// Tunables of the window rules.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Minimum time a reverted window stays open after the revert; the old
    /// answer's TTL lengthens it (caches may still serve the bad answer).
    pub grace: Duration,
    /// How long a new answer must hold before it becomes the baseline.
    pub settle: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
    pub fn parse(s: &str) -> Option<Severity> {
        [Severity::Info, Severity::Warning, Severity::Critical]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of change a check revealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    HostsAdded,
    HostsRemoved,
    PreferenceChanged,
    /// The set of providers behind the MX changed (e.g. to iCloud).
    ProviderChanged,
    /// The answer's provider is not among the domain's expected ones.
    UnexpectedProvider,
    /// MX records gone, the name still exists.
    MxRemoved,
    /// MX records where there were none.
    MxAppeared,
    NullMx,
    Nxdomain,
    /// Back to the baseline answer.
    Reverted,
    /// A new answer held for the settle period and became the baseline.
    Settled,
    UpstreamDisagreement,
    UpstreamsAgree,
    ResolutionFailed,
    ResolutionRecovered,
}

impl ChangeKind {
    pub const ALL: [ChangeKind; 15] = [
        ChangeKind::HostsAdded,
        ChangeKind::HostsRemoved,
        ChangeKind::PreferenceChanged,
        ChangeKind::ProviderChanged,
        ChangeKind::UnexpectedProvider,
        ChangeKind::MxRemoved,
        ChangeKind::MxAppeared,
        ChangeKind::NullMx,
        ChangeKind::Nxdomain,
        ChangeKind::Reverted,
        ChangeKind::Settled,
        ChangeKind::UpstreamDisagreement,
        ChangeKind::UpstreamsAgree,
        ChangeKind::ResolutionFailed,
        ChangeKind::ResolutionRecovered,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::HostsAdded => "hosts_added",
            ChangeKind::HostsRemoved => "hosts_removed",
            ChangeKind::PreferenceChanged => "preference_changed",
            ChangeKind::ProviderChanged => "provider_changed",
            ChangeKind::UnexpectedProvider => "unexpected_provider",
            ChangeKind::MxRemoved => "mx_removed",
            ChangeKind::MxAppeared => "mx_appeared",
            ChangeKind::NullMx => "null_mx",
            ChangeKind::Nxdomain => "nxdomain",
            ChangeKind::Reverted => "reverted",
            ChangeKind::Settled => "settled",
            ChangeKind::UpstreamDisagreement => "upstream_disagreement",
            ChangeKind::UpstreamsAgree => "upstreams_agree",
            ChangeKind::ResolutionFailed => "resolution_failed",
            ChangeKind::ResolutionRecovered => "resolution_recovered",
        }
    }

    pub fn parse(s: &str) -> Option<ChangeKind> {
        ChangeKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn severity(self) -> Severity {
        use ChangeKind::*;
        match self {
            ProviderChanged | UnexpectedProvider | MxRemoved | NullMx | Nxdomain => {
                Severity::Critical
            }
            HostsAdded | HostsRemoved | MxAppeared | UpstreamDisagreement | ResolutionFailed => {
                Severity::Warning
            }
            PreferenceChanged | Reverted | Settled | UpstreamsAgree | ResolutionRecovered => {
                Severity::Info
            }
        }
    }
}

impl fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One detected change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub at: DateTime<Utc>,
    pub kind: ChangeKind,
    pub severity: Severity,
    pub before: Option<Answer>,
    pub after: Option<Answer>,
    /// A sentence for a person: which hosts, which providers, which upstreams.
    pub detail: String,
}

/// The settled answer of a domain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub answer: Answer,
    pub since: DateTime<Utc>,
    /// The last check that saw it (a window opens here).
    pub last_seen: DateTime<Utc>,
    pub ttl: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowStatus {
    /// The domain answers something other than its baseline.
    Open,
    /// Back to the baseline; open until the grace runs out.
    Closing,
    Closed,
}

impl WindowStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WindowStatus::Open => "open",
            WindowStatus::Closing => "closing",
            WindowStatus::Closed => "closed",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [
            WindowStatus::Open,
            WindowStatus::Closing,
            WindowStatus::Closed,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// Why a window closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    Reverted,
    Settled,
    /// The domain left the watchlist: nothing watches over the window any more.
    Unwatched,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Reverted => "reverted",
            CloseReason::Settled => "settled",
            CloseReason::Unwatched => "unwatched",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "reverted" => Some(CloseReason::Reverted),
            "settled" => Some(CloseReason::Settled),
            "unwatched" => Some(CloseReason::Unwatched),
            _ => None,
        }
    }
}

/// A period in which a domain's mail routing was not its baseline. Identified
/// by (domain, start).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// The last moment the old answer was seen.
    pub start: DateTime<Utc>,
    /// The check that saw the change.
    pub detected_at: DateTime<Utc>,
    /// Set while closing (revert time + grace) and when closed.
    pub end: Option<DateTime<Utc>>,
    pub status: WindowStatus,
    pub close_reason: Option<CloseReason>,
    pub severity: Severity,
    /// The baseline before the window.
    pub before: Answer,
    /// The latest non-baseline answer, and since when it has held.
    pub current: Answer,
    pub current_since: DateTime<Utc>,
    /// How many times the answer changed again inside this window.
    pub flaps: u32,
}

/// What `detect` remembers about a domain between checks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DomainState {
    pub baseline: Option<Baseline>,
    pub window: Option<Window>,
    pub failing_since: Option<DateTime<Utc>>,
    pub disagreeing: bool,
}

/// The one answer a check settles on, from all upstreams.
#[derive(Debug, Clone, PartialEq)]
pub struct Consensus {
    /// `None` when every upstream failed.
    pub answer: Option<Answer>,
    pub ttl: Option<u32>,
    /// `upstream: answer` for each upstream when definitive answers differ.
    pub disagreement: Option<String>,
}

/// The majority of the definitive answers; a tie goes to the upstream listed
/// first. Failures do not vote.
pub fn consensus(observations: &[Observation]) -> Consensus {
    let answers: Vec<(usize, Answer)> = observations
        .iter()
        .enumerate()
        .filter_map(|(i, o)| o.answer().map(|a| (i, a)))
        .collect();
    let mut best: Option<(&Answer, usize)> = None;
    for (_, a) in &answers {
        let votes = answers.iter().filter(|(_, b)| b == a).count();
        if best.is_none_or(|(_, v)| votes > v) {
            best = Some((a, votes));
        }
    }
    let Some((answer, _)) = best else {
        return Consensus {
            answer: None,
            ttl: None,
            disagreement: None,
        };
    };
    let ttl = answers
        .iter()
        .filter(|(_, a)| a == answer)
        .filter_map(|(i, _)| observations[*i].ttl)
        .max();
    let distinct: BTreeSet<&Answer> = answers.iter().map(|(_, a)| a).collect();
    let disagreement = (distinct.len() > 1).then(|| {
        answers
            .iter()
            .map(|(i, a)| format!("{}: {a}", observations[*i].upstream))
            .collect::<Vec<_>>()
            .join("; ")
    });
    Consensus {
        answer: Some(answer.clone()),
        ttl,
        disagreement,
    }
}

/// Compares two answers and names every way they differ.
pub fn classify(
    before: &Answer,
    after: &Answer,
    providers: &Providers,
) -> Vec<(ChangeKind, String)> {
    use Answer::*;
    let mut out = Vec::new();
    match (before, after) {
        (Records(a), Records(b)) => {
            let hosts = |s: &[crate::domain::Mx]| {
                s.iter()
                    .map(|m| m.exchange.clone())
                    .collect::<BTreeSet<_>>()
            };
            let (ha, hb) = (hosts(a), hosts(b));
            let added: Vec<String> = hb.difference(&ha).map(|h| h.to_string()).collect();
            let removed: Vec<String> = ha.difference(&hb).map(|h| h.to_string()).collect();
            if !added.is_empty() {
                out.push((
                    ChangeKind::HostsAdded,
                    format!("added {}", added.join(", ")),
                ));
            }
            if !removed.is_empty() {
                out.push((
                    ChangeKind::HostsRemoved,
                    format!("removed {}", removed.join(", ")),
                ));
            }
            let repref: Vec<String> = a
                .iter()
                .filter_map(|m| {
                    b.iter()
                        .find(|n| n.exchange == m.exchange && n.preference != m.preference)
                        .map(|n| format!("{} {}→{}", m.exchange, m.preference, n.preference))
                })
                .collect();
            if !repref.is_empty() {
                out.push((ChangeKind::PreferenceChanged, repref.join(", ")));
            }
            let (pa, pb) = (providers.of_set(a), providers.of_set(b));
            if pa != pb {
                let show = |s: &BTreeSet<String>| {
                    s.iter()
                        .map(|p| providers.display_name(p).to_string())
                        .collect::<Vec<_>>()
                        .join(" + ")
                };
                out.push((
                    ChangeKind::ProviderChanged,
                    format!("provider {} → {}", show(&pa), show(&pb)),
                ));
            }
        }
        (_, Records(b)) => out.push((
            ChangeKind::MxAppeared,
            format!("MX now {}", Records(b.clone())),
        )),
        (_, NoMx) => out.push((
            ChangeKind::MxRemoved,
            format!("no MX any more (was {before})"),
        )),
        (_, NullMx) => out.push((
            ChangeKind::NullMx,
            format!("null MX: accepts no mail (was {before})"),
        )),
        (_, NxDomain) => out.push((
            ChangeKind::Nxdomain,
            format!("domain does not exist (was {before})"),
        )),
    }
    out
}

/// Everything one check produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    pub state: DomainState,
    pub consensus: Consensus,
    pub changes: Vec<Change>,
    /// The window this check created or touched, with what happened to it.
    pub window: Option<(WindowEvent, Window)>,
    /// Re-check soon: a window is open or closing.
    pub fast_recheck: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowEvent {
    Opened,
    /// Flapped, reopened, or started closing: same window, new facts.
    Updated,
    Closed,
}

fn unexpected(answer: &Answer, expect: &[String], providers: &Providers) -> Option<String> {
    if expect.is_empty() || answer.mx().is_empty() {
        return None;
    }
    let got = providers.of_set(answer.mx());
    let bad: Vec<&String> = got.iter().filter(|p| !expect.contains(p)).collect();
    (!bad.is_empty()).then(|| {
        format!(
            "served by {} but expected {}",
            bad.iter()
                .map(|p| providers.display_name(p))
                .collect::<Vec<_>>()
                .join(" + "),
            expect.join(", ")
        )
    })
}

/// Applies one check at time `at` to a domain's state. `expect` is the
/// domain's expected provider ids (may be empty).
pub fn detect(
    prev: &DomainState,
    observations: &[Observation],
    at: DateTime<Utc>,
    expect: &[String],
    providers: &Providers,
    params: &Params,
) -> Detection {
    let mut state = prev.clone();
    let cons = consensus(observations);
    let mut changes = Vec::new();
    let mut push =
        |kind: ChangeKind, before: Option<&Answer>, after: Option<&Answer>, detail: String| {
            changes.push(Change {
                at,
                kind,
                severity: kind.severity(),
                before: before.cloned(),
                after: after.cloned(),
                detail,
            })
        };

    // Disagreement between upstreams is recorded when it starts and ends.
    match (&cons.disagreement, state.disagreeing) {
        (Some(d), false) => {
            push(ChangeKind::UpstreamDisagreement, None, None, d.clone());
            state.disagreeing = true;
        }
        (None, true) if cons.answer.is_some() => {
            push(
                ChangeKind::UpstreamsAgree,
                None,
                cons.answer.as_ref(),
                "upstreams agree again".into(),
            );
            state.disagreeing = false;
        }
        _ => {}
    }

    let Some(answer) = cons.answer.clone() else {
        if state.failing_since.is_none() {
            state.failing_since = Some(at);
            let detail = observations
                .iter()
                .map(|o| {
                    format!(
                        "{}: {}{}",
                        o.upstream,
                        o.outcome,
                        o.detail
                            .as_deref()
                            .map(|d| format!(" ({d})"))
                            .unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            push(ChangeKind::ResolutionFailed, None, None, detail);
        }
        let fast = state.window.is_some();
        return Detection {
            state,
            consensus: cons,
            changes,
            window: None,
            fast_recheck: fast,
        };
    };
    if let Some(since) = state.failing_since.take() {
        push(
            ChangeKind::ResolutionRecovered,
            None,
            Some(&answer),
            format!("answers again after failing since {}", since.to_rfc3339()),
        );
    }

    let mut window_event = None;
    match state.baseline.clone() {
        None => {
            if let Some(d) = unexpected(&answer, expect, providers) {
                push(ChangeKind::UnexpectedProvider, None, Some(&answer), d);
            }
            state.baseline = Some(Baseline {
                answer: answer.clone(),
                since: at,
                last_seen: at,
                ttl: cons.ttl,
            });
        }
        Some(base) if base.answer == answer => {
            let b = state.baseline.as_mut().expect("baseline present");
            b.last_seen = at;
            b.ttl = cons.ttl.or(b.ttl);
            if let Some(w) = state.window.as_mut() {
                match w.status {
                    WindowStatus::Open => {
                        let grace = params
                            .grace
                            .max(Duration::from_secs(u64::from(base.ttl.unwrap_or(0))));
                        w.end = Some(at + chrono::Duration::from_std(grace).expect("grace fits"));
                        w.status = WindowStatus::Closing;
                        push(
                            ChangeKind::Reverted,
                            Some(&w.current),
                            Some(&answer),
                            format!(
                                "back to {answer}; window stays open for {} of grace",
                                humantime::format_duration(grace)
                            ),
                        );
                        window_event = Some(WindowEvent::Updated);
                    }
                    WindowStatus::Closing if w.end.is_some_and(|end| at >= end) => {
                        w.status = WindowStatus::Closed;
                        w.close_reason = Some(CloseReason::Reverted);
                        window_event = Some(WindowEvent::Closed);
                    }
                    _ => {}
                }
            }
        }
        Some(base) => {
            match state.window.as_mut() {
                None => {
                    for (kind, detail) in classify(&base.answer, &answer, providers) {
                        push(kind, Some(&base.answer), Some(&answer), detail);
                    }
                    if let Some(d) = unexpected(&answer, expect, providers) {
                        push(
                            ChangeKind::UnexpectedProvider,
                            Some(&base.answer),
                            Some(&answer),
                            d,
                        );
                    }
                    state.window = Some(Window {
                        start: base.last_seen,
                        detected_at: at,
                        end: None,
                        status: WindowStatus::Open,
                        close_reason: None,
                        severity: Severity::Info,
                        before: base.answer.clone(),
                        current: answer.clone(),
                        current_since: at,
                        flaps: 0,
                    });
                    window_event = Some(WindowEvent::Opened);
                }
                Some(w) if w.status == WindowStatus::Open && w.current == answer => {
                    let held = at - w.current_since;
                    if held >= chrono::Duration::from_std(params.settle).expect("settle fits") {
                        w.status = WindowStatus::Closed;
                        w.close_reason = Some(CloseReason::Settled);
                        w.end = Some(at);
                        push(
                            ChangeKind::Settled,
                            Some(&base.answer),
                            Some(&answer),
                            format!(
                                "{answer} held since {}; it is the new baseline",
                                w.current_since.to_rfc3339()
                            ),
                        );
                        state.baseline = Some(Baseline {
                            answer: answer.clone(),
                            since: w.current_since,
                            last_seen: at,
                            ttl: cons.ttl,
                        });
                        window_event = Some(WindowEvent::Closed);
                    }
                }
                Some(w) => {
                    // A flap: a different answer while open, or any
                    // non-baseline answer while closing. Same window.
                    let from = if w.status == WindowStatus::Closing {
                        &base.answer
                    } else {
                        &w.current
                    };
                    for (kind, detail) in classify(from, &answer, providers) {
                        push(kind, Some(from), Some(&answer), detail);
                    }
                    w.flaps += 1;
                    w.status = WindowStatus::Open;
                    w.end = None;
                    w.current = answer.clone();
                    w.current_since = at;
                    window_event = Some(WindowEvent::Updated);
                }
            }
        }
    }

    // The window's severity is the worst change it has seen.
    if let Some(w) = state.window.as_mut() {
        for c in &changes {
            if !matches!(c.kind, ChangeKind::Reverted | ChangeKind::Settled) {
                w.severity = w.severity.max(c.severity);
            }
        }
    }
    let window = window_event.map(|e| (e, state.window.clone().expect("event has a window")));
    if matches!(window_event, Some(WindowEvent::Closed)) {
        state.window = None;
    }
    let fast = state.window.is_some();
    Detection {
        state,
        consensus: cons,
        changes,
        window,
        fast_recheck: fast,
    }
}

/// Our own resolver is the likely culprit when most domains fail at once.
/// Each domain counts once, by its latest check within the last `span`
/// (a domain re-checked every few seconds while it fails weighs no more
/// than one checked every five minutes).
#[derive(Debug, Clone)]
pub struct OutageDetector {
    span: chrono::Duration,
    /// Fewest domains checked in the span before a verdict is possible.
    min_checks: usize,
    latest: std::collections::HashMap<String, Latest>,
    /// Every check's time and domain, oldest first (for the span).
    order: VecDeque<(DateTime<Utc>, String)>,
    /// Domains whose latest check lies in the span, and how many of them failed.
    in_span: usize,
    failing: usize,
    /// Start of the current outage.
    pub since: Option<DateTime<Utc>>,
}

/// A domain's latest check.
#[derive(Debug, Clone, Copy)]
struct Latest {
    at: DateTime<Utc>,
    bad: bool,
    /// When its current run of bad checks began.
    bad_since: Option<DateTime<Utc>>,
    /// Whether it is counted in the span.
    counted: bool,
}

/// The outage detector's verdict on one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutageEvent {
    Started(DateTime<Utc>),
    Ended {
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    },
}

impl OutageDetector {
    /// Starts when at least 80 % of the domains checked in the span failed
    /// at their latest check (and at least `min_checks` were checked); ends
    /// below 20 % (hysteresis against flapping).
    pub const START_FRACTION: f64 = 0.8;
    pub const END_FRACTION: f64 = 0.2;
    /// Below this fraction of failing domains, the world is healthy enough
    /// to believe a surprising answer.
    pub const HEALTHY_FRACTION: f64 = 0.5;
    /// Checks remembered at most (the span's, on a huge watchlist).
    const MAX_ORDER: usize = 1_000_000;

    pub fn new(span: Duration, min_checks: usize) -> Self {
        OutageDetector {
            span: chrono::Duration::from_std(span).unwrap_or(chrono::Duration::MAX),
            min_checks: min_checks.max(1),
            latest: Default::default(),
            order: VecDeque::new(),
            in_span: 0,
            failing: 0,
            since: None,
        }
    }

    /// Takes over an outage an earlier process opened (and stored): it ends
    /// by this detector's rules, once resolution works again.
    pub fn adopt(&mut self, since: DateTime<Utc>) {
        self.since = Some(self.since.map_or(since, |s| s.min(since)));
    }

    /// The fraction of domains in the span whose latest check failed;
    /// `None` before `min_checks` domains were checked in it.
    pub fn failing_fraction(&self) -> Option<f64> {
        (self.in_span >= self.min_checks).then(|| self.failing as f64 / self.in_span as f64)
    }

    fn uncount(&mut self, domain: &str) {
        if let Some(l) = self.latest.get_mut(domain)
            && l.counted
        {
            l.counted = false;
            self.in_span -= 1;
            self.failing -= usize::from(l.bad);
        }
    }

    /// A check of `domain` at `at`; `bad` when every upstream failed (or its
    /// answer was held as suspicious).
    pub fn record(&mut self, domain: &str, at: DateTime<Utc>, bad: bool) -> Option<OutageEvent> {
        let previous = self.latest.get(domain).copied();
        self.uncount(domain);
        let bad_since = bad.then(|| previous.and_then(|p| p.bad_since).map_or(at, |s| s.min(at)));
        self.latest.insert(
            domain.to_string(),
            Latest {
                at,
                bad,
                bad_since,
                counted: true,
            },
        );
        self.in_span += 1;
        self.failing += usize::from(bad);
        self.order.push_back((at, domain.to_string()));
        while let Some((t, d)) = self.order.front() {
            let expired = at.signed_duration_since(*t) > self.span;
            if !expired && self.order.len() <= Self::MAX_ORDER {
                break;
            }
            let (t, d) = (*t, d.clone());
            self.order.pop_front();
            if self.latest.get(&d).is_some_and(|l| l.at == t) {
                self.uncount(&d);
            }
        }
        let fraction = self.failing_fraction()?;
        match self.since {
            None if fraction >= Self::START_FRACTION => {
                let start = self
                    .latest
                    .values()
                    .filter(|l| l.counted)
                    .filter_map(|l| l.bad_since)
                    .min()
                    .unwrap_or(at);
                self.since = Some(start);
                Some(OutageEvent::Started(start))
            }
            Some(start) if fraction < Self::END_FRACTION => {
                self.since = None;
                Some(OutageEvent::Ended { start, end: at })
            }
            _ => None,
        }
    }
}

/// Whether a check's answer can be believed, or says more about our own
/// resolver than about the domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    Believe,
    /// Held: not a change of the domain's, not its baseline either; the
    /// sentence says why.
    Hold(String),
}

/// Our resolver's health, from every check of every domain: the outage
/// detector, and the answers it holds back. A resolver that lies (a captive
/// portal, a broken forwarder, DNS filtering) answers NXDOMAIN for every
/// name, or one identical answer for all: when most watched domains change
/// at once, it is ours, not theirs. So any departure from a domain's
/// baseline (and NXDOMAIN for a domain with no baseline yet) is *held*: no
/// change, no baseline, counted as a failure, re-checked soon. It is
/// believed once the other domains' checks since it was first held (at
/// least as many as the outage detector needs) show a healthy resolver;
/// when they do not, the held answers add up to an outage, one global
/// window. A real change is detected a few checks later than it is seen;
/// its window still starts where the old answer was last seen.
#[derive(Debug, Clone)]
pub struct Health {
    pub outage: OutageDetector,
    /// Domains whose answer is held.
    held: std::collections::HashMap<String, Held>,
    /// Checks recorded so far.
    checks: u64,
    /// Watched domains.
    domains: usize,
    /// With fewer than three domains, nothing tells our failure from theirs.
    enabled: bool,
}

/// A held answer and the check counter when it was first held.
#[derive(Debug, Clone)]
struct Held {
    answer: Answer,
    checks_then: u64,
    /// The held domain's own checks since (they say nothing of the others).
    own: u64,
}

impl Health {
    /// The span recent checks are judged over.
    pub const SPAN: Duration = Duration::from_secs(600);

    /// For a watchlist of `domains` names.
    pub fn new(domains: usize) -> Self {
        let enabled = domains >= 3;
        let min_checks = if enabled { domains.min(20) } else { usize::MAX };
        Health {
            outage: OutageDetector::new(Self::SPAN, min_checks),
            held: Default::default(),
            checks: 0,
            domains,
            enabled,
        }
    }

    /// The same, rescaled to a reloaded watchlist; an outage and held
    /// answers carry over.
    pub fn rescaled(&self, domains: usize) -> Self {
        let mut h = Health::new(domains);
        h.outage.since = self.outage.since;
        h.held = self.held.clone();
        h.checks = self.checks;
        h
    }

    /// Whether the other domains have been checked enough since `h` was
    /// first held (as often as the outage detector needs domains, at most
    /// once each), and most of them are fine.
    fn others_healthy(&self, h: &Held) -> bool {
        let others = (self.checks - h.checks_then).saturating_sub(h.own);
        let enough = self.outage.min_checks.min(self.domains.saturating_sub(1));
        self.outage.since.is_none()
            && others >= enough as u64
            && self
                .outage
                .failing_fraction()
                .is_some_and(|f| f < OutageDetector::HEALTHY_FRACTION)
    }

    /// Judges `domain`'s consensus `answer` (`None`: every upstream failed)
    /// against its `baseline`.
    pub fn assess(
        &mut self,
        domain: &str,
        baseline: Option<&Answer>,
        answer: Option<&Answer>,
    ) -> Trust {
        let Some(answer) = answer else {
            return Trust::Believe;
        };
        if baseline == Some(answer) || !self.enabled {
            self.held.remove(domain);
            return Trust::Believe;
        }
        let why = match baseline {
            Some(b) => format!("{b} → {answer}"),
            None if *answer == Answer::NxDomain => "NXDOMAIN for a watched domain".to_string(),
            None => {
                self.held.remove(domain);
                return Trust::Believe;
            }
        };
        match self.held.get(domain) {
            Some(h) if h.answer == *answer => {
                if self.others_healthy(h) {
                    self.held.remove(domain);
                    return Trust::Believe;
                }
            }
            _ => {
                self.held.insert(
                    domain.to_string(),
                    Held {
                        answer: answer.clone(),
                        checks_then: self.checks,
                        own: 0,
                    },
                );
            }
        }
        Trust::Hold(format!(
            "held: {why}, believed once the other domains show that our resolver is healthy"
        ))
    }

    /// Counts a check of `domain`: `bad` when every upstream failed or its
    /// answer was held.
    pub fn record(&mut self, domain: &str, at: DateTime<Utc>, bad: bool) -> Option<OutageEvent> {
        self.checks += 1;
        if let Some(h) = self.held.get_mut(domain) {
            h.own += 1;
        }
        self.outage.record(domain, at, bad)
    }
}

#[cfg(test)]
mod tests;
