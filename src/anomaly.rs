//! Anomaly windows: a burst of unknown-user bounces for one domain or one
//! provider, far above what that scope's own traffic explains, over many
//! distinct recipients, with no DNS change at all. Apple, 26 April 2021:
//! six hours of `550 5.1.1 … user lookup success but no user record found`
//! to valid iCloud, me.com and mac.com addresses.
//!
//! Pure: fed bounces and deliveries in time order (time is data), it says
//! when a burst starts and ends. A burst is recognised only after enough
//! bounces; its window starts at the first of them, so earlier answers can
//! be revisited.
//!
//! Most senders send campaigns: a newsletter's bounces arrive within half
//! an hour once a day, so every scope's rate against its own daily average
//! looks like a burst every day. A burst is therefore judged against what
//! else was happening at the same time, by the strongest comparison the
//! feed allows ([`Basis`]):
//! 1. **deliveries**: where the feed carries the scope's deliveries (and
//!    carries deliveries now), its unknown users per delivery attempt now
//!    against its usual share (a campaign raises both; an incident refuses
//!    valid addresses, so the share rises);
//! 2. **concurrent**: while the rest of the feed bounces too (a campaign is
//!    going out), the scope's share of the unknown users now against its
//!    usual share (a campaign raises every provider together, in proportion
//!    to the list; an incident raises one);
//! 3. **alone**: when nothing else bounces, the scope's rate against its own
//!    trailing rate *and* against its busiest half hours of the last
//!    [`PEAK_MEMORY`] baselines (a single-provider campaign is as busy as the
//!    last one; an incident is several times busier).
//!
//! Three more rules keep an ordinary day from looking like an incident:
//! - the expected rate is the scope's bounces over the history the detector
//!   actually has (not over a nominal week it has not seen);
//! - while that history is shorter than `warmup`, only a burst
//!   [`WARMUP_STRENGTH`] times stronger than usual opens a window;
//! - an open anomaly ends when its rate falls back (below half of what
//!   opened it: hysteresis), when its bounces stop, or at `max_duration`,
//!   whichever comes first; a burst that goes on must then earn a new
//!   window on fresh evidence.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::window::Scope;

/// Thresholds. The defaults, and why:
/// - `window` 30 min: long enough to gather a burst from a mid-size sender,
///   short enough that a six-hour outage is recognised in its first half hour;
/// - `baseline` 7 days: a week covers weekly sending rhythms;
/// - `factor` 10×: alone, a scope's unknown-user rate moves by a few times
///   with sending volume; ten times its own normal is an event;
/// - `concurrent_factor` 3×: against concurrent traffic the noise is far
///   smaller (a campaign keeps each provider's share within a small
///   factor); Apple's incident multiplied iCloud's unknown users 5 to 10
///   times while the others bounced as usual;
/// - `min_bounces` 20 and `min_recipients` 10: a handful of bounces, or one
///   address retried, is never an anomaly whatever the baseline;
/// - `warmup` 24 h: with less history than a day, nobody knows what a
///   scope's normal is (a fresh database, a new feed); until then a burst
///   needs [`WARMUP_STRENGTH`]× the bounces and recipients;
/// - `max_duration` 12 h: twice Apple's six hours; a window is evidence for
///   "do not suppress", and none may outlive the burst that justified it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    pub window: Duration,
    pub baseline: Duration,
    pub factor: f64,
    pub concurrent_factor: f64,
    pub min_bounces: usize,
    pub min_recipients: usize,
    pub warmup: Duration,
    pub max_duration: Duration,
}

/// During warm-up a burst needs this many times `min_bounces` and
/// `min_recipients`.
pub const WARMUP_STRENGTH: usize = 5;

/// How many baselines a scope's busiest half hours are remembered: two, so
/// that a sender whose only traffic is one campaign a week, sent a little
/// later than last week's, still has last week's to compare with.
pub const PEAK_MEMORY: i32 = 2;

impl Default for Params {
    fn default() -> Self {
        Params {
            window: Duration::from_secs(30 * 60),
            baseline: Duration::from_secs(7 * 24 * 3600),
            factor: 10.0,
            concurrent_factor: 3.0,
            min_bounces: 20,
            min_recipients: 10,
            warmup: Duration::from_secs(24 * 3600),
            max_duration: Duration::from_secs(12 * 3600),
        }
    }
}

