//! What was known about a domain at a moment: the windows that covered
//! it and its consensus MX then, as a verdict needs them. The database
//! answers (the CLI, the writer's intake), and so does the read model
//! (the API).

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::read::{WINDOW_COLUMNS, window_from_row};
use super::{Judging, Store};
use super::{StoreError, from_ms, ms, parse_mx_text};
use crate::anomaly;
use crate::bounce::Bounce;
use crate::dns::Outcome;
use crate::domain::Mx;
use crate::provider::Providers;
use crate::verdict::{self, Evidence, Judgement};

/// What was known about a domain at `at`, for a verdict: the windows that
/// covered that moment (its own, global ones such as resolver outages,
/// anomalies of the domain or its provider), and its consensus MX then
/// (when history has records). `remote_mta` places an unwatched domain
/// under the provider that refused. The database answers it (the CLI), and
/// so does the serving writer's in-memory read model (the API); a test
/// holds the two to the same answers.
pub trait Knowledge {
    fn circumstances(
        &self,
        domain: &str,
        at: DateTime<Utc>,
        remote_mta: Option<&str>,
        providers: &crate::provider::Providers,
    ) -> Result<Circumstances, StoreError>;
}

impl Knowledge for Store {
    fn circumstances(
        &self,
        domain: &str,
        at: DateTime<Utc>,
        remote_mta: Option<&str>,
        providers: &crate::provider::Providers,
    ) -> Result<Circumstances, StoreError> {
        circumstances(&self.conn, domain, at, remote_mta, providers, None)
    }
}

/// What was known about a domain at a moment.
#[derive(Debug, Clone, Default)]
pub struct Circumstances {
    /// Windows covering the moment: the domain's, global ones, and anomaly
    /// windows of the domain or its provider.
    pub windows: Vec<Evidence>,
    /// The consensus MX then, when history has records.
    pub mx_at: Option<Vec<Mx>>,
    /// The provider the domain's bounces count under.
    pub provider: Option<String>,
    /// Whether the domain had any recorded answer by then.
    pub domain_known: bool,
    /// The earliest stored bounce: how far the feed's history reaches
    /// (anomaly detection warms up on it).
    pub feed_since: Option<DateTime<Utc>>,
}

impl Circumstances {
    /// How much the verdict at `at` can rest on.
    pub fn grounds(&self, at: DateTime<Utc>, anomaly: &anomaly::Params) -> verdict::Grounds {
        verdict::Grounds {
            domain_known: self.domain_known,
            warming_up: (!anomaly.warmed_up(self.feed_since, at))
                .then(|| anomaly.warmup_caveat(self.feed_since, at)),
        }
    }

    /// Judges `b` at `at` in these circumstances, as known at `at`: an
    /// anomaly whose bounces had stopped by then has ended there, whoever
    /// last looked.
    pub fn judge(&self, b: &Bounce, at: DateTime<Utc>, judging: &Judging) -> Judgement {
        let windows: Vec<Evidence> = self
            .windows
            .iter()
            .map(|w| w.clone().as_of(at, &judging.anomaly))
            .collect();
        verdict::judge_bounce(
            b,
            at,
            &windows,
            self.mx_at.as_deref(),
            &judging.providers,
            &self.grounds(at, &judging.anomaly),
        )
    }
}

/// The earliest dated bounce stored.
pub(super) fn feed_since(conn: &Connection) -> Result<Option<DateTime<Utc>>, StoreError> {
    let v: Option<i64> = conn
        .prepare_cached("SELECT min(at) FROM bounces")?
        .query_row([], |r| r.get(0))?;
    Ok(v.map(from_ms))
}

/// Whether `domain` had a consensus answer by `at`, and its MX then when
/// the run in force had records.
/// How long after a bounce a domain's first check still tells what its MX
/// were at the bounce: a domain checked because it bounced (or just added
/// to the watchlist) was not watched at that moment, and DNS answers do
/// not change by the minute.
pub const FIRST_CHECK_REACH: chrono::Duration = chrono::Duration::minutes(10);

/// The consensus answer in force at a moment, as a verdict needs it.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct InForce {
    /// Whether the domain had any consensus answer by then.
    pub known: bool,
    /// The MX of the last answer believed by then, when it had records.
    pub mx: Option<Vec<Mx>>,
    /// The answer in force departed from the baseline and was held, not
    /// (yet) believed: evidence that the domain's MX may be changing.
    pub held: Option<Evidence>,
}

