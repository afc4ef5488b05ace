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
use crate::detect::{
    Change, ChangeKind, CloseReason, DomainState, Severity, Window, WindowEvent, WindowStatus,
};
use crate::dns::{Answer, Observation, Outcome};
use crate::domain::{DomainName, Mx, MxHost};
use crate::health::OutageEvent;
mod deliveries;
mod intake;
mod model;

pub use deliveries::{AlertEvent, Delivery, DeliveryStatus, DeliveryWrite};
pub use intake::{Circumstances, Intake, Judging};
pub use model::Model;

/// What was known about a domain at `at`, for a verdict: the windows that
/// covered that moment (its own, global ones such as resolver outages,
/// anomalies of the domain or its provider), and its consensus MX then
/// (when history has records). `remote_mta` places an unwatched domain
/// under the provider that refused. The database answers it (the CLI), and
/// so does the serving writer's in-memory read model (the API); a test
/// holds the two to the same answers.
pub trait Knowledge {
    fn circumstances(
        &self,
        domain: &str,
        at: DateTime<Utc>,
        remote_mta: Option<&str>,
        providers: &crate::provider::Providers,
    ) -> Result<Circumstances, StoreError>;
}

impl Knowledge for Store {
    fn circumstances(
        &self,
        domain: &str,
        at: DateTime<Utc>,
        remote_mta: Option<&str>,
        providers: &crate::provider::Providers,
    ) -> Result<Circumstances, StoreError> {
        intake::circumstances(&self.conn, domain, at, remote_mta, providers, None)
    }
}

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

/// The right to monitor a database: held by `mxwatch run` (daemon or
/// `--once`) for as long as it runs. The detector's memory and the cached
/// heads of the runs live in that process; a second monitor on the same
/// file would interleave its runs with the first one's. An advisory lock
/// on a file beside the database (`mxwatch.db.lock`); the kernel drops it
/// when the process dies, even by `kill -9`, so there is nothing stale to
/// clean up. A separate file, because closing any descriptor of the
/// database itself would drop SQLite's own POSIX locks.
#[derive(Debug)]
pub struct MonitorLock {
    _file: std::fs::File,
}

impl MonitorLock {
    pub fn acquire(db: &Path) -> Result<MonitorLock, StoreError> {
        let mut name = db.as_os_str().to_owned();
        name.push(".lock");
        let lock = PathBuf::from(name);
        if let Some(dir) = db.parent()
            && !dir.as_os_str().is_empty()
        {
            let _ = std::fs::create_dir_all(dir);
        }
        let io = |source| StoreError::Lock {
            path: db.to_path_buf(),
            lock: lock.clone(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => Ok(MonitorLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Busy {
                path: db.to_path_buf(),
                lock,
            }),
            Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
        }
    }
}

fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(
            r#"
        CREATE TABLE domains (
            id          INTEGER PRIMARY KEY,
            name        TEXT NOT NULL UNIQUE,
            -- the detector's memory (detect::DomainState), opaque to SQL
            state       TEXT
        );
        CREATE TABLE runs (
            id          INTEGER PRIMARY KEY,
            domain_id   INTEGER NOT NULL REFERENCES domains(id),
            upstream    TEXT NOT NULL,          -- label, or '*' for the consensus
            outcome     TEXT NOT NULL,
            mx          TEXT NOT NULL,          -- '10 a.example,20 b.example'
            ttl         INTEGER,
            implicit_mx INTEGER NOT NULL DEFAULT 0,
            detail      TEXT,
            first_seen  INTEGER NOT NULL,       -- unix milliseconds, UTC
            last_seen   INTEGER NOT NULL,
            checks      INTEGER NOT NULL
        );
        CREATE INDEX runs_by_domain ON runs(domain_id, upstream, first_seen);
        CREATE TABLE changes (
            id          INTEGER PRIMARY KEY,
            domain_id   INTEGER NOT NULL REFERENCES domains(id),
            at          INTEGER NOT NULL,
            kind        TEXT NOT NULL,
            severity    TEXT NOT NULL,
            before      TEXT,
            after       TEXT,
            detail      TEXT NOT NULL
        );
        CREATE INDEX changes_by_time ON changes(at);
        CREATE INDEX changes_by_domain ON changes(domain_id, at);
        CREATE TABLE windows (
            id           INTEGER PRIMARY KEY,
            domain_id    INTEGER REFERENCES domains(id),   -- NULL: global
            kind         TEXT NOT NULL,                    -- mx_change | resolver_outage
            start        INTEGER NOT NULL,
            detected_at  INTEGER NOT NULL,
            end          INTEGER,
            status       TEXT NOT NULL,
            close_reason TEXT,
            severity     TEXT NOT NULL,
            before       TEXT,
            after        TEXT,
            flaps        INTEGER NOT NULL DEFAULT 0,
            UNIQUE (domain_id, kind, start)
        );
        CREATE INDEX windows_by_status ON windows(status);
        CREATE TABLE outbox (
            id          INTEGER PRIMARY KEY,
            created_at  INTEGER NOT NULL,
            event       TEXT NOT NULL,   -- window_opened | window_closed | resolver_outage_started | ...
            domain_id   INTEGER REFERENCES domains(id),
            window_id   INTEGER REFERENCES windows(id),
            summary     TEXT NOT NULL
        );
        "#,
        ),
        M::up(
            r#"
        CREATE TABLE bounces (
            id            INTEGER PRIMARY KEY,
            recipient     TEXT NOT NULL,
            domain        TEXT NOT NULL,
            at            INTEGER,              -- unix milliseconds, UTC
            action        TEXT,
            status        TEXT,
            reply_code    INTEGER,
            diagnostic    TEXT,
            remote_mta    TEXT,
            reporting_mta TEXT,
            kind          TEXT NOT NULL,
            hard          INTEGER NOT NULL,
            source        TEXT NOT NULL,
            message_id    TEXT,
            ingested_at   INTEGER NOT NULL
        );
        -- The same bounce ingested twice is stored once.
        CREATE UNIQUE INDEX bounces_identity ON bounces(
            source, recipient, coalesce(at, -1), coalesce(status, ''), coalesce(reply_code, 0),
            coalesce(action, ''), coalesce(message_id, ''), coalesce(diagnostic, ''));
        CREATE INDEX bounces_by_domain ON bounces(domain, at);
        CREATE INDEX bounces_by_time ON bounces(at);
        "#,
        ),
        M::up(
            r#"
        -- Anomaly windows have no domain row: they cover a scope, a domain
        -- (watched or not) or a provider.
        ALTER TABLE windows ADD COLUMN scope_kind TEXT;   -- 'domain' | 'provider'
        ALTER TABLE windows ADD COLUMN scope TEXT;
        ALTER TABLE windows ADD COLUMN detail TEXT;
        CREATE UNIQUE INDEX windows_by_scope ON windows(kind, scope_kind, scope, start)
            WHERE scope IS NOT NULL;
        -- The verdict answered when the bounce came in (NULL for bounces
        -- stored before verdicts existed), and the provider it counts under.
        ALTER TABLE bounces ADD COLUMN verdict TEXT;
        ALTER TABLE bounces ADD COLUMN provider TEXT;
        CREATE INDEX bounces_by_verdict ON bounces(verdict, at);
        -- A suppression a later window turned over.
        CREATE TABLE reinstatements (
            id          INTEGER PRIMARY KEY,
            bounce_id   INTEGER NOT NULL UNIQUE REFERENCES bounces(id),
            window_id   INTEGER REFERENCES windows(id),
            created_at  INTEGER NOT NULL,
            verdict     TEXT NOT NULL,       -- what it is now
            reason      TEXT NOT NULL
        );
        CREATE INDEX reinstatements_by_time ON reinstatements(created_at);
        "#,
        ),
        M::up(
            r#"
        -- Alert delivery: how far each webhook target got through the outbox.
        CREATE TABLE alert_cursors (
            target      TEXT PRIMARY KEY,
            last_id     INTEGER NOT NULL      -- last outbox id taken on or skipped
        );
        CREATE TABLE alert_deliveries (
            id           INTEGER PRIMARY KEY,
            outbox_id    INTEGER NOT NULL REFERENCES outbox(id),
            target       TEXT NOT NULL,
            status       TEXT NOT NULL,       -- pending | delivered | failed
            attempts     INTEGER NOT NULL,
            next_attempt INTEGER,
            last_attempt INTEGER,
            last_error   TEXT,
            delivered_at INTEGER,
            UNIQUE (outbox_id, target)
        );
        CREATE INDEX alert_deliveries_pending ON alert_deliveries(target, status, outbox_id);
        "#,
        ),
    ])
}

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn from_ms(v: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(v).unwrap_or_default()
}

