//! Bounces in, verdicts out, and hindsight: inside the writer's
//! transaction, each new bounce is judged against what the store knew at
//! its time, fed to the anomaly detector and stored with its verdict.
//! Windows found late (an anomaly recognised after N bounces, an MX change
//! seen at the next check, a resolver outage noticed after it began) re-judge
//! the stored `suppress` verdicts they cover; each flip is a *reinstatement*,
//! kept with the window that caused it and announced in the outbox.
//!
//! The judging itself is `verdict`'s and the burst detection `anomaly`'s;
//! this file only gathers their inputs and stores their outputs.

use chrono::{DateTime, DurationRound, Utc};
use rusqlite::{Connection, OptionalExtension, params};

use super::forwarding::{self, Arrival};
use super::knowledge::{circumstances, consensus_mx_at, feed_since, judge_stored};
use super::{StoreError, from_ms, ms};
use crate::anomaly::{self, Anomaly};
use crate::bounce::{Bounce, Delivered, Kind};
use crate::event::EventType;
use crate::provider::Providers;
use crate::summary;
use crate::verdict::{Judgement, Verdict};
use crate::window::{Scope, ScopeKind, WindowKind};

/// What the writer needs to judge: the provider table and the anomaly
/// thresholds (both from the config).
#[derive(Debug, Clone, Default)]
pub struct Judging {
    pub providers: Providers,
    pub anomaly: anomaly::Params,
}

/// What a batch of bounces came to.
#[derive(Debug, Clone, Default)]
pub struct Intake {
    /// Bounces new to the store (the rest were stored before).
    pub stored: usize,
    /// One judgement per bounce, in the order given.
    pub judgements: Vec<Judgement>,
    /// Suppressions this batch's windows turned over.
    pub reinstated: usize,
    /// Deliveries new to the store (a lot read before counts once).
    pub delivered: u64,
}

/// The deliveries of one domain in one minute of one batch.
struct Lot {
    minute: DateTime<Utc>,
    domain: String,
    remote_mta: Option<String>,
    /// (identity, count) of each delivery event or record in it.
    identities: Vec<(u64, u64)>,
}

/// Deliveries grouped into lots, in time order (undated ones at `now`).
fn lots(delivered: &[Delivered], now: DateTime<Utc>) -> Vec<Lot> {
    let mut by: std::collections::BTreeMap<(DateTime<Utc>, &str), Lot> = Default::default();
    for d in delivered {
        let at = d.at.unwrap_or(now);
        let minute = at
            .duration_trunc(chrono::Duration::minutes(1))
            .unwrap_or(at);
        let lot = by
            .entry((minute, d.domain.as_str()))
            .or_insert_with(|| Lot {
                minute,
                domain: d.domain.clone(),
                remote_mta: None,
                identities: Vec::new(),
            });
        lot.identities.push((d.identity, d.count));
        if lot.remote_mta.is_none() {
            lot.remote_mta.clone_from(&d.remote_mta);
        }
    }
    by.into_values()
        .map(|mut lot| {
            lot.identities.sort_unstable();
            lot.identities.dedup_by_key(|(id, _)| *id);
            lot
        })
        .collect()
}

/// The columns of a stored bounce, as [`bounce_from_row`] reads them.
pub(super) const BOUNCE_COLUMNS: &str = "b.recipient, b.domain, b.at, b.action, b.status, b.reply_code, \
     (SELECT text FROM diagnostics WHERE id = b.diagnostic_id), b.remote_mta, b.reporting_mta, b.kind, b.hard, b.source, b.message_id";

