//! The watchlist as written: serde structs, each field optional, read
//! before anything is checked (`validate` in `mod.rs` checks them).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use crate::domain::DomainName;
use crate::resolve::Upstream;
use crate::schedule::Schedule;

/// A duration written the human way: `30s`, `5m`, `72h`, `1h 30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct HumanDuration(pub(super) Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let d = humantime::parse_duration(s.trim()).map_err(|e| {
            de::Error::custom(format!(
                "{s:?} is not a duration like `30s`, `5m` or `72h`: {e}"
            ))
        })?;
        if d > MAX_DURATION {
            return Err(de::Error::custom(format!(
                "{s:?} is longer than any setting may be (at most {})",
                crate::event::duration(MAX_DURATION)
            )));
        }
        Ok(HumanDuration(d))
    }
}

/// The longest duration any setting takes: every one of them is added to
/// a moment somewhere (a schedule's next check, a time-out's deadline), and
/// 500,000,000,000 years added to now panics. A century is more than any
/// setting means.
pub(super) const MAX_DURATION: Duration = Duration::from_secs(3_155_760_000); // humantime's 100y

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Schedule::parse(&s).map_err(de::Error::custom)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) database: Option<PathBuf>,
    pub(super) schedule: Option<Schedule>,
    pub(super) upstreams: Option<Vec<Upstream>>,
    pub(super) timeout: Option<HumanDuration>,
    pub(super) concurrency: Option<usize>,
    pub(super) rate_limit: Option<u32>,
    pub(super) fast_recheck: Option<HumanDuration>,
    pub(super) grace: Option<HumanDuration>,
    pub(super) settle: Option<HumanDuration>,
    pub(super) authoritative_port: Option<u16>,
    pub(super) listen: Option<String>,
    pub(super) api_token_file: Option<PathBuf>,
    pub(super) anomaly: Option<RawAnomaly>,
    pub(super) bounce_times: Option<RawBounceTimes>,
    pub(super) api_max_connections: Option<usize>,
    pub(super) api_body_memory_mib: Option<u64>,
    pub(super) api_max_connections_per_peer: Option<usize>,
    #[serde(default)]
    pub(super) sns_subscribe_allow: Vec<String>,
    pub(super) sns_verify_signatures: Option<bool>,
    #[serde(default)]
    pub(super) sns_topics: Vec<String>,
    pub(super) sns_signing_cert_base: Option<String>,
    pub(super) sns_trust_anchors_file: Option<PathBuf>,
    #[serde(default)]
    pub(super) alerts: Vec<RawAlert>,
    #[serde(default)]
    pub(super) forward: Vec<RawForward>,
    #[serde(default)]
    pub(super) undo: Vec<RawUndo>,
    #[serde(default)]
    pub(super) passive_dns: Vec<RawPassiveDns>,
    /// Watch the unlisted domains that bounce (off when absent).
    pub(super) auto_watch: Option<RawAutoWatch>,
    /// Crontab line of the daily digest (off when absent).
    pub(super) digest: Option<Schedule>,
    pub(super) log_level: Option<String>,
    #[serde(default)]
    pub(super) providers: Vec<RawProvider>,
    #[serde(default)]
    pub(super) domains: Vec<RawDomain>,
    pub(super) domains_file: Option<PathBuf>,
}

/// `auto_watch:`: how long a bounced domain stays watched, and how many.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAutoWatch {
    pub(super) keep: Option<HumanDuration>,
    pub(super) max_domains: Option<usize>,
}

/// A passive DNS provider `history lookup` asks.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPassiveDns {
    /// `dnsdb` or `securitytrails`.
    pub(super) provider: String,
    /// Name of an environment variable holding the API key.
    pub(super) key_env: Option<String>,
    /// A file whose first line is the API key.
    pub(super) key_file: Option<PathBuf>,
    /// Where the provider answers (its own API by default).
    pub(super) base_url: Option<String>,
    /// Requests the daemon may make of it in an hour, and in a day.
    pub(super) max_requests_per_hour: Option<u32>,
    pub(super) max_requests_per_day: Option<u32>,
}

/// A webhook target.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAlert {
    pub(super) name: String,
    pub(super) url: String,
    pub(super) format: Option<String>,
    /// Name of an environment variable holding the signing secret.
    pub(super) secret_env: Option<String>,
    /// A file whose first line is the signing secret.
    pub(super) secret_file: Option<PathBuf>,
    #[serde(default)]
    pub(super) events: Vec<String>,
    #[serde(default)]
    pub(super) domains: Vec<DomainName>,
    #[serde(default)]
    pub(super) tags: Vec<String>,
    pub(super) min_severity: Option<String>,
    pub(super) timeout: Option<HumanDuration>,
    pub(super) max_age: Option<HumanDuration>,
    pub(super) backoff: Option<HumanDuration>,
}

