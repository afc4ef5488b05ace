//! Parsers from bytes to bounces, one per input format, and the detection
//! of which format some bytes are.

pub mod dsn;
pub mod esp;
pub mod exim;
mod fields;
pub mod postfix;
pub mod sendmail;

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};

use super::{Action, Bounce, Delivered, OutOfRange, Source, TimeRange};

/// An input format. `Mbox` and `Maildir` hold DSN emails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One email (a DSN, a non-standard bounce, an ARF report, an auto reply).
    Email,
    Mbox,
    /// JSON: an ESP payload (SES, SNS, SendGrid, Mailgun, Postmark) or a
    /// normalised bounce; a document or one value per line.
    Json,
    Postfix,
    /// Exim's main log.
    Exim,
    /// Sendmail's log lines.
    Sendmail,
}

impl Format {
    pub const NAMES: &'static str = "email, mbox, maildir, json, ses, sendgrid, mailgun, postmark, jsonl, postfix, exim, sendmail";
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "email" | "dsn" | "eml" | "maildir" => Format::Email,
            "mbox" => Format::Mbox,
            "json" | "jsonl" | "ses" | "sns" | "sendgrid" | "mailgun" | "postmark" => Format::Json,
            "postfix" | "log" => Format::Postfix,
            "exim" | "mainlog" => Format::Exim,
            "sendmail" | "sm-mta" => Format::Sendmail,
            _ => return Err(format!("unknown format {s:?} (one of: {})", Format::NAMES)),
        })
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Email => "email",
            Format::Mbox => "mbox",
            Format::Json => "json",
            Format::Postfix => "postfix",
            Format::Exim => "exim",
            Format::Sendmail => "sendmail",
        })
    }
}

/// Guesses the format from the first bytes.
pub fn detect(bytes: &[u8]) -> Format {
    let head = &bytes[..bytes.len().min(4096)];
    let text = String::from_utf8_lossy(head);
    let t = text.trim_start_matches('\u{feff}').trim_start();
    if t.starts_with('{') || t.starts_with('[') {
        return Format::Json;
    }
    if t.starts_with("From ") {
        return Format::Mbox;
    }
    let first = t.lines().next().unwrap_or("");
    if first.contains("sm-mta[") || first.contains("sendmail[") {
        return Format::Sendmail;
    }
    if first.contains("status=") || first.contains("postfix/") {
        return Format::Postfix;
    }
    if t.lines().take(20).any(|l| EXIM_ID.is_match(l)) {
        return Format::Exim;
    }
    Format::Email
}

/// An Exim log line: a time stamp, then a message id such as
/// `1tHqXg-0003rC-1A` (or the syslog prefix `exim[pid]:`).
static EXIM_ID: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(r"^(?:\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\S* (?:[+-]\d{4} )?(?:\[\d+\] )?[0-9A-Za-z]{6}-[0-9A-Za-z]{6,11}-[0-9A-Za-z]{2,4} |.{0,64}\bexim[\w\-./]*\[\d+\]: )")
        .expect("exim id regex")
});

/// A problem with one part of an input: which line (or item), and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line where the bad part starts, when lines mean something.
    pub line: Option<usize>,
    pub message: String,
}

/// All a parse found: bounces, skipped non-bounce events, and problems.
#[derive(Debug, Default)]
pub struct Parsed {
    pub bounces: Vec<Bounce>,
    /// Successful deliveries the input reported (ESP delivery events, MTA
    /// log lines of sent mail): counted per domain and minute, never stored
    /// one by one.
    pub delivered: Vec<Delivered>,
    pub skipped: usize,
    /// What was skipped, and how many of each (`Mailgun "delivered"`).
    pub passed: std::collections::BTreeMap<String, usize>,
    /// Log lines read that were not bounces.
    pub lines_passed: usize,
    /// The first [`MAX_PROBLEMS`] problems.
    pub problems: Vec<Problem>,
    /// Problems past [`MAX_PROBLEMS`], counted but not kept: 16 MiB of
    /// `{}` lines once made a 597 MB answer.
    pub problems_omitted: usize,
}

/// How many problems one parse keeps.
pub const MAX_PROBLEMS: usize = 1_000;

