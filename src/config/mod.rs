//! The watchlist: raw YAML structs, then a validated [`Config`].
//!
//! Stage one is serde: every scalar that has a syntax (domain names, cron
//! lines, durations, upstreams) is parsed while deserialising, so its error
//! carries file, line, column and field path. Stage two checks what needs the
//! whole file (duplicates, provider ids, the domains file) and fails fast.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::domain::DomainName;
use crate::event::EventType;
use crate::provider::{ProviderRule, Providers};
pub use crate::resolve::Upstream;
use crate::schedule::Schedule;

mod forward;
mod inputs;
mod locate;
mod raw;
mod targets;
mod undo;
mod validate;

use locate::*;
use raw::*;

/// A configuration problem, located as precisely as we know.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// Field path such as `domains[3].schedule`; empty for the whole file.
    pub field: String,
    pub message: String,
}

impl ConfigError {
    /// The commands that need the secret this error is about.
    pub fn needed_by(&self) -> &'static str {
        if self.field.starts_with("passive_dns") {
            "`mxwatch run` and `mxwatch history lookup` need it"
        } else {
            "only `mxwatch run` needs it"
        }
    }

    /// A secret that could not be read, saying which commands need it.
    pub fn needed(&self) -> ConfigError {
        ConfigError {
            message: format!("{} ({})", self.message, self.needed_by()),
            ..self.clone()
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        if !self.field.is_empty() && self.field != "." {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// What a stranger's connections may hold. A thousand idle connections
/// once used up the process's descriptors, and then the API and every DNS
/// check failed; 2,000 slowloris connections stayed open for a minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiLimits {
    /// Connections served at once; more wait in the kernel's backlog,
    /// holding none of our descriptors.
    pub max_connections: usize,
    /// Connections one peer address may hold at once; more are closed as
    /// they arrive.
    pub max_per_peer: usize,
    /// The whole request head must arrive within this, once it started.
    pub header_timeout: std::time::Duration,
    /// A connection that sends nothing for this long is closed (between
    /// requests, or in the middle of a body).
    pub idle_timeout: std::time::Duration,
    /// One request, body included, must be done within this.
    pub request_timeout: std::time::Duration,
    /// The memory request bodies being read and parsed may take, in
    /// bytes; each body is charged [`BODY_CHARGE`] times its size, and a
    /// body that does not fit is refused (503, `Retry-After`).
    pub body_memory: u64,
}

/// Largest request body the API accepts (the budget below must hold one).
pub const BODY_LIMIT: usize = 16 << 20;

/// How many times its size a request body is charged against
/// [`ApiLimits::body_memory`]: the body, and what parsing it takes at its
/// worst (BENCHMARKS.md, "Memory per request").
pub const BODY_CHARGE: u64 = 4;

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            max_connections: 512,
            max_per_peer: 64,
            header_timeout: std::time::Duration::from_secs(10),
            idle_timeout: std::time::Duration::from_secs(20),
            request_timeout: std::time::Duration::from_secs(60),
            body_memory: 512 << 20,
        }
    }
}

/// The shortest API token accepted, from a file or the environment.
pub const MIN_TOKEN_CHARS: usize = 16;

/// One watched domain.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchedDomain {
    pub name: DomainName,
    /// Overrides [`Config::schedule`].
    pub schedule: Option<Schedule>,
    pub tags: Vec<String>,
    /// Provider ids the domain is expected to use; empty means "any".
    pub expect: Vec<String>,
}

