//! `run` as a daemon: systemd's notifications, SIGHUP's reload and the
//! log (whose level a reload may change).

use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

use mxwatch::clock::Clock;
use mxwatch::config::Config;
use mxwatch::daemon::{Daemon, Reloaded};

use super::{Context, LogFormat, output};

/// The daemon under systemd (or in a terminal): READY once the database is
/// open and the API listens; SIGHUP reloads the watchlist (a broken one is
/// logged and the old one stays); watchdog pings while the scheduler and the
/// writer work; STOPPING on SIGTERM/SIGINT, then in-flight work commits.
pub(super) async fn serve(
    cli: &Context,
    config: Config,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<ExitCode> {
    use sd_notify::NotifyState;
    use tokio::signal::unix::{SignalKind, signal};
    let signalled = shutdown_signal();
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    let stop = tokio_util::sync::CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        signalled.await;
        let _ = sd_notify::notify(&[NotifyState::Stopping]);
        on_signal.cancel();
    });
    let daemon = Daemon::start(&config, clock, stop.clone().cancelled_owned())?;
    let _ = sd_notify::notify(&[
        NotifyState::Ready,
        NotifyState::Status(&format!("watching {} domains", config.domains.len())),
    ]);
    let watchdog = sd_notify::watchdog_enabled();
    loop {
        let ping = watchdog.map_or(std::time::Duration::from_secs(3600), |d| d / 2);
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = hup.recv() => {
                let _ = sd_notify::notify(&[NotifyState::Reloading, NotifyState::monotonic_usec_now()?]);
                let status = match cli.load().and_then(|c| Ok(c.require_secrets()?)) {
                    Ok(new) => {
                        let mut done = daemon.reload(&new).await;
                        relevel(&new, &mut done);
                        say_reloaded(&new, &done)
                    }
                    Err(e) => {
                        tracing::error!("SIGHUP: the new watchlist is refused, the old one stays in force: {e:#}");
                        "the new watchlist is refused (see the log)".to_string()
                    }
                };
                let _ = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
            }
            _ = tokio::time::sleep(ping), if watchdog.is_some() => {
                if daemon.healthy(ping).await {
                    let _ = sd_notify::notify(&[NotifyState::Watchdog]);
                } else {
                    tracing::error!("the scheduler or the database writer does not respond: not feeding the watchdog");
                }
            }
        }
    }
    daemon.wait().await?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Logs what a reload did, and returns the status for systemd: what was
/// applied at INFO, what takes a restart or failed at WARN/ERROR, each
/// by name. Nothing is said to be applied that was not.
fn say_reloaded(new: &Config, done: &Reloaded) -> String {
    let domains = new.domains.len();
    if done.applied.is_empty() {
        tracing::info!(
            domains,
            "SIGHUP: watchlist read again; nothing that applies in place changed"
        );
    } else {
        tracing::info!(domains, "SIGHUP: applied {}", done.applied.join(", "));
    }
    for (name, why) in &done.failed {
        tracing::error!("SIGHUP: {name} not applied, the old value stays in force: {why}");
    }
    let mut status = format!("watching {domains} domains");
    if !done.restart.is_empty() {
        let names = done.restart.join(", ");
        let takes = if done.restart.len() == 1 {
            "takes"
        } else {
            "take"
        };
        tracing::warn!(
            "SIGHUP: {names} changed but {takes} a restart (`systemctl restart mxwatch`); \
             until then the old values stay in force"
        );
        status = format!("{status}; {names} {takes} a restart");
    }
    if !done.failed.is_empty() {
        let names: Vec<_> = done.failed.iter().map(|(n, _)| *n).collect();
        status = format!("{status}; {} not applied (see the log)", names.join(", "));
    }
    status
}

/// Applies a reload's `log_level`, when it changed: RUST_LOG, when set,
/// wins over it (as at start), and that is said.
fn relevel(new: &Config, done: &mut Reloaded) {
    let Some(i) = done.applied.iter().position(|n| *n == "log_level") else {
        return;
    };
    let why = if std::env::var_os("RUST_LOG").is_some() {
        Some("RUST_LOG is set and wins over it".to_string())
    } else {
        let filter = new.log_level.as_deref().unwrap_or(DEFAULT_LEVEL);
        match (LEVEL.get(), tracing_subscriber::EnvFilter::try_new(filter)) {
            (Some(set), Ok(f)) => set(f).err(),
            (None, _) => Some("the log was set up without a reloadable level".into()),
            (_, Err(e)) => Some(e.to_string()),
        }
    };
    if let Some(why) = why {
        done.applied.remove(i);
        done.failed.push(("log_level", why));
    }
}

/// The level when neither RUST_LOG nor the watchlist gives one.
const DEFAULT_LEVEL: &str = "info,hickory=warn";

type SetLevel = Box<dyn Fn(tracing_subscriber::EnvFilter) -> Result<(), String> + Send + Sync>;

/// Changes the log's level (set by [`init_logging`]).
static LEVEL: OnceLock<SetLevel> = OnceLock::new();

pub(super) fn init_logging(format: LogFormat, config_level: Option<String>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        config_level
            .and_then(|l| tracing_subscriber::EnvFilter::try_new(l).ok())
            .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(DEFAULT_LEVEL))
    });
    // Colours only on a terminal: journald and log files get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    output::json_lines(matches!(format, LogFormat::Json));
    macro_rules! install {
        ($builder:expr) => {{
            let b = $builder.with_filter_reloading();
            let handle = b.reload_handle();
            let _ = LEVEL.set(Box::new(move |f| {
                handle.reload(f).map_err(|e| e.to_string())
            }));
            b.init()
        }};
    }
    match format {
        LogFormat::Human => install!(builder),
        LogFormat::Json => install!(builder.json()),
    }
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed at the call,
/// not at the first poll, so a signal that comes early is not lost to the
/// default action (killing the process mid-write).
pub(super) fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    async move {
        tokio::select! {
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        }
    }
}
