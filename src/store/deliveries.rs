//! Alert delivery state: per target, a cursor over the outbox and one row
//! per event being or having been delivered. The outbox row itself is
//! written in the transaction that records what it announces; these rows
//! only say how far each target got.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

use super::{Forwarded, OutboxRow, Store, StoreError, Window, forwarding, from_ms, ms};
use crate::event::EventType;
use crate::names::named;

/// One outbox event with what an alert needs to describe it.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertEvent {
    pub outbox: OutboxRow,
    pub window: Option<Window>,
    /// What a forwarding event (`bounce`, `request`, `reinstated`) carries.
    pub forward: Option<Box<Forwarded>>,
}

impl AlertEvent {
    /// Its stable id, the same in every attempt and every body.
    pub fn id(&self) -> String {
        crate::event::event_id_of(self.outbox.id)
    }

    /// Whether it was loaded whole: a page of events leaves requests'
    /// bodies out ([`Store::alert_event`] loads one whole).
    pub fn is_whole(&self) -> bool {
        self.forward
            .as_deref()
            .and_then(|f| f.request.as_ref())
            .is_none_or(|r| r.body.is_some())
    }

    /// How much it matters.
    pub fn severity(&self) -> crate::window::Severity {
        self.outbox
            .event
            .severity(self.window.as_ref().map(|w| w.severity))
    }

    /// The domain it is about, if one: its own, or an anomaly's.
    pub fn domain(&self) -> Option<String> {
        self.outbox.domain.clone().or_else(|| {
            self.window.as_ref().and_then(|w| match &w.scope {
                Some(crate::window::Scope::Domain(name)) => Some(name.clone()),
                _ => None,
            })
        })
    }
}

named! {
    /// Where a delivery stands.
    pub enum DeliveryStatus {
        /// Being tried (or waiting for its next attempt).
        Pending => "pending",
        Delivered => "delivered",
        /// Refused for good (4xx other than 408/429) or given up after
        /// `max_age`; kept for inspection and `alerts retry`.
        Failed => "failed",
        /// Kept back by the consumer (a forward whose verdict says it must
        /// not reach the handler as it is) until an operator releases it.
        Held => "held",
    }
}

/// Whose deliveries: the alert targets', or the forward targets'. Both
/// keep their state in the same tables, forward targets under
/// [`FORWARD_PREFIX`] and their name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consumers {
    Alerts,
    Forward,
    Undo,
}

/// The prefix of a forward target's name in the delivery tables.
pub const FORWARD_PREFIX: &str = "forward:";

/// The prefix of an undo target's name in the delivery tables.
pub const UNDO_PREFIX: &str = "undo:";

impl Consumers {
    /// The name a consumer's deliveries and cursor are kept under.
    pub fn key(self, name: &str) -> String {
        match self {
            Consumers::Alerts => name.to_string(),
            Consumers::Forward => format!("{FORWARD_PREFIX}{name}"),
            Consumers::Undo => format!("{UNDO_PREFIX}{name}"),
        }
    }

    /// What its targets deliver, for the log (`alert`, `forward`, `undo`).
    pub fn what(self) -> &'static str {
        match self {
            Consumers::Alerts => "alert",
            Consumers::Forward => "forward",
            Consumers::Undo => "undo",
        }
    }

    /// The command that lists its deliveries (`mxwatch alerts list`).
    pub fn command(self) -> &'static str {
        match self {
            Consumers::Alerts => "alerts",
            other => other.what(),
        }
    }

    /// Whose a key is.
    pub fn of(key: &str) -> Consumers {
        if key.starts_with(FORWARD_PREFIX) {
            Consumers::Forward
        } else if key.starts_with(UNDO_PREFIX) {
            Consumers::Undo
        } else {
            Consumers::Alerts
        }
    }

    /// The consumer's own name, from the key it is kept under.
    pub fn name(self, key: &str) -> &str {
        match self {
            Consumers::Alerts => key,
            Consumers::Forward => key.strip_prefix(FORWARD_PREFIX).unwrap_or(key),
            Consumers::Undo => key.strip_prefix(UNDO_PREFIX).unwrap_or(key),
        }
    }

    /// SQL that holds for the keys of these consumers' rows in `a` (key
    /// ranges, so the index on targets serves them).
    fn filter(self) -> &'static str {
        match self {
            Consumers::Alerts => {
                "(a.target < 'forward:' OR (a.target >= 'forward;' AND a.target < 'undo:') \
                 OR a.target >= 'undo;')"
            }
            Consumers::Forward => "(a.target >= 'forward:' AND a.target < 'forward;')",
            Consumers::Undo => "(a.target >= 'undo:' AND a.target < 'undo;')",
        }
    }
}

