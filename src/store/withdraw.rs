//! An operator withdraws a window known to be false (`mxwatch windows
//! close ID --reason TEXT`): the window closes, recorded with its reason,
//! it excuses no bounce any more, and every verdict it made is judged
//! again without it. The only way a verdict turns back to `suppress`; each
//! such turn is recorded in `verdict_changes`, announced (an alert, and a
//! forward target that took the bounce gets it again with its new
//! verdict).

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

use super::forwarding;
use super::intake::{BOUNCE_COLUMNS, Judging, bounce_from_row};
use super::knowledge::{feed_since, judge_stored};
use super::read::{WINDOW_COLUMNS, window_from_row};
use super::{StoreError, ms};
use crate::bounce::Bounce;
use crate::detect::DomainState;
use crate::event::EventType;
use crate::verdict::Verdict;
use crate::window::{ScopeKind, Window, WindowKind};

/// What withdrawing a window came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Withdrawal {
    /// Withdrawn now; the recipients whose verdicts turned to `suppress`.
    Withdrawn {
        window: Window,
        suppressed: Vec<String>,
    },
    /// No window has that id.
    NoSuchWindow,
    /// It was withdrawn before (its reason stays).
    AlreadyWithdrawn(Window),
}

/// The longest reason kept, in bytes (a reason is for people).
pub const MAX_REASON: usize = 1000;

/// Withdraws window `id` for `reason` at `now`; see the module's text.
pub(super) fn withdraw(
    tx: &rusqlite::Transaction,
    judging: &Judging,
    id: i64,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Withdrawal, StoreError> {
    let Some(window) = window_in(tx, id)? else {
        return Ok(Withdrawal::NoSuchWindow);
    };
    if window.is_withdrawn() {
        return Ok(Withdrawal::AlreadyWithdrawn(window));
    }
    // What it excused, judged while it still counts.
    let excused = excused_by(tx, judging, &window)?;
    let end = window.end.map_or(now, |e| e.min(now)).max(window.start);
    tx.prepare_cached(
        "UPDATE windows SET status = 'closed', close_reason = 'withdrawn', close_note = ?2, end = ?3 \
         WHERE id = ?1",
    )?
    .execute(params![id, reason, ms(end)])?;
    forget_live(tx, &window)?;
    let since_feed = feed_since(tx)?;
    let mut suppressed = Vec::new();
    for (bounce_id, before, b) in excused {
        let Some(j) = judge_stored(tx, judging, &b, since_feed)? else {
            continue;
        };
        if j.verdict != Verdict::Suppress {
            continue;
        }
        tx.prepare_cached("UPDATE bounces SET verdict = ?2 WHERE id = ?1")?
            .execute(params![bounce_id, j.verdict])?;
        tx.prepare_cached(
            "INSERT OR IGNORE INTO verdict_changes(bounce_id, window_id, created_at, before, after, reason) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            bounce_id,
            id,
            ms(now),
            before,
            j.verdict,
            j.reasons.join("; ")
        ])?;
        forwarding::rejudged(tx, (bounce_id, &b), &j, id, now)?;
        suppressed.push(b.recipient);
    }
    let window = window_in(tx, id)?.expect("the window just updated");
    let summary = crate::summary::window_withdrawn(&window, reason, &suppressed);
    tx.prepare_cached(
        "INSERT INTO outbox(created_at, event, domain_id, window_id, summary) \
         VALUES (?1, ?2, (SELECT domain_id FROM windows WHERE id = ?3), ?3, ?4)",
    )?
    .execute(params![ms(now), EventType::WindowWithdrawn, id, summary])?;
    Ok(Withdrawal::Withdrawn { window, suppressed })
}

fn window_in(tx: &rusqlite::Transaction, id: i64) -> Result<Option<Window>, StoreError> {
    let sql = format!(
        "SELECT {WINDOW_COLUMNS} FROM windows w LEFT JOIN domains d ON d.id = w.domain_id WHERE w.id = ?1"
    );
    Ok(tx
        .prepare_cached(&sql)?
        .query_row([id], |r| window_from_row(r, 0))
        .optional()?)
}

/// The stored bounces whose verdict is not `suppress` because of `w`:
/// in its scope and time, and judged now with `w` among the evidence.
fn excused_by(
    tx: &rusqlite::Transaction,
    judging: &Judging,
    w: &Window,
) -> Result<Vec<(i64, Verdict, Bounce)>, StoreError> {
    let (filter, arg) = match w.covers() {
        (ScopeKind::Domain, Some(d)) => ("b.domain = ?3", Some(d)),
        (ScopeKind::Provider, Some(p)) => ("b.provider = ?3", Some(p)),
        _ => ("?3 IS NULL", None),
    };
    let sql = format!(
        "SELECT b.id, b.verdict, {BOUNCE_COLUMNS} FROM bounces b \
         WHERE b.verdict IS NOT NULL AND b.verdict != 'suppress' AND b.at >= ?1 AND b.at <= ?2 \
           AND {filter} ORDER BY b.at, b.id"
    );
    let until = w.end.map_or(i64::MAX, ms);
    let rows: Vec<(i64, Verdict, Bounce)> = tx
        .prepare_cached(&sql)?
        .query_map(params![ms(w.start), until, arg], |r| {
            Ok((r.get(0)?, r.get(1)?, bounce_from_row(r, 2)?))
        })?
        .collect::<Result<_, _>>()?;
    let since_feed = feed_since(tx)?;
    let mut excused = Vec::new();
    for (id, verdict, b) in rows {
        let j = judge_stored(tx, judging, &b, since_feed)?;
        if j.is_some_and(|j| j.evidence.iter().any(|e| e.id == Some(w.id))) {
            excused.push((id, verdict, b));
        }
    }
    Ok(excused)
}

/// An MX-change window is also the domain detector's memory: a withdrawn
/// one is forgotten there, so a restarted daemon does not carry it on.
/// (A daemon running now keeps it until its DNS closes it; its writes
/// leave a withdrawn row as it is.)
fn forget_live(tx: &rusqlite::Transaction, w: &Window) -> Result<(), StoreError> {
    if w.kind != WindowKind::MxChange {
        return Ok(());
    }
    let Some(domain) = &w.domain else {
        return Ok(());
    };
    let state: Option<Option<String>> = tx
        .prepare_cached("SELECT state FROM domains WHERE name = ?1")?
        .query_row([domain], |r| r.get(0))
        .optional()?;
    let Some(mut s) = state
        .flatten()
        .and_then(|j| serde_json::from_str::<DomainState>(&j).ok())
    else {
        return Ok(());
    };
    if s.window.as_ref().is_some_and(|live| live.start == w.start) {
        s.window = None;
        let json = serde_json::to_string(&s).expect("detector state serialises");
        tx.prepare_cached("UPDATE domains SET state = ?2 WHERE name = ?1")?
            .execute(params![domain, json])?;
    }
    Ok(())
}
