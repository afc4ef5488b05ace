//! Verdicts that stay right through restarts, crashes and a resolver that
//! lies: every window an earlier process opened is closed by fresh
//! evidence, and replay gives the daemon's answers.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use serde_json::Value;

use crate::cli::{json_lines, mxwatch_async, stderr};
use crate::service::{free_port, start, wait_healthy};
use crate::{Behaviour, TOKEN, TestDns, history_line, unknown_user};

const OWN: &[(u16, &str)] = &[(10, "mx00.example.de")];
const ICLOUD: &[(u16, &str)] = &[(10, "mx01.mail.icloud.com")];
const OTHERS: [&str; 4] = ["a.example", "b.example", "c.example", "d.example"];

async fn ok(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    let out = mxwatch_async(dir, args).await;
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    out
}

/// The verdict on an unknown user at `at`, from the command line.
async fn verdict(dir: &std::path::Path, who: &str, at: chrono::DateTime<Utc>) -> Value {
    let at = mxwatch::report::time(at);
    let out = ok(
        dir,
        &[
            "verdict",
            who,
            "--at",
            &at,
            "--status",
            "5.1.1",
            "--reply-code",
            "550",
            "--json",
        ],
    )
    .await;
    json_lines(&out).remove(0)
}

async fn active_windows(dir: &std::path::Path) -> Vec<Value> {
    json_lines(&ok(dir, &["windows", "--active", "--json"]).await)
}

