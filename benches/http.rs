//! Verdict throughput over HTTP on loopback, against `/healthz` of the same
//! server in the same run. The database holds 100,000 watched domains (with
//! MX history) and 1,000,000 stored bounces, ingested through the writer as
//! the daemon would (judged, anomaly-checked, stored with verdicts).
//!
//!     cargo bench --bench http                       # 100k domains, 1M bounces, 8 connections
//!     cargo bench --bench http -- 10000 100000 8 5   # domains, bounces, connections, seconds per phase
//!
//! The load generator is a minimal HTTP/1.1 keep-alive client on its own
//! runtime thread; the server runs on a 2-worker runtime, as in the daemon.
//! Prints a Markdown table for BENCHMARKS.md. Not a test: nothing asserts.

// Real processes and real files run on wall time here (clippy.toml keeps
// the library on its Clock).
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use mxwatch::bounce::{Action, Bounce, Kind, Source};
use mxwatch::clock::SystemClock;
use mxwatch::config::Config;
use mxwatch::domain::{DomainName, Mx, MxHost};
use mxwatch::resolve::{Observation, Outcome};
use mxwatch::store::{CONSENSUS, CheckRecord, Writer};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

mod common;
use common::arg;

fn domain(k: usize) -> String {
    format!("d{k}.example")
}

fn mx_of(k: usize) -> Vec<Mx> {
    let host = if k % 10 < 7 {
        "aspmx.l.google.com".to_string()
    } else {
        format!("mx.d{k}.example")
    };
    vec![Mx {
        preference: 10,
        exchange: MxHost::parse(&host).unwrap(),
    }]
}

fn bounce(i: usize, domains: usize, at: DateTime<Utc>) -> Bounce {
    let k = (i.wrapping_mul(2654435761)) % domains;
    let (kind, status, code, action, hard) = match i % 10 {
        0..=5 => (Kind::UserUnknown, "5.1.1", 550, Action::Failed, true),
        6 | 7 => (Kind::MailboxFull, "4.2.2", 452, Action::Delayed, false),
        _ => (Kind::SpamBlocked, "5.7.1", 554, Action::Failed, false),
    };
    Bounce {
        recipient: format!("u{i}@{}", domain(k)),
        domain: domain(k),
        at: Some(at),
        action: Some(action),
        status: Some(status.into()),
        reply_code: Some(code),
        diagnostic: Some(format!("{code} {status} bench")),
        remote_mta: Some(mx_of(k)[0].exchange.as_str().to_string()),
        reporting_mta: None,
        kind,
        hard,
        source: Source::Jsonl,
        message_id: None,
    }
}

async fn seed(config: &Config, domains: usize, bounces: usize) -> (f64, f64) {
    let (writer, task) = Writer::start(&config.database, config.judging()).unwrap();
    let now = Utc::now();
    let start = now - chrono::Duration::days(7);
    let t = Instant::now();
    for k in 0..domains {
        let obs = Observation {
            upstream: "system".into(),
            outcome: Outcome::Records,
            mx: mx_of(k),
            ttl: Some(3600),
            implicit_mx: false,
            detail: None,
        };
        writer
            .check_queued(CheckRecord {
                domain: DomainName::parse(&domain(k)).unwrap(),
                at: start - chrono::Duration::hours(1),
                consensus: Observation {
                    upstream: CONSENSUS.into(),
                    ..obs.clone()
                },
                observations: vec![obs],
                changes: vec![],
                window: None,
                state: None,
                held: false,
            })
            .await
            .unwrap();
    }
    writer.flush().await.unwrap();
    let domains_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let step = chrono::Duration::days(7) / bounces.max(1) as i32;
    const BATCH: usize = 5000;
    let mut i = 0;
    while i < bounces {
        let list: Vec<Bounce> = (i..(i + BATCH).min(bounces))
            .map(|j| bounce(j, domains, start + step * j as i32))
            .collect();
        i += list.len();
        writer.bounces(list, now).await.unwrap();
    }
    let bounces_s = t.elapsed().as_secs_f64();
    drop(writer);
    task.await.unwrap();
    (domains_s, bounces_s)
}

struct Phase {
    requests: usize,
    seconds: f64,
    p50_us: f64,
    p99_us: f64,
    errors: usize,
}

