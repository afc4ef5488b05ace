//! Which kind of bounce this is: one ordered rule table over the action,
//! the enhanced status code, the SMTP reply code and the diagnostic text
//! together. The first rule that matches decides. Read it top to bottom.

use std::sync::LazyLock;

use regex::Regex;

use super::{Action, Kind, SmtpCommand, Source};

/// The outcome of classification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classification {
    pub kind: Kind,
    /// Would a conventional bounce handler suppress on this? (A permanent
    /// failure of any kind but auto replies, complaints and deliveries.)
    pub hard: bool,
    /// Name of the rule that decided (for tests and explanations).
    pub rule: &'static str,
}

/// One rule: the statuses that decide alone (`X` stands for 4 or 5; a
/// trailing `*` takes any detail), the words (a regex over the lower-cased
/// diagnostic) that decide alone, and the kind they mean.
struct Rule {
    name: &'static str,
    kind: Kind,
    statuses: &'static [&'static str],
    words: Option<&'static str>,
}

const RULES: &[Rule] = &[
    // Rejections of the sender, not the recipient (RFC 3463 X.1.7, X.1.8,
    // and the words). They come first: "550 5.1.0 sender rejected" would
    // otherwise look like an unknown user.
    Rule {
        name: "sender-side",
        kind: Kind::PolicyBlocked,
        statuses: &["X.1.7", "X.1.8"],
        words: Some(
            r"after mail from|in reply to mail from command|sender was rejected|sender (address )?(rejected|denied|blocked|refused|verify failed|not allowed)|sender verification|domain of sender|sender domain (must|does not|not found)|your (mail )?server requires authentication|unauthenticated sender|rejected sender|from address (rejected|not allowed)|sender address (must|does not|not found)|mail from .{0,40}(rejected|refused)",
        ),
    },
    Rule {
        name: "auto-reply",
        kind: Kind::AutoReply,
        statuses: &[],
        words: Some(
            r"auto[- ]?(reply|response|responder|matically generated reply)|out of (the )?office|on vacation|i am (currently )?away",
        ),
    },
    Rule {
        name: "spam",
        kind: Kind::SpamBlocked,
        statuses: &["X.7.509"],
        words: Some(
            r"spam|blacklist|blocklist|black list|block list|(?:^|[^t] )listed (at|in|on|by)|spamhaus|spamcop|barracudacentral|\brbl\b|dnsbl|bad reputation|poor reputation|ip reputation|sender reputation|junk mail|bulk mail|unsolicited",
        ),
    },
    Rule {
        name: "relay-denied",
        kind: Kind::RelayDenied,
        statuses: &[],
        words: Some(
            r"relay(ing)? (access )?(denied|not (permitted|allowed))|not permitted to relay|unable to relay|relay(ing)? prohibited|we do not relay|no relaying|relaying denied|not a gateway",
        ),
    },
    Rule {
        name: "mailbox-full",
        kind: Kind::MailboxFull,
        statuses: &["X.2.2"],
        words: Some(
            r"over ?quota|quota (exceeded|full)|exceed(s|ed)? (the )?(storage|quota)|mailbox (is )?full|mail ?box full|insufficient (disk |system )?(space|storage)|not enough (disk )?space|storage (limit|quota|full)|mailfolder is full|user has exceeded",
        ),
    },
    Rule {
        name: "mailbox-disabled",
        kind: Kind::MailboxDisabled,
        // X.1.6: moved, no forwarding address. X.2.1 is also sent with
        // "user unknown", so words decide first there.
        statuses: &["X.1.6", "X.2.1*"],
        words: Some(
            r"has moved|moved (permanently|away)|no forwarding address|\b(is|are|was|has been) (disabled|inactive|suspended|deactivated)\b|(account|mailbox|address|user)( is| has been)? (disabled|suspended|inactive|deactivated|locked|closed|expired|blocked)|(disabled|suspended|inactive|deactivated|closed) (account|mailbox|user)|no longer (active|available|in use|valid|exists)|has been (disabled|suspended|terminated|deleted)|is not active|account expired",
        ),
    },
    Rule {
        name: "domain-unknown",
        kind: Kind::DomainUnknown,
        // X.1.10 (RFC 7505): the domain has a null MX, it takes no mail;
        // after the words, for Microsoft's RecipientNotFound shares it.
        statuses: &["X.1.2", "X.4.4", "X.1.10*"],
        words: Some(
            r"host (or domain name )?not found|host unknown|unrouteable address|unknown host|unrouteable (mail )?domain|domain (name )?(not found|does not exist|not exist|is not valid)|no such domain|unknown domain|name service error|nxdomain|no mx (record|host)|mx (record )?(not found|lookup failed)|domain (has no|without) (mx|mail)|dns lookup failure|could not resolve|no valid (hosts|mx)|(domain|host) (lookup|name) (failed|failure)|malformed or unexpected name server reply",
        ),
    },
    // X.1.1 and X.1.0 are the recipient-address codes; the words catch
    // the servers that send 5.0.0 or nothing with them. Apple's
    // "user lookup success but no user record found" is one of them.
    Rule {
        name: "user-unknown",
        kind: Kind::UserUnknown,
        // Not X.1.10: RFC 7505 made it "recipient address has null MX",
        // and Microsoft uses it for RecipientNotFound; its words decide.
        statuses: &["X.1.1", "X.1.0*", "X.1.3*"],
        words: Some(
            r"user (is )?unknown|unknown (user|recipient|address|local[- ]part|mailbox)|invalid final delivery userid|no such (user|mailbox|recipient|address|account|person)|user not found|(mailbox|recipient|address|account|user(name)?|addressee)( address)? (does not|doesn't|did not|does no longer) exist|(mailbox|recipient|address|account|user)( address)? (not found|unavailable|not available)|no (user record|mailbox here|mailbox by that name)|user lookup success but no user record|invalid (recipient|mailbox|address|user)|(recipient|address|user|mailbox) (is )?(invalid|not valid|not listed|unknown|rejected: user unknown)|not a (valid|known) (user|mailbox|recipient)|no account by that name|addressee unknown|nosuchuser|user doesn't have a|account (that you tried to reach )?does not exist|not our customer|mailbox not found|bad destination mailbox|recipient (unknown|not found)|unknown or illegal alias|no valid recipients|undeliverable address|no such local user|user not exist|cannot be delivered to this user|no such user here|#?5\.1\.0 address rejected|not listed in (the )?(domino directory|public name & address book)|\(and other recipients in the same domain\)|recipient name is not recognized|address (couldn.t|could not|wasn.t|was not) (be )?found|recipient address rejected(\.|: access denied|$)|resolver\.adr\.recip(ient)?notfound|recipient \S+ not found by smtp address lookup|check if (the )?address is correct|address (is )?not recognized|no longer (a )?valid (user|address|recipient)",
        ),
    },
    Rule {
        name: "too-large",
        kind: Kind::TooLarge,
        statuses: &["X.2.3", "X.3.4"],
        words: Some(
            r"too (big|large)|size (limit|exceeds|exceeded)|message (size|length) exceeds|exceeds (the )?(maximum|size)|maximum message size",
        ),
    },
    Rule {
        name: "greylisted",
        kind: Kind::Greylisted,
        statuses: &["4.7.1*greylist"],
        words: Some(
            r"gr[ea]ylist|please try again later|try again in \d+|temporarily (deferred|rejected)|deferred due to|come back later",
        ),
    },
    Rule {
        name: "rate-limited",
        kind: Kind::RateLimited,
        statuses: &["X.7.28"],
        words: Some(
            r"rate (limit|limited|exceeded)|too many (messages|connections|recipients|mails|emails|concurrent)|throttl|exceeded .{0,30}(rate|limit)|slow down|sending (rate|limit)|receiving mail at a rate|limit exceeded|too many errors|hourly|daily (sending )?(quota|limit)|number of connections",
        ),
    },
    Rule {
        name: "content",
        kind: Kind::ContentRejected,
        statuses: &[
            "X.6.0", "X.6.1", "X.6.2", "X.6.3", "X.6.4", "X.6.5", "X.6.6", "X.6.7", "X.6.8",
            "X.6.9", "X.6.10", "X.7.13",
        ],
        words: Some(
            r"virus|malware|content (rejected|filter|policy)|message content|attachment|infected|banned (file|content)|prohibited (content|attachment)|url (blocked|blacklisted)|phishing|message (body|header)s? (rejected|invalid)",
        ),
    },
    Rule {
        name: "expired",
        kind: Kind::Expired,
        statuses: &["X.4.7"],
        words: Some(
            r"expired|too long in queue|retry time(out)? (exceeded|reached)|retry time not reached|have been failing for a long time|delivery time expired|message timed out|could not be delivered within|giving up|undeliverable for \d+ (days|hours)|delivery temporarily suspended",
        ),
    },
    Rule {
        name: "network",
        kind: Kind::Network,
        statuses: &["X.4.*"],
        words: Some(
            r"connection (refused|timed out|reset|lost|closed|dropped)|network (is )?(unreachable|error)|no route to host|host unreachable|timed out|timeout|lost connection|broken pipe|conversation with .{0,60} (timed out|failed)",
        ),
    },
    Rule {
        name: "policy",
        kind: Kind::PolicyBlocked,
        statuses: &["X.7.*"],
        words: Some(
            r"policy|blocked|denied|not a member of|permission to post|the group you tried to contact|send mail as|not authori[sz]ed|authentication (required|failed)|\bdmarc\b|\bspf\b|\bdkim\b|reverse (dns|lookup)|\bptr\b|rdns|tls (is )?required|encryption required|not accepted|refused|rejected|prohibited|banned|access denied|restricted",
        ),
    },
    Rule {
        name: "system",
        kind: Kind::System,
        // X.3.2: "system not accepting network messages" (RFC 3463).
        statuses: &["X.3.2", "X.3.*", "X.5.*"],
        words: Some(
            r"system (error|failure|not accepting|full|unavailable)|internal (server )?error|local error|mail system (full|error)|server (error|failure|busy)|temporary (local )?(problem|failure|error)|resources temporarily unavailable|service (not available|unavailable)|try again|mailer error|loop(s)? (back to|detected)|routing loop|too many hops",
        ),
    },
];

