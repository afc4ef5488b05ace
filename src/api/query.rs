//! Query strings, read by serde into one struct per route: unknown
//! parameters and wrong types are a 400 that names the parameter, in the
//! API's JSON error shape.

use axum::extract::FromRequestParts;
use axum::http::request::Parts as RequestParts;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use super::ApiError;

/// axum's `Query`, its rejection in our error shape.
pub(super) struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut RequestParts, _: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| Query(q.0))
            .map_err(|e| ApiError::bad_request(format!("query: {}", e.body_text())))
    }
}

/// `?since=`: RFC 3339, a date, or an age such as `24h`, as on the
/// command line; the only parameter of listing endpoints.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Since {
    /// The token may come as `?token=` (the auth middleware took it).
    #[serde(default, rename = "token")]
    _token: Option<serde::de::IgnoredAny>,
    since: Option<String>,
}

impl Since {
    pub(super) fn at(&self, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, ApiError> {
        moment("since", self.since.as_deref(), now)
    }
}

/// `GET /v1/undo?status=failed|dry_run|waiting&limit=`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Undo {
    /// The token may come as `?token=` (the auth middleware took it).
    #[serde(default, rename = "token")]
    _token: Option<serde::de::IgnoredAny>,
    pub(super) status: Option<String>,
    /// At most this many, newest first: 1 to [`super::MAX_PAGE`], default [`super::PAGE`].
    pub(super) limit: Option<usize>,
}

/// `GET /v1/windows?active=true`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Windows {
    /// The token may come as `?token=` (the auth middleware took it).
    #[serde(default, rename = "token")]
    _token: Option<serde::de::IgnoredAny>,
    #[serde(default, deserialize_with = "flag")]
    pub(super) active: bool,
    /// Only this domain's windows.
    pub(super) domain: Option<String>,
    /// Windows per page: 1 to [`super::MAX_PAGE`], default [`super::PAGE`].
    pub(super) limit: Option<usize>,
    /// Where the page starts: the cursor a `Link: …; rel="next"` gave.
    pub(super) cursor: Option<String>,
}

/// `GET /v1/verdict?recipient=…`: a bounce from its parts.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Verdict {
    /// The token may come as `?token=` (the auth middleware took it).
    #[serde(default, rename = "token")]
    _token: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    recipient: String,
    at: Option<String>,
    status: Option<String>,
    reply_code: Option<u16>,
    diagnostic: Option<String>,
    remote_mta: Option<String>,
}

impl Verdict {
    pub(super) fn parts(self, now: DateTime<Utc>) -> Result<crate::judge::Parts, ApiError> {
        let recipient = self.recipient.trim().to_string();
        if recipient.is_empty() {
            return Err(ApiError::bad_request("recipient is required"));
        }
        let given = |v: Option<String>| v.filter(|s| !s.is_empty());
        Ok(crate::judge::Parts {
            recipient,
            at: moment("at", self.at.as_deref(), now)?,
            status: given(self.status),
            reply_code: self.reply_code,
            diagnostic: given(self.diagnostic),
            remote_mta: given(self.remote_mta),
        })
    }
}

fn moment(
    name: &str,
    v: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, ApiError> {
    v.map(|v| crate::clock::parse_moment(v, now))
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("{name}: {e}")))
}

/// `true`, `1` or nothing is true; `false` or `0` is false.
fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let v = String::deserialize(d)?;
    match v.as_str() {
        "true" | "1" | "" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(serde::de::Error::custom(format!(
            "{other:?} is not true or false"
        ))),
    }
}
