//! The token: where a client may put it, and who needs it for what.

use super::*;

/// The token as a client sent it: `Authorization: Bearer T`, HTTP Basic
/// with `T` as the password (what ESP webhook settings can hold in a URL),
/// or `?token=T`.
pub(super) fn presented_token(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // The scheme is case-insensitive (RFC 9110 §11.1), and any run of
    // spaces may follow it.
    let (scheme, credentials) = auth.trim_start().split_once(' ').unwrap_or(("", ""));
    let credentials = credentials.trim_start();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(credentials.trim().to_string());
    }
    if let Some(b) = scheme.eq_ignore_ascii_case("basic").then_some(credentials) {
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
pub(super) async fn writer_only(
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
pub(super) async fn reader_only(
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

pub(super) fn authorised(
    st: &ApiState,
    headers: &HeaderMap,
    query: Option<&str>,
    what: &str,
) -> Result<(), ApiError> {
    let live = st.live();
    let Some(token) = live.token.as_deref() else {
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
