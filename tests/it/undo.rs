//! Undo false suppressions (issue 22): each provider's API stood in by a
//! mock that checks method, path, auth and body as the provider documents
//! them. Real daemon, real SQLite, real HTTP on loopback.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use hmac::Mac;
use serde_json::Value;
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::cli::{json_lines, mxwatch_async, stderr};
use crate::{TOKEN, TestDns};

/// The flip of `forward.rs`: example.de's MX at iCloud 09:00–13:00 UTC on
/// 2021-04-26; example.org's never changed.
const FLIP: &str = r#"{"obj":{"count":51234,"time_first":1398000000,"time_last":1619500000,"rrname":"example.de.","rrtype":"MX","rdata":["10 mx00.example.de."]}}
{"obj":{"count":12,"time_first":1619427600,"time_last":1619442000,"rrname":"example.de.","rrtype":"MX","rdata":["10 mx01.mail.icloud.com."]}}
{"obj":{"count":9000,"time_first":1398000000,"time_last":1619440000,"rrname":"example.org.","rrtype":"MX","rdata":["10 mx.example.org."]}}
"#;

/// 2021-04-26 11:00 UTC, inside the flip.
const AT: i64 = 1_619_434_800;

/// The secrets of the tests' targets: none may appear in a log line, an
/// error or an API answer.
const SG_KEY: &str = "SG.sendgrid-secret-key-for-tests";
const MG_KEY: &str = "key-mailgun-secret-for-tests";
const PM_TOKEN: &str = "postmark-server-token-for-tests";
const LM_TOKEN: &str = "listmonk-undo-token-for-tests";
const AWS_ID: &str = "AKIDMXWATCHTEST0001";
const AWS_SECRET: &str = "aws-secret-access-key-for-tests/0123456789";

fn secrets() -> [&'static str; 6] {
    [SG_KEY, MG_KEY, PM_TOKEN, LM_TOKEN, AWS_ID, AWS_SECRET]
}