/// The consensus answer in force at `at`: the last run that started by
/// then, or else the domain's first run if it started within
/// [`FIRST_CHECK_REACH`] after. A held run does not give the MX (the last
/// believed one before it does); it is evidence of its own.
pub(super) fn consensus_mx_at(
    conn: &Connection,
    domain: &str,
    at: DateTime<Utc>,
) -> Result<InForce, StoreError> {
    type Run = (String, String, bool, i64, Option<String>);
    let run =
        |bound: DateTime<Utc>, order: &str, believed: bool| -> Result<Option<Run>, StoreError> {
            let only = if believed { "AND r.held = 0" } else { "" };
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT r.outcome, r.mx, r.held, r.first_seen, r.detail FROM runs r \
                 WHERE r.domain_id = (SELECT id FROM domains WHERE name = ?1) AND r.upstream = '*' \
                   AND r.first_seen <= ?2 {only} \
                 ORDER BY r.first_seen {order} LIMIT 1"
                ))?
                .query_row(params![domain, ms(bound)], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                })
                .optional()?)
        };
    let reach = at.checked_add_signed(FIRST_CHECK_REACH).unwrap_or(at);
    let row = match run(at, "DESC", false)? {
        Some(row) => Some(row),
        None => run(reach, "ASC", false)?,
    };
    let records = |outcome: &str, mx: &str| {
        (outcome.parse::<Outcome>().ok() == Some(Outcome::Records)).then(|| parse_mx_text(mx))
    };
    let Some((outcome, mx, held, first_seen, detail)) = row else {
        return Ok(InForce::default());
    };
    if !held {
        return Ok(InForce {
            known: true,
            mx: records(&outcome, &mx),
            held: None,
        });
    }
    let believed = run(at, "DESC", true)?;
    let outcome: Outcome = outcome.parse().unwrap_or(Outcome::Error);
    Ok(InForce {
        known: believed.is_some(),
        mx: believed.and_then(|(o, mx, ..)| records(&o, &mx)),
        held: Some(Evidence::unconfirmed(
            from_ms(first_seen),
            outcome,
            &parse_mx_text(&mx),
            detail.as_deref(),
        )),
    })
}

/// A stored window, from [`WINDOW_COLUMNS`](super::read::WINDOW_COLUMNS), as evidence.
pub(super) fn evidence_from_row(r: &rusqlite::Row) -> rusqlite::Result<Evidence> {
    Ok(Evidence::of(&window_from_row(r, 0)?))
}

/// What was known about `domain` at `at`; `remote_mta` places an unwatched
/// domain under the provider that refused.
/// `feed_since` is the earliest stored bounce, when the caller knows it
/// (the intake's detector does); `None` reads it from the table.
/// How a stored bounce is judged now, on what `conn` knows (`feed_since`
/// read once by the caller for a batch); `None` for an undated one.
pub(super) fn judge_stored(
    conn: &Connection,
    judging: &Judging,
    b: &Bounce,
    feed_since: Option<DateTime<Utc>>,
) -> Result<Option<Judgement>, StoreError> {
    let Some(at) = b.at else { return Ok(None) };
    let remote = b.remote_mta.as_deref();
    let c = circumstances(
        conn,
        &b.domain,
        at,
        remote,
        &judging.providers,
        Some(feed_since),
    )?;
    Ok(Some(c.judge(b, at, judging)))
}

pub(super) fn circumstances(
    conn: &Connection,
    domain: &str,
    at: DateTime<Utc>,
    remote_mta: Option<&str>,
    providers: &Providers,
    feed_since_known: Option<Option<DateTime<Utc>>>,
) -> Result<Circumstances, StoreError> {
    let in_force = consensus_mx_at(conn, domain, at)?;
    let (domain_known, mx_at) = (in_force.known, in_force.mx);
    let provider = verdict::provider_scope(mx_at.as_deref(), remote_mta, providers);
    // Two index lookups: the domain's own windows, then those without a
    // domain (global windows and anomalies, matched by scope).
    let own = format!(
        "SELECT {WINDOW_COLUMNS} FROM windows w LEFT JOIN domains d ON d.id = w.domain_id \
         WHERE w.domain_id = (SELECT id FROM domains WHERE name = ?1) \
           AND w.start <= ?2 AND (w.end IS NULL OR w.end >= ?2) \
           AND w.close_reason IS NOT 'withdrawn'"
    );
    let other = format!(
        "SELECT {WINDOW_COLUMNS} FROM windows w LEFT JOIN domains d ON d.id = w.domain_id \
         WHERE w.domain_id IS NULL AND w.start <= ?2 AND (w.end IS NULL OR w.end >= ?2) \
           AND w.close_reason IS NOT 'withdrawn' \
           AND (w.scope IS NULL OR (w.scope_kind = 'domain' AND w.scope = ?1) \
                OR (w.scope_kind = 'provider' AND w.scope = ?3))"
    );
    let mut windows = Vec::new();
    for rows in [
        conn.prepare_cached(&own)?
            .query_map(params![domain, ms(at)], evidence_from_row)?
            .collect::<Result<Vec<_>, _>>()?,
        conn.prepare_cached(&other)?
            .query_map(params![domain, ms(at), provider], evidence_from_row)?
            .collect::<Result<Vec<_>, _>>()?,
    ] {
        windows.extend(rows);
    }
    windows.extend(in_force.held);
    windows.sort_by_key(|w| (w.start, w.id));
    Ok(Circumstances {
        windows,
        mx_at,
        provider,
        domain_known,
        feed_since: match feed_since_known {
            Some(known) => known,
            None => feed_since(conn)?,
        },
    })
}
