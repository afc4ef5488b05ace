//! Bounces: parse what senders already have (DSN emails, ESP webhooks, MTA
//! logs, JSONL) into one normalised [`Bounce`] per bounced recipient, and
//! classify each. No SQL here; the JSON field names of [`Bounce`] are the
//! interface bounce handlers and scripts use.

pub mod address;
pub mod classify;
pub mod input;
pub mod parse;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::names::named;

pub use address::normalise_address;
pub use classify::classify;

/// The times a bounce may claim, around the moment it arrives
/// (`bounce_times:` in the watchlist). A bounce dated far from its arrival
/// is a broken clock or a forgery, and its date would steer the anomaly
/// detector (a bounce in year 58886 blinded it for good; one in year
/// −262143 crashed every start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub max_age: std::time::Duration,
    pub max_ahead: std::time::Duration,
}

impl Default for TimeRange {
    fn default() -> Self {
        TimeRange {
            max_age: std::time::Duration::from_secs(30 * 86_400),
            max_ahead: std::time::Duration::from_secs(86_400),
        }
    }
}

impl TimeRange {
    /// How far back `bounces ingest` reads by default: a file is often a
    /// past feed, but not one from before email took its present shape.
    pub const FILE_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(20 * 365 * 86_400);

    /// Whether `at` lies in the range around `now` (the calendar's ends
    /// bound it, never an overflow).
    pub fn contains(&self, at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        let span = |d: std::time::Duration| {
            chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX)
        };
        let first = now
            .checked_sub_signed(span(self.max_age))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        let last = now
            .checked_add_signed(span(self.max_ahead))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        (first..=last).contains(&at)
    }
}

/// What becomes of a bounce dated outside its [`TimeRange`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutOfRange {
    /// Dated on arrival: a live feed (the API, a webhook) arrives as the
    /// bounce happens, so its arrival is a good date.
    Redate,
    /// Left out: a file may be old, so its arrival says nothing.
    Refuse,
}

/// What the reporting MTA did (RFC 3464 `Action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Failed,
    Delayed,
    Delivered,
    Relayed,
    Expanded,
}

impl Action {
    pub fn parse(s: &str) -> Option<Action> {
        match s.trim().to_ascii_lowercase().as_str() {
            "failed" | "failure" | "fail" | "bounce" | "bounced" => Some(Action::Failed),
            "delayed" | "deferred" | "delay" => Some(Action::Delayed),
            "delivered" | "deliverable" => Some(Action::Delivered),
            "relayed" => Some(Action::Relayed),
            "expanded" => Some(Action::Expanded),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Failed => "failed",
            Action::Delayed => "delayed",
            Action::Delivered => "delivered",
            Action::Relayed => "relayed",
            Action::Expanded => "expanded",
        }
    }
}

named! {
    /// Why the message bounced, as far as the bounce tells.
    pub enum Kind {
        UserUnknown => "user_unknown",
        MailboxFull => "mailbox_full",
        MailboxDisabled => "mailbox_disabled",
        DomainUnknown => "domain_unknown",
        RelayDenied => "relay_denied",
        PolicyBlocked => "policy_blocked",
        SpamBlocked => "spam_blocked",
        ContentRejected => "content_rejected",
        RateLimited => "rate_limited",
        Greylisted => "greylisted",
        Network => "network",
        System => "system",
        Expired => "expired",
        TooLarge => "too_large",
        AutoReply => "auto_reply",
        Complaint => "complaint",
        Delivered => "delivered",
        /// The ESP has suppressed the address for a bounce of its own
        /// (Postmark's SubscriptionChange, SendGrid's "Bounced Address"
        /// drop, SES's suppression lists): it will not send there again.
        Suppressed => "suppressed",
        Other => "other",
    }
}

named! {
    /// Where a bounce came from.
    pub enum Source {
        Dsn => "dsn",
        Ses => "ses",
        Sendgrid => "sendgrid",
        Mailgun => "mailgun",
        Postmark => "postmark",
        Postfix => "postfix",
        Exim => "exim",
        Sendmail => "sendmail",
        Jsonl => "jsonl",
    }
}

