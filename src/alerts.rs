//! Webhook alerts: the outbox, delivered to each configured target in order,
//! signed, retried with backoff, durable across restarts.
//!
//! An event enters the outbox in the same transaction as what it announces
//! (`store`). Per target, a worker takes events past the target's cursor,
//! keeps those its filters want as deliveries, and sends the oldest pending
//! one until it is acknowledged (2xx), refused for good (4xx other than
//! 408/429), or older than `max_age`; only then does the next go. Every step
//! is committed before the next, so a restart (or `kill -9`) resumes where it
//! stopped: an event may be sent again after a crash mid-attempt (receivers
//! deduplicate on its `id`), never lost.
//!
//! Body: generic JSON (schema version 1, documented in README) or
//! Slack/Mattermost (`text` plus blocks). Signature:
//! `X-Mxwatch-Signature: sha256=HEX(HMAC-SHA256(secret, "{timestamp}.{body}"))`
//! with `X-Mxwatch-Timestamp` in Unix seconds.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::detect::Severity;
use crate::event::time;
use crate::provider::Providers;
use crate::store::{
    AlertEvent, Delivery, DeliveryStatus, DeliveryWrite, Store, StoreError, Writer,
};

pub use crate::event::{EventType, event_id_of};
use crate::report;
pub use crate::secret::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    /// Slack or Mattermost incoming webhooks.
    Slack,
}

/// One webhook target, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertTarget {
    pub name: String,
    pub url: String,
    pub format: BodyFormat,
    pub secret: Option<Secret>,
    /// Event types wanted; empty means all.
    pub events: Vec<EventType>,
    /// Domains wanted; empty means all. Events without a domain pass.
    pub domains: Vec<String>,
    /// Tags of watched domains wanted; empty means all.
    pub tags: Vec<String>,
    pub min_severity: Severity,
    pub timeout: Duration,
    /// Give up on an event this old.
    pub max_age: Duration,
    /// First retry delay; doubles per attempt, capped at an hour.
    pub backoff: Duration,
}

/// Signs a body the way receivers verify it.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl AlertTarget {
    /// Whether this target wants the event. `tags` maps watched domains to
    /// their tags.
    pub fn wants(&self, ev: &AlertEvent, tags: &HashMap<String, Vec<String>>) -> bool {
        if !self.events.is_empty() && !self.events.contains(&ev.outbox.event) {
            return false;
        }
        if ev.severity() < self.min_severity {
            return false;
        }
        let Some(domain) = ev.domain() else {
            return true;
        };
        if !self.domains.is_empty() && !self.domains.contains(&domain) {
            return false;
        }
        if !self.tags.is_empty() {
            let theirs = tags.get(&domain).map(Vec::as_slice).unwrap_or(&[]);
            if !self.tags.iter().any(|t| theirs.contains(t)) {
                return false;
            }
        }
        true
    }
}

/// How an attempt went.
#[derive(Debug, Clone, PartialEq)]
enum Attempt {
    Delivered,
    /// Refused for good.
    Refused(String),
    /// Worth trying again.
    Failed(String),
}

async fn attempt(
    http: &reqwest::Client,
    target: &AlertTarget,
    ev: &AlertEvent,
    providers: &Providers,
    now: DateTime<Utc>,
) -> Attempt {
    let body = match target.format {
        BodyFormat::Json => report::alert_json(ev, providers),
        BodyFormat::Slack => report::alert_slack_json(ev, providers),
    };
    let body = serde_json::to_vec(&body).expect("a JSON value serialises");
    let ts = now.timestamp();
    let mut req = http
        .post(&target.url)
        .timeout(target.timeout)
        .header("content-type", "application/json")
        .header("x-mxwatch-id", ev.id())
        .header("x-mxwatch-event", ev.outbox.event.as_str())
        .header("x-mxwatch-timestamp", ts.to_string());
    if let Some(secret) = &target.secret {
        req = req.header("x-mxwatch-signature", sign(secret.bytes(), ts, &body));
    }
    match req.body(body).send().await {
        Err(e) => Attempt::Failed(format!("{}", e.without_url())),
        Ok(r) => {
            let status = r.status();
            if status.is_success() {
                Attempt::Delivered
            } else if status.is_redirection() {
                Attempt::Failed(format!(
                    "the receiver answered {status}, a redirect to {}: not followed (point the target at the final URL)",
                    crate::redirect_target(&r)
                ))
            } else if status.is_client_error() && status.as_u16() != 408 && status.as_u16() != 429 {
                Attempt::Refused(format!("the receiver answered {status}"))
            } else {
                Attempt::Failed(format!("the receiver answered {status}"))
            }
        }
    }
}

