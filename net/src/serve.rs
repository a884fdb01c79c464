//! Serving one listener with HTTP/1.1 and HTTP/2 (hyper), under the limits a server facing
//! unknown clients needs ([`Limits`]): `axum::serve` runs hyper without a timer, so its
//! header-read timeout is silently off, and tonic's server has none at all.
//!
//! - At most `max_connections` connections at once; at the cap the listener stops accepting
//!   (new clients wait in the kernel's backlog) and says so in the log.
//! - HTTP/1.1: a request's headers must arrive within `header_timeout` (hyper's timer), which
//!   also closes a keep-alive connection that sends no next request within it.
//! - HTTP/2: a connection must start its first request within `header_timeout`; one with no
//!   request in flight for `idle_timeout` is closed gracefully (bytes do not count: keep-alive
//!   pings move them on every idle connection); pings every 30 s find dead peers.
//! - A connection closing gracefully (idle, or the server shutting down) has [`CLOSE_GRACE`] to
//!   finish its requests, then it is dropped: a stalled request cannot hold a slot for ever.
//! - Shutdown: stop accepting, close every connection gracefully, wait for them.
//!
//! Each request carries the connection's [`Peer`] as an extension, both as `Peer` (what tonic's
//! interceptors read) and as axum's `ConnectInfo<Peer>`.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::sync::{Semaphore, watch};

use crate::{Conn, Listener, Peer};

/// The limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once.
    pub max_connections: usize,
    /// Time a client has to send a request's headers (HTTP/1.1) or start its first request
    /// (HTTP/2).
    pub header_timeout: Duration,
    /// An HTTP/2 connection that moves no byte this long is closed.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

/// A connection's requests: how many started, how many are in flight, when the last ended.
struct Activity {
    opened: Instant,
    /// Milliseconds after `opened` when the last request ended (0: none yet).
    last_done: AtomicU64,
    started: AtomicU64,
    in_flight: AtomicU64,
}

impl Activity {
    /// How long the connection has had no request in flight (zero while one is). Bytes do not
    /// count: HTTP/2 keep-alive pings move bytes on every idle connection.
    fn idle(&self) -> Duration {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last_done.load(Ordering::Relaxed));
        self.opened.elapsed().saturating_sub(last)
    }
}

/// Ends a request in its connection's [`Activity`] when dropped (answered or abandoned).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        a.last_done
            .store(a.opened.elapsed().as_millis() as u64, Ordering::Relaxed);
        a.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The service of one connection: each request gets the peer and is counted.
#[derive(Clone)]
struct Tracked<S> {
    inner: S,
    peer: Peer,
    activity: Arc<Activity>,
}

type Boxed<T, E> = Pin<Box<dyn std::future::Future<Output = Result<T, E>> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Tracked<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Boxed<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        self.activity.started.fetch_add(1, Ordering::Relaxed);
        self.activity.in_flight.fetch_add(1, Ordering::Relaxed);
        let done = InFlight(self.activity.clone());
        req.extensions_mut().insert(self.peer.clone());
        req.extensions_mut().insert(ConnectInfo(self.peer.clone()));
        let fut = self.inner.call(req);
        Box::pin(async move {
            let r = fut.await;
            drop(done);
            r
        })
    }
}

/// How long a closing connection may take to finish its requests before it is dropped.
pub const CLOSE_GRACE: Duration = Duration::from_secs(30);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What [`serve`] serves: a cloneable tower service from hyper's requests to responses (an axum
/// router, a tonic server, with their layers).
pub trait HttpService<B>:
    tower::Service<
        http::Request<hyper::body::Incoming>,
        Response = http::Response<B>,
        Future: Send + 'static,
        Error: Into<BoxError>,
    > + Clone
    + Send
    + 'static
{
}

impl<S, B> HttpService<B> for S where
    S: tower::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<B>,
            Future: Send + 'static,
            Error: Into<BoxError>,
        > + Clone
        + Send
        + 'static
{
}

/// The response bodies [`serve`] can send.
pub trait ServedBody:
    axum::body::HttpBody<Data: Send, Error: Into<BoxError>> + Send + 'static
{
}

