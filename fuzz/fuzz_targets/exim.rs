//! Any bytes as Exim log lines: no panic, and a bounce always has a
//! normalised recipient and domain.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mxwatch::bounce::parse::{self, Format};

fuzz_target!(|data: &[u8]| {
    let now = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
    for b in parse::parse(data, Some(Format::Exim), now).bounces {
        assert!(b.recipient.ends_with(&format!("@{}", b.domain)));
        assert_eq!(b.recipient, b.recipient.to_ascii_lowercase());
    }
});
