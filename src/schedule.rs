//! When each domain is checked.
//!
//! Every domain runs on a crontab line (global or its own). Checks are
//! spread over each interval at a stable per-domain offset, so 100,000
//! domains on `*/5 * * * *` make a steady stream rather than a burst at
//! every fifth minute. A domain with an open window asks for a fast
//! re-check. Ticks missed while the process was stopped are not replayed:
//! an overdue domain waits for its next slot, which the offset spreads.
//! In-flight checks are bounded; upstream query rates by [`RateLimiter`].

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::parser::{CronParser, Seconds};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::domain::DomainName;

/// The longest span one interval's checks are spread over: a daily schedule
/// checks its domains within an hour of the tick, not all day long.
pub const MAX_SPREAD: Duration = Duration::from_secs(3600);

/// The longest the scheduler sleeps before looking at the clock again, so a
/// wall-clock step is noticed.
const MAX_SLEEP: Duration = Duration::from_secs(30);

/// A crontab line (`*/5 * * * *`; five fields, Sunday is 0 or 7, day of
/// month and day of week combine with OR as in Vixie cron), in UTC.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: croner::Cron,
    source: String,
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Schedule {
    pub fn parse(line: &str) -> Result<Schedule, String> {
        let line = line.trim();
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .build()
            .parse(line)
            .map_err(|e| format!("{line:?} is not a crontab schedule (five fields: minute hour day month weekday): {e}"))?;
        // A pattern that never fires (e.g. 30 February) would stall a domain.
        let probe = DateTime::<Utc>::from_timestamp(0, 0).expect("epoch");
        cron.find_next_occurrence(&probe, false)
            .map_err(|e| format!("{line:?} never fires: {e}"))?;
        Ok(Schedule {
            cron,
            source: line.to_string(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The first tick strictly after `t`.
    pub fn next_tick(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        self.cron
            .find_next_occurrence(&t, false)
            .unwrap_or_else(|_| {
                t.checked_add_signed(chrono::Duration::days(366))
                    .unwrap_or(DateTime::<Utc>::MAX_UTC)
            })
    }

    /// The first check slot strictly after `now` for a domain whose offset is
    /// `frac` (in `[0, 1)`) of each interval (capped at [`MAX_SPREAD`]).
    pub fn next_slot(&self, frac: f64, now: DateTime<Utc>) -> DateTime<Utc> {
        let mut tick = self
            .cron
            .find_previous_occurrence(&now, true)
            .unwrap_or_else(|_| self.next_tick(now));
        loop {
            let next = self.next_tick(tick);
            let span = (next - tick).min(chrono::Duration::from_std(MAX_SPREAD).expect("fits"));
            let offset =
                chrono::Duration::milliseconds((span.num_milliseconds() as f64 * frac) as i64);
            let slot = tick + offset;
            if slot > now {
                return slot;
            }
            tick = next;
        }
    }
}

/// A domain's stable place in every interval: FNV-1a of its name, as a
/// fraction of the interval.
pub fn offset_fraction(name: &DomainName) -> f64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in name.as_str().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// Smooth per-upstream rate limit: each `acquire` takes the next free slot,
/// slots `1/rate` apart. Runs on tokio's clock, so a paused test clock
/// drives it.
#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    next: Mutex<Instant>,
}

impl RateLimiter {
    pub fn per_second(rate: u32) -> Self {
        RateLimiter {
            interval: Duration::from_secs(1) / rate.max(1),
            next: Mutex::new(Instant::now()),
        }
    }

    pub async fn acquire(&self) {
        let at = {
            let mut next = self.next.lock().expect("rate limiter lock");
            let slot = (*next).max(Instant::now());
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(at).await;
    }
}

/// One scheduled domain.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub name: DomainName,
    /// Shared: a million domains on one schedule hold one parsed cron.
    pub schedule: Arc<Schedule>,
}

#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Checks in flight at once.
    pub concurrency: usize,
    /// Delay before re-checking a domain whose check asked for it.
    pub fast_recheck: Duration,
}

struct Entry {
    job: Job,
    frac: f64,
    due: Option<DateTime<Utc>>,
    in_flight: bool,
}

/// The scheduler loop. `check` runs one domain's check and answers whether
/// the domain wants a fast re-check; `reload` replaces the job list (domains
/// kept keep their slot, removed ones finish their in-flight check and
/// stop); `opts` is read again at each dispatch (a reload may change it);
/// `shutdown` stops dispatching, then in-flight checks are awaited.
pub async fn run<F, Fut>(
    jobs: Vec<Job>,
    opts: tokio::sync::watch::Receiver<SchedulerOptions>,
    clock: Arc<dyn Clock>,
    mut reload: mpsc::Receiver<Vec<Job>>,
    check: F,
    shutdown: impl Future<Output = ()>,
) where
    F: Fn(DomainName) -> Fut,
    Fut: Future<Output = bool> + Send + 'static,
{
    let mut queue = Queue::default();
    let mut in_flight: JoinSet<(DomainName, bool)> = JoinSet::new();
    // Which domain each task checks, to reschedule one whose task panicked.
    let mut running: HashMap<tokio::task::Id, DomainName> = HashMap::new();
    queue.add(jobs, clock.now());

    tokio::pin!(shutdown);
    loop {
        let (concurrency, fast) = {
            let o = opts.borrow();
            let fast = chrono::Duration::from_std(o.fast_recheck).unwrap_or(chrono::Duration::MAX);
            (o.concurrency.max(1), fast)
        };
        let now = clock.now();
        // Dispatch everything due, as far as concurrency allows.
        while in_flight.len() < concurrency {
            let Some(name) = queue.take_due(now) else {
                break;
            };
            let fut = check(name.clone());
            let task = in_flight.spawn({
                let name = name.clone();
                async move { (name, fut.await) }
            });
            running.insert(task.id(), name);
        }
        let sleep_for = if in_flight.len() >= concurrency {
            MAX_SLEEP
        } else {
            queue.until_next(now)
        };
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            Some(done) = in_flight.join_next_with_id(), if !in_flight.is_empty() => {
                match done {
                    Ok((id, (name, wants_fast))) => {
                        running.remove(&id);
                        queue.done(&name, wants_fast.then_some(fast), clock.now());
                    }
                    // A check that panicked: its domain takes its next slot
                    // (it would otherwise count as running for ever).
                    Err(e) => {
                        let name = running.remove(&e.id());
                        tracing::error!(domain = ?name, "a check task failed: {e:?}");
                        if let Some(name) = name {
                            queue.done(&name, None, clock.now());
                        }
                    }
                }
            }
            Some(jobs) = reload.recv() => queue.reload(jobs, clock.now()),
            _ = tokio::time::sleep(sleep_for) => {}
        }
    }
    while in_flight.join_next().await.is_some() {}
}

/// The domains and when each is due next: a min-heap of (due, domain),
/// where an entry whose `due` no longer matches is stale and skipped.
#[derive(Default)]
struct Queue {
    entries: HashMap<DomainName, Entry>,
    heap: BinaryHeap<Reverse<(DateTime<Utc>, DomainName)>>,
}

impl Queue {
    fn schedule_at(&mut self, name: &DomainName, due: DateTime<Utc>) {
        if let Some(e) = self.entries.get_mut(name) {
            e.due = Some(due);
            self.heap.push(Reverse((due, name.clone())));
        }
    }

    /// New jobs take their slot after `now`.
    fn add(&mut self, jobs: Vec<Job>, now: DateTime<Utc>) {
        for job in jobs {
            let name = job.name.clone();
            let frac = offset_fraction(&name);
            let due = job.schedule.next_slot(frac, now);
            let entry = Entry {
                job,
                frac,
                due: None,
                in_flight: false,
            };
            self.entries.insert(name.clone(), entry);
            self.schedule_at(&name, due);
        }
    }

    /// The next domain due by `now`, marked in flight.
    fn take_due(&mut self, now: DateTime<Utc>) -> Option<DomainName> {
        loop {
            let Reverse((due, _)) = self.heap.peek()?;
            if *due > now {
                return None;
            }
            let Reverse((due, name)) = self.heap.pop().expect("peeked");
            let Some(entry) = self.entries.get_mut(&name) else {
                continue;
            };
            if entry.due != Some(due) || entry.in_flight {
                continue; // superseded or already running
            }
            // Missed a whole interval (the process was stopped or starved):
            // do not replay it now, take the next slot.
            if entry.job.schedule.next_slot(entry.frac, due) <= now {
                let next = entry.job.schedule.next_slot(entry.frac, now);
                self.schedule_at(&name, next);
                continue;
            }
            entry.due = None;
            entry.in_flight = true;
            return Some(name);
        }
    }

    /// How long until the next domain is due (at most [`MAX_SLEEP`]).
    fn until_next(&self, now: DateTime<Utc>) -> Duration {
        match self.heap.peek() {
            Some(Reverse((due, _))) => (*due - now)
                .to_std()
                .unwrap_or(Duration::ZERO)
                .min(MAX_SLEEP),
            None => MAX_SLEEP,
        }
    }

    /// A check finished: its next slot, or sooner when it asked for a
    /// fast re-check.
    fn done(&mut self, name: &DomainName, fast: Option<chrono::Duration>, now: DateTime<Utc>) {
        let Some(entry) = self.entries.get_mut(name) else {
            return;
        };
        entry.in_flight = false;
        let regular = entry.job.schedule.next_slot(entry.frac, now);
        let due = fast.map_or(regular, |f| regular.min(now + f));
        self.schedule_at(name, due);
    }

    /// The job list is now `jobs`: unchanged ones keep their slot, changed
    /// schedules come back as new entries; in-flight checks of removed
    /// domains finish and are then forgotten.
    fn reload(&mut self, jobs: Vec<Job>, now: DateTime<Utc>) {
        let mut keep: HashMap<DomainName, Job> =
            jobs.into_iter().map(|j| (j.name.clone(), j)).collect();
        self.entries.retain(|name, e| {
            let same = keep.get(name) == Some(&e.job);
            if same {
                keep.remove(name);
            }
            same
        });
        self.add(keep.into_values().collect(), now);
        let entries = &self.entries;
        self.heap
            .retain(|Reverse((due, name))| entries.get(name).is_some_and(|e| e.due == Some(*due)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn crontab_lines_parse_and_bad_ones_explain() {
        assert!(Schedule::parse("*/5 * * * *").is_ok());
        assert!(Schedule::parse("0 9 * * 1-5").is_ok());
        let e = Schedule::parse("*/5 * * * * *").unwrap_err();
        assert!(e.contains("five fields"), "{e}");
        assert!(Schedule::parse("61 * * * *").is_err());
        assert!(Schedule::parse("0 0 30 2 *").is_err());
    }

    #[test]
    fn sunday_is_zero_as_in_crontab() {
        let s = Schedule::parse("0 12 * * 0").unwrap();
        // 2026-11-22 is a Sunday.
        let sat = Utc.with_ymd_and_hms(2026, 11, 21, 0, 0, 0).unwrap();
        assert_eq!(
            s.next_tick(sat),
            Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap()
        );
    }

    #[test]
    fn slots_are_inside_the_interval_and_stable() {
        let s = Schedule::parse("*/5 * * * *").unwrap();
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        for frac in [0.0, 0.25, 0.999] {
            let a = s.next_slot(frac, t0);
            let b = s.next_slot(frac, a);
            assert_eq!(b - a, chrono::Duration::minutes(5));
            let since_tick = (a - t0).num_milliseconds() % 300_000;
            assert_eq!(since_tick, (300_000.0 * frac) as i64);
        }
        let daily = Schedule::parse("0 3 * * *").unwrap();
        let slot = daily.next_slot(0.5, t0);
        assert_eq!(slot, Utc.with_ymd_and_hms(2026, 1, 1, 3, 30, 0).unwrap());
    }

    #[test]
    fn offsets_spread_evenly() {
        let mut buckets = [0u32; 10];
        for i in 0..10_000 {
            let d = DomainName::parse(&format!("d{i}.example")).unwrap();
            buckets[(offset_fraction(&d) * 10.0) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&b| (800..1200).contains(&b)),
            "{buckets:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limiter_spaces_acquisitions() {
        let l = RateLimiter::per_second(10);
        let start = Instant::now();
        for _ in 0..21 {
            l.acquire().await;
        }
        assert_eq!(Instant::now() - start, Duration::from_secs(2));
    }

    // ---- the scheduler loop, on tokio's paused clock

    use crate::clock::TokioClock;
    use std::sync::atomic::{AtomicUsize, Ordering};

    type Log = Arc<Mutex<Vec<(DomainName, DateTime<Utc>)>>>;

    fn jobs(n: usize, line: &str) -> Vec<Job> {
        (0..n)
            .map(|i| Job {
                name: DomainName::parse(&format!("d{i}.example")).unwrap(),
                schedule: Arc::new(Schedule::parse(line).unwrap()),
            })
            .collect()
    }

    struct Harness {
        log: Log,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        reload: mpsc::Sender<Vec<Job>>,
        task: tokio::task::JoinHandle<()>,
        clock: TokioClock,
    }

    /// Starts the loop; every check is logged and takes `busy` of virtual
    /// time; domains named in `fast` ask for a fast re-check.
    fn harness(
        jobs: Vec<Job>,
        concurrency: usize,
        busy: Duration,
        fast: &[&str],
        peak: Arc<AtomicUsize>,
    ) -> Harness {
        let clock = TokioClock::starting_at(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap());
        let log: Log = Arc::default();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (reload, reload_rx) = mpsc::channel(1);
        let fast: Vec<String> = fast.iter().map(|s| s.to_string()).collect();
        let running = Arc::new(AtomicUsize::new(0));
        let l = log.clone();
        let task = tokio::spawn(run(
            jobs,
            tokio::sync::watch::channel(SchedulerOptions {
                concurrency,
                fast_recheck: Duration::from_secs(10),
            })
            .1,
            Arc::new(clock),
            reload_rx,
            move |d: DomainName| {
                let (l, running, peak) = (l.clone(), running.clone(), peak.clone());
                let wants_fast = fast.iter().any(|f| f == d.as_str());
                async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    l.lock().unwrap().push((d, clock.now()));
                    tokio::time::sleep(busy).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    wants_fast
                }
            },
            async move {
                let _ = stop_rx.await;
            },
        ));
        Harness {
            log,
            stop: Some(stop),
            reload,
            task,
            clock,
        }
    }

    impl Harness {
        fn times_of(&self, name: &str) -> Vec<DateTime<Utc>> {
            self.log
                .lock()
                .unwrap()
                .iter()
                .filter(|(d, _)| d.as_str() == name)
                .map(|(_, t)| *t)
                .collect()
        }
        async fn stop(mut self) {
            self.stop.take().unwrap().send(()).unwrap();
            self.task.await.unwrap();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn every_domain_once_per_interval_at_a_stable_spread_offset() {
        let h = harness(
            jobs(50, "*/5 * * * *"),
            16,
            Duration::from_millis(50),
            &[],
            Arc::default(),
        );
        tokio::time::sleep(Duration::from_secs(30 * 60)).await;
        let log = h.log.lock().unwrap().clone();
        assert_eq!(
            log.len(),
            50 * 6,
            "6 intervals of 5 minutes, one check each"
        );
        for i in 0..50 {
            let times = h.times_of(&format!("d{i}.example"));
            assert_eq!(times.len(), 6);
            for w in times.windows(2) {
                assert_eq!(w[1] - w[0], chrono::Duration::minutes(5), "a stable offset");
            }
        }
        // Spread, not a burst at every fifth minute: no 10-second slice of
        // the interval holds more than a few of the 50 domains.
        let mut buckets = std::collections::HashMap::new();
        for (_, t) in &log {
            *buckets.entry(t.timestamp() % 300 / 10).or_insert(0) += 1;
        }
        assert!(
            buckets.len() >= 20,
            "{} distinct 10 s slices",
            buckets.len()
        );
        assert!(buckets.values().all(|&n| n <= 6 * 6), "{buckets:?}");
        h.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_is_bounded() {
        let peak = Arc::new(AtomicUsize::new(0));
        // 100 domains a minute, each check taking 20 s: unbounded, ~33 would overlap.
        let h = harness(
            jobs(100, "* * * * *"),
            4,
            Duration::from_secs(20),
            &[],
            peak.clone(),
        );
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert_eq!(peak.load(Ordering::SeqCst), 4);
        assert!(!h.log.lock().unwrap().is_empty());
        h.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_domain_asking_for_it_is_rechecked_fast() {
        let h = harness(
            jobs(3, "*/5 * * * *"),
            4,
            Duration::ZERO,
            &["d1.example"],
            Arc::default(),
        );
        tokio::time::sleep(Duration::from_secs(600)).await;
        let fast = h.times_of("d1.example");
        // The first check comes at its slot in the first interval, then every 10 s.
        assert!(fast.len() > 30, "{} checks in 10 minutes", fast.len());
        assert!(
            fast.windows(2)
                .all(|w| w[1] - w[0] == chrono::Duration::seconds(10))
        );
        assert_eq!(h.times_of("d0.example").len(), 2);
        h.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn missed_ticks_are_not_replayed_in_a_burst() {
        let h = harness(
            jobs(60, "*/5 * * * *"),
            64,
            Duration::ZERO,
            &[],
            Arc::default(),
        );
        tokio::time::sleep(Duration::from_secs(600)).await;
        let before = h.log.lock().unwrap().len();
        assert_eq!(before, 120);
        // The process stands still for half an hour (suspended, or the
        // machine slept): time jumps with no code running.
        tokio::time::advance(Duration::from_secs(1800)).await;
        let resumed = h.clock.now();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let burst = h.log.lock().unwrap().len() - before;
        assert!(
            burst <= 2,
            "{burst} of 60 domains checked in the first second after the pause"
        );
        tokio::time::sleep(Duration::from_secs(299)).await;
        let log = h.log.lock().unwrap().clone();
        let after: Vec<_> = log.iter().filter(|(_, t)| *t >= resumed).collect();
        assert_eq!(
            after.len(),
            60,
            "each domain once in the interval after the pause, not six times"
        );
        h.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn reload_adds_and_removes_domains() {
        let h = harness(
            jobs(2, "*/5 * * * *"),
            4,
            Duration::ZERO,
            &[],
            Arc::default(),
        );
        tokio::time::sleep(Duration::from_secs(300)).await;
        let mut next = jobs(3, "*/5 * * * *");
        next.remove(0); // d0 goes, d2 comes
        next[0].schedule = Arc::new(Schedule::parse("*/10 * * * *").unwrap()); // d1 changes
        h.reload.send(next).await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mark = h.clock.now();
        tokio::time::sleep(Duration::from_secs(600)).await;
        let after = |n: &str| h.times_of(n).into_iter().filter(|t| *t > mark).count();
        assert_eq!(after("d0.example"), 0);
        assert_eq!(after("d1.example"), 1, "on its new schedule");
        assert_eq!(after("d2.example"), 2);
        h.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_check_that_panics_does_not_stop_its_domain() {
        let clock = TokioClock::starting_at(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap());
        let calls: Arc<Mutex<Vec<String>>> = Arc::default();
        let (_reload, reload_rx) = mpsc::channel(1);
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let c = calls.clone();
        let task = tokio::spawn(run(
            jobs(1, "*/5 * * * *"),
            tokio::sync::watch::channel(SchedulerOptions {
                concurrency: 4,
                fast_recheck: Duration::from_secs(10),
            })
            .1,
            Arc::new(clock),
            reload_rx,
            move |d: DomainName| {
                let c = c.clone();
                async move {
                    let first = {
                        let mut c = c.lock().unwrap();
                        c.push(d.to_string());
                        c.len() == 1
                    };
                    assert!(!first, "the first check panics");
                    false
                }
            },
            async move {
                let _ = stop_rx.await;
            },
        ));
        tokio::time::sleep(Duration::from_secs(16 * 60)).await;
        let _ = stop.send(());
        task.await.unwrap();
        assert!(
            calls.lock().unwrap().len() >= 3,
            "{:?}",
            calls.lock().unwrap()
        );
    }
}
