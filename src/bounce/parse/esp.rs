//! ESP webhook payloads: Amazon SES (raw notification, event-publishing
//! record, either inside an SNS envelope), SendGrid event batches, Mailgun
//! (`event-data` webhooks and Events API objects), Postmark bounces; and
//! JSONL of already-normalised bounces. Events that are not bounces
//! (delivered, processed, opened, …) are recognised and skipped.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::bounce::{Action, Bounce, Delivered, Facts, Kind, Source};

mod delivered;
pub use delivered::MAX_DELIVERED;

/// What one JSON value held.
#[derive(Debug, Default)]
pub struct Found {
    pub bounces: Vec<Bounce>,
    /// Successful deliveries (also counted as passed over: not bounces).
    pub delivered: Vec<Delivered>,
    /// Recognised events that are not bounces.
    pub skipped: usize,
    /// What those were, and how many of each (`mailgun "delivered"`).
    pub passed: std::collections::BTreeMap<String, usize>,
    /// One message per bad item (`[3]: …` for an item of a batch).
    pub errors: Vec<String>,
}

fn s<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn rfc3339(v: Option<&str>) -> Option<DateTime<Utc>> {
    v.and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// A Unix time as ESPs send it: seconds, or milliseconds where an ESP (or a
/// relay in front of it) uses them. 10^11 seconds lie in the year 5138,
/// 10^11 milliseconds in 1973: anything from there on is milliseconds. A
/// time before 1990 or after 2200 dates nothing and is dropped (the bounce
/// is then dated when it arrives).
fn unix(v: Option<&Value>) -> Option<DateTime<Utc>> {
    let mut f = v?.as_f64()?;
    if !f.is_finite() {
        return None;
    }
    if f.abs() >= 1e11 {
        f /= 1000.0;
    }
    const Y1990: f64 = 631_152_000.0;
    const Y2200: f64 = 7_258_118_400.0;
    if !(Y1990..Y2200).contains(&f) {
        return None;
    }
    DateTime::from_timestamp(f.trunc() as i64, (f.fract() * 1e9) as u32)
}

/// `smtp; 550 5.1.1 …` → `550 5.1.1 …`.
fn strip_type(d: &str) -> String {
    super::dsn::strip_type(d).to_string()
}

impl Found {
    /// A recognised event that is not a bounce, passed over.
    fn pass(&mut self, what: String) {
        self.skipped += 1;
        *self.passed.entry(what).or_default() += 1;
    }

    /// A delivery event: passed over as a bounce, kept as a delivery.
    fn delivery(&mut self, what: String, source: Source, facts: Facts) -> Result<(), String> {
        self.pass(what);
        let who = facts.recipient.clone();
        let d = facts
            .into_delivered(source)
            .ok_or_else(|| format!("{source} delivery: {who:?} is not an email address"))?;
        self.delivered.push(d);
        Ok(())
    }

    fn absorb(&mut self, f: Found) {
        self.bounces.extend(f.bounces);
        self.delivered.extend(f.delivered);
        self.skipped += f.skipped;
        for (what, n) in f.passed {
            *self.passed.entry(what).or_default() += n;
        }
    }
}

fn push(found: &mut Found, source: Source, facts: Facts) -> Result<(), String> {
    let who = facts.recipient.clone();
    match facts.into_bounce(source) {
        Some(b) => {
            found.bounces.push(b);
            Ok(())
        }
        None => Err(format!("{source} event: {who:?} is not an email address")),
    }
}

/// Reads one JSON value of any supported shape. A bad item of a batch is
/// an error of its own; the rest of the batch is read.
pub fn parse_value(v: &Value) -> Found {
    let mut found = Found::default();
    if let Some(items) = v.as_array() {
        for (i, item) in items.iter().enumerate() {
            let mut f = parse_value(item);
            let errors = std::mem::take(&mut f.errors);
            found.absorb(f);
            found
                .errors
                .extend(errors.into_iter().map(|e| format!("[{i}]: {e}")));
        }
        return found;
    }
    if let Err(e) = parse_object(v, &mut found) {
        found.errors.push(e);
    }
    found
}

fn parse_object(v: &Value, found: &mut Found) -> Result<(), String> {
    if !v.is_object() {
        return Err("expected a JSON object or array".into());
    }
    // SNS envelope around an SES notification.
    if s(v, "Type") == Some("Notification")
        && let Some(msg) = s(v, "Message")
    {
        let inner: Value =
            serde_json::from_str(msg).map_err(|e| format!("SNS Message is not JSON: {e}"))?;
        let mut f = parse_value(&inner);
        let errors = std::mem::take(&mut f.errors);
        found.absorb(f);
        return errors.into_iter().next().map_or(Ok(()), Err);
    }
    if let Some(t @ ("SubscriptionConfirmation" | "UnsubscribeConfirmation")) = s(v, "Type") {
        found.pass(format!("SNS {t}"));
        return Ok(());
    }
    if let Some(kind) = s(v, "notificationType").or_else(|| s(v, "eventType")) {
        return ses(v, kind, found);
    }
    if let Some(inner) = v.get("event-data") {
        return parse_object(inner, found);
    }
    if v.get("sg_event_id").is_some() || (v.get("event").is_some() && v.get("email").is_some()) {
        return sendgrid(v, found);
    }
    if v.get("event").is_some()
        && (v.get("recipient").is_some() || v.get("delivery-status").is_some())
    {
        return mailgun(v, found);
    }
    if s(v, "RecordType").is_some() || (v.get("TypeCode").is_some() && v.get("Email").is_some()) {
        return postmark(v, found);
    }
    if v.get("delivered").is_some() {
        return delivered::record(v, found);
    }
    if NORMALISED_FIELDS.iter().any(|k| v.get(k).is_some()) {
        return normalised(v, found);
    }
    Err("not a bounce format mxwatch knows (SES, SNS, SendGrid, Mailgun, Postmark, normalised JSONL)".into())
}

/// Reads a record's fields, gathering every problem rather than stopping at
/// the first.
struct Fields<'a> {
    v: &'a Value,
    problems: Vec<String>,
}