/// A delivery attempt that succeeded, as a feed reports it (SES
/// `Delivery`, SendGrid `delivered`, Mailgun `delivered`, Postmark
/// `Delivery`, Postfix `status=sent`, Exim `=>`, Sendmail `stat=Sent`):
/// the denominator of a provider's unknown-user rate. Only the domain is
/// kept, never the address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    pub domain: String,
    /// `None`: dated on arrival.
    pub at: Option<DateTime<Utc>>,
    /// The host that accepted it, when the feed says (an unwatched domain
    /// counts under that host's provider).
    pub remote_mta: Option<String>,
    pub source: Source,
    /// A digest of what identifies the event (source, recipient, time,
    /// message id): the same delivery read twice counts once.
    pub identity: u64,
    /// How many deliveries: 1 for an event, more for a record of counts
    /// (`{"delivered": N, "domain": …}` in normalised JSONL).
    pub count: u64,
}

/// The most bytes of a remote server's words one bounce keeps: enough for
/// every real reply (Gmail's run to 300, Microsoft's to 600). Longer words
/// keep their head and their tail, where the reply codes stand.
pub const MAX_DIAGNOSTIC: usize = 1_000;

/// The most recipients one email is read for: a bounce names the
/// recipients of one message. An email listing 8,000 addresses on one line
/// took 15 s and 947 MB; the rest are noted, not read.
pub const MAX_RECIPIENTS: usize = 10_000;

/// `s` in at most `max` bytes (and a few for the ellipsis): its head and
/// its tail around " … ", cut on character boundaries.
pub fn cap_words(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return s.into();
    }
    let mut head = max / 2;
    while !s.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = s.len() - max / 2;
    while !s.is_char_boundary(tail) {
        tail += 1;
    }
    format!("{} … {}", s[..head].trim_end(), s[tail..].trim_start()).into()
}

/// A host as a feed names it, normalised (case, spaces, trailing dot);
/// `None` when nothing is left.
pub fn host_name(h: &str) -> Option<String> {
    let h = h.trim().trim_end_matches('.').to_ascii_lowercase();
    (!h.is_empty()).then_some(h)
}

/// FNV-1a: a stable 64-bit digest (the same on every build and machine).
pub fn digest(parts: &[&str]) -> u64 {
    parts.iter().fold(0xcbf29ce484222325u64, |h, part| {
        part.bytes()
            .chain(std::iter::once(0xff))
            .fold(h, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3))
    })
}

/// One bounced recipient, normalised.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bounce {
    /// Lower-cased address.
    pub recipient: String,
    /// The recipient's domain.
    pub domain: String,
    /// When the bounce happened (UTC); null when nothing in the input says.
    pub at: Option<DateTime<Utc>>,
    pub action: Option<Action>,
    /// Enhanced status code `X.Y.Z` (RFC 3463); null when the bounce has none.
    pub status: Option<String>,
    /// SMTP reply code such as 550.
    pub reply_code: Option<u16>,
    /// The remote server's words.
    pub diagnostic: Option<String>,
    pub remote_mta: Option<String>,
    pub reporting_mta: Option<String>,
    pub kind: Kind,
    /// Would a conventional bounce handler suppress the address on this?
    pub hard: bool,
    pub source: Source,
    /// Message-ID of the original message, when known.
    pub message_id: Option<String>,
}

/// The raw facts a parser found for one recipient, before classification.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    pub recipient: String,
    pub at: Option<DateTime<Utc>>,
    pub action: Option<Action>,
    pub status: Option<String>,
    pub reply_code: Option<u16>,
    pub diagnostic: Option<String>,
    pub remote_mta: Option<String>,
    pub reporting_mta: Option<String>,
    pub message_id: Option<String>,
    /// A kind the input states outright (an ESP's complaint or delivery
    /// event, an ARF report, an auto-reply); rules decide otherwise.
    pub kind_hint: Option<Kind>,
    /// The SMTP command the remote server refused, when the bounce says.
    pub command: Option<SmtpCommand>,
}

/// The SMTP command a refusal answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpCommand {
    MailFrom,
    RcptTo,
    Data,
}

