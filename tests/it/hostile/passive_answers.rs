//! Issue 20, item 7: a passive DNS answer was trusted beyond its question.
//! A DNSDB answer about `example.de` carrying rrsets of `w2.test` made
//! windows for `w2.test` (a genuine 5.1.1 there turned `transient`), and a
//! `time_last` in 2200 made a window to 2198, stored closed, so
//! `windows --active` showed nothing while verdicts were `transient`.

use serde_json::Value;

use crate::cli::{json_lines, mxwatch, stderr};

fn windows(dir: &std::path::Path, active: bool) -> Vec<Value> {
    let mut args = vec!["--database", "mx.db", "windows", "--json"];
    if active {
        args.push("--active");
    }
    let out = mxwatch(dir, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    json_lines(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_speaks_only_of_its_domain_and_of_the_past() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let answer = [
        // The domain asked about, as usual, "until 2199".
        r#"{"obj":{"time_first":1398000000,"time_last":7258000000,"rrname":"example.de.","rrtype":"MX","rdata":["10 mx00.example.de."]}}"#,
        // "Elsewhere from 2025-11-29 to 2198."
        r#"{"obj":{"time_first":1764400000,"time_last":7200000000,"rrname":"example.de.","rrtype":"MX","rdata":["10 mx.attacker.test."]}}"#,
        // Another domain's history, in the answer about example.de.
        r#"{"obj":{"time_first":1398000000,"time_last":1764500000,"rrname":"w2.test.","rrtype":"MX","rdata":["10 mx.w2.test."]}}"#,
        r#"{"obj":{"time_first":1761735600,"time_last":1761746400,"rrname":"w2.test.","rrtype":"MX","rdata":["10 mx.attacker.test."]}}"#,
    ]
    .join("\n");
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/dnsdb/v2/lookup/rrset/name/example.de/MX"))
        .respond_with(ResponseTemplate::new(200).set_body_string(answer))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let out = crate::passive::lookup(dir.path(), &server.uri(), &server.uri()).await;
    let err = stderr(&out);
    assert!(
        err.contains("a record of w2.test in the answer about example.de: not taken"),
        "{err}"
    );
    assert!(err.contains("after now: taken as seen until now"), "{err}");
    let all = windows(dir.path(), false);
    assert!(all.iter().all(|w| w["domain"] != "w2.test"), "{all:?}");
    let out = mxwatch(
        dir.path(),
        &["--database", "mx.db", "history", "w2.test", "--json"],
    );
    assert!(json_lines(&out).is_empty(), "w2.test has a history");
    // No window ends after now.
    let now = chrono::Utc::now();
    for w in &all {
        let end = w["end"]
            .as_str()
            .map(|e| chrono::DateTime::parse_from_rfc3339(e).unwrap());
        assert!(
            end.is_some_and(|e| e <= now + chrono::Duration::hours(2)),
            "{w}"
        );
    }
}

/// A window that ends after now affects verdicts now, and is listed as
/// active, closed or not: an excursion seen until ten minutes ago ends an
/// hour wider (DNSDB's margin), 50 minutes from now.
#[test]
fn a_window_ending_after_now_is_active() {
    let now = chrono::Utc::now().timestamp();
    let export = [
        format!(
            r#"{{"time_first":1398000000,"time_last":{now},"rrname":"example.de.","rrtype":"MX","rdata":["10 mx00.example.de."]}}"#
        ),
        format!(
            r#"{{"time_first":{},"time_last":{},"rrname":"example.de.","rrtype":"MX","rdata":["10 mx01.mail.icloud.com."]}}"#,
            now - 3 * 3600,
            now - 600
        ),
    ]
    .join("\n");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("export.jsonl"), export).unwrap();
    let out = crate::passive::import_dnsdb(dir.path(), "mx.db", "export.jsonl");
    assert!(out.status.success(), "{}", stderr(&out));
    let active = windows(dir.path(), true);
    assert_eq!(active.len(), 1, "{active:?}");
    assert_eq!(active[0]["active"], true);
}

/// Item 8: 200,000 bounced domains made 40,001 DNSDB requests in a minute,
/// burning paid quota. Each provider has a request budget per hour and per
/// day; a lookup past it asks nothing and says until when.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_is_asked_within_its_request_budget() {
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(404))
        .expect(2)
        .mount(&server)
        .await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("watchlist.yaml"),
        format!(
            "domains: [a.example, b.example, c.example]\npassive_dns:\n  - provider: dnsdb\n    key_env: MXWATCH_TEST_DNSDB_KEY\n    base_url: '{}'\n    max_requests_per_hour: 2\n",
            server.uri()
        ),
    )
    .unwrap();
    let d = dir.path().to_path_buf();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_mxwatch"))
            .current_dir(&d)
            .args([
                "--database",
                "mx.db",
                "history",
                "lookup",
                "a.example",
                "b.example",
                "c.example",
            ])
            .env_remove("MXWATCH_CONFIG")
            .env("MXWATCH_TEST_DNSDB_KEY", "dnsdb-secret-key-1")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let err = stderr(&out);
    assert!(
        err.contains("request budget (max_requests_per_hour/day) is spent until"),
        "{err}"
    );
    server.verify().await;
}