/// A `Duration` as chrono's, saturating at chrono's range (a config value
/// of centuries must not panic).
fn span(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// `b - a`, or zero when it would overflow or be negative.
fn elapsed(a: DateTime<Utc>, b: DateTime<Utc>) -> chrono::Duration {
    b.signed_duration_since(a).max(chrono::Duration::zero())
}

/// One anomaly window of one scope.
#[derive(Debug, Clone, PartialEq)]
pub struct Anomaly {
    /// A domain such as `example.com`, or a provider such as `icloud`.
    pub scope: Scope,
    pub start: DateTime<Utc>,
    /// The last bounce of the burst, once it is over.
    pub end: Option<DateTime<Utc>>,
    /// Unknown-user bounces in the window so far.
    pub bounces: usize,
    /// The rate that made it an anomaly: bounces per `window`, and what the
    /// comparison predicted.
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Recognised now; `start` may lie in the past.
    Opened(Anomaly),
    Closed(Anomaly),
}

/// Weighted events over time, split into the last `window` and the rest of
/// the baseline before it, with their sums: every update O(1) amortised.
#[derive(Debug, Default)]
struct Tally {
    recent: VecDeque<(DateTime<Utc>, u64)>,
    recent_sum: u64,
    older: VecDeque<(DateTime<Utc>, u64)>,
    older_sum: u64,
}

impl Tally {
    /// Events in the same minute as the last one share its entry (a feed
    /// of a million bounces is a few thousand entries, not a million).
    fn add(&mut self, at: DateTime<Utc>, n: u64) {
        let minute = |t: DateTime<Utc>| t.timestamp().div_euclid(60);
        match self.recent.back_mut() {
            Some((t, count)) if minute(*t) == minute(at) && *t <= at => {
                *count = count.saturating_add(n)
            }
            _ => self.recent.push_back((at, n)),
        }
        self.recent_sum = self.recent_sum.saturating_add(n);
    }

    /// Events leave the recent window for the baseline at `now`, and the
    /// baseline's oldest leave it.
    fn slide(&mut self, now: DateTime<Utc>, window: chrono::Duration, baseline: chrono::Duration) {
        while let Some(&(t, n)) = self.recent.front() {
            if elapsed(t, now) < window {
                break;
            }
            self.recent.pop_front();
            self.recent_sum -= n;
            self.older.push_back((t, n));
            self.older_sum += n;
        }
        while let Some(&(t, n)) = self.older.front() {
            if elapsed(t, now) <= baseline {
                break;
            }
            self.older.pop_front();
            self.older_sum -= n;
        }
    }
}

/// Deliveries in buckets of [`SENT_BUCKET`], kept for a baseline and a
/// window before the newest: asked for any stretch, in any order (a
/// delivery log ingested before the bounce log of the same hours).
#[derive(Debug, Default)]
struct Sent {
    buckets: std::collections::BTreeMap<i64, u64>,
    /// The newest bucket yet (an older one arriving later moves nothing).
    newest: Option<i64>,
}

/// How finely deliveries are counted in time, in seconds.
pub const SENT_BUCKET: i64 = 300;

impl Sent {
    fn bucket(at: DateTime<Utc>) -> i64 {
        at.timestamp().div_euclid(SENT_BUCKET)
    }

    /// `n` deliveries at `at`; buckets more than `keep` (and one bucket)
    /// before the newest are dropped.
    fn add(&mut self, at: DateTime<Utc>, n: u64, keep: chrono::Duration) {
        let b = Self::bucket(at);
        let e = self.buckets.entry(b).or_default();
        *e = e.saturating_add(n);
        let newest = self.newest.map_or(b, |x| x.max(b));
        self.newest = Some(newest);
        let oldest = newest.saturating_sub(keep.num_seconds() / SENT_BUCKET + 1);
        while self
            .buckets
            .first_key_value()
            .is_some_and(|(k, _)| *k < oldest)
        {
            self.buckets.pop_first();
        }
    }

    /// Deliveries in buckets starting in `(from, to]`.
    fn between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> u64 {
        let (a, b) = (Self::bucket(from), Self::bucket(to));
        if a >= b {
            return 0;
        }
        self.buckets
            .range(a + 1..=b)
            .fold(0u64, |sum, (_, n)| sum.saturating_add(*n))
    }
}

/// One scope's bounces and deliveries.
#[derive(Debug, Default)]
struct ScopeState {
    /// Unknown-user bounces of the last `window`, by recipient hash.
    recent: VecDeque<(DateTime<Utc>, u64)>,
    /// How many bounces each recipient has in `recent`.
    distinct: HashMap<u64, u32>,
    /// Unknown-user bounces of the baseline before the window, as times.
    older: VecDeque<DateTime<Utc>>,
    /// Delivery attempts that succeeded, where the feed carries them.
    sent: Sent,
    /// The busiest `window` count of each hour (hour start, count), for
    /// the last [`PEAK_MEMORY`] baselines; not kept while a window is open.
    peaks: VecDeque<(DateTime<Utc>, usize)>,
    last: Option<DateTime<Utc>>,
    open: Option<Anomaly>,
}

impl ScopeState {
    /// A bounce at `at` from recipient hash `who`: bounces leave the recent
    /// window for the baseline, and the baseline's oldest leave it.
    fn slide(
        &mut self,
        at: DateTime<Utc>,
        who: u64,
        window: chrono::Duration,
        baseline: chrono::Duration,
    ) {
        self.recent.push_back((at, who));
        *self.distinct.entry(who).or_default() += 1;
        self.last = Some(self.last.map_or(at, |l| l.max(at)));
        while let Some(&(t, who)) = self.recent.front() {
            if elapsed(t, at) < window {
                break;
            }
            self.recent.pop_front();
            if let Some(n) = self.distinct.get_mut(&who) {
                *n -= 1;
                if *n == 0 {
                    self.distinct.remove(&who);
                }
            }
            self.older.push_back(t);
        }
        while self
            .older
            .front()
            .is_some_and(|t| elapsed(*t, at) > baseline)
        {
            self.older.pop_front();
        }
    }

    /// Notes the window's count at `at` in its hour (busiest per hour).
    fn note_peak(&mut self, at: DateTime<Utc>, memory: chrono::Duration) {
        let hour = at.duration_trunc(chrono::Duration::hours(1)).unwrap_or(at);
        let n = self.recent.len();
        match self.peaks.back_mut() {
            Some((h, max)) if *h == hour => *max = (*max).max(n),
            _ => self.peaks.push_back((hour, n)),
        }
        while self
            .peaks
            .front()
            .is_some_and(|(h, _)| elapsed(*h, at) > memory)
        {
            self.peaks.pop_front();
        }
    }

    /// The busiest window of the hours that ended before the current window
    /// began (the burst being judged is never its own peak).
    fn peak_before(&self, at: DateTime<Utc>, window: chrono::Duration) -> usize {
        let begun = at.checked_sub_signed(window).unwrap_or(at);
        self.peaks
            .iter()
            .filter(|(h, _)| {
                h.checked_add_signed(chrono::Duration::hours(1))
                    .is_some_and(|end| end <= begun)
            })
            .map(|(_, n)| *n)
            .max()
            .unwrap_or(0)
    }
}

use chrono::DurationRound;

/// What a burst was compared with: the strongest comparison the feed
/// allowed at that moment.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Basis {
    /// Unknown users per delivery attempt now, and usually.
    Deliveries { now: f64, usual: f64 },
    /// The rest of the feed's unknown users in the window, and how many of
    /// the scope's that predicts from its usual share.
    Concurrent { rest: u64, expected: f64 },
    /// Nothing to compare with but the scope's own history: its trailing
    /// rate per window, and its busiest window before.
    Alone { expected: f64, peak: usize },
}

