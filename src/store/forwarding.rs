//! Forwarding's share of the store: the requests kept whole for
//! `passthrough` targets, and the outbox events that announce a bounce, a
//! request or a reinstatement to the `forward:` targets. They are written
//! in the transaction that stores the bounces (so a forward is never lost
//! and never made of a bounce that was not stored); the delivery engine
//! reads them like any outbox event.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Store, StoreError, from_ms, ms};
use crate::bounce::{Bounce, Kind};
use crate::event::EventType;
use crate::verdict::{EvidenceKind, Judgement, Verdict};

/// A request that came in over HTTP (through the token, or a signed SNS
/// message): its bounces are marked so, may be undone at the ESPs, and
/// are announced to the forward targets that want them.
#[derive(Debug, Clone, Default)]
pub struct Arrival {
    /// The receiver it came to: `ses`, `sendgrid`, `mailgun`, `postmark`,
    /// or `bounces` (`/v1/bounces`).
    pub receiver: String,
    /// Announce each newly stored bounce (for `listmonk` and `json` targets).
    pub bounces: bool,
    /// The request as it came, when `passthrough` targets want it.
    pub request: Option<RawRequest>,
}

/// An ESP's request as it came in: the headers kept and the body, byte
/// for byte.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawRequest {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// For a batch (a JSON array): the recipients of each of its events,
    /// so that it can be cut by event.
    pub items: Option<Vec<Vec<String>>>,
}

/// A request kept for passthrough.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedRequest {
    pub id: i64,
    pub receiver: String,
    pub received_at: DateTime<Utc>,
    pub headers: Vec<(String, String)>,
    /// Loaded only for the event being sent (never for a page of events).
    pub body: Option<Vec<u8>>,
}

/// A piece of evidence, as a forwarded verdict cites it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cited {
    /// The stored window's id (none for evidence found on the spot).
    pub id: Option<i64>,
    pub kind: EvidenceKind,
}

/// A verdict as forwarding keeps it with the event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judged {
    pub verdict: Verdict,
    pub suppress: bool,
    #[serde(default)]
    pub reasons: Vec<String>,
    #[serde(default)]
    pub evidence: Vec<Cited>,
    #[serde(default)]
    pub caveats: Vec<String>,
}

impl From<&Judgement> for Judged {
    fn from(j: &Judgement) -> Self {
        Judged {
            verdict: j.verdict,
            suppress: j.suppress,
            reasons: j.reasons.clone(),
            evidence: j
                .evidence
                .iter()
                .map(|e| Cited {
                    id: e.id,
                    kind: e.kind,
                })
                .collect(),
            caveats: j.caveats.clone(),
        }
    }
}

/// One bounce of a request, with its verdict: what a passthrough target
/// decides on (the request cannot be changed, only sent, held or cut).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JudgedPart {
    pub recipient: String,
    pub kind: Kind,
    /// Whether the ESP (or the bounce) calls it permanent.
    pub hard: bool,
    pub verdict: Verdict,
}

/// What a forwarding event carries besides its outbox row.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Forwarded {
    /// The bounce it announces (its id, as stored).
    pub bounce: Option<(i64, Bounce)>,
    /// Its verdict when announced (`bounce`), or the verdict it was turned
    /// over to (`reinstated`).
    pub judged: Option<Judged>,
    /// The request as it came (`request`).
    pub request: Option<FeedRequest>,
    /// The verdicts of a request's bounces (`request`).
    pub parts: Vec<JudgedPart>,
    /// A batch's recipients, event by event (`request`).
    pub items: Option<Vec<Vec<String>>>,
    /// The `bounce` event a `reinstated` one follows.
    pub follows: Option<i64>,
    /// Where this consumer's delivery of that event stands, when it took
    /// it; set by the delivery engine for the consumer reading.
    pub followed: Option<super::DeliveryStatus>,
    /// (`undo`) An operator keeps the address suppressed (`undo keep`).
    pub kept: bool,
    /// (`undo`) The verdict of the address's latest stored bounce.
    pub latest: Option<Verdict>,
}

/// What the detail column of a `request` event holds.
#[derive(Serialize, Deserialize)]
struct RequestDetail {
    parts: Vec<JudgedPart>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    items: Option<Vec<Vec<String>>>,
}

