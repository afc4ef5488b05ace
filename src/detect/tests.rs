use super::*;
use crate::domain::{Mx, MxHost};
use crate::resolve::Outcome;
use chrono::TimeZone;

const H: i64 = 3600;

fn t(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 4, 26, 11, 0, 0).unwrap() + chrono::Duration::seconds(secs)
}

fn mx(list: &[(u16, &str)]) -> Vec<Mx> {
    list.iter()
        .map(|(p, h)| Mx {
            preference: *p,
            exchange: MxHost::parse(h).unwrap(),
        })
        .collect()
}

fn records(up: &str, list: &[(u16, &str)], ttl: u32) -> Observation {
    Observation::from_records(up, mx(list), Some(ttl))
}

fn plain(up: &str, outcome: Outcome) -> Observation {
    Observation {
        upstream: up.into(),
        outcome,
        mx: vec![],
        ttl: Some(60),
        implicit_mx: false,
        detail: None,
    }
}

const OWN: &[(u16, &str)] = &[(10, "mx00.web.de"), (10, "mx01.web.de")];
const ICLOUD: &[(u16, &str)] = &[(10, "mx01.mail.icloud.com"), (10, "mx02.mail.icloud.com")];

fn params() -> Params {
    Params {
        grace: Duration::from_secs(600),
        settle: Duration::from_secs(72 * H as u64),
    }
}

/// Runs a script of (time, observations) and returns every detection.
fn run(script: &[(i64, Vec<Observation>)]) -> Vec<Detection> {
    run_with(script, &[])
}

fn run_with(script: &[(i64, Vec<Observation>)], expect: &[String]) -> Vec<Detection> {
    let providers = Providers::default();
    let mut state = DomainState::default();
    script
        .iter()
        .map(|(at, obs)| {
            let d = detect(&state, obs, t(*at), expect, &providers, &params());
            state = d.state.clone();
            d
        })
        .collect()
}

fn kinds(d: &Detection) -> Vec<ChangeKind> {
    d.changes.iter().map(|c| c.kind).collect()
}

#[test]
fn first_answer_becomes_the_baseline_silently() {
    let d = run(&[(0, vec![records("a", OWN, 300)])]);
    assert!(d[0].changes.is_empty());
    assert!(d[0].window.is_none());
    assert_eq!(
        d[0].state.baseline.as_ref().unwrap().answer,
        Answer::Records(mx(OWN))
    );
}

#[test]
fn flip_to_icloud_opens_a_critical_window_from_last_seen() {
    let d = run(&[
        (0, vec![records("a", OWN, 300)]),
        (300, vec![records("a", OWN, 300)]),
        (600, vec![records("a", ICLOUD, 300)]),
    ]);
    let k = kinds(&d[2]);
    assert!(k.contains(&ChangeKind::ProviderChanged), "{k:?}");
    assert!(k.contains(&ChangeKind::HostsAdded));
    assert!(k.contains(&ChangeKind::HostsRemoved));
    let (ev, w) = d[2].window.clone().unwrap();
    assert_eq!(ev, WindowEvent::Opened);
    assert_eq!(
        w.start,
        t(300),
        "window starts when the old answer was last seen"
    );
    assert_eq!(w.detected_at, t(600));
    assert_eq!(w.severity, Severity::Critical);
    assert!(d[2].fast_recheck);
    let detail = &d[2]
        .changes
        .iter()
        .find(|c| c.kind == ChangeKind::ProviderChanged)
        .unwrap()
        .detail;
    assert!(detail.contains("Apple iCloud"), "{detail}");
}

#[test]
fn revert_closes_after_grace_of_at_least_the_old_ttl() {
    // Old TTL 3600 s is longer than the 600 s grace: the TTL wins.
    let d = run(&[
        (0, vec![records("a", OWN, 3600)]),
        (60, vec![records("a", ICLOUD, 300)]),
        (120, vec![records("a", OWN, 3600)]),
        (1000, vec![records("a", OWN, 3600)]),
        (120 + 3600, vec![records("a", OWN, 3600)]),
    ]);
    assert_eq!(kinds(&d[2]), vec![ChangeKind::Reverted]);
    let (ev, w) = d[2].window.clone().unwrap();
    assert_eq!(ev, WindowEvent::Updated);
    assert_eq!(w.status, WindowStatus::Closing);
    assert_eq!(w.end, Some(t(120 + 3600)));
    assert!(d[3].window.is_none(), "nothing happens inside the grace");
    assert!(d[3].fast_recheck);
    let (ev, w) = d[4].window.clone().unwrap();
    assert_eq!(ev, WindowEvent::Closed);
    assert_eq!(w.close_reason, Some(CloseReason::Reverted));
    assert_eq!(w.end, Some(t(120 + 3600)));
    assert!(d[4].state.window.is_none());
    assert!(!d[4].fast_recheck);
}

