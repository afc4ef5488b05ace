//! The detector on traffic as senders have it: daily campaigns of varying
//! size, a weekly campaign, a first day with no history, and an Apple-like
//! incident inside a campaign, with and without deliveries in the feed.

use super::*;
use chrono::TimeZone;

/// A deterministic generator (no test may depend on luck).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A list's recipient domains, their provider and their share of its
/// unknown users. Small company domains host their own MX: their provider
/// is the domain itself (one scope).
const LIST: &[(&str, &str, f64)] = &[
    ("gmail.com", "google", 0.40),
    ("googlemail.com", "google", 0.03),
    ("icloud.com", "icloud", 0.07),
    ("me.com", "icloud", 0.03),
    ("mac.com", "icloud", 0.02),
    ("outlook.com", "microsoft", 0.12),
    ("hotmail.com", "microsoft", 0.08),
    ("yahoo.com", "yahoo", 0.10),
    ("web.de", "united-internet", 0.05),
    ("corp1.example", "corp1.example", 0.04),
    ("corp2.example", "corp2.example", 0.03),
    ("corp3.example", "corp3.example", 0.03),
];

/// How many deliveries a campaign makes for each unknown user (3 %).
const SENT_PER_UNKNOWN: f64 = 32.0;

fn scopes_of(domain: &str, provider: &str) -> Vec<Scope> {
    if domain == provider {
        vec![Scope::Provider(provider.into())]
    } else {
        vec![
            Scope::Domain(domain.into()),
            Scope::Provider(provider.into()),
        ]
    }
}

enum Item {
    Unknown(usize, String),
    Sent(usize, u64),
}

/// One campaign sent at `start`: `unknown` ordinary unknown users spread by
/// the list's shares, their bounces within 25 minutes; iCloud's multiplied
/// by `icloud_x` (an incident refusing valid addresses: those were
/// deliveries before); with `deliveries`, each domain's deliveries in
/// one-minute lots.
struct Campaign {
    start: DateTime<Utc>,
    unknown: usize,
    icloud_x: f64,
    deliveries: bool,
}

fn items(c: &Campaign, rng: &mut Lcg, tag: &str) -> Vec<(DateTime<Utc>, Item)> {
    let spread = 25.0 * 60.0;
    let at = |rng: &mut Lcg| {
        c.start + chrono::Duration::milliseconds((rng.next() * spread * 1e3) as i64)
    };
    let mut out = Vec::new();
    for (i, (_, provider, share)) in LIST.iter().enumerate() {
        let usual = c.unknown as f64 * share;
        let n = if *provider == "icloud" {
            usual * c.icloud_x
        } else {
            usual
        };
        // The fraction rounded by chance, so shares wobble as in life.
        let n = n.floor() as usize + usize::from(rng.next() < n.fract());
        for k in 0..n {
            out.push((
                at(rng),
                Item::Unknown(i, format!("{tag}-{k}@{}", LIST[i].0)),
            ));
        }
        if c.deliveries {
            let refused = n as f64 - usual;
            let sent = (usual * SENT_PER_UNKNOWN - refused).max(0.0) as u64;
            for minute in 0..25 {
                let lot = sent / 25 + u64::from(minute < sent % 25);
                out.push((
                    c.start + chrono::Duration::minutes(minute as i64),
                    Item::Sent(i, lot),
                ));
            }
        }
    }
    out.sort_by_key(|(at, _)| *at);
    out
}

/// Feeds campaigns in order; every event with the moment it happened.
fn run(d: &mut Detector, campaigns: &[Campaign], seed: u64) -> Vec<(DateTime<Utc>, Event)> {
    let mut rng = Lcg(seed);
    let mut out = Vec::new();
    for (n, c) in campaigns.iter().enumerate() {
        for (at, item) in items(c, &mut rng, &format!("c{n}")) {
            for ev in d.close_idle(at) {
                out.push((at, ev));
            }
            match item {
                Item::Unknown(i, who) => {
                    let (domain, provider, _) = LIST[i];
                    for ev in d.observe(&scopes_of(domain, provider), at, &who) {
                        out.push((at, ev));
                    }
                }
                Item::Sent(i, lot) => {
                    let (domain, provider, _) = LIST[i];
                    d.delivered(&scopes_of(domain, provider), at, lot);
                }
            }
        }
    }
    out
}

