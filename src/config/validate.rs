//! The second stage: raw serde structs checked into a [`Config`], failing
//! fast with the field at fault. Environment variables and files were read
//! before ([`Inputs`]); nothing here does IO.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::inputs::Inputs;
use super::raw::*;
use super::targets::{alert_targets, passive_dns};
use super::*;

/// Where errors point: the watchlist's path.
pub(super) struct Ctx<'a> {
    pub(super) path: &'a Path,
}

impl Ctx<'_> {
    pub(super) fn err(&self, field: String, message: String) -> ConfigError {
        ConfigError {
            file: self.path.to_path_buf(),
            line: None,
            column: None,
            field,
            message,
        }
    }

    pub(super) fn relative(&self, p: PathBuf) -> PathBuf {
        if p.is_absolute() {
            p
        } else {
            self.path.parent().unwrap_or(Path::new(".")).join(p)
        }
    }
}

/// A target's name in `section[i]`: not empty, not one of `taken`.
pub(super) fn target_name<'a>(
    ctx: &Ctx,
    (section, i): (&str, usize),
    name: &str,
    mut taken: impl Iterator<Item = &'a str>,
) -> Result<String, ConfigError> {
    let at = format!("{section}[{i}].name");
    let name = name.trim().to_string();
    if name.is_empty() {
        return Err(ctx.err(at, "must not be empty".into()));
    }
    if let Some(j) = taken.position(|t| t == name) {
        return Err(ctx.err(
            at,
            format!("{name:?} is used twice (first at {section}[{j}])"),
        ));
    }
    Ok(name)
}

/// A URL the daemon will fetch from: http(s), a host, no user name.
pub(super) fn http_url(ctx: &Ctx, field: String, url: &str) -> Result<(), ConfigError> {
    let ok = reqwest::Url::parse(url).is_ok_and(|u| {
        matches!(u.scheme(), "http" | "https")
            && u.host_str().is_some()
            && u.username().is_empty()
            && u.password().is_none()
    });
    if ok {
        Ok(())
    } else {
        Err(ctx.err(
            field,
            format!("{url:?} is not an http(s) URL with a host (and no user name)"),
        ))
    }
}

/// The anomaly thresholds, checked against each other.
fn anomaly_params(
    ctx: &Ctx,
    raw: Option<RawAnomaly>,
) -> Result<crate::anomaly::Params, ConfigError> {
    let d = crate::anomaly::Params::default();
    let a = raw.unwrap_or_default();
    let p = crate::anomaly::Params {
        window: a.window.map_or(d.window, |x| x.0),
        baseline: a.baseline.map_or(d.baseline, |x| x.0),
        factor: a.factor.unwrap_or(d.factor),
        concurrent_factor: a.concurrent_factor.unwrap_or(d.concurrent_factor),
        min_bounces: a.min_bounces.unwrap_or(d.min_bounces),
        min_recipients: a.min_recipients.unwrap_or(d.min_recipients),
        warmup: a.warmup.map_or(d.warmup, |x| x.0),
        max_duration: a.max_duration.map_or(d.max_duration, |x| x.0),
    };
    if p.max_duration <= p.window {
        return Err(ctx.err(
            "anomaly.max_duration".into(),
            "must be longer than anomaly.window".into(),
        ));
    }
    if p.window.is_zero() {
        return Err(ctx.err("anomaly.window".into(), "must be more than 0s".into()));
    }
    if p.baseline <= p.window {
        return Err(ctx.err(
            "anomaly.baseline".into(),
            "must be longer than anomaly.window".into(),
        ));
    }
    if !(p.factor.is_finite() && p.factor >= 1.0) {
        return Err(ctx.err("anomaly.factor".into(), "must be at least 1".into()));
    }
    if !(p.concurrent_factor.is_finite() && p.concurrent_factor > 1.0) {
        return Err(ctx.err(
            "anomaly.concurrent_factor".into(),
            "must be more than 1".into(),
        ));
    }
    if p.min_bounces == 0 || p.min_recipients == 0 {
        return Err(ctx.err(
            "anomaly".into(),
            "min_bounces and min_recipients must be at least 1".into(),
        ));
    }
    Ok(p)
}

