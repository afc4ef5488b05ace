//! Prometheus metrics (`/metrics`). Counters are bumped where things
//! happen (a committed check, an answered verdict, a served request); what
//! the database holds (open windows, stored bounces) is read at scrape time.
//! Only this module knows the exposition format.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::bounce::Kind;
use crate::store::DeliveryStatus;
use crate::verdict::Verdict;
use crate::window::WindowKind;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabel {
    verdict: &'static str,
    /// The bounce's kind (`user_unknown`, `mailbox_full`, …): 19 values.
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Route {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShedLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ForwardLabel {
    target: String,
    /// The verdict forwarded (`request` for a passthrough request).
    verdict: &'static str,
    /// `delivered`, `held`, `skipped`, `failed` or `retrying`.
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UndoLabel {
    target: String,
    /// `removed`, `not_found`, `dry_run`, `kept`, `still_suppressed`,
    /// `failed` or `retrying`.
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WindowLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabel {
    target: String,
    status: &'static str,
}

/// What the database holds now, read at scrape time.
#[derive(Debug, Default)]
pub struct Stored {
    /// Active windows by kind.
    pub open_windows: Vec<(WindowKind, i64)>,
    pub bounces: i64,
    /// Unlisted domains watched because they bounced.
    pub auto_watched: i64,
    /// Alert deliveries by target and status.
    pub deliveries: Vec<(String, DeliveryStatus, i64)>,
}

type Latency = Family<Route, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 100 µs .. ~3.3 s
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// The daemon's metrics. Cheap to update from any thread.
pub struct Metrics {
    registry: Registry,
    checks: Family<Outcome, Counter>,
    changes: Counter,
    bounces: Counter,
    reinstatements: Counter,
    verdicts: Family<VerdictLabel, Counter>,
    requests: Latency,
    shed: Family<ShedLabel, Counter>,
    open_windows: Family<WindowLabel, Gauge>,
    stored_bounces: Gauge,
    auto_watched: Gauge,
    deliveries: Family<DeliveryLabel, Gauge>,
    forwarded: Family<ForwardLabel, Counter>,
    undone: Family<UndoLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mxwatch");
        let checks = Family::<Outcome, Counter>::default();
        registry.register(
            "checks",
            "MX checks committed, by consensus outcome",
            checks.clone(),
        );
        let changes = Counter::default();
        registry.register("changes", "MX changes detected", changes.clone());
        let bounces = Counter::default();
        registry.register(
            "bounces_ingested",
            "Bounces newly stored by this process",
            bounces.clone(),
        );
        let reinstatements = Counter::default();
        registry.register(
            "reinstatements",
            "Suppressions turned over by windows found late",
            reinstatements.clone(),
        );
        let verdicts = Family::<VerdictLabel, Counter>::default();
        registry.register(
            "verdicts",
            "Verdicts answered (API and ingest), by verdict and bounce kind",
            verdicts.clone(),
        );
        let requests: Latency = Family::new_with_constructor(latency_histogram);
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            requests.clone(),
        );
        let shed = Family::<ShedLabel, Counter>::default();
        registry.register(
            "http_shed",
            "Requests and connections refused to keep the daemon within its limits, by reason \
             (memory: the body memory budget was spent; peer: one address held too many connections; \
             idle: a connection doing nothing cut while the API was full)",
            shed.clone(),
        );
        let open_windows = Family::<WindowLabel, Gauge>::default();
        registry.register(
            "open_windows",
            "Windows active now, by kind",
            open_windows.clone(),
        );
        let stored_bounces = Gauge::default();
        registry.register(
            "stored_bounces",
            "Bounces in the database",
            stored_bounces.clone(),
        );
        let auto_watched = Gauge::default();
        registry.register(
            "auto_watched_domains",
            "Unlisted domains watched because they bounced (auto_watch:)",
            auto_watched.clone(),
        );
        let deliveries = Family::<DeliveryLabel, Gauge>::default();
        registry.register(
            "alert_deliveries",
            "Webhook alert deliveries in the database, by target and status \
             (pending: not yet acknowledged; failed: refused for good or too old)",
            deliveries.clone(),
        );
        let forwarded = Family::<ForwardLabel, Counter>::default();
        registry.register(
            "forwarded",
            "Forwarded events by target, verdict and outcome, since start (delivered; held until \
             released; skipped: not for the target or dropped; failed: refused for good or too old; \
             retrying: an attempt failed)",
            forwarded.clone(),
        );
        let undone = Family::<UndoLabel, Counter>::default();
        registry.register(
            "undo",
            "Suppressions an undo target took off (or would have: dry_run), left (kept, \
             still_suppressed), or failed to take off, since start",
            undone.clone(),
        );
        Metrics {
            registry,
            checks,
            changes,
            bounces,
            reinstatements,
            verdicts,
            requests,
            shed,
            open_windows,
            stored_bounces,
            auto_watched,
            deliveries,
            forwarded,
            undone,
        }
    }

    /// A committed check: its consensus outcome and how many changes it found.
    pub fn check(&self, outcome: &str, changes: usize) {
        self.checks
            .get_or_create(&Outcome {
                outcome: outcome.to_string(),
            })
            .inc();
        self.changes.inc_by(changes as u64);
    }

    pub fn verdict(&self, kind: Kind, v: Verdict) {
        self.verdicts
            .get_or_create(&VerdictLabel {
                verdict: v.as_str(),
                kind: kind.as_str(),
            })
            .inc();
    }

    pub fn ingested(&self, stored: usize, reinstated: usize) {
        self.bounces.inc_by(stored as u64);
        self.reinstatements.inc_by(reinstated as u64);
    }

    /// A served request: its route pattern (not the raw path, which would
    /// make one series per domain) and how long it took.
    pub fn request(&self, route: &str, seconds: f64) {
        self.requests
            .get_or_create(&Route {
                route: route.to_string(),
            })
            .observe(seconds);
    }

    /// Requests or connections refused or cut for a limit (`memory`,
    /// `peer`, `idle`).
    /// What became of a forwarded event.
    pub fn forwarded(&self, target: &str, verdict: &'static str, outcome: &'static str) {
        self.forwarded
            .get_or_create(&ForwardLabel {
                target: target.to_string(),
                verdict,
                outcome,
            })
            .inc();
    }

    /// What an undo came to.
    pub fn undone(&self, target: &str, outcome: &'static str) {
        self.undone
            .get_or_create(&UndoLabel {
                target: target.to_string(),
                outcome,
            })
            .inc();
    }

    pub fn shed(&self, reason: &'static str, count: usize) {
        self.shed
            .get_or_create(&ShedLabel { reason })
            .inc_by(count as u64);
    }

    /// The text exposition, with the database's figures as of now.
    pub fn render(&self, stored: &Stored) -> String {
        self.open_windows.clear();
        for kind in WindowKind::ALL {
            self.open_windows
                .get_or_create(&WindowLabel {
                    kind: kind.as_str(),
                })
                .set(0);
        }
        for (kind, n) in &stored.open_windows {
            self.open_windows
                .get_or_create(&WindowLabel {
                    kind: kind.as_str(),
                })
                .set(*n);
        }
        self.stored_bounces.set(stored.bounces);
        self.auto_watched.set(stored.auto_watched);
        self.deliveries.clear();
        for (target, status, n) in &stored.deliveries {
            self.deliveries
                .get_or_create(&DeliveryLabel {
                    target: target.clone(),
                    status: status.as_str(),
                })
                .set(*n);
        }
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_what_was_counted() {
        let m = Metrics::new();
        m.check("records", 2);
        m.check("servfail", 0);
        m.verdict(Kind::UserUnknown, Verdict::Transient);
        m.request("/v1/verdict", 0.0004);
        let text = m.render(&Stored {
            open_windows: vec![(WindowKind::Anomaly, 1)],
            bounces: 42,
            auto_watched: 7,
            deliveries: vec![("ops".into(), DeliveryStatus::Failed, 3)],
        });
        for want in [
            "mxwatch_checks_total{outcome=\"records\"} 1",
            "mxwatch_checks_total{outcome=\"servfail\"} 1",
            "mxwatch_changes_total 2",
            "mxwatch_verdicts_total{verdict=\"transient\",kind=\"user_unknown\"} 1",
            "mxwatch_open_windows{kind=\"anomaly\"} 1",
            "mxwatch_stored_bounces 42",
            "mxwatch_auto_watched_domains 7",
            "mxwatch_alert_deliveries{target=\"ops\",status=\"failed\"} 3",
            "mxwatch_http_request_duration_seconds_count{route=\"/v1/verdict\"} 1",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }
}