impl Fields<'_> {
    fn text(&mut self, k: &str) -> Option<String> {
        match self.v.get(k) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                self.problems
                    .push(format!("{k}: expected a string, got {other}"));
                None
            }
        }
    }

    fn flag(&mut self, k: &str) -> Option<bool> {
        match self.v.get(k) {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(other) => {
                self.problems
                    .push(format!("{k}: expected true or false, got {other}"));
                None
            }
        }
    }

    fn reply_code(&mut self) -> Option<u16> {
        match self.v.get("reply_code") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => match n.as_u64().and_then(|n| u16::try_from(n).ok()) {
                Some(c) if (200..600).contains(&c) => Some(c),
                _ => {
                    self.problems
                        .push(format!("reply_code: {n} is not an SMTP reply code"));
                    None
                }
            },
            Some(other) => {
                self.problems
                    .push(format!("reply_code: expected a number, got {other}"));
                None
            }
        }
    }
}

/// The fields of a normalised record (what `bounces parse --json` prints).
const NORMALISED_FIELDS: [&str; 13] = [
    "recipient",
    "domain",
    "at",
    "action",
    "status",
    "reply_code",
    "diagnostic",
    "remote_mta",
    "reporting_mta",
    "kind",
    "hard",
    "source",
    "message_id",
];

