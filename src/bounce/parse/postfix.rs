//! Postfix log lines: `status=bounced`, `deferred`, `expired` and
//! `undeliverable` delivery lines, with or without the syslog prefix, and
//! `status=sent` as a delivery (the denominator of unknown-user rates).
//! Other lines (connections, `NOQUEUE` rejects of incoming mail, …) are
//! not bounces of ours and are skipped.

use std::sync::LazyLock;

use chrono::{DateTime, Datelike, NaiveDateTime, Utc};
use regex::Regex;

use super::fields::Fields;
use crate::bounce::{Action, Facts, SmtpCommand};

static LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^(?:(?P<bsd>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d)|(?P<iso>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?))?\s*(?:\S+\s+)?(?:[\w\-./]*postfix[\w\-./]*\[\d+\]:\s*)?(?P<queue>[0-9A-Za-z]+): (?P<rest>.*)$",
    )
    .expect("postfix line regex")
});

static RELAY: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^([^\[,\s]+)").expect("relay regex"));
static DSN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(\d\.\d{1,3}\.\d{1,3})").expect("dsn regex"));
static STATUS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^([\w\-]+)(?: \((?P<why>.*)\))?").expect("status regex"));
static SAID: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"host (?P<host>[^\[\s]+)\[[^\]]*\] said: (?P<text>.*?)(?: \(in reply to (?P<cmd>[\w ]+?) command\))?$")
        .expect("said regex")
});

/// One parsed line: `Ok(None)` for a line that is not a delivery failure.
pub fn parse_line(line: &str, now: DateTime<Utc>) -> Result<Option<Facts>, String> {
    let line = line.trim_end();
    if !line.contains("status=") {
        return Ok(None);
    }
    let caps = LINE
        .captures(line)
        .ok_or("a postfix status line without a queue id")?;
    let rest = caps.name("rest").map_or("", |m| m.as_str());
    let fields = Fields::read(rest, "status")?;
    let st = fields
        .get("status")
        .and_then(|s| STATUS.captures(s))
        .ok_or("no status=")?;
    let action = match &st[1] {
        "bounced" | "undeliverable" | "undeliverable-but-not-cached" => Action::Failed,
        "deferred" => Action::Delayed,
        "expired" => Action::Failed,
        "sent" => Action::Delivered,
        _ => return Ok(None), // deliverable (a verify probe), …
    };
    let Some(recipient) = fields.recipient() else {
        // `from=<…>, status=expired, returned to sender`: no recipient here.
        return Ok(None);
    };
    let why = st.name("why").map(|m| m.as_str().to_string());
    let (remote, diagnostic, command) = match why.as_deref().and_then(|w| SAID.captures(w)) {
        Some(c) => (
            Some(c["host"].to_string()),
            Some(c["text"].to_string()),
            c.name("cmd")
                .and_then(|m| SmtpCommand::find(&format!("after {}", m.as_str()))),
        ),
        None => (
            fields
                .get("relay")
                .and_then(|r| RELAY.captures(r))
                .map(|c| c[1].to_string())
                .filter(|r| r != "none"),
            why.clone(),
            None,
        ),
    };
    let at = if let Some(iso) = caps.name("iso") {
        DateTime::parse_from_rfc3339(iso.as_str())
            .ok()
            .map(|t| t.with_timezone(&Utc))
    } else {
        caps.name("bsd").and_then(|m| bsd_time(m.as_str(), now))
    };
    Ok(Some(Facts {
        recipient,
        at,
        action: Some(if &st[1] == "expired" {
            Action::Failed
        } else {
            action
        }),
        status: fields
            .get("dsn")
            .and_then(|d| DSN.captures(d))
            .map(|c| c[1].to_string()),
        reply_code: diagnostic.as_deref().and_then(super::dsn::reply_code),
        diagnostic,
        remote_mta: remote,
        reporting_mta: None,
        // A delivery is told apart from a second reading of the same line
        // by its queue id.
        message_id: (action == Action::Delivered).then(|| caps["queue"].to_string()),
        kind_hint: None,
        command,
    }))
}