fn insert_event(
    tx: &rusqlite::Transaction,
    now: DateTime<Utc>,
    event: EventType,
    summary: &str,
    ids: (Option<i64>, Option<i64>, Option<i64>),
    detail: Option<String>,
) -> Result<(), StoreError> {
    let (bounce, request, window) = ids;
    tx.prepare_cached(
        "INSERT INTO outbox(created_at, event, domain_id, window_id, summary, bounce_id, request_id, detail) \
         VALUES (?1, ?2, NULL, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        ms(now),
        event,
        window,
        summary,
        bounce,
        request,
        detail
    ])?;
    Ok(())
}

fn to_json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("a forwarding detail serialises")
}

/// Announces what one request brought: each newly stored bounce (`ids`:
/// its id, or none when it was stored before) and the request itself,
/// unless the same request was kept before (an ESP's retry).
pub(super) fn announce(
    tx: &rusqlite::Transaction,
    arrival: &Arrival,
    list: &[Bounce],
    ids: &[Option<i64>],
    judgements: &[Judgement],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let request = match &arrival.request {
        Some(r) => keep_request(tx, &arrival.receiver, r, now)?,
        None => None,
    };
    // Bounces over HTTP (stored with `via`), and only such, may take an
    // address off a suppression list.
    for ((b, id), j) in list.iter().zip(ids).zip(judgements) {
        let Some(id) = id else { continue };
        if suppressed_by_esp(b) && j.undoes_suppression() {
            undo(tx, (*id, b), j, None, now)?;
        }
    }
    if arrival.bounces {
        for ((b, id), j) in list.iter().zip(ids).zip(judgements) {
            let Some(id) = id else { continue };
            let summary =
                crate::summary::forwarded(&b.recipient, b.kind.as_str(), j.verdict.as_str());
            let detail = to_json(&Judged::from(j));
            let ids = (Some(*id), request, None);
            insert_event(tx, now, EventType::Bounce, &summary, ids, Some(detail))?;
        }
    }
    if let Some(id) = request {
        let parts: Vec<JudgedPart> = list
            .iter()
            .zip(judgements)
            .map(|(b, j)| JudgedPart {
                recipient: b.recipient.clone(),
                kind: b.kind,
                hard: b.hard,
                verdict: j.verdict,
            })
            .collect();
        let summary = crate::summary::request(&arrival.receiver, parts.len());
        let items = arrival.request.as_ref().and_then(|r| r.items.clone());
        let detail = to_json(&RequestDetail { parts, items });
        let ids = (None, Some(id), None);
        insert_event(tx, now, EventType::Request, &summary, ids, Some(detail))?;
    }
    Ok(())
}

/// Keeps a request; its id, or none when the same request (receiver,
/// headers and body) was kept before.
fn keep_request(
    tx: &rusqlite::Transaction,
    receiver: &str,
    r: &RawRequest,
    now: DateTime<Utc>,
) -> Result<Option<i64>, StoreError> {
    let headers = encode_headers(&r.headers);
    let mut h = Sha256::new();
    for part in [receiver.as_bytes(), headers.as_bytes()] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.update(&r.body);
    let digest = h.finalize().to_vec();
    let n = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO feed_requests(received_at, receiver, digest, headers, body) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![ms(now), receiver, digest, headers, r.body])?;
    Ok((n == 1).then(|| tx.last_insert_rowid()))
}

/// Headers as stored: one `name: value` per line (values with a line
/// break are never kept; `http` refuses them anyway).
fn encode_headers(headers: &[(String, String)]) -> String {
    headers
        .iter()
        .filter(|(n, v)| !n.contains(['\n', '\r', ':']) && !v.contains(['\n', '\r']))
        .map(|(n, v)| format!("{n}: {v}\n"))
        .collect()
}