/// A scope's rate at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rate {
    recent: usize,
    distinct: usize,
    basis: Basis,
    /// Whether the detector had `warmup` of history.
    warm: bool,
}

/// The detector, across scopes.
#[derive(Debug, Default)]
pub struct Detector {
    params: Params,
    scopes: HashMap<Scope, ScopeState>,
    /// Every unknown-user bounce of the feed, once each (whatever its
    /// scopes): what the rest of the feed was doing.
    feed: Tally,
    /// Every delivery of the feed: whether it carries deliveries now (a
    /// scope with none while others have them is refusing; a feed with none
    /// at all has not sent them yet, or never does).
    feed_sent: Sent,
    /// The scopes with an open anomaly: the few `close_idle` looks at
    /// before every bounce (looking at every scope made ingest slow in
    /// proportion to the number of domains).
    open_scopes: std::collections::BTreeSet<Scope>,
    /// The earliest bounce of the feed (any kind, any scope): how much
    /// history the expected rates rest on.
    history_since: Option<DateTime<Utc>>,
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

impl Params {
    /// Whether `history_since` gives enough history at `at` to judge
    /// bursts at normal strength.
    pub fn warmed_up(&self, history_since: Option<DateTime<Utc>>, at: DateTime<Utc>) -> bool {
        history_since.is_some_and(|since| elapsed(since, at) >= span(self.warmup))
    }

