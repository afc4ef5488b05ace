//! Turning DNS answers into observations.
//!
//! One [`MxResolver`] holds a hickory resolver per configured upstream, each
//! with its cache off: a monitor that answers from a cache sees a change only
//! when the TTL runs out. Every outcome, NXDOMAIN, SERVFAIL and time-outs
//! included, is an [`Observation`]: data to store, never an `Err`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, RecordType};
use serde::Deserialize;
use serde::de::{self, Deserializer};
use tokio::time::Instant;

pub use crate::dns::{Answer, Observation, Outcome};
use crate::domain::{DomainName, Mx, MxHost};
use crate::schedule::RateLimiter;

/// Where a query goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Upstream {
    /// The machine's resolvers from `/etc/resolv.conf`.
    System,
    /// One recursive resolver.
    Recursive(SocketAddr),
    /// The domain's own name servers, found by an NS lookup through the
    /// system resolver (or `via`), asked without recursion.
    Authoritative { via: Option<SocketAddr> },
}

impl Upstream {
    /// The label stored with every observation (`system`, `9.9.9.9:53`,
    /// `authoritative`).
    pub fn label(&self) -> String {
        match self {
            Upstream::System => "system".into(),
            Upstream::Recursive(addr) => addr.to_string(),
            Upstream::Authoritative { via: None } => "authoritative".into(),
            Upstream::Authoritative { via: Some(addr) } => format!("authoritative@{addr}"),
        }
    }
}

fn parse_socket(s: &str) -> Option<SocketAddr> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Some(addr);
    }
    s.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53))
}

impl FromStr for Upstream {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        match s {
            "system" => return Ok(Upstream::System),
            "authoritative" => return Ok(Upstream::Authoritative { via: None }),
            _ => {}
        }
        if let Some(via) = s.strip_prefix("authoritative@") {
            return parse_socket(via)
                .map(|addr| Upstream::Authoritative { via: Some(addr) })
                .ok_or_else(|| format!("{via:?} is not an IP address or IP:port"));
        }
        parse_socket(s).map(Upstream::Recursive).ok_or_else(|| {
            format!(
                "unknown upstream {s:?}: use `system`, `authoritative`, \
                 `authoritative@IP[:port]`, or a resolver's IP[:port]"
            )
        })
    }
}

impl<'de> Deserialize<'de> for Upstream {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

/// Settings for building resolvers.
#[derive(Debug, Clone)]
pub struct ResolveOptions {
    pub timeout: Duration,
    /// Queries per second per upstream, 0 for no limit.
    pub rate_limit: u32,
    /// Port the authoritative name servers listen on (53).
    pub authoritative_port: u16,
}

/// Asks every configured upstream for a domain's MX.
pub struct MxResolver {
    upstreams: Vec<UpstreamResolver>,
}

struct UpstreamResolver {
    label: String,
    limiter: Option<RateLimiter>,
    kind: Kind,
}

enum Kind {
    Direct(TokioResolver),
    Authoritative(Authoritative),
}

impl MxResolver {
    pub fn new(upstreams: &[Upstream], opts: &ResolveOptions) -> Result<Self, NetError> {
        let mut out = Vec::new();
        for u in upstreams {
            let kind = match u {
                Upstream::System => Kind::Direct(system_resolver(opts)?),
                Upstream::Recursive(addr) => Kind::Direct(resolver_for(&[*addr], true, opts)),
                Upstream::Authoritative { via } => Kind::Authoritative(Authoritative {
                    lookup: match via {
                        Some(addr) => resolver_for(&[*addr], true, opts),
                        None => system_resolver(opts)?,
                    },
                    port: opts.authoritative_port,
                    opts: opts.clone(),
                    zones: Mutex::new(HashMap::new()),
                }),
            };
            out.push(UpstreamResolver {
                label: u.label(),
                limiter: (opts.rate_limit > 0).then(|| RateLimiter::per_second(opts.rate_limit)),
                kind,
            });
        }
        Ok(MxResolver { upstreams: out })
    }

    pub fn labels(&self) -> Vec<String> {
        self.upstreams.iter().map(|u| u.label.clone()).collect()
    }

