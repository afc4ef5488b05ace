//! An operator withdraws a window known to be false (`mxwatch windows
//! close ID --reason TEXT`): the window closes, recorded with its reason,
//! it excuses no bounce any more, and every verdict it made is judged
//! again without it. The only way a verdict turns back to `suppress`; each
//! such turn is recorded in `verdict_changes`, announced (an alert, and a
//! forward target that took the bounce gets it again with its new
//! verdict).

use chrono::{DateTime, Utc};
use rusqlite::params;

use super::forwarding;
use super::intake::{BOUNCE_COLUMNS, Judging, bounce_from_row};
use super::knowledge::{feed_since, judge_stored};
use super::read::window_by_id;
use super::{StoreError, ms};
use crate::bounce::Bounce;
use crate::event::EventType;
use crate::verdict::Verdict;
use crate::window::{ScopeKind, Window};

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
    let Some(window) = window_by_id(tx, id)? else {
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
    let window = window_by_id(tx, id)?.expect("the window just updated");
    let summary = crate::summary::window_withdrawn(&window, reason, &suppressed);
    tx.prepare_cached(
        "INSERT INTO outbox(created_at, event, domain_id, window_id, summary) \
         VALUES (?1, ?2, (SELECT domain_id FROM windows WHERE id = ?3), ?3, ?4)",
    )?
    .execute(params![ms(now), EventType::WindowWithdrawn, id, summary])?;
    Ok(Withdrawal::Withdrawn { window, suppressed })
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
