//! Our resolver's health: is a check's answer the domain's, or our own
//! resolver failing or lying? Pure, like `detect`: fed every check of every
//! domain (time is a parameter), it holds back answers it cannot vouch for
//! and says when an outage of our resolver starts and ends.

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::dns::Answer;

/// Our own resolver is the likely culprit when most domains fail at once.
/// Each domain counts once, by its latest check within the last `span`
/// (a domain re-checked every few seconds while it fails weighs no more
/// than one checked every five minutes).
#[derive(Debug, Clone)]
pub struct OutageDetector {
    span: chrono::Duration,
    /// Fewest domains checked in the span before a verdict is possible.
    min_checks: usize,
    latest: std::collections::HashMap<String, Latest>,
    /// Every check's time and domain, oldest first (for the span).
    order: VecDeque<(DateTime<Utc>, String)>,
    /// Domains whose latest check lies in the span, and how many of them failed.
    in_span: usize,
    failing: usize,
    /// Start of the current outage.
    pub since: Option<DateTime<Utc>>,
}

/// A domain's latest check.
#[derive(Debug, Clone, Copy)]
struct Latest {
    at: DateTime<Utc>,
    bad: bool,
    /// When its current run of bad checks began.
    bad_since: Option<DateTime<Utc>>,
    /// Whether it is counted in the span.
    counted: bool,
}

/// The outage detector's verdict on one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutageEvent {
    Started(DateTime<Utc>),
    Ended {
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    },
}

impl OutageDetector {
    /// Starts when at least 80 % of the domains checked in the span failed
    /// at their latest check (and at least `min_checks` were checked); ends
    /// below 20 % (hysteresis against flapping).
    pub const START_FRACTION: f64 = 0.8;
    pub const END_FRACTION: f64 = 0.2;
    /// Below this fraction of failing domains, the world is healthy enough
    /// to believe a surprising answer.
    pub const HEALTHY_FRACTION: f64 = 0.5;
    /// Checks remembered at most (the span's, on a huge watchlist).
    const MAX_ORDER: usize = 1_000_000;

    pub fn new(span: Duration, min_checks: usize) -> Self {
        OutageDetector {
            span: chrono::Duration::from_std(span).unwrap_or(chrono::Duration::MAX),
            min_checks: min_checks.max(1),
            latest: Default::default(),
            order: VecDeque::new(),
            in_span: 0,
            failing: 0,
            since: None,
        }
    }

    /// Takes over an outage an earlier process opened (and stored): it ends
    /// by this detector's rules, once resolution works again.
    pub fn adopt(&mut self, since: DateTime<Utc>) {
        self.since = Some(self.since.map_or(since, |s| s.min(since)));
    }

    /// The fraction of domains in the span whose latest check failed;
    /// `None` before `min_checks` domains were checked in it.
    pub fn failing_fraction(&self) -> Option<f64> {
        (self.in_span >= self.min_checks).then(|| self.failing as f64 / self.in_span as f64)
    }

    fn uncount(&mut self, domain: &str) {
        if let Some(l) = self.latest.get_mut(domain)
            && l.counted
        {
            l.counted = false;
            self.in_span -= 1;
            self.failing -= usize::from(l.bad);
        }
    }

    /// A check of `domain` at `at`; `bad` when every upstream failed (or its
    /// answer was held as suspicious).
    pub fn record(&mut self, domain: &str, at: DateTime<Utc>, bad: bool) -> Option<OutageEvent> {
        let previous = self.latest.get(domain).copied();
        self.uncount(domain);
        let bad_since = bad.then(|| previous.and_then(|p| p.bad_since).map_or(at, |s| s.min(at)));
        self.latest.insert(
            domain.to_string(),
            Latest {
                at,
                bad,
                bad_since,
                counted: true,
            },
        );
        self.in_span += 1;
        self.failing += usize::from(bad);
        self.order.push_back((at, domain.to_string()));
        while let Some((t, d)) = self.order.front() {
            let expired = at.signed_duration_since(*t) > self.span;
            if !expired && self.order.len() <= Self::MAX_ORDER {
                break;
            }
            let (t, d) = (*t, d.clone());
            self.order.pop_front();
            if self.latest.get(&d).is_some_and(|l| l.at == t) {
                self.uncount(&d);
            }
        }
        let fraction = self.failing_fraction()?;
        match self.since {
            None if fraction >= Self::START_FRACTION => {
                let start = self
                    .latest
                    .values()
                    .filter(|l| l.counted)
                    .filter_map(|l| l.bad_since)
                    .min()
                    .unwrap_or(at);
                self.since = Some(start);
                Some(OutageEvent::Started(start))
            }
            Some(start) if fraction < Self::END_FRACTION => {
                self.since = None;
                Some(OutageEvent::Ended { start, end: at })
            }
            _ => None,
        }
    }
}

