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
    std::fs::write(dir.join("flip.jsonl"), FLIP).unwrap();
    let out = crate::passive::import_dnsdb(dir, "test.db", "flip.jsonl");
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::write(dir.join("token"), TOKEN).unwrap();
    std::fs::write(dir.join("lm-token"), LM_TOKEN).unwrap();
    let dns = TestDns::start().await;
    let yaml = format!(
        "database: test.db\nschedule: '0 0 1 1 *'\nupstreams: ['{}']\nlisten: '127.0.0.1:0'\n\
         api_token_file: token\n{extra}forward:\n{forward}domains: [example.de]\n",
        dns.addr
    );
    std::fs::write(dir.join("watchlist.yaml"), yaml).unwrap();
    let config = mxwatch::config::Config::load(&dir.join("watchlist.yaml")).unwrap();
    let app = crate::start(config, Arc::new(tempfile::tempdir().unwrap()));
    let base = format!("http://{}", app.daemon.as_ref().unwrap().api_addr.unwrap());
    std::mem::forget(dns);
    (app, base)
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
    let lm = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(listmonk)
        .mount(&lm)
        .await;
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