/// The delay before attempt `attempts + 1`: doubling from `base`, capped at
/// an hour, plus up to a quarter more as jitter (derived from the delivery,
/// so it differs between deliveries but repeats in tests).
pub fn backoff(base: Duration, attempts: u32, delivery: i64) -> Duration {
    let exp = base
        .saturating_mul(1u32 << attempts.min(20))
        .min(Duration::from_secs(3600));
    let h = (delivery as u64 ^ (u64::from(attempts) << 32)).wrapping_mul(0x9E3779B97F4A7C15);
    let jitter = exp.mul_f64((h >> 11) as f64 / (1u64 << 53) as f64 * 0.25);
    exp + jitter
}

/// What one target's worker needs.
pub struct Worker {
    pub target: AlertTarget,
    pub database: PathBuf,
    pub writer: Writer,
    pub clock: Arc<dyn Clock>,
    pub http: reqwest::Client,
    pub providers: Providers,
    /// Watched domains' tags, for tag filters.
    pub tags: HashMap<String, Vec<String>>,
}

/// How often a worker looks for new events when it has none.
const POLL: Duration = Duration::from_secs(1);

enum Work {
    Send(Box<(Delivery, AlertEvent)>),
    /// A pending delivery whose event is gone (only by hand-editing the database).
    Orphan(i64),
    New(Vec<AlertEvent>),
}

impl Worker {
    /// Delivers until `stop` turns true; an attempt in flight finishes first.
    pub async fn run(self, stop: CancellationToken) {
        let name = self.target.name.clone();
        if let Err(e) = self.work(&stop).await {
            tracing::error!(target = %name, "alert delivery stopped: {e}");
        }
    }

    async fn work(&self, stop: &CancellationToken) -> Result<(), StoreError> {
        let store = Arc::new(Mutex::new(Store::open(&self.database)?));
        let name = self.target.name.clone();
        self.writer
            .delivery(DeliveryWrite::StartCursor {
                target: name.clone(),
            })
            .await?;
        loop {
            if stop.is_cancelled() {
                return Ok(());
            }
            match self.next(&store).await? {
                Work::New(events) if events.is_empty() => {
                    if wait(stop, POLL).await {
                        return Ok(());
                    }
                }
                Work::New(events) => self.take(events).await?,
                Work::Orphan(delivery) => {
                    self.writer
                        .delivery(DeliveryWrite::Attempted {
                            delivery,
                            at: self.clock.now(),
                            status: DeliveryStatus::Failed,
                            error: Some("the outbox event is missing".into()),
                            next_attempt: None,
                        })
                        .await?;
                }
                Work::Send(b) => {
                    let (d, ev) = *b;
                    let now = self.clock.now();
                    if let Some(next) = d.next_attempt
                        && next > now
                    {
                        if wait(stop, (next - now).to_std().unwrap_or_default()).await {
                            return Ok(());
                        }
                        continue;
                    }
                    self.send(&d, &ev, now).await?;
                }
            }
        }
    }