#[test]
fn a_stable_new_answer_settles_into_the_baseline() {
    let new = &[(10, "mx.example.net")];
    let d = run(&[
        (0, vec![records("a", OWN, 300)]),
        (60, vec![records("a", new, 300)]),
        (60 + 71 * H, vec![records("a", new, 300)]),
        (60 + 72 * H, vec![records("a", new, 300)]),
        (60 + 73 * H, vec![records("a", new, 300)]),
    ]);
    assert!(d[2].window.is_none());
    let (ev, w) = d[3].window.clone().unwrap();
    assert_eq!(ev, WindowEvent::Closed);
    assert_eq!(w.close_reason, Some(CloseReason::Settled));
    assert_eq!(w.end, Some(t(60 + 72 * H)));
    assert_eq!(kinds(&d[3]), vec![ChangeKind::Settled]);
    let base = d[3].state.baseline.clone().unwrap();
    assert_eq!(base.answer, Answer::Records(mx(new)));
    assert_eq!(base.since, t(60));
    assert!(d[4].changes.is_empty() && d[4].window.is_none());
}

#[test]
fn flapping_is_one_window_with_a_count() {
    let mut script = vec![(0, vec![records("a", OWN, 60)])];
    for i in 1..=10 {
        let list = if i % 2 == 1 { ICLOUD } else { OWN };
        script.push((i * 30, vec![records("a", list, 60)]));
    }
    let d = run(&script);
    let opened = d
        .iter()
        .filter(|x| matches!(x.window, Some((WindowEvent::Opened, _))))
        .count();
    assert_eq!(opened, 1);
    let last = d.last().unwrap().state.window.clone().unwrap();
    assert_eq!(last.start, t(0));
    assert_eq!(
        last.flaps, 4,
        "5 excursions to iCloud: the first opens, four reopen"
    );
    assert_eq!(last.status, WindowStatus::Closing);
}

#[test]
fn failures_are_a_condition_not_a_change() {
    let d = run(&[
        (0, vec![records("a", OWN, 300)]),
        (60, vec![plain("a", Outcome::ServFail)]),
        (120, vec![plain("a", Outcome::Timeout)]),
        (180, vec![records("a", OWN, 300)]),
    ]);
    assert_eq!(kinds(&d[1]), vec![ChangeKind::ResolutionFailed]);
    assert!(d[1].window.is_none());
    assert!(
        d[2].changes.is_empty(),
        "one failure condition, not one per check"
    );
    assert_eq!(kinds(&d[3]), vec![ChangeKind::ResolutionRecovered]);
    assert!(d[3].window.is_none());
    assert_eq!(d[3].state.baseline.as_ref().unwrap().since, t(0));
}

#[test]
fn table_of_answer_transitions() {
    use ChangeKind::*;
    let cases: Vec<(&str, Observation, Vec<ChangeKind>)> = vec![
        ("mx removed", plain("a", Outcome::NoMx), vec![MxRemoved]),
        ("null mx", records("a", &[(0, ".")], 300), vec![NullMx]),
        ("nxdomain", plain("a", Outcome::NxDomain), vec![Nxdomain]),
        (
            "preference",
            records("a", &[(10, "mx00.web.de"), (20, "mx01.web.de")], 300),
            vec![PreferenceChanged],
        ),
        (
            "host added, same provider",
            records(
                "a",
                &[
                    (10, "mx00.web.de"),
                    (10, "mx01.web.de"),
                    (10, "mx02.web.de"),
                ],
                300,
            ),
            vec![HostsAdded],
        ),
        (
            "host removed",
            records("a", &[(10, "mx00.web.de")], 300),
            vec![HostsRemoved],
        ),
    ];
    for (name, obs, want) in cases {
        let d = run(&[(0, vec![records("a", OWN, 300)]), (60, vec![obs])]);
        assert_eq!(kinds(&d[1]), want, "{name}");
        assert!(
            matches!(d[1].window, Some((WindowEvent::Opened, _))),
            "{name}"
        );
    }
    // And back from nothing.
    let d = run(&[
        (0, vec![plain("a", Outcome::NxDomain)]),
        (60, vec![records("a", OWN, 300)]),
    ]);
    assert_eq!(kinds(&d[1]), vec![MxAppeared]);
}