/// An undo target: a suppression list to take false suppressions off.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUndo {
    pub(super) name: String,
    /// `ses`, `sendgrid`, `mailgun`, `postmark` or `listmonk`.
    pub(super) provider: String,
    pub(super) base_url: Option<String>,
    pub(super) api_key_env: Option<String>,
    pub(super) api_key_file: Option<PathBuf>,
    pub(super) access_key_id_env: Option<String>,
    pub(super) access_key_id_file: Option<PathBuf>,
    pub(super) secret_access_key_env: Option<String>,
    pub(super) secret_access_key_file: Option<PathBuf>,
    pub(super) region: Option<String>,
    pub(super) on_behalf_of: Option<String>,
    pub(super) domain: Option<String>,
    pub(super) stream: Option<String>,
    pub(super) user: Option<String>,
    pub(super) enabled: Option<bool>,
    pub(super) dry_run: Option<bool>,
    pub(super) max_per_hour: Option<u32>,
    pub(super) timeout: Option<HumanDuration>,
    pub(super) max_age: Option<HumanDuration>,
    pub(super) backoff: Option<HumanDuration>,
}

/// A forward target (gateway mode).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawForward {
    pub(super) name: String,
    pub(super) url: String,
    pub(super) format: String,
    /// HTTP Basic: the user, and its password from the environment or a file.
    pub(super) user: Option<String>,
    pub(super) password_env: Option<String>,
    pub(super) password_file: Option<PathBuf>,
    /// A bearer token instead.
    pub(super) bearer_env: Option<String>,
    pub(super) bearer_file: Option<PathBuf>,
    /// Or an arbitrary header and its value.
    pub(super) header: Option<String>,
    pub(super) header_value_env: Option<String>,
    pub(super) header_value_file: Option<PathBuf>,
    #[serde(default)]
    pub(super) sources: Vec<String>,
    #[serde(default)]
    pub(super) domains: Vec<DomainName>,
    #[serde(default)]
    pub(super) tags: Vec<String>,
    /// What a `transient` verdict is forwarded as: `soft` or `hold`.
    pub(super) transient: Option<String>,
    /// What an `ignore` verdict is forwarded as: `unchanged` or `drop`.
    pub(super) ignore: Option<String>,
    pub(super) timeout: Option<HumanDuration>,
    pub(super) max_age: Option<HumanDuration>,
    pub(super) backoff: Option<HumanDuration>,
}

/// The dates a bounce may claim; see [`crate::bounce::TimeRange`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBounceTimes {
    pub(super) max_age: Option<HumanDuration>,
    pub(super) max_ahead: Option<HumanDuration>,
}

/// Thresholds of anomaly windows; see [`crate::anomaly::Params`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAnomaly {
    pub(super) window: Option<HumanDuration>,
    pub(super) baseline: Option<HumanDuration>,
    pub(super) factor: Option<f64>,
    pub(super) concurrent_factor: Option<f64>,
    pub(super) min_bounces: Option<usize>,
    pub(super) min_recipients: Option<usize>,
    pub(super) warmup: Option<HumanDuration>,
    pub(super) max_duration: Option<HumanDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProvider {
    pub(super) id: String,
    pub(super) name: Option<String>,
    pub(super) suffixes: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDomainMap {
    pub(super) name: DomainName,
    pub(super) schedule: Option<Schedule>,
    #[serde(default)]
    pub(super) tags: Vec<String>,
    #[serde(default)]
    pub(super) expect: Vec<String>,
}

/// A watched domain is either a bare name or a map with options.
#[derive(Debug)]
pub(super) struct RawDomain(pub(super) RawDomainMap);

impl<'de> Deserialize<'de> for RawDomain {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawDomain;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a domain name or a map with `name` and options")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawDomain, E> {
                let name = DomainName::parse(s).map_err(E::custom)?;
                Ok(RawDomain(RawDomainMap {
                    name,
                    schedule: None,
                    tags: vec![],
                    expect: vec![],
                }))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawDomain, A::Error> {
                RawDomainMap::deserialize(de::value::MapAccessDeserializer::new(map)).map(RawDomain)
            }
        }
        d.deserialize_any(V)
    }
}
