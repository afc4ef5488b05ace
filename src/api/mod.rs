//! The HTTP API (axum). Only this module serves HTTP and knows the API's
//! routes and JSON errors; the shapes of verdicts come from `report`, and
//! `openapi.yaml` at the repository root describes every route.
//!
//! - `GET /healthz`, `GET /readyz`, `GET /metrics` (Prometheus)
//! - `GET /v1/verdict?recipient=&at=&status=&reply_code=&diagnostic=&remote_mta=`
//! - `POST /v1/verdicts`: a batch
//! - `GET /v1/windows?active=`, `GET /v1/domains/{domain}`,
//!   `GET /v1/reinstatements?since=`, `GET /v1/undo?status=`
//! - `POST /v1/bounces` (token): any format `bounces parse` reads, judged,
//!   stored and answered only after the commit;
//!   `POST /v1/webhooks/{ses,sendgrid,mailgun,postmark}` (token): one ESP's
//!   events, SNS subscription confirmations answered.
//!
//! Bound to 127.0.0.1 unless configured otherwise. Bodies are limited;
//! every error is JSON `{"error": "..."}`; nothing a client sends panics a
//! handler (store work runs on the blocking pool, its failures are 500s).

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::bounce::parse::{self, Format};
use crate::bounce::{Bounce, Source};
use crate::clock::Clock;
use crate::config::Config;
use crate::judge::{self, Parts};
use crate::metrics::Metrics;
use crate::report;
use crate::store::{Store, Writer};
use crate::window::WindowKind;

mod live;
pub use live::Announce;
use live::Live;
mod auth;
mod feeds;
mod lists;
mod query;
mod server;

use auth::*;
pub use feeds::subscribe_url_allowed;
use feeds::*;
use lists::*;
use query::Query;
use server::*;
pub use server::{DRAIN, serve};

/// Most verdicts one answer carries (`/v1/verdicts` takes no more
/// questions; an ingest answer lists the first ones).
pub const MAX_VERDICTS: usize = 10_000;

/// Windows a page of `/v1/windows` holds unless `?limit=` says.
pub const PAGE: usize = 1_000;

/// The most windows one page holds.
pub const MAX_PAGE: usize = 10_000;

/// Windows `/v1/domains/{domain}` lists (newest first); a `Link` header
/// leads to the rest.
pub const DOMAIN_WINDOWS: usize = 100;

/// The largest SNS message (256 KiB of message, with its envelope), and
/// so the largest body the SES receiver takes.
const SNS_MAX_BODY: usize = 320 << 10;

/// Largest request body accepted.
pub use crate::config::BODY_LIMIT;

/// Read connections the handlers share (SQLite in WAL mode lets them read
/// while the writer writes).
const READERS: usize = 4;

/// What the handlers share.
pub struct ApiState {
    writer: Writer,
    /// What verdicts read: the writer's in-memory model, no SQL.
    model: Arc<crate::store::Model>,
    /// The settings a reload changes in place ([`ApiState::reconfigure`]);
    /// a request keeps the ones it began with.
    live: std::sync::RwLock<Arc<Live>>,
    /// Whether reads need the token too: the listener is not loopback.
    reads_need_token: bool,
    limits: crate::config::ApiLimits,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    /// Signing certificates by URL (a handful: one per region and key).
    sns_certs: Mutex<std::collections::HashMap<String, Bytes>>,
    http: reqwest::Client,
    database: PathBuf,
    readers: Vec<Mutex<Option<Store>>>,
    next_reader: AtomicUsize,
    /// The memory bodies being read and parsed may take, in KiB.
    bodies: Arc<tokio::sync::Semaphore>,
    /// What the receivers announce to the forward targets (changed by a reload).
    pub announce: Announce,
}

impl ApiState {
    pub fn new(
        config: &Config,
        writer: Writer,
        model: Arc<crate::store::Model>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
    ) -> Self {
        ApiState {
            model,
            writer,
            live: std::sync::RwLock::new(Arc::new(Live::of(config))),
            reads_need_token: config.listen.is_some_and(|a| !a.ip().is_loopback()),
            limits: crate::config::ApiLimits {
                max_connections: fit_descriptors(config.api_limits.max_connections),
                ..config.api_limits
            },
            clock,
            metrics,
            sns_certs: Mutex::new(std::collections::HashMap::new()),
            http: crate::http_client(),
            database: config.database.clone(),
            readers: (0..READERS).map(|_| Mutex::new(None)).collect(),
            next_reader: AtomicUsize::new(0),
            bodies: Arc::new(tokio::sync::Semaphore::new(
                usize::try_from(config.api_limits.body_memory >> 10).unwrap_or(usize::MAX >> 4),
            )),
            announce: {
                let a = Announce::default();
                a.set(config.forwarding().wants());
                a
            },
        }
    }

