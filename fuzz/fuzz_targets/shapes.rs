//! The shapes of issue 11's attacks, built from the fuzzer's bytes so that
//! their size is the fuzzer's to choose: messages nested up to 50,000
//! deep, lists of up to 100,000 addresses, and JSON bodies. The parsers
//! must neither panic nor overflow the stack, keep at most MAX_PROBLEMS
//! problems, and take every address whole or not at all.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mxwatch::bounce::parse::{self, Format, MAX_PROBLEMS};

fuzz_target!(|data: &[u8]| {
    let now = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
    let Some((&shape, rest)) = data.split_first() else {
        return;
    };
    let (count, rest) = match rest {
        [a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), rest),
        _ => (0, rest),
    };
    let inner = String::from_utf8_lossy(rest);
    let out = match shape % 3 {
        0 => {
            // Nested message/rfc822 (or multipart/digest) parts around the bytes.
            let mut raw = String::from("From: MAILER-DAEMON@a.test\nSubject: nested\n");
            let part = if shape & 0x80 == 0 {
                "Content-Type: message/rfc822\n\nFrom: a@b.test\n"
            } else {
                "Content-Type: multipart/digest; boundary=\"b\"\n\n--b\n\n"
            };
            for _ in 0..count.min(50_000) {
                raw.push_str(part);
            }
            raw.push('\n');
            raw.push_str(&inner);
            parse::parse(raw.as_bytes(), Some(Format::Email), now)
        }
        1 => {
            // A list of addresses built from the bytes, in a bounce text.
            let mut raw = String::from("From: MAILER-DAEMON@a.test\nSubject: Undelivered Mail\n\n");
            let words: Vec<String> = inner
                .split_whitespace()
                .map(|w| {
                    w.chars()
                        .filter(char::is_ascii_alphanumeric)
                        .collect::<String>()
                })
                .filter(|w| !w.is_empty())
                .collect();
            let mut listed = std::collections::HashSet::new();
            for i in 0..count.min(100_000) {
                let w = words
                    .get(i % words.len().max(1))
                    .map_or("u", String::as_str);
                let address = format!("{w}{i}@a.test");
                raw.push_str(&format!("<{address}>: 550 5.1.1 user unknown\n"));
                listed.insert(address.to_lowercase());
            }
            let out = parse::parse(raw.as_bytes(), Some(Format::Email), now);
            // Whole or not at all: every recipient is one of those listed.
            for b in &out.bounces {
                assert!(
                    listed.contains(&b.recipient),
                    "{} was not listed",
                    b.recipient
                );
            }
            out
        }
        _ => parse::parse(rest, Some(Format::Json), now),
    };
    assert!(out.problems.len() <= MAX_PROBLEMS);
    for b in &out.bounces {
        assert!(b.recipient.ends_with(&format!("@{}", b.domain)));
    }
});
