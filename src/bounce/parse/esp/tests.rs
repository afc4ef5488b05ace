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

/// The deliveries of one value, with no error.
fn deliveries(v: Value) -> Vec<Delivered> {
    let f = parse_value(&v);
    assert!(f.errors.is_empty(), "{:?}", f.errors);
    assert!(f.bounces.is_empty(), "{v}");
    f.delivered
}

#[test]
fn each_esps_delivery_event_is_a_delivery() {
    // SES: a Delivery notification (or event-publishing record) lists its
    // recipients in `delivery.recipients` (SES developer guide, "Amazon SES
    // notification contents": the delivery object).
    let d = deliveries(json!({
        "notificationType": "Delivery",
        "mail": {"messageId": "m-1", "timestamp": "2021-04-26T10:59:59.000Z", "source": "a@example.org",
                 "destination": ["kim@example.com", "jo@Example.com"]},
        "delivery": {"timestamp": "2021-04-26T11:00:01.000Z", "processingTimeMillis": 2000,
                     "recipients": ["kim@example.com", "jo@Example.com"], "smtpResponse": "250 ok",
                     "remoteMtaIp": "192.0.2.9", "reportingMTA": "a8-70.smtp-out.amazonses.com"}
    }));
    assert_eq!(d.len(), 2);
    assert!(
        d.iter()
            .all(|d| d.domain == "example.com" && d.source == Source::Ses)
    );
    assert_eq!(d[0].at.unwrap().to_rfc3339(), "2021-04-26T11:00:01+00:00");
    assert_ne!(d[0].identity, d[1].identity);
    let d = deliveries(json!({
        "eventType": "Delivery", "mail": {"messageId": "m-2"},
        "delivery": {"timestamp": "2021-04-26T11:00:01.000Z", "recipients": ["kim@example.com"]}
    }));
    assert_eq!(d.len(), 1);
    // SendGrid's `delivered` (the project's fixture of its documentation).
    let f = parse_value(
        &serde_json::from_str(include_str!(
            "../../../../tests/fixtures/webhooks/sendgrid/sendgrid-docs-event-webhook--delivered.json"
        ))
        .unwrap(),
    );
    assert_eq!(f.delivered.len(), 1);
    assert_eq!(f.delivered[0].domain, "test.com");
    assert_eq!(f.delivered[0].source, Source::Sendgrid);
    assert_eq!(f.delivered[0].at.unwrap().timestamp(), 1513299569);
    // Mailgun's `delivered` (Events API / webhook event-data).
    let d = deliveries(json!({"event-data": {
        "event": "delivered", "id": "CPgfbmQMTCKtHW6uIWtuVe", "timestamp": 1619434800.5,
        "recipient": "kim@example.com", "delivery-status": {"code": 250, "mx-host": "mx01.mail.icloud.com"}
    }}));
    assert_eq!(d[0].remote_mta.as_deref(), Some("mx01.mail.icloud.com"));
    // Postmark's Delivery webhook.
    let d = deliveries(json!({
        "RecordType": "Delivery", "ServerID": 23, "MessageStream": "outbound",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483", "Recipient": "john@example.com",
        "Tag": "welcome-email", "DeliveredAt": "2019-11-05T16:33:54.9070259Z", "Details": "Test delivery webhook details"
    }));
    assert_eq!(d[0].domain, "example.com");
    assert_eq!(d[0].source, Source::Postmark);
}

#[test]
fn a_delivery_record_counts_deliveries_and_names_every_problem() {
    let d =
        deliveries(json!({"delivered": 25, "domain": "Gmail.com.", "at": "2026-03-02T09:00:00Z"}));
    assert_eq!((d[0].domain.as_str(), d[0].count), ("gmail.com", 25));
    let again =
        deliveries(json!({"delivered": 25, "domain": "gmail.com", "at": "2026-03-02T09:00:00Z"}));
    assert_eq!(
        d[0].identity, again[0].identity,
        "the same record counts once"
    );
    for (v, want) in [
        (
            json!({"delivered": 0, "domain": "gmail.com"}),
            "delivered: 0 is not a count",
        ),
        (
            json!({"delivered": 1e12, "domain": "gmail.com"}),
            "is not a count from 1 to 1000000",
        ),
        (
            json!({"delivered": "5", "domain": "gmail.com"}),
            "delivered: expected a count",
        ),
        (json!({"delivered": 5}), "domain: required"),
        (json!({"delivered": 5, "domain": "not a domain"}), "domain:"),
        (
            json!({"delivered": 5, "domain": "gmail.com", "at": "yesterday"}),
            "at: \"yesterday\"",
        ),
        (
            json!({"delivered": 5, "domain": "gmail.com", "recipient": "a@gmail.com"}),
            "recipient: not a field",
        ),
    ] {
        let f = parse_value(&v);
        assert!(f.delivered.is_empty(), "{v}");
        assert!(
            f.errors.iter().any(|e| e.contains(want)),
            "{v}: {:?}",
            f.errors
        );
    }
}
