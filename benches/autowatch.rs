//! Ingest with auto-watch on against off: a feed of bounces over many
//! unlisted domains, stored beside the running daemon while (with
//! `auto_watch:`) the daemon checks each new domain against the in-process
//! DNS server on loopback. Issue 14's target: ingest with it on at least
//! 0.5x ingest with it off.
//!
//!     cargo bench --bench autowatch                      # 1,000,000 bounces, 100,000 domains
//!     cargo bench --bench autowatch -- 200000 20000      # bounces, domains
//!
//! Prints a Markdown table for BENCHMARKS.md. Not a test: nothing asserts.

// Real processes and real files run on wall time here.
#![allow(clippy::disallowed_methods)]

#[path = "../tests/support/dns.rs"]
mod dns;

use std::sync::Arc;
use std::time::{Duration, Instant};

use mxwatch::bounce::{Action, Bounce, Kind, Source};
use mxwatch::clock::SystemClock;
use mxwatch::config::Config;
use mxwatch::daemon::Daemon;

/// One run: the feed stored in batches of 5,000 (as an API client would
/// post them); bounces per second, and how many domains were auto-watched
/// (checked) by the end of the feed.
async fn run(dns: &dns::TestDns, bounces: usize, domains: usize, auto: bool) -> (f64, i64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let auto_yaml = if auto { "auto_watch: {}\n" } else { "" };
    std::fs::write(
        dir.path().join("bench.yaml"),
        format!(
            "database: bench.db\nupstreams: ['{}']\ntimeout: 5s\nconcurrency: 64\nlisten: 'off'\n{auto_yaml}domains: [listed.example]\n",
            dns.addr
        ),
    )
    .unwrap();
    let config = Config::load(&dir.path().join("bench.yaml")).unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let daemon = Daemon::start(&config, Arc::new(SystemClock), async move {
        let _ = stopped.await;
    })
    .unwrap();
    // A feed stored beside the daemon, as `bounces ingest` would.
    let (writer, writer_task) =
        mxwatch::store::Writer::start(&config.database, config.judging()).unwrap();
    let queries_before = dns.queries();
    let now = chrono::Utc::now();
    let t = Instant::now();
    let mut batch = Vec::with_capacity(5_000);
    for i in 0..bounces {
        let d = format!("d{}.feed.example", i % domains);
        batch.push(Bounce {
            recipient: format!("u{i}@{d}"),
            domain: d,
            at: Some(now - chrono::Duration::milliseconds((bounces - i) as i64)),
            action: Some(Action::Failed),
            status: Some("5.1.1".into()),
            reply_code: Some(550),
            diagnostic: Some("550 5.1.1 user unknown".into()),
            remote_mta: Some("mx.provider.example".into()),
            reporting_mta: None,
            kind: Kind::UserUnknown,
            hard: true,
            source: Source::Jsonl,
            message_id: None,
        });
        if batch.len() == 5_000 {
            writer
                .bounces(std::mem::take(&mut batch), chrono::Utc::now())
                .await
                .unwrap();
        }
    }
    if !batch.is_empty() {
        writer.bounces(batch, chrono::Utc::now()).await.unwrap();
    }
    let rate = bounces as f64 / t.elapsed().as_secs_f64();
    drop(writer);
    writer_task.await.unwrap();
    // Let the auto-watcher see the last bounces, then count.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let watched = mxwatch::store::Store::open(&config.database)
        .unwrap()
        .auto_watched_count()
        .unwrap();
    let queries = dns.queries() - queries_before;
    let _ = stop.send(());
    daemon.wait().await.unwrap();
    (rate, watched, queries)
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let bounces = args.first().copied().unwrap_or(1_000_000);
    let domains = args.get(1).copied().unwrap_or(100_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dns = dns::TestDns::start().await;
        dns.set_many((0..domains).map(|i| {
            let host = format!("mx{}.provider{}.example", i % 2, i % 97);
            (format!("d{i}.feed.example"), dns::Behaviour::mx(&[(10, &host)], 3600))
        }));
        let (off, _, off_queries) = run(&dns, bounces, domains, false).await;
        let (on, watched, on_queries) = run(&dns, bounces, domains, true).await;
        println!("| {bounces} bounces over {domains} unlisted domains | bounces/s | domains auto-watched | DNS queries |");
        println!("|---|---:|---:|---:|");
        println!("| auto-watch off | {off:.0} | 0 | {off_queries} |");
        println!("| auto-watch on | {on:.0} | {watched} | {on_queries} |");
        println!("\nratio on/off = {:.2}", on / off);
    });
}
