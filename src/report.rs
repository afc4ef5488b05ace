//! Every outward shape: what the command line prints (one JSON object per
//! line with `--json`, aligned text otherwise), the API's documents and the
//! alert bodies. Times are RFC 3339 in UTC. Only this module builds them.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::dns::{Answer, Observation};
use crate::domain::{DomainName, Mx};
use crate::event::EventType;
use crate::provider::Providers;
use crate::store::{AlertEvent, AsOf, ChangeRow, Run};
use crate::window::{ScopeKind, Window};

/// A time as every outward shape writes it (defined with the vocabulary).
pub use crate::event::time;

fn mx_json(mx: &[Mx]) -> Value {
    Value::Array(
        mx.iter()
            .map(|m| json!({"preference": m.preference, "exchange": m.exchange.as_str()}))
            .collect(),
    )
}

fn mx_text(mx: &[Mx]) -> String {
    crate::domain::mx_set(mx)
}

fn answer_json(a: &Option<Answer>) -> Value {
    match a {
        None => Value::Null,
        Some(a) => json!({"outcome": a.outcome().as_str(), "mx": mx_json(a.mx())}),
    }
}

fn providers_of(p: &Providers, mx: &[Mx]) -> Vec<String> {
    p.of_set(mx).into_iter().collect()
}

/// `mxwatch check`: one domain's observations.
pub fn check_json(domain: &DomainName, obs: &[Observation], providers: &Providers) -> Value {
    let ups: Vec<Value> = obs
        .iter()
        .map(|o| {
            json!({
                "upstream": o.upstream,
                "outcome": o.outcome.as_str(),
                "mx": mx_json(&o.mx),
                "ttl": o.ttl,
                "provider": providers_of(providers, &o.mx),
                "implicit_mx": o.implicit_mx,
                "detail": o.detail,
            })
        })
        .collect();
    let cons = crate::detect::consensus(obs);
    json!({
        "domain": domain.as_str(),
        "consensus": answer_json(&cons.answer),
        "disagreement": cons.disagreement,
        "upstreams": ups,
    })
}

pub fn check_text(domain: &DomainName, obs: &[Observation], providers: &Providers) -> String {
    let mut out = String::new();
    for o in obs {
        let prov = providers_of(providers, &o.mx)
            .iter()
            .map(|p| providers.display_name(p).to_string())
            .collect::<Vec<_>>()
            .join(" + ");
        let ttl = o.ttl.map(|t| format!("ttl={t}")).unwrap_or_default();
        let extra = match (&o.detail, o.implicit_mx) {
            (Some(d), _) => format!(" ({d})"),
            (None, true) => " (implicit MX: mail goes to the domain's A/AAAA)".into(),
            _ => String::new(),
        };
        out.push_str(&format!(
            "{domain}  {:<16} {:<9} {:<6} {}{}{}\n",
            o.upstream,
            o.outcome.as_str(),
            ttl,
            mx_text(&o.mx),
            if prov.is_empty() {
                String::new()
            } else {
                format!("  [{prov}]")
            },
            extra
        ));
    }
    out
}

pub fn run_json(r: &Run) -> Value {
    let o = &r.observation;
    json!({
        "domain": r.domain,
        "upstream": o.upstream,
        "outcome": o.outcome.as_str(),
        "mx": mx_json(&o.mx),
        "ttl": o.ttl,
        "implicit_mx": o.implicit_mx,
        "detail": o.detail,
        "first_seen": time(r.first_seen),
        "last_seen": time(r.last_seen),
        "checks": r.checks,
    })
}

pub fn run_text(r: &Run) -> String {
    let o = &r.observation;
    format!(
        "{} .. {}  {:<16} {:<9} {}  ({} checks{})",
        time(r.first_seen),
        time(r.last_seen),
        if o.upstream == crate::store::CONSENSUS {
            "consensus"
        } else {
            &o.upstream
        },
        o.outcome.as_str(),
        mx_text(&o.mx),
        r.checks,
        o.detail
            .as_deref()
            .map(|d| format!("; {d}"))
            .unwrap_or_default()
    )
}

pub fn as_of_json(a: &AsOf) -> Value {
    let mut v = run_json(&a.run);
    v["observed"] = json!(a.observed);
    v["next_change"] = json!(a.next_change.map(time));
    v
}

pub fn change_json(row: &ChangeRow) -> Value {
    let c = &row.change;
    json!({
        "domain": row.domain,
        "at": time(c.at),
        "kind": c.kind.as_str(),
        "severity": c.severity.as_str(),
        "before": answer_json(&c.before),
        "after": answer_json(&c.after),
        "detail": c.detail,
    })
}

