//! Anomaly windows: a burst of unknown-user bounces for one domain or one
//! provider, far above that scope's own trailing rate, over many distinct
//! recipients, with no DNS change at all. Apple, 26 April 2021: six hours
//! of `550 5.1.1 … user lookup success but no user record found` to valid
//! iCloud, me.com and mac.com addresses.
//!
//! Pure: fed bounces in time order (time is data), it says when a burst
//! starts and ends. A burst is recognised only after enough bounces; its
//! window starts at the first of them, so earlier answers can be revisited.
//!
//! Three rules keep an ordinary day from looking like an incident:
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
/// - `factor` 10×: a scope's unknown-user rate moves by a few times with
///   campaign size; ten times its own normal is an event;
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
    pub min_bounces: usize,
    pub min_recipients: usize,
    pub warmup: Duration,
    pub max_duration: Duration,
}

/// During warm-up a burst needs this many times `min_bounces` and
/// `min_recipients`.
pub const WARMUP_STRENGTH: usize = 5;

impl Default for Params {
    fn default() -> Self {
        Params {
            window: Duration::from_secs(30 * 60),
            baseline: Duration::from_secs(7 * 24 * 3600),
            factor: 10.0,
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
    /// scope's baseline predicted.
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Recognised now; `start` may lie in the past.
    Opened(Anomaly),
    Closed(Anomaly),
}

/// One scope's bounces, kept so that every update is O(1) amortised: the
/// last `window` with recipients, the rest of the baseline as times only.
#[derive(Debug, Default)]
struct ScopeState {
    recent: VecDeque<(DateTime<Utc>, u64)>,
    /// How many bounces each recipient has in `recent`.
    distinct: HashMap<u64, u32>,
    older: VecDeque<DateTime<Utc>>,
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
}

/// A scope's rate at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Rate {
    recent: usize,
    distinct: usize,
    /// Bounces per `window` the scope's own history predicts.
    expected: f64,
    /// Whether the detector had `warmup` of history.
    warm: bool,
}

/// The detector, across scopes.
#[derive(Debug, Default)]
pub struct Detector {
    params: Params,
    scopes: HashMap<Scope, ScopeState>,
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
            humantime::format_duration(had.to_std().unwrap_or_default()),
            humantime::format_duration(self.warmup)
        )
    }
}

