//! ESP payload shapes beyond the fixtures: Mailgun's legacy webhooks and
//! the ESPs' own suppression notices, each as its documentation shows it.

use super::*;
use serde_json::json;

fn one(v: Value) -> Bounce {
    let f = parse_value(&v);
    assert!(f.errors.is_empty(), "{:?}", f.errors);
    assert_eq!(f.bounces.len(), 1, "{v}");
    f.bounces.into_iter().next().unwrap()
}

#[test]
fn mailguns_legacy_bounced_webhook() {
    // Mailgun's legacy webhooks ("bounced": event, recipient, code, error,
    // notification, timestamp as form fields).
    let b = one(json!({
        "event": "bounced",
        "recipient": "kim@contoso.com",
        "domain": "mg.example.org",
        "code": "550",
        "error": "smtp;550 5.1.1 RESOLVER.ADR.RecipNotFound; not found",
        "notification": "",
        "timestamp": "1619434800",
        "Message-Id": "<20210426110000.1.ABC@mg.example.org>",
    }));
    assert_eq!(b.source, Source::Mailgun);
    assert_eq!(b.kind, Kind::UserUnknown);
    assert_eq!(b.status.as_deref(), Some("5.1.1"));
    assert_eq!(b.reply_code, Some(550));
    assert!(b.hard);
    assert_eq!(
        b.at.map(|t| t.to_rfc3339()).as_deref(),
        Some("2021-04-26T11:00:00+00:00")
    );
}

#[test]
fn mailguns_legacy_drop_of_a_bounced_address_is_its_suppression() {
    // Legacy "dropped" with reason "hardfail": "Not delivering to
    // previously bounced address" (code 605).
    let b = one(json!({
        "event": "dropped",
        "recipient": "kim@example.com",
        "reason": "hardfail",
        "code": "605",
        "description": "Not delivering to previously bounced address",
        "timestamp": "1619434800",
    }));
    assert_eq!(b.kind, Kind::Suppressed);
    assert_eq!(b.reply_code, None, "605 is Mailgun's, not SMTP's");
}

#[test]
fn postmarks_subscription_change() {
    // postmarkapp.com/developer/webhooks/subscription-change-webhook
    let doc = json!({
        "RecordType": "SubscriptionChange",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "ServerID": 123456,
        "MessageStream": "outbound",
        "ChangedAt": "2020-02-01T10:53:34.416071Z",
        "Recipient": "bounced-address@wildbit.com",
        "Origin": "Recipient",
        "SuppressSending": true,
        "SuppressionReason": "HardBounce",
        "Tag": "my-tag",
        "Metadata": {"example": "value"}
    });
    let b = one(doc.clone());
    assert_eq!((b.kind, b.source), (Kind::Suppressed, Source::Postmark));
    assert!(b.hard);
    assert!(b.diagnostic.unwrap().contains("HardBounce"));
    let mut complaint = doc.clone();
    complaint["SuppressionReason"] = json!("SpamComplaint");
    assert_eq!(one(complaint).kind, Kind::Complaint);
    // A manual suppression or a reactivation is no bounce, and says so.
    for (field, value) in [
        ("SuppressionReason", json!("ManualSuppression")),
        ("SuppressSending", json!(false)),
    ] {
        let mut other = doc.clone();
        other[field] = value;
        let f = parse_value(&other);
        assert!(f.bounces.is_empty() && f.errors.is_empty());
        assert_eq!(f.skipped, 1);
        assert!(
            f.passed
                .keys()
                .all(|k| k.starts_with("Postmark SubscriptionChange")),
            "{:?}",
            f.passed
        );
    }
}

#[test]
fn sendgrids_drop_of_a_bounced_address_is_its_suppression() {
    // SendGrid event webhook reference: "dropped" with reason
    // "Bounced Address" (the address is on its bounce list).
    let b = one(json!({
        "email": "kim@example.com",
        "timestamp": 1619434800,
        "event": "dropped",
        "reason": "Bounced Address",
        "status": "5.0.0",
        "sg_event_id": "sg-1",
        "sg_message_id": "sg-msg-1"
    }));
    assert_eq!(b.kind, Kind::Suppressed);
    let b = one(json!({
        "email": "kim@example.com",
        "timestamp": 1619434800,
        "event": "dropped",
        "reason": "Unsubscribed Address",
        "sg_event_id": "sg-2"
    }));
    assert_ne!(b.kind, Kind::Suppressed);
}

#[test]
fn ses_suppression_lists() {
    // SES notification contents: bounceType Permanent, bounceSubType
    // "OnAccountSuppressionList" (or "Suppressed", the global list).
    for sub in ["OnAccountSuppressionList", "Suppressed"] {
        let b = one(json!({
            "notificationType": "Bounce",
            "bounce": {
                "bounceType": "Permanent",
                "bounceSubType": sub,
                "bouncedRecipients": [{
                    "emailAddress": "kim@example.com",
                    "action": "failed",
                    "status": "5.1.1",
                    "diagnosticCode": "Amazon SES did not send the message to this address because it is on the suppression list for your account."
                }],
                "timestamp": "2021-04-26T11:00:00.000Z",
                "feedbackId": "f-1",
                "reportingMTA": "dns; amazonses.com"
            },
            "mail": {"messageId": "m-1", "timestamp": "2021-04-26T10:59:59.000Z", "source": "a@example.org", "destination": ["kim@example.com"]}
        }));
        assert_eq!(b.kind, Kind::Suppressed, "{sub}");
        assert!(b.hard);
    }
}

#[test]
fn what_was_passed_over_is_named() {
    let f = parse_value(&json!([
        {"event": "delivered", "recipient": "a@example.com"},
        {"event": "opened", "recipient": "a@example.com"},
        {"event": "delivered", "recipient": "b@example.com"}
    ]));
    assert_eq!(f.skipped, 3);
    assert_eq!(f.passed.get("Mailgun \"delivered\""), Some(&2));
    assert_eq!(f.passed.get("Mailgun \"opened\""), Some(&1));
}