static COMPILED: LazyLock<Vec<Option<Regex>>> = LazyLock::new(|| {
    RULES
        .iter()
        .map(|r| r.words.map(|w| Regex::new(w).expect("rule regex compiles")))
        .collect()
});

static STATUS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"([245])\.(\d{1,3})\.(\d{1,3})").expect("status regex"));

/// The first enhanced status code (`X.Y.Z`, RFC 3463) in `s`, normalised;
/// parts of IP addresses and version numbers are not codes.
pub fn normalise_status(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    for c in STATUS.captures_iter(s) {
        let m = c.get(0).expect("whole match");
        let before = m.start().checked_sub(1).map(|i| bytes[i]);
        let after = bytes.get(m.end()).copied();
        let after2 = bytes.get(m.end() + 1).copied();
        if before.is_some_and(|b| b.is_ascii_digit() || b == b'.' || b.is_ascii_alphabetic())
            || after.is_some_and(|b| b.is_ascii_digit() || b.is_ascii_alphabetic())
            || (after == Some(b'.') && after2.is_some_and(|b| b.is_ascii_digit()))
        {
            continue;
        }
        let subject: u32 = c[2].parse().ok()?;
        let detail: u32 = c[3].parse().ok()?;
        return Some(format!("{}.{subject}.{detail}", &c[1]));
    }
    None
}