fn day(n: i64) -> DateTime<Utc> {
    // 09:00 UTC, a few minutes later each day.
    Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap()
        + chrono::Duration::days(n)
        + chrono::Duration::minutes(n * 7 % 40)
}

/// A campaign's size on day `n`: 40 to 400 unknown users.
fn size(n: i64) -> usize {
    [
        40, 120, 400, 90, 60, 250, 40, 180, 300, 75, 140, 400, 55, 210,
    ][n as usize % 14]
}

fn daily(days: i64, deliveries: bool) -> Vec<Campaign> {
    (0..days)
        .map(|n| Campaign {
            start: day(n),
            unknown: size(n),
            icloud_x: 1.0,
            deliveries,
        })
        .collect()
}

fn opened(events: &[(DateTime<Utc>, Event)]) -> Vec<(DateTime<Utc>, Anomaly)> {
    events
        .iter()
        .filter_map(|(at, ev)| match ev {
            Event::Opened(a) => Some((*at, a.clone())),
            Event::Closed(_) => None,
        })
        .collect()
}

#[test]
fn two_weeks_of_daily_campaigns_of_varying_size_are_no_anomaly() {
    for deliveries in [false, true] {
        for seed in 1..=5 {
            let mut d = Detector::new(Params::default());
            let events = run(&mut d, &daily(14, deliveries), seed);
            assert_eq!(
                opened(&events),
                [],
                "seed {seed}, deliveries {deliveries}: a campaign is not an incident"
            );
        }
    }
}

#[test]
fn the_ten_campaigns_of_forty_that_opened_nine_windows_open_none() {
    // The report: ten daily campaigns of 40 ordinary 5.1.1s, a fresh feed.
    let campaigns: Vec<Campaign> = (0..10)
        .map(|n| Campaign {
            start: day(n),
            unknown: 40,
            icloud_x: 1.0,
            deliveries: false,
        })
        .collect();
    let mut d = Detector::new(Params::default());
    assert_eq!(opened(&run(&mut d, &campaigns, 7)), []);
}

/// Day 10's campaign meets an Apple-like incident: iCloud's unknown users
/// `x` times their usual number while everyone else bounces as usual.
fn incident_on_day_ten(x: f64, deliveries: bool, seed: u64) {
    let mut campaigns = daily(10, deliveries);
    let start = day(10);
    campaigns.push(Campaign {
        start,
        unknown: 140,
        icloud_x: x,
        deliveries,
    });
    let mut d = Detector::new(Params::default());
    let events = run(&mut d, &campaigns, seed);
    let opened = opened(&events);
    let what = format!("x{x}, deliveries {deliveries}, seed {seed}: {opened:#?}");
    assert!(!opened.is_empty(), "not detected: {what}");
    for (at, a) in &opened {
        assert!(*at >= start, "only the incident: {what}");
        assert!(
            matches!(&a.scope, Scope::Provider(p) if p == "icloud")
                || matches!(&a.scope, Scope::Domain(d) if ["icloud.com", "me.com", "mac.com"].contains(&d.as_str())),
            "only iCloud: {what}"
        );
    }
    let provider = opened
        .iter()
        .find(|(_, a)| a.scope == Scope::Provider("icloud".into()))
        .unwrap_or_else(|| panic!("the provider's window: {what}"));
    assert!(
        provider.0 - start <= chrono::Duration::minutes(10),
        "within ten minutes: {what}"
    );
    assert!(
        provider.1.start - start <= chrono::Duration::minutes(2),
        "from the burst's first bounces: {what}"
    );
    let basis = if deliveries {
        "delivery attempts"
    } else {
        "other unknown-user bounces at the same time"
    };
    assert!(provider.1.detail.contains(basis), "{what}");
}

