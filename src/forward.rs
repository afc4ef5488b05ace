//! Forwarding (gateway mode): mxwatch stands in front of a bounce handler
//! (listmonk, Mautic, a homegrown consumer), stores and judges each event
//! that comes in over HTTP, and forwards it to the handler changed
//! according to its verdict. Each `forward:` target is a consumer of the
//! outbox ([`crate::delivery`] delivers it in order, retried with backoff,
//! durable across restarts); this module says which events a target takes,
//! which it holds, and how one is sent.
//!
//! - `listmonk`: one `POST /webhooks/bounce` per bounce, typed `hard`,
//!   `soft` or `complaint` by its verdict.
//! - `json`: our normalised bounce with its verdict (schema version 1),
//!   and a `reinstated` follow-up when a window found late turns over a
//!   bounce forwarded as hard.
//! - `passthrough`: the ESP's request, byte for byte with its headers, so
//!   that handlers which verify the ESP's signature still accept it. A
//!   request that would reach the handler as a hard bounce against its
//!   verdict is held (a signed request cannot be changed); an unsigned
//!   batch is cut to its passing events and the rest held.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;

use crate::bounce::{Bounce, Kind};
use crate::delivery::{Attempt, Consumer, Policy, Settled, Worker, Workers};
use crate::event::EventType;
use crate::metrics::Metrics;
use crate::names::named;
use crate::report;
use crate::secret::Secret;
use crate::store::{AlertEvent, Consumers, Decision, Delivery, DeliveryStatus, JudgedPart};
use crate::verdict::Verdict;

named! {
    /// What a forward target is sent.
    pub enum Format {
        /// listmonk's generic bounce webhook (`POST /webhooks/bounce`).
        Listmonk => "listmonk",
        /// The ESP's request as it came.
        Passthrough => "passthrough",
        /// mxwatch's normalised bounce and verdict, schema version 1.
        Json => "json",
    }
}

named! {
    /// What a `transient` verdict (the bounce looks permanent, but the
    /// recipient's side was broken then) is forwarded as.
    pub enum OnTransient {
        Soft => "soft",
        Hold => "hold",
    }
}

named! {
    /// What an `ignore` verdict (not the recipient's fault) is forwarded as.
    pub enum OnIgnore {
        /// As it came: hard if the ESP called it hard.
        Unchanged => "unchanged",
        Drop => "drop",
    }
}

/// How a target is told who is calling.
#[derive(Debug, Clone, PartialEq)]
pub enum Auth {
    None,
    /// HTTP Basic (listmonk's API users).
    Basic {
        user: String,
        password: Secret,
    },
    Bearer(Secret),
    /// An arbitrary header, such as `X-Api-Key`.
    Header {
        name: String,
        value: Secret,
    },
}

/// One forward target, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardTarget {
    pub name: String,
    pub url: String,
    pub format: Format,
    pub auth: Auth,
    /// Sources taken (ESPs, `dsn`, `jsonl`…, or a passthrough target's
    /// receivers: `ses`, `sendgrid`, `mailgun`, `postmark`, `bounces`);
    /// empty means all.
    pub sources: Vec<String>,
    /// Recipient domains taken; empty means all.
    pub domains: Vec<String>,
    /// Tags of watched domains taken; empty means all.
    pub tags: Vec<String>,
    pub transient: OnTransient,
    pub ignore: OnIgnore,
    pub timeout: Duration,
    pub max_age: Duration,
    pub backoff: Duration,
}

/// What one bounce is forwarded as, or why not.
#[derive(Debug, Clone, PartialEq)]
enum Route {
    /// Sent, typed `hard`, `soft` or `complaint`.
    Send(&'static str),
    Hold(String),
    Drop,
}

/// The type a bounce has as it came: a complaint, or hard or soft as the
/// ESP (or the bounce) calls it.
pub fn native_type(kind: Kind, hard: bool) -> &'static str {
    match (kind, hard) {
        (Kind::Complaint, _) => "complaint",
        (_, true) => "hard",
        (_, false) => "soft",
    }
}