/// Whether `status` fits a rule pattern such as `X.1.1`, `5.7.*` or
/// `4.7.1*greylist` (the part after `*` must appear in the diagnostic).
fn status_matches(pattern: &str, status: &str, diagnostic: &str) -> bool {
    let (code, needs) = match pattern.split_once('*') {
        Some((code, needs)) => (code, Some(needs)),
        None => (pattern, None),
    };
    let mut p = code.split('.');
    let mut s = status.split('.');
    for _ in 0..3 {
        match (p.next(), s.next()) {
            (Some("X"), Some(c)) => {
                if c != "4" && c != "5" {
                    return false;
                }
            }
            (Some(""), _) | (None, _) => break, // `5.7.*`: the rest is free
            (Some(a), Some(b)) => {
                if a != b {
                    return false;
                }
            }
            (Some(_), None) => return false,
        }
    }
    match needs {
        Some(words) if !words.is_empty() => diagnostic.contains(words),
        _ => true,
    }
}

/// Everything classification looks at.
#[derive(Debug, Clone, Copy, Default)]
pub struct Clues<'a> {
    pub action: Option<Action>,
    pub status: Option<&'a str>,
    pub reply_code: Option<u16>,
    pub diagnostic: &'a str,
    /// A kind the source states outright.
    pub hint: Option<Kind>,
    /// The SMTP command the server refused, when the bounce says.
    pub command: Option<SmtpCommand>,
    /// Where the bounce came from (bounce emails carry transcripts whose
    /// silence about the SMTP phase means something; ESP events do not).
    pub source: Option<Source>,
    /// The recipient's domain.
    pub domain: &'a str,
    /// The recipient (lower case).
    pub recipient: &'a str,
}

