//! Exim's main log: delivery failures (`**`) and deferrals (`==`), with or
//! without a syslog prefix. Arrivals (`<=`), deliveries (`=>`, `->`),
//! `Completed` and the rest are not bounces of ours and are skipped.
//!
//! A failure line is `[date time] id ** address [<parent>] [R=router]
//! [T=transport] [defer (errno)] [H=host [ip]] [more fields]: message`;
//! the message is the remote server's reply ("SMTP error from remote mail
//! server after RCPT TO:<…>: 550 5.1.1 …", older Exims name the host
//! there: "host mx.example [192.0.2.1]: 550 …") or Exim's own words
//! ("Unrouteable address", "retry timeout exceeded", "all hosts for
//! 'example.com' have been failing for a long time (and retry time not
//! reached)"). The layout follows Exim's specification, chapter "Log
//! files" (the `**`/`==` flags and the `R=`, `T=`, `H=` fields).

use std::sync::LazyLock;

use chrono::{DateTime, NaiveDateTime, Utc};
use regex::Regex;

use crate::bounce::{Action, Facts, SmtpCommand, address};

/// `[syslog prefix] [exim[pid]:] [date time[.ms] [tz]] [[pid]] id flag rest`.
static LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^(?:(?P<bsd>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d)|(?P<iso>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?))?\s*(?:\S+\s+[\w\-./]*exim[\w\-./]*(?:\[\d+\])?:\s*)?(?:(?P<date>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?:\.\d+)?(?: (?P<tz>[+-]\d{4}))?\s+)?(?:\[\d+\]\s+)?(?P<id>[0-9A-Za-z]{6}-[0-9A-Za-z]{6,11}-[0-9A-Za-z]{2,4})\s+(?P<flag>\*\*|==|=>|->)\s+(?P<rest>.*)$",
    )
    .expect("exim line regex")
});

/// `H=mx.example.com [192.0.2.1]` (or `H=[192.0.2.1]`), and the older
/// "host mx.example.com [192.0.2.1]:" inside the message.
static HOST: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?:^|\s)(?:H=|host )(?P<name>[^\s\[\]:]+)?\s*(?:\[(?P<ip>[0-9A-Fa-f.:]+)\](?::\d+)?)?",
    )
    .expect("exim host regex")
});

/// One line: `Ok(None)` for a line that is not a failure or deferral.
pub fn parse_line(line: &str, now: DateTime<Utc>) -> Result<Option<Facts>, String> {
    Ok(parse(line, now)?.map(|(_, f)| f))
}

/// A log read in order: a failure in Exim's own words ("retry timeout
/// exceeded") takes the remote server's last reply from the deferrals
/// before it, as Exim's own bounce message does ("450 4.7.1 … Greylisted:
/// retry timeout exceeded"): the reply is what the refusal was about.
#[derive(Debug, Default)]
pub struct Reader {
    /// The last deferral's diagnostic and host, by (message id, recipient).
    deferred: std::collections::HashMap<(String, String), (String, Option<String>)>,
}

/// Deferrals remembered at most (a log of a busy server's whole day).
const REMEMBERED: usize = 100_000;

impl Reader {
    pub fn line(&mut self, line: &str, now: DateTime<Utc>) -> Result<Option<Facts>, String> {
        let Some((id, mut f)) = parse(line, now)? else {
            return Ok(None);
        };
        let key = (id, f.recipient.to_ascii_lowercase());
        if f.action == Some(Action::Delivered) {
            self.deferred.remove(&key);
        } else if f.action == Some(Action::Delayed) {
            if let Some(d) = &f.diagnostic
                && f.reply_code.is_some()
            {
                if self.deferred.len() >= REMEMBERED {
                    self.deferred.clear();
                }
                self.deferred.insert(key, (d.clone(), f.remote_mta.clone()));
            }
        } else if let Some((reply, host)) = self.deferred.remove(&key)
            && f.reply_code.is_none()
        {
            let own = f.diagnostic.take().unwrap_or_default();
            let d = format!("{reply}: {own}");
            f.status = crate::bounce::classify::normalise_status(&d);
            f.reply_code = super::dsn::reply_code(&d);
            f.command = SmtpCommand::find(&d);
            f.remote_mta = f.remote_mta.or(host);
            f.diagnostic = Some(d);
        }
        Ok(Some(f))
    }
}

