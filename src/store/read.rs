//! The read side: rows as the CLI and the API see them, and the queries.

use super::*;

/// A stretch of identical answers from one upstream: the first
/// observation of the stretch (TTL: the largest seen), and its span.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub domain: String,
    pub observation: Observation,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub checks: i64,
}

/// A stored change and its domain.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRow {
    pub domain: String,
    pub change: Change,
}

/// What an upstream answered at a moment, from history.
#[derive(Debug, Clone, PartialEq)]
pub struct AsOf {
    pub upstream: String,
    /// The run in force: the latest that started at or before the moment.
    pub run: Run,
    /// Whether the moment lies within the run's observed span; if not, it
    /// lies after the run's last check and before the next observation.
    pub observed: bool,
    /// When the next run started, if any.
    pub next_change: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub id: i64,
    pub created_at: DateTime<Utc>,
    pub event: EventType,
    pub domain: Option<String>,
    pub window_id: Option<i64>,
    pub summary: String,
}

/// An outbox row's columns (`o`, with its domain's name as `d`).
pub(super) const OUTBOX_COLUMNS: &str =
    "o.id, o.created_at, o.event, d.name, o.window_id, o.summary";

/// How many columns [`OUTBOX_COLUMNS`] names.
pub(super) const OUTBOX_FIELDS: usize = 6;

/// An outbox row from [`OUTBOX_COLUMNS`].
pub(super) fn outbox_from_row(r: &rusqlite::Row) -> rusqlite::Result<OutboxRow> {
    Ok(OutboxRow {
        id: r.get(0)?,
        created_at: from_ms(r.get(1)?),
        event: r.get(2)?,
        domain: r.get(3)?,
        window_id: r.get(4)?,
        summary: r.get(5)?,
    })
}

pub(super) const WINDOW_COLUMNS: &str = "w.id, d.name, w.kind, w.start, w.detected_at, w.end, w.status, w.close_reason, \
     w.severity, w.before, w.after, w.flaps, w.scope_kind, w.scope, w.detail, w.last_bounce, w.close_note";

/// How many columns [`WINDOW_COLUMNS`] names.
pub(super) const WINDOW_FIELDS: usize = 17;

/// One window by id, on any connection (a writer's transaction too).
pub(super) fn window_by_id(conn: &Connection, id: i64) -> Result<Option<Window>, StoreError> {
    let sql = format!(
        "SELECT {WINDOW_COLUMNS} FROM windows w LEFT JOIN domains d ON d.id = w.domain_id WHERE w.id = ?1"
    );
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([id], |r| window_from_row(r, 0))
        .optional()?)
}

/// A window from [`WINDOW_COLUMNS`], starting at column `o`.
pub(super) fn window_from_row(r: &rusqlite::Row, o: usize) -> rusqlite::Result<Window> {
    let answer = |i: usize| -> rusqlite::Result<Option<Answer>> {
        Ok(r.get::<_, Option<String>>(o + i)?
            .and_then(|s| parse_answer_text(&s)))
    };
    Ok(Window {
        id: r.get(o)?,
        domain: r.get(o + 1)?,
        kind: r.get(o + 2)?,
        start: from_ms(r.get(o + 3)?),
        detected_at: from_ms(r.get(o + 4)?),
        end: r.get::<_, Option<i64>>(o + 5)?.map(from_ms),
        status: r.get(o + 6)?,
        close_reason: r.get(o + 7)?,
        severity: r.get(o + 8)?,
        before: answer(9)?,
        after: answer(10)?,
        flaps: r.get(o + 11)?,
        scope: match r.get::<_, Option<ScopeKind>>(o + 12)? {
            Some(kind) => r
                .get::<_, Option<String>>(o + 13)?
                .and_then(|name| Scope::of(kind, name)),
            None => None,
        },
        detail: r.get(o + 14)?,
        last_bounce: r.get::<_, Option<i64>>(o + 15)?.map(from_ms),
        close_note: r.get(o + 16)?,
    })
}

/// Stored bounces' domains and times, in the order stored.
pub type BouncedDomains = Vec<(String, Option<DateTime<Utc>>)>;