    /// Queries every upstream concurrently; one observation per upstream,
    /// in configuration order.
    pub async fn observe(&self, domain: &DomainName) -> Vec<Observation> {
        let futs = self.upstreams.iter().map(|u| u.observe(domain));
        futures::future::join_all(futs).await
    }
}

impl UpstreamResolver {
    async fn observe(&self, domain: &DomainName) -> Observation {
        match &self.kind {
            Kind::Direct(r) => {
                if let Some(l) = &self.limiter {
                    l.acquire().await;
                }
                query_mx(r, &self.label, domain).await
            }
            Kind::Authoritative(a) => a.observe(&self.label, self.limiter.as_ref(), domain).await,
        }
    }
}

fn base_opts(opts: &ResolveOptions, recursion: bool) -> ResolverOpts {
    let mut o = ResolverOpts::default();
    o.cache_size = 0;
    o.timeout = opts.timeout;
    o.attempts = 1;
    o.use_hosts_file = ResolveHosts::Never;
    o.recursion_desired = recursion;
    o.num_concurrent_reqs = 1;
    o.ndots = 0;
    o
}

fn system_resolver(opts: &ResolveOptions) -> Result<TokioResolver, NetError> {
    let mut b = TokioResolver::builder_tokio()?;
    let sys = b.options_mut().clone();
    let mut o = base_opts(opts, true);
    o.attempts = sys.attempts.max(1);
    *b.options_mut() = o;
    b.build()
}

fn resolver_for(addrs: &[SocketAddr], recursion: bool, opts: &ResolveOptions) -> TokioResolver {
    let servers = addrs
        .iter()
        .map(|a| {
            let mut udp = ConnectionConfig::udp();
            udp.port = a.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = a.port();
            NameServerConfig::new(a.ip(), true, vec![udp, tcp])
        })
        .collect();
    let cfg = ResolverConfig::from_parts(None, vec![], servers);
    let mut b = TokioResolver::builder_with_config(cfg, TokioRuntimeProvider::default());
    *b.options_mut() = base_opts(opts, recursion);
    b.build().expect("a resolver with explicit servers builds")
}

/// Whether a lookup failed on our side before a question left: hickory
/// says "no connections available" when it could not open a socket.
fn is_local(e: &NetError) -> bool {
    const EMFILE: i32 = 24;
    const ENFILE: i32 = 23;
    const ENOMEM: i32 = 12;
    const ENOBUFS: i32 = 105;
    match e {
        NetError::NoConnections | NetError::Busy => true,
        NetError::Io(io) => {
            matches!(io.raw_os_error(), Some(EMFILE | ENFILE | ENOMEM | ENOBUFS))
                || io.kind() == std::io::ErrorKind::OutOfMemory
        }
        _ => false,
    }
}

/// Maps a lookup error to the outcome it is: NXDOMAIN and "no records" are
/// answers, everything else a failure.
fn classify_error(upstream: &str, e: &NetError) -> Result<(Outcome, Option<u32>), Observation> {
    if is_local(e) {
        return Err(Observation::local_failure(upstream, e));
    }
    match e {
        NetError::Dns(DnsError::NoRecordsFound(nr)) => match nr.response_code {
            ResponseCode::NXDomain => Ok((Outcome::NxDomain, nr.negative_ttl)),
            ResponseCode::NoError => Ok((Outcome::NoMx, nr.negative_ttl)),
            ResponseCode::ServFail => Err(Observation::failure(
                upstream,
                Outcome::ServFail,
                "SERVFAIL",
            )),
            ResponseCode::Refused => {
                Err(Observation::failure(upstream, Outcome::Refused, "REFUSED"))
            }
            other => Err(Observation::failure(
                upstream,
                Outcome::Error,
                format!("response code {other}"),
            )),
        },
        NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail)) => Err(Observation::failure(
            upstream,
            Outcome::ServFail,
            "SERVFAIL",
        )),
        NetError::Dns(DnsError::ResponseCode(ResponseCode::Refused)) => {
            Err(Observation::failure(upstream, Outcome::Refused, "REFUSED"))
        }
        NetError::Timeout => Err(Observation::failure(
            upstream,
            Outcome::Timeout,
            "no answer in time",
        )),
        NetError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => Err(Observation::failure(
            upstream,
            Outcome::Timeout,
            io.to_string(),
        )),
        other => Err(Observation::failure(
            upstream,
            Outcome::Error,
            other.to_string(),
        )),
    }
}

