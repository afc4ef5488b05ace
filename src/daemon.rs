//! The daemon: a monitor on the schedule, the API, the alert workers and
//! the ticks, assembled from the watchlist and stopped together: every
//! task runs in one [`TaskTracker`] and stops on one [`CancellationToken`];
//! the writer, which they all write through, is closed last.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod reload;
mod watching;
pub use reload::{NEEDS_RESTART, NOT_SETTINGS, Reloaded, SETTINGS, changed};
use reload::{auto_watched, scheduler_options};
use watching::{Watching, spawn_auto_watch};

use crate::clock::Clock;
use crate::config::Config;
use crate::domain::DomainName;
use crate::monitor::Monitor;
use crate::schedule::{self, Job, SchedulerOptions};
use crate::store::{self, Writer};

fn jobs_of(config: &Config) -> Vec<Job> {
    let mut shared: HashMap<&str, Arc<schedule::Schedule>> = HashMap::new();
    config
        .domains
        .iter()
        .map(|d| {
            let s = config.schedule_of(d);
            Job {
                name: d.name.clone(),
                schedule: shared
                    .entry(s.as_str())
                    .or_insert_with(|| Arc::new(s.clone()))
                    .clone(),
            }
        })
        .collect()
}

/// A running daemon: the monitor, and the means to reload and stop it.
pub struct Daemon {
    pub monitor: Arc<Monitor>,
    /// Where the HTTP API listens, when it does.
    pub api_addr: Option<std::net::SocketAddr>,
    /// Cancelled when the daemon is to stop.
    stop: CancellationToken,
    /// Every task but the writer's.
    tasks: TaskTracker,
    /// The scheduler (for [`Daemon::healthy`]) and the API (for its
    /// result), both also in `tasks`.
    scheduler: JoinHandle<()>,
    api: Option<JoinHandle<std::io::Result<()>>>,
    reload: mpsc::Sender<Vec<Job>>,
    /// The scheduler's concurrency and fast re-check (a reload changes them).
    options: tokio::sync::watch::Sender<SchedulerOptions>,
    watching: Arc<std::sync::Mutex<Watching>>,
    /// Stops the auto-watcher and its passive DNS lookups (to restart them
    /// with a reload's settings).
    auto_stop: std::sync::Mutex<Option<CancellationToken>>,
    /// The settings in force: the last reload's, but for those that take a
    /// restart ([`NEEDS_RESTART`]), which are the start's.
    in_force: std::sync::Mutex<Config>,
    /// Alert and forward delivery, one worker per target (restarted on
    /// reload).
    alerts: tokio::sync::Mutex<Vec<crate::delivery::Workers>>,
    /// The API's state (what its receivers announce changes on reload).
    api_state: Option<Arc<crate::api::ApiState>>,
    clock: Arc<dyn Clock>,
    model: Arc<store::Model>,
    writer_task: JoinHandle<()>,
}

/// How often the daemon lets anomaly windows close.
const TICK: Duration = Duration::from_secs(60);
/// Every this many ticks (five minutes, the default schedule's interval)
/// the daemon logs what its checks found.
const SUMMARY_TICKS: u64 = 5;

/// Every minute: anomalies whose bounces stopped close; every five, a
/// summary line. Ends when stopped or the writer is gone.
async fn ticks(m: Arc<Monitor>, clock: Arc<dyn Clock>, stop: CancellationToken) {
    let mut ticks = 0u64;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = stop.cancelled() => return,
        }
        if m.writer.tick(clock.now()).await.is_err() {
            return;
        }
        ticks += 1;
        log_first_run(&m, ticks);
        if ticks.is_multiple_of(SUMMARY_TICKS) {
            log_summary(&m);
        }
    }
}

/// A first run that goes on without one answer is said: after two
/// minutes, then with each summary, until a domain answers.
fn log_first_run(m: &Monitor, ticks: u64) {
    if let Some(line) = first_run_note(&m.since_start(), ticks) {
        tracing::warn!("{line}");
    }
}

/// What [`log_first_run`] says after `ticks` minutes of `s`, if anything.
fn first_run_note(s: &crate::monitor::SweepSummary, ticks: u64) -> Option<String> {
    if s.answered > 0 || !(ticks == 2 || ticks.is_multiple_of(SUMMARY_TICKS)) {
        return None;
    }
    Some(format!(
        "first run: after {} no domain has answered yet ({} checked: {} failed on every upstream, \
         {} held as suspect, {} not asked); until one does, nothing is learnt: check the upstreams",
        crate::event::plural(ticks as usize, "minute"),
        s.checked,
        s.failed,
        s.held,
        s.not_asked
    ))
}