impl Detector {
    pub fn new(params: Params) -> Self {
        Detector {
            params,
            scopes: HashMap::new(),
            open_scopes: std::collections::BTreeSet::new(),
            history_since: None,
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

    fn rate(&self, st: &ScopeState, at: DateTime<Utc>) -> Rate {
        let p = &self.params;
        let window = span(p.window);
        // The stretch `older` covers: the history we have, at most the
        // baseline, less the recent window; never less than one window.
        let history = self
            .history_since
            .map_or(chrono::Duration::zero(), |s| elapsed(s, at));
        let covered = (history.min(span(p.baseline)) - window).max(window);
        let expected = st.older.len() as f64 * window.num_seconds().max(1) as f64
            / covered.num_seconds().max(1) as f64;
        Rate {
            recent: st.recent.len(),
            distinct: st.distinct.len(),
            expected,
            warm: p.warmed_up(self.history_since, at),
        }
    }

    /// Whether a rate opens a window.
    fn bursting(&self, r: Rate) -> bool {
        let p = &self.params;
        let strength = if r.warm { 1 } else { WARMUP_STRENGTH };
        r.recent >= p.min_bounces.saturating_mul(strength)
            && r.distinct >= p.min_recipients.saturating_mul(strength)
            && r.recent as f64 >= p.factor * r.expected.max(1.0)
    }

    /// Whether an open window's rate still holds it open: half of what
    /// opens one (hysteresis: a burst hovering at the threshold is one
    /// window, not many).
    fn holding(&self, r: Rate) -> bool {
        let p = &self.params;
        r.recent.saturating_mul(2) >= p.min_bounces
            && r.recent as f64 * 2.0 >= p.factor * r.expected.max(1.0)
    }

    /// What made a burst an anomaly, for a person.
    fn describe(&self, rate: Rate) -> String {
        let warm_up = if rate.warm {
            String::new()
        } else {
            format!(
                " (warm-up: under {} of history, {WARMUP_STRENGTH}x the usual evidence)",
                humantime::format_duration(self.params.warmup)
            )
        };
        format!(
            "{} unknown-user bounces to {} recipients in {}, against {:.1} expected{warm_up}",
            rate.recent,
            rate.distinct,
            humantime::format_duration(self.params.window),
            rate.expected,
        )
    }

    /// An unknown-user bounce for `recipient` at `at` in `scope`. The bounce
    /// should also be [`noted`](Detector::note) (as every bounce is).
    pub fn observe(&mut self, scope: &Scope, at: DateTime<Utc>, recipient: &str) -> Vec<Event> {
        self.note(at);
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
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2021, 4, 19, 0, 0, 0).unwrap()
    }

    fn mins(m: i64) -> chrono::Duration {
        chrono::Duration::minutes(m)
    }

    fn secs(s: i64) -> chrono::Duration {
        chrono::Duration::seconds(s)
    }

    /// A week of normal life: a few unknown users a day for icloud.
    fn normal_week(d: &mut Detector) {
        for day in 0..7 {
            for k in 0..3 {
                let at = t0() + chrono::Duration::days(day) + chrono::Duration::hours(8 * k);
                assert_eq!(
                    d.observe(&sc("icloud"), at, &format!("old{day}-{k}@icloud.com")),
                    []
                );
            }
        }
    }

    /// A scope by name: providers have no dot.
    fn sc(name: &str) -> Scope {
        if name.contains('.') {
            Scope::Domain(name.into())
        } else {
            Scope::Provider(name.into())
        }
    }

    /// Feeds `n` bounces, one every `every`, from `start`; returns each
    /// event with the index of the bounce that caused it.
    fn feed(
        d: &mut Detector,
        scope: &str,
        start: DateTime<Utc>,
        every: chrono::Duration,
        n: i32,
    ) -> Vec<(i32, Event)> {
        let mut out = Vec::new();
        for i in 0..n {
            for ev in d.observe(&sc(scope), start + every * i, &format!("u{i}@{scope}")) {
                out.push((i, ev));
            }
        }
        out
    }

    /// (bounce index, opened?, start, end) of each event.
    type Row = (i32, bool, DateTime<Utc>, Option<DateTime<Utc>>);

    fn summarise(events: &[(i32, Event)]) -> Vec<Row> {
        events
            .iter()
            .map(|(i, ev)| match ev {
                Event::Opened(a) => (*i, true, a.start, a.end),
                Event::Closed(a) => (*i, false, a.start, a.end),
            })
            .collect()
    }

    fn opened(ev: &Event) -> &Anomaly {
        match ev {
            Event::Opened(a) => a,
            Event::Closed(a) => panic!("expected an opening, got the close of {a:?}"),
        }
    }

    fn closed(ev: &Event) -> &Anomaly {
        match ev {
            Event::Closed(a) => a,
            Event::Opened(a) => panic!("expected a close, got the opening of {a:?}"),
        }
    }

    #[test]
    fn an_apple_like_burst_opens_a_window_at_its_first_bounce_and_closes_after() {
        let mut d = Detector::new(Params::default());
        normal_week(&mut d);
        let start = Utc.with_ymd_and_hms(2021, 4, 26, 11, 0, 0).unwrap();
        // One a minute for six hours, each a different valid address.
        let events = feed(&mut d, "icloud", start, mins(1), 360);
        assert_eq!(events.len(), 1, "one window, not many: {events:?}");
        let (i, ev) = &events[0];
        assert_eq!(*i, 19, "after min_bounces bounces");
        let a = opened(ev);
        assert_eq!(
            a.start, start,
            "the window starts at the first bounce of the burst"
        );
        assert_eq!(
            a.detail,
            "20 unknown-user bounces to 20 recipients in 30m, against 0.1 expected"
        );
        let last = start + mins(359);
        assert_eq!(
            d.close_idle(last + mins(30) - secs(1)),
            [],
            "not idle for a full window yet"
        );
        let closed_now = d.close_idle(last + mins(30));
        assert_eq!(closed_now.len(), 1);
        let a = closed(&closed_now[0]);
        assert_eq!(a.end, Some(last));
        assert_eq!(a.bounces, 360);
        assert_eq!(d.close_idle(last + mins(60)), [], "closed once");
    }

    #[test]
    fn the_burst_must_be_factor_times_the_scopes_own_rate() {
        let mut d = Detector::new(Params::default());
        // Six an hour for a week: 3 expected per 30 minutes.
        let week = feed(&mut d, "gmail.com", t0(), mins(10), 7 * 24 * 6);
        assert_eq!(week, []);
        let start = t0() + chrono::Duration::days(7);
        let events = feed(&mut d, "gmail.com", start, secs(30), 60);
        let (i, ev) = &events[0];
        // The week's last two bounces share the burst's half hour: 31
        // bounces is the first count at or above 10 x 3.0 (3.003 in full).
        assert_eq!(*i, 28, "factor x expected");
        assert!(
            opened(ev).detail.ends_with("against 3.0 expected"),
            "{ev:?}"
        );
    }

    #[test]
    fn bounces_older_than_the_baseline_do_not_count() {
        let mut d = Detector::new(Params::default());
        // A heavy day two weeks ago (one a minute: in warm-up, no window),
        // then quiet.
        assert_eq!(feed(&mut d, "gmail.com", t0(), mins(1), 24 * 60), []);
        let start = t0() + chrono::Duration::days(14);
        let events = feed(&mut d, "gmail.com", start, mins(1), 30);
        let (i, ev) = &events[0];
        assert_eq!(*i, 19, "nothing expected any more: min_bounces decides");
        assert!(
            opened(ev).detail.ends_with("against 0.0 expected"),
            "{ev:?}"
        );
    }

    #[test]
    fn a_bounce_exactly_one_baseline_old_still_counts() {
        let p = Params {
            window: Duration::from_secs(600),
            baseline: Duration::from_secs(3600),
            factor: 2.0,
            min_bounces: 2,
            min_recipients: 1,
            warmup: Duration::ZERO,
            max_duration: Duration::from_secs(7200),
        };
        let detail_at = |age: chrono::Duration| {
            let mut d = Detector::new(p);
            d.observe(&sc("x"), t0(), "old@x");
            let at = t0() + age;
            d.observe(&sc("x"), at, "a@x");
            match &d.observe(&sc("x"), at, "b@x")[..] {
                [Event::Opened(a)] => a.detail.clone(),
                other => panic!("{other:?}"),
            }
        };
        // One bounce in the 50 minutes before the window: 1 x 10 / 50.
        assert!(detail_at(mins(60)).ends_with("against 0.2 expected"));
        assert!(detail_at(mins(60) + secs(1)).ends_with("against 0.0 expected"));
    }

    #[test]
    fn a_fresh_database_needs_much_stronger_evidence() {
        // The cold-start report: 25 unknown users to gmail.com within 30
        // minutes on a fresh database is an ordinary day, not an incident.
        let mut d = Detector::new(Params::default());
        let start = Utc.with_ymd_and_hms(2021, 4, 26, 11, 0, 0).unwrap();
        assert_eq!(feed(&mut d, "gmail.com", start, mins(1), 25), []);
        assert!(!Params::default().warmed_up(d.history_since(), start + mins(30)));

        // Five times min_bounces to five times min_recipients does.
        let mut d = Detector::new(Params::default());
        let events = feed(&mut d, "gmail.com", start, secs(10), 120);
        let (i, ev) = &events[0];
        assert_eq!(*i, 99, "WARMUP_STRENGTH x min_bounces");
        assert!(opened(ev).detail.contains("warm-up"), "{ev:?}");

        // Once history reaches `warmup`, normal strength applies.
        let mut d = Detector::new(Params::default());
        d.note(start - chrono::Duration::hours(24));
        assert!(Params::default().warmed_up(d.history_since(), start));
        let events = feed(&mut d, "gmail.com", start, mins(1), 25);
        assert_eq!(events[0].0, 19);
        let mut d = Detector::new(Params::default());
        d.note(start - chrono::Duration::hours(24) + secs(1));
        assert!(!Params::default().warmed_up(d.history_since(), start));
    }

    #[test]
    fn the_warm_up_caveat_says_how_much_history_there_is() {
        let p = Params::default();
        let at = t0() + chrono::Duration::days(1);
        assert_eq!(
            p.warmup_caveat(Some(at - mins(19)), at),
            "too little bounce history to judge bursts: 19m of the 1day anomaly detection \
             needs (until then only a burst 5x stronger counts)"
        );
        assert!(p.warmup_caveat(None, at).contains(": 0s of the 1day"));
        assert!(!p.warmed_up(None, at), "no history at all is not warm");
    }

    #[test]
    fn steady_traffic_on_a_fresh_scope_ends_its_window_while_bounces_keep_coming() {
        // Five a minute, every minute, for two days, from a fresh start:
        // strong enough to open a window in warm-up, but once the scope's
        // own history shows that this is its normal rate, the window ends.
        let mut d = Detector::new(Params::default());
        let start = t0();
        let events = feed(&mut d, "gmail.com", start, secs(12), 5 * 60 * 48);
        let summary = summarise(&events);
        assert_eq!(
            summary,
            [
                (99, true, start, None),
                // At 36:00 the half hour holds 150 bounces and the 36
                // minutes of history predict 31: 300 < 10 x 31.
                (180, false, start, Some(start + secs(12 * 179))),
            ],
            "one window, closed as the rate met the scope's own history"
        );
        assert!(d.open(&sc("gmail.com")).is_none());
    }

    #[test]
    fn a_burst_that_falls_back_closes_at_its_last_bounce_above_half_the_threshold() {
        let mut d = Detector::new(Params::default());
        normal_week(&mut d);
        let start = Utc.with_ymd_and_hms(2021, 4, 26, 11, 0, 0).unwrap();
        let burst = feed(&mut d, "icloud", start, mins(1), 60);
        assert_eq!(burst.len(), 1);
        // Then one every five minutes (12:04, 12:09, ...): at 12:29 the last
        // 30 minutes hold 6 bounces, fewer than min_bounces / 2 = 10; at
        // 12:24 they still held 10.
        let mut events = Vec::new();
        for k in 1..=10 {
            let at = start + mins(59 + 5 * k);
            for ev in d.observe(&sc("icloud"), at, &format!("late{k}@icloud.com")) {
                events.push((at, ev));
            }
        }
        assert_eq!(events.len(), 1, "{events:?}");
        let (at, ev) = &events[0];
        assert_eq!(*at, start + mins(89));
        assert_eq!(closed(ev).end, Some(start + mins(84)));
    }

    #[test]
    fn no_window_outlives_max_duration_without_fresh_evidence() {
        let mut d = Detector::new(Params::default());
        normal_week(&mut d);
        let start = Utc.with_ymd_and_hms(2021, 4, 26, 11, 0, 0).unwrap();
        // Two a minute for 20 hours: ten times the norm all along.
        let events = feed(&mut d, "icloud", start, secs(30), 2 * 60 * 20);
        let summary = summarise(&events);
        let twelve = chrono::Duration::hours(12);
        assert_eq!(
            summary[..3],
            [
                (19, true, start, None),
                (1440, false, start, Some(start + twelve)),
                (1440, true, start + twelve, None),
            ],
            "closed at 12 h, reopened on the evidence of that moment"
        );
        // Idle ticks close at max_duration too, at the last bounce before it.
        let mut d = Detector::new(Params::default());
        normal_week(&mut d);
        feed(&mut d, "icloud", start, secs(30), 40);
        d.adopt(Anomaly {
            scope: Scope::Provider("icloud".into()),
            start: start - chrono::Duration::hours(13),
            end: None,
            bounces: 1,
            detail: String::new(),
        });
        let closed_now = d.close_idle(start + mins(20));
        assert_eq!(
            closed(&closed_now[0]).end,
            Some(start - chrono::Duration::hours(1)),
            "capped at start + max_duration"
        );
    }

    #[test]
    fn an_adopted_window_closes_by_the_same_rules() {
        let mut d = Detector::new(Params::default());
        let start = Utc.with_ymd_and_hms(2021, 4, 26, 11, 0, 0).unwrap();
        d.adopt(Anomaly {
            scope: Scope::Provider("icloud".into()),
            start,
            end: None,
            bounces: 20,
            detail: "stored".into(),
        });
        assert!(d.open(&sc("icloud")).is_some());
        assert_eq!(d.open_all().count(), 1);
        let ev = d.close_idle(start + mins(30));
        assert_eq!(
            closed(&ev[0]).end,
            Some(start),
            "no bounce seen: it ends where it began"
        );
        assert_eq!(closed(&ev[0]).detail, "stored");
    }

    #[test]
    fn one_address_retried_is_no_anomaly() {
        let mut d = Detector::new(Params::default());
        normal_week(&mut d);
        let start = Utc.with_ymd_and_hms(2021, 4, 26, 11, 0, 0).unwrap();
        for i in 0..100 {
            let who = format!("user{}@icloud.com", i % 9);
            assert_eq!(d.observe(&sc("icloud"), start + mins(i / 10), &who), []);
        }
        // Ten recipients are enough.
        let ev = d.observe(&sc("icloud"), start + mins(10), "user9@icloud.com");
        assert!(matches!(ev[..], [Event::Opened(_)]), "{ev:?}");
    }

    #[test]
    fn scopes_are_separate() {
        let mut d = Detector::new(Params::default());
        normal_week(&mut d);
        let start = Utc.with_ymd_and_hms(2021, 4, 26, 11, 0, 0).unwrap();
        for i in 0..40 {
            d.observe(
                &sc("icloud"),
                start + mins(i / 2),
                &format!("a{i}@icloud.com"),
            );
        }
        assert!(d.open(&sc("icloud")).is_some());
        assert!(d.open(&sc("me.com")).is_none());
    }

    #[test]
    fn absurd_times_and_durations_do_not_panic() {
        let p = Params {
            window: Duration::from_secs(u64::MAX / 4),
            baseline: Duration::from_secs(u64::MAX / 2),
            max_duration: Duration::from_secs(u64::MAX),
            warmup: Duration::from_secs(u64::MAX),
            ..Params::default()
        };
        let mut d = Detector::new(p);
        for at in [DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC, t0()] {
            d.observe(&sc("x"), at, "a@x");
            d.close_idle(at);
        }
        let mut d = Detector::new(Params::default());
        for at in [DateTime::<Utc>::MAX_UTC, DateTime::<Utc>::MIN_UTC] {
            d.observe(&sc("x"), at, "a@x");
            d.close_idle(at);
        }
    }
}
