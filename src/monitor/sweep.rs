//! A one-off sweep: every domain checked once, and its totals.

use super::{CheckEvent, Monitor};
use crate::detect::WindowEvent;
use crate::dns::Observation;
use crate::domain::DomainName;

/// Totals of a one-off sweep.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepSummary {
    pub checked: usize,
    /// Checks whose consensus was an answer (records, null MX, no MX, NXDOMAIN).
    pub answered: usize,
    pub failed: usize,
    pub changes: usize,
    pub windows_opened: usize,
    /// Checks that could not be recorded.
    pub not_recorded: usize,
    /// Answers still held after the second look (our resolver is suspect).
    pub held: usize,
    /// Checks that asked nothing: no socket could be opened on our side.
    pub not_asked: usize,
    /// Stopped by a signal before every domain was checked.
    pub stopped: bool,
}

impl SweepSummary {
    /// Adds a committed check.
    pub(super) fn count(&mut self, ev: &CheckEvent) {
        self.checked += 1;
        if !ev.observations.is_empty() && ev.observations.iter().all(Observation::is_local_failure)
        {
            self.not_asked += 1;
        } else if ev.held {
            self.held += 1;
        } else if ev.observations.iter().any(|o| !o.outcome.is_failure()) {
            self.answered += 1;
        } else {
            self.failed += 1;
        }
        self.changes += ev.changes.len();
        self.windows_opened += usize::from(matches!(ev.window, Some((WindowEvent::Opened, _))));
    }
}

/// Checks every domain once, now, at most `concurrency` at a time; then,
/// when answers were held, a few others again and the held ones once more
/// (a held answer is believed only when fresh checks of the others are fine).
/// Once `stop` is cancelled no further check starts; those in flight commit.
pub async fn sweep(
    monitor: &Monitor,
    domains: &[DomainName],
    concurrency: usize,
    stop: &tokio_util::sync::CancellationToken,
) -> SweepSummary {
    let mut s = SweepSummary::default();
    let held = sweep_pass(monitor, domains, concurrency, stop, &mut s).await;
    if !held.is_empty() && !stop.is_cancelled() {
        // Fresh evidence of the others first (as many as the outage
        // detector needs), then the held ones again.
        let sample: Vec<DomainName> = domains
            .iter()
            .filter(|d| !held.contains(d))
            .take(20)
            .cloned()
            .collect();
        let mut again = SweepSummary::default();
        sweep_pass(monitor, &sample, concurrency, stop, &mut again).await;
        s.changes += again.changes;
        s.windows_opened += again.windows_opened;
        s.not_recorded += again.not_recorded;
        s.checked -= held.len();
        s.held = sweep_pass(monitor, &held, concurrency, stop, &mut s)
            .await
            .len();
    }
    s.stopped = stop.is_cancelled();
    s
}

/// One pass of a sweep; returns the domains whose answers were held.
async fn sweep_pass(
    monitor: &Monitor,
    domains: &[DomainName],
    concurrency: usize,
    stop: &tokio_util::sync::CancellationToken,
    s: &mut SweepSummary,
) -> Vec<DomainName> {
    use futures::StreamExt;
    let mut held = Vec::new();
    let stopped = Box::pin(stop.clone().cancelled_owned());
    let mut results = futures::stream::iter(domains.iter())
        .take_until(stopped)
        .map(|d| monitor.check(d))
        .buffer_unordered(concurrency.max(1));
    while let Some(r) = results.next().await {
        match r {
            Ok(ev) => {
                s.count(&ev);
                if ev.held {
                    s.held -= 1; // counted at the end, once it stays held
                    held.push(ev.domain.clone());
                }
            }
            Err(e) => {
                tracing::error!("check not recorded: {e}");
                s.checked += 1;
                s.not_recorded += 1;
            }
        }
    }
    held
}