impl ForwardTarget {
    /// What a bounce of `kind` with `verdict` is forwarded as.
    fn route(&self, kind: Kind, hard: bool, verdict: Verdict) -> Route {
        if kind == Kind::Complaint {
            return Route::Send("complaint");
        }
        match verdict {
            Verdict::Suppress => Route::Send("hard"),
            Verdict::Transient => match self.transient {
                OnTransient::Soft => Route::Send("soft"),
                OnTransient::Hold => Route::Hold(
                    "verdict transient (the recipient's side was broken then), and transient: hold"
                        .into(),
                ),
            },
            Verdict::Retry => Route::Send("soft"),
            Verdict::Ignore => match self.ignore {
                OnIgnore::Unchanged => Route::Send(native_type(kind, hard)),
                OnIgnore::Drop => Route::Drop,
            },
        }
    }

    /// What one bounce of a request the handler will read as the ESP wrote
    /// it comes to: it may pass only if it reaches the handler as what its
    /// verdict says.
    fn route_as_is(&self, p: &JudgedPart) -> Route {
        let native = native_type(p.kind, p.hard);
        match self.route(p.kind, p.hard, p.verdict) {
            Route::Send(t) if t == native => Route::Send(t),
            Route::Send(t) => Route::Hold(format!(
                "{}: the ESP calls it {native}, its verdict {} says {t}; a request cannot be rewritten",
                p.recipient, p.verdict
            )),
            other => other,
        }
    }

    fn wants_domain(&self, domain: &str, tags: &HashMap<String, Vec<String>>) -> bool {
        if !self.domains.is_empty() && !self.domains.iter().any(|d| d == domain) {
            return false;
        }
        if !self.tags.is_empty() {
            let theirs = tags.get(domain).map(Vec::as_slice).unwrap_or(&[]);
            return self.tags.iter().any(|t| theirs.contains(t));
        }
        true
    }

    fn wants_source(&self, source: &str) -> bool {
        self.sources.is_empty() || self.sources.iter().any(|s| s == source)
    }
}

/// Headers an ESP's request keeps when it is passed through: what the
/// handler needs to read it and to check its signature.
pub const PASSTHROUGH_HEADERS: &[&str] = &[
    "content-type",
    "user-agent",
    "x-amz-sns-message-type",
    "x-amz-sns-message-id",
    "x-amz-sns-topic-arn",
    "x-amz-sns-subscription-arn",
    "x-amz-sns-rawdelivery",
    "x-twilio-email-event-webhook-signature",
    "x-twilio-email-event-webhook-timestamp",
];

/// Whether a kept request carries a signature over its body in a header
/// (SendGrid's signed event webhook); SNS and Mailgun sign inside the body
/// and send one event per request.
fn signed_batch(headers: &[(String, String)]) -> bool {
    headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("x-twilio-email-event-webhook-signature"))
}

/// A forward target as a consumer of the outbox.
pub struct Forwarding {
    pub target: ForwardTarget,
    /// Watched domains' tags, for tag filters.
    pub tags: HashMap<String, Vec<String>>,
    pub metrics: Option<Arc<Metrics>>,
}

fn send(note: String) -> Decision {
    Decision::Send {
        parts: None,
        remainder: None,
        note: Some(note),
    }
}

impl Forwarding {
    /// A `bounce` event, for `listmonk` and `json` targets.
    fn take_bounce(&self, ev: &AlertEvent) -> Decision {
        let t = &self.target;
        let Some(f) = ev.forward.as_deref() else {
            return Decision::Skip;
        };
        let (Some((_, b)), Some(j)) = (&f.bounce, &f.judged) else {
            return Decision::Skip;
        };
        if !t.wants_source(b.source.as_str()) || !t.wants_domain(&b.domain, &self.tags) {
            return Decision::Skip;
        }
        match t.route(b.kind, b.hard, j.verdict) {
            Route::Send(as_type) => send(format!("as {as_type} (verdict {})", j.verdict)),
            Route::Hold(note) => Decision::Hold { parts: None, note },
            Route::Drop => Decision::Skip,
        }
    }

