//! Vocabulary: windows, the spans of time in which a recipient's side (or
//! our resolver) was not itself. `detect`, `health` and `anomaly` open
//! them, the store keeps them as [`Window`]s, and verdicts rest on them.
//! No IO.

use chrono::{DateTime, Utc};

use crate::dns::Answer;
use crate::names::named;

named! {
    /// What opened a window.
    pub enum WindowKind {
        /// The domain's MX answer left its baseline (and the grace after).
        MxChange => "mx_change",
        /// Our own resolution failed for most domains at once.
        ResolverOutage => "resolver_outage",
        /// A burst of unknown-user bounces for a domain or a provider.
        Anomaly => "anomaly",
    }
}

named! {
    pub enum WindowStatus {
        /// The domain answers something other than its baseline.
        Open => "open",
        /// Back to the baseline; open until the grace runs out.
        Closing => "closing",
        Closed => "closed",
    }
}

named! {
    /// Why a window closed.
    pub enum CloseReason {
        Reverted => "reverted",
        Settled => "settled",
        /// The domain left the watchlist: nothing watches over the window any more.
        Unwatched => "unwatched",
        /// An anomaly's burst is over.
        Subsided => "subsided",
        /// An operator closed it as false (`mxwatch windows close`): it
        /// excuses no bounce any more, and the verdicts it made are judged
        /// again without it.
        Withdrawn => "withdrawn",
    }
}

named! {
    /// How much a change or a window matters.
    pub enum Severity {
        Info => "info",
        Warning => "warning",
        Critical => "critical",
    }
}

named! {
    /// Whom a window covers.
    pub enum ScopeKind {
        Domain => "domain",
        Provider => "provider",
        /// Every domain (a resolver outage).
        Global => "global",
    }
}

/// The named scope of an anomaly: a domain or a mailbox provider.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Domain(String),
    Provider(String),
}

impl Scope {
    pub fn kind(&self) -> ScopeKind {
        match self {
            Scope::Domain(_) => ScopeKind::Domain,
            Scope::Provider(_) => ScopeKind::Provider,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Scope::Domain(n) | Scope::Provider(n) => n,
        }
    }

    /// A stored (kind, name) pair; `None` for a kind without a name.
    pub fn of(kind: ScopeKind, name: String) -> Option<Scope> {
        match kind {
            ScopeKind::Domain => Some(Scope::Domain(name)),
            ScopeKind::Provider => Some(Scope::Provider(name)),
            ScopeKind::Global => None,
        }
    }
}

/// `domain web.de`, `provider icloud`.
impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.kind(), self.name())
    }
}

/// A window as the store keeps it, of any kind. (`detect::LiveWindow` is
/// an MX-change window while detect still tracks it.)
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub id: i64,
    /// The domain of an MX-change window; `None` otherwise.
    pub domain: Option<String>,
    pub kind: WindowKind,
    pub start: DateTime<Utc>,
    pub detected_at: DateTime<Utc>,
    pub end: Option<DateTime<Utc>>,
    pub status: WindowStatus,
    pub close_reason: Option<CloseReason>,
    pub severity: Severity,
    pub before: Option<Answer>,
    pub after: Option<Answer>,
    pub flaps: u32,
    /// Anomaly windows: the domain or provider of the burst.
    pub scope: Option<Scope>,
    /// What made an anomaly an anomaly.
    pub detail: Option<String>,
    /// An anomaly's last unknown-user bounce so far: with the time a
    /// question is asked, it says whether the burst is over (the anomaly
    /// detector's `Params::ended`), whoever last looked.
    pub last_bounce: Option<DateTime<Utc>>,
    /// Why an operator withdrew it (`close_reason` withdrawn).
    pub close_note: Option<String>,
}

impl Window {
    /// Whether an operator withdrew it as false: it excuses nothing.
    pub fn is_withdrawn(&self) -> bool {
        self.close_reason == Some(CloseReason::Withdrawn)
    }

    /// Whether it affects verdicts at `now`: open, or ending after `now`
    /// (closing with its grace not yet over, or closed with an end still
    /// to come, as a passive DNS excursion's may be).
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        match self.status {
            WindowStatus::Open => true,
            WindowStatus::Closing | WindowStatus::Closed => self.end.is_none_or(|e| e > now),
        }
    }

    /// Whom it covers: its kind of scope and the domain or provider.
    pub fn covers(&self) -> (ScopeKind, Option<&str>) {
        match (&self.scope, &self.domain) {
            (Some(s), _) => (s.kind(), Some(s.name())),
            (None, Some(d)) => (ScopeKind::Domain, Some(d)),
            (None, None) => (ScopeKind::Global, None),
        }
    }
}