/// MX list as stored: `10 a.example,20 b.example`.
fn mx_text(mx: &[Mx]) -> String {
    mx.iter()
        .map(|m| m.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn parse_mx_text(s: &str) -> Vec<Mx> {
    s.split(',')
        .filter_map(|item| {
            let (p, h) = item.split_once(' ')?;
            Some(Mx {
                preference: p.parse().ok()?,
                exchange: MxHost::parse(h).ok()?,
            })
        })
        .collect()
}

fn answer_text(a: &Answer) -> String {
    match a {
        Answer::Records(mx) => mx_text(mx),
        other => other.outcome().as_str().to_string(),
    }
}

fn parse_answer_text(s: &str) -> Option<Answer> {
    match s.parse::<Outcome>() {
        Ok(o) => Answer::from_parts(o, vec![]),
        Err(_) => Some(Answer::Records(parse_mx_text(s))),
    }
}

/// Opens (creating if needed) and migrates a database.
pub fn open(path: &Path) -> Result<Connection, StoreError> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        let _ = std::fs::create_dir_all(dir);
    }
    create_private(path);
    let mut conn = Connection::open(path).map_err(|source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let pragma = |conn: &Connection| -> rusqlite::Result<()> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
    };
    pragma(&conn).map_err(|source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    migrations()
        .to_latest(&mut conn)
        .map_err(|source| StoreError::Migrate {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(conn)
}

/// Creates a missing database file readable by its owner only: it holds
/// recipient addresses. SQLite gives its `-wal` and `-shm` files the same
/// mode. An existing file keeps the mode its owner chose.
fn create_private(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
    }
}

/// Everything one check wrote, sent to the writer.
#[derive(Debug, Clone)]
pub struct CheckRecord {
    pub domain: DomainName,
    pub at: DateTime<Utc>,
    pub observations: Vec<Observation>,
    /// The consensus answer, or the first failure when all failed.
    pub consensus: Observation,
    pub changes: Vec<Change>,
    pub window: Option<(WindowEvent, Window)>,
    /// The detector's new memory, when it changed in more than `last_seen`.
    pub state: Option<DomainState>,
}

enum Op {
    /// A check, and who to tell once it is committed.
    Check(Box<CheckRecord>, Option<oneshot::Sender<()>>),
    Outage(OutageEvent, DateTime<Utc>),
    /// Bounces to judge and store.
    Bounces(Vec<Bounce>, DateTime<Utc>, oneshot::Sender<Intake>),
    /// Time passes: anomalies whose bounces stopped close.
    Tick(DateTime<Utc>),
    /// The watchlist is these domains: windows of any other close.
    Watched(std::collections::HashSet<DomainName>, DateTime<Utc>),
    /// Alert delivery bookkeeping, and who to tell once it is committed.
    Delivery(DeliveryWrite, oneshot::Sender<()>),
    /// An event of its own for the outbox (the daily digest).
    Announce {
        event: String,
        summary: String,
        at: DateTime<Utc>,
    },
    Flush(oneshot::Sender<()>),
    /// Commit what came before, then take no more: handles that linger
    /// (a request cut off at shutdown) get `WriterGone`.
    Close(oneshot::Sender<()>),
}

/// Handle to the single writer. Cloneable; the writer stops when every
/// handle is dropped, after committing what it was sent.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Op>,
    /// Why the last commit failed, while it is the last one.
    failing: Arc<std::sync::Mutex<Option<String>>>,
}

/// How many checks one transaction holds at most.
const BATCH: usize = 2048;

impl Writer {
    /// Opens the database and starts the writer task (inside a tokio
    /// runtime). Each batch is committed on the blocking pool; between
    /// batches the task waits asynchronously. A failed commit is logged and
    /// its waiters are told (their `check` returns an error); the writer
    /// goes on with the next batch.
    pub fn start(
        path: &Path,
        judging: Judging,
    ) -> Result<(Writer, tokio::task::JoinHandle<()>), StoreError> {
        Self::spawn(path, judging, None)
    }

    /// [`Writer::start`], also keeping an in-memory read model current for
    /// the API's verdicts (what a one-off command does not need to load).
    pub fn start_serving(
        path: &Path,
        judging: Judging,
    ) -> Result<(Writer, Arc<Model>, tokio::task::JoinHandle<()>), StoreError> {
        let model = Arc::new(Model::default());
        let (writer, handle) = Self::spawn(path, judging, Some(model.clone()))?;
        Ok((writer, model, handle))
    }

    fn spawn(
        path: &Path,
        judging: Judging,
        model: Option<Arc<Model>>,
    ) -> Result<(Writer, tokio::task::JoinHandle<()>), StoreError> {
        let mut conn = open(path)?;
        let mut intaker = intake::Intaker::new(judging);
        intaker.warm(&mut conn)?;
        if let Some(m) = &model {
            m.reload(&conn)?;
        }
        let data_version = data_version(&conn)?;
        let (tx, mut rx) = mpsc::channel::<Op>(BATCH * 4);
        let failing = Arc::new(std::sync::Mutex::new(None));
        let failed = failing.clone();
        let handle = tokio::spawn(async move {
            let mut w = WriterState {
                conn,
                domain_ids: HashMap::new(),
                heads: HashMap::new(),
                intaker,
                model,
                data_version,
            };
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(op) => batch.push(op),
                        Err(_) => break,
                    }
                }
                let failed = failed.clone();
                let (back, ok, counts) = match tokio::task::spawn_blocking(move || {
                    let outcome = w.commit(&mut batch);
                    if let Ok(mut f) = failed.lock() {
                        *f = outcome.as_ref().err().map(ToString::to_string);
                    }
                    let (ok, counts) = match outcome {
                        Ok(counts) => (true, counts),
                        Err(e) => {
                            tracing::error!(
                                "database write failed, {} operations lost: {e}",
                                batch.len()
                            );
                            // Forget cached heads: the rollback undid them.
                            w.heads.clear();
                            w.domain_ids.clear();
                            // And the detector saw bounces that are not stored.
                            if let Err(e) = w.intaker.warm(&mut w.conn) {
                                tracing::error!("rebuilding the anomaly detector: {e}");
                            }
                            (false, Vec::new())
                        }
                    };
                    (w, batch, ok, counts)
                })
                .await
                {
                    Ok((state, batch, ok, counts)) => {
                        w = state;
                        (batch, ok, counts)
                    }
                    Err(e) => {
                        tracing::error!("database writer panicked: {e}");
                        return;
                    }
                };
                let mut counts = counts.into_iter();
                for op in back {
                    // Dropping an ack unanswered tells its waiter the write failed.
                    match (ok, op) {
                        (_, Op::Close(ack)) => {
                            // Ops queued before the close still commit.
                            rx.close();
                            let _ = ack.send(());
                        }
                        (true, Op::Flush(ack) | Op::Check(_, Some(ack)) | Op::Delivery(_, ack)) => {
                            let _ = ack.send(());
                        }
                        (true, Op::Bounces(_, _, ack)) => {
                            let _ = ack.send(counts.next().unwrap_or_default());
                        }
                        _ => {}
                    }
                }
            }
        });
        Ok((Writer { tx, failing }, handle))
    }

    /// Why the last commit failed, if it did (a full disk, say): the
    /// daemon is not ready until a commit succeeds again.
    pub fn failing(&self) -> Option<String> {
        self.failing.lock().ok().and_then(|f| f.clone())
    }

    /// Writes a check and returns once it is committed. Waits while the
    /// writer is a full queue behind: the back-pressure that bounds memory.
    /// Concurrent callers share transactions (group commit).
    pub async fn check(&self, rec: CheckRecord) -> Result<(), StoreError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Op::Check(Box::new(rec), Some(ack)))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        done.await.map_err(|_| StoreError::WriterGone)
    }

    /// Queues a check without waiting for its commit.
    pub async fn check_queued(&self, rec: CheckRecord) -> Result<(), StoreError> {
        self.tx
            .send(Op::Check(Box::new(rec), None))
            .await
            .map_err(|_| StoreError::WriterGone)
    }

    pub async fn outage(&self, ev: OutageEvent, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.tx
            .send(Op::Outage(ev, at))
            .await
            .map_err(|_| StoreError::WriterGone)
    }

    /// Judges and stores bounces (those already stored are judged, not
    /// stored again); answers once committed.
    pub async fn bounces(
        &self,
        list: Vec<Bounce>,
        now: DateTime<Utc>,
    ) -> Result<Intake, StoreError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Op::Bounces(list, now, ack))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        done.await.map_err(|_| StoreError::WriterGone)
    }

    /// Closes anomaly windows whose bounces have stopped by `now`.
    pub async fn tick(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.tx
            .send(Op::Tick(now))
            .await
            .map_err(|_| StoreError::WriterGone)
    }

    /// Tells the writer the watchlist: open windows of domains not on it
    /// close (reason `unwatched`, at their last check), since nothing
    /// watches over them any more.
    pub async fn watched(
        &self,
        names: std::collections::HashSet<DomainName>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.tx
            .send(Op::Watched(names, now))
            .await
            .map_err(|_| StoreError::WriterGone)
    }

    /// Records alert delivery progress; returns once committed.
    pub async fn delivery(&self, w: DeliveryWrite) -> Result<(), StoreError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Op::Delivery(w, ack))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        done.await.map_err(|_| StoreError::WriterGone)
    }

    /// Adds an event of its own to the outbox (the daily digest).
    pub async fn announce(
        &self,
        event: &str,
        summary: String,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.tx
            .send(Op::Announce {
                event: event.to_string(),
                summary,
                at,
            })
            .await
            .map_err(|_| StoreError::WriterGone)
    }

    /// Waits until everything sent before is committed.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Op::Flush(ack))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        done.await.map_err(|_| StoreError::WriterGone)
    }

    /// Commits everything sent before and stops the writer, even while
    /// other handles still exist (their writes then fail with
    /// [`StoreError::WriterGone`]). The writer task ends once the ops
    /// already queued are committed.
    pub async fn close(&self) -> Result<(), StoreError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Op::Close(ack))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        done.await.map_err(|_| StoreError::WriterGone)
    }
}

