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
    let cons = consensus(observations);
    let mut step = Step {
        state: prev.clone(),
        changes: Vec::new(),
        at,
        providers,
    };
    step.disagreement(&cons);
    let Some(answer) = cons.answer.clone() else {
        step.failed(observations);
        let fast = step.state.window.is_some();
        return Detection {
            state: step.state,
            consensus: cons,
            changes: step.changes,
            window: None,
            fast_recheck: fast,
        };
    };
    step.recovered(&answer);
    let window_event = match step.state.baseline.clone() {
        None => {
            step.first_answer(answer, expect, cons.ttl);
            None
        }
        Some(base) if base.answer == answer => step.at_baseline(&base, &answer, cons.ttl, params),
        Some(base) => step.off_baseline(&base, answer, expect, cons.ttl, params),
    };
    step.finish(cons, window_event)
}

/// One check being applied: the state so far and the changes it found.
struct Step<'a> {
    state: DomainState,
    changes: Vec<Change>,
    at: DateTime<Utc>,
    providers: &'a Providers,
}

impl Step<'_> {
    fn push(
        &mut self,
        kind: ChangeKind,
        before: Option<&Answer>,
        after: Option<&Answer>,
        detail: String,
    ) {
        self.changes.push(Change {
            at: self.at,
            kind,
            severity: kind.severity(),
            before: before.cloned(),
            after: after.cloned(),
            detail,
        })
    }

    /// Disagreement between upstreams is recorded when it starts and ends.
    fn disagreement(&mut self, cons: &Consensus) {
        match (&cons.disagreement, self.state.disagreeing) {
            (Some(d), false) => {
                self.push(ChangeKind::UpstreamDisagreement, None, None, d.clone());
                self.state.disagreeing = true;
            }
            (None, true) if cons.answer.is_some() => {
                let detail = "upstreams agree again".into();
                self.push(
                    ChangeKind::UpstreamsAgree,
                    None,
                    cons.answer.as_ref(),
                    detail,
                );
                self.state.disagreeing = false;
            }
            _ => {}
        }
    }

    /// No answer: a failure starts (once), never a records change.
    fn failed(&mut self, observations: &[Observation]) {
        if self.state.failing_since.is_some() {
            return;
        }
        self.state.failing_since = Some(self.at);
        let detail = observations
            .iter()
            .map(|o| {
                let why = o
                    .detail
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default();
                format!("{}: {}{why}", o.upstream, o.outcome)
            })
            .collect::<Vec<_>>()
            .join("; ");
        self.push(ChangeKind::ResolutionFailed, None, None, detail);
    }

    fn recovered(&mut self, answer: &Answer) {
        if let Some(since) = self.state.failing_since.take() {
            let detail = format!(
                "answers again after failing since {}",
                crate::event::time(since)
            );
            self.push(ChangeKind::ResolutionRecovered, None, Some(answer), detail);
        }
    }

    /// The first answer becomes the baseline.
    fn first_answer(&mut self, answer: Answer, expect: &[String], ttl: Option<u32>) {
        if let Some(d) = unexpected(&answer, expect, self.providers) {
            self.push(ChangeKind::UnexpectedProvider, None, Some(&answer), d);
        }
        self.state.baseline = Some(Baseline {
            answer,
            since: self.at,
            last_seen: self.at,
            ttl,
        });
    }

    /// The baseline answer again: an open window starts closing (grace:
    /// the old answer's TTL at least), a closing one closes when its grace
    /// is over.
    fn at_baseline(
        &mut self,
        base: &Baseline,
        answer: &Answer,
        ttl: Option<u32>,
        params: &Params,
    ) -> Option<WindowEvent> {
        let at = self.at;
        let b = self.state.baseline.as_mut().expect("baseline present");
        b.last_seen = at;
        b.ttl = ttl.or(b.ttl);
        let w = self.state.window.as_mut()?;
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
                let from = w.current.clone();
                let detail = format!(
                    "back to {answer}; window stays open for {} of grace",
                    crate::event::duration(grace)
                );
                self.push(ChangeKind::Reverted, Some(&from), Some(answer), detail);
                Some(WindowEvent::Updated)
            }
            WindowStatus::Closing if w.end.is_some_and(|end| at >= end) => {
                w.status = WindowStatus::Closed;
                w.close_reason = Some(CloseReason::Reverted);
                Some(WindowEvent::Closed)
            }
            _ => None,
        }
    }

    /// An answer other than the baseline: a window opens, settles into the
    /// new baseline once the answer has held for `settle`, or flaps.
    fn off_baseline(
        &mut self,
        base: &Baseline,
        answer: Answer,
        expect: &[String],
        ttl: Option<u32>,
        params: &Params,
    ) -> Option<WindowEvent> {
        match self.state.window.as_ref() {
            None => Some(self.open(base, answer, expect)),
            Some(w) if w.status == WindowStatus::Open && w.current == answer => {
                let since = w.current_since;
                let settle =
                    chrono::Duration::from_std(params.settle).unwrap_or(chrono::Duration::MAX);
                (self.at - since >= settle).then(|| self.settle(base, answer, since, ttl))
            }
            Some(w) => {
                // A flap: a different answer while open, or any
                // non-baseline answer while closing. Same window.
                let from = if w.status == WindowStatus::Closing {
                    base.answer.clone()
                } else {
                    w.current.clone()
                };
                Some(self.flap(&from, answer))
            }
        }
    }

    fn open(&mut self, base: &Baseline, answer: Answer, expect: &[String]) -> WindowEvent {
        for (kind, detail) in classify(&base.answer, &answer, self.providers) {
            self.push(kind, Some(&base.answer), Some(&answer), detail);
        }
        if let Some(d) = unexpected(&answer, expect, self.providers) {
            self.push(
                ChangeKind::UnexpectedProvider,
                Some(&base.answer),
                Some(&answer),
                d,
            );
        }
        self.state.window = Some(LiveWindow {
            start: base.last_seen,
            detected_at: self.at,
            end: None,
            status: WindowStatus::Open,
            close_reason: None,
            severity: Severity::Info,
            before: base.answer.clone(),
            current: answer,
            current_since: self.at,
            flaps: 0,
        });
        WindowEvent::Opened
    }

    /// The new answer held since `since`: it is the new baseline.
    fn settle(
        &mut self,
        base: &Baseline,
        answer: Answer,
        since: DateTime<Utc>,
        ttl: Option<u32>,
    ) -> WindowEvent {
        let detail = format!(
            "{answer} held since {}; it is the new baseline",
            crate::event::time(since)
        );
        self.push(
            ChangeKind::Settled,
            Some(&base.answer),
            Some(&answer),
            detail,
        );
        let w = self.state.window.as_mut().expect("window present");
        w.status = WindowStatus::Closed;
        w.close_reason = Some(CloseReason::Settled);
        w.end = Some(self.at);
        self.state.baseline = Some(Baseline {
            answer,
            since,
            last_seen: self.at,
            ttl,
        });
        WindowEvent::Closed
    }

    fn flap(&mut self, from: &Answer, answer: Answer) -> WindowEvent {
        for (kind, detail) in classify(from, &answer, self.providers) {
            self.push(kind, Some(from), Some(&answer), detail);
        }
        let w = self.state.window.as_mut().expect("window present");
        w.flaps += 1;
        w.status = WindowStatus::Open;
        w.end = None;
        w.current = answer;
        w.current_since = self.at;
        WindowEvent::Updated
    }

    /// The window's severity is the worst change it has seen; a closed
    /// window leaves the state.
    fn finish(mut self, consensus: Consensus, event: Option<WindowEvent>) -> Detection {
        if let Some(w) = self.state.window.as_mut() {
            for c in &self.changes {
                if !matches!(c.kind, ChangeKind::Reverted | ChangeKind::Settled) {
                    w.severity = w.severity.max(c.severity);
                }
            }
        }
        let window = event.map(|e| (e, self.state.window.clone().expect("event has a window")));
        if matches!(event, Some(WindowEvent::Closed)) {
            self.state.window = None;
        }
        let fast = self.state.window.is_some();
        Detection {
            state: self.state,
            consensus,
            changes: self.changes,
            window,
            fast_recheck: fast,
        }
    }
}

mod changes;

use changes::unexpected;
pub use changes::{Consensus, classify, consensus};

#[cfg(test)]
pub(crate) mod tests;
