//! The monitoring scenarios of the product, end to end.

use mxwatch::detect::{ChangeKind, WindowEvent, WindowStatus};
use mxwatch::resolve::Outcome;

use crate::{App, Behaviour, TestDns, base_yaml, name, spawn_app, start};

const OWN: &[(u16, &str)] = &[(10, "mx00.example.de"), (20, "mx01.example.de")];
const ICLOUD: &[(u16, &str)] = &[(10, "mx01.mail.icloud.com"), (10, "mx02.mail.icloud.com")];

async fn settle_in(app: &mut App, domain: &str) {
    let first = app.next_check(domain).await;
    assert!(first.changes.is_empty(), "{:?}", first.changes);
    let second = app.next_check(domain).await;
    assert!(second.changes.is_empty() && second.window.is_none());
}

#[tokio::test(start_paused = true)]
async fn flip_to_icloud_opens_a_provider_window_and_the_revert_closes_it_after_grace() {
    let dns = TestDns::start().await;
    dns.set("example.de", Behaviour::mx(OWN, 300));
    let mut app = spawn_app(&format!("{}domains: [example.de]\n", base_yaml(&dns)));
    settle_in(&mut app, "example.de").await;
    let last_good = app.store().history(&name("example.de"), None).unwrap()[0].last_seen;

    dns.set("example.de", Behaviour::mx(ICLOUD, 300));
    let flip = app.next_check("example.de").await;
    assert!(
        flip.changes.contains(&ChangeKind::ProviderChanged),
        "{:?}",
        flip.changes
    );
    assert_eq!(flip.window, Some((WindowEvent::Opened, WindowStatus::Open)));
    assert!(flip.fast_recheck);

    let windows = app.store().windows(Some(flip.at)).unwrap();
    assert_eq!(windows.len(), 1);
    let w = &windows[0];
    assert_eq!(w.domain.as_deref(), Some("example.de"));
    assert_eq!(
        w.start, last_good,
        "the window starts when the old MX was last seen"
    );
    assert_eq!(w.severity.as_str(), "critical");
    assert!(
        w.after
            .as_ref()
            .unwrap()
            .to_string()
            .contains("mail.icloud.com")
    );

    // Fast re-check: the next check comes within fast_recheck (10 s).
    let again = app.next_check("example.de").await;
    assert!(
        (again.at - flip.at).num_seconds() <= 10,
        "{} then {}",
        flip.at,
        again.at
    );
    assert!(again.changes.is_empty());

    dns.set("example.de", Behaviour::mx(OWN, 300));
    let revert = app.next_check("example.de").await;
    assert_eq!(revert.changes, vec![ChangeKind::Reverted]);
    assert_eq!(
        revert.window,
        Some((WindowEvent::Updated, WindowStatus::Closing))
    );
    let w = app.store().windows(None).unwrap().remove(0);
    assert_eq!(
        w.end,
        Some(revert.at + chrono::Duration::seconds(300)),
        "grace is the old TTL (300 s) as it is longer than the configured 0 s"
    );
    assert!(w.is_active(revert.at));

    let closed = loop {
        let ev = app.next_check("example.de").await;
        if ev.window.is_some() {
            break ev;
        }
        assert!(ev.fast_recheck, "still re-checking fast while closing");
    };
    assert_eq!(
        closed.window,
        Some((WindowEvent::Closed, WindowStatus::Closed))
    );
    assert!(closed.at >= revert.at + chrono::Duration::seconds(300));
    let w = app.store().windows(None).unwrap().remove(0);
    assert_eq!(w.status, WindowStatus::Closed);
    assert!(!w.is_active(closed.at));
    assert!(app.store().windows(Some(closed.at)).unwrap().is_empty());

    let outbox: Vec<String> = app.outbox_events();
    assert_eq!(outbox, ["window_opened", "window_closed"]);
    let after_close = app.next_check("example.de").await;
    assert!(!after_close.fast_recheck, "back to the regular schedule");
    app.stop().await;
}