/// The latest run per (domain, upstream), cached so that a repeated answer
/// costs one UPDATE and no SELECT.
#[derive(Debug, Clone)]
struct Head {
    id: i64,
    outcome: Outcome,
    mx: String,
}

struct WriterState {
    conn: Connection,
    domain_ids: HashMap<DomainName, i64>,
    heads: HashMap<(i64, String), Option<Head>>,
    intaker: intake::Intaker,
    /// The read model to keep current, when serving.
    model: Option<Arc<Model>>,
    /// SQLite's `data_version` when the model was last in step: it moves
    /// when another connection commits.
    data_version: i64,
}

fn data_version(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.query_row("PRAGMA data_version", [], |r| r.get(0))?)
}

impl WriterState {
    /// Commits a batch; returns what each `Bounces` op came to.
    fn commit(&mut self, batch: &mut [Op]) -> Result<Vec<Intake>, StoreError> {
        let mut counts = Vec::new();
        let tx = self.conn.transaction()?;
        let judging = self.intaker.judging.clone();
        for op in batch.iter() {
            match op {
                Op::Check(rec, _) => {
                    write_check(&tx, &mut self.domain_ids, &mut self.heads, rec, &judging)?
                }
                Op::Outage(ev, at) => write_outage(&tx, *ev, *at, &judging)?,
                Op::Bounces(list, now, _) => counts.push(self.intaker.bounces(&tx, list, *now)?),
                Op::Tick(now) => self.intaker.tick(&tx, *now)?,
                Op::Watched(names, now) => close_unwatched(&tx, names, *now)?,
                Op::Delivery(w, _) => deliveries::write(&tx, w)?,
                Op::Announce { event, summary, at } => {
                    tx.prepare_cached(
                        "INSERT INTO outbox(created_at, event, domain_id, window_id, summary) VALUES (?1, ?2, NULL, NULL, ?3)",
                    )?
                    .execute(params![ms(*at), event, summary])?;
                }
                Op::Flush(_) | Op::Close(_) => {}
            }
        }
        tx.commit()?;
        // The read model follows, before anyone hears of the commit. Its
        // failure does not undo the commit: it is logged, and the model
        // catches up at the next reload.
        if let Err(e) = self.follow(batch) {
            tracing::error!("updating the in-memory read model: {e}");
        }
        Ok(counts)
    }

