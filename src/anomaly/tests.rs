use super::*;
use chrono::TimeZone;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2021, 4, 19, 0, 0, 0).unwrap()
}

fn mins(m: i64) -> chrono::Duration {
    chrono::Duration::minutes(m)
}

fn secs(s: i64) -> chrono::Duration {
    chrono::Duration::seconds(s)
}

/// A week of normal life: a few unknown users a day for icloud.
fn normal_week(d: &mut Detector) {
    for day in 0..7 {
        for k in 0..3 {
            let at = t0() + chrono::Duration::days(day) + chrono::Duration::hours(8 * k);
            assert_eq!(
                d.observe(&[sc("icloud")], at, &format!("old{day}-{k}@icloud.com")),
                []
            );
        }
    }
}

/// A scope by name: providers have no dot.
fn sc(name: &str) -> Scope {
    if name.contains('.') {
        Scope::Domain(name.into())
    } else {
        Scope::Provider(name.into())
    }
}

/// Feeds `n` bounces, one every `every`, from `start`; returns each
/// event with the index of the bounce that caused it.
fn feed(
    d: &mut Detector,
    scope: &str,
    start: DateTime<Utc>,
    every: chrono::Duration,
    n: i32,
) -> Vec<(i32, Event)> {
    let mut out = Vec::new();
    for i in 0..n {
        for ev in d.observe(&[sc(scope)], start + every * i, &format!("u{i}@{scope}")) {
            out.push((i, ev));
        }
    }
    out
}

/// (bounce index, opened?, start, end) of each event.
type Row = (i32, bool, DateTime<Utc>, Option<DateTime<Utc>>);

fn summarise(events: &[(i32, Event)]) -> Vec<Row> {
    events
        .iter()
        .map(|(i, ev)| match ev {
            Event::Opened(a) => (*i, true, a.start, a.end),
            Event::Closed(a) => (*i, false, a.start, a.end),
        })
        .collect()
}

fn opened(ev: &Event) -> &Anomaly {
    match ev {
        Event::Opened(a) => a,
        Event::Closed(a) => panic!("expected an opening, got the close of {a:?}"),
    }
}

fn closed(ev: &Event) -> &Anomaly {
    match ev {
        Event::Closed(a) => a,
        Event::Opened(a) => panic!("expected a close, got the opening of {a:?}"),
    }
}

#[test]
fn an_apple_like_burst_opens_a_window_at_its_first_bounce_and_closes_after() {
    let mut d = Detector::new(Params::default());
    normal_week(&mut d);
    let start = Utc.with_ymd_and_hms(2021, 4, 26, 11, 0, 0).unwrap();
    // One a minute for six hours, each a different valid address.
    let events = feed(&mut d, "icloud", start, mins(1), 360);
    assert_eq!(events.len(), 1, "one window, not many: {events:?}");
    let (i, ev) = &events[0];
    assert_eq!(*i, 19, "after min_bounces bounces");
    let a = opened(ev);
    assert_eq!(
        a.start, start,
        "the window starts at the first bounce of the burst"
    );
    assert_eq!(
        a.detail,
        "20 unknown-user bounces to 20 recipients in 30m, against 0.1 expected"
    );
    let last = start + mins(359);
    assert_eq!(
        d.close_idle(last + mins(30) - secs(1)),
        [],
        "not idle for a full window yet"
    );
    let closed_now = d.close_idle(last + mins(30));
    assert_eq!(closed_now.len(), 1);
    let a = closed(&closed_now[0]);
    assert_eq!(a.end, Some(last));
    assert_eq!(a.bounces, 360);
    assert_eq!(d.close_idle(last + mins(60)), [], "closed once");
}

#[test]
fn the_burst_must_be_factor_times_the_scopes_own_rate() {
    let mut d = Detector::new(Params::default());
    // Six an hour for a week: 3 expected per 30 minutes.
    let week = feed(&mut d, "gmail.com", t0(), mins(10), 7 * 24 * 6);
    assert_eq!(week, []);
    let start = t0() + chrono::Duration::days(7);
    let events = feed(&mut d, "gmail.com", start, secs(30), 60);
    let (i, ev) = &events[0];
    // The week's last two bounces share the burst's half hour: 31
    // bounces is the first count at or above 10 x 3.0 (3.003 in full).
    assert_eq!(*i, 28, "factor x expected");
    assert!(
        opened(ev).detail.ends_with("against 3.0 expected"),
        "{ev:?}"
    );
}

