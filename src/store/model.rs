//! What verdicts read, kept in memory: every domain's consensus answers
//! (one entry per run) and every window. The daemon's writer
//! (`Writer::start_serving`) keeps it current: a check's new consensus
//! answer is appended, and windows are reloaded from the database after a
//! commit that changed one (a window event, an outage, an anomaly), *before* the
//! writer acknowledges the commit, so a verdict asked after an acknowledged
//! write sees it. Writes by another process (a `bounces ingest` next to the
//! daemon) are noticed through SQLite's `data_version` at the next tick.
//!
//! The answers equal [`Store::circumstances`](super::Store::circumstances)
//! (a test compares the two); the database stays the truth.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use rusqlite::Connection;

use super::read::{WINDOW_COLUMNS, window_from_row};
use super::{Circumstances, StoreError, from_ms, parse_mx_text};
use crate::dns::{Observation, Outcome};
use crate::domain::Mx;
use crate::provider::Providers;
use crate::verdict::{self, Evidence};
use crate::window::Scope;

/// A consensus run: when it started, its outcome and MX, and whether it
/// is held (not yet believed; the reason in `detail`).
#[derive(Debug, Clone)]
struct RunStart {
    start: DateTime<Utc>,
    outcome: Outcome,
    mx: Arc<[Mx]>,
    held: bool,
    detail: Option<Arc<str>>,
}

#[derive(Debug, Default)]
struct State {
    runs: HashMap<String, Vec<RunStart>>,
    /// Windows with a domain row, by domain.
    own: HashMap<String, Vec<Evidence>>,
    /// Windows without one: global (`None`), or an anomaly's.
    scoped: Vec<(Option<Scope>, Evidence)>,
    /// The earliest stored bounce.
    feed_since: Option<DateTime<Utc>>,
}

/// The in-memory read model. Shared by the writer (which updates it) and
/// the API (which reads it, without SQL).
#[derive(Debug, Default)]
pub struct Model {
    state: RwLock<State>,
}

/// Answered from memory: no SQL on the API's verdict path.
impl super::Knowledge for Model {
    fn circumstances(
        &self,
        domain: &str,
        at: DateTime<Utc>,
        remote_mta: Option<&str>,
        providers: &Providers,
    ) -> Result<Circumstances, StoreError> {
        let st = self.state.read().expect("model lock");
        let runs = st.runs.get(domain).map(Vec::as_slice).unwrap_or_default();
        let by = runs.partition_point(|r| r.start <= at);
        let in_force = match by.checked_sub(1) {
            Some(i) => runs.get(i),
            // The first check, shortly after (as the SQL reads it).
            None => runs.first().filter(|r| {
                r.start
                    <= at
                        .checked_add_signed(super::knowledge::FIRST_CHECK_REACH)
                        .unwrap_or(at)
            }),
        };
        // A held answer is evidence, not the MX: the last believed one is.
        let held = in_force
            .filter(|r| r.held)
            .map(|r| Evidence::unconfirmed(r.start, r.outcome, &r.mx, r.detail.as_deref()));
        let believed = match held {
            Some(_) => runs[..by].iter().rev().find(|r| !r.held),
            None => in_force,
        };
        let mx_at = believed.and_then(|r| (r.outcome == Outcome::Records).then(|| r.mx.to_vec()));
        let provider = verdict::provider_scope(mx_at.as_deref(), remote_mta, providers);
        let mut windows: Vec<Evidence> = st
            .own
            .get(domain)
            .into_iter()
            .flatten()
            .filter(|e| e.covers(at))
            .cloned()
            .collect();
        windows.extend(
            st.scoped
                .iter()
                .filter(|(scope, e)| {
                    e.covers(at)
                        && match scope {
                            None => true,
                            Some(Scope::Provider(name)) => provider.as_deref() == Some(name),
                            Some(Scope::Domain(name)) => name == domain,
                        }
                })
                .map(|(_, e)| e.clone()),
        );
        windows.extend(held);
        windows.sort_by_key(|w| (w.start, w.id));
        Ok(Circumstances {
            windows,
            mx_at,
            provider,
            domain_known: believed.is_some(),
            feed_since: st.feed_since,
        })
    }
}

impl Model {
    /// A committed check: its consensus answer starts a run when it differs
    /// from the last one (as the writer's runs do).
    /// A held answer stays held until a check believes it.
    pub(super) fn note_check(
        &self,
        domain: &str,
        at: DateTime<Utc>,
        consensus: &Observation,
        held: bool,
    ) {
        let mut st = self.state.write().expect("model lock");
        let runs = st.runs.entry(domain.to_string()).or_default();
        match runs.last_mut() {
            Some(r) if r.outcome == consensus.outcome && *r.mx == *consensus.mx => {
                r.held &= held;
            }
            _ => runs.push(RunStart {
                start: at,
                outcome: consensus.outcome,
                mx: consensus.mx.clone().into(),
                held,
                detail: consensus.detail.as_deref().map(Arc::from),
            }),
        }
    }

    /// Committed bounces: the feed's history may reach further back.
    pub(super) fn note_bounces(&self, earliest: DateTime<Utc>) {
        let mut st = self.state.write().expect("model lock");
        st.feed_since = Some(st.feed_since.map_or(earliest, |s| s.min(earliest)));
    }

    /// Reloads the windows from the database.
    pub(super) fn reload_windows(&self, conn: &Connection) -> Result<(), StoreError> {
        let sql = format!(
            "SELECT {WINDOW_COLUMNS} FROM windows w LEFT JOIN domains d ON d.id = w.domain_id"
        );
        let mut own: HashMap<String, Vec<Evidence>> = HashMap::new();
        let mut scoped = Vec::new();
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([], |r| window_from_row(r, 0))?;
        for w in rows {
            let w = w?;
            if w.is_withdrawn() {
                continue;
            }
            let e = Evidence::of(&w);
            match (w.domain, w.scope) {
                (Some(d), None) => own.entry(d).or_default().push(e),
                (_, scope) => scoped.push((scope, e)),
            }
        }
        let mut st = self.state.write().expect("model lock");
        st.own = own;
        st.scoped = scoped;
        Ok(())
    }

    /// Reloads everything from the database.
    pub(super) fn reload(&self, conn: &Connection) -> Result<(), StoreError> {
        let mut runs: HashMap<String, Vec<RunStart>> = HashMap::new();
        let mut stmt = conn.prepare(
            "SELECT d.name, r.first_seen, r.outcome, r.mx, r.held, r.detail FROM runs r \
             JOIN domains d ON d.id = r.domain_id \
             WHERE r.upstream = '*' ORDER BY r.domain_id, r.first_seen, r.id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                RunStart {
                    start: from_ms(r.get(1)?),
                    outcome: r.get::<_, String>(2)?.parse().unwrap_or(Outcome::Error),
                    mx: parse_mx_text(&r.get::<_, String>(3)?).into(),
                    held: r.get(4)?,
                    detail: r.get::<_, Option<String>>(5)?.map(Arc::from),
                },
            ))
        })?;
        for row in rows {
            let (name, run) = row?;
            runs.entry(name).or_default().push(run);
        }
        let feed_since = super::knowledge::feed_since(conn)?;
        {
            let mut st = self.state.write().expect("model lock");
            st.runs = runs;
            st.feed_since = feed_since;
        }
        self.reload_windows(conn)
    }
}
