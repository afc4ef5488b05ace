//! The `forward:` targets (gateway mode), checked: names, URLs, formats,
//! how each is told who calls, filters and the policy per verdict.

use std::time::Duration;

use super::inputs::Inputs;
use super::raw::*;
use super::validate::{Ctx, http_url, positive, secret, target_name};
use super::*;
use crate::forward::{Auth, Format, ForwardTarget, OnIgnore, OnTransient};

/// The receivers a passthrough target may take requests of.
pub const RECEIVERS: [&str; 5] = ["ses", "sendgrid", "mailgun", "postmark", "bounces"];

/// The forward targets (a secret that cannot be read is kept aside: only
/// `run` needs it).
pub(super) fn forward_targets(
    ctx: &Ctx,
    inputs: &Inputs,
    raw: Vec<RawForward>,
    secret_problems: &mut Vec<ConfigError>,
) -> Result<Vec<ForwardTarget>, ConfigError> {
    let mut out: Vec<ForwardTarget> = Vec::new();
    for (i, f) in raw.into_iter().enumerate() {
        let taken = out.iter().map(|t| t.name.as_str());
        let name = target_name(ctx, ("forward", i), &f.name, taken)?;
        out.push(target(ctx, inputs, i, name, f, secret_problems)?);
    }
    Ok(out)
}

fn target(
    ctx: &Ctx,
    inputs: &Inputs,
    i: usize,
    name: String,
    f: RawForward,
    secret_problems: &mut Vec<ConfigError>,
) -> Result<ForwardTarget, ConfigError> {
    let at = |x: &str| format!("forward[{i}].{x}");
    http_url(ctx, at("url"), &f.url)?;
    let format: Format = f
        .format
        .parse()
        .map_err(|e: String| ctx.err(at("format"), e))?;
    let auth = auth(ctx, inputs, i, &f, secret_problems)?;
    if format == Format::Passthrough && f.sources.is_empty() {
        return Err(ctx.err(
            at("format"),
            format!(
                "a passthrough target gets an ESP's requests at that ESP's endpoint of the handler: \
                 name the receivers it takes in `sources` ({})",
                RECEIVERS.join(", ")
            ),
        ));
    }
    for (j, s) in f.sources.iter().enumerate() {
        let known = match format {
            Format::Passthrough => RECEIVERS.contains(&s.as_str()),
            _ => crate::bounce::Source::parse(s).is_some(),
        };
        if !known {
            let all: Vec<&str> = match format {
                Format::Passthrough => RECEIVERS.to_vec(),
                _ => crate::bounce::Source::ALL
                    .iter()
                    .map(|s| s.as_str())
                    .collect(),
            };
            let what = match format {
                Format::Passthrough => "receiver",
                _ => "source",
            };
            return Err(ctx.err(
                format!("forward[{i}].sources[{j}]"),
                format!("unknown {what} {s:?} (one of: {})", all.join(", ")),
            ));
        }
    }
    let transient: OnTransient = match &f.transient {
        None => OnTransient::Soft,
        Some(s) => s.parse().map_err(|e: String| ctx.err(at("transient"), e))?,
    };
    let ignore: OnIgnore = match &f.ignore {
        None => OnIgnore::Unchanged,
        Some(s) => s.parse().map_err(|e: String| ctx.err(at("ignore"), e))?,
    };
    let positive = |d: Option<HumanDuration>, default: Duration, x: &str| {
        positive(ctx, at(x), d.map_or(default, |d| d.0))
    };
    Ok(ForwardTarget {
        name,
        url: f.url,
        format,
        auth,
        sources: f.sources,
        domains: f.domains.iter().map(|d| d.as_str().to_string()).collect(),
        tags: f.tags,
        transient,
        ignore,
        timeout: positive(f.timeout, Duration::from_secs(10), "timeout")?,
        max_age: positive(f.max_age, Duration::from_secs(72 * 3600), "max_age")?,
        backoff: positive(f.backoff, Duration::from_secs(30), "backoff")?,
    })
}

/// How a target is told who calls, as written (before its secret is read).
enum Method {
    None,
    Basic(String),
    Bearer,
    Header(String),
}