fn log_summary(m: &Monitor) {
    let t = m.take_tally();
    let outage = if m.in_outage() {
        "; our resolver is in an outage"
    } else {
        ""
    };
    let line = format!(
        "last 5 minutes: {} checks, {} answered, {} failed on every upstream, {} held, \
         {} not asked (no socket on our side), {} changes, {} windows opened{outage}",
        t.checked, t.answered, t.failed, t.held, t.not_asked, t.changes, t.windows_opened
    );
    if t.not_asked > 0 {
        tracing::error!("{line}: raise the open files limit (LimitNOFILE)");
    } else if t.failed + t.held > t.answered {
        tracing::warn!("{line}: most checks failed or were held");
    } else {
        tracing::info!("{line}");
    }
}

impl Daemon {
    /// Opens the database, restores the detector's memory and starts the
    /// scheduler. It runs until `shutdown` resolves; then in-flight checks
    /// finish and are committed (see [`Daemon::wait`]).
    pub fn start(
        config: &Config,
        clock: Arc<dyn Clock>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<Daemon> {
        let lock = store::MonitorLock::acquire(&config.database)?;
        let memory = store::Store::open(&config.database)?.memory()?;
        let (writer, model, writer_task) =
            Writer::start_serving(&config.database, config.judging())?;
        let monitor = Monitor::new(&config.monitoring(), writer, memory, clock.clone(), lock)?;
        let mut watching = Watching::new(config);
        watching.auto = auto_watched(config)?;
        watching.listed(config);
        let watching = Arc::new(std::sync::Mutex::new(watching));
        let (stop, tasks) = (CancellationToken::new(), TaskTracker::new());
        {
            let stop = stop.clone();
            tasks.spawn(async move {
                tokio::select! {
                    _ = shutdown => stop.cancel(),
                    _ = stop.cancelled() => {}
                }
            });
        }
        {
            // Windows of domains that left the watchlist while we were away.
            let m = monitor.clone();
            let list = watching.lock().expect("watching lock").all_with(&m).1;
            tasks.spawn(async move {
                if let Err(e) = m.watch(&list).await {
                    tracing::error!("closing the windows of domains no longer watched: {e}");
                }
            });
        }
        // Before the API: a forward target starts before anything it is
        // announced.
        let alerts = delivery_workers(config, &monitor, &clock, &stop)?;
        let api = match config.listen {
            Some(addr) => Some(api(config, addr, &monitor, &model, &clock, &tasks, &stop)?),
            None => None,
        };
        tasks.spawn(ticks(monitor.clone(), clock.clone(), stop.clone()));
        let (reload, reload_rx) = mpsc::channel(4);
        let jobs = watching.lock().expect("watching lock").all_with(&monitor).0;
        let (options, options_rx) = tokio::sync::watch::channel(scheduler_options(config));
        let scheduler = tasks.spawn(scheduler(
            config,
            jobs,
            &monitor,
            &clock,
            (reload_rx, options_rx),
            &stop,
        ));
        let mut auto_stop = None;
        if config.auto_watch.is_some() || !config.passive_dns.is_empty() {
            let child = stop.child_token();
            auto_stop = Some(child.clone());
            spawn_auto_watch(
                config,
                &watching,
                &monitor,
                &reload,
                (clock.clone(), child),
                &tasks,
            );
        }
        Ok(Daemon {
            monitor,
            api_addr: api.as_ref().map(|(addr, ..)| *addr),
            api_state: api.as_ref().map(|(_, state, _)| state.clone()),
            stop,
            tasks,
            scheduler,
            api: api.map(|(.., task)| task),
            reload,
            options,
            watching,
            auto_stop: std::sync::Mutex::new(auto_stop),
            in_force: std::sync::Mutex::new(config.clone()),
            alerts: tokio::sync::Mutex::new(alerts),
            clock,
            model,
            writer_task,
        })
    }

    /// The in-memory read model the API judges with.
    pub fn model(&self) -> Arc<store::Model> {
        self.model.clone()
    }

    /// Whether the daemon still works: the scheduler runs and the writer
    /// commits within `within`. The systemd watchdog is fed only then, so a
    /// hung scheduler or a stuck database gets the service restarted.
    pub async fn healthy(&self, within: Duration) -> bool {
        !self.scheduler.is_finished()
            && tokio::time::timeout(within, self.monitor.writer.flush())
                .await
                .is_ok_and(|r| r.is_ok())
    }

    /// Waits for the daemon to be told to stop, for every task to finish
    /// (in-flight checks and alert attempts, the API's drain), and for the
    /// writer to commit everything.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.stop.cancelled().await;
        for w in std::mem::take(&mut *self.alerts.lock().await) {
            w.stop().await;
        }
        self.tasks.close();
        self.tasks.wait().await;
        let Daemon {
            monitor,
            writer_task,
            reload,
            api,
            scheduler,
            ..
        } = self;
        scheduler.await?;
        if let Some(api) = api {
            api.await??;
        }
        // A request cut off by the API's drain limit may still hold a
        // writer handle: close the writer rather than wait for the handles.
        monitor.writer.close().await?;
        drop((monitor, reload));
        writer_task.await?;
        Ok(())
    }
}

