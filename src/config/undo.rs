//! The `undo:` targets, checked: providers, where they answer, their
//! credentials (from the environment or a file only), and the safety
//! settings (off and dry-run until said otherwise, an hourly cap).

use std::time::Duration;

use super::inputs::Inputs;
use super::raw::*;
use super::validate::{Ctx, http_url, positive, secret, target_name};
use super::*;
use crate::undo::{Credentials, Provider, UndoTarget};

/// The undo targets (a secret that cannot be read is kept aside: only
/// `run` needs it).
pub(super) fn undo_targets(
    ctx: &Ctx,
    inputs: &Inputs,
    raw: Vec<RawUndo>,
    secret_problems: &mut Vec<ConfigError>,
) -> Result<Vec<UndoTarget>, ConfigError> {
    let mut out: Vec<UndoTarget> = Vec::new();
    // Every name so far, those of targets left out for a secret too, so
    // that "first at undo[j]" points at the right entry.
    let mut names: Vec<String> = Vec::new();
    for (i, u) in raw.into_iter().enumerate() {
        let name = target_name(ctx, ("undo", i), &u.name, names.iter().map(String::as_str))?;
        names.push(name.clone());
        if let Some(t) = target(ctx, inputs, i, name, u, secret_problems)? {
            out.push(t);
        }
    }
    Ok(out)
}

/// Fields that belong to some providers only, and which.
const ONLY: [(&str, &[Provider]); 8] = [
    ("region", &[Provider::Ses]),
    ("access_key_id_env", &[Provider::Ses]),
    ("secret_access_key_env", &[Provider::Ses]),
    ("on_behalf_of", &[Provider::Sendgrid]),
    ("domain", &[Provider::Mailgun]),
    ("stream", &[Provider::Postmark]),
    ("user", &[Provider::Listmonk]),
    (
        "api_key_env",
        &[
            Provider::Sendgrid,
            Provider::Mailgun,
            Provider::Postmark,
            Provider::Listmonk,
        ],
    ),
];

fn target(
    ctx: &Ctx,
    inputs: &Inputs,
    i: usize,
    name: String,
    u: RawUndo,
    secret_problems: &mut Vec<ConfigError>,
) -> Result<Option<UndoTarget>, ConfigError> {
    let at = |f: &str| format!("undo[{i}].{f}");
    let provider: Provider = u
        .provider
        .parse()
        .map_err(|e: String| ctx.err(at("provider"), e))?;
    let given = [
        u.region.is_some(),
        u.access_key_id_env.is_some() || u.access_key_id_file.is_some(),
        u.secret_access_key_env.is_some() || u.secret_access_key_file.is_some(),
        u.on_behalf_of.is_some(),
        u.domain.is_some(),
        u.stream.is_some(),
        u.user.is_some(),
        u.api_key_env.is_some() || u.api_key_file.is_some(),
    ];
    for ((field, who), on) in ONLY.iter().zip(given) {
        if on && !who.contains(&provider) {
            let field = field_written(field, &u);
            return Err(ctx.err(at(field), format!("a {provider} target takes no {field}")));
        }
    }
    let base_url = match &u.base_url {
        Some(b) => {
            http_url(ctx, at("base_url"), b)?;
            b.trim_end_matches('/').to_string()
        }
        None => provider.default_base(u.region.as_deref()).ok_or_else(|| {
            let why = match provider {
                Provider::Ses => "an SES target needs its region",
                _ => "a listmonk target needs base_url: where listmonk answers",
            };

            ctx.err(at("provider"), why.into())
        })?,
    };
    let need = |field: &str, v: &Option<String>| {
        v.clone()
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| ctx.err(at("provider"), format!("a {provider} target needs {field}")))
    };
    let domain = match provider {
        Provider::Mailgun => Some(need(
            "domain (the sending domain whose bounces list it is)",
            &u.domain,
        )?),
        _ => None,
    };
    let credentials = credentials(ctx, inputs, (i, provider), &u, secret_problems)?;
    let Some(credentials) = credentials else {
        // Named among the secret problems: `run` refuses to start.
        return Ok(None);
    };
    let max_per_hour = u.max_per_hour.unwrap_or(1000);
    if max_per_hour == 0 {
        return Err(ctx.err(
            at("max_per_hour"),
            "must be at least 1 (set enabled: false to stop a target)".into(),
        ));
    }
    let positive = |d: Option<HumanDuration>, default: Duration, f: &str| {
        positive(ctx, at(f), d.map_or(default, |d| d.0))
    };
    Ok(Some(UndoTarget {
        name,
        provider,
        base_url,
        credentials,
        enabled: u.enabled.unwrap_or(false),
        dry_run: u.dry_run.unwrap_or(true),
        max_per_hour,
        on_behalf_of: u.on_behalf_of,
        domain,
        stream: u.stream.unwrap_or_else(|| "outbound".into()),
        timeout: positive(u.timeout, Duration::from_secs(10), "timeout")?,
        max_age: positive(u.max_age, Duration::from_secs(7 * 24 * 3600), "max_age")?,
        backoff: positive(u.backoff, Duration::from_secs(30), "backoff")?,
    }))
}

/// A target's credentials, read; `None` when a secret could not be read
/// (named among the secret problems: `run` refuses to start).
fn credentials(
    ctx: &Ctx,
    inputs: &Inputs,
    (i, provider): (usize, Provider),
    u: &RawUndo,
    secret_problems: &mut Vec<ConfigError>,
) -> Result<Option<Credentials>, ConfigError> {
    let at = |f: &str| format!("undo[{i}].{f}");
    let need = |field: &str, v: &Option<String>| {
        v.clone()
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| ctx.err(at("provider"), format!("a {provider} target needs {field}")))
    };
    let mut read = |env: (&str, &Option<String>), file: (&str, &Option<PathBuf>)| {
        if env.1.is_none() && file.1.is_none() {
            return Err(ctx.err(
                at("provider"),
                format!("a {provider} target needs {} or {}", env.0, file.0),
            ));
        }
        secret(
            ctx,
            inputs,
            (at(env.0), env.1),
            (at(file.0), file.1),
            secret_problems,
        )
    };
    let api_key = (
        ("api_key_env", &u.api_key_env),
        ("api_key_file", &u.api_key_file),
    );
    Ok(match provider {
        Provider::Ses => {
            let region = need("region", &u.region)?;
            let key_id = read(
                ("access_key_id_env", &u.access_key_id_env),
                ("access_key_id_file", &u.access_key_id_file),
            )?;
            let secret = read(
                ("secret_access_key_env", &u.secret_access_key_env),
                ("secret_access_key_file", &u.secret_access_key_file),
            )?;
            key_id.zip(secret).map(|(key_id, secret)| Credentials::Aws {
                key_id,
                secret,
                region,
            })
        }
        Provider::Listmonk => {
            let user = need("user (an API user)", &u.user)?;
            read(api_key.0, api_key.1)?.map(|token| Credentials::User { user, token })
        }
        _ => read(api_key.0, api_key.1)?.map(Credentials::Key),
    })
}

/// The key as written (`_env` or `_file`) for a field of [`ONLY`].
fn field_written(field: &'static str, u: &RawUndo) -> &'static str {
    match field {
        "access_key_id_env" if u.access_key_id_env.is_none() => "access_key_id_file",
        "secret_access_key_env" if u.secret_access_key_env.is_none() => "secret_access_key_file",
        "api_key_env" if u.api_key_env.is_none() => "api_key_file",
        f => f,
    }
}