/// A normalised record, written by `bounces parse --json` or by hand: only
/// `recipient` is required. Every problem of the record is named at once.
/// `kind` and `hard` are taken as given when both are there (a record
/// mxwatch normalised); otherwise the rules classify the codes and words,
/// with a given `kind` as a hint. `domain` and `source` are derived.
fn normalised(v: &Value, found: &mut Found) -> Result<(), String> {
    let mut r = Fields {
        v,
        problems: Vec::new(),
    };
    let recipient = r.text("recipient");
    let at = r.text("at");
    let action = r.text("action");
    let status = r.text("status");
    let diagnostic = r.text("diagnostic");
    let remote_mta = r.text("remote_mta");
    let reporting_mta = r.text("reporting_mta");
    let kind = r.text("kind");
    let message_id = r.text("message_id");
    let reply_code = r.reply_code();
    let hard = r.flag("hard");
    let mut problems = r.problems;
    if recipient.is_none() && !problems.iter().any(|p| p.starts_with("recipient:")) {
        problems.push("recipient: missing (the one field a record needs)".into());
    }
    let at = at.and_then(|t| match DateTime::parse_from_rfc3339(&t) {
        Ok(t) => Some(t.with_timezone(&Utc)),
        Err(e) => {
            problems.push(format!("at: {t:?} is not an RFC 3339 time: {e}"));
            None
        }
    });
    let action = action.and_then(|a| {
        let parsed = Action::parse(&a);
        if parsed.is_none() {
            problems.push(format!(
                "action: {a:?} is not failed, delayed, delivered, relayed or expanded"
            ));
        }
        parsed
    });
    let kind = kind.and_then(|k| match k.parse::<Kind>() {
        Ok(k) => Some(k),
        Err(_) => {
            problems.push(format!("kind: {k:?} is not a bounce kind"));
            None
        }
    });
    if !problems.is_empty() {
        return Err(format!("not a normalised bounce: {}", problems.join("; ")));
    }
    let recipient = recipient.expect("checked above");
    let facts = Facts {
        recipient,
        at,
        action,
        status,
        reply_code,
        diagnostic,
        remote_mta,
        reporting_mta,
        message_id,
        kind_hint: kind,
        ..Facts::default()
    };
    let mut bounce = facts
        .into_bounce(Source::Jsonl)
        .ok_or_else(|| "the recipient is not an email address".to_string())?;
    // A record mxwatch normalised says its kind and hardness: taken as given.
    if let Some(k) = kind
        && hard.is_some()
    {
        bounce.kind = k;
    }
    if let Some(h) = hard {
        bounce.hard = h;
    }
    found.bounces.push(bounce);
    Ok(())
}

fn ses(v: &Value, kind: &str, found: &mut Found) -> Result<(), String> {
    let mail = v.get("mail");
    let message_id = mail.and_then(|m| s(m, "messageId")).map(str::to_string);
    let (section, list, action, hint) = match kind {
        "Bounce" => ("bounce", "bouncedRecipients", Some(Action::Failed), None),
        "Complaint" => (
            "complaint",
            "complainedRecipients",
            None,
            Some(Kind::Complaint),
        ),
        "DeliveryDelay" => (
            "deliveryDelay",
            "delayedRecipients",
            Some(Action::Delayed),
            None,
        ),
        "Delivery" => return delivered::ses(v, message_id, found),
        other => {
            found.pass(format!("SES {other:?}")); // Send, Open, Click, Reject, …
            return Ok(());
        }
    };
    let sec = v
        .get(section)
        .ok_or_else(|| format!("SES {kind} without a {section:?} object"))?;
    let at = rfc3339(s(sec, "timestamp"));
    let reporting = s(sec, "reportingMTA").map(strip_type);
    let remote = s(sec, "remoteMtaIp").map(str::to_string);
    let recipients = sec
        .get(list)
        .and_then(Value::as_array)
        .ok_or_else(|| format!("SES {kind} without {list:?}"))?;
    let transient = s(sec, "bounceType") == Some("Transient");
    // On SES's global or the account's suppression list: SES suppressed
    // the address for an earlier bounce and sent nothing.
    let hint = match s(sec, "bounceSubType") {
        Some("Suppressed" | "OnAccountSuppressionList") => Some(Kind::Suppressed),
        _ => hint,
    };
    for r in recipients {
        let diagnostic = s(r, "diagnosticCode").map(strip_type);
        let facts = Facts {
            recipient: s(r, "emailAddress").unwrap_or_default().to_string(),
            at,
            action: s(r, "action").and_then(Action::parse).or(if transient {
                Some(Action::Delayed)
            } else {
                action
            }),
            status: s(r, "status").map(str::to_string),
            reply_code: diagnostic.as_deref().and_then(super::dsn::reply_code),
            diagnostic: diagnostic.or_else(|| {
                s(sec, "bounceSubType")
                    .map(|sub| format!("{} bounce: {sub}", s(sec, "bounceType").unwrap_or("")))
            }),
            remote_mta: remote.clone(),
            reporting_mta: reporting.clone(),
            message_id: message_id.clone(),
            kind_hint: hint,
            command: None,
        };
        push(found, Source::Ses, facts)?;
    }
    Ok(())
}

