//! `mxwatch windows close ID --reason TEXT`: an operator withdraws a
//! window known to be false; the verdicts it made are judged again without
//! it, recorded, and announced (issue 23).

use chrono::TimeZone;
use mxwatch::store::Store;
use mxwatch::verdict::Verdict;

use crate::cli::{mxwatch, stderr};

/// example.de's MX pointed at iCloud from 09:00 to 13:00, and somewhere
/// else from 09:15 to 09:45 (passive DNS: two windows); example.org never
/// moved.
const FLIP: &str = r#"{"obj":{"count":51234,"time_first":1398000000,"time_last":1619500000,"rrname":"example.de.","rrtype":"MX","rdata":["10 mx00.example.de."]}}
{"obj":{"count":12,"time_first":1619427600,"time_last":1619442000,"rrname":"example.de.","rrtype":"MX","rdata":["10 mx01.mail.icloud.com."]}}
{"obj":{"count":3,"time_first":1619428500,"time_last":1619430300,"rrname":"example.de.","rrtype":"MX","rdata":["10 mx.other.example."]}}
{"obj":{"count":9000,"time_first":1398000000,"time_last":1619440000,"rrname":"example.org.","rrtype":"MX","rdata":["10 mx.example.org."]}}
"#;

fn verdicts(db: &std::path::Path) -> Vec<(String, Option<Verdict>)> {
    Store::open(db)
        .unwrap()
        .stored_bounces(None, None, None)
        .unwrap()
        .into_iter()
        .map(|s| (s.bounce.recipient, s.verdict))
        .collect()
}

/// `windows close ID --reason REASON` on `w.db` in `d`.
fn close(d: &std::path::Path, id: &str, reason: &str) -> std::process::Output {
    mxwatch(
        d,
        &[
            "--database",
            "w.db",
            "windows",
            "close",
            id,
            "--reason",
            reason,
        ],
    )
}

