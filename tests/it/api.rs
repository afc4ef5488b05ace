//! The HTTP API on loopback: a real daemon, a real SQLite file, real HTTP.

use serde_json::Value;

use crate::{
    Behaviour, TOKEN, TestDns, base_yaml, get_json, post_bounces, spawn_app, unknown_user,
};

async fn app_with_api(dns: &TestDns) -> (crate::App, String) {
    app_with_api_and(dns, "").await
}

/// The API with a token, watching example.de; `extra` adds YAML settings.
pub async fn app_with_api_and(dns: &TestDns, extra: &str) -> (crate::App, String) {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let yaml = format!(
        "{}api_token_file: '{}'\n{extra}domains: [example.de]\n",
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
    let http = mxwatch::http_client();
    // Its MX are known before the question: checked now, not at its slot.
    let monitor = &app.daemon.as_ref().unwrap().monitor;
    monitor.check(&crate::name("example.de")).await.unwrap();

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
    // Refused by iCloud while example.de's MX are its own: a wrong MX.
    assert_eq!(v["verdict"], "transient", "{v}");
    assert_eq!(v["evidence"][0]["kind"], "wrong_mx", "{v}");

    let full: Value = get_json(format!("{base}/v1/verdict?recipient=kim@example.de&status=4.2.2&reply_code=452&diagnostic=mailbox+full")).await;
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
    // A bad parameter is named.
    for (bad, named) in [
        ("reply_code=abc", "reply_code"),
        ("nonsense=1", "nonsense"),
        ("at=yesterday", "at"),
    ] {
        let r = http
            .get(format!("{base}/v1/verdict?recipient=a@example.de&{bad}"))
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        assert!(v["error"].as_str().unwrap().contains(named), "{bad}: {v}");
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

    for (path, status) in [
        ("/v1/windows?active=true", 200),
        ("/v1/windows?active=maybe", 400),
        // The token may come in the query (README), on reads too.
        ("/v1/windows?active=true&token=t", 200),
        ("/v1/reinstatements?since=24h&token=t", 200),
        (
            "/v1/verdict?recipient=kim@example.de&status=5.1.1&token=t",
            200,
        ),
        ("/v1/domains/never-checked.example", 404),
        ("/v1/domains/not..valid", 400),
    ] {
        let r = http.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(r.status(), status, "{path}");
    }
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
    let v: Value = get_json(&url).await;
    assert_eq!(v["verdict"], "transient", "{v}");
    assert_eq!(v["evidence"][0]["kind"], "mx_change");
    let d: Value = get_json(format!("{base}/v1/domains/example.de")).await;
    assert_eq!(d["provider"][0], "icloud", "{d}");
    assert_eq!(d["windows"].as_array().unwrap().len(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounces_need_a_token_and_are_committed_before_the_answer() {
    let dns = TestDns::start().await;
    let (app, base) = app_with_api(&dns).await;
    let http = mxwatch::http_client();
    let body = r#"[{"email":"a@example.de","event":"bounce","status":"5.1.1","reason":"550 5.1.1 no such user","timestamp":1619434800},
                   {"email":"b@example.de","event":"delivered","timestamp":1619434800}]"#;

    let r = crate::post(&base, "/v1/bounces", None, body).await;
    assert_eq!(r.status(), 401);
    let r = crate::post(&base, "/v1/bounces", Some("wrong-token-wrong-token"), body).await;
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("token"));

    let r = crate::post(&base, "/v1/bounces", Some(TOKEN), body).await;
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
    let v: Value = crate::post(&base, "/v1/bounces", Some(TOKEN), body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["stored"], 0);

    // Malformed bodies are 400 with a message, never 500.
    for bad in ["", "{", "\u{0}\u{1}\u{2}", "{\"hello\": 1}", "[1, 2, 3]"] {
        let r = crate::post(&base, "/v1/bounces", Some(TOKEN), bad).await;
        assert_eq!(r.status(), 400, "{bad:?}");
        let v: Value = r.json().await.unwrap();
        assert!(v["error"].is_string(), "{bad:?}");
    }
    // Too large a body is refused.
    let huge = "x".repeat(mxwatch::api::BODY_LIMIT + 1);
    let r = crate::post(&base, "/v1/bounces", Some(TOKEN), huge).await;
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("too large"), "{v}");
    // A wrong method is a JSON error too.
    let r = http.get(format!("{base}/v1/bounces")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());
    app.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_apple_like_burst_without_dns_change_reinstates_the_early_suppressions() {
    let dns = TestDns::start().await;
    dns.set("example.de", Behaviour::mx(&[(10, "mx00.example.de")], 300));
    let (app, base) = app_with_api(&dns).await;
    let http = mxwatch::http_client();
    let t0 = chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2021, 4, 26, 11, 0, 0).unwrap();
    let minute = chrono::Duration::minutes(1);
    // A day of ordinary feed first: anomaly detection has warmed up.
    post_bounces(&base, crate::history_line(t0)).await;
    // Valid iCloud, me.com and mac.com addresses refused one a minute by
    // Apple's MX, and no DNS change anywhere. Each arrives on its own.
    let domains = ["icloud.com", "me.com", "mac.com"];
    let mut answers = Vec::new();
    for i in 0..25 {
        let who = format!("user{i}@{}", domains[i % 3]);
        let line = unknown_user(&who, t0 + minute * i as i32, "mx01.mail.icloud.com");
        answers.push(post_bounces(&base, line).await);
    }
    // Each alone looked like a plain unknown user until the burst was
    // recognised at the 20th (20 bounces, 20 recipients in 30 minutes).
    for (i, a) in answers.iter().enumerate() {
        let want = if i < 19 { "suppress" } else { "transient" };
        assert_eq!(a["verdicts"][0]["verdict"], want, "bounce {i}: {a}");
    }
    assert_eq!(answers[19]["reinstated"], 19);
    let ev = &answers[19]["verdicts"][0]["evidence"][0];
    assert_eq!(
        (ev["kind"].as_str(), ev["scope"].as_str()),
        (Some("anomaly"), Some("provider"))
    );
    assert_eq!(ev["start"], mxwatch::report::time(t0));

    // The early ones are listed for the bounce handler to undo.
    let list: Vec<Value> = get_json(format!("{base}/v1/reinstatements")).await;
    assert_eq!(list.len(), 19);
    assert_eq!(list[0]["recipient"], "user0@icloud.com");
    assert_eq!(list[0]["previous_verdict"], "suppress");
    assert_eq!(list[0]["verdict"], "transient");
    assert_eq!(list[0]["window"]["kind"], "anomaly");
    assert_eq!(list[0]["window"]["name"], "icloud");
    let later = mxwatch::report::time(t0 + chrono::Duration::hours(1));
    let none: Vec<Value> = get_json(format!("{base}/v1/reinstatements?since={later}")).await;
    assert!(none.is_empty());
    let r = http
        .get(format!("{base}/v1/reinstatements?since=yesterday"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // A question about a moment inside the burst is answered with it.
    let inside = mxwatch::report::time(t0 + minute * 10);
    let v: Value = get_json(format!(
            "{base}/v1/verdict?recipient=someone@me.com&status=5.1.1&reply_code=550&remote_mta=mx02.mail.icloud.com&at={inside}"
        )).await;
    assert_eq!(v["verdict"], "transient", "{v}");

    // The bounces stop; once the window closes, a later unknown user is
    // suppressed again.
    tokio::time::sleep(std::time::Duration::from_secs(3 * 3600)).await;
    let after = t0 + chrono::Duration::hours(5);
    let a = post_bounces(
        &base,
        unknown_user("late@icloud.com", after, "mx01.mail.icloud.com"),
    )
    .await;
    assert_eq!(a["verdicts"][0]["verdict"], "suppress", "{a}");
    let windows: Vec<Value> = get_json(format!("{base}/v1/windows")).await;
    let anomaly = windows.iter().find(|w| w["kind"] == "anomaly").unwrap();
    assert_eq!(anomaly["status"], "closed", "{anomaly}");
    // The store wrote `subsided`; it used to read back as null.
    assert_eq!(anomaly["close_reason"], "subsided", "{anomaly}");
    assert_eq!(anomaly["end"], mxwatch::report::time(t0 + minute * 24));
    model_agrees_with_the_database(&app, &["icloud.com", "me.com", "example.de"], t0);
    let events: Vec<String> = app.outbox_events();
    for want in ["anomaly_opened", "reinstatements", "anomaly_closed"] {
        assert!(events.iter().any(|e| e == want), "{want} in {events:?}");
    }
    app.stop().await;
}

#[tokio::test(start_paused = true)]
async fn suppressions_between_the_last_check_and_an_mx_change_are_reinstated() {
    let dns = TestDns::start().await;
    dns.set("example.de", Behaviour::mx(&[(10, "mx00.example.de")], 300));
    let (mut app, base) = app_with_api(&dns).await;
    let first = app.next_check("example.de").await;
    // Refused by the domain's own MX: nothing against a suppression yet.
    let at = first.at + chrono::Duration::seconds(20);
    let a = post_bounces(&base, unknown_user("kim@example.de", at, "mx00.example.de")).await;
    assert_eq!(a["verdicts"][0]["verdict"], "suppress", "{a}");
    // The next check finds the MX moved; the change happened after the
    // last check that saw the old answer, so the bounce is reconsidered.
    dns.set(
        "example.de",
        Behaviour::mx(&[(10, "mx01.mail.icloud.com")], 300),
    );
    let flip = app.next_check("example.de").await;
    assert!(flip.window.is_some());
    let list = app.store().reinstatements(None).unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].bounce.recipient, "kim@example.de");
    assert_eq!(list[0].verdict, "transient");
    assert_eq!(list[0].window.as_ref().unwrap().kind, "mx_change");
    let stored = app.store().stored_bounces(None, None, None).unwrap();
    assert_eq!(
        stored[0].verdict,
        Some(mxwatch::verdict::Verdict::Transient)
    );
    model_agrees_with_the_database(&app, &["example.de", "icloud.com"], first.at);
    app.stop().await;
}

fn fixture(path: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/{path}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn esp_receivers_take_their_own_events_and_confirm_sns_subscriptions() {
    use wiremock::matchers::{method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let sns = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/confirm"))
        .and(query_param("Token", "abc"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<ConfirmSubscriptionResponse/>"))
        .expect(1)
        .mount(&sns)
        .await;
    let dns = TestDns::start().await;
    let (app, base) =
        // Unsigned SNS messages here; signatures: hostile.rs.
        app_with_api_and(
            &dns,
            &format!("sns_subscribe_allow: ['{}/']\nsns_verify_signatures: false\n", sns.uri()),
        )
        .await;
    let http = mxwatch::http_client();

    // SNS asks to confirm: the receiver visits the SubscribeURL once.
    let confirm = serde_json::json!({
        "Type": "SubscriptionConfirmation",
        "TopicArn": "arn:aws:sns:us-east-1:123456789012:ses-bounces",
        "Token": "abc",
        "SubscribeURL": format!("{}/confirm?Action=ConfirmSubscription&Token=abc", sns.uri()),
        "Message": "You have chosen to subscribe to the topic."
    });
    let r = http
        .post(format!("{base}/v1/webhooks/ses"))
        .basic_auth("sns", Some(TOKEN))
        .json(&confirm)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["subscribed"], true);
    // A SubscribeURL elsewhere is never fetched: not the metadata service,
    // nor an S3 bucket's endpoint that looks like SNS (issue 20, item 11).
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "https://sns.s3.amazonaws.com/confirm?Token=abc",
        "https://sns.s3-eu-west-1.amazonaws.com/confirm?Token=abc",
    ] {
        let mut evil = confirm.clone();
        evil["SubscribeURL"] = url.into();
        let r = http
            .post(format!("{base}/v1/webhooks/ses"))
            .bearer_auth(TOKEN)
            .json(&evil)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{url}");
        assert!(
            r.json::<Value>().await.unwrap()["error"]
                .as_str()
                .unwrap()
                .contains("SubscribeURL"),
            "{url}"
        );
    }

    // Each receiver takes its ESP's payloads (token as Basic password,
    // bearer or query parameter)...
    // Each verdict is the one its payload's words earn: an unknown user is
    // `suppress` (no window covers it), an unclassified permanent failure
    // (`other`) is not the address's fault: `ignore`.
    for (esp, file, want) in [
        (
            "ses",
            "webhooks/amazon-ses/notification-examples--bounce-notification-without-a-dsn.json",
            "ignore",
        ),
        (
            "sendgrid",
            "webhooks/sendgrid/sendgrid-docs-event-webhook--bounce.json",
            "suppress",
        ),
        (
            "mailgun",
            "webhooks/mailgun/mailgun-docs-api-events--failed-permanent.json",
            "ignore",
        ),
        (
            "postmark",
            "webhooks/postmark/postmarker-conftest-BOUNCE_WEBHOOK.json",
            "suppress",
        ),
    ] {
        let r = http
            .post(format!("{base}/v1/webhooks/{esp}?token={TOKEN}"))
            .body(fixture(file))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{esp}");
        let v: Value = r.json().await.unwrap();
        assert!(v["stored"].as_u64().unwrap() >= 1, "{esp}: {v}");
        assert_eq!(v["verdicts"][0]["verdict"], want, "{esp}: {v}");
    }
    // ...and refuses another's.
    let r = crate::post(
        &base,
        "/v1/webhooks/ses",
        Some(TOKEN),
        fixture("webhooks/sendgrid/sendgrid-docs-event-webhook--bounce.json"),
    )
    .await;
    assert_eq!(r.status(), 400);
    assert!(
        r.json::<Value>().await.unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("not ses")
    );
    let r = crate::post(
        &base,
        "/v1/webhooks/sendgrid",
        None,
        fixture("webhooks/sendgrid/sendgrid-docs-event-webhook--bounce.json"),
    )
    .await;
    assert_eq!(r.status(), 401);
    let r = crate::post(&base, "/v1/webhooks/sparkpost", Some(TOKEN), "{}").await;
    assert_eq!(r.status(), 404);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());

    // What happened shows in /metrics.
    crate::assert_metrics(
        &base,
        &[
            "mxwatch_bounces_ingested_total 5",
            "mxwatch_stored_bounces 5",
            "mxwatch_verdicts_total{verdict=",
            "mxwatch_http_request_duration_seconds_count{route=\"/v1/webhooks/{esp}\"}",
            "mxwatch_open_windows",
        ],
    )
    .await;
    app.stop().await;
    sns.verify().await;
}

/// Every route the router serves is described in openapi.yaml, and every
/// described route is served.
#[test]
fn openapi_describes_every_route() {
    let root = env!("CARGO_MANIFEST_DIR");
    let api = std::fs::read_to_string(format!("{root}/src/api/mod.rs")).unwrap();
    let doc: Value =
        yaml_serde::from_str(&std::fs::read_to_string(format!("{root}/openapi.yaml")).unwrap())
            .unwrap();
    let re = regex::Regex::new(r#"\.route\(\s*"([^"]+)",\s*(get|post)"#).unwrap();
    let served: std::collections::BTreeSet<(String, String)> = re
        .captures_iter(&api)
        .map(|c| (c[1].to_string(), c[2].to_string()))
        .collect();
    assert!(served.len() >= 10, "{served:?}");
    let described: std::collections::BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(p, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .filter(|k| matches!(k.as_str(), "get" | "post" | "put" | "delete"))
                .map(|k| (p.clone(), k.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(served, described);
}

/// The API judges with the writer's in-memory model; the CLI with SQL.
/// Both must know the same about every domain at every moment.
fn model_agrees_with_the_database(
    app: &crate::App,
    domains: &[&str],
    around: chrono::DateTime<chrono::Utc>,
) {
    use mxwatch::store::Knowledge;
    let model = app.daemon.as_ref().unwrap().model();
    let store = app.store();
    let providers = app.config.providers();
    let mut compared = 0;
    for d in domains {
        for minutes in (-90..=360).step_by(7) {
            let at = around + chrono::Duration::minutes(minutes);
            for remote in [None, Some("mx01.mail.icloud.com"), Some("mx.other.example")] {
                let a = store.circumstances(d, at, remote, &providers).unwrap();
                let b = model.circumstances(d, at, remote, &providers).unwrap();
                assert_eq!(
                    (&a.windows, &a.mx_at, &a.provider),
                    (&b.windows, &b.mx_at, &b.provider),
                    "{d} at {at} via {remote:?}"
                );
                compared += usize::from(!a.windows.is_empty());
            }
        }
    }
    assert!(compared > 0, "no moment with a window was compared");
}

/// Whatever a client sends (any route, method, query, path segment or
/// body, with or without the token) the server answers: never a 500 or a
/// dropped connection, errors are JSON with a message, and it stays up.
#[test]
fn nothing_a_client_sends_breaks_the_server() {
    use proptest::prelude::*;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (_dns, app, base) = rt.block_on(async {
        let dns = TestDns::start().await;
        dns.set("example.de", Behaviour::mx(&[(10, "mx00.example.de")], 300));
        let (app, base) = app_with_api(&dns).await;
        (dns, app, base)
    });
    let http = mxwatch::http_client();
    let routes = [
        "/v1/verdict",
        "/v1/verdicts",
        "/v1/bounces",
        "/v1/webhooks/ses",
        "/v1/webhooks/sendgrid",
        "/v1/webhooks/mailgun",
        "/v1/webhooks/postmark",
        "/v1/webhooks/nope",
        "/v1/windows",
        "/v1/reinstatements",
        "/v1/domains",
        "/readyz",
    ];
    let keys = [
        "recipient",
        "at",
        "status",
        "reply_code",
        "diagnostic",
        "remote_mta",
        "active",
        "since",
        "token",
        "email",
        "event",
        "reason",
        "timestamp",
    ];
    // Bodies: raw bytes, JSON-shaped token soup, and bounce-shaped objects
    // with wrong values.
    let token = prop_oneof![
        Just("{".to_string()),
        Just("}".to_string()),
        Just("[".to_string()),
        Just("]".to_string()),
        Just(":".to_string()),
        Just(",".to_string()),
        Just("null".to_string()),
        "-?[0-9]{1,22}(\\.[0-9]{0,3})?(e[0-9]{1,4})?",
        "\"(recipient|email|event|status|at|timestamp|Type|Message|eventType|bounce|event-data|RecordType|notificationType|reply_code)\"",
        "\"[\\PC]{0,12}\"",
    ];
    let soup = prop::collection::vec(token, 0..40).prop_map(|t| t.concat().into_bytes());
    let text = prop_oneof![
        "[a-z]{1,8}@(example\\.de|icloud\\.com|[a-z]{1,5}\\.[a-z]{2})",
        "[\\PC]{0,40}",
        "[245]\\.[0-9]{1,3}\\.[0-9]{1,3}",
        "[2-5][0-9]{2}",
        "(5[0-9]{2} [45]\\.[0-9]\\.[0-9] )?(user unknown|mailbox full|blocked|no such user|spam)",
        "(19|20|99)[0-9]{2}-[01][0-9]-[0-3][0-9](T[0-2][0-9]:[0-5][0-9]:[0-5][0-9]Z)?",
        "(true|false|bounce|delivered|[0-9]{1,6}[smhd])",
    ];
    let value = prop_oneof![
        Just("null".to_string()),
        "-?[0-9]{1,22}",
        text.clone()
            .prop_map(|s| serde_json::to_string(&s).unwrap()),
    ];
    let object = (
        prop::collection::vec((0..keys.len(), value), 0..6),
        any::<bool>(),
    )
        .prop_map(move |(kv, array)| {
            let fields: Vec<String> = kv
                .into_iter()
                .map(|(k, v)| format!("\"{}\":{v}", keys[k]))
                .collect();
            let one = format!("{{{}}}", fields.join(","));
            if array {
                format!("[{one},{one}]").into_bytes()
            } else {
                format!("{one}\n{one}\n").into_bytes()
            }
        });
    // SendGrid-shaped events with odd values: deep into parsing and judging.
    let email = "[a-z]{1,8}@(example\\.de|icloud\\.com|me\\.com|[a-z]{1,5}\\.[a-z]{2})";
    let event = (
        email,
        "(bounce|dropped|deferred|delivered|open|[a-z]{0,6})",
        "(5\\.1\\.1|4\\.2\\.2|5\\.7\\.1|[0-9.]{0,7})",
        text.clone(),
        prop_oneof![Just(1619434800i64), any::<i64>()],
    )
        .prop_map(|(email, event, status, reason, ts)| {
            serde_json::json!({"email": email, "event": event, "status": status,
                               "reason": reason, "timestamp": ts})
        });
    let events = prop::collection::vec(event, 1..5).prop_map(|e| serde_json::to_vec(&e).unwrap());
    let body = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..400),
        soup,
        object,
        events
    ];
    // Verdict questions: any keys and values, or a recipient with odd parts.
    let question = (
        email,
        prop::collection::vec((1..6usize, text.clone()), 0..4),
    )
        .prop_map(|(r, mut rest)| {
            rest.insert(0, (0, r));
            rest
        });
    let query = prop_oneof![prop::collection::vec((0..keys.len(), text), 0..6), question];

    let config = ProptestConfig {
        cases: 500,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(route in 0..routes.len(), post in any::<bool>(), auth in any::<bool>(),
                        query in query, segment in "[\\PC]{0,40}", body in body)| {
        let mut url = reqwest::Url::parse(&base).unwrap();
        url.set_path(routes[route]);
        if routes[route] == "/v1/domains" {
            url.path_segments_mut().unwrap().push(&segment);
        }
        {
            let mut q = url.query_pairs_mut();
            for (k, v) in &query {
                q.append_pair(keys[*k], v);
            }
        }
        let mut req = if post { http.post(url.clone()) } else { http.get(url.clone()) };
        if auth {
            req = req.bearer_auth(TOKEN);
        }
        let (status, text) = rt.block_on(async {
            let r = req.body(body.clone()).send().await.expect("the server answers");
            let status = r.status();
            (status, r.text().await.expect("a whole answer"))
        });
        prop_assert!(status.as_u16() < 500, "{status} for {url}: {text}");
        let json: Value = serde_json::from_str(&text)
            .map_err(|e| TestCaseError::fail(format!("{status} for {url}: not JSON ({e}): {text}")))?;
        if !status.is_success() {
            prop_assert!(json["error"].as_str().is_some_and(|m| !m.is_empty()), "{status}: {text}");
        }
    });
    rt.block_on(async {
        let r = http.get(format!("{base}/healthz")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        app.stop().await;
    });
}

/// A client that sends half a request and stalls does not hold up the
/// stop: in-flight requests get `api::DRAIN`, then the daemon goes on
/// stopping; when the rest of that request comes, it is told that nothing
/// was stored and to send it again.
#[tokio::test(start_paused = true)]
async fn a_stalled_client_does_not_hold_up_the_stop() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dns = TestDns::start().await;
    let (app, base) = app_with_api(&dns).await;
    let at = chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2021, 4, 26, 11, 0, 0).unwrap();
    let body = format!(
        "{:<1000}",
        unknown_user("kim@example.de", at, "mx00.example.de")
    );
    let (first, rest) = body.split_at(20);
    let mut stalled = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = format!(
        "POST /v1/bounces HTTP/1.1\r\nHost: mxwatch\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Length: {}\r\n\r\n{first}",
        body.len()
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let asked = tokio::time::Instant::now();
    let db = app.db_path();
    tokio::time::timeout(mxwatch::api::DRAIN * 6, app.stop())
        .await
        .expect("the daemon stops despite the stalled request");
    let took = asked.elapsed();
    assert!(
        took >= mxwatch::api::DRAIN,
        "{took:?}: the request was not waited for"
    );
    assert!(took < mxwatch::api::DRAIN * 2, "{took:?}");

    stalled.write_all(rest.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0; 4096];
    while !answer.ends_with(b"}") {
        let n = stalled.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("try again"), "{answer}");
    let stored = mxwatch::store::Store::open(&db).unwrap();
    assert_eq!(stored.bounce_count().unwrap(), 0);
}

/// `auto_watch:`: an unlisted domain that bounces is checked at once (its
/// bounce, refused by a host it does not use, turns transient), watched,
/// evicted at the cap by a more recent one, and dropped `keep` after its
/// last bounce (issue 14).
#[tokio::test(start_paused = true)]
async fn an_unlisted_domain_that_bounces_is_watched_then_let_go() {
    let dns = TestDns::start().await;
    dns.set("example.de", Behaviour::mx(&[(10, "mx00.example.de")], 300));
    dns.set("example.org", Behaviour::mx(&[(10, "mx.example.org")], 300));
    dns.set("example.net", Behaviour::mx(&[(10, "mx.example.net")], 300));
    let started = tokio::time::Instant::now();
    let (app, base) = app_with_api_and(&dns, "auto_watch:\n  keep: 1h\n  max_domains: 1\n").await;
    // The app's clock starts at 2021-04-26 11:00 and follows tokio's.
    let clock_now = || {
        chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2021, 4, 26, 11, 0, 0).unwrap()
            + chrono::Duration::from_std(started.elapsed()).unwrap()
    };
    let now = clock_now();
    let a = post_bounces(
        &base,
        crate::unknown_user("kim@example.org", now, "mx01.mail.icloud.com"),
    )
    .await;
    assert_eq!(
        a["verdicts"][0]["verdict"], "suppress",
        "nothing known yet: {a}"
    );
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;

    // Checked at once: example.org's MX are its own, not iCloud's.
    let undo: Vec<Value> = get_json(format!("{base}/v1/reinstatements")).await;
    assert_eq!(undo.len(), 1, "{undo:?}");
    assert_eq!(undo[0]["recipient"], "kim@example.org");
    assert_eq!(undo[0]["verdict"], "transient");
    let d: Value = get_json(format!("{base}/v1/domains/example.org")).await;
    assert!(d["auto_watched"]["since"].is_string(), "{d}");
    let listed: Value = get_json(format!("{base}/v1/domains/example.de")).await;
    assert!(
        listed["auto_watched"].is_null(),
        "a listed domain is not auto-watched"
    );

    // The cap is one: a bounce for example.net evicts example.org.
    let later = clock_now();
    post_bounces(
        &base,
        crate::unknown_user("ann@example.net", later, "mx.example.net"),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let org: Value = get_json(format!("{base}/v1/domains/example.org")).await;
    assert!(org["auto_watched"].is_null(), "{org}");
    let net: Value = get_json(format!("{base}/v1/domains/example.net")).await;
    assert!(net["auto_watched"]["last_bounce"].is_string(), "{net}");

    // An hour after its last bounce, example.net goes too.
    tokio::time::sleep(std::time::Duration::from_secs(3700)).await;
    let net: Value = get_json(format!("{base}/v1/domains/example.net")).await;
    assert!(net["auto_watched"].is_null(), "{net}");
    app.stop().await;
}

/// With `passive_dns:` too, a newly auto-watched domain's history before
/// mxwatch is asked of the provider, and a past excursion to iCloud turns a
/// bounce in it transient when the answer lands (issue 14).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newly_watched_domain_is_looked_up_in_passive_dns() {
    looked_up_in_passive_dns("auto_watch: {}\n").await;
}

/// Without auto-watch too: a domain that bounces without any history is
/// asked about.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_domain_without_history_is_looked_up_in_passive_dns() {
    looked_up_in_passive_dns("").await;
}

/// Issue 19, item 6: the natural first run, a past feed ingested and then
/// the daemon started. The daemon reads what was stored before it (not
/// only what comes after): the domain is auto-watched, looked up in passive
/// DNS, and the bounce its history covers is reinstated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounces_stored_before_the_daemon_started_are_watched_and_looked_up() {
    looked_up("auto_watch: {}\n", Feed::BeforeStart).await;
}

/// Passive DNS and auto-watch turned on by a reload work as from a start
/// (issue 23: a reload applies them in place).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_dns_and_auto_watch_turned_on_by_a_reload_work() {
    looked_up("auto_watch: {}\n", Feed::AfterReload).await;
}

async fn looked_up_in_passive_dns(auto: &str) {
    looked_up(auto, Feed::Api).await;
}

/// How the bounce reaches the daemon.
#[derive(PartialEq)]
enum Feed {
    Api,
    /// Stored in the database before the daemon starts.
    BeforeStart,
    /// Over the API, after a reload turned `passive_dns:` (and
    /// `auto_watch:`) on in a daemon started without them.
    AfterReload,
}

async fn looked_up(auto: &str, feed: Feed) {
    use wiremock::matchers::{header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let dns = TestDns::start().await;
    dns.set("example.de", Behaviour::mx(&[(10, "mx00.example.de")], 300));
    dns.set("example.org", Behaviour::mx(&[(10, "mx.example.org")], 300));
    let provider = MockServer::start().await;
    // example.org's usual MX for years, and iCloud's for an hour on
    // 2021-04-20 (the app's clock starts on 2021-04-26).
    let export = "{\"cond\":\"begin\"}\n\
        {\"obj\":{\"count\":900,\"time_first\":1398000000,\"time_last\":1619400000,\"rrname\":\"example.org.\",\"rrtype\":\"MX\",\"rdata\":[\"10 mx.example.org.\"]}}\n\
        {\"obj\":{\"count\":9,\"time_first\":1618916400,\"time_last\":1618920000,\"rrname\":\"example.org.\",\"rrtype\":\"MX\",\"rdata\":[\"10 mx01.mail.icloud.com.\"]}}\n\
        {\"cond\":\"succeeded\"}\n";
    Mock::given(method("GET"))
        .and(path("/dnsdb/v2/lookup/rrset/name/example.org/MX"))
        .and(header("X-API-Key", "dnsdb-test-key-0123"))
        .respond_with(ResponseTemplate::new(200).set_body_string(export))
        .expect(1)
        .mount(&provider)
        .await;
    let key = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key.path(), "dnsdb-test-key-0123\n").unwrap();
    let extra = format!(
        "{auto}passive_dns:\n  - provider: dnsdb\n    key_file: '{}'\n    base_url: '{}'\n",
        key.path().display(),
        provider.uri()
    );
    // A refusal by iCloud inside that hour, fed now (a past feed).
    let at = chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2021, 4, 20, 11, 30, 0).unwrap();
    let line = crate::unknown_user("kim@example.org", at, "mx01.mail.icloud.com");
    let (app, base) = if feed == Feed::BeforeStart {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
        let yaml = format!(
            "{}api_token_file: '{}'\n{extra}domains: [example.de]\n",
            base_yaml(&dns),
            token_file.display()
        );
        let config = crate::write_config(&dir, &yaml);
        let (writer, task) =
            mxwatch::store::Writer::start(&config.database, config.judging()).unwrap();
        let parsed = mxwatch::bounce::parse::parse(line.as_bytes(), None, at);
        let intake = writer.bounces(parsed.bounces, at).await.unwrap();
        assert_eq!(intake.judgements[0].verdict.to_string(), "suppress");
        writer.close().await.unwrap();
        drop(writer);
        task.await.unwrap();
        let app = crate::start(config, std::sync::Arc::new(dir));
        let addr = app.daemon.as_ref().unwrap().api_addr.unwrap();
        (app, format!("http://{addr}"))
    } else if feed == Feed::AfterReload {
        let (app, base) = app_with_api_and(&dns, "").await;
        let yaml = std::fs::read_to_string(app.dir.path().join("watchlist.yaml")).unwrap();
        let new = crate::write_config(
            &app.dir,
            &yaml.replace(
                "domains: [example.de]",
                &format!("{extra}domains: [example.de]"),
            ),
        );
        let done = app.daemon.as_ref().unwrap().reload(&new).await;
        assert!(done.applied.contains(&"passive_dns"), "{done:?}");
        let a = post_bounces(&base, line).await;
        assert_eq!(a["verdicts"][0]["verdict"], "suppress", "{a}");
        (app, base)
    } else {
        let (app, base) = app_with_api_and(&dns, &extra).await;
        let a = post_bounces(&base, line).await;
        assert_eq!(a["verdicts"][0]["verdict"], "suppress", "{a}");
        (app, base)
    };
    let mut undo: Vec<Value> = Vec::new();
    for _ in 0..100 {
        undo = get_json(format!("{base}/v1/reinstatements")).await;
        if !undo.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(undo.len(), 1, "{undo:?}");
    assert_eq!(undo[0]["recipient"], "kim@example.org");
    assert!(
        undo[0]["reason"]
            .as_str()
            .unwrap()
            .contains("passive DNS (dnsdb)"),
        "{undo:?}"
    );
    if auto.contains("auto_watch") {
        let mut d = Value::Null;
        for _ in 0..100 {
            d = get_json(format!("{base}/v1/domains/example.org")).await;
            if d["auto_watched"].is_object() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(d["auto_watched"]["since"].is_string(), "{d}");
    }
    app.stop().await;
}

/// Issue 19, item 10: auto-watch at its cap evicted a domain in the middle
/// of its incident, closing its window as `unwatched`: the next 5.1.1 from
/// iCloud answered `suppress`. A domain with an open window is never
/// evicted: the newcomer waits, and the window stays open.
#[tokio::test(start_paused = true)]
async fn a_domain_with_an_open_window_is_not_evicted_at_the_cap() {
    let dns = TestDns::start().await;
    dns.set("example.de", Behaviour::mx(&[(10, "mx00.example.de")], 300));
    dns.set("example.org", Behaviour::mx(&[(10, "mx.example.org")], 300));
    dns.set("example.net", Behaviour::mx(&[(10, "mx.example.net")], 300));
    let started = tokio::time::Instant::now();
    let (mut app, base) =
        app_with_api_and(&dns, "auto_watch:\n  keep: 1h\n  max_domains: 1\n").await;
    let clock_now = || {
        chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2021, 4, 26, 11, 0, 0).unwrap()
            + chrono::Duration::from_std(started.elapsed()).unwrap()
    };
    post_bounces(
        &base,
        crate::unknown_user("kim@example.org", clock_now(), "mx.example.org"),
    )
    .await;
    app.next_check("example.org").await;
    // example.org's MX flips to iCloud: an MX-change window opens.
    dns.set(
        "example.org",
        Behaviour::mx(&[(10, "mx01.mail.icloud.com")], 300),
    );
    loop {
        let ev = app.next_check("example.org").await;
        if !ev.changes.is_empty() {
            break;
        }
    }
    // Another unlisted domain bounces: the cap is one, and example.org's
    // incident is not over.
    post_bounces(
        &base,
        crate::unknown_user("ann@example.net", clock_now(), "mx.example.net"),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let net: Value = get_json(format!("{base}/v1/domains/example.net")).await;
    assert!(net["auto_watched"].is_null(), "it waits: {net}");
    let org: Value = get_json(format!("{base}/v1/domains/example.org")).await;
    assert!(org["auto_watched"].is_object(), "{org}");
    let open: Vec<Value> = get_json(format!("{base}/v1/windows?active=true")).await;
    assert_eq!(open.len(), 1, "{open:?}");
    let v: Value = get_json(format!(
        "{base}/v1/verdict?recipient=jo@example.org&status=5.1.1&reply_code=550&remote_mta=mx01.mail.icloud.com"
    ))
    .await;
    assert_eq!(v["verdict"], "transient", "{v}");
    app.stop().await;
}
