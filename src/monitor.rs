//! One check end to end, and sweeps of many.
//!
//! A check resolves a domain on every upstream, lets `detect` compare the
//! answers with the domain's memory, and hands the result to the store's
//! writer; it is reported (to subscribers and the scheduler) only once
//! committed. The [`Monitor`] holds what the detector remembers per domain;
//! `daemon` wires it to the scheduler, the API and shutdown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};
use tokio::sync::broadcast;

use crate::clock::Clock;
use crate::detect::{self, ChangeKind, DomainState, Params, Severity, WindowEvent, WindowStatus};
use crate::dns::Observation;
use crate::domain::DomainName;
use crate::health::{Health, Trust};
use crate::provider::Providers;
use crate::resolve::{MxResolver, ResolveOptions, Upstream};
use crate::store::{self, CheckRecord, StoreError, Writer};

mod sweep;
pub use sweep::{SweepSummary, sweep};

/// What subscribers hear after each committed check.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckEvent {
    pub domain: DomainName,
    pub at: DateTime<Utc>,
    pub observations: Vec<Observation>,
    pub changes: Vec<ChangeKind>,
    pub window: Option<(WindowEvent, WindowStatus)>,
    pub fast_recheck: bool,
    /// The answer was held: it may be our resolver's, not the domain's.
    pub held: bool,
}

/// The per-domain facts a check needs from the config.
#[derive(Debug, Clone, Default)]
struct Watch {
    expect: Vec<String>,
}

/// A watched domain: its name, the providers it is expected at, and
/// whether the watchlist lists it (else it is auto-watched: anyone who can
/// make it bounce can make us watch it).
#[derive(Debug, Clone, PartialEq)]
pub struct Watched {
    pub name: DomainName,
    pub expect: Vec<String>,
    pub listed: bool,
}

pub struct Monitor {
    /// What a check asks with and judges by; a reload swaps it whole
    /// ([`Monitor::retune`]), a check in flight keeps the one it began with.
    tuning: RwLock<Arc<Tuning>>,
    pub(crate) writer: Writer,
    clock: Arc<dyn Clock>,
    states: Mutex<HashMap<DomainName, DomainState>>,
    watched: RwLock<HashMap<DomainName, Watch>>,
    health: Mutex<Health>,
    events: broadcast::Sender<CheckEvent>,
    /// Counters of checks and changes; shared with the API's `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// What happened since the daemon's last summary line.
    tally: Mutex<SweepSummary>,
    /// What happened since the monitor started (never reset).
    since_start: Mutex<SweepSummary>,
    /// Domains whose answer is held now: the hold is logged when it starts
    /// and when it ends, not at every fast re-check.
    holding: Mutex<std::collections::HashSet<DomainName>>,
    /// This process's right to monitor the database, released on drop.
    _lock: store::MonitorLock,
}

/// Whether a domain has a known-good history: a believed answer other than
/// NXDOMAIN (only such domains vote on our resolver's health; see
/// `health::Electorate`).
fn known_good(state: &DomainState) -> bool {
    state
        .baseline
        .as_ref()
        .is_some_and(|b| b.answer != crate::dns::Answer::NxDomain)
}

/// The detector state without `last_seen`, which moves on every check and is
/// recovered from the runs on start: persisting it would rewrite every
/// domain's row on every check.
fn differs_beyond_last_seen(a: &DomainState, b: &DomainState) -> bool {
    let strip = |s: &DomainState| {
        let mut s = s.clone();
        if let Some(base) = s.baseline.as_mut() {
            base.last_seen = base.since;
            base.ttl = None;
        }
        s
    };
    strip(a) != strip(b)
}

/// The settings a check runs with.
struct Tuning {
    /// `None` when replaying recorded observations: nothing is asked.
    resolver: Option<MxResolver>,
    providers: Providers,
    params: Params,
}

/// What a monitor needs from the watchlist; `config` composes it
/// (`Config::monitoring`).
#[derive(Debug, Clone)]
pub struct Setup {
    pub upstreams: Vec<Upstream>,
    pub resolve: ResolveOptions,
    pub providers: Providers,
    pub params: Params,
    /// The watched domains, each with the provider ids it is expected to
    /// use (empty: any).
    pub watchlist: Vec<Watched>,
}