#[test]
fn an_apple_like_burst_inside_a_campaign_is_found_within_ten_minutes() {
    for x in [5.0, 7.0, 10.0] {
        for seed in 1..=3 {
            incident_on_day_ten(x, false, seed);
        }
    }
}

#[test]
fn with_deliveries_in_the_feed_the_burst_is_judged_per_delivery_attempt() {
    for x in [5.0, 10.0] {
        for seed in 1..=3 {
            incident_on_day_ten(x, true, seed);
        }
    }
}

#[test]
fn a_sender_whose_only_traffic_is_one_campaign_a_week() {
    // Growing list, a little later each week: no window in eight weeks.
    let campaigns: Vec<Campaign> = (0..8)
        .map(|w| Campaign {
            start: day(0) + chrono::Duration::days(7 * w) + chrono::Duration::minutes(45 * w),
            unknown: 150 + 20 * w as usize,
            icloud_x: 1.0,
            deliveries: false,
        })
        .collect();
    let mut d = Detector::new(Params::default());
    assert_eq!(opened(&run(&mut d, &campaigns, 3)), []);
}

#[test]
fn a_first_day_with_no_history_opens_nothing_for_an_ordinary_campaign() {
    for unknown in [40, 400, 1000] {
        let mut d = Detector::new(Params::default());
        let first = [Campaign {
            start: day(0),
            unknown,
            icloud_x: 1.0,
            deliveries: false,
        }];
        assert_eq!(opened(&run(&mut d, &first, 11)), [], "{unknown}");
    }
}

#[test]
fn a_single_provider_list_compares_with_its_own_busiest_half_hours() {
    // Every address at one provider: nothing concurrent to compare with.
    // Its campaigns are as busy as the last ones; an incident is not.
    let mut d = Detector::new(Params::default());
    let scope = [Scope::Provider("corp".into())];
    let mut rng = Lcg(5);
    let mut opened = Vec::new();
    for n in 0..12 {
        let x = if n == 11 { 6 } else { 1 };
        for k in 0..(30 * x) {
            let at = day(n) + chrono::Duration::seconds((rng.next() * 1500.0) as i64);
            for ev in d.observe(&scope, at, &format!("d{n}-{k}@corp")) {
                if let Event::Opened(a) = ev {
                    opened.push((n, a));
                }
            }
        }
    }
    assert_eq!(opened.len(), 1, "{opened:#?}");
    assert_eq!(opened[0].0, 11);
    assert!(opened[0].1.detail.contains("at its busiest before"));
}

#[test]
fn deliveries_ingested_before_the_bounces_of_their_hours_still_count() {
    // A delivery log ingested first, the bounce log after: the deliveries
    // lie ahead of the bounces in time, and must count where they belong.
    let mut campaigns = daily(10, true);
    campaigns.push(Campaign {
        start: day(10),
        unknown: 140,
        icloud_x: 6.0,
        deliveries: true,
    });
    let mut rng = Lcg(2);
    let all: Vec<(DateTime<Utc>, Item)> = campaigns
        .iter()
        .enumerate()
        .flat_map(|(n, c)| items(c, &mut rng, &format!("c{n}")))
        .collect();
    let mut d = Detector::new(Params::default());
    for (at, item) in &all {
        if let Item::Sent(i, lot) = item {
            let (domain, provider, _) = LIST[*i];
            d.delivered(&scopes_of(domain, provider), *at, *lot);
        }
    }
    let mut opened = Vec::new();
    for (at, item) in &all {
        if let Item::Unknown(i, who) = item {
            let (domain, provider, _) = LIST[*i];
            for ev in d.close_idle(*at).into_iter().chain(d.observe(
                &scopes_of(domain, provider),
                *at,
                who,
            )) {
                if let Event::Opened(a) = ev {
                    opened.push(a);
                }
            }
        }
    }
    assert!(!opened.is_empty());
    for a in &opened {
        assert!(a.start >= day(10), "only the incident: {a:?}");
        assert!(a.detail.contains("of delivery attempts"), "{a:?}");
    }
}
