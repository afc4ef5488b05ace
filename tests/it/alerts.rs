//! Webhook alerts against a wiremock receiver on loopback: a real daemon,
//! real SQLite, real HTTP, real time (short backoffs).

use std::collections::HashMap;
use std::time::Duration;

use hmac::Mac;
use serde_json::Value;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::{TOKEN, TestDns, post_bounces, spawn_app, unknown_user};

const SECRET: &str = "alert-secret-for-tests";

/// Checks a request's signature the way a receiver would.
fn verify(req: &Request, secret: &str) -> bool {
    let ts = req
        .headers
        .get("x-mxwatch-timestamp")
        .and_then(|v| v.to_str().ok());
    let sig = req
        .headers
        .get("x-mxwatch-signature")
        .and_then(|v| v.to_str().ok());
    let (Some(ts), Some(sig)) = (ts, sig) else {
        return false;
    };
    let Some(hex_sig) = sig.strip_prefix("sha256=") else {
        return false;
    };
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(&req.body);
    mac.verify_slice(&hex::decode(hex_sig).unwrap()).is_ok()
}

/// Posts an Apple-like burst: 25 unknown users at iCloud, me.com and
/// mac.com in 25 minutes (each domain alone stays under the thresholds).
/// The daemon stores an anomaly window and reinstatements: outbox events.
/// A day of feed history comes first (anomaly detection warms up on it).
pub async fn post_burst(base: &str) {
    let t0 = chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2021, 4, 26, 11, 0, 0).unwrap();
    post_burst_at(base, t0).await;
}

/// [`post_burst`] starting at `t0` (a daemon on real time needs real
/// dates: far from its arrival, a bounce is dated on arrival).
pub async fn post_burst_at(base: &str, t0: chrono::DateTime<chrono::Utc>) {
    post_bounces(base, crate::history_line(t0)).await;
    for i in 0..25 {
        let line = unknown_user(
            &format!(
                "user{i}@{}",
                ["icloud.com", "me.com", "mac.com"][i as usize % 3]
            ),
            t0 + chrono::Duration::minutes(i),
            "mx01.mail.icloud.com",
        );
        post_bounces(base, line).await;
    }
}