/// The alert, forward and undo workers, one per target. A target new to
/// the database starts after the outbox's newest event now: before the
/// receivers announce anything for it (the caller sets them after), and
/// with nothing lost between now and its worker's first look.
fn delivery_workers(
    config: &Config,
    monitor: &Monitor,
    clock: &Arc<dyn Clock>,
    stop: &CancellationToken,
) -> anyhow::Result<Vec<crate::delivery::Workers>> {
    let writer = &monitor.writer;
    let start_at = store::Store::open(&config.database)?.last_outbox_id()?;
    let from = || (Some(monitor.metrics.clone()), start_at);
    let db = &config.database;
    Ok(vec![
        crate::alerts::start(config.alerting(), writer, clock, start_at, stop),
        crate::forward::start(config.forwarding(), writer, clock, from(), stop),
        crate::undo::start(&config.undo, db, writer, clock, from(), stop),
    ])
}

/// The API's state and its server, until `stop`.
type Api = (
    std::net::SocketAddr,
    Arc<crate::api::ApiState>,
    JoinHandle<std::io::Result<()>>,
);

/// Binds the API's listener and serves it until `stop`.
fn api(
    config: &Config,
    addr: std::net::SocketAddr,
    monitor: &Monitor,
    model: &Arc<store::Model>,
    clock: &Arc<dyn Clock>,
    tasks: &TaskTracker,
    stop: &CancellationToken,
) -> anyhow::Result<Api> {
    let std_listener = std::net::TcpListener::bind(addr)
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for the API: {e}"))?;
    std_listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(std_listener)?;
    let bound = listener.local_addr()?;
    let state = Arc::new(crate::api::ApiState::new(
        config,
        monitor.writer.clone(),
        model.clone(),
        clock.clone(),
        monitor.metrics.clone(),
    ));
    let task = tasks.spawn(crate::api::serve(
        listener,
        state.clone(),
        stop.clone().cancelled_owned(),
    ));
    if config.api_token.is_none() {
        tracing::warn!(
            %bound,
            "no API token (api_token_file or MXWATCH_API_TOKEN): writes are refused \
             (POST /v1/bounces, the ESP webhooks); reads and verdicts work"
        );
    }
    if bound.ip().is_loopback() {
        tracing::info!(%bound, "API listening on loopback: reads are open, writes need the token");
    } else {
        tracing::info!(
            %bound,
            "API listening on a public address: reads and writes need the token"
        );
    }
    Ok((bound, state, task))
}

/// The scheduler over the watchlist's domains, each check through the
/// monitor, until `stop`.
fn scheduler(
    config: &Config,
    jobs: Vec<Job>,
    monitor: &Arc<Monitor>,
    clock: &Arc<dyn Clock>,
    (reload, opts): (
        mpsc::Receiver<Vec<Job>>,
        tokio::sync::watch::Receiver<SchedulerOptions>,
    ),
    stop: &CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    tracing::info!(
        domains = jobs.len(),
        upstreams = ?monitor.upstream_labels(),
        database = %config.database.display(),
        "watching; checks are spread over each schedule interval"
    );
    let m = monitor.clone();
    let check = move |d: DomainName| {
        let m = m.clone();
        async move {
            match m.check(&d).await {
                Ok(ev) => ev.fast_recheck,
                Err(e) => {
                    tracing::error!(domain = %d, "check not recorded: {e}");
                    false
                }
            }
        }
    };
    schedule::run(
        jobs,
        opts,
        clock.clone(),
        reload,
        check,
        stop.clone().cancelled_owned(),
    )
}

/// Opens what a sweep needs: returns the monitor and the writer task to
/// await after the monitor is dropped.
pub fn open_for_sweep(
    config: &Config,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<(Arc<Monitor>, tokio::task::JoinHandle<()>)> {
    let lock = store::MonitorLock::acquire(&config.database)?;
    let memory = store::Store::open(&config.database)?.memory()?;
    let (writer, thread) = Writer::start(&config.database, config.judging())?;
    Ok((
        Monitor::new(&config.monitoring(), writer, memory, clock, lock)?,
        thread,
    ))
}

#[cfg(test)]
mod first_run_tests {
    use super::*;

    #[test]
    fn a_first_run_without_an_answer_is_said_until_one_comes() {
        let mut s = crate::monitor::SweepSummary {
            checked: 40,
            failed: 40,
            ..Default::default()
        };
        assert_eq!(first_run_note(&s, 1), None, "a minute is no news");
        let said = first_run_note(&s, 2).unwrap();
        assert!(
            said.contains("after 2 minutes no domain has answered yet (40 checked: 40 failed"),
            "{said}"
        );
        assert_eq!(first_run_note(&s, 3), None);
        assert!(first_run_note(&s, 5).is_some(), "again with each summary");
        s.answered = 1;
        assert_eq!(first_run_note(&s, 5), None, "one answer is enough");
    }
}
