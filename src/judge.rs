//! The verdict service: a bounce from its parts, judged against what the
//! store knew at its time. Shared by `mxwatch verdict` and the HTTP API.

use chrono::{DateTime, Utc};

use crate::bounce::{Action, Bounce, Facts, Source};
use crate::store::{Judging, Knowledge, StoreError};
use crate::verdict::Judgement;

/// The parts of a bounce a caller gives.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Parts {
    pub recipient: String,
    /// When it bounced; now when absent.
    pub at: Option<DateTime<Utc>>,
    pub status: Option<String>,
    pub reply_code: Option<u16>,
    pub diagnostic: Option<String>,
    pub remote_mta: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum JudgeError {
    #[error("{0:?} is not an email address")]
    Recipient(String),
    /// The parts are wrong or too few to judge: the caller must say more.
    #[error("{0}")]
    Parts(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A judged bounce.
#[derive(Debug, Clone)]
pub struct Ruling {
    pub bounce: Bounce,
    pub at: DateTime<Utc>,
    pub judgement: Judgement,
}

/// Checks the parts before anything is judged, and takes a status or reply
/// code the caller gave only inside the diagnostic. A verdict is never
/// guessed from a malformed code or from nothing.
pub fn validate(parts: &mut Parts) -> Result<(), JudgeError> {
    if let Some(c) = parts.recipient.chars().find(|c| c.is_control()) {
        return Err(JudgeError::Parts(format!(
            "recipient {:?} contains a control character (U+{:04X})",
            parts.recipient, c as u32
        )));
    }
    if let Some(s) = parts.status.as_mut() {
        *s = s.trim().to_string();
        let fields: Vec<&str> = s.split('.').collect();
        let well_formed = matches!(fields.as_slice(), [class, subject, detail]
            if matches!(*class, "2" | "4" | "5")
                && [subject, detail].iter().all(|f| (1..=3).contains(&f.len()) && f.bytes().all(|b| b.is_ascii_digit())));
        if !well_formed {
            return Err(JudgeError::Parts(format!(
                "status {s:?} is not an RFC 3463 code: class 2, 4 or 5, then a subject and a detail of 1 to 3 digits (e.g. 5.1.1)"
            )));
        }
    }
    if let Some(c) = parts.reply_code
        && !((400..600).contains(&c) && (c / 10) % 10 <= 5)
    {
        return Err(JudgeError::Parts(format!(
            "reply code {c} is not an SMTP failure reply (4yz or 5yz with y from 0 to 5, e.g. 550)"
        )));
    }
    let diagnostic = parts.diagnostic.as_deref().unwrap_or("");
    if parts.status.is_none() {
        parts.status = crate::bounce::classify::normalise_status(diagnostic);
    }
    if parts.reply_code.is_none() {
        parts.reply_code = crate::bounce::parse::dsn::reply_code(diagnostic).filter(|c| *c >= 400);
    }
    match (parts.status.as_deref(), parts.reply_code) {
        (None, None) => Err(JudgeError::Parts(
            "nothing says how the delivery failed: give a status (e.g. 5.1.1) or a reply code \
             (e.g. 550), or a diagnostic that has one"
                .into(),
        )),
        (Some(s), Some(c))
            if (s.starts_with('5') && c < 500) || (s.starts_with('4') && c >= 500) =>
        {
            Err(JudgeError::Parts(format!(
                "status {s} and reply code {c} disagree: one says permanent, the other temporary"
            )))
        }
        _ => Ok(()),
    }
}

/// Classifies the parts and judges them against what `store` knows.
pub fn judge(
    store: &impl Knowledge,
    judging: &Judging,
    parts: Parts,
    now: DateTime<Utc>,
) -> Result<Ruling, JudgeError> {
    let mut parts = parts;
    validate(&mut parts)?;
    let at = parts.at.unwrap_or(now);
    let permanent = parts.status.as_deref().is_some_and(|s| s.starts_with('5'))
        || parts.reply_code.is_some_and(|c| c >= 500);
    let recipient = parts.recipient.clone();
    let facts = Facts {
        recipient: parts.recipient,
        at: Some(at),
        action: Some(if permanent {
            Action::Failed
        } else {
            Action::Delayed
        }),
        status: parts.status,
        reply_code: parts.reply_code,
        diagnostic: parts.diagnostic,
        remote_mta: parts.remote_mta,
        ..Default::default()
    };
    // A caller's summary, like an ESP event: its words are taken as given.
    let bounce = facts
        .into_bounce(Source::Jsonl)
        .ok_or(JudgeError::Recipient(recipient))?;
    let c = store.circumstances(
        &bounce.domain,
        at,
        bounce.remote_mta.as_deref(),
        &judging.providers,
    )?;
    let judgement = c.judge(&bounce, at, judging);
    Ok(Ruling {
        bounce,
        at,
        judgement,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(status: Option<&str>, reply: Option<u16>, diagnostic: Option<&str>) -> Parts {
        Parts {
            recipient: "kim@web.de".into(),
            status: status.map(str::to_string),
            reply_code: reply,
            diagnostic: diagnostic.map(str::to_string),
            ..Parts::default()
        }
    }

    fn error_of(p: Parts) -> String {
        let mut p = p;
        match validate(&mut p) {
            Err(JudgeError::Parts(m)) => m,
            other => panic!("{p:?}: expected an error, got {other:?}"),
        }
    }

    #[test]
    fn malformed_or_missing_codes_are_refused_with_what_is_wrong() {
        for (status, reply, want) in [
            (None, None, "nothing says how the delivery failed"),
            (Some("9.9.9"), None, "not an RFC 3463 code"),
            (Some("5.1.1.1.1"), None, "not an RFC 3463 code"),
            (Some("5.1"), None, "not an RFC 3463 code"),
            (Some("5.1000.1"), None, "not an RFC 3463 code"),
            (Some("5.x.1"), None, "not an RFC 3463 code"),
            (Some("3.1.1"), None, "not an RFC 3463 code"),
            (None, Some(250), "not an SMTP failure reply"),
            (None, Some(399), "not an SMTP failure reply"),
            (None, Some(600), "not an SMTP failure reply"),
            (None, Some(560), "not an SMTP failure reply"),
            (Some("5.1.1"), Some(450), "disagree"),
            (Some("4.2.2"), Some(552), "disagree"),
        ] {
            let e = error_of(parts(status, reply, None));
            assert!(e.contains(want), "{status:?} {reply:?}: {e}");
        }
        let mut p = parts(Some("5.1.1"), None, None);
        p.recipient = "a\u{0}b@web.de".into();
        assert!(error_of(p).contains("control character (U+0000)"));
    }

    #[test]
    fn well_formed_codes_pass_and_a_diagnostic_supplies_them() {
        for (status, reply) in [
            (Some(" 5.1.1 "), None),
            (Some("5.1.10"), Some(550)),
            (Some("4.7.0"), Some(421)),
            (Some("5.0.0"), Some(500)),
            (Some("2.0.0"), None),
            (None, Some(455)),
            (None, Some(554)),
        ] {
            let mut p = parts(status, reply, None);
            assert!(validate(&mut p).is_ok(), "{status:?} {reply:?}");
        }
        let mut p = parts(None, None, Some("550 5.1.1 <kim@web.de>: user unknown"));
        validate(&mut p).unwrap();
        assert_eq!(
            (p.status.as_deref(), p.reply_code),
            (Some("5.1.1"), Some(550))
        );
        let mut p = parts(Some(" 5.1.1"), None, None);
        validate(&mut p).unwrap();
        assert_eq!(p.status.as_deref(), Some("5.1.1"), "trimmed");
    }

    fn judged(p: Parts) -> Ruling {
        let now = chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2026, 4, 26, 11, 0, 0).unwrap();
        judge(&crate::store::Model::default(), &Judging::default(), p, now).unwrap()
    }

    #[test]
    fn hard_or_soft_comes_from_the_status_and_the_reply_code() {
        let now = chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2026, 4, 26, 11, 0, 0).unwrap();
        for (status, reply, verdict, hard) in [
            (Some("5.1.1"), None, crate::verdict::Verdict::Suppress, true),
            (None, Some(550), crate::verdict::Verdict::Suppress, true),
            (Some("4.1.1"), None, crate::verdict::Verdict::Retry, false),
            (None, Some(450), crate::verdict::Verdict::Retry, false),
            (
                Some("5.2.2"),
                Some(552),
                crate::verdict::Verdict::Retry,
                true,
            ),
        ] {
            let a = judged(parts(status, reply, Some("user unknown")));
            assert_eq!(
                (a.judgement.verdict, a.bounce.hard),
                (verdict, hard),
                "{status:?} {reply:?}"
            );
            assert_eq!(a.at, now, "judged now when no time is given");
        }
        let a = judged(parts(Some("5.1.1"), None, None));
        assert_eq!(
            a.judgement.caveats[0],
            crate::verdict::NO_HISTORY,
            "an empty store knows no domain"
        );
        let mut p = parts(Some("5.1.1"), None, None);
        let then = now - chrono::Duration::hours(3);
        p.at = Some(then);
        p.remote_mta = Some("MX01.mail.icloud.com.".into());
        p.reply_code = Some(550);
        let a = judged(p);
        assert_eq!((a.at, a.bounce.at), (then, Some(then)));
        assert_eq!(
            (
                a.bounce.status.as_deref(),
                a.bounce.reply_code,
                a.bounce.remote_mta.as_deref(),
                a.bounce.action
            ),
            (
                Some("5.1.1"),
                Some(550),
                Some("mx01.mail.icloud.com"),
                Some(crate::bounce::Action::Failed)
            ),
            "the parts as the bounce keeps them"
        );
        // Words that match no rule: a permanent code is a failure that is
        // not the address's fault (`ignore`); a temporary one is a delay of
        // unknown cause (`other`, not an expiry that has not happened): retry.
        for (status, reply, kind, verdict) in [
            (
                Some("5.9.9"),
                None,
                crate::bounce::Kind::Other,
                crate::verdict::Verdict::Ignore,
            ),
            (
                None,
                Some(550),
                crate::bounce::Kind::Other,
                crate::verdict::Verdict::Ignore,
            ),
            (
                Some("4.9.9"),
                None,
                crate::bounce::Kind::Other,
                crate::verdict::Verdict::Retry,
            ),
            (
                None,
                Some(450),
                crate::bounce::Kind::Other,
                crate::verdict::Verdict::Retry,
            ),
        ] {
            let a = judged(parts(status, reply, Some("computer says no")));
            assert_eq!(
                (a.bounce.kind, a.judgement.verdict),
                (kind, verdict),
                "{status:?} {reply:?}"
            );
        }
        let mut p = parts(Some("5.1.1"), None, None);
        p.recipient = "not an address".into();
        let e = judge(&crate::store::Model::default(), &Judging::default(), p, now).unwrap_err();
        assert!(matches!(e, JudgeError::Recipient(_)), "{e}");
    }
}