/// A secret from an environment variable or a file's first line (one of
/// the two); a missing one is a problem only `run` (or the command that
/// needs it) minds.
pub(super) fn secret(
    ctx: &Ctx,
    inputs: &Inputs,
    (env_field, env): (String, &Option<String>),
    (file_field, file): (String, &Option<PathBuf>),
    secret_problems: &mut Vec<ConfigError>,
) -> Result<Option<crate::secret::Secret>, ConfigError> {
    Ok(match (env, file) {
        (Some(_), Some(_)) => {
            let short = |f: &str| f.rsplit('.').next().unwrap_or(f).to_string();
            let why = format!(
                "give {} or {}, not both",
                short(&env_field),
                short(&file_field)
            );
            return Err(ctx.err(env_field, why));
        }
        (Some(var), None) => match inputs.var(var) {
            Some(v) if !v.trim().is_empty() => {
                Some(crate::secret::Secret::new(v.trim().to_string()))
            }
            _ => {
                secret_problems
                    .push(ctx.err(env_field, format!("environment variable {var} is not set")));
                None
            }
        },
        (None, Some(f)) => {
            let f = ctx.relative(f.clone());
            match inputs.file(&f) {
                Err(e) => {
                    secret_problems.push(ctx.err(file_field, format!("{}: {e}", f.display())));
                    None
                }
                Ok(text) => {
                    let line = text.lines().next().unwrap_or("").trim().to_string();
                    if line.is_empty() {
                        secret_problems
                            .push(ctx.err(file_field, format!("{} is empty", f.display())));
                        None
                    } else {
                        Some(crate::secret::Secret::new(line))
                    }
                }
            }
        }
        (None, None) => None,
    })
}

/// A duration that must be more than zero.
pub(super) fn positive(ctx: &Ctx, field: String, d: Duration) -> Result<Duration, ConfigError> {
    if d.is_zero() {
        Err(ctx.err(field, "must be more than 0s".into()))
    } else {
        Ok(d)
    }
}

/// The watched domains: those listed (each once, its expectations known
/// providers or registrable domains), then the domains file's (a repeat of
/// an earlier entry is merged and counted).
fn watched_domains(
    ctx: &Ctx,
    inputs: &Inputs,
    listed: Vec<RawDomain>,
    file: Option<PathBuf>,
    table: &Providers,
) -> Result<(Vec<WatchedDomain>, usize), ConfigError> {
    let mut domains: Vec<WatchedDomain> = Vec::new();
    let mut index: HashMap<DomainName, usize> = HashMap::new();
    for (i, RawDomain(d)) in listed.into_iter().enumerate() {
        if let Some(first) = index.get(&d.name) {
            return Err(ctx.err(
                format!("domains[{i}]"),
                format!("{} is listed twice (first at domains[{first}])", d.name),
            ));
        }
        let mut expect = Vec::new();
        for (j, e) in d.expect.iter().enumerate() {
            let id = e.trim().to_ascii_lowercase();
            if !table.is_known(&id) && !id.contains('.') {
                return Err(ctx.err(
                    format!("domains[{i}].expect[{j}]"),
                    format!(
                        "unknown provider {e:?}: use a provider id (icloud, google, microsoft, …, \
                         or one from `providers:`) or a registrable domain such as example.net"
                    ),
                ));
            }
            expect.push(id);
        }
        index.insert(d.name.clone(), i);
        domains.push(WatchedDomain {
            name: d.name,
            schedule: d.schedule,
            tags: d.tags,
            expect,
        });
    }

    let mut duplicates_merged = 0;
    if let Some(file) = file {
        let file = ctx.relative(file);
        let text = inputs.file(&file).map_err(|e| ConfigError {
            file: ctx.path.to_path_buf(),
            line: None,
            column: None,
            field: "domains_file".into(),
            message: format!("cannot read {}: {e}", file.display()),
        })?;
        for (n, line) in text.lines().enumerate() {
            let entry = line.split('#').next().unwrap_or("").trim();
            if entry.is_empty() {
                continue;
            }
            let name = DomainName::parse(entry).map_err(|e| ConfigError {
                file: file.clone(),
                line: Some(n + 1),
                column: None,
                field: String::new(),
                message: e.to_string(),
            })?;
            if index.contains_key(&name) {
                duplicates_merged += 1;
                continue;
            }
            index.insert(name.clone(), domains.len());
            domains.push(WatchedDomain {
                name,
                schedule: None,
                tags: vec![],
                expect: vec![],
            });
        }
    }
    Ok((domains, duplicates_merged))
}