    /// A `reinstated` event: `json` targets that took the bounce it
    /// follows (and did not hold it) hear of it.
    fn take_reinstated(&self, ev: &AlertEvent) -> Decision {
        let Some(f) = ev.forward.as_deref() else {
            return Decision::Skip;
        };
        match (f.followed, f.follows) {
            (Some(status), Some(id)) if status != DeliveryStatus::Held => {
                send(format!("follows {}", crate::event::event_id_of(id)))
            }
            _ => Decision::Skip,
        }
    }

    /// A `request` event, for `passthrough` targets: sent whole when every
    /// bounce in it may reach the handler as the ESP wrote it; otherwise
    /// held whole, or (an unsigned batch) cut to the events that may pass
    /// with the rest held.
    fn take_request(&self, ev: &AlertEvent) -> Decision {
        let t = &self.target;
        let Some(f) = ev.forward.as_deref() else {
            return Decision::Skip;
        };
        let Some(r) = &f.request else {
            return Decision::Skip;
        };
        if !t.wants_source(&r.receiver) {
            return Decision::Skip;
        }
        let domain_ok = |p: &JudgedPart| {
            let domain = p.recipient.rsplit_once('@').map_or("", |(_, d)| d);
            t.wants_domain(domain, &self.tags)
        };
        if (!t.domains.is_empty() || !t.tags.is_empty()) && !f.parts.iter().any(domain_ok) {
            return Decision::Skip;
        }
        let routes: Vec<Route> = f.parts.iter().map(|p| t.route_as_is(p)).collect();
        let held: Vec<&String> = routes
            .iter()
            .filter_map(|r| match r {
                Route::Hold(why) => Some(why),
                _ => None,
            })
            .collect();
        let dropped = routes.iter().filter(|r| **r == Route::Drop).count();
        if held.is_empty() && dropped == 0 {
            return send("as it came".into());
        }
        if held.is_empty() && dropped == routes.len() && f.items.is_none() {
            return Decision::Skip;
        }
        let why = held
            .first()
            .map_or_else(|| "ignore: drop".to_string(), |w| (*w).clone());
        match (&f.items, signed_batch(&r.headers)) {
            (Some(items), false) => self.split(items, &f.parts, &routes),
            (Some(_), true) => Decision::Hold {
                parts: None,
                note: format!("a signed batch, held whole: {why}"),
            },
            (None, _) => Decision::Hold {
                parts: None,
                note: why,
            },
        }
    }

    /// An unsigned batch cut by event: those whose bounces all pass are
    /// sent, those with a held bounce are held, dropped ones go nowhere.
    fn split(&self, items: &[Vec<String>], parts: &[JudgedPart], routes: &[Route]) -> Decision {
        let (mut pass, mut hold) = (Vec::new(), Vec::new());
        let mut why = String::new();
        for (i, recipients) in items.iter().enumerate() {
            let mine = parts
                .iter()
                .zip(routes)
                .filter(|(p, _)| recipients.contains(&p.recipient));
            let (mut held, mut dropped, mut any) = (false, false, false);
            for (_, r) in mine {
                any = true;
                match r {
                    Route::Hold(w) => {
                        held = true;
                        if why.is_empty() {
                            why = w.clone();
                        }
                    }
                    Route::Drop => dropped = true,
                    Route::Send(_) => {}
                }
            }
            if held {
                hold.push(i);
            } else if !(dropped && any) {
                pass.push(i);
            }
        }
        let list = |v: &[usize]| serde_json::to_string(v).expect("indexes serialise");
        match (pass.is_empty(), hold.is_empty()) {
            (true, true) => Decision::Skip,
            (true, false) => Decision::Hold {
                parts: Some(list(&hold)),
                note: format!("{} of the batch's events held: {why}", hold.len()),
            },
            (false, true) => Decision::Send {
                parts: Some(list(&pass)),
                remainder: None,
                note: Some(format!(
                    "{} of the batch's events (the rest dropped)",
                    pass.len()
                )),
            },
            (false, false) => Decision::Send {
                parts: Some(list(&pass)),
                remainder: Some(list(&hold)),
                note: Some(format!(
                    "{} of the batch's events; {} held: {why}",
                    pass.len(),
                    hold.len()
                )),
            },
        }
    }

