//! An in-process authoritative DNS server on loopback whose zone a test
//! changes while it runs. Shared by the integration tests and the benchmark.
//!
//! Every name answers as its [`Behaviour`] says; unknown names are NXDOMAIN.
//! NS queries for a known name point at `ns.mxwatch.test`, which resolves to
//! 127.0.0.1, so the `authoritative` upstream (with `authoritative_port` set
//! to this server's port) comes back here without recursion.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Header, HeaderCounts, Metadata, ResponseCode};
use hickory_proto::rr::rdata::{A, MX, NS};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::net::{TcpListener, UdpSocket};

/// How the server answers for one name.
#[derive(Debug, Clone, PartialEq)]
pub enum Behaviour {
    /// MX records (preference, exchange) with a TTL.
    Mx(Vec<(u16, String)>, u32),
    /// RFC 7505 `0 .`.
    NullMx,
    /// The name exists with no MX; `with_a` gives it an A record.
    NoMx {
        with_a: bool,
    },
    NxDomain,
    ServFail,
    Refused,
    /// No answer at all: the client times out.
    Drop,
}

impl Behaviour {
    pub fn mx(hosts: &[(u16, &str)], ttl: u32) -> Self {
        Behaviour::Mx(
            hosts.iter().map(|(p, h)| (*p, h.to_string())).collect(),
            ttl,
        )
    }
}

pub const NS_HOST: &str = "ns.mxwatch.test.";

#[derive(Default)]
struct Zone {
    names: RwLock<HashMap<String, Behaviour>>,
    queries: AtomicU64,
}

#[derive(Clone)]
struct Handler(Arc<Zone>);

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        self.0.queries.fetch_add(1, Ordering::Relaxed);
        let fail = |request: &Request| {
            let mut m = Metadata::response_from_request(&request.metadata);
            m.response_code = ResponseCode::ServFail;
            ResponseInfo::from(Header {
                metadata: m,
                counts: HeaderCounts::default(),
            })
        };
        let Ok(info) = request.request_info() else {
            return fail(request);
        };
        let qname = info.query.name().to_string();
        let qtype = info.query.query_type();
        let owner = Name::from_str(&qname).unwrap_or_else(|_| Name::root());
        let behaviour = if key(&qname) == key(NS_HOST) {
            Some(Behaviour::NoMx { with_a: true })
        } else {
            self.0.names.read().unwrap().get(&key(&qname)).cloned()
        };
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.authoritative = true;
        let mut answers: Vec<Record> = Vec::new();
        match (&behaviour, qtype) {
            (None | Some(Behaviour::NxDomain), _) => meta.response_code = ResponseCode::NXDomain,
            (Some(Behaviour::ServFail), _) => meta.response_code = ResponseCode::ServFail,
            (Some(Behaviour::Refused), _) => meta.response_code = ResponseCode::Refused,
            (Some(Behaviour::Drop), _) => return fail(request),
            (Some(Behaviour::Mx(list, ttl)), RecordType::MX) => {
                for (p, h) in list {
                    let ex = Name::from_str(&format!("{}.", h.trim_end_matches('.'))).unwrap();
                    answers.push(Record::from_rdata(
                        owner.clone(),
                        *ttl,
                        RData::MX(MX::new(*p, ex)),
                    ));
                }
            }
            (Some(Behaviour::NullMx), RecordType::MX) => {
                answers.push(Record::from_rdata(
                    owner.clone(),
                    300,
                    RData::MX(MX::new(0, Name::root())),
                ));
            }
            (Some(Behaviour::NoMx { with_a: true }), RecordType::A) => {
                let ip = if key(&qname) == key(NS_HOST) {
                    Ipv4Addr::LOCALHOST
                } else {
                    Ipv4Addr::new(192, 0, 2, 1)
                };
                answers.push(Record::from_rdata(owner.clone(), 300, RData::A(A(ip))));
            }
            (Some(_), RecordType::NS) => {
                answers.push(Record::from_rdata(
                    owner.clone(),
                    3600,
                    RData::NS(NS(Name::from_str(NS_HOST).unwrap())),
                ));
            }
            (Some(_), _) => {} // exists, no records of that type
        }
        let builder = MessageResponseBuilder::from_message_request(request);
        let msg = builder.build(meta, answers.iter(), [].iter(), [].iter(), [].iter());
        match response.send_response(msg).await {
            Ok(info) => info,
            Err(_) => fail(request),
        }
    }
}

/// A running test server.
pub struct TestDns {
    pub addr: SocketAddr,
    zone: Arc<Zone>,
    _server: Server<Handler>,
}

impl TestDns {
    /// Binds UDP and TCP on 127.0.0.1, on one free port.
    pub async fn start() -> TestDns {
        let zone = Arc::new(Zone::default());
        let mut server = Server::new(Handler(zone.clone()));
        // The same port for UDP and TCP (truncated answers retry over TCP).
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let port = udp.local_addr().unwrap().port();
            if let Ok(tcp) = TcpListener::bind(("127.0.0.1", port)).await {
                break (udp, tcp);
            }
        };
        let addr = udp.local_addr().unwrap();
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 64);
        TestDns {
            addr,
            zone,
            _server: server,
        }
    }

    pub fn set(&self, name: &str, b: Behaviour) {
        self.zone.names.write().unwrap().insert(key(name), b);
    }

    /// Many names at once (the benchmark's 100,000).
    pub fn set_many(&self, entries: impl IntoIterator<Item = (String, Behaviour)>) {
        let mut names = self.zone.names.write().unwrap();
        for (n, b) in entries {
            names.insert(key(&n), b);
        }
    }

    pub fn queries(&self) -> u64 {
        self.zone.queries.load(Ordering::Relaxed)
    }
}
