//! Passive DNS imports, inside the writer's transaction: each sighting is
//! a run of its source (`passive:dnsdb`, …), never the consensus; each
//! excursion is a closed MX-change window whose detail names its source,
//! and re-judges the suppressions it covers (reinstatements). Importing the
//! same export twice adds nothing.

use super::*;
use crate::passive::{Excursion, Sighting};

/// What an import added.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Imported {
    pub runs: usize,
    pub windows: usize,
    pub reinstated: usize,
}

pub(super) fn write_passive(
    tx: &rusqlite::Transaction,
    ids: &mut HashMap<DomainName, i64>,
    sightings: &[Sighting],
    excursions: &[Excursion],
    now: DateTime<Utc>,
    judging: &Judging,
) -> Result<Imported, StoreError> {
    let mut added = Imported::default();
    for s in sightings {
        let id = domain_id(tx, ids, &s.domain)?;
        let mx = crate::dns::compact_mx(&s.mx);
        let upstream = s.source.upstream();
        let known: Option<i64> = tx
            .prepare_cached(
                "SELECT id FROM runs WHERE domain_id = ?1 AND upstream = ?2 AND first_seen = ?3 AND mx = ?4 \
                 AND upstream LIKE 'passive:%'",
            )?
            .query_row(params![id, upstream, ms(s.first_seen), mx], |r| r.get(0))
            .optional()?;
        if known.is_some() {
            continue;
        }
        let checks = s.count.and_then(|c| i64::try_from(c).ok()).unwrap_or(1);
        tx.prepare_cached(
            "INSERT INTO runs(domain_id, upstream, outcome, mx, ttl, implicit_mx, detail, first_seen, last_seen, checks) \
             VALUES (?1, ?2, ?3, ?4, NULL, 0, ?5, ?6, ?7, ?8)",
        )?
        .execute(params![
            id,
            upstream,
            Outcome::Records,
            mx,
            summary::passive_run(s.source),
            ms(s.first_seen),
            ms(s.last_seen),
            checks
        ])?;
        added.runs += 1;
    }
    for e in excursions {
        let id = domain_id(tx, ids, &e.domain)?;
        let inserted = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO windows(domain_id, kind, start, detected_at, end, status, close_reason, severity, \
                   before, after, flaps, detail) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 0, ?11)",
            )?
            .execute(params![
                id,
                crate::window::WindowKind::MxChange,
                ms(e.start),
                ms(now),
                ms(e.end),
                crate::window::WindowStatus::Closed,
                crate::window::CloseReason::Reverted,
                crate::window::Severity::Critical,
                crate::dns::compact_mx(&e.usual),
                crate::dns::compact_mx(&e.during),
                summary::passive_window(e)
            ])?;
        if inserted == 1 {
            added.windows += 1;
            let covered = intake::Covered::Domain(e.domain.as_str());
            added.reinstated += intake::reconsider(tx, judging, covered, e.start, now)?;
        }
    }
    Ok(added)
}
