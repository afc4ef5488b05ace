//! Any bytes as a bounce email: parsing must not panic, and LF, CRLF and CR
//! versions of the same bytes must give the same bounces.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mxwatch::bounce::parse::{self, Format};

fuzz_target!(|data: &[u8]| {
    let now = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
    let lf = parse::parse(data, Some(Format::Email), now);
    if !data.contains(&b'\r') {
        let crlf: Vec<u8> = data
            .iter()
            .flat_map(|&b| {
                if b == b'\n' {
                    vec![b'\r', b'\n']
                } else {
                    vec![b]
                }
            })
            .collect();
        let again = parse::parse(&crlf, Some(Format::Email), now);
        assert_eq!(lf.bounces, again.bounces);
    }
    // Auto-detection and the other formats take any bytes too.
    let _ = parse::parse(data, None, now);
});