/// The page condition of alert targets: the partial index `outbox_alerts`
/// (migration 12) has the same list, and a test holds both to
/// [`EventType::is_alert`].
const NOT_ALERTS: &str =
    "AND o.id <= ?3 AND o.event NOT IN ('bounce', 'request', 'reinstated', 'undo')";

/// What a consumer makes of a new event.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Not for it: the cursor moves past.
    Skip,
    /// To be delivered: all of it, or `parts` of it now and `remainder`
    /// held once those are delivered (opaque to the store); `note` says
    /// how (kept for listings).
    Send {
        parts: Option<String>,
        remainder: Option<String>,
        note: Option<String>,
    },
    /// Kept back until released; `note` says why.
    Hold { parts: Option<String>, note: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub id: i64,
    pub outbox_id: i64,
    pub target: String,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub next_attempt: Option<DateTime<Utc>>,
    pub last_attempt: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub event: EventType,
    pub summary: String,
    pub created_at: DateTime<Utc>,
    /// An operator released it from `held`.
    pub released: bool,
    /// The part of the event it sends (a consumer's own words).
    pub parts: Option<String>,
    /// The part held once this one is delivered.
    pub remainder: Option<String>,
    /// Why it is held, or how it is sent.
    pub note: Option<String>,
    /// What it came to beyond its status (an undo: `removed`, `not_found`,
    /// `dry_run`, `kept`, `waiting`).
    pub outcome: Option<String>,
    /// The domain its event is about, if one.
    pub domain: Option<String>,
    /// Pending deliveries of the same target queued behind this one (set
    /// for a pending one that has failed at least once).
    pub queued_behind: u32,
}

/// A change to delivery state, sent through the writer.
#[derive(Debug, Clone)]
pub enum DeliveryWrite {
    /// Sets a target's cursor where it has none yet: after `at`, or (none)
    /// after the newest event, so a new target is not flooded with history.
    StartCursor { target: String, at: Option<i64> },
    /// New events as the target decided on them (in outbox order); the
    /// cursor moves past the last.
    Take {
        target: String,
        decisions: Vec<(i64, Decision)>,
    },
    /// The outcome of an attempt at a target's delivery of an event.
    Attempted {
        target: String,
        outbox_id: i64,
        at: DateTime<Utc>,
        status: DeliveryStatus,
        error: Option<String>,
        next_attempt: Option<DateTime<Utc>>,
        /// What it came to, when there is more to say than its status.
        outcome: Option<&'static str>,
    },
    /// A delivery waits until `until` without an attempt (a target's
    /// hourly cap): still pending, its outcome `waiting`.
    Wait {
        target: String,
        outbox_id: i64,
        until: DateTime<Utc>,
        why: String,
    },
    /// `mxwatch undo keep ADDRESS`: never take it off a list.
    Keep { address: String, at: DateTime<Utc> },
    /// `mxwatch alerts retry ID`: a failed delivery is tried again.
    Retry { delivery: i64 },
    /// `mxwatch forward release ID`: a held delivery is sent as it is.
    Release { delivery: i64 },
    /// Several, in one transaction.
    Batch(Vec<DeliveryWrite>),
}