async fn wait_for(what: &str, mut done: impl AsyncFnMut() -> bool) {
    for _ in 0..400 {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Writes the secrets into files of `dir`.
fn secret_files(dir: &Path) {
    for (f, v) in [
        ("sg.key", SG_KEY),
        ("mg.key", MG_KEY),
        ("pm.token", PM_TOKEN),
        ("lm.token", LM_TOKEN),
        ("aws.id", AWS_ID),
        ("aws.secret", AWS_SECRET),
        ("token", TOKEN),
    ] {
        std::fs::write(dir.join(f), v).unwrap();
    }
}

/// One undo target of each provider at `base` (each under its own path).
fn targets(base: &str, more: &str) -> String {
    format!(
        "undo:\n\
         - name: ses-main\n  provider: ses\n  region: eu-west-1\n  base_url: '{base}/ses'\n  \
           access_key_id_file: aws.id\n  secret_access_key_file: aws.secret\n  enabled: true\n  dry_run: false\n  backoff: 50ms\n{more}\
         - name: sendgrid-main\n  provider: sendgrid\n  base_url: '{base}/sendgrid'\n  api_key_file: sg.key\n  \
           on_behalf_of: sub1\n  enabled: true\n  dry_run: false\n  backoff: 50ms\n{more}\
         - name: mailgun-main\n  provider: mailgun\n  base_url: '{base}/mailgun'\n  api_key_file: mg.key\n  \
           domain: mg.example.com\n  enabled: true\n  dry_run: false\n  backoff: 50ms\n{more}\
         - name: postmark-main\n  provider: postmark\n  base_url: '{base}/postmark'\n  api_key_file: pm.token\n  \
           stream: broadcast\n  enabled: true\n  dry_run: false\n  backoff: 50ms\n{more}\
         - name: listmonk-main\n  provider: listmonk\n  base_url: '{base}/listmonk'\n  user: mxwatch\n  \
           api_key_file: lm.token\n  enabled: true\n  dry_run: false\n  backoff: 50ms\n{more}"
    )
}

/// A daemon on `dir` with the flip imported first and `yaml` added.
async fn daemon(dir: &Path, yaml: &str) -> (crate::App, String) {
    std::fs::write(dir.join("flip.jsonl"), FLIP).unwrap();
    let out = crate::passive::import_dnsdb(dir, "test.db", "flip.jsonl");
    assert!(out.status.success(), "{}", stderr(&out));
    secret_files(dir);
    let dns = TestDns::start().await;
    std::fs::write(
        dir.join("watchlist.yaml"),
        format!(
            "database: test.db\nschedule: '0 0 1 1 *'\nupstreams: ['{}']\nlisten: '127.0.0.1:0'\n\
             api_token_file: token\n{yaml}domains: [example.de]\n",
            dns.addr
        ),
    )
    .unwrap();
    let config = mxwatch::config::Config::load(&dir.join("watchlist.yaml")).unwrap();
    let app = crate::start(config, Arc::new(tempfile::tempdir().unwrap()));
    let base = format!("http://{}", app.daemon.as_ref().unwrap().api_addr.unwrap());
    std::mem::forget(dns);
    (app, base)
}

/// What each provider's API answers, checking the request as its
/// documentation describes it; `Err` names what is wrong.
fn provider_says(req: &Request) -> Result<ResponseTemplate, String> {
    let path = req.url.path();
    let auth = req
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let basic = |user: &str, pass: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        )
    };
    let m = req.method.as_str();
    if let Some(rest) = path.strip_prefix("/ses/v2/email/suppression/addresses/") {
        (m == "DELETE").then_some(()).ok_or("SES: not DELETE")?;
        let want = sigv4(req).ok_or("SES: no x-amz-date")?;
        (auth == want)
            .then_some(())
            .ok_or(format!("SES: {auth} != {want}"))?;
        assert!(
            rest.contains("%40"),
            "the address is one path segment: {rest}"
        );
        return Ok(ResponseTemplate::new(200).set_body_json(serde_json::json!({})));
    }
    if path.starts_with("/sendgrid/v3/suppression/bounces/") {
        (m == "DELETE")
            .then_some(())
            .ok_or("SendGrid: not DELETE")?;
        (auth == format!("Bearer {SG_KEY}"))
            .then_some(())
            .ok_or("SendGrid: auth")?;
        let sub = req.headers.get("on-behalf-of").map(|v| v.to_str().unwrap());
        (sub == Some("sub1"))
            .then_some(())
            .ok_or("SendGrid: on-behalf-of")?;
        return Ok(ResponseTemplate::new(204));
    }
    if path.starts_with("/mailgun/v3/mg.example.com/bounces/") {
        (m == "DELETE").then_some(()).ok_or("Mailgun: not DELETE")?;
        (auth == basic("api", MG_KEY))
            .then_some(())
            .ok_or("Mailgun: auth")?;
        return Ok(ResponseTemplate::new(200)
            .set_body_json(serde_json::json!({"message": "Bounced address has been removed"})));
    }
    if path == "/postmark/message-streams/broadcast/suppressions/delete" {
        (m == "POST").then_some(()).ok_or("Postmark: not POST")?;
        let token = req
            .headers
            .get("x-postmark-server-token")
            .map(|v| v.to_str().unwrap());
        (token == Some(PM_TOKEN))
            .then_some(())
            .ok_or("Postmark: token")?;
        let v: Value = serde_json::from_slice(&req.body).map_err(|e| e.to_string())?;
        let who = v["Suppressions"][0]["EmailAddress"]
            .as_str()
            .ok_or("Postmark: body")?;
        (v["Suppressions"].as_array().map(Vec::len) == Some(1))
            .then_some(())
            .ok_or("Postmark: one address")?;
        return Ok(ResponseTemplate::new(200).set_body_json(
            serde_json::json!({"Suppressions": [{"EmailAddress": who, "Status": "Deleted", "Message": null}]}),
        ));
    }
    if let Some(rest) = path.strip_prefix("/listmonk/api/subscribers") {
        (auth == basic("mxwatch", LM_TOKEN))
            .then_some(())
            .ok_or("listmonk: auth")?;
        return match (m, rest) {
            ("GET", "") => {
                let search = req
                    .url
                    .query_pairs()
                    .find(|(k, _)| k == "search")
                    .map(|(_, v)| v.to_string())
                    .ok_or("listmonk: search")?;
                // Full-text search: a near miss comes first.
                Ok(ResponseTemplate::new(200).set_body_json(
                    serde_json::json!({"data": {"results": [
                    {"id": 1, "email": format!("x{search}"), "status": "enabled"},
                    {"id": 42, "email": search.to_uppercase(), "status": "blocklisted"},
                ], "total": 2}}),
                ))
            }
            ("DELETE", "/42/bounces") => {
                Ok(ResponseTemplate::new(200).set_body_json(serde_json::json!({"data": true})))
            }
            ("PATCH", "/42") => {
                let v: Value = serde_json::from_slice(&req.body).map_err(|e| e.to_string())?;
                (v == serde_json::json!({"status": "enabled"}))
                    .then_some(())
                    .ok_or("listmonk: patch body")?;
                Ok(ResponseTemplate::new(200)
                    .set_body_json(serde_json::json!({"data": {"id": 42}})))
            }
            _ => Err(format!("listmonk: {m} {rest}")),
        };
    }
    Err(format!("nothing at {m} {path}"))
}

