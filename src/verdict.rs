//! Verdicts: should a bounce handler suppress this recipient? Pure rules
//! over a bounce and the evidence that covered its time: no IO, no clock.
//! (The first piece of the verdict issue; the store queries that gather the
//! evidence, anomaly detection, the HTTP API and replay build on it.)
//!
//! - `suppress`: a permanent recipient failure (`user_unknown`,
//!   `mailbox_disabled`, `domain_unknown`) with no evidence against it;
//! - `transient`: it looks permanent, but the recipient's side was broken
//!   then (an MX change window, a wrong MX, an anomaly, our own resolver
//!   failing): do not suppress, retry later;
//! - `retry`: a soft failure;
//! - `ignore`: not the recipient's fault.

use chrono::{DateTime, Utc};

use crate::bounce::Kind;
use crate::domain::{Mx, MxHost};
use crate::names::named;
use crate::provider::Providers;
use crate::window::{ScopeKind, Window, WindowKind};

named! {
    pub enum Verdict {
        Suppress => "suppress",
        Transient => "transient",
        Retry => "retry",
        Ignore => "ignore",
    }
}

named! {
    /// What a piece of evidence is.
    pub enum EvidenceKind {
        /// The recipient domain's MX changed (window incl. propagation grace).
        MxChange => "mx_change",
        /// The server that refused is not among the domain's MX at that time.
        WrongMx => "wrong_mx",
        /// A burst of unknown-user bounces for a domain or provider.
        Anomaly => "anomaly",
        /// Our own resolution failed for most domains.
        ResolverOutage => "resolver_outage",
        /// The domain's answer departed from its baseline and is held until
        /// other domains vouch for our resolver: a change not yet confirmed.
        UnconfirmedChange => "unconfirmed_change",
    }
}

impl EvidenceKind {
    /// Whether evidence of this kind says the bounce itself was false (the
    /// recipient's side was broken), not only that we could not see (our
    /// resolver failing, a change still being verified). Only such
    /// evidence may take an address off a suppression list.
    pub fn shows_bounce_false(self) -> bool {
        match self {
            EvidenceKind::MxChange | EvidenceKind::WrongMx | EvidenceKind::Anomaly => true,
            EvidenceKind::ResolverOutage | EvidenceKind::UnconfirmedChange => false,
        }
    }
}

/// A stored window is evidence of its own kind.
impl From<WindowKind> for EvidenceKind {
    fn from(k: WindowKind) -> Self {
        match k {
            WindowKind::MxChange => EvidenceKind::MxChange,
            WindowKind::ResolverOutage => EvidenceKind::ResolverOutage,
            WindowKind::Anomaly => EvidenceKind::Anomaly,
        }
    }
}

/// One piece of evidence: a window of time in which the recipient's side
/// (or our resolver) was not itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    /// The stored window's id; `None` for evidence derived on the spot
    /// (a wrong MX).
    pub id: Option<i64>,
    pub kind: EvidenceKind,
    pub scope: ScopeKind,
    pub start: DateTime<Utc>,
    /// `None` while open.
    pub end: Option<DateTime<Utc>>,
    pub detail: String,
    /// An open anomaly's last bounce so far (see [`Evidence::as_of`]).
    pub last_bounce: Option<DateTime<Utc>>,
}

impl Evidence {
    /// A stored window as evidence.
    pub fn of(w: &Window) -> Evidence {
        Evidence {
            id: Some(w.id),
            kind: w.kind.into(),
            scope: w.covers().0,
            start: w.start,
            end: w.end,
            detail: crate::summary::evidence_detail(w),
            last_bounce: w.last_bounce,
        }
    }

    /// A held answer first seen at `since`: the domain's MX may be
    /// changing, and nobody knows yet.
    pub fn unconfirmed(
        since: DateTime<Utc>,
        outcome: crate::dns::Outcome,
        mx: &[Mx],
        why: Option<&str>,
    ) -> Evidence {
        Evidence {
            id: None,
            kind: EvidenceKind::UnconfirmedChange,
            scope: ScopeKind::Domain,
            start: since,
            end: None,
            detail: crate::summary::unconfirmed_change(since, outcome, mx, why),
            last_bounce: None,
        }
    }

