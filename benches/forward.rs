//! Forwarding throughput (gateway mode), next to plain ingest in the same
//! run: the real daemon (`Daemon::start`) on loopback takes SendGrid event
//! webhooks, one bounce per request, from concurrent clients.
//!
//! - plain ingest: no forward target; events/s from the first request to
//!   the last acknowledgement;
//! - forwarding: a `listmonk` target (Basic auth) at a loopback handler
//!   that answers as listmonk does; events/s from the first request to the
//!   handler's acknowledgement of the last forward.
//!
//! Run:
//!
//!     cargo bench --bench forward                  # 20,000 events, 16 clients
//!     cargo bench --bench forward -- 50000 32      # events, clients
//!
//! Prints a Markdown table for BENCHMARKS.md. Not a test: nothing asserts.

// Real processes and real files run on wall time here (clippy.toml keeps
// the library on its Clock).
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use mxwatch::clock::SystemClock;
use mxwatch::config::Config;
use mxwatch::daemon::Daemon;

mod common;
use common::arg;

const TOKEN: &str = "bench-token-0123456789abcdef";

/// A loopback handler that counts what it acknowledges.
async fn handler(count: Arc<AtomicUsize>) -> String {
    let app = axum::Router::new().route(
        "/webhooks/bounce",
        axum::routing::post(move |body: axum::body::Bytes| {
            let count = count.clone();
            async move {
                // As listmonk: the body must be JSON with an email and a type.
                let ok = serde_json::from_slice::<serde_json::Value>(&body)
                    .is_ok_and(|v| v["email"].is_string() && v["type"].is_string());
                if ok {
                    count.fetch_add(1, Ordering::Relaxed);
                    (axum::http::StatusCode::OK, "{\"data\":true}")
                } else {
                    (
                        axum::http::StatusCode::BAD_REQUEST,
                        "{\"message\":\"invalid data\"}",
                    )
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/webhooks/bounce")
}

/// One SendGrid bounce event per request, for distinct recipients.
fn body(i: usize, now: i64) -> String {
    format!(
        r#"[{{"email":"u{i}@d{}.example","event":"bounce","type":"bounce","status":"5.1.1","reason":"550 5.1.1 no such user","timestamp":{},"sg_event_id":"e{i}"}}]"#,
        i % 5000,
        now - 3600 + (i as i64 % 3000)
    )
}

struct Run {
    acknowledged: f64,
    /// When the handler had the last one, and how fast the backlog left
    /// once the ESP stopped sending.
    forwarded: Option<(f64, f64)>,
}

fn run(events: usize, clients: usize, forward_to: Option<&str>, count: &Arc<AtomicUsize>) -> Run {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    std::fs::write(dir.path().join("lm"), "listmonk-token").unwrap();
    let forward = forward_to.map_or(String::new(), |url| {
        format!(
            "forward:\n  - name: listmonk\n    url: '{url}'\n    format: listmonk\n    user: mxwatch\n    password_file: lm\n"
        )
    });
    let yaml = format!(
        "database: bench.db\nschedule: '0 0 1 1 *'\nupstreams: ['127.0.0.1:9']\nlisten: '127.0.0.1:0'\n\
         api_token_file: token\n{forward}domains: [example.com]\n"
    );
    std::fs::write(dir.path().join("watchlist.yaml"), yaml).unwrap();
    let config = Config::load(&dir.path().join("watchlist.yaml")).unwrap();
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let daemon = server_rt.block_on(async {
        Daemon::start(&config, Arc::new(SystemClock), async move {
            let _ = stop_rx.await;
        })
        .unwrap()
    });
    let base = format!("http://{}", daemon.api_addr.unwrap());
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let now = chrono::Utc::now().timestamp();
    count.store(0, Ordering::Relaxed);
    let started = Instant::now();
    client_rt.block_on(async {
        let http = reqwest::Client::new();
        futures::stream::iter(0..events)
            .map(|i| {
                let (http, base) = (http.clone(), base.clone());
                async move {
                    let r = http
                        .post(format!("{base}/v1/webhooks/sendgrid"))
                        .bearer_auth(TOKEN)
                        .body(body(i, now))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200);
                }
            })
            .buffer_unordered(clients)
            .collect::<Vec<()>>()
            .await;
    });
    let acknowledged = started.elapsed().as_secs_f64();
    let at_ack = count.load(Ordering::Relaxed);
    let forwarded = forward_to.map(|_| {
        while count.load(Ordering::Relaxed) < events {
            std::thread::sleep(Duration::from_millis(2));
        }
        let t = started.elapsed().as_secs_f64();
        (t, (events - at_ack) as f64 / (t - acknowledged))
    });
    let _ = stop_tx.send(());
    server_rt.block_on(daemon.wait()).unwrap();
    Run {
        acknowledged,
        forwarded,
    }
}

fn main() {
    let events = arg(0, 20_000);
    let clients = arg(1, 16);
    let handler_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let url = handler_rt.block_on(handler(count.clone()));

    let plain = run(events, clients, None, &count);
    let fwd = run(events, clients, Some(&url), &count);
    let per_s = |s: f64| events as f64 / s;
    let (forwarded, drain) = fwd.forwarded.unwrap();
    println!(
        "| run | events | events/s acknowledged | events/s forwarded (handler acknowledged) | backlog drained, events/s |"
    );
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| plain ingest | {events} | {:.0} | – | – |",
        per_s(plain.acknowledged)
    );
    println!(
        "| forwarding to a `listmonk` target | {events} | {:.0} | {:.0} | {drain:.0} |",
        per_s(fwd.acknowledged),
        per_s(forwarded)
    );
    println!(
        "\nforwarded/plain = {:.2}; {clients} clients, one bounce per request",
        per_s(forwarded) / per_s(plain.acknowledged)
    );
}
