//! The delivery engine: the outbox, delivered to each consumer in order,
//! retried with backoff, durable across restarts. Alert targets are its
//! consumers today (`alerts`); each consumer says which events it wants
//! and how one is sent, the engine does the rest.
//!
//! Per consumer, a worker takes events past the consumer's cursor, keeps
//! those it wants as deliveries, and sends the oldest pending one until it
//! is acknowledged (2xx), refused for good (4xx other than 408/429), or
//! older than the consumer's `max_age`; only then does the next go. Every
//! step is committed before the next, so a restart (or `kill -9`) resumes
//! where it stopped: an event may be sent again after a crash mid-attempt
//! (receivers deduplicate on its id), never lost.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::store::{
    AlertEvent, Delivery, DeliveryStatus, DeliveryWrite, Store, StoreError, Writer,
};

/// How an attempt went.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    Delivered,
    /// Refused for good.
    Refused(String),
    /// Worth trying again.
    Failed(String),
}

/// What a receiver's answer (or its absence) means for the attempt. A
/// redirect is never followed (`http_client`): it is a failed attempt
/// that names where it pointed.
pub fn answered(result: reqwest::Result<reqwest::Response>) -> Attempt {
    match result {
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

/// How long a consumer keeps trying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// First retry delay; doubles per attempt, capped at an hour.
    pub backoff: Duration,
    /// Give up on an event this old.
    pub max_age: Duration,
}

/// One consumer of the outbox.
pub trait Consumer: Send + Sync + 'static {
    /// The name its deliveries and cursor are kept under.
    fn name(&self) -> &str;
    /// What it delivers, for the log (`alert`).
    fn what(&self) -> &'static str;
    fn policy(&self) -> Policy;
    /// Whether it wants `ev`; an event it does not want is passed.
    fn wants(&self, ev: &AlertEvent) -> bool;
    /// One attempt to deliver `ev`.
    fn attempt(
        &self,
        http: &reqwest::Client,
        ev: &AlertEvent,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Attempt> + Send;
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

/// What one consumer's worker needs.
pub struct Worker<C> {
    pub consumer: C,
    pub database: PathBuf,
    pub writer: Writer,
    pub clock: Arc<dyn Clock>,
    pub http: reqwest::Client,
}

/// How often a worker looks for new events when it has none.
const POLL: Duration = Duration::from_secs(1);

enum Work {
    Send(Box<(Delivery, AlertEvent)>),
    /// A pending delivery whose event is gone (only by hand-editing the database).
    Orphan(i64),
    New(Vec<AlertEvent>),
}

impl<C: Consumer> Worker<C> {
    /// Delivers until `stop` turns true; an attempt in flight finishes first.
    pub async fn run(self, stop: CancellationToken) {
        if let Err(e) = self.work(&stop).await {
            let (what, name) = (self.consumer.what(), self.consumer.name());
            tracing::error!(target = %name, "{what} delivery stopped: {e}");
        }
    }

    async fn work(&self, stop: &CancellationToken) -> Result<(), StoreError> {
        let store = Arc::new(Mutex::new(Store::open(&self.database)?));
        let name = self.consumer.name().to_string();
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
        let (s, n) = (store.clone(), self.consumer.name().to_string());
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

    /// New events: those the consumer wants become deliveries, the others
    /// are passed.
    async fn take(&self, events: Vec<AlertEvent>) -> Result<(), StoreError> {
        for ev in events {
            let target = self.consumer.name().to_string();
            let outbox_id = ev.outbox.id;
            let w = if self.consumer.wants(&ev) {
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
        let (name, what) = (self.consumer.name(), self.consumer.what());
        let policy = self.consumer.policy();
        let result = self.consumer.attempt(&self.http, ev, now).await;
        let at = self.clock.now();
        let attempts = d.attempts + 1;
        let age = (at - ev.outbox.created_at).to_std().unwrap_or_default();
        let (status, error, next_attempt) = match result {
            Attempt::Delivered => {
                tracing::debug!(target = %name, id = %ev.id(), "{what} delivered");
                (DeliveryStatus::Delivered, None, None)
            }
            Attempt::Refused(e) => {
                tracing::warn!(target = %name, id = %ev.id(), "{what} refused for good: {e}");
                (DeliveryStatus::Failed, Some(e), None)
            }
            Attempt::Failed(e) if age >= policy.max_age => {
                let e = format!(
                    "gave up after {attempts} attempts over {}: {e}",
                    humantime::format_duration(Duration::from_secs(age.as_secs()))
                );
                tracing::warn!(target = %name, id = %ev.id(), "{what} {e}");
                (DeliveryStatus::Failed, Some(e), None)
            }
            Attempt::Failed(e) => {
                let delay = backoff(policy.backoff, d.attempts, d.id);
                tracing::info!(target = %name, id = %ev.id(), attempts, retry_in = ?delay, "{what} not delivered: {e}");
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
pub async fn wait(stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => stop.is_cancelled(),
        _ = stop.cancelled() => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