impl Monitor {
    /// Builds a monitor over an open writer, with the detector states that
    /// the database remembers (domains, and a resolver outage left open).
    pub fn new(
        config: &Setup,
        writer: Writer,
        memory: store::Memory,
        clock: Arc<dyn Clock>,
        lock: store::MonitorLock,
    ) -> Result<Arc<Monitor>, anyhow::Error> {
        let resolver = MxResolver::new(&config.upstreams, &config.resolve)
            .map_err(|e| anyhow::anyhow!("cannot set up the resolvers: {e}"))?;
        Ok(Self::build(
            config,
            Some(resolver),
            writer,
            memory,
            clock,
            lock,
        ))
    }

    /// A monitor that asks nothing: its checks are recorded observations
    /// handed to [`Monitor::record`] (replay).
    pub fn recorded(
        config: &Setup,
        writer: Writer,
        memory: store::Memory,
        clock: Arc<dyn Clock>,
        lock: store::MonitorLock,
    ) -> Arc<Monitor> {
        Self::build(config, None, writer, memory, clock, lock)
    }

    fn build(
        config: &Setup,
        resolver: Option<MxResolver>,
        writer: Writer,
        memory: store::Memory,
        clock: Arc<dyn Clock>,
        lock: store::MonitorLock,
    ) -> Arc<Monitor> {
        let (events, _) = broadcast::channel(4096);
        let mut health = Health::new(config.watchlist.len());
        if let Some(since) = memory.outage_since {
            tracing::warn!(
                since = %crate::event::time(since),
                "a resolver outage was open when mxwatch last stopped; it ends once resolution works"
            );
            health.outage.adopt(since);
        }
        let monitor = Arc::new(Monitor {
            tuning: RwLock::new(Arc::new(Tuning {
                resolver,
                providers: config.providers.clone(),
                params: config.params,
            })),
            writer,
            clock,
            states: Mutex::new(memory.states),
            watched: RwLock::new(HashMap::new()),
            health: Mutex::new(health),
            events,
            metrics: Arc::new(crate::metrics::Metrics::new()),
            tally: Mutex::new(SweepSummary::default()),
            since_start: Mutex::new(SweepSummary::default()),
            holding: Mutex::new(std::collections::HashSet::new()),
            _lock: lock,
        });
        monitor.set_watchlist(&config.watchlist);
        // Who has a known-good history is known from the store, not only
        // from this process's checks.
        {
            let states = monitor.states.lock().expect("state lock");
            let mut health = monitor.health.lock().expect("health lock");
            for (d, state) in states.iter() {
                health.known(d.as_str(), known_good(state));
            }
        }
        monitor
    }

    /// Adopts a (re)loaded watchlist: expectations, and the resolver health
    /// detector's scale (it needs at least 3 domains to tell our resolver's
    /// failure from theirs).
    pub fn set_watchlist(&self, watchlist: &[Watched]) {
        let map: HashMap<DomainName, Watch> = watchlist
            .iter()
            .map(|w| {
                (
                    w.name.clone(),
                    Watch {
                        expect: w.expect.clone(),
                    },
                )
            })
            .collect();
        *self.watched.write().expect("watchlist lock") = map;
        let mut health = self.health.lock().expect("health lock");
        let listed = watchlist
            .iter()
            .filter(|w| w.listed)
            .map(|w| w.name.as_str());
        let auto = watchlist
            .iter()
            .filter(|w| !w.listed)
            .map(|w| w.name.as_str());
        health.watch(listed, auto);
    }

    /// Whether `d`'s MX-change window is open (or closing): its incident is
    /// not over, so it stays watched whatever the watchlist or the
    /// auto-watch cap say.
    pub fn window_open(&self, d: &DomainName) -> bool {
        self.states
            .lock()
            .expect("state lock")
            .get(d)
            .is_some_and(|s| s.window.is_some())
    }