    /// The request to send for `ev`, with its body and content type.
    fn body(&self, ev: &AlertEvent, d: &Delivery) -> Result<(Vec<u8>, Headers), String> {
        let f = ev.forward.as_deref().ok_or("not a forwarding event")?;
        match self.target.format {
            Format::Passthrough => {
                let r = f.request.as_ref().ok_or("the request is no longer kept")?;
                let body = r
                    .body
                    .clone()
                    .filter(|b| !b.is_empty())
                    .ok_or("the request's body is no longer kept (7 days after it came)")?;
                let body = match &d.parts {
                    None => body,
                    Some(parts) => rebatch(&body, parts)?,
                };
                Ok((body, r.headers.clone()))
            }
            Format::Listmonk | Format::Json => {
                let (_, b) = f.bounce.as_ref().ok_or("the bounce is no longer stored")?;
                let j = f.judged.as_ref().ok_or("the verdict is missing")?;
                let as_type = if d.released {
                    native_type(b.kind, b.hard)
                } else {
                    match self.target.route(b.kind, b.hard, j.verdict) {
                        Route::Send(t) => t,
                        _ => native_type(b.kind, b.hard),
                    }
                };
                let v = match self.target.format {
                    Format::Listmonk => report::listmonk_bounce(ev, b, j, as_type),
                    _ => report::forward_json(ev, b, j, as_type, d.released),
                };
                let body = serde_json::to_vec(&v).expect("a JSON value serialises");
                let ct = ("content-type".to_string(), "application/json".to_string());
                Ok((body, vec![ct]))
            }
        }
    }
}

/// Headers as names and values.
type Headers = Vec<(String, String)>;

/// The events of a JSON array at `parts` (a JSON list of indexes), as a
/// JSON array, each event's bytes as they came.
fn rebatch(body: &[u8], parts: &str) -> Result<Vec<u8>, String> {
    let Capped(items) =
        serde_json::from_slice(body).map_err(|e| format!("the batch no longer reads: {e}"))?;
    let want: Vec<usize> =
        serde_json::from_str(parts).map_err(|e| format!("bad parts {parts:?}: {e}"))?;
    let mut out = b"[".to_vec();
    for (n, i) in want.iter().enumerate() {
        let item = items
            .get(*i)
            .ok_or_else(|| format!("the batch has no event {i}"))?;
        if n > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item.get().as_bytes());
    }
    out.push(b']');
    Ok(out)
}

impl Consumer for Forwarding {
    fn kind(&self) -> Consumers {
        Consumers::Forward
    }

    fn name(&self) -> &str {
        &self.target.name
    }

    fn policy(&self) -> Policy {
        Policy {
            backoff: self.target.backoff,
            max_age: self.target.max_age,
            per_hour: None,
        }
    }

    fn take(&self, ev: &AlertEvent) -> Decision {
        match (self.target.format, ev.outbox.event) {
            (Format::Listmonk | Format::Json, EventType::Bounce) => self.take_bounce(ev),
            (Format::Json, EventType::Reinstated) => self.take_reinstated(ev),
            (Format::Passthrough, EventType::Request) => self.take_request(ev),
            _ => Decision::Skip,
        }
    }

    async fn attempt(
        &self,
        http: &reqwest::Client,
        ev: &AlertEvent,
        d: &Delivery,
        _now: DateTime<Utc>,
    ) -> Attempt {
        let (body, headers) = match self.body(ev, d) {
            Ok(b) => b,
            Err(e) => return Attempt::Refused(e),
        };
        let t = &self.target;
        let mut req = http
            .post(&t.url)
            .timeout(t.timeout)
            .header("x-mxwatch-id", ev.id());
        for (name, value) in &headers {
            req = req.header(name.as_str(), value.as_str());
        }
        req = match &t.auth {
            Auth::None => req,
            Auth::Basic { user, password } => req.basic_auth(user, Some(password.expose())),
            Auth::Bearer(token) => req.bearer_auth(token.expose()),
            Auth::Header { name, value } => req.header(name.as_str(), value.expose()),
        };
        crate::delivery::answered(req.body(body).send().await)
    }