#[test]
fn upstream_disagreement_is_recorded_once_and_majority_wins() {
    let d = run(&[
        (
            0,
            vec![
                records("a", OWN, 300),
                records("b", OWN, 300),
                records("c", OWN, 300),
            ],
        ),
        (
            60,
            vec![
                records("a", ICLOUD, 300),
                records("b", OWN, 300),
                records("c", OWN, 300),
            ],
        ),
        (
            120,
            vec![
                records("a", ICLOUD, 300),
                records("b", OWN, 300),
                records("c", OWN, 300),
            ],
        ),
        (
            180,
            vec![
                records("a", OWN, 300),
                records("b", OWN, 300),
                records("c", OWN, 300),
            ],
        ),
    ]);
    assert_eq!(kinds(&d[1]), vec![ChangeKind::UpstreamDisagreement]);
    assert!(
        d[1].changes[0]
            .detail
            .contains("a: 10 mx01.mail.icloud.com"),
        "{}",
        d[1].changes[0].detail
    );
    assert!(
        d[1].window.is_none(),
        "the majority still answers the baseline"
    );
    assert!(d[2].changes.is_empty());
    assert_eq!(kinds(&d[3]), vec![ChangeKind::UpstreamsAgree]);
}

#[test]
fn a_tie_goes_to_the_first_upstream_and_failures_do_not_vote() {
    let c = consensus(&[records("auth", ICLOUD, 300), records("sys", OWN, 300)]);
    assert_eq!(c.answer, Some(Answer::Records(mx(ICLOUD))));
    let c = consensus(&[plain("auth", Outcome::Timeout), records("sys", OWN, 300)]);
    assert_eq!(c.answer, Some(Answer::Records(mx(OWN))));
    assert!(c.disagreement.is_none());
    let c = consensus(&[
        plain("auth", Outcome::Timeout),
        plain("sys", Outcome::ServFail),
    ]);
    assert_eq!(c.answer, None);
}

#[test]
fn unexpected_provider_is_flagged() {
    let expect = vec!["united-internet".to_string()];
    let d = run_with(&[(0, vec![records("a", ICLOUD, 300)])], &expect);
    assert_eq!(kinds(&d[0]), vec![ChangeKind::UnexpectedProvider]);
    let d = run_with(
        &[
            (0, vec![records("a", OWN, 300)]),
            (60, vec![records("a", ICLOUD, 300)]),
        ],
        &expect,
    );
    assert!(kinds(&d[1]).contains(&ChangeKind::UnexpectedProvider));
}

#[test]
fn resolver_outage_needs_most_domains_failing() {
    let d = |i: i64| format!("d{i}.example");
    let mut o = OutageDetector::new(Duration::from_secs(300), 10);
    for i in 0..9 {
        assert_eq!(
            o.record(&d(i), t(i), true),
            None,
            "too few domains to judge"
        );
    }
    assert_eq!(
        o.record(&d(9), t(9), true),
        Some(OutageEvent::Started(t(0)))
    );
    assert_eq!(o.failing_fraction(), Some(1.0));
    // Recovery, domain by domain: 9 of 10 still failing is no end, nor 3.
    for i in 0..8 {
        assert_eq!(o.record(&d(i), t(10 + i), false), None, "{i}");
    }
    assert_eq!(o.failing_fraction(), Some(0.2));
    assert_eq!(
        o.record(&d(8), t(18), false),
        Some(OutageEvent::Ended {
            start: t(0),
            end: t(18)
        }),
        "ended once fewer than 20 % of domains fail"
    );
    assert!(o.since.is_none());

    // One domain in three failing is their problem, not ours.
    let mut o = OutageDetector::new(Duration::from_secs(300), 10);
    for i in 0..100 {
        assert_eq!(o.record(&d(i % 30), t(i), i % 3 == 0), None);
    }
    // 7 of 9 failing (78 %) is not yet an outage; the 8th of 10 (80 %) is.
    let mut o = OutageDetector::new(Duration::from_secs(300), 9);
    for i in 0..2 {
        o.record(&d(i), t(i), false);
    }
    for i in 2..9 {
        assert_eq!(o.record(&d(i), t(i), true), None, "{i}");
    }
    assert_eq!(
        o.record(&d(9), t(9), true),
        Some(OutageEvent::Started(t(2)))
    );
}

