//! The single writer: one task owns the connection and commits batches of
//! checks, outages, bounces and deliveries per transaction.

use super::*;

/// Everything one check wrote, sent to the writer.
#[derive(Debug, Clone)]
pub struct CheckRecord {
    pub domain: DomainName,
    pub at: DateTime<Utc>,
    pub observations: Vec<Observation>,
    /// The consensus answer, or the first failure when all failed.
    pub consensus: Observation,
    pub changes: Vec<Change>,
    pub window: Option<(WindowEvent, LiveWindow)>,
    /// The detector's new memory, when it changed in more than `last_seen`.
    pub state: Option<DomainState>,
    /// The consensus departs from the baseline and was not believed (yet):
    /// our resolver's health must vouch for it first.
    pub held: bool,
}

pub(super) enum Op {
    /// A check, and who to tell once it is committed.
    Check(Box<CheckRecord>, Option<oneshot::Sender<()>>),
    Outage(OutageEvent, DateTime<Utc>),
    /// Bounces to judge and store, and deliveries to count.
    Bounces(
        Vec<Bounce>,
        Vec<crate::bounce::Delivered>,
        Option<Box<Arrival>>,
        DateTime<Utc>,
        oneshot::Sender<Intake>,
    ),
    /// Time passes: anomalies whose bounces stopped close.
    Tick(DateTime<Utc>),
    /// The watchlist is these domains: windows of any other close.
    Watched(std::collections::HashSet<DomainName>, DateTime<Utc>),
    /// Alert delivery bookkeeping, and who to tell once it is committed.
    Delivery(DeliveryWrite, oneshot::Sender<()>),
    /// An event of its own for the outbox (the daily digest).
    Announce {
        event: EventType,
        summary: String,
        at: DateTime<Utc>,
    },
    /// A passive DNS import: sightings and the excursions among them.
    Passive(
        Vec<crate::passive::Sighting>,
        Vec<crate::passive::Excursion>,
        DateTime<Utc>,
        oneshot::Sender<super::Imported>,
    ),
    /// The auto-watched domains now: these kept (with their entries), those
    /// gone, and how far the auto-watcher has read the stored bounces.
    AutoWatched(
        Vec<(DomainName, crate::autowatch::Entry)>,
        Vec<DomainName>,
        i64,
        oneshot::Sender<()>,
    ),
    /// An operator withdraws a window (`mxwatch windows close`).
    Withdraw {
        window: i64,
        reason: String,
        now: DateTime<Utc>,
        ack: oneshot::Sender<super::Withdrawal>,
    },
    /// A reload's provider table and anomaly thresholds.
    Judging(Box<Judging>, oneshot::Sender<()>),
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
pub(super) const BATCH: usize = 2048;

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
        let mut w = WriterState {
            conn,
            domain_ids: HashMap::new(),
            heads: HashMap::new(),
            intaker,
            model,
            data_version,
        };
        let handle = tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(op) => batch.push(op),
                        Err(_) => break,
                    }
                }
                let failed = failed.clone();
                let done = tokio::task::spawn_blocking(move || {
                    let (ok, counts) = w.commit_or_recover(&mut batch, &failed);
                    (w, batch, ok, counts)
                })
                .await;
                match done {
                    Ok((state, batch, ok, counts)) => {
                        w = state;
                        answer(batch, ok, counts, &mut rx);
                    }
                    Err(e) => {
                        tracing::error!("database writer panicked: {e}");
                        return;
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
        self.feed(list, Vec::new(), now).await
    }

    /// [`Writer::bounces`], with the deliveries the same input reported
    /// (counted per domain and minute: the denominator of unknown-user
    /// rates).
    pub async fn feed(
        &self,
        list: Vec<Bounce>,
        delivered: Vec<crate::bounce::Delivered>,
        now: DateTime<Utc>,
    ) -> Result<Intake, StoreError> {
        self.arrived(list, delivered, None, now).await
    }

    /// [`Writer::feed`] for what came in over HTTP: in the same
    /// transaction, `arrival` announces the new bounces (and the request)
    /// to the forward targets.
    pub async fn arrived(
        &self,
        list: Vec<Bounce>,
        delivered: Vec<crate::bounce::Delivered>,
        arrival: Option<Arrival>,
        now: DateTime<Utc>,
    ) -> Result<Intake, StoreError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Op::Bounces(
                list,
                delivered,
                arrival.map(Box::new),
                now,
                ack,
            ))
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
        event: EventType,
        summary: String,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.tx
            .send(Op::Announce { event, summary, at })
            .await
            .map_err(|_| StoreError::WriterGone)
    }

    /// Imports passive DNS sightings and their excursions; returns what
    /// was added, once committed.
    pub async fn passive(
        &self,
        sightings: Vec<crate::passive::Sighting>,
        excursions: Vec<crate::passive::Excursion>,
        now: DateTime<Utc>,
    ) -> Result<super::Imported, StoreError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Op::Passive(sightings, excursions, now, ack))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        done.await.map_err(|_| StoreError::WriterGone)
    }

    /// Records which domains are auto-watched: `keep` upserted, `gone`
    /// removed; returns once committed.
    pub async fn auto_watched(
        &self,
        keep: Vec<(DomainName, crate::autowatch::Entry)>,
        gone: Vec<DomainName>,
        cursor: i64,
    ) -> Result<(), StoreError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Op::AutoWatched(keep, gone, cursor, ack))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        done.await.map_err(|_| StoreError::WriterGone)
    }

    /// Withdraws window `window` as false, for `reason`, at `now`
    /// (`store::withdraw`); answers once committed.
    pub async fn withdraw(
        &self,
        window: i64,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<super::Withdrawal, StoreError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Op::Withdraw {
                window,
                reason: reason.to_string(),
                now,
                ack,
            })
            .await
            .map_err(|_| StoreError::WriterGone)?;
        done.await.map_err(|_| StoreError::WriterGone)
    }

    /// Judges from now on with a reloaded watchlist's provider table and
    /// anomaly thresholds; with new thresholds the burst detector is
    /// rebuilt from the stored bounces (bursts found again are matched
    /// to their stored windows: nothing is announced twice).
    pub async fn rejudge(&self, judging: Judging) -> Result<(), StoreError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Op::Judging(Box::new(judging), ack))
            .await
            .map_err(|_| StoreError::WriterGone)?;
        done.await.map_err(|_| StoreError::WriterGone)
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
pub(super) struct Head {
    pub(super) id: i64,
    pub(super) outcome: Outcome,
    pub(super) mx: String,
}

