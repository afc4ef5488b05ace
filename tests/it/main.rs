//! Integration tests: the real daemon (scheduler, resolver, detector,
//! SQLite writer) against an in-process DNS server on loopback and a
//! temporary database. Time is tokio's paused clock: an hour of schedule
//! runs in milliseconds, and the DNS server answers in the same runtime.

// Real processes and real files run on wall time here (clippy.toml keeps
// the library on its Clock).
#![allow(clippy::disallowed_methods)]

#[path = "../support/dns.rs"]
mod dns;

mod alerts;
mod api;
mod campaigns;
mod cli;
mod conformance;
mod feeds;
mod forward;
mod hostile;
mod layers;
mod monitoring;
mod passive;
mod real_mta;
mod reload;
mod service;
mod trust;
mod undo;
mod withdraw;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeZone;
use mxwatch::clock::TokioClock;
use mxwatch::config::Config;
use mxwatch::daemon::Daemon;
use mxwatch::domain::DomainName;
use mxwatch::monitor::CheckEvent;
use mxwatch::store::Store;
use tokio::sync::{broadcast, oneshot};

pub use dns::{Behaviour, TestDns};

/// A daemon under test.
pub struct App {
    pub daemon: Option<Daemon>,
    pub events: broadcast::Receiver<CheckEvent>,
    /// Events of other domains seen while waiting for one.
    pub pending: VecDeque<CheckEvent>,
    pub config: Config,
    pub dir: Arc<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
}

/// Writes `yaml` (plus a database path in a temp dir) as a watchlist and
/// starts the daemon on it. Settings the tests rely on come first; `yaml`
/// may add upstreams and domains.
pub fn write_config(dir: &tempfile::TempDir, yaml: &str) -> Config {
    let path = dir.path().join("watchlist.yaml");
    std::fs::write(&path, yaml).unwrap();
    Config::load(&path).unwrap()
}

pub fn base_yaml(dns: &TestDns) -> String {
    format!(
        "database: test.db\nschedule: '* * * * *'\nupstreams: ['{}']\ntimeout: 2s\nconcurrency: 1\n\
         fast_recheck: 10s\ngrace: 0s\nsettle: 2h\nauthoritative_port: {}\nlisten: '127.0.0.1:0'\n",
        dns.addr,
        dns.addr.port()
    )
}

pub fn start(config: Config, dir: Arc<tempfile::TempDir>) -> App {
    // Every test starts at the same wall time, so failures reproduce.
    let at = chrono::Utc.with_ymd_and_hms(2021, 4, 26, 11, 0, 0).unwrap();
    start_at(config, dir, at)
}

/// [`start`] with the daemon's clock starting at `at`.
pub fn start_at(
    config: Config,
    dir: Arc<tempfile::TempDir>,
    at: chrono::DateTime<chrono::Utc>,
) -> App {
    let clock = Arc::new(TokioClock::starting_at(at));
    let (stop, rx) = oneshot::channel::<()>();
    let daemon = Daemon::start(&config, clock, async move {
        let _ = rx.await;
    })
    .unwrap();
    App::from_parts(daemon, config, dir, stop)
}

pub fn spawn_app(yaml: &str) -> App {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let config = write_config(&dir, yaml);
    start(config, dir)
}

impl App {
    /// A daemon started by a test, with what stops it.
    fn from_parts(
        daemon: Daemon,
        config: Config,
        dir: Arc<tempfile::TempDir>,
        stop: oneshot::Sender<()>,
    ) -> App {
        let events = daemon.monitor.subscribe();
        App {
            daemon: Some(daemon),
            events,
            pending: VecDeque::new(),
            config,
            dir,
            stop: Some(stop),
        }
    }

