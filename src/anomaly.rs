//! Anomaly windows: a burst of unknown-user bounces for one domain or one
//! provider, far above that scope's own trailing rate, over many distinct
//! recipients, with no DNS change at all. Apple, 26 April 2021: six hours
//! of `550 5.1.1 … user lookup success but no user record found` to valid
//! iCloud, me.com and mac.com addresses.
//!
//! Pure: fed bounces in time order (time is data), it says when a burst
//! starts and ends. A burst is recognised only after enough bounces; its
//! window starts at the first of them, so earlier answers can be revisited.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, Utc};

/// Thresholds. The defaults, and why:
/// - `window` 30 min: long enough to gather a burst from a mid-size sender,
///   short enough that a six-hour outage is recognised in its first half hour;
/// - `baseline` 7 days: a week covers weekly sending rhythms;
/// - `factor` 10×: a scope's unknown-user rate moves by a few times with
///   campaign size; ten times its own normal is an event;
/// - `min_bounces` 20 and `min_recipients` 10: a handful of bounces, or one
///   address retried, is never an anomaly whatever the baseline.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    pub window: Duration,
    pub baseline: Duration,
    pub factor: f64,
    pub min_bounces: usize,
    pub min_recipients: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            window: Duration::from_secs(30 * 60),
            baseline: Duration::from_secs(7 * 24 * 3600),
            factor: 10.0,
            min_bounces: 20,
            min_recipients: 10,
        }
    }
}

/// One anomaly window of one scope.
#[derive(Debug, Clone, PartialEq)]
pub struct Anomaly {
    /// `example.com`, or a provider id such as `icloud`.
    pub scope: String,
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

/// The detector, across scopes.
#[derive(Debug, Default)]
pub struct Detector {
    params: Params,
    scopes: HashMap<String, ScopeState>,
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

impl Detector {
    pub fn new(params: Params) -> Self {
        Detector {
            params,
            scopes: HashMap::new(),
        }
    }

    /// An unknown-user bounce for `recipient` at `at` in `scope`.
    pub fn observe(&mut self, scope: &str, at: DateTime<Utc>, recipient: &str) -> Option<Event> {
        let p = self.params;
        let window = chrono::Duration::from_std(p.window).expect("window fits");
        let baseline = chrono::Duration::from_std(p.baseline).expect("baseline fits");
        let st = self.scopes.entry(scope.to_string()).or_default();
        let r = fnv(recipient);
        st.recent.push_back((at, r));
        *st.distinct.entry(r).or_default() += 1;
        st.last = Some(at);
        while let Some(&(t, who)) = st.recent.front() {
            if at - t < window {
                break;
            }
            st.recent.pop_front();
            if let Some(n) = st.distinct.get_mut(&who) {
                *n -= 1;
                if *n == 0 {
                    st.distinct.remove(&who);
                }
            }
            st.older.push_back(t);
        }
        while st.older.front().is_some_and(|t| at - *t > baseline) {
            st.older.pop_front();
        }
        let (recent, distinct, before) = (st.recent.len(), st.distinct.len(), st.older.len());
        let history = (baseline - window).num_seconds().max(1) as f64;
        let expected = before as f64 * window.num_seconds() as f64 / history;
        let burst = recent >= p.min_bounces
            && distinct >= p.min_recipients
            && recent as f64 >= p.factor * expected.max(1.0);
        match st.open.as_mut() {
            None if burst => {
                let a = Anomaly {
                    scope: scope.to_string(),
                    start: st.recent.front().map_or(at, |(t, _)| *t),
                    end: None,
                    bounces: recent,
                    detail: format!(
                        "{} unknown-user bounces to {} recipients in {}, against {expected:.1} expected",
                        recent,
                        distinct,
                        humantime::format_duration(p.window)
                    ),
                };
                st.open = Some(a.clone());
                Some(Event::Opened(a))
            }
            Some(a) => {
                a.bounces += 1;
                None
            }
            None => None,
        }
    }