    /// A sentence for a verdict judged while anomaly detection warms up.
    pub fn warmup_caveat(&self, history_since: Option<DateTime<Utc>>, at: DateTime<Utc>) -> String {
        let had = history_since.map_or(chrono::Duration::zero(), |s| elapsed(s, at));
        format!(
            "too little bounce history to judge bursts: {} of the {} anomaly detection needs \
             (until then only a burst {WARMUP_STRENGTH}x stronger counts)",
            crate::event::span(had),
            crate::event::duration(self.warmup)
        )
    }

    /// When an open anomaly that started at `start` and whose last bounce
    /// so far was `last` is over, as of `at`: its end, or `None` while it
    /// goes on. The detector's own rules, evaluated when a question is
    /// asked: bounces stopped for `window`, or `max_duration` reached.
    pub fn ended(
        &self,
        start: DateTime<Utc>,
        last: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let last = last.max(start);
        let cap = start
            .checked_add_signed(span(self.max_duration))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let idle = elapsed(last, at) >= span(self.window);
        (idle || at >= cap).then(|| last.min(cap))
    }

    /// How long a scope's busiest windows are remembered.
    fn peak_memory(&self) -> chrono::Duration {
        span(self.baseline)
            .checked_mul(PEAK_MEMORY)
            .unwrap_or(chrono::Duration::MAX)
    }
}

impl Detector {
    pub fn new(params: Params) -> Self {
        Detector {
            params,
            ..Detector::default()
        }
    }

    /// A bounce of any kind at `at`: the feed's history reaches back to it.
    pub fn note(&mut self, at: DateTime<Utc>) {
        self.history_since = Some(self.history_since.map_or(at, |s| s.min(at)));
    }

    /// The earliest bounce the detector knows of.
    pub fn history_since(&self) -> Option<DateTime<Utc>> {
        self.history_since
    }

    /// `count` successful deliveries at `at` to recipients of `scopes` (a
    /// domain, and its provider). They count as feed history too.
    pub fn delivered(&mut self, scopes: &[Scope], at: DateTime<Utc>, count: u64) {
        if count == 0 {
            return;
        }
        self.note(at);
        let keep = span(self.params.baseline) + span(self.params.window);
        self.feed_sent.add(at, count, keep);
        for scope in scopes {
            let st = self.scopes.entry(scope.clone()).or_default();
            st.sent.add(at, count, keep);
        }
    }

    fn rate(&self, st: &ScopeState, at: DateTime<Utc>) -> Rate {
        let p = &self.params;
        let window = span(p.window);
        let n = st.recent.len();
        let older = st.older.len() as u64;
        let begun = at.checked_sub_signed(window).unwrap_or(at);
        let first = at
            .checked_sub_signed(span(p.baseline))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        // Deliveries are asked for only where a burst could open or hold.
        let sent = (n * 2 >= p.min_bounces && self.feed_sent.between(begun, at) > 0)
            .then(|| (st.sent.between(begun, at), st.sent.between(first, begun)))
            .filter(|(_, usual)| *usual >= p.min_bounces as u64);
        let basis = if let Some((recent_sent, older_sent)) = sent {
            Basis::Deliveries {
                now: n as f64 / (n as u64 + recent_sent).max(1) as f64,
                usual: (older + 1) as f64 / (older + older_sent + 2) as f64,
            }
        } else if let rest = self.feed.recent_sum.saturating_sub(n as u64)
            && rest >= p.min_bounces as u64
        {
            // Smoothed: with no history the scope is expected to bounce as
            // much as the rest of the feed together (odds of one).
            let others = self.feed.older_sum.saturating_sub(older);
            Basis::Concurrent {
                rest,
                expected: rest as f64 * (older + 1) as f64 / (others + 1) as f64,
            }
        } else {
            // The stretch `older` covers: the history we have, at most the
            // baseline, less the recent window; never less than one window.
            let history = self
                .history_since
                .map_or(chrono::Duration::zero(), |s| elapsed(s, at));
            let covered = (history.min(span(p.baseline)) - window).max(window);
            Basis::Alone {
                expected: older as f64 * window.num_seconds().max(1) as f64
                    / covered.num_seconds().max(1) as f64,
                peak: st.peak_before(at, window),
            }
        };
        Rate {
            recent: n,
            distinct: st.distinct.len(),
            basis,
            warm: p.warmed_up(self.history_since, at),
        }
    }

