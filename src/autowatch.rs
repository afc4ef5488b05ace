//! Pure: which unlisted domains are watched because they bounced. A domain
//! is watched from its first bounce until `keep` after its last; at
//! `max_domains` the least recently bounced makes room. No IO: the daemon
//! feeds it bounces and time, and acts on what it says.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::domain::DomainName;

/// `auto_watch:` in the watchlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// How long after its last bounce a domain stays watched.
    pub keep: Duration,
    /// How many domains at most; the least recently bounced goes first.
    pub max_domains: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            keep: Duration::from_secs(30 * 86_400),
            max_domains: 100_000,
        }
    }
}

/// One auto-watched domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub since: DateTime<Utc>,
    pub last_bounce: DateTime<Utc>,
}

/// What a bounce changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Change {
    /// Newly watched: check it now.
    pub added: Vec<DomainName>,
    /// No longer watched (evicted at the cap, or expired).
    pub dropped: Vec<DomainName>,
    /// Not watched yet: the cap is reached and every watched domain has an
    /// open window.
    pub waiting: Vec<DomainName>,
}

/// The auto-watched domains.
#[derive(Debug, Default)]
pub struct AutoWatched {
    settings: Settings,
    entries: HashMap<DomainName, Entry>,
    /// (last bounce, domain): the eviction and expiry order.
    by_last: BTreeSet<(DateTime<Utc>, DomainName)>,
}

impl AutoWatched {
    pub fn new(settings: Settings) -> Self {
        AutoWatched {
            settings,
            ..AutoWatched::default()
        }
    }

    /// Takes back what an earlier process watched.
    pub fn restore(&mut self, list: impl IntoIterator<Item = (DomainName, Entry)>) {
        for (d, e) in list {
            self.insert(d, e);
        }
    }

    fn insert(&mut self, d: DomainName, e: Entry) {
        if let Some(old) = self.entries.insert(d.clone(), e) {
            self.by_last.remove(&(old.last_bounce, d.clone()));
        }
        self.by_last.insert((e.last_bounce, d));
    }

    /// A bounce for `d` at `at` (an unlisted domain). At the cap, the least
    /// recently bounced domain that is not `pinned` (an open window: its
    /// incident goes on) makes room; when every one is pinned, `d` waits
    /// (`change.waiting`): no window closes to make room.
    pub fn bounced(
        &mut self,
        d: &DomainName,
        at: DateTime<Utc>,
        change: &mut Change,
        pinned: &dyn Fn(&DomainName) -> bool,
    ) {
        let entry = match self.entries.get(d) {
            Some(e) => Entry {
                since: e.since,
                last_bounce: e.last_bounce.max(at),
            },
            None => {
                if self.settings.max_domains == 0 {
                    return;
                }
                while self.entries.len() >= self.settings.max_domains {
                    let Some(oldest) = self.by_last.iter().find(|(_, d)| !pinned(d)).cloned()
                    else {
                        change.waiting.push(d.clone());
                        return;
                    };
                    self.by_last.remove(&oldest);
                    self.entries.remove(&oldest.1);
                    change.added.retain(|a| *a != oldest.1);
                    change.dropped.push(oldest.1);
                }
                change.added.push(d.clone());
                Entry {
                    since: at,
                    last_bounce: at,
                }
            }
        };
        self.insert(d.clone(), entry);
    }

    /// Drops the domains whose last bounce is more than `keep` before
    /// `now`, except the `pinned` (they go once their window has closed).
    pub fn expire(
        &mut self,
        now: DateTime<Utc>,
        change: &mut Change,
        pinned: &dyn Fn(&DomainName) -> bool,
    ) {
        let keep = chrono::Duration::from_std(self.settings.keep).unwrap_or(chrono::Duration::MAX);
        let Some(limit) = now.checked_sub_signed(keep) else {
            return;
        };
        let gone: Vec<(DateTime<Utc>, DomainName)> = self
            .by_last
            .iter()
            .take_while(|(last, _)| *last < limit)
            .filter(|(_, d)| !pinned(d))
            .cloned()
            .collect();
        for key in gone {
            self.by_last.remove(&key);
            self.entries.remove(&key.1);
            change.dropped.push(key.1);
        }
    }

