//! The HTTP API (axum). Only this module serves HTTP and knows the API's
//! routes and JSON errors; the shapes of verdicts come from `report`, and
//! `openapi.yaml` at the repository root describes every route.
//!
//! - `GET /healthz`, `GET /readyz`, `GET /metrics` (Prometheus)
//! - `GET /v1/verdict?recipient=&at=&status=&reply_code=&diagnostic=&remote_mta=`
//! - `POST /v1/verdicts`: a batch
//! - `GET /v1/windows?active=`, `GET /v1/domains/{domain}`,
//!   `GET /v1/reinstatements?since=`
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
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde_json::json;

use crate::bounce::parse::{self, Format};
use crate::bounce::{Bounce, Source};
use crate::clock::Clock;
use crate::config::Config;
use crate::judge::{self, Parts};
use crate::metrics::Metrics;
use crate::report;
use crate::store::{Store, Writer};

/// Most verdicts one answer carries (`/v1/verdicts` takes no more
/// questions; an ingest answer lists the first ones).
pub const MAX_VERDICTS: usize = 10_000;

/// The largest SNS message (256 KiB of message, with its envelope), and
/// so the largest body the SES receiver takes.
const SNS_MAX_BODY: usize = 320 << 10;

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 16 << 20;

/// Read connections the handlers share (SQLite in WAL mode lets them read
/// while the writer writes).
const READERS: usize = 4;

/// What the handlers share.
pub struct ApiState {
    writer: Writer,
    /// What verdicts read: the writer's in-memory model, no SQL.
    model: Arc<crate::store::Model>,
    judging: crate::store::Judging,
    /// The dates a bounce may claim; others are dated on arrival.
    bounce_times: crate::bounce::TimeRange,
    /// The bearer token write endpoints require; writes are refused when
    /// none is configured.
    token: Option<String>,
    /// Whether reads need the token too: the listener is not loopback.
    reads_need_token: bool,
    limits: crate::config::ApiLimits,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    sns_subscribe_allow: Vec<String>,
    sns_verify_signatures: bool,
    sns_topics: Vec<String>,
    sns_signing_cert_base: Option<String>,
    /// Signing certificates by URL (a handful: one per region and key).
    sns_certs: Mutex<std::collections::HashMap<String, Bytes>>,
    http: reqwest::Client,
    database: PathBuf,
    readers: Vec<Mutex<Option<Store>>>,
    next_reader: AtomicUsize,
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
            judging: config.judging(),
            bounce_times: config.bounce_times,
            token: config.api_token.clone(),
            reads_need_token: config.listen.is_some_and(|a| !a.ip().is_loopback()),
            limits: crate::config::ApiLimits {
                max_connections: fit_descriptors(config.api_limits.max_connections),
                ..config.api_limits
            },
            clock,
            metrics,
            sns_subscribe_allow: config.sns_subscribe_allow.clone(),
            sns_verify_signatures: config.sns_verify_signatures,
            sns_topics: config.sns_topics.clone(),
            sns_signing_cert_base: config.sns_signing_cert_base.clone(),
            sns_certs: Mutex::new(std::collections::HashMap::new()),
            http: crate::http_client(),
            database: config.database.clone(),
            readers: (0..READERS).map(|_| Mutex::new(None)).collect(),
            next_reader: AtomicUsize::new(0),
        }
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
        .await
        .map_err(|e| ApiError::internal(format!("handler failed: {e}")))?
    }
}

/// An error answered as JSON.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!("api: {}", self.message);
        }
        (self.status, axum::Json(json!({"error": self.message}))).into_response()
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

/// How long requests in flight at shutdown may take to finish. Their
/// writes are committed before they are answered, so cutting a slow client
/// off loses nothing acknowledged.
pub const DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