    /// Adopts a reloaded watchlist's token, judging, bounce dates, SNS
    /// settings and forward targets; requests that come from now on see
    /// them. (The listener and its limits take a restart.)
    pub fn reconfigure(&self, config: &Config) {
        *self.live.write().expect("live settings lock") = Arc::new(Live::of(config));
        if let Ok(mut certs) = self.sns_certs.lock() {
            certs.clear();
        }
        self.announce.set(config.forwarding().wants());
    }

    fn live(&self) -> Arc<Live> {
        self.live.read().expect("live settings lock").clone()
    }

    /// A free read connection, else the next one in turn.
    fn reader(&self) -> Result<MutexGuard<'_, Option<Store>>, ApiError> {
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        let n = self.readers.len();
        if let Some(g) = (0..n).find_map(|i| self.readers[(start + i) % n].try_lock().ok()) {
            return Ok(g);
        }
        self.readers[start % n]
            .lock()
            .map_err(|_| ApiError::internal("reader lock poisoned"))
    }

    /// Runs `f` with a read connection, on the blocking pool.
    async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Store) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = me.reader()?;
            if guard.is_none() {
                *guard = Some(Store::open(&me.database)?);
            }
            guard.as_ref().expect("opened above").snapshot(f)
        })
        .await?
    }
}

/// Bodies this small are not charged: a bounce handler's question is
/// never refused for the memory strangers' bodies hold (their number is
/// bounded by the connection cap).
const UNCHARGED_BODY: u64 = 64 << 10;

/// Seconds a client refused for memory is told to wait.
const RETRY_AFTER_SECONDS: u64 = 5;

impl ApiState {
    /// The share of the body memory budget a request declaring
    /// `length` bytes needs (a body without a length may be as long as
    /// the limit); `Err` (503) when it is spent.
    fn charge_body(
        &self,
        length: Option<u64>,
    ) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, ApiError> {
        let length = length.unwrap_or(BODY_LIMIT as u64).min(BODY_LIMIT as u64);
        if length <= UNCHARGED_BODY {
            return Ok(None);
        }
        let kib =
            u32::try_from((length * crate::config::BODY_CHARGE).div_ceil(1024)).unwrap_or(u32::MAX);
        match self.bodies.clone().try_acquire_many_owned(kib) {
            Ok(permit) => Ok(Some(permit)),
            Err(_) => {
                self.metrics.shed("memory", 1);
                Err(ApiError {
                    retry_after: Some(RETRY_AFTER_SECONDS),
                    ..ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!(
                            "busy: the memory for request bodies ({} MiB) is taken by others; try again",
                            self.limits.body_memory >> 20
                        ),
                    )
                })
            }
        }
    }
}

/// An error answered as JSON.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    /// Seconds after which to try again (`Retry-After`), for a 503.
    retry_after: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            retry_after: None,
        }
    }
    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            // Nothing was stored; the client should try again (after a
            // restart, or once the database accepts writes).
            crate::store::StoreError::WriterGone => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not stored: mxwatch is stopping or its database write failed; try again",
            ),
            e => ApiError::internal(e.to_string()),
        }
    }
}