#[tokio::test(start_paused = true)]
async fn servfail_and_dropped_queries_are_failures_not_changes() {
    let dns = TestDns::start().await;
    dns.set("example.de", Behaviour::mx(OWN, 300));
    let mut app = spawn_app(&format!("{}domains: [example.de]\n", base_yaml(&dns)));
    settle_in(&mut app, "example.de").await;

    dns.set("example.de", Behaviour::ServFail);
    let ev = app.next_check("example.de").await;
    assert_eq!(ev.observations[0].outcome, Outcome::ServFail);
    assert_eq!(ev.changes, vec![ChangeKind::ResolutionFailed]);
    assert!(ev.window.is_none());

    dns.set("example.de", Behaviour::Drop);
    let ev = app.next_check("example.de").await;
    assert_eq!(ev.observations[0].outcome, Outcome::Timeout);
    assert!(ev.changes.is_empty(), "still the same failure condition");

    dns.set("example.de", Behaviour::mx(OWN, 300));
    let ev = app.next_check("example.de").await;
    assert_eq!(ev.changes, vec![ChangeKind::ResolutionRecovered]);
    assert!(ev.window.is_none());

    let store = app.store();
    assert!(
        store.windows(None).unwrap().is_empty(),
        "a failure never opens an MX window"
    );
    let outcomes: Vec<Outcome> = store
        .history(&name("example.de"), None)
        .unwrap()
        .into_iter()
        .filter(|r| r.observation.upstream != "*")
        .map(|r| r.observation.outcome)
        .collect();
    assert_eq!(
        outcomes,
        [
            Outcome::Records,
            Outcome::ServFail,
            Outcome::Timeout,
            Outcome::Records
        ]
    );
    app.stop().await;
}

/// The next check of `domain` whose answer is believed: a departure from
/// the baseline is held (no change) until the other domains show that our
/// resolver is healthy. Returns the first held check and the believed one.
async fn believed(
    app: &mut App,
    domain: &str,
) -> (mxwatch::monitor::CheckEvent, mxwatch::monitor::CheckEvent) {
    let held = app.next_check(domain).await;
    assert_eq!(
        held.changes,
        Vec::<mxwatch::detect::ChangeKind>::new(),
        "held first: {held:?}"
    );
    assert!(held.fast_recheck, "a held answer is checked again soon");
    for _ in 0..30 {
        let ev = app.next_check(domain).await;
        if !ev.changes.is_empty() {
            assert!(
                ev.at - held.at <= chrono::Duration::minutes(3),
                "believed within three minutes: {}",
                ev.at - held.at
            );
            return (held, ev);
        }
    }
    panic!("{domain}: never believed");
}

#[tokio::test(start_paused = true)]
async fn nxdomain_null_mx_and_implicit_mx() {
    let dns = TestDns::start().await;
    let changing = ["gone.example", "nomail.example", "bare.example"];
    let stable: Vec<String> = (0..6).map(|i| format!("s{i}.example")).collect();
    for d in changing.iter().map(|d| d.to_string()).chain(stable.clone()) {
        dns.set(&d, Behaviour::mx(OWN, 300));
    }
    let mut app = spawn_app(&format!(
        "{}domains: [{}, {}]\n",
        base_yaml(&dns),
        changing.join(", "),
        stable.join(", ")
    ));
    for d in changing {
        app.next_check(d).await;
    }
    dns.set("gone.example", Behaviour::NxDomain);
    dns.set("nomail.example", Behaviour::NullMx);
    dns.set("bare.example", Behaviour::NoMx { with_a: true });

    // NXDOMAIN where there were records may be our resolver lying: held
    // first, believed once the six others resolve as before.
    let (held, ev) = believed(&mut app, "gone.example").await;
    assert_eq!(held.observations[0].outcome, Outcome::NxDomain);
    assert_eq!(ev.observations[0].outcome, Outcome::NxDomain);
    assert_eq!(ev.changes, vec![ChangeKind::Nxdomain]);
    assert_eq!(ev.window, Some((WindowEvent::Opened, WindowStatus::Open)));
    let w = app.store().windows(Some(ev.at)).unwrap();
    assert!(
        w[0].start < held.at,
        "the window starts where the old answer was last seen, before the hold"
    );

    let (_, ev) = believed(&mut app, "nomail.example").await;
    assert_eq!(ev.observations[0].outcome, Outcome::NullMx);
    assert_eq!(ev.changes, vec![ChangeKind::NullMx]);

    let (_, ev) = believed(&mut app, "bare.example").await;
    assert_eq!(ev.observations[0].outcome, Outcome::NoMx);
    assert!(
        ev.observations[0].implicit_mx,
        "RFC 5321 implicit MX: the name has an A record"
    );
    assert_eq!(ev.changes, vec![ChangeKind::MxRemoved]);
    assert_eq!(app.store().windows(Some(ev.at)).unwrap().len(), 3);
    app.stop().await;
}