pub(super) fn write(tx: &rusqlite::Transaction, w: &DeliveryWrite) -> Result<(), StoreError> {
    match w {
        DeliveryWrite::StartCursor { target, at } => {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO alert_cursors(target, last_id) \
                 VALUES (?1, coalesce(?2, (SELECT coalesce(max(id), 0) FROM outbox)))",
            )?
            .execute(params![target, at])?;
        }
        DeliveryWrite::Take { target, decisions } => take(tx, target, decisions)?,
        DeliveryWrite::Wait {
            target,
            outbox_id,
            until,
            why,
        } => {
            tx.prepare_cached(
                "UPDATE alert_deliveries SET next_attempt = ?3, outcome = 'waiting', last_error = ?4 \
                 WHERE outbox_id = ?1 AND target = ?2 AND status = 'pending'",
            )?
            .execute(params![outbox_id, target, ms(*until), why])?;
        }
        DeliveryWrite::Keep { address, at } => {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO undo_keep(address, created_at) VALUES (?1, ?2)",
            )?
            .execute(params![address, ms(*at)])?;
        }
        DeliveryWrite::Attempted {
            target,
            outbox_id,
            at,
            status,
            error,
            next_attempt,
            outcome,
        } => {
            // A part delivered leaves its remainder held.
            tx.prepare_cached(
                "UPDATE alert_deliveries SET \
                   status = CASE WHEN ?2 = 'delivered' AND remainder IS NOT NULL THEN 'held' ELSE ?2 END, \
                   attempts = attempts + 1, last_attempt = ?3, last_error = ?4, next_attempt = ?5, \
                   delivered_at = CASE WHEN ?2 = 'delivered' THEN ?3 ELSE delivered_at END, \
                   parts = CASE WHEN ?2 = 'delivered' AND remainder IS NOT NULL THEN remainder ELSE parts END, \
                   note = CASE WHEN ?2 = 'delivered' AND remainder IS NOT NULL \
                     THEN 'the rest of the batch, held: ' || coalesce(note, '') ELSE note END, \
                   remainder = CASE WHEN ?2 = 'delivered' THEN NULL ELSE remainder END, \
                   outcome = ?7 \
                 WHERE outbox_id = ?1 AND target = ?6",
            )?
            .execute(params![
                outbox_id,
                status.as_str(),
                ms(*at),
                error,
                next_attempt.map(ms),
                target,
                outcome
            ])?;
        }
        DeliveryWrite::Retry { delivery } => {
            tx.prepare_cached(
                "UPDATE alert_deliveries SET status = 'pending', next_attempt = NULL WHERE id = ?1",
            )?
            .execute([delivery])?;
        }
        DeliveryWrite::Release { delivery } => {
            tx.prepare_cached(
                "UPDATE alert_deliveries SET status = 'pending', released = 1, next_attempt = NULL \
                 WHERE id = ?1 AND status = 'held'",
            )?
            .execute([delivery])?;
        }
        DeliveryWrite::Batch(list) => {
            for w in list {
                write(tx, w)?;
            }
        }
    }
    Ok(())
}

/// New events as a target decided on them; the cursor moves past the last.
fn take(
    tx: &rusqlite::Transaction,
    target: &str,
    decisions: &[(i64, Decision)],
) -> Result<(), StoreError> {
    for (outbox_id, d) in decisions {
        let (status, parts, remainder, note) = match d {
            Decision::Skip => continue,
            Decision::Send {
                parts,
                remainder,
                note,
            } => ("pending", parts, remainder, note.as_ref()),
            Decision::Hold { parts, note } => ("held", parts, &None, Some(note)),
        };
        tx.prepare_cached(
            "INSERT OR IGNORE INTO alert_deliveries(outbox_id, target, status, attempts, parts, remainder, note) \
             VALUES (?2, ?1, ?3, 0, ?4, ?5, ?6)",
        )?
        .execute(params![target, outbox_id, status, parts, remainder, note])?;
    }
    if let Some((last, _)) = decisions.last() {
        tx.prepare_cached("UPDATE alert_cursors SET last_id = max(last_id, ?2) WHERE target = ?1")?
            .execute(params![target, last])?;
    }
    Ok(())
}