#[test]
fn bounces_older_than_the_baseline_do_not_count() {
    // A heavy day (one a minute: in warm-up, no window), then quiet.
    let heavy = |d: &mut Detector| assert_eq!(feed(d, "gmail.com", t0(), mins(1), 24 * 60), []);
    // Two weeks later its rate is forgotten, but its busiest half hour
    // (30) is still remembered: 30 a minute is no incident...
    let mut d = Detector::new(Params::default());
    heavy(&mut d);
    let start = t0() + chrono::Duration::days(14);
    let events = feed(&mut d, "gmail.com", start, mins(1), 30);
    assert_eq!(events, [], "as busy as before");
    // ...until the peaks are two baselines old too.
    let mut d = Detector::new(Params::default());
    heavy(&mut d);
    let start = t0() + chrono::Duration::days(16);
    let events = feed(&mut d, "gmail.com", start, mins(1), 30);
    let (i, ev) = &events[0];
    assert_eq!(*i, 19, "nothing expected any more: min_bounces decides");
    assert!(
        opened(ev).detail.ends_with("against 0.0 expected"),
        "{ev:?}"
    );
}

#[test]
fn a_bounce_exactly_one_baseline_old_still_counts() {
    let p = Params {
        window: Duration::from_secs(600),
        baseline: Duration::from_secs(3600),
        factor: 2.0,
        concurrent_factor: 2.0,
        min_bounces: 2,
        min_recipients: 1,
        warmup: Duration::ZERO,
        max_duration: Duration::from_secs(7200),
    };
    let detail_at = |age: chrono::Duration| {
        let mut d = Detector::new(p);
        d.observe(&[sc("x")], t0(), "old@x");
        let at = t0() + age;
        d.observe(&[sc("x")], at, "a@x");
        match &d.observe(&[sc("x")], at, "b@x")[..] {
            [Event::Opened(a)] => a.detail.clone(),
            other => panic!("{other:?}"),
        }
    };
    // One bounce in the 50 minutes before the window: 1 x 10 / 50.
    assert!(detail_at(mins(60)).ends_with("against 0.2 expected"));
    assert!(detail_at(mins(60) + secs(1)).ends_with("against 0.0 expected"));
}

#[test]
fn a_fresh_database_needs_much_stronger_evidence() {
    // The cold-start report: 25 unknown users to gmail.com within 30
    // minutes on a fresh database is an ordinary day, not an incident.
    let mut d = Detector::new(Params::default());
    let start = Utc.with_ymd_and_hms(2021, 4, 26, 11, 0, 0).unwrap();
    assert_eq!(feed(&mut d, "gmail.com", start, mins(1), 25), []);
    assert!(!Params::default().warmed_up(d.history_since(), start + mins(30)));

    // Five times min_bounces to five times min_recipients does.
    let mut d = Detector::new(Params::default());
    let events = feed(&mut d, "gmail.com", start, secs(10), 120);
    let (i, ev) = &events[0];
    assert_eq!(*i, 99, "WARMUP_STRENGTH x min_bounces");
    assert!(opened(ev).detail.contains("warm-up"), "{ev:?}");

    // Once history reaches `warmup`, normal strength applies.
    let mut d = Detector::new(Params::default());
    d.note(start - chrono::Duration::hours(24));
    assert!(Params::default().warmed_up(d.history_since(), start));
    let events = feed(&mut d, "gmail.com", start, mins(1), 25);
    assert_eq!(events[0].0, 19);
    let mut d = Detector::new(Params::default());
    d.note(start - chrono::Duration::hours(24) + secs(1));
    assert!(!Params::default().warmed_up(d.history_since(), start));
}

