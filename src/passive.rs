//! Pure: passive DNS exports read into sightings of a domain's MX set, and
//! the excursions they show. No IO.
//!
//! Passive DNS aggregates: a sensor saw an MX set for a name from
//! `first_seen` to `last_seen`, `count` times, but not when it stopped
//! between sightings. An answer seen only while the domain's long-lived
//! answer was seen both before and after it is a temporary excursion (the
//! MX pointed elsewhere for a while): a window, widened by the source's
//! margin (DNSDB's sensors see a name only when someone asks: an hour;
//! SecurityTrails' times are days).
//! Answers before or after the long-lived one are plain history.
//!
//! Shapes, from the providers' documentation:
//! - Farsight DNSDB: JSON lines with `rrname`, `rrtype`, `rdata` (a string
//!   or a list: `"10 mx.example.com."`), `time_first`/`time_last` or
//!   `zone_time_first`/`zone_time_last` (Unix seconds), `count`; API v2
//!   streams wrap each record as `{"obj": …}` between `{"cond": "begin"}`
//!   and `{"cond": "succeeded"}` (or `"limited"`, `"failed"` with `msg`).
//! - SecurityTrails `GET /v1/history/{hostname}/dns/mx`: `{"records":
//!   [{"values": [{"host": …, "priority": …}], "first_seen": "YYYY-MM-DD",
//!   "last_seen": …, "organizations": […]}], "pages": n}`; the answer does
//!   not name the hostname, so the import is told it.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;

use crate::domain::{DomainName, Mx, MxHost};
use crate::names::named;

named! {
    /// Where a sighting came from.
    pub enum PassiveSource {
        Dnsdb => "dnsdb",
        Securitytrails => "securitytrails",
    }
}

impl PassiveSource {
    /// How far a window built from the source's times is widened on each
    /// side: DNSDB's times are seconds, but a sensor sees a name only when
    /// someone asks for it (an hour); SecurityTrails' are days.
    pub fn margin(self) -> Duration {
        match self {
            PassiveSource::Dnsdb => Duration::from_secs(3_600),
            PassiveSource::Securitytrails => Duration::from_secs(86_400),
        }
    }

    /// The upstream label its sightings are kept under.
    pub fn upstream(self) -> String {
        format!("passive:{}", self.as_str())
    }
}

/// A domain's MX set as a passive DNS source saw it, over a span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    pub domain: DomainName,
    /// Sorted: the canonical form of the set.
    pub mx: Vec<Mx>,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub count: Option<u64>,
    pub source: PassiveSource,
}

/// What an export held: sightings, what it passed over (other record
/// types), and problems with their line.
#[derive(Debug, Default)]
pub struct Read {
    pub sightings: Vec<Sighting>,
    pub passed: usize,
    pub problems: Vec<(Option<usize>, String)>,
}

/// How many problems one read keeps.
const MAX_PROBLEMS: usize = 1_000;

impl Read {
    fn problem(&mut self, line: Option<usize>, message: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push((line, message));
        }
    }

    /// Keeps what a passive DNS answer may say: about the domain `asked`
    /// (when it was asked about one; an answer for `attacker.test` naming
    /// `w2.test` says nothing of `w2.test`), and seen in the past (a
    /// `time_last` in 2200 would be a window to 2198). A sighting first
    /// seen after `now` is refused; one last seen after `now` ends at
    /// `now`. Every change is a problem.
    pub fn bound(mut self, asked: Option<&DomainName>, now: DateTime<Utc>) -> Read {
        let mut notes = Vec::new();
        self.sightings.retain_mut(|s| {
            if let Some(asked) = asked.filter(|a| **a != s.domain) {
                notes.push(format!(
                    "a record of {} in the answer about {asked}: not taken",
                    s.domain
                ));
                return false;
            }
            if s.first_seen > now {
                notes.push(format!(
                    "{}: first seen {}, after now: not taken",
                    s.domain,
                    crate::event::time(s.first_seen)
                ));
                return false;
            }
            if s.last_seen > now {
                notes.push(format!(
                    "{}: last seen {}, after now: taken as seen until now",
                    s.domain,
                    crate::event::time(s.last_seen)
                ));
                s.last_seen = now;
            }
            true
        });
        for n in notes {
            self.problem(None, n);
        }
        self
    }
}

