//! Sendmail's log lines (`sendmail[pid]` or Debian's `sm-mta[pid]`):
//! delivery lines `to=<…>, …, dsn=X.Y.Z, stat=…` that did not succeed,
//! and `stat=Sent` as a delivery. The other lines are passed over. The layout follows
//! Sendmail's operations guide ("Log file entries": `to=`, `relay=`,
//! `dsn=`, `stat=`; a temporary failure's `stat=Deferred: <reply>`).

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use regex::Regex;

use super::fields::Fields;
use crate::bounce::{Action, Facts, SmtpCommand};

static LINE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"^(?:(?P<bsd>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d)|(?P<iso>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)?))?\s*(?:\S+\s+)?[\w\-./]*(?:sendmail|sm-mta)[\w\-./]*\[\d+\]:\s*(?P<queue>[0-9A-Za-z]+): (?P<rest>.*)$",
    )
    .expect("sendmail line regex")
});

static RELAY: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^([^\s,\[]+?)\.?(?:\s|,|\[|$)").expect("relay regex"));
static DSN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(\d\.\d{1,3}\.\d{1,3})").expect("dsn regex"));

/// One line: `Ok(None)` for a line that is not a failed or deferred delivery.
pub fn parse_line(line: &str, now: DateTime<Utc>) -> Result<Option<Facts>, String> {
    let line = line.trim_end();
    if !line.contains("stat=") {
        return Ok(None);
    }
    let Some(caps) = LINE.captures(line) else {
        return Ok(None);
    };
    let fields = Fields::read(&caps["rest"], "stat")?;
    let Some(recipient) = fields.recipient() else {
        return Ok(None);
    };
    let stat = fields.get("stat").unwrap_or_default().trim().to_string();
    if stat.starts_with("Deliverable") {
        return Ok(None);
    }
    let (action, diagnostic) = if stat.starts_with("Sent") {
        (Action::Delivered, String::new())
    } else {
        match stat.strip_prefix("Deferred") {
            Some(why) => (
                Action::Delayed,
                why.trim_start_matches(':').trim().to_string(),
            ),
            None => (Action::Failed, stat.clone()),
        }
    };
    let status = fields
        .get("dsn")
        .and_then(|d| DSN.captures(d))
        .map(|c| c[1].to_string());
    let at = match (caps.name("iso"), caps.name("bsd")) {
        (Some(iso), _) => DateTime::parse_from_rfc3339(iso.as_str())
            .ok()
            .map(|t| t.with_timezone(&Utc)),
        (None, Some(bsd)) => super::postfix::bsd_time(bsd.as_str(), now),
        _ => None,
    };
    let diagnostic = Some(diagnostic).filter(|d| !d.is_empty());
    Ok(Some(Facts {
        recipient,
        at,
        action: Some(action),
        status,
        reply_code: diagnostic.as_deref().and_then(super::dsn::reply_code),
        command: diagnostic.as_deref().and_then(SmtpCommand::find),
        diagnostic,
        remote_mta: fields
            .get("relay")
            .and_then(|r| RELAY.captures(r))
            .map(|c| c[1].to_string()),
        reporting_mta: None,
        message_id: (action == Action::Delivered).then(|| caps["queue"].to_string()),
        kind_hint: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bounce::{Kind, Source};
    use chrono::TimeZone;

    use super::super::testing::now;

    fn bounce(line: &str) -> crate::bounce::Bounce {
        super::super::testing::bounce(parse_line, Source::Sendmail, line)
    }

    #[test]
    fn an_unknown_user() {
        let b = bounce(
            "Nov 30 10:00:00 mail sm-mta[1234]: 4AUA00Hx001234: to=<kim@example.test>, ctladdr=<me@mail.test> (1000/1000), delay=00:00:01, xdelay=00:00:01, mailer=esmtp, pri=30321, relay=mx.example.test. [192.0.2.25], dsn=5.1.1, stat=User unknown",
        );
        assert_eq!(b.recipient, "kim@example.test");
        assert_eq!(b.status.as_deref(), Some("5.1.1"));
        assert_eq!(b.remote_mta.as_deref(), Some("mx.example.test"));
        assert_eq!(b.kind, Kind::UserUnknown);
        assert!(b.hard);
        assert_eq!(
            b.at,
            Some(Utc.with_ymd_and_hms(2026, 11, 30, 10, 0, 0).unwrap())
        );
    }

    #[test]
    fn a_deferral_carries_the_reply() {
        let b = bounce(
            "Nov 30 10:00:00 mail sendmail[1234]: 4AUA00Hx001234: to=<jo@example.test>, delay=00:00:05, xdelay=00:00:05, mailer=esmtp, pri=120321, relay=mx.example.test. [192.0.2.25], dsn=4.7.1, stat=Deferred: 450 4.7.1 Greylisted, please try again later",
        );
        assert_eq!(b.action, Some(Action::Delayed));
        assert_eq!(b.reply_code, Some(450));
        assert_eq!(b.kind, Kind::Greylisted);
        assert!(!b.hard);
    }

    #[test]
    fn an_unknown_host() {
        let b = bounce(
            "Nov 30 10:00:00 mail sm-mta[1234]: 4AUA00Hx001234: to=<a@nowhere.test>, delay=00:00:00, xdelay=00:00:00, mailer=esmtp, pri=30321, dsn=5.1.2, stat=Host unknown (Name server: nowhere.test: host not found)",
        );
        assert_eq!(b.kind, Kind::DomainUnknown);
    }

    #[test]
    fn sent_mail_is_a_delivery() {
        let line = "Nov 30 10:00:00 mail sm-mta[1234]: 4AUA00Hx001234: to=<kim@example.test>, delay=00:00:01, xdelay=00:00:01, mailer=esmtp, pri=30321, relay=mx.example.test. [192.0.2.25], dsn=2.0.0, stat=Sent (Ok: queued as 12345)";
        let f = parse_line(line, now()).unwrap().unwrap();
        assert_eq!(f.action, Some(Action::Delivered));
        let d = f.into_delivered(Source::Sendmail).unwrap();
        assert_eq!(d.domain, "example.test");
        assert_eq!(d.remote_mta.as_deref(), Some("mx.example.test"));
        assert_eq!(d.at, Some(now() - chrono::Duration::hours(2)));
    }

    #[test]
    fn other_lines_are_not_bounces() {
        for line in [
            "Nov 30 10:00:00 mail sm-mta[1234]: 4AUA00Hx001234: from=<me@mail.test>, size=321, class=0, nrcpts=1, msgid=<x@mail.test>, proto=ESMTP, daemon=MTA-v4, relay=localhost [127.0.0.1]",
            "Nov 30 10:00:00 mail sm-mta[1234]: 4AUA00Hx001234: <kim@example.test>... User unknown",
        ] {
            assert_eq!(parse_line(line, now()), Ok(None), "{line}");
        }
    }
}