/// At most half the process's descriptors go to API connections: the rest
/// are the reserve of DNS checks, SQLite and alert deliveries, so a full
/// API never blinds the monitor.
fn fit_descriptors(wanted: usize) -> usize {
    let Ok((soft, _)) = rlimit::getrlimit(rlimit::Resource::NOFILE) else {
        return wanted;
    };
    let room = usize::try_from(soft / 2).unwrap_or(usize::MAX).max(1);
    if wanted > room {
        tracing::warn!(
            "API: {room} connections at once, not {wanted}: half of the open files limit \
             ({soft}) is kept for DNS and the database (raise LimitNOFILE)"
        );
        room
    } else {
        wanted
    }
}

/// Serves until `shutdown` resolves, then lets requests in flight finish
/// for at most [`DRAIN`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ApiState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let limits = state.limits;
    let app = router(state);
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(64);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        // A free slot first: past the cap, connections wait in the backlog.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, say: our problem, not the client's.
                    tracing::error!("API: cannot accept a connection: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
        stream.set_read_timeout(Some(limits.idle_timeout));
        stream.set_write_timeout(Some(limits.idle_timeout));
        let io = TokioIo::new(Box::pin(stream));
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let conn = builder
            .serve_connection_with_upgrades(io, service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN) => {
            tracing::warn!("requests still in flight {DRAIN:?} after the stop: not waiting for them");
        }
    }
    Ok(())
}

/// Ends a request that is not done within its time (a body sent a byte at
/// a time): 408, and the connection is closed.
async fn deadline(State(st): State<Arc<ApiState>>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(st.limits.request_timeout, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => {
            let mut resp = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request took longer than {}",
                    humantime::format_duration(st.limits.request_timeout)
                ),
            )
            .into_response();
            resp.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            resp
        }
    }
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

/// The request body, its refusal (too large, unreadable) a JSON error.
struct RawBody(Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Bytes::from_request(req, state)
            .await
            .map(RawBody)
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
            let mut open: Vec<(String, i64)> = Vec::new();
            for w in s.windows(Some(now))? {
                match open.iter_mut().find(|(k, _)| *k == w.kind) {
                    Some((_, n)) => *n += 1,
                    None => open.push((w.kind.clone(), 1)),
                }
            }
            Ok(crate::metrics::Stored {
                open_windows: open,
                bounces: s.bounce_count()?,
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

fn parse_parts(query: Option<String>, now: DateTime<Utc>) -> Result<Parts, ApiError> {
    let q = query.unwrap_or_default();
    let mut parts: Parts = serde_urlencoded::from_str::<Vec<(String, String)>>(&q)
        .map_err(|e| ApiError::bad_request(format!("query: {e}")))
        .and_then(|pairs| {
            let mut p = Parts::default();
            for (k, v) in pairs {
                match k.as_str() {
                    "recipient" => p.recipient = v,
                    "at" => {
                        p.at = Some(
                            crate::clock::parse_moment(&v, now)
                                .map_err(|e| ApiError::bad_request(format!("at: {e}")))?,
                        )
                    }
                    "status" => p.status = Some(v).filter(|s| !s.is_empty()),
                    "reply_code" => {
                        p.reply_code = Some(v.parse().map_err(|_| {
                            ApiError::bad_request(format!("reply_code: {v:?} is not a number"))
                        })?)
                    }
                    "diagnostic" => p.diagnostic = Some(v).filter(|s| !s.is_empty()),
                    "remote_mta" => p.remote_mta = Some(v).filter(|s| !s.is_empty()),
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "unknown parameter {other:?}"
                        )));
                    }
                }
            }
            Ok(p)
        })?;
    parts.recipient = parts.recipient.trim().to_string();
    if parts.recipient.is_empty() {
        return Err(ApiError::bad_request("recipient is required"));
    }
    Ok(parts)
}