/// An MX window, a resolver outage and an anomaly, all open when the
/// daemon dies by `kill -9` (and the outage and MX window opened by a
/// `run --once` that exited, the anomaly by a `bounces ingest` that
/// exited): once resolution works and the bursts are over, the next
/// processes close every one, and a hard bounce afterwards is `suppress`
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_left_open_by_exited_or_killed_processes_close_on_fresh_evidence() {
    let dns = TestDns::start().await;
    // TTL 1: the revert's grace is a second, not five minutes.
    dns.set("example.de", Behaviour::mx(OWN, 1));
    for d in OTHERS {
        dns.set(d, Behaviour::mx(&[(10, "mx.example.net")], 1));
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    std::fs::write(
        dir.path().join("watchlist.yaml"),
        format!(
            "upstreams: ['{}']\ngrace: 0s\nschedule: '0 0 1 1 *'\nlisten: '127.0.0.1:{port}'\n\
             api_token_file: token\ndomains: [example.de, {}]\n",
            dns.addr,
            OTHERS.join(", ")
        ),
    )
    .unwrap();
    let d = dir.path();
    ok(d, &["run", "--once"]).await;

    // example.de flips to iCloud (held at first, believed on the second
    // look, the others being fine); then our resolver fails for the rest.
    dns.set("example.de", Behaviour::mx(ICLOUD, 1));
    ok(d, &["run", "--once"]).await;
    for name in OTHERS {
        dns.set(name, Behaviour::ServFail);
    }
    // Nothing answered: the sweep learnt nothing, and says so in its exit
    // status (issue 23).
    let out = mxwatch_async(d, &["run", "--once"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("the sweep learnt nothing"));
    // An Apple-like burst, ingested by a process of its own.
    let t0 = Utc.with_ymd_and_hms(2021, 4, 26, 11, 0, 0).unwrap();
    let mut lines = vec![history_line(t0)];
    for i in 0..25 {
        let who = format!("user{i}@{}", ["icloud.com", "me.com", "mac.com"][i % 3]);
        lines.push(unknown_user(
            &who,
            t0 + chrono::Duration::minutes(i as i64),
            "mx01.mail.icloud.com",
        ));
    }
    std::fs::write(d.join("burst.jsonl"), lines.join("\n")).unwrap();
    ok(d, &["bounces", "ingest", "burst.jsonl"]).await;
    let kinds: Vec<String> = active_windows(d)
        .await
        .iter()
        .map(|w| w["kind"].as_str().unwrap().to_string())
        .collect();
    let mut sorted = kinds.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        ["anomaly", "mx_change", "resolver_outage"],
        "{kinds:?}"
    );
    let during = verdict(d, "kim@a.example", Utc::now()).await;
    assert_eq!(during["verdict"], "transient", "{during}");

    // A daemon takes over the database and dies by kill -9.
    let mut child = start(d);
    wait_healthy(&format!("http://127.0.0.1:{port}")).await;
    child.kill().unwrap();
    child.wait().unwrap();

    // Resolution works again; example.de is back.
    dns.set("example.de", Behaviour::mx(OWN, 1));
    for name in OTHERS {
        dns.set(name, Behaviour::mx(&[(10, "mx.example.net")], 1));
    }
    ok(d, &["run", "--once"]).await; // the outage ends; example.de reverts (1 s grace)
    tokio::time::sleep(Duration::from_millis(1100)).await;
    ok(d, &["run", "--once"]).await; // the grace is over: its window closes
    // A later bounce: the burst is long over.
    let late = unknown_user(
        "late@icloud.com",
        t0 + chrono::Duration::hours(2),
        "mx01.mail.icloud.com",
    );
    std::fs::write(d.join("late.jsonl"), late).unwrap();
    ok(d, &["bounces", "ingest", "late.jsonl"]).await;

    assert_eq!(active_windows(d).await, Vec::<Value>::new());
    let after = Utc::now();
    for who in ["kim@a.example", "kim@example.de"] {
        let v = verdict(d, who, after).await;
        assert_eq!(v["verdict"], "suppress", "{v}");
    }
    let v = verdict(d, "late@icloud.com", t0 + chrono::Duration::hours(2)).await;
    assert_eq!(v["verdict"], "suppress", "{v}");
    let stored = json_lines(&ok(d, &["bounces", "list", "--json", "--domain", "icloud.com"]).await);
    assert!(!stored.is_empty());
}

/// A daemon on the paused clock watching `names`, with the API and a token.
fn daemon_watching(dns: &TestDns, names: &[String]) -> (crate::App, String) {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let yaml = format!(
        "{}api_token_file: '{}'\ndomains: [{}]\n",
        crate::base_yaml(dns),
        token_file.display(),
        names.join(", ")
    );
    let config = crate::write_config(&dir, &yaml);
    let app = crate::start(config, std::sync::Arc::new(dir));
    let addr = app.daemon.as_ref().unwrap().api_addr.unwrap();
    (app, format!("http://{addr}"))
}

/// The daemon's clock: `crate::start`'s origin, moving with tokio's.
fn clock_from(started: tokio::time::Instant) -> impl Fn() -> chrono::DateTime<Utc> {
    move || {
        Utc.with_ymd_and_hms(2021, 4, 26, 11, 0, 0).unwrap()
            + chrono::Duration::from_std(tokio::time::Instant::now() - started).unwrap()
    }
}

async fn minutes(n: u64) {
    tokio::time::sleep(Duration::from_secs(60 * n)).await;
}

/// "Our own resolver down for 40 minutes across 40 domains, then a SERVFAIL
/// blip on one domain": `transient` in the outage, `suppress` outside it,
/// live and in replay, bounce by bounce, when each arrived and in hindsight.
#[tokio::test(start_paused = true)]
async fn replay_gives_the_daemons_verdicts_through_an_outage_of_our_resolver() {
    let dns = TestDns::start().await;
    let names: Vec<String> = (0..40).map(|i| format!("d{i}.example")).collect();
    let own = |n: &str| Behaviour::mx(&[(10, &format!("mx.{n}"))], 300);
    for n in &names {
        dns.set(n, own(n));
    }
    let now = clock_from(tokio::time::Instant::now());
    let (app, base) = daemon_watching(&dns, &names);
    let mut checks = app.daemon.as_ref().unwrap().monitor.subscribe();
    let mut recorded: Vec<mxwatch::monitor::CheckEvent> = Vec::new();
    let drain = |rx: &mut tokio::sync::broadcast::Receiver<mxwatch::monitor::CheckEvent>,
                 out: &mut Vec<mxwatch::monitor::CheckEvent>| {
        while let Ok(ev) = rx.try_recv() {
            out.push(ev);
        }
    };
    let mut sent: Vec<(String, Value)> = Vec::new();
    // A day of feed history, so that nothing here is judged in warm-up.
    crate::post_bounces(&base, history_line(now())).await;
    let bounce = async |who: &str| -> (String, Value) {
        let domain = who.split_once('@').unwrap().1;
        let line = unknown_user(who, now(), &format!("mx.{domain}"));
        let answer = crate::post_bounces(&base, line.clone()).await;
        (line, answer["verdicts"][0].clone())
    };

    minutes(3).await;
    sent.push(bounce("before@d1.example").await);
    minutes(2).await;
    drain(&mut checks, &mut recorded);
    for n in &names {
        dns.set(n, Behaviour::ServFail);
    }
    // 20 s in, most domains have not been checked since: no outage yet.
    for (secs, who) in [
        (20, "early@d2.example"),
        (900, "mid@d3.example"),
        (1200, "late@d4.example"),
    ] {
        tokio::time::sleep(Duration::from_secs(secs)).await;
        drain(&mut checks, &mut recorded);
        sent.push(bounce(who).await);
    }
    tokio::time::sleep(Duration::from_secs(280)).await; // 40 minutes after it began
    for n in &names {
        dns.set(n, own(n));
    }
    minutes(20).await;
    drain(&mut checks, &mut recorded);
    sent.push(bounce("after@d5.example").await);
    // A blip: one domain fails for a check or two.
    dns.set("d0.example", Behaviour::ServFail);
    minutes(1).await;
    sent.push(bounce("blip@d0.example").await);
    dns.set("d0.example", own("d0.example"));
    minutes(2).await;
    drain(&mut checks, &mut recorded);

    let live: Vec<&str> = sent
        .iter()
        .map(|(_, v)| v["verdict"].as_str().unwrap())
        .collect();
    assert_eq!(
        live,
        [
            "suppress",
            "suppress",
            "transient",
            "transient",
            "suppress",
            "suppress"
        ],
        "answered when each arrived: the outage is recognised after a few minutes"
    );
    let store = app.store();
    let windows = store.windows(None).unwrap();
    assert_eq!(
        windows.iter().map(|w| w.kind.as_str()).collect::<Vec<_>>(),
        ["resolver_outage"],
        "one global window, no per-domain ones: {windows:?}"
    );
    let outage = &windows[0];
    assert!(outage.end.is_some(), "it ended once resolution worked");
    let stored: Vec<String> = store
        .stored_bounces(None, None, Some(mxwatch::bounce::Kind::UserUnknown))
        .unwrap()
        .into_iter()
        .map(|b| b.verdict.unwrap().to_string())
        .collect();
    assert_eq!(
        stored,
        [
            "suppress",
            "transient",
            "transient",
            "transient",
            "suppress",
            "suppress"
        ],
        "in hindsight the early one in the outage is reinstated"
    );
    let events = app.outbox_events();
    assert_eq!(
        events,
        [
            "resolver_outage_started",
            "reinstatements",
            "resolver_outage_ended"
        ]
    );

    // The same observations and bounces, replayed.
    let observations: Vec<mxwatch::replay::Recorded> = recorded
        .iter()
        .flat_map(|ev| {
            ev.observations.iter().map(|o| mxwatch::replay::Recorded {
                domain: ev.domain.clone(),
                at: ev.at,
                observation: o.clone(),
            })
        })
        .collect();
    let bounces: Vec<mxwatch::bounce::Bounce> = std::iter::once(history_line(
        Utc.with_ymd_and_hms(2021, 4, 26, 11, 0, 0).unwrap(),
    ))
    .chain(sent.iter().map(|(line, _)| line.clone()))
    .map(|l| serde_json::from_str(&l).unwrap())
    .collect();
    let config = app.config.clone();
    let (out, _) = mxwatch::replay::replay(&config, &observations, &bounces, &[], &[])
        .await
        .unwrap();
    let replay_initial: Vec<&str> = out[1..]
        .iter()
        .map(|r| r.initial.verdict.as_str())
        .collect();
    let replay_final: Vec<&str> = out[1..]
        .iter()
        .map(|r| r.final_judgement.verdict.as_str())
        .collect();
    assert_eq!(replay_initial, live, "replay answers as the daemon did");
    assert_eq!(replay_final, stored, "and holds what the daemon holds");
    app.stop().await;
}

/// A resolver that lies (NXDOMAIN for every name, or one identical answer
/// for every name, as captive portals and broken forwarders do) is our
/// fault, not the domains': one global window and one alert, no per-domain
/// change, no baseline learnt from it; bounces in it are `transient`, and
/// once the resolver tells the truth again nothing has changed.
#[tokio::test(start_paused = true)]
async fn a_resolver_that_lies_is_an_outage_not_thirteen_changes() {
    for lie in [
        Behaviour::NxDomain,
        Behaviour::mx(&[(10, "mx.portal.example")], 60),
    ] {
        let dns = TestDns::start().await;
        let names: Vec<String> = (0..13).map(|i| format!("d{i}.example")).collect();
        let own = |n: &str| Behaviour::mx(&[(10, &format!("mx.{n}"))], 300);
        for n in &names {
            dns.set(n, own(n));
        }
        let now = clock_from(tokio::time::Instant::now());
        let (app, base) = daemon_watching(&dns, &names);
        crate::post_bounces(&base, history_line(now())).await;
        minutes(3).await;
        for n in &names {
            dns.set(n, lie.clone());
        }
        minutes(15).await;
        let during = crate::post_bounces(
            &base,
            unknown_user("kim@d3.example", now(), "mx.d3.example"),
        )
        .await;
        assert_eq!(
            during["verdicts"][0]["verdict"], "transient",
            "{lie:?}: {during}"
        );
        for n in &names {
            dns.set(n, own(n));
        }
        minutes(20).await;
        let after = crate::post_bounces(
            &base,
            unknown_user("kim@d4.example", now(), "mx.d4.example"),
        )
        .await;
        assert_eq!(
            after["verdicts"][0]["verdict"], "suppress",
            "{lie:?}: {after}"
        );
        let store = app.store();
        let windows = store.windows(None).unwrap();
        assert_eq!(
            windows.iter().map(|w| w.kind.as_str()).collect::<Vec<_>>(),
            ["resolver_outage"],
            "{lie:?}: {windows:?}"
        );
        assert!(windows[0].end.is_some());
        assert_eq!(
            store.changes(None, None).unwrap(),
            vec![],
            "{lie:?}: no per-domain change"
        );
        assert_eq!(
            app.outbox_events(),
            ["resolver_outage_started", "resolver_outage_ended"],
            "{lie:?}: one alert for the outage, one for its end"
        );
        app.stop().await;
    }
}

/// On a fresh database, a first sweep in which most domains answer NXDOMAIN
/// teaches no baseline: the answers are held and the outage is opened, so
/// the real answers later are no "change".
#[tokio::test(start_paused = true)]
async fn a_first_sweep_through_a_lying_resolver_learns_nothing() {
    let dns = TestDns::start().await;
    let names: Vec<String> = (0..13).map(|i| format!("d{i}.example")).collect();
    // The server knows none of them yet: NXDOMAIN for every name.
    let (app, _base) = daemon_watching(&dns, &names);
    minutes(12).await;
    let windows = app.store().windows(None).unwrap();
    assert_eq!(
        windows.iter().map(|w| w.kind.as_str()).collect::<Vec<_>>(),
        ["resolver_outage"]
    );
    for n in &names {
        dns.set(n, Behaviour::mx(&[(10, &format!("mx.{n}"))], 300));
    }
    minutes(15).await;
    let store = app.store();
    assert_eq!(
        store.changes(None, None).unwrap(),
        vec![],
        "nothing learnt from the lie"
    );
    assert!(store.windows(None).unwrap().iter().all(|w| w.end.is_some()));
    app.stop().await;
}

/// A fresh database knows no normal: an ordinary half hour of unknown
/// users at gmail.com is no anomaly, and the verdict and the domain's page
/// say that there is too little history to judge bursts; a day of feed
/// history later they no longer do.
#[tokio::test(start_paused = true)]
async fn a_cold_start_says_it_knows_too_little_and_opens_no_anomaly() {
    let dns = TestDns::start().await;
    dns.set("example.de", Behaviour::mx(OWN, 300));
    let now = clock_from(tokio::time::Instant::now());
    let (app, base) = daemon_watching(&dns, &["example.de".to_string()]);
    minutes(1).await;
    let mut answers = Vec::new();
    for i in 0..25 {
        let line = unknown_user(
            &format!("u{i}@gmail.com"),
            now(),
            "gmail-smtp-in.l.google.com",
        );
        answers.push(crate::post_bounces(&base, line).await);
        tokio::time::sleep(Duration::from_secs(60)).await;
    }
    for a in &answers {
        let v = &a["verdicts"][0];
        assert_eq!(v["verdict"], "suppress", "{v}");
        assert_eq!(a["reinstated"], 0);
        let caveats: Vec<&str> = v["caveats"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        assert_eq!(caveats.len(), 2, "{caveats:?}");
        assert_eq!(caveats[0], mxwatch::verdict::NO_HISTORY);
        assert!(
            caveats[1].starts_with("too little bounce history to judge bursts"),
            "{caveats:?}"
        );
    }
    assert_eq!(app.store().windows(None).unwrap(), vec![]);
    let page: Value = crate::get_json(format!("{base}/v1/domains/example.de")).await;
    assert!(
        page["caveats"][0]
            .as_str()
            .unwrap()
            .starts_with("too little bounce history"),
        "{page}"
    );
    let r = mxwatch::http_client()
        .get(format!("{base}/v1/domains/gmail.com"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let err: Value = r.json().await.unwrap();
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains(mxwatch::verdict::NO_HISTORY),
        "{err}"
    );

    // Listing endpoints take the command line's forms of time.
    for since in ["24h", "2021-04-26", "2021-04-26T00:00:00Z"] {
        let r = mxwatch::http_client()
            .get(format!("{base}/v1/reinstatements?since={since}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "since={since}");
    }
    // A day of history arrives (an older feed ingested): warm.
    crate::post_bounces(&base, history_line(now())).await;
    let page: Value = crate::get_json(format!("{base}/v1/domains/example.de")).await;
    assert_eq!(page["caveats"], serde_json::json!([]), "{page}");
    let a = crate::post_bounces(
        &base,
        unknown_user("kim@example.de", now(), "mx00.example.de"),
    )
    .await;
    assert_eq!(a["verdicts"][0]["caveats"], serde_json::json!([]), "{a}");
    app.stop().await;
}

/// Judging with too little: a status that is no RFC 3463 code, a reply code
/// that is no failure, nothing at all, or a recipient with a NUL byte get an
/// error that says what is wrong, never a guessed verdict; an unwatched
/// domain's verdict says it was judged on the bounce alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verdict_needs_a_well_formed_code_and_says_when_it_knows_no_history() {
    let dns = TestDns::start().await;
    dns.set("example.de", Behaviour::mx(OWN, 300));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("watchlist.yaml"),
        format!("upstreams: ['{}']\ndomains: [example.de]\n", dns.addr),
    )
    .unwrap();
    let d = dir.path();
    ok(d, &["run", "--once"]).await;
    for (args, want) in [
        (vec![], "nothing says how the delivery failed"),
        (vec!["--status", "9.9.9"], "not an RFC 3463 code"),
        (vec!["--status", "5.1.1.1.1"], "not an RFC 3463 code"),
        (vec!["--reply-code", "250"], "not an SMTP failure reply"),
        (vec!["--status", "5.1.1", "--reply-code", "450"], "disagree"),
    ] {
        let mut all = vec!["verdict", "kim@example.de"];
        all.extend(args.iter().copied());
        let out = mxwatch_async(d, &all).await;
        assert_eq!(out.status.code(), Some(2), "{all:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{all:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "no verdict printed for {all:?}");
    }
    // A diagnostic alone is enough when it has the codes.
    let v = json_lines(
        &ok(
            d,
            &[
                "verdict",
                "kim@example.de",
                "--diagnostic",
                "550 5.1.1 user unknown",
                "--json",
            ],
        )
        .await,
    )
    .remove(0);
    assert_eq!(v["verdict"], "suppress", "{v}");
    assert_eq!(
        v["caveats"].as_array().unwrap().len(),
        1,
        "warm-up only: {v}"
    );
    let text = String::from_utf8(
        ok(
            d,
            &["verdict", "kim@unwatched.example", "--status", "5.1.1"],
        )
        .await
        .stdout,
    )
    .unwrap();
    assert!(text.contains(mxwatch::verdict::NO_HISTORY), "{text}");

    // The same rules over HTTP.
    let names = ["example.de".to_string()];
    let (app, base) = daemon_watching(&dns, &names);
    let http = mxwatch::http_client();
    for query in [
        "recipient=kim@example.de",
        "recipient=kim@example.de&status=9.9.9",
        "recipient=kim@example.de&status=5.1.1.1.1",
        "recipient=a%00b@example.de&status=5.1.1",
    ] {
        let r = http
            .get(format!("{base}/v1/verdict?{query}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{query}");
        let e: Value = r.json().await.unwrap();
        assert!(e["error"].is_string(), "{query}: {e}");
    }
    let r = http
        .post(format!("{base}/v1/verdicts"))
        .json(&serde_json::json!([
            {"recipient": "a\u{0}b@example.de", "status": "5.1.1"},
            {"recipient": "kim@example.de", "status": "5.1.1.1.1"},
            {"recipient": "kim@example.de", "status": "5.1.1", "reply_code": 550},
        ]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let items: Vec<Value> = r.json().await.unwrap();
    assert!(
        items[0]["error"]
            .as_str()
            .unwrap()
            .contains("control character"),
        "{items:?}"
    );
    assert!(
        items[1]["error"].as_str().unwrap().contains("RFC 3463"),
        "{items:?}"
    );
    assert_eq!(items[2]["verdict"], "suppress", "{items:?}");
    app.stop().await;
}

/// Operating it: secrets are needed only by `run`; `--database` alone is
/// enough to read; dates, ages and their limits; `check` fails when nothing
/// answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_only_for_run_a_database_alone_to_read_and_honest_exit_codes() {
    let dns = TestDns::start().await;
    dns.set("example.de", Behaviour::mx(OWN, 300));
    dns.set("broken.example", Behaviour::ServFail);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let plain = format!("upstreams: ['{}']\ndomains: [example.de]\n", dns.addr);
    std::fs::write(d.join("watchlist.yaml"), &plain).unwrap();
    ok(d, &["run", "--once"]).await;
    std::fs::write(
        d.join("watchlist.yaml"),
        format!(
            "{plain}alerts:\n  - name: ops\n    url: 'http://127.0.0.1:9/hook'\n    secret_env: MXWATCH_TEST_NEVER_SET\n"
        ),
    )
    .unwrap();
    let out = ok(d, &["config", "check"]).await;
    assert!(
        stderr(&out).contains("warning: watchlist.yaml:6:5: alerts[0].secret_env: environment variable MXWATCH_TEST_NEVER_SET is not set (only `mxwatch run` needs it)"),
        "{}",
        stderr(&out)
    );
    for args in [
        vec!["history", "example.de"],
        vec!["windows"],
        vec!["changes", "--since", "2021-04-26"],
        vec!["bounces", "list", "--since", "24h"],
        vec!["verdict", "kim@example.de", "--status", "5.1.1"],
    ] {
        ok(d, &args).await;
    }
    let out = mxwatch_async(d, &["run", "--once"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("watchlist.yaml:6:5: alerts[0].secret_env: environment variable MXWATCH_TEST_NEVER_SET is not set"),
        "{}",
        stderr(&out)
    );

    // Another directory, no watchlist: the database is enough to read.
    let elsewhere = tempfile::tempdir().unwrap();
    let db = d.join("mxwatch.db");
    let db = db.to_str().unwrap();
    let out = ok(
        elsewhere.path(),
        &["--database", db, "history", "example.de", "--json"],
    )
    .await;
    assert!(!json_lines(&out).is_empty());
    ok(elsewhere.path(), &["--database", db, "windows", "--active"]).await;
    ok(
        elsewhere.path(),
        &[
            "--database",
            db,
            "verdict",
            "kim@example.de",
            "--status",
            "5.1.1",
        ],
    )
    .await;

    // An age past the calendar is a usage error (exit status 2), not a panic.
    let out = mxwatch_async(d, &["changes", "--since", "99999999999h"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("reaches back further than any date"),
        "{}",
        stderr(&out)
    );
    assert!(!stderr(&out).contains("panicked"));

    // `check` says so, and fails, when every upstream failed.
    let up = dns.addr.to_string();
    let out = mxwatch_async(
        elsewhere.path(),
        &["check", "broken.example", "--upstream", &up],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("every upstream failed for broken.example"));
    ok(
        elsewhere.path(),
        &["check", "example.de", "--upstream", &up],
    )
    .await;
}

/// `run --once` stops on SIGTERM like the daemon: no further check starts,
/// those in flight commit, and it says how far it got.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_stops_on_sigterm() {
    let dns = TestDns::start().await;
    let names: Vec<String> = (0..40).map(|i| format!("d{i}.example")).collect();
    for n in &names {
        dns.set(n, Behaviour::Drop); // a silent resolver: every query times out
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("watchlist.yaml"),
        format!(
            "upstreams: ['{}']\ntimeout: 1s\nconcurrency: 2\ndomains: [{}]\n",
            dns.addr,
            names.join(", ")
        ),
    )
    .unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_mxwatch"))
        .current_dir(dir.path())
        .args(["run", "--once"])
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = std::time::Instant::now();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?} to stop: {err}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("SIGTERM: stopping the sweep"), "{err}");
    assert!(err.contains("stopped before the sweep ended"), "{err}");
}

/// Bounce inputs as people hand them over: what is not an email says so
/// (once), a hand-written record needs only a recipient and names every
/// problem at once, a duplicate is counted as one, and the stored verdict
/// is listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inputs_that_are_not_bounces_say_so_and_hand_written_records_need_only_a_recipient() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("watchlist.yaml"), "domains: []\n").unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sisimai");
    std::fs::copy(root.join("LICENSE"), d.join("LICENSE")).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_mxwatch"), d.join("a.out")).unwrap();
    std::fs::copy(
        root.join("maildir/bsd/lhost-postfix-01.eml"),
        d.join("bounce.eml"),
    )
    .unwrap();
    for (file, want) in [
        (
            "LICENSE",
            "LICENSE: not an email: it does not start with a header field",
        ),
        ("a.out", "a.out: not an email: binary data"),
    ] {
        let out = mxwatch_async(d, &["bounces", "parse", file]).await;
        assert_eq!(out.status.code(), Some(1));
        assert!(stderr(&out).contains(want), "{}", stderr(&out));
    }
    let out = mxwatch_async(d, &["bounces", "parse", "--format", "ses", "bounce.eml"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out).lines().count(),
        1,
        "one problem, not one per line: {}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("not JSON"), "{}", stderr(&out));

    std::fs::write(
        d.join("hand.jsonl"),
        "{\"recipient\": \"kim@example.de\", \"status\": \"5.1.1\", \"diagnostic\": \"550 5.1.1 user unknown\"}\n\
         {\"status\": 511, \"at\": \"yesterday\", \"reply_code\": \"x\", \"hard\": \"yes\"}\n\
         {\"recipient\": \"jo@example.de\", \"kind\": \"mailbox_full\"}\n",
    )
    .unwrap();
    let out = mxwatch_async(d, &["bounces", "parse", "--json", "hand.jsonl"]).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("hand.jsonl:2: not a normalised bounce: "),
        "{err}"
    );
    for each in [
        "status: expected a string, got 511",
        "recipient: missing (the one field a record needs)",
        "at: \"yesterday\" is not an RFC 3339 time",
    ] {
        assert!(err.contains(each), "{each}: {err}");
    }
    assert!(err.contains("reply_code: expected a number"), "{err}");
    assert!(err.contains("hard: expected true or false"), "{err}");
    let rows = json_lines(&out);
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (rows[0]["kind"].as_str(), rows[0]["hard"].as_bool()),
        (Some("user_unknown"), Some(true))
    );
    assert_eq!(rows[0]["domain"], "example.de");
    assert_eq!(rows[1]["kind"], "mailbox_full");

    // Stored with their verdicts, listed with them.
    std::fs::write(d.join("good.jsonl"), "{\"recipient\": \"kim@example.de\", \"status\": \"5.1.1\", \"at\": \"2026-04-26T11:00:00Z\"}\n").unwrap();
    ok(d, &["bounces", "ingest", "good.jsonl"]).await;
    let listed = json_lines(&ok(d, &["bounces", "list", "--json"]).await);
    assert_eq!(listed[0]["verdict"], "suppress", "{listed:?}");
    let text = String::from_utf8(ok(d, &["bounces", "list"]).await.stdout).unwrap();
    assert!(text.starts_with("suppress "), "{text}");

    // A duplicate POST is counted as one.
    let dns = TestDns::start().await;
    let (app, base) = daemon_watching(&dns, &["example.de".to_string()]);
    let line = unknown_user("kim@example.de", Utc::now(), "mx00.example.de");
    let first = crate::post_bounces(&base, line.clone()).await;
    let again = crate::post_bounces(&base, line).await;
    assert_eq!(
        (first["stored"].as_u64(), first["duplicates"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(
        (again["stored"].as_u64(), again["duplicates"].as_u64()),
        (Some(0), Some(1))
    );
    app.stop().await;
}

/// With three independent upstreams (the README's recommendation), one
/// that lies is outvoted: the domains keep their answers, the disagreement
/// is recorded, nothing is held, no window opens.
#[tokio::test(start_paused = true)]
async fn three_upstreams_outvote_one_that_lies() {
    let (a, b, liar) = (
        TestDns::start().await,
        TestDns::start().await,
        TestDns::start().await,
    );
    let names: Vec<String> = (0..5).map(|i| format!("d{i}.example")).collect();
    for n in &names {
        let own = Behaviour::mx(&[(10, &format!("mx.{n}"))], 300);
        a.set(n, own.clone());
        b.set(n, own);
        // The liar knows no name: NXDOMAIN for all.
    }
    let yaml = format!(
        "database: test.db\nschedule: '* * * * *'\nupstreams: ['{}', '{}', '{}']\ntimeout: 2s\n\
         concurrency: 1\nfast_recheck: 10s\ngrace: 0s\nsettle: 2h\nlisten: off\ndomains: [{}]\n",
        a.addr,
        b.addr,
        liar.addr,
        names.join(", ")
    );
    let mut app = crate::spawn_app(&yaml);
    for _ in 0..3 {
        for n in &names {
            let ev = app.next_check(n).await;
            assert!(
                !ev.held
                    && ev
                        .changes
                        .iter()
                        .all(|c| *c == mxwatch::detect::ChangeKind::UpstreamDisagreement),
                "{ev:?}"
            );
        }
    }
    let store = app.store();
    assert_eq!(store.windows(None).unwrap(), vec![]);
    let runs = store.history(&crate::name("d0.example"), None).unwrap();
    let consensus = runs.iter().find(|r| r.observation.upstream == "*").unwrap();
    assert_eq!(
        consensus.observation.outcome,
        mxwatch::resolve::Outcome::Records
    );
    assert!(
        consensus
            .observation
            .detail
            .as_deref()
            .unwrap_or("")
            .contains("nxdomain"),
        "the disagreement is recorded: {consensus:?}"
    );
    app.stop().await;
}

/// `mxwatch replay` takes the watchlist's settings (here: smaller anomaly
/// thresholds and no warm-up), as the daemon does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_uses_the_watchlists_anomaly_settings() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let t0 = Utc.with_ymd_and_hms(2021, 4, 26, 11, 0, 0).unwrap();
    let lines: Vec<String> = (0..6)
        .map(|i| {
            unknown_user(
                &format!("u{i}@icloud.com"),
                t0 + chrono::Duration::minutes(i),
                "mx01.mail.icloud.com",
            )
        })
        .collect();
    std::fs::write(d.join("burst.jsonl"), lines.join("\n")).unwrap();
    let finals = async |yaml: &str| -> Vec<String> {
        std::fs::write(d.join("watchlist.yaml"), yaml).unwrap();
        json_lines(&ok(d, &["replay", "--bounces", "burst.jsonl", "--json"]).await)
            .iter()
            .map(|v| v["verdict"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        finals("domains: []\n").await,
        ["suppress"; 6],
        "the defaults need 20 bounces"
    );
    let small =
        "domains: []\nanomaly: {min_bounces: 5, min_recipients: 5, factor: 2, warmup: 0s}\n";
    assert_eq!(
        finals(small).await,
        ["transient"; 6],
        "the watchlist's thresholds"
    );
}

/// Issue 19, item 3: while a flip to iCloud is held (waiting for the other
/// domains to vouch for our resolver), a 5.1.1 from the new MX is not
/// judged as if nothing were happening: `transient`, with the unconfirmed
/// change as evidence and a caveat, through the API (read model), the
/// store (SQL) and the stored verdict of an ingested bounce alike.
#[tokio::test(start_paused = true)]
async fn a_bounce_during_a_held_change_is_transient_with_a_caveat() {
    let dns = TestDns::start().await;
    dns.set("example.de", Behaviour::mx(OWN, 300));
    for d in OTHERS {
        dns.set(d, Behaviour::mx(&[(10, "mx.example.net")], 300));
    }
    let now = clock_from(tokio::time::Instant::now());
    let mut names = vec!["example.de".to_string()];
    names.extend(OTHERS.iter().map(|d| d.to_string()));
    let (mut app, base) = daemon_watching(&dns, &names);
    app.next_check("example.de").await;
    dns.set("example.de", Behaviour::mx(ICLOUD, 300));
    let held = loop {
        let ev = app.next_check("example.de").await;
        if ev.held {
            break ev;
        }
    };
    assert!(held.changes.is_empty());
    // Asked at the held check's moment (the clock is paused: nothing else ran).
    assert_eq!(now(), held.at);
    let url = format!(
        "{base}/v1/verdict?recipient=kim@example.de&status=5.1.1&reply_code=550&remote_mta=mx01.mail.icloud.com"
    );
    let v: Value = crate::get_json(&url).await;
    assert_eq!(v["verdict"], "transient", "{v}");
    assert_eq!(v["evidence"][0]["kind"], "unconfirmed_change", "{v}");
    assert!(
        v["evidence"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("mx01.mail.icloud.com"),
        "{v}"
    );
    assert!(
        v["caveats"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c.as_str().unwrap().contains("still being verified")),
        "{v}"
    );
    // The same through SQL (what `mxwatch verdict` reads).
    let parts = mxwatch::judge::Parts {
        recipient: "kim@example.de".into(),
        at: Some(held.at),
        status: Some("5.1.1".into()),
        reply_code: Some(550),
        diagnostic: None,
        remote_mta: Some("mx01.mail.icloud.com".into()),
    };
    let sql = mxwatch::judge::judge(
        &app.store(),
        &mxwatch::store::Judging::default(),
        parts,
        held.at,
    )
    .unwrap();
    assert_eq!(sql.judgement.verdict, mxwatch::verdict::Verdict::Transient);
    // A bounce ingested now is stored `transient`: nothing to reinstate later.
    let a = crate::post_bounces(
        &base,
        unknown_user("jo@example.de", held.at, "mx01.mail.icloud.com"),
    )
    .await;
    assert_eq!(a["verdicts"][0]["verdict"], "transient", "{a}");
    // Believed a few checks later: an MX-change window covers it from the
    // old answer's last sighting on; still transient, nothing reinstated.
    loop {
        let ev = app.next_check("example.de").await;
        if !ev.changes.is_empty() {
            break;
        }
    }
    let v: Value = crate::get_json(format!(
        "{base}/v1/verdict?recipient=kim@example.de&status=5.1.1&reply_code=550&remote_mta=mx01.mail.icloud.com&at={}",
        held.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    ))
    .await;
    assert_eq!(v["verdict"], "transient", "{v}");
    assert_eq!(v["evidence"][0]["kind"], "mx_change", "{v}");
    let r: Value = crate::get_json(format!("{base}/v1/reinstatements")).await;
    assert_eq!(r.as_array().map(Vec::len), Some(0), "{r}");
    app.stop().await;
}

/// Issue 19, item 9: with auto-watch on, twenty bounces for domains that do
/// not exist (what a signup form collects every day) opened a resolver
/// outage within seconds, and every verdict for every listed domain became
/// `transient`. Newcomers do not vote on our resolver: no outage, and a
/// listed domain's unknown user is suppressed.
#[tokio::test(start_paused = true)]
async fn typo_domains_do_not_make_our_resolver_look_broken() {
    let dns = TestDns::start().await;
    let names: Vec<String> = (0..13).map(|i| format!("d{i}.example")).collect();
    for n in &names {
        dns.set(n, Behaviour::mx(&[(10, &format!("mx.{n}"))], 300));
    }
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let yaml = format!(
        "{}api_token_file: '{}'\nauto_watch: {{}}\ndomains: [{}]\n",
        crate::base_yaml(&dns),
        token_file.display(),
        names.join(", ")
    );
    let config = crate::write_config(&dir, &yaml);
    let app = crate::start(config, std::sync::Arc::new(dir));
    let base = format!("http://{}", app.daemon.as_ref().unwrap().api_addr.unwrap());
    let now = clock_from(tokio::time::Instant::now());
    minutes(2).await;
    for wave in 0..3 {
        let lines: Vec<String> = (0..20)
            .map(|i| unknown_user(&format!("kim@gmial{wave}-{i}.con"), now(), "mx.example.net"))
            .collect();
        crate::post_bounces(&base, lines.join("\n")).await;
        tokio::time::sleep(Duration::from_secs(20)).await;
    }
    minutes(1).await;
    let kinds: Vec<String> = app
        .store()
        .windows(None)
        .unwrap()
        .iter()
        .map(|w| w.kind.to_string())
        .collect();
    assert_eq!(kinds, Vec::<String>::new(), "no outage, no window");
    let v: Value = crate::get_json(format!(
        "{base}/v1/verdict?recipient=kim@d1.example&status=5.1.1&reply_code=550&remote_mta=mx.d1.example"
    ))
    .await;
    assert_eq!(v["verdict"], "suppress", "{v}");
    let auto = app.store().auto_watched().unwrap();
    assert!(
        auto.len() >= 20,
        "the typos are watched (a fact each): {}",
        auto.len()
    );
    app.stop().await;
}