pub fn change_text(row: &ChangeRow) -> String {
    let c = &row.change;
    format!(
        "{}  {:<8} {}  {}: {}",
        time(c.at),
        c.severity.as_str(),
        row.domain,
        c.kind.as_str(),
        c.detail
    )
}

pub fn window_json(w: &Window, now: DateTime<Utc>) -> Value {
    let (scope, name) = w.covers();
    let (domain, provider) = match scope {
        ScopeKind::Provider => (None, name),
        _ => (name, None),
    };
    json!({
        "id": w.id,
        "domain": domain,
        "provider": provider,
        "kind": w.kind,
        "scope": scope,
        "detail": w.detail,
        "start": time(w.start),
        "detected_at": time(w.detected_at),
        "end": w.end.map(time),
        "status": w.status.as_str(),
        "active": w.is_active(now),
        "close_reason": w.close_reason.map(|r| r.as_str()),
        "close_note": w.close_note,
        "severity": w.severity.as_str(),
        "before": answer_json(&w.before),
        "after": answer_json(&w.after),
        "flaps": w.flaps,
    })
}

pub fn window_text(w: &Window, now: DateTime<Utc>) -> String {
    let end = match (w.end, w.is_active(now)) {
        (None, _) => "open".to_string(),
        (Some(e), true) => format!("closing {}", time(e)),
        (Some(e), false) => time(e),
    };
    let what = match (&w.before, &w.after) {
        (Some(b), Some(a)) => format!("  {b} → {a}"),
        _ => String::new(),
    };
    let withdrawn = match (&w.close_note, w.is_withdrawn()) {
        (Some(why), true) => format!("  withdrawn: {why}"),
        (None, true) => "  withdrawn".to_string(),
        _ => String::new(),
    };
    format!(
        "#{:<5} {:<15} {} .. {:<28} {:<8} {}{}{}{withdrawn}",
        w.id,
        w.kind.as_str(),
        time(w.start),
        end,
        w.severity.as_str(),
        window_scope(w),
        what,
        if w.flaps > 0 {
            format!("  ({} flaps)", w.flaps)
        } else {
            String::new()
        }
    )
}

/// Whom a window covers: its domain, an anomaly's domain or provider, or
/// every domain (a resolver outage).
fn window_scope(w: &Window) -> String {
    match (&w.domain, &w.scope) {
        (Some(d), _) => d.clone(),
        (None, Some(scope)) => scope.to_string(),
        (None, None) => "(all domains)".to_string(),
    }
}

/// A verdict, in the shape the API, the CLI and replay share.
pub fn judgement_json(
    b: &crate::bounce::Bounce,
    at: DateTime<Utc>,
    j: &crate::verdict::Judgement,
) -> Value {
    json!({
        "recipient": b.recipient,
        "domain": b.domain,
        "at": time(at),
        "kind": b.kind.as_str(),
        "verdict": j.verdict.as_str(),
        "suppress": j.suppress,
        "reasons": j.reasons,
        "caveats": j.caveats,
        "evidence": j.evidence.iter().map(|e| json!({
            "id": e.id,
            "kind": e.kind.as_str(),
            "scope": e.scope.as_str(),
            "start": time(e.start),
            "end": e.end.map(time),
            "detail": e.detail,
        })).collect::<Vec<_>>(),
    })
}

/// A suppression that a window found late turned over.
pub fn reinstatement_json(r: &crate::store::Reinstatement) -> Value {
    json!({
        "id": r.id,
        "reinstated_at": time(r.created_at),
        "recipient": r.bounce.recipient,
        "domain": r.bounce.domain,
        "bounce_id": r.bounce_id,
        "bounce_at": r.bounce.at.map(time),
        "kind": r.bounce.kind.as_str(),
        "status": r.bounce.status,
        "previous_verdict": "suppress",
        "verdict": r.verdict,
        "reason": r.reason,
        "window": r.window.as_ref().map(window_brief_json),
    })
}

pub fn reinstatement_text(r: &crate::store::Reinstatement) -> String {
    // A reinstatement found on evidence of no stored window (a wrong MX)
    // says so, rather than `#-`.
    let window = r
        .window
        .as_ref()
        .map_or("no stored window".to_string(), |w| {
            format!("{} window #{}", w.kind, w.id)
        });
    format!(
        "{}  {:<32} {:<9} bounced {}  {window}  {}",
        time(r.created_at),
        r.bounce.recipient,
        r.verdict,
        r.bounce.at.map(time).unwrap_or_else(|| "-".into()),
        r.reason
    )
}