#[test]
fn the_warm_up_caveat_says_how_much_history_there_is() {
    let p = Params::default();
    let at = t0() + chrono::Duration::days(1);
    assert_eq!(
        p.warmup_caveat(Some(at - mins(19)), at),
        "too little bounce history to judge bursts: 19m of the 24h anomaly detection \
         needs (until then only a burst 5x stronger counts)"
    );
    assert!(p.warmup_caveat(None, at).contains(": 0s of the 24h"));
    assert!(!p.warmed_up(None, at), "no history at all is not warm");
}

#[test]
fn steady_traffic_on_a_fresh_scope_ends_its_window_while_bounces_keep_coming() {
    // Five a minute, every minute, for two days, from a fresh start:
    // strong enough to open a window in warm-up, but once the scope's
    // own history shows that this is its normal rate, the window ends.
    let mut d = Detector::new(Params::default());
    let start = t0();
    let events = feed(&mut d, "gmail.com", start, secs(12), 5 * 60 * 48);
    let summary = summarise(&events);
    assert_eq!(
        summary,
        [
            (99, true, start, None),
            // At 36:00 the half hour holds 150 bounces and the 36
            // minutes of history predict 31: 300 < 10 x 31.
            (180, false, start, Some(start + secs(12 * 179))),
        ],
        "one window, closed as the rate met the scope's own history"
    );
    assert!(d.open(&sc("gmail.com")).is_none());
}

#[test]
fn a_burst_that_falls_back_closes_at_its_last_bounce_above_half_the_threshold() {
    let mut d = Detector::new(Params::default());
    normal_week(&mut d);
    let start = Utc.with_ymd_and_hms(2021, 4, 26, 11, 0, 0).unwrap();
    let burst = feed(&mut d, "icloud", start, mins(1), 60);
    assert_eq!(burst.len(), 1);
    // Then one every five minutes (12:04, 12:09, ...): at 12:29 the last
    // 30 minutes hold 6 bounces, fewer than min_bounces / 2 = 10; at
    // 12:24 they still held 10.
    let mut events = Vec::new();
    for k in 1..=10 {
        let at = start + mins(59 + 5 * k);
        for ev in d.observe(&[sc("icloud")], at, &format!("late{k}@icloud.com")) {
            events.push((at, ev));
        }
    }
    assert_eq!(events.len(), 1, "{events:?}");
    let (at, ev) = &events[0];
    assert_eq!(*at, start + mins(89));
    assert_eq!(closed(ev).end, Some(start + mins(84)));
}

#[test]
fn no_window_outlives_max_duration_without_fresh_evidence() {
    let mut d = Detector::new(Params::default());
    normal_week(&mut d);
    let start = Utc.with_ymd_and_hms(2021, 4, 26, 11, 0, 0).unwrap();
    // Two a minute for 20 hours: ten times the norm all along.
    let events = feed(&mut d, "icloud", start, secs(30), 2 * 60 * 20);
    let summary = summarise(&events);
    let twelve = chrono::Duration::hours(12);
    assert_eq!(
        summary[..3],
        [
            (19, true, start, None),
            (1440, false, start, Some(start + twelve)),
            (1440, true, start + twelve, None),
        ],
        "closed at 12 h, reopened on the evidence of that moment"
    );
    // Idle ticks close at max_duration too, at the last bounce before it.
    let mut d = Detector::new(Params::default());
    normal_week(&mut d);
    feed(&mut d, "icloud", start, secs(30), 40);
    d.adopt(Anomaly {
        scope: Scope::Provider("icloud".into()),
        start: start - chrono::Duration::hours(13),
        end: None,
        bounces: 1,
        detail: String::new(),
    });
    let closed_now = d.close_idle(start + mins(20));
    assert_eq!(
        closed(&closed_now[0]).end,
        Some(start - chrono::Duration::hours(1)),
        "capped at start + max_duration"
    );
}