    /// The evidence as a question asked at `now` finds it: an open anomaly
    /// whose bounces stopped (or that reached `max_duration`) by then has
    /// ended, whether or not anyone has closed it since. Everything else
    /// is as stored.
    pub fn as_of(mut self, now: DateTime<Utc>, anomaly: &crate::anomaly::Params) -> Evidence {
        if self.kind == EvidenceKind::Anomaly && self.end.is_none() {
            let last = self.last_bounce.unwrap_or(self.start);
            self.end = anomaly.ended(self.start, last, now);
        }
        self
    }

    /// Whether the window covers `at` (both ends included).
    pub fn covers(&self, at: DateTime<Utc>) -> bool {
        self.start <= at && self.end.is_none_or(|end| at <= end)
    }
}

/// The bounce being judged.
#[derive(Debug, Clone, Copy)]
pub struct Question<'a> {
    pub kind: Kind,
    /// A permanent failure (5xx) as the bounce says.
    pub hard: bool,
    pub at: DateTime<Utc>,
    /// The host that refused, when known.
    pub remote_mta: Option<&'a str>,
}

/// What was known about the recipient's side around the bounce.
#[derive(Debug, Clone, Copy)]
pub struct Around<'a> {
    /// Candidate windows (of the domain, its provider, global); those not
    /// covering the bounce's time are passed over.
    pub windows: &'a [Evidence],
    /// The domain's MX at the bounce's time, when history knows it.
    pub mx_at: Option<&'a [Mx]>,
    pub providers: &'a Providers,
}

/// What the verdict can rest on beyond the bounce itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grounds {
    /// Whether the domain had any recorded DNS answer by the bounce's time.
    pub domain_known: bool,
    /// Set while anomaly detection was still warming up then: why bursts
    /// could not be judged at normal strength.
    pub warming_up: Option<String>,
}

/// Said of a domain with no recorded answers.
pub const NO_HISTORY: &str = "no history for this domain: judged on the bounce alone";

/// A verdict with its reasons and evidence.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    pub verdict: Verdict,
    /// Whether a bounce handler should suppress the address now.
    pub suppress: bool,
    pub reasons: Vec<String>,
    pub evidence: Vec<Evidence>,
    /// What the verdict could not know (no DNS history for the domain,
    /// too little bounce history to judge bursts): the verdict is less sure.
    pub caveats: Vec<String>,
}

impl Judgement {
    /// Whether this verdict says a suppression made on the bounce was
    /// false: `transient`, on evidence that the bounce was false. "We were
    /// blind" is a reason not to suppress, never a reason to un-suppress.
    pub fn undoes_suppression(&self) -> bool {
        self.verdict == Verdict::Transient
            && self.evidence.iter().any(|e| e.kind.shows_bounce_false())
    }
}

/// Kinds that say the address itself is bad.
/// An ESP's suppression counts as one: it stands on a bounce the ESP saw,
/// so it is undone under the same evidence.
fn permanent_recipient_failure(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::UserUnknown | Kind::MailboxDisabled | Kind::DomainUnknown | Kind::Suppressed
    )
}

/// Kinds that say "try again later".
fn soft(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::MailboxFull
            | Kind::Greylisted
            | Kind::RateLimited
            | Kind::Network
            | Kind::System
            | Kind::Expired
    )
}

/// The remote MTA as a host name, if it is one (not an IP literal).
fn remote_host(remote: &str) -> Option<MxHost> {
    let h = remote.trim().trim_start_matches("dns;").trim();
    let h = h
        .split(['[', ' ', '('])
        .next()
        .unwrap_or("")
        .trim_end_matches('.');
    if h.is_empty() || h.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    MxHost::parse(h).ok()
}