/// Rules beside the table: a contradicting code overruled by clear words,
/// and those applied after the table to an unknown-user verdict only.
pub const OVERRIDES: &[&str] = &[
    "words-over-code",
    "filtered-after-data",
    "unconfirmed",
    "mailbox-exists",
    "policy-code",
    "unnamed-recipient",
    "rate-words",
];

/// Wordings only a recipient directory lookup produces, which stand without
/// a code: Exchange's "The recipient name is not recognized", Google's
/// "the address couldn't be found", TrendMicro's "check if address is
/// correct".
static STRONG: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"recipient name is not recognized|not listed in (the )?(domino directory|public name & address book)|\(and other recipients in the same domain\)|address (couldn.t|could not) be found|not found by smtp address lookup|resolver\.adr\.recip(ient)?notfound|recipient address rejected: access denied|please check if (the )?address is correct")
        .expect("strong regex")
});

/// Wordings that confirm an unknown user when they stand in the server's
/// own reply (after its code), even after DATA or under a policy code:
/// Yahoo's "554 delivery error: dd This user doesn't have a yahoo.com
/// account", Microsoft's "550 Requested action not taken: mailbox
/// unavailable", Yandex's "550 5.7.1 No such user!" (its standard reply to
/// an unknown recipient, under a policy code).
static STRONG_IN_REPLY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"this user doesn.t have a \S+ account|requested action not taken: mailbox unavailable|invalid recipient|no such user!")
        .expect("strong reply regex")
});

static REPLY_START: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?:^|[^\d.])[45]\d\d[ \-:]").expect("reply start regex"));

/// Whether the server's own words name the recipient: "550
/// <a@example.com>: User unknown" (after its reply code), "Unknown user:
/// a@example.com" (right after the wording); not our own line
/// "<a@example.com>: 550 user unknown" in front of them.
fn names_the_address(text: &str, recipient: &str) -> bool {
    if recipient.is_empty() {
        return false;
    }
    let after_code = REPLY_START
        .find(text)
        .is_some_and(|m| text[m.end()..].contains(recipient));
    let after_words = USER_UNKNOWN_WORDS.find_iter(text).any(|m| {
        text[m.end()..]
            .trim_start_matches([':', ' ', '<', '"'])
            .starts_with(recipient)
    });
    after_code || after_words
}

/// Whether a confirming wording stands in the server's reply.
fn strong_in_reply(text: &str) -> bool {
    REPLY_START
        .find(text)
        .is_some_and(|m| STRONG_IN_REPLY.is_match(&text[m.end()..]))
}