/// The API token: the first line of `api_token_file`, else
/// `MXWATCH_API_TOKEN`; one that cannot be read, or is too short, is kept
/// aside as a secret problem (only `run` needs it).
fn api_token(
    ctx: &Ctx,
    inputs: &Inputs,
    file: Option<PathBuf>,
    secret_problems: &mut Vec<ConfigError>,
) -> Option<String> {
    // One rule for the token wherever it comes from: a short one is
    // guessed, so it is refused (a secret problem: `run` stops on it).
    let token_rule = |token: String, field: &str, origin: String| {
        if token.chars().count() < MIN_TOKEN_CHARS {
            Err(ctx.err(
                field.into(),
                format!("{origin}the token must be at least {MIN_TOKEN_CHARS} characters"),
            ))
        } else {
            Ok(token)
        }
    };
    match file {
        Some(f) => {
            let f = ctx.relative(f);
            match inputs.file(&f) {
                Err(e) => Err(ctx.err(
                    "api_token_file".into(),
                    format!("cannot read {}: {e}", f.display()),
                )),
                Ok(text) => {
                    let token = text.lines().next().unwrap_or("").trim().to_string();
                    token_rule(token, "api_token_file", format!("{}: ", f.display()))
                }
            }
            .map(Some)
        }
        None => match inputs.var(inputs::TOKEN_VAR) {
            Some(t) if !t.trim().is_empty() => {
                token_rule(t.trim().to_string(), "MXWATCH_API_TOKEN", String::new()).map(Some)
            }
            _ => Ok(None),
        },
    }
    .unwrap_or_else(|e| {
        secret_problems.push(e);
        None
    })
}

/// The upstreams: the system resolver when none are listed, each once.
fn upstreams(ctx: &Ctx, raw: Option<Vec<Upstream>>) -> Result<Vec<Upstream>, ConfigError> {
    let upstreams = raw.unwrap_or_else(|| vec![Upstream::System]);
    if upstreams.is_empty() {
        return Err(ctx.err("upstreams".into(), "needs at least one upstream".into()));
    }
    let mut seen_up = HashMap::new();
    for (i, u) in upstreams.iter().enumerate() {
        if let Some(first) = seen_up.insert(u.label(), i) {
            return Err(ctx.err(
                format!("upstreams[{i}]"),
                format!(
                    "{} is listed twice (first at upstreams[{first}])",
                    u.label()
                ),
            ));
        }
    }
    Ok(upstreams)
}