/// The provider a bounce is counted under for anomaly windows: the
/// provider of the domain's MX at the time when history knows it, else the
/// provider of the host that refused (an unwatched icloud.com address
/// refused by `mx01.mail.icloud.com` counts under `icloud`).
pub fn provider_scope(
    mx_at: Option<&[Mx]>,
    remote_mta: Option<&str>,
    providers: &Providers,
) -> Option<String> {
    if let Some(mx) = mx_at
        && let Some(p) = providers.of_set(mx).into_iter().next()
    {
        return Some(p);
    }
    remote_mta
        .and_then(remote_host)
        .map(|h| providers.classify(&h))
}

/// A wrong MX: the host that refused is none of the domain's MX hosts then
/// and belongs to another provider (a web.de address refused by
/// `mx01.mail.icloud.com`).
fn wrong_mx(q: &Question, c: &Around) -> Option<Evidence> {
    let mx = c.mx_at?;
    if mx.is_empty() {
        return None;
    }
    let host = remote_host(q.remote_mta?)?;
    if mx.iter().any(|m| m.exchange == host) {
        return None;
    }
    let theirs = c.providers.classify(&host);
    let ours = c.providers.of_set(mx);
    if ours.contains(&theirs) {
        return None; // another host of the same provider: a relay, not a wrong MX
    }
    Some(Evidence {
        id: None,
        kind: EvidenceKind::WrongMx,
        scope: ScopeKind::Domain,
        start: q.at,
        end: Some(q.at),
        last_bounce: None,
        detail: format!(
            "refused by {host} ({}), but the domain's MX then were {} ({})",
            c.providers.display_name(&theirs),
            crate::domain::mx_set(mx),
            ours.iter()
                .map(|p| c.providers.display_name(p).to_string())
                .collect::<Vec<_>>()
                .join(" + ")
        ),
    })
}

/// Judges one bounce.
pub fn judge(q: &Question, c: &Around, grounds: &Grounds) -> Judgement {
    // History matters only where the bounce says the address is bad.
    let caveats: Vec<String> = if permanent_recipient_failure(q.kind) && q.hard {
        (!grounds.domain_known)
            .then(|| NO_HISTORY.to_string())
            .into_iter()
            .chain(grounds.warming_up.clone())
            .collect()
    } else {
        Vec::new()
    };
    let decided = |verdict: Verdict, reasons: Vec<String>, evidence: Vec<Evidence>| Judgement {
        suppress: verdict == Verdict::Suppress,
        verdict,
        reasons,
        evidence,
        caveats: caveats.clone(),
    };
    if !permanent_recipient_failure(q.kind) {
        return if soft(q.kind)
            || !q.hard && !matches!(q.kind, Kind::AutoReply | Kind::Complaint | Kind::Delivered)
        {
            decided(
                Verdict::Retry,
                vec![format!("{}: a temporary failure; retry", q.kind)],
                vec![],
            )
        } else {
            decided(
                Verdict::Ignore,
                vec![format!(
                    "{}: not a fault of the recipient's address",
                    q.kind
                )],
                vec![],
            )
        };
    }
    if !q.hard {
        return decided(
            Verdict::Retry,
            vec![format!("{} but not permanent (4xx): retry", q.kind)],
            vec![],
        );
    }
    let mut evidence: Vec<Evidence> = c
        .windows
        .iter()
        .filter(|w| w.covers(q.at))
        .cloned()
        .collect();
    evidence.extend(wrong_mx(q, c));
    if evidence.is_empty() {
        return decided(
            Verdict::Suppress,
            vec![format!(
                "{}: a permanent recipient failure, and nothing says the recipient's side was broken",
                q.kind
            )],
            vec![],
        );
    }
    let reasons = evidence
        .iter()
        .map(|e| match e.kind {
            EvidenceKind::MxChange => format!("the domain's MX were changing then: {}", e.detail),
            EvidenceKind::WrongMx => format!("a wrong MX: {}", e.detail),
            EvidenceKind::Anomaly => format!(
                "a burst of unknown-user bounces ({} scope): {}",
                e.scope.as_str(),
                e.detail
            ),
            EvidenceKind::ResolverOutage => {
                format!("our own DNS resolution was failing then: {}", e.detail)
            }
            EvidenceKind::UnconfirmedChange => format!(
                "the domain's MX answer was changing and not yet confirmed then: {}",
                e.detail
            ),
        })
        .collect();
    let mut j = decided(Verdict::Transient, reasons, evidence);
    if let Some(e) = j
        .evidence
        .iter()
        .find(|e| e.kind == EvidenceKind::UnconfirmedChange)
    {
        j.caveats.push(format!(
            "an MX change seen since {} is still being verified: this verdict may change \
             once it is confirmed or gone",
            crate::event::time(e.start)
        ));
    }
    j
}

