//! Gateway mode (issue 21): mxwatch in front of a bounce handler. Real
//! daemon, real SQLite, real HTTP on loopback, real time (short backoffs);
//! the handlers are wiremock servers that answer as the real ones do.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use serde_json::Value;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::cli::{json_lines, mxwatch_async, stderr};
use crate::{TOKEN, TestDns};

/// The listmonk API user the tests configure, and its token.
const LM_USER: &str = "mxwatch";
const LM_TOKEN: &str = "listmonk-api-token-for-tests";

/// example.de's usual MX, and iCloud's from 09:00 to 13:00 UTC on
/// 2021-04-26 (the day the tests' daemon clock starts at 11:00), as DNSDB
/// exports them; example.org's MX, never changed.
const FLIP: &str = r#"{"obj":{"count":51234,"time_first":1398000000,"time_last":1619500000,"rrname":"example.de.","rrtype":"MX","rdata":["10 mx00.example.de."]}}
{"obj":{"count":12,"time_first":1619427600,"time_last":1619442000,"rrname":"example.de.","rrtype":"MX","rdata":["10 mx01.mail.icloud.com."]}}
{"obj":{"count":9000,"time_first":1398000000,"time_last":1619440000,"rrname":"example.org.","rrtype":"MX","rdata":["10 mx.example.org."]}}
"#;

/// 2021-04-26 11:00 UTC, inside the flip, in seconds.
const AT: i64 = 1_619_434_800;

/// What listmonk's `POST /webhooks/bounce` answers (cmd/bounce.go,
/// `BounceWebhook` and `validateBounceFields`, listmonk v5): 401 without
/// the API user's Basic credentials, 400 for a body that is not JSON, for
/// neither `email` nor `subscriber_uuid`, or for a `type` other than hard,
/// soft or complaint; otherwise 200 `{"data": true}`. `meta` must be JSON
/// (the docs: "an escaped JSON string").
fn listmonk_says(req: &Request) -> Result<(), (u16, &'static str)> {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{LM_USER}:{LM_TOKEN}"));
    let auth = req
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok());
    if auth != Some(&format!("Basic {basic}")) {
        return Err((401, "invalid API credentials"));
    }
    let Ok(v) = serde_json::from_slice::<Value>(&req.body) else {
        return Err((400, "invalid data"));
    };
    if v["email"].as_str().is_none_or(str::is_empty) && v["subscriber_uuid"].as_str().is_none() {
        return Err((400, "invalid fields: email / subscriber_uuid"));
    }
    if !matches!(v["type"].as_str(), Some("hard" | "soft" | "complaint")) {
        return Err((400, "invalid fields: type"));
    }
    if v["source"].as_str().is_none_or(str::is_empty) {
        return Err((400, "invalid fields: source"));
    }
    if let Some(meta) = v.get("meta")
        && serde_json::from_str::<Value>(meta.as_str().unwrap_or("!")).is_err()
    {
        return Err((400, "invalid fields: meta"));
    }
    Ok(())
}

/// listmonk's answers, as [`listmonk_says`] decides them.
fn listmonk(req: &Request) -> ResponseTemplate {
    match listmonk_says(req) {
        Ok(()) => ResponseTemplate::new(200).set_body_json(serde_json::json!({"data": true})),
        Err((code, why)) => {
            ResponseTemplate::new(code).set_body_json(serde_json::json!({"message": why}))
        }
    }
}

/// The bodies a receiver accepted at `at`, in the order they came.
/// A listmonk stand-in on loopback, answering as [`listmonk`] does.
async fn listmonk_stand_in() -> MockServer {
    let lm = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(listmonk)
        .mount(&lm)
        .await;
    lm
}

async fn accepted(server: &MockServer, at: &str) -> Vec<(Request, Value)> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.url.path() == at)
        // What the listmonk stand-in refused was not accepted.
        .filter(|r| !at.starts_with("/lm") || listmonk_says(r).is_ok())
        .map(|r| {
            let v = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            (r, v)
        })
        .collect()
}