/// A stored bounce with its row id and the verdict it holds now.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredBounce {
    pub id: i64,
    /// `None` for bounces stored before verdicts were kept.
    pub verdict: Option<Verdict>,
    pub bounce: Bounce,
}

/// A suppression a later window turned over.
#[derive(Debug, Clone, PartialEq)]
pub struct Reinstatement {
    pub id: i64,
    pub created_at: DateTime<Utc>,
    /// The verdict the bounce holds now (it was `suppress`).
    pub verdict: Verdict,
    pub reason: String,
    pub bounce_id: i64,
    pub bounce: Bounce,
    /// The window behind it.
    pub window: Option<Window>,
}

/// What the detectors of an earlier process left in the store.
#[derive(Debug, Clone, Default)]
pub struct Memory {
    pub states: HashMap<DomainName, DomainState>,
    /// The start of the earliest resolver outage window still open.
    pub outage_since: Option<DateTime<Utc>>,
}

/// Read access. Open one per thread or task that reads.
pub struct Store {
    pub(super) conn: Connection,
}

pub(super) fn run_from_row(r: &rusqlite::Row) -> rusqlite::Result<Run> {
    Ok(Run {
        domain: r.get(0)?,
        observation: Observation {
            upstream: r.get(1)?,
            outcome: r.get::<_, String>(2)?.parse().unwrap_or(Outcome::Error),
            mx: parse_mx_text(&r.get::<_, String>(3)?),
            ttl: r.get(4)?,
            implicit_mx: r.get(5)?,
            detail: r.get(6)?,
        },
        first_seen: from_ms(r.get(7)?),
        last_seen: from_ms(r.get(8)?),
        checks: r.get(9)?,
    })
}