/// Whether a check's answer can be believed, or says more about our own
/// resolver than about the domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    Believe,
    /// Held: not a change of the domain's, not its baseline either; the
    /// sentence says why.
    Hold(String),
}

/// Our resolver's health, from every check of every domain: the outage
/// detector, and the answers it holds back. A resolver that lies (a captive
/// portal, a broken forwarder, DNS filtering) answers NXDOMAIN for every
/// name, or one identical answer for all: when most watched domains change
/// at once, it is ours, not theirs. So any departure from a domain's
/// baseline (and NXDOMAIN for a domain with no baseline yet) is *held*: no
/// change, no baseline, counted as a failure, re-checked soon. It is
/// believed once the other domains' checks since it was first held (at
/// least as many as the outage detector needs) show a healthy resolver;
/// when they do not, the held answers add up to an outage, one global
/// window. A real change is detected a few checks later than it is seen;
/// its window still starts where the old answer was last seen.
#[derive(Debug, Clone)]
pub struct Health {
    pub outage: OutageDetector,
    /// Who votes on whether our resolver is broken.
    electorate: Electorate,
    /// Domains whose answer is held.
    held: std::collections::HashMap<String, Held>,
    /// Checks recorded so far.
    checks: u64,
    /// Watched domains.
    domains: usize,
    /// With fewer than three domains, nothing tells our failure from theirs.
    enabled: bool,
}

/// Who votes on whether our resolver is broken. A domain anyone can make
/// us watch (an auto-watched one: a typo a signup form collected, a name a
/// stranger's bounce lists) or one on its first check says nothing about
/// our resolver when it answers NXDOMAIN or times out: that is a fact about
/// that domain. The question is answered by the listed domains with a
/// known-good history (a believed answer other than NXDOMAIN); while fewer
/// than three have one (a fresh database), by every listed domain and the
/// auto-watched ones with a known-good history. An auto-watched domain
/// without one never votes.
#[derive(Debug, Clone, Default)]
struct Electorate {
    /// The listed domains; `None`: no watchlist given, every domain votes.
    listed: Option<std::collections::HashSet<String>>,
    good_listed: std::collections::HashSet<String>,
    good_auto: std::collections::HashSet<String>,
}

impl Electorate {
    /// Listed domains with a known-good history needed to decide alone.
    const QUORUM: usize = 3;

    fn votes(&self, domain: &str) -> bool {
        let Some(listed) = &self.listed else {
            return true;
        };
        if self.good_listed.len() >= Self::QUORUM {
            self.good_listed.contains(domain)
        } else {
            listed.contains(domain) || self.good_auto.contains(domain)
        }
    }

    /// How many domains vote; `None` when every domain does.
    fn voters(&self) -> Option<usize> {
        let listed = self.listed.as_ref()?;
        Some(if self.good_listed.len() >= Self::QUORUM {
            self.good_listed.len()
        } else {
            listed.len() + self.good_auto.len()
        })
    }

    /// Whether `domain` has a known-good history now.
    fn note(&mut self, domain: &str, good: bool) {
        let Some(listed) = &self.listed else { return };
        let set = if listed.contains(domain) {
            &mut self.good_listed
        } else {
            &mut self.good_auto
        };
        if good {
            if !set.contains(domain) {
                set.insert(domain.to_string());
            }
        } else {
            set.remove(domain);
        }
    }
}

/// A held answer and the check counter when it was first held.
#[derive(Debug, Clone)]
struct Held {
    answer: Answer,
    checks_then: u64,
    /// The held domain's own checks since (they say nothing of the others).
    own: u64,
}

impl Health {
    /// The span recent checks are judged over.
    pub const SPAN: Duration = Duration::from_secs(600);

    /// For `domains` names that all vote (until [`Health::watch`] says
    /// which are listed).
    pub fn new(domains: usize) -> Self {
        let mut h = Health {
            outage: OutageDetector::new(Self::SPAN, usize::MAX),
            electorate: Electorate::default(),
            held: Default::default(),
            checks: 0,
            domains: 0,
            enabled: false,
        };
        h.scale(domains);
        h
    }

