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
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::event::EventType;
use crate::store::{
    AlertEvent, Consumers, Decision, Delivery, DeliveryStatus, DeliveryWrite, Store, StoreError,
    Writer,
};

/// How an attempt went.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    Delivered,
    /// Done, and what it came to (an undo: `removed`, `not_found`, …).
    Done(&'static str),
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
    /// At most this many deliveries done with one of these outcomes in
    /// any hour; the next waits (in order) until the hour has room.
    pub per_hour: Option<(u32, &'static [&'static str])>,
}

/// One consumer of the outbox.
pub trait Consumer: Send + Sync + 'static {
    /// Whose it is: its deliveries and cursor are kept under
    /// `kind().key(name())`.
    fn kind(&self) -> Consumers;
    /// Its name, as the watchlist gives it.
    fn name(&self) -> &str;
    /// What it delivers, for the log (`alert`).
    fn what(&self) -> &'static str {
        self.kind().what()
    }
    fn policy(&self) -> Policy;
    /// What it makes of a new event: skip it, send it (or part of it), or
    /// hold it until an operator releases it.
    fn take(&self, ev: &AlertEvent) -> Decision;
    /// One attempt to deliver `ev` as `d` says (its part, whether it was
    /// released).
    fn attempt(
        &self,
        http: &reqwest::Client,
        ev: &AlertEvent,
        d: &Delivery,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Attempt> + Send;
    /// What became of an event, for the consumer's own counting.
    fn settled(&self, _ev: &AlertEvent, _outcome: Settled) {}
    /// An event of its own that sums up a run of attempts (what each came
    /// to: an outcome, `failed` or `retrying`), if it has one to say.
    fn summarise(&self, _outcomes: &[&'static str]) -> Option<(EventType, String)> {
        None
    }
}

/// What became of an event (for metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    Skipped,
    Held,
    Delivered,
    /// Failed for good: refused, or given up after `max_age`.
    Failed,
    /// Failed this time; tried again later.
    Retrying,
}

