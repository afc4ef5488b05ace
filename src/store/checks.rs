//! The write paths of checks and outages, inside the writer's
//! transaction: runs, changes, MX-change windows and their outbox events,
//! windows of domains no longer watched, resolver outages.

use super::writer::{CheckRecord, Head};
use super::*;

pub(super) fn domain_id(
    tx: &rusqlite::Transaction,
    cache: &mut HashMap<DomainName, i64>,
    d: &DomainName,
) -> rusqlite::Result<i64> {
    if let Some(id) = cache.get(d) {
        return Ok(*id);
    }
    tx.prepare_cached("INSERT INTO domains(name) VALUES (?1) ON CONFLICT(name) DO NOTHING")?
        .execute([d.as_str()])?;
    let id = tx
        .prepare_cached("SELECT id FROM domains WHERE name = ?1")?
        .query_row([d.as_str()], |r| r.get(0))?;
    cache.insert(d.clone(), id);
    Ok(id)
}

pub(super) fn write_run(
    tx: &rusqlite::Transaction,
    heads: &mut HashMap<(i64, String), Option<Head>>,
    domain: i64,
    upstream: &str,
    at: DateTime<Utc>,
    o: &Observation,
    held: bool,
) -> rusqlite::Result<bool> {
    let key = (domain, upstream.to_string());
    if !heads.contains_key(&key) {
        let head = tx
            .prepare_cached(
                "SELECT id, outcome, mx FROM runs WHERE domain_id = ?1 AND upstream = ?2 \
                 ORDER BY first_seen DESC, id DESC LIMIT 1",
            )?
            .query_row(params![domain, upstream], |r| {
                Ok(Head {
                    id: r.get(0)?,
                    outcome: r.get::<_, String>(1)?.parse().unwrap_or(Outcome::Error),
                    mx: r.get(2)?,
                })
            })
            .optional()?;
        heads.insert(key.clone(), head);
    }
    let mx = crate::dns::compact_mx(&o.mx);
    let slot = heads.get_mut(&key).expect("inserted above");
    let first = slot.is_none();
    match slot {
        Some(h) if h.outcome == o.outcome && h.mx == mx => {
            tx.prepare_cached(
                "UPDATE runs SET last_seen = ?2, checks = checks + 1, ttl = max(coalesce(ttl, ?3), coalesce(?3, ttl)), \
                 held = held AND ?4 WHERE id = ?1",
            )?
            .execute(params![h.id, ms(at), o.ttl, held])?;
        }
        _ => {
            tx.prepare_cached(
                "INSERT INTO runs(domain_id, upstream, outcome, mx, ttl, implicit_mx, detail, first_seen, last_seen, checks, held) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, 1, ?9)",
            )?
            .execute(params![domain, upstream, o.outcome.as_str(), mx, o.ttl, o.implicit_mx, o.detail, ms(at), held])?;
            *slot = Some(Head {
                id: tx.last_insert_rowid(),
                outcome: o.outcome,
                mx,
            });
        }
    }
    Ok(first)
}

pub(super) fn write_check(
    tx: &rusqlite::Transaction,
    ids: &mut HashMap<DomainName, i64>,
    heads: &mut HashMap<(i64, String), Option<Head>>,
    rec: &CheckRecord,
    judging: &Judging,
) -> Result<(), StoreError> {
    let id = domain_id(tx, ids, &rec.domain)?;
    for o in &rec.observations {
        write_run(tx, heads, id, &o.upstream, rec.at, o, false)?;
    }
    let first = write_run(tx, heads, id, CONSENSUS, rec.at, &rec.consensus, rec.held)?;
    // A held first answer is not believed: it tells nothing yet.
    if first && !rec.held {
        // The domain's first answer tells what its MX were just before it
        // too (`knowledge::FIRST_CHECK_REACH`): the suppressions of bounces
        // that came shortly before it are judged again.
        let since = rec
            .at
            .checked_sub_signed(knowledge::FIRST_CHECK_REACH)
            .unwrap_or(rec.at);
        let covered = intake::Covered::Domain(rec.domain.as_str());
        intake::reconsider(tx, judging, covered, since, rec.at)?;
    }
    for c in &rec.changes {
        tx.prepare_cached(
            "INSERT INTO changes(domain_id, at, kind, severity, before, after, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            id,
            ms(c.at),
            c.kind,
            c.severity,
            c.before.as_ref().map(answer_text),
            c.after.as_ref().map(answer_text),
            c.detail
        ])?;
    }
    if let Some((event, w)) = &rec.window {
        write_window(tx, id, rec, *event, w, judging)?;
    }
    if let Some(state) = &rec.state {
        let json = serde_json::to_string(state).expect("detector state serialises");
        tx.prepare_cached("UPDATE domains SET state = ?2 WHERE id = ?1")?
            .execute(params![id, json])?;
    }
    Ok(())
}

