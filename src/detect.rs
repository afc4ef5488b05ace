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

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::dns::{Answer, Observation};
use crate::names::named;
use crate::provider::Providers;
pub use crate::window::{CloseReason, Severity, WindowStatus};

/// Tunables of the window rules.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Minimum time a reverted window stays open after the revert; the old
    /// answer's TTL lengthens it (caches may still serve the bad answer).
    pub grace: Duration,
    /// How long a new answer must hold before it becomes the baseline.
    pub settle: Duration,
}

named! {
    /// What kind of change a check revealed.
    pub enum ChangeKind {
        HostsAdded => "hosts_added",
        HostsRemoved => "hosts_removed",
        PreferenceChanged => "preference_changed",
        /// The set of providers behind the MX changed (e.g. to iCloud).
        ProviderChanged => "provider_changed",
        /// The answer's provider is not among the domain's expected ones.
        UnexpectedProvider => "unexpected_provider",
        /// MX records gone, the name still exists.
        MxRemoved => "mx_removed",
        /// MX records where there were none.
        MxAppeared => "mx_appeared",
        NullMx => "null_mx",
        Nxdomain => "nxdomain",
        /// Back to the baseline answer.
        Reverted => "reverted",
        /// A new answer held for the settle period and became the baseline.
        Settled => "settled",
        UpstreamDisagreement => "upstream_disagreement",
        UpstreamsAgree => "upstreams_agree",
        ResolutionFailed => "resolution_failed",
        ResolutionRecovered => "resolution_recovered",
    }
}

impl ChangeKind {
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

/// An MX-change window while detect tracks it: a period in which a
/// domain's mail routing was not its baseline. Identified by (domain,
/// start); the store keeps it as a [`crate::window::Window`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveWindow {
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
    pub window: Option<LiveWindow>,
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
    pub window: Option<(WindowEvent, LiveWindow)>,
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
                        // Checked: a grace of centuries ends at the calendar's end.
                        w.end = Some(
                            chrono::Duration::from_std(grace)
                                .ok()
                                .and_then(|g| at.checked_add_signed(g))
                                .unwrap_or(DateTime::<Utc>::MAX_UTC),
                        );
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
                    state.window = Some(LiveWindow {
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
                    let settle =
                        chrono::Duration::from_std(params.settle).unwrap_or(chrono::Duration::MAX);
                    if held >= settle {
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

#[cfg(test)]
pub(crate) mod tests;