/// The watchlist's own provider rules (ids, names, MX suffixes).
fn provider_rules(ctx: &Ctx, raw: Vec<RawProvider>) -> Result<Vec<ProviderRule>, ConfigError> {
    let mut providers = Vec::new();
    for (i, p) in raw.into_iter().enumerate() {
        let id = p.id.trim().to_ascii_lowercase();
        if id.is_empty() {
            return Err(ctx.err(format!("providers[{i}].id"), "must not be empty".into()));
        }
        let mut suffixes = Vec::new();
        for (j, s) in p.suffixes.iter().enumerate() {
            let host = crate::domain::MxHost::parse(s)
                .map_err(|e| ctx.err(format!("providers[{i}].suffixes[{j}]"), e.to_string()))?;
            suffixes.push(host.as_str().to_string());
        }
        providers.push(ProviderRule {
            name: p.name.unwrap_or_else(|| id.clone()),
            id,
            suffixes,
        });
    }
    Ok(providers)
}

pub(super) fn validate(raw: RawConfig, path: &Path) -> Result<Config, ConfigError> {
    let ctx = Ctx { path };
    let inputs = Inputs::gather(&raw, &ctx);
    // Secrets only `run` needs: the other commands work without them.
    let mut secret_problems = Vec::new();

    let concurrency = raw.concurrency.unwrap_or(256);
    if concurrency == 0 {
        return Err(ctx.err("concurrency".into(), "must be at least 1".into()));
    }
    let timeout = positive(
        &ctx,
        "timeout".into(),
        raw.timeout.map_or(Duration::from_secs(5), |d| d.0),
    )?;
    let fast_recheck = positive(
        &ctx,
        "fast_recheck".into(),
        raw.fast_recheck.map_or(Duration::from_secs(60), |d| d.0),
    )?;
    let api_limits = api_limits(&ctx, &raw)?;
    let upstreams = upstreams(&ctx, raw.upstreams)?;
    let anomaly = anomaly_params(&ctx, raw.anomaly)?;
    let alerts = alert_targets(&ctx, &inputs, raw.alerts, &mut secret_problems)?;
    let forward =
        super::forward::forward_targets(&ctx, &inputs, raw.forward, &mut secret_problems)?;
    let undo_targets = super::undo::undo_targets(&ctx, &inputs, raw.undo, &mut secret_problems)?;
    let passive_dns = passive_dns(&ctx, &inputs, &raw.passive_dns, &mut secret_problems)?;
    let auto_watch = raw.auto_watch.map(auto_watch);
    if let Some(level) = &raw.log_level {
        tracing_subscriber::EnvFilter::try_new(level)
            .map_err(|e| ctx.err("log_level".into(), format!("{level:?}: {e}")))?;
    }
    let providers = provider_rules(&ctx, raw.providers)?;
    let table = Providers::new(&providers);
    let (domains, duplicates_merged) =
        watched_domains(&ctx, &inputs, raw.domains, raw.domains_file, &table)?;
    let listen = listen(&ctx, raw.listen.as_deref())?;
    let api_token = api_token(&ctx, &inputs, raw.api_token_file, &mut secret_problems);
    let sns_trust = match &raw.sns_trust_anchors_file {
        None => crate::sns::Trust::public(),
        Some(f) => {
            let path = ctx.relative(f.clone());
            let field = || "sns_trust_anchors_file".to_string();
            let pem = std::fs::read(&path)
                .map_err(|e| ctx.err(field(), format!("{}: {e}", path.display())))?;
            crate::sns::Trust::from_pem(&pem)
                .map_err(|e| ctx.err(field(), format!("{}: {e}", path.display())))?
        }
    };
    let bounce_times = bounce_times(raw.bounce_times.unwrap_or_default());

    Ok(Config {
        listen,
        api_token,
        secret_problems,
        anomaly,
        bounce_times,
        api_limits,
        sns_subscribe_allow: raw.sns_subscribe_allow,
        sns_verify_signatures: raw.sns_verify_signatures.unwrap_or(true),
        sns_topics: raw.sns_topics,
        sns_signing_cert_base: raw.sns_signing_cert_base,
        sns_trust,
        alerts,
        forward,
        undo: undo_targets,
        passive_dns,
        auto_watch,
        digest: raw.digest,
        log_level: raw.log_level,
        source: path.to_path_buf(),
        database: ctx.relative(raw.database.unwrap_or_else(|| PathBuf::from("mxwatch.db"))),
        schedule: match raw.schedule {
            Some(s) => s,
            None => Schedule::parse(Config::DEFAULT_SCHEDULE).expect("default schedule parses"),
        },
        upstreams,
        timeout,
        concurrency,
        rate_limit: raw.rate_limit.unwrap_or(0),
        fast_recheck,
        grace: raw.grace.map(|d| d.0).unwrap_or(Duration::from_secs(3600)),
        settle: raw
            .settle
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(72 * 3600)),
        authoritative_port: raw.authoritative_port.unwrap_or(53),
        providers,
        domains,
        duplicates_merged,
    })
}

