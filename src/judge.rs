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
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A judged bounce.
#[derive(Debug, Clone)]
pub struct Answer {
    pub bounce: Bounce,
    pub at: DateTime<Utc>,
    pub judgement: Judgement,
}

/// Classifies the parts and judges them against what `store` knows.
pub fn judge(
    store: &impl Knowledge,
    judging: &Judging,
    parts: Parts,
    now: DateTime<Utc>,
) -> Result<Answer, JudgeError> {
    let at = parts.at.unwrap_or(now);
    let permanent = parts
        .status
        .as_deref()
        .is_some_and(|s| s.trim().starts_with('5'))
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
    Ok(Answer {
        bounce,
        at,
        judgement,
    })
}
