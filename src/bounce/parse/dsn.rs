//! Bounce emails: RFC 3464 delivery status notifications
//! (`multipart/report` with `message/delivery-status` or
//! `message/global-delivery-status`), ARF feedback reports, and the common
//! non-standard bounce texts (Postfix, Exim, qmail, Sendmail, Exchange,
//! Gmail, Yahoo, …) by heuristics.
//!
//! mail-parser gives the MIME parts; the delivery-status fields are parsed
//! here. Line endings are normalised first, so LF, CRLF and CR inputs give
//! the same result.

use std::borrow::Cow;

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use mail_parser::{Message, MessageParser, MimeHeaders, PartType};
use regex::Regex;

use crate::bounce::{Action, Facts, Kind, SmtpCommand, normalise_address};

/// LF, CRLF and CR all become LF.
pub fn normalise_newlines(raw: &[u8]) -> Cow<'_, [u8]> {
    if !raw.contains(&b'\r') {
        return Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.iter().position(|&b| b == b'\r') {
        out.extend_from_slice(&rest[..i]);
        out.push(b'\n');
        rest = &rest[i + 1..];
        if rest.first() == Some(&b'\n') {
            rest = &rest[1..];
        }
    }
    out.extend_from_slice(rest);
    Cow::Owned(out)
}

fn timestamp(s: &str) -> Option<DateTime<Utc>> {
    let d = mail_parser::DateTime::parse_rfc822(s.trim())?;
    if !d.is_valid() {
        return None;
    }
    DateTime::from_timestamp(d.to_timestamp(), 0)
}

/// `rfc822; user@example.com` → `user@example.com`; `dns; mx.example.com` →
/// `mx.example.com`.
pub(crate) fn strip_type(v: &str) -> &str {
    match v.split_once(';') {
        Some((t, rest)) if !t.trim().contains(' ') && t.trim().len() < 16 => rest.trim(),
        _ => v.trim(),
    }
}

/// Fields of one delivery-status block, unfolded, names lower-cased.
fn fields(block: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in block.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
            continue;
        }
        if let Some((name, value)) = line.split_once(':')
            && !name.is_empty()
            && !name.contains(' ')
        {
            out.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    out
}

fn field<'a>(f: &'a [(String, String)], name: &str) -> Option<&'a str> {
    f.iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

static REPLY: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?:^|[^\d.\-])([245]\d\d)(?:[ \-]|$)").expect("reply regex"));

/// The first SMTP reply code in a diagnostic (`550`, `550-5.1.1`).
pub fn reply_code(diag: &str) -> Option<u16> {
    REPLY
        .captures(diag)
        .and_then(|c| c[1].parse().ok())
        .filter(|c: &u16| (200..600).contains(c))
}

static SERVER_STATUS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:^|[^\d.])[245]\d\d[ \-]'?#?([245]\.\d{1,3}\.\d{1,3})")
        .expect("server status regex")
});

/// The enhanced code right after an SMTP reply code (`550-5.1.1`, `550 '5.2.2`).
fn server_status(diag: &str) -> Option<String> {
    SERVER_STATUS
        .captures(diag)
        .and_then(|c| crate::bounce::classify::normalise_status(&c[1]))
}

/// What an email holds, gathered once from its MIME tree.
#[derive(Default)]
struct Parts<'a> {
    delivery_status: Vec<String>,
    feedback: Option<String>,
    texts: Vec<Cow<'a, str>>,
    original: Option<OriginalMessage>,
}

#[derive(Default, Clone)]
struct OriginalMessage {
    message_id: Option<String>,
    to: Option<String>,
    from: Option<String>,
}

fn original_of(m: &Message) -> OriginalMessage {
    OriginalMessage {
        message_id: m.message_id().map(str::to_string),
        to: m
            .to()
            .and_then(|a| a.first())
            .and_then(|a| a.address())
            .map(str::to_string),
        from: m
            .from()
            .and_then(|a| a.first())
            .and_then(|a| a.address())
            .map(str::to_string),
    }
}

fn original_from_headers(text: &str) -> OriginalMessage {
    let mut o = OriginalMessage::default();
    if let Some(m) = MessageParser::default().parse_headers(text.as_bytes()) {
        o = original_of(&m);
    }
    o
}