    /// Brings the read model (and, after another process wrote, the anomaly
    /// detector) up to what `batch` committed.
    fn follow(&mut self, batch: &[Op]) -> Result<(), StoreError> {
        // Bounces and ticks touch windows only when an anomaly opens or closes.
        let mut windows = self.intaker.take_windows_changed();
        let mut ticked = false;
        for op in batch.iter() {
            match op {
                Op::Check(rec, _) => {
                    if let Some(m) = &self.model {
                        m.note_check(rec.domain.as_str(), rec.at, &rec.consensus);
                    }
                    windows |= rec.window.is_some();
                }
                Op::Outage(..) | Op::Watched(..) => windows = true,
                Op::Tick(_) => ticked = true,
                Op::Bounces(list, now, _) => {
                    if let (Some(m), Some(earliest)) =
                        (&self.model, list.iter().map(|b| b.at.unwrap_or(*now)).min())
                    {
                        m.note_bounces(earliest);
                    }
                }
                _ => {}
            }
        }
        if ticked {
            let v = data_version(&self.conn)?;
            if v != self.data_version {
                self.data_version = v;
                self.intaker.warm(&mut self.conn)?;
                self.intaker.take_windows_changed();
                if let Some(m) = &self.model {
                    m.reload(&self.conn)?;
                }
                windows = false;
            }
        }
        if windows && let Some(m) = &self.model {
            m.reload_windows(&self.conn)?;
        }
        Ok(())
    }
}

fn domain_id(
    tx: &rusqlite::Transaction,
    cache: &mut HashMap<DomainName, i64>,
    d: &DomainName,
) -> rusqlite::Result<i64> {
    if let Some(id) = cache.get(d) {
        return Ok(*id);
    }
    tx.prepare_cached("INSERT INTO domains(name) VALUES (?1) ON CONFLICT(name) DO NOTHING")?
        .execute([d.as_str()])?;
    let id = tx
        .prepare_cached("SELECT id FROM domains WHERE name = ?1")?
        .query_row([d.as_str()], |r| r.get(0))?;
    cache.insert(d.clone(), id);
    Ok(id)
}

fn write_run(
    tx: &rusqlite::Transaction,
    heads: &mut HashMap<(i64, String), Option<Head>>,
    domain: i64,
    upstream: &str,
    at: DateTime<Utc>,
    o: &Observation,
) -> rusqlite::Result<()> {
    let key = (domain, upstream.to_string());
    if !heads.contains_key(&key) {
        let head = tx
            .prepare_cached(
                "SELECT id, outcome, mx FROM runs WHERE domain_id = ?1 AND upstream = ?2 \
                 ORDER BY first_seen DESC, id DESC LIMIT 1",
            )?
            .query_row(params![domain, upstream], |r| {
                Ok(Head {
                    id: r.get(0)?,
                    outcome: r.get::<_, String>(1)?.parse().unwrap_or(Outcome::Error),
                    mx: r.get(2)?,
                })
            })
            .optional()?;
        heads.insert(key.clone(), head);
    }
    let mx = mx_text(&o.mx);
    let slot = heads.get_mut(&key).expect("inserted above");
    match slot {
        Some(h) if h.outcome == o.outcome && h.mx == mx => {
            tx.prepare_cached(
                "UPDATE runs SET last_seen = ?2, checks = checks + 1, ttl = max(coalesce(ttl, ?3), coalesce(?3, ttl)) \
                 WHERE id = ?1",
            )?
            .execute(params![h.id, ms(at), o.ttl])?;
        }
        _ => {
            tx.prepare_cached(
                "INSERT INTO runs(domain_id, upstream, outcome, mx, ttl, implicit_mx, detail, first_seen, last_seen, checks) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, 1)",
            )?
            .execute(params![domain, upstream, o.outcome.as_str(), mx, o.ttl, o.implicit_mx, o.detail, ms(at)])?;
            *slot = Some(Head {
                id: tx.last_insert_rowid(),
                outcome: o.outcome,
                mx,
            });
        }
    }
    Ok(())
}