#[test]
fn a_domain_rechecked_often_counts_once() {
    let d = |i: i64| format!("d{i}.example");
    let mut o = OutageDetector::new(Duration::from_secs(600), 5);
    for i in 0..5 {
        o.record(&d(i), t(i), false);
    }
    // One failing domain re-checked many times is one domain in five.
    for k in 0..50 {
        assert_eq!(o.record(&d(0), t(10 + k), true), None);
    }
    assert_eq!(o.failing_fraction(), Some(0.2));
    // Checks older than the span drop out.
    assert_eq!(
        o.record(&d(0), t(700), true),
        None,
        "one domain in the span"
    );
    assert_eq!(o.failing_fraction(), None);
}

#[test]
fn held_answers_are_believed_when_the_others_are_healthy_and_pile_up_into_an_outage_when_not() {
    let d = |i: i64| format!("d{i}.example");
    let own = |i: i64| Answer::Records(mx(&[(10, &format!("mx.d{i}.example"))]));
    let mut h = Health::new(10);
    for i in 0..10 {
        assert_eq!(
            h.assess(&d(i), Some(&own(i)), Some(&own(i))),
            Trust::Believe
        );
        h.record(&d(i), t(i), false);
    }
    // One domain changes: held until the nine others have been checked
    // again (min_checks = 10, but there are only nine others).
    let new = Answer::Records(mx(&[(10, "mx01.mail.icloud.com")]));
    let held =
        |h: &mut Health| matches!(h.assess(&d(0), Some(&own(0)), Some(&new)), Trust::Hold(_));
    assert!(held(&mut h));
    h.record(&d(0), t(20), true);
    for i in 1..9 {
        h.record(&d(i), t(20 + i), false);
        // Its own re-checks do not count as the others'.
        assert!(held(&mut h), "{i} others");
        h.record(&d(0), t(20 + i), true);
    }
    h.record(&d(9), t(30), false);
    assert!(!held(&mut h), "nine others");
    // With 30 domains, 20 others (the outage detector's minimum) suffice.
    let mut h = Health::new(30);
    for i in 0..30 {
        h.assess(&d(i), Some(&own(i)), Some(&own(i)));
        h.record(&d(i), t(i), false);
    }
    assert!(held(&mut h));
    h.record(&d(0), t(40), true);
    for i in 1..20 {
        h.record(&d(i), t(40 + i), false);
    }
    assert!(held(&mut h), "19 others");
    h.record(&d(0), t(60), true);
    h.record(&d(20), t(61), false);
    assert!(!held(&mut h), "20 others");

    // Every domain answers NXDOMAIN: all held, then an outage.
    let mut h = Health::new(10);
    for i in 0..10 {
        h.assess(&d(i), Some(&own(i)), Some(&own(i)));
        h.record(&d(i), t(i), false);
    }
    let mut started = None;
    for k in 0..3 {
        for i in 0..10 {
            let trust = h.assess(&d(i), Some(&own(i)), Some(&Answer::NxDomain));
            assert!(matches!(trust, Trust::Hold(_)), "{k} {i}");
            if let Some(ev) = h.record(&d(i), t(100 * (k + 1) + i), true) {
                started = Some(ev);
            }
        }
    }
    assert_eq!(started, Some(OutageEvent::Started(t(100))));
    // Fewer than three domains: nothing to compare with, believed at once.
    let mut h = Health::new(2);
    assert_eq!(
        h.assess(&d(0), Some(&own(0)), Some(&Answer::NxDomain)),
        Trust::Believe
    );
    // A first answer is believed unless it is NXDOMAIN.
    let mut h = Health::new(10);
    assert_eq!(h.assess(&d(0), None, Some(&own(0))), Trust::Believe);
    assert!(matches!(
        h.assess(&d(1), None, Some(&Answer::NxDomain)),
        Trust::Hold(_)
    ));
    assert_eq!(
        h.assess(&d(2), Some(&own(2)), None),
        Trust::Believe,
        "failures are not held"
    );
}
