//! `mxwatch run`: the daemon, or one sweep with `--once`.

use super::*;

/// `run --once`'s exit status when no domain answered (every answer
/// failed or was held as suspect): the sweep learnt nothing.
pub const NOTHING_LEARNT: u8 = 3;

pub fn run(cli: &Context) -> anyhow::Result<ExitCode> {
    let Command::Run { once } = &cli.command else {
        bail!("internal: `run::run` called for another command");
    };
    let config = cli.load()?.require_secrets()?;
    // Descriptors: as many as the hard limit allows (the soft limit
    // of 1,024 is a default for select(), which nothing here uses).
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!("open files limit: {n}"),
        Err(e) => tracing::warn!("cannot raise the open files limit: {e}"),
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let cli = &cli;
    runtime()?.block_on(async move {
            if *once {
                let (m, writer) = daemon::open_for_sweep(&config, clock)?;
                let list = m.with_lingering(config.watchlist());
                m.watch(&list).await?;
                let names: Vec<DomainName> = list.iter().map(|w| w.name.clone()).collect();
                // SIGINT/SIGTERM: no further check starts; those in flight commit.
                let stop = tokio_util::sync::CancellationToken::new();
                let stop_tx = stop.clone();
                let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
                tokio::spawn(async move {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => say!("mxwatch: SIGINT: stopping the sweep"),
                        _ = term.recv() => say!("mxwatch: SIGTERM: stopping the sweep"),
                    }
                    stop_tx.cancel();
                });
                let s = monitor::sweep(&m, &names, config.concurrency, &stop).await;
                drop(m);
                writer.await?;
                say!(
                    "checked {} domains: {} answered, {} failed on every upstream, {} held as suspect, {} not asked, {} changes, {} windows opened; history in {}",
                    s.checked,
                    s.answered,
                    s.failed,
                    s.held,
                    s.not_asked,
                    s.changes,
                    s.windows_opened,
                    config.database.display()
                );
                if s.not_asked > 0 {
                    say!(
                        "mxwatch: WARNING: {} of {} domains were not asked: no socket could be \
                         opened on our side (too many open files?); nothing was recorded for them. \
                         Raise the open files limit (ulimit -n, LimitNOFILE)",
                        s.not_asked, s.checked
                    );
                }
                if s.checked > s.not_asked && (s.failed + s.held) * 2 >= s.checked - s.not_asked {
                    say!(
                        "mxwatch: WARNING: {} of {} domains failed or gave answers held as suspect \
                         (NXDOMAIN or the same new answer for many names): our own resolver looks broken \
                         or is lying (captive portal, DNS filtering); nothing was learnt from those answers. \
                         Check the upstreams in {}",
                        s.failed + s.held,
                        s.checked,
                        config.source.display()
                    );
                }
                if s.stopped {
                    say!(
                        "mxwatch: stopped before the sweep ended: {} of {} domains checked",
                        s.checked,
                        names.len()
                    );
                }
                if s.not_recorded > 0 || s.stopped {
                    return Ok(ExitCode::FAILURE);
                }
                if s.checked > 0 && s.answered == 0 {
                    say!(
                        "mxwatch: the sweep learnt nothing: every answer failed or was held as suspect \
                         (exit status {NOTHING_LEARNT})"
                    );
                    return Ok(ExitCode::from(NOTHING_LEARNT));
                }
                return Ok(ExitCode::SUCCESS);
            }
            super::serve::serve(cli, config, clock).await
        })
}