    /// What to do next: the oldest pending delivery, else the events past
    /// the cursor.
    async fn next(&self, store: &Arc<Mutex<Store>>) -> Result<Work, StoreError> {
        let (s, n) = (store.clone(), self.target.name.clone());
        tokio::task::spawn_blocking(move || -> Result<Work, StoreError> {
            let s = s.lock().expect("store lock");
            if let Some(d) = s.next_delivery(&n)? {
                let ev = s.alert_event(d.outbox_id)?;
                return Ok(match ev {
                    Some(ev) => Work::Send(Box::new((d, ev))),
                    None => Work::Orphan(d.id),
                });
            }
            let cursor = s.alert_cursor(&n)?.unwrap_or(0);
            Ok(Work::New(s.alert_events(cursor, 256)?))
        })
        .await
        .map_err(|_| StoreError::WriterGone)?
    }

    /// New events: those the filters want become deliveries, the others
    /// are passed.
    async fn take(&self, events: Vec<AlertEvent>) -> Result<(), StoreError> {
        for ev in events {
            let target = self.target.name.clone();
            let outbox_id = ev.outbox.id;
            let w = if self.target.wants(&ev, &self.tags) {
                DeliveryWrite::Enqueue { target, outbox_id }
            } else {
                DeliveryWrite::Skip { target, outbox_id }
            };
            self.writer.delivery(w).await?;
        }
        Ok(())
    }

    /// One attempt, and what it leaves: delivered, failed for good, or
    /// pending with the time of the next attempt.
    async fn send(
        &self,
        d: &Delivery,
        ev: &AlertEvent,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let name = &self.target.name;
        let result = attempt(&self.http, &self.target, ev, &self.providers, now).await;
        let at = self.clock.now();
        let attempts = d.attempts + 1;
        let age = (at - ev.outbox.created_at).to_std().unwrap_or_default();
        let (status, error, next_attempt) = match result {
            Attempt::Delivered => {
                tracing::debug!(target = %name, id = %ev.id(), "alert delivered");
                (DeliveryStatus::Delivered, None, None)
            }
            Attempt::Refused(e) => {
                tracing::warn!(target = %name, id = %ev.id(), "alert refused for good: {e}");
                (DeliveryStatus::Failed, Some(e), None)
            }
            Attempt::Failed(e) if age >= self.target.max_age => {
                let e = format!(
                    "gave up after {attempts} attempts over {}: {e}",
                    humantime::format_duration(Duration::from_secs(age.as_secs()))
                );
                tracing::warn!(target = %name, id = %ev.id(), "alert {e}");
                (DeliveryStatus::Failed, Some(e), None)
            }
            Attempt::Failed(e) => {
                let delay = backoff(self.target.backoff, d.attempts, d.id);
                tracing::info!(target = %name, id = %ev.id(), attempts, retry_in = ?delay, "alert not delivered: {e}");
                let next = chrono::Duration::from_std(delay)
                    .ok()
                    .and_then(|d| at.checked_add_signed(d))
                    .unwrap_or(DateTime::<Utc>::MAX_UTC);
                (DeliveryStatus::Pending, Some(e), Some(next))
            }
        };
        self.writer
            .delivery(DeliveryWrite::Attempted {
                delivery: d.id,
                at,
                status,
                error,
                next_attempt,
            })
            .await
    }
}

/// Sleeps for `d` unless told to stop; true when told to stop.
async fn wait(stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => stop.is_cancelled(),
        _ = stop.cancelled() => true,
    }
}