pub(super) struct WriterState {
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

pub(super) fn data_version(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.query_row("PRAGMA data_version", [], |r| r.get(0))?)
}

/// What the ops of a committed batch came to, in their order.
#[derive(Default)]
pub(super) struct Committed {
    intakes: Vec<Intake>,
    imports: Vec<super::Imported>,
    withdrawals: Vec<super::Withdrawal>,
}

/// Tells each op's waiter how its batch went. Dropping an ack unanswered
/// tells its waiter the write failed.
fn answer(batch: Vec<Op>, ok: bool, done: Committed, rx: &mut mpsc::Receiver<Op>) {
    let mut counts = done.intakes.into_iter();
    let mut imports = done.imports.into_iter();
    let mut withdrawals = done.withdrawals.into_iter();
    for op in batch {
        match (ok, op) {
            (_, Op::Close(ack)) => {
                // Ops queued before the close still commit.
                rx.close();
                let _ = ack.send(());
            }
            (
                true,
                Op::Flush(ack)
                | Op::Judging(_, ack)
                | Op::Check(_, Some(ack))
                | Op::Delivery(_, ack)
                | Op::AutoWatched(.., ack),
            ) => {
                let _ = ack.send(());
            }
            (true, Op::Bounces(.., ack)) => {
                let _ = ack.send(counts.next().unwrap_or_default());
            }
            (true, Op::Passive(.., ack)) => {
                let _ = ack.send(imports.next().unwrap_or_default());
            }
            (true, Op::Withdraw { ack, .. }) => {
                if let Some(w) = withdrawals.next() {
                    let _ = ack.send(w);
                }
            }
            _ => {}
        }
    }
}

impl WriterState {
    /// Commits a batch, noting in `failed` why it failed if it did; a
    /// failed batch is lost, and the caches it may have touched are
    /// rebuilt. Returns whether it committed, and what each `Bounces` op
    /// came to.
    fn commit_or_recover(
        &mut self,
        batch: &mut [Op],
        failed: &std::sync::Mutex<Option<String>>,
    ) -> (bool, Committed) {
        let outcome = self.commit(batch);
        if let Ok(mut f) = failed.lock() {
            *f = outcome.as_ref().err().map(ToString::to_string);
        }
        match outcome {
            Ok(counts) => (true, counts),
            Err(e) => {
                tracing::error!(
                    "database write failed, {} operations lost: {e}",
                    batch.len()
                );
                // Forget cached heads: the rollback undid them.
                self.heads.clear();
                self.domain_ids.clear();
                // And the detector saw bounces that are not stored.
                if let Err(e) = self.intaker.warm(&mut self.conn) {
                    tracing::error!("rebuilding the anomaly detector: {e}");
                }
                (false, Committed::default())
            }
        }
    }