async fn query_mx(r: &TokioResolver, upstream: &str, domain: &DomainName) -> Observation {
    let fqdn = domain.fqdn();
    match r.lookup(fqdn.as_str(), RecordType::MX).await {
        Ok(lookup) => {
            let mut ttl: Option<u32> = None;
            let mut mx = Vec::new();
            for rec in lookup.answers() {
                if let RData::MX(m) = &rec.data {
                    let exchange = m.exchange.to_ascii();
                    match MxHost::parse(&exchange) {
                        Ok(host) => {
                            mx.push(Mx {
                                preference: m.preference,
                                exchange: host,
                            });
                            ttl = Some(ttl.map_or(rec.ttl, |t| t.min(rec.ttl)));
                        }
                        Err(e) => {
                            return Observation::failure(
                                upstream,
                                Outcome::Error,
                                format!("malformed MX exchange {exchange:?}: {e}"),
                            );
                        }
                    }
                }
            }
            let mut obs = Observation::from_records(upstream, mx, ttl);
            if obs.outcome == Outcome::NoMx {
                obs.implicit_mx = has_address(r, &fqdn).await;
            }
            obs
        }
        Err(e) => match classify_error(upstream, &e) {
            Ok((outcome, ttl)) => {
                let implicit_mx = outcome == Outcome::NoMx && has_address(r, &fqdn).await;
                Observation {
                    upstream: upstream.to_string(),
                    outcome,
                    mx: vec![],
                    ttl,
                    implicit_mx,
                    detail: None,
                }
            }
            Err(obs) => obs,
        },
    }
}

/// RFC 5321 §5.1: with no MX, the domain's own A/AAAA is the implicit MX.
async fn has_address(r: &TokioResolver, fqdn: &str) -> bool {
    for t in [RecordType::A, RecordType::AAAA] {
        if let Ok(l) = r.lookup(fqdn, t).await
            && !l.answers().is_empty()
        {
            return true;
        }
    }
    false
}

/// Asks a domain's own name servers, without recursion: it sees a change
/// before any cache does and does not depend on our recursive resolver's
/// health for the MX answer itself. Name-server sets are remembered per zone
/// for their TTL (bounded to 1 min..1 h); the MX answers never are.
struct Authoritative {
    lookup: TokioResolver,
    port: u16,
    opts: ResolveOptions,
    zones: Mutex<HashMap<String, ZoneServers>>,
}

#[derive(Clone)]
struct ZoneServers {
    resolver: TokioResolver,
    expires: Instant,
}

impl Authoritative {
    async fn observe(
        &self,
        label: &str,
        limiter: Option<&RateLimiter>,
        domain: &DomainName,
    ) -> Observation {
        let servers = match self.servers_for(label, domain).await {
            Ok(s) => s,
            Err(obs) => return obs,
        };
        if let Some(l) = limiter {
            l.acquire().await;
        }
        query_mx(&servers, label, domain).await
    }

    /// The resolver that asks the zone's name servers. NS lookups go
    /// through the lookup resolver; a domain without NS of its own is served
    /// by its zone apex, which the SOA in the negative answer names.
    async fn servers_for(
        &self,
        label: &str,
        domain: &DomainName,
    ) -> Result<TokioResolver, Observation> {
        let now = Instant::now();
        let mut name = domain.fqdn();
        if let Some(z) = self.zones.lock().expect("zone cache lock").get(&name)
            && z.expires > now
        {
            return Ok(z.resolver.clone());
        }
        for _ in 0..2 {
            match self.lookup.lookup(name.as_str(), RecordType::NS).await {
                Ok(l) => {
                    let mut ttl = u32::MAX;
                    let mut hosts = Vec::new();
                    for rec in l.answers() {
                        if let RData::NS(ns) = &rec.data {
                            hosts.push(ns.0.to_ascii());
                            ttl = ttl.min(rec.ttl);
                        }
                    }
                    if hosts.is_empty() {
                        break;
                    }
                    return self
                        .zone_servers(label, domain, &name, &hosts, ttl, now)
                        .await;
                }
                Err(NetError::Dns(DnsError::NoRecordsFound(nr)))
                    if nr.response_code == ResponseCode::NoError =>
                {
                    // Not a zone apex: ask for the apex that the SOA names.
                    match nr.soa.as_ref() {
                        Some(soa) if soa.name.to_ascii() != name => name = soa.name.to_ascii(),
                        _ => break,
                    }
                }
                Err(e) => {
                    return Err(match classify_error(label, &e) {
                        // The parent says the name does not exist: that is an answer.
                        Ok((outcome, ttl)) => Observation {
                            upstream: label.to_string(),
                            outcome,
                            mx: vec![],
                            ttl,
                            implicit_mx: false,
                            detail: Some("from the NS lookup".into()),
                        },
                        Err(obs) if obs.is_local_failure() => obs,
                        Err(mut obs) => {
                            obs.detail = Some(format!(
                                "NS lookup for {name}: {}",
                                obs.detail.unwrap_or_default()
                            ));
                            obs
                        }
                    });
                }
            }
        }
        Err(Observation::failure(
            label,
            Outcome::Error,
            format!("no name servers found for {domain}"),
        ))
    }