static USER_UNKNOWN_WORDS: LazyLock<Regex> = LazyLock::new(|| {
    let i = RULES
        .iter()
        .position(|r| r.name == "user-unknown")
        .expect("user-unknown rule");
    Regex::new(RULES[i].words.expect("user-unknown words")).expect("user-unknown regex")
});

/// "550 : User unknown" with the address slot left empty: the reply of a
/// server refusing on the recipient's own filter settings (KDDI's ezweb and
/// au among others), where a missing user is "550 <addr>: User unknown".
static UNNAMED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b[45]\d\d[ \-]?:?\s*:\s*:?\s*user unknown|refused due to recipient preferences")
        .expect("unnamed regex")
});

/// Classifies one bounce.
pub fn classify(e: &Clues) -> Classification {
    let text = e.diagnostic.to_lowercase();
    let v = classify_table(e.action, e.status, e.reply_code, &text, e.hint);
    if v.kind != Kind::UserUnknown || e.hint.is_some() {
        return v;
    }
    let kind = |kind: Kind, rule: &'static str| Classification { kind, rule, ..v };
    if UNNAMED.is_match(&text) {
        return kind(Kind::PolicyBlocked, "unnamed-recipient");
    }
    // A 5.1.1 whose words say "too many recipients this hour".
    let rate = RULES
        .iter()
        .position(|r| r.name == "rate-limited")
        .expect("rate rule");
    if COMPILED[rate].as_ref().is_some_and(|re| re.is_match(&text)) {
        return kind(Kind::RateLimited, "rate-words");
    }
    // Refused at RCPT TO with unknown-user words: the address, whatever
    // the code (exim: "after RCPT TO: … 554 5.7.1 … Recipient address
    // rejected"); and wordings that only a directory lookup produces.
    if e.command == Some(SmtpCommand::RcptTo) || STRONG.is_match(&text) || strong_in_reply(&text) {
        return v;
    }
    // X.2.0 says the mailbox exists (RFC 3463 §3.3): "user unknown" beside
    // it is a filter's wording.
    if e.status.is_some_and(|s| s.ends_with(".2.0")) {
        return kind(Kind::PolicyBlocked, "mailbox-exists");
    }
    // X.7.* is the security/policy class: "user unknown" under a policy
    // code is a policy refusal worded as a missing user.
    if e.status
        .is_some_and(|s| s.get(1..).is_some_and(|r| r.starts_with(".7.")))
    {
        return kind(Kind::PolicyBlocked, "policy-code");
    }
    // An address code (X.1.1, X.1.0, X.1.3) vouches for the words.
    // (X.1.* but the sender's X.1.7/X.1.8 and the domain's X.1.2; X.1.10
    // is Microsoft's RecipientNotFound, X.1.351 its relay of one.)
    let address_code = e.status.is_some_and(|s| {
        let mut parts = s.split('.').skip(1);
        parts.next() == Some("1") && !matches!(parts.next(), Some("2" | "7" | "8"))
    });
    if address_code {
        return v;
    }
    // Without one, the words count when the refusal answered RCPT TO. After
    // DATA the address had been accepted: a filter refused the message.
    match e.command {
        Some(SmtpCommand::RcptTo) => v,
        Some(SmtpCommand::Data) => kind(Kind::PolicyBlocked, "filtered-after-data"),
        // A bounce email that shows neither code nor phase: not proof enough
        // to suppress on. (ESP events are summaries; they keep their words.)
        _ if e.source == Some(Source::Dsn) && !names_the_address(&text, e.recipient) => {
            kind(Kind::PolicyBlocked, "unconfirmed")
        }
        _ => v,
    }
}

