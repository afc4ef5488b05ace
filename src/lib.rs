//! mxwatch: watch the MX records of recipient domains, keep their history,
//! and tell bounce handlers when a hard bounce came from a broken window.
//!
//! The layout, in the order data flows:
//! - [`config`]: the watchlist YAML, parsed in two stages into a [`config::Config`].
//! - [`event`]: vocabulary: event types and ids, and how times are written.
//! - [`names`]: vocabulary: `named!`, the closed sets of names (one word per variant everywhere).
//! - [`window`]: vocabulary: windows (kinds, scopes, status) and the stored [`window::Window`].
//! - [`secret`]: vocabulary: a secret that never prints.
//! - [`dns`]: vocabulary: what DNS said ([`dns::Observation`], [`dns::Answer`], [`dns::Outcome`]).
//! - [`domain`]: newtypes that parse: [`domain::DomainName`], [`domain::MxHost`], [`domain::Mx`].
//! - [`schedule`]: crontab schedules, per-domain spread, the scheduler loop, rate limits.
//! - [`resolve`]: hickory resolvers per upstream; every answer becomes an [`resolve::Observation`].
//! - [`provider`]: MX host → mailbox provider (built-in table, public suffix fallback).
//! - [`detect`]: pure change detection: baselines, changes, windows.
//! - [`health`]: pure: our resolver's health across domains (outages, answers held as suspect).
//! - [`store`]: SQLite: schema, migrations, the single writer, as-of queries. Only it knows SQL.
//! - [`daemon`]: the daemon assembled from the watchlist (monitor, scheduler, API, alerts, ticks) and stopped together.
//! - [`monitor`]: one check end to end (resolve → detect → store) and the daemon's loop.
//! - [`bounce`]: bounce feeds parsed into normalised, classified [`bounce::Bounce`]s.
//! - [`passive`]: pure: passive DNS exports (DNSDB, SecurityTrails) read into sightings, and the excursions they show.
//! - [`passive_dns`]: asking DNSDB and SecurityTrails over HTTP (only it knows their endpoints).
//! - [`summary`]: pure: the sentences events and evidence carry for a person (the store words nothing).
//! - [`autowatch`]: pure: which unlisted domains are watched because they bounced (keep, cap, eviction).
//! - [`anomaly`]: pure burst detection: unknown-user bounces far above a scope's own rate.
//! - [`verdict`]: pure rules: a bounce and the evidence around it → suppress, transient, retry, ignore.
//! - [`clock`]: where "now" comes from, so tests and replays control time.
//! - [`judge`]: a bounce from its parts judged against the store (CLI and API share it).
//! - [`replay`]: the daemon's own code (monitor, writer) over recorded observations and bounces.
//! - [`api`]: the HTTP API (axum): routes, auth, JSON errors. Only it serves HTTP.
//! - [`sns`]: pure: Amazon SNS message signatures (the SES receiver checks them).
//! - [`metrics`]: Prometheus counters and the `/metrics` text.
//! - [`report`]: every outward shape: the CLI's JSON and text, the API's documents, alert bodies.
//! - [`alerts`]: webhook alerts from the outbox: filters, bodies, signatures.
//! - [`delivery`]: the delivery engine: each consumer of the outbox (an alert or forward target) delivered in order, retried, durable.
//! - [`undo`]: false suppressions taken off the lists that block sending (SES, SendGrid, Mailgun, Postmark, listmonk), safely.
//! - [`forward`]: gateway mode: bounces that came in over HTTP forwarded to the real handler (listmonk, passthrough, json), changed by their verdicts.

// Output is the CLI's and the API's; the library logs with tracing.
#![warn(clippy::print_stdout, clippy::print_stderr)]

pub mod alerts;
pub mod anomaly;
pub mod api;
pub mod autowatch;
pub mod bounce;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod delivery;
pub mod detect;
pub mod dns;
pub mod domain;
pub mod event;
pub mod forward;
pub mod health;
pub mod judge;
pub mod metrics;
pub mod monitor;
pub mod names;
pub mod passive;
pub mod passive_dns;
pub mod provider;
pub mod replay;
pub mod report;
pub mod resolve;
pub mod schedule;
pub mod secret;
pub mod sns;
pub mod store;
pub mod summary;
pub mod undo;
pub mod verdict;
pub mod window;

/// The HTTP client for outgoing requests (SNS confirmations, alerts):
/// rustls with the ring provider, the system's trust roots.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(concat!("mxwatch/", env!("CARGO_PKG_VERSION")))
        // Never follow a redirect: a 302 would turn a signed POST into a
        // bodiless GET that looks delivered, a 307 would re-post it to
        // another host. A 3xx is the receiver's answer, and a failure.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("the HTTP client builds")
}

/// Where a redirect pointed, for an error message (never followed).
pub fn redirect_target(r: &reqwest::Response) -> String {
    r.headers()
        .get(reqwest::header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .map_or_else(|| "(no Location)".to_string(), |l| format!("{l:?}"))
}