pub fn delivery_json(d: &crate::store::Delivery) -> Value {
    json!({
        "id": d.id,
        "target": d.target,
        "event_id": crate::event::event_id_of(d.outbox_id),
        "event": d.event,
        "created_at": time(d.created_at),
        "status": d.status.as_str(),
        "attempts": d.attempts,
        "last_attempt": d.last_attempt.map(time),
        "next_attempt": d.next_attempt.map(time),
        "last_error": d.last_error,
        "summary": d.summary,
        "note": d.note,
        "outcome": d.outcome,
        "domain": d.domain,
        "queued_behind": d.queued_behind,
    })
}

pub fn delivery_text(d: &crate::store::Delivery) -> String {
    let next = d
        .next_attempt
        .filter(|_| d.status == crate::store::DeliveryStatus::Pending)
        .map_or(String::new(), |t| format!(", next {}", time(t)));
    let behind = match d.queued_behind {
        0 => String::new(),
        n => format!(
            ", {} queued behind it",
            crate::event::plural(n as usize, "event")
        ),
    };
    format!(
        "#{:<5} {} {:<12} {:<24} {:<20} {:<9} {}{next}{behind}{}{}",
        d.id,
        time(d.created_at),
        d.target,
        d.event,
        d.domain.as_deref().unwrap_or("-"),
        d.status.as_str(),
        crate::event::plural(d.attempts as usize, "attempt"),
        d.outcome
            .as_deref()
            .or(d.note.as_deref())
            .map(|n| format!("  {n}"))
            .unwrap_or_default(),
        d.last_error
            .as_deref()
            .map(|e| format!("  last error: {e}"))
            .unwrap_or_default()
    )
}

pub fn judgement_text(b: &crate::bounce::Bounce, j: &crate::verdict::Judgement) -> String {
    let mut out = format!(
        "{}  {}  ({})\n",
        b.recipient,
        j.verdict.as_str().to_uppercase(),
        b.kind.as_str()
    );
    for r in &j.reasons {
        out.push_str(&format!("  - {r}\n"));
    }
    for c in &j.caveats {
        out.push_str(&format!("  ! {c}\n"));
    }
    out
}

/// `GET /v1/domains/{name}`: what is known about one domain now.
pub fn domain_json(
    domain: &DomainName,
    warming_up: Option<String>,
    consensus: Option<&AsOf>,
    provider: &[String],
    history: &[Run],
    windows: Vec<Value>,
    auto: Option<crate::autowatch::Entry>,
) -> Value {
    json!({
        "domain": domain.as_str(),
        "auto_watched": auto.map(auto_watched_json),
        "caveats": warming_up.into_iter().collect::<Vec<_>>(),
        "current": consensus.map(as_of_json),
        "provider": provider,
        "history": history.iter().map(run_json).collect::<Vec<_>>(),
        "windows": windows,
    })
}

/// One observation as `replay --observations` reads it (README,
/// "Replay"): `domain`, `at`, `upstream`, `outcome`, `mx`, `ttl`.
pub fn replay_line(domain: &DomainName, at: DateTime<Utc>, o: &Observation) -> Value {
    json!({
        "domain": domain.as_str(),
        "at": time(at),
        "upstream": o.upstream,
        "outcome": o.outcome.as_str(),
        "mx": mx_json(&o.mx),
        "ttl": o.ttl,
    })
}

/// A watched domain as `mxwatch domains` shows it.
pub struct WatchedDomain {
    pub domain: DomainName,
    /// In the watchlist.
    pub listed: bool,
    /// Auto-watched (it bounced), and since when.
    pub auto: Option<crate::autowatch::Entry>,
    pub provider: Vec<String>,
    /// Its latest consensus answer's last check.
    pub last_check: Option<DateTime<Utc>>,
    /// The window open on it now, if one.
    pub window: Option<Window>,
}

pub fn watched_json(d: &WatchedDomain) -> Value {
    json!({
        "domain": d.domain.as_str(),
        "listed": d.listed,
        "auto_watched": d.auto.map(auto_watched_json),
        "provider": d.provider,
        "last_check": d.last_check.map(time),
        "window": d.window.as_ref().map(window_brief_json),
    })
}