fn collect<'a>(m: &'a Message<'a>, out: &mut Parts<'a>, depth: usize) {
    for part in &m.parts {
        let (ctype, sub) = part
            .content_type()
            .map(|c| {
                (
                    c.ctype().to_ascii_lowercase(),
                    c.subtype().unwrap_or("").to_ascii_lowercase(),
                )
            })
            .unwrap_or_else(|| ("text".into(), "plain".into()));
        match (ctype.as_str(), sub.as_str(), &part.body) {
            ("message", "delivery-status" | "global-delivery-status", _) => {
                out.delivery_status
                    .push(String::from_utf8_lossy(part.contents()).into_owned());
            }
            ("message", "feedback-report", _) => {
                out.feedback = Some(String::from_utf8_lossy(part.contents()).into_owned());
            }
            (_, _, PartType::Message(inner)) => {
                if out.original.is_none() {
                    out.original = Some(original_of(inner));
                }
                // A bounce forwarded as an attachment: look inside too.
                if depth < 3 && out.delivery_status.is_empty() && out.texts.is_empty() {
                    collect(inner, out, depth + 1);
                }
            }
            ("text" | "message", "rfc822-headers", _) if out.original.is_none() => {
                out.original = Some(original_from_headers(&String::from_utf8_lossy(
                    part.contents(),
                )));
            }
            ("text" | "message", "rfc822-headers", _) => {}
            ("text", "plain", PartType::Text(t)) => out.texts.push(Cow::Borrowed(t.as_ref())),
            ("text", "html", PartType::Html(t)) if out.texts.is_empty() => {
                out.texts.push(Cow::Owned(strip_html(t)));
            }
            ("text", _, PartType::Text(t)) => out.texts.push(Cow::Borrowed(t.as_ref())),
            _ => {}
        }
    }
}

static TAGS: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?s)<[^>]*>").expect("tag regex"));

fn strip_html(html: &str) -> String {
    let text = TAGS.replace_all(html, "\n");
    text.replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// An email starts with header fields (`Name: value`, RFC 5322), perhaps
/// after an mbox `From ` line; a licence text or a binary does not.
fn looks_like_email(raw: &[u8]) -> Result<(), String> {
    let head = &raw[..raw.len().min(4096)];
    let text = String::from_utf8_lossy(head);
    let mut lines = text.lines().skip_while(|l| l.trim().is_empty());
    let mut first = lines.next().unwrap_or("");
    if first.starts_with("From ") {
        first = lines.next().unwrap_or("");
    }
    let field = first.split_once(':').is_some_and(|(name, _)| {
        !name.is_empty() && name.bytes().all(|b| (33..=126).contains(&b) && b != b':')
    });
    if field {
        Ok(())
    } else if head.contains(&0) {
        Err("not an email: binary data".into())
    } else {
        Err(format!(
            "not an email: it does not start with a header field such as `From:` or `Received:` (it starts {:?})",
            first.chars().take(40).collect::<String>()
        ))
    }
}

/// The most MIME parts of one email read: a bounce has a handful (its
/// text, its delivery status, the returned message), and each part
/// mail-parser builds costs about 2 KB: 16 MiB of nested
/// `message/rfc822` once took 640 MB, 330,000 nested multiparts 410 MB.
pub const MAX_PARTS: usize = 1_000;

/// `raw` cut before its `MAX_PARTS + 1`-th part, and whether it was. A
/// part is counted at each line that may open one: a `Content-Type:`
/// field (a nested message) and a line starting `--` (a boundary; a
/// part needs no header of its own). `raw` has LF line ends.
pub fn cap_parts(raw: &[u8]) -> (&[u8], bool) {
    let opens_part = |line: &[u8]| {
        line.starts_with(b"--")
            || (line.len() >= 13 && line[..13].eq_ignore_ascii_case(b"content-type:"))
    };
    let starts = std::iter::once(0).chain(memchr::memchr_iter(b'\n', raw).map(|i| i + 1));
    let mut seen = 0;
    for at in starts {
        if opens_part(&raw[at.min(raw.len())..]) {
            seen += 1;
            if seen > 2 * MAX_PARTS {
                return (&raw[..at], true);
            }
        }
    }
    (raw, false)
}

/// A parsed email that is taken apart without recursion when dropped.
///
/// mail-parser parses nested `message/rfc822` parts with a loop but keeps
/// each inside its parent, so the compiler's recursive drop of 35,000
/// nested messages (a 1.5 MB email) overflowed the stack and aborted the
/// daemon. Unnesting them here bounds the stack whatever the nesting;
/// everything else that walks a message (`collect`) stops at a fixed depth.
struct Email<'x>(Message<'x>);