static COMMAND: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(
        r"(?i)(?:in\s+reply\s+to\s+(?:the\s+)?|after\s+|>>>\s*|most\s+progress\s+was\s+|\[|smtp:|smtp\s+command\s+)(end\s+of\s+data|data|rcpt[\s_]+to|rcpt|mail[\s_]+from)\b",
    )
    .expect("command regex")
});

impl SmtpCommand {
    /// The command a bounce text says was refused: Postfix's "(in reply to
    /// RCPT TO command)", Exim's "after RCPT TO:", a transcript's ">>> DATA".
    /// The first mention wins.
    pub fn find(text: &str) -> Option<SmtpCommand> {
        let c = COMMAND.captures(text)?;
        let word = c[1].to_ascii_lowercase();
        Some(if word.starts_with("rcpt") {
            SmtpCommand::RcptTo
        } else if word.starts_with("mail") {
            SmtpCommand::MailFrom
        } else {
            SmtpCommand::Data
        })
    }
}

impl Facts {
    /// Classifies the facts into a bounce; `None` when the recipient is not
    /// an address.
    /// A delivery event's facts as a [`Delivered`]; `None` when the
    /// recipient is not an address.
    pub fn into_delivered(self, source: Source) -> Option<Delivered> {
        let (recipient, domain) = normalise_address(&self.recipient)?;
        let at = self.at.map(|t| t.timestamp_millis().to_string());
        let identity = digest(&[
            source.as_str(),
            &recipient,
            at.as_deref().unwrap_or(""),
            self.message_id.as_deref().unwrap_or(""),
        ]);
        Some(Delivered {
            domain,
            at: self.at,
            remote_mta: self.remote_mta.as_deref().and_then(host_name),
            source,
            identity,
            count: 1,
        })
    }

    pub fn into_bounce(self, source: Source) -> Option<Bounce> {
        let (recipient, domain) = normalise_address(&self.recipient)?;
        let status = self.status.as_deref().and_then(classify::normalise_status);
        let reply_code = self.reply_code.filter(|c| (200..600).contains(c));
        let class = classify(&classify::Clues {
            action: self.action,
            status: status.as_deref(),
            reply_code,
            diagnostic: self.diagnostic.as_deref().unwrap_or(""),
            hint: self.kind_hint,
            command: self.command,
            source: Some(source),
            domain: &domain,
            recipient: &recipient,
        });
        Some(Bounce {
            recipient,
            domain,
            at: self.at,
            action: self.action,
            status,
            reply_code,
            diagnostic: self
                .diagnostic
                .map(|d| {
                    cap_words(&d, MAX_DIAGNOSTIC * 4)
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .map(|d| cap_words(&d, MAX_DIAGNOSTIC).into_owned())
                .filter(|d| !d.is_empty()),
            remote_mta: self.remote_mta.as_deref().and_then(host_name),
            reporting_mta: self.reporting_mta.as_deref().and_then(host_name),
            kind: class.kind,
            hard: class.hard,
            source,
            message_id: self
                .message_id
                .map(|m| m.trim().trim_matches(|c| c == '<' || c == '>').to_string())
                .filter(|m| !m.is_empty()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_words_keep_their_head_and_tail() {
        assert_eq!(cap_words("short", 10), "short");
        let long = format!("{} 550 5.1.1 user unknown", "<u@a.test> ".repeat(8_000));
        let capped = cap_words(&long, MAX_DIAGNOSTIC);
        assert!(capped.len() <= MAX_DIAGNOSTIC + 5, "{}", capped.len());
        assert!(capped.starts_with("<u@a.test>") && capped.ends_with("550 5.1.1 user unknown"));
        // Never inside a character.
        let wide = "ü".repeat(1_000);
        assert!(
            cap_words(&wide, 101)
                .chars()
                .all(|c| c == 'ü' || c == ' ' || c == '…')
        );
    }

    #[test]
    fn enums_round_trip_their_names() {
        for k in Kind::ALL {
            assert_eq!(k.as_str().parse::<Kind>().unwrap(), *k);
            assert_eq!(serde_json::to_string(k).unwrap(), format!("\"{k}\""));
        }
        assert!(
            "nonsense"
                .parse::<Kind>()
                .unwrap_err()
                .contains("user_unknown")
        );
    }
}
