//! The HTTP server: a connection cap, timeouts, a graceful stop.

use super::*;

/// How long requests in flight at shutdown may take to finish. Their
/// writes are committed before they are answered, so cutting a slow client
/// off loses nothing acknowledged.
pub const DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

/// At most half the process's descriptors go to API connections: the rest
/// are the reserve of DNS checks, SQLite and alert deliveries, so a full
/// API never blinds the monitor.
pub(super) fn fit_descriptors(wanted: usize) -> usize {
    let Ok((soft, _)) = rlimit::getrlimit(rlimit::Resource::NOFILE) else {
        return wanted;
    };
    let room = usize::try_from(soft / 2).unwrap_or(usize::MAX).max(1);
    if wanted > room {
        tracing::warn!(
            "API: {room} connections at once, not {wanted}: half of the open files limit \
             ({soft}) is kept for DNS and the database (raise LimitNOFILE)"
        );
        room
    } else {
        wanted
    }
}

/// A connection with no request in flight for this long is shed first
/// when the API is full (idle, or still sending its head).
const IDLE_SHED: std::time::Duration = std::time::Duration::from_secs(1);

/// A request in flight this long (a body sent a byte at a time) is shed
/// when the API is full and no idle connection is left.
const SLOW_SHED: std::time::Duration = std::time::Duration::from_secs(5);

/// What one connection is doing: requests in flight, and since when it
/// has been in its present state.
struct Activity {
    peer: std::net::IpAddr,
    in_flight: AtomicUsize,
    since: Mutex<tokio::time::Instant>,
    cancel: tokio_util::sync::CancellationToken,
}

impl Activity {
    fn touch(&self) {
        *self.since.lock().unwrap_or_else(|e| e.into_inner()) = tokio::time::Instant::now();
    }

    /// How long it has been idle (no request) or busy (a request in
    /// flight), whichever it is.
    fn state(&self) -> (bool, std::time::Duration) {
        let since = *self.since.lock().unwrap_or_else(|e| e.into_inner());
        (self.in_flight.load(Ordering::Relaxed) > 0, since.elapsed())
    }
}

/// A request in flight on a connection, until dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(a: &Arc<Activity>) -> Self {
        a.in_flight.fetch_add(1, Ordering::Relaxed);
        a.touch();
        InFlight(a.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// The connections being served, by id.
#[derive(Default)]
struct Served {
    conns: Mutex<std::collections::HashMap<u64, Arc<Activity>>>,
    next: std::sync::atomic::AtomicU64,
}

impl Served {
    fn lock(&self) -> MutexGuard<'_, std::collections::HashMap<u64, Arc<Activity>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a connection from `peer`, unless that peer holds `cap`.
    fn admit(&self, peer: std::net::IpAddr, cap: usize) -> Option<(u64, Arc<Activity>)> {
        let mut conns = self.lock();
        if conns.values().filter(|a| a.peer == peer).count() >= cap {
            return None;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let a = Arc::new(Activity {
            peer,
            in_flight: AtomicUsize::new(0),
            since: Mutex::new(tokio::time::Instant::now()),
            cancel: tokio_util::sync::CancellationToken::new(),
        });
        conns.insert(id, a.clone());
        Some((id, a))
    }

    /// The API is full: cuts the connections that do nothing useful, so
    /// that those waiting (a bounce handler's question among them) get a
    /// slot. Idle ones and those still sending their head go first; a
    /// request in flight for [`SLOW_SHED`] only when no idle one is left.
    /// How many were cut.
    fn shed(&self) -> usize {
        let conns = self.lock();
        let states: Vec<(&Arc<Activity>, bool, std::time::Duration)> = conns
            .values()
            .map(|a| {
                let (busy, for_) = a.state();
                (a, busy, for_)
            })
            .collect();
        let idle: Vec<_> = states
            .iter()
            .filter(|(_, busy, for_)| !busy && *for_ >= IDLE_SHED)
            .collect();
        let cut: Vec<_> = if idle.is_empty() {
            states
                .iter()
                .filter(|(_, busy, for_)| *busy && *for_ >= SLOW_SHED)
                .collect()
        } else {
            idle
        };
        for (a, _, _) in &cut {
            a.cancel.cancel();
        }
        cut.len()
    }
}

/// Serves until `shutdown` resolves, then lets requests in flight finish
/// for at most [`DRAIN`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ApiState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let limits = state.limits;
    let metrics = state.metrics.clone();
    let app = router(state);
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(64);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let served = Arc::new(Served::default());
    tokio::pin!(shutdown);
    loop {
        // A free slot first: past the cap, connections wait in the
        // backlog, and every second the ones doing nothing are shed.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            () = tokio::time::sleep(IDLE_SHED) => {
                metrics.shed("idle", served.shed());
                continue;
            }
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, say: our problem, not the client's.
                    tracing::error!("API: cannot accept a connection: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // One address holds at most its share of the slots.
        let Some((id, activity)) = served.admit(peer.ip(), limits.max_per_peer) else {
            metrics.shed("peer", 1);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
        stream.set_read_timeout(Some(limits.idle_timeout));
        stream.set_write_timeout(Some(limits.idle_timeout));
        let io = TokioIo::new(Box::pin(stream));
        let service = {
            let (app, activity) = (app.clone(), activity.clone());
            tower::service_fn(move |req: Request<hyper::body::Incoming>| {
                let in_flight = InFlight::begin(&activity);
                let app = app.clone();
                async move {
                    let resp = tower::ServiceExt::oneshot(app, req).await;
                    drop(in_flight);
                    resp
                }
            })
        };
        let service = hyper_util::service::TowerToHyperService::new(service);
        let conn = builder
            .serve_connection_with_upgrades(io, service)
            .into_owned();
        let conn = graceful.watch(conn);
        let served = served.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = conn => {}
                () = activity.cancel.cancelled() => {}
            }
            served.lock().remove(&id);
            drop(permit);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN) => {
            tracing::warn!("requests still in flight {DRAIN:?} after the stop: not waiting for them");
        }
    }
    Ok(())
}

/// Ends a request that is not done within its time (a body sent a byte at
/// a time): 408, and the connection is closed.
pub(super) async fn deadline(
    State(st): State<Arc<ApiState>>,
    req: Request,
    next: Next,
) -> Response {
    match tokio::time::timeout(st.limits.request_timeout, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => {
            let mut resp = ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request took longer than {}",
                    crate::event::duration(st.limits.request_timeout)
                ),
            )
            .into_response();
            resp.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            resp
        }
    }
}