/// The first of `fields` that is written: an error points at what is
/// there, not at what is missing.
fn given(fields: &[(&'static str, bool)]) -> &'static str {
    fields
        .iter()
        .find(|(_, on)| *on)
        .map_or("name", |(f, _)| *f)
}

/// Basic (`user` with `password_env` or `password_file`), a bearer token,
/// an arbitrary header, or none: one at most, each whole.
fn method(ctx: &Ctx, i: usize, f: &RawForward) -> Result<Method, ConfigError> {
    let at = |x: &str| format!("forward[{i}].{x}");
    let basic = f.user.is_some() || f.password_env.is_some() || f.password_file.is_some();
    let bearer = f.bearer_env.is_some() || f.bearer_file.is_some();
    let header =
        f.header.is_some() || f.header_value_env.is_some() || f.header_value_file.is_some();
    if [basic, bearer, header].iter().filter(|b| **b).count() > 1 {
        let field = given(&[
            ("bearer_env", f.bearer_env.is_some()),
            ("bearer_file", f.bearer_file.is_some()),
            ("header", f.header.is_some()),
            ("header_value_env", f.header_value_env.is_some()),
            ("header_value_file", f.header_value_file.is_some()),
        ]);
        return Err(ctx.err(
            at(field),
            "give one way to authenticate: user and password, a bearer token, or a header".into(),
        ));
    }
    if basic {
        let Some(user) = f.user.clone().filter(|u| !u.trim().is_empty()) else {
            let field = given(&[
                ("user", f.user.is_some()),
                ("password_env", f.password_env.is_some()),
                ("password_file", f.password_file.is_some()),
            ]);
            return Err(ctx.err(
                at(field),
                "password_env or password_file needs a user".into(),
            ));
        };
        if user.contains(':') {
            return Err(ctx.err(at("user"), "a Basic user may not contain ':'".into()));
        }
        if f.password_env.is_none() && f.password_file.is_none() {
            return Err(ctx.err(
                at("user"),
                "a user needs password_env or password_file".into(),
            ));
        }
        return Ok(Method::Basic(user));
    }
    if header {
        let Some(name) = f.header.clone() else {
            let field = given(&[
                ("header_value_env", f.header_value_env.is_some()),
                ("header_value_file", f.header_value_file.is_some()),
            ]);
            return Err(ctx.err(
                at(field),
                "a header value needs `header`, the header's name".into(),
            ));
        };
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(ctx.err(at("header"), format!("{name:?} is not a header name")));
        }
        if f.header_value_env.is_none() && f.header_value_file.is_none() {
            return Err(ctx.err(
                at("header"),
                "a header needs header_value_env or header_value_file".into(),
            ));
        }
        return Ok(Method::Header(name));
    }
    Ok(if bearer { Method::Bearer } else { Method::None })
}

/// The target's credentials, read (a secret that cannot be read is kept
/// aside with the others: only `run` needs it).
fn auth(
    ctx: &Ctx,
    inputs: &Inputs,
    i: usize,
    f: &RawForward,
    secret_problems: &mut Vec<ConfigError>,
) -> Result<Auth, ConfigError> {
    let at = |x: &str| format!("forward[{i}].{x}");
    let method = method(ctx, i, f)?;
    let mut read = |env: (&str, &Option<String>), file: (&str, &Option<PathBuf>)| {
        secret(
            ctx,
            inputs,
            (at(env.0), env.1),
            (at(file.0), file.1),
            secret_problems,
        )
    };
    Ok(match method {
        Method::None => Auth::None,
        Method::Basic(user) => read(
            ("password_env", &f.password_env),
            ("password_file", &f.password_file),
        )?
        .map_or(Auth::None, |password| Auth::Basic { user, password }),
        Method::Bearer => read(
            ("bearer_env", &f.bearer_env),
            ("bearer_file", &f.bearer_file),
        )?
        .map_or(Auth::None, Auth::Bearer),
        Method::Header(name) => read(
            ("header_value_env", &f.header_value_env),
            ("header_value_file", &f.header_value_file),
        )?
        .map_or(Auth::None, |value| Auth::Header { name, value }),
    })
}