#[tokio::test(start_paused = true)]
async fn flapping_makes_one_window_with_a_count_and_one_alert() {
    let dns = TestDns::start().await;
    dns.set("flappy.example", Behaviour::mx(OWN, 60));
    let mut app = spawn_app(&format!("{}domains: [flappy.example]\n", base_yaml(&dns)));
    settle_in(&mut app, "flappy.example").await;
    for i in 0..8 {
        let list = if i % 2 == 0 { ICLOUD } else { OWN };
        dns.set("flappy.example", Behaviour::mx(list, 60));
        app.next_check("flappy.example").await;
    }
    let windows = app.store().windows(None).unwrap();
    assert_eq!(windows.len(), 1);
    assert_eq!(
        windows[0].flaps, 3,
        "four excursions: one opens, three reopen"
    );
    let opened = app
        .store()
        .outbox()
        .unwrap()
        .into_iter()
        .filter(|o| o.event == "window_opened")
        .count();
    assert_eq!(opened, 1, "no alert storm");
    app.stop().await;
}

#[tokio::test(start_paused = true)]
async fn upstreams_are_stored_separately_and_disagreement_is_recorded() {
    let fresh = TestDns::start().await;
    let stale = TestDns::start().await;
    fresh.set("example.de", Behaviour::mx(OWN, 300));
    stale.set("example.de", Behaviour::mx(OWN, 300));
    let yaml = base_yaml(&fresh).replace(
        &format!("upstreams: ['{}']", fresh.addr),
        &format!(
            "upstreams: ['authoritative@{}', '{}']",
            fresh.addr, stale.addr
        ),
    );
    let mut app = spawn_app(&format!("{yaml}domains: [example.de]\n"));
    let ev = app.next_check("example.de").await;
    assert_eq!(ev.observations.len(), 2);
    assert_eq!(
        ev.observations[0].upstream,
        format!("authoritative@{}", fresh.addr)
    );
    assert_eq!(
        ev.observations[0].outcome,
        Outcome::Records,
        "{:?}",
        ev.observations[0]
    );
    assert_eq!(ev.observations[1].outcome, Outcome::Records);

    // The authoritative server moves first; the other still answers the old MX.
    fresh.set("example.de", Behaviour::mx(ICLOUD, 300));
    let ev = app.next_check("example.de").await;
    assert!(
        ev.changes.contains(&ChangeKind::UpstreamDisagreement),
        "{:?}",
        ev.changes
    );
    assert!(
        ev.changes.contains(&ChangeKind::ProviderChanged),
        "a tie goes to the first upstream listed: the authoritative one"
    );
    stale.set("example.de", Behaviour::mx(ICLOUD, 300));
    let ev = app.next_check("example.de").await;
    assert_eq!(ev.changes, vec![ChangeKind::UpstreamsAgree]);

    let runs = app.store().history(&name("example.de"), None).unwrap();
    let upstreams: std::collections::BTreeSet<String> = runs
        .iter()
        .map(|r| r.observation.upstream.clone())
        .collect();
    assert_eq!(
        upstreams.len(),
        3,
        "two upstreams and the consensus: {upstreams:?}"
    );
    app.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_restart_keeps_history_and_open_windows() {
    let dns = TestDns::start().await;
    dns.set("example.de", Behaviour::mx(OWN, 300));
    let mut app = spawn_app(&format!("{}domains: [example.de]\n", base_yaml(&dns)));
    settle_in(&mut app, "example.de").await;
    dns.set("example.de", Behaviour::mx(ICLOUD, 300));
    let flip = app.next_check("example.de").await;
    assert_eq!(flip.window.unwrap().0, WindowEvent::Opened);
    // While it runs, no second monitor (daemon or sweep) takes the database.
    let clock: std::sync::Arc<dyn mxwatch::clock::Clock> =
        std::sync::Arc::new(mxwatch::clock::TokioClock::starting_at(chrono::Utc::now()));
    for second in [
        mxwatch::daemon::Daemon::start(&app.config, clock.clone(), std::future::pending::<()>())
            .map(|_| ()),
        mxwatch::daemon::open_for_sweep(&app.config, clock.clone()).map(|_| ()),
    ] {
        let e = format!("{:#}", second.expect_err("a second monitor is refused"));
        assert!(e.contains("monitored by another mxwatch process"), "{e}");
        assert!(e.contains("test.db.lock"), "{e}");
    }
    let (config, dir) = app.stop().await;
    let before = Store::open(&config.database)
        .unwrap()
        .windows(None)
        .unwrap();

    let mut app = start(config, dir);
    let ev = app.next_check("example.de").await;
    assert!(
        ev.changes.is_empty(),
        "same answer as before the restart: {:?}",
        ev.changes
    );
    assert!(ev.window.is_none());
    assert!(ev.fast_recheck, "the open window survived the restart");

    dns.set("example.de", Behaviour::mx(OWN, 300));
    let ev = app.next_check("example.de").await;
    assert_eq!(ev.changes, vec![ChangeKind::Reverted]);
    let after = app.store().windows(None).unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].id, before[0].id, "the same window closes");
    assert_eq!(after[0].status, WindowStatus::Closing);
    let runs = app.store().history(&name("example.de"), None).unwrap();
    assert!(
        runs.iter()
            .any(|r| r.observation.upstream == "*" && r.checks >= 2)
    );
    app.stop().await;
}

