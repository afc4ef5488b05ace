//! Any bytes as a passive DNS export (DNSDB lines, a SecurityTrails
//! answer): no panic, and every sighting spans forwards in time with a
//! sorted MX set; every excursion lies inside what was seen.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mxwatch::domain::DomainName;
use mxwatch::passive;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let domain = DomainName::parse("example.de").unwrap();
    for read in [
        passive::read_dnsdb(&text),
        passive::read_securitytrails(&text, &domain),
    ] {
        assert!(read.problems.len() <= 1_000);
        for s in &read.sightings {
            assert!(s.first_seen <= s.last_seen);
            assert!(s.mx.windows(2).all(|w| w[0] < w[1]));
        }
        for e in passive::excursions(&read.sightings) {
            assert!(e.start <= e.seen.0 && e.seen.1 <= e.end);
        }
    }
});
