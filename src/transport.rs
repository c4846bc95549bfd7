//! The one accept loop, shared by the S3 and the admin listener: connection limits, the
//! first-byte and header timeouts, TLS, accept errors, graceful shutdown.
//!
//! What a client that never logs in can hold is bounded here, before any request exists:
//! - **connections**: at most `max_connections` open on the listener and `max_connections_per_ip`
//!   from one address; one more is accepted and closed at once (so the kernel's backlog keeps
//!   moving and the client sees a clean close, not a hang);
//! - **time**: a connection with no request being handled and no byte moving for
//!   `header_timeout` is closed — one that never sends a first byte, stops mid-header, or idles
//!   between keep-alive requests; the TLS handshake has the same bound, and hyper closes an
//!   HTTP/1 connection whose request header is not complete within `header_timeout` even while
//!   it drips (a request being handled is never cut: its body has its own pace, `pace.rs`);
//! - **accept errors** (`EMFILE` when descriptors run out): logged once per burst and retried
//!   after a back-off that doubles up to one second, instead of spinning on the error.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::Service as _;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Limits of one listener (`[server]`; the admin listener has the same, counted apart).
#[derive(Debug, Clone, Copy)]
pub struct ConnOptions {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// First byte, TLS handshake, a complete request header, and idle keep-alive.
    pub header_timeout: Duration,
}

impl Default for ConnOptions {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            max_connections_per_ip: 512,
            header_timeout: Duration::from_secs(30),
        }
    }
}

/// What the idle watchdog of one connection sees: when bytes last moved, and how many of its
/// requests are being handled.
struct Activity {
    base: tokio::time::Instant,
    /// Milliseconds after `base` of the last read or write.
    last_io: AtomicU64,
    active: AtomicUsize,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            base: tokio::time::Instant::now(),
            last_io: AtomicU64::new(0),
            active: AtomicUsize::new(0),
        })
    }

    fn touch(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.last_io.store(ms, Ordering::Relaxed);
    }

    /// Returns once the connection has had no request in flight and no byte moving for
    /// `timeout`: never sending a first byte, stopping mid-header, or idling between
    /// keep-alive requests.
    async fn idle(&self, timeout: Duration) {
        loop {
            let last = self.base + Duration::from_millis(self.last_io.load(Ordering::Relaxed));
            let now = tokio::time::Instant::now();
            if now >= last + timeout {
                if self.active.load(Ordering::SeqCst) == 0 {
                    return;
                }
                // A request is being handled (a long scan, a slow backend): look again later.
                tokio::time::sleep(timeout).await;
            } else {
                tokio::time::sleep_until(last + timeout).await;
            }
        }
    }
}

/// One request being handled; counted in [`Activity::active`] until dropped.
struct Busy(Arc<Activity>);

impl Busy {
    fn new(a: &Arc<Activity>) -> Self {
        a.active.fetch_add(1, Ordering::SeqCst);
        Self(a.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A connection's byte stream, noting every read and write in its [`Activity`].
struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves `listener` until `stop`, then lets open connections finish (30 s at most).
/// `service(peer)` makes the hyper service of one connection.
pub async fn serve<F, S, B>(
    name: &'static str,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    opts: ConnOptions,
    service: F,
    stop: CancellationToken,
) where
    F: Fn(SocketAddr) -> S,
    S: hyper::service::Service<http::Request<Incoming>, Response = http::Response<B>>
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut http = auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_timeout);
    let connections = TaskTracker::new();
    let open = crate::limit::Limit::new(opts.max_connections, opts.max_connections_per_ip);
    let mut backoff = Duration::ZERO;
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => { backoff = Duration::ZERO; x }
                Err(e) => {
                    // Out of descriptors (or memory): waiting is the only thing that helps.
                    if backoff.is_zero() {
                        tracing::warn!(listener = name, error = %e, "accept failed; backing off");
                    }
                    backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(backoff) => continue,
                    }
                }
            },
        };
        let Ok(slot) = open.acquire(&peer.ip()) else {
            tracing::debug!(listener = name, %peer, "connection limit reached; closed");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let activity = Activity::new();
        let svc = Arc::new(service(peer));
        let counted = activity.clone();
        let svc = hyper::service::service_fn(move |req| {
            let busy = Busy::new(&counted);
            let fut = svc.call(req);
            async move {
                let r = fut.await;
                drop(busy);
                r
            }
        });
        let stream = Watched {
            inner: stream,
            activity: activity.clone(),
        };
        let http = http.clone();
        let tls = tls.clone();
        let stop = stop.clone();
        let timeout = opts.header_timeout;
        connections.spawn(async move {
            let _slot = slot;
            let io = match tls {
                None => Either::Left(stream),
                Some(acceptor) => {
                    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => Either::Right(s),
                        Ok(Err(e)) => {
                            return tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        }
                        Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            };
            let conn = http.serve_connection_with_upgrades(TokioIo::new(io), svc);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => return,
                // Nothing in flight: closing loses nothing (a response body the client stopped
                // reading for that long is abandoned).
                () = activity.idle(timeout) => return,
                () = stop.cancelled() => {}
            }
            // Stopping: requests in flight finish, then the connection closes.
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
        });
    }
    connections.close();
    if tokio::time::timeout(Duration::from_secs(30), connections.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = name,
            "connections still open after 30 s; closing them"
        );
    }
}