fn sendgrid(v: &Value, found: &mut Found) -> Result<(), String> {
    let event = s(v, "event").unwrap_or("");
    // A drop for "Bounced Address": SendGrid suppressed it for an earlier
    // bounce (its suppression list), and sent nothing.
    let hint = (event == "dropped"
        && s(v, "reason").is_some_and(|r| r.eq_ignore_ascii_case("Bounced Address")))
    .then_some(Kind::Suppressed);
    let action = match event {
        "bounce" | "dropped" => Action::Failed,
        "deferred" => Action::Delayed,
        "spamreport" => {
            let facts = Facts {
                recipient: s(v, "email").unwrap_or_default().to_string(),
                at: unix(v.get("timestamp")),
                kind_hint: Some(Kind::Complaint),
                ..Facts::default()
            };
            return push(found, Source::Sendgrid, facts);
        }
        "delivered" => {
            let facts = Facts {
                recipient: s(v, "email").unwrap_or_default().to_string(),
                at: unix(v.get("timestamp")),
                action: Some(Action::Delivered),
                message_id: s(v, "sg_message_id").map(str::to_string),
                ..Facts::default()
            };
            return found.delivery("SendGrid \"delivered\"".into(), Source::Sendgrid, facts);
        }
        other => {
            found.pass(format!("SendGrid {other:?}")); // processed, open, click, …
            return Ok(());
        }
    };
    let diagnostic = s(v, "reason")
        .or_else(|| s(v, "response"))
        .map(str::to_string);
    let facts = Facts {
        recipient: s(v, "email").unwrap_or_default().to_string(),
        at: unix(v.get("timestamp")),
        action: Some(action),
        status: s(v, "status").map(str::to_string),
        reply_code: diagnostic.as_deref().and_then(super::dsn::reply_code),
        diagnostic,
        remote_mta: None,
        reporting_mta: None,
        message_id: s(v, "smtp-id")
            .map(str::to_string)
            .or_else(|| s(v, "sg_message_id").map(str::to_string)),
        kind_hint: hint,
        command: None,
    };
    push(found, Source::Sendgrid, facts)
}