impl Drop for Email<'_> {
    fn drop(&mut self) {
        let mut pending = std::mem::take(&mut self.0.parts);
        while let Some(mut part) = pending.pop() {
            if let PartType::Message(inner) = &mut part.body {
                pending.append(&mut inner.parts);
            }
        }
    }
}

/// Parses one email. `Err` only when the bytes are not an email at all;
/// an email that is not a bounce gives no facts.
pub fn parse(raw: &[u8]) -> Result<Vec<Facts>, String> {
    let raw = normalise_newlines(raw);
    looks_like_email(&raw)?;
    let parsed = Email(
        MessageParser::default()
            .parse(raw.as_ref())
            .ok_or_else(|| "not an email: no header block".to_string())?,
    );
    let msg = &parsed.0;
    let date = msg
        .date()
        .and_then(|d| DateTime::from_timestamp(d.to_timestamp(), 0));
    let mut parts = Parts::default();
    collect(msg, &mut parts, 0);
    let mut body: String = parts
        .texts
        .iter()
        .map(|t| t.as_ref())
        .collect::<Vec<_>>()
        .join("\n");
    if body.trim().is_empty() && parts.delivery_status.is_empty() {
        // Broken MIME (a multipart without its boundaries): read the raw body.
        let text = String::from_utf8_lossy(raw.as_ref());
        if let Some(i) = text.find("\n\n") {
            body = text[i + 2..].to_string();
        }
    }
    let original = parts.original.clone().unwrap_or_default();

    if let Some(report) = &parts.feedback {
        return Ok(feedback(report, &original, date));
    }
    let mut facts = Vec::new();
    for ds in &parts.delivery_status {
        facts.extend(delivery_status(ds, &body, date));
    }
    if facts.is_empty() {
        // Some MTAs put RFC 3464 fields in a text part.
        if body.to_ascii_lowercase().contains("final-recipient:") {
            facts.extend(delivery_status(&body, &body, date));
        }
    }
    // Recipients the DSN could not name (`Final-Recipient: rfc822; @host`)
    // are looked for in the text instead.
    facts.retain(|f| normalise_address(&f.recipient).is_some());
    let auto_reply = is_auto_reply(msg);
    if facts.is_empty() && auto_reply {
        // An auto reply (RFC 3834) comes from the recipient itself.
        if let Some(from) = msg.from().and_then(|a| a.first()).and_then(|a| a.address()) {
            facts.push(Facts {
                recipient: from.to_string(),
                diagnostic: msg.subject().map(str::to_string),
                kind_hint: Some(Kind::AutoReply),
                ..Facts::default()
            });
        }
    }
    if facts.is_empty() {
        facts = heuristics(msg, &body, &original, date);
    }
    let transcript: String = parts.delivery_status.join("\n") + &body;
    let command = SmtpCommand::find(&transcript);
    for f in &mut facts {
        f.command = f
            .diagnostic
            .as_deref()
            .and_then(SmtpCommand::find)
            .or(command);
        if f.message_id.is_none() {
            f.message_id = original.message_id.clone();
        }
        if f.at.is_none() {
            f.at = date;
        }
        if auto_reply && f.status.is_none() && f.reply_code.is_none() {
            f.kind_hint = Some(Kind::AutoReply);
        }
    }
    Ok(facts)
}