pub(super) const RUN_COLUMNS: &str = "d.name, r.upstream, r.outcome, r.mx, r.ttl, r.implicit_mx, r.detail, r.first_seen, r.last_seen, r.checks";

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Ok(Store { conn: open(path)? })
    }

    /// What a monitor restores at start: every domain's detector state, and
    /// the start of a resolver outage left open.
    pub fn memory(&self) -> Result<Memory, StoreError> {
        let outage_since: Option<i64> = self.conn.query_row(
            "SELECT min(start) FROM windows \
             WHERE domain_id IS NULL AND kind = 'resolver_outage' AND status != 'closed'",
            [],
            |r| r.get(0),
        )?;
        Ok(Memory {
            states: self.load_states()?,
            outage_since: outage_since.map(from_ms),
        })
    }

    /// The detector state of every domain that has one.
    pub fn load_states(&self) -> Result<HashMap<DomainName, DomainState>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT d.name, d.state, \
               (SELECT max(r.last_seen) FROM runs r WHERE r.domain_id = d.id AND r.upstream = '*') \
             FROM domains d WHERE d.state IS NOT NULL",
        )?;
        let mut out = HashMap::new();
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<i64>>(2)?,
            ))
        })?;
        for row in rows {
            let (name, json, last) = row?;
            let Ok(domain) = DomainName::parse(&name) else {
                continue;
            };
            // One unreadable state costs that domain its memory (it starts
            // over from its next answer), not the whole start.
            let mut state: DomainState = match serde_json::from_str(&json) {
                Ok(s) => s,
                Err(source) => {
                    let e = StoreError::State {
                        domain: name.clone(),
                        source,
                    };
                    tracing::warn!("{e}; starting that domain afresh");
                    continue;
                }
            };
            // `last_seen` is not rewritten on every check; the consensus
            // runs know it.
            if let (Some(b), Some(last)) = (state.baseline.as_mut(), last)
                && state.window.is_none()
            {
                b.last_seen = b.last_seen.max(from_ms(last));
            }
            out.insert(domain, state);
        }
        Ok(out)
    }

    /// Runs of one domain, oldest first; `since` keeps runs seen after it.
    pub fn history(
        &self,
        domain: &DomainName,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<Run>, StoreError> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs r JOIN domains d ON d.id = r.domain_id \
             WHERE d.name = ?1 AND r.last_seen >= ?2 ORDER BY r.first_seen, r.id"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(
            params![domain.as_str(), since.map(ms).unwrap_or(i64::MIN)],
            run_from_row,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// What each upstream (and the consensus, `*`) answered at `at`.
    pub fn as_of(&self, domain: &DomainName, at: DateTime<Utc>) -> Result<Vec<AsOf>, StoreError> {
        let sql = format!(
            "SELECT {RUN_COLUMNS}, \
               (SELECT min(n.first_seen) FROM runs n WHERE n.domain_id = r.domain_id AND n.upstream = r.upstream \
                  AND n.first_seen > r.first_seen) \
             FROM runs r JOIN domains d ON d.id = r.domain_id \
             WHERE d.name = ?1 AND r.first_seen <= ?2 \
               AND r.first_seen = (SELECT max(m.first_seen) FROM runs m WHERE m.domain_id = r.domain_id \
                                   AND m.upstream = r.upstream AND m.first_seen <= ?2) \
             ORDER BY r.upstream"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(params![domain.as_str(), ms(at)], |r| {
            let run = run_from_row(r)?;
            let next: Option<i64> = r.get(10)?;
            Ok(AsOf {
                upstream: run.observation.upstream.clone(),
                observed: at <= run.last_seen,
                next_change: next.map(from_ms),
                run,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn changes(
        &self,
        since: Option<DateTime<Utc>>,
        domain: Option<&DomainName>,
    ) -> Result<Vec<ChangeRow>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT d.name, c.at, c.kind, c.severity, c.before, c.after, c.detail \
             FROM changes c JOIN domains d ON d.id = c.domain_id \
             WHERE c.at >= ?1 AND (?2 IS NULL OR d.name = ?2) ORDER BY c.at, c.id",
        )?;
        let rows = stmt.query_map(
            params![
                since.map(ms).unwrap_or(i64::MIN),
                domain.map(|d| d.as_str())
            ],
            |r| {
                Ok(ChangeRow {
                    domain: r.get(0)?,
                    change: Change {
                        at: from_ms(r.get(1)?),
                        kind: r.get(2)?,
                        severity: r.get(3)?,
                        before: r
                            .get::<_, Option<String>>(4)?
                            .and_then(|s| parse_answer_text(&s)),
                        after: r
                            .get::<_, Option<String>>(5)?
                            .and_then(|s| parse_answer_text(&s)),
                        detail: r.get(6)?,
                    },
                })
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Windows, newest first; with `active_at`, only those active then.
    pub fn windows(&self, active_at: Option<DateTime<Utc>>) -> Result<Vec<Window>, StoreError> {
        Ok(self
            .windows_page(active_at, None, None, usize::MAX)?
            .windows)
    }

    /// Windows newest first (by start, then id), at most `limit`, after
    /// `after` (the cursor of the page before), only those active at
    /// `active_at` ([`Window::is_active`]) and of `domain` when given.
    pub fn windows_page(
        &self,
        active_at: Option<DateTime<Utc>>,
        domain: Option<&str>,
        after: Option<WindowCursor>,
        limit: usize,
    ) -> Result<WindowPage, StoreError> {
        let sql = format!(
            "SELECT {WINDOW_COLUMNS} FROM windows w LEFT JOIN domains d ON d.id = w.domain_id \
             WHERE (?1 IS NULL OR w.status = 'open' OR w.end IS NULL OR w.end > ?1) \
               AND (?2 IS NULL OR d.name = ?2) \
               AND (?3 IS NULL OR w.start < ?3 OR (w.start = ?3 AND w.id < ?4)) \
             ORDER BY w.start DESC, w.id DESC LIMIT ?5"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let fetch = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
        let rows = stmt.query_map(
            params![
                active_at.map(ms),
                domain,
                after.map(|c| c.start),
                after.map(|c| c.id),
                fetch
            ],
            |r| window_from_row(r, 0),
        )?;
        let mut windows: Vec<Window> = rows.collect::<Result<_, _>>()?;
        let next = (windows.len() > limit).then(|| {
            windows.truncate(limit);
            let last = windows.last().expect("a page of at least one");
            WindowCursor {
                start: ms(last.start),
                id: last.id,
            }
        });
        Ok(WindowPage { windows, next })
    }

    /// One window by id.
    pub fn window(&self, id: i64) -> Result<Option<Window>, StoreError> {
        window_by_id(&self.conn, id)
    }

    /// The whole outbox, oldest first.
    pub fn outbox(&self) -> Result<Vec<OutboxRow>, StoreError> {
        self.outbox_after(0, None)
    }

    /// Outbox rows after id `after`, oldest first, at most `limit`.
    pub fn outbox_after(
        &self,
        after: i64,
        limit: Option<usize>,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let sql = format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox o LEFT JOIN domains d ON d.id = o.domain_id \
             WHERE o.id > ?1 ORDER BY o.id LIMIT ?2"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let limit = limit.map_or(-1, |n| n as i64); // SQLite: -1 is no limit
        let rows = stmt.query_map(params![after, limit], outbox_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Stored bounces, oldest first, filtered by domain, time and kind.
    pub fn bounces(
        &self,
        domain: Option<&str>,
        since: Option<DateTime<Utc>>,
        kind: Option<Kind>,
    ) -> Result<Vec<Bounce>, StoreError> {
        Ok(self
            .stored_bounces(domain, since, kind)?
            .into_iter()
            .map(|s| s.bounce)
            .collect())
    }

    /// Stored bounces with their ids and verdicts, oldest first.
    pub fn stored_bounces(
        &self,
        domain: Option<&str>,
        since: Option<DateTime<Utc>>,
        kind: Option<Kind>,
    ) -> Result<Vec<StoredBounce>, StoreError> {
        let sql = format!(
            "SELECT b.id, b.verdict, {} FROM bounces b \
             WHERE (?1 IS NULL OR b.domain = ?1) AND (?2 IS NULL OR b.at >= ?2) AND (?3 IS NULL OR b.kind = ?3) \
             ORDER BY b.at, b.id",
            intake::BOUNCE_COLUMNS
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(
            params![domain, since.map(ms), kind.map(|k| k.as_str())],
            |r| {
                Ok(StoredBounce {
                    id: r.get(0)?,
                    verdict: r.get(1)?,
                    bounce: intake::bounce_from_row(r, 2)?,
                })
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The auto-watched domains, as the daemon left them.
    pub fn auto_watched(&self) -> Result<Vec<(DomainName, crate::autowatch::Entry)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT domain, since, last_bounce FROM auto_watched ORDER BY domain")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (d, since, last) = row?;
            if let Ok(d) = DomainName::parse(&d) {
                let entry = crate::autowatch::Entry {
                    since: from_ms(since),
                    last_bounce: from_ms(last),
                };
                out.push((d, entry));
            }
        }
        Ok(out)
    }

    /// Whether anything (a check, passive DNS) is known of `d`'s MX.
    pub fn has_history(&self, d: &DomainName) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT 1 FROM runs WHERE domain_id = (SELECT id FROM domains WHERE name = ?1) LIMIT 1",
            )?
            .query_row([d.as_str()], |_| Ok(()))
            .optional()?
            .is_some())
    }

    /// How many domains are auto-watched.
    pub fn auto_watched_count(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM auto_watched", [], |r| r.get(0))?)
    }

    /// Whether `d` is auto-watched, and since when.
    pub fn auto_watched_one(
        &self,
        d: &DomainName,
    ) -> Result<Option<crate::autowatch::Entry>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT since, last_bounce FROM auto_watched WHERE domain = ?1")?
            .query_row([d.as_str()], |r| {
                Ok(crate::autowatch::Entry {
                    since: from_ms(r.get(0)?),
                    last_bounce: from_ms(r.get(1)?),
                })
            })
            .optional()?)
    }

    /// The domains of the bounces stored after row `after` (at most
    /// `limit`), and the last row read.
    pub fn bounce_domains_after(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<(i64, BouncedDomains), StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, domain, at FROM bounces WHERE id > ?1 ORDER BY id LIMIT ?2",
        )?;
        let rows = stmt.query_map(
            params![after, i64::try_from(limit).unwrap_or(i64::MAX)],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<i64>>(2)?.map(from_ms),
                ))
            },
        )?;
        let mut last = after;
        let mut out = Vec::new();
        for row in rows {
            let (id, d, at) = row?;
            last = id;
            out.push((d, at));
        }
        Ok((last, out))
    }

    /// Where a reader of the stored bounces starts: after the row it had
    /// reached (`feed_cursors`), but never before the first bounce dated
    /// `since` or later (older ones are no longer worth reading).
    pub fn feed_start(&self, reader: &str, since: DateTime<Utc>) -> Result<i64, StoreError> {
        let reached: Option<i64> = self
            .conn
            .prepare_cached("SELECT last_id FROM feed_cursors WHERE reader = ?1")?
            .query_row([reader], |r| r.get(0))
            .optional()?;
        let first_recent: Option<i64> = self.conn.query_row(
            "SELECT min(id) FROM bounces WHERE at >= ?1 OR (at IS NULL AND ingested_at >= ?1)",
            [ms(since)],
            |r| r.get(0),
        )?;
        let bound = match first_recent {
            Some(id) => id - 1,
            None => self.last_bounce_row()?,
        };
        Ok(reached.map_or(bound, |r| r.max(bound)))
    }

    /// The last stored bounce's row.
    pub fn last_bounce_row(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT coalesce(max(id), 0) FROM bounces", [], |r| r.get(0))?)
    }

    /// Reinstatements recorded at or after `since`, oldest first.
    pub fn reinstatements(
        &self,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<Reinstatement>, StoreError> {
        let sql = format!(
            "SELECT i.id, i.created_at, i.verdict, i.reason, i.bounce_id, {WINDOW_COLUMNS}, {} \
             FROM reinstatements i JOIN bounces b ON b.id = i.bounce_id \
               LEFT JOIN windows w ON w.id = i.window_id LEFT JOIN domains d ON d.id = w.domain_id \
             WHERE i.created_at >= ?1 ORDER BY i.created_at, i.id",
            intake::BOUNCE_COLUMNS
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map([since.map(ms).unwrap_or(i64::MIN)], |r| {
            let window = match r.get::<_, Option<i64>>(5)? {
                Some(_) => Some(window_from_row(r, 5)?),
                None => None,
            };
            Ok(Reinstatement {
                id: r.get(0)?,
                created_at: from_ms(r.get(1)?),
                verdict: r.get(2)?,
                reason: r.get(3)?,
                bounce_id: r.get(4)?,
                window,
                bounce: intake::bounce_from_row(r, 5 + WINDOW_FIELDS)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Runs `f` inside one read transaction: its queries see one snapshot,
    /// and take SQLite's file locks once rather than once per query.
    pub fn snapshot<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, E>,
    ) -> Result<T, E> {
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(|e| E::from(StoreError::Sql(e)))?;
        let out = f(self);
        // A read transaction has nothing to keep: ending it cannot lose data.
        let _ = tx.finish();
        out
    }

    /// How many bounces are stored.
    pub fn bounce_count(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM bounces", [], |r| r.get(0))?)
    }

    /// Whether the database answers a read of its tables: one indexed
    /// lookup, cheap enough for a readiness probe every few seconds.
    pub fn ping(&self) -> Result<(), StoreError> {
        self.conn
            .query_row("SELECT max(id) FROM domains", [], |_| Ok(()))?;
        Ok(())
    }

    /// Row counts of the history tables: (runs, changes, windows).
    pub fn counts(&self) -> Result<(i64, i64, i64), StoreError> {
        Ok(self.conn.query_row(
            "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM changes), (SELECT count(*) FROM windows)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?)
    }

    /// Folds the WAL into the main file (for size measurements and backups).
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }
}

/// Where a page of windows ends: the next page starts after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowCursor {
    start: i64,
    id: i64,
}

impl std::fmt::Display for WindowCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.start, self.id)
    }
}

impl std::str::FromStr for WindowCursor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a cursor this API gave");
        let (start, id) = s.split_once('.').ok_or_else(bad)?;
        Ok(WindowCursor {
            start: start.parse().map_err(|_| bad())?,
            id: id.parse().map_err(|_| bad())?,
        })
    }
}

/// One page of windows, and the cursor of the next when there is one.
#[derive(Debug)]
pub struct WindowPage {
    pub windows: Vec<Window>,
    pub next: Option<WindowCursor>,
}