#[test]
fn an_adopted_window_closes_by_the_same_rules() {
    let mut d = Detector::new(Params::default());
    let start = Utc.with_ymd_and_hms(2021, 4, 26, 11, 0, 0).unwrap();
    d.adopt(Anomaly {
        scope: Scope::Provider("icloud".into()),
        start,
        end: None,
        bounces: 20,
        detail: "stored".into(),
    });
    assert!(d.open(&sc("icloud")).is_some());
    assert_eq!(d.open_all().count(), 1);
    let ev = d.close_idle(start + mins(30));
    assert_eq!(
        closed(&ev[0]).end,
        Some(start),
        "no bounce seen: it ends where it began"
    );
    assert_eq!(closed(&ev[0]).detail, "stored");
}

#[test]
fn one_address_retried_is_no_anomaly() {
    let mut d = Detector::new(Params::default());
    normal_week(&mut d);
    let start = Utc.with_ymd_and_hms(2021, 4, 26, 11, 0, 0).unwrap();
    for i in 0..100 {
        let who = format!("user{}@icloud.com", i % 9);
        assert_eq!(d.observe(&[sc("icloud")], start + mins(i / 10), &who), []);
    }
    // Ten recipients are enough.
    let ev = d.observe(&[sc("icloud")], start + mins(10), "user9@icloud.com");
    assert!(matches!(ev[..], [Event::Opened(_)]), "{ev:?}");
}

#[test]
fn scopes_are_separate() {
    let mut d = Detector::new(Params::default());
    normal_week(&mut d);
    let start = Utc.with_ymd_and_hms(2021, 4, 26, 11, 0, 0).unwrap();
    for i in 0..40 {
        d.observe(
            &[sc("icloud")],
            start + mins(i / 2),
            &format!("a{i}@icloud.com"),
        );
    }
    assert!(d.open(&sc("icloud")).is_some());
    assert!(d.open(&sc("me.com")).is_none());
}

#[test]
fn absurd_times_and_durations_do_not_panic() {
    let p = Params {
        window: Duration::from_secs(u64::MAX / 4),
        baseline: Duration::from_secs(u64::MAX / 2),
        max_duration: Duration::from_secs(u64::MAX),
        warmup: Duration::from_secs(u64::MAX),
        ..Params::default()
    };
    let mut d = Detector::new(p);
    for at in [DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC, t0()] {
        d.observe(&[sc("x")], at, "a@x");
        d.close_idle(at);
    }
    let mut d = Detector::new(Params::default());
    for at in [DateTime::<Utc>::MAX_UTC, DateTime::<Utc>::MIN_UTC] {
        d.observe(&[sc("x")], at, "a@x");
        d.close_idle(at);
    }
}

/// The bookkeeping behind the comparisons (issue 19): what the feed's tally,
/// a scope's delivery buckets and its busiest half hours keep.
mod bookkeeping {
    use super::*;

    #[test]
    fn the_feed_tally_shares_an_entry_per_minute_in_order() {
        let mut tally = Tally::default();
        let at = t0() + secs(10);
        tally.add(at, 1);
        tally.add(at + secs(20), 2);
        assert_eq!(tally.recent.len(), 1, "the same minute, later: shared");
        tally.add(at + secs(50), 1);
        assert_eq!(tally.recent.len(), 2, "the next minute: its own");
        tally.add(at + secs(45), 1);
        assert_eq!(tally.recent.len(), 3, "earlier than the last: its own");
        assert_eq!(tally.recent_sum, 5);
        // An entry exactly a window old has left the window.
        let window = mins(30);
        tally.slide(at + window, window, chrono::Duration::days(7));
        assert_eq!((tally.recent_sum, tally.older_sum), (2, 3));
        // And leaves the baseline once older than it.
        tally.slide(
            at + chrono::Duration::days(7),
            window,
            chrono::Duration::days(7),
        );
        assert_eq!(tally.older_sum, 5, "exactly a baseline old still counts");
        tally.slide(
            at + chrono::Duration::days(7) + secs(1),
            window,
            chrono::Duration::days(7),
        );
        assert_eq!(
            tally.older_sum, 2,
            "the first entry is gone, the rest not yet"
        );
    }