/// The table alone; `text` is the diagnostic, lower-cased.
fn classify_table(
    action: Option<Action>,
    status: Option<&str>,
    reply_code: Option<u16>,
    text: &str,
    hint: Option<Kind>,
) -> Classification {
    let permanent = match (status, reply_code) {
        (Some(s), _) if s.starts_with('5') => true,
        (Some(s), _) if s.starts_with('4') || s.starts_with('2') => false,
        (None, Some(c)) => c >= 500,
        (None, None) => action == Some(Action::Failed),
        _ => false,
    };
    let verdict = |kind: Kind, rule: &'static str| Classification {
        kind,
        hard: permanent
            && !matches!(kind, Kind::AutoReply | Kind::Complaint | Kind::Delivered)
            // An expiry is our side giving up: permanent only when the
            // remote server's last word was (Exim reports expiries as
            // `5.0.0` with no reply at all).
            && (kind != Kind::Expired || reply_code.is_some_and(|c| c >= 500)),
        rule,
    };
    // Facts stated outright win: a delivery is a delivery, a complaint a complaint.
    if matches!(
        action,
        Some(Action::Delivered | Action::Relayed | Action::Expanded)
    ) || status.is_some_and(|s| s.starts_with('2'))
    {
        return verdict(Kind::Delivered, "delivered");
    }
    if let Some(kind) = hint {
        return verdict(kind, "stated by the source");
    }
    // A specific code (`5.1.1`) decides before words do, unless the words
    // clearly say what the code cannot be; words decide before a broad
    // code (`5.7.*`) or a code that says nothing (`X.0.0`).
    if let Some(s) = status.filter(|s| !s.ends_with(".0.0")) {
        for rule in RULES {
            if rule
                .statuses
                .iter()
                .any(|p| !p.contains('*') && status_matches(p, s, text))
                && !(rule.name != "sender-side" && sender_side(text))
            {
                if let Some(words) = contradicted(rule.kind, reply_code, text) {
                    return verdict(words, "words-over-code");
                }
                return verdict(rule.kind, rule.name);
            }
        }
    }
    for (rule, re) in RULES.iter().zip(COMPILED.iter()) {
        if let Some(re) = re
            && re.is_match(text)
        {
            return verdict(rule.kind, rule.name);
        }
    }
    if let Some(s) = status {
        for rule in RULES {
            if rule.statuses.iter().any(|p| status_matches(p, s, text)) {
                return verdict(rule.kind, rule.name);
            }
        }
    }
    if action == Some(Action::Delayed) {
        // A delay that names the remote server's temporary refusal but no
        // reason any rule knows (Exim's warning with only "450 4.2.0"):
        // nothing has expired, and the reason is unknown: say so.
        if reply_code.is_some_and(|c| (400..500).contains(&c))
            || status.is_some_and(|s| s.starts_with('4'))
        {
            return verdict(Kind::Other, "delayed-unexplained");
        }
        return verdict(Kind::Expired, "delayed");
    }
    verdict(Kind::Other, "other")
}

/// A code overruled: the kind that the reply code and clear words say
/// together against the enhanced code, if any. An address code (X.1.1)
/// says the mailbox does not exist; a 552 reply (RFC 5321: "exceeded
/// storage allocation") with words that say it is full (or the message too
/// big for it) say it exists. Two of three win: qmail's vpopmail answers an
/// over-quota mailbox "552 sorry, mailbox … is over quota temporarily
/// (#5.1.1)" (Sisimai's MailboxFull wordings; an Openfind error table
/// lists "552 5.1.1 Sorry, Mailbox … Is Over Quota Temporarily"). Words
/// alone do not overrule a code: a bounce text may quote another
/// recipient's reply beside this one's.
fn contradicted(code: Kind, reply_code: Option<u16>, text: &str) -> Option<Kind> {
    if code != Kind::UserUnknown || reply_code != Some(552) {
        return None;
    }
    RULES
        .iter()
        .zip(COMPILED.iter())
        .filter(|(r, _)| matches!(r.kind, Kind::MailboxFull | Kind::TooLarge))
        .find(|(_, re)| re.as_ref().is_some_and(|re| re.is_match(text)))
        .map(|(r, _)| r.kind)
}

fn sender_side(text: &str) -> bool {
    COMPILED[0].as_ref().is_some_and(|re| re.is_match(text))
}

#[cfg(test)]
mod tests;