/// Syslog's `Aug 24 09:24:11` has no year: the latest such moment not more
/// than a day after `now`.
pub(super) fn bsd_time(s: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    for year in [now.year(), now.year() - 1] {
        let t = NaiveDateTime::parse_from_str(&format!("{year} {s}"), "%Y %b %e %H:%M:%S")
            .ok()?
            .and_utc();
        if now
            .checked_add_signed(chrono::Duration::days(1))
            .is_none_or(|limit| t <= limit)
        {
            return Some(t);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 0, 0, 0).unwrap()
    }

    #[test]
    fn a_bounced_line_with_syslog_prefix() {
        let f = parse_line("Aug 28 10:12:10 nbh2 postfix-google/smtp[28345]: 7A7D47BDC: to=<www.xx@gmail.com>, relay=gmail-smtp-in.l.google.com[74.125.133.26]:25, delay=123, delays=0.71/123/0.03/0.02, dsn=5.1.1, status=bounced (host gmail-smtp-in.l.google.com[74.125.133.26] said: 550-5.1.1 The email account that you tried to reach does not exist. (in reply to RCPT TO command))", now()).unwrap().unwrap();
        assert_eq!(f.recipient, "www.xx@gmail.com");
        assert_eq!(f.status.as_deref(), Some("5.1.1"));
        assert_eq!(f.reply_code, Some(550));
        assert_eq!(f.remote_mta.as_deref(), Some("gmail-smtp-in.l.google.com"));
        assert_eq!(
            f.at,
            Some(Utc.with_ymd_and_hms(2026, 8, 28, 10, 12, 10).unwrap())
        );
        assert_eq!(f.command, Some(SmtpCommand::RcptTo));
    }

    #[test]
    fn a_december_line_read_in_january_is_last_year() {
        let jan = Utc.with_ymd_and_hms(2027, 1, 2, 0, 0, 0).unwrap();
        assert_eq!(
            bsd_time("Dec 31 23:00:00", jan),
            Some(Utc.with_ymd_and_hms(2026, 12, 31, 23, 0, 0).unwrap())
        );
    }

    #[test]
    fn lines_that_are_not_delivery_failures_are_skipped() {
        assert_eq!(
            parse_line(
                "585BC3F: from=<>, status=expired, returned to sender",
                now()
            ),
            Ok(None)
        );
        assert_eq!(
            parse_line(
                "Aug 24 16:59:23 stat1 postfix/smtpd[20464]: NOQUEUE: reject: RCPT from unknown[123.4.56.78]: 550 5.1.1 <buy@mail.xxx.cn>: Recipient address rejected",
                now()
            ),
            Ok(None)
        );
    }

    #[test]
    fn sent_mail_is_a_delivery() {
        let f = parse_line(
            "Nov 30 09:59:00 mail postfix/smtp[7]: ABC: to=<a@b.example>, relay=mx.b.example[192.0.2.9]:25, delay=1, dsn=2.0.0, status=sent (250 ok)",
            now(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(f.action, Some(Action::Delivered));
        let d = f.into_delivered(crate::bounce::Source::Postfix).unwrap();
        assert_eq!(d.domain, "b.example");
        assert_eq!(d.remote_mta.as_deref(), Some("mx.b.example"));
        assert!(d.at.is_some());
        // The same line read twice is the same delivery; another queue id is not.
        let again = |l: &str| {
            parse_line(l, now())
                .unwrap()
                .unwrap()
                .into_delivered(crate::bounce::Source::Postfix)
                .unwrap()
                .identity
        };
        let a = "Nov 30 09:59:00 mail postfix/smtp[7]: ABC: to=<a@b.example>, status=sent (250 ok)";
        assert_eq!(again(a), again(a));
        assert_ne!(again(a), again(&a.replace("ABC:", "ABD:")));
    }
}