async fn verdict(
    State(st): State<Arc<ApiState>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let parts = parse_parts(query, st.clock.now())?;
    // Microseconds of work over the in-memory model: done on this worker.
    let answer =
        judge::judge(&*st.model, &st.judging, parts, st.clock.now()).map_err(|e| match e {
            judge::JudgeError::Recipient(_) | judge::JudgeError::Parts(_) => {
                ApiError::bad_request(e.to_string())
            }
            judge::JudgeError::Store(e) => ApiError::from(e),
        })?;
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
    RawBody(body): RawBody,
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
                Ok(parts) => match judge::judge(&*me.model, &me.judging, parts, now) {
                    Ok(a) => {
                        me.metrics.verdict(a.bounce.kind, a.judgement.verdict);
                        report::judgement_json(&a.bounce, a.at, &a.judgement)
                    }
                    Err(e) => json!({"error": e.to_string()}),
                },
            })
            .collect::<Vec<_>>())
    })
    .await
    .map_err(|e| ApiError::internal(format!("handler failed: {e}")))??;
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
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(&query.unwrap_or_default())
        .map_err(|e| ApiError::bad_request(format!("query: {e}")))?;
    let mut active = false;
    for (k, v) in pairs {
        match (k.as_str(), v.as_str()) {
            ("active", "true" | "1" | "") => active = true,
            ("active", "false" | "0") => active = false,
            ("active", other) => {
                return Err(ApiError::bad_request(format!(
                    "active: {other:?} is not true or false"
                )));
            }
            (other, _) => {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter {other:?}"
                )));
            }
        }
    }
    let now = st.clock.now();
    let rows = st
        .read(move |s| Ok(s.windows(active.then_some(now))?))
        .await?;
    Ok(axum::Json(
        rows.iter()
            .map(|w| report::window_json(w, now))
            .collect::<Vec<_>>(),
    )
    .into_response())
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
                    me.judging
                        .providers
                        .of_set(&a.run.observation.mx)
                        .into_iter()
                        .collect()
                })
                .unwrap_or_default();
            let windows: Vec<serde_json::Value> = s
                .windows(None)?
                .iter()
                .filter(|w| w.domain.as_deref() == Some(d.as_str()))
                .map(|w| report::window_json(w, now))
                .collect();
            use crate::store::Knowledge;
            let grounds = s
                .circumstances(d.as_str(), now, None, &me.judging.providers)?
                .grounds(now, &me.judging.anomaly);
            Ok(json!({
                "domain": d.as_str(),
                "caveats": grounds.warming_up.into_iter().collect::<Vec<_>>(),
                "current": consensus.map(report::as_of_json),
                "provider": provider,
                "history": history.iter().map(report::run_json).collect::<Vec<_>>(),
                "windows": windows,
            }))
        })
        .await?;
    Ok(axum::Json(body).into_response())
}

/// Parses `since=` (RFC 3339, a date, or an age such as `24h`, as on the
/// command line), the only parameter of listing endpoints.
fn parse_since(
    query: Option<String>,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(&query.unwrap_or_default())
        .map_err(|e| ApiError::bad_request(format!("query: {e}")))?;
    let mut since = None;
    for (k, v) in pairs {
        match k.as_str() {
            "since" => {
                since = Some(
                    crate::clock::parse_moment(&v, now)
                        .map_err(|e| ApiError::bad_request(format!("since: {e}")))?,
                )
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter {other:?}"
                )));
            }
        }
    }
    Ok(since)
}

async fn reinstatements(
    State(st): State<Arc<ApiState>>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let since = parse_since(query, st.clock.now())?;
    let rows = st.read(move |s| Ok(s.reinstatements(since)?)).await?;
    Ok(axum::Json(
        rows.iter()
            .map(report::reinstatement_json)
            .collect::<Vec<_>>(),
    )
    .into_response())
}

/// The token as a client sent it: `Authorization: Bearer T`, HTTP Basic
/// with `T` as the password (what ESP webhook settings can hold in a URL),
/// or `?token=T`.
fn presented_token(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if let Some(t) = auth.strip_prefix("Bearer ") {
        return Some(t.trim().to_string());
    }
    if let Some(b) = auth.strip_prefix("Basic ") {
        use base64::Engine;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b.trim())
            .ok()?;
        let text = String::from_utf8(decoded).ok()?;
        return text.split_once(':').map(|(_, pw)| pw.to_string());
    }
    serde_urlencoded::from_str::<Vec<(String, String)>>(query?)
        .ok()?
        .into_iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v)
}