/// An RFC 3834 auto reply (vacation notice), as opposed to a bounce: MTAs
/// such as Exim mark their bounces `Auto-Submitted: auto-replied` too.
fn is_auto_reply(msg: &Message) -> bool {
    let from = msg
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .unwrap_or("")
        .to_ascii_lowercase();
    let subject = msg.subject().unwrap_or("").to_ascii_lowercase();
    let daemon = [
        "mailer-daemon",
        "postmaster",
        "mail-daemon",
        "mailerdaemon",
        "bounce",
        "mdaemon",
        "nobody",
    ]
    .iter()
    .any(|d| from.contains(d));
    let bouncy = [
        "deliver",
        "fail",
        "return",
        "bounce",
        "error",
        "unable",
        "rejected",
        "notification",
        "warning",
    ]
    .iter()
    .any(|w| subject.contains(w));
    let auto = msg
        .header_raw("Auto-Submitted")
        .is_some_and(|v| v.trim().to_ascii_lowercase().starts_with("auto-replied"))
        || msg.header_raw("X-Autoreply").is_some()
        || msg.header_raw("X-Autorespond").is_some()
        || [
            "out of office",
            "auto-reply",
            "auto reply",
            "autoreply",
            "automatic reply",
            "auto:",
            "vacation",
            "abwesenheit",
        ]
        .iter()
        .any(|w| subject.contains(w));
    auto && !daemon && !bouncy
}

/// RFC 3464: a per-message block, then one block per recipient.
fn delivery_status(ds: &str, body: &str, date: Option<DateTime<Utc>>) -> Vec<Facts> {
    let blocks: Vec<Vec<(String, String)>> = ds
        .split("\n\n")
        .map(fields)
        .filter(|f| !f.is_empty())
        .flat_map(groups)
        .collect();
    let per_message: Vec<(String, String)> = blocks
        .iter()
        .find(|b| field(b, "final-recipient").is_none() && field(b, "original-recipient").is_none())
        .cloned()
        .unwrap_or_default();
    let reporting = field(&per_message, "reporting-mta").map(|v| strip_type(v).to_string());
    let arrival = field(&per_message, "arrival-date").and_then(timestamp);
    let mut out = Vec::new();
    for b in blocks.iter().take(crate::bounce::MAX_RECIPIENTS) {
        let Some(rcpt) = field(b, "final-recipient")
            .or_else(|| field(b, "original-recipient"))
            .or_else(|| field(b, "x-actual-recipient"))
        else {
            continue;
        };
        let mut recipient = strip_type(rcpt).to_string();
        if normalise_address(&recipient).is_none()
            && let Some(orig) = field(b, "original-recipient")
        {
            recipient = strip_type(orig).to_string();
        }
        let diag_field = field(b, "diagnostic-code").map(|d| strip_type(d).to_string());
        let diagnostic = diag_field
            .clone()
            .filter(|d| !d.is_empty())
            .or_else(|| diagnostic_from_body(body, &recipient));
        let mut status = field(b, "status").and_then(crate::bounce::classify::normalise_status);
        // The code in the remote server's own reply (`550 5.2.2 …`) is the
        // server's word; the Status field is the reporting MTA's summary of
        // it (Amazon SES writes 5.1.0 for everything). A vague field
        // ("5.0.0") also yields to any code of the same class in the text.
        if let Some(d) = diagnostic.as_deref().and_then(server_status) {
            status = Some(d);
        } else if let Some(d) = diagnostic
            .as_deref()
            .and_then(crate::bounce::classify::normalise_status)
            && status
                .as_deref()
                .is_none_or(|s| s.ends_with(".0.0") && d.as_bytes()[0] == s.as_bytes()[0])
        {
            status = Some(d);
        }
        out.push(Facts {
            recipient,
            at: field(b, "last-attempt-date")
                .and_then(timestamp)
                .or(arrival)
                .or(date),
            action: field(b, "action").and_then(Action::parse),
            reply_code: diagnostic.as_deref().and_then(reply_code),
            status,
            diagnostic,
            remote_mta: field(b, "remote-mta").map(|v| strip_type(v).to_string()),
            reporting_mta: reporting.clone(),
            message_id: None,
            kind_hint: None,
            command: None,
        });
    }
    out
}

/// One blank-line block split into the groups it holds. RFC 3464 separates
/// the per-message fields and each recipient's group by blank lines; some
/// MTAs (AOL's among them) write them all in one block. Per-message fields
/// before the first recipient field are the per-message group, and a
/// recipient field the current group already has (a second
/// `Final-Recipient`, a second `Original-Recipient`) starts the next
/// recipient's group. `Original-Recipient` may come before or after its
/// `Final-Recipient`, and some write a group's `Final-Recipient` last
/// (after its `Status`): per-recipient fields before it stay in its group.
/// RFC 3464's per-recipient fields other than the recipient's own (and
/// Sendmail's `X-Actual-Recipient`).
const PER_RECIPIENT: &[&str] = &[
    "action",
    "status",
    "remote-mta",
    "diagnostic-code",
    "last-attempt-date",
    "final-log-id",
    "will-retry-until",
    "x-actual-recipient",
];

