//! Adapter: asking passive DNS providers over HTTP for a domain's MX
//! history (the answers are read by [`crate::passive`]). Only this module
//! knows their endpoints:
//! - Farsight DNSDB API v2: `GET {base}/dnsdb/v2/lookup/rrset/name/{name}/MX`
//!   with the key in `X-API-Key`, answered in JSON lines with
//!   `{"cond": …}`/`{"obj": …}` framing;
//! - SecurityTrails: `GET {base}/v1/history/{hostname}/dns/mx` with the key
//!   in the `APIKEY` header.
//!
//! A quota that is spent (HTTP 429) is an answer to wait on, not a failure
//! to retry at once: the error says how long the provider asked for. No
//! redirect is followed (`http_client`); an answer over 8 MiB is refused.

use std::time::Duration;

use crate::domain::DomainName;
use crate::passive::{self, PassiveSource, Read};
use crate::secret::Secret;

/// The largest answer read.
const MAX_ANSWER: usize = 8 << 20;

/// One configured provider.
#[derive(Debug, Clone, PartialEq)]
pub struct Provider {
    pub source: PassiveSource,
    /// Without a trailing slash.
    pub base_url: String,
    pub key: Secret,
    /// How many requests the daemon may make of it.
    pub limits: Limits,
}

/// Requests a provider may be sent: each costs paid quota, and 200,000
/// bounced domains once made 40,001 DNSDB requests in a minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub per_hour: u32,
    pub per_day: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_hour: 100,
            per_day: 1_000,
        }
    }
}

/// The requests sent to one provider in the last day, against its
/// [`Limits`]. Each request (a SecurityTrails page too) takes one.
#[derive(Debug, Default)]
pub struct Budget {
    sent: std::collections::VecDeque<chrono::DateTime<chrono::Utc>>,
}

impl Budget {
    /// Takes one request at `now`, if the limits leave one.
    pub fn take(&mut self, limits: Limits, now: chrono::DateTime<chrono::Utc>) -> bool {
        let day_ago = now - chrono::Duration::days(1);
        while self.sent.front().is_some_and(|t| *t <= day_ago) {
            self.sent.pop_front();
        }
        let hour_ago = now - chrono::Duration::hours(1);
        let last_hour = self
            .sent
            .iter()
            .rev()
            .take_while(|t| **t > hour_ago)
            .count();
        if self.sent.len() >= limits.per_day as usize || last_hour >= limits.per_hour as usize {
            return false;
        }
        self.sent.push_back(now);
        true
    }

    /// When a request may be sent again, if not now.
    pub fn free_at(
        &self,
        limits: Limits,
        now: chrono::DateTime<chrono::Utc>,
    ) -> chrono::DateTime<chrono::Utc> {
        let hour_ago = now - chrono::Duration::hours(1);
        let in_hour: Vec<_> = self.sent.iter().filter(|t| **t > hour_ago).collect();
        let mut at = now;
        if in_hour.len() >= limits.per_hour as usize
            && let Some(first) = in_hour.first()
        {
            at = at.max(**first + chrono::Duration::hours(1));
        }
        if self.sent.len() >= limits.per_day as usize
            && let Some(first) = self.sent.front()
        {
            at = at.max(*first + chrono::Duration::days(1));
        }
        at
    }
}

impl Provider {
    /// Where each provider answers when the watchlist does not say.
    pub fn default_base(source: PassiveSource) -> &'static str {
        match source {
            PassiveSource::Dnsdb => "https://api.dnsdb.info",
            PassiveSource::Securitytrails => "https://api.securitytrails.com",
        }
    }
}

/// Why a lookup gave nothing.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LookupError {
    /// The quota is spent: ask again after this long.
    #[error("{provider}: quota spent (HTTP 429); ask again in {}", crate::event::duration(*wait))]
    Quota {
        provider: PassiveSource,
        wait: Duration,
    },
    /// The request budget the watchlist gives it is spent until `until`.
    #[error("{provider}: its request budget (max_requests_per_hour/day) is spent until {until}")]
    Budget {
        provider: PassiveSource,
        until: chrono::DateTime<chrono::Utc>,
    },
    #[error("{0}: {1}")]
    Failed(PassiveSource, String),
}

/// Pages of a SecurityTrails history read at most (each costs a query).
const MAX_PAGES: u64 = 10;