impl<B> ServedBody for B where
    B: axum::body::HttpBody<Data: Send, Error: Into<BoxError>> + Send + 'static
{
}

/// Serves `service` on `listener` under `limits` until `shutdown` resolves, then closes every
/// connection gracefully and returns once they are done. `http2_only` for gRPC.
pub async fn serve<S, B>(
    mut listener: Listener,
    service: S,
    limits: Limits,
    http2_only: bool,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> io::Result<()>
where
    S: HttpService<B>,
    B: ServedBody,
{
    let max = limits.max_connections.clamp(1, u32::MAX as usize);
    let permits = Arc::new(Semaphore::new(max));
    let (stop, stopping) = watch::channel(false);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    if http2_only {
        builder = builder.http2_only();
    }
    let builder = Arc::new(builder);
    let local = listener.local_addr();
    tokio::pin!(shutdown);
    loop {
        if permits.available_permits() == 0 {
            tracing::warn!(
                listener = %local,
                "{max} connections open, the most allowed: waiting for one to close before accepting"
            );
        }
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let conn = tokio::select! {
            c = listener.next() => c,
            () = &mut shutdown => break,
        };
        let (service, builder, stopping) = (service.clone(), builder.clone(), stopping.clone());
        tokio::spawn(async move {
            connection(conn, service, &builder, limits, stopping).await;
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop.send(true);
    // Every connection holds a permit until it is done.
    let _ = permits.acquire_many(max as u32).await;
    Ok(())
}

/// Serves one connection until it ends, is idle too long, or the listener shuts down.
async fn connection<S, B>(
    conn: Conn,
    service: S,
    builder: &auto::Builder<TokioExecutor>,
    limits: Limits,
    mut stopping: watch::Receiver<bool>,
) where
    S: HttpService<B>,
    B: ServedBody,
{
    let activity = Arc::new(Activity {
        opened: Instant::now(),
        last_done: AtomicU64::new(0),
        started: AtomicU64::new(0),
        in_flight: AtomicU64::new(0),
    });
    let tracked = Tracked {
        inner: service,
        peer: conn.peer().clone(),
        activity: activity.clone(),
    };
    let served = builder.serve_connection(
        TokioIo::new(conn),
        hyper_util::service::TowerToHyperService::new(tracked),
    );
    tokio::pin!(served);
    // When a graceful close began: requests in flight get `CLOSE_GRACE` to finish.
    let mut closing: Option<tokio::time::Instant> = None;
    let tick = limits
        .header_timeout
        .min(limits.idle_timeout)
        .max(Duration::from_millis(100))
        / 2;
    loop {
        let deadline = closing.map(|c| c + CLOSE_GRACE);
        tokio::select! {
            r = served.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            changed = stopping.changed(), if closing.is_none() => {
                let _ = changed;
                served.as_mut().graceful_shutdown();
                closing = Some(tokio::time::Instant::now());
            }
            () = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)),
                if deadline.is_some() => {
                tracing::debug!("connection dropped: requests still in flight after the close grace");
                return;
            }
            () = tokio::time::sleep(tick), if closing.is_none() => {
                let silent_start = activity.started.load(Ordering::Relaxed) == 0
                    && activity.opened.elapsed() >= limits.header_timeout;
                if silent_start {
                    // No request started in time: nothing to finish, so no grace either.
                    tracing::debug!("connection closed: no request within the header timeout");
                    return;
                }
                if activity.idle() >= limits.idle_timeout {
                    served.as_mut().graceful_shutdown();
                    closing = Some(tokio::time::Instant::now());
                }
            }
        }
    }
}

/// A warning when `connections` (every listener's cap, summed) could exhaust the process's open
/// file limit (`ulimit -n`, read from `/proc/self/limits`): past it, accepting fails for every
/// client rather than only the newest one waiting.
pub fn open_files_warning(connections: usize) -> Option<String> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let soft: usize = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    // Data files, the WAL, the journal and the audit log need descriptors too.
    let needed = connections.saturating_add(256);
    (needed > soft).then(|| {
        format!(
            "the listeners may hold {connections} connections but the open file limit is {soft}; \
             raise it (`ulimit -n {needed}`, `LimitNOFILE=` in a systemd unit) or lower \
             `listen.max_connections`"
        )
    })
}