/// `connections` keep-alive connections, each sending the next path as soon
/// as the last answer is in, for `secs` seconds.
async fn load(
    addr: std::net::SocketAddr,
    connections: usize,
    secs: u64,
    paths: Arc<Vec<String>>,
) -> Phase {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let paths = paths.clone();
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
            stream.set_nodelay(true).unwrap();
            let (r, mut w) = stream.into_split();
            let mut r = BufReader::new(r);
            let mut lat = Vec::new();
            let mut errors = 0;
            let mut n = c;
            let mut line = String::new();
            let mut body = Vec::new();
            while Instant::now() < deadline {
                let path = &paths[n % paths.len()];
                n += connections;
                let t = Instant::now();
                w.write_all(format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n").as_bytes())
                    .await
                    .unwrap();
                let mut length = 0usize;
                line.clear();
                r.read_line(&mut line).await.unwrap();
                let ok = line.starts_with("HTTP/1.1 200");
                loop {
                    line.clear();
                    r.read_line(&mut line).await.unwrap();
                    let l = line.trim_end();
                    if l.is_empty() {
                        break;
                    }
                    if let Some(v) = l
                        .split_once(':')
                        .filter(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    {
                        length = v.1.trim().parse().unwrap();
                    }
                }
                body.resize(length, 0);
                r.read_exact(&mut body).await.unwrap();
                lat.push(t.elapsed().as_micros() as u32);
                errors += usize::from(!ok);
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        all.extend(l);
        errors += e;
    }
    let seconds = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)] as f64;
    Phase {
        requests: all.len(),
        seconds,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        errors,
    }
}

fn main() {
    let domains = arg(0, 100_000);
    let bounces = arg(1, 1_000_000);
    let connections = arg(2, 8);
    let secs = arg(3, 10) as u64;
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_yaml(
        "database: bench.db\nlisten: off\ndomains: [example.com]\n",
        &dir.path().join("watchlist.yaml"),
    )
    .unwrap();

    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (domains_s, bounces_s) = server_rt.block_on(seed(&config, domains, bounces));
    let db_mib = std::fs::metadata(&config.database)
        .map(|m| m.len())
        .unwrap_or(0) as f64
        / (1 << 20) as f64;
    eprintln!(
        "seeded {domains} domains in {domains_s:.1}s, {bounces} bounces in {bounces_s:.1}s ({:.0}/s); db {db_mib:.0} MiB",
        bounces as f64 / bounces_s
    );

    let addr = server_rt.block_on(async {
        let (writer, model, _task) =
            Writer::start_serving(&config.database, config.judging()).unwrap();
        let state = Arc::new(mxwatch::api::ApiState::new(
            &config,
            writer,
            model,
            Arc::new(SystemClock),
            Arc::new(mxwatch::metrics::Metrics::new()),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(mxwatch::api::serve(listener, state, std::future::pending()));
        addr
    });

    // Questions about stored recipients at their bounce time, a mix of kinds.
    let now = Utc::now();
    let verdict_paths: Vec<String> = (0..10_000)
        .map(|i| {
            let j = i * 97 % bounces.max(1);
            let b = bounce(j, domains, now - chrono::Duration::days(3));
            format!(
                "/v1/verdict?recipient={}&status={}&reply_code={}&remote_mta={}&at={}",
                b.recipient,
                b.status.unwrap(),
                b.reply_code.unwrap(),
                b.remote_mta.unwrap(),
                mxwatch::report::time(b.at.unwrap()).replace('+', "%2B")
            )
        })
        .collect();
    let client_rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Warm-up: connections, statement caches, page cache.
    client_rt.block_on(load(addr, connections, 2, Arc::new(verdict_paths.clone())));
    let health = client_rt.block_on(load(
        addr,
        connections,
        secs,
        Arc::new(vec!["/healthz".to_string()]),
    ));
    let verdict = client_rt.block_on(load(addr, connections, secs, Arc::new(verdict_paths)));

    let rps = |p: &Phase| p.requests as f64 / p.seconds;
    println!("| endpoint | requests/s | p50 | p99 | errors |\n|---|---:|---:|---:|---:|");
    for (name, p) in [("/healthz", &health), ("/v1/verdict", &verdict)] {
        println!(
            "| `{name}` | {:.0} | {:.2} ms | {:.2} ms | {} |",
            rps(p),
            p.p50_us / 1000.0,
            p.p99_us / 1000.0,
            p.errors
        );
    }
    println!(
        "\nverdicts/healthz = {:.2}; {domains} domains, {bounces} bounces, {connections} connections, {secs} s per phase, db {db_mib:.0} MiB",
        rps(&verdict) / rps(&health)
    );
}