/// Judges a normalised bounce at `at` (its own time, or a caller's).
pub fn judge_bounce(
    b: &crate::bounce::Bounce,
    at: DateTime<Utc>,
    windows: &[Evidence],
    mx_at: Option<&[Mx]>,
    providers: &Providers,
    grounds: &Grounds,
) -> Judgement {
    judge(
        &Question {
            kind: b.kind,
            hard: b.hard,
            at,
            remote_mta: b.remote_mta.as_deref(),
        },
        &Around {
            windows,
            mx_at,
            providers,
        },
        grounds,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2021, 4, 26, h, 0, 0).unwrap()
    }

    fn mx(hosts: &[&str]) -> Vec<Mx> {
        hosts
            .iter()
            .map(|h| Mx {
                preference: 10,
                exchange: MxHost::parse(h).unwrap(),
            })
            .collect()
    }

    /// "We were blind" is a reason not to suppress, never one to
    /// un-suppress: only evidence that the bounce was false undoes.
    #[test]
    fn only_evidence_that_the_bounce_was_false_undoes_a_suppression() {
        let judged = |verdict, kinds: &[EvidenceKind]| Judgement {
            verdict,
            suppress: verdict == Verdict::Suppress,
            reasons: vec![],
            evidence: kinds.iter().map(|k| window(*k, 10, Some(12))).collect(),
            caveats: vec![],
        };
        use EvidenceKind::*;
        for k in [MxChange, WrongMx, Anomaly] {
            assert!(judged(Verdict::Transient, &[k]).undoes_suppression(), "{k}");
            assert!(
                judged(Verdict::Transient, &[ResolverOutage, k]).undoes_suppression(),
                "{k}"
            );
        }
        for k in [ResolverOutage, UnconfirmedChange] {
            assert!(
                !judged(Verdict::Transient, &[k]).undoes_suppression(),
                "{k}"
            );
        }
        assert!(!judged(Verdict::Transient, &[]).undoes_suppression());
        assert!(!judged(Verdict::Retry, &[MxChange]).undoes_suppression());
        assert!(!judged(Verdict::Suppress, &[]).undoes_suppression());
        assert_eq!(
            EvidenceKind::ALL
                .iter()
                .filter(|k| k.shows_bounce_false())
                .count(),
            3
        );
    }

    fn window(kind: EvidenceKind, start: u32, end: Option<u32>) -> Evidence {
        Evidence {
            id: Some(7),
            kind,
            scope: ScopeKind::Domain,
            start: t(start),
            end: end.map(t),
            detail: "web.de → Apple iCloud".into(),
            last_bounce: None,
        }
    }

    fn q(kind: Kind, hard: bool, at: u32, remote: Option<&'static str>) -> Question<'static> {
        Question {
            kind,
            hard,
            at: t(at),
            remote_mta: remote,
        }
    }

    fn verdict_of(q: Question, windows: &[Evidence]) -> Judgement {
        let providers = Providers::default();
        judge(
            &q,
            &Around {
                windows,
                mx_at: None,
                providers: &providers,
            },
            &known(),
        )
    }

    /// A watched domain, anomaly detection warm.
    fn known() -> Grounds {
        Grounds {
            domain_known: true,
            warming_up: None,
        }
    }

    #[test]
    fn caveats_say_what_the_verdict_could_not_know() {
        let providers = Providers::default();
        let c = Around {
            windows: &[],
            mx_at: None,
            providers: &providers,
        };
        let unwatched = Grounds {
            domain_known: false,
            warming_up: Some("too little bounce history".into()),
        };
        let j = judge(&q(Kind::UserUnknown, true, 12, None), &c, &unwatched);
        assert_eq!(j.verdict, Verdict::Suppress);
        assert_eq!(j.caveats, [NO_HISTORY, "too little bounce history"]);
        let j = judge(&q(Kind::UserUnknown, true, 12, None), &c, &known());
        assert_eq!(j.caveats, Vec::<String>::new());
        // History does not matter where the bounce itself decides.
        for (kind, hard) in [(Kind::MailboxFull, true), (Kind::UserUnknown, false)] {
            let j = judge(&q(kind, hard, 12, None), &c, &unwatched);
            assert_eq!(j.caveats, Vec::<String>::new(), "{kind:?}");
        }
    }

    #[test]
    fn table_of_verdicts() {
        let open = [window(EvidenceKind::MxChange, 11, None)];
        let closed = [window(EvidenceKind::MxChange, 11, Some(13))];
        let cases: Vec<(&str, Question, &[Evidence], Verdict)> = vec![
            (
                "unknown user, nothing wrong",
                q(Kind::UserUnknown, true, 12, None),
                &[],
                Verdict::Suppress,
            ),
            (
                "unknown user inside an open MX window",
                q(Kind::UserUnknown, true, 12, None),
                &open,
                Verdict::Transient,
            ),
            (
                "an ESP's suppression, nothing wrong: it stands",
                q(Kind::Suppressed, true, 12, None),
                &[],
                Verdict::Suppress,
            ),
            (
                "an ESP's suppression inside an MX window: undo it",
                q(Kind::Suppressed, true, 12, None),
                &open,
                Verdict::Transient,
            ),
            (
                "unknown user inside a closed window",
                q(Kind::UserUnknown, true, 12, None),
                &closed,
                Verdict::Transient,
            ),
            (
                "at the window's end (grace included)",
                q(Kind::UserUnknown, true, 13, None),
                &closed,
                Verdict::Transient,
            ),
            (
                "unknown user after the window",
                q(Kind::UserUnknown, true, 14, None),
                &closed,
                Verdict::Suppress,
            ),
            (
                "unknown user before the window",
                q(Kind::UserUnknown, true, 10, None),
                &closed,
                Verdict::Suppress,
            ),
            (
                "4xx unknown user",
                q(Kind::UserUnknown, false, 12, None),
                &[],
                Verdict::Retry,
            ),
            (
                "mailbox full",
                q(Kind::MailboxFull, true, 12, None),
                &[],
                Verdict::Retry,
            ),
            (
                "greylisted",
                q(Kind::Greylisted, false, 12, None),
                &[],
                Verdict::Retry,
            ),
            (
                "spam block",
                q(Kind::SpamBlocked, true, 12, None),
                &[],
                Verdict::Ignore,
            ),
            (
                "policy, even inside a window",
                q(Kind::PolicyBlocked, true, 12, None),
                &open,
                Verdict::Ignore,
            ),
            (
                "auto reply",
                q(Kind::AutoReply, false, 12, None),
                &[],
                Verdict::Ignore,
            ),
            (
                "delivered",
                q(Kind::Delivered, false, 12, None),
                &[],
                Verdict::Ignore,
            ),
            (
                "mailbox disabled",
                q(Kind::MailboxDisabled, true, 12, None),
                &[],
                Verdict::Suppress,
            ),
            (
                "domain unknown inside a window",
                q(Kind::DomainUnknown, true, 12, None),
                &open,
                Verdict::Transient,
            ),
        ];
        for (name, q, windows, want) in cases {
            let j = verdict_of(q, windows);
            assert_eq!(j.verdict, want, "{name}");
            assert_eq!(j.suppress, want == Verdict::Suppress, "{name}");
            assert!(!j.reasons.is_empty(), "{name}: a reason is always given");
            assert_eq!(
                j.evidence.is_empty(),
                want != Verdict::Transient,
                "{name}: evidence only for transient"
            );
        }
    }

    #[test]
    fn a_web_de_address_refused_by_icloud_is_a_wrong_mx() {
        let providers = Providers::default();
        let own = mx(&["mx00.web.de", "mx01.web.de"]);
        let c = Around {
            windows: &[],
            mx_at: Some(&own),
            providers: &providers,
        };
        let j = judge(
            &q(Kind::UserUnknown, true, 12, Some("mx01.mail.icloud.com")),
            &c,
            &known(),
        );
        assert_eq!(j.verdict, Verdict::Transient);
        assert_eq!(j.evidence[0].kind, EvidenceKind::WrongMx);
        assert!(j.reasons[0].contains("Apple iCloud"), "{:?}", j.reasons);
        // The domain's own MX, or another host of the same provider, is no evidence.
        for host in ["mx00.web.de", "dns; mx-ha02.web.de", "192.0.2.1"] {
            let j = judge(&q(Kind::UserUnknown, true, 12, Some(host)), &c, &known());
            assert_eq!(j.verdict, Verdict::Suppress, "{host}");
        }
    }

    #[test]
    fn every_covering_window_is_evidence() {
        let providers = Providers::default();
        let windows = [
            window(EvidenceKind::MxChange, 11, Some(13)),
            Evidence {
                id: Some(9),
                kind: EvidenceKind::ResolverOutage,
                scope: ScopeKind::Global,
                start: t(11),
                end: None,
                detail: "most domains fail".into(),
                last_bounce: None,
            },
            window(EvidenceKind::Anomaly, 15, Some(16)),
        ];
        let c = Around {
            windows: &windows,
            mx_at: None,
            providers: &providers,
        };
        let j = judge(&q(Kind::UserUnknown, true, 12, None), &c, &known());
        assert_eq!(j.verdict, Verdict::Transient);
        let kinds: Vec<EvidenceKind> = j.evidence.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [EvidenceKind::MxChange, EvidenceKind::ResolverOutage]
        );
    }

    #[test]
    fn names_are_the_ones_the_json_carries() {
        let names: Vec<String> = [
            Verdict::Suppress,
            Verdict::Transient,
            Verdict::Retry,
            Verdict::Ignore,
        ]
        .iter()
        .map(|v| format!("{}={v}", v.as_str()))
        .collect();
        assert_eq!(
            names,
            [
                "suppress=suppress",
                "transient=transient",
                "retry=retry",
                "ignore=ignore"
            ]
        );
        assert_eq!(
            [
                EvidenceKind::MxChange,
                EvidenceKind::WrongMx,
                EvidenceKind::Anomaly,
                EvidenceKind::ResolverOutage
            ]
            .map(EvidenceKind::as_str),
            ["mx_change", "wrong_mx", "anomaly", "resolver_outage"]
        );
        assert_eq!(
            [ScopeKind::Domain, ScopeKind::Provider, ScopeKind::Global].map(ScopeKind::as_str),
            ["domain", "provider", "global"]
        );
    }

    #[test]
    fn a_window_covers_both_its_ends_and_nothing_outside() {
        let w = window(EvidenceKind::MxChange, 11, Some(13));
        let second = chrono::Duration::seconds(1);
        assert!(w.covers(t(11)) && w.covers(t(13)) && w.covers(t(12)));
        assert!(!w.covers(t(11) - second) && !w.covers(t(13) + second));
        let open = window(EvidenceKind::MxChange, 11, None);
        assert!(open.covers(t(23)) && !open.covers(t(11) - second));
    }

    #[test]
    fn the_provider_scope_is_the_mx_of_the_time_else_the_refusing_host() {
        let p = Providers::default();
        let own = mx(&["mx00.web.de"]);
        let icloud = Some("mx01.mail.icloud.com");
        assert_eq!(
            provider_scope(Some(&own), icloud, &p).as_deref(),
            Some("united-internet")
        );
        assert_eq!(provider_scope(None, icloud, &p).as_deref(), Some("icloud"));
        assert_eq!(
            provider_scope(Some(&[]), icloud, &p).as_deref(),
            Some("icloud")
        );
        assert_eq!(
            provider_scope(None, Some("dns; mx01.mail.icloud.com."), &p).as_deref(),
            Some("icloud")
        );
        assert_eq!(
            provider_scope(None, Some("192.0.2.1"), &p),
            None,
            "an IP is no host"
        );
        assert_eq!(provider_scope(None, Some("[192.0.2.1]"), &p), None);
        assert_eq!(provider_scope(None, Some(""), &p), None);
        assert_eq!(provider_scope(None, None, &p), None);
    }

    /// Issue 19: an open anomaly whose bounces stopped has ended when the
    /// question is asked later; nothing else changes.
    #[test]
    fn evidence_as_a_later_question_finds_it() {
        let p = crate::anomaly::Params::default();
        let mut burst = window(EvidenceKind::Anomaly, 11, None);
        burst.last_bounce = Some(t(11) + chrono::Duration::minutes(20));
        let over = burst.clone().as_of(t(13), &p);
        assert_eq!(over.end, Some(t(11) + chrono::Duration::minutes(20)));
        assert!(!over.covers(t(13)));
        assert_eq!(burst.clone().as_of(t(11), &p).end, None, "still going");
        // Without a stored last bounce, its start stands for it.
        let mut bare = burst.clone();
        bare.last_bounce = None;
        assert_eq!(bare.as_of(t(13), &p).end, Some(t(11)));
        // An MX window, or a closed anomaly, is as stored.
        let mx = window(EvidenceKind::MxChange, 11, None);
        assert_eq!(mx.clone().as_of(t(23), &p), mx);
        let closed = window(EvidenceKind::Anomaly, 11, Some(12));
        assert_eq!(closed.clone().as_of(t(23), &p), closed);
    }

    /// Issue 19, item 3: a held (unconfirmed) change covering the bounce
    /// makes it transient, with a reason and a caveat naming it.
    #[test]
    fn an_unconfirmed_change_is_transient_with_a_caveat() {
        let held = Evidence::unconfirmed(
            t(11),
            crate::dns::Outcome::Records,
            &mx(&["mx01.mail.icloud.com"]),
            Some("held: mx00.web.de → mx01.mail.icloud.com"),
        );
        assert!(
            held.detail
                .starts_with("10 mx01.mail.icloud.com seen since 2021-04-26T11:00:00Z")
        );
        let j = verdict_of(
            q(Kind::UserUnknown, true, 12, None),
            std::slice::from_ref(&held),
        );
        assert_eq!(j.verdict, Verdict::Transient);
        assert_eq!(j.evidence[0].kind, EvidenceKind::UnconfirmedChange);
        assert!(
            j.reasons[0].contains("not yet confirmed"),
            "{:?}",
            j.reasons
        );
        assert_eq!(
            j.caveats,
            [
                "an MX change seen since 2021-04-26T11:00:00Z is still being verified: this \
              verdict may change once it is confirmed or gone"
            ]
        );
        // Other evidence alone carries no such caveat.
        let j = verdict_of(
            q(Kind::UserUnknown, true, 12, None),
            &[window(EvidenceKind::MxChange, 11, None)],
        );
        assert!(j.caveats.is_empty());
    }
}