impl Settled {
    pub fn as_str(self) -> &'static str {
        match self {
            Settled::Skipped => "skipped",
            Settled::Held => "held",
            Settled::Delivered => "delivered",
            Settled::Failed => "failed",
            Settled::Retrying => "retrying",
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

/// What one consumer's worker needs.
pub struct Worker<C> {
    pub consumer: C,
    pub database: PathBuf,
    pub writer: Writer,
    pub clock: Arc<dyn Clock>,
    pub http: reqwest::Client,
    /// Where a consumer new to the database starts: after this event, the
    /// newest when the daemon composed its workers (so nothing that
    /// arrives while it starts is missed).
    pub start_at: i64,
}

/// How often a worker looks for new events when it has none.
const POLL: Duration = Duration::from_secs(1);

/// How many deliveries a worker sends before it commits their outcomes
/// together (in order; the first that fails ends the run). A crash
/// mid-run sends at most these again.
const RUN: usize = 256;

/// Deliveries to send in order, with their events (none when the event is
/// gone, only by hand-editing the database).
type Run = Vec<(Delivery, Option<AlertEvent>)>;

enum Work {
    /// Pending deliveries.
    Send(Run),
    /// New events, and how far they were read (past the last of them when
    /// events for others came after).
    New(Vec<AlertEvent>, i64),
    /// No new event for this consumer, but others' events to pass by, up
    /// to this one.
    Pass(i64),
}

impl<C: Consumer> Worker<C> {
    fn key(&self) -> String {
        self.consumer.kind().key(self.consumer.name())
    }

    /// Delivers until `stop` turns true; an attempt in flight finishes first.
    pub async fn run(self, stop: CancellationToken) {
        if let Err(e) = self.work(&stop).await {
            let (what, name) = (self.consumer.what(), self.consumer.name());
            tracing::error!(target = %name, "{what} delivery stopped: {e}");
        }
    }

    async fn work(&self, stop: &CancellationToken) -> Result<(), StoreError> {
        let store = Arc::new(Mutex::new(Store::open(&self.database)?));
        // The deliveries done within the last hour, as the cap counts them.
        let mut hour = Hour::default();
        if let Some((_, counts)) = self.consumer.policy().per_hour {
            let since = self.clock.now() - chrono::Duration::hours(1);
            let (s, key) = (store.clone(), self.key());
            hour = tokio::task::spawn_blocking(move || {
                let s = s.lock().expect("store lock");
                s.done_times(&key, since, counts)
            })
            .await
            .map_err(|_| StoreError::WriterGone)??
            .into_iter()
            .collect();
        }
        self.writer
            .delivery(DeliveryWrite::StartCursor {
                target: self.key(),
                at: Some(self.start_at),
            })
            .await?;
        loop {
            if stop.is_cancelled() {
                return Ok(());
            }
            match self.next(&store).await? {
                Work::Pass(upto) => {
                    let (taken, _) = self.take(Vec::new(), upto);
                    self.writer.delivery(taken).await?;
                }
                Work::New(events, _) if events.is_empty() => {
                    if wait(stop, POLL).await {
                        return Ok(());
                    }
                }
                Work::New(events, upto) => {
                    // What was just taken is sent at once (nothing older is
                    // pending, or `next` would have said so), and committed
                    // with the decisions: one commit per page.
                    let (taken, run) = self.take(events, upto);
                    self.send(run, stop, Some(taken), &mut hour).await?;
                }
                Work::Send(run) => {
                    let now = self.clock.now();
                    if let Some(next) = run.first().and_then(|(d, _)| d.next_attempt)
                        && next > now
                    {
                        if wait(stop, (next - now).to_std().unwrap_or_default()).await {
                            return Ok(());
                        }
                        continue;
                    }
                    self.send(run, stop, None, &mut hour).await?;
                }
            }
        }
    }

    /// What to do next: the oldest pending deliveries, else the events past
    /// the cursor (each `reinstated` one with this consumer's delivery of
    /// the event it follows).
    async fn next(&self, store: &Arc<Mutex<Store>>) -> Result<Work, StoreError> {
        let (s, key, kind) = (store.clone(), self.key(), self.consumer.kind());
        tokio::task::spawn_blocking(move || -> Result<Work, StoreError> {
            let s = s.lock().expect("store lock");
            let pending = s.next_deliveries(&key, RUN)?;
            if !pending.is_empty() {
                let mut run = Vec::with_capacity(pending.len());
                for d in pending {
                    let ev = s.alert_event(d.outbox_id)?;
                    run.push((d, ev));
                }
                return Ok(Work::Send(run));
            }
            let cursor = s.alert_cursor(&key)?.unwrap_or(0);
            let (mut events, upto) = s.events_for(kind, cursor, 256)?;
            for ev in &mut events {
                if let Some(f) = ev.forward.as_deref_mut()
                    && let Some(follows) = f.follows
                {
                    f.followed = s.delivery_of(&key, follows)?.map(|d| d.status);
                }
            }
            Ok(match (events.is_empty(), upto > cursor) {
                (true, true) => Work::Pass(upto),
                _ => Work::New(events, upto.max(cursor)),
            })
        })
        .await
        .map_err(|_| StoreError::WriterGone)?
    }

    /// New events, as the consumer decides on each; one commit. An event
    /// that follows another of the same page sees what was decided on it.
    /// Returns the write that records the decisions, and the deliveries
    /// to send, in order.
    fn take(&self, mut events: Vec<AlertEvent>, upto: i64) -> (DeliveryWrite, Run) {
        let mut taken: std::collections::HashMap<i64, DeliveryStatus> = Default::default();
        let decisions = events
            .iter_mut()
            .map(|ev| {
                if let Some(f) = ev.forward.as_deref_mut()
                    && let Some(status) = f.follows.and_then(|id| taken.get(&id))
                {
                    f.followed = Some(*status);
                }
                let d = self.consumer.take(ev);
                match &d {
                    Decision::Send { .. } => taken.insert(ev.outbox.id, DeliveryStatus::Pending),
                    Decision::Hold { .. } => taken.insert(ev.outbox.id, DeliveryStatus::Held),
                    Decision::Skip => None,
                };
                match &d {
                    Decision::Skip => self.consumer.settled(ev, Settled::Skipped),
                    Decision::Hold { note, .. } => {
                        let (name, what) = (self.consumer.name(), self.consumer.what());
                        tracing::info!(target = %name, id = %ev.id(), "{what} held: {note}");
                        self.consumer.settled(ev, Settled::Held);
                    }
                    Decision::Send { .. } => {}
                }
                (ev.outbox.id, d)
            })
            .collect();
        let mut decisions: Vec<(i64, Decision)> = decisions;
        // The cursor moves past what the page read, events for others too.
        if decisions.last().is_none_or(|(id, _)| *id < upto) {
            decisions.push((upto, Decision::Skip));
        }
        let run: Run = events
            .into_iter()
            .zip(&decisions)
            .filter_map(|(ev, (_, d))| match d {
                Decision::Send {
                    parts,
                    remainder,
                    note,
                } => Some((self.new_delivery(&ev, parts, remainder, note), Some(ev))),
                _ => None,
            })
            // In order, up to the first loaded without its request's body.
            .take_while(|(_, ev)| ev.as_ref().is_some_and(AlertEvent::is_whole))
            .take(RUN)
            .collect();
        let taken = DeliveryWrite::Take {
            target: self.key(),
            decisions,
        };
        (taken, run)
    }

    /// The delivery a `Send` decision makes, as it is stored.
    fn new_delivery(
        &self,
        ev: &AlertEvent,
        parts: &Option<String>,
        remainder: &Option<String>,
        note: &Option<String>,
    ) -> Delivery {
        Delivery {
            id: 0,
            outbox_id: ev.outbox.id,
            target: self.key(),
            status: DeliveryStatus::Pending,
            attempts: 0,
            next_attempt: None,
            last_attempt: None,
            last_error: None,
            event: ev.outbox.event,
            summary: ev.outbox.summary.clone(),
            created_at: ev.outbox.created_at,
            released: false,
            parts: parts.clone(),
            remainder: remainder.clone(),
            note: note.clone(),
            outcome: None,
            domain: ev.domain(),
            queued_behind: 0,
        }
    }

    /// Sends a run of pending deliveries in order until one is not
    /// delivered (or a stop is asked for), then commits what became of
    /// each in one transaction.
    async fn send(
        &self,
        run: Run,
        stop: &CancellationToken,
        first: Option<DeliveryWrite>,
        hour: &mut Hour,
    ) -> Result<(), StoreError> {
        let mut writes: Vec<DeliveryWrite> = first.into_iter().collect();
        let mut outcomes: Vec<&'static str> = Vec::new();
        let cap = self.consumer.policy().per_hour;
        for (d, ev) in &run {
            let Some(ev) = ev else {
                writes.push(DeliveryWrite::Attempted {
                    target: d.target.clone(),
                    outbox_id: d.outbox_id,
                    at: self.clock.now(),
                    status: DeliveryStatus::Failed,
                    error: Some("the outbox event is missing".into()),
                    next_attempt: None,
                    outcome: None,
                });
                continue;
            };
            if let Some((per_hour, _)) = cap
                && let Some(until) = hour.full(per_hour, self.clock.now())
            {
                let why = format!("waiting: {per_hour} done in the last hour, the cap");
                tracing::info!(target = %self.consumer.name(), until = %crate::event::time(until), "{why}");
                writes.push(DeliveryWrite::Wait {
                    target: d.target.clone(),
                    outbox_id: d.outbox_id,
                    until,
                    why,
                });
                break;
            }
            let w = self.attempt(d, ev).await;
            let (delivered, outcome) = match &w {
                DeliveryWrite::Attempted {
                    status,
                    outcome,
                    at,
                    ..
                } => {
                    if let (Some((_, counts)), Some(o)) = (cap, outcome)
                        && counts.contains(o)
                    {
                        hour.0.push(*at);
                    }
                    let said = match status {
                        DeliveryStatus::Delivered => outcome.unwrap_or("delivered"),
                        DeliveryStatus::Pending => "retrying",
                        _ => "failed",
                    };
                    (*status == DeliveryStatus::Delivered, said)
                }
                _ => (false, "failed"),
            };
            writes.push(w);
            outcomes.push(outcome);
            if !delivered || stop.is_cancelled() {
                break;
            }
        }
        self.writer.delivery(DeliveryWrite::Batch(writes)).await?;
        if let Some((event, summary)) = self.consumer.summarise(&outcomes) {
            self.writer
                .announce(event, summary, self.clock.now())
                .await?;
        }
        Ok(())
    }

    /// One attempt, and what it leaves: delivered, failed for good, or
    /// pending with the time of the next attempt.
    async fn attempt(&self, d: &Delivery, ev: &AlertEvent) -> DeliveryWrite {
        let (name, what) = (self.consumer.name(), self.consumer.what());
        let policy = self.consumer.policy();
        let now = self.clock.now();
        let result = self.consumer.attempt(&self.http, ev, d, now).await;
        let at = self.clock.now();
        let attempts = d.attempts + 1;
        let age = (at - ev.outbox.created_at).to_std().unwrap_or_default();
        let mut outcome = None;
        let (status, error, next_attempt) = match result {
            Attempt::Delivered => {
                tracing::debug!(target = %name, id = %ev.id(), "{what} delivered");
                self.consumer.settled(ev, Settled::Delivered);
                (DeliveryStatus::Delivered, None, None)
            }
            Attempt::Done(o) => {
                tracing::info!(target = %name, id = %ev.id(), outcome = o, "{what} done");
                self.consumer.settled(ev, Settled::Delivered);
                outcome = Some(o);
                (DeliveryStatus::Delivered, None, None)
            }
            Attempt::Refused(e) => {
                tracing::warn!(target = %name, id = %ev.id(), "{what} refused for good: {e}");
                self.consumer.settled(ev, Settled::Failed);
                (DeliveryStatus::Failed, Some(e), None)
            }
            Attempt::Failed(e) if age >= policy.max_age => {
                let e = format!(
                    "gave up after {attempts} attempts over {}: {e}",
                    crate::event::duration(Duration::from_secs(age.as_secs()))
                );
                tracing::warn!(target = %name, id = %ev.id(), "{what} {e}");
                self.consumer.settled(ev, Settled::Failed);
                (DeliveryStatus::Failed, Some(e), None)
            }
            Attempt::Failed(e) => {
                let delay = backoff(policy.backoff, d.attempts, d.outbox_id);
                tracing::info!(target = %name, id = %ev.id(), attempts, retry_in = ?delay, "{what} not delivered: {e}");
                self.consumer.settled(ev, Settled::Retrying);
                let next = chrono::Duration::from_std(delay)
                    .ok()
                    .and_then(|d| at.checked_add_signed(d))
                    .unwrap_or(DateTime::<Utc>::MAX_UTC);
                (DeliveryStatus::Pending, Some(e), Some(next))
            }
        };
        DeliveryWrite::Attempted {
            target: d.target.clone(),
            outbox_id: d.outbox_id,
            at,
            status,
            error,
            next_attempt,
            outcome,
        }
    }
}

/// When the deliveries a cap counts were done (within the last hour).
#[derive(Debug, Default)]
struct Hour(Vec<DateTime<Utc>>);

impl FromIterator<DateTime<Utc>> for Hour {
    fn from_iter<I: IntoIterator<Item = DateTime<Utc>>>(i: I) -> Self {
        Hour(i.into_iter().collect())
    }
}

impl Hour {
    /// When the hour has room again, if it is full at `now`.
    fn full(&mut self, per_hour: u32, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let hour = chrono::Duration::hours(1);
        self.0.retain(|t| *t + hour > now);
        self.0.sort_unstable();
        let n = self.0.len();
        let over = n.checked_sub(per_hour as usize)?;
        Some(self.0[over] + hour)
    }
}

/// Running consumers' workers: each stops after its attempt in flight.
pub struct Workers {
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Workers {
    /// Workers that stop when `stop` is cancelled or [`Workers::stop`] is called.
    pub fn new(stop: &CancellationToken) -> Workers {
        Workers {
            stop: stop.child_token(),
            tasks: TaskTracker::new(),
        }
    }

    /// Starts one consumer's worker.
    pub fn start<C: Consumer>(&self, worker: Worker<C>) {
        self.tasks.spawn(worker.run(self.stop.clone()));
    }

    /// Starts a task of the same lifetime (the digest).
    pub fn spawn<F>(&self, task: impl FnOnce(CancellationToken) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(task(self.stop.clone()));
    }

    /// Stops every worker after its attempt in flight.
    pub async fn stop(self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
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