fn write_check(
    tx: &rusqlite::Transaction,
    ids: &mut HashMap<DomainName, i64>,
    heads: &mut HashMap<(i64, String), Option<Head>>,
    rec: &CheckRecord,
    judging: &Judging,
) -> Result<(), StoreError> {
    let id = domain_id(tx, ids, &rec.domain)?;
    for o in &rec.observations {
        write_run(tx, heads, id, &o.upstream, rec.at, o)?;
    }
    write_run(tx, heads, id, CONSENSUS, rec.at, &rec.consensus)?;
    for c in &rec.changes {
        tx.prepare_cached(
            "INSERT INTO changes(domain_id, at, kind, severity, before, after, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            id,
            ms(c.at),
            c.kind.as_str(),
            c.severity.as_str(),
            c.before.as_ref().map(answer_text),
            c.after.as_ref().map(answer_text),
            c.detail
        ])?;
    }
    if let Some((event, w)) = &rec.window {
        tx.prepare_cached(
            "INSERT INTO windows(domain_id, kind, start, detected_at, end, status, close_reason, severity, before, after, flaps) \
             VALUES (?1, 'mx_change', ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
             ON CONFLICT(domain_id, kind, start) DO UPDATE SET end = ?4, status = ?5, close_reason = ?6, \
             severity = ?7, after = ?9, flaps = ?10",
        )?
        .execute(params![
            id,
            ms(w.start),
            ms(w.detected_at),
            w.end.map(ms),
            w.status.as_str(),
            w.close_reason.map(|r| r.as_str()),
            w.severity.as_str(),
            answer_text(&w.before),
            answer_text(&w.current),
            w.flaps
        ])?;
        let outbox = match event {
            WindowEvent::Opened => Some((
                "window_opened",
                summarise_changes(&rec.domain, &rec.changes),
            )),
            WindowEvent::Closed => Some((
                "window_closed",
                format!(
                    "{}: window since {} closed ({})",
                    rec.domain,
                    w.start.to_rfc3339(),
                    w.close_reason.map(|r| r.as_str()).unwrap_or("closed")
                ),
            )),
            WindowEvent::Updated => None,
        };
        if let Some((event, summary)) = outbox {
            let window_id: i64 = tx
                .prepare_cached("SELECT id FROM windows WHERE domain_id = ?1 AND kind = 'mx_change' AND start = ?2")?
                .query_row(params![id, ms(w.start)], |r| r.get(0))?;
            tx.prepare_cached(
                "INSERT INTO outbox(created_at, event, domain_id, window_id, summary) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![ms(rec.at), event, id, window_id, summary])?;
        }
        if *event == WindowEvent::Opened {
            // The change happened after the last check that saw the old
            // answer: suppressions since then are reconsidered.
            intake::reconsider(
                tx,
                judging,
                intake::Covered::Domain(rec.domain.as_str()),
                w.start,
                rec.at,
            )?;
        }
    }
    if let Some(state) = &rec.state {
        let json = serde_json::to_string(state).expect("detector state serialises");
        tx.prepare_cached("UPDATE domains SET state = ?2 WHERE id = ?1")?
            .execute(params![id, json])?;
    }
    Ok(())
}

/// Closes the open MX windows of domains not in `watched`, at their last
/// check, and forgets the window in their stored detector state.
fn close_unwatched(
    tx: &rusqlite::Transaction,
    watched: &std::collections::HashSet<DomainName>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    /// window id, domain id, name, stored state, start, last check
    type OpenWindow = (i64, i64, String, Option<String>, i64, Option<i64>);
    let open: Vec<OpenWindow> = tx
        .prepare_cached(
            "SELECT w.id, d.id, d.name, d.state, w.start, \
               (SELECT max(r.last_seen) FROM runs r WHERE r.domain_id = d.id AND r.upstream = '*') \
             FROM windows w JOIN domains d ON d.id = w.domain_id \
             WHERE w.kind = 'mx_change' AND w.status != 'closed'",
        )?
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })?
        .collect::<Result<_, _>>()?;
    for (window, domain_id, name, state, start, last) in open {
        if DomainName::parse(&name).is_ok_and(|d| watched.contains(&d)) {
            continue;
        }
        let end = last.unwrap_or(start).max(start);
        tx.prepare_cached(
            "UPDATE windows SET status = 'closed', close_reason = 'unwatched', \
             end = CASE WHEN end IS NULL OR end > ?2 THEN ?2 ELSE end END WHERE id = ?1",
        )?
        .execute(params![window, end])?;
        if let Some(mut s) = state.and_then(|j| serde_json::from_str::<DomainState>(&j).ok()) {
            s.window = None;
            let json = serde_json::to_string(&s).expect("detector state serialises");
            tx.prepare_cached("UPDATE domains SET state = ?2 WHERE id = ?1")?
                .execute(params![domain_id, json])?;
        }
        tx.prepare_cached(
            "INSERT INTO outbox(created_at, event, domain_id, window_id, summary) VALUES (?1, 'window_closed', ?2, ?3, ?4)",
        )?
        .execute(params![
            ms(now),
            domain_id,
            window,
            format!(
                "{name}: window since {} closed (unwatched): the domain left the watchlist",
                from_ms(start).to_rfc3339()
            )
        ])?;
    }
    Ok(())
}

fn summarise_changes(d: &DomainName, changes: &[Change]) -> String {
    let parts: Vec<String> = changes
        .iter()
        .map(|c| format!("{}: {}", c.kind, c.detail))
        .collect();
    format!("{d}: {}", parts.join("; "))
}

