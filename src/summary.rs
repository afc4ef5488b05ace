//! Pure: the sentences events and evidence carry for a person. The store
//! keeps each with what it records (an outbox event's summary, a piece of
//! evidence's detail), so the wording lives here and the store words
//! nothing. No IO.

use chrono::{DateTime, Utc};

use crate::anomaly::Anomaly;
use crate::detect::Change;
use crate::event::time;
use crate::health::OutageEvent;
use crate::passive::{Excursion, PassiveSource};
use crate::window::{CloseReason, Window};

/// `bounce` and `reinstated` (forwarding): whose bounce, what kind, and
/// the verdict it is forwarded with.
pub fn forwarded(recipient: &str, kind: &str, verdict: &str) -> String {
    format!("{recipient}: {kind}, {verdict}")
}

/// `undo_done`: what an undo target's run came to, outcome by outcome
/// (`outcomes` in the order they came).
pub fn undo_done(target: &str, dry_run: bool, outcomes: &[&str]) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for o in outcomes {
        match counts.iter_mut().find(|(w, _)| w == o) {
            Some((_, n)) => *n += 1,
            None => counts.push((o, 1)),
        }
    }
    let parts: Vec<String> = counts
        .iter()
        .map(|(o, n)| format!("{n} {}", o.replace('_', " ")))
        .collect();
    let dry = if dry_run {
        " (dry run: nothing was removed)"
    } else {
        ""
    };
    format!("{target}: {}{dry}", parts.join(", "))
}

/// `request` (forwarding): the receiver and how many bounces it carried.
pub fn request(receiver: &str, bounces: usize) -> String {
    let s = if bounces == 1 { "" } else { "s" };
    format!("a request to the {receiver} receiver, {bounces} bounce{s}")
}

/// `window_opened`: the domain and what changed.
pub fn window_opened(domain: &str, changes: &[Change]) -> String {
    let parts: Vec<String> = changes
        .iter()
        .map(|c| format!("{}: {}", c.kind, c.detail))
        .collect();
    format!("{domain}: {}", parts.join("; "))
}

/// `window_closed`, as detect closed it.
pub fn window_closed(domain: &str, start: DateTime<Utc>, reason: Option<CloseReason>) -> String {
    format!(
        "{domain}: window since {} closed ({})",
        time(start),
        reason.map_or("closed", |r| r.as_str())
    )
}

/// `window_closed`, because the domain left the watchlist.
pub fn window_unwatched(domain: &str, start: DateTime<Utc>) -> String {
    format!(
        "{domain}: window since {} closed (unwatched): the domain left the watchlist",
        time(start)
    )
}

/// `window_withdrawn`: which window, why, and the addresses whose
/// verdicts turned to `suppress` (the first 20).
pub fn window_withdrawn(w: &crate::window::Window, reason: &str, suppressed: &[String]) -> String {
    let scope = match w.covers() {
        (_, Some(name)) => name.to_string(),
        (_, None) => "all domains".to_string(),
    };
    let turned = if suppressed.is_empty() {
        "no verdict changed".to_string()
    } else {
        let names: Vec<&str> = suppressed.iter().map(String::as_str).collect();
        format!(
            "{} now suppress: {}",
            crate::event::plural(suppressed.len(), "bounce"),
            first_names(&names)
        )
    };
    format!(
        "{scope}: {} window #{} since {} withdrawn by an operator ({reason}); {turned}",
        w.kind.as_str(),
        w.id,
        time(w.start)
    )
}

/// `resolver_outage_started` and `_ended`.
pub fn outage(ev: OutageEvent) -> &'static str {
    match ev {
        OutageEvent::Started(_) => {
            "most watched domains fail to resolve, or answer NXDOMAIN or one identical answer, at once: our own resolver is likely at fault"
        }
        OutageEvent::Ended { .. } => "resolution works again",
    }
}

/// `anomaly_opened`.
pub fn anomaly_opened(a: &Anomaly) -> String {
    format!(
        "{}: burst of unknown-user bounces since {}: {}",
        a.scope,
        time(a.start),
        a.detail
    )
}

/// `anomaly_closed`.
pub fn anomaly_closed(a: &Anomaly) -> String {
    format!(
        "{}: the burst since {} is over ({} unknown-user bounces)",
        a.scope,
        time(a.start),
        a.bounces
    )
}

/// A closed anomaly window's detail: what opened it, and its size.
pub fn anomaly_detail(a: &Anomaly) -> String {
    format!("{} ({} bounces)", a.detail, a.bounces)
}

/// `reinstatements`: how many suppressions since when, naming the first
/// twenty recipients.
pub fn reinstatements(recipients: &[&str], since: DateTime<Utc>) -> String {
    format!(
        "{} since {} should be undone: {}",
        crate::event::plural(recipients.len(), "suppression"),
        time(since),
        first_names(recipients)
    )
}

/// The first twenty names (a run of one name once), and how many more.
fn first_names(names: &[&str]) -> String {
    const SHOWN: usize = 20;
    let mut shown: Vec<&str> = names.iter().take(SHOWN).copied().collect();
    shown.dedup();
    match names.len().saturating_sub(SHOWN) {
        0 => shown.join(", "),
        more => format!("{} and {more} more", shown.join(", ")),
    }
}

/// A passive DNS run's detail: where it came from.
pub fn passive_run(source: PassiveSource) -> String {
    format!("passive DNS ({source})")
}

/// A window built from passive DNS: its source, when the answer was seen,
/// and how much wider than that the window is.
pub fn passive_window(e: &Excursion) -> String {
    format!(
        "passive DNS ({}) saw it from {} to {}; the window is {} wider on each side",
        e.source,
        time(e.seen.0),
        time(e.seen.1),
        crate::event::duration(e.source.margin())
    )
}

/// What a window shows as evidence: the answers it went between (and,
/// for a window from passive DNS, its source), or what made an anomaly
/// one, or its kind.
pub fn evidence_detail(w: &Window) -> String {
    match (&w.before, &w.after, &w.detail) {
        (Some(b), Some(a), detail) => {
            let flaps = if w.flaps > 0 {
                format!(" ({} flaps)", w.flaps)
            } else {
                String::new()
            };
            let source = detail
                .as_deref()
                .map(|d| format!("; {d}"))
                .unwrap_or_default();
            format!("{} → {}{flaps}{source}", b.compact(), a.compact())
        }
        (_, _, Some(d)) => match &w.scope {
            Some(s) => format!("{}: {d}", s.name()),
            None => d.clone(),
        },
        _ => w.kind.as_str().replace('_', " "),
    }
}

/// A held answer's evidence: what was seen since when, and why it is held.
pub fn unconfirmed_change(
    since: DateTime<Utc>,
    outcome: crate::dns::Outcome,
    mx: &[crate::domain::Mx],
    why: Option<&str>,
) -> String {
    let what = if mx.is_empty() {
        outcome.as_str().to_string()
    } else {
        crate::domain::mx_set(mx)
    };
    let why = why.map(|w| format!(" ({w})")).unwrap_or_default();
    format!(
        "{what} seen since {}, departing from the baseline, is held until other domains show \
         our resolver is sound{why}",
        time(since)
    )
}