    /// Commits a batch; returns what each `Bounces` op came to.
    fn commit(&mut self, batch: &mut [Op]) -> Result<Committed, StoreError> {
        let mut counts = Vec::new();
        let mut imports = Vec::new();
        let mut withdrawals = Vec::new();
        for op in batch.iter() {
            if let Op::Judging(j, _) = op {
                self.rejudge(j)?;
            }
        }
        let tx = self.conn.transaction()?;
        let judging = self.intaker.judging.clone();
        for op in batch.iter() {
            match op {
                Op::Check(rec, _) => {
                    write_check(&tx, &mut self.domain_ids, &mut self.heads, rec, &judging)?
                }
                Op::Outage(ev, at) => write_outage(&tx, *ev, *at, &judging)?,
                Op::Bounces(list, delivered, arrival, now, _) => counts.push(
                    self.intaker
                        .bounces(&tx, list, delivered, arrival.as_deref(), *now)?,
                ),
                Op::Tick(now) => {
                    self.intaker.tick(&tx, *now)?;
                    super::forwarding::prune(&tx, *now)?;
                }
                Op::Watched(names, now) => close_unwatched(&tx, names, *now)?,
                Op::Delivery(w, _) => deliveries::write(&tx, w)?,
                Op::Announce { event, summary, at } => {
                    tx.prepare_cached(
                        "INSERT INTO outbox(created_at, event, domain_id, window_id, summary) VALUES (?1, ?2, NULL, NULL, ?3)",
                    )?
                    .execute(params![ms(*at), event, summary])?;
                }
                Op::Passive(sightings, excursions, now, _) => {
                    imports.push(super::passive::write_passive(
                        &tx,
                        &mut self.domain_ids,
                        sightings,
                        excursions,
                        *now,
                        &judging,
                    )?)
                }
                Op::AutoWatched(keep, gone, cursor, _) => {
                    tx.prepare_cached(
                        "INSERT INTO feed_cursors(reader, last_id) VALUES ('auto_watch', ?1) \
                         ON CONFLICT(reader) DO UPDATE SET last_id = max(last_id, ?1)",
                    )?
                    .execute([cursor])?;
                    for (d, e) in keep {
                        tx.prepare_cached(
                            "INSERT INTO auto_watched(domain, since, last_bounce) VALUES (?1, ?2, ?3) \
                             ON CONFLICT(domain) DO UPDATE SET last_bounce = ?3",
                        )?
                        .execute(params![d.as_str(), ms(e.since), ms(e.last_bounce)])?;
                    }
                    for d in gone {
                        tx.prepare_cached("DELETE FROM auto_watched WHERE domain = ?1")?
                            .execute([d.as_str()])?;
                    }
                }
                Op::Withdraw {
                    window,
                    reason,
                    now,
                    ..
                } => withdrawals.push(super::withdraw::withdraw(
                    &tx, &judging, *window, reason, *now,
                )?),
                Op::Flush(_) | Op::Close(_) | Op::Judging(..) => {}
            }
        }
        tx.commit()?;
        // The read model follows, before anyone hears of the commit. Its
        // failure does not undo the commit: it is logged, and the model
        // catches up at the next reload.
        if let Err(e) = self.follow(batch) {
            tracing::error!("updating the in-memory read model: {e}");
        }
        Ok(Committed {
            intakes: counts,
            imports,
            withdrawals,
        })
    }

    /// Adopts `j` (see [`Writer::rejudge`]).
    fn rejudge(&mut self, j: &Judging) -> Result<(), StoreError> {
        let rewarm = j.anomaly != self.intaker.judging.anomaly;
        self.intaker.judging = j.clone();
        if rewarm {
            self.intaker.warm(&mut self.conn)?;
        }
        Ok(())
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
                        m.note_check(rec.domain.as_str(), rec.at, &rec.consensus, rec.held);
                    }
                    windows |= rec.window.is_some();
                }
                Op::Outage(..) | Op::Watched(..) | Op::Passive(..) | Op::Withdraw { .. } => {
                    windows = true
                }
                Op::Tick(_) => ticked = true,
                Op::Bounces(list, _, _, now, _) => {
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

// ---------------------------------------------------------------- reading
