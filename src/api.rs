//! The HTTP API (axum). Only this module knows the API's routes and JSON
//! errors; the shapes of verdicts come from `report`.
//!
//! - `GET /healthz`, `GET /readyz`
//! - `GET /v1/verdict?recipient=&at=&status=&reply_code=&diagnostic=&remote_mta=`
//! - `POST /v1/bounces` (bearer token): any format `bounces parse` reads;
//!   answered only after the bounces are committed.
//!
//! Bound to 127.0.0.1 unless configured otherwise. Bodies are limited;
//! errors are JSON `{"error": "..."}`; nothing a client sends panics a
//! handler (store work runs on the blocking pool, its failures are 500s).

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::Utc;
use serde_json::json;

use crate::bounce::parse;
use crate::judge::{self, Parts};
use crate::provider::Providers;
use crate::report;
use crate::store::{Store, Writer};

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 16 << 20;

/// What the handlers share.
pub struct ApiState {
    pub database: PathBuf,
    pub writer: Writer,
    pub providers: Providers,
    /// The bearer token write endpoints require; writes are refused when
    /// none is configured.
    pub token: Option<String>,
    reader: Mutex<Option<Store>>,
}

impl ApiState {
    pub fn new(
        database: PathBuf,
        writer: Writer,
        providers: Providers,
        token: Option<String>,
    ) -> Self {
        ApiState {
            database,
            writer,
            providers,
            token,
            reader: Mutex::new(None),
        }
    }

    /// Runs `f` with the read connection, on the blocking pool.
    async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Store) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = me
                .reader
                .lock()
                .map_err(|_| ApiError::internal("reader lock poisoned"))?;
            if guard.is_none() {
                *guard =
                    Some(Store::open(&me.database).map_err(|e| ApiError::internal(e.to_string()))?);
            }
            f(guard.as_ref().expect("opened above"))
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

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!("api: {}", self.message);
        }
        (self.status, axum::Json(json!({"error": self.message}))).into_response()
    }
}

pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route("/readyz", get(readyz))
        .route("/v1/verdict", get(verdict))
        .route("/v1/verdicts", post(verdicts))
        .route("/v1/windows", get(windows))
        .route("/v1/domains/{domain}", get(domain))
        .route("/v1/bounces", post(bounces))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ApiState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn readyz(State(st): State<Arc<ApiState>>) -> Result<impl IntoResponse, ApiError> {
    st.read(|s| {
        s.counts()
            .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
    })
    .await?;
    Ok(axum::Json(json!({"status": "ready"})))
}

fn parse_parts(query: Option<String>) -> Result<Parts, ApiError> {
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
                            chrono::DateTime::parse_from_rfc3339(&v)
                                .map_err(|e| {
                                    ApiError::bad_request(format!("at: {v:?} is not RFC 3339: {e}"))
                                })?
                                .with_timezone(&Utc),
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
    let parts = parse_parts(query)?;
    let me = st.clone();
    let answer = st
        .read(move |store| {
            judge::judge(store, &me.providers, parts, Utc::now()).map_err(|e| match e {
                judge::JudgeError::Recipient(_) => ApiError::bad_request(e.to_string()),
                judge::JudgeError::Store(e) => ApiError::internal(e.to_string()),
            })
        })
        .await?;
    Ok(axum::Json(report::judgement_json(
        &answer.bounce,
        answer.at,
        &answer.judgement,
    ))
    .into_response())
}

/// A batch: a JSON array of `{recipient, at?, status?, reply_code?,
/// diagnostic?, remote_mta?}`; one verdict (or `{"error"}`) per item.
async fn verdicts(State(st): State<Arc<ApiState>>, body: Bytes) -> Result<Response, ApiError> {
    let items: Vec<serde_json::Value> = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("body: expected a JSON array: {e}")))?;
    if items.len() > 10_000 {
        return Err(ApiError::bad_request("at most 10,000 verdicts per request"));
    }
    let me = st.clone();
    let out = st
        .read(move |store| {
            let now = Utc::now();
            Ok(items
                .into_iter()
                .map(|item| match serde_json::from_value::<Parts>(item) {
                    Err(e) => json!({"error": format!("not a bounce: {e}")}),
                    Ok(parts) => match judge::judge(store, &me.providers, parts, now) {
                        Ok(a) => report::judgement_json(&a.bounce, a.at, &a.judgement),
                        Err(e) => json!({"error": e.to_string()}),
                    },
                })
                .collect::<Vec<_>>())
        })
        .await?;
    Ok(axum::Json(out).into_response())
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
    let now = Utc::now();
    let rows = st
        .read(move |s| {
            s.windows(active.then_some(now))
                .map_err(|e| ApiError::internal(e.to_string()))
        })
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
    let now = Utc::now();
    let me = st.clone();
    let body = st
        .read(move |s| {
            let internal = |e: crate::store::StoreError| ApiError::internal(e.to_string());
            let history = s.history(&d, None).map_err(internal)?;
            if history.is_empty() {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("no history of {d}"),
                ));
            }
            let current = s.as_of(&d, now).map_err(internal)?;
            let consensus = current
                .iter()
                .find(|a| a.upstream == crate::store::CONSENSUS);
            let provider: Vec<String> = consensus
                .map(|a| {
                    me.providers
                        .of_set(&a.run.observation.mx)
                        .into_iter()
                        .collect()
                })
                .unwrap_or_default();
            let windows: Vec<serde_json::Value> = s
                .windows(None)
                .map_err(internal)?
                .iter()
                .filter(|w| w.domain.as_deref() == Some(d.as_str()))
                .map(|w| report::window_json(w, now))
                .collect();
            Ok(json!({
                "domain": d.as_str(),
                "current": consensus.map(report::as_of_json),
                "provider": provider,
                "history": history.iter().map(report::run_json).collect::<Vec<_>>(),
                "windows": windows,
            }))
        })
        .await?;
    Ok(axum::Json(body).into_response())
}

fn authorised(st: &ApiState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = st.token.as_deref() else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "writes are disabled: no API token is configured (api_token_file or MXWATCH_API_TOKEN)",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
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
            "a valid bearer token is required",
        ))
    }
}

async fn bounces(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    authorised(&st, &headers)?;
    if body.is_empty() {
        return Err(ApiError::bad_request("empty body"));
    }
    let parsed = tokio::task::spawn_blocking(move || parse::parse(&body, None, Utc::now()))
        .await
        .map_err(|e| ApiError::internal(format!("parser failed: {e}")))?;
    let problems: Vec<String> = parsed
        .problems
        .iter()
        .map(|p| match p.line {
            Some(l) => format!("line {l}: {}", p.message),
            None => p.message.clone(),
        })
        .collect();
    if parsed.bounces.is_empty() && parsed.skipped == 0 {
        return Err(ApiError::bad_request(if problems.is_empty() {
            "no bounce found in the body".to_string()
        } else {
            problems.join("; ")
        }));
    }
    let received = parsed.bounces.len();
    let stored = st
        .writer
        .bounces(parsed.bounces, Utc::now())
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(axum::Json(json!({
        "received": received,
        "stored": stored,
        "skipped": parsed.skipped,
        "problems": problems,
    }))
    .into_response())
}
