use super::*;

fn target(format: Format) -> ForwardTarget {
    ForwardTarget {
        name: "t".into(),
        url: "http://127.0.0.1:1/".into(),
        format,
        auth: Auth::None,
        sources: vec![],
        domains: vec![],
        tags: vec![],
        transient: OnTransient::Soft,
        ignore: OnIgnore::Unchanged,
        timeout: Duration::from_secs(1),
        max_age: Duration::from_secs(60),
        backoff: Duration::from_secs(1),
    }
}

#[test]
fn verdicts_route_as_the_policy_says() {
    let mut t = target(Format::Listmonk);
    let uu = Kind::UserUnknown;
    assert_eq!(t.route(uu, true, Verdict::Suppress), Route::Send("hard"));
    assert_eq!(t.route(uu, true, Verdict::Transient), Route::Send("soft"));
    assert_eq!(
        t.route(Kind::MailboxFull, false, Verdict::Retry),
        Route::Send("soft")
    );
    assert_eq!(
        t.route(Kind::PolicyBlocked, true, Verdict::Ignore),
        Route::Send("hard")
    );
    assert_eq!(
        t.route(Kind::Complaint, false, Verdict::Ignore),
        Route::Send("complaint")
    );
    t.transient = OnTransient::Hold;
    t.ignore = OnIgnore::Drop;
    assert!(matches!(
        t.route(uu, true, Verdict::Transient),
        Route::Hold(_)
    ));
    assert_eq!(
        t.route(Kind::PolicyBlocked, true, Verdict::Ignore),
        Route::Drop
    );
    // A complaint is never dropped: the handler turns it into an unsubscribe.
    assert_eq!(
        t.route(Kind::Complaint, false, Verdict::Ignore),
        Route::Send("complaint")
    );
}

#[test]
fn a_request_passes_as_it_came_only_when_its_verdicts_agree() {
    let t = target(Format::Passthrough);
    let part = |kind, hard, verdict| JudgedPart {
        recipient: "kim@example.de".into(),
        kind,
        hard,
        verdict,
    };
    let uu = Kind::UserUnknown;
    assert_eq!(
        t.route_as_is(&part(uu, true, Verdict::Suppress)),
        Route::Send("hard")
    );
    // Hard at the ESP, soft by its verdict: the request cannot say so.
    assert!(matches!(
        t.route_as_is(&part(uu, true, Verdict::Transient)),
        Route::Hold(_)
    ));
    assert_eq!(
        t.route_as_is(&part(Kind::MailboxFull, false, Verdict::Retry)),
        Route::Send("soft")
    );
}

#[test]
fn a_batch_is_cut_to_the_events_asked_for_byte_for_byte() {
    let body = br#"[{"a": 1,  "b":[2]}, {"c":3}, {"d" : "4"}]"#;
    assert_eq!(
        rebatch(body, "[0,2]").unwrap(),
        br#"[{"a": 1,  "b":[2]},{"d" : "4"}]"#
    );
    assert!(rebatch(body, "[7]").is_err());
    assert!(rebatch(b"{}", "[0]").is_err());
}

#[test]
fn items_name_each_events_recipients() {
    let body = br#"[{"email":"a@x.test","event":"bounce","type":"bounce","status":"5.1.1","reason":"550 5.1.1 no"},
        {"email":"b@x.test","event":"open"}]"#;
    assert_eq!(
        items(body),
        Some(vec![vec!["a@x.test".to_string()], vec![]])
    );
    assert_eq!(items(b"{\"Type\":\"Notification\"}"), None);
}

#[test]
fn a_batch_too_large_to_cut_is_not_read_in_full() {
    let many = format!("[{}{{}}]", "{},".repeat(MAX_ITEMS));
    assert_eq!(items(many.as_bytes()), None);
    let enough = format!("[{}{{}}]", "{},".repeat(MAX_ITEMS - 1));
    assert_eq!(items(enough.as_bytes()).map(|i| i.len()), Some(MAX_ITEMS));
}

/// The documented bodies (README, "Put mxwatch in front of…"): a change
/// here is a change of the handlers' interface.
#[test]
fn bodies_of_a_bounce_inside_an_icloud_flip() {
    use crate::store::{Cited, Forwarded, Judged, OutboxRow};
    use crate::verdict::EvidenceKind;
    use chrono::TimeZone;
    let at = Utc.with_ymd_and_hms(2021, 4, 26, 11, 0, 0).unwrap();
    let b = Bounce {
        recipient: "kim@example.de".into(),
        domain: "example.de".into(),
        at: Some(at),
        action: Some(crate::bounce::Action::Failed),
        status: Some("5.1.1".into()),
        reply_code: Some(550),
        diagnostic: Some(
            "550 5.1.1 <kim@example.de>: user lookup success but no user record found".into(),
        ),
        remote_mta: Some("mx01.mail.icloud.com".into()),
        reporting_mta: None,
        kind: Kind::UserUnknown,
        hard: true,
        source: crate::bounce::Source::Ses,
        message_id: None,
    };
    let j = Judged {
        verdict: Verdict::Transient,
        suppress: false,
        reasons: vec!["an MX change window covers the bounce".into()],
        evidence: vec![Cited {
            id: Some(7),
            kind: EvidenceKind::MxChange,
        }],
        caveats: vec![],
    };
    let ev = AlertEvent {
        outbox: OutboxRow {
            id: 12,
            created_at: at + chrono::Duration::seconds(3),
            event: EventType::Bounce,
            domain: None,
            window_id: None,
            summary: "kim@example.de: user_unknown, transient".into(),
        },
        window: None,
        forward: Some(Box::new(Forwarded {
            bounce: Some((3, b.clone())),
            judged: Some(j.clone()),
            ..Forwarded::default()
        })),
    };
    insta::assert_json_snapshot!(
        "listmonk_body",
        report::listmonk_bounce(&ev, &b, &j, "soft")
    );
    insta::assert_json_snapshot!(
        "forward_json_body_v1",
        report::forward_json(&ev, &b, &j, "soft", false)
    );
}
