//! Webhook alerts: each configured target is a consumer of the outbox
//! ([`crate::delivery`] delivers it in order, retried with backoff,
//! durable across restarts); this module says which events a target wants
//! and how one is sent.
//!
//! Body: generic JSON (schema version 1, documented in README) or
//! Slack/Mattermost (`text` plus blocks). Signature:
//! `X-Mxwatch-Signature: sha256=HEX(HMAC-SHA256(secret, "{timestamp}.{body}"))`
//! with `X-Mxwatch-Timestamp` in Unix seconds.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
pub use crate::delivery::Workers;
use crate::delivery::{Attempt, Consumer, Policy, Worker, wait};
use crate::detect::Severity;
use crate::event::time;
use crate::provider::Providers;
use crate::store::{AlertEvent, Consumers, Decision, Delivery, Store, StoreError, Writer};

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
        if !ev.outbox.event.is_alert() {
            return false;
        }
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

/// An alert target as a consumer of the outbox: the events its filters
/// want, in its format, signed with its secret.
pub struct Alerting {
    pub target: AlertTarget,
    pub providers: Providers,
    /// Watched domains' tags, for tag filters.
    pub tags: HashMap<String, Vec<String>>,
}

impl Consumer for Alerting {
    fn kind(&self) -> Consumers {
        Consumers::Alerts
    }

    fn name(&self) -> &str {
        &self.target.name
    }

    fn policy(&self) -> Policy {
        Policy {
            backoff: self.target.backoff,
            max_age: self.target.max_age,
            per_hour: None,
        }
    }

    fn take(&self, ev: &AlertEvent) -> Decision {
        if self.target.wants(ev, &self.tags) {
            Decision::Send {
                parts: None,
                remainder: None,
                note: None,
            }
        } else {
            Decision::Skip
        }
    }

    async fn attempt(
        &self,
        http: &reqwest::Client,
        ev: &AlertEvent,
        _: &Delivery,
        now: DateTime<Utc>,
    ) -> Attempt {
        let target = &self.target;
        let body = match target.format {
            BodyFormat::Json => report::alert_json(ev, &self.providers),
            BodyFormat::Slack => report::alert_slack_json(ev, &self.providers),
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
        crate::delivery::answered(req.body(body).send().await)
    }
}

/// The daily digest's text: the last day's events by type, windows active
/// now, and reinstatements.
pub fn digest_summary(store: &Store, now: DateTime<Utc>) -> Result<String, StoreError> {
    let since = now
        .checked_sub_signed(chrono::Duration::days(1))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    let counts: Vec<(EventType, i64)> = store
        .outbox_counts_since(since)?
        .into_iter()
        .filter(|(e, _)| e.is_alert())
        .collect();
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
        let n = crate::event::plural(active.len(), "window");
        format!("{n} active: {}", names.join("; "))
    };
    Ok(format!(
        "Last 24 hours: {events}; {} to undo; {windows}.",
        crate::event::plural(reinstated, "suppression")
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

/// Starts a worker per target, and the digest; they stop when `stop` is
/// cancelled or [`Workers::stop`] is called. A target new to the database
/// starts after outbox event `start_at`.
pub fn start(
    setup: Setup,
    writer: &Writer,
    clock: &Arc<dyn Clock>,
    start_at: i64,
    stop: &CancellationToken,
) -> Workers {
    let workers = Workers::new(stop);
    let http = crate::http_client();
    for t in &setup.targets {
        workers.start(Worker {
            consumer: Alerting {
                target: t.clone(),
                providers: setup.providers.clone(),
                tags: setup.tags.clone(),
            },
            database: setup.database.clone(),
            writer: writer.clone(),
            clock: clock.clone(),
            http: http.clone(),
            start_at,
        });
    }
    if let Some(schedule) = &setup.digest {
        let (schedule, db, writer, clock) = (
            schedule.clone(),
            setup.database.clone(),
            writer.clone(),
            clock.clone(),
        );
        workers.spawn(move |stop| digest_loop(schedule, db, writer, clock, stop));
    }
    workers
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
                close_note: None,
            }),
            forward: None,
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