const DELIVERY_COLUMNS: &str = "a.id, a.outbox_id, a.target, a.status, a.attempts, a.next_attempt, \
     a.last_attempt, a.last_error, o.event, o.summary, o.created_at, a.released, a.parts, a.remainder, a.note, a.outcome, \
     (SELECT name FROM domains WHERE id = o.domain_id), \
     CASE WHEN a.status = 'pending' AND a.attempts > 0 THEN (SELECT count(*) FROM alert_deliveries q \
       WHERE q.target = a.target AND q.status = 'pending' AND q.outbox_id > a.outbox_id) ELSE 0 END";

fn delivery_from_row(r: &rusqlite::Row) -> rusqlite::Result<Delivery> {
    Ok(Delivery {
        id: r.get(0)?,
        outbox_id: r.get(1)?,
        target: r.get(2)?,
        status: r.get(3)?,
        attempts: r.get(4)?,
        next_attempt: r.get::<_, Option<i64>>(5)?.map(from_ms),
        last_attempt: r.get::<_, Option<i64>>(6)?.map(from_ms),
        last_error: r.get(7)?,
        event: r.get(8)?,
        summary: r.get(9)?,
        created_at: from_ms(r.get(10)?),
        released: r.get(11)?,
        parts: r.get(12)?,
        remainder: r.get(13)?,
        note: r.get(14)?,
        outcome: r.get(15)?,
        domain: r.get(16)?,
        queued_behind: r.get(17)?,
    })
}

