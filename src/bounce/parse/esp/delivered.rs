//! Deliveries in ESP payloads: SES's `Delivery` and the delivery records
//! of normalised JSONL. (SendGrid's, Mailgun's and Postmark's delivery
//! events are one object each, read beside their bounces.)

use serde_json::Value;

use super::{Fields, Found, rfc3339, s};
use crate::bounce::{Action, Delivered, Facts, Source};

/// SES's `Delivery`: one per recipient it delivered to.
pub(super) fn ses(v: &Value, message_id: Option<String>, found: &mut Found) -> Result<(), String> {
    let sec = v
        .get("delivery")
        .ok_or("SES Delivery without a \"delivery\" object")?;
    let recipients = sec
        .get("recipients")
        .and_then(Value::as_array)
        .ok_or("SES Delivery without \"recipients\"")?;
    for r in recipients {
        let facts = Facts {
            recipient: r.as_str().unwrap_or_default().to_string(),
            at: rfc3339(s(sec, "timestamp")),
            action: Some(Action::Delivered),
            remote_mta: s(sec, "remoteMtaIp").map(str::to_string),
            message_id: message_id.clone(),
            ..Facts::default()
        };
        found.delivery("SES \"Delivery\"".into(), Source::Ses, facts)?;
    }
    Ok(())
}

/// The most deliveries one record may claim (a day of a large sender's
/// mail to one domain in one minute is far fewer).
pub const MAX_DELIVERED: u64 = 1_000_000;

/// A delivery record of normalised JSONL: `{"delivered": N, "domain": D,
/// "at": T, "remote_mta": H}`: N successful deliveries to domain D in the
/// minute of T (`at` and `remote_mta` optional). Every problem is named.
pub(super) fn record(v: &Value, found: &mut Found) -> Result<(), String> {
    const FIELDS: [&str; 4] = ["delivered", "domain", "at", "remote_mta"];
    let mut r = Fields {
        v,
        problems: Vec::new(),
    };
    if let Some(obj) = v.as_object() {
        for k in obj.keys().filter(|k| !FIELDS.contains(&k.as_str())) {
            r.problems.push(format!(
                "{k}: not a field of a delivery record ({})",
                FIELDS.join(", ")
            ));
        }
    }
    let count = match v.get("delivered") {
        Some(Value::Number(n)) => match n.as_u64() {
            Some(c @ 1..=MAX_DELIVERED) => Some(c),
            _ => {
                r.problems.push(format!(
                    "delivered: {n} is not a count from 1 to {MAX_DELIVERED}"
                ));
                None
            }
        },
        other => {
            r.problems.push(format!(
                "delivered: expected a count, got {}",
                other.map_or("nothing".to_string(), Value::to_string)
            ));
            None
        }
    };
    let domain = r.text("domain");
    let domain = match domain.as_deref().map(crate::domain::DomainName::parse) {
        Some(Ok(d)) => Some(d),
        Some(Err(e)) => {
            r.problems.push(format!("domain: {e}"));
            None
        }
        None => {
            r.problems.push("domain: required".into());
            None
        }
    };
    let at_text = r.text("at");
    let at = at_text.as_deref().and_then(|t| {
        let at = rfc3339(Some(t));
        if at.is_none() {
            r.problems
                .push(format!("at: {t:?} is not an RFC 3339 time"));
        }
        at
    });
    let remote_mta = r.text("remote_mta");
    let (Some(count), Some(domain), true) = (count, domain, r.problems.is_empty()) else {
        return Err(r.problems.join("; "));
    };
    let identity = crate::bounce::digest(&[
        "delivered",
        domain.as_str(),
        at_text.as_deref().unwrap_or(""),
        &count.to_string(),
        remote_mta.as_deref().unwrap_or(""),
    ]);
    found.pass("delivery records".into());
    found.delivered.push(Delivered {
        domain: domain.as_str().to_string(),
        at,
        remote_mta: remote_mta.as_deref().and_then(crate::bounce::host_name),
        source: Source::Jsonl,
        identity,
        count,
    });
    Ok(())
}