    #[test]
    fn delivery_buckets_are_kept_for_keep_and_asked_by_stretch() {
        let bucket = secs(SENT_BUCKET);
        let keep = mins(60); // 12 buckets, and one more
        let at = t0();
        let mut sent = Sent::default();
        sent.add(at, 5, keep);
        sent.add(at + bucket, 7, keep);
        // (from, to]: the bucket of `from` is not in it.
        assert_eq!(sent.between(at, at + bucket), 7);
        assert_eq!(sent.between(at - bucket, at + bucket), 12);
        assert_eq!(sent.between(at + bucket, at), 0);
        // 13 buckets later the first is still kept; 14 later it is gone.
        sent.add(at + bucket * 13, 1, keep);
        assert_eq!(sent.between(at - bucket, at), 5);
        sent.add(at + bucket * 14, 1, keep);
        assert_eq!(sent.between(at - bucket, at), 0);
        assert_eq!(sent.between(at, at + bucket), 7);
        // A bucket older than that, arriving late, moves nothing and is
        // not kept.
        sent.add(at - bucket * 5, 9, keep);
        assert_eq!(sent.between(at - bucket * 6, at + bucket * 14), 9);
        assert_eq!(sent.newest, Some(Sent::bucket(at + bucket * 14)));
    }

    #[test]
    fn busiest_half_hours_one_per_hour_for_peak_memory() {
        let mut st = ScopeState::default();
        let memory = chrono::Duration::hours(3);
        let at = t0();
        st.recent.push_back((at, 1));
        st.note_peak(at, memory);
        st.recent.push_back((at, 2));
        st.note_peak(at + mins(10), memory);
        assert_eq!(st.peaks.len(), 1, "one entry per hour");
        assert_eq!(st.peaks[0].1, 2, "its busiest");
        // An hour exactly `memory` old is kept; older, gone.
        st.note_peak(at + memory, memory);
        assert_eq!(st.peaks.len(), 2);
        st.note_peak(at + memory + secs(1), memory);
        assert_eq!(st.peaks.len(), 1);
        // The busiest before: only hours that ended before the window began.
        let mut st = ScopeState::default();
        st.peaks.push_back((at, 30));
        let window = mins(30);
        assert_eq!(st.peak_before(at + mins(89), window), 0);
        assert_eq!(st.peak_before(at + mins(90), window), 30);
    }
}

/// The comparisons' numbers, as the module documents them (issue 19).
mod comparisons {
    use super::*;

    fn days(n: i64) -> chrono::Duration {
        chrono::Duration::days(n)
    }

    fn rate_of(d: &Detector, scope: &str, at: DateTime<Utc>) -> Rate {
        d.rate(&d.scopes[&sc(scope)], at)
    }

    #[test]
    fn per_delivery_attempt_now_against_usually() {
        let t = t0() + days(7);
        let with = |recent_sent: u64, bounces: usize| {
            let mut d = Detector::new(Params::default());
            d.note(t - days(3));
            d.delivered(&[sc("icloud")], t - days(1), 100);
            d.observe(&[sc("icloud")], t - days(2), "old@icloud.com");
            if recent_sent > 0 {
                d.delivered(&[sc("icloud")], t - mins(5), recent_sent);
            }
            for i in 0..bounces {
                d.observe(&[sc("icloud")], t, &format!("u{i}@icloud.com"));
            }
            rate_of(&d, "icloud", t).basis
        };
        assert_eq!(
            with(10, 12),
            Basis::Deliveries {
                now: 12.0 / 22.0,
                usual: 2.0 / 103.0
            }
        );
        // Too few bounces to matter, or no deliveries in the feed now: the
        // deliveries are not asked.
        assert!(!matches!(with(10, 9), Basis::Deliveries { .. }));
        assert!(!matches!(with(0, 12), Basis::Deliveries { .. }));
    }

    #[test]
    fn a_share_of_the_concurrent_unknown_users() {
        let t = t0() + days(7);
        let mut d = Detector::new(Params::default());
        d.note(t - days(3));
        for i in 0..5 {
            d.observe(&[sc("a")], t - days(2), &format!("old{i}@a"));
        }
        for i in 0..45 {
            d.observe(&[sc("b")], t - days(2), &format!("old{i}@b"));
        }
        for i in 0..30 {
            d.observe(&[sc("b")], t, &format!("u{i}@b"));
        }
        for i in 0..12 {
            d.observe(&[sc("a")], t, &format!("u{i}@a"));
        }
        assert_eq!(
            rate_of(&d, "a", t).basis,
            Basis::Concurrent {
                rest: 30,
                expected: 30.0 * 6.0 / 46.0
            }
        );
    }