    /// A resolver over the addresses of the zone's name servers `hosts`,
    /// cached for the NS records' TTL (a minute to an hour).
    async fn zone_servers(
        &self,
        label: &str,
        domain: &DomainName,
        zone: &str,
        hosts: &[String],
        ttl: u32,
        now: Instant,
    ) -> Result<TokioResolver, Observation> {
        let mut addrs: Vec<SocketAddr> = Vec::new();
        for h in hosts {
            if let Ok(ips) = self.lookup.lookup_ip(h.as_str()).await {
                addrs.extend(ips.iter().map(|ip: IpAddr| SocketAddr::new(ip, self.port)));
            }
        }
        addrs.sort();
        addrs.dedup();
        if addrs.is_empty() {
            return Err(Observation::failure(
                label,
                Outcome::Error,
                format!(
                    "no address for the name servers of {zone}: {}",
                    hosts.join(", ")
                ),
            ));
        }
        let resolver = resolver_for(&addrs, false, &self.opts);
        let ttl = Duration::from_secs(u64::from(ttl).clamp(60, 3600));
        let entry = ZoneServers {
            resolver: resolver.clone(),
            expires: now + ttl,
        };
        let mut zones = self.zones.lock().expect("zone cache lock");
        if zones.len() > 100_000 {
            zones.retain(|_, z| z.expires > now);
        }
        zones.insert(domain.fqdn(), entry);
        Ok(resolver)
    }
}

/// A shared handle, so checks of many domains reuse one set of resolvers.
pub type SharedResolver = Arc<MxResolver>;

#[cfg(test)]
mod tests {
    use super::*;

    fn mx(p: u16, h: &str) -> Mx {
        Mx {
            preference: p,
            exchange: MxHost::parse(h).unwrap(),
        }
    }

    #[test]
    fn records_are_canonical_and_null_mx_is_recognised() {
        let o = Observation::from_records(
            "u",
            vec![
                mx(20, "b.example"),
                mx(10, "a.example"),
                mx(10, "a.example"),
            ],
            Some(300),
        );
        assert_eq!(o.outcome, Outcome::Records);
        assert_eq!(o.mx, vec![mx(10, "a.example"), mx(20, "b.example")]);
        let o = Observation::from_records("u", vec![mx(0, ".")], Some(300));
        assert_eq!(o.outcome, Outcome::NullMx);
        assert!(o.mx.is_empty());
        let o = Observation::from_records("u", vec![], None);
        assert_eq!(o.outcome, Outcome::NoMx);
    }

    #[test]
    fn upstreams_parse() {
        assert_eq!("system".parse::<Upstream>().unwrap(), Upstream::System);
        assert_eq!(
            "127.0.0.1".parse::<Upstream>().unwrap(),
            Upstream::Recursive("127.0.0.1:53".parse().unwrap())
        );
        assert_eq!(
            "authoritative@127.0.0.1:5353".parse::<Upstream>().unwrap(),
            Upstream::Authoritative {
                via: Some("127.0.0.1:5353".parse().unwrap())
            }
        );
        assert!("8.8.8.8:99999".parse::<Upstream>().is_err());
    }

    #[test]
    fn outcomes_round_trip() {
        for &o in Outcome::ALL {
            assert_eq!(o.as_str().parse::<Outcome>().unwrap(), o);
            assert_eq!(serde_json::to_string(&o).unwrap(), format!("\"{o}\""));
        }
    }
}