/// Which stored suppressions a late window may cover.
#[derive(Debug, Clone, Copy)]
pub(super) enum Covered<'a> {
    Domain(&'a str),
    Provider(&'a str),
    All,
}

/// The verdict engine's state that outlives a transaction: the anomaly
/// detector. Owned by the writer.
pub(super) struct Intaker {
    pub(super) judging: Judging,
    detector: anomaly::Detector,
    /// Whether an anomaly window was stored or closed since the writer
    /// last asked (the read model reloads windows only then).
    windows_changed: bool,
}

impl Intaker {
    pub(super) fn new(judging: Judging) -> Self {
        Intaker {
            detector: anomaly::Detector::new(judging.anomaly),
            judging,
            windows_changed: false,
        }
    }

    /// Whether anomaly windows changed since the last call.
    pub(super) fn take_windows_changed(&mut self) -> bool {
        std::mem::take(&mut self.windows_changed)
    }

    /// Rebuilds the detector from the unknown-user bounces and delivery
    /// lots before the newest stored one (two baselines: the busiest half
    /// hours are remembered that long); bursts it finds again are already
    /// stored (their rows are matched, nothing is announced twice).
    pub(super) fn warm(&mut self, conn: &mut Connection) -> Result<(), StoreError> {
        self.detector = anomaly::Detector::new(self.judging.anomaly);
        if let Some(first) = feed_since(conn)? {
            self.detector.note(first);
        }
        let reach = chrono::Duration::from_std(self.judging.anomaly.baseline)
            .ok()
            .and_then(|b| b.checked_mul(anomaly::PEAK_MEMORY))
            .unwrap_or(chrono::Duration::days(14));
        let newest: Option<i64> = conn.query_row(
            "SELECT max(t) FROM (SELECT max(at) AS t FROM bounces WHERE kind = 'user_unknown' \
             UNION ALL SELECT max(minute) FROM delivered)",
            [],
            |r| r.get(0),
        )?;
        let Some(newest) = newest else {
            return self.adopt_stored(conn, None);
        };
        let since = from_ms(newest)
            .checked_sub_signed(reach)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        // Bounces (a recipient) and lots (a count), merged in time order.
        // (at, domain, provider, recipient of a bounce or none, lot count)
        type Row = (i64, String, Option<String>, Option<String>, i64);
        let rows: Vec<Row> = conn
            .prepare(
                "SELECT at, domain, provider, recipient, 0 FROM bounces \
                   WHERE kind = 'user_unknown' AND at >= ?1 \
                 UNION ALL SELECT minute, domain, provider, NULL, count FROM delivered \
                   WHERE minute >= ?1 \
                 ORDER BY 1, 4 IS NOT NULL",
            )?
            .query_map([ms(since)], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect::<Result<_, _>>()?;
        let mut events = Vec::new();
        for (at, domain, provider, recipient, count) in &rows {
            let scopes = scopes(domain, provider.as_deref());
            match recipient {
                Some(r) => events.extend(self.detector.observe(&scopes, from_ms(*at), r)),
                None => self.detector.delivered(
                    &scopes,
                    from_ms(*at),
                    u64::try_from(*count).unwrap_or(0),
                ),
            }
        }
        events.extend(self.detector.close_idle(from_ms(newest)));
        let tx = conn.transaction()?;
        for ev in events {
            self.apply(&tx, ev, from_ms(newest))?;
        }
        let open: Vec<Scope> = self.detector.open_all().map(|a| a.scope.clone()).collect();
        self.track(&tx, &open)?;
        tx.commit()?;
        self.adopt_stored(conn, Some(from_ms(newest)))
    }

    /// Anomaly windows an earlier process left open: the one the rebuilt
    /// detector holds open for the same burst stays open, under the
    /// detector's rules from now on; any other is closed at its scope's
    /// last unknown-user bounce (no window stays open on the word of a
    /// process that is gone).
    fn adopt_stored(
        &mut self,
        conn: &mut Connection,
        now: Option<DateTime<Utc>>,
    ) -> Result<(), StoreError> {
        let stored: Vec<(ScopeKind, String, i64, Option<String>)> = conn
            .prepare(
                "SELECT scope_kind, scope, start, detail FROM windows \
                 WHERE kind = 'anomaly' AND status != 'closed' AND scope IS NOT NULL",
            )?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<Result<_, _>>()?;
        if stored.is_empty() {
            return Ok(());
        }
        let tx = conn.transaction()?;
        for (kind, name, start, detail) in stored {
            let Some(scope) = Scope::of(kind, name) else {
                continue;
            };
            let start = from_ms(start);
            if self.detector.open(&scope).is_some_and(|a| a.start == start) {
                continue;
            }
            let column = match scope {
                Scope::Provider(_) => "provider",
                Scope::Domain(_) => "domain",
            };
            let (last, count): (Option<i64>, i64) = tx.query_row(
                &format!(
                    "SELECT max(at), count(*) FROM bounces \
                     WHERE kind = 'user_unknown' AND {column} = ?1 AND at >= ?2"
                ),
                params![scope.name(), ms(start)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            let end = last.map_or(start, from_ms);
            let a = Anomaly {
                scope,
                start,
                end: Some(end),
                bounces: usize::try_from(count).unwrap_or(0),
                detail: detail.unwrap_or_default(),
            };
            self.windows_changed |= close_anomaly(&tx, &a, now.unwrap_or(end).max(end))?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Keeps the stored last bounce of each of `scopes`' open anomalies,
    /// from which a question finds whether the burst is over.
    fn track(&mut self, tx: &rusqlite::Transaction, scopes: &[Scope]) -> Result<(), StoreError> {
        for scope in scopes {
            let (Some(a), Some(last)) =
                (self.detector.open(scope), self.detector.last_bounce(scope))
            else {
                continue;
            };
            let changed = tx
                .prepare_cached(
                    "UPDATE windows SET last_bounce = ?4 \
                     WHERE kind = 'anomaly' AND scope_kind = ?1 AND scope = ?2 AND start = ?3 \
                       AND status != 'closed' AND (last_bounce IS NULL OR last_bounce < ?4)",
                )?
                .execute(params![scope.kind(), scope.name(), ms(a.start), ms(last)])?;
            self.windows_changed |= changed > 0;
        }
        Ok(())
    }

    /// Stores a lot of deliveries (once) and counts it; how many.
    fn lot(&mut self, tx: &rusqlite::Transaction, lot: &Lot) -> Result<u64, StoreError> {
        let mx = consensus_mx_at(tx, &lot.domain, lot.minute)?.mx;
        let provider = crate::verdict::provider_scope(
            mx.as_deref(),
            lot.remote_mta.as_deref(),
            &self.judging.providers,
        );
        let ids: Vec<String> = lot
            .identities
            .iter()
            .map(|(id, n)| format!("{id}x{n}"))
            .collect();
        let mut parts = vec![lot.domain.as_str()];
        let minute = ms(lot.minute).to_string();
        parts.push(&minute);
        parts.extend(ids.iter().map(String::as_str));
        let digest = crate::bounce::digest(&parts) as i64;
        let count = lot
            .identities
            .iter()
            .fold(0u64, |sum, (_, n)| sum.saturating_add(*n));
        let n = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO delivered(domain, provider, minute, count, digest) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                lot.domain,
                provider,
                ms(lot.minute),
                count as i64,
                digest
            ])?;
        if n == 0 {
            return Ok(0);
        }
        self.detector.note(lot.minute);
        self.detector
            .delivered(&scopes(&lot.domain, provider.as_deref()), lot.minute, count);
        Ok(count)
    }

    /// Stores a batch of bounces with their verdicts, and counts a batch of
    /// deliveries, all in time order.
    pub(super) fn bounces(
        &mut self,
        tx: &rusqlite::Transaction,
        list: &[Bounce],
        delivered: &[Delivered],
        arrival: Option<&Arrival>,
        now: DateTime<Utc>,
    ) -> Result<Intake, StoreError> {
        let mut ids: Vec<Option<i64>> = vec![None; list.len()];
        let mut order: Vec<usize> = (0..list.len()).collect();
        order.sort_by_key(|&i| list[i].at.unwrap_or(now));
        let lots = lots(delivered, now);
        let mut lots = lots.iter().peekable();
        let mut judgements: Vec<Option<Judgement>> = vec![None; list.len()];
        let mut intake = Intake::default();
        let mut latest: Option<DateTime<Utc>> = None;
        for i in order {
            let b = &list[i];
            let at = b.at.unwrap_or(now);
            latest = latest.max(Some(at));
            while let Some(lot) = lots.next_if(|l| l.minute <= at) {
                intake.delivered += self.lot(tx, lot)?;
            }
            // Bursts over by this bounce's time end before it is judged,
            // whenever the daemon's tick last ran: the verdict must not
            // depend on it.
            for ev in self.detector.close_idle(at) {
                self.apply(tx, ev, now)?;
            }
            // Over HTTP means through the token (or a signed SNS message).
            let via = arrival.map(|_| "http");
            let new = insert_bounce(tx, b, via, now)?;
            if new.is_some() {
                self.detector.note(at);
            }
            let providers = &self.judging.providers;
            let since = Some(self.detector.history_since());
            let remote = b.remote_mta.as_deref();
            let mut c = circumstances(tx, &b.domain, at, remote, providers, since)?;
            if new.is_some() {
                intake.stored += 1;
                if b.kind == Kind::UserUnknown {
                    let scopes = scopes(&b.domain, c.provider.as_deref());
                    let events = self.detector.observe(&scopes, at, &b.recipient);
                    let opened = !events.is_empty();
                    for ev in events {
                        intake.reinstated += self.apply(tx, ev, now)?;
                    }
                    self.track(tx, &scopes)?;
                    if opened {
                        // The new window may cover this bounce too.
                        let providers = &self.judging.providers;
                        c = circumstances(tx, &b.domain, at, remote, providers, since)?;
                    }
                }
            }
            let j = c.judge(b, at, &self.judging);
            ids[i] = new;
            if let Some(id) = new {
                tx.prepare_cached("UPDATE bounces SET verdict = ?2, provider = ?3 WHERE id = ?1")?
                    .execute(params![id, j.verdict, c.provider])?;
            }
            judgements[i] = Some(j);
        }
        for lot in lots {
            intake.delivered += self.lot(tx, lot)?;
            latest = latest.max(Some(lot.minute));
        }
        if let Some(latest) = latest {
            for ev in self.detector.close_idle(latest) {
                self.apply(tx, ev, now)?;
            }
        }
        intake.judgements = judgements
            .into_iter()
            .map(|j| j.expect("every bounce judged"))
            .collect();
        if let Some(arrival) = arrival {
            forwarding::announce(tx, arrival, list, &ids, &intake.judgements, now)?;
        }
        Ok(intake)
    }

    /// Closes anomalies whose bounces have stopped by `now`.
    pub(super) fn tick(
        &mut self,
        tx: &rusqlite::Transaction,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        for ev in self.detector.close_idle(now) {
            self.apply(tx, ev, now)?;
        }
        Ok(())
    }

    /// Stores an anomaly event; an opened window re-judges what it covers.
    /// Returns how many suppressions it turned over.
    fn apply(
        &mut self,
        tx: &rusqlite::Transaction,
        ev: anomaly::Event,
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        match ev {
            anomaly::Event::Opened(a) => {
                let inserted = tx
                    .prepare_cached(
                        "INSERT OR IGNORE INTO windows(domain_id, kind, start, detected_at, status, severity, \
                           scope_kind, scope, detail) \
                         VALUES (NULL, ?1, ?2, ?3, 'open', 'critical', ?4, ?5, ?6)",
                    )?
                    .execute(params![
                        WindowKind::Anomaly,
                        ms(a.start),
                        ms(now),
                        a.scope.kind(),
                        a.scope.name(),
                        a.detail
                    ])?;
                if inserted == 0 {
                    return Ok(0);
                }
                self.windows_changed = true;
                let id = tx.last_insert_rowid();
                let summary = summary::anomaly_opened(&a);
                outbox(tx, now, EventType::AnomalyOpened, Some(id), &summary)?;
                let covered = match &a.scope {
                    Scope::Provider(p) => Covered::Provider(p),
                    Scope::Domain(d) => Covered::Domain(d),
                };
                reconsider(tx, &self.judging, covered, a.start, now)
            }
            anomaly::Event::Closed(a) => {
                self.windows_changed |= close_anomaly(tx, &a, now)?;
                Ok(0)
            }
        }
    }
}

/// The anomaly scopes a bounce counts in: its domain and its provider, or
/// only the provider when that is the domain itself (a domain whose MX
/// hosts are its own): one burst, one window.
pub(crate) fn scopes(domain: &str, provider: Option<&str>) -> Vec<Scope> {
    match provider {
        Some(p) if p == domain => vec![Scope::Provider(p.to_string())],
        Some(p) => vec![
            Scope::Domain(domain.to_string()),
            Scope::Provider(p.to_string()),
        ],
        None => vec![Scope::Domain(domain.to_string())],
    }
}

/// Closes a stored anomaly window; whether one was open.
fn close_anomaly(
    tx: &rusqlite::Transaction,
    a: &Anomaly,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let id: Option<i64> = tx
        .prepare_cached(
            "UPDATE windows SET end = ?4, status = 'closed', close_reason = 'subsided', detail = ?5 \
             WHERE kind = 'anomaly' AND scope_kind = ?1 AND scope = ?2 AND start = ?3 AND status != 'closed' \
             RETURNING id",
        )?
        .query_row(
            params![
                a.scope.kind(),
                a.scope.name(),
                ms(a.start),
                a.end.map(ms),
                summary::anomaly_detail(a)
            ],
            |r| r.get(0),
        )
        .optional()?;
    let closed = id.is_some();
    if let Some(id) = id {
        let summary = summary::anomaly_closed(a);
        outbox(tx, now, EventType::AnomalyClosed, Some(id), &summary)?;
    }
    Ok(closed)
}

fn outbox(
    tx: &rusqlite::Transaction,
    now: DateTime<Utc>,
    event: EventType,
    window_id: Option<i64>,
    summary: &str,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO outbox(created_at, event, domain_id, window_id, summary) \
         VALUES (?1, ?2, (SELECT domain_id FROM windows WHERE id = ?3), ?3, ?4)",
    )?
    .execute(params![ms(now), event, window_id, summary])?;
    Ok(())
}

/// Inserts a bounce unless stored before; its id when new.
fn insert_bounce(
    tx: &rusqlite::Transaction,
    b: &Bounce,
    via: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Option<i64>, StoreError> {
    // The words are stored once, shared by every bounce that carries them.
    let diagnostic: Option<i64> = match &b.diagnostic {
        Some(text) => Some(
            match tx
                .prepare_cached("SELECT id FROM diagnostics WHERE text = ?1")?
                .query_row([text], |r| r.get(0))
                .optional()?
            {
                Some(id) => id,
                None => {
                    tx.prepare_cached("INSERT INTO diagnostics(text) VALUES (?1)")?
                        .execute([text])?;
                    tx.last_insert_rowid()
                }
            },
        ),
        None => None,
    };
    let n = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO bounces(recipient, domain, at, action, status, reply_code, diagnostic_id, remote_mta, \
             reporting_mta, kind, hard, source, message_id, ingested_at, via) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
        )?
        .execute(params![
            b.recipient,
            b.domain,
            b.at.map(ms),
            b.action.map(|a| a.as_str()),
            b.status,
            b.reply_code,
            diagnostic,
            b.remote_mta,
            b.reporting_mta,
            b.kind,
            b.hard,
            b.source,
            b.message_id,
            ms(now),
            via
        ])?;
    Ok((n == 1).then(|| tx.last_insert_rowid()))
}

/// Re-judges the stored `suppress` verdicts of bounces at or after `since`
/// that `covered` selects; each that no longer holds becomes a
/// reinstatement. Returns how many.
pub(super) fn reconsider(
    tx: &rusqlite::Transaction,
    judging: &Judging,
    covered: Covered,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let (filter, arg) = match covered {
        Covered::Domain(d) => ("b.domain = ?2", Some(d)),
        Covered::Provider(p) => ("b.provider = ?2", Some(p)),
        Covered::All => ("?2 IS NULL", None),
    };
    let sql = format!(
        "SELECT b.id, {BOUNCE_COLUMNS} FROM bounces b \
         WHERE b.verdict = 'suppress' AND b.at >= ?1 AND {filter} ORDER BY b.at, b.id"
    );
    // Read once for the whole batch of candidates.
    let since_feed = feed_since(tx)?;
    let candidates: Vec<(i64, Bounce)> = tx
        .prepare_cached(&sql)?
        .query_map(params![ms(since), arg], |r| {
            let id: i64 = r.get(0)?;
            let b = bounce_from_row(r, 1)?;
            Ok((id, b))
        })?
        .collect::<Result<_, _>>()?;
    let mut flipped: Vec<(String, Option<i64>)> = Vec::new();
    for (id, b) in candidates {
        let Some(j) = judge_stored(tx, judging, &b, since_feed)? else {
            continue;
        };
        if j.verdict == Verdict::Suppress {
            continue;
        }
        let window = j.evidence.iter().find_map(|e| e.id);
        tx.prepare_cached("UPDATE bounces SET verdict = ?2 WHERE id = ?1")?
            .execute(params![id, j.verdict])?;
        tx.prepare_cached(
            "INSERT OR IGNORE INTO reinstatements(bounce_id, window_id, created_at, verdict, reason) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![id, window, ms(now), j.verdict, j.reasons.join("; ")])?;
        forwarding::reinstated(tx, (id, &b), &j, window, now)?;
        flipped.push((b.recipient, window));
    }
    if let Some((_, window)) = flipped.first() {
        let names: Vec<&str> = flipped.iter().map(|(r, _)| r.as_str()).collect();
        let summary = summary::reinstatements(&names, since);
        outbox(tx, now, EventType::Reinstatements, *window, &summary)?;
    }
    Ok(flipped.len())
}

/// A stored bounce from [`BOUNCE_COLUMNS`], starting at column `offset`.
pub(super) fn bounce_from_row(r: &rusqlite::Row, offset: usize) -> rusqlite::Result<Bounce> {
    let o = offset;
    Ok(Bounce {
        recipient: r.get(o)?,
        domain: r.get(o + 1)?,
        at: r.get::<_, Option<i64>>(o + 2)?.map(from_ms),
        action: r
            .get::<_, Option<String>>(o + 3)?
            .and_then(|a| crate::bounce::Action::parse(&a)),
        status: r.get(o + 4)?,
        reply_code: r.get(o + 5)?,
        diagnostic: r.get(o + 6)?,
        remote_mta: r.get(o + 7)?,
        reporting_mta: r.get(o + 8)?,
        kind: r.get::<_, String>(o + 9)?.parse().unwrap_or(Kind::Other),
        hard: r.get(o + 10)?,
        source: r
            .get::<_, String>(o + 11)?
            .parse()
            .unwrap_or(crate::bounce::Source::Jsonl),
        message_id: r.get(o + 12)?,
    })
}
