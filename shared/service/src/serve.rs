//! Serving a router until SIGTERM ([`shutdown_signal`]): a task per connection, a header-read timeout, and a connection limit
//! under which an idle connection makes room for a new one.
//!
//! `axum::serve` has neither: a client that opens connections and sends nothing keeps each
//! one (and its file descriptor) forever, and once the process runs out of descriptors
//! nothing is accepted any more — not even Cloud Run's `GET /healthz`. Here:
//! - a connection must send a request's headers within [`ServeOptions::header_read_timeout`]
//!   (also the time it may sit idle between two requests), or it is closed;
//! - at most [`ServeOptions::max_connections`] are open (by default derived from the
//!   open-file limit, so the server never spends the descriptors SQLite, files and outbound
//!   calls need). A connection arriving when all are taken closes the longest-open one that
//!   has no request in flight; when every one is busy, it is answered `503` in the JSON shape
//!   and closed.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tower::ServiceExt as _;
use tracing::{debug, info, warn};

/// How long a connection may take to send a request's headers, by default.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Most headers hyper parses in one request. Above our own limit (90, refused by the router
/// with a JSON 431), so that refusal is ours and has the JSON shape; hyper answers a request
/// with more than this with its own empty 431.
const MAX_HEADERS: usize = 1000;

/// How the server treats connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeOptions {
    /// How long a connection may take to send a request's headers, and may stay idle between
    /// requests, before it is closed. Default 10 s (`CONVEYOR_HEADER_READ_TIMEOUT`).
    pub header_read_timeout: Duration,
    /// Most connections open at once. Default: from the open-file limit, see
    /// [`connections_for`] (`CONVEYOR_MAX_CONNECTIONS`).
    pub max_connections: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            max_connections: connections_for(open_file_limit()),
        }
    }
}

/// The process's soft limit on open files, where the system says it (Linux's
/// `/proc/self/limits`); `Some(u64::MAX)` when unlimited, `None` when unknown.
pub fn open_file_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    if soft == "unlimited" {
        return Some(u64::MAX);
    }
    soft.parse().ok()
}

/// The connection limit for an open-file limit: the limit less a quarter of it (at least 64,
/// at most 1,024 descriptors) kept for files, databases and outbound calls; at least 16,
/// at most 16,384. 768 for the common 1,024; 1,024 when the limit is unknown.
pub fn connections_for(open_files: Option<u64>) -> usize {
    let Some(n) = open_files else {
        return 1024;
    };
    let reserve = (n / 4).clamp(64, 1024);
    let n = usize::try_from(n.saturating_sub(reserve)).unwrap_or(usize::MAX);
    n.clamp(16, 16_384)
}

/// One open connection, as the accept loop sees it.
struct Conn {
    /// Requests in flight on it.
    busy: Arc<AtomicUsize>,
    /// Tells it to close (to make room).
    close: Arc<Notify>,
}

/// The open connections, oldest first.
#[derive(Default)]
struct Registry {
    next: u64,
    open: BTreeMap<u64, Conn>,
}

impl Registry {
    fn insert(&mut self) -> (u64, Arc<AtomicUsize>, Arc<Notify>) {
        let id = self.next;
        self.next += 1;
        let (busy, close) = (Arc::new(AtomicUsize::new(0)), Arc::new(Notify::new()));
        self.open.insert(
            id,
            Conn {
                busy: busy.clone(),
                close: close.clone(),
            },
        );
        (id, busy, close)
    }

    /// Closes the longest-open connection with no request in flight; false when all are busy.
    fn evict_idle(&mut self) -> bool {
        let victim = self
            .open
            .iter()
            .find(|(_, c)| c.busy.load(Ordering::SeqCst) == 0)
            .map(|(id, _)| *id);
        match victim.and_then(|id| self.open.remove(&id)) {
            Some(c) => {
                c.close.notify_one();
                true
            }
            None => false,
        }
    }
}

fn lock(registry: &Mutex<Registry>) -> std::sync::MutexGuard<'_, Registry> {
    // The registry holds no invariant a panic could break half-way: keep using it.
    registry
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Serves `router` on `listener` (already bound: a test binds port 0 and passes it, so no
/// other process can take the port in between) until `shutdown`, then drains in-flight
/// requests (idle connections are closed at once). Logs `listening` with the bound address.
///
/// # Errors
/// None today: accept errors (out of descriptors, a connection reset before it was
/// accepted) are logged and accepting goes on.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    options: ServeOptions,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        info!(
            addr = %addr,
            max_connections = options.max_connections,
            header_read_timeout = ?options.header_read_timeout,
            "listening"
        );
    }
    let registry = Arc::new(Mutex::new(Registry::default()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and the like: wait a little for descriptors to be given back.
                warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let admitted = {
            let mut r = lock(&registry);
            r.open.len() < options.max_connections.max(1) || r.evict_idle()
        };
        if !admitted {
            tasks.spawn(refuse_busy(stream));
            continue;
        }
        let (id, busy, close) = lock(&registry).insert();
        tasks.spawn(connection(
            stream,
            router.clone(),
            options.header_read_timeout,
            (busy, close),
            stop_rx.clone(),
            (registry.clone(), id),
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Binds `addr` for [`serve`]. Port 0 takes a free port: [`serve`] logs which.
///
/// # Errors
/// When the address cannot be bound (the error names it).
pub async fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
}

/// Waits for SIGTERM (Cloud Run's stop signal) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// Decrements a connection's in-flight count when its request's response is made (or the
/// request is dropped).
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn connection(
    stream: TcpStream,
    router: Router,
    header_read_timeout: Duration,
    (busy, close): (Arc<AtomicUsize>, Arc<Notify>),
    mut stop: watch::Receiver<bool>,
    (registry, id): (Arc<Mutex<Registry>>, u64),
) {
    let in_flight = busy.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = InFlight(in_flight.clone());
        let response = router.clone().oneshot(req.map(Body::new));
        async move {
            let response: Result<axum::response::Response, Infallible> = response.await;
            drop(guard);
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_headers(MAX_HEADERS);
    let mut conn = std::pin::pin!(builder.serve_connection(TokioIo::new(stream), service));
    let mut draining = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    debug!(error = %e, "connection ended");
                }
                break;
            }
            () = close.notified() => {
                // Chosen while idle; a request that began since is served (the connection
                // no longer counts, for a moment).
                if busy.load(Ordering::SeqCst) == 0 {
                    debug!("closing an idle connection to make room for a new one");
                    break;
                }
            }
            _ = stop.changed(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
    lock(&registry).open.remove(&id);
}

/// Answers a connection that finds every slot busy: 503 in the JSON shape, then closes it.
async fn refuse_busy(mut stream: TcpStream) {
    const BODY: &str = r#"{"status":"unavailable","reason":"too many connections; retry later"}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    warn!("every connection is busy; refusing a new one with 503");
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_limit_leaves_descriptors_for_the_rest() {
        assert_eq!(connections_for(Some(1024)), 768);
        assert_eq!(connections_for(Some(256)), 192);
        assert_eq!(connections_for(Some(4096)), 3072);
        assert_eq!(connections_for(Some(20_000)), 16_384);
        assert_eq!(connections_for(Some(40)), 16);
        assert_eq!(connections_for(Some(u64::MAX)), 16_384);
        assert_eq!(connections_for(None), 1024);
    }

    #[test]
    fn the_open_file_limit_is_read_where_the_system_says_it() {
        if cfg!(target_os = "linux") {
            assert!(open_file_limit().is_some_and(|n| n > 0));
        }
    }
}