/// The SigV4 `Authorization` SES expects for `req`, computed here by hand
/// from the AWS documentation ("Create a signed AWS API request") at the
/// request's own `x-amz-date`, with the test's credentials: independent
/// of the crate that signed it.
fn sigv4(req: &Request) -> Option<String> {
    use sha2::Digest;
    let date = req.headers.get("x-amz-date")?.to_str().ok()?.to_string();
    let host = req.headers.get("host")?.to_str().ok()?.to_string();
    let hex = |b: &[u8]| hex::encode(b);
    let sha = |b: &[u8]| hex(&sha2::Sha256::digest(b));
    let hmac = |k: &[u8], m: &str| {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(k).unwrap();
        mac.update(m.as_bytes());
        mac.finalize().into_bytes().to_vec()
    };
    // Each path segment is URI-encoded once more (all services but S3).
    let path: String = req
        .url
        .path()
        .split('/')
        .map(|s| s.replace('%', "%25"))
        .collect::<Vec<_>>()
        .join("/");
    let canonical = format!(
        "DELETE\n{path}\n\nhost:{host}\nx-amz-date:{date}\n\nhost;x-amz-date\n{}",
        sha(b"")
    );
    let day = &date[..8];
    let scope = format!("{day}/eu-west-1/ses/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{date}\n{scope}\n{}",
        sha(canonical.as_bytes())
    );
    let k = hmac(format!("AWS4{AWS_SECRET}").as_bytes(), day);
    let k = hmac(&k, "eu-west-1");
    let k = hmac(&k, "ses");
    let k = hmac(&k, "aws4_request");
    let signature = hex(&hmac(&k, &to_sign));
    Some(format!(
        "AWS4-HMAC-SHA256 Credential={AWS_ID}/{scope}, SignedHeaders=host;x-amz-date, Signature={signature}"
    ))
}

/// A mock of all five providers; requests it finds wrong are answered 418.
async fn providers() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(|req: &Request| match provider_says(req) {
            Ok(r) => r,
            Err(why) => ResponseTemplate::new(418).set_body_string(why),
        })
        .mount(&server)
        .await;
    server
}

