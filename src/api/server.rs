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

/// Serves until `shutdown` resolves, then lets requests in flight finish
/// for at most [`DRAIN`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<ApiState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let limits = state.limits;
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
    tokio::pin!(shutdown);
    loop {
        // A free slot first: past the cap, connections wait in the backlog.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, say: our problem, not the client's.
                    tracing::error!("API: cannot accept a connection: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
        stream.set_read_timeout(Some(limits.idle_timeout));
        stream.set_write_timeout(Some(limits.idle_timeout));
        let io = TokioIo::new(Box::pin(stream));
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let conn = builder
            .serve_connection_with_upgrades(io, service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
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
                    humantime::format_duration(st.limits.request_timeout)
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
