//! SIGHUP's reload, in process: what it applies in place takes effect at
//! once (the process test in `service.rs` covers the log and what takes a
//! restart).

use serde_json::Value;

use crate::{Behaviour, TOKEN, TestDns, base_yaml, get_json, post, spawn_app, write_config};

const OWN: &[(u16, &str)] = &[(10, "mx00.example.de")];
const MOVED: &[(u16, &str)] = &[(10, "mx.moved.example")];

/// Upstreams, the API token, bounce dates and auto-watch, each changed by
/// a reload, apply to the next check and the next request; nothing is
/// left for a restart.
#[tokio::test(start_paused = true)]
async fn a_reload_applies_upstreams_token_bounce_dates_and_auto_watch_in_place() {
    let started = tokio::time::Instant::now();
    let (a, b) = (TestDns::start().await, TestDns::start().await);
    a.set("example.de", Behaviour::mx(OWN, 300));
    b.set("example.de", Behaviour::mx(MOVED, 300));
    b.set("example.org", Behaviour::mx(&[(10, "mx.example.org")], 300));
    let mut app = spawn_app(&format!("{}domains: [example.de]\n", base_yaml(&a)));
    let base = format!("http://{}", app.daemon.as_ref().unwrap().api_addr.unwrap());
    let first = app.next_check("example.de").await;
    assert!(
        first.observations[0]
            .upstream
            .contains(&a.addr.port().to_string()),
        "{first:?}"
    );
    // The app's clock starts at 2021-04-26 11:00 and follows tokio's.
    let now = || {
        chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2021, 4, 26, 11, 0, 0).unwrap()
            + chrono::Duration::from_std(started.elapsed()).unwrap()
    };
    let ahead = |d: &str| {
        crate::unknown_user(
            &format!("kim@{d}"),
            now() + chrono::Duration::days(2),
            "mx.example.org",
        )
    };
    let refused = post(&base, "/v1/bounces", Some(TOKEN), ahead("example.org")).await;
    assert_eq!(refused.status(), 403, "no token configured yet");

    let token = app.dir.path().join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let new = write_config(
        &app.dir,
        &format!(
            "{}api_token_file: '{}'\nbounce_times:\n  max_ahead: 3d\nauto_watch: {{}}\n\
             anomaly:\n  min_bounces: 7\ndomains: [example.de]\n",
            base_yaml(&b),
            token.display()
        ),
    );
    let done = app.daemon.as_ref().unwrap().reload(&new).await;
    assert!(
        done.restart.is_empty() && done.failed.is_empty(),
        "{done:?}"
    );
    for name in [
        "upstreams",
        "authoritative_port",
        "api_token",
        "anomaly",
        "bounce_times",
        "auto_watch",
    ] {
        assert!(done.applied.contains(&name), "{name} in {done:?}");
    }
    // The next check asks the new upstream.
    let next = app.next_check("example.de").await;
    assert!(
        next.observations[0]
            .upstream
            .contains(&b.addr.port().to_string()),
        "{next:?}"
    );
    assert!(!next.changes.is_empty(), "its MX moved: {next:?}");
    // Writes take the new token; a date two days ahead is now believed.
    let r = post(&base, "/v1/bounces", Some(TOKEN), ahead("example.org")).await;
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    let at: chrono::DateTime<chrono::Utc> = answer["verdicts"][0]["at"]
        .as_str()
        .unwrap_or_else(|| panic!("{answer}"))
        .parse()
        .unwrap();
    assert!(at > now() + chrono::Duration::days(1), "{answer}");
    // The unlisted domain that bounced is auto-watched now.
    for _ in 0..20 {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let d: Value = get_json(format!("{base}/v1/domains/example.org")).await;
        if d["auto_watched"]["since"].is_string() {
            app.stop().await;
            return;
        }
    }
    panic!("example.org was not auto-watched after the reload turned auto-watch on");
}

/// An alert target added by a reload gets the event that comes right
/// after the reload, before its worker has looked at the outbox once (it
/// starts after the newest event at the reload, not at its first look).
/// On one thread, the worker's first look comes after the event.
#[tokio::test]
async fn an_alert_target_added_by_a_reload_gets_what_comes_right_after() {
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let dns = TestDns::start().await;
    dns.set("example.de", Behaviour::mx(OWN, 300));
    let yaml = format!(
        "{}schedule: '0 0 1 1 *'\ndomains: [example.de]\n",
        base_yaml(&dns)
    )
    .replace("schedule: '* * * * *'\n", "");
    let app = spawn_app(&yaml);
    let daemon = app.daemon.as_ref().unwrap();
    let de = crate::name("example.de");
    let first = daemon.monitor.check(&de).await.unwrap();
    let new = write_config(
        &app.dir,
        &yaml.replace(
            "domains:",
            &format!(
                "alerts:\n- name: ops\n  url: '{}/hook'\n  backoff: 50ms\ndomains:",
                receiver.uri()
            ),
        ),
    );
    assert_eq!(daemon.reload(&new).await.applied, ["alerts"]);
    // Recorded at once: nothing has run in between.
    let moved = MOVED
        .iter()
        .map(|(p, h)| mxwatch::domain::Mx {
            preference: *p,
            exchange: mxwatch::domain::MxHost::parse(h).unwrap(),
        })
        .collect();
    let seen =
        mxwatch::dns::Observation::from_records(&first.observations[0].upstream, moved, Some(300));
    let at = first.at + chrono::Duration::seconds(1);
    let ev = daemon.monitor.record(&de, at, vec![seen]).await.unwrap();
    assert!(ev.window.is_some(), "{ev:?}");
    for _ in 0..100 {
        let got = receiver.received_requests().await.unwrap();
        if got
            .iter()
            .any(|r| String::from_utf8_lossy(&r.body).contains("window_opened"))
        {
            app.stop().await;
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the window_opened event right after the reload never reached the new target");
}
