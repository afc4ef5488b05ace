//! The services mxwatch talks to, checked: alert webhooks it sends to and
//! passive DNS providers it asks.

use std::time::Duration;

use super::inputs::Inputs;
use super::raw::*;
use super::validate::{Ctx, http_url, positive, secret};
use super::*;
use crate::window::Severity;

/// The alert targets: names, URLs, formats, filters, secrets (a secret
/// that cannot be read is kept aside: only `run` needs it).
pub(super) fn alert_targets(
    ctx: &Ctx,
    inputs: &Inputs,
    raw: Vec<RawAlert>,
    secret_problems: &mut Vec<ConfigError>,
) -> Result<Vec<crate::alerts::AlertTarget>, ConfigError> {
    let mut alerts: Vec<crate::alerts::AlertTarget> = Vec::new();
    for (i, a) in raw.into_iter().enumerate() {
        let at = |f: &str| format!("alerts[{i}].{f}");
        let name = a.name.trim().to_string();
        if name.is_empty() {
            return Err(ctx.err(at("name"), "must not be empty".into()));
        }
        for (prefix, whose) in [
            (crate::store::FORWARD_PREFIX, "forward"),
            (crate::store::UNDO_PREFIX, "undo"),
        ] {
            if name.starts_with(prefix) {
                return Err(ctx.err(
                    at("name"),
                    format!("names starting with {prefix:?} are kept for {whose} targets"),
                ));
            }
        }
        if let Some(j) = alerts.iter().position(|t| t.name == name) {
            return Err(ctx.err(
                at("name"),
                format!("{name:?} is used twice (first at alerts[{j}])"),
            ));
        }
        let target = alert_target(ctx, inputs, i, name, a, secret_problems)?;
        alerts.push(target);
    }
    Ok(alerts)
}

/// One alert target, `alerts[i]`, named `name`.
fn alert_target(
    ctx: &Ctx,
    inputs: &Inputs,
    i: usize,
    name: String,
    a: RawAlert,
    secret_problems: &mut Vec<ConfigError>,
) -> Result<crate::alerts::AlertTarget, ConfigError> {
    let at = |f: &str| format!("alerts[{i}].{f}");
    match reqwest::Url::parse(&a.url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => {}
        Ok(u) => {
            return Err(ctx.err(
                at("url"),
                format!("scheme {:?} is not http or https", u.scheme()),
            ));
        }
        Err(e) => return Err(ctx.err(at("url"), format!("{:?} is not a URL: {e}", a.url))),
    }
    let format = match a.format.as_deref().unwrap_or("json") {
        "json" => crate::alerts::BodyFormat::Json,
        "slack" | "mattermost" => crate::alerts::BodyFormat::Slack,
        other => {
            return Err(ctx.err(
                at("format"),
                format!("{other:?} is not json, slack or mattermost"),
            ));
        }
    };
    let secret = secret(
        ctx,
        inputs,
        (at("secret_env"), &a.secret_env),
        (at("secret_file"), &a.secret_file),
        secret_problems,
    )?;
    let mut events = Vec::with_capacity(a.events.len());
    for (j, e) in a.events.iter().enumerate() {
        let Some(t) = EventType::parse(e).filter(|t| t.is_alert()) else {
            let all: Vec<&str> = EventType::alerts().map(|t| t.as_str()).collect();
            return Err(ctx.err(
                format!("alerts[{i}].events[{j}]"),
                format!("unknown event {e:?} (one of: {})", all.join(", ")),
            ));
        };
        events.push(t);
    }
    let min_severity = match a.min_severity.as_deref() {
        None => Severity::Info,
        Some(s) => Severity::parse(s).ok_or_else(|| {
            ctx.err(
                at("min_severity"),
                format!("{s:?} is not info, warning or critical"),
            )
        })?,
    };
    let positive = |d: Option<HumanDuration>, default: Duration, f: &str| {
        positive(ctx, at(f), d.map_or(default, |d| d.0))
    };
    Ok(crate::alerts::AlertTarget {
        name,
        url: a.url,
        format,
        secret,
        events,
        domains: a.domains.iter().map(|d| d.as_str().to_string()).collect(),
        tags: a.tags,
        min_severity,
        timeout: positive(a.timeout, Duration::from_secs(10), "timeout")?,
        max_age: positive(a.max_age, Duration::from_secs(72 * 3600), "max_age")?,
        backoff: positive(a.backoff, Duration::from_secs(30), "backoff")?,
    })
}

/// The passive DNS providers; one whose key is missing is left out (and
/// named among the secret problems).
pub(super) fn passive_dns(
    ctx: &Ctx,
    inputs: &Inputs,
    raw: &[RawPassiveDns],
    secret_problems: &mut Vec<ConfigError>,
) -> Result<Vec<crate::passive_dns::Provider>, ConfigError> {
    let mut out = Vec::new();
    for (i, p) in raw.iter().enumerate() {
        let at = |f: &str| format!("passive_dns[{i}].{f}");
        let source: crate::passive::PassiveSource = p
            .provider
            .parse()
            .map_err(|e: String| ctx.err(at("provider"), e))?;
        let base_url = match &p.base_url {
            Some(u) => {
                http_url(ctx, at("base_url"), u)?;
                u.trim_end_matches('/').to_string()
            }
            None => crate::passive_dns::Provider::default_base(source).to_string(),
        };
        let key = secret(
            ctx,
            inputs,
            (at("key_env"), &p.key_env),
            (at("key_file"), &p.key_file),
            secret_problems,
        )?;
        let limits = crate::passive_dns::Limits::default();
        let per_hour = p.max_requests_per_hour.unwrap_or(limits.per_hour);
        let per_day = p.max_requests_per_day.unwrap_or(limits.per_day);
        if per_hour == 0 || per_day == 0 {
            let field = if per_hour == 0 {
                "max_requests_per_hour"
            } else {
                "max_requests_per_day"
            };
            return Err(ctx.err(
                at(field),
                "must be at least 1 (leave the provider out to ask none)".into(),
            ));
        }
        match key {
            Some(key) => out.push(crate::passive_dns::Provider {
                source,
                base_url,
                key,
                limits: crate::passive_dns::Limits { per_hour, per_day },
            }),
            None if p.key_env.is_none() && p.key_file.is_none() => {
                return Err(ctx.err(at("key_env"), "a provider needs key_env or key_file".into()));
            }
            None => {}
        }
    }
    Ok(out)
}