    /// Whether a rate is at least `share` of what opens a window (1 to
    /// open; 1/2 to hold one open).
    fn above(&self, r: Rate, share: f64) -> bool {
        let p = &self.params;
        let n = r.recent as f64;
        n >= p.min_bounces as f64 * share
            && match r.basis {
                Basis::Deliveries { now, usual } => now >= p.concurrent_factor * usual * share,
                Basis::Concurrent { expected, .. } => {
                    n >= p.concurrent_factor * expected.max(1.0) * share
                }
                Basis::Alone { expected, peak } => {
                    n >= p.factor * expected.max(1.0) * share
                        && n >= p.concurrent_factor * peak as f64 * share
                }
            }
    }

    /// Whether a rate opens a window.
    fn bursting(&self, r: Rate) -> bool {
        let p = &self.params;
        let strength = if r.warm { 1 } else { WARMUP_STRENGTH };
        r.recent >= p.min_bounces.saturating_mul(strength)
            && r.distinct >= p.min_recipients.saturating_mul(strength)
            && self.above(r, 1.0)
    }

    /// Whether an open window's rate still holds it open: half of what
    /// opens one (hysteresis: a burst hovering at the threshold is one
    /// window, not many).
    fn holding(&self, r: Rate) -> bool {
        self.above(r, 0.5)
    }

    /// What made a burst an anomaly, for a person.
    fn describe(&self, rate: Rate) -> String {
        let warm_up = if rate.warm {
            String::new()
        } else {
            format!(
                " (warm-up: under {} of history, {WARMUP_STRENGTH}x the usual evidence)",
                crate::event::duration(self.params.warmup)
            )
        };
        let against = match rate.basis {
            Basis::Deliveries { now, usual } => format!(
                "{:.1}% of delivery attempts, against {:.1}% usually",
                now * 100.0,
                usual * 100.0
            ),
            Basis::Concurrent { rest, expected } => format!(
                "against {expected:.1} expected from its usual share of the {rest} other \
                 unknown-user bounces at the same time"
            ),
            Basis::Alone { expected, peak: 0 } => format!("against {expected:.1} expected"),
            Basis::Alone { expected, peak } => {
                format!("against {expected:.1} expected and {peak} at its busiest before")
            }
        };
        format!(
            "{} unknown-user bounces to {} recipients in {}, {against}{warm_up}",
            rate.recent,
            rate.distinct,
            crate::event::duration(self.params.window),
        )
    }

    /// An unknown-user bounce for `recipient` at `at`, counted in each of
    /// `scopes` (a domain, its provider) and once in the feed. The bounce
    /// should also be [`noted`](Detector::note) (as every bounce is).
    pub fn observe(&mut self, scopes: &[Scope], at: DateTime<Utc>, recipient: &str) -> Vec<Event> {
        self.note(at);
        let (window, baseline) = (span(self.params.window), span(self.params.baseline));
        self.feed.add(at, 1);
        self.feed.slide(at, window, baseline);
        let mut out = Vec::new();
        for scope in scopes {
            out.extend(self.observe_scope(scope, at, recipient));
        }
        out
    }