    fn settled(&self, ev: &AlertEvent, outcome: Settled) {
        let Some(m) = &self.metrics else { return };
        // Only the events of its format count (a passthrough target passes
        // every `bounce` event by, a listmonk target every `request`).
        let mine = match self.target.format {
            Format::Listmonk => ev.outbox.event == EventType::Bounce,
            Format::Json => matches!(ev.outbox.event, EventType::Bounce | EventType::Reinstated),
            Format::Passthrough => ev.outbox.event == EventType::Request,
        };
        if !mine {
            return;
        }
        let f = ev.forward.as_deref();
        let verdict = f
            .and_then(|f| f.judged.as_ref().map(|j| j.verdict.as_str()))
            .unwrap_or(match ev.outbox.event {
                EventType::Request => "request",
                _ => "none",
            });
        m.forwarded(&self.target.name, verdict, outcome.as_str());
    }
}

/// What the forward workers need; `config` composes it.
pub struct Setup {
    pub targets: Vec<ForwardTarget>,
    pub database: std::path::PathBuf,
    /// Each watched domain's tags, by name.
    pub tags: HashMap<String, Vec<String>>,
}

impl Setup {
    /// What the receivers must announce: each new bounce (a `listmonk` or
    /// `json` target exists), and the request whole (a `passthrough` one).
    pub fn wants(&self) -> (bool, bool) {
        let any = |f: fn(Format) -> bool| self.targets.iter().any(|t| f(t.format));
        (
            any(|f| f != Format::Passthrough),
            any(|f| f == Format::Passthrough),
        )
    }
}

/// Starts a worker per target; they stop when `stop` is cancelled or
/// [`Workers::stop`] is called. A target new to the database starts after
/// outbox event `start_at`, read before the receivers announce anything
/// for it: what arrives while its worker starts is forwarded too.
pub fn start(
    setup: Setup,
    writer: &crate::store::Writer,
    clock: &Arc<dyn crate::clock::Clock>,
    (metrics, start_at): (Option<Arc<Metrics>>, i64),
    stop: &tokio_util::sync::CancellationToken,
) -> Workers {
    let workers = Workers::new(stop);
    let http = crate::http_client();
    for t in setup.targets {
        workers.start(Worker {
            consumer: Forwarding {
                target: t,
                tags: setup.tags.clone(),
                metrics: metrics.clone(),
            },
            database: setup.database.clone(),
            writer: writer.clone(),
            clock: clock.clone(),
            http: http.clone(),
            start_at,
        });
    }
    workers
}

/// How many events a batch may have and still be cut by event (a larger
/// one is held whole when it must be held: SendGrid sends far fewer).
pub const MAX_ITEMS: usize = 10_000;

/// A JSON array of at most [`MAX_ITEMS`] values, each as it came; reading
/// stops at the one past it (no memory in proportion to a stranger's
/// count of `{},`).
struct Capped<'a>(Vec<&'a RawValue>);

impl<'de> serde::Deserialize<'de> for Capped<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Capped<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "a JSON array of at most {MAX_ITEMS} values")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element::<&'de RawValue>()? {
                    if out.len() == MAX_ITEMS {
                        return Err(serde::de::Error::custom("too many values"));
                    }
                    out.push(v);
                }
                Ok(Capped(out))
            }
        }
        d.deserialize_seq(V)
    }
}

/// For a JSON array body: the recipients of each of its events (read
/// alone), so that a passthrough target can cut an unsigned batch by
/// event. `None` for anything else, or an array of more than
/// [`MAX_ITEMS`].
pub fn items(body: &[u8]) -> Option<Vec<Vec<String>>> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'[') {
        return None;
    }
    let Capped(items) = serde_json::from_slice(body).ok()?;
    Some(
        items
            .iter()
            .map(|raw| {
                let v: serde_json::Value = serde_json::from_str(raw.get()).unwrap_or_default();
                crate::bounce::parse::esp::parse_value(&v)
                    .bounces
                    .into_iter()
                    .map(|b: Bounce| b.recipient)
                    .collect()
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests;
