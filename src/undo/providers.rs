//! Each provider's API for taking one address off its list, as each
//! documents it. Only this file knows those endpoints.
//!
//! - Amazon SES v2: `DELETE /v2/email/suppression/addresses/{EmailAddress}`
//!   (DeleteSuppressedDestination), SigV4 for service `ses` (`aws-sigv4`);
//!   404 `NotFoundException` when the address is not on the account's list.
//! - SendGrid: `DELETE /v3/suppression/bounces/{email}`, bearer key,
//!   `on-behalf-of` for a subuser; 204, 404 when not on the list.
//! - Mailgun: `DELETE /v3/{domain}/bounces/{address}`, Basic `api:KEY`;
//!   200, 404 when not on the list.
//! - Postmark: `POST /message-streams/{stream}/suppressions/delete` with
//!   `{"Suppressions": [{"EmailAddress": …}]}`, `X-Postmark-Server-Token`;
//!   the answer says per address `Deleted` or `Failed` with a `Message`.
//! - listmonk: `GET /api/subscribers?search=` (the subscriber, matched by
//!   its exact address), `DELETE /api/subscribers/{id}/bounces`, and, when
//!   it is blocklisted, `PATCH /api/subscribers/{id}` with
//!   `{"status": "enabled"}`; HTTP Basic with an API user.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{Credentials, Provider, UndoTarget, outcome};
use crate::delivery::Attempt;

/// Takes `address` off `t`'s list.
pub(super) async fn remove(
    http: &reqwest::Client,
    t: &UndoTarget,
    address: &str,
    now: DateTime<Utc>,
) -> Attempt {
    match t.provider {
        Provider::Ses => ses(http, t, address, now).await,
        Provider::Sendgrid => {
            let mut req = http.delete(url(t, &["v3", "suppression", "bounces", address]));
            if let Credentials::Key(k) = &t.credentials {
                req = req.bearer_auth(k.expose());
            }
            if let Some(sub) = &t.on_behalf_of {
                req = req.header("on-behalf-of", sub);
            }
            deleted(req.timeout(t.timeout).send().await, "SendGrid").await
        }
        Provider::Mailgun => {
            let domain = t.domain.as_deref().unwrap_or("");
            let mut req = http.delete(url(t, &["v3", domain, "bounces", address]));
            if let Credentials::Key(k) = &t.credentials {
                req = req.basic_auth("api", Some(k.expose()));
            }
            deleted(req.timeout(t.timeout).send().await, "Mailgun").await
        }
        Provider::Postmark => postmark(http, t, address).await,
        Provider::Listmonk => listmonk(http, t, address).await,
    }
}

/// `base_url` with `segments` appended, each percent-encoded but for
/// RFC 3986's unreserved characters (an address may hold `@`, `+`, `/`,
/// `%`; SigV4 signs the path so encoded).
fn url(t: &UndoTarget, segments: &[&str]) -> reqwest::Url {
    let mut text = t.base_url.trim_end_matches('/').to_string();
    for s in segments {
        text.push('/');
        for b in s.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                text.push(b as char);
            } else {
                text.push_str(&format!("%{b:02X}"));
            }
        }
    }
    reqwest::Url::parse(&text).expect("base_url was checked, and the segments are encoded")
}

/// At most this much of a provider's answer is kept with a failure.
const ANSWER: usize = 300;

/// What a failed answer says, as kept: the status and the start of the body.
async fn answer(r: reqwest::Response, who: &str) -> String {
    let status = r.status();
    let body = r.text().await.unwrap_or_default();
    let mut cut: String = body.chars().take(ANSWER).collect();
    if cut.len() < body.len() {
        cut.push('…');
    }
    format!("{who} answered {status}: {}", cut.trim())
}

/// What an answer to a removal means: 2xx removed, 404 not on the list,
/// other 4xx (but 408/429) refused for good, the rest tried again.
async fn deleted(result: reqwest::Result<reqwest::Response>, who: &str) -> Attempt {
    let r = match result {
        Err(e) => return Attempt::Failed(format!("{who}: {}", e.without_url())),
        Ok(r) => r,
    };
    let status = r.status();
    if status.is_success() {
        Attempt::Done(outcome::REMOVED)
    } else if status.as_u16() == 404 {
        Attempt::Done(outcome::NOT_FOUND)
    } else if status.is_client_error() && status.as_u16() != 408 && status.as_u16() != 429 {
        Attempt::Refused(answer(r, who).await)
    } else {
        Attempt::Failed(answer(r, who).await)
    }
}

/// The SigV4 headers (`authorization`, `x-amz-date`) for a request
/// without a body to AWS `service` at `time`.
fn sigv4(
    (method, url): (&str, &str),
    (key_id, secret, region): (&str, &str, &str),
    service: &str,
    time: std::time::SystemTime,
) -> Result<Vec<(String, String)>, String> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    let identity =
        aws_credential_types::Credentials::new(key_id, secret, None, None, "mxwatch").into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| format!("signing: {e}"))?
        .into();
    let req = SignableRequest::new(method, url, std::iter::empty(), SignableBody::Bytes(&[]))
        .map_err(|e| format!("signing: {e}"))?;
    let (instructions, _) = sign(req, &params)
        .map_err(|e| format!("signing: {e}"))?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect())
}

