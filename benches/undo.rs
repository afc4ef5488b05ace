//! Undo throughput: the real daemon (`Daemon::start`) takes false
//! suppressions off a SendGrid-like list at a loopback endpoint. An
//! MX-change window (imported as passive DNS) covers a burst of SendGrid
//! bounce events, each undone at once; undo actions/s from the first
//! webhook request to the endpoint's acknowledgement of the last removal.
//!
//! Run:
//!
//!     cargo bench --bench undo                # 5,000 addresses
//!     cargo bench --bench undo -- 20000
//!
//! Prints a Markdown row for BENCHMARKS.md. Not a test: nothing asserts.

// Real processes and real files run on wall time here (clippy.toml keeps
// the library on its Clock).
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mxwatch::clock::SystemClock;
use mxwatch::config::Config;
use mxwatch::daemon::Daemon;

const TOKEN: &str = "bench-token-0123456789abcdef";

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(5_000);
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let endpoint = {
        let count = count.clone();
        rt.block_on(async move {
            let app = axum::Router::new().fallback(move || {
                let count = count.clone();
                async move {
                    count.fetch_add(1, Ordering::Relaxed);
                    axum::http::StatusCode::NO_CONTENT
                }
            });
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            format!("http://{addr}")
        })
    };
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    std::fs::write(dir.path().join("sg.key"), "SG.bench").unwrap();
    let yaml = format!(
        "database: bench.db\nschedule: '0 0 1 1 *'\nupstreams: ['127.0.0.1:9']\nlisten: '127.0.0.1:0'\n\
         api_token_file: token\nundo:\n- name: sendgrid\n  provider: sendgrid\n  base_url: '{endpoint}'\n  \
         api_key_file: sg.key\n  enabled: true\n  dry_run: false\n  max_per_hour: 100000000\n\
         domains: [example.de]\n"
    );
    std::fs::write(dir.path().join("watchlist.yaml"), yaml).unwrap();
    let config = Config::load(&dir.path().join("watchlist.yaml")).unwrap();
    // A flip to iCloud three to two hours ago, the usual MX before and since.
    let now = chrono::Utc::now().timestamp();
    let export = format!(
        "{{\"obj\":{{\"count\":9,\"time_first\":1398000000,\"time_last\":{},\"rrname\":\"example.de.\",\"rrtype\":\"MX\",\"rdata\":[\"10 mx00.example.de.\"]}}}}\n\
         {{\"obj\":{{\"count\":3,\"time_first\":{},\"time_last\":{},\"rrname\":\"example.de.\",\"rrtype\":\"MX\",\"rdata\":[\"10 mx01.mail.icloud.com.\"]}}}}\n",
        now - 60,
        now - 3 * 3600,
        now - 2 * 3600
    );
    rt.block_on(async {
        let clock_now = chrono::Utc::now();
        let read = mxwatch::passive::read_dnsdb(&export).bound(None, clock_now);
        let excursions = mxwatch::passive::excursions(&read.sightings);
        let (writer, task) =
            mxwatch::store::Writer::start(&config.database, config.judging()).unwrap();
        writer
            .passive(read.sightings, excursions, clock_now)
            .await
            .unwrap();
        drop(writer);
        task.await.unwrap();
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let daemon = rt.block_on(async {
        Daemon::start(&config, Arc::new(SystemClock), async move {
            let _ = stop_rx.await;
        })
        .unwrap()
    });
    let base = format!("http://{}", daemon.api_addr.unwrap());
    let ts = now - 150 * 60;
    let started = Instant::now();
    rt.block_on(async {
        let http = reqwest::Client::new();
        for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
            let events: Vec<String> = chunk
                .iter()
                .map(|i| format!(r#"{{"email":"u{i}@example.de","event":"bounce","type":"bounce","status":"5.1.1","reason":"550 5.1.1 no such user","timestamp":{ts},"sg_event_id":"e{i}"}}"#))
                .collect();
            let r = http
                .post(format!("{base}/v1/webhooks/sendgrid"))
                .bearer_auth(TOKEN)
                .body(format!("[{}]", events.join(",")))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    });
    let ingested = started.elapsed().as_secs_f64();
    while count.load(Ordering::Relaxed) < n {
        std::thread::sleep(Duration::from_millis(2));
    }
    let done = started.elapsed().as_secs_f64();
    let _ = stop_tx.send(());
    rt.block_on(daemon.wait()).unwrap();
    println!(
        "| addresses | ingested in | all removed in | undo actions/s |\n|---:|---:|---:|---:|"
    );
    println!(
        "| {n} | {ingested:.2} s | {done:.2} s | {:.0} |",
        n as f64 / done
    );
}
