//! Vocabulary: the events mxwatch announces (their types, as the outbox
//! names them and `events:` filters take them, and their ids) and how
//! their times are written. No IO; every layer may use it.

use chrono::{DateTime, SecondsFormat, Utc};

/// Event types, as the outbox names them and `events:` filters take them.
pub const EVENT_TYPES: &[&str] = &[
    "window_opened",
    "window_closed",
    "anomaly_opened",
    "anomaly_closed",
    "resolver_outage_started",
    "resolver_outage_ended",
    "reinstatements",
    "digest",
];

/// The event id of an outbox row, as alerts and reports name it.
pub fn event_id_of(outbox_id: i64) -> String {
    format!("mxwatch-{outbox_id}")
}

/// A time as every outward shape writes it: RFC 3339 in UTC.
pub fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}