/// A Farsight DNSDB export (v1 JSON lines, or v2's `obj`/`cond` framing).
pub fn read_dnsdb(text: &str) -> Read {
    let mut out = Read::default();
    for (i, line) in text.lines().enumerate() {
        let n = Some(i + 1);
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => {
                out.problem(n, format!("not JSON: {e}"));
                continue;
            }
        };
        let record = match (v.get("obj"), v.get("cond")) {
            (Some(obj), _) => obj,
            (None, Some(cond)) => {
                match cond.as_str() {
                    Some("begin" | "ongoing" | "succeeded") => {}
                    Some(c @ ("limited" | "failed")) => {
                        let msg = v.get("msg").and_then(Value::as_str).unwrap_or("");
                        out.problem(n, format!("the export ends {c}: {msg}"));
                    }
                    _ => out.problem(n, format!("unknown condition {cond}")),
                }
                continue;
            }
            (None, None) => &v,
        };
        match dnsdb_record(record) {
            Ok(Some(s)) => out.sightings.push(s),
            Ok(None) => out.passed += 1,
            Err(e) => out.problem(n, e),
        }
    }
    out
}

fn dnsdb_record(v: &Value) -> Result<Option<Sighting>, String> {
    let rrtype = v.get("rrtype").and_then(Value::as_str).ok_or("no rrtype")?;
    if !rrtype.eq_ignore_ascii_case("MX") {
        return Ok(None);
    }
    let name = v.get("rrname").and_then(Value::as_str).ok_or("no rrname")?;
    let domain = DomainName::parse(name).map_err(|e| format!("rrname {name:?}: {e}"))?;
    let rdata: Vec<&str> = match v.get("rdata") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => return Err("no rdata".into()),
    };
    let mut mx = rdata
        .iter()
        .map(|r| mx_rdata(r))
        .collect::<Result<Vec<_>, _>>()?;
    mx.sort();
    mx.dedup();
    let time = |a: &str, b: &str| v.get(a).or_else(|| v.get(b)).and_then(Value::as_i64);
    let first = time("time_first", "zone_time_first").ok_or("no time_first")?;
    let last = time("time_last", "zone_time_last").ok_or("no time_last")?;
    let (first, last) = (unix(first)?, unix(last)?);
    if last < first {
        return Err("time_last is before time_first".into());
    }
    Ok(Some(Sighting {
        domain,
        mx,
        first_seen: first,
        last_seen: last,
        count: v.get("count").and_then(Value::as_u64),
        source: PassiveSource::Dnsdb,
    }))
}

/// `10 mx.example.com.`
fn mx_rdata(r: &str) -> Result<Mx, String> {
    let (pref, host) = r
        .trim()
        .split_once(char::is_whitespace)
        .ok_or_else(|| format!("MX rdata {r:?} is not `preference host`"))?;
    Ok(Mx {
        preference: pref
            .parse()
            .map_err(|_| format!("MX rdata {r:?}: bad preference"))?,
        exchange: MxHost::parse(host.trim()).map_err(|e| format!("MX rdata {r:?}: {e}"))?,
    })
}

/// Unix seconds from 1990 to 2200 (anything else dates nothing).
fn unix(t: i64) -> Result<DateTime<Utc>, String> {
    const Y1990: i64 = 631_152_000;
    const Y2200: i64 = 7_258_118_400;
    if !(Y1990..Y2200).contains(&t) {
        return Err(format!("time {t} is not between 1990 and 2200"));
    }
    DateTime::from_timestamp(t, 0).ok_or_else(|| format!("time {t} out of range"))
}

/// A SecurityTrails MX history answer for `domain`.
pub fn read_securitytrails(text: &str, domain: &DomainName) -> Read {
    let mut out = Read::default();
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            out.problem(Some(e.line()), format!("not JSON: {e}"));
            return out;
        }
    };
    let Some(records) = v.get("records").and_then(Value::as_array) else {
        out.problem(
            None,
            "no `records` list: not a SecurityTrails history answer".into(),
        );
        return out;
    };
    for (i, r) in records.iter().enumerate() {
        match securitytrails_record(r, domain) {
            Ok(s) => out.sightings.push(s),
            Err(e) => out.problem(None, format!("records[{i}]: {e}")),
        }
    }
    out
}

