//! Alert delivery state: per target, a cursor over the outbox and one row
//! per event being or having been delivered. The outbox row itself is
//! written in the transaction that records what it announces; these rows
//! only say how far each target got.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

use super::{OutboxRow, Store, StoreError, Window, from_ms, ms};
use crate::event::EventType;
use crate::names::named;

/// One outbox event with what an alert needs to describe it.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertEvent {
    pub outbox: OutboxRow,
    pub window: Option<Window>,
}

impl AlertEvent {
    /// Its stable id, the same in every attempt and every body.
    pub fn id(&self) -> String {
        crate::event::event_id_of(self.outbox.id)
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
    }
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
}

/// A change to delivery state, sent through the writer.
#[derive(Debug, Clone)]
pub enum DeliveryWrite {
    /// Sets a target's cursor where it has none yet (a new target starts
    /// at the newest event, so it is not flooded with history).
    StartCursor { target: String },
    /// Moves the cursor past an event the target does not want.
    Skip { target: String, outbox_id: i64 },
    /// Takes an event on for delivery and moves the cursor past it.
    Enqueue { target: String, outbox_id: i64 },
    /// The outcome of an attempt.
    Attempted {
        delivery: i64,
        at: DateTime<Utc>,
        status: DeliveryStatus,
        error: Option<String>,
        next_attempt: Option<DateTime<Utc>>,
    },
    /// `mxwatch alerts retry ID`: a failed delivery is tried again.
    Retry { delivery: i64 },
}

pub(super) fn write(tx: &rusqlite::Transaction, w: &DeliveryWrite) -> Result<(), StoreError> {
    match w {
        DeliveryWrite::StartCursor { target } => {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO alert_cursors(target, last_id) \
                 VALUES (?1, (SELECT coalesce(max(id), 0) FROM outbox))",
            )?
            .execute([target])?;
        }
        DeliveryWrite::Skip { target, outbox_id } => {
            tx.prepare_cached(
                "UPDATE alert_cursors SET last_id = max(last_id, ?2) WHERE target = ?1",
            )?
            .execute(params![target, outbox_id])?;
        }
        DeliveryWrite::Enqueue { target, outbox_id } => {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO alert_deliveries(outbox_id, target, status, attempts) \
                 VALUES (?2, ?1, 'pending', 0)",
            )?
            .execute(params![target, outbox_id])?;
            tx.prepare_cached(
                "UPDATE alert_cursors SET last_id = max(last_id, ?2) WHERE target = ?1",
            )?
            .execute(params![target, outbox_id])?;
        }
        DeliveryWrite::Attempted {
            delivery,
            at,
            status,
            error,
            next_attempt,
        } => {
            tx.prepare_cached(
                "UPDATE alert_deliveries SET status = ?2, attempts = attempts + 1, last_attempt = ?3, \
                   last_error = ?4, next_attempt = ?5, \
                   delivered_at = CASE WHEN ?2 = 'delivered' THEN ?3 ELSE delivered_at END \
                 WHERE id = ?1",
            )?
            .execute(params![
                delivery,
                status.as_str(),
                ms(*at),
                error,
                next_attempt.map(ms)
            ])?;
        }
        DeliveryWrite::Retry { delivery } => {
            tx.prepare_cached(
                "UPDATE alert_deliveries SET status = 'pending', next_attempt = NULL WHERE id = ?1",
            )?
            .execute([delivery])?;
        }
    }
    Ok(())
}

const DELIVERY_COLUMNS: &str = "a.id, a.outbox_id, a.target, a.status, a.attempts, a.next_attempt, \
     a.last_attempt, a.last_error, o.event, o.summary, o.created_at";

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

    /// The oldest pending delivery of a target: it goes before anything
    /// newer, which keeps the target's events in order.
    pub fn next_delivery(&self, target: &str) -> Result<Option<Delivery>, StoreError> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM alert_deliveries a JOIN outbox o ON o.id = a.outbox_id \
             WHERE a.target = ?1 AND a.status = 'pending' ORDER BY a.outbox_id LIMIT 1"
        );
        Ok(self
            .conn
            .prepare_cached(&sql)?
            .query_row([target], delivery_from_row)
            .optional()?)
    }

    /// Deliveries, newest first; `failed_only` for those given up on.
    pub fn deliveries(&self, failed_only: bool) -> Result<Vec<Delivery>, StoreError> {
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM alert_deliveries a JOIN outbox o ON o.id = a.outbox_id \
             WHERE ?1 = 0 OR a.status = 'failed' ORDER BY a.id DESC"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map([failed_only], delivery_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
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

    /// Outbox events after `after`, oldest first, with their windows.
    pub fn alert_events(&self, after: i64, limit: usize) -> Result<Vec<AlertEvent>, StoreError> {
        let rows = self.outbox_after(after, Some(limit))?;
        rows.into_iter()
            .map(|o| {
                let window = match o.window_id {
                    Some(id) => self.window(id)?,
                    None => None,
                };
                Ok(AlertEvent { outbox: o, window })
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

    /// How many deliveries each target has in each status (for `/metrics`).
    pub fn delivery_counts(&self) -> Result<Vec<(String, DeliveryStatus, i64)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT target, status, count(*) FROM alert_deliveries GROUP BY target, status \
             ORDER BY target, status",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The outbox event behind a delivery.
    pub fn alert_event(&self, outbox_id: i64) -> Result<Option<AlertEvent>, StoreError> {
        Ok(self.alert_events(outbox_id - 1, 1)?.into_iter().next())
    }
}