    /// `list`, and every domain it lacks whose window is still open (it
    /// left the watchlist, or auto-watch let it go, during its incident):
    /// such a domain stays watched until its own DNS closes the window.
    pub fn with_lingering(&self, mut list: Vec<Watched>) -> Vec<Watched> {
        let names: std::collections::HashSet<DomainName> =
            list.iter().map(|w| w.name.clone()).collect();
        let mut lingering: Vec<DomainName> = self
            .states
            .lock()
            .expect("state lock")
            .iter()
            .filter(|(d, s)| s.window.is_some() && !names.contains(*d))
            .map(|(d, _)| d.clone())
            .collect();
        lingering.sort();
        for d in &lingering {
            tracing::debug!(
                domain = %d,
                "still watched: no longer listed or auto-watched, but its window is open"
            );
        }
        list.extend(lingering.into_iter().map(|name| Watched {
            name,
            expect: Vec::new(),
            listed: false,
        }));
        list
    }

    /// Adopts the watchlist and closes the windows of domains no longer on
    /// it (no window stays open without a check to end it). Callers pass
    /// it through [`Monitor::with_lingering`] first, so that no window
    /// closes for a reason that says nothing about its domain's DNS.
    pub async fn watch(&self, watchlist: &[Watched]) -> Result<(), StoreError> {
        self.set_watchlist(watchlist);
        let names: std::collections::HashSet<DomainName> =
            watchlist.iter().map(|w| w.name.clone()).collect();
        self.states
            .lock()
            .expect("state lock")
            .retain(|d, _| names.contains(d));
        self.writer.watched(names, self.clock.now()).await
    }

    /// What happened since the last call, for the daemon's summary line.
    pub fn take_tally(&self) -> SweepSummary {
        std::mem::take(&mut *self.tally.lock().expect("tally lock"))
    }

    /// What happened since the monitor started.
    pub fn since_start(&self) -> SweepSummary {
        self.since_start.lock().expect("tally lock").clone()
    }

