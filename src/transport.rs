//! The one accept loop, shared by the S3 and the admin listener: connection limits, the
//! first-byte and header timeouts, TLS, accept errors, graceful shutdown.
//!
//! What a client that never logs in can hold is bounded here, before any request exists:
//! - **connections**: at most `max_connections` open on the listener and `max_connections_per_ip`
//!   from one address; one more is accepted and closed at once (so the kernel's backlog keeps
//!   moving and the client sees a clean close, not a hang);
//! - **time**: a connection on which no request has made progress for `header_timeout` is
//!   closed — one that never sends a complete request header, or idles between keep-alive
//!   requests, or only sends HTTP/2 PING (or SETTINGS, WINDOW_UPDATE…) frames. Progress is a
//!   request arriving, a handler finishing, or a response body frame going out; bytes alone
//!   are not (a client's PING every 20 s once held a connection, and so the per-address and
//!   per-listener bounds, forever). The TLS handshake has the same bound; a request being
//!   handled is never cut (its body has its own pace, `pace.rs`), and a response body that the
//!   client stops reading for that long is abandoned;
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

/// What the idle watchdog of one connection sees: when a request last made progress, and how
/// many of its requests are being handled.
struct Activity {
    base: tokio::time::Instant,
    /// Milliseconds after `base` of the last progress.
    last: AtomicU64,
    active: AtomicUsize,
}

impl Activity {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            base: tokio::time::Instant::now(),
            last: AtomicU64::new(0),
            active: AtomicUsize::new(0),
        })
    }

    fn touch(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.last.store(ms, Ordering::Relaxed);
    }

    /// Returns once the connection has had no request in its handler and no request progress
    /// for `timeout`.
    async fn idle(&self, timeout: Duration) {
        loop {
            let last = self.base + Duration::from_millis(self.last.load(Ordering::Relaxed));
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

/// One request in its handler; counted in [`Activity::active`] until dropped.
struct Busy(Arc<Activity>);

impl Busy {
    fn new(a: &Arc<Activity>) -> Self {
        a.touch();
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

/// A response body, noting each frame that goes out (and its end) as progress.
struct Progress<B> {
    inner: B,
    activity: Arc<Activity>,
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Progress<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if r.is_ready() {
            self.activity.touch();
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
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
    B: hyper::body::Body + Send + Unpin + 'static,
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
            let activity = counted.clone();
            async move {
                let r = fut.await;
                drop(busy);
                r.map(|resp| resp.map(|inner| Progress { inner, activity }))
            }
        });
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