    /// The next committed check of `domain` (within an hour of virtual time).
    pub async fn next_check(&mut self, domain: &str) -> CheckEvent {
        let want = DomainName::parse(domain).unwrap();
        if let Some(i) = self.pending.iter().position(|ev| ev.domain == want) {
            return self.pending.remove(i).unwrap();
        }
        let pending = &mut self.pending;
        let events = &mut self.events;
        tokio::time::timeout(Duration::from_secs(3600), async {
            loop {
                match events.recv().await {
                    Ok(ev) if ev.domain == want => return ev,
                    Ok(ev) => pending.push_back(ev),
                    Err(e) => panic!("event stream: {e}"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no check of {domain} within an hour"))
    }

    pub fn store(&self) -> Store {
        Store::open(&self.config.database).unwrap()
    }

    /// The types of the outbox's events, oldest first.
    pub fn outbox_events(&self) -> Vec<String> {
        self.store()
            .outbox()
            .unwrap()
            .into_iter()
            .map(|o| o.event.to_string())
            .collect()
    }

    pub fn db_path(&self) -> PathBuf {
        self.config.database.clone()
    }

    /// Stops the daemon and waits until everything is committed.
    pub async fn stop(mut self) -> (Config, Arc<tempfile::TempDir>) {
        let _ = self.stop.take().unwrap().send(());
        self.daemon.take().unwrap().wait().await.unwrap();
        (self.config.clone(), self.dir.clone())
    }
}

pub fn name(s: &str) -> DomainName {
    DomainName::parse(s).unwrap()
}

/// A normalised bounce line, as `bounces parse --json` prints it.
pub fn unknown_user(recipient: &str, at: chrono::DateTime<chrono::Utc>, remote: &str) -> String {
    let (_, domain) = recipient.split_once('@').unwrap();
    serde_json::to_string(&mxwatch::bounce::Bounce {
        recipient: recipient.into(),
        domain: domain.into(),
        at: Some(at),
        action: Some(mxwatch::bounce::Action::Failed),
        status: Some("5.1.1".into()),
        reply_code: Some(550),
        diagnostic: Some(format!(
            "550 5.1.1 <{recipient}>: user lookup success but no user record found"
        )),
        remote_mta: Some(remote.into()),
        reporting_mta: None,
        kind: mxwatch::bounce::Kind::UserUnknown,
        hard: true,
        source: mxwatch::bounce::Source::Jsonl,
        message_id: None,
    })
    .unwrap()
}

/// A normalised bounce that only dates the feed: a full mailbox (`retry`)
/// a day before `at`, so anomaly detection has the day of history it warms
/// up on and judges bursts at normal strength.
pub fn history_line(at: chrono::DateTime<chrono::Utc>) -> String {
    serde_json::to_string(&mxwatch::bounce::Bounce {
        recipient: "history@example.net".into(),
        domain: "example.net".into(),
        at: Some(at - chrono::Duration::hours(24)),
        action: Some(mxwatch::bounce::Action::Delayed),
        status: Some("4.2.2".into()),
        reply_code: Some(452),
        diagnostic: Some("452 4.2.2 mailbox full".into()),
        remote_mta: None,
        reporting_mta: None,
        kind: mxwatch::bounce::Kind::MailboxFull,
        hard: false,
        source: mxwatch::bounce::Source::Jsonl,
        message_id: None,
    })
    .unwrap()
}

/// The API token the tests configure.
pub const TOKEN: &str = "test-token-0123456789abcdef";

/// GETs a URL and reads its answer as text.
pub async fn get_text(url: impl reqwest::IntoUrl) -> String {
    mxwatch::http_client()
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// GETs a URL and reads its JSON answer.
pub async fn get_json<T: serde::de::DeserializeOwned>(url: impl reqwest::IntoUrl) -> T {
    mxwatch::http_client()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Scrapes `/metrics` and checks that every line in `want` is in it.
pub async fn assert_metrics(base: &str, want: &[&str]) {
    let text = mxwatch::http_client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for w in want {
        assert!(text.contains(w), "{w:?} not in\n{text}");
    }
}

/// POSTs `body` to `path` of the API, with `token` as a bearer token.
pub async fn post(
    base: &str,
    path: &str,
    token: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    let mut req = mxwatch::http_client().post(format!("{base}{path}"));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    req.body(body).send().await.unwrap()
}

/// POSTs bounces to the API with the token; the answer must be 200.
pub async fn post_bounces(base: &str, body: String) -> serde_json::Value {
    let r = post(base, "/v1/bounces", Some(TOKEN), body).await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}