pub fn watched_text(d: &WatchedDomain) -> String {
    let how = match (d.listed, d.auto.is_some()) {
        (true, _) => "listed",
        (false, true) => "auto",
        (false, false) => "-",
    };
    let provider = if d.provider.is_empty() {
        "-".to_string()
    } else {
        d.provider.join(",")
    };
    let checked = d.last_check.map_or("never checked".to_string(), |t| {
        format!("checked {}", time(t))
    });
    let window = d.window.as_ref().map_or(String::new(), |w| {
        format!("  open {} window since {}", w.kind, time(w.start))
    });
    format!(
        "{:<30} {how:<7} {provider:<20} {checked}{window}",
        d.domain.as_str()
    )
}

/// Why an unlisted domain is watched: since its first bounce, until
/// `keep` after its last.
pub fn auto_watched_json(e: crate::autowatch::Entry) -> Value {
    json!({"since": time(e.since), "last_bounce": time(e.last_bounce)})
}

/// How many bounces an ingest received, stored, skipped and reinstated.
#[derive(Debug, Clone, Copy)]
pub struct IntakeCounts {
    pub received: usize,
    pub stored: usize,
    pub skipped: usize,
    pub reinstated: usize,
    /// Deliveries new to the store.
    pub delivered: u64,
}

/// The answer to posted bounces: counts, problems, and the verdicts
/// listed (`verdicts_omitted` counts those left out).
pub fn intake_json(c: IntakeCounts, problems: &[String], verdicts: Vec<Value>) -> Value {
    json!({
        "received": c.received,
        "stored": c.stored,
        // Stored before (the same bounce sent again): judged, not stored twice.
        "duplicates": c.received - c.stored,
        "skipped": c.skipped,
        "reinstated": c.reinstated,
        // Delivery events counted (per domain and minute) as the
        // denominator of unknown-user rates; a lot sent again counts once.
        "delivered": c.delivered,
        "problems": problems,
        "verdicts_omitted": c.received.saturating_sub(verdicts.len()),
        "verdicts": verdicts,
    })
}

/// A stored bounce and the verdict it holds now (null: stored before
/// verdicts were kept).
pub fn stored_bounce_json(r: &crate::store::StoredBounce) -> Value {
    let mut v = serde_json::to_value(&r.bounce).expect("a bounce serialises");
    v["verdict"] = json!(r.verdict);
    v
}

/// A replayed bounce: its verdict with hindsight (`last`), and the one
/// it got when it arrived.
pub fn replayed_json(
    b: &crate::bounce::Bounce,
    last: &crate::verdict::Judgement,
    initial: crate::verdict::Verdict,
) -> Value {
    let mut v = judgement_json(b, b.at.unwrap_or_default(), last);
    v["initial_verdict"] = json!(initial.as_str());
    v
}

// ---------------------------------------------------------------- alerts

/// Version of the generic JSON alert body.
pub const ALERT_SCHEMA_VERSION: u32 = 1;

/// What the event means for a bounce handler.
fn alert_meaning(ev: &AlertEvent) -> String {
    let scope = ev
        .domain()
        .or_else(|| {
            ev.window
                .as_ref()
                .and_then(|w| w.scope.as_ref().map(|s| s.name().to_string()))
        })
        .unwrap_or_else(|| "all domains".into());
    let start = ev
        .window
        .as_ref()
        .map(|w| time(w.start))
        .unwrap_or_default();
    match ev.outbox.event {
        EventType::WindowOpened => format!(
            "Hard bounces for {scope} since {start} are answered `transient`: do not suppress them. \
             The window lasts until the MX settles or reverts, plus the old TTL as grace."
        ),
        EventType::WindowClosed => format!("Bounces for {scope} after the window are judged normally again."),
        EventType::WindowWithdrawn => format!(
            "An operator found the window for {scope} since {start} false: it excuses no bounce any more. \
             Suppress the addresses named; `mxwatch windows` shows why it was closed."
        ),
        EventType::AnomalyOpened => format!(
            "Unknown-user bounces for {scope} since {start} are answered `transient`; \
             suppressions made since then are listed as reinstatements."
        ),
        EventType::AnomalyClosed => format!("The burst for {scope} is over; new bounces are judged normally."),
        EventType::ResolverOutageStarted => format!(
            "Our own DNS resolution is failing (since {start}): hard bounces in this time are answered `transient`."
        ),
        EventType::ResolverOutageEnded => "Our DNS resolution works again.".into(),
        EventType::Reinstatements => "Undo these suppressions: GET /v1/reinstatements or `mxwatch reinstatements` lists them.".into(),
        EventType::UndoDone => "False suppressions were taken off a provider's list (or would have been, in a dry run): `mxwatch undo list` shows each.".into(),
        EventType::Digest
        | EventType::Bounce
        | EventType::Request
        | EventType::Reinstated
        | EventType::Undo => String::new(),
    }
}