impl Parsed {
    /// Holds every bounce to the times it may claim around `now`; each one
    /// outside is redated or refused, and noted as a problem.
    pub fn keep_within(&mut self, range: TimeRange, now: DateTime<Utc>, outside: OutOfRange) {
        let mut noted = Vec::new();
        self.bounces.retain_mut(|b| {
            let Some(at) = b.at.filter(|&at| !range.contains(at, now)) else {
                return true;
            };
            let age = if at < now {
                format!("more than {} before", crate::event::duration(range.max_age))
            } else {
                format!(
                    "more than {} after",
                    crate::event::duration(range.max_ahead)
                )
            };
            let (fate, keep) = match outside {
                OutOfRange::Redate => ("dated on arrival instead", true),
                OutOfRange::Refuse => (
                    "not stored (`bounces ingest --max-age` takes older feeds)",
                    false,
                ),
            };
            noted.push(format!(
                "the bounce for {} is dated {}, {age} it arrived: {fate}",
                b.recipient,
                crate::event::time(at),
            ));
            b.at = None;
            keep
        });
        for message in noted {
            self.problem(None, message);
        }
        // Deliveries too: a forged date must not steer the detector's
        // denominators either. Counted, not listed one by one.
        let before = self.delivered.len();
        let mut moved = 0;
        self.delivered.retain_mut(|d| {
            if d.at.is_none_or(|at| range.contains(at, now)) {
                return true;
            }
            moved += 1;
            d.at = None;
            outside == OutOfRange::Redate
        });
        if moved > 0 {
            let fate = if self.delivered.len() < before {
                "not counted"
            } else {
                "dated on arrival instead"
            };
            self.problem(
                None,
                format!(
                    "{moved} deliveries are dated outside the times this input may claim: {fate}"
                ),
            );
        }
    }

    /// Why an input gave no bounce and no problem: what it held instead.
    /// An input never yields nothing without saying why.
    pub fn why_nothing(&self) -> Option<String> {
        if !self.bounces.is_empty() || !self.problems.is_empty() {
            return None;
        }
        let counted = match self.delivered.iter().map(|d| d.count).sum::<u64>() {
            0 => String::new(),
            1 => " (1 delivery read)".to_string(),
            n => format!(" ({n} deliveries read)"),
        };
        let why = if !self.passed.is_empty() {
            let what: Vec<String> = self
                .passed
                .iter()
                .map(|(what, n)| format!("{n} × {what}"))
                .collect();
            format!("no bounce: passed over {}", what.join(", "))
        } else if self.lines_passed > 0 {
            format!(
                "no bounce: none of its {} lines is a failed or deferred delivery",
                self.lines_passed
            )
        } else {
            "no bounce: it is empty".to_string()
        };
        Some(why + &counted)
    }

    /// The line that stands for the problems not kept, if any.
    pub fn omitted_note(&self) -> Option<String> {
        (self.problems_omitted > 0).then(|| {
            format!(
                "{} more problems not listed (only the first {MAX_PROBLEMS} are)",
                self.problems_omitted
            )
        })
    }

    fn problem(&mut self, line: Option<usize>, message: impl Into<String>) {
        if self.problems.len() >= MAX_PROBLEMS {
            self.problems_omitted += 1;
            return;
        }
        self.problems.push(Problem {
            line,
            message: message.into(),
        });
    }
}

/// Parses one input. `now` dates syslog lines, which carry no year.
pub fn parse(bytes: &[u8], format: Option<Format>, now: DateTime<Utc>) -> Parsed {
    let mut out = Parsed::default();
    // LF, CRLF and CR alike, for every format (an mbox or a log with CR
    // line ends is still lines).
    let bytes = dsn::normalise_newlines(bytes);
    let bytes = bytes.as_ref();
    match format.unwrap_or_else(|| detect(bytes)) {
        Format::Email => email(bytes, None, &mut out),
        Format::Mbox => {
            for (line, msg) in mbox_messages(bytes) {
                email(msg, Some(line), &mut out);
            }
        }
        Format::Json => json(bytes, &mut out),
        Format::Postfix => log(bytes, Source::Postfix, postfix::parse_line, now, &mut out),
        Format::Sendmail => log(bytes, Source::Sendmail, sendmail::parse_line, now, &mut out),
        Format::Exim => {
            let mut reader = exim::Reader::default();
            log(
                bytes,
                Source::Exim,
                |l, now| reader.line(l, now),
                now,
                &mut out,
            )
        }
    }
    out
}

/// An MTA's log, a line at a time; lines that are not bounces are passed
/// over, bad ones noted with their number.
fn log(
    bytes: &[u8],
    source: Source,
    mut parse_line: impl FnMut(&str, DateTime<Utc>) -> Result<Option<super::Facts>, String>,
    now: DateTime<Utc>,
    out: &mut Parsed,
) {
    let text = String::from_utf8_lossy(bytes);
    for (i, line) in text.lines().enumerate() {
        match parse_line(line, now) {
            Ok(Some(f)) if f.action == Some(Action::Delivered) => {
                out.lines_passed += 1;
                out.delivered.extend(f.into_delivered(source));
            }
            Ok(Some(f)) => match f.into_bounce(source) {
                Some(b) => out.bounces.push(b),
                None => out.problem(Some(i + 1), "the recipient is not an email address"),
            },
            Ok(None) => out.lines_passed += 1,
            Err(e) => out.problem(Some(i + 1), e),
        }
    }
}