/// Work on the blocking pool panicked or was cancelled.
impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::internal(format!("handler failed: {e}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!("api: {}", self.message);
        }
        let mut resp = (self.status, axum::Json(json!({"error": self.message}))).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

pub fn router(state: Arc<ApiState>) -> Router {
    // The token is checked before a body is read: a stranger's 16 MiB
    // costs nothing.
    let writes = Router::new()
        .route("/v1/bounces", post(bounces))
        .route("/v1/webhooks/{esp}", post(webhook))
        .route_layer(middleware::from_fn_with_state(state.clone(), writer_only));
    // Reads carry recipient addresses: open on loopback, else token only.
    let reads = Router::new()
        .route("/v1/verdict", get(verdict))
        .route("/v1/verdicts", post(verdicts))
        .route("/v1/windows", get(windows))
        .route("/v1/domains/{domain}", get(domain))
        .route("/v1/reinstatements", get(reinstatements))
        .route("/v1/undo", get(undo))
        .route_layer(middleware::from_fn_with_state(state.clone(), reader_only));
    Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(writes)
        .merge(reads)
        .route_layer(middleware::from_fn_with_state(state.clone(), deadline))
        .route_layer(middleware::from_fn_with_state(state.clone(), observe))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Around every routed request: its latency by route, and errors that
/// axum answers itself (a body over the limit, a wrong method) turned into
/// the API's JSON errors.
async fn observe(State(st): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let started = Instant::now();
    let mut resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if (status.is_client_error() || status.is_server_error()) && !is_json {
        let body = std::mem::replace(resp.body_mut(), Body::empty());
        let text = axum::body::to_bytes(body, 64 << 10)
            .await
            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
            .unwrap_or_default();
        let reason = status.canonical_reason().unwrap_or("error").to_lowercase();
        let message = if text.is_empty() {
            reason
        } else {
            format!("{reason}: {text}")
        };
        let headers = std::mem::take(resp.headers_mut());
        resp = ApiError::new(status, message).into_response();
        for name in [header::ALLOW, header::WWW_AUTHENTICATE] {
            if let Some(v) = headers.get(&name) {
                resp.headers_mut().insert(name, v.clone());
            }
        }
    }
    st.metrics.request(&route, started.elapsed().as_secs_f64());
    resp
}

/// The request body, its refusal (too large, unreadable, no memory left
/// for it) a JSON error. It holds its share of the body memory budget
/// until the handler is done with it.
struct RawBody(
    Bytes,
    #[allow(dead_code)] Option<tokio::sync::OwnedSemaphorePermit>,
);

impl FromRequest<Arc<ApiState>> for RawBody {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &Arc<ApiState>) -> Result<Self, ApiError> {
        let length = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let permit = state.charge_body(length)?;
        Bytes::from_request(req, state)
            .await
            .map(|b| RawBody(b, permit))
            .map_err(|e| match e.status() {
                StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "request body too large: the limit is {} MiB",
                        BODY_LIMIT >> 20
                    ),
                ),
                status => ApiError::new(status, e.body_text()),
            })
    }
}

async fn readyz(State(st): State<Arc<ApiState>>) -> Result<impl IntoResponse, ApiError> {
    if let Some(e) = st.writer.failing() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the last database write failed: {e}"),
        ));
    }
    st.read(|s| {
        s.ping()
            .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
    })
    .await?;
    Ok(axum::Json(json!({"status": "ready"})))
}

async fn metrics(State(st): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    let now = st.clock.now();
    let stored = st
        .read(move |s| {
            let mut open: Vec<(WindowKind, i64)> = Vec::new();
            for w in s.windows(Some(now))? {
                match open.iter_mut().find(|(k, _)| *k == w.kind) {
                    Some((_, n)) => *n += 1,
                    None => open.push((w.kind, 1)),
                }
            }
            Ok(crate::metrics::Stored {
                open_windows: open,
                bounces: s.bounce_count()?,
                auto_watched: s.auto_watched_count()?,
                deliveries: s.delivery_counts()?,
            })
        })
        .await?;
    let mut resp = st.metrics.render(&stored).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    Ok(resp)
}

async fn verdict(
    State(st): State<Arc<ApiState>>,
    Query(q): Query<query::Verdict>,
) -> Result<Response, ApiError> {
    let parts = q.parts(st.clock.now())?;
    // Microseconds of work over the in-memory model: done on this worker.
    let answer = judge::judge(&*st.model, &st.live().judging, parts, st.clock.now()).map_err(
        |e| match e {
            judge::JudgeError::Recipient(_) | judge::JudgeError::Parts(_) => {
                ApiError::bad_request(e.to_string())
            }
            judge::JudgeError::Store(e) => ApiError::from(e),
        },
    )?;
    st.metrics
        .verdict(answer.bounce.kind, answer.judgement.verdict);
    Ok(axum::Json(report::judgement_json(
        &answer.bounce,
        answer.at,
        &answer.judgement,
    ))
    .into_response())
}

/// A batch: a JSON array of `{recipient, at?, status?, reply_code?,
/// diagnostic?, remote_mta?}`; one verdict (or `{"error"}`) per item.
async fn verdicts(
    State(st): State<Arc<ApiState>>,
    RawBody(body, _held): RawBody,
) -> Result<Response, ApiError> {
    let me = st.clone();
    // Parsing 16 MiB and up to 10,000 judgements: off the async workers.
    let out = tokio::task::spawn_blocking(move || {
        let Questions { items, more } = serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("body: expected a JSON array: {e}")))?;
        if more {
            return Err(ApiError::bad_request("at most 10,000 verdicts per request"));
        }
        let now = me.clock.now();
        Ok(items
            .into_iter()
            .map(|item| match serde_json::from_value::<Parts>(item) {
                Err(e) => json!({"error": format!("not a bounce: {e}")}),
                Ok(parts) => match judge::judge(&*me.model, &me.live().judging, parts, now) {
                    Ok(a) => {
                        me.metrics.verdict(a.bounce.kind, a.judgement.verdict);
                        report::judgement_json(&a.bounce, a.at, &a.judgement)
                    }
                    Err(e) => json!({"error": e.to_string()}),
                },
            })
            .collect::<Vec<_>>())
    })
    .await??;
    Ok(axum::Json(out).into_response())
}

