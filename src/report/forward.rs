//! The bodies forward targets are sent (`listmonk` and `json`; a
//! `passthrough` target gets the ESP's own bytes).

use serde_json::{Value, json};

use crate::bounce::Bounce;
use crate::event::{event_id_of, time};
use crate::store::{AlertEvent, Judged};

/// The version of the `json` forward format.
pub const FORWARD_SCHEMA_VERSION: u32 = 1;

fn evidence(j: &Judged) -> Vec<Value> {
    j.evidence
        .iter()
        .map(|e| json!({"id": e.id, "kind": e.kind}))
        .collect()
}

/// listmonk's generic bounce webhook body (`POST /webhooks/bounce`,
/// listmonk's docs/content/bounces.md): `email`, `source`, `type` (`hard`,
/// `soft` or `complaint`) and `meta`, which the docs describe as "an
/// escaped JSON string": it carries our verdict, its reasons and evidence.
pub fn listmonk_bounce(ev: &AlertEvent, b: &Bounce, j: &Judged, as_type: &str) -> Value {
    let meta = json!({
        "mxwatch": {
            "id": ev.id(),
            "verdict": j.verdict,
            "suppress": j.suppress,
            "reasons": j.reasons,
            "evidence": evidence(j),
            "kind": b.kind,
            "status": b.status,
            "diagnostic": b.diagnostic,
            "at": b.at.map(time),
            "source": b.source,
        }
    });
    json!({
        "email": b.recipient,
        "source": format!("mxwatch/{}", b.source),
        "type": as_type,
        "meta": meta.to_string(),
    })
}

/// The `json` forward format (schema version 1): the normalised bounce,
/// its verdict, and what it is forwarded as; a `reinstated` event names
/// the event it follows.
pub fn forward_json(
    ev: &AlertEvent,
    b: &Bounce,
    j: &Judged,
    as_type: &str,
    released: bool,
) -> Value {
    let follows = ev
        .forward
        .as_deref()
        .and_then(|f| f.follows)
        .map(event_id_of);
    json!({
        "version": FORWARD_SCHEMA_VERSION,
        "id": ev.id(),
        "type": ev.outbox.event,
        "at": time(ev.outbox.created_at),
        "follows": follows,
        "bounce": b,
        "verdict": j.verdict,
        "suppress": j.suppress,
        "reasons": j.reasons,
        "caveats": j.caveats,
        "evidence": evidence(j),
        "forward_as": as_type,
        "released": released,
    })
}