#[tokio::test(start_paused = true)]
async fn when_every_domain_fails_at_once_it_is_our_resolver() {
    let dns = TestDns::start().await;
    let names = ["a.example", "b.example", "c.example", "d.example"];
    for d in names {
        dns.set(d, Behaviour::mx(OWN, 300));
    }
    let mut app = spawn_app(&format!(
        "{}domains: [{}]\n",
        base_yaml(&dns),
        names.join(", ")
    ));
    for d in names {
        app.next_check(d).await;
    }
    for d in names {
        dns.set(d, Behaviour::ServFail);
    }
    // The successful checks age out of the detector's ten-minute view, and
    // once 80 % of recent checks fail, it is our resolver.
    let mut rounds = 0;
    let windows = loop {
        rounds += 1;
        assert!(
            rounds <= 12,
            "no outage detected after {rounds} rounds of failures"
        );
        for d in names {
            app.next_check(d).await;
        }
        let windows = app.store().windows(None).unwrap();
        if windows.iter().any(|w| w.kind == "resolver_outage") {
            break windows;
        }
    };
    assert!(
        rounds <= 2,
        "once every domain's latest check fails (80 % at least), it is our resolver: {rounds} rounds"
    );
    let outage = windows
        .iter()
        .find(|w| w.kind == "resolver_outage")
        .unwrap();
    assert!(outage.domain.is_none());
    assert!(outage.is_active(outage.detected_at));
    let events: Vec<String> = app.outbox_events();
    assert_eq!(events, ["resolver_outage_started"]);

    // The daemon restarts in the middle of the outage: the new process
    // takes the open window over and ends it once resolution works.
    let (config, dir) = app.stop().await;
    let mut app = start(config, dir);
    for d in names {
        dns.set(d, Behaviour::mx(OWN, 300));
    }
    let mut rounds = 0;
    loop {
        rounds += 1;
        assert!(rounds <= 12, "outage never ended");
        for d in names {
            app.next_check(d).await;
        }
        if app
            .store()
            .windows(None)
            .unwrap()
            .iter()
            .all(|w| w.status == WindowStatus::Closed)
        {
            break;
        }
    }
    let after = app.store().windows(None).unwrap();
    assert_eq!(
        after.iter().map(|w| w.kind.as_str()).collect::<Vec<_>>(),
        ["resolver_outage"],
        "no MX change for anyone, before or after the recovery"
    );
    assert_eq!(
        app.store()
            .changes(None, None)
            .unwrap()
            .iter()
            .filter(|c| c.change.kind != ChangeKind::ResolutionFailed
                && c.change.kind != ChangeKind::ResolutionRecovered)
            .count(),
        0
    );
    app.stop().await;
}