/// One line, with its message id.
fn parse(line: &str, now: DateTime<Utc>) -> Result<Option<(String, Facts)>, String> {
    let line = line.trim_end();
    if ![" ** ", " == ", " => ", " -> "]
        .iter()
        .any(|flag| line.contains(flag))
    {
        return Ok(None);
    }
    let Some(caps) = LINE.captures(line) else {
        return Ok(None);
    };
    let rest = &caps["rest"];
    // The address is read whole by the grammar: a quoted local part may
    // hold spaces, `: ` and `@` (`** "kim@w1.test x"@attacker.test`), none
    // of which starts the fields or the message.
    let address = leading_address(rest);
    let (fields, message) = split_message(&rest[address.map_or(0, |(_, end)| end)..]);
    let delivered = matches!(&caps["flag"], "=>" | "->");
    if delivered {
        // `=> kim@example.test R=… H=…`, or `=> kim <kim@example.test> R=…`
        // (a local part first); a delivery to a file or pipe has no address.
        let Some((recipient, _)) = address else {
            return Ok(None);
        };
        let remote_mta = HOST
            .captures(fields)
            .and_then(|c| c.name("name").or_else(|| c.name("ip")))
            .map(|m| m.as_str().to_string());
        let id = caps["id"].to_string();
        return Ok(Some((
            id.clone(),
            Facts {
                recipient: recipient.to_string(),
                at: time(&caps, now),
                action: Some(Action::Delivered),
                remote_mta,
                message_id: Some(id),
                ..Facts::default()
            },
        )));
    }
    let recipient = address
        .ok_or("an exim failure line without one whole address")?
        .0
        .to_string();
    let host = HOST
        .captures(fields)
        .or_else(|| HOST.captures(message))
        .filter(|c| c.name("name").is_some() || c.name("ip").is_some());
    let remote_mta = host.as_ref().and_then(|c| {
        c.name("name")
            .or_else(|| c.name("ip"))
            .map(|m| m.as_str().to_string())
    });
    let diagnostic = match host.as_ref().and_then(|c| c.name("ip")) {
        // The address stays in the words: the host name alone may not say
        // which of its addresses answered.
        Some(ip) if !message.contains(ip.as_str()) => format!("{message} (host [{}])", ip.as_str()),
        _ => message.to_string(),
    };
    let at = time(&caps, now);
    let diagnostic = Some(diagnostic).filter(|d| !d.is_empty());
    let id = caps["id"].to_string();
    Ok(Some((
        id,
        Facts {
            recipient,
            at,
            action: Some(if &caps["flag"] == "**" {
                Action::Failed
            } else {
                Action::Delayed
            }),
            status: diagnostic
                .as_deref()
                .and_then(crate::bounce::classify::normalise_status),
            reply_code: diagnostic.as_deref().and_then(super::dsn::reply_code),
            command: diagnostic.as_deref().and_then(SmtpCommand::find),
            diagnostic,
            remote_mta,
            reporting_mta: None,
            message_id: None,
            kind_hint: None,
        },
    )))
}

/// A line's time: Exim's own stamp (with its zone), or the syslog prefix's.
fn time(caps: &regex::Captures, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match (caps.name("date"), caps.name("iso"), caps.name("bsd")) {
        (Some(d), _, _) => exim_time(d.as_str(), caps.name("tz").map(|m| m.as_str())),
        (None, Some(iso), _) => DateTime::parse_from_rfc3339(iso.as_str())
            .ok()
            .map(|t| t.with_timezone(&Utc)),
        (None, None, Some(bsd)) => super::postfix::bsd_time(bsd.as_str(), now),
        _ => None,
    }
}

/// The fields before the message, and the message: the message starts at
/// the first ": " that is not inside a field's value (`X=TLS1.3:…` holds
/// colons but no space after them).
/// The address a line's rest starts with (`kim@x`, `<kim@x>`, or a local
/// part then the address, `kim <kim@x>`), and where the text after it
/// starts.
fn leading_address(rest: &str) -> Option<(&str, usize)> {
    let (skip, s) = match rest.split_once(' ') {
        Some((word, after)) if address::leading(rest).is_none() && after.starts_with('<') => {
            (word.len() + 1, after)
        }
        _ => (0, rest),
    };
    let a = address::leading(s)?;
    Some((a, skip + a.len() + if s.starts_with('<') { 2 } else { 0 }))
}