fn write_outage(
    tx: &rusqlite::Transaction,
    ev: OutageEvent,
    at: DateTime<Utc>,
    judging: &Judging,
) -> Result<(), StoreError> {
    let (event, start, summary) = match ev {
        OutageEvent::Started(start) => {
            tx.prepare_cached(
                "INSERT INTO windows(domain_id, kind, start, detected_at, status, severity) \
                 VALUES (NULL, 'resolver_outage', ?1, ?2, 'open', 'critical')",
            )?
            .execute(params![ms(start), ms(at)])?;
            (
                "resolver_outage_started",
                start,
                "most watched domains fail to resolve, or answer NXDOMAIN or one identical answer, at once: our own resolver is likely at fault"
                    .to_string(),
            )
        }
        OutageEvent::Ended { start, end } => {
            // Resolution works: every outage window still open ends, also
            // those an earlier process opened and could not close.
            tx.prepare_cached(
                "UPDATE windows SET end = max(start, ?1), status = 'closed', close_reason = 'reverted' \
                 WHERE domain_id IS NULL AND kind = 'resolver_outage' AND status != 'closed'",
            )?
            .execute(params![ms(end)])?;
            (
                "resolver_outage_ended",
                start,
                "resolution works again".to_string(),
            )
        }
    };
    let window_id: Option<i64> = tx
        .prepare_cached("SELECT id FROM windows WHERE domain_id IS NULL AND kind = 'resolver_outage' AND start = ?1")?
        .query_row([ms(start)], |r| r.get(0))
        .optional()?;
    tx.prepare_cached("INSERT INTO outbox(created_at, event, domain_id, window_id, summary) VALUES (?1, ?2, NULL, ?3, ?4)")?
        .execute(params![ms(at), event, window_id, summary])?;
    if let OutageEvent::Started(start) = ev {
        intake::reconsider(tx, judging, intake::Covered::All, start, at)?;
    }
    Ok(())
}

// ---------------------------------------------------------------- reading

/// A stretch of identical answers from one upstream: the first
/// observation of the stretch (TTL: the largest seen), and its span.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub domain: String,
    pub observation: Observation,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub checks: i64,
}

/// A stored change and its domain.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRow {
    pub domain: String,
    pub change: Change,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WindowRow {
    pub id: i64,
    /// `None` for a global window (resolver outage).
    pub domain: Option<String>,
    pub kind: String,
    pub start: DateTime<Utc>,
    pub detected_at: DateTime<Utc>,
    pub end: Option<DateTime<Utc>>,
    pub status: WindowStatus,
    pub close_reason: Option<CloseReason>,
    pub severity: Severity,
    pub before: Option<Answer>,
    pub after: Option<Answer>,
    pub flaps: u32,
    /// Anomaly windows: (`domain` | `provider`, its name).
    pub scope: Option<(String, String)>,
    /// What made an anomaly an anomaly.
    pub detail: Option<String>,
}

impl WindowRow {
    /// Open, or closing with its grace not yet over at `now`.
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        match self.status {
            WindowStatus::Open => true,
            WindowStatus::Closing => self.end.is_none_or(|e| e > now),
            WindowStatus::Closed => false,
        }
    }
}

/// What an upstream answered at a moment, from history.
#[derive(Debug, Clone, PartialEq)]
pub struct AsOf {
    pub upstream: String,
    /// The run in force: the latest that started at or before the moment.
    pub run: Run,
    /// Whether the moment lies within the run's observed span; if not, it
    /// lies after the run's last check and before the next observation.
    pub observed: bool,
    /// When the next run started, if any.
    pub next_change: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    pub id: i64,
    pub created_at: DateTime<Utc>,
    pub event: String,
    pub domain: Option<String>,
    pub window_id: Option<i64>,
    pub summary: String,
}

const WINDOW_COLUMNS: &str = "w.id, d.name, w.kind, w.start, w.detected_at, w.end, w.status, w.close_reason, \
     w.severity, w.before, w.after, w.flaps, w.scope_kind, w.scope, w.detail";

fn window_from_row(r: &rusqlite::Row) -> rusqlite::Result<WindowRow> {
    Ok(WindowRow {
        id: r.get(0)?,
        domain: r.get(1)?,
        kind: r.get(2)?,
        start: from_ms(r.get(3)?),
        detected_at: from_ms(r.get(4)?),
        end: r.get::<_, Option<i64>>(5)?.map(from_ms),
        status: WindowStatus::parse(&r.get::<_, String>(6)?).unwrap_or(WindowStatus::Open),
        close_reason: r
            .get::<_, Option<String>>(7)?
            .and_then(|s| CloseReason::parse(&s)),
        severity: Severity::parse(&r.get::<_, String>(8)?).unwrap_or(Severity::Info),
        before: r
            .get::<_, Option<String>>(9)?
            .and_then(|s| parse_answer_text(&s)),
        after: r
            .get::<_, Option<String>>(10)?
            .and_then(|s| parse_answer_text(&s)),
        flaps: r.get(11)?,
        scope: match (
            r.get::<_, Option<String>>(12)?,
            r.get::<_, Option<String>>(13)?,
        ) {
            (Some(kind), Some(name)) => Some((kind, name)),
            _ => None,
        },
        detail: r.get(14)?,
    })
}

/// A stored bounce with its row id and the verdict it holds now.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredBounce {
    pub id: i64,
    /// `None` for bounces stored before verdicts were kept.
    pub verdict: Option<String>,
    pub bounce: Bounce,
}

/// A suppression a later window turned over.
#[derive(Debug, Clone, PartialEq)]
pub struct Reinstatement {
    pub id: i64,
    pub created_at: DateTime<Utc>,
    /// The verdict the bounce holds now (it was `suppress`).
    pub verdict: String,
    pub reason: String,
    pub bounce_id: i64,
    pub bounce: Bounce,
    pub window: Option<ReinstatementWindow>,
}

/// The window behind a reinstatement.
#[derive(Debug, Clone, PartialEq)]
pub struct ReinstatementWindow {
    pub id: i64,
    pub kind: String,
    /// `domain`, `provider` or `global`.
    pub scope: String,
    /// The domain or provider; `None` for global windows.
    pub name: Option<String>,
    pub start: DateTime<Utc>,
    pub end: Option<DateTime<Utc>>,
}

