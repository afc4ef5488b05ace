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

    /// A bounce for `d` at `at` (an unlisted domain).
    pub fn bounced(&mut self, d: &DomainName, at: DateTime<Utc>, change: &mut Change) {
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
                    let Some((_, oldest)) = self.by_last.pop_first() else {
                        break;
                    };
                    self.entries.remove(&oldest);
                    change.added.retain(|a| *a != oldest);
                    change.dropped.push(oldest);
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

    /// Domains whose last bounce is more than `keep` before `now` go.
    pub fn expire(&mut self, now: DateTime<Utc>, change: &mut Change) {
        let keep = chrono::Duration::from_std(self.settings.keep).unwrap_or(chrono::Duration::MAX);
        let Some(limit) = now.checked_sub_signed(keep) else {
            return;
        };
        while let Some((last, _)) = self.by_last.first() {
            if *last >= limit {
                break;
            }
            let (_, d) = self.by_last.pop_first().expect("first exists");
            self.entries.remove(&d);
            change.dropped.push(d);
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

    #[test]
    fn kept_after_the_last_bounce_then_dropped() {
        let mut w = AutoWatched::new(Settings {
            keep: Duration::from_secs(24 * 3600),
            max_domains: 10,
        });
        let mut c = Change::default();
        w.bounced(&d("a.example"), t(0), &mut c);
        w.bounced(&d("a.example"), t(10), &mut c);
        assert_eq!(c.added, [d("a.example")], "added once");
        assert_eq!(w.get(&d("a.example")).unwrap().since, t(0));
        let mut c = Change::default();
        w.expire(t(33), &mut c);
        assert!(
            c.dropped.is_empty(),
            "24 h after the last bounce, not the first"
        );
        w.expire(t(35), &mut c);
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
        w.bounced(&d("a.example"), t(0), &mut c);
        w.bounced(&d("b.example"), t(1), &mut c);
        w.bounced(&d("a.example"), t(2), &mut c);
        w.bounced(&d("c.example"), t(3), &mut c);
        assert_eq!(c.dropped, [d("b.example")]);
        assert_eq!(c.added, [d("a.example"), d("c.example")]);
        assert_eq!(w.len(), 2);
        assert!(w.forget(&d("a.example")));
        assert_eq!(w.len(), 1);
    }
}