    /// Forgets a domain (a watchlist entry now covers it).
    pub fn forget(&mut self, d: &DomainName) -> bool {
        match self.entries.remove(d) {
            Some(e) => {
                self.by_last.remove(&(e.last_bounce, d.clone()));
                true
            }
            None => false,
        }
    }

    pub fn get(&self, d: &DomainName) -> Option<Entry> {
        self.entries.get(d).copied()
    }

    pub fn domains(&self) -> impl Iterator<Item = (&DomainName, &Entry)> {
        self.entries.iter()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(h: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap() + chrono::Duration::hours(h)
    }
    fn d(s: &str) -> DomainName {
        DomainName::parse(s).unwrap()
    }

    fn none(_: &DomainName) -> bool {
        false
    }

    #[test]
    fn kept_after_the_last_bounce_then_dropped() {
        let mut w = AutoWatched::new(Settings {
            keep: Duration::from_secs(24 * 3600),
            max_domains: 10,
        });
        let mut c = Change::default();
        w.bounced(&d("a.example"), t(0), &mut c, &none);
        w.bounced(&d("a.example"), t(10), &mut c, &none);
        assert_eq!(c.added, [d("a.example")], "added once");
        assert_eq!(w.get(&d("a.example")).unwrap().since, t(0));
        let mut c = Change::default();
        w.expire(t(33), &mut c, &none);
        assert!(
            c.dropped.is_empty(),
            "24 h after the last bounce, not the first"
        );
        w.expire(t(35), &mut c, &none);
        assert_eq!(c.dropped, [d("a.example")]);
        assert!(w.is_empty());
    }

    #[test]
    fn the_cap_evicts_the_least_recently_bounced() {
        let mut w = AutoWatched::new(Settings {
            keep: Duration::from_secs(3600),
            max_domains: 2,
        });
        let mut c = Change::default();
        w.bounced(&d("a.example"), t(0), &mut c, &none);
        w.bounced(&d("b.example"), t(1), &mut c, &none);
        w.bounced(&d("a.example"), t(2), &mut c, &none);
        w.bounced(&d("c.example"), t(3), &mut c, &none);
        assert_eq!(c.dropped, [d("b.example")]);
        assert_eq!(c.added, [d("a.example"), d("c.example")]);
        assert_eq!(w.len(), 2);
        assert!(w.forget(&d("a.example")));
        assert_eq!(w.len(), 1);
    }

    /// Issue 19, item 10: a domain with an open window is never evicted nor
    /// expired (its incident is not over); at the cap the newcomer waits.
    #[test]
    fn a_domain_with_an_open_window_is_never_evicted() {
        let mut w = AutoWatched::new(Settings {
            keep: Duration::from_secs(3600),
            max_domains: 2,
        });
        let open = |x: &DomainName| x.as_str() == "a.example";
        let mut c = Change::default();
        w.bounced(&d("a.example"), t(0), &mut c, &open);
        w.bounced(&d("b.example"), t(1), &mut c, &open);
        w.bounced(&d("c.example"), t(2), &mut c, &open);
        assert_eq!(c.dropped, [d("b.example")], "a is older, but pinned");
        assert!(w.get(&d("a.example")).is_some());
        // Every watched domain pinned: the newcomer waits.
        let both = |x: &DomainName| x.as_str() != "z.example";
        let mut c = Change::default();
        w.bounced(&d("z.example"), t(3), &mut c, &both);
        assert_eq!((c.added.len(), c.dropped.len()), (0, 0));
        assert_eq!(c.waiting, [d("z.example")]);
        assert!(w.get(&d("z.example")).is_none());
        // Long after its last bounce, still watched while its window is open.
        let mut c = Change::default();
        w.expire(t(100), &mut c, &open);
        assert_eq!(c.dropped, [d("c.example")]);
        assert!(w.get(&d("a.example")).is_some());
        w.expire(t(100), &mut c, &none);
        assert!(w.is_empty());
    }
}
