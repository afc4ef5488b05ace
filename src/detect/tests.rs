use super::*;
use crate::dns::Outcome;
use crate::domain::{Mx, MxHost};
use chrono::TimeZone;
use std::collections::BTreeSet;

const H: i64 = 3600;

pub(crate) fn t(secs: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 4, 26, 11, 0, 0).unwrap() + chrono::Duration::seconds(secs)
}

pub(crate) fn mx(list: &[(u16, &str)]) -> Vec<Mx> {
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
fn names_round_trip_and_are_the_stored_ones() {
    for &k in ChangeKind::ALL {
        assert_eq!(ChangeKind::parse(k.as_str()), Some(k));
        assert_eq!(k.to_string(), k.as_str());
    }
    assert_eq!(ChangeKind::ProviderChanged.as_str(), "provider_changed");
    assert_eq!(ChangeKind::parse("nxdomain"), Some(ChangeKind::Nxdomain));
    assert_eq!(ChangeKind::parse("nope"), None);
    let names: BTreeSet<&str> = ChangeKind::ALL.iter().map(|k| k.as_str()).collect();
    assert_eq!(names.len(), ChangeKind::ALL.len(), "every name distinct");
    for (s, name) in [
        (Severity::Info, "info"),
        (Severity::Warning, "warning"),
        (Severity::Critical, "critical"),
    ] {
        assert_eq!((s.as_str(), s.to_string()), (name, name.to_string()));
        assert_eq!(Severity::parse(name), Some(s));
    }
    assert_eq!(Severity::parse("loud"), None);
    for (w, name) in [
        (WindowStatus::Open, "open"),
        (WindowStatus::Closing, "closing"),
        (WindowStatus::Closed, "closed"),
    ] {
        assert_eq!(w.as_str(), name);
        assert_eq!(WindowStatus::parse(name), Some(w));
    }
    assert_eq!(WindowStatus::parse("ajar"), None);
    for (r, name) in [
        (CloseReason::Reverted, "reverted"),
        (CloseReason::Settled, "settled"),
        (CloseReason::Unwatched, "unwatched"),
    ] {
        assert_eq!(r.as_str(), name);
        assert_eq!(CloseReason::parse(name), Some(r));
    }
    assert_eq!(CloseReason::parse("bored"), None);
    // Severity orders from info to critical: a window takes the worst.
    assert!(Severity::Info < Severity::Warning && Severity::Warning < Severity::Critical);
    assert_eq!(ChangeKind::Nxdomain.severity(), Severity::Critical);
    assert_eq!(ChangeKind::HostsAdded.severity(), Severity::Warning);
    assert_eq!(ChangeKind::Reverted.severity(), Severity::Info);
}

#[test]
fn upstreams_agree_again_only_when_they_answer() {
    let d = run(&[
        (0, vec![records("a", OWN, 300), records("b", OWN, 300)]),
        (60, vec![records("a", OWN, 300), records("b", ICLOUD, 300)]),
        (
            120,
            vec![plain("a", Outcome::ServFail), plain("b", Outcome::Timeout)],
        ),
        (180, vec![records("a", OWN, 300), records("b", OWN, 300)]),
    ]);
    assert_eq!(kinds(&d[1]), vec![ChangeKind::UpstreamDisagreement]);
    assert_eq!(
        kinds(&d[2]),
        vec![ChangeKind::ResolutionFailed],
        "nobody answered: that is no agreement"
    );
    assert!(d[2].state.disagreeing);
    assert_eq!(
        kinds(&d[3]),
        vec![ChangeKind::UpstreamsAgree, ChangeKind::ResolutionRecovered]
    );
}

#[test]
fn a_flap_is_described_from_the_answer_it_left() {
    const THIRD: &[(u16, &str)] = &[(10, "aspmx.l.google.com")];
    let d = run(&[
        (0, vec![records("a", OWN, 60)]),
        (60, vec![records("a", ICLOUD, 60)]),
        // Open: from iCloud to Google.
        (120, vec![records("a", THIRD, 60)]),
        // Back to the baseline: closing.
        (180, vec![records("a", OWN, 60)]),
        // Closing: from the baseline to iCloud again.
        (200, vec![records("a", ICLOUD, 60)]),
    ]);
    let detail = |i: usize| {
        d[i].changes
            .iter()
            .find(|c| c.kind == ChangeKind::ProviderChanged)
            .map(|c| c.detail.clone())
            .unwrap()
    };
    assert_eq!(detail(2), "provider Apple iCloud → Google");
    assert_eq!(d[2].changes[0].before, Some(Answer::Records(mx(ICLOUD))));
    assert_eq!(d[3].changes[0].kind, ChangeKind::Reverted);
    assert!(detail(4).ends_with("→ Apple iCloud"), "{}", detail(4));
    assert_eq!(d[4].changes[0].before, Some(Answer::Records(mx(OWN))));
    let w = d[4].state.window.as_ref().unwrap();
    assert_eq!((w.flaps, w.status), (2, WindowStatus::Open));
}

#[test]
fn a_preference_change_names_the_host_and_both_preferences() {
    let before = Answer::Records(mx(&[(10, "mx00.web.de"), (10, "mx01.web.de")]));
    let after = Answer::Records(mx(&[(20, "mx00.web.de"), (10, "mx01.web.de")]));
    let found = classify(&before, &after, &Providers::default());
    assert_eq!(
        found,
        vec![(
            ChangeKind::PreferenceChanged,
            "mx00.web.de 10→20".to_string()
        )]
    );
}

#[test]
fn absurd_grace_settle_and_times_do_not_panic() {
    let p = Params {
        grace: std::time::Duration::from_secs(u64::MAX),
        settle: std::time::Duration::from_secs(u64::MAX),
    };
    let providers = Providers::default();
    let end = DateTime::<Utc>::MAX_UTC;
    let mut state = DomainState::default();
    for (at, list) in [
        (end - chrono::Duration::seconds(3), OWN),
        (end - chrono::Duration::seconds(2), ICLOUD),
        (end - chrono::Duration::seconds(1), OWN),
        (end, ICLOUD),
    ] {
        state = detect(&state, &[records("a", list, 60)], at, &[], &providers, &p).state;
    }
    let w = state.window.expect("flapped: still open");
    assert_eq!(w.flaps, 1);
}