impl Store {
    /// A target's cursor: the last outbox id it has taken on or skipped.
    pub fn alert_cursor(&self, target: &str) -> Result<Option<i64>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT last_id FROM alert_cursors WHERE target = ?1")?
            .query_row([target], |r| r.get(0))
            .optional()?)
    }

    /// The oldest pending deliveries of a target, at most `limit`: they go
    /// before anything newer, which keeps the target's events in order.
    pub fn next_deliveries(&self, target: &str, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM alert_deliveries a JOIN outbox o ON o.id = a.outbox_id \
             WHERE a.target = ?1 AND a.status = 'pending' ORDER BY a.outbox_id LIMIT ?2"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![target, limit as i64], delivery_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A target's delivery of one event, if it took the event on.
    pub fn delivery_of(
        &self,
        target: &str,
        outbox_id: i64,
    ) -> Result<Option<Delivery>, StoreError> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM alert_deliveries a JOIN outbox o ON o.id = a.outbox_id \
             WHERE a.target = ?1 AND a.outbox_id = ?2"
        );
        Ok(self
            .conn
            .prepare_cached(&sql)?
            .query_row(params![target, outbox_id], delivery_from_row)
            .optional()?)
    }

    /// The deliveries of `whose` targets, newest first; with `status`,
    /// only those in it.
    pub fn deliveries(
        &self,
        whose: Consumers,
        status: Option<DeliveryStatus>,
    ) -> Result<Vec<Delivery>, StoreError> {
        self.deliveries_with(whose, status, None, None)
    }

    /// [`Store::deliveries`], also by outcome, at most `limit`.
    pub fn deliveries_with(
        &self,
        whose: Consumers,
        status: Option<DeliveryStatus>,
        outcome: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Vec<Delivery>, StoreError> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM alert_deliveries a JOIN outbox o ON o.id = a.outbox_id \
             WHERE {} AND (?1 IS NULL OR a.status = ?1) AND (?2 IS NULL OR a.outcome = ?2) \
             ORDER BY a.id DESC LIMIT ?3",
            whose.filter()
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let limit = limit.map_or(-1, |n| n as i64);
        let rows = stmt.query_map(params![status, outcome, limit], delivery_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// When a target's deliveries done since `since` with one of
    /// `outcomes` were done (what an hourly cap counts).
    pub fn done_times(
        &self,
        target: &str,
        since: DateTime<Utc>,
        outcomes: &[&str],
    ) -> Result<Vec<DateTime<Utc>>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT delivered_at, outcome FROM alert_deliveries \
             WHERE target = ?1 AND delivered_at IS NOT NULL AND delivered_at >= ?2",
        )?;
        let rows = stmt.query_map(params![target, ms(since)], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Option<String>>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (at, outcome) = row?;
            if outcome.as_deref().is_some_and(|o| outcomes.contains(&o)) {
                out.push(from_ms(at));
            }
        }
        Ok(out)
    }

    pub fn delivery(&self, id: i64) -> Result<Option<Delivery>, StoreError> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM alert_deliveries a JOIN outbox o ON o.id = a.outbox_id \
             WHERE a.id = ?1"
        );
        Ok(self
            .conn
            .prepare(&sql)?
            .query_row([id], delivery_from_row)
            .optional()?)
    }

    /// Outbox events after `after`, oldest first, with their windows and
    /// what forwarding events carry (but not a request's body).
    pub fn alert_events(&self, after: i64, limit: usize) -> Result<Vec<AlertEvent>, StoreError> {
        self.events_after(after, limit, false, None)
    }

    /// The events `whose` targets read after `after`, at most `limit`, and
    /// how far that reading got: alert targets never read forwarding's
    /// events (an index passes over them), so a page may end past its last
    /// event.
    pub fn events_for(
        &self,
        whose: Consumers,
        after: i64,
        limit: usize,
    ) -> Result<(Vec<AlertEvent>, i64), StoreError> {
        if whose != Consumers::Alerts {
            let events = self.alert_events(after, limit)?;
            let upto = events.last().map_or(after, |e| e.outbox.id);
            return Ok((events, upto));
        }
        // The newest id first: every event up to it is committed, so a page
        // shorter than `limit` has read them all.
        let newest = self.last_outbox_id()?;
        let events = self.events_after(after, limit, false, Some(newest))?;
        let upto = match events.last() {
            Some(e) if events.len() == limit => e.outbox.id,
            _ => newest.max(after),
        };
        Ok((events, upto))
    }

    /// Events after `after`; with `alerts_upto`, only alert events up to it.
    fn events_after(
        &self,
        after: i64,
        limit: usize,
        body: bool,
        alerts_upto: Option<i64>,
    ) -> Result<Vec<AlertEvent>, StoreError> {
        let only = match alerts_upto {
            None => "",
            Some(_) => NOT_ALERTS,
        };
        let sql = format!(
            "SELECT {}, {} \
             FROM outbox o LEFT JOIN domains d ON d.id = o.domain_id \
               LEFT JOIN bounces b ON b.id = o.bounce_id \
             WHERE o.id > ?1 {only} ORDER BY o.id LIMIT ?2",
            super::read::OUTBOX_COLUMNS,
            forwarding::event_columns()
        );
        let rows: Vec<(OutboxRow, forwarding::EventRow)> = self
            .conn
            .prepare_cached(&sql)?
            .query_map(
                rusqlite::params_from_iter([after, limit as i64].into_iter().chain(alerts_upto)),
                |r| {
                    let o = super::read::outbox_from_row(r)?;
                    Ok((o, forwarding::event_row(r, super::read::OUTBOX_FIELDS)?))
                },
            )?
            .collect::<Result<_, _>>()?;
        rows.into_iter()
            .map(|(o, row)| {
                let window = match o.window_id {
                    Some(id) => self.window(id)?,
                    None => None,
                };
                let forward = self.forwarded(o.event, row, body)?.map(Box::new);
                Ok(AlertEvent {
                    outbox: o,
                    window,
                    forward,
                })
            })
            .collect()
    }

    /// How many outbox events of each type were created at or after `since`.
    pub fn outbox_counts_since(
        &self,
        since: DateTime<Utc>,
    ) -> Result<Vec<(EventType, i64)>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT event, count(*) FROM outbox WHERE created_at >= ?1 GROUP BY event ORDER BY event",
        )?;
        let rows = stmt.query_map([ms(since)], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// How many deliveries each alert target has in each status (for `/metrics`).
    pub fn delivery_counts(&self) -> Result<Vec<(String, DeliveryStatus, i64)>, StoreError> {
        let sql = format!(
            "SELECT a.target, a.status, count(*) FROM alert_deliveries a WHERE {} \
             GROUP BY a.target, a.status ORDER BY a.target, a.status",
            Consumers::Alerts.filter()
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The newest outbox event's id (0 when there is none).
    pub fn last_outbox_id(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT coalesce(max(id), 0) FROM outbox", [], |r| r.get(0))?)
    }

    /// The outbox event behind a delivery, whole (a request's body too).
    pub fn alert_event(&self, outbox_id: i64) -> Result<Option<AlertEvent>, StoreError> {
        Ok(self
            .events_after(outbox_id - 1, 1, true, None)?
            .into_iter()
            .next()
            .filter(|e| e.outbox.id == outbox_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failing delivery says how many wait behind it, with its domain
    /// and next attempt; the text says it in words (issue 23).
    #[tokio::test]
    async fn a_failing_delivery_counts_what_waits_behind_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("d.db");
        let judging = crate::store::Judging {
            providers: crate::provider::Providers::default(),
            anomaly: crate::anomaly::Params::default(),
        };
        let (writer, task) = crate::store::Writer::start(&db, judging).unwrap();
        let t = chrono::DateTime::from_timestamp(1_619_434_800, 0).unwrap();
        for i in 0..3 {
            writer
                .announce(EventType::Digest, format!("digest {i}"), t)
                .await
                .unwrap();
        }
        writer.flush().await.unwrap();
        let send = || Decision::Send {
            parts: None,
            remainder: None,
            note: None,
        };
        let target = "ops".to_string();
        writer
            .delivery(DeliveryWrite::StartCursor {
                target: target.clone(),
                at: Some(0),
            })
            .await
            .unwrap();
        writer
            .delivery(DeliveryWrite::Take {
                target: target.clone(),
                decisions: vec![(1, send()), (2, send()), (3, send())],
            })
            .await
            .unwrap();
        writer
            .delivery(DeliveryWrite::Attempted {
                target,
                outbox_id: 1,
                at: t,
                status: DeliveryStatus::Pending,
                error: Some("the receiver answered 503".into()),
                next_attempt: Some(t + chrono::Duration::seconds(30)),
                outcome: None,
            })
            .await
            .unwrap();
        drop(writer);
        task.await.unwrap();
        let store = Store::open(&db).unwrap();
        let list = store.deliveries(Consumers::Alerts, None).unwrap();
        let first = list.iter().find(|d| d.outbox_id == 1).unwrap();
        assert_eq!(first.queued_behind, 2);
        assert!(
            list.iter()
                .filter(|d| d.outbox_id != 1)
                .all(|d| d.queued_behind == 0)
        );
        let text = crate::report::delivery_text(first);
        assert!(
            text.contains("1 attempt, next 2021-04-26T11:00:30Z, 2 events queued behind it"),
            "{text}"
        );
    }

    /// Alert targets pass by exactly the events that are not alerts, in
    /// the query and in the index it uses.
    #[test]
    fn the_events_alert_targets_pass_by_are_those_that_are_not_alerts() {
        let words: Vec<String> = EventType::ALL
            .iter()
            .filter(|t| !t.is_alert())
            .map(|t| format!("'{t}'"))
            .collect();
        let list = format!("NOT IN ({})", words.join(", "));
        assert!(NOT_ALERTS.contains(&list), "{NOT_ALERTS}");
        let index = super::super::schema::M12_ALERTS_INDEX;
        assert!(index.contains(&list), "{index}");
        assert!(super::super::schema::M12_FORWARDING.contains(index));
    }
}
