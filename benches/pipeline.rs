//! Sweep benchmark: N watched domains through the whole pipeline (resolve
//! against the in-process DNS server on loopback, detect, persist), and the
//! bare hickory resolver over the same names in the same run.
//!
//!     cargo bench --bench pipeline                 # 100,000 domains
//!     cargo bench --bench pipeline -- 20000 512    # N domains, concurrency
//!
//! Prints a Markdown table for BENCHMARKS.md. Not a test: nothing asserts.

// Real processes and real files run on wall time here (clippy.toml keeps
// the library on its Clock).
#![allow(clippy::disallowed_methods)]

#[path = "../tests/support/dns.rs"]
mod dns;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RecordType;
use mxwatch::clock::SystemClock;
use mxwatch::config::Config;
use mxwatch::domain::DomainName;
use mxwatch::monitor;
use mxwatch::store::Store;

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn db_bytes(path: &std::path::Path) -> u64 {
    let store = Store::open(path).unwrap();
    store.checkpoint().unwrap();
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The bare resolver: hickory, cache off, one MX lookup per name, the same
/// concurrency; answers counted, nothing else done.
async fn bare(
    addr: std::net::SocketAddr,
    names: &[DomainName],
    concurrency: usize,
) -> (f64, usize) {
    let mut udp = ConnectionConfig::udp();
    udp.port = addr.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = addr.port();
    let cfg = ResolverConfig::from_parts(
        None,
        vec![],
        vec![NameServerConfig::new(addr.ip(), true, vec![udp, tcp])],
    );
    let mut b = TokioResolver::builder_with_config(cfg, TokioRuntimeProvider::default());
    let mut o = ResolverOpts::default();
    o.cache_size = 0;
    o.attempts = 1;
    o.timeout = Duration::from_secs(5);
    *b.options_mut() = o;
    let r = b.build().unwrap();
    let start = Instant::now();
    let ok = futures::stream::iter(names.iter().map(|n| {
        let r = r.clone();
        let q = n.fqdn();
        async move { r.lookup(q.as_str(), RecordType::MX).await.is_ok() }
    }))
    .buffer_unordered(concurrency)
    .filter(|ok| futures::future::ready(*ok))
    .count()
    .await;
    (names.len() as f64 / start.elapsed().as_secs_f64(), ok)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let n: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let concurrency: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(256);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dns = dns::TestDns::start().await;
        let names: Vec<DomainName> = (0..n)
            .map(|i| DomainName::parse(&format!("d{i}.bench.example")).unwrap())
            .collect();
        dns.set_many(names.iter().enumerate().map(|(i, d)| {
            let host = format!("mx{}.provider{}.example", i % 2, i % 97);
            (d.to_string(), dns::Behaviour::mx(&[(10, &host), (20, "backup.example.net")], 3600))
        }));

        let dir = tempfile::tempdir().unwrap();
        let list: String = names.iter().map(|d| format!("{d}\n")).collect();
        std::fs::write(dir.path().join("domains.txt"), list).unwrap();
        std::fs::write(
            dir.path().join("bench.yaml"),
            format!(
                "database: bench.db\nupstreams: ['{}']\ntimeout: 5s\nconcurrency: {concurrency}\ndomains_file: domains.txt\n",
                dns.addr
            ),
        )
        .unwrap();
        let t = Instant::now();
        let config = Config::load(&dir.path().join("bench.yaml")).unwrap();
        let load_ms = t.elapsed().as_millis();

        let (bare1, ok1) = bare(dns.addr, &names, concurrency).await;

        let (m, writer) = mxwatch::daemon::open_for_sweep(&config, Arc::new(SystemClock)).unwrap();
        let t = Instant::now();
        let s1 = monitor::sweep(&m, &names, concurrency, &tokio_util::sync::CancellationToken::new()).await;
        let sweep1 = n as f64 / t.elapsed().as_secs_f64();
        drop(m);
        writer.await.unwrap();
        let bytes1 = db_bytes(&config.database);
        let rows1 = Store::open(&config.database).unwrap().counts().unwrap();

        let (m, writer) = mxwatch::daemon::open_for_sweep(&config, Arc::new(SystemClock)).unwrap();
        let t = Instant::now();
        let s2 = monitor::sweep(&m, &names, concurrency, &tokio_util::sync::CancellationToken::new()).await;
        let sweep2 = n as f64 / t.elapsed().as_secs_f64();
        drop(m);
        writer.await.unwrap();
        let bytes2 = db_bytes(&config.database);
        let rows2 = Store::open(&config.database).unwrap().counts().unwrap();

        let (bare2, ok2) = bare(dns.addr, &names, concurrency).await;
        let bare_mean = (bare1 + bare2) / 2.0;

        println!("| figure | value |");
        println!("|---|---|");
        println!("| domains | {n} |");
        println!("| concurrency | {concurrency} |");
        println!("| watchlist load (YAML + domains file) | {load_ms} ms |");
        println!("| bare resolver, before | {bare1:.0} domains/s ({ok1} answered) |");
        println!("| bare resolver, after | {bare2:.0} domains/s ({ok2} answered) |");
        println!(
            "| pipeline, first sweep (inserts) | {sweep1:.0} domains/s ({} answered, {} failed) = {:.2}x bare |",
            s1.answered,
            s1.failed,
            sweep1 / bare_mean
        );
        println!(
            "| pipeline, second sweep (no changes) | {sweep2:.0} domains/s ({} answered, {} changes) = {:.2}x bare |",
            s2.answered,
            s2.changes,
            sweep2 / bare_mean
        );
        println!("| database after sweep 1 | {bytes1} bytes; runs/changes/windows {rows1:?} |");
        println!("| database after sweep 2 | {bytes2} bytes; runs/changes/windows {rows2:?} |");
        println!("| rows added by the sweep with no changes | {} |", (rows2.0 + rows2.1 + rows2.2) - (rows1.0 + rows1.1 + rows1.2));
        println!("| peak RSS | {:.0} MiB |", peak_rss_mib());
        println!("| DNS queries served | {} |", dns.queries());
    });
}