    /// Whether our resolver is in an outage now.
    pub fn in_outage(&self) -> bool {
        self.health
            .lock()
            .expect("health lock")
            .outage
            .since
            .is_some()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<CheckEvent> {
        self.events.subscribe()
    }

    /// Adopts a reloaded watchlist's upstreams, resolver options, provider
    /// table and detector parameters (and its domains' expectations): the
    /// checks that start from now on use them. A replaying monitor keeps
    /// asking nothing. On error (the new upstreams cannot be set up) the
    /// old settings stay.
    pub fn retune(&self, config: &Setup) -> Result<(), anyhow::Error> {
        let asks = self.tuning().resolver.is_some();
        let resolver = if asks {
            Some(
                MxResolver::new(&config.upstreams, &config.resolve)
                    .map_err(|e| anyhow::anyhow!("cannot set up the resolvers: {e}"))?,
            )
        } else {
            None
        };
        *self.tuning.write().expect("tuning lock") = Arc::new(Tuning {
            resolver,
            providers: config.providers.clone(),
            params: config.params,
        });
        Ok(())
    }

    fn tuning(&self) -> Arc<Tuning> {
        self.tuning.read().expect("tuning lock").clone()
    }

    pub fn upstream_labels(&self) -> Vec<String> {
        self.tuning()
            .resolver
            .as_ref()
            .map(|r| r.labels())
            .unwrap_or_default()
    }

    /// Checks one domain now. Returns once the result is committed.
    pub async fn check(&self, domain: &DomainName) -> Result<CheckEvent, StoreError> {
        let observations = match &self.tuning().resolver {
            Some(r) => r.observe(domain).await,
            None => vec![Observation::failure(
                "recorded",
                crate::dns::Outcome::Error,
                "a replaying monitor asks nothing",
            )],
        };
        let at = self.clock.now();
        self.record(domain, at, observations).await
    }

    /// Applies what the upstreams answered for `domain` at `at` (a live
    /// check, or a recorded one in a replay): our resolver's health, the
    /// domain's detector, the writer. Returns once committed.
    pub async fn record(
        &self,
        domain: &DomainName,
        at: DateTime<Utc>,
        observations: Vec<Observation>,
    ) -> Result<CheckEvent, StoreError> {
        if !observations.is_empty() && observations.iter().all(Observation::is_local_failure) {
            return Ok(self.not_asked(domain, at, observations));
        }
        let prev = self
            .states
            .lock()
            .expect("state lock")
            .get(domain)
            .cloned()
            .unwrap_or_default();
        let (trust, det) = self.detect(domain, &prev, &observations, at);
        let persist = differs_beyond_last_seen(&prev, &det.state);
        self.states
            .lock()
            .expect("state lock")
            .insert(domain.clone(), det.state.clone());

        let consensus = consensus_observation(&det.consensus, &observations, &trust);
        let held = matches!(trust, Trust::Hold(_));
        let outage = {
            let mut health = self.health.lock().expect("health lock");
            health.known(domain.as_str(), known_good(&det.state));
            health.record(domain.as_str(), at, held || det.consensus.answer.is_none())
        };
        let event = CheckEvent {
            domain: domain.clone(),
            at,
            observations: observations.clone(),
            changes: det.changes.iter().map(|c| c.kind).collect(),
            window: det.window.as_ref().map(|(e, w)| (*e, w.status)),
            fast_recheck: det.fast_recheck,
            held,
        };
        let (outcome, n_changes) = (consensus.outcome, det.changes.len());
        log_check(domain, &det.changes, &trust);
        log_window(domain, det.window.as_ref());
        self.log_hold(domain, &consensus, &trust);
        self.writer
            .check(CheckRecord {
                domain: domain.clone(),
                at,
                observations,
                consensus,
                changes: det.changes,
                window: det.window,
                state: persist.then_some(det.state),
                held,
            })
            .await?;
        self.metrics.check(outcome.as_str(), n_changes);
        self.tally.lock().expect("tally lock").count(&event);
        self.since_start.lock().expect("tally lock").count(&event);
        if let Some(ev) = outage {
            log_outage(ev);
            self.writer.outage(ev, at).await?;
        }
        let _ = self.events.send(event.clone());
        Ok(event)
    }
}

impl Monitor {
    /// Whether to believe what the upstreams said (our resolver's health),
    /// and what the domain's detector makes of it if so.
    fn detect(
        &self,
        domain: &DomainName,
        prev: &detect::DomainState,
        observations: &[Observation],
        at: DateTime<Utc>,
    ) -> (Trust, detect::Detection) {
        let tuning = self.tuning();
        let expect = self
            .watched
            .read()
            .expect("watchlist lock")
            .get(domain)
            .map(|w| w.expect.clone())
            .unwrap_or_default();
        let consensus = detect::consensus(observations);
        let trust = self.health.lock().expect("health lock").assess(
            domain.as_str(),
            prev.baseline.as_ref().map(|b| &b.answer),
            consensus.answer.as_ref(),
        );
        let det = match &trust {
            Trust::Believe => detect::detect(
                prev,
                observations,
                at,
                &expect,
                &tuning.providers,
                &tuning.params,
            ),
            // Nothing about the domain: no change, no baseline; soon again,
            // unless our resolver is known to be out (then its schedule will do).
            Trust::Hold(_) => detect::Detection {
                state: prev.clone(),
                consensus,
                changes: Vec::new(),
                window: None,
                fast_recheck: prev.window.is_some() || !self.in_outage(),
            },
        };
        (trust, det)
    }

    /// A hold starting is logged once, with what was seen and why it is
    /// held (bounces meanwhile are answered `transient`, with a caveat); so
    /// is its end.
    fn log_hold(&self, domain: &DomainName, consensus: &Observation, trust: &Trust) {
        let mut holding = self.holding.lock().expect("holding lock");
        match trust {
            Trust::Hold(why) if holding.insert(domain.clone()) => {
                let seen = if consensus.mx.is_empty() {
                    consensus.outcome.as_str().to_string()
                } else {
                    crate::dns::compact_mx(&consensus.mx)
                };
                tracing::info!(
                    domain = %domain,
                    "held: the answer ({seen}) departs from the baseline and is not believed \
                     until other domains show our resolver is sound ({why}); hard bounces \
                     meanwhile are answered `transient`"
                );
            }
            Trust::Believe if holding.remove(domain) => {
                tracing::info!(domain = %domain, "no longer held: the answer is believed");
            }
            _ => {}
        }
    }

