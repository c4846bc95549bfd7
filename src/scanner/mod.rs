//! The clamd client: `INSTREAM` over TCP or a unix socket, fed from a channel while the upload
//! streams to its backend, with a bounded number of scans in flight.
//!
//! Written here rather than with `clamav-client` because an upload needs what that crate lacks:
//! timeouts on every step, feeding from a channel as bytes arrive, and reading clamd's
//! `size limit exceeded` reply after it closes the stream (the crate reports an I/O error).
//!
//! Fail closed: only `stream: OK` is [`Verdict::Clean`]. A size-limit reply, a timeout, a
//! connection error or any other reply is not clean.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::task::AbortOnDropHandle;

use crate::backend::{ByteStream, Placement};

/// Where clamd listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Tcp(String),
    Unix(PathBuf),
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Tcp(a) => write!(f, "tcp://{a}"),
            Address::Unix(p) => write!(f, "unix://{}", p.display()),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ScannerConfig {
    pub address: Address,
    /// Bound on connecting, on each write, and on waiting for the verdict after the last byte.
    pub timeout: Duration,
    /// Scans in flight at once; further uploads wait (up to `timeout`) for a slot.
    pub max_concurrent: usize,
    /// clamd's `StreamMaxLength`: larger objects are never sent, they follow the bucket's
    /// `on_too_large_to_scan`.
    pub max_stream: u64,
    /// Where infected uploads are moved instead of being deleted.
    pub quarantine: Option<Placement>,
    /// How often objects stored unscanned are retried.
    pub retry_interval: Duration,
}

/// What clamd said about one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Clean,
    Infected(String),
    /// clamd refused the stream as larger than its `StreamMaxLength`.
    TooLarge,
    /// No verdict: connection, timeout or an unexpected reply (the detail is for logs only).
    Failed(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("the virus scanner is unavailable: {0}")]
    Unavailable(String),
    #[error("all {0} virus scan slots stayed busy")]
    Busy(usize),
}

trait Conn: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Conn for T {}

pub struct Scanner {
    cfg: ScannerConfig,
    permits: Arc<Semaphore>,
    /// The engine version and when it was asked, refreshed at most once a minute.
    engine: Mutex<Option<(Instant, String)>>,
}

enum Msg {
    Data(Bytes),
    End,
}

/// A scan in progress: send it the object's bytes in order, then [`Feed::finish`].
pub struct Feed {
    tx: mpsc::Sender<Msg>,
    task: AbortOnDropHandle<Verdict>,
    timeout: Duration,
}

/// The sending half of a [`Feed`], cloned into the upload's stream.
#[derive(Clone)]
pub struct FeedSender(mpsc::Sender<Msg>);

impl FeedSender {
    /// Sends one chunk; waits while clamd is behind (back-pressure). `false` once the scan
    /// has ended early (clamd closed the connection or failed).
    pub async fn send(&self, b: Bytes) -> bool {
        self.0.send(Msg::Data(b)).await.is_ok()
    }
}