fn groups(block: Vec<(String, String)>) -> Vec<Vec<(String, String)>> {
    let mut out: Vec<Vec<(String, String)>> = Vec::new();
    let mut current: Vec<(String, String)> = Vec::new();
    // Whether the current group has its Final- and Original-Recipient, and
    // per-recipient fields (flags, not scans: one block may hold a million
    // fields).
    let (mut fin, mut orig, mut own) = (false, false, false);
    for (name, value) in block {
        let (is_final, is_orig) = (name == "final-recipient", name == "original-recipient");
        let per_message = !(fin || orig || own);
        let starts = (is_final || is_orig)
            && !current.is_empty()
            && (per_message || (is_final && fin) || (is_orig && orig));
        if starts {
            out.push(std::mem::take(&mut current));
            (fin, orig, own) = (false, false, false);
        }
        fin |= is_final;
        orig |= is_orig;
        own |= PER_RECIPIENT.contains(&name.as_str());
        current.push((name, value));
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The paragraph of the human-readable part that names the recipient.
fn diagnostic_from_body(body: &str, recipient: &str) -> Option<String> {
    let lower = body.to_ascii_lowercase();
    let at = lower.find(&recipient.to_ascii_lowercase())?;
    let rest = &body[at..];
    let para: String = rest.split("\n\n").next().unwrap_or("").to_string();
    let text = para.trim().to_string();
    (text.len() > recipient.len() + 2).then_some(text)
}

/// ARF (RFC 5965): a complaint about one recipient.
fn feedback(report: &str, original: &OriginalMessage, date: Option<DateTime<Utc>>) -> Vec<Facts> {
    let f = fields(report);
    let recipient = field(&f, "original-rcpt-to")
        .map(|v| strip_type(v).to_string())
        .or_else(|| field(&f, "removal-recipient").map(str::to_string))
        .or_else(|| original.to.clone());
    let Some(recipient) = recipient else {
        return vec![];
    };
    vec![Facts {
        recipient,
        at: field(&f, "arrival-date")
            .or_else(|| field(&f, "received-date"))
            .and_then(timestamp)
            .or(date),
        action: None,
        status: None,
        reply_code: None,
        diagnostic: field(&f, "feedback-type").map(|t| format!("feedback report: {t}")),
        remote_mta: field(&f, "source-ip").map(str::to_string),
        reporting_mta: field(&f, "reporting-mta").map(|v| strip_type(v).to_string()),
        message_id: None,
        kind_hint: Some(Kind::Complaint),
        command: None,
    }]
}

mod text;
use text::heuristics;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newlines_normalise() {
        assert_eq!(normalise_newlines(b"a\r\nb\rc\n").as_ref(), b"a\nb\nc\n");
        assert!(matches!(normalise_newlines(b"a\nb"), Cow::Borrowed(_)));
    }

    #[test]
    fn reply_codes_are_found_but_not_in_numbers() {
        assert_eq!(reply_code("smtp; 550 5.1.1 <a@b.c>"), Some(550));
        assert_eq!(reply_code("550-5.1.1 The email account"), Some(550));
        assert_eq!(reply_code("host 192.0.2.550 said"), None);
        assert_eq!(reply_code("no code"), None);
    }

    #[test]
    fn a_standard_dsn() {
        let raw = b"From: MAILER-DAEMON@mx.example.net\nTo: sender@example.org\nDate: Mon, 26 Apr 2021 11:05:00 +0000\nSubject: Undelivered Mail\nMIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\n\n--B\nContent-Type: text/plain\n\nI'm sorry.\n\n--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.net\nArrival-Date: Mon, 26 Apr 2021 11:04:00 +0000\n\nFinal-Recipient: rfc822; Someone@iCloud.com\nAction: failed\nStatus: 5.1.1\nRemote-MTA: dns; mx01.mail.icloud.com\nDiagnostic-Code: smtp; 550 5.1.1 <someone@icloud.com>: user lookup\n success but no user record found\n\n--B\nContent-Type: message/rfc822\n\nMessage-ID: <abc@example.org>\nFrom: sender@example.org\nTo: someone@icloud.com\n\nhello\n--B--\n";
        let facts = parse(raw).unwrap();
        assert_eq!(facts.len(), 1);
        let b = facts[0]
            .clone()
            .into_bounce(crate::bounce::Source::Dsn)
            .unwrap();
        assert_eq!(b.recipient, "someone@icloud.com");
        assert_eq!(b.status.as_deref(), Some("5.1.1"));
        assert_eq!(b.reply_code, Some(550));
        assert_eq!(b.remote_mta.as_deref(), Some("mx01.mail.icloud.com"));
        assert_eq!(b.reporting_mta.as_deref(), Some("mx.example.net"));
        assert_eq!(b.kind, Kind::UserUnknown);
        assert!(b.hard);
        assert_eq!(b.message_id.as_deref(), Some("abc@example.org"));
        assert_eq!(b.at.unwrap().to_rfc3339(), "2021-04-26T11:04:00+00:00");
        assert!(
            b.diagnostic
                .unwrap()
                .contains("user lookup success but no user record found")
        );
    }

    #[test]
    fn not_an_email_is_an_error() {
        assert!(parse(b"").is_err());
    }

    /// Issue 11: 35,000 nested `message/rfc822` parts (1.5 MB) aborted the
    /// daemon with a stack overflow while the parsed email was dropped.
    /// Here 5,000 on a 256 KiB stack exercise the same path.
    #[test]
    fn deeply_nested_messages_do_not_overflow_the_stack() {
        let mut raw = String::from("From: MAILER-DAEMON@a.test\nSubject: nested\n");
        for _ in 0..5_000 {
            raw.push_str("Content-Type: message/rfc822\n\nFrom: a@b.test\n");
        }
        raw.push_str("\nhello\n");
        let outcome = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || parse(raw.as_bytes()).map(|facts| facts.len()))
            .expect("spawn")
            .join()
            .expect("no panic");
        assert_eq!(outcome, Ok(0));
    }
}

