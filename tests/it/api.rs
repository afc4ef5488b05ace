//! The HTTP API on loopback: a real daemon, a real SQLite file, real HTTP.

use serde_json::Value;

use crate::{Behaviour, TestDns, base_yaml, spawn_app};

const TOKEN: &str = "test-token-0123456789abcdef";

async fn app_with_api(dns: &TestDns) -> (crate::App, String) {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let yaml = format!(
        "{}api_token_file: '{}'\ndomains: [example.de]\n",
        base_yaml(dns),
        token_file.display()
    );
    let app = spawn_app(&yaml);
    let addr = app
        .daemon
        .as_ref()
        .unwrap()
        .api_addr
        .expect("the API listens");
    assert!(addr.ip().is_loopback());
    std::mem::forget(dir); // the token file outlives the test's config load
    (app, format!("http://{addr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_verdicts_and_errors() {
    let dns = TestDns::start().await;
    dns.set("example.de", Behaviour::mx(&[(10, "mx00.example.de")], 300));
    let (app, base) = app_with_api(&dns).await;
    let http = reqwest::Client::new();

    let r = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = http.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    let r = http
        .get(format!("{base}/v1/verdict"))
        .query(&[
            ("recipient", "kim@example.de"),
            ("status", "5.1.1"),
            ("reply_code", "550"),
            ("diagnostic", "550 5.1.1 user unknown"),
            ("remote_mta", "mx01.mail.icloud.com"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["kind"], "user_unknown");
    assert!(
        v["verdict"] == "suppress" || v["verdict"] == "transient",
        "{v}"
    );

    let full: Value = http
        .get(format!("{base}/v1/verdict?recipient=kim@example.de&status=4.2.2&reply_code=452&diagnostic=mailbox+full"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(full["verdict"], "retry");

    for bad in [
        "/v1/verdict",
        "/v1/verdict?recipient=not-an-address",
        "/v1/verdict?recipient=a@example.de&at=yesterday",
        "/v1/verdict?recipient=a@example.de&reply_code=abc",
        "/v1/verdict?recipient=a@example.de&nonsense=1",
        "/v1/verdict?recipient=%ZZ",
    ] {
        let r = http.get(format!("{base}{bad}")).send().await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let v: Value = r.json().await.unwrap();
        assert!(
            v["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{bad}: {v}"
        );
    }
    let r = http.get(format!("{base}/nowhere")).send().await.unwrap();
    assert_eq!(r.status(), 404);

    // A batch: one answer per item, a bad item answered in place.
    let batch = r#"[{"recipient":"kim@example.de","status":"5.1.1","reply_code":550},{"recipient":"nobody"},{"at":1}]"#;
    let r = http
        .post(format!("{base}/v1/verdicts"))
        .body(batch)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Vec<Value> = r.json().await.unwrap();
    assert_eq!(v.len(), 3);
    assert_eq!(v[0]["verdict"], "suppress");
    assert!(v[1]["error"].is_string() && v[2]["error"].is_string());
    let r = http
        .post(format!("{base}/v1/verdicts"))
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let r = http
        .get(format!("{base}/v1/windows?active=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .get(format!("{base}/v1/windows?active=maybe"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .get(format!("{base}/v1/domains/never-checked.example"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = http
        .get(format!("{base}/v1/domains/not..valid"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    app.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_domain_flipped_to_icloud_answers_transient_over_http() {
    let dns = TestDns::start().await;
    dns.set("example.de", Behaviour::mx(&[(10, "mx00.example.de")], 300));
    let (mut app, base) = app_with_api(&dns).await;
    app.next_check("example.de").await;
    dns.set(
        "example.de",
        Behaviour::mx(&[(10, "mx01.mail.icloud.com")], 300),
    );
    let flip = app.next_check("example.de").await;
    assert!(flip.window.is_some());
    // The clock the daemon stamps with runs in 2021 (the test's); ask about then.
    let at = mxwatch::report::time(flip.at);
    let url =
        format!("{base}/v1/verdict?recipient=kim@example.de&status=5.1.1&reply_code=550&at={at}");
    let http = reqwest::Client::new();
    let v: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["verdict"], "transient", "{v}");
    assert_eq!(v["evidence"][0]["kind"], "mx_change");
    let d: Value = http
        .get(format!("{base}/v1/domains/example.de"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["provider"][0], "icloud", "{d}");
    assert_eq!(d["windows"].as_array().unwrap().len(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounces_need_a_token_and_are_committed_before_the_answer() {
    let dns = TestDns::start().await;
    let (app, base) = app_with_api(&dns).await;
    let http = reqwest::Client::new();
    let body = r#"[{"email":"a@example.de","event":"bounce","status":"5.1.1","reason":"550 5.1.1 no such user","timestamp":1619434800},
                   {"email":"b@example.de","event":"delivered","timestamp":1619434800}]"#;

    let r = http
        .post(format!("{base}/v1/bounces"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(format!("{base}/v1/bounces"))
        .bearer_auth("wrong-token-wrong-token")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("token"));

    let r = http
        .post(format!("{base}/v1/bounces"))
        .bearer_auth(TOKEN)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (
            v["received"].as_u64(),
            v["stored"].as_u64(),
            v["skipped"].as_u64()
        ),
        (Some(1), Some(1), Some(1))
    );
    // Acknowledged means committed: a separate connection sees it now.
    let stored = app.store().bounces(Some("example.de"), None, None).unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].recipient, "a@example.de");

    // The same feed again stores nothing new.
    let v: Value = http
        .post(format!("{base}/v1/bounces"))
        .bearer_auth(TOKEN)
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["stored"], 0);

    // Malformed bodies are 400 with a message, never 500.
    for bad in ["", "{", "\u{0}\u{1}\u{2}", "{\"hello\": 1}", "[1, 2, 3]"] {
        let r = http
            .post(format!("{base}/v1/bounces"))
            .bearer_auth(TOKEN)
            .body(bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad:?}");
        let v: Value = r.json().await.unwrap();
        assert!(v["error"].is_string(), "{bad:?}");
    }
    // Too large a body is refused.
    let huge = "x".repeat(mxwatch::api::BODY_LIMIT + 1);
    let r = http
        .post(format!("{base}/v1/bounces"))
        .bearer_auth(TOKEN)
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    app.stop().await;
}