/// The body of `/v1/verdicts`: the first [`MAX_VERDICTS`] items of a JSON
/// array, and whether more followed. Items past the limit are read but not
/// kept, so `[[],[],…]` in 16 MiB costs no more memory than 10,000 items.
struct Questions {
    items: Vec<serde_json::Value>,
    more: bool,
}

impl<'de> serde::Deserialize<'de> for Questions {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Questions;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON array")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Questions, A::Error> {
                let mut items = Vec::new();
                while items.len() < MAX_VERDICTS {
                    match seq.next_element()? {
                        Some(v) => items.push(v),
                        None => return Ok(Questions { items, more: false }),
                    }
                }
                let mut more = false;
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    more = true;
                }
                Ok(Questions { items, more })
            }
        }
        d.deserialize_seq(Visit)
    }
}

async fn windows(
    State(st): State<Arc<ApiState>>,
    Query(q): Query<query::Windows>,
) -> Result<Response, ApiError> {
    let now = st.clock.now();
    let limit = q.limit.unwrap_or(PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "query: limit: {limit} is not between 1 and {MAX_PAGE}"
        )));
    }
    let domain = q
        .domain
        .as_deref()
        .map(crate::domain::DomainName::parse)
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("query: domain: {e}")))?;
    let cursor = q
        .cursor
        .as_deref()
        .map(str::parse::<crate::store::WindowCursor>)
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("query: cursor: {e}")))?;
    let active = q.active.then_some(now);
    let name = domain.as_ref().map(|d| d.as_str().to_string());
    let page = st
        .read(move |s| Ok(s.windows_page(active, name.as_deref(), cursor, limit)?))
        .await?;
    let mut resp = axum::Json(
        page.windows
            .iter()
            .map(|w| report::window_json(w, now))
            .collect::<Vec<_>>(),
    )
    .into_response();
    if let Some(next) = page.next {
        let mut query = vec![("limit", limit.to_string()), ("cursor", next.to_string())];
        if q.active {
            query.push(("active", "true".into()));
        }
        if let Some(d) = &domain {
            query.push(("domain", d.as_str().to_string()));
        }
        next_link(&mut resp, &query);
    }
    Ok(resp)
}

/// `Link: </v1/windows?…>; rel="next"` (RFC 8288): where the rest is.
fn next_link(resp: &mut Response, query: &[(&str, String)]) {
    let query = serde_urlencoded::to_string(query).unwrap_or_default();
    if let Ok(v) = HeaderValue::from_str(&format!("</v1/windows?{query}>; rel=\"next\"")) {
        resp.headers_mut().insert(header::LINK, v);
    }
}

async fn domain(
    State(st): State<Arc<ApiState>>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    let d = crate::domain::DomainName::parse(&name)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let now = st.clock.now();
    let me = st.clone();
    let body = st
        .read(move |s| {
            let history = s.history(&d, None)?;
            if history.is_empty() {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!(
                        "no history of {d}: mxwatch has not checked it; {}",
                        crate::verdict::NO_HISTORY
                    ),
                ));
            }
            let current = s.as_of(&d, now)?;
            let consensus = current
                .iter()
                .find(|a| a.upstream == crate::store::CONSENSUS);
            let provider: Vec<String> = consensus
                .map(|a| {
                    me.live()
                        .judging
                        .providers
                        .of_set(&a.run.observation.mx)
                        .into_iter()
                        .collect()
                })
                .unwrap_or_default();
            // Its newest windows; the rest are a page of /v1/windows away.
            let page = s.windows_page(None, Some(d.as_str()), None, DOMAIN_WINDOWS)?;
            let more = page.next.map(|c| (d.as_str().to_string(), c));
            let windows: Vec<serde_json::Value> = page
                .windows
                .iter()
                .map(|w| report::window_json(w, now))
                .collect();
            use crate::store::Knowledge;
            let grounds = s
                .circumstances(d.as_str(), now, None, &me.live().judging.providers)?
                .grounds(now, &me.live().judging.anomaly);
            let auto = s.auto_watched_one(&d)?;
            Ok((
                report::domain_json(
                    &d,
                    grounds.warming_up,
                    consensus,
                    &provider,
                    &history,
                    windows,
                    auto,
                ),
                more,
            ))
        })
        .await?;
    let (body, more) = body;
    let mut resp = axum::Json(body).into_response();
    if let Some((domain, cursor)) = more {
        let query = [
            ("domain", domain),
            ("limit", PAGE.to_string()),
            ("cursor", cursor.to_string()),
        ];
        next_link(&mut resp, &query);
    }
    Ok(resp)
}
