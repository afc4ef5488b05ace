//! How values are written in the database: times in ms, MX sets and answers as text.

use super::*;

pub(super) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(super) fn from_ms(v: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(v).unwrap_or_default()
}

/// MX list as stored: `10 a.example,20 b.example`.
pub(super) fn mx_text(mx: &[Mx]) -> String {
    mx.iter()
        .map(|m| m.to_string())
        .collect::<Vec<_>>()
        .join(",")
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

pub(super) fn answer_text(a: &Answer) -> String {
    match a {
        Answer::Records(mx) => mx_text(mx),
        other => other.outcome().as_str().to_string(),
    }
}

pub(super) fn parse_answer_text(s: &str) -> Option<Answer> {
    match s.parse::<Outcome>() {
        Ok(o) => Answer::from_parts(o, vec![]),
        Err(_) => Some(Answer::Records(parse_mx_text(s))),
    }
}