/// Lets a write through only with the token, before its body is read.
async fn writer_only(
    State(st): State<Arc<ApiState>>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    // Another method is answered 405 without a body being read.
    if req.method() == axum::http::Method::POST {
        authorised(&st, req.headers(), req.uri().query(), "writes")?;
    }
    Ok(next.run(req).await)
}

/// Lets a read through; with the token only when the listener is not
/// loopback (reads carry recipient addresses).
async fn reader_only(
    State(st): State<Arc<ApiState>>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if st.reads_need_token {
        authorised(
            &st,
            req.headers(),
            req.uri().query(),
            "reads on a public listener",
        )?;
    }
    Ok(next.run(req).await)
}

fn authorised(
    st: &ApiState,
    headers: &HeaderMap,
    query: Option<&str>,
    what: &str,
) -> Result<(), ApiError> {
    let Some(token) = st.token.as_deref() else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "{what} are disabled: no API token is configured (api_token_file or MXWATCH_API_TOKEN)"
            ),
        ));
    };
    let given = presented_token(headers, query).unwrap_or_default();
    // Compare without an early exit, so timing does not tell how much matched.
    let same = given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "a valid token is required (Authorization: Bearer, HTTP Basic password, or ?token=)",
        ))
    }
}

async fn bounces(
    State(st): State<Arc<ApiState>>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    ingest(&st, body, None, None).await
}

/// Parses, judges and stores; answers after the commit with a verdict per
/// bounce. `only` refuses bounces of another source (an ESP's receiver).
async fn ingest(
    st: &Arc<ApiState>,
    body: Bytes,
    format: Option<Format>,
    only: Option<Source>,
) -> Result<Response, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("empty body"));
    }
    let now = st.clock.now();
    let range = st.bounce_times;
    let parsed = tokio::task::spawn_blocking(move || {
        let mut parsed = parse::parse(&body, format, now);
        parsed.keep_within(range, now, crate::bounce::OutOfRange::Redate);
        parsed
    })
    .await
    .map_err(|e| ApiError::internal(format!("parser failed: {e}")))?;
    let mut problems: Vec<String> = parsed
        .problems
        .iter()
        .map(|p| match p.line {
            Some(l) => format!("line {l}: {}", p.message),
            None => p.message.clone(),
        })
        .chain(parsed.omitted_note())
        .collect();
    let (list, foreign): (Vec<Bounce>, Vec<Bounce>) = parsed
        .bounces
        .into_iter()
        .partition(|b| only.is_none_or(|s| b.source == s));
    if let (Some(s), false) = (only, foreign.is_empty()) {
        problems.push(format!(
            "{} event(s) are not {} events (send them to their own receiver or /v1/bounces)",
            foreign.len(),
            s.as_str()
        ));
    }
    if list.is_empty() && parsed.skipped == 0 {
        return Err(ApiError::bad_request(if problems.is_empty() {
            "no bounce found in the body".to_string()
        } else {
            problems.join("; ")
        }));
    }
    let received = list.len();
    let intake = st.writer.bounces(list.clone(), now).await?;
    st.metrics.ingested(intake.stored, intake.reinstated);
    for (b, j) in list.iter().zip(&intake.judgements) {
        st.metrics.verdict(b.kind, j.verdict);
    }
    // All are stored and judged; the answer lists the first MAX_VERDICTS.
    let verdicts: Vec<serde_json::Value> = list
        .iter()
        .zip(&intake.judgements)
        .take(MAX_VERDICTS)
        .map(|(b, j)| report::judgement_json(b, b.at.unwrap_or(now), j))
        .collect();
    Ok(axum::Json(json!({
        "received": received,
        "stored": intake.stored,
        // Stored before (the same bounce sent again): judged, not stored twice.
        "duplicates": received - intake.stored,
        "skipped": parsed.skipped,
        "reinstated": intake.reinstated,
        "problems": problems,
        "verdicts_omitted": received.saturating_sub(MAX_VERDICTS),
        "verdicts": verdicts,
    }))
    .into_response())
}