async fn ses(http: &reqwest::Client, t: &UndoTarget, address: &str, now: DateTime<Utc>) -> Attempt {
    let Credentials::Aws {
        key_id,
        secret,
        region,
    } = &t.credentials
    else {
        return Attempt::Refused("SES needs an access key".into());
    };
    let u = url(t, &["v2", "email", "suppression", "addresses", address]);
    let keys = (key_id.expose(), secret.expose(), region.as_str());
    let headers = match sigv4(("DELETE", u.as_str()), keys, "ses", now.into()) {
        Ok(h) => h,
        Err(e) => return Attempt::Refused(e),
    };
    let mut req = http.delete(u).timeout(t.timeout);
    for (n, v) in &headers {
        req = req.header(n.as_str(), v.as_str());
    }
    deleted(req.send().await, "SES").await
}

async fn postmark(http: &reqwest::Client, t: &UndoTarget, address: &str) -> Attempt {
    let u = url(t, &["message-streams", &t.stream, "suppressions", "delete"]);
    let mut req = http
        .post(u)
        .timeout(t.timeout)
        .header("accept", "application/json")
        .json(&json!({"Suppressions": [{"EmailAddress": address}]}));
    if let Credentials::Key(k) = &t.credentials {
        req = req.header("x-postmark-server-token", k.expose());
    }
    let r = match req.send().await {
        Err(e) => return Attempt::Failed(format!("Postmark: {}", e.without_url())),
        Ok(r) if !r.status().is_success() => return deleted(Ok(r), "Postmark").await,
        Ok(r) => r,
    };
    let v: Value = match r.json().await {
        Ok(v) => v,
        Err(e) => return Attempt::Failed(format!("Postmark: the answer is not JSON: {e}")),
    };
    let mine = v["Suppressions"].as_array().and_then(|list| {
        list.iter().find(|s| {
            s["EmailAddress"]
                .as_str()
                .is_some_and(|a| a.eq_ignore_ascii_case(address))
        })
    });
    match mine.map(|s| (s["Status"].as_str(), s["Message"].as_str())) {
        Some((Some("Deleted"), _)) => Attempt::Done(outcome::REMOVED),
        Some((Some(status), message)) => Attempt::Refused(format!(
            "Postmark: {status}: {}",
            message.unwrap_or("no message")
        )),
        _ => Attempt::Failed("Postmark: the answer does not name the address".into()),
    }
}

async fn listmonk(http: &reqwest::Client, t: &UndoTarget, address: &str) -> Attempt {
    let Credentials::User { user, token } = &t.credentials else {
        return Attempt::Refused("listmonk needs an API user".into());
    };
    let auth = |req: reqwest::RequestBuilder| {
        req.basic_auth(user, Some(token.expose()))
            .timeout(t.timeout)
    };
    let mut find = url(t, &["api", "subscribers"]);
    find.query_pairs_mut()
        .append_pair("search", address)
        .append_pair("per_page", "50");
    let r = match auth(http.get(find)).send().await {
        Err(e) => return Attempt::Failed(format!("listmonk: {}", e.without_url())),
        Ok(r) if !r.status().is_success() => return deleted(Ok(r), "listmonk").await,
        Ok(r) => r,
    };
    let v: Value = r.json().await.unwrap_or_default();
    let found = v["data"]["results"].as_array().and_then(|list| {
        list.iter().find(|s| {
            s["email"]
                .as_str()
                .is_some_and(|e| e.eq_ignore_ascii_case(address))
        })
    });
    let Some(sub) = found else {
        return Attempt::Done(outcome::NOT_FOUND);
    };
    let Some(id) = sub["id"].as_i64() else {
        return Attempt::Failed("listmonk: a subscriber without an id".into());
    };
    let id = id.to_string();
    let bounces = auth(http.delete(url(t, &["api", "subscribers", &id, "bounces"])));
    if let a @ (Attempt::Failed(_) | Attempt::Refused(_)) =
        deleted(bounces.send().await, "listmonk").await
    {
        return a;
    }
    if sub["status"].as_str() == Some("blocklisted") {
        let patch = auth(http.patch(url(t, &["api", "subscribers", &id])))
            .json(&json!({"status": "enabled"}));
        return match deleted(patch.send().await, "listmonk").await {
            Attempt::Done(outcome::NOT_FOUND) => Attempt::Done(outcome::NOT_FOUND),
            Attempt::Done(_) => Attempt::Done(outcome::REMOVED),
            other => other,
        };
    }
    Attempt::Done(outcome::REMOVED)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's own SigV4 test suite, `get-vanilla`: a fixed clock
    /// (2015-08-30T12:36:00Z), AWS's example credentials, and the
    /// signature AWS publishes for them.
    #[test]
    fn sigv4_signs_as_aws_test_suite_says() {
        let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_440_938_160);
        let keys = (
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "us-east-1",
        );
        let headers = sigv4(
            ("GET", "https://example.amazonaws.com/"),
            keys,
            "service",
            time,
        )
        .unwrap();
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("x-amz-date"), Some("20150830T123600Z"));
        assert_eq!(
            get("authorization"),
            Some(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
                 SignedHeaders=host;x-amz-date, \
                 Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
            )
        );
    }

    #[test]
    fn an_address_is_one_path_segment_whatever_it_holds() {
        let t = UndoTarget {
            name: "t".into(),
            provider: Provider::Sendgrid,
            base_url: "https://api.example/base/".into(),
            credentials: Credentials::Key(crate::secret::Secret::new("k".into())),
            enabled: true,
            dry_run: false,
            max_per_hour: 1,
            on_behalf_of: None,
            domain: None,
            stream: "outbound".into(),
            timeout: std::time::Duration::from_secs(1),
            max_age: std::time::Duration::from_secs(1),
            backoff: std::time::Duration::from_secs(1),
        };
        let u = url(&t, &["v3", "a+b/../c%d@x.test"]);
        assert_eq!(
            u.as_str(),
            "https://api.example/base/v3/a%2Bb%2F..%2Fc%25d%40x.test"
        );
    }
}
