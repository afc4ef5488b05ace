//! How rows are written: snapshots, so a change of wording is a change
//! someone chose (issue 23, "one voice").

use super::*;
use chrono::TimeZone;

fn t(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2021, 4, 26, h, m, 0).unwrap()
}

fn flip() -> Window {
    let mx = |h: &str| {
        vec![Mx {
            preference: 10,
            exchange: crate::domain::MxHost::parse(h).unwrap(),
        }]
    };
    Window {
        id: 7,
        domain: Some("example.de".into()),
        kind: crate::window::WindowKind::MxChange,
        start: t(11, 0),
        detected_at: t(11, 1),
        end: None,
        status: crate::detect::WindowStatus::Open,
        close_reason: None,
        severity: crate::window::Severity::Critical,
        before: Answer::from_parts(crate::dns::Outcome::Records, mx("mx00.example.de")),
        after: Answer::from_parts(crate::dns::Outcome::Records, mx("mx01.mail.icloud.com")),
        flaps: 0,
        scope: None,
        detail: None,
        last_bounce: None,
        close_note: None,
    }
}

fn bounce() -> crate::bounce::Bounce {
    crate::bounce::Bounce {
        recipient: "kim@example.de".into(),
        domain: "example.de".into(),
        at: Some(t(11, 30)),
        action: None,
        status: Some("5.1.1".into()),
        reply_code: Some(550),
        diagnostic: None,
        remote_mta: None,
        reporting_mta: None,
        kind: crate::bounce::Kind::UserUnknown,
        hard: true,
        source: crate::bounce::Source::Jsonl,
        message_id: None,
    }
}

#[test]
fn window_rows_always_show_their_kind() {
    let w = flip();
    insta::assert_snapshot!("window_row_mx_change", window_text(&w, t(12, 0)));
    let outage = Window {
        kind: crate::window::WindowKind::ResolverOutage,
        domain: None,
        before: None,
        after: None,
        ..flip()
    };
    let row = window_text(&outage, t(12, 0));
    assert!(row.contains("resolver_outage"), "{row}");
}

#[test]
fn a_reinstatement_without_a_stored_window_says_so() {
    let r = crate::store::Reinstatement {
        id: 1,
        created_at: t(12, 0),
        verdict: crate::verdict::Verdict::Transient,
        reason: "the refusing host is not among the domain's MX".into(),
        bounce_id: 3,
        bounce: bounce(),
        window: None,
    };
    insta::assert_snapshot!("reinstatement_row_no_window", reinstatement_text(&r));
    let with = crate::store::Reinstatement {
        window: Some(flip()),
        ..r
    };
    insta::assert_snapshot!("reinstatement_row_window", reinstatement_text(&with));
}

#[test]
fn a_withdrawn_window_says_why() {
    let w = Window {
        end: Some(t(12, 0)),
        status: crate::detect::WindowStatus::Closed,
        close_reason: Some(crate::window::CloseReason::Withdrawn),
        close_note: Some("the move to iCloud was planned".into()),
        ..flip()
    };
    insta::assert_snapshot!("window_row_withdrawn", window_text(&w, t(13, 0)));
    insta::assert_snapshot!(
        "window_withdrawn_summary",
        crate::summary::window_withdrawn(
            &w,
            "the move to iCloud was planned",
            &["kim@example.de".into(), "ann@example.de".into()]
        )
    );
}

/// MX sets, times and durations, one way in rows, summaries and details.
#[test]
fn mx_sets_times_and_durations_are_written_one_way() {
    let two = vec![
        Mx {
            preference: 10,
            exchange: crate::domain::MxHost::parse("a.example").unwrap(),
        },
        Mx {
            preference: 20,
            exchange: crate::domain::MxHost::parse("b.example").unwrap(),
        },
    ];
    let w = Window {
        after: Answer::from_parts(crate::dns::Outcome::Records, two.clone()),
        start: t(11, 0) + chrono::Duration::nanoseconds(123_456_789),
        ..flip()
    };
    insta::assert_snapshot!("window_row_two_mx", window_text(&w, t(12, 0)));
    insta::assert_snapshot!(
        "unconfirmed_change",
        crate::summary::unconfirmed_change(
            t(11, 0),
            crate::dns::Outcome::Records,
            &two,
            Some("most domains failed at once")
        )
    );
    assert_eq!(
        crate::event::duration(std::time::Duration::from_secs(90)),
        "1m 30s"
    );
}
