//! Vocabulary: what DNS said. One upstream's answer to one MX question is
//! an [`Observation`] (NXDOMAIN, SERVFAIL and time-outs included: data to
//! store, never an `Err`); what it amounts to is an [`Answer`]. No IO:
//! asking is `resolve`'s job.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::domain::Mx;
use crate::names::named;

/// How the detail of a [`Observation::local_failure`] starts.
const LOCAL: &str = "on our side, no question was sent: ";

named! {
    /// What one upstream said about one domain's MX.
    pub enum Outcome {
        /// One or more MX records.
        Records => "records",
        /// RFC 7505 null MX (`0 .`): the domain accepts no mail.
        NullMx => "null_mx",
        /// The name exists but has no MX; RFC 5321 §5.1 then delivers to its
        /// A/AAAA (the implicit MX), see [`Observation::implicit_mx`].
        NoMx => "no_mx",
        NxDomain => "nxdomain",
        ServFail => "servfail",
        Refused => "refused",
        Timeout => "timeout",
        Error => "error",
    }
}

impl Outcome {
    /// A failure says nothing about the domain's records: only that we could
    /// not learn them.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Outcome::ServFail | Outcome::Refused | Outcome::Timeout | Outcome::Error
        )
    }
}

/// A definitive answer about a domain's mail routing: what `detect` compares.
/// Failures are not answers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "outcome", content = "mx", rename_all = "snake_case")]
pub enum Answer {
    /// Sorted, deduplicated.
    Records(Vec<Mx>),
    NullMx,
    NoMx,
    #[serde(rename = "nxdomain")]
    NxDomain,
}

impl Answer {
    pub fn outcome(&self) -> Outcome {
        match self {
            Answer::Records(_) => Outcome::Records,
            Answer::NullMx => Outcome::NullMx,
            Answer::NoMx => Outcome::NoMx,
            Answer::NxDomain => Outcome::NxDomain,
        }
    }

    pub fn mx(&self) -> &[Mx] {
        match self {
            Answer::Records(mx) => mx,
            _ => &[],
        }
    }

    /// Rebuilds an answer from its stored parts.
    pub fn from_parts(outcome: Outcome, mx: Vec<Mx>) -> Option<Answer> {
        Some(match outcome {
            Outcome::Records => Answer::Records(mx),
            Outcome::NullMx => Answer::NullMx,
            Outcome::NoMx => Answer::NoMx,
            Outcome::NxDomain => Answer::NxDomain,
            _ => return None,
        })
    }
}

impl Answer {
    /// The answer in one word: `10 a.example,20 b.example`, or its outcome
    /// (`nxdomain`, `servfail`, …). The store keeps answers so, and
    /// evidence shows them so.
    pub fn compact(&self) -> String {
        match self {
            Answer::Records(mx) => compact_mx(mx),
            other => other.outcome().as_str().to_string(),
        }
    }
}

/// MX records in one word: `10 a.example,20 b.example`.
pub fn compact_mx(mx: &[Mx]) -> String {
    mx.iter()
        .map(|m| m.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Records(mx) => f.write_str(&crate::domain::mx_set(mx)),
            other => f.write_str(other.outcome().as_str()),
        }
    }
}

/// One upstream's answer to one MX query.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    pub upstream: String,
    pub outcome: Outcome,
    /// Sorted and deduplicated; empty unless `outcome` is `records`.
    pub mx: Vec<Mx>,
    /// The MX TTL, or the negative-caching TTL for `no_mx`/`nxdomain`.
    pub ttl: Option<u32>,
    /// For `no_mx`: the name has A or AAAA records, so mail goes there.
    pub implicit_mx: bool,
    /// Error text for `error` (and the server's words where useful).
    pub detail: Option<String>,
}

impl Observation {
    pub fn failure(upstream: &str, outcome: Outcome, detail: impl Into<String>) -> Self {
        Observation {
            upstream: upstream.to_string(),
            outcome,
            mx: vec![],
            ttl: None,
            implicit_mx: false,
            detail: Some(detail.into()),
        }
    }

    /// A failure on our side before any question left: no socket could be
    /// opened (descriptors exhausted, no buffers). It says nothing about
    /// the domain, nor about the resolvers of the world.
    pub fn local_failure(upstream: &str, detail: impl std::fmt::Display) -> Self {
        Observation::failure(upstream, Outcome::Error, format!("{LOCAL}{detail}"))
    }

    /// Whether this is a [`Observation::local_failure`].
    pub fn is_local_failure(&self) -> bool {
        self.outcome == Outcome::Error
            && self.detail.as_deref().is_some_and(|d| d.starts_with(LOCAL))
    }

    pub fn answer(&self) -> Option<Answer> {
        Answer::from_parts(self.outcome, self.mx.clone())
    }

    /// Classifies an answer section's MX records: a lone `0 .` is a null MX
    /// (RFC 7505), an empty set is no MX.
    pub fn from_records(upstream: &str, mut mx: Vec<Mx>, ttl: Option<u32>) -> Self {
        mx.sort();
        mx.dedup();
        let outcome = if mx.is_empty() {
            Outcome::NoMx
        } else if mx.iter().any(|m| m.exchange.is_root()) {
            // RFC 7505 §3: a null MX is the only MX; "." among real hosts is
            // still a statement that mail is not wanted there, and a host set
            // with a root in it is not deliverable as written.
            Outcome::NullMx
        } else {
            Outcome::Records
        };
        Observation {
            upstream: upstream.to_string(),
            mx: if outcome == Outcome::Records {
                mx
            } else {
                vec![]
            },
            outcome,
            ttl,
            implicit_mx: false,
            detail: None,
        }
    }
}