fn answer_with_providers(a: &Option<crate::dns::Answer>, providers: &Providers) -> Value {
    match a {
        None => Value::Null,
        Some(a) => json!({
            "outcome": a.outcome().as_str(),
            "mx": a.mx().iter().map(|m| json!({"preference": m.preference, "exchange": m.exchange.as_str()})).collect::<Vec<_>>(),
            "provider": providers.of_set(a.mx()).into_iter().collect::<Vec<_>>(),
        }),
    }
}

mod forward;
pub use forward::{FORWARD_SCHEMA_VERSION, forward_json, listmonk_bounce};

/// The generic JSON body (schema version 1).
pub fn alert_json(ev: &AlertEvent, providers: &Providers) -> Value {
    let o = &ev.outbox;
    json!({
        "version": ALERT_SCHEMA_VERSION,
        "id": ev.id(),
        "type": o.event,
        "at": time(o.created_at),
        "severity": ev.severity().as_str(),
        "domain": ev.domain(),
        "summary": o.summary,
        "meaning": alert_meaning(ev),
        "window": ev.window.as_ref().map(|w| {
            let mut v = window_brief_json(w);
            v["status"] = json!(w.status);
            v["before"] = answer_with_providers(&w.before, providers);
            v["after"] = answer_with_providers(&w.after, providers);
            v["detail"] = json!(w.detail);
            v
        }),
    })
}

/// A window in brief, as a reinstatement or an alert names it.
fn window_brief_json(w: &Window) -> Value {
    let (scope, name) = w.covers();
    json!({
        "id": w.id,
        "kind": w.kind,
        "scope": scope,
        "name": name,
        "start": time(w.start),
        "end": w.end.map(time),
    })
}

/// A Slack/Mattermost body: readable by a person.
pub fn alert_slack_json(ev: &AlertEvent, providers: &Providers) -> Value {
    let o = &ev.outbox;
    let sev = ev.severity().as_str().to_uppercase();
    let title = format!("[{sev}] mxwatch: {}", o.event.as_str().replace('_', " "));
    let mut lines = vec![format!("*What:* {}", o.summary)];
    if let Some(d) = ev.domain() {
        lines.insert(0, format!("*Domain:* {d}"));
    }
    if let Some(w) = &ev.window {
        let provider = |a: &Option<crate::dns::Answer>| {
            a.as_ref()
                .map(|a| {
                    providers
                        .of_set(a.mx())
                        .into_iter()
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .filter(|p| !p.is_empty())
        };
        if let (Some(b), Some(a)) = (provider(&w.before), provider(&w.after)) {
            lines.push(format!("*Provider:* {b} → {a}"));
        }
        lines.push(format!("*Since:* {}", time(w.start)));
    }
    let m = alert_meaning(ev);
    if !m.is_empty() {
        lines.push(format!("*For suppression:* {m}"));
    }
    json!({
        "text": format!("{title}: {}", o.summary),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": title}},
            {"type": "section", "text": {"type": "mrkdwn", "text": lines.join("\n")}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": format!("event {}", ev.id())}]},
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::window::{Scope, Severity, WindowStatus};
    use chrono::TimeZone;

    fn row(domain: Option<&str>, kind: &str, scope: Option<(&str, &str)>) -> Window {
        let t = Utc.with_ymd_and_hms(2021, 4, 26, 11, 0, 0).unwrap();
        Window {
            id: 1,
            domain: domain.map(str::to_string),
            kind: kind.parse().unwrap(),
            start: t,
            detected_at: t,
            end: None,
            status: WindowStatus::Open,
            close_reason: None,
            severity: Severity::Critical,
            before: None,
            after: None,
            flaps: 0,
            scope: scope.and_then(|(k, n)| Scope::of(k.parse().unwrap(), n.to_string())),
            detail: None,
            last_bounce: None,
            close_note: None,
        }
    }

    #[test]
    fn windows_name_whom_they_cover() {
        let now = Utc.with_ymd_and_hms(2021, 4, 26, 12, 0, 0).unwrap();
        let cases = [
            (row(Some("web.de"), "mx_change", None), "web.de"),
            (
                row(None, "anomaly", Some(("provider", "icloud"))),
                "provider icloud",
            ),
            (
                row(None, "anomaly", Some(("domain", "gmail.com"))),
                "domain gmail.com",
            ),
            (row(None, "resolver_outage", None), "(all domains)"),
        ];
        for (w, want) in cases {
            let text = window_text(&w, now);
            assert!(text.contains(&format!("critical {want}")), "{text}");
        }
    }
}

#[cfg(test)]
mod rows;