fn decode_headers(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// How long a request's body is kept for passthrough targets once none
/// of its deliveries waits for it (pending or held).
pub const KEEP_REQUESTS: chrono::Duration = chrono::Duration::days(7);

/// Forgets the bodies of requests older than [`KEEP_REQUESTS`] that no
/// delivery waits for (the row stays, so a late retry of the ESP is still
/// known). Each tick looks at the two days before the cut only.
pub(super) fn prune(tx: &rusqlite::Transaction, now: DateTime<Utc>) -> Result<(), StoreError> {
    let cut = now - KEEP_REQUESTS;
    tx.prepare_cached(
        "UPDATE feed_requests SET body = x'', headers = '' \
         WHERE received_at >= ?1 AND received_at < ?2 AND length(body) > 0 \
           AND NOT EXISTS (SELECT 1 FROM outbox o JOIN alert_deliveries a ON a.outbox_id = o.id \
             WHERE o.request_id = feed_requests.id AND a.status IN ('pending', 'held'))",
    )?
    .execute(params![ms(cut - chrono::Duration::days(2)), ms(cut)])?;
    Ok(())
}

/// Whether the ESP (or the handler behind it) suppressed the address on
/// this bounce: a hard bounce, or the ESP's own suppression notice.
fn suppressed_by_esp(b: &Bounce) -> bool {
    b.hard || b.kind == Kind::Suppressed
}

/// An undo: the suppression made on bounce `id` is to be taken off the
/// lists that block sending (the `undo:` targets decide which are theirs).
fn undo(
    tx: &rusqlite::Transaction,
    (id, b): (i64, &Bounce),
    j: &Judgement,
    window: Option<i64>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let summary = crate::summary::forwarded(&b.recipient, b.kind.as_str(), j.verdict.as_str());
    let detail = to_json(&Judged::from(j));
    insert_event(
        tx,
        now,
        EventType::Undo,
        &summary,
        (Some(id), None, window),
        Some(detail),
    )
}

/// When a bounce that was announced for forwarding is turned over, its
/// targets hear of it (those that took the announcement decide); when it
/// came over HTTP and the evidence says it was false, its suppression is
/// to be undone.
pub(super) fn reinstated(
    tx: &rusqlite::Transaction,
    bounce: (i64, &Bounce),
    judgement: &Judgement,
    window: Option<i64>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let (id, b) = bounce;
    let via: Option<String> = tx
        .prepare_cached("SELECT via FROM bounces WHERE id = ?1")?
        .query_row([id], |r| r.get(0))?;
    if via.as_deref() == Some("http") && suppressed_by_esp(b) && judgement.undoes_suppression() {
        undo(tx, (id, b), judgement, window, now)?;
    }
    follow_up(tx, EventType::Reinstated, (id, b), judgement, window, now)
}

/// A forwarded bounce's new verdict, as an `event` for the forward
/// targets (nothing for a bounce that was never announced to them).
fn follow_up(
    tx: &rusqlite::Transaction,
    event: EventType,
    (id, b): (i64, &Bounce),
    judgement: &Judgement,
    window: Option<i64>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let announced: bool = tx
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM outbox WHERE bounce_id = ?1 AND event = 'bounce')",
        )?
        .query_row([id], |r| r.get(0))?;
    if !announced {
        return Ok(());
    }
    let summary =
        crate::summary::forwarded(&b.recipient, b.kind.as_str(), judgement.verdict.as_str());
    let detail = to_json(&Judged::from(judgement));
    let ids = (Some(id), None, window);
    insert_event(tx, now, event, &summary, ids, Some(detail))
}

/// A bounce a withdrawn window had excused, judged again (`suppress`):
/// a forward target that took it is sent it again with its new verdict
/// (one more `bounce` event for it, naming the window).
pub(super) fn rejudged(
    tx: &rusqlite::Transaction,
    bounce: (i64, &Bounce),
    judgement: &Judgement,
    window: i64,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    follow_up(tx, EventType::Bounce, bounce, judgement, Some(window), now)
}

/// The outbox columns a forwarding event adds, with its bounce's
/// ([`super::intake::BOUNCE_COLUMNS`] of `b`, joined on `o.bounce_id`).
pub(super) fn event_columns() -> String {
    format!(
        "o.bounce_id, o.request_id, o.detail, {}",
        super::intake::BOUNCE_COLUMNS
    )
}

/// The columns of [`event_columns`] at `o`, as read.
pub(super) struct EventRow {
    bounce: Option<(i64, Bounce)>,
    request_id: Option<i64>,
    detail: Option<String>,
}

pub(super) fn event_row(r: &rusqlite::Row, o: usize) -> rusqlite::Result<EventRow> {
    let bounce_id: Option<i64> = r.get(o)?;
    let bounce = match bounce_id {
        // Joined: the bounce row is there unless deleted by hand.
        Some(id) if r.get::<_, Option<String>>(o + 3)?.is_some() => {
            Some((id, super::intake::bounce_from_row(r, o + 3)?))
        }
        _ => None,
    };
    Ok(EventRow {
        bounce,
        request_id: r.get(o + 1)?,
        detail: r.get(o + 2)?,
    })
}