fn securitytrails_record(r: &Value, domain: &DomainName) -> Result<Sighting, String> {
    let values = r
        .get("values")
        .and_then(Value::as_array)
        .ok_or("no `values`")?;
    let mut mx = Vec::new();
    for v in values {
        let host = v
            .get("host")
            .and_then(Value::as_str)
            .ok_or("a value without `host`")?;
        let preference = match v.get("priority") {
            None | Some(Value::Null) => 0,
            Some(p) => p
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| format!("priority {p} is not 0..65535"))?,
        };
        mx.push(Mx {
            preference,
            exchange: MxHost::parse(host).map_err(|e| format!("host {host:?}: {e}"))?,
        });
    }
    mx.sort();
    mx.dedup();
    let day = |k: &str| -> Result<DateTime<Utc>, String> {
        let s = r
            .get(k)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("no `{k}`"))?;
        let d = NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .map_err(|_| format!("{k} {s:?} is not YYYY-MM-DD"))?;
        unix(
            d.and_hms_opt(0, 0, 0)
                .expect("midnight")
                .and_utc()
                .timestamp(),
        )
    };
    let (first, last) = (day("first_seen")?, day("last_seen")?);
    if last < first {
        return Err("last_seen is before first_seen".into());
    }
    // A day's resolution: seen on `last_seen` means until its end.
    let last = last
        .checked_add_signed(chrono::Duration::seconds(86_399))
        .unwrap_or(last);
    Ok(Sighting {
        domain: domain.clone(),
        mx,
        first_seen: first,
        last_seen: last,
        count: None,
        source: PassiveSource::Securitytrails,
    })
}

/// A temporary excursion of a domain's MX: `during` was seen only inside
/// the span of `usual`, so it ended; the window is widened by the
/// source's resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Excursion {
    pub domain: DomainName,
    pub usual: Vec<Mx>,
    pub during: Vec<Mx>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub seen: (DateTime<Utc>, DateTime<Utc>),
    pub source: PassiveSource,
}

/// The longest a set seen between sightings of the usual one counts as an
/// excursion: a domain whose MX pointed elsewhere for weeks had moved, and
/// bounces from then are the new host's word, not a misconfiguration's.
pub const MAX_EXCURSION: Duration = Duration::from_secs(7 * 86_400);

/// The excursions among one domain's sightings from one source. The
/// usual set is the one seen over the longest span, its periods merged
/// (an export may list the same set once per period, before and after the
/// excursion); each period of another set seen only inside that span, and
/// for at most [`MAX_EXCURSION`], is an excursion of its own.
pub fn excursions(sightings: &[Sighting]) -> Vec<Excursion> {
    // Each set once: (set, first seen, last seen, sightings counted).
    type Span<'a> = (&'a [Mx], DateTime<Utc>, DateTime<Utc>, u64);
    // Found by a map: 20,000 sets searched in a list were quadratic.
    let mut spans: Vec<Span> = Vec::new();
    let mut at: std::collections::HashMap<&[Mx], usize> = std::collections::HashMap::new();
    for s in sightings {
        match at.get(s.mx.as_slice()) {
            Some(&i) => {
                let (_, first, last, count) = &mut spans[i];
                *first = (*first).min(s.first_seen);
                *last = (*last).max(s.last_seen);
                *count = count.saturating_add(s.count.unwrap_or(0));
            }
            None => {
                at.insert(&s.mx, spans.len());
                spans.push((&s.mx, s.first_seen, s.last_seen, s.count.unwrap_or(0)));
            }
        }
    }
    let Some(&(usual, first, last, _)) = spans
        .iter()
        .max_by_key(|(_, first, last, count)| (*last - *first, *count))
    else {
        return Vec::new();
    };
    let Some(source) = sightings.first().map(|s| s.source) else {
        return Vec::new();
    };
    let res = chrono::Duration::from_std(source.margin()).unwrap_or_default();
    let longest = chrono::Duration::from_std(MAX_EXCURSION).unwrap_or_default();
    sightings
        .iter()
        .filter(|s| {
            s.mx != usual
                && s.first_seen > first
                && s.last_seen < last
                && s.last_seen - s.first_seen <= longest
        })
        .map(|s| Excursion {
            domain: s.domain.clone(),
            usual: usual.to_vec(),
            during: s.mx.clone(),
            start: s.first_seen.checked_sub_signed(res).unwrap_or(s.first_seen),
            end: s.last_seen.checked_add_signed(res).unwrap_or(s.last_seen),
            seen: (s.first_seen, s.last_seen),
            source: s.source,
        })
        .collect()
}

/// The excursions among sightings of any domains and sources, each
/// domain's from each source on its own (sorts `sightings` so).
pub fn all_excursions(sightings: &mut [Sighting]) -> Vec<Excursion> {
    sightings.sort_by(|a, b| {
        (&a.domain, a.source, a.first_seen).cmp(&(&b.domain, b.source, b.first_seen))
    });
    sightings
        .chunk_by(|a, b| a.domain == b.domain && a.source == b.source)
        .flat_map(excursions)
        .collect()
}

#[cfg(test)]
mod tests;