/// `POST /v1/webhooks/{esp}`: one ESP's event webhook. For SES (through
/// SNS), a subscription confirmation is answered by visiting its
/// `SubscribeURL`, if that is an SNS endpoint (or a configured prefix).
async fn webhook(
    State(st): State<Arc<ApiState>>,
    axum::extract::Path(esp): axum::extract::Path<String>,
    RawBody(body): RawBody,
) -> Result<Response, ApiError> {
    let source = match esp.as_str() {
        "ses" => Source::Ses,
        "sendgrid" => Source::Sendgrid,
        "mailgun" => Source::Mailgun,
        "postmark" => Source::Postmark,
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!("no receiver for {other:?} (ses, sendgrid, mailgun, postmark)"),
            ));
        }
    };
    if source == Source::Ses {
        if body.len() > SNS_MAX_BODY {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "an SES event or SNS message is at most 256 KiB",
            ));
        }
        let v = serde_json::from_slice::<serde_json::Value>(&body).ok();
        let envelope = v.as_ref().filter(|v| v.get("Type").is_some());
        match envelope {
            Some(v) => check_sns(&st, v).await?,
            None if !st.sns_topics.is_empty() => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "only signed SNS messages of the topics in sns_topics are taken here",
                ));
            }
            None => {}
        }
        match envelope
            .and_then(|v| v.get("Type"))
            .and_then(|t| t.as_str())
        {
            Some("SubscriptionConfirmation") => {
                return confirm_subscription(&st, envelope.expect("an envelope")).await;
            }
            Some("UnsubscribeConfirmation") => {
                let topic = envelope.and_then(|v| v.get("TopicArn"));
                tracing::warn!(?topic, "SNS: the topic unsubscribed this endpoint");
                return Ok(axum::Json(json!({"unsubscribed": true})).into_response());
            }
            _ => {}
        }
    }
    ingest(&st, body, Some(Format::Json), Some(source)).await
}

/// An SNS message is taken only from an allowed topic and, unless
/// `sns_verify_signatures: false`, with a valid SNS signature.
async fn check_sns(st: &Arc<ApiState>, v: &serde_json::Value) -> Result<(), ApiError> {
    let refuse = |why: String| ApiError::new(StatusCode::FORBIDDEN, format!("SNS: {why}"));
    let topic = v.get("TopicArn").and_then(|t| t.as_str()).unwrap_or("");
    if !st.sns_topics.is_empty() && !st.sns_topics.iter().any(|t| t == topic) {
        return Err(refuse(format!("topic {topic:?} is not in sns_topics")));
    }
    if !st.sns_verify_signatures {
        return Ok(());
    }
    let url = v
        .get("SigningCertURL")
        .and_then(|u| u.as_str())
        .ok_or_else(|| refuse("the message is not signed (no SigningCertURL)".into()))?;
    if !crate::sns::cert_url_allowed(url) {
        return Err(refuse(format!(
            "SigningCertURL {url:?} is not an https://sns.<region>.amazonaws.com/….pem URL"
        )));
    }
    let cert = signing_cert(st, url).await?;
    crate::sns::verify(v, &cert).map_err(refuse)
}

