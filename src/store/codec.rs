//! How values are written in the database: times in ms, MX sets and answers as text.

use super::*;

pub(super) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(super) fn from_ms(v: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(v).unwrap_or_default()
}

pub(super) fn parse_mx_text(s: &str) -> Vec<Mx> {
    s.split(',')
        .filter_map(|item| {
            let (p, h) = item.split_once(' ')?;
            Some(Mx {
                preference: p.parse().ok()?,
                exchange: MxHost::parse(h).ok()?,
            })
        })
        .collect()
}

/// An answer as stored: [`Answer::compact`].
pub(super) fn answer_text(a: &Answer) -> String {
    a.compact()
}

pub(super) fn parse_answer_text(s: &str) -> Option<Answer> {
    match s.parse::<Outcome>() {
        Ok(o) => Answer::from_parts(o, vec![]),
        Err(_) => Some(Answer::Records(parse_mx_text(s))),
    }
}

/// The closed sets of names are stored as their words; a word the program
/// no longer knows reads as an error that names it, not as a default.
macro_rules! stored_as_word {
    ($($t:ty),+ $(,)?) => {$(
        impl rusqlite::ToSql for $t {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(self.as_str().into())
            }
        }
        impl rusqlite::types::FromSql for $t {
            fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
                let s = v.as_str()?;
                s.parse::<$t>().map_err(|e| rusqlite::types::FromSqlError::Other(e.into()))
            }
        }
    )+};
}

stored_as_word!(
    crate::window::WindowKind,
    crate::window::WindowStatus,
    crate::window::CloseReason,
    crate::window::Severity,
    crate::window::ScopeKind,
    crate::event::EventType,
    crate::detect::ChangeKind,
    crate::verdict::Verdict,
    crate::bounce::Kind,
    crate::bounce::Source,
    crate::dns::Outcome,
    super::DeliveryStatus,
);