fn split_message(rest: &str) -> (&str, &str) {
    match rest.find(": ") {
        Some(i) => (&rest[..i], rest[i + 2..].trim()),
        None => (rest, ""),
    }
}

/// Exim's own time stamp, local time unless `log_timezone` added an
/// offset; without one it is taken as UTC (servers log in UTC, and a
/// bounce's time only needs to fall in the right window).
fn exim_time(s: &str, tz: Option<&str>) -> Option<DateTime<Utc>> {
    match tz {
        Some(tz) => DateTime::parse_from_str(&format!("{s} {tz}"), "%Y-%m-%d %H:%M:%S %z")
            .ok()
            .map(|t| t.with_timezone(&Utc)),
        None => NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S")
            .ok()
            .map(|t| t.and_utc()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bounce::{Kind, Source};
    use chrono::TimeZone;

    use super::super::testing::now;

    fn bounce(line: &str) -> crate::bounce::Bounce {
        super::super::testing::bounce(parse_line, Source::Exim, line)
    }

    #[test]
    fn a_refusal_at_rcpt_to_with_the_host_field() {
        // Exim 4.96's layout: H= before the message.
        let b = bounce(
            "2026-11-30 10:12:01 1tHqXg-0003rC-1A ** kim@example.test R=dnslookup T=remote_smtp H=mx.example.test [192.0.2.25] X=TLS1.3:TLS_AES_256_GCM_SHA384:256 CV=no: SMTP error from remote mail server after RCPT TO:<kim@example.test>: 550 5.1.1 <kim@example.test>: Recipient address rejected: User unknown in virtual mailbox table",
        );
        assert_eq!(b.recipient, "kim@example.test");
        assert_eq!(
            b.at,
            Some(Utc.with_ymd_and_hms(2026, 11, 30, 10, 12, 1).unwrap())
        );
        assert_eq!(b.status.as_deref(), Some("5.1.1"));
        assert_eq!(b.reply_code, Some(550));
        assert_eq!(b.remote_mta.as_deref(), Some("mx.example.test"));
        assert!(b.diagnostic.as_deref().unwrap().contains("192.0.2.25"));
        assert_eq!(b.kind, Kind::UserUnknown);
        assert!(b.hard);
    }

    #[test]
    fn the_older_layout_names_the_host_in_the_message() {
        // As in "Linux Network Administrator's Guide", 19.2.
        let b = bounce(
            "2000-01-30 14:48:28 12EvcH-0003rC-00 ** bill@lager.vbrew.com R=lookuphost T=smtp: SMTP error from remote mailer after RCPT TO:<bill@lager.vbrew.com>: host lager.vbrew.com [192.168.157.2]: 550 <bill@lager.vbrew.com>... User unknown",
        );
        assert_eq!(b.recipient, "bill@lager.vbrew.com");
        assert_eq!(b.remote_mta.as_deref(), Some("lager.vbrew.com"));
        assert_eq!(b.reply_code, Some(550));
        assert_eq!(b.kind, Kind::UserUnknown);
    }

    #[test]
    fn a_deferral_is_delayed_and_soft() {
        let b = bounce(
            "2026-11-30 10:20:00 1tHqXg-0004Wq-2B == jo@example.test R=dnslookup T=remote_smtp defer (-44) H=mx.example.test [192.0.2.25]: SMTP error from remote mail server after RCPT TO:<jo@example.test>: 451 4.7.1 Greylisted, please try again later",
        );
        assert_eq!(b.action, Some(Action::Delayed));
        assert_eq!(b.status.as_deref(), Some("4.7.1"));
        assert_eq!(b.kind, Kind::Greylisted);
        assert!(!b.hard);
    }

    #[test]
    fn a_connection_failure_without_a_reply() {
        let b = bounce(
            "2026-11-30 10:20:00 1tHqXg-0004Wq-2B == jo@example.test R=dnslookup T=remote_smtp defer (111): Connection refused",
        );
        assert_eq!(b.kind, Kind::Network);
        assert_eq!(b.reply_code, None);
        assert!(!b.hard);
    }

    #[test]
    fn exims_own_words() {
        let b =
            bounce("2026-11-30 10:20:00 1tHqXg-0004Wq-2B ** ann@nowhere.test: Unrouteable address");
        assert_eq!(b.kind, Kind::DomainUnknown);
        let b = bounce(
            "2026-11-30 10:20:00 1tHqXg-0004Wq-2B ** ann@example.test R=dnslookup T=remote_smtp: retry timeout exceeded",
        );
        assert_eq!(b.kind, Kind::Expired);
        assert!(!b.hard, "nothing permanent was said");
        let b = bounce(
            "2026-11-30 10:20:00 1tHqXg-0004Wq-2B ** ann@example.test R=dnslookup T=remote_smtp: all hosts for 'example.test' have been failing for a long time (and retry time not reached)",
        );
        assert_eq!(b.kind, Kind::Expired);
        assert!(!b.hard);
    }

    #[test]
    fn an_alias_names_its_parent_and_syslog_prefixes_are_read() {
        let b = bounce(
            "Nov 30 10:12:01 mail exim[2211]: 2026-11-30 10:12:01 1tHqXg-0003rC-1A ** info@example.test <sales@local.test> R=dnslookup T=remote_smtp H=mx.example.test [192.0.2.25]: SMTP error from remote mail server after RCPT TO:<info@example.test>: 550 5.1.1 unknown user",
        );
        assert_eq!(b.recipient, "info@example.test");
        assert_eq!(b.kind, Kind::UserUnknown);
        let b = bounce(
            "Nov 30 10:12:01 mail exim[2211]: 1tHqXg-0003rC-1A ** info@example.test R=dnslookup T=remote_smtp H=[192.0.2.25]: SMTP error from remote mail server after RCPT TO:<info@example.test>: 550 5.1.1 unknown user",
        );
        assert_eq!(
            b.at,
            Some(Utc.with_ymd_and_hms(2026, 11, 30, 10, 12, 1).unwrap())
        );
        assert_eq!(b.remote_mta.as_deref(), Some("192.0.2.25"));
        let b = bounce(
            "2026-11-30 10:12:01.123 +0100 [2211] 1tHqXg-0003rC-1A ** info@example.test R=dnslookup T=remote_smtp H=mx.example.test [192.0.2.25]: SMTP error from remote mail server after end of data: 550 5.7.1 Message rejected as spam",
        );
        assert_eq!(
            b.at,
            Some(Utc.with_ymd_and_hms(2026, 11, 30, 9, 12, 1).unwrap())
        );
        assert_eq!(b.kind, Kind::SpamBlocked);
    }

    #[test]
    fn a_retry_timeout_carries_the_last_deferrals_reply() {
        let mut r = Reader::default();
        let lines = [
            "2026-11-30 10:20:00 1tHqXg-0004Wq-2B == grey@example.test R=remote T=remote_smtp defer (-44) H=mx.example.test [192.0.2.25]: SMTP error from remote mail server after RCPT TO:<grey@example.test>: 450 4.7.1 Greylisted, please try again later",
            "2026-11-30 10:40:00 1tHqXg-0004Wq-2B ** grey@example.test: retry timeout exceeded",
        ];
        let got: Vec<Facts> = lines
            .iter()
            .filter_map(|l| r.line(l, now()).unwrap())
            .collect();
        let b = got[1].clone().into_bounce(Source::Exim).unwrap();
        assert_eq!(b.status.as_deref(), Some("4.7.1"));
        assert_eq!(b.kind, Kind::Greylisted);
        assert!(!b.hard, "an expiry of a temporary refusal");
        assert_eq!(b.remote_mta.as_deref(), Some("mx.example.test"));
        assert!(b.diagnostic.unwrap().ends_with("retry timeout exceeded"));
        // Without a deferral before it, Exim's own words stand alone.
        let alone = r.line(lines[1], now()).unwrap().unwrap();
        assert_eq!(alone.diagnostic.as_deref(), Some("retry timeout exceeded"));
    }

    #[test]
    fn deliveries_are_read_as_deliveries() {
        let lines = [
            "2026-11-30 10:12:01 1tHqXg-0003rC-1A => kim@example.test R=dnslookup T=remote_smtp H=mx.example.test [192.0.2.25] X=TLS1.3:TLS_AES_256_GCM_SHA384:256 C=\"250 2.0.0 OK\"",
            "2026-11-30 10:12:01 1tHqXg-0003rC-1A -> jo@example.test R=dnslookup T=remote_smtp H=mx.example.test [192.0.2.25]",
            "2026-11-30 10:12:01 1tHqXg-0003rC-1A => kim <kim@example.test> R=dnslookup T=remote_smtp H=[192.0.2.25]",
        ];
        for line in lines {
            let f = parse_line(line, now()).unwrap().unwrap();
            assert_eq!(f.action, Some(Action::Delivered), "{line}");
            let d = f.into_delivered(Source::Exim).unwrap();
            assert_eq!(d.domain, "example.test");
            assert_eq!(
                d.at,
                Some(Utc.with_ymd_and_hms(2026, 11, 30, 10, 12, 1).unwrap())
            );
        }
        let host = |l: &str| parse_line(l, now()).unwrap().unwrap().remote_mta;
        assert_eq!(host(lines[0]).as_deref(), Some("mx.example.test"));
        assert_eq!(host(lines[2]).as_deref(), Some("192.0.2.25"));
    }

    #[test]
    fn other_lines_are_not_bounces() {
        for line in [
            "2026-11-30 10:12:00 1tHqXg-0003rC-1A <= sender@local.test H=localhost [127.0.0.1] P=esmtp S=1234",
            "2026-11-30 10:12:01 1tHqXg-0003rC-1A => /var/mail/kim R=local T=appendfile",
            "2026-11-30 10:12:01 1tHqXg-0003rC-1A Completed",
            "2026-11-30 10:12:01 1tHqXg-0003rC-1A <= <> R=1tHqXg-0003rB-00 U=Debian-exim P=local S=2345",
            "2026-11-30 10:12:01 Start queue run: pid=1234",
        ] {
            assert_eq!(parse_line(line, now()), Ok(None), "{line}");
        }
    }
}

#[cfg(test)]
mod detection {
    use super::super::{Format, detect};

    #[test]
    fn exim_logs_are_recognised_with_and_without_syslog() {
        for log in [
            "2026-11-30 10:12:00 1tHqXg-0003rC-1A <= sender@local.test H=localhost [127.0.0.1] P=esmtp S=1234\n",
            "2026-11-30 10:12:00.123 +0100 [2211] 1tHqXg-0003rC-1A ** a@example.test: Unrouteable address\n",
            "Nov 30 10:12:01 mail exim[2211]: 1tHqXg-0003rC-1A Completed\n",
        ] {
            assert_eq!(detect(log.as_bytes()), Format::Exim, "{log}");
        }
        let postfix = "Nov 30 10:12:01 mail postfix/smtp[2211]: 7A7D47BDC: to=<a@example.test>, status=bounced (x)\n";
        assert_eq!(detect(postfix.as_bytes()), Format::Postfix);
        let sendmail = "Nov 30 10:00:00 mail sm-mta[1234]: 4AUA00Hx001234: to=<kim@example.test>, dsn=5.1.1, stat=User unknown\n";
        assert_eq!(detect(sendmail.as_bytes()), Format::Sendmail);
        assert_eq!(detect(b"From: a@example.test\n\nhi\n"), Format::Email);
    }
}

#[cfg(test)]
mod nothing {
    use super::super::{Format, parse};

    #[test]
    fn an_input_without_a_bounce_says_why() {
        let now = chrono::DateTime::from_timestamp(1_764_500_000, 0).unwrap();
        let log = "2026-11-30 10:12:01 1tHqXg-0003rC-1A Completed\n2026-11-30 10:12:02 1tHqXg-0003rC-1A <= a@local.test P=local S=1\n";
        let p = parse(log.as_bytes(), Some(Format::Exim), now);
        assert_eq!(
            p.why_nothing().as_deref(),
            Some("no bounce: none of its 2 lines is a failed or deferred delivery")
        );
        let p = parse(
            br#"{"event":"delivered","recipient":"a@example.com"}"#,
            None,
            now,
        );
        assert_eq!(
            p.why_nothing().as_deref(),
            Some("no bounce: passed over 1 \u{d7} Mailgun \"delivered\" (1 delivery read)")
        );
        let p = parse(b"", Some(Format::Exim), now);
        assert_eq!(p.why_nothing().as_deref(), Some("no bounce: it is empty"));
    }
}
