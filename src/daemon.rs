//! The daemon: a monitor on the schedule, the API, the alert workers and
//! the ticks, assembled from the watchlist and stopped together.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

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
    api_task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    api_stop: Option<tokio::sync::oneshot::Sender<()>>,
    reload: mpsc::Sender<Vec<Job>>,
    task: tokio::task::JoinHandle<()>,
    /// Closes anomaly windows once their bounces stop.
    tick_task: tokio::task::JoinHandle<()>,
    /// Alert delivery, one worker per webhook target (restarted on reload).
    alerts: tokio::sync::Mutex<Option<crate::alerts::Workers>>,
    clock: Arc<dyn Clock>,
    model: Arc<store::Model>,
    writer_task: tokio::task::JoinHandle<()>,
}

/// How often the daemon lets anomaly windows close.
const TICK: Duration = Duration::from_secs(60);
/// Every this many ticks (five minutes, the default schedule's interval)
/// the daemon logs what its checks found.
const SUMMARY_TICKS: u64 = 5;

/// Every minute: anomalies whose bounces stopped close; every five, a
/// summary line. Ends when the writer is gone.
async fn ticks(m: Arc<Monitor>, clock: Arc<dyn Clock>) {
    let mut ticks = 0u64;
    loop {
        tokio::time::sleep(TICK).await;
        if m.writer.tick(clock.now()).await.is_err() {
            return;
        }
        ticks += 1;
        if ticks.is_multiple_of(SUMMARY_TICKS) {
            log_summary(&m);
        }
    }
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
        {
            // Windows of domains that left the watchlist while we were away.
            let (m, c) = (monitor.clone(), config.clone());
            tokio::spawn(async move {
                if let Err(e) = m.watch(&c.watchlist()).await {
                    tracing::error!("closing the windows of domains no longer watched: {e}");
                }
            });
        }
        let (reload, reload_rx) = mpsc::channel(4);
        let opts = SchedulerOptions {
            concurrency: config.concurrency,
            fast_recheck: config.fast_recheck,
        };
        let jobs = jobs_of(config);
        tracing::info!(
            domains = jobs.len(),
            upstreams = ?monitor.upstream_labels(),
            database = %config.database.display(),
            "watching; checks are spread over each schedule interval"
        );
        let (api_addr, api_task, api_stop) = match config.listen {
            Some(addr) => {
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
                let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
                let task = tokio::spawn(crate::api::serve(listener, state, async move {
                    let _ = stopped.await;
                }));
                if bound.ip().is_loopback() {
                    tracing::info!(%bound, "API listening on loopback: reads are open, writes need the token");
                } else {
                    tracing::info!(
                        %bound,
                        "API listening on a public address: reads and writes need the token"
                    );
                }
                (Some(bound), Some(task), Some(stop))
            }
            None => (None, None, None),
        };
        let tick_task = tokio::spawn(ticks(monitor.clone(), clock.clone()));
        let alerts = crate::alerts::Workers::start(config.alerting(), &monitor.writer, &clock);
        let m = monitor.clone();
        let task = tokio::spawn(schedule::run(
            jobs,
            opts,
            clock.clone(),
            reload_rx,
            move |d: DomainName| {
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
            },
            shutdown,
        ));
        Ok(Daemon {
            monitor,
            api_addr,
            api_task,
            api_stop,
            reload,
            task,
            tick_task,
            alerts: tokio::sync::Mutex::new(Some(alerts)),
            clock: clock.clone(),
            model,
            writer_task,
        })
    }

    /// Applies a new watchlist: added domains are scheduled, removed ones
    /// stop (their history stays; their open windows close).
    pub async fn reload(&self, config: &Config) {
        if let Err(e) = self.monitor.watch(&config.watchlist()).await {
            tracing::error!("closing the windows of domains no longer watched: {e}");
        }
        let _ = self.reload.send(jobs_of(config)).await;
        let mut alerts = self.alerts.lock().await;
        if let Some(old) = alerts.take() {
            old.stop().await;
        }
        *alerts = Some(crate::alerts::Workers::start(
            config.alerting(),
            &self.monitor.writer,
            &self.clock,
        ));
    }

    /// The in-memory read model the API judges with.
    pub fn model(&self) -> Arc<store::Model> {
        self.model.clone()
    }

    /// Whether the daemon still works: the scheduler runs and the writer
    /// commits within `within`. The systemd watchdog is fed only then, so a
    /// hung scheduler or a stuck database gets the service restarted.
    pub async fn healthy(&self, within: Duration) -> bool {
        !self.task.is_finished()
            && tokio::time::timeout(within, self.monitor.writer.flush())
                .await
                .is_ok_and(|r| r.is_ok())
    }

    /// Waits for the scheduler to stop (after shutdown) and the writer to
    /// commit everything.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await?;
        if let Some(alerts) = self.alerts.lock().await.take() {
            alerts.stop().await;
        }
        let Daemon {
            monitor,
            writer_task,
            reload,
            api_task,
            api_stop,
            tick_task,
            ..
        } = self;
        tick_task.abort();
        let _ = tick_task.await;
        if let Some(stop) = api_stop {
            let _ = stop.send(());
        }
        if let Some(task) = api_task {
            task.await??;
        }
        // A request cut off by the API's drain limit may still hold a
        // writer handle: close the writer rather than wait for the handles.
        monitor.writer.close().await?;
        drop((monitor, reload));
        writer_task.await?;
        Ok(())
    }
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