/// The daily digest's text: the last day's events by type, windows active
/// now, and reinstatements.
pub fn digest_summary(store: &Store, now: DateTime<Utc>) -> Result<String, StoreError> {
    let since = now
        .checked_sub_signed(chrono::Duration::days(1))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let counts = store.outbox_counts_since(since)?;
    let active = store.windows(Some(now))?;
    let reinstated = store.reinstatements(Some(since))?.len();
    let events = if counts.is_empty() {
        "no events".to_string()
    } else {
        counts
            .iter()
            .filter(|(e, _)| *e != EventType::Digest)
            .map(|(e, n)| format!("{n} {}", e.as_str().replace('_', " ")))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let windows = if active.is_empty() {
        "no window active".to_string()
    } else {
        let names: Vec<String> = active
            .iter()
            .take(20)
            .map(|w| {
                let who = w.covers().1.unwrap_or("all domains");
                let kind = w.kind.as_str().replace('_', " ");
                format!("{kind} {who} since {}", time(w.start))
            })
            .collect();
        format!("{} window(s) active: {}", active.len(), names.join("; "))
    };
    Ok(format!(
        "Last 24 hours: {events}; {reinstated} suppression(s) to undo; {windows}."
    ))
}

/// Adds a digest event to the outbox at each tick of `schedule`.
pub async fn digest_loop(
    schedule: crate::schedule::Schedule,
    database: PathBuf,
    writer: Writer,
    clock: Arc<dyn Clock>,
    stop: CancellationToken,
) {
    loop {
        let now = clock.now();
        let next = schedule.next_tick(now);
        if wait(&stop, (next - now).to_std().unwrap_or_default()).await {
            return;
        }
        let (db, at) = (database.clone(), clock.now());
        let summary =
            tokio::task::spawn_blocking(move || digest_summary(&Store::open(&db)?, at)).await;
        match summary {
            Ok(Ok(text)) => {
                if writer.announce(EventType::Digest, text, at).await.is_err() {
                    return;
                }
            }
            Ok(Err(e)) => tracing::error!("digest: {e}"),
            Err(e) => tracing::error!("digest: {e}"),
        }
    }
}

/// Running workers, one per target.
pub struct Workers {
    stop: CancellationToken,
    tasks: TaskTracker,
}

/// What the alert workers need: their targets, the digest's schedule,
/// and what a body names (providers, domain tags). `config` composes it.
pub struct Setup {
    pub targets: Vec<AlertTarget>,
    pub digest: Option<crate::schedule::Schedule>,
    pub database: std::path::PathBuf,
    pub providers: Providers,
    /// Each watched domain's tags, by name.
    pub tags: HashMap<String, Vec<String>>,
}

impl Workers {
    /// Starts a worker per target, and the digest; they stop when `stop`
    /// is cancelled or [`Workers::stop`] is called.
    pub fn start(
        setup: Setup,
        writer: &Writer,
        clock: &Arc<dyn Clock>,
        stop: &CancellationToken,
    ) -> Workers {
        let stop = stop.child_token();
        let tasks = TaskTracker::new();
        let http = crate::http_client();
        for t in &setup.targets {
            let w = Worker {
                target: t.clone(),
                database: setup.database.clone(),
                writer: writer.clone(),
                clock: clock.clone(),
                http: http.clone(),
                providers: setup.providers.clone(),
                tags: setup.tags.clone(),
            };
            tasks.spawn(w.run(stop.clone()));
        }
        if let Some(schedule) = &setup.digest {
            tasks.spawn(digest_loop(
                schedule.clone(),
                setup.database.clone(),
                writer.clone(),
                clock.clone(),
                stop.clone(),
            ));
        }
        tasks.close();
        Workers { stop, tasks }
    }

    /// Stops every worker after its attempt in flight.
    pub async fn stop(self) {
        self.stop.cancel();
        self.tasks.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_over_timestamp_dot_body() {
        // Independent check: RFC 4231 test case 2 (key "Jefe").
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(sign(b"Jefe", 1, b"x"), {
            let mut m = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
            m.update(b"1.x");
            format!("sha256={}", hex::encode(m.finalize().into_bytes()))
        });
    }

    #[test]
    fn backoff_doubles_with_bounded_jitter_and_a_cap() {
        let base = Duration::from_secs(10);
        for attempts in 0..8 {
            let d = backoff(base, attempts, 42);
            let exp = base * (1 << attempts);
            let exp = exp.min(Duration::from_secs(3600));
            assert!(d >= exp && d <= exp.mul_f64(1.25), "{attempts}: {d:?}");
        }
        assert!(backoff(base, 40, 1) <= Duration::from_secs(4500));
        assert_ne!(backoff(base, 3, 1), backoff(base, 3, 2));
    }

    fn flip_event() -> AlertEvent {
        use crate::detect::WindowStatus;
        use crate::dns::{Answer, Outcome};
        use crate::domain::{Mx, MxHost};
        use chrono::TimeZone;
        let mx = |h: &str| {
            vec![Mx {
                preference: 10,
                exchange: MxHost::parse(h).unwrap(),
            }]
        };
        let t = |h, m| Utc.with_ymd_and_hms(2021, 4, 26, h, m, 0).unwrap();
        AlertEvent {
            outbox: crate::store::OutboxRow {
                id: 42,
                created_at: t(11, 1),
                event: EventType::WindowOpened,
                domain: Some("example.de".into()),
                window_id: Some(7),
                summary: "example.de: provider_changed: example.de → icloud".into(),
            },
            window: Some(crate::store::Window {
                id: 7,
                domain: Some("example.de".into()),
                kind: crate::window::WindowKind::MxChange,
                start: t(11, 0),
                detected_at: t(11, 1),
                end: None,
                status: WindowStatus::Open,
                close_reason: None,
                severity: Severity::Critical,
                before: Answer::from_parts(Outcome::Records, mx("mx00.example.de")),
                after: Answer::from_parts(Outcome::Records, mx("mx01.mail.icloud.com")),
                flaps: 0,
                scope: None,
                detail: None,
                last_bounce: None,
            }),
        }
    }

    /// The documented bodies (README, "Webhook alerts"): a change here is a
    /// change of the receivers' interface.
    #[test]
    fn bodies_of_an_mx_flip() {
        let p = Providers::default();
        insta::assert_json_snapshot!("json_body_v1", report::alert_json(&flip_event(), &p));
        insta::assert_json_snapshot!("slack_body", report::alert_slack_json(&flip_event(), &p));
    }

    #[test]
    fn filters() {
        let ev = flip_event();
        let target =
            |events: &[&str], domains: &[&str], tags: &[&str], min: Severity| AlertTarget {
                name: "t".into(),
                url: "http://127.0.0.1:9".into(),
                format: BodyFormat::Json,
                secret: None,
                events: events.iter().map(|s| s.parse().unwrap()).collect(),
                domains: domains.iter().map(|s| s.to_string()).collect(),
                tags: tags.iter().map(|s| s.to_string()).collect(),
                min_severity: min,
                timeout: Duration::from_secs(1),
                max_age: Duration::from_secs(60),
                backoff: Duration::from_secs(1),
            };
        let tags: HashMap<String, Vec<String>> =
            [("example.de".to_string(), vec!["customers".to_string()])].into();
        assert!(target(&[], &[], &[], Severity::Info).wants(&ev, &tags));
        assert!(
            target(
                &["window_opened"],
                &["example.de"],
                &["customers"],
                Severity::Critical
            )
            .wants(&ev, &tags)
        );
        assert!(!target(&["reinstatements"], &[], &[], Severity::Info).wants(&ev, &tags));
        assert!(!target(&[], &["web.de"], &[], Severity::Info).wants(&ev, &tags));
        assert!(!target(&[], &[], &["staff"], Severity::Info).wants(&ev, &tags));
        let mut warning = ev.clone();
        warning.window.as_mut().unwrap().severity = Severity::Warning;
        assert!(!target(&[], &[], &[], Severity::Critical).wants(&warning, &tags));
        // Events without a domain pass domain and tag filters.
        let mut global = ev;
        global.outbox.domain = None;
        global.outbox.event = EventType::ResolverOutageStarted;
        global.window = None;
        assert!(target(&[], &["web.de"], &["staff"], Severity::Critical).wants(&global, &tags));
    }

    #[test]
    fn secrets_do_not_print() {
        assert_eq!(
            format!("{:?}", Secret::new("hunter2".into())),
            "Secret(***)"
        );
    }
}