async fn wait_for(what: &str, mut done: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_for_a_while_gets_every_event_once_in_order_signed() {
    let receiver = MockServer::start().await;
    // Down: the first four attempts fail (503, then 429), then it is up.
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(3)
        .with_priority(1)
        .mount(&receiver)
        .await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(429))
        .up_to_n_times(1)
        .with_priority(2)
        .mount(&receiver)
        .await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(200))
        .with_priority(3)
        .mount(&receiver)
        .await;
    Mock::given(method("POST"))
        .and(path("/slack"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    Mock::given(method("POST"))
        .and(path("/gone"))
        .respond_with(ResponseTemplate::new(410))
        .mount(&receiver)
        .await;

    let dns = TestDns::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    std::fs::write(dir.path().join("secret"), SECRET).unwrap();
    let yaml = format!(
        "database: test.db\nschedule: '0 0 1 1 *'\nupstreams: ['{dns}']\nlisten: '127.0.0.1:0'\n\
         api_token_file: '{token}'\n\
         alerts:\n\
         - name: ops\n  url: '{uri}/hook'\n  secret_file: '{secret}'\n  backoff: 50ms\n\
         - name: chat\n  url: '{uri}/slack'\n  format: slack\n  min_severity: critical\n\
         - name: gone\n  url: '{uri}/gone'\n  events: [anomaly_opened]\n\
         domains: [example.de]\n",
        dns = dns.addr,
        token = dir.path().join("token").display(),
        secret = dir.path().join("secret").display(),
        uri = receiver.uri(),
    );
    let app = spawn_app(&yaml);
    let base = format!("http://{}", app.daemon.as_ref().unwrap().api_addr.unwrap());
    post_burst(&base).await;
    // The alert events (the undo events of the same burst are for undo targets).
    let alerts: Vec<_> = app
        .store()
        .outbox()
        .unwrap()
        .into_iter()
        .filter(|o| o.event.is_alert())
        .collect();
    let events: Vec<i64> = alerts.iter().map(|o| o.id).collect();
    let kinds: Vec<String> = alerts.iter().map(|o| o.event.to_string()).collect();
    assert_eq!(kinds, ["anomaly_opened", "reinstatements"], "{kinds:?}");

    let hook_ok = async || {
        let reqs = receiver.received_requests().await.unwrap_or_default();
        let to_hook = reqs.iter().filter(|r| r.url.path() == "/hook").count();
        to_hook >= 4 + events.len()
    };
    wait_for("every event at /hook", hook_ok).await;
    let store = app.store();
    wait_for("the refused delivery recorded", async || {
        store
            .deliveries(
                mxwatch::store::Consumers::Alerts,
                Some(mxwatch::store::DeliveryStatus::Failed),
            )
            .unwrap()
            .len()
            == 1
    })
    .await;
    let reqs = receiver.received_requests().await.unwrap();

    // /hook: the first event four times (down, down, down, 429), then once
    // each, in order, all signed.
    let ids: Vec<String> = reqs
        .iter()
        .filter(|r| r.url.path() == "/hook")
        .map(|r| {
            assert!(verify(r, SECRET), "bad signature");
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(v["version"], 1);
            assert_eq!(v["id"], r.headers["x-mxwatch-id"].to_str().unwrap());
            v["id"].as_str().unwrap().to_string()
        })
        .collect();
    let first = format!("mxwatch-{}", events[0]);
    let second = format!("mxwatch-{}", events[1]);
    let (f, s) = (first.as_str(), second.as_str());
    assert_eq!(ids, [f, f, f, f, f, s], "{ids:?}");
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for r in reqs.iter().filter(|r| r.url.path() == "/slack") {
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        assert!(v["text"].as_str().unwrap().contains("anomaly"), "{v}");
        assert!(v["blocks"].is_array());
        assert!(r.headers.get("x-mxwatch-signature").is_none());
        *counts.entry("slack").or_default() += 1;
    }
    // The chat target wants critical events only: the anomaly, not the
    // reinstatements (a warning).
    assert_eq!(counts.get("slack"), Some(&1));
    // 410 is a refusal for good: tried once, kept as failed.
    let failed = app
        .store()
        .deliveries(
            mxwatch::store::Consumers::Alerts,
            Some(mxwatch::store::DeliveryStatus::Failed),
        )
        .unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!((failed[0].target.as_str(), failed[0].attempts), ("gone", 1));
    assert!(failed[0].last_error.as_deref().unwrap().contains("410"));
    // An operator lists it and asks for another try: the worker tries once
    // more (and the receiver still refuses).
    let config = app.config.source.clone();
    let cli = |args: &[&str]| {
        let mut all = vec!["--config".to_string(), config.display().to_string()];
        all.extend(args.iter().map(|a| a.to_string()));
        let run = tokio::task::spawn_blocking(move || {
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            crate::cli::mxwatch(std::path::Path::new("/"), &refs)
        });
        async move {
            let out = run.await.unwrap();
            (
                out.status.success(),
                out.stdout,
                String::from_utf8_lossy(&out.stderr).to_string(),
            )
        }
    };
    let (ok, stdout, stderr) = cli(&["alerts", "list", "--failed", "--json"]).await;
    assert!(ok, "{stderr}");
    let listed: Value = serde_json::from_slice(&stdout).unwrap();
    assert_eq!(listed["target"], "gone");
    assert_eq!(listed["status"], "failed");
    let id = failed[0].id.to_string();
    let (ok, _, stderr) = cli(&["alerts", "retry", &id]).await;
    assert!(ok, "{stderr}");
    wait_for("the retried delivery's second attempt", async || {
        store.delivery(failed[0].id).unwrap().unwrap().attempts == 2
    })
    .await;
    let (ok, _, stderr) = cli(&["alerts", "retry", "999999"]).await;
    assert!(!ok && stderr.contains("no delivery"), "{stderr}");
    // Every failed one of a target at once (issue 23).
    wait_for("failed again", async || {
        store
            .delivery(failed[0].id)
            .unwrap()
            .unwrap()
            .status
            .as_str()
            == "failed"
    })
    .await;
    let (ok, _, stderr) = cli(&["alerts", "retry", "--all", "--target", "ops"]).await;
    assert!(
        ok && stderr.contains("no failed alert deliveries of ops"),
        "{stderr}"
    );
    let (ok, _, stderr) = cli(&["alerts", "retry", "--all", "--target", "gone"]).await;
    assert!(
        ok && stderr.contains("1 failed alert delivery will be tried again"),
        "{stderr}"
    );
    wait_for("the third attempt", async || {
        store.delivery(failed[0].id).unwrap().unwrap().attempts == 3
    })
    .await;
    let (ok, _, stderr) = cli(&["alerts", "retry"]).await;
    assert!(!ok && stderr.contains("<ID>"), "an id or --all: {stderr}");

    // Two events to ops, one to chat; each acknowledgement is committed
    // just after the receiver answered.
    wait_for("three deliveries acknowledged", async || {
        let all = store
            .deliveries(mxwatch::store::Consumers::Alerts, None)
            .unwrap();
        all.iter()
            .filter(|d| d.status.as_str() == "delivered")
            .count()
            == 3
    })
    .await;
    // Operators see delivery health in /metrics.
    crate::assert_metrics(
        &base,
        &[
            "mxwatch_alert_deliveries{target=\"gone\",status=\"failed\"} 1",
            "mxwatch_alert_deliveries{target=\"ops\",status=\"delivered\"} 2",
            "mxwatch_verdicts_total{verdict=\"transient\",kind=\"user_unknown\"}",
        ],
    )
    .await;
    app.stop().await;
}

#[tokio::test(start_paused = true)]
async fn the_daily_digest_sums_up_the_day_into_the_outbox() {
    let dns = TestDns::start().await;
    dns.set(
        "example.de",
        crate::Behaviour::mx(&[(10, "mx00.example.de")], 300),
    );
    let yaml = format!(
        "{}digest: '0 12 * * *'\ndomains: [example.de]\n",
        crate::base_yaml(&dns)
    );
    let mut app = spawn_app(&yaml);
    app.next_check("example.de").await;
    dns.set(
        "example.de",
        crate::Behaviour::mx(&[(10, "mx01.mail.icloud.com")], 300),
    );
    assert!(app.next_check("example.de").await.window.is_some());
    // The test clock starts at 11:00; the digest is due at 12:00.
    let store = app.store();
    let mut digest = None;
    for _ in 0..120 {
        tokio::time::sleep(Duration::from_secs(60)).await;
        digest = store
            .outbox()
            .unwrap()
            .into_iter()
            .find(|o| o.event == "digest");
        if digest.is_some() {
            break;
        }
    }
    let digest = digest.expect("a digest by 13:00");
    assert_eq!(digest.created_at.format("%H:%M").to_string(), "12:00");
    assert!(
        digest.summary.contains("1 window opened"),
        "{}",
        digest.summary
    );
    assert!(
        digest.summary.contains("mx change example.de since"),
        "{}",
        digest.summary
    );
    app.stop().await;
}

/// A receiver that redirects (302 or 307) is not followed: a 302 would turn
/// the signed POST into a bodiless GET that looks delivered, a 307 would
/// re-post the signed body to another host. The attempt fails, naming the
/// Location, and the other host hears nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_failed_attempts_never_followed() {
    let elsewhere = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(200))
        .mount(&elsewhere)
        .await;
    let receiver = MockServer::start().await;
    for (p, code) in [("/found", 302), ("/temporary", 307)] {
        Mock::given(method("POST"))
            .and(path(p))
            .respond_with(
                ResponseTemplate::new(code)
                    .insert_header("location", format!("{}/stolen", elsewhere.uri()).as_str()),
            )
            .mount(&receiver)
            .await;
    }
    let dns = TestDns::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    let yaml = format!(
        "database: test.db\nschedule: '0 0 1 1 *'\nupstreams: ['{dns}']\nlisten: '127.0.0.1:0'\n\
         api_token_file: '{token}'\n\
         alerts:\n\
         - name: found\n  url: '{uri}/found'\n  backoff: 50ms\n\
         - name: temporary\n  url: '{uri}/temporary'\n  backoff: 50ms\n\
         domains: [example.de]\n",
        dns = dns.addr,
        token = dir.path().join("token").display(),
        uri = receiver.uri(),
    );
    let app = spawn_app(&yaml);
    let base = format!("http://{}", app.daemon.as_ref().unwrap().api_addr.unwrap());
    post_burst(&base).await;
    wait_for("attempts at both targets", async || {
        let d = app
            .store()
            .deliveries(mxwatch::store::Consumers::Alerts, None)
            .unwrap();
        ["found", "temporary"]
            .iter()
            .all(|t| d.iter().any(|x| x.target == *t && x.attempts >= 2))
    })
    .await;
    for d in app
        .store()
        .deliveries(mxwatch::store::Consumers::Alerts, None)
        .unwrap()
    {
        assert_ne!(d.status.as_str(), "delivered", "{d:?}");
        if d.attempts == 0 {
            continue; // in order: the next event waits behind the first
        }
        let e = d.last_error.unwrap_or_default();
        assert!(
            e.contains("a redirect to") && e.contains("/stolen") && e.contains("not followed"),
            "{e}"
        );
    }
    assert!(
        elsewhere.received_requests().await.unwrap().is_empty(),
        "nothing reached the host the redirects pointed at"
    );
    app.stop().await;
}