    #[test]
    fn the_thresholds_of_each_comparison() {
        let d = Detector::new(Params::default());
        let rate = |recent: usize, basis: Basis| Rate {
            recent,
            distinct: recent,
            basis,
            warm: true,
        };
        let per_delivery = |now: f64| rate(20, Basis::Deliveries { now, usual: 0.125 });
        assert!(d.above(per_delivery(0.375), 1.0), "3 x usual");
        assert!(!d.above(per_delivery(0.37), 1.0));
        assert!(d.above(per_delivery(0.1875), 0.5), "half of it holds");
        assert!(!d.above(per_delivery(0.18), 0.5));
        let concurrent = |n: usize| {
            rate(
                n,
                Basis::Concurrent {
                    rest: 40,
                    expected: 8.0,
                },
            )
        };
        assert!(d.above(concurrent(24), 1.0));
        assert!(!d.above(concurrent(23), 1.0));
        assert!(d.above(concurrent(12), 0.5));
        assert!(!d.above(concurrent(11), 0.5));
        let alone = |n: usize, peak: usize| {
            rate(
                n,
                Basis::Alone {
                    expected: 2.5,
                    peak,
                },
            )
        };
        assert!(d.above(alone(25, 0), 1.0), "10 x expected");
        assert!(!d.above(alone(24, 0), 1.0));
        assert!(d.above(alone(30, 10), 1.0), "and 3 x its busiest");
        assert!(!d.above(alone(29, 10), 1.0));
        assert!(!d.above(alone(19, 0), 1.0), "min_bounces");
    }

    #[test]
    fn an_open_anomaly_ends_when_asked_later() {
        let p = Params::default();
        let (start, last) = (t0(), t0() + mins(40));
        assert_eq!(p.ended(start, last, last + mins(29)), None, "may go on");
        assert_eq!(p.ended(start, last, last + mins(30)), Some(last), "idle");
        assert_eq!(p.ended(start, last, start + mins(5)), None, "inside it");
        // At max_duration even while bounces go on.
        let late = start + chrono::Duration::hours(13);
        assert_eq!(
            p.ended(start, late, start + chrono::Duration::hours(12)),
            Some(start + chrono::Duration::hours(12))
        );
        assert_eq!(
            p.ended(start, late, start + chrono::Duration::hours(11)),
            None
        );
    }

    #[test]
    fn deliveries_are_kept_for_a_baseline_and_a_window() {
        // A lot 7 days and 10 minutes before a burst still counts as usual.
        let t = t0() + days(8);
        let mut d = Detector::new(Params::default());
        d.note(t - days(8));
        d.delivered(&[sc("icloud")], t - days(7) + mins(10), 100);
        d.delivered(&[sc("icloud")], t - mins(5), 10);
        for i in 0..12 {
            d.observe(&[sc("icloud")], t, &format!("u{i}@icloud.com"));
        }
        assert_eq!(
            rate_of(&d, "icloud", t).basis,
            Basis::Deliveries {
                now: 12.0 / 22.0,
                usual: 1.0 / 102.0
            }
        );
    }

    /// A half hour too quiet to hold any burst back is not remembered: its
    /// count times `concurrent_factor` must be above `min_bounces`.
    #[test]
    fn only_half_hours_that_could_hold_a_burst_back_are_remembered() {
        let p = Params {
            concurrent_factor: 2.0,
            ..Params::default()
        };
        let kept = |n: usize| {
            let mut d = Detector::new(p);
            for i in 0..n {
                d.observe(&[sc("x")], t0() + secs(i as i64), &format!("u{i}@x"));
            }
            d.scopes[&sc("x")].peaks.len()
        };
        assert_eq!(kept(10), 0, "10 x 2 is not above 20");
        assert_eq!(kept(11), 1);
    }
}