/// The signing certificate at `url` (or under `sns_signing_cert_base`),
/// fetched once.
async fn signing_cert(st: &Arc<ApiState>, url: &str) -> Result<Bytes, ApiError> {
    if let Some(c) = st.sns_certs.lock().ok().and_then(|m| m.get(url).cloned()) {
        return Ok(c);
    }
    let from = match &st.sns_signing_cert_base {
        Some(base) => {
            let path = reqwest::Url::parse(url)
                .map(|u| u.path().to_string())
                .unwrap_or_default();
            format!("{}{path}", base.trim_end_matches('/'))
        }
        None => url.to_string(),
    };
    let failed = |why: String| {
        tracing::warn!("SNS: fetching the signing certificate {from}: {why}");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "SNS: the signing certificate could not be fetched; try again",
        )
    };
    let r = st
        .http
        .get(&from)
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| failed(e.to_string()))?;
    if !r.status().is_success() {
        return Err(failed(format!("answered {}", r.status())));
    }
    let cert = r.bytes().await.map_err(|e| failed(e.to_string()))?;
    if cert.len() > 64 << 10 {
        return Err(failed("more than 64 KiB".into()));
    }
    if let Ok(mut m) = st.sns_certs.lock() {
        if m.len() >= 64 {
            m.clear();
        }
        m.insert(url.to_string(), cert.clone());
    }
    Ok(cert)
}

/// Whether a `SubscribeURL` may be visited: an HTTPS SNS endpoint of AWS,
/// or a URL under a configured prefix. Anything else would let a client
/// make the daemon fetch arbitrary URLs. URLs are compared parsed, never
/// as text: scheme, host and port exactly, the path segment by segment
/// after `..` and `%2e%2e` are resolved, and no user name or password
/// (`http://hooks.example.com@evil.test/` names the host evil.test).
pub fn subscribe_url_allowed(url: &str, extra: &[String]) -> bool {
    let Ok(u) = reqwest::Url::parse(url) else {
        return false;
    };
    if !u.username().is_empty() || u.password().is_some() || u.host_str().is_none() {
        return false;
    }
    let under = |prefix: &str| {
        let Ok(p) = reqwest::Url::parse(prefix) else {
            return false;
        };
        let dir = p.path().trim_end_matches('/');
        p.scheme() == u.scheme()
            && p.host_str() == u.host_str()
            && p.port_or_known_default() == u.port_or_known_default()
            && (u.path() == dir
                || u.path()
                    .strip_prefix(dir)
                    .is_some_and(|rest| rest.starts_with('/')))
    };
    if extra.iter().any(|p| under(p)) {
        return true;
    }
    let host = u.host_str().unwrap_or("");
    u.scheme() == "https"
        && u.port().is_none()
        && host.starts_with("sns.")
        && (host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn"))
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

async fn confirm_subscription(
    st: &Arc<ApiState>,
    v: &serde_json::Value,
) -> Result<Response, ApiError> {
    let url = v
        .get("SubscribeURL")
        .and_then(|u| u.as_str())
        .ok_or_else(|| ApiError::bad_request("SubscriptionConfirmation without a SubscribeURL"))?;
    if !subscribe_url_allowed(url, &st.sns_subscribe_allow) {
        return Err(ApiError::bad_request(format!(
            "SubscribeURL {url:?} is not an https://sns.<region>.amazonaws.com/ URL \
             (add a prefix to sns_subscribe_allow to trust another)"
        )));
    }
    // The URL carries the subscription's token: it is neither logged nor
    // echoed, and every failure gets the same answer, so the endpoint
    // cannot be used to learn whether some address answers.
    let topic = v.get("TopicArn").and_then(|t| t.as_str()).unwrap_or("?");
    let failed = |why: String| {
        tracing::warn!(topic, "SNS: confirming the subscription failed: {why}");
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "the subscription could not be confirmed (the reason is in mxwatch's log)",
        )
    };
    let r = st
        .http
        .get(url)
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| failed(e.without_url().to_string()))?;
    if !r.status().is_success() {
        let redirect = if r.status().is_redirection() {
            ", a redirect (not followed)"
        } else {
            ""
        };
        return Err(failed(format!("SNS answered {}{redirect}", r.status())));
    }
    tracing::info!(topic = ?v.get("TopicArn"), "SNS subscription confirmed");
    Ok(axum::Json(json!({"subscribed": true})).into_response())
}