use mxwatch::store::Store;

/// A reload (what SIGHUP does): added domains start being watched, removed
/// ones stop; history stays. A removed domain whose window is open is
/// watched until its own DNS closes the window (issue 19, item 10: a window
/// never closes for a reason that says nothing about the domain's DNS),
/// then let go at the next change of the watch list.
#[tokio::test(start_paused = true)]
async fn reload_adds_and_removes_domains_keeps_history_and_watches_an_open_window_to_its_end() {
    let dns = TestDns::start().await;
    dns.set("example.de", Behaviour::mx(OWN, 300));
    dns.set("example.org", Behaviour::mx(&[(10, "mx.example.org")], 300));
    let mut app = spawn_app(&format!("{}domains: [example.de]\n", base_yaml(&dns)));
    settle_in(&mut app, "example.de").await;
    dns.set("example.de", Behaviour::mx(ICLOUD, 300));
    let flip = app.next_check("example.de").await;
    assert_eq!(flip.window, Some((WindowEvent::Opened, WindowStatus::Open)));

    let new = crate::write_config(
        &app.dir,
        &format!("{}domains: [example.org]\n", base_yaml(&dns)),
    );
    app.daemon.as_ref().unwrap().reload(&new).await;
    // example.org is checked from now on...
    let org = app.next_check("example.org").await;
    assert_eq!(org.observations[0].outcome, Outcome::Records);
    // ...and example.de still, while its window is open.
    let still = app.next_check("example.de").await;
    assert!(still.at > flip.at);
    let store = app.store();
    assert!(!store.history(&name("example.de"), None).unwrap().is_empty());
    let open = store.windows(Some(still.at)).unwrap();
    assert_eq!(open.len(), 1, "{open:?}");
    // Its DNS ends the incident: the window closes for that reason (after
    // the revert's grace, the old records' TTL).
    dns.set("example.de", Behaviour::mx(OWN, 300));
    loop {
        let ev = app.next_check("example.de").await;
        if ev.window.is_some_and(|(_, s)| s == WindowStatus::Closed) {
            break;
        }
    }
    let windows = app.store().windows(None).unwrap();
    let w = windows
        .iter()
        .find(|w| w.domain.as_deref() == Some("example.de"))
        .unwrap();
    assert_ne!(
        w.close_reason,
        Some(mxwatch::detect::CloseReason::Unwatched),
        "{windows:?}"
    );
    assert!(w.end.is_some(), "{windows:?}");
    // The next change of the watch list lets it go.
    app.daemon.as_ref().unwrap().reload(&new).await;
    app.pending.clear();
    for _ in 0..4 {
        let ev = app.next_check("example.org").await;
        assert_eq!(ev.domain.as_str(), "example.org");
    }
    assert!(
        app.pending
            .iter()
            .all(|ev| ev.domain.as_str() != "example.de"),
        "example.de was checked after its window closed and it was let go"
    );
    // Watched again later: it starts afresh, no stale window.
    let back = crate::write_config(
        &app.dir,
        &format!("{}domains: [example.de, example.org]\n", base_yaml(&dns)),
    );
    app.daemon.as_ref().unwrap().reload(&back).await;
    let ev = app.next_check("example.de").await;
    assert!(ev.window.is_none() && ev.changes.is_empty(), "{ev:?}");
    app.stop().await;
}