    fn observe_scope(&mut self, scope: &Scope, at: DateTime<Utc>, recipient: &str) -> Vec<Event> {
        let window = span(self.params.window);
        let baseline = span(self.params.baseline);
        let max_duration = span(self.params.max_duration);
        let mut st = self.scopes.remove(scope).unwrap_or_default();
        let previous = st.last;
        st.slide(at, fnv(recipient), window, baseline);
        let rate = self.rate(&st, at);
        let mut out = Vec::new();
        if let Some(a) = st.open.as_mut() {
            a.bounces += 1;
            let too_long = elapsed(a.start, at) >= max_duration;
            if too_long || !self.holding(rate) {
                let mut a = st.open.take().expect("open");
                a.end = Some(if too_long {
                    a.start
                        .checked_add_signed(max_duration)
                        .unwrap_or(at)
                        .min(at)
                } else {
                    previous.unwrap_or(at).max(a.start)
                });
                out.push(Event::Closed(a));
            }
        }
        if st.open.is_none() && self.bursting(rate) {
            let start = st.recent.front().map_or(at, |(t, _)| *t);
            // Never reopen over the stretch a window just closed on.
            let start = match out.last() {
                Some(Event::Closed(a)) => a.end.map_or(start, |e| start.max(e)),
                _ => start,
            };
            let a = Anomaly {
                scope: scope.clone(),
                start,
                end: None,
                bounces: rate.recent,
                detail: self.describe(rate),
            };
            st.open = Some(a.clone());
            out.push(Event::Opened(a));
        }
        if st.open.is_some() {
            self.open_scopes.insert(scope.clone());
        } else {
            // An incident is never the measure of the next one; and a half
            // hour too quiet to hold back any burst (its busiest count times
            // `concurrent_factor` under `min_bounces`) is not kept.
            let p = &self.params;
            if out.is_empty() && st.recent.len() as f64 * p.concurrent_factor > p.min_bounces as f64
            {
                st.note_peak(at, p.peak_memory());
            }
            self.open_scopes.remove(scope);
        }
        self.scopes.insert(scope.clone(), st);
        out
    }

    /// Closes the anomalies of scopes whose bounces have stopped (none in
    /// the last `window` before `now`; their end is their last bounce) or
    /// that reached `max_duration`.
    pub fn close_idle(&mut self, now: DateTime<Utc>) -> Vec<Event> {
        let window = span(self.params.window);
        let max_duration = span(self.params.max_duration);
        let mut out = Vec::new();
        let mut closed = Vec::new();
        for scope in &self.open_scopes {
            let Some(st) = self.scopes.get_mut(scope) else {
                continue;
            };
            let Some(a) = st.open.as_ref() else { continue };
            let last = st.last.unwrap_or(a.start).max(a.start);
            let idle = elapsed(last, now) >= window;
            let too_long = elapsed(a.start, now) >= max_duration;
            if idle || too_long {
                let mut a = st.open.take().expect("open");
                let cap = a.start.checked_add_signed(max_duration).unwrap_or(last);
                a.end = Some(last.min(cap));
                out.push(Event::Closed(a));
                closed.push(scope.clone());
            }
        }
        for scope in closed {
            self.open_scopes.remove(&scope);
        }
        out.sort_by(|x, y| match (x, y) {
            (Event::Opened(a) | Event::Closed(a), Event::Opened(b) | Event::Closed(b)) => {
                a.scope.cmp(&b.scope)
            }
        });
        out
    }

    /// The last unknown-user bounce of a scope.
    pub fn last_bounce(&self, scope: &Scope) -> Option<DateTime<Utc>> {
        self.scopes.get(scope).and_then(|s| s.last)
    }

    /// The open anomaly of a scope, if any.
    pub fn open(&self, scope: &Scope) -> Option<&Anomaly> {
        self.scopes.get(scope).and_then(|s| s.open.as_ref())
    }

    /// Every open anomaly.
    pub fn open_all(&self) -> impl Iterator<Item = &Anomaly> {
        self.scopes.values().filter_map(|s| s.open.as_ref())
    }

    /// Takes over a window an earlier process opened and stored: the
    /// detector closes it by the same rules as its own. Its bounces were
    /// replayed before (they count in the scope's rate).
    pub fn adopt(&mut self, a: Anomaly) {
        self.open_scopes.insert(a.scope.clone());
        let st = self.scopes.entry(a.scope.clone()).or_default();
        st.open = Some(a);
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod campaign_tests;
