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

/// A time as every outward shape writes it (the CLI, the API, logs,
/// alerts, summaries): RFC 3339 in UTC, to the second, or to the
/// millisecond when it has a fraction (never finer: times are stored in
/// milliseconds).
pub fn time(t: DateTime<Utc>) -> String {
    if t.timestamp_subsec_millis() == 0 {
        t.to_rfc3339_opts(SecondsFormat::Secs, true)
    } else {
        t.to_rfc3339_opts(SecondsFormat::Millis, true)
    }
}

/// A duration as every outward shape writes it, in the watchlist's own
/// units so it can be written back: `250ms`, `1m 30s`, `24h`, `36h`,
/// `30d`, `2d 12h`. Days from two days on; milliseconds only under a
/// minute; `0s` for nothing.
pub fn duration(d: std::time::Duration) -> String {
    let secs = d.as_secs();
    let millis = d.subsec_millis();
    if secs == 0 {
        return if millis == 0 {
            "0s".into()
        } else {
            format!("{millis}ms")
        };
    }
    let (days, rest) = if secs >= 2 * 86_400 {
        (secs / 86_400, secs % 86_400)
    } else {
        (0, secs)
    };
    let parts = [
        (days, "d"),
        (rest / 3600, "h"),
        (rest % 3600 / 60, "m"),
        (rest % 60, "s"),
        (if secs < 60 { u64::from(millis) } else { 0 }, "ms"),
    ];
    parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// [`duration`] of a chrono span (a negative one is `0s`).
pub fn span(d: chrono::Duration) -> String {
    duration(d.to_std().unwrap_or_default())
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
    use std::time::Duration;

    #[test]
    fn durations_are_written_one_way_and_read_back() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_millis(1500), "1s 500ms"),
            (Duration::from_secs(90), "1m 30s"),
            (Duration::from_millis(90_250), "1m 30s"),
            (Duration::from_secs(3600), "1h"),
            (Duration::from_secs(86_400), "24h"),
            (Duration::from_secs(36 * 3600), "36h"),
            (Duration::from_secs(30 * 86_400), "30d"),
            (Duration::from_secs(60 * 3600), "2d 12h"),
            (Duration::from_secs(7 * 86_400 + 61), "7d 1m 1s"),
        ];
        for (d, want) in cases {
            assert_eq!(super::duration(d), want, "{d:?}");
            // What the watchlist reads, to the millisecond under a minute.
            let back = humantime::parse_duration(want).unwrap();
            if d < Duration::from_secs(60) {
                assert_eq!(back, d, "{want}");
            }
        }
        assert_eq!(super::span(chrono::Duration::seconds(-5)), "0s");
    }

    #[test]
    fn times_are_to_the_second_or_millisecond_never_finer() {
        use chrono::TimeZone;
        let t = chrono::Utc.with_ymd_and_hms(2021, 4, 26, 11, 0, 0).unwrap();
        assert_eq!(super::time(t), "2021-04-26T11:00:00Z");
        let t = t + chrono::Duration::nanoseconds(123_456_789);
        assert_eq!(super::time(t), "2021-04-26T11:00:00.123Z");
    }

    #[test]
    fn plurals_are_right() {
        assert_eq!(super::plural(0, "check"), "0 checks");
        assert_eq!(super::plural(1, "check"), "1 check");
        assert_eq!(super::plural(2, "window"), "2 windows");
    }
}