/// What the detectors of an earlier process left in the store.
#[derive(Debug, Clone, Default)]
pub struct Memory {
    pub states: HashMap<DomainName, DomainState>,
    /// The start of the earliest resolver outage window still open.
    pub outage_since: Option<DateTime<Utc>>,
}

/// Read access. Open one per thread or task that reads.
pub struct Store {
    conn: Connection,
}

fn run_from_row(r: &rusqlite::Row) -> rusqlite::Result<Run> {
    Ok(Run {
        domain: r.get(0)?,
        observation: Observation {
            upstream: r.get(1)?,
            outcome: r.get::<_, String>(2)?.parse().unwrap_or(Outcome::Error),
            mx: parse_mx_text(&r.get::<_, String>(3)?),
            ttl: r.get(4)?,
            implicit_mx: r.get(5)?,
            detail: r.get(6)?,
        },
        first_seen: from_ms(r.get(7)?),
        last_seen: from_ms(r.get(8)?),
        checks: r.get(9)?,
    })
}

const RUN_COLUMNS: &str = "d.name, r.upstream, r.outcome, r.mx, r.ttl, r.implicit_mx, r.detail, r.first_seen, r.last_seen, r.checks";

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Ok(Store { conn: open(path)? })
    }

    /// What a monitor restores at start: every domain's detector state, and
    /// the start of a resolver outage left open.
    pub fn memory(&self) -> Result<Memory, StoreError> {
        let outage_since: Option<i64> = self.conn.query_row(
            "SELECT min(start) FROM windows \
             WHERE domain_id IS NULL AND kind = 'resolver_outage' AND status != 'closed'",
            [],
            |r| r.get(0),
        )?;
        Ok(Memory {
            states: self.load_states()?,
            outage_since: outage_since.map(from_ms),
        })
    }

    /// The detector state of every domain that has one.
    pub fn load_states(&self) -> Result<HashMap<DomainName, DomainState>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT d.name, d.state, \
               (SELECT max(r.last_seen) FROM runs r WHERE r.domain_id = d.id AND r.upstream = '*') \
             FROM domains d WHERE d.state IS NOT NULL",
        )?;
        let mut out = HashMap::new();
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<i64>>(2)?,
            ))
        })?;
        for row in rows {
            let (name, json, last) = row?;
            let Ok(domain) = DomainName::parse(&name) else {
                continue;
            };
            // One unreadable state costs that domain its memory (it starts
            // over from its next answer), not the whole start.
            let mut state: DomainState = match serde_json::from_str(&json) {
                Ok(s) => s,
                Err(source) => {
                    let e = StoreError::State {
                        domain: name.clone(),
                        source,
                    };
                    tracing::warn!("{e}; starting that domain afresh");
                    continue;
                }
            };
            // `last_seen` is not rewritten on every check; the consensus
            // runs know it.
            if let (Some(b), Some(last)) = (state.baseline.as_mut(), last)
                && state.window.is_none()
            {
                b.last_seen = b.last_seen.max(from_ms(last));
            }
            out.insert(domain, state);
        }
        Ok(out)
    }

    /// Runs of one domain, oldest first; `since` keeps runs seen after it.
    pub fn history(
        &self,
        domain: &DomainName,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<Run>, StoreError> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs r JOIN domains d ON d.id = r.domain_id \
             WHERE d.name = ?1 AND r.last_seen >= ?2 ORDER BY r.first_seen, r.id"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(
            params![domain.as_str(), since.map(ms).unwrap_or(i64::MIN)],
            run_from_row,
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// What each upstream (and the consensus, `*`) answered at `at`.
    pub fn as_of(&self, domain: &DomainName, at: DateTime<Utc>) -> Result<Vec<AsOf>, StoreError> {
        let sql = format!(
            "SELECT {RUN_COLUMNS}, \
               (SELECT min(n.first_seen) FROM runs n WHERE n.domain_id = r.domain_id AND n.upstream = r.upstream \
                  AND n.first_seen > r.first_seen) \
             FROM runs r JOIN domains d ON d.id = r.domain_id \
             WHERE d.name = ?1 AND r.first_seen <= ?2 \
               AND r.first_seen = (SELECT max(m.first_seen) FROM runs m WHERE m.domain_id = r.domain_id \
                                   AND m.upstream = r.upstream AND m.first_seen <= ?2) \
             ORDER BY r.upstream"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(params![domain.as_str(), ms(at)], |r| {
            let run = run_from_row(r)?;
            let next: Option<i64> = r.get(10)?;
            Ok(AsOf {
                upstream: run.observation.upstream.clone(),
                observed: at <= run.last_seen,
                next_change: next.map(from_ms),
                run,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn changes(
        &self,
        since: Option<DateTime<Utc>>,
        domain: Option<&DomainName>,
    ) -> Result<Vec<ChangeRow>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT d.name, c.at, c.kind, c.severity, c.before, c.after, c.detail \
             FROM changes c JOIN domains d ON d.id = c.domain_id \
             WHERE c.at >= ?1 AND (?2 IS NULL OR d.name = ?2) ORDER BY c.at, c.id",
        )?;
        let rows = stmt.query_map(
            params![
                since.map(ms).unwrap_or(i64::MIN),
                domain.map(|d| d.as_str())
            ],
            |r| {
                Ok(ChangeRow {
                    domain: r.get(0)?,
                    change: Change {
                        at: from_ms(r.get(1)?),
                        kind: ChangeKind::parse(&r.get::<_, String>(2)?)
                            .unwrap_or(ChangeKind::HostsAdded),
                        severity: Severity::parse(&r.get::<_, String>(3)?)
                            .unwrap_or(Severity::Info),
                        before: r
                            .get::<_, Option<String>>(4)?
                            .and_then(|s| parse_answer_text(&s)),
                        after: r
                            .get::<_, Option<String>>(5)?
                            .and_then(|s| parse_answer_text(&s)),
                        detail: r.get(6)?,
                    },
                })
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Windows, newest first; with `active_at`, only those active then.
    pub fn windows(&self, active_at: Option<DateTime<Utc>>) -> Result<Vec<WindowRow>, StoreError> {
        let sql = format!(
            "SELECT {WINDOW_COLUMNS} FROM windows w LEFT JOIN domains d ON d.id = w.domain_id \
             WHERE ?1 IS NULL OR w.status != 'closed' ORDER BY w.start DESC, w.id DESC"
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(params![active_at.map(ms)], window_from_row)?;
        let all: Vec<WindowRow> = rows.collect::<Result<_, _>>()?;
        Ok(match active_at {
            Some(now) => all.into_iter().filter(|w| w.is_active(now)).collect(),
            None => all,
        })
    }

    /// One window by id.
    pub fn window(&self, id: i64) -> Result<Option<WindowRow>, StoreError> {
        let sql = format!(
            "SELECT {WINDOW_COLUMNS} FROM windows w LEFT JOIN domains d ON d.id = w.domain_id WHERE w.id = ?1"
        );
        Ok(self
            .conn
            .prepare_cached(&sql)?
            .query_row([id], window_from_row)
            .optional()?)
    }

    /// The whole outbox, oldest first.
    pub fn outbox(&self) -> Result<Vec<OutboxRow>, StoreError> {
        self.outbox_after(0, None)
    }

    /// Outbox rows after id `after`, oldest first, at most `limit`.
    pub fn outbox_after(
        &self,
        after: i64,
        limit: Option<usize>,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT o.id, o.created_at, o.event, d.name, o.window_id, o.summary \
             FROM outbox o LEFT JOIN domains d ON d.id = o.domain_id WHERE o.id > ?1 ORDER BY o.id LIMIT ?2",
        )?;
        let limit = limit.map_or(-1, |n| n as i64); // SQLite: -1 is no limit
        let rows = stmt.query_map(params![after, limit], |r| {
            Ok(OutboxRow {
                id: r.get(0)?,
                created_at: from_ms(r.get(1)?),
                event: r.get(2)?,
                domain: r.get(3)?,
                window_id: r.get(4)?,
                summary: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Stored bounces, oldest first, filtered by domain, time and kind.
    pub fn bounces(
        &self,
        domain: Option<&str>,
        since: Option<DateTime<Utc>>,
        kind: Option<Kind>,
    ) -> Result<Vec<Bounce>, StoreError> {
        Ok(self
            .stored_bounces(domain, since, kind)?
            .into_iter()
            .map(|s| s.bounce)
            .collect())
    }

    /// Stored bounces with their ids and verdicts, oldest first.
    pub fn stored_bounces(
        &self,
        domain: Option<&str>,
        since: Option<DateTime<Utc>>,
        kind: Option<Kind>,
    ) -> Result<Vec<StoredBounce>, StoreError> {
        let sql = format!(
            "SELECT b.id, b.verdict, {} FROM bounces b \
             WHERE (?1 IS NULL OR b.domain = ?1) AND (?2 IS NULL OR b.at >= ?2) AND (?3 IS NULL OR b.kind = ?3) \
             ORDER BY b.at, b.id",
            intake::BOUNCE_COLUMNS
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(
            params![domain, since.map(ms), kind.map(|k| k.as_str())],
            |r| {
                Ok(StoredBounce {
                    id: r.get(0)?,
                    verdict: r.get(1)?,
                    bounce: intake::bounce_from_row(r, 2)?,
                })
            },
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Reinstatements recorded at or after `since`, oldest first.
    pub fn reinstatements(
        &self,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<Reinstatement>, StoreError> {
        let sql = format!(
            "SELECT i.id, i.created_at, i.verdict, i.reason, i.bounce_id, i.window_id, w.kind, \
               coalesce(w.scope_kind, CASE WHEN w.domain_id IS NULL THEN 'global' ELSE 'domain' END), \
               coalesce(w.scope, d.name), w.start, w.end, {} \
             FROM reinstatements i JOIN bounces b ON b.id = i.bounce_id \
               LEFT JOIN windows w ON w.id = i.window_id LEFT JOIN domains d ON d.id = w.domain_id \
             WHERE i.created_at >= ?1 ORDER BY i.created_at, i.id",
            intake::BOUNCE_COLUMNS
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map([since.map(ms).unwrap_or(i64::MIN)], |r| {
            let window_id: Option<i64> = r.get(5)?;
            let window = match window_id {
                Some(id) => Some(ReinstatementWindow {
                    id,
                    kind: r.get::<_, Option<String>>(6)?.unwrap_or_default(),
                    scope: r.get::<_, Option<String>>(7)?.unwrap_or_default(),
                    name: r.get(8)?,
                    start: from_ms(r.get::<_, Option<i64>>(9)?.unwrap_or(0)),
                    end: r.get::<_, Option<i64>>(10)?.map(from_ms),
                }),
                None => None,
            };
            Ok(Reinstatement {
                id: r.get(0)?,
                created_at: from_ms(r.get(1)?),
                verdict: r.get(2)?,
                reason: r.get(3)?,
                bounce_id: r.get(4)?,
                window,
                bounce: intake::bounce_from_row(r, 11)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Runs `f` inside one read transaction: its queries see one snapshot,
    /// and take SQLite's file locks once rather than once per query.
    pub fn snapshot<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, E>,
    ) -> Result<T, E> {
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(|e| E::from(StoreError::Sql(e)))?;
        let out = f(self);
        // A read transaction has nothing to keep: ending it cannot lose data.
        let _ = tx.finish();
        out
    }

    /// How many bounces are stored.
    pub fn bounce_count(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM bounces", [], |r| r.get(0))?)
    }

    /// Whether the database answers a read of its tables: one indexed
    /// lookup, cheap enough for a readiness probe every few seconds.
    pub fn ping(&self) -> Result<(), StoreError> {
        self.conn
            .query_row("SELECT max(id) FROM domains", [], |_| Ok(()))?;
        Ok(())
    }

    /// Row counts of the history tables: (runs, changes, windows).
    pub fn counts(&self) -> Result<(i64, i64, i64), StoreError> {
        Ok(self.conn.query_row(
            "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM changes), (SELECT count(*) FROM windows)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?)
    }

    /// Folds the WAL into the main file (for size measurements and backups).
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }
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
