//! Issue 20, items 3 to 6: no single request decides our memory, disk or
//! CPU.

use crate::{Behaviour, TestDns, post_bounces};

/// A plain-text bounce naming `n` recipients on one line, then one reply.
fn one_line_of(n: usize) -> String {
    let who: Vec<String> = (0..n).map(|i| format!("<u{i}@a.test>")).collect();
    format!(
        "From: MAILER-DAEMON@mx.a.test\nTo: s@example.org\nSubject: Undelivered Mail Returned to Sender\n\n{}: 550 5.1.1 user unknown\n",
        who.join(" ")
    )
}

/// Item 3: each of 8,000 recipients carried the whole 118 KB line as its
/// diagnostic (947 MB, 15 s). A diagnostic is capped, keeping its head and
/// the reply at its tail.
#[test]
fn many_recipients_on_one_line_carry_a_capped_diagnostic() {
    let email = one_line_of(8_000);
    let parsed = mxwatch::bounce::parse::parse(email.as_bytes(), None, super::t0());
    assert_eq!(parsed.bounces.len(), 8_000, "{:?}", parsed.problems);
    let total: usize = parsed
        .bounces
        .iter()
        .map(|b| b.diagnostic.as_deref().map_or(0, str::len))
        .sum();
    for b in &parsed.bounces {
        let d = b.diagnostic.as_deref().unwrap();
        assert!(
            d.len() <= mxwatch::bounce::MAX_DIAGNOSTIC + 8,
            "{}",
            d.len()
        );
        assert!(d.ends_with("550 5.1.1 user unknown"), "{d}");
        assert_eq!(b.status.as_deref(), Some("5.1.1"));
        assert!(b.hard);
    }
    assert!(total <= 8_000 * (mxwatch::bounce::MAX_DIAGNOSTIC + 8));
}

/// An email naming more recipients than any message has is read for the
/// first [`mxwatch::bounce::MAX_RECIPIENTS`], and says so.
#[test]
fn an_email_is_read_for_a_bounded_number_of_recipients() {
    let n = mxwatch::bounce::MAX_RECIPIENTS + 500;
    let email = one_line_of(n);
    let parsed = mxwatch::bounce::parse::parse(email.as_bytes(), None, super::t0());
    assert_eq!(parsed.bounces.len(), mxwatch::bounce::MAX_RECIPIENTS);
    assert!(
        parsed
            .problems
            .iter()
            .any(|p| p.message.contains("only the first")),
        "{:?}",
        parsed.problems
    );
}

/// Item 3, stored: a 59 KB email added 464 MB of database and 467 MB of
/// WAL. The words all its recipients share are stored once.
#[tokio::test(start_paused = true)]
async fn the_words_many_bounces_share_are_stored_once() {
    let dns = TestDns::start().await;
    dns.set("a.test", Behaviour::mx(&[(10, "mx.a.test")], 300));
    let (app, base) = crate::api::app_with_api_and(&dns, "").await;
    let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let db = app.db_path();
    let wal = db.with_extension("sqlite-wal");
    let before = size(&db) + size(&wal);
    let email = one_line_of(4_000);
    let answer = post_bounces(&base, email.clone()).await;
    assert_eq!(answer["stored"], 4_000, "{answer}");
    let grown = size(&db) + size(&wal) - before;
    // About a row per recipient; the old code stored the line each time.
    assert!(grown < 8 * 1024 * 1024, "grew by {grown} bytes");
    let stored = app.store().bounces(Some("a.test"), None, None).unwrap();
    assert_eq!(stored.len(), 4_000);
    assert!(stored.iter().all(|b| {
        b.diagnostic
            .as_deref()
            .unwrap()
            .ends_with("550 5.1.1 user unknown")
    }));
    app.stop().await;
}