fn mailgun(v: &Value, found: &mut Found) -> Result<(), String> {
    let event = s(v, "event").unwrap_or("");
    if matches!(event, "bounced" | "dropped") {
        return mailgun_legacy(v, event, found);
    }
    let hint = match event {
        "failed" | "temporary-fail" | "permanent-fail" => None,
        "complained" => Some(Kind::Complaint),
        "delivered" => {
            let facts = Facts {
                recipient: s(v, "recipient").unwrap_or_default().to_string(),
                at: unix(v.get("timestamp")),
                action: Some(Action::Delivered),
                remote_mta: v
                    .get("delivery-status")
                    .and_then(|d| s(d, "mx-host"))
                    .map(str::to_string),
                message_id: s(v, "id").map(str::to_string),
                ..Facts::default()
            };
            return found.delivery("Mailgun \"delivered\"".into(), Source::Mailgun, facts);
        }
        other => {
            found.pass(format!("Mailgun {other:?}")); // accepted, opened, clicked, …
            return Ok(());
        }
    };
    let ds = v.get("delivery-status");
    let code = ds
        .and_then(|d| d.get("code"))
        .and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok());
    let message = ds.and_then(|d| s(d, "message"));
    let description = ds.and_then(|d| s(d, "description"));
    let diagnostic = match (message, description) {
        (Some(m), Some(d)) if m != d => Some(format!("{m} {d}")),
        (Some(m), _) => Some(m.to_string()),
        (None, Some(d)) => Some(d.to_string()),
        (None, None) => s(v, "reason").map(str::to_string),
    };
    let temporary = s(v, "severity") == Some("temporary") || event == "temporary-fail";
    let facts = Facts {
        recipient: s(v, "recipient").unwrap_or_default().to_string(),
        at: unix(v.get("timestamp")),
        action: hint.is_none().then_some(if temporary {
            Action::Delayed
        } else {
            Action::Failed
        }),
        status: diagnostic
            .as_deref()
            .and_then(crate::bounce::classify::normalise_status),
        reply_code: code.filter(|c| (200..600).contains(c)),
        diagnostic,
        remote_mta: ds.and_then(|d| s(d, "mx-host")).map(str::to_string),
        reporting_mta: None,
        message_id: v
            .get("message")
            .and_then(|m| m.get("headers"))
            .and_then(|h| s(h, "message-id"))
            .map(str::to_string),
        kind_hint: hint,
        command: None,
    };
    push(found, Source::Mailgun, facts)
}

/// Mailgun's legacy webhooks (before its 2018 `event-data` shape), as
/// their form fields in JSON: `event` `bounced` (with `code`, `error`,
/// `notification`) or `dropped` (with `reason`, `code`, `description`; the
/// reason `hardfail` is a drop for an address that bounced before).
fn mailgun_legacy(v: &Value, event: &str, found: &mut Found) -> Result<(), String> {
    let code = match v.get("code") {
        Some(Value::String(c)) => c.trim().parse::<u16>().ok(),
        Some(c) => c.as_u64().and_then(|c| u16::try_from(c).ok()),
        None => None,
    };
    let diagnostic = s(v, "error")
        .or_else(|| s(v, "notification"))
        .or_else(|| s(v, "description"))
        .map(strip_type);
    let hint =
        (event == "dropped" && s(v, "reason") == Some("hardfail")).then_some(Kind::Suppressed);
    // Form fields are strings: "1619434800".
    let at = match v.get("timestamp") {
        Some(Value::String(t)) => t.trim().parse::<f64>().ok().map(Value::from),
        other => other.cloned(),
    };
    let facts = Facts {
        recipient: s(v, "recipient").unwrap_or_default().to_string(),
        at: unix(at.as_ref()),
        action: Some(Action::Failed),
        status: diagnostic
            .as_deref()
            .and_then(crate::bounce::classify::normalise_status),
        reply_code: code.filter(|c| (200..600).contains(c)),
        diagnostic,
        remote_mta: None,
        reporting_mta: None,
        message_id: s(v, "Message-Id")
            .or_else(|| s(v, "message-id"))
            .map(str::to_string),
        kind_hint: hint,
        command: None,
    };
    push(found, Source::Mailgun, facts)
}