    /// Closes the anomalies of scopes whose bounces have stopped: none in
    /// the last `window` before `now`. Their end is their last bounce.
    pub fn close_idle(&mut self, now: DateTime<Utc>) -> Vec<Event> {
        let window = chrono::Duration::from_std(self.params.window).expect("window fits");
        let mut out = Vec::new();
        for st in self.scopes.values_mut() {
            if let (Some(a), Some(last)) = (st.open.as_ref(), st.last)
                && now - last >= window
            {
                let mut a = a.clone();
                a.end = Some(last);
                st.open = None;
                out.push(Event::Closed(a));
            }
        }
        out.sort_by_key(|e| match e {
            Event::Opened(a) | Event::Closed(a) => a.scope.clone(),
        });
        out
    }

    /// The open anomaly of a scope, if any.
    pub fn open(&self, scope: &str) -> Option<&Anomaly> {
        self.scopes.get(scope).and_then(|s| s.open.as_ref())
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

    /// A week of normal life: a few unknown users a day for icloud.
    fn normal_week(d: &mut Detector) {
        for day in 0..7 {
            for k in 0..3 {
                let at = t0() + chrono::Duration::days(day) + chrono::Duration::hours(8 * k);
                assert_eq!(
                    d.observe("icloud", at, &format!("old{day}-{k}@icloud.com")),
                    None
                );
            }
        }
    }

    #[test]
    fn an_apple_like_burst_opens_a_window_at_its_first_bounce_and_closes_after() {
        let mut d = Detector::new(Params::default());
        normal_week(&mut d);
        let start = Utc.with_ymd_and_hms(2021, 4, 26, 11, 0, 0).unwrap();
        let mut opened = None;
        for i in 0..360 {
            // One a minute for six hours, each a different valid address.
            let at = start + mins(i);
            if let Some(Event::Opened(a)) = d.observe("icloud", at, &format!("user{i}@icloud.com"))
            {
                assert!(opened.is_none(), "one window, not many");
                opened = Some((i, a));
            }
        }
        let (i, a) = opened.expect("the burst is recognised");
        assert_eq!(i, 19, "after min_bounces bounces");
        assert_eq!(
            a.start, start,
            "the window starts at the first bounce of the burst"
        );
        assert!(
            d.close_idle(start + mins(370)).is_empty(),
            "not idle for a full window yet"
        );
        let closed = d.close_idle(start + mins(359 + 30));
        assert_eq!(closed.len(), 1);
        let Event::Closed(a) = &closed[0] else {
            panic!()
        };
        assert_eq!(a.end, Some(start + mins(359)));
        assert_eq!(a.bounces, 360);
    }

    #[test]
    fn steady_high_traffic_is_no_anomaly() {
        let mut d = Detector::new(Params::default());
        // A big sender: 60 unknown users an hour, every hour, for eight days.
        for minute in 0..(8 * 24 * 60) {
            let at = t0() + mins(minute);
            let ev = d.observe("gmail.com", at, &format!("u{minute}@gmail.com"));
            if minute > 24 * 60 {
                assert_eq!(ev, None, "minute {minute}");
            }
        }
    }

    #[test]
    fn one_address_retried_is_no_anomaly() {
        let mut d = Detector::new(Params::default());
        normal_week(&mut d);
        let start = Utc.with_ymd_and_hms(2021, 4, 26, 11, 0, 0).unwrap();
        for i in 0..100 {
            let who = format!("user{}@icloud.com", i % 5);
            assert_eq!(d.observe("icloud", start + mins(i / 10), &who), None);
        }
    }

    #[test]
    fn scopes_are_separate() {
        let mut d = Detector::new(Params::default());
        let start = Utc.with_ymd_and_hms(2021, 4, 26, 11, 0, 0).unwrap();
        for i in 0..40 {
            d.observe("icloud", start + mins(i / 2), &format!("a{i}@icloud.com"));
        }
        assert!(d.open("icloud").is_some());
        assert!(d.open("me.com").is_none());
    }
}