fn email(bytes: &[u8], line: Option<usize>, out: &mut Parsed) {
    let bytes = dsn::normalise_newlines(bytes);
    // A bounce whose body is an SES notification (Amazon forwards them so).
    if let Some(json) = embedded_json(&bytes) {
        let before = out.bounces.len();
        json_value(&json, line, out);
        if out.bounces.len() > before {
            return;
        }
    }
    let (bytes, cut) = dsn::cap_parts(&bytes);
    if cut {
        out.problem(
            line,
            format!(
                "an email of more than {} MIME parts: the rest of it is not read",
                dsn::MAX_PARTS
            ),
        );
    }
    match dsn::parse(bytes) {
        Ok(facts) => {
            if facts.is_empty() {
                out.problem(line, "an email, but no bounced recipient found in it");
            }
            if facts.len() >= super::MAX_RECIPIENTS {
                out.problem(
                    line,
                    format!(
                        "an email naming {} recipients or more: only the first {0} are read",
                        super::MAX_RECIPIENTS
                    ),
                );
            }
            for f in facts {
                let who = f.recipient.clone();
                match f.into_bounce(Source::Dsn) {
                    Some(b) => out.bounces.push(b),
                    None => out.problem(line, format!("{who:?} is not an email address")),
                }
            }
        }
        Err(e) => out.problem(line, e),
    }
}

/// The JSON document an email's body is, if it is one (SES via SNS email).
/// `bytes` has LF line ends.
fn embedded_json(bytes: &[u8]) -> Option<serde_json::Value> {
    let body_at = bytes.windows(2).position(|w| w == b"\n\n")? + 2;
    let body = std::str::from_utf8(&bytes[body_at..]).ok()?;
    let start = body.find('{')?;
    if !body[..start].trim().is_empty() {
        return None;
    }
    let end = body.rfind('}')?;
    // SNS's email transport folds long lines as "!\n ".
    let doc = body[start..=end].replace("!\n ", "");
    let v: serde_json::Value = serde_json::from_str(&doc).ok()?;
    (v.get("notificationType").is_some() || v.get("Type").is_some() || v.get("eventType").is_some())
        .then_some(v)
}

fn json_value(v: &serde_json::Value, line: Option<usize>, out: &mut Parsed) {
    let found = esp::parse_value(v);
    out.bounces.extend(found.bounces);
    out.delivered.extend(found.delivered);
    out.skipped += found.skipped;
    for (what, n) in found.passed {
        *out.passed.entry(what).or_default() += n;
    }
    for e in found.errors {
        out.problem(line, e);
    }
}

fn json(bytes: &[u8], out: &mut Parsed) {
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(v) => json_value(&v, None, out),
        // Not one document: one value per line (JSONL).
        Err(whole) => {
            let text = String::from_utf8_lossy(bytes);
            let lines: Vec<(usize, serde_json::Result<serde_json::Value>)> = text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .map(|(i, l)| (i + 1, serde_json::from_str(l)))
                .collect();
            // Not one line is JSON: one problem for the input, not one per line.
            if lines.len() <= 1 || lines.iter().all(|(_, r)| r.is_err()) {
                out.problem(
                    Some(whole.line()),
                    format!("not JSON (nor JSON lines): {whole}"),
                );
                return;
            }
            for (line, r) in lines {
                match r {
                    Ok(v) => json_value(&v, Some(line), out),
                    Err(e) => out.problem(Some(line), format!("invalid JSON: {e}")),
                }
            }
        }
    }
}

/// Splits an mbox into (first line number, message) pairs. A message
/// starts at a `From ` line at the start of the file or after a blank line.
pub fn mbox_messages(bytes: &[u8]) -> Vec<(usize, &[u8])> {
    let mut starts = Vec::new();
    let mut line_no = 1;
    let mut prev_blank = true;
    let mut i = 0;
    while i < bytes.len() {
        let end = bytes[i..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |p| i + p + 1);
        let line = &bytes[i..end];
        if prev_blank && line.starts_with(b"From ") {
            starts.push((line_no, i, end));
        }
        prev_blank = line.iter().all(|b| b.is_ascii_whitespace());
        line_no += 1;
        i = end;
    }
    let mut out = Vec::new();
    for (k, &(line, _, body_start)) in starts.iter().enumerate() {
        let stop = starts.get(k + 1).map_or(bytes.len(), |n| n.1);
        out.push((line + 1, &bytes[body_start..stop]));
    }
    out
}

/// What the log readers' tests share: one "now", and one line read to a bounce.
#[cfg(test)]
pub(crate) mod testing {
    use chrono::{DateTime, TimeZone, Utc};

    use crate::bounce::{Bounce, Facts, Source};

    pub fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap()
    }

    /// The bounce a reader finds in `line` (the test fails if none).
    pub fn bounce(
        parse_line: impl Fn(&str, DateTime<Utc>) -> Result<Option<Facts>, String>,
        source: Source,
        line: &str,
    ) -> Bounce {
        parse_line(line, now())
            .unwrap()
            .unwrap_or_else(|| panic!("no bounce in {line}"))
            .into_bounce(source)
            .unwrap()
    }
}