/// One bounce event of each ESP for `who` (the SES one a raw SES event).
fn esp_bounces(who: &str, minutes: i64) -> [(&'static str, String); 4] {
    let ts = AT + minutes * 60;
    let iso = chrono::DateTime::from_timestamp(ts, 0)
        .unwrap()
        .to_rfc3339();
    let reason = format!("550 5.1.1 <{who}>: user lookup success but no user record found");
    [
        (
            "ses",
            format!(
                r#"{{"notificationType":"Bounce","bounce":{{"bounceType":"Permanent","bounceSubType":"General","bouncedRecipients":[{{"emailAddress":"ses-{who}","status":"5.1.1","action":"failed","diagnosticCode":"smtp; {reason}"}}],"timestamp":"{iso}","remoteMtaIp":"127.0.2.0"}},"mail":{{"timestamp":"{iso}","messageId":"m-{ts}","source":"a@sender.test"}}}}"#
            ),
        ),
        (
            "sendgrid",
            format!(
                r#"[{{"email":"sg-{who}","event":"bounce","type":"bounce","status":"5.1.1","reason":"{reason}","timestamp":{ts},"sg_event_id":"e{ts}"}}]"#
            ),
        ),
        (
            "mailgun",
            format!(
                r#"{{"signature":{{}},"event-data":{{"event":"failed","severity":"permanent","recipient":"mg-{who}","timestamp":{ts},"delivery-status":{{"code":550,"message":"{reason}","enhanced-code":"5.1.1"}}}}}}"#
            ),
        ),
        (
            "postmark",
            format!(
                r#"{{"RecordType":"Bounce","Type":"HardBounce","TypeCode":1,"Email":"pm-{who}","BouncedAt":"{iso}","Details":"{reason}","Description":"unknown user","MessageStream":"broadcast"}}"#
            ),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_provider_is_asked_as_it_documents_and_a_genuine_unknown_user_never() {
    let api = providers().await;
    let dir = tempfile::tempdir().unwrap();
    let (app, base) = daemon(dir.path(), &targets(&api.uri(), "")).await;
    // Inside the flip: transient on evidence; genuine: suppress.
    for who in ["kim@example.de", "bob@example.org"] {
        for (esp, body) in esp_bounces(who, 0) {
            let r = crate::post(&base, &format!("/v1/webhooks/{esp}"), Some(TOKEN), body).await;
            let status = r.status();
            assert_eq!(status, 200, "{esp}: {}", r.text().await.unwrap());
        }
    }
    // Each ESP's own target removes its own address; listmonk (which
    // blocklisted on whatever reached it) all four.
    wait_for("every removal", async || {
        let d = app
            .store()
            .deliveries(mxwatch::store::Consumers::Undo, None)
            .unwrap();
        d.len() == 8 && d.iter().all(|d| d.outcome.is_some())
    })
    .await;
    let done = app
        .store()
        .deliveries(mxwatch::store::Consumers::Undo, None)
        .unwrap();
    for d in &done {
        assert_eq!(d.outcome.as_deref(), Some("removed"), "{d:?}");
        assert!(d.summary.contains("@example.de"), "{d:?}");
    }
    let reqs = api.received_requests().await.unwrap();
    for r in &reqs {
        assert!(provider_says(r).is_ok(), "{:?}", provider_says(r));
        assert!(
            !r.url.path().contains("example.org"),
            "a genuine 5.1.1 is never undone"
        );
    }
    let ses: Vec<&Request> = reqs
        .iter()
        .filter(|r| r.url.path().starts_with("/ses/"))
        .collect();
    assert_eq!(ses.len(), 1);
    assert_eq!(
        ses[0].url.path(),
        "/ses/v2/email/suppression/addresses/ses-kim%40example.de"
    );

    // A bounce from a file the operator ingested did not come through an
    // authenticated path: judged, never undone.
    std::fs::write(
        dir.path().join("file.json"),
        &esp_bounces("ann@example.de", 1)[1].1,
    )
    .unwrap();
    let out = mxwatch_async(
        dir.path(),
        &["--database", "test.db", "bounces", "ingest", "file.json"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let stored = app.store().bounces(Some("example.de"), None, None).unwrap();
    assert!(stored.iter().any(|b| b.recipient == "sg-ann@example.de"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let undo_events = app.outbox_events().iter().filter(|e| *e == "undo").count();
    assert_eq!(undo_events, 4, "{:?}", app.outbox_events());
    // Summed up for the alert targets; counted; listed over HTTP.
    let summaries: Vec<String> = app
        .store()
        .outbox()
        .unwrap()
        .into_iter()
        .filter(|o| o.event == mxwatch::event::EventType::UndoDone)
        .map(|o| o.summary)
        .collect();
    assert!(
        summaries
            .iter()
            .any(|s| s.starts_with("sendgrid-main: 1 removed")),
        "{summaries:?}"
    );
    crate::assert_metrics(
        &base,
        &["mxwatch_undo_total{target=\"listmonk-main\",outcome=\"removed\"} 4"],
    )
    .await;
    let listed: Vec<Value> = crate::get_json(format!("{base}/v1/undo")).await;
    assert_eq!(listed.len(), 8);
    assert_eq!(listed[0]["outcome"], "removed");
    // No secret in any answer.
    let metrics = crate::get_text(format!("{base}/metrics")).await;
    let out = mxwatch_async(dir.path(), &["undo", "list", "--json"]).await;
    let said = format!(
        "{listed:?}{metrics}{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    for s in secrets() {
        assert!(!said.contains(s), "{s} leaked");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apple_like_burst_is_undone_within_the_cap_keep_wins_and_a_dry_run_changes_nothing() {
    let api = providers().await;
    let dir = tempfile::tempdir().unwrap();
    let uri = api.uri();
    let yaml = format!(
        "undo:\n\
         - name: listmonk\n  provider: listmonk\n  base_url: '{uri}/listmonk'\n  user: mxwatch\n  \
           api_key_file: lm.token\n  enabled: true\n  dry_run: false\n  max_per_hour: 3\n  backoff: 50ms\n\
         - name: rehearsal\n  provider: listmonk\n  base_url: '{uri}/listmonk-dry'\n  user: mxwatch\n  \
           api_key_file: lm.token\n  enabled: true\n\
         - name: not-yet\n  provider: listmonk\n  base_url: '{uri}/listmonk-off'\n  user: mxwatch\n  \
           api_key_file: lm.token\n  dry_run: false\n"
    );
    let (app, base) = daemon(dir.path(), &yaml).await;
    let out = mxwatch_async(dir.path(), &["undo", "keep", "User0@iCloud.com"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    // A genuine unknown user, and Apple's 26 April 2021.
    crate::post_bounces(
        &base,
        crate::unknown_user(
            "bob@example.org",
            chrono::DateTime::from_timestamp(AT, 0).unwrap(),
            "mx.example.org",
        ),
    )
    .await;
    crate::alerts::post_burst(&base).await;
    let reinstated: Vec<Value> = crate::get_json(format!("{base}/v1/reinstatements")).await;
    assert!(!reinstated.is_empty(), "early suppressions are reinstated");

    let undo = |status: Option<&'static str>| {
        let base = base.clone();
        async move {
            let q = status.map_or(String::new(), |s| format!("?status={s}&limit=100"));
            let q = if q.is_empty() {
                "?limit=100".to_string()
            } else {
                q
            };
            crate::get_json::<Vec<Value>>(format!("{base}/v1/undo{q}")).await
        }
    };
    let of = |list: &[Value], target: &str, outcome: &str| {
        list.iter()
            .filter(|d| d["target"] == target && d["outcome"] == outcome)
            .count()
    };
    wait_for(
        "three removed, the rest waiting, the rehearsal done",
        async || {
            let all = undo(None).await;
            of(&all, "listmonk", "removed") == 3
                && of(&all, "listmonk", "waiting") == 1
                && of(&all, "rehearsal", "dry_run") == 24
        },
    )
    .await;
    let all = undo(None).await;
    // The kept address is kept by both; bob is never among them.
    assert_eq!(
        of(&all, "listmonk", "kept") + of(&all, "rehearsal", "kept"),
        2,
        "{all:?}"
    );
    assert!(
        all.iter()
            .all(|d| !d["summary"].as_str().unwrap().contains("bob@"))
    );
    assert!(
        all.iter().all(|d| d["target"] != "not-yet"),
        "a target does nothing until enabled"
    );
    let waiting = undo(Some("waiting")).await;
    assert_eq!(
        waiting.len(),
        1,
        "the first in line waits, the rest behind it"
    );
    assert!(waiting[0]["next_attempt"].as_str().unwrap() > "2021-04-26T11:59");
    let out = mxwatch_async(dir.path(), &["undo", "list", "--waiting"]).await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("waiting"),
        "{out:?}"
    );
    assert_eq!(undo(Some("dry_run")).await.len(), 24);
    let reqs = api.received_requests().await.unwrap();
    assert!(
        reqs.iter()
            .all(|r| !r.url.path().starts_with("/listmonk-dry")
                && !r.url.path().starts_with("/listmonk-off")),
        "nothing remote for a dry run or a target not enabled"
    );
    let patches = reqs.iter().filter(|r| r.method.as_str() == "PATCH").count();
    assert_eq!(patches, 3, "three un-blocklisted within the hour");

    // An hour later (a restart on the same database): the next three.
    let (config, _) = app.stop().await;
    drop(config);
    let later = chrono::DateTime::from_timestamp(AT + 3600 + 5 * 60, 0).unwrap();
    let config = mxwatch::config::Config::load(&dir.path().join("watchlist.yaml")).unwrap();
    let app = crate::start_at(config, Arc::new(tempfile::tempdir().unwrap()), later);
    let base2 = format!("http://{}", app.daemon.as_ref().unwrap().api_addr.unwrap());
    let _ = base;
    wait_for("three more removed", async || {
        let all = crate::get_json::<Vec<Value>>(format!("{base2}/v1/undo?limit=100")).await;
        of(&all, "listmonk", "removed") == 6
    })
    .await;
    app.stop().await;
}

/// A provider down (answering 503, its answer echoing the key it was
/// sent) then up; the daemon killed with `kill -9` mid-batch and started
/// again: every undo done, none the provider refused, no secret in the
/// log (at debug), the errors or the answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_down_then_up_and_kill_9_mid_batch_lose_nothing_and_leak_no_key() {
    use crate::service::{free_port, wait_healthy};
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sendgrid = MockServer::start().await;
    let n = calls.clone();
    Mock::given(any())
        .respond_with(move |req: &Request| {
            let auth = req
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            if auth != format!("Bearer {SG_KEY}") || req.method.as_str() != "DELETE" {
                return ResponseTemplate::new(401);
            }
            match n.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
                0..=2 => ResponseTemplate::new(503)
                    .set_body_string(format!("overloaded; you sent {auth}")),
                _ => ResponseTemplate::new(204).set_delay(Duration::from_millis(60)),
            }
        })
        .mount(&sendgrid)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let now = chrono::Utc::now().timestamp();
    // A flip to iCloud three to two hours ago, the usual MX before and since.
    std::fs::write(
        dir.path().join("flip.jsonl"),
        format!(
            "{{\"obj\":{{\"count\":9,\"time_first\":1398000000,\"time_last\":{},\"rrname\":\"example.de.\",\"rrtype\":\"MX\",\"rdata\":[\"10 mx00.example.de.\"]}}}}\n\
             {{\"obj\":{{\"count\":3,\"time_first\":{},\"time_last\":{},\"rrname\":\"example.de.\",\"rrtype\":\"MX\",\"rdata\":[\"10 mx01.mail.icloud.com.\"]}}}}\n",
            now - 60,
            now - 3 * 3600,
            now - 2 * 3600
        ),
    )
    .unwrap();
    let out = crate::passive::import_dnsdb(dir.path(), "mx.db", "flip.jsonl");
    assert!(out.status.success(), "{}", stderr(&out));
    secret_files(dir.path());
    let port = free_port();
    std::fs::write(
        dir.path().join("watchlist.yaml"),
        format!(
            "database: mx.db\nschedule: '0 0 1 1 *'\nupstreams: ['127.0.0.1:9']\nlisten: '127.0.0.1:{port}'\n\
             api_token_file: token\nundo:\n- name: sendgrid-main\n  provider: sendgrid\n  base_url: '{}'\n  \
             api_key_file: sg.key\n  enabled: true\n  dry_run: false\n  backoff: 50ms\ndomains: [example.de]\n",
            sendgrid.uri()
        ),
    )
    .unwrap();
    let log = dir.path().join("log");
    let run = || {
        crate::service::Running(
            std::process::Command::new(env!("CARGO_BIN_EXE_mxwatch"))
                .current_dir(dir.path())
                .args(["run"])
                .env_remove("MXWATCH_CONFIG")
                .env("RUST_LOG", "debug")
                .stderr(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&log)
                        .unwrap(),
                )
                .spawn()
                .unwrap(),
        )
    };
    let base = format!("http://127.0.0.1:{port}");
    let mut child = run();
    wait_healthy(&base).await;
    let ts = now - 150 * 60;
    let who: Vec<String> = (0..30).map(|i| format!("u{i}@example.de")).collect();
    let events: Vec<String> = who
        .iter()
        .map(|w| format!(r#"{{"email":"{w}","event":"bounce","type":"bounce","status":"5.1.1","reason":"550 5.1.1 <{w}>: user lookup success but no user record found","timestamp":{ts},"sg_event_id":"{w}"}}"#))
        .collect();
    let r = crate::post(
        &base,
        "/v1/webhooks/sendgrid",
        Some(TOKEN),
        format!("[{}]", events.join(",")),
    )
    .await;
    assert_eq!(r.status(), 200);
    wait_for("a few removals", async || {
        calls.load(std::sync::atomic::Ordering::SeqCst) >= 10
    })
    .await;
    child.kill().unwrap(); // SIGKILL, mid-batch
    child.wait().unwrap();
    let before = calls.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        before < 33,
        "the kill came too late to test anything ({before})"
    );

    let _child = run();
    wait_healthy(&base).await;
    let store = mxwatch::store::Store::open(&dir.path().join("mx.db")).unwrap();
    wait_for("every undo done", async || {
        let d = store
            .deliveries(mxwatch::store::Consumers::Undo, None)
            .unwrap();
        d.len() == 30 && d.iter().all(|d| d.outcome.is_some())
    })
    .await;
    let d = store
        .deliveries(mxwatch::store::Consumers::Undo, None)
        .unwrap();
    assert!(
        d.iter().all(|d| d.outcome.as_deref() == Some("removed")),
        "{d:?}"
    );
    assert!(
        d.iter().any(|d| d.attempts > 1),
        "the first waited for the provider"
    );
    // Each address asked for once, but for the run cut by the kill.
    let reqs = sendgrid.received_requests().await.unwrap();
    let asked: std::collections::HashSet<String> =
        reqs.iter().map(|r| r.url.path().to_string()).collect();
    assert_eq!(asked.len(), 30);
    assert!(reqs.len() <= 30 + 3 + 10, "{}", reqs.len());

    let answers = format!(
        "{}{}{d:?}",
        crate::get_text(format!("{base}/v1/undo?limit=100")).await,
        crate::get_text(format!("{base}/metrics")).await,
    );
    let out = mxwatch_async(dir.path(), &["undo", "list", "--json"]).await;
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("undo done"), "the log says what it did");
    assert!(
        logged.contains("503") && logged.contains("you sent Bearer ***"),
        "the provider's answer is kept, its echo of the key scrubbed"
    );
    for s in secrets() {
        for (what, text) in [
            ("log", &logged),
            ("answers", &answers),
            ("list", &String::from_utf8_lossy(&out.stdout).to_string()),
        ] {
            assert!(!text.contains(s), "{s} in the {what}");
        }
    }
    assert!(json_lines(&out).len() == 30);
}

/// A window withdrawn as false while an undo waits for a provider that is
/// down: the undo is never carried out (the address is `suppress` again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undo_waiting_when_its_window_is_withdrawn_is_never_carried_out() {
    let sendgrid = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(503))
        .mount(&sendgrid)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "undo:\n- name: sendgrid-main\n  provider: sendgrid\n  base_url: '{}'\n  api_key_file: sg.key\n  \
         enabled: true\n  dry_run: false\n  backoff: 50ms\n",
        sendgrid.uri()
    );
    let (app, base) = daemon(dir.path(), &yaml).await;
    let [_, (esp, body), ..] = esp_bounces("kim@example.de", 0);
    let r = crate::post(&base, &format!("/v1/webhooks/{esp}"), Some(TOKEN), body).await;
    assert_eq!(r.status(), 200);
    let store = mxwatch::store::Store::open(&dir.path().join("test.db")).unwrap();
    let undo = || {
        store
            .deliveries(mxwatch::store::Consumers::Undo, None)
            .unwrap()
    };
    wait_for("a failed removal", async || {
        undo().first().is_some_and(|d| d.attempts >= 1)
    })
    .await;
    let window = store.windows(None).unwrap()[0].id.to_string();
    let out = mxwatch_async(
        dir.path(),
        &[
            "--database",
            "test.db",
            "windows",
            "close",
            &window,
            "--reason",
            "the flip was planned",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for("the undo settled", async || {
        undo().first().is_some_and(|d| d.outcome.is_some())
    })
    .await;
    let d = undo();
    assert_eq!(d[0].outcome.as_deref(), Some("still_suppressed"), "{d:?}");
    assert!(
        sendgrid.received_requests().await.unwrap().len() <= d[0].attempts as usize,
        "no request after it settled"
    );
    app.stop().await;
}
