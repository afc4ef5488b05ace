//! The common non-standard bounce texts (Postfix, Exim, qmail, Sendmail,
//! Exchange, Gmail, Yahoo, …): the failed recipients and what explains
//! each, found by heuristics.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use mail_parser::Message;

use super::{OriginalMessage, reply_code};
use crate::bounce::{
    Action, Facts, MAX_DIAGNOSTIC, MAX_RECIPIENTS, address, cap_words, normalise_address,
};

/// Lines in which an address is not a recipient.
fn skip_line(lower: &str) -> bool {
    let l = lower.trim_start();
    [
        "message-id:",
        "from:",
        "reply-to:",
        "return-path:",
        "sender:",
        "references:",
        "in-reply-to:",
        "received:",
        "by ",
        "for <",
        "envelope-from",
        "x-",
        "dkim-",
        "list-",
        "errors-to:",
        "mail from:",
        "smtp.mailfrom",
        "to:",
        "cc:",
        "subject:",
        "sent:",
        "date:",
    ]
    .iter()
    .any(|p| l.starts_with(p))
        || l.contains("postmaster@")
        || l.contains("mailer-daemon@")
}

/// Non-standard bounce texts: find the failed recipients and, for each, the
/// lines that explain it.
pub(super) fn heuristics(
    msg: &Message,
    body: &str,
    original: &OriginalMessage,
    date: Option<DateTime<Utc>>,
) -> Vec<Facts> {
    let text = human_part(body);
    let mentions = Mentions::new(text);
    let recipients = recipients(msg, text, original, &mentions);
    let status_anywhere = crate::bounce::classify::normalise_status(text);
    let reply_anywhere = reply_code(text);
    recipients
        .into_iter()
        .map(|(recipient, pos)| {
            let diagnostic = diagnostic(text, &recipient, pos, &mentions);
            let status = diagnostic
                .as_deref()
                .and_then(crate::bounce::classify::normalise_status)
                .or_else(|| status_anywhere.clone());
            let reply = diagnostic
                .as_deref()
                .and_then(reply_code)
                .or(reply_anywhere);
            Facts {
                recipient,
                at: date,
                action: Some(Action::Failed),
                status,
                reply_code: reply,
                diagnostic,
                remote_mta: None,
                reporting_mta: None,
                message_id: None,
                kind_hint: None,
                command: None,
            }
        })
        .collect()
}

/// The human-readable part: it ends where the returned message begins.
fn human_part(body: &str) -> &str {
    const CUTS: &[&str] = &[
        "\n------ This is a copy of the message",
        "\n----- Original message -----",
        "\n--- Below this line is a copy of the message",
        "\n------ Original message follows",
        "\n   ----- Original message follows",
        "\n----- Unsent message follows",
        "\n------ The body of the message",
        "\nReceived: ",
        "\nContent-Type: message/rfc822",
        "\n--- The header of the original message",
        "\n------ Original Message ------",
        "\n----- The following is a copy of the message",
        "\n   ----- Transcript of session follows -----\n\n-----",
    ];
    let mut text = body;
    for c in CUTS {
        if let Some(i) = text.find(c)
            && i > 0
        {
            text = &text[..i];
        }
    }
    text
}

/// Every mention of every address, found in one pass: looking each
/// recipient up in the whole text again was quadratic (an email listing
/// 300,000 addresses took 162 s). Built when first needed: most emails
/// never ask.
struct Mentions<'a> {
    text: &'a str,
    all: std::cell::OnceCell<HashMap<String, Vec<usize>>>,
}

impl<'a> Mentions<'a> {
    fn new(text: &'a str) -> Self {
        Mentions {
            text,
            all: std::cell::OnceCell::new(),
        }
    }

    /// Where `addr` is mentioned, in order.
    fn of(&self, addr: &str) -> &[usize] {
        let all = self.all.get_or_init(|| {
            let mut all: HashMap<String, Vec<usize>> = HashMap::new();
            // As many as the recipients read, and their later mentions.
            let mut room = 4 * MAX_RECIPIENTS;
            'lines: for line_at in line_starts(self.text) {
                let line = self.text[line_at..].lines().next().unwrap_or("");
                for (at, a) in address::in_text(line) {
                    if let Some((addr, _)) = normalise_address(a) {
                        if room == 0 {
                            break 'lines;
                        }
                        room -= 1;
                        all.entry(addr).or_default().push(line_at + at);
                    }
                }
            }
            all
        });
        all.get(addr).map_or(&[], Vec::as_slice)
    }
}

