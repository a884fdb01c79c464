//! Serving one listener with HTTP/1.1 and HTTP/2 (hyper), under the limits a server facing
//! unknown clients needs ([`Limits`]): `axum::serve` runs hyper without a timer, so its
//! header-read timeout is silently off, and tonic's server has none at all.
//!
//! - At most `max_connections` connections at once; at the cap the listener stops accepting
//!   (new clients wait in the kernel's backlog) and says so in the log.
//! - HTTP/1.1: a request's headers must arrive within `header_timeout` (hyper's timer), which
//!   also closes a keep-alive connection that sends no next request within it.
//! - HTTP/2: a connection must start its first request within `header_timeout`; one that moves
//!   no byte for `idle_timeout` is closed gracefully (requests in flight finish first); pings
//!   every 30 s find dead peers.
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
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Semaphore, watch};

use crate::{Conn, Listener};

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

/// When a connection last moved a byte, and how many requests it started.
struct Activity {
    opened: Instant,
    /// Milliseconds after `opened`.
    last: AtomicU64,
    requests: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = self.opened.elapsed().as_millis() as u64;
        self.last.store(ms, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.opened.elapsed().saturating_sub(last)
    }
}

/// A connection whose reads and writes are noted in its [`Activity`].
struct Watched {
    conn: Conn,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.conn).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.conn).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.conn).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.conn.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().conn).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().conn).poll_shutdown(cx)
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

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
    S: tower::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: axum::body::HttpBody + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
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
    S: tower::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: axum::body::HttpBody + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let peer = conn.peer().clone();
    let activity = Arc::new(Activity {
        opened: Instant::now(),
        last: AtomicU64::new(0),
        requests: AtomicU64::new(0),
    });
    let counted = activity.clone();
    let with_peer = tower::util::MapRequest::new(service, move |mut req: http::Request<_>| {
        counted.requests.fetch_add(1, Ordering::Relaxed);
        req.extensions_mut().insert(peer.clone());
        req.extensions_mut().insert(ConnectInfo(peer.clone()));
        req
    });
    let io = TokioIo::new(Watched {
        conn,
        activity: activity.clone(),
    });
    let served =
        builder.serve_connection(io, hyper_util::service::TowerToHyperService::new(with_peer));
    tokio::pin!(served);
    let mut closing = false;
    let tick = limits
        .header_timeout
        .min(limits.idle_timeout)
        .max(Duration::from_millis(100))
        / 2;
    loop {
        tokio::select! {
            r = served.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            changed = stopping.changed(), if !closing => {
                let _ = changed;
                served.as_mut().graceful_shutdown();
                closing = true;
            }
            () = tokio::time::sleep(tick), if !closing => {
                let silent_start = activity.requests.load(Ordering::Relaxed) == 0
                    && activity.opened.elapsed() >= limits.header_timeout;
                if silent_start {
                    // No request started in time: nothing to finish, so no grace either.
                    tracing::debug!("connection closed: no request within the header timeout");
                    return;
                }
                if activity.idle() >= limits.idle_timeout {
                    served.as_mut().graceful_shutdown();
                    closing = true;
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