async fn wait_for(what: &str, mut done: impl AsyncFnMut() -> bool) {
    for _ in 0..300 {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A daemon on `dir` (the flip imported into its database first) with
/// `forward` as its forward targets.
async fn gateway(dir: &Path, forward: &str, extra: &str) -> (crate::App, String) {
    let (app, base, _) = gateway_with_dns(dir, forward, extra).await;
    (app, base)
}

/// [`gateway`], and the watchlist's text without its forward targets
/// (`forward:` is its last key before `domains`).
async fn gateway_with_dns(dir: &Path, forward: &str, extra: &str) -> (crate::App, String, String) {
    std::fs::write(dir.join("flip.jsonl"), FLIP).unwrap();
    let out = crate::passive::import_dnsdb(dir, "test.db", "flip.jsonl");
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::write(dir.join("token"), TOKEN).unwrap();
    std::fs::write(dir.join("lm-token"), LM_TOKEN).unwrap();
    let dns = TestDns::start().await;
    let head = format!(
        "database: test.db\nschedule: '0 0 1 1 *'\nupstreams: ['{}']\nlisten: '127.0.0.1:0'\n\
         api_token_file: token\n{extra}",
        dns.addr
    );
    let forward = if forward.is_empty() {
        String::new()
    } else {
        format!("forward:\n{forward}")
    };
    std::fs::write(
        dir.join("watchlist.yaml"),
        format!("{head}{forward}domains: [example.de]\n"),
    )
    .unwrap();
    let config = mxwatch::config::Config::load(&dir.join("watchlist.yaml")).unwrap();
    let app = crate::start(config, Arc::new(tempfile::tempdir().unwrap()));
    let base = format!("http://{}", app.daemon.as_ref().unwrap().api_addr.unwrap());
    std::mem::forget(dns);
    (app, base, head)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_added_by_a_reload_gets_what_arrives_after_it() {
    let lm = listmonk_stand_in().await;
    let dir = tempfile::tempdir().unwrap();
    let (app, base, head) = gateway_with_dns(dir.path(), "", "").await;
    crate::post_bounces(&base, unknown("before@example.org", 0, "mx.example.org")).await;
    assert!(
        app.outbox_events().is_empty(),
        "nothing is announced with no target"
    );

    let target = listmonk_target("listmonk", &format!("{}/lm/webhooks/bounce", lm.uri()), "");
    let path = dir.path().join("watchlist.yaml");
    std::fs::write(
        &path,
        format!("{head}forward:\n{target}domains: [example.de]\n"),
    )
    .unwrap();
    let config = mxwatch::config::Config::load(&path).unwrap();
    app.daemon.as_ref().unwrap().reload(&config).await;
    crate::post_bounces(&base, unknown("after@example.org", 1, "mx.example.org")).await;
    wait_for("the bounce after the reload", async || {
        !accepted(&lm, "/lm/webhooks/bounce").await.is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = accepted(&lm, "/lm/webhooks/bounce").await;
    let emails: Vec<&str> = got
        .iter()
        .map(|(_, v)| v["email"].as_str().unwrap())
        .collect();
    assert_eq!(emails, ["after@example.org"]);
    app.stop().await;
}

/// A normalised unknown-user bounce of `who` at [`AT`] plus `minutes`, from `remote`.
fn unknown(who: &str, minutes: i64, remote: &str) -> String {
    let at = chrono::DateTime::from_timestamp(AT + minutes * 60, 0).unwrap();
    crate::unknown_user(who, at, remote)
}

fn a_target(name: &str, url: &str, more: &str) -> String {
    format!("  - name: {name}\n    url: '{url}'\n    backoff: 50ms\n{more}")
}

fn listmonk_target(name: &str, url: &str, more: &str) -> String {
    a_target(
        name,
        url,
        &format!("    format: listmonk\n    user: {LM_USER}\n    password_file: lm-token\n{more}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listmonk_gets_hard_for_a_genuine_unknown_user_soft_inside_an_icloud_flip() {
    let lm = listmonk_stand_in().await;
    let dir = tempfile::tempdir().unwrap();
    let forward = format!(
        "{}{}",
        listmonk_target("listmonk", &format!("{}/lm/webhooks/bounce", lm.uri()), ""),
        listmonk_target(
            "careful",
            &format!("{}/lm2/webhooks/bounce", lm.uri()),
            "    transient: hold\n"
        )
    );
    let (app, base) = gateway(dir.path(), &forward, "").await;

    let genuine = unknown("bob@example.org", 0, "mx.example.org");
    let flipped = unknown("kim@example.de", 0, "mx01.mail.icloud.com");
    crate::post_bounces(&base, format!("{genuine}\n{flipped}")).await;
    // A complaint, from SendGrid's event webhook: the handler turns it into
    // an unsubscribe, so it must get through whatever its verdict.
    let complaint = format!(
        r#"[{{"email":"eve@example.org","event":"spamreport","timestamp":{AT},"sg_event_id":"c1"}}]"#
    );
    let r = crate::post(&base, "/v1/webhooks/sendgrid", Some(TOKEN), complaint).await;
    assert_eq!(r.status(), 200);

    wait_for("three bounces at listmonk", async || {
        accepted(&lm, "/lm/webhooks/bounce").await.len() == 3
    })
    .await;
    let got = accepted(&lm, "/lm/webhooks/bounce").await;
    let by = |email: &str| {
        got.iter()
            .map(|(_, v)| v)
            .find(|v| v["email"] == email)
            .unwrap_or_else(|| panic!("{email} not forwarded: {got:?}"))
            .clone()
    };
    let bob = by("bob@example.org");
    assert_eq!(bob["type"], "hard", "{bob}");
    let kim = by("kim@example.de");
    assert_eq!(kim["type"], "soft", "{kim}");
    let meta: Value = serde_json::from_str(kim["meta"].as_str().unwrap()).unwrap();
    assert_eq!(meta["mxwatch"]["verdict"], "transient", "{meta}");
    assert_eq!(
        meta["mxwatch"]["evidence"][0]["kind"], "mx_change",
        "{meta}"
    );
    assert!(
        meta["mxwatch"]["id"]
            .as_str()
            .unwrap()
            .starts_with("mxwatch-")
    );
    assert_eq!(by("eve@example.org")["type"], "complaint");
    // Nothing mxwatch sent was refused by the handler.
    let all = lm.received_requests().await.unwrap();
    for r in &all {
        assert_eq!(
            listmonk_says(r),
            Ok(()),
            "{}",
            String::from_utf8_lossy(&r.body)
        );
    }

    // The careful target holds kim's: listed, then released by hand, then
    // sent as it came (hard).
    wait_for("bob and eve at the careful target", async || {
        accepted(&lm, "/lm2/webhooks/bounce").await.len() == 2
    })
    .await;
    let out = mxwatch_async(dir.path(), &["forward", "list", "--held", "--json"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let held = json_lines(&out);
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0]["target"], "careful");
    assert!(
        held[0]["note"].as_str().unwrap().contains("transient"),
        "{}",
        held[0]
    );
    let id = held[0]["id"].to_string();
    let out = mxwatch_async(dir.path(), &["forward", "release", &id]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("released"), "{}", stderr(&out));
    wait_for("kim released", async || {
        accepted(&lm, "/lm2/webhooks/bounce").await.len() == 3
    })
    .await;
    let got = accepted(&lm, "/lm2/webhooks/bounce").await;
    assert_eq!(got[2].1["email"], "kim@example.de");
    assert_eq!(got[2].1["type"], "hard", "released: as it came");
    let out = mxwatch_async(dir.path(), &["forward", "release", &id]).await;
    assert!(!out.status.success(), "a delivery is released once");

    crate::assert_metrics(
        &base,
        &[
            "mxwatch_forwarded_total{target=\"listmonk\",verdict=\"transient\",outcome=\"delivered\"} 1",
            "mxwatch_forwarded_total{target=\"listmonk\",verdict=\"suppress\",outcome=\"delivered\"} 1",
            "mxwatch_forwarded_total{target=\"careful\",verdict=\"transient\",outcome=\"held\"} 1",
        ],
    )
    .await;
    app.stop().await;
}

/// A window withdrawn as false (`windows close`) while the daemon runs:
/// the bounce listmonk got as `soft` inside it is sent again as `hard`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bounce_forwarded_as_soft_is_sent_again_as_hard_when_its_window_is_withdrawn() {
    let lm = listmonk_stand_in().await;
    let dir = tempfile::tempdir().unwrap();
    let forward = listmonk_target("listmonk", &format!("{}/lm/webhooks/bounce", lm.uri()), "");
    let (app, base) = gateway(dir.path(), &forward, "").await;
    let flipped = unknown("kim@example.de", 0, "mx01.mail.icloud.com");
    crate::post_bounces(&base, flipped).await;
    wait_for("kim at listmonk", async || {
        accepted(&lm, "/lm/webhooks/bounce").await.len() == 1
    })
    .await;
    assert_eq!(
        accepted(&lm, "/lm/webhooks/bounce").await[0].1["type"],
        "soft"
    );
    let windows = app.store().windows(None).unwrap();
    let id = windows
        .iter()
        .find(|w| w.domain.as_deref() == Some("example.de"))
        .unwrap()
        .id
        .to_string();
    let out = mxwatch_async(
        dir.path(),
        &[
            "windows",
            "close",
            &id,
            "--reason",
            "the flip was a planned move",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for("kim again", async || {
        accepted(&lm, "/lm/webhooks/bounce").await.len() == 2
    })
    .await;
    let again = accepted(&lm, "/lm/webhooks/bounce").await[1].1.clone();
    assert_eq!(again["email"], "kim@example.de");
    assert_eq!(again["type"], "hard", "{again}");
    let meta: Value = serde_json::from_str(again["meta"].as_str().unwrap()).unwrap();
    assert_eq!(meta["mxwatch"]["verdict"], "suppress", "{meta}");
    app.stop().await;
}

/// The SNS signature fixtures and a stand-in for AWS serving their
/// certificates (as the SNS tests of issue 20 do).
async fn sns_setup() -> (MockServer, String) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sns");
    let certs = MockServer::start().await;
    for file in ["SimpleNotificationService-chain.pem", "r2m99.cer"] {
        Mock::given(method("GET"))
            .and(path(format!("/{file}")))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_bytes(std::fs::read(fixtures.join(file)).unwrap()),
            )
            .mount(&certs)
            .await;
    }
    let extra = format!(
        "sns_signing_cert_base: '{}'\nsns_trust_anchors_file: '{}'\n",
        certs.uri(),
        fixtures.join("chain-root.pem").display()
    );
    (certs, extra)
}

/// SendGrid's event webhook: a batch of `events` (JSON objects).
fn sendgrid_batch(events: &[String]) -> String {
    format!("[{}]", events.join(",\n "))
}

fn sendgrid_bounce(who: &str, id: &str) -> String {
    format!(
        r#"{{"email":"{who}","event":"bounce","type":"bounce","status":"5.1.1","reason":"550 5.1.1 <{who}>: user lookup success but no user record found","timestamp":{AT},"sg_event_id":"{id}"}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_sends_the_esps_bytes_and_holds_what_it_cannot_rewrite() {
    let handler = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&handler)
        .await;
    let (_certs, extra) = sns_setup().await;
    let dir = tempfile::tempdir().unwrap();
    let forward = format!(
        "{}{}",
        a_target(
            "listmonk-ses",
            &format!("{}/webhooks/service/ses", handler.uri()),
            "    format: passthrough\n    sources: [ses]\n"
        ),
        a_target(
            "listmonk-sendgrid",
            &format!("{}/webhooks/service/sendgrid", handler.uri()),
            "    format: passthrough\n    sources: [sendgrid]\n"
        ),
    );
    let (app, base) = gateway(dir.path(), &forward, &extra).await;
    let http = mxwatch::http_client();

    // A signed SNS notification: byte for byte, with its SNS headers.
    let sns = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sns/notification-chain-v1.json"),
    )
    .unwrap();
    let post_sns = async || {
        http.post(format!("{base}/v1/webhooks/ses"))
            .bearer_auth(TOKEN)
            .header("content-type", "text/plain; charset=UTF-8")
            .header("x-amz-sns-message-type", "Notification")
            .header(
                "x-amz-sns-message-id",
                "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf321",
            )
            .header(
                "x-amz-sns-topic-arn",
                "arn:aws:sns:us-east-1:123456789012:ses-bounces",
            )
            .body(sns.clone())
            .send()
            .await
            .unwrap()
    };
    let r = post_sns().await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    // The same message again (an SNS retry): forwarded once.
    assert_eq!(post_sns().await.status(), 200);

    // An unsigned SendGrid batch: kim's bounce came during the flip
    // (transient: it must not reach the handler as hard), bob's is genuine,
    // and an open passes as it is.
    let kim = sendgrid_bounce("kim@example.de", "k1");
    let bob = sendgrid_bounce("bob@example.org", "b1");
    let open = format!(
        r#"{{"email":"ann@example.org","event":"open","timestamp":{AT},"sg_event_id":"o1"}}"#
    );
    let batch = sendgrid_batch(&[kim.clone(), bob.clone(), open.clone()]);
    let r = crate::post(&base, "/v1/webhooks/sendgrid", Some(TOKEN), batch.clone()).await;
    assert_eq!(r.status(), 200);
    // The same batch signed (SendGrid's signed event webhook): it cannot
    // be cut, so it is held whole.
    let signed = sendgrid_batch(&[sendgrid_bounce("kim@example.de", "k2"), open.clone()]);
    let r = http
        .post(format!("{base}/v1/webhooks/sendgrid"))
        .bearer_auth(TOKEN)
        .header(
            "x-twilio-email-event-webhook-signature",
            "MEUCIQC-signature",
        )
        .header("x-twilio-email-event-webhook-timestamp", "1619434800")
        .body(signed.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let at = |p: &'static str| {
        let handler = &handler;
        async move { accepted(handler, p).await }
    };
    wait_for("the SNS notification and the cut batch", async || {
        at("/webhooks/service/ses").await.len() == 1
            && at("/webhooks/service/sendgrid").await.len() == 1
    })
    .await;
    let (ses, _) = &at("/webhooks/service/ses").await[0];
    assert_eq!(ses.body, sns, "byte for byte");
    for (name, value) in [
        ("x-amz-sns-message-type", "Notification"),
        (
            "x-amz-sns-message-id",
            "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf321",
        ),
        (
            "x-amz-sns-topic-arn",
            "arn:aws:sns:us-east-1:123456789012:ses-bounces",
        ),
        ("content-type", "text/plain; charset=UTF-8"),
    ] {
        assert_eq!(ses.headers.get(name).unwrap(), value, "{name}");
    }
    assert!(
        ses.headers.get("authorization").is_none(),
        "mxwatch's token stays with mxwatch"
    );
    let (sg, _) = &at("/webhooks/service/sendgrid").await[0];
    assert_eq!(
        String::from_utf8_lossy(&sg.body),
        format!("[{bob},{open}]"),
        "the passing events, each as it came"
    );

    let out = mxwatch_async(dir.path(), &["forward", "list", "--held", "--json"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let held = json_lines(&out);
    assert_eq!(held.len(), 2, "{held:?}");
    let note = |i: usize| held[i]["note"].as_str().unwrap().to_string();
    // Newest first: the signed batch, held whole; then the cut batch's rest.
    assert!(note(0).contains("signed batch, held whole"), "{}", note(0));
    assert!(
        note(1).contains("the rest of the batch, held"),
        "{}",
        note(1)
    );
    for h in &held {
        let out = mxwatch_async(dir.path(), &["forward", "release", &h["id"].to_string()]).await;
        assert!(out.status.success(), "{}", stderr(&out));
    }
    wait_for("the released requests", async || {
        at("/webhooks/service/sendgrid").await.len() == 3
    })
    .await;
    let bodies: Vec<String> = at("/webhooks/service/sendgrid")
        .await
        .iter()
        .map(|(r, _)| String::from_utf8_lossy(&r.body).to_string())
        .collect();
    assert!(bodies.contains(&format!("[{kim}]")), "{bodies:?}");
    assert!(bodies.contains(&signed), "{bodies:?}");
    let signed_copy = at("/webhooks/service/sendgrid")
        .await
        .into_iter()
        .find(|(r, _)| r.body == signed.as_bytes())
        .unwrap();
    assert_eq!(
        signed_copy
            .0
            .headers
            .get("x-twilio-email-event-webhook-signature")
            .unwrap(),
        "MEUCIQC-signature"
    );
    assert_eq!(
        at("/webhooks/service/ses").await.len(),
        1,
        "the SNS retry is not forwarded again"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_targets_hear_when_a_bounce_forwarded_as_hard_is_reinstated() {
    let handler = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&handler)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let forward = a_target(
        "mine",
        &format!("{}/hook", handler.uri()),
        "    format: json\n    bearer_file: lm-token\n",
    );
    // An alert target beside: it reads only alert events, passing the
    // forwarding ones by.
    let alerts = format!(
        "alerts:\n  - name: ops\n    url: '{}/alerts'\n",
        handler.uri()
    );
    let (app, base) = gateway(dir.path(), &forward, &alerts).await;
    // Apple's 26 April 2021: the first unknown users at iCloud look genuine
    // and are forwarded as hard; the burst, found later, turns them over.
    crate::alerts::post_burst(&base).await;
    wait_for("reinstated events", async || {
        accepted(&handler, "/hook")
            .await
            .iter()
            .any(|(_, v)| v["type"] == "reinstated")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = accepted(&handler, "/hook").await;
    for (r, _) in &got {
        assert_eq!(
            r.headers.get("authorization").unwrap(),
            &format!("Bearer {LM_TOKEN}")
        );
    }
    let hard: Vec<&Value> = got
        .iter()
        .map(|(_, v)| v)
        .filter(|v| v["type"] == "bounce" && v["forward_as"] == "hard")
        .collect();
    let reinstated: Vec<&Value> = got
        .iter()
        .map(|(_, v)| v)
        .filter(|v| v["type"] == "reinstated")
        .collect();
    assert!(!hard.is_empty() && !reinstated.is_empty(), "{got:?}");
    for r in &reinstated {
        assert_eq!(r["version"], 1);
        assert_ne!(r["verdict"], "suppress", "{r}");
        let first = hard
            .iter()
            .find(|h| h["id"] == r["follows"])
            .unwrap_or_else(|| panic!("{r} follows no bounce forwarded as hard"));
        assert_eq!(first["bounce"]["recipient"], r["bounce"]["recipient"]);
    }
    let alerted: Vec<String> = accepted(&handler, "/alerts")
        .await
        .iter()
        .map(|(_, v)| v["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(alerted, ["anomaly_opened", "reinstatements"]);
    let newest = app.store().last_outbox_id().unwrap();
    wait_for("the alert target's cursor past every event", async || {
        app.store().alert_cursor("ops").unwrap() == Some(newest)
    })
    .await;
    // Every bounce forwarded as hard that is now reinstated got its follow-up.
    let now: Vec<Value> = crate::get_json(format!("{base}/v1/reinstatements")).await;
    assert_eq!(reinstated.len(), now.len(), "{now:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_down_then_up_gets_every_event_once_in_order_and_never_delays_the_esp() {
    let lm = MockServer::start().await;
    // The handler hangs for 5 s, then is down (503) for its next 5 answers,
    // then up.
    let calls = Arc::new(AtomicUsize::new(0));
    let n = calls.clone();
    Mock::given(method("POST"))
        .respond_with(
            move |req: &Request| match n.fetch_add(1, Ordering::SeqCst) {
                0 => ResponseTemplate::new(200).set_delay(Duration::from_secs(5)),
                1..=5 => ResponseTemplate::new(503),
                _ => listmonk(req),
            },
        )
        .mount(&lm)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let forward = listmonk_target(
        "listmonk",
        &format!("{}/lm/webhooks/bounce", lm.uri()),
        "    timeout: 1s\n",
    );
    let (app, base) = gateway(dir.path(), &forward, "").await;
    let mut ids = Vec::new();
    for i in 0..10 {
        let started = std::time::Instant::now();
        let v = crate::post_bounces(
            &base,
            unknown(&format!("u{i}@example.org"), i, "mx.example.org"),
        )
        .await;
        // Answered once committed, whatever the handler does.
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(v["stored"], 1);
        ids.push(format!("u{i}@example.org"));
    }
    // Accepted: what came after the hang (timed out) and the five 503s.
    let answered = async || {
        let all = accepted(&lm, "/lm/webhooks/bounce").await;
        all.into_iter().skip(6).collect::<Vec<_>>()
    };
    wait_for("ten bounces accepted", async || {
        answered().await.len() >= 10
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = answered().await;
    let emails: Vec<&str> = got
        .iter()
        .map(|(_, v)| v["email"].as_str().unwrap())
        .collect();
    assert_eq!(emails, ids, "each once, in order");
    let event_ids: Vec<&str> = got
        .iter()
        .map(|(r, _)| r.headers.get("x-mxwatch-id").unwrap().to_str().unwrap())
        .collect();
    let mut unique = event_ids.clone();
    unique.dedup();
    assert_eq!(unique.len(), 10, "{event_ids:?}");
    let d = app
        .store()
        .deliveries(mxwatch::store::Consumers::Forward, None)
        .unwrap();
    assert!(
        d.iter()
            .all(|d| d.status == mxwatch::store::DeliveryStatus::Delivered),
        "{d:?}"
    );
    assert!(
        d.iter().any(|d| d.attempts > 1),
        "the first waited for the handler: {d:?}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_payloads_go_nowhere_refusals_fail_for_good_and_redirects_are_not_followed() {
    let handler = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/gone"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(serde_json::json!({"message": "invalid data"})),
        )
        .mount(&handler)
        .await;
    Mock::given(method("POST"))
        .and(path("/moved"))
        .respond_with(ResponseTemplate::new(307).insert_header("location", "/elsewhere"))
        .mount(&handler)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&handler)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let forward = format!(
        "{}{}{}",
        a_target(
            "gone",
            &format!("{}/gone", handler.uri()),
            "    format: json\n"
        ),
        a_target(
            "moved",
            &format!("{}/moved", handler.uri()),
            "    format: json\n"
        ),
        a_target(
            "raw",
            &format!("{}/raw", handler.uri()),
            "    format: passthrough\n    sources: [sendgrid, postmark]\n"
        ),
    );
    let (app, base) = gateway(dir.path(), &forward, "").await;

    // Not a payload any receiver reads: 400 with the reason, nothing kept.
    for (path, body) in [
        ("/v1/webhooks/sendgrid", "[{\"email\": "),
        (
            "/v1/webhooks/postmark",
            "{\"RecordType\": \"Bounce\", \"Email\": \"not an address\"}",
        ),
        ("/v1/bounces", "hello"),
    ] {
        let r = crate::post(&base, path, Some(TOKEN), body).await;
        assert_eq!(r.status(), 400, "{path}");
        let v: Value = r.json().await.unwrap();
        assert!(!v["error"].as_str().unwrap().is_empty(), "{v}");
    }
    assert!(app.outbox_events().is_empty(), "{:?}", app.outbox_events());

    crate::post_bounces(&base, unknown("bob@example.org", 0, "mx.example.org")).await;
    wait_for("an attempt at each", async || {
        let d = app
            .store()
            .deliveries(mxwatch::store::Consumers::Forward, None)
            .unwrap();
        d.len() == 2 && d.iter().all(|d| d.attempts >= 1)
    })
    .await;
    let d = app
        .store()
        .deliveries(mxwatch::store::Consumers::Forward, None)
        .unwrap();
    let of = |t: &str| {
        d.iter()
            .find(|d| d.target == format!("forward:{t}"))
            .unwrap()
            .clone()
    };
    let gone = of("gone");
    assert_eq!(gone.status, mxwatch::store::DeliveryStatus::Failed);
    assert_eq!(gone.attempts, 1, "refused for good: not retried");
    let moved = of("moved");
    assert!(
        moved.last_error.as_deref().unwrap().contains("redirect"),
        "{moved:?}"
    );
    let reqs = handler.received_requests().await.unwrap();
    assert!(
        reqs.iter().all(|r| r.url.path() != "/elsewhere"),
        "a redirect is not followed"
    );
    assert!(
        reqs.iter().all(|r| r.url.path() != "/raw"),
        "nothing reached the passthrough target"
    );
    let out = mxwatch_async(dir.path(), &["forward", "list", "--failed"]).await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("400"),
        "{out:?}"
    );
    // Alerts and forwards share the engine, not their commands.
    let id = gone.id.to_string();
    let out = mxwatch_async(dir.path(), &["alerts", "retry", &id]).await;
    assert!(
        !out.status.success() && stderr(&out).contains("no delivery"),
        "{out:?}"
    );
    let out = mxwatch_async(dir.path(), &["forward", "retry", &id]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for("the retried attempt", async || {
        let d = app.store().delivery(gone.id).unwrap().unwrap();
        d.attempts == 2 && d.status == mxwatch::store::DeliveryStatus::Failed
    })
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_delivery_loses_nothing_and_keeps_the_order() {
    use crate::service::{free_port, start, wait_healthy};
    let lm = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(|req: &Request| listmonk(req).set_delay(Duration::from_millis(40)))
        .mount(&lm)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    std::fs::write(dir.path().join("lm-token"), LM_TOKEN).unwrap();
    std::fs::write(
        dir.path().join("watchlist.yaml"),
        format!(
            "database: mxwatch.db\nschedule: '0 0 1 1 *'\nupstreams: ['127.0.0.1:9']\n\
             listen: '127.0.0.1:{port}'\napi_token_file: token\nforward:\n{}domains: [example.de]\n",
            listmonk_target("listmonk", &format!("{}/lm/webhooks/bounce", lm.uri()), "")
        ),
    )
    .unwrap();
    let mut child = start(dir.path());
    wait_healthy(&base).await;
    let now = chrono::Utc::now().timestamp();
    let mut posted = Vec::new();
    for i in 0..40 {
        let who = format!("u{i}@example.org");
        let body = format!(
            r#"{{"email":"{who}","event":"bounce","status":"5.1.1","reason":"550 5.1.1 no such user","timestamp":{}}}"#,
            now - 600 + i
        );
        let r = crate::post(&base, "/v1/webhooks/sendgrid", Some(TOKEN), body).await;
        assert_eq!(r.status(), 200);
        posted.push(who);
    }
    // Killed while the handler is being sent the events one by one.
    wait_for("some deliveries", async || {
        lm.received_requests().await.unwrap().len() >= 8
    })
    .await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = lm.received_requests().await.unwrap().len();
    assert!(
        before < 40,
        "the kill came too late to test anything ({before})"
    );

    let _child = start(dir.path());
    wait_healthy(&base).await;
    let firsts = async || {
        let mut seen: Vec<String> = Vec::new();
        for r in lm.received_requests().await.unwrap() {
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            let who = v["email"].as_str().unwrap().to_string();
            if !seen.contains(&who) {
                seen.push(who);
            }
        }
        seen
    };
    wait_for("every event after the restart", async || {
        firsts().await.len() == 40
    })
    .await;
    assert_eq!(firsts().await, posted, "nothing lost, in order");
    let total = lm.received_requests().await.unwrap().len();
    assert!(
        total <= 40 + 64,
        "at most the run in flight is sent again ({total})"
    );
}

/// README's listmonk example, as written, run against the listmonk
/// stand-in (only the addresses and files are this test's own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_listmonk_example_works() {
    use crate::service::{free_port, wait_healthy};
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let block = readme
        .split("<!-- listmonk-example -->\n```yaml\n")
        .nth(1)
        .and_then(|rest| rest.split("```\n<!-- /listmonk-example -->").next())
        .expect("README has the listmonk example");
    let lm = listmonk_stand_in().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    let yaml = block
        .replace(
            "listen: 127.0.0.1:8025",
            &format!("listen: 127.0.0.1:{port}"),
        )
        .replace("/etc/mxwatch/api-token", "token")
        .replace("http://127.0.0.1:9000", &lm.uri());
    assert_ne!(yaml, block);
    std::fs::write(
        dir.path().join("watchlist.yaml"),
        format!("database: mx.db\nupstreams: ['127.0.0.1:9']\nschedule: '0 0 1 1 *'\n{yaml}"),
    )
    .unwrap();
    let _child = crate::service::Running(
        std::process::Command::new(env!("CARGO_BIN_EXE_mxwatch"))
            .current_dir(dir.path())
            .args(["run"])
            .env_remove("MXWATCH_CONFIG")
            .env("LISTMONK_API_TOKEN", LM_TOKEN)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&base).await;
    let now = chrono::Utc::now().timestamp();
    let body = format!(
        r#"[{{"email":"bob@example.org","event":"bounce","status":"5.1.1","reason":"550 5.1.1 no such user","timestamp":{now}}}]"#
    );
    let r = crate::post(&base, "/v1/webhooks/sendgrid", Some(TOKEN), body).await;
    assert_eq!(r.status(), 200);
    wait_for("the bounce at listmonk", async || {
        !accepted(&lm, "/webhooks/bounce").await.is_empty()
    })
    .await;
    let got = lm.received_requests().await.unwrap();
    assert_eq!(listmonk_says(&got[0]), Ok(()));
    let v: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(
        (v["email"].as_str(), v["type"].as_str()),
        (Some("bob@example.org"), Some("hard"))
    );
}