/// The validated configuration. Every field holds a usable value.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from (for messages and relative paths).
    pub source: PathBuf,
    pub database: PathBuf,
    pub schedule: Schedule,
    pub upstreams: Vec<Upstream>,
    /// Per query, per attempt.
    pub timeout: Duration,
    /// Checks in flight at once.
    pub concurrency: usize,
    /// Queries per second per upstream; 0 means no limit.
    pub rate_limit: u32,
    /// Re-check interval for a domain with an open window.
    pub fast_recheck: Duration,
    /// Minimum propagation grace after a revert (the old TTL may make it longer).
    pub grace: Duration,
    /// How long a new answer must hold to become the baseline.
    pub settle: Duration,
    /// Port of authoritative name servers (53; tests use another).
    pub authoritative_port: u16,
    /// Where the HTTP API listens; `None` when `listen: off`.
    pub listen: Option<std::net::SocketAddr>,
    /// The bearer token for the API's write endpoints: the first line of
    /// `api_token_file`, else `MXWATCH_API_TOKEN`; writes are refused
    /// without one.
    pub api_token: Option<String>,
    /// When a burst of unknown-user bounces is an anomaly window.
    pub anomaly: crate::anomaly::Params,
    /// The dates a bounce may claim around its arrival.
    pub bounce_times: crate::bounce::TimeRange,
    /// What the API's clients may hold (connections, timeouts).
    pub api_limits: ApiLimits,
    /// URL prefixes, besides `https://sns.<region>.amazonaws.com/`, whose
    /// SNS subscription confirmations the SES webhook visits.
    pub sns_subscribe_allow: Vec<String>,
    /// Whether SNS messages must carry a valid SNS signature (default yes).
    pub sns_verify_signatures: bool,
    /// When not empty, the SES receiver takes only signed SNS messages of
    /// these topics (raw SES events are refused).
    pub sns_topics: Vec<String>,
    /// Where signing certificates are fetched instead of AWS (a test
    /// server, a mirror): the path of `SigningCertURL` under this base.
    pub sns_signing_cert_base: Option<String>,
    /// The roots SNS signing certificates must chain to: the public roots
    /// unless `sns_trust_anchors_file` names others.
    pub sns_trust: crate::sns::Trust,
    /// Webhook targets of alerts.
    pub alerts: Vec<crate::alerts::AlertTarget>,
    /// Where bounces that came in over HTTP are forwarded (gateway mode).
    pub forward: Vec<crate::forward::ForwardTarget>,
    /// The suppression lists false suppressions are taken off.
    pub undo: Vec<crate::undo::UndoTarget>,
    /// Passive DNS providers `history lookup` asks (those with a key).
    pub passive_dns: Vec<crate::passive_dns::Provider>,
    /// Watching the unlisted domains that bounce; `None`: off.
    pub auto_watch: Option<crate::autowatch::Settings>,
    /// When the daily digest is sent, if at all.
    pub digest: Option<Schedule>,
    /// Log level (`RUST_LOG` wins), e.g. `info` or `mxwatch=debug`.
    pub log_level: Option<String>,
    pub providers: Vec<ProviderRule>,
    pub domains: Vec<WatchedDomain>,
    /// Entries of `domains_file` that repeated an earlier entry and were merged.
    pub duplicates_merged: usize,
    /// Secrets that could not be read (an alert's `secret_env` unset, an
    /// unreadable `secret_file` or `api_token_file`): only `run` needs
    /// them, and refuses to start without them ([`Config::require_secrets`]).
    pub secret_problems: Vec<ConfigError>,
}

impl Config {
    pub const DEFAULT_SCHEDULE: &'static str = "*/5 * * * *";