    /// A check whose every question failed on our side (no socket: the
    /// descriptors ran out). That says nothing about the domain nor about
    /// the resolvers of the world: no detector, no outage count, nothing
    /// stored; the schedule asks again. Only the log and the metrics say.
    fn not_asked(
        &self,
        domain: &DomainName,
        at: DateTime<Utc>,
        observations: Vec<Observation>,
    ) -> CheckEvent {
        let why = observations[0].detail.clone().unwrap_or_default();
        // Per domain at debug: when descriptors run out, they run out for
        // every domain at once; the summaries say it once, at ERROR.
        tracing::debug!(%domain, "not checked: {why}; nothing recorded, the schedule asks again");
        self.metrics.check("local_error", 0);
        let event = CheckEvent {
            domain: domain.clone(),
            at,
            observations,
            changes: Vec::new(),
            window: None,
            fast_recheck: false,
            held: false,
        };
        self.tally.lock().expect("tally lock").count(&event);
        self.since_start.lock().expect("tally lock").count(&event);
        event
    }
}

/// The consensus as the `*` run stores it: the answer most upstreams gave
/// (with the reason when it is held, or their disagreement), else the
/// first failure.
fn consensus_observation(
    consensus: &detect::Consensus,
    observations: &[Observation],
    trust: &Trust,
) -> Observation {
    match &consensus.answer {
        Some(answer) => Observation {
            upstream: store::CONSENSUS.into(),
            outcome: answer.outcome(),
            mx: answer.mx().to_vec(),
            ttl: consensus.ttl,
            implicit_mx: observations
                .iter()
                .any(|o| o.answer().as_ref() == Some(answer) && o.implicit_mx),
            detail: match trust {
                Trust::Hold(why) => Some(why.clone()),
                Trust::Believe => consensus.disagreement.clone(),
            },
        },
        None => Observation {
            upstream: store::CONSENSUS.into(),
            ..observations.first().cloned().unwrap_or_else(|| {
                Observation::failure(store::CONSENSUS, crate::dns::Outcome::Error, "no upstreams")
            })
        },
    }
}

/// A window opening or closing is said, with why it closed.
fn log_window(domain: &DomainName, window: Option<&(WindowEvent, detect::LiveWindow)>) {
    match window {
        Some((WindowEvent::Opened, w)) => tracing::info!(
            domain = %domain,
            since = %crate::event::time(w.start),
            "window opened: hard bounces since then are answered `transient`"
        ),
        Some((WindowEvent::Closed, w)) => tracing::info!(
            domain = %domain,
            reason = w.close_reason.map_or("closed", |r| r.as_str()),
            "window closed: bounces after it are judged normally again"
        ),
        _ => {}
    }
}

/// Critical changes at WARN, the others at INFO, held answers at DEBUG.
fn log_check(domain: &DomainName, changes: &[detect::Change], trust: &Trust) {
    for c in changes {
        if c.severity == Severity::Critical {
            tracing::warn!(domain = %domain, kind = %c.kind, severity = %c.severity, "{}", c.detail);
        } else {
            tracing::info!(domain = %domain, kind = %c.kind, severity = %c.severity, "{}", c.detail);
        }
    }
    if let Trust::Hold(why) = trust {
        tracing::debug!(domain = %domain, "answer {why}");
    }
}

fn log_outage(ev: crate::health::OutageEvent) {
    match ev {
        crate::health::OutageEvent::Started(s) => tracing::error!(
            since = %crate::event::time(s),
            "most watched domains fail to resolve, or answer NXDOMAIN or one identical \
             answer, at once: our own resolver looks broken or is lying (captive portal, \
             broken forwarder, DNS filtering); their answers are held and every hard \
             bounce since then is answered `transient`. Check the upstreams in the watchlist"
        ),
        crate::health::OutageEvent::Ended { .. } => tracing::info!("resolution works again"),
    }
}