/// The failed recipients and where each is first named: Exim's header,
/// else every whole address on a line that names recipients (not the
/// sender's, the bouncer's, or a header's), else the original `To`.
fn recipients(
    msg: &Message,
    text: &str,
    original: &OriginalMessage,
    mentions: &Mentions,
) -> Vec<(String, usize)> {
    let mut recipients: Vec<(String, usize)> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    // Exim names them in a header.
    if let Some(v) = msg.header_raw("X-Failed-Recipients") {
        for (_, a) in address::in_text(v) {
            if let Some((addr, _)) = normalise_address(a)
                && recipients.len() < MAX_RECIPIENTS
                && seen.insert(addr.clone())
            {
                let pos = mentions.of(&addr).first().copied().unwrap_or(0);
                recipients.push((addr, pos));
            }
        }
    }
    if recipients.is_empty() {
        let is_other = others(msg, original);
        let mut offset = 0;
        for line in text.split_inclusive('\n') {
            if !skip_line(&line.to_ascii_lowercase()) {
                for (start, a) in address::in_text(line) {
                    if let Some((addr, _)) = normalise_address(a)
                        && recipients.len() < MAX_RECIPIENTS
                        && !is_other(&addr)
                        && seen.insert(addr.clone())
                    {
                        recipients.push((addr, offset + start));
                    }
                }
            }
            offset += line.len();
        }
    }
    if recipients.is_empty()
        && let Some(to) = original.to.as_deref().and_then(normalise_address)
    {
        recipients.push((to.0, 0));
    }
    recipients
}

/// Addresses in a bounce that are not failed recipients: the original
/// sender, the bounce's author, mailer daemons, bounce handlers.
fn others(msg: &Message, original: &OriginalMessage) -> impl Fn(&str) -> bool {
    let from_header = msg
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .map(|a| a.to_ascii_lowercase());
    let sender = original.from.as_deref().map(str::to_ascii_lowercase);
    move |a: &str| {
        let a = a.to_ascii_lowercase();
        Some(&a) == sender.as_ref()
            || Some(&a) == from_header.as_ref()
            || a.starts_with("mailer-daemon@")
            || a.starts_with("postmaster@")
            || a.contains("bounce")
    }
}

/// What explains `recipient`, first named at `pos`. Some formats list the
/// recipients first and explain them in a "technical details" block
/// below: a later mention that carries the server's reply is preferred.
fn diagnostic(text: &str, recipient: &str, pos: usize, mentions: &Mentions) -> Option<String> {
    let first = explain(text, pos);
    if first.as_deref().and_then(reply_code).is_some() {
        return first;
    }
    mentions
        .of(recipient)
        .iter()
        .filter(|&&i| i > pos)
        .filter_map(|&i| explain(text, i))
        .find(|d| reply_code(d).is_some())
        .or(first)
}

/// The explanation near position `pos`: the rest of the recipient's line
/// and the lines that follow, up to a blank line (or the previous line
/// when the recipient stands alone).
fn explain(text: &str, pos: usize) -> Option<String> {
    let start = text[..pos.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
    let mut lines: Vec<std::borrow::Cow<str>> = Vec::new();
    for (i, line) in text[start..].lines().enumerate() {
        let t = line.trim();
        if t.is_empty() {
            // A lead-in ("because:") continues past the blank line.
            if (i <= 1 && lines.len() <= 1) || lines.last().is_some_and(|l| l.ends_with(':')) {
                continue;
            }
            break;
        }
        // The next recipient's entry starts with its address.
        if i > 0 && starts_with_address(t) {
            break;
        }
        lines.push(cap_words(t, MAX_DIAGNOSTIC));
        if lines.len() >= 8 {
            break;
        }
    }
    // A recipient alone, with nothing after it, is explained by the line
    // before ("User not listed in public Name & Address Book" / "a@b.c").
    if lines.len() == 1
        && lines[0].split_whitespace().count() == 1
        && start > 0
        && let Some(prev) = text[..start - 1]
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
    {
        let prev = prev.trim();
        if !prev.starts_with("---") && !prev.starts_with("===") && !starts_with_address(prev) {
            lines.insert(0, cap_words(prev, MAX_DIAGNOSTIC));
        }
    }
    let joined = cap_words(&lines.join(" "), MAX_DIAGNOSTIC).into_owned();
    (!joined.is_empty()).then_some(joined)
}

fn starts_with_address(line: &str) -> bool {
    address::in_text(line).next().is_some_and(|(at, a)| {
        line[..at].trim_matches(['<', '"', '\'']).is_empty() && normalise_address(a).is_some()
    })
}

/// Where each line of `text` starts.
fn line_starts(text: &str) -> impl Iterator<Item = usize> + '_ {
    std::iter::once(0).chain(
        text.match_indices('\n')
            .map(|(i, _)| i + 1)
            .filter(move |&i| i < text.len()),
    )
}