/// `zCMD\0` replies end with NUL; clamd closes the connection after it.
async fn read_reply(conn: &mut (dyn Conn + '_), timeout: Duration) -> Result<String, String> {
    let mut out = Vec::new();
    let read = async {
        let mut buf = [0u8; 512];
        loop {
            let n = conn.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
            if out.contains(&0) || out.len() > 4096 {
                break;
            }
        }
        Ok::<_, String>(())
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| "no reply from clamd in time".to_string())??;
    let text = String::from_utf8_lossy(&out);
    Ok(text.trim_end_matches(['\0', '\n', ' ']).to_string())
}

/// Interprets a reply to `INSTREAM`.
pub fn parse(reply: &str) -> Verdict {
    if reply == "stream: OK" {
        return Verdict::Clean;
    }
    if let Some(sig) = reply
        .strip_prefix("stream: ")
        .and_then(|r| r.strip_suffix(" FOUND"))
    {
        return Verdict::Infected(sig.to_string());
    }
    if reply.contains("size limit exceeded") {
        return Verdict::TooLarge;
    }
    Verdict::Failed(format!("unexpected clamd reply {reply:?}"))
}

impl Scanner {
    pub fn new(cfg: ScannerConfig) -> Arc<Self> {
        Arc::new(Self {
            permits: Arc::new(Semaphore::new(cfg.max_concurrent.max(1))),
            cfg,
            engine: Mutex::new(None),
        })
    }

    pub fn config(&self) -> &ScannerConfig {
        &self.cfg
    }

    async fn connect(&self) -> Result<Box<dyn Conn>, String> {
        let connect = async {
            Ok::<Box<dyn Conn>, std::io::Error>(match &self.cfg.address {
                Address::Tcp(a) => {
                    let s = tokio::net::TcpStream::connect(a).await?;
                    // Frames are a 4-byte header then data: Nagle would hold the tails back.
                    s.set_nodelay(true)?;
                    Box::new(s)
                }
                Address::Unix(p) => Box::new(tokio::net::UnixStream::connect(p).await?),
            })
        };
        match tokio::time::timeout(self.cfg.timeout, connect).await {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(format!("connecting to clamd at {}: {e}", self.cfg.address)),
            Err(_) => Err(format!(
                "connecting to clamd at {} timed out",
                self.cfg.address
            )),
        }
    }

    /// One short command (`PING`, `VERSION`) on its own connection.
    async fn command(&self, cmd: &str) -> Result<String, String> {
        let mut c = self.connect().await?;
        let t = self.cfg.timeout;
        tokio::time::timeout(t, c.write_all(format!("z{cmd}\0").as_bytes()))
            .await
            .map_err(|_| "clamd write timed out".to_string())?
            .map_err(|e| e.to_string())?;
        read_reply(c.as_mut(), t).await
    }

    pub async fn ping(&self) -> Result<(), String> {
        match self.command("PING").await?.as_str() {
            "PONG" => Ok(()),
            r => Err(format!("unexpected clamd reply {r:?}")),
        }
    }

    /// The engine and signature version (`ClamAV 1.0.7/27000/...`), cached for a minute.
    pub async fn engine(&self) -> Option<String> {
        {
            let e = self.engine.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, v)) = &*e
                && at.elapsed() < Duration::from_secs(60)
            {
                return Some(v.clone());
            }
        }
        let v = self.command("VERSION").await.ok()?;
        *self.engine.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), v.clone()));
        Some(v)
    }

    /// Opens a scan: waits for a slot, connects and starts `INSTREAM`. Fails fast, before any
    /// byte of the upload is read, when clamd cannot be reached.
    pub async fn start(&self) -> Result<(Feed, FeedSender), ScanError> {
        let permit = tokio::time::timeout(self.cfg.timeout, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| ScanError::Busy(self.cfg.max_concurrent))?
            .map_err(|_| ScanError::Busy(self.cfg.max_concurrent))?;
        let mut conn = self.connect().await.map_err(ScanError::Unavailable)?;
        let t = self.cfg.timeout;
        match tokio::time::timeout(t, conn.write_all(b"zINSTREAM\0")).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(ScanError::Unavailable(e.to_string())),
            Err(_) => return Err(ScanError::Unavailable("clamd write timed out".into())),
        }
        // A few chunks of slack: enough to overlap clamd with the backend, small enough that
        // a slow scanner slows the client instead of filling memory.
        let (tx, rx) = mpsc::channel(4);
        let task = AbortOnDropHandle::new(tokio::spawn(instream(conn, rx, t, permit)));
        Ok((
            Feed {
                tx: tx.clone(),
                task,
                timeout: t,
            },
            FeedSender(tx),
        ))
    }

    /// Scans a whole stream (a multipart object read back, or a rescan).
    pub async fn scan(&self, mut body: ByteStream) -> Result<Verdict, ScanError> {
        let (feed, sender) = self.start().await?;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(b) => {
                    if !sender.send(b).await {
                        break;
                    }
                }
                Err(e) => return Ok(Verdict::Failed(format!("reading the object: {e}"))),
            }
        }
        drop(sender);
        Ok(feed.finish().await)
    }
}

impl Feed {
    /// Ends the stream and waits for clamd's verdict.
    pub async fn finish(self) -> Verdict {
        // When the scan already ended (clamd closed early) the message has nowhere to go; the
        // task's own verdict says why.
        let _ = self.tx.send(Msg::End).await;
        drop(self.tx);
        // clamd scans after the last byte: allow it the timeout on top of the transfer.
        match tokio::time::timeout(self.timeout * 2, self.task).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => Verdict::Failed(format!("scan task failed: {e}")),
            Err(_) => Verdict::Failed("clamd gave no verdict in time".into()),
        }
    }
}

async fn instream(
    mut conn: Box<dyn Conn>,
    mut rx: mpsc::Receiver<Msg>,
    timeout: Duration,
    _permit: OwnedSemaphorePermit,
) -> Verdict {
    let mut end = false;
    while let Some(msg) = rx.recv().await {
        let frame: &[u8] = match &msg {
            Msg::Data(b) if b.is_empty() => continue,
            Msg::Data(b) => b,
            Msg::End => {
                end = true;
                &[]
            }
        };
        let write = async {
            conn.write_all(&(frame.len() as u32).to_be_bytes()).await?;
            conn.write_all(frame).await
        };
        match tokio::time::timeout(timeout, write).await {
            Ok(Ok(())) => {}
            // clamd closes the connection after a size-limit reply; read it if it is there.
            Ok(Err(e)) => {
                return match read_reply(conn.as_mut(), Duration::from_secs(1)).await {
                    Ok(r) if !r.is_empty() => parse(&r),
                    _ => Verdict::Failed(format!("writing to clamd: {e}")),
                };
            }
            Err(_) => return Verdict::Failed("clamd stopped reading".into()),
        }
        if end {
            break;
        }
    }
    if !end {
        // The upload went away before its end: no verdict is needed.
        return Verdict::Failed("the stream ended without its last frame".into());
    }
    match read_reply(conn.as_mut(), timeout).await {
        Ok(r) => parse(&r),
        Err(e) => Verdict::Failed(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ok_is_clean() {
        assert_eq!(parse("stream: OK"), Verdict::Clean);
        assert_eq!(
            parse("stream: Eicar-Test-Signature.UNOFFICIAL FOUND"),
            Verdict::Infected("Eicar-Test-Signature.UNOFFICIAL".into())
        );
        assert_eq!(
            parse("INSTREAM size limit exceeded. ERROR"),
            Verdict::TooLarge
        );
        assert!(matches!(
            parse("COMMAND READ TIMED OUT"),
            Verdict::Failed(_)
        ));
        assert!(matches!(parse(""), Verdict::Failed(_)));
        assert!(matches!(parse("stream: OK FOUND?"), Verdict::Failed(_)));
    }
}