#[cfg(test)]
mod groups_tests {
    /// Issue 19, item 8: AOL writes the per-message fields and every
    /// recipient's group in one block, no blank line between them
    /// (Sisimai's corpus, rhost-aol-03.eml, where Sisimai finds both).
    /// Each recipient comes out with its own status and reason.
    #[test]
    fn recipient_groups_without_blank_lines_are_each_a_recipient() {
        let raw = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/sisimai/maildir/bsd/rhost-aol-03.eml"
        ))
        .unwrap();
        let facts = super::parse(&raw).unwrap();
        let got: Vec<(String, Option<String>)> = facts
            .iter()
            .map(|f| (f.recipient.clone(), f.status.clone()))
            .collect();
        assert_eq!(
            got,
            [
                ("sabineko@example.jp".to_string(), Some("5.2.2".to_string())),
                ("mikeneko@example.jp".to_string(), Some("5.1.1".to_string())),
            ]
        );
        let kinds: Vec<crate::bounce::Kind> = facts
            .into_iter()
            .map(|f| f.into_bounce(crate::bounce::Source::Dsn).unwrap().kind)
            .collect();
        assert_eq!(
            kinds,
            [
                crate::bounce::Kind::MailboxFull,
                crate::bounce::Kind::UserUnknown
            ]
        );
    }

    /// Original-Recipient before or after its Final-Recipient, and the
    /// per-message fields in front: one group each.
    #[test]
    fn a_group_starts_at_a_recipient_field_it_already_has() {
        let block = "Reporting-MTA: dns; mx.example.net\nOriginal-Recipient: rfc822;a@x.test\nFinal-Recipient: rfc822; a@x.test\nStatus: 5.1.1\nOriginal-Recipient: rfc822;b@x.test\nFinal-Recipient: rfc822; b@x.test\nStatus: 5.2.2\nFinal-Recipient: rfc822; c@x.test\nOriginal-Recipient: rfc822;c@x.test\nStatus: 4.4.1";
        let groups = super::groups(super::fields(block));
        let firsts: Vec<&str> = groups.iter().map(|g| g[0].0.as_str()).collect();
        assert_eq!(
            firsts,
            [
                "reporting-mta",
                "original-recipient",
                "original-recipient",
                "final-recipient"
            ]
        );
        assert!(groups[1..].iter().all(|g| g.len() == 3));
    }
}
