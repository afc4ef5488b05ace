//! Issue 20: quoted local parts and long single lines. Any text, read as
//! running text by the address grammar, as a Postfix `to=` field, and
//! repeated into one long line of a bounce: every address found is a whole
//! mailbox standing where it says; a recipient is the address the field
//! opens with, whole, or nothing; no diagnostic grows with the line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mxwatch::bounce::parse::{self, Format};
use mxwatch::bounce::{MAX_DIAGNOSTIC, address, normalise_address};

fuzz_target!(|data: &[u8]| {
    let now = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
    let text = String::from_utf8_lossy(data);
    let mut last = 0;
    for (at, a) in address::in_text(&text) {
        assert!(address::is_mailbox(a), "{a:?}");
        assert_eq!(&text[at..at + a.len()], a);
        assert!(at >= last);
        last = at + a.len();
    }
    if let Some(a) = address::leading(&text) {
        assert!(address::is_mailbox(a) && text.contains(a));
    }
    if !text.contains(['\n', '\r']) {
        let line = format!(
            "Apr 26 11:00:00 mail postfix/smtp[1]: ABC: to=<{text}>, relay=mx.a.test[192.0.2.1]:25, dsn=5.1.1, status=bounced (host mx.a.test[192.0.2.1] said: 550 5.1.1 user unknown)"
        );
        // The recipient is the address the field opens with, whole.
        let field = format!("<{text}>, relay");
        let whole = address::leading(&field).and_then(normalise_address);
        for b in parse::parse(line.as_bytes(), Some(Format::Postfix), now).bounces {
            assert_eq!(Some(b.recipient), whole.as_ref().map(|a| a.0.clone()));
        }
    }
    // One long line: the bytes repeated to 64 KiB, then a reply.
    if !text.is_empty() && !text.contains(['\n', '\r']) {
        let long = text.repeat((64 << 10) / text.len() + 1);
        let email = format!(
            "From: MAILER-DAEMON@a.test\nSubject: Undelivered Mail\n\n{long}: 550 5.1.1 user unknown\n"
        );
        for b in parse::parse(email.as_bytes(), Some(Format::Email), now).bounces {
            assert!(
                b.diagnostic
                    .as_deref()
                    .is_none_or(|d| d.len() <= MAX_DIAGNOSTIC + 8)
            );
            let local = b.recipient.split('@').next().unwrap_or("");
            assert!(
                email.to_ascii_lowercase().contains(local),
                "{} not in the line",
                b.recipient
            );
        }
    }
});