/// The API's connection limits, and the SNS URLs it may fetch.
fn api_limits(ctx: &Ctx, raw: &RawConfig) -> Result<ApiLimits, ConfigError> {
    for (i, prefix) in raw.sns_subscribe_allow.iter().enumerate() {
        http_url(ctx, format!("sns_subscribe_allow[{i}]"), prefix)?;
    }
    if let Some(base) = &raw.sns_signing_cert_base {
        http_url(ctx, "sns_signing_cert_base".into(), base)?;
    }
    let max_connections = match raw.api_max_connections {
        Some(0) => {
            let why = "must be at least 1".into();
            return Err(ctx.err("api_max_connections".into(), why));
        }
        Some(n) => n,
        None => ApiLimits::default().max_connections,
    };
    let max_per_peer = match raw.api_max_connections_per_peer {
        Some(0) => {
            let why = "must be at least 1".into();
            return Err(ctx.err("api_max_connections_per_peer".into(), why));
        }
        Some(n) => n,
        None => ApiLimits::default().max_per_peer,
    };
    // At least one body of the largest size must fit, and the figure must
    // stay a figure of bytes.
    let least = (crate::config::BODY_LIMIT as u64 * crate::config::BODY_CHARGE) >> 20;
    let body_memory = match raw.api_body_memory_mib {
        Some(mib) if mib < least || mib > 1 << 30 => {
            let why = format!(
                "must be between {least} (one {} MiB body, charged {} times its size) and {}",
                crate::config::BODY_LIMIT >> 20,
                crate::config::BODY_CHARGE,
                1u64 << 30
            );
            return Err(ctx.err("api_body_memory_mib".into(), why));
        }
        Some(mib) => mib << 20,
        None => ApiLimits::default().body_memory,
    };
    Ok(ApiLimits {
        max_connections,
        max_per_peer,
        body_memory,
        ..ApiLimits::default()
    })
}

/// The dates a bounce may claim, the defaults filled in.
fn bounce_times(t: RawBounceTimes) -> crate::bounce::TimeRange {
    let d = crate::bounce::TimeRange::default();
    crate::bounce::TimeRange {
        max_age: t.max_age.map_or(d.max_age, |x| x.0),
        max_ahead: t.max_ahead.map_or(d.max_ahead, |x| x.0),
    }
}

/// `auto_watch:`, the defaults filled in.
fn auto_watch(a: RawAutoWatch) -> crate::autowatch::Settings {
    let d = crate::autowatch::Settings::default();
    crate::autowatch::Settings {
        keep: a.keep.map_or(d.keep, |k| k.0),
        max_domains: a.max_domains.unwrap_or(d.max_domains),
    }
}

/// Where the API listens: 127.0.0.1:8025 unless told, or `off`.
fn listen(ctx: &Ctx, raw: Option<&str>) -> Result<Option<std::net::SocketAddr>, ConfigError> {
    match raw.map(str::trim) {
        None => Ok(Some(std::net::SocketAddr::from(([127, 0, 0, 1], 8025)))),
        Some("off") => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            ctx.err(
                "listen".into(),
                format!("{v:?} is not IP:port (e.g. 127.0.0.1:8025) or `off`"),
            )
        }),
    }
}
