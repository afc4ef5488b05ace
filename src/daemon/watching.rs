//! What the daemon watches beyond the watchlist: the unlisted domains that
//! bounce (`auto_watch:`), and the passive DNS lookups for them.

use super::*;

/// What the daemon watches: the watchlist's domains, and the unlisted ones
/// that bounced (`auto_watch:`). A watchlist entry always wins.
pub(super) struct Watching {
    listed: Vec<Job>,
    watchlist: Vec<crate::monitor::Watched>,
    schedule: Arc<schedule::Schedule>,
    pub(super) auto: Option<crate::autowatch::AutoWatched>,
}

impl Watching {
    pub(super) fn new(config: &Config) -> Self {
        let mut w = Watching {
            listed: Vec::new(),
            watchlist: Vec::new(),
            schedule: Arc::new(config.schedule.clone()),
            auto: None,
        };
        w.listed(config);
        w
    }

    /// The watchlist is `config`'s: its domains leave the auto-watched.
    pub(super) fn listed(&mut self, config: &Config) {
        self.listed = jobs_of(config);
        self.watchlist = config.watchlist();
        self.schedule = Arc::new(config.schedule.clone());
        if let Some(auto) = &mut self.auto {
            for w in &self.watchlist {
                auto.forget(&w.name);
            }
        }
    }

    pub(super) fn is_listed(&self, d: &DomainName) -> bool {
        self.watchlist.iter().any(|w| w.name == *d)
    }

    /// Every domain watched (with those whose windows are still open,
    /// whatever the watchlist and the auto-watch cap say): its jobs, and
    /// what the monitor watches.
    pub(super) fn all_with(&self, monitor: &Monitor) -> (Vec<Job>, Vec<crate::monitor::Watched>) {
        let (mut jobs, list) = self.all();
        let list = monitor.with_lingering(list);
        for w in list.iter().skip(jobs.len()) {
            jobs.push(Job {
                name: w.name.clone(),
                schedule: self.schedule.clone(),
            });
        }
        (jobs, list)
    }

    /// Every domain listed or auto-watched: its jobs, and what the monitor
    /// watches.
    fn all(&self) -> (Vec<Job>, Vec<crate::monitor::Watched>) {
        let mut jobs = self.listed.clone();
        let mut list = self.watchlist.clone();
        for (d, _) in self.auto.iter().flat_map(|a| a.domains()) {
            jobs.push(Job {
                name: d.clone(),
                schedule: self.schedule.clone(),
            });
            list.push(crate::monitor::Watched {
                name: d.clone(),
                expect: Vec::new(),
                listed: false,
            });
        }
        (jobs, list)
    }
}

/// The auto-watcher, and the passive DNS lookups it asks for (when
/// providers are configured).
pub(super) fn spawn_auto_watch(
    config: &Config,
    watching: &Arc<std::sync::Mutex<Watching>>,
    monitor: &Arc<Monitor>,
    reload: &mpsc::Sender<Vec<Job>>,
    (clock, stop): (Arc<dyn Clock>, CancellationToken),
    tasks: &TaskTracker,
) {
    let (ask, asks) = mpsc::channel(PASSIVE_QUEUE);
    // Called when auto_watch: or passive_dns: is set.
    let ask = (!config.passive_dns.is_empty()).then_some(ask);
    if ask.is_some() {
        let (providers, writer) = (config.passive_dns.clone(), monitor.writer.clone());
        tasks.spawn(passive_lookups(
            asks,
            providers,
            writer,
            clock.clone(),
            stop.clone(),
        ));
    }
    // Bounces stored while no daemon ran are read too, as far back as one
    // would keep a domain watched (30 days without auto-watch).
    let reach = config
        .auto_watch
        .map_or(Duration::from_secs(30 * 86_400), |a| a.keep);
    // New domains are checked by a task of their own: reading the feed
    // never waits for a slow check (3,000 black-holed domains held it for
    // fifteen minutes).
    let (check, checks) = mpsc::channel(CHECK_QUEUE);
    tasks.spawn(check_added(monitor.clone(), checks, stop.clone()));
    tasks.spawn(auto_watch(
        watching.clone(),
        monitor.clone(),
        (config.database.clone(), reach),
        (reload.clone(), ask, check),
        clock,
        stop,
    ));
}