    /// Reads and validates a watchlist file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: None,
            column: None,
            field: String::new(),
            message: format!("cannot read: {e}"),
        })?;
        Self::from_yaml(&text, path)
    }

    /// Validates YAML text; `path` names it in errors and anchors relative
    /// paths. Every error about this file names the line of its field.
    pub fn from_yaml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let place = |mut e: ConfigError| {
            if e.file == path
                && let Some((line, column)) = locate(text, &e.field)
            {
                e.line = Some(line);
                e.column = Some(column);
            }
            e
        };
        let raw = Self::parse(text, path)?;
        let mut c = validate::validate(raw, path).map_err(place)?;
        c.secret_problems = std::mem::take(&mut c.secret_problems)
            .into_iter()
            .map(place)
            .collect();
        Ok(c)
    }

    /// The config, if every secret `run` needs could be read; else the
    /// first that could not, saying which commands need it.
    pub fn require_secrets(self) -> Result<Config, ConfigError> {
        match self.secret_problems.first() {
            Some(e) => Err(e.needed()),
            None => Ok(self),
        }
    }

    /// The first secret `history lookup` needs that could not be read.
    pub fn lookup_secret_problem(&self) -> Option<ConfigError> {
        self.secret_problems
            .iter()
            .find(|e| e.field.starts_with("passive_dns"))
            .map(ConfigError::needed)
    }

    /// The YAML read into the raw structs; an error names the line of
    /// what is wrong: the field, a key given twice, a tab in the indentation.
    fn parse(text: &str, path: &Path) -> Result<RawConfig, ConfigError> {
        let de = yaml_serde::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            let inner = e.into_inner();
            let loc = inner.location().map(|l| (l.line(), l.column()));
            let mut message = strip_location(&inner.to_string(), &field);
            // The parser points at the enclosing map for these: point at
            // the offending line instead.
            let duplicate = message
                .strip_prefix("duplicate field `")
                .and_then(|r| r.split('`').next())
                .and_then(|key| locate_duplicate(text, &field, key));
            let tab = indentation_tab(text);
            let loc = match (duplicate, tab) {
                (Some(at), _) => Some(at),
                (None, Some(at)) => {
                    message = "a tab in the indentation: YAML indents with spaces only".into();
                    Some(at)
                }
                (None, None) => locate(text, &field).or(loc),
            };
            ConfigError {
                file: path.to_path_buf(),
                line: loc.map(|l| l.0),
                column: loc.map(|l| l.1),
                message,
                field,
            }
        })
    }

    pub fn providers(&self) -> Providers {
        Providers::new(&self.providers)
    }

    /// What the store's writer needs to judge bounces.
    pub fn judging(&self) -> crate::store::Judging {
        crate::store::Judging {
            providers: self.providers(),
            anomaly: self.anomaly,
        }
    }

    /// The resolvers' settings.
    pub fn resolve_options(&self) -> crate::resolve::ResolveOptions {
        crate::resolve::ResolveOptions {
            timeout: self.timeout,
            rate_limit: self.rate_limit,
            authoritative_port: self.authoritative_port,
        }
    }

    /// What a monitor needs.
    pub fn monitoring(&self) -> crate::monitor::Setup {
        crate::monitor::Setup {
            upstreams: self.upstreams.clone(),
            resolve: self.resolve_options(),
            providers: self.providers(),
            params: crate::detect::Params {
                grace: self.grace,
                settle: self.settle,
            },
            watchlist: self.watchlist(),
        }
    }

    /// The watched domains with the provider ids each is expected to use.
    pub fn watchlist(&self) -> Vec<crate::monitor::Watched> {
        self.domains
            .iter()
            .map(|d| crate::monitor::Watched {
                name: d.name.clone(),
                expect: d.expect.clone(),
                listed: true,
            })
            .collect()
    }

    /// What the alert workers need.
    pub fn alerting(&self) -> crate::alerts::Setup {
        crate::alerts::Setup {
            targets: self.alerts.clone(),
            digest: self.digest.clone(),
            database: self.database.clone(),
            providers: self.providers(),
            tags: self.tags(),
        }
    }

    /// What the forward workers need.
    pub fn forwarding(&self) -> crate::forward::Setup {
        crate::forward::Setup {
            targets: self.forward.clone(),
            database: self.database.clone(),
            tags: self.tags(),
        }
    }

    /// Each watched domain's tags, by name.
    fn tags(&self) -> std::collections::HashMap<String, Vec<String>> {
        self.domains
            .iter()
            .map(|d| (d.name.as_str().to_string(), d.tags.clone()))
            .collect()
    }

    /// The schedule a domain runs on.
    pub fn schedule_of<'a>(&'a self, d: &'a WatchedDomain) -> &'a Schedule {
        d.schedule.as_ref().unwrap_or(&self.schedule)
    }
}

/// Where the watchlist is: errors name it, relative paths start there.
#[cfg(test)]
mod tests;