#[test]
fn a_withdrawn_window_excuses_nothing_and_its_verdicts_turn_to_suppress() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("flip.jsonl"), FLIP).unwrap();
    let out = crate::passive::import_dnsdb(d, "w.db", "flip.jsonl");
    assert!(out.status.success(), "{}", stderr(&out));
    let at = |h, m| chrono::Utc.with_ymd_and_hms(2021, 4, 26, h, m, 0).unwrap();
    let lines = [
        // Inside the flip, refused by iCloud: excused by the window.
        crate::unknown_user("kim@example.de", at(11, 0), "mx01.mail.icloud.com"),
        crate::unknown_user("ann@example.de", at(12, 0), "mx01.mail.icloud.com"),
        // After it, from the domain's own host: suppressed all along.
        crate::unknown_user("bob@example.de", at(15, 0), "mx00.example.de"),
        // Another domain: nothing to do with the window.
        crate::unknown_user("eve@example.org", at(11, 0), "mx.example.org"),
        // A typo domain that does not exist, on a first day: suppressed
        // before and after.
        crate::unknown_user("ida@exampel.de", at(11, 45), "mx.exampel.de"),
        // Inside both windows: excused by the other one too.
        crate::unknown_user("zed@example.de", at(10, 0), "mx.elsewhere.example"),
    ];
    std::fs::write(d.join("b.jsonl"), lines.join("\n") + "\n").unwrap();
    let out = mxwatch(d, &["--database", "w.db", "bounces", "ingest", "b.jsonl"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let db = d.join("w.db");
    let before = verdicts(&db);
    assert_eq!(
        before,
        [
            ("zed@example.de".into(), Some(Verdict::Transient)),
            ("kim@example.de".into(), Some(Verdict::Transient)),
            ("eve@example.org".into(), Some(Verdict::Suppress)),
            ("ida@exampel.de".into(), Some(Verdict::Suppress)),
            ("ann@example.de".into(), Some(Verdict::Transient)),
            ("bob@example.de".into(), Some(Verdict::Suppress)),
        ]
    );
    // The iCloud flip's window (the first imported).
    let windows = Store::open(&db).unwrap().windows(None).unwrap();
    assert_eq!(windows.len(), 2, "{windows:?}");
    let window = windows.iter().min_by_key(|w| w.id).unwrap().clone();
    assert_eq!(window.domain.as_deref(), Some("example.de"));

    // Usage errors exit 2 and change nothing.
    let id = format!("#{}", window.id);
    for (id, reason) in [
        (id.as_str(), "  "),
        ("twelve", "x"),
        (id.as_str(), "two\nlines"),
    ] {
        let out = close(d, id, reason);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{id} {reason:?}: {}",
            stderr(&out)
        );
    }
    let out = close(d, "999", "x");
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no window #999"), "{}", stderr(&out));
    assert_eq!(verdicts(&db), before);

    let reason = "the move to iCloud was planned; these users are gone";
    let out = close(d, &id, reason);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("withdrawn: {reason}")), "{text}");
    assert!(text.contains("now suppress: kim@example.de"), "{text}");
    assert!(text.contains("now suppress: ann@example.de"), "{text}");
    assert!(
        stderr(&out).contains("2 verdicts turned to suppress"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        verdicts(&db),
        [
            ("zed@example.de".into(), Some(Verdict::Transient)),
            ("kim@example.de".into(), Some(Verdict::Suppress)),
            ("eve@example.org".into(), Some(Verdict::Suppress)),
            ("ida@exampel.de".into(), Some(Verdict::Suppress)),
            ("ann@example.de".into(), Some(Verdict::Suppress)),
            ("bob@example.de".into(), Some(Verdict::Suppress)),
        ]
    );
    // A verdict asked now finds no window either.
    let out = mxwatch(
        d,
        &[
            "--database",
            "w.db",
            "verdict",
            "kim@example.de",
            "--at",
            "2021-04-26T11:00:00Z",
            "--status",
            "5.1.1",
            "--remote-mta",
            "mx01.mail.icloud.com",
            "--json",
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"], "suppress", "{v}");
    // Recorded with its reason, and announced once.
    let store = Store::open(&db).unwrap();
    let w = store.window(window.id).unwrap().unwrap();
    assert!(
        w.is_withdrawn() && !w.is_active(chrono::Utc::now()),
        "{w:?}"
    );
    assert_eq!(w.close_note.as_deref(), Some(reason));
    let events: Vec<_> = store
        .outbox()
        .unwrap()
        .into_iter()
        .filter(|o| o.event == mxwatch::event::EventType::WindowWithdrawn)
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].summary.contains(reason), "{events:?}");
    assert!(
        events[0]
            .summary
            .contains("2 bounces now suppress: kim@example.de, ann@example.de"),
        "{events:?}"
    );
    // Again: said, nothing changes, nothing announced twice.
    let out = close(d, &id, "again");
    assert!(out.status.success());
    assert!(
        stderr(&out).contains("withdrawn before"),
        "{}",
        stderr(&out)
    );
    let withdrawn = store
        .outbox()
        .unwrap()
        .iter()
        .filter(|o| o.event == mxwatch::event::EventType::WindowWithdrawn)
        .count();
    assert_eq!(withdrawn, 1);
    // The window list says why it closed.
    let out = mxwatch(d, &["--database", "w.db", "windows", "--json"]);
    let rows = crate::cli::json_lines(&out);
    let w = rows.iter().find(|w| w["id"] == window.id).unwrap();
    assert_eq!(w["close_reason"], "withdrawn");
    assert_eq!(w["close_note"], reason);
}