/// New domains waiting for their first check, at most; past it a domain
/// waits for its scheduled check instead.
const CHECK_QUEUE: usize = 10_000;

/// How often the auto-watcher looks at the bounces stored since it last did.
const AUTO_WATCH_EVERY: Duration = Duration::from_secs(2);
/// How many bounces it reads at a time.
const AUTO_WATCH_PAGE: usize = 50_000;
/// How many new domains it checks at once.
const AUTO_WATCH_CHECKS: usize = 16;

/// Follows the bounces stored (from any writer: the API, webhooks,
/// `bounces ingest` beside the daemon, or before it started: it goes on
/// from where it got to, oldest first, and never further back than
/// `reach` before now). With `auto_watch:`, each unlisted
/// domain is checked at once (so a bounce just before is judged by what the
/// DNS said then), then on the schedule until `keep` after its last
/// bounce; at the cap the least recently bounced goes. With `passive_dns:`,
/// every domain that bounces without any history is asked about (a burst
/// asks on its first bounce).
async fn auto_watch(
    watching: Arc<std::sync::Mutex<Watching>>,
    monitor: Arc<Monitor>,
    (database, reach): (std::path::PathBuf, Duration),
    (reload, ask, check): (
        mpsc::Sender<Vec<Job>>,
        Option<mpsc::Sender<DomainName>>,
        mpsc::Sender<DomainName>,
    ),
    clock: Arc<dyn Clock>,
    stop: CancellationToken,
) {
    let asking = ask.is_some();
    // One connection for the task's life, opened on first use.
    let conn: Arc<std::sync::Mutex<Option<store::Store>>> = Arc::default();
    let read = |after: Start| read_feed(database.clone(), conn.clone(), after, asking);
    let since = clock
        .now()
        .checked_sub_signed(chrono::Duration::from_std(reach).unwrap_or(chrono::Duration::MAX))
        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC);
    let mut cursor = match read(Start::Resume(since)).await {
        Ok(Ok((last, _, _))) => last,
        Ok(Err(e)) => return tracing::error!("auto-watch stopped: {e}"),
        Err(e) => return tracing::error!("auto-watch stopped: {e}"),
    };
    let mut behind = false;
    loop {
        // A full page read means more are waiting: no pause then.
        let pause = if behind {
            Duration::ZERO
        } else {
            AUTO_WATCH_EVERY
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.cancelled() => return,
        }
        let before = cursor;
        let domains = match read(Start::After(cursor)).await {
            Ok(Ok((last, domains, unknown))) => {
                cursor = last;
                behind = domains.len() == AUTO_WATCH_PAGE;
                if let Some(ask) = &ask {
                    // Passive DNS for the time before: a full queue drops
                    // the ask (the domain's next bounce asks again).
                    for d in unknown {
                        let _ = ask.try_send(d);
                    }
                }
                domains
            }
            Ok(Err(e)) => {
                tracing::error!("auto-watch: reading bounces: {e}");
                continue;
            }
            Err(e) => return tracing::error!("auto-watch stopped: {e}"),
        };
        let (kept, change, jobs, list) = note_bounces(&watching, &monitor, &domains, clock.now());
        if !change.waiting.is_empty() {
            tracing::warn!(
                waiting = change.waiting.len(),
                "auto-watch: max_domains reached and every watched domain has an open window: \
                 these wait until one closes (no window is closed to make room): {}",
                change
                    .waiting
                    .iter()
                    .take(10)
                    .map(DomainName::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if kept.is_empty() && change.dropped.is_empty() && cursor == before {
            continue;
        }
        if let Err(e) = monitor
            .writer
            .auto_watched(kept, change.dropped.clone(), cursor)
            .await
        {
            return tracing::error!("auto-watch stopped: {e}");
        }
        if change.added.is_empty() && change.dropped.is_empty() {
            continue;
        }
        tracing::info!(
            added = change.added.len(),
            dropped = change.dropped.len(),
            "auto-watch: domains that bounced without being listed"
        );
        if let Err(e) = monitor.watch(&list).await {
            tracing::error!("auto-watch: {e}");
        }
        let _ = reload.send(jobs).await;
        for d in change.added {
            // A full queue: the domain is checked on its schedule.
            let _ = check.try_send(d);
        }
    }
}

/// The bounced domains, noted: those kept (with their entries), what
/// changed, and then every watched domain's jobs and names.
#[allow(clippy::type_complexity)]
fn note_bounces(
    watching: &std::sync::Mutex<Watching>,
    monitor: &Monitor,
    domains: &[(String, Option<chrono::DateTime<chrono::Utc>>)],
    now: chrono::DateTime<chrono::Utc>,
) -> (
    Vec<(DomainName, crate::autowatch::Entry)>,
    crate::autowatch::Change,
    Vec<Job>,
    Vec<crate::monitor::Watched>,
) {
    let mut change = crate::autowatch::Change::default();
    let mut w = watching.lock().expect("watching lock");
    let mut touched = std::collections::BTreeSet::new();
    for (d, at) in domains {
        let Ok(d) = DomainName::parse(d) else {
            continue;
        };
        if w.is_listed(&d) {
            continue;
        }
        if let Some(auto) = &mut w.auto {
            // A past bounce keeps its domain `keep` after it, not after now.
            let at = at.map_or(now, |at| at.min(now));
            auto.bounced(&d, at, &mut change, &|d| monitor.window_open(d));
            touched.insert(d);
        }
    }
    if let Some(auto) = &mut w.auto {
        auto.expire(now, &mut change, &|d| monitor.window_open(d));
    }
    let auto = w.auto.as_ref();
    let kept = touched
        .into_iter()
        .filter_map(|d| auto.and_then(|a| a.get(&d)).map(|e| (d, e)))
        .collect();
    let (jobs, list) = w.all_with(monitor);
    (kept, change, jobs, list)
}

/// Domains waiting for a passive DNS lookup, at most.
const PASSIVE_QUEUE: usize = 10_000;
/// A domain is asked about again after this long at the earliest.
const PASSIVE_AGAIN: Duration = Duration::from_secs(7 * 86_400);

/// Asks the passive DNS providers about newly watched domains, off every
/// verdict's path: an answer is kept as an import is (its windows re-judge
/// what they cover). A spent quota pauses that provider for as long as it
/// asked; a domain is not asked about twice within a week.
async fn passive_lookups(
    mut asks: mpsc::Receiver<DomainName>,
    providers: Vec<crate::passive_dns::Provider>,
    writer: Writer,
    clock: Arc<dyn Clock>,
    stop: CancellationToken,
) {
    let http = crate::http_client();
    let mut asked: HashMap<DomainName, chrono::DateTime<chrono::Utc>> = HashMap::new();
    let mut paused: HashMap<crate::passive::PassiveSource, chrono::DateTime<chrono::Utc>> =
        HashMap::new();
    let mut budgets: HashMap<crate::passive::PassiveSource, crate::passive_dns::Budget> =
        HashMap::new();
    let again = chrono::Duration::from_std(PASSIVE_AGAIN).unwrap_or(chrono::Duration::MAX);
    loop {
        let d = tokio::select! {
            d = asks.recv() => match d { Some(d) => d, None => return },
            _ = stop.cancelled() => return,
        };
        let now = clock.now();
        if asked.get(&d).is_some_and(|t| now - *t < again) {
            continue;
        }
        if asked.len() >= 100_000 {
            asked.clear();
        }
        let (mut sightings, mut excursions) = (Vec::new(), Vec::new());
        for p in &providers {
            if paused.get(&p.source).is_some_and(|until| now < *until) {
                continue;
            }
            // Asked (or failed): not again within a week. A domain no
            // provider could be asked about is asked at its next bounce.
            asked.insert(d.clone(), now);
            let budget = budgets.entry(p.source).or_default();
            match crate::passive_dns::lookup(&http, p, &d, budget, now).await {
                Ok(read) => {
                    for (_, problem) in &read.problems {
                        tracing::warn!(domain = %d, "passive DNS ({}): {problem}", p.source);
                    }
                    excursions.extend(crate::passive::excursions(&read.sightings));
                    sightings.extend(read.sightings);
                }
                Err(crate::passive_dns::LookupError::Quota { provider, wait }) => {
                    tracing::warn!(
                        "passive DNS ({provider}): quota spent; pausing for {}",
                        crate::event::duration(wait)
                    );
                    let wait = chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
                    paused.insert(provider, now.checked_add_signed(wait).unwrap_or(now));
                }
                Err(e @ crate::passive_dns::LookupError::Budget { provider, until }) => {
                    tracing::warn!("passive DNS: {e}; not asking it until then");
                    paused.insert(provider, until);
                    asked.remove(&d);
                }
                Err(e) => tracing::warn!(domain = %d, "{e}"),
            }
        }
        if sightings.is_empty() {
            continue;
        }
        if let Err(e) = writer.passive(sightings, excursions, now).await {
            return tracing::error!("passive DNS lookups stopped: {e}");
        }
    }
}

/// Where [`read_feed`] reads from.
#[derive(Debug, Clone, Copy)]
enum Start {
    /// Where the last run got to, but no bounce dated before this: only
    /// the row to go on from is answered.
    Resume(chrono::DateTime<chrono::Utc>),
    After(i64),
}

/// A page of stored bounces: the last row read, each bounce's domain and
/// time, and (when asking passive DNS) the domains without any history.
type Page = (i64, store::BouncedDomains, Vec<DomainName>);

/// The bounces' domains stored after row `after` (for `Start::Resume`,
/// only the row to go on from), and, when `asking`, the domains among them
/// without any history.
async fn read_feed(
    db: std::path::PathBuf,
    conn: Arc<std::sync::Mutex<Option<store::Store>>>,
    after: Start,
    asking: bool,
) -> Result<Result<Page, store::StoreError>, tokio::task::JoinError> {
    tokio::task::spawn_blocking(move || {
        let mut guard = conn.lock().expect("feed connection lock");
        if guard.is_none() {
            *guard = Some(store::Store::open(&db)?);
        }
        let s = guard.as_ref().expect("opened above");
        let after = match after {
            Start::Resume(since) => {
                return Ok((s.feed_start("auto_watch", since)?, Vec::new(), Vec::new()));
            }
            Start::After(row) => row,
        };
        let (last, domains) = s.bounce_domains_after(after, AUTO_WATCH_PAGE)?;
        let mut unknown = Vec::new();
        if asking {
            let distinct: std::collections::BTreeSet<&String> =
                domains.iter().map(|(d, _)| d).collect();
            for d in distinct {
                if let Ok(name) = DomainName::parse(d)
                    && !s.has_history(&name)?
                {
                    unknown.push(name);
                }
            }
        }
        Ok((last, domains, unknown))
    })
    .await
}

/// Checks newly watched domains now, a few at a time, the most recently
/// added first: the domain that bounced last is the one a verdict is being
/// asked about, and 200 black holes added before it must not make it wait
/// (each is checked on its schedule anyway).
async fn check_added(
    monitor: Arc<Monitor>,
    mut added: mpsc::Receiver<DomainName>,
    stop: CancellationToken,
) {
    use futures::StreamExt;
    let mut waiting: std::collections::VecDeque<DomainName> = std::collections::VecDeque::new();
    let mut checks = futures::stream::FuturesUnordered::new();
    let mut open = true;
    loop {
        while checks.len() < AUTO_WATCH_CHECKS
            && let Some(d) = waiting.pop_back()
        {
            let m = monitor.clone();
            checks.push(async move { m.check(&d).await });
        }
        if !open && checks.is_empty() && waiting.is_empty() {
            return;
        }
        // Stopping does not wait for checks in flight: each is a question
        // to the DNS, and nothing of it is owed to anyone.
        tokio::select! {
            d = added.recv(), if open => match d {
                Some(d) => {
                    if waiting.len() >= CHECK_QUEUE {
                        waiting.pop_front();
                    }
                    waiting.push_back(d);
                }
                None => open = false,
            },
            Some(r) = checks.next(), if !checks.is_empty() => {
                if let Err(e) = r {
                    tracing::error!("auto-watch: check not recorded: {e}");
                }
            }
            _ = stop.cancelled() => return,
        }
    }
}