impl Store {
    /// What a forwarding event carries: its bounce, verdict, request (the
    /// body only with `body`), and the event it follows.
    pub(super) fn forwarded(
        &self,
        event: EventType,
        row: EventRow,
        body: bool,
    ) -> Result<Option<Forwarded>, StoreError> {
        if event.is_alert() {
            return Ok(None);
        }
        let EventRow {
            bounce,
            request_id,
            detail,
        } = row;
        let mut f = Forwarded {
            bounce,
            ..Forwarded::default()
        };
        if let Some(id) = request_id.filter(|_| event == EventType::Request) {
            f.request = self.feed_request(id, body)?;
        }
        match event {
            EventType::Request => {
                if let Some(d) = detail.and_then(|d| serde_json::from_str::<RequestDetail>(&d).ok())
                {
                    f.parts = d.parts;
                    f.items = d.items;
                }
            }
            _ => f.judged = detail.and_then(|d| serde_json::from_str(&d).ok()),
        }
        if event == EventType::Undo
            && let Some((_, b)) = &f.bounce
        {
            f.kept = self
                .conn
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM undo_keep WHERE address = ?1)")?
                .query_row([&b.recipient], |r| r.get(0))?;
            f.latest = self
                .conn
                .prepare_cached(
                    "SELECT verdict FROM bounces WHERE recipient = ?1 AND verdict IS NOT NULL \
                     ORDER BY at DESC, id DESC LIMIT 1",
                )?
                .query_row([&b.recipient], |r| r.get(0))
                .optional()?;
        }
        if event == EventType::Reinstated
            && let Some((id, _)) = &f.bounce
        {
            f.follows = self
                .conn
                .prepare_cached(
                    "SELECT min(id) FROM outbox WHERE bounce_id = ?1 AND event = 'bounce'",
                )?
                .query_row([id], |r| r.get(0))?;
        }
        Ok(Some(f))
    }

    fn feed_request(&self, id: i64, body: bool) -> Result<Option<FeedRequest>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT receiver, received_at, headers, CASE WHEN ?2 THEN body END \
                 FROM feed_requests WHERE id = ?1",
            )?
            .query_row(params![id, body], |r| {
                Ok(FeedRequest {
                    id,
                    receiver: r.get(0)?,
                    received_at: from_ms(r.get(1)?),
                    headers: decode_headers(&r.get::<_, String>(2)?),
                    body: r.get(3)?,
                })
            })
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bodies go 7 days after they came, unless a delivery still waits
    /// for them; the rows stay (an ESP's late retry is still known).
    #[test]
    fn request_bodies_are_forgotten_once_nothing_waits_for_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = super::super::open(&dir.path().join("f.db")).unwrap();
        let t0 = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let tx = conn.transaction().unwrap();
        let mut ids = Vec::new();
        for i in 0..3u8 {
            let r = RawRequest {
                headers: vec![("content-type".into(), "application/json".into())],
                body: vec![b'[', b'0' + i, b']'],
                items: None,
            };
            ids.push(keep_request(&tx, "sendgrid", &r, t0).unwrap().unwrap());
        }
        // The same request again is kept once.
        let again = RawRequest {
            headers: vec![("content-type".into(), "application/json".into())],
            body: b"[0]".to_vec(),
            items: None,
        };
        assert_eq!(keep_request(&tx, "sendgrid", &again, t0).unwrap(), None);
        for (i, status) in [(1, "held"), (2, "delivered")] {
            tx.execute(
                "INSERT INTO outbox(created_at, event, summary, request_id) VALUES (0, 'request', '', ?1)",
                [ids[i]],
            )
            .unwrap();
            tx.execute(
                "INSERT INTO alert_deliveries(outbox_id, target, status, attempts) \
                 VALUES (last_insert_rowid(), 'forward:t', ?1, 0)",
                [status],
            )
            .unwrap();
        }
        prune(&tx, t0 + chrono::Duration::days(6)).unwrap();
        let kept = |tx: &rusqlite::Transaction| -> Vec<i64> {
            tx.prepare("SELECT length(body) FROM feed_requests ORDER BY id")
                .unwrap()
                .query_map([], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap()
        };
        assert_eq!(kept(&tx), [3, 3, 3], "younger than 7 days");
        prune(&tx, t0 + chrono::Duration::days(8)).unwrap();
        assert_eq!(kept(&tx), [0, 3, 0], "the held one's body stays");
    }

    #[test]
    fn headers_survive_their_encoding_and_line_breaks_are_never_kept() {
        let h = vec![
            (
                "content-type".to_string(),
                "text/plain; charset=UTF-8".to_string(),
            ),
            (
                "x-amz-sns-message-type".to_string(),
                "Notification".to_string(),
            ),
            ("x-evil".to_string(), "a\r\nx-injected: 1".to_string()),
        ];
        assert_eq!(decode_headers(&encode_headers(&h)), h[..2]);
    }
}