/// Asks `provider` for `domain`'s MX history (SecurityTrails page by page,
/// up to ten), bounded to what it may say: records of `domain`, seen
/// before `now` ([`Read::bound`]).
pub async fn lookup(
    http: &reqwest::Client,
    provider: &Provider,
    domain: &DomainName,
    budget: &mut Budget,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Read, LookupError> {
    Ok(ask(http, provider, domain, budget, now)
        .await?
        .bound(Some(domain), now))
}

async fn ask(
    http: &reqwest::Client,
    provider: &Provider,
    domain: &DomainName,
    budget: &mut Budget,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Read, LookupError> {
    let mut spend = || {
        if budget.take(provider.limits, now) {
            Ok(())
        } else {
            Err(LookupError::Budget {
                provider: provider.source,
                until: budget.free_at(provider.limits, now),
            })
        }
    };
    let source = provider.source;
    match source {
        PassiveSource::Dnsdb => {
            spend()?;
            let path = format!("/dnsdb/v2/lookup/rrset/name/{}/MX", domain.as_str());
            let request = get(http, provider, &path, "application/x-ndjson");
            // DNSDB answers "no records" with 404.
            Ok(match fetch(request, source).await? {
                Some(text) => passive::read_dnsdb(&text),
                None => Read::default(),
            })
        }
        PassiveSource::Securitytrails => {
            let mut all = Read::default();
            let mut page = 1;
            loop {
                spend()?;
                let path = format!("/v1/history/{}/dns/mx?page={page}", domain.as_str());
                let request = get(http, provider, &path, "application/json");
                let Some(text) = fetch(request, source).await? else {
                    return Err(LookupError::Failed(
                        source,
                        "the provider answered 404".into(),
                    ));
                };
                let read = passive::read_securitytrails(&text, domain);
                let pages = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| v.get("pages").and_then(serde_json::Value::as_u64))
                    .unwrap_or(1);
                all.sightings.extend(read.sightings);
                all.problems.extend(read.problems);
                if page >= pages.min(MAX_PAGES) {
                    return Ok(all);
                }
                page += 1;
            }
        }
    }
}

/// A GET of `path` at the provider, its key in the header it documents.
fn get(http: &reqwest::Client, p: &Provider, path: &str, accept: &str) -> reqwest::RequestBuilder {
    let key_header = match p.source {
        PassiveSource::Dnsdb => "X-API-Key",
        PassiveSource::Securitytrails => "APIKEY",
    };
    http.get(format!("{}{path}", p.base_url))
        .header(key_header, p.key.expose())
        .header("Accept", accept)
}

/// One request: its text, `None` for a 404; a spent quota or another
/// failure as an error.
async fn fetch(
    request: reqwest::RequestBuilder,
    source: PassiveSource,
) -> Result<Option<String>, LookupError> {
    let fail = |m: String| LookupError::Failed(source, m);
    let mut answer = request
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| fail(e.without_url().to_string()))?;
    let status = answer.status();
    if status.as_u16() == 429 {
        let wait = answer
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(3600);
        return Err(LookupError::Quota {
            provider: source,
            wait: Duration::from_secs(wait.min(86_400)),
        });
    }
    if status.as_u16() == 404 {
        return Ok(None);
    }
    if !status.is_success() {
        return Err(fail(format!("the provider answered {status}")));
    }
    let mut body = Vec::new();
    while let Some(chunk) = answer
        .chunk()
        .await
        .map_err(|e| fail(e.without_url().to_string()))?
    {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(fail(format!("the answer is over {MAX_ANSWER} bytes")));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(String::from_utf8_lossy(&body).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_budget_holds_per_hour_and_per_day() {
        let limits = Limits {
            per_hour: 2,
            per_day: 3,
        };
        let t0 = chrono::Utc.with_ymd_and_hms(2026, 12, 6, 0, 0, 0).unwrap();
        let mut b = Budget::default();
        assert!(b.take(limits, t0));
        assert!(b.take(limits, t0 + chrono::Duration::minutes(1)));
        // Two in the hour: the third waits for the first to age out.
        assert!(!b.take(limits, t0 + chrono::Duration::minutes(2)));
        assert_eq!(
            b.free_at(limits, t0 + chrono::Duration::minutes(2)),
            t0 + chrono::Duration::hours(1)
        );
        assert!(b.take(limits, t0 + chrono::Duration::minutes(61)));
        // Three in the day: nothing more until a day after the first.
        let later = t0 + chrono::Duration::hours(5);
        assert!(!b.take(limits, later));
        assert_eq!(b.free_at(limits, later), t0 + chrono::Duration::days(1));
        assert!(b.take(
            limits,
            t0 + chrono::Duration::days(1) + chrono::Duration::seconds(1)
        ));
    }
}