    /// Sized for `voters` voting domains: with fewer than three nothing can
    /// be compared. Everything it knows carries over: an outage, held
    /// answers and the recent checks (a watchlist change, an auto-watched
    /// domain added, must not forget the healthy checks of a moment ago).
    fn scale(&mut self, voters: usize) {
        self.domains = voters;
        self.enabled = voters >= 3;
        self.outage.min_checks = if self.enabled {
            voters.min(20)
        } else {
            usize::MAX
        };
    }

    fn rescale(&mut self) {
        if let Some(n) = self.electorate.voters()
            && n != self.domains
        {
            self.scale(n);
        }
    }

    /// The watched domains now: the `listed` ones and the `auto`-watched.
    /// Domains watched no more leave the electorate.
    pub fn watch<'a>(
        &mut self,
        listed: impl IntoIterator<Item = &'a str>,
        auto: impl IntoIterator<Item = &'a str>,
    ) {
        let listed: std::collections::HashSet<String> =
            listed.into_iter().map(str::to_string).collect();
        let auto: std::collections::HashSet<&str> = auto.into_iter().collect();
        let e = &mut self.electorate;
        // A domain moved between the two keeps its history.
        let good: Vec<String> = e.good_listed.drain().chain(e.good_auto.drain()).collect();
        for d in good {
            if listed.contains(&d) {
                e.good_listed.insert(d);
            } else if auto.contains(d.as_str()) {
                e.good_auto.insert(d);
            }
        }
        e.listed = Some(listed);
        self.rescale();
    }

    /// Whether `domain` has a known-good history (a believed answer other
    /// than NXDOMAIN), as of its latest check.
    pub fn known(&mut self, domain: &str, good: bool) {
        self.electorate.note(domain, good);
        self.rescale();
    }

    /// Whether the other domains have been checked enough since `h` was
    /// first held (as often as the outage detector needs domains, at most
    /// once each), and most of them are fine.
    fn others_healthy(&self, h: &Held) -> bool {
        let others = (self.checks - h.checks_then).saturating_sub(h.own);
        let enough = self.outage.min_checks.min(self.domains.saturating_sub(1));
        self.outage.since.is_none()
            && others >= enough as u64
            && self
                .outage
                .failing_fraction()
                .is_some_and(|f| f < OutageDetector::HEALTHY_FRACTION)
    }

    /// Judges `domain`'s consensus `answer` (`None`: every upstream failed)
    /// against its `baseline`.
    pub fn assess(
        &mut self,
        domain: &str,
        baseline: Option<&Answer>,
        answer: Option<&Answer>,
    ) -> Trust {
        let Some(answer) = answer else {
            return Trust::Believe;
        };
        if baseline == Some(answer) || !self.enabled {
            self.held.remove(domain);
            return Trust::Believe;
        }
        let why = match baseline {
            Some(b) => format!("{b} → {answer}"),
            None if *answer == Answer::NxDomain => "NXDOMAIN for a watched domain".to_string(),
            None => {
                self.held.remove(domain);
                return Trust::Believe;
            }
        };
        match self.held.get(domain) {
            Some(h) if h.answer == *answer => {
                if self.others_healthy(h) {
                    self.held.remove(domain);
                    return Trust::Believe;
                }
            }
            _ => {
                self.held.insert(
                    domain.to_string(),
                    Held {
                        answer: answer.clone(),
                        checks_then: self.checks,
                        own: 0,
                    },
                );
            }
        }
        Trust::Hold(format!(
            "held: {why}, believed once the other domains show that our resolver is healthy"
        ))
    }

    /// Counts a check of `domain`: `bad` when every upstream failed or its
    /// answer was held.
    /// A domain that does not vote (see [`Electorate`]) counts for nothing.
    pub fn record(&mut self, domain: &str, at: DateTime<Utc>, bad: bool) -> Option<OutageEvent> {
        if !self.electorate.votes(domain) {
            return None;
        }
        self.checks += 1;
        if let Some(h) = self.held.get_mut(domain) {
            h.own += 1;
        }
        self.outage.record(domain, at, bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::tests::{mx, t};

    /// A health detector for `n` domains, each checked once, answering its
    /// own MX.
    fn settled(n: i64) -> Health {
        let mut h = Health::new(n as usize);
        for i in 0..n {
            let (d, own) = (format!("d{i}.example"), own(i));
            assert_eq!(h.assess(&d, Some(&own), Some(&own)), Trust::Believe);
            h.record(&d, t(i), false);
        }
        h
    }

    fn own(i: i64) -> Answer {
        Answer::Records(mx(&[(10, &format!("mx.d{i}.example"))]))
    }

    #[test]
    fn resolver_outage_needs_most_domains_failing() {
        let d = |i: i64| format!("d{i}.example");
        let mut o = OutageDetector::new(Duration::from_secs(300), 10);
        for i in 0..9 {
            assert_eq!(
                o.record(&d(i), t(i), true),
                None,
                "too few domains to judge"
            );
        }
        assert_eq!(
            o.record(&d(9), t(9), true),
            Some(OutageEvent::Started(t(0)))
        );
        assert_eq!(o.failing_fraction(), Some(1.0));
        // Recovery, domain by domain: 9 of 10 still failing is no end, nor 3.
        for i in 0..8 {
            assert_eq!(o.record(&d(i), t(10 + i), false), None, "{i}");
        }
        assert_eq!(o.failing_fraction(), Some(0.2));
        assert_eq!(
            o.record(&d(8), t(18), false),
            Some(OutageEvent::Ended {
                start: t(0),
                end: t(18)
            }),
            "ended once fewer than 20 % of domains fail"
        );
        assert!(o.since.is_none());

        // One domain in three failing is their problem, not ours.
        let mut o = OutageDetector::new(Duration::from_secs(300), 10);
        for i in 0..100 {
            assert_eq!(o.record(&d(i % 30), t(i), i % 3 == 0), None);
        }
        // 7 of 9 failing (78 %) is not yet an outage; the 8th of 10 (80 %) is.
        let mut o = OutageDetector::new(Duration::from_secs(300), 9);
        for i in 0..2 {
            o.record(&d(i), t(i), false);
        }
        for i in 2..9 {
            assert_eq!(o.record(&d(i), t(i), true), None, "{i}");
        }
        assert_eq!(
            o.record(&d(9), t(9), true),
            Some(OutageEvent::Started(t(2)))
        );
    }

    #[test]
    fn a_domain_rechecked_often_counts_once() {
        let d = |i: i64| format!("d{i}.example");
        let mut o = OutageDetector::new(Duration::from_secs(600), 5);
        for i in 0..5 {
            o.record(&d(i), t(i), false);
        }
        // One failing domain re-checked many times is one domain in five.
        for k in 0..50 {
            assert_eq!(o.record(&d(0), t(10 + k), true), None);
        }
        assert_eq!(o.failing_fraction(), Some(0.2));
        // Checks older than the span drop out.
        assert_eq!(
            o.record(&d(0), t(700), true),
            None,
            "one domain in the span"
        );
        assert_eq!(o.failing_fraction(), None);
    }

    #[test]
    fn held_answers_are_believed_when_the_others_are_healthy_and_pile_up_into_an_outage_when_not() {
        let d = |i: i64| format!("d{i}.example");
        let mut h = settled(10);
        // One domain changes: held until the nine others have been checked
        // again (min_checks = 10, but there are only nine others).
        let new = Answer::Records(mx(&[(10, "mx01.mail.icloud.com")]));
        let held =
            |h: &mut Health| matches!(h.assess(&d(0), Some(&own(0)), Some(&new)), Trust::Hold(_));
        assert!(held(&mut h));
        h.record(&d(0), t(20), true);
        for i in 1..9 {
            h.record(&d(i), t(20 + i), false);
            // Its own re-checks do not count as the others'.
            assert!(held(&mut h), "{i} others");
            h.record(&d(0), t(20 + i), true);
        }
        h.record(&d(9), t(30), false);
        assert!(!held(&mut h), "nine others");
        // With 30 domains, 20 others (the outage detector's minimum) suffice.
        let mut h = settled(30);
        assert!(held(&mut h));
        h.record(&d(0), t(40), true);
        for i in 1..20 {
            h.record(&d(i), t(40 + i), false);
        }
        assert!(held(&mut h), "19 others");
        h.record(&d(0), t(60), true);
        h.record(&d(20), t(61), false);
        assert!(!held(&mut h), "20 others");

        // Every domain answers NXDOMAIN: all held, then an outage.
        let mut h = settled(10);
        let mut started = None;
        for k in 0..3 {
            for i in 0..10 {
                let trust = h.assess(&d(i), Some(&own(i)), Some(&Answer::NxDomain));
                assert!(matches!(trust, Trust::Hold(_)), "{k} {i}");
                if let Some(ev) = h.record(&d(i), t(100 * (k + 1) + i), true) {
                    started = Some(ev);
                }
            }
        }
        assert_eq!(started, Some(OutageEvent::Started(t(100))));
        // Fewer than three domains: nothing to compare with, believed at once.
        let mut h = Health::new(2);
        assert_eq!(
            h.assess(&d(0), Some(&own(0)), Some(&Answer::NxDomain)),
            Trust::Believe
        );
        // A first answer is believed unless it is NXDOMAIN.
        let mut h = Health::new(10);
        assert_eq!(h.assess(&d(0), None, Some(&own(0))), Trust::Believe);
        assert!(matches!(
            h.assess(&d(1), None, Some(&Answer::NxDomain)),
            Trust::Hold(_)
        ));
        assert_eq!(
            h.assess(&d(2), Some(&own(2)), None),
            Trust::Believe,
            "failures are not held"
        );
    }

    #[test]
    fn an_adopted_outage_ends_by_these_rules_from_its_stored_start() {
        let d = |i: i64| format!("d{i}.example");
        let mut o = OutageDetector::new(Duration::from_secs(600), 3);
        o.adopt(t(-100));
        o.adopt(t(-50));
        assert_eq!(o.since, Some(t(-100)), "the earliest start is kept");
        assert_eq!(o.record(&d(0), t(0), false), None, "too few domains yet");
        assert_eq!(o.record(&d(1), t(1), false), None);
        assert_eq!(
            o.record(&d(2), t(2), false),
            Some(OutageEvent::Ended {
                start: t(-100),
                end: t(2)
            })
        );
    }

    #[test]
    fn the_span_keeps_a_domains_latest_check_and_drops_older_ones() {
        let d = |i: i64| format!("d{i}.example");
        let mut o = OutageDetector::new(Duration::from_secs(600), 2);
        for i in 0..5 {
            o.record(&d(i), t(i), false);
        }
        assert_eq!(o.record(&d(0), t(500), true), None);
        // t(0)..t(4) fall out of the span; d0's newer check stays.
        assert_eq!(o.record(&d(1), t(650), false), None);
        assert_eq!(o.failing_fraction(), Some(0.5));
        // A check exactly a span old still counts, a second more does not.
        let mut o = OutageDetector::new(Duration::from_secs(600), 2);
        o.record(&d(0), t(0), true);
        o.record(&d(1), t(600), false);
        assert_eq!(o.failing_fraction(), Some(0.5));
        o.record(&d(1), t(601), false);
        assert_eq!(o.failing_fraction(), None);
    }

    #[test]
    fn half_the_others_failing_is_not_healthy_and_a_new_answer_is_a_new_hold() {
        let d = |i: i64| format!("d{i}.example");
        let icloud = Answer::Records(mx(&[(10, "mx01.mail.icloud.com")]));
        let google = Answer::Records(mx(&[(10, "aspmx.l.google.com")]));
        let mut h = settled(5);
        assert!(matches!(
            h.assess(&d(0), Some(&own(0)), Some(&icloud)),
            Trust::Hold(_)
        ));
        h.record(&d(0), t(10), true);
        // Of the five domains' latest checks, d0 (held), d1 and d2 fail: 60 %.
        h.record(&d(1), t(11), true);
        h.record(&d(2), t(12), true);
        h.record(&d(3), t(13), false);
        h.record(&d(4), t(14), false);
        assert!(matches!(
            h.assess(&d(0), Some(&own(0)), Some(&icloud)),
            Trust::Hold(_)
        ));
        h.record(&d(0), t(15), true);
        // d1 recovers: d0 and d2 of five, 40 %: healthy.
        h.record(&d(1), t(16), false);
        assert_eq!(
            h.assess(&d(0), Some(&own(0)), Some(&icloud)),
            Trust::Believe
        );
        // Exactly half failing is not healthy.
        let mut h = settled(4);
        assert!(matches!(
            h.assess(&d(0), Some(&own(0)), Some(&icloud)),
            Trust::Hold(_)
        ));
        h.record(&d(0), t(10), true);
        h.record(&d(1), t(11), true);
        h.record(&d(2), t(12), false);
        h.record(&d(3), t(13), false);
        assert!(
            matches!(
                h.assess(&d(0), Some(&own(0)), Some(&icloud)),
                Trust::Hold(_)
            ),
            "2 of 4"
        );
        // A different answer than the one held starts a new hold.
        h.record(&d(1), t(14), false);
        assert!(matches!(
            h.assess(&d(0), Some(&own(0)), Some(&google)),
            Trust::Hold(_)
        ));
        h.record(&d(0), t(15), true);
        assert!(
            matches!(
                h.assess(&d(0), Some(&own(0)), Some(&google)),
                Trust::Hold(_)
            ),
            "no others since"
        );
        // A watchlist change keeps the outage, holds, counters and checks.
        h.outage.adopt(t(0));
        let (checks, fraction) = (h.checks, h.outage.failing_fraction());
        h.watch(["d0.example", "d1.example", "d2.example", "d3.example"], []);
        assert_eq!(h.outage.since, Some(t(0)));
        assert_eq!((h.checks, h.held.len()), (checks, 1));
        assert!(fraction.is_some());
        assert_eq!(h.outage.failing_fraction(), fraction, "recent checks kept");
    }

    /// Issue 19, item 9: twenty typo domains (auto-watched, NXDOMAIN on
    /// their first check) or three thousand that time out do not make our
    /// resolver look broken: the listed domains with a known-good history
    /// answer that question, and adding the newcomers to the watch list
    /// does not forget their healthy checks.
    #[test]
    fn newcomers_do_not_vote_on_our_resolver() {
        let listed: Vec<String> = (0..13).map(|i| format!("d{i}.example")).collect();
        let mut h = Health::new(listed.len());
        h.watch(listed.iter().map(String::as_str), []);
        for (i, d) in listed.iter().enumerate() {
            let own = own(i as i64);
            assert_eq!(h.assess(d, None, Some(&own)), Trust::Believe);
            h.known(d, true);
            assert_eq!(h.record(d, t(i as i64), false), None);
        }
        for wave in 0..5 {
            let typos: Vec<String> = (0..3000).map(|i| format!("t{wave}-{i}.example")).collect();
            let auto = typos.iter().map(String::as_str);
            h.watch(listed.iter().map(String::as_str), auto);
            for (i, d) in typos.iter().enumerate() {
                let at = t(20 + wave * 30 + i as i64 % 20);
                // NXDOMAIN for some (a fact about them), time-outs for others.
                let answer = (i % 2 == 0).then_some(Answer::NxDomain);
                if let Some(a) = &answer {
                    assert!(matches!(h.assess(d, None, Some(a)), Trust::Hold(_)));
                }
                h.known(d, false);
                assert_eq!(h.record(d, at, true), None, "{d}");
            }
            assert!(h.outage.since.is_none());
            assert_eq!(h.outage.failing_fraction(), Some(0.0), "the listed decide");
        }
        // A typo's NXDOMAIN is believed once the listed vouch for us.
        for (i, d) in listed.iter().enumerate() {
            h.record(d, t(200 + i as i64), false);
        }
        let typo = "t4-0.example";
        assert_eq!(
            h.assess(typo, None, Some(&Answer::NxDomain)),
            Trust::Believe
        );
        // Our resolver does fail: the listed say so.
        let mut started = None;
        for (i, d) in listed.iter().enumerate() {
            started = started.or(h.record(d, t(300 + i as i64), true));
        }
        assert!(
            matches!(started, Some(OutageEvent::Started(_))),
            "{started:?}"
        );
    }

    /// A fresh database: no listed domain has a history yet, so every listed
    /// one votes (a first sweep through a lying resolver is an outage), but
    /// an auto-watched newcomer never does.
    #[test]
    fn before_any_history_the_listed_vote_and_newcomers_still_do_not() {
        let listed: Vec<String> = (0..5).map(|i| format!("d{i}.example")).collect();
        let mut h = Health::new(5);
        h.watch(listed.iter().map(String::as_str), ["typo.example"]);
        for i in 0..50 {
            assert_eq!(h.record("typo.example", t(i), true), None);
        }
        assert_eq!(h.outage.failing_fraction(), None, "no vote counted");
        let mut started = None;
        for (i, d) in listed.iter().enumerate() {
            started = started.or(h.record(d, t(60 + i as i64), true));
        }
        assert!(matches!(started, Some(OutageEvent::Started(_))));
    }
}
