//! Undo false suppressions where they live: each `undo:` target (an ESP
//! account's suppression list, or a list manager) is a consumer of the
//! outbox ([`crate::delivery`]: in order, retried with backoff, durable,
//! at most `max_per_hour` removals an hour). The store writes an `undo`
//! event, in the transaction of the verdict or reinstatement that causes
//! it, for a bounce that came over HTTP, that the ESP suppressed on, and
//! whose verdict is `transient` on evidence that the bounce was false
//! (`verdict::Judgement::undoes_suppression`); this module decides which
//! target it is for and takes the address off the list.
//!
//! Safety, checked when the removal is about to happen: never an address
//! whose latest verdict is `suppress`, never one kept by `mxwatch undo
//! keep`, nothing remote in a dry run (the default), nothing at all until
//! `enabled`.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::bounce::Source;
use crate::delivery::{Attempt, Consumer, Policy, Worker, Workers};
use crate::event::EventType;
use crate::metrics::Metrics;
use crate::names::named;
use crate::secret::Secret;
use crate::store::{AlertEvent, Consumers, Decision, Delivery};
use crate::verdict::Verdict;

mod providers;

named! {
    /// Whose list a target takes addresses off.
    pub enum Provider {
        Ses => "ses",
        Sendgrid => "sendgrid",
        Mailgun => "mailgun",
        Postmark => "postmark",
        Listmonk => "listmonk",
    }
}

impl Provider {
    /// Where the provider's API answers unless `base_url` says otherwise
    /// (SES: per region; listmonk: wherever it runs, so it has none).
    pub fn default_base(self, region: Option<&str>) -> Option<String> {
        match self {
            Provider::Ses => region.map(|r| format!("https://email.{r}.amazonaws.com")),
            Provider::Sendgrid => Some("https://api.sendgrid.com".into()),
            Provider::Mailgun => Some("https://api.mailgun.net".into()),
            Provider::Postmark => Some("https://api.postmarkapp.com".into()),
            Provider::Listmonk => None,
        }
    }

    /// Whether a bounce of `source` was suppressed on this provider's
    /// list: its own events; listmonk blocklists on whatever reached it.
    pub fn suppressed(self, source: Source) -> bool {
        match self {
            Provider::Ses => source == Source::Ses,
            Provider::Sendgrid => source == Source::Sendgrid,
            Provider::Mailgun => source == Source::Mailgun,
            Provider::Postmark => source == Source::Postmark,
            Provider::Listmonk => true,
        }
    }
}

/// A target's credentials (from the environment or a file only).
#[derive(Debug, Clone, PartialEq)]
pub enum Credentials {
    /// SES: an access key, signed for with SigV4.
    Aws {
        key_id: Secret,
        secret: Secret,
        region: String,
    },
    /// SendGrid (bearer), Mailgun (Basic `api:KEY`), Postmark (server token).
    Key(Secret),
    /// listmonk: an API user and its token (HTTP Basic).
    User { user: String, token: Secret },
}

impl Credentials {
    /// Every secret, to be scrubbed from whatever is said.
    fn secrets(&self) -> Vec<&str> {
        match self {
            Credentials::Aws { key_id, secret, .. } => vec![key_id.expose(), secret.expose()],
            Credentials::Key(k) => vec![k.expose()],
            Credentials::User { token, .. } => vec![token.expose()],
        }
    }
}

/// One undo target, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct UndoTarget {
    pub name: String,
    pub provider: Provider,
    pub base_url: String,
    pub credentials: Credentials,
    /// Does nothing until enabled.
    pub enabled: bool,
    /// Records what would be removed, removes nothing (the default).
    pub dry_run: bool,
    /// At most this many removals an hour; the rest waits, listed.
    pub max_per_hour: u32,
    /// SendGrid: the subuser (`on-behalf-of`).
    pub on_behalf_of: Option<String>,
    /// Mailgun: the sending domain whose bounces list it is.
    pub domain: Option<String>,
    /// Postmark: the message stream (`outbound` by default).
    pub stream: String,
    pub timeout: Duration,
    pub max_age: Duration,
    pub backoff: Duration,
}

