//! SQLite: the schema, its migrations, the single writer and the queries.
//! Only this module knows SQL.
//!
//! History is kept as *runs*: per domain and upstream (and `*` for the
//! consensus), a row per stretch of identical answers with `first_seen`,
//! `last_seen` and a count of checks. A check that sees what the previous
//! one saw updates a row; the database grows with changes, not with checks.
//!
//! All writes go through one [`Writer`] task that owns the connection and
//! commits a batch of checks per transaction (WAL, `synchronous=NORMAL`:
//! a killed process loses nothing committed). Readers open their own
//! connections.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use rusqlite_migration::{M, Migrations};
use tokio::sync::{mpsc, oneshot};

use crate::bounce::{Bounce, Kind};
use crate::detect::{Change, DomainState, LiveWindow, WindowEvent};
use crate::dns::{Answer, Observation, Outcome};
use crate::domain::{DomainName, Mx, MxHost};
use crate::event::EventType;
use crate::health::OutageEvent;
use crate::summary;
use crate::verdict::Verdict;
pub use crate::window::Window;
use crate::window::{Scope, ScopeKind};
mod checks;
mod codec;
mod deliveries;
mod forwarding;
mod intake;
mod knowledge;
mod lock;
mod model;
mod passive;
mod read;
mod schema;
mod withdraw;
mod writer;

pub use deliveries::{
    AlertEvent, Consumers, Decision, Delivery, DeliveryStatus, DeliveryWrite, FORWARD_PREFIX,
    UNDO_PREFIX,
};
pub use forwarding::{Arrival, Cited, FeedRequest, Forwarded, Judged, JudgedPart, RawRequest};
pub use intake::{Intake, Judging};
pub use knowledge::{Circumstances, Knowledge};
pub use model::Model;
pub use passive::Imported;
pub use withdraw::{MAX_REASON, Withdrawal};

use checks::*;
use codec::*;
pub use lock::*;
pub use read::*;
pub use schema::open;
pub use writer::*;

/// The upstream label of consensus runs.
pub const CONSENSUS: &str = "*";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database {path}: migrating the schema: {source}")]
    Migrate {
        path: PathBuf,
        #[source]
        source: rusqlite_migration::Error,
    },
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("database: stored detector state of {domain} is unreadable: {source}")]
    State {
        domain: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("database write failed or the writer stopped (the log says why)")]
    WriterGone,
    #[error(
        "database {path} is being monitored by another mxwatch process (it holds {lock}); \
         stop that one first (`mxwatch bounces ingest` and the read commands may run alongside)"
    )]
    Busy { path: PathBuf, lock: PathBuf },
    #[error("database {path}: cannot take the lock file {lock}: {source}")]
    Lock {
        path: PathBuf,
        lock: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(s)
    }

    fn obs(up: &str, hosts: &[&str]) -> Observation {
        let mx = hosts
            .iter()
            .map(|h| Mx {
                preference: 10,
                exchange: MxHost::parse(h).unwrap(),
            })
            .collect();
        Observation::from_records(up, mx, Some(300))
    }

    fn record(at: i64, o: Observation) -> CheckRecord {
        CheckRecord {
            domain: DomainName::parse("example.com").unwrap(),
            at: t(at),
            observations: vec![o.clone()],
            consensus: Observation {
                upstream: CONSENSUS.into(),
                ..o
            },
            changes: vec![],
            window: None,
            state: None,
            held: false,
        }
    }

    #[tokio::test]
    async fn repeated_answers_extend_a_run_and_as_of_finds_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.db");
        let (w, handle) = Writer::start(&path, Judging::default()).unwrap();
        for i in 0..5 {
            w.check(record(i * 60, obs("sys", &["a.example.net"])))
                .await
                .unwrap();
        }
        w.check_queued(record(300, obs("sys", &["b.example.net"])))
            .await
            .unwrap();
        w.check_queued(record(360, obs("sys", &["b.example.net"])))
            .await
            .unwrap();
        w.flush().await.unwrap();
        drop(w);
        handle.await.unwrap();

        let s = Store::open(&path).unwrap();
        assert_eq!(
            s.counts().unwrap().0,
            4,
            "two runs each for the upstream and the consensus"
        );
        let d = DomainName::parse("example.com").unwrap();
        let h = s.history(&d, None).unwrap();
        let sys: Vec<_> = h
            .iter()
            .filter(|r| r.observation.upstream == "sys")
            .collect();
        assert_eq!(sys[0].checks, 5);
        assert_eq!(sys[0].first_seen, t(0));
        assert_eq!(sys[0].last_seen, t(240));
        assert_eq!(sys[1].observation.mx[0].exchange.as_str(), "b.example.net");

        let at = s.as_of(&d, t(250)).unwrap();
        let sys = at.iter().find(|a| a.upstream == "sys").unwrap();
        assert_eq!(sys.run.observation.mx[0].exchange.as_str(), "a.example.net");
        assert!(
            !sys.observed,
            "250 s lies between the last check of a and the first of b"
        );
        assert_eq!(sys.next_change, Some(t(300)));
        assert!(s.as_of(&d, t(-1)).unwrap().is_empty());
    }

    #[test]
    fn answers_round_trip_through_text() {
        for a in [
            Answer::NxDomain,
            Answer::NoMx,
            Answer::NullMx,
            Answer::Records(obs("x", &["a.example", "b.example"]).mx),
        ] {
            assert_eq!(parse_answer_text(&answer_text(&a)), Some(a));
        }
    }

    #[tokio::test]
    async fn an_unreadable_state_costs_one_domain_its_memory_not_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.db");
        let (w, handle) = Writer::start(&path, Judging::default()).unwrap();
        let mut good = record(0, obs("sys", &["a.example.net"]));
        good.state = Some(DomainState::default());
        w.check(good).await.unwrap();
        drop(w);
        handle.await.unwrap();
        let conn = open(&path).unwrap();
        conn.execute(
            "INSERT INTO domains(name, state) VALUES ('broken.example', '{not json')",
            [],
        )
        .unwrap();
        let states = Store::open(&path).unwrap().load_states().unwrap();
        assert_eq!(states.len(), 1);
        assert!(states.contains_key(&DomainName::parse("example.com").unwrap()));
    }
}