/// A daemon whose detector still holds a window open when it is
/// withdrawn: when the DNS closes it, the withdrawn row stays as it is and
/// no `window_closed` is announced for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_detector_leaves_a_withdrawn_window_alone() {
    use mxwatch::dns::Observation;
    use mxwatch::domain::{Mx, MxHost};
    let dns = crate::TestDns::start().await;
    let yaml = format!("{}domains: [example.de]\n", crate::base_yaml(&dns))
        .replace("schedule: '* * * * *'", "schedule: '0 0 1 1 *'");
    let app = crate::spawn_app(&yaml);
    let monitor = &app.daemon.as_ref().unwrap().monitor;
    let de = crate::name("example.de");
    let answer = |host: &str| {
        let mx = vec![Mx {
            preference: 10,
            exchange: MxHost::parse(host).unwrap(),
        }];
        vec![Observation::from_records("upstream", mx, Some(300))]
    };
    let at = |m| chrono::Utc.with_ymd_and_hms(2021, 4, 26, 11, m, 0).unwrap();
    monitor
        .record(&de, at(0), answer("mx00.example.de"))
        .await
        .unwrap();
    let flip = monitor
        .record(&de, at(10), answer("mx01.mail.icloud.com"))
        .await
        .unwrap();
    assert!(flip.window.is_some(), "{flip:?}");
    let db = app.config.database.clone();
    let id = Store::open(&db).unwrap().windows(None).unwrap()[0]
        .id
        .to_string();
    let dir = db.parent().unwrap().to_path_buf();
    let out = crate::cli::mxwatch_async(
        &dir,
        &[
            "--database",
            "test.db",
            "windows",
            "close",
            &id,
            "--reason",
            "planned",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    // The DNS goes back: the detector closes the window it still holds.
    let back = monitor
        .record(&de, at(20), answer("mx00.example.de"))
        .await
        .unwrap();
    let is_closed = |ev: &mxwatch::monitor::CheckEvent| {
        ev.window
            .as_ref()
            .is_some_and(|(e, _)| *e == mxwatch::detect::WindowEvent::Closed)
    };
    let mut closed = is_closed(&back);
    for m in 21..40 {
        if closed {
            break;
        }
        let ev = monitor
            .record(&de, at(m), answer("mx00.example.de"))
            .await
            .unwrap();
        closed = is_closed(&ev);
    }
    assert!(closed, "the detector closed the window it held");
    let store = Store::open(&db).unwrap();
    let w = store.window(id.parse().unwrap()).unwrap().unwrap();
    assert!(w.is_withdrawn(), "{w:?}");
    assert_eq!(w.close_note.as_deref(), Some("planned"));
    let closed_events = store
        .outbox()
        .unwrap()
        .iter()
        .filter(|o| o.event == mxwatch::event::EventType::WindowClosed)
        .count();
    assert_eq!(closed_events, 0);
    app.stop().await;
}

/// Withdrawn while no daemon runs, mid-incident: the restarted detector
/// carries its window on (as a running one does) without reopening it or
/// announcing anything; the move it excused stays unexcused until it
/// settles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_withdrawn_between_runs_stays_withdrawn_after_a_restart() {
    use mxwatch::dns::Observation;
    use mxwatch::domain::{Mx, MxHost};
    let dns = crate::TestDns::start().await;
    let yaml = format!("{}domains: [example.de]\n", crate::base_yaml(&dns))
        .replace("schedule: '* * * * *'", "schedule: '0 0 1 1 *'");
    let app = crate::spawn_app(&yaml);
    let de = crate::name("example.de");
    let answer = |host: &str| {
        let mx = vec![Mx {
            preference: 10,
            exchange: MxHost::parse(host).unwrap(),
        }];
        vec![Observation::from_records("upstream", mx, Some(300))]
    };
    let at = |h, m| chrono::Utc.with_ymd_and_hms(2021, 4, 26, h, m, 0).unwrap();
    let monitor = app.daemon.as_ref().unwrap().monitor.clone();
    monitor
        .record(&de, at(11, 0), answer("mx00.example.de"))
        .await
        .unwrap();
    let flip = monitor
        .record(&de, at(11, 10), answer("mx01.mail.icloud.com"))
        .await
        .unwrap();
    assert!(flip.window.is_some(), "{flip:?}");
    drop(monitor);
    let (config, dir) = app.stop().await;
    let db = config.database.clone();
    let id = Store::open(&db).unwrap().windows(None).unwrap()[0].id;
    let id_text = id.to_string();
    let out = mxwatch(
        db.parent().unwrap(),
        &[
            "--database",
            "test.db",
            "windows",
            "close",
            &id_text,
            "--reason",
            "planned",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));

    let app = crate::start(config, dir);
    let monitor = app.daemon.as_ref().unwrap().monitor.clone();
    // Still on iCloud, then back: no window opens or closes in the open.
    for (h, m, host) in [
        (11, 20, "mx01.mail.icloud.com"),
        (11, 30, "mx00.example.de"),
    ] {
        monitor.record(&de, at(h, m), answer(host)).await.unwrap();
    }
    drop(monitor);
    let store = Store::open(&db).unwrap();
    let windows = store.windows(None).unwrap();
    assert_eq!(windows.len(), 1, "{windows:?}");
    assert!(windows[0].is_withdrawn(), "{windows:?}");
    let events: Vec<_> = store.outbox().unwrap().iter().map(|o| o.event).collect();
    assert_eq!(
        events,
        [
            mxwatch::event::EventType::WindowOpened,
            mxwatch::event::EventType::WindowWithdrawn
        ]
    );
    // A bounce refused by iCloud meanwhile is not excused.
    let out = mxwatch(
        db.parent().unwrap(),
        &[
            "--database",
            "test.db",
            "verdict",
            "kim@example.de",
            "--at",
            "2021-04-26T11:20:00Z",
            "--status",
            "5.1.1",
            "--remote-mta",
            "mx01.mail.icloud.com",
            "--json",
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["verdict"], "suppress", "{v}");
    app.stop().await;
}