/// What an undo came to.
pub mod outcome {
    pub const REMOVED: &str = "removed";
    /// Not on the list (already gone): fine.
    pub const NOT_FOUND: &str = "not_found";
    pub const DRY_RUN: &str = "dry_run";
    /// `mxwatch undo keep`: left alone.
    pub const KEPT: &str = "kept";
    /// The address's latest verdict is `suppress`: left alone.
    pub const STILL_SUPPRESSED: &str = "still_suppressed";
}

/// What an hourly cap counts: the calls that reached the provider.
const CAPPED: &[&str] = &[outcome::REMOVED, outcome::NOT_FOUND];

/// An undo target as a consumer of the outbox.
pub struct Undoing {
    pub target: UndoTarget,
    pub metrics: Option<Arc<Metrics>>,
}

impl Consumer for Undoing {
    fn kind(&self) -> Consumers {
        Consumers::Undo
    }

    fn name(&self) -> &str {
        &self.target.name
    }

    fn policy(&self) -> Policy {
        Policy {
            backoff: self.target.backoff,
            max_age: self.target.max_age,
            per_hour: (!self.target.dry_run).then_some((self.target.max_per_hour, CAPPED)),
        }
    }

    fn take(&self, ev: &AlertEvent) -> Decision {
        let b = ev.forward.as_deref().and_then(|f| f.bounce.as_ref());
        match b {
            Some((_, b))
                if ev.outbox.event == EventType::Undo
                    && self.target.provider.suppressed(b.source) =>
            {
                Decision::Send {
                    parts: None,
                    remainder: None,
                    note: Some(format!("{} from {}", b.recipient, self.target.provider)),
                }
            }
            _ => Decision::Skip,
        }
    }

    async fn attempt(
        &self,
        http: &reqwest::Client,
        ev: &AlertEvent,
        _: &Delivery,
        now: DateTime<Utc>,
    ) -> Attempt {
        let Some(f) = ev.forward.as_deref() else {
            return Attempt::Refused("not an undo event".into());
        };
        let Some((_, b)) = &f.bounce else {
            return Attempt::Refused("the bounce is no longer stored".into());
        };
        if f.kept {
            return Attempt::Done(outcome::KEPT);
        }
        if f.latest == Some(Verdict::Suppress) {
            return Attempt::Done(outcome::STILL_SUPPRESSED);
        }
        if self.target.dry_run {
            return Attempt::Done(outcome::DRY_RUN);
        }
        let t = &self.target;
        let done = providers::remove(http, t, &b.recipient, now).await;
        let scrub = |e: String| {
            t.credentials
                .secrets()
                .iter()
                .filter(|s| !s.is_empty())
                .fold(e, |e, s| e.replace(s, "***"))
        };
        match done {
            Attempt::Failed(e) => Attempt::Failed(scrub(e)),
            Attempt::Refused(e) => Attempt::Refused(scrub(e)),
            other => other,
        }
    }

    fn summarise(&self, outcomes: &[&'static str]) -> Option<(EventType, String)> {
        if let Some(m) = &self.metrics {
            for o in outcomes {
                m.undone(&self.target.name, o);
            }
        }
        let said: Vec<&str> = outcomes
            .iter()
            .copied()
            .filter(|o| *o != "retrying")
            .collect();
        (!said.is_empty()).then(|| {
            let text = crate::summary::undo_done(&self.target.name, self.target.dry_run, &said);
            (EventType::UndoDone, text)
        })
    }
}

/// Starts a worker per enabled target; they stop when `stop` is cancelled
/// or [`Workers::stop`] is called. A target new to the database starts
/// after outbox event `start_at`.
pub fn start(
    targets: &[UndoTarget],
    database: &std::path::Path,
    writer: &crate::store::Writer,
    clock: &Arc<dyn crate::clock::Clock>,
    (metrics, start_at): (Option<Arc<Metrics>>, i64),
    stop: &tokio_util::sync::CancellationToken,
) -> Workers {
    let workers = Workers::new(stop);
    let http = crate::http_client();
    for t in targets.iter().filter(|t| t.enabled) {
        workers.start(Worker {
            consumer: Undoing {
                target: t.clone(),
                metrics: metrics.clone(),
            },
            database: database.to_path_buf(),
            writer: writer.clone(),
            clock: clock.clone(),
            http: http.clone(),
            start_at,
        });
    }
    workers
}
