//! Bounces in: `POST /v1/bounces` and the ESP receivers (SES through
//! SNS: signatures, topics, subscription confirmations).

use super::*;

pub(super) async fn bounces(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    RawBody(body, _held): RawBody,
) -> Result<Response, ApiError> {
    ingest(&st, body, None, None, ("bounces", &headers)).await
}

/// The headers of a request a passthrough target gets with its body.
fn kept_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    crate::forward::PASSTHROUGH_HEADERS
        .iter()
        .filter_map(|name| {
            let v = headers.get(*name)?.to_str().ok()?;
            Some((name.to_string(), v.to_string()))
        })
        .collect()
}

/// Parses, judges and stores; answers after the commit with a verdict per
/// bounce. `only` refuses bounces of another source (an ESP's receiver).
/// What is stored is announced to the forward targets in the same
/// transaction (`from`: the receiver and the request's headers).
pub(super) async fn ingest(
    st: &Arc<ApiState>,
    body: Bytes,
    format: Option<Format>,
    only: Option<Source>,
    from: (&str, &HeaderMap),
) -> Result<Response, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("empty body"));
    }
    let now = st.clock.now();
    let range = st.live().bounce_times;
    let (announce_bounces, keep_request) = st.announce.get();
    let kept = body.clone();
    let (parsed, items) = tokio::task::spawn_blocking(move || {
        let mut parsed = parse::parse(&body, format, now);
        parsed.keep_within(range, now, crate::bounce::OutOfRange::Redate);
        let items = keep_request.then(|| crate::forward::items(&body)).flatten();
        (parsed, items)
    })
    .await?;
    let arrival = Some(crate::store::Arrival {
        receiver: from.0.to_string(),
        bounces: announce_bounces,
        request: keep_request.then(|| crate::store::RawRequest {
            headers: kept_headers(from.1),
            body: kept.to_vec(),
            items,
        }),
    });
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
            "{} {} not {} events (send them to their own receiver or /v1/bounces)",
            crate::event::plural(foreign.len(), "event"),
            if foreign.len() == 1 { "is" } else { "are" },
            s.as_str()
        ));
    }
    // Deliveries are the same ESP's events: a receiver takes only its own.
    let delivered: Vec<crate::bounce::Delivered> = parsed
        .delivered
        .into_iter()
        .filter(|d| only.is_none_or(|s| d.source == s))
        .collect();
    if list.is_empty() && parsed.skipped == 0 {
        return Err(ApiError::bad_request(if problems.is_empty() {
            "no bounce found in the body".to_string()
        } else {
            problems.join("; ")
        }));
    }
    let received = list.len();
    let intake = st
        .writer
        .arrived(list.clone(), delivered, arrival, now)
        .await?;
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
    let counts = report::IntakeCounts {
        received,
        stored: intake.stored,
        skipped: parsed.skipped,
        reinstated: intake.reinstated,
        delivered: intake.delivered,
    };
    Ok(axum::Json(report::intake_json(counts, &problems, verdicts)).into_response())
}

/// `POST /v1/webhooks/{esp}`: one ESP's event webhook. For SES (through
/// SNS), a subscription confirmation is answered by visiting its
/// `SubscribeURL`, if that is an SNS endpoint (or a configured prefix).
pub(super) async fn webhook(
    State(st): State<Arc<ApiState>>,
    axum::extract::Path(esp): axum::extract::Path<String>,
    headers: HeaderMap,
    RawBody(body, _held): RawBody,
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
            None if !st.live().sns_topics.is_empty() => {
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
    ingest(
        &st,
        body,
        Some(Format::Json),
        Some(source),
        (&esp, &headers),
    )
    .await
}

/// An SNS message is taken only from an allowed topic and, unless
/// `sns_verify_signatures: false`, with a valid SNS signature.
pub(super) async fn check_sns(st: &Arc<ApiState>, v: &serde_json::Value) -> Result<(), ApiError> {
    let refuse = |why: String| ApiError::new(StatusCode::FORBIDDEN, format!("SNS: {why}"));
    let topic = v.get("TopicArn").and_then(|t| t.as_str()).unwrap_or("");
    let live = st.live();
    if !live.sns_topics.is_empty() && !live.sns_topics.iter().any(|t| t == topic) {
        return Err(refuse(format!("topic {topic:?} is not in sns_topics")));
    }
    if !live.sns_verify_signatures {
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
    let pem = signing_cert(st, url).await?;
    let mut certs = crate::sns::certificates(&pem).map_err(refuse)?;
    // SNS serves the leaf alone: its issuer comes from where it says
    // (Amazon's CA only), and is verified up to a root like the leaf.
    if certs.len() == 1
        && let Some(issuer) = crate::sns::issuer_url(&certs[0])
    {
        let bytes = signing_cert(st, &issuer).await?;
        certs.push(crate::sns::issuer_certificate(&bytes).map_err(refuse)?);
    }
    let secs = u64::try_from(st.clock.now().timestamp()).unwrap_or(0);
    let now = rustls_pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(secs));
    crate::sns::verify(v, &certs, &live.sns_trust, now).map_err(refuse)
}

/// The signing certificate (or its issuer's) at `url` (or its path under
/// `sns_signing_cert_base`), fetched once.
pub(super) async fn signing_cert(st: &Arc<ApiState>, url: &str) -> Result<Bytes, ApiError> {
    if let Some(c) = st.sns_certs.lock().ok().and_then(|m| m.get(url).cloned()) {
        return Ok(c);
    }
    let from = match &st.live().sns_signing_cert_base {
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
    u.scheme() == "https"
        && u.port().is_none()
        && crate::sns::is_sns_host(u.host_str().unwrap_or(""))
}

pub(super) async fn confirm_subscription(
    st: &Arc<ApiState>,
    v: &serde_json::Value,
) -> Result<Response, ApiError> {
    let url = v
        .get("SubscribeURL")
        .and_then(|u| u.as_str())
        .ok_or_else(|| ApiError::bad_request("SubscriptionConfirmation without a SubscribeURL"))?;
    if !subscribe_url_allowed(url, &st.live().sns_subscribe_allow) {
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