/// An MX-change window as detect left it, and its outbox event; an
/// opened one reconsiders the suppressions since its start.
fn write_window(
    tx: &rusqlite::Transaction,
    id: i64,
    rec: &CheckRecord,
    event: WindowEvent,
    w: &LiveWindow,
    judging: &Judging,
) -> Result<(), StoreError> {
    // A window an operator withdrew is left as it is, and nothing is
    // announced for it (a running detector may still hold it open).
    let written = tx.prepare_cached(
        "INSERT INTO windows(domain_id, kind, start, detected_at, end, status, close_reason, severity, before, after, flaps) \
         VALUES (?1, 'mx_change', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
         ON CONFLICT(domain_id, kind, start) DO UPDATE SET end = ?4, status = ?5, close_reason = ?6, \
         severity = ?7, after = ?9, flaps = ?10 WHERE close_reason IS NOT 'withdrawn'",
    )?
    .execute(params![
        id,
        ms(w.start),
        ms(w.detected_at),
        w.end.map(ms),
        w.status,
        w.close_reason,
        w.severity,
        answer_text(&w.before),
        answer_text(&w.current),
        w.flaps
    ])?;
    if written == 0 {
        return Ok(());
    }
    let outbox = match event {
        WindowEvent::Opened => Some((
            EventType::WindowOpened,
            summary::window_opened(rec.domain.as_str(), &rec.changes),
        )),
        WindowEvent::Closed => Some((
            EventType::WindowClosed,
            summary::window_closed(rec.domain.as_str(), w.start, w.close_reason),
        )),
        WindowEvent::Updated => None,
    };
    if let Some((event, summary)) = outbox {
        let window_id: i64 = tx
            .prepare_cached(
                "SELECT id FROM windows WHERE domain_id = ?1 AND kind = 'mx_change' AND start = ?2",
            )?
            .query_row(params![id, ms(w.start)], |r| r.get(0))?;
        tx.prepare_cached(
            "INSERT INTO outbox(created_at, event, domain_id, window_id, summary) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![ms(rec.at), event, id, window_id, summary])?;
    }
    if event == WindowEvent::Opened {
        // The change happened after the last check that saw the old
        // answer: suppressions since then are reconsidered.
        intake::reconsider(
            tx,
            judging,
            intake::Covered::Domain(rec.domain.as_str()),
            w.start,
            rec.at,
        )?;
    }
    Ok(())
}

/// Closes the open MX windows of domains not in `watched`, at their last
/// check, and forgets the window in their stored detector state.
pub(super) fn close_unwatched(
    tx: &rusqlite::Transaction,
    watched: &std::collections::HashSet<DomainName>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    /// window id, domain id, name, stored state, start, last check
    type OpenWindow = (i64, i64, String, Option<String>, i64, Option<i64>);
    let open: Vec<OpenWindow> = tx
        .prepare_cached(
            "SELECT w.id, d.id, d.name, d.state, w.start, \
               (SELECT max(r.last_seen) FROM runs r WHERE r.domain_id = d.id AND r.upstream = '*') \
             FROM windows w JOIN domains d ON d.id = w.domain_id \
             WHERE w.kind = 'mx_change' AND w.status != 'closed'",
        )?
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    for (window, domain_id, name, state, start, last) in open {
        if DomainName::parse(&name).is_ok_and(|d| watched.contains(&d)) {
            continue;
        }
        let end = last.unwrap_or(start).max(start);
        tx.prepare_cached(
            "UPDATE windows SET status = 'closed', close_reason = 'unwatched', \
             end = CASE WHEN end IS NULL OR end > ?2 THEN ?2 ELSE end END WHERE id = ?1",
        )?
        .execute(params![window, end])?;
        if let Some(mut s) = state.and_then(|j| serde_json::from_str::<DomainState>(&j).ok()) {
            s.window = None;
            let json = serde_json::to_string(&s).expect("detector state serialises");
            tx.prepare_cached("UPDATE domains SET state = ?2 WHERE id = ?1")?
                .execute(params![domain_id, json])?;
        }
        tx.prepare_cached(
            "INSERT INTO outbox(created_at, event, domain_id, window_id, summary) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            ms(now),
            EventType::WindowClosed,
            domain_id,
            window,
            summary::window_unwatched(&name, from_ms(start))
        ])?;
    }
    Ok(())
}

pub(super) fn write_outage(
    tx: &rusqlite::Transaction,
    ev: OutageEvent,
    at: DateTime<Utc>,
    judging: &Judging,
) -> Result<(), StoreError> {
    let (event, start) = match ev {
        OutageEvent::Started(start) => {
            tx.prepare_cached(
                "INSERT INTO windows(domain_id, kind, start, detected_at, status, severity) \
                 VALUES (NULL, 'resolver_outage', ?1, ?2, 'open', 'critical')",
            )?
            .execute(params![ms(start), ms(at)])?;
            (EventType::ResolverOutageStarted, start)
        }
        OutageEvent::Ended { start, end } => {
            // Resolution works: every outage window still open ends, also
            // those an earlier process opened and could not close.
            tx.prepare_cached(
                "UPDATE windows SET end = max(start, ?1), status = 'closed', close_reason = 'reverted' \
                 WHERE domain_id IS NULL AND kind = 'resolver_outage' AND status != 'closed'",
            )?
            .execute(params![ms(end)])?;
            (EventType::ResolverOutageEnded, start)
        }
    };
    let window_id: Option<i64> = tx
        .prepare_cached("SELECT id FROM windows WHERE domain_id IS NULL AND kind = 'resolver_outage' AND start = ?1")?
        .query_row([ms(start)], |r| r.get(0))
        .optional()?;
    tx.prepare_cached("INSERT INTO outbox(created_at, event, domain_id, window_id, summary) VALUES (?1, ?2, NULL, ?3, ?4)")?
        .execute(params![ms(at), event, window_id, summary::outage(ev)])?;
    if let OutageEvent::Started(start) = ev {
        intake::reconsider(tx, judging, intake::Covered::All, start, at)?;
    }
    Ok(())
}
