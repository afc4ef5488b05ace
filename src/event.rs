//! Vocabulary: the events mxwatch announces (their types, as the outbox
//! names them and `events:` filters take them, and their ids) and how
//! their times are written. No IO; every layer may use it.

use chrono::{DateTime, SecondsFormat, Utc};

use crate::names::named;
use crate::window::Severity;

named! {
    /// Event types, as the outbox names them and `events:` filters take them.
    pub enum EventType {
        WindowOpened => "window_opened",
        WindowClosed => "window_closed",
        /// An operator withdrew a window as false; the verdicts it made
        /// are judged again without it.
        WindowWithdrawn => "window_withdrawn",
        AnomalyOpened => "anomaly_opened",
        AnomalyClosed => "anomaly_closed",
        ResolverOutageStarted => "resolver_outage_started",
        ResolverOutageEnded => "resolver_outage_ended",
        Reinstatements => "reinstatements",
        Digest => "digest",
        /// A bounce that came in over HTTP, with its verdict: for the
        /// `forward:` targets, never an alert.
        Bounce => "bounce",
        /// An ESP's request as it came in (its body and headers), for
        /// `passthrough` forward targets; never an alert.
        Request => "request",
        /// A forwarded bounce's suppression turned over by a window found
        /// late: the follow-up `json` forward targets get; never an alert.
        Reinstated => "reinstated",
        /// A suppression to take off an ESP's or list manager's list (for
        /// the `undo:` targets); never an alert.
        Undo => "undo",
        /// What an undo target did in one batch: removed, not found,
        /// failed, dry run.
        UndoDone => "undo_done",
    }
}

impl EventType {
    /// How much an event of this type matters; a window's events matter
    /// as much as the window (`None`: warning).
    pub fn severity(self, window: Option<Severity>) -> Severity {
        use EventType::*;
        match self {
            ResolverOutageStarted | AnomalyOpened => Severity::Critical,
            Reinstatements | WindowWithdrawn => Severity::Warning,
            WindowOpened | WindowClosed => window.unwrap_or(Severity::Warning),
            AnomalyClosed | ResolverOutageEnded | Digest => Severity::Info,
            Bounce | Request | Reinstated | Undo => Severity::Info,
            UndoDone => Severity::Warning,
        }
    }

    /// Whether alert targets take events of this type (the others are
    /// for forwarding).
    pub fn is_alert(self) -> bool {
        !matches!(
            self,
            EventType::Bounce | EventType::Request | EventType::Reinstated | EventType::Undo
        )
    }

    /// The types alert targets take.
    pub fn alerts() -> impl Iterator<Item = EventType> {
        EventType::ALL.iter().copied().filter(|t| t.is_alert())
    }
}

/// The event id of an outbox row, as alerts and reports name it.
pub fn event_id_of(outbox_id: i64) -> String {
    format!("mxwatch-{outbox_id}")
}

/// A time as every outward shape writes it: RFC 3339 in UTC.
pub fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// `n` things, the noun plural but for one: "1 check", "2 checks".
pub fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn plurals_are_right() {
        assert_eq!(super::plural(0, "check"), "0 checks");
        assert_eq!(super::plural(1, "check"), "1 check");
        assert_eq!(super::plural(2, "window"), "2 windows");
    }
}