/// Postmark's `SubscriptionChange`: the ESP stopped (or resumed) sending
/// to an address. A stop for a hard bounce is the ESP's suppression; one
/// for a complaint is a complaint; others (manual, reactivation) are
/// passed over, named.
fn postmark_subscription(v: &Value, found: &mut Found) -> Result<(), String> {
    let reason = s(v, "SuppressionReason").unwrap_or("");
    let suppress = v.get("SuppressSending").and_then(Value::as_bool) == Some(true);
    let hint = match (suppress, reason) {
        (true, "HardBounce") => Kind::Suppressed,
        (true, "SpamComplaint") => Kind::Complaint,
        (true, other) => {
            found.pass(format!(
                "Postmark SubscriptionChange ({other:?}, not a bounce)"
            ));
            return Ok(());
        }
        (false, _) => {
            found.pass("Postmark SubscriptionChange (sending resumed)".into());
            return Ok(());
        }
    };
    let facts = Facts {
        recipient: s(v, "Recipient").unwrap_or_default().to_string(),
        at: rfc3339(s(v, "ChangedAt")),
        action: Some(Action::Failed),
        diagnostic: Some(format!(
            "Postmark suppressed the address: {reason} (origin: {})",
            s(v, "Origin").unwrap_or("unknown")
        )),
        message_id: s(v, "MessageID").map(str::to_string),
        kind_hint: Some(hint),
        ..Facts::default()
    };
    push(found, Source::Postmark, facts)
}

fn postmark(v: &Value, found: &mut Found) -> Result<(), String> {
    if s(v, "RecordType") == Some("SubscriptionChange") {
        return postmark_subscription(v, found);
    }
    if let Some(rt) = s(v, "RecordType")
        && rt != "Bounce"
        && rt != "SpamComplaint"
    {
        if rt == "Delivery" {
            let facts = Facts {
                recipient: s(v, "Recipient").unwrap_or_default().to_string(),
                at: rfc3339(s(v, "DeliveredAt")),
                action: Some(Action::Delivered),
                message_id: s(v, "MessageID").map(str::to_string),
                ..Facts::default()
            };
            return found.delivery("Postmark \"Delivery\"".into(), Source::Postmark, facts);
        }
        found.pass(format!("Postmark {rt:?}")); // Open, Click
        return Ok(());
    }
    let kind = s(v, "Type").unwrap_or("");
    let (action, hint) = match kind {
        "SpamComplaint" => (None, Some(Kind::Complaint)),
        "AutoResponder" => (None, Some(Kind::AutoReply)),
        "SoftBounce" | "Transient" | "DnsError" => (Some(Action::Delayed), None),
        other @ ("Subscribe" | "Unsubscribe" | "OpenRelayTest" | "ChallengeVerification") => {
            found.pass(format!("Postmark {other:?}"));
            return Ok(());
        }
        _ => (Some(Action::Failed), None),
    };
    let details = s(v, "Details").filter(|d| !d.eq_ignore_ascii_case("Test bounce details"));
    let diagnostic = details
        .map(strip_type)
        .or_else(|| s(v, "Description").map(str::to_string));
    let facts = Facts {
        recipient: s(v, "Email").unwrap_or_default().to_string(),
        at: rfc3339(s(v, "BouncedAt")),
        action,
        status: details.and_then(crate::bounce::classify::normalise_status),
        reply_code: details.and_then(super::dsn::reply_code),
        diagnostic,
        remote_mta: None,
        reporting_mta: None,
        message_id: s(v, "MessageID").map(str::to_string),
        kind_hint: hint,
        command: None,
    };
    push(found, Source::Postmark, facts)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod unix_tests {
    use super::*;

    #[test]
    fn seconds_and_milliseconds_are_told_apart_and_nonsense_is_dropped() {
        let t = |v: Value| unix(Some(&v)).map(|t| t.to_rfc3339());
        let want = Some("2021-04-26T11:00:00+00:00".to_string());
        assert_eq!(t(serde_json::json!(1619434800)), want);
        assert_eq!(
            t(serde_json::json!(1619434800000_i64)),
            want,
            "milliseconds"
        );
        assert_eq!(
            t(serde_json::json!(1619434800.5)).as_deref(),
            Some("2021-04-26T11:00:00.500+00:00")
        );
        for bad in [
            serde_json::json!(-8_334_632_851_200_i64),
            serde_json::json!(1),
            serde_json::json!(1e300),
            serde_json::json!(-1e300),
            serde_json::json!("1619434800"),
        ] {
            assert_eq!(t(bad.clone()), None, "{bad}");
        }
    }
}
