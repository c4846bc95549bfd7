//! A TCP proxy between a gateway and PostgreSQL that understands just enough of the wire
//! protocol to find a `COMMIT` (a simple-query message), or the single statement that commits
//! by itself (a prepared statement marking its id in `portcullis_commits`, run by Bind +
//! Execute + Sync), and lose its answer: pass it and cut the
//! connection before the server's answer reaches the gateway (the commit applied, the gateway
//! cannot know), or cut without passing it (the commit never reached the server). It can also
//! freeze every connection, as a network partition does. This is the one failure a real
//! PostgreSQL cannot be made to produce on demand: a lost answer to a COMMIT that did apply.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The mode, applied after `skip` more COMMITs have passed; `seen` counts every COMMIT.
#[derive(Debug, Clone, Copy)]
struct Armed {
    mode: Mode,
    skip: usize,
    seen: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Pass,
    /// Every COMMIT reaches the server; its connection is cut before the answer comes back.
    CutAfterCommit,
    /// Every COMMIT is dropped with its connection: it never reaches the server.
    DropCommit,
    /// No byte moves in either direction until the mode changes.
    Freeze,
    /// As `CutAfterCommit` for one COMMIT, then `Freeze`: the gateway cannot read the outcome
    /// back either.
    CutThenFreeze,
    /// As `DropCommit` for one COMMIT, then `Freeze`.
    DropThenFreeze,
}

pub struct PgProxy {
    mode: Arc<std::sync::Mutex<Armed>>,
    cuts: Arc<AtomicUsize>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl PgProxy {
    /// A proxy in front of the server of `url`; `url` again with the proxy's address.
    pub async fn start(url: &str) -> (Self, String) {
        let rest = url.strip_prefix("postgres://").unwrap();
        let (userinfo, rest) = rest.split_once('@').unwrap();
        let (hostport, db) = rest.split_once('/').unwrap();
        let upstream: SocketAddr = hostport.parse().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(std::sync::Mutex::new(Armed {
            mode: Mode::Pass,
            skip: 0,
            seen: 0,
        }));
        let cuts = Arc::new(AtomicUsize::new(0));
        let (m, c) = (mode.clone(), cuts.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (m, c) = (m.clone(), c.clone());
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        // As the real client does: no Nagle delay on each small message.
                        let _ = (client.set_nodelay(true), server.set_nodelay(true));
                        relay(client, server, m, c).await;
                    }
                });
            }
        });
        let proxied = format!("postgres://{userinfo}@{addr}/{db}");
        (Self { mode, cuts, accept }, proxied)
    }

    pub fn set(&self, mode: Mode) {
        self.arm(mode, 0);
    }

    /// `mode` from the COMMIT after the next `skip` ones on.
    pub fn arm(&self, mode: Mode, skip: usize) {
        let mut a = self.mode.lock().unwrap();
        a.mode = mode;
        a.skip = skip;
    }

    /// COMMITs seen so far (passed or not).
    pub fn commits(&self) -> usize {
        self.mode.lock().unwrap().seen
    }

    /// COMMITs whose connection was cut so far.
    pub fn cuts(&self) -> usize {
        self.cuts.load(Ordering::SeqCst)
    }
}

async fn frozen(mode: &std::sync::Mutex<Armed>) {
    while mode.lock().unwrap().mode == Mode::Freeze {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    mode: Arc<std::sync::Mutex<Armed>>,
    cuts: Arc<AtomicUsize>,
) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    // Set when a COMMIT is being lost: nothing more goes back to the gateway.
    let hold = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (h, m) = (hold.clone(), mode.clone());
    let back = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match sr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            frozen(&m).await;
            if h.load(Ordering::SeqCst) || cw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    });
    // The startup message has no type byte: a length (itself included), then the rest.
    let mut len = [0u8; 4];
    if cr.read_exact(&mut len).await.is_err() {
        return;
    }
    let mut startup = vec![0u8; (u32::from_be_bytes(len) as usize).saturating_sub(4)];
    if cr.read_exact(&mut startup).await.is_err()
        || sw.write_all(&len).await.is_err()
        || sw.write_all(&startup).await.is_err()
    {
        return;
    }
    // Prepared statements that commit by themselves, and whether the statement bound last is
    // one of them (its Sync then ends it as a COMMIT would).
    let mut marked: std::collections::HashSet<Vec<u8>> = Default::default();
    let mut bound_marked = false;
    loop {
        let mut head = [0u8; 5];
        if cr.read_exact(&mut head).await.is_err() {
            break;
        }
        let len = u32::from_be_bytes(head[1..5].try_into().unwrap()) as usize;
        let mut body = vec![0u8; len.saturating_sub(4)];
        if cr.read_exact(&mut body).await.is_err() {
            break;
        }
        frozen(&mode).await;
        let name = |b: &[u8]| b.split(|c| *c == 0).next().unwrap_or_default().to_vec();
        match head[0] {
            // Parse: statement name, then the query.
            b'P' if String::from_utf8_lossy(&body)
                .contains("INSERT INTO portcullis_commits (id) VALUES ($5)") =>
            {
                marked.insert(name(&body));
            }
            // Bind: portal name, then statement name.
            b'B' => {
                let portal = name(&body);
                bound_marked = marked.contains(&name(&body[portal.len() + 1..]));
            }
            _ => {}
        }
        let commit = (head[0] == b'Q' && body == b"COMMIT\0") || (head[0] == b'S' && bound_marked);
        if head[0] == b'S' {
            bound_marked = false;
        }
        let now = {
            let mut a = mode.lock().unwrap();
            if !commit {
                Mode::Pass
            } else {
                a.seen += 1;
                if a.skip > 0 {
                    a.skip -= 1;
                    Mode::Pass
                } else {
                    let now = a.mode;
                    match now {
                        Mode::CutThenFreeze => {
                            a.mode = Mode::Freeze;
                            Mode::CutAfterCommit
                        }
                        Mode::DropThenFreeze => {
                            a.mode = Mode::Freeze;
                            Mode::DropCommit
                        }
                        now => now,
                    }
                }
            }
        };
        if now == Mode::CutAfterCommit {
            hold.store(true, Ordering::SeqCst);
            cuts.fetch_add(1, Ordering::SeqCst);
            let _ = sw.write_all(&head).await;
            let _ = sw.write_all(&body).await;
            // Long enough for the server to commit; its answer is dropped.
            tokio::time::sleep(Duration::from_millis(100)).await;
            break;
        }
        if now == Mode::DropCommit {
            hold.store(true, Ordering::SeqCst);
            cuts.fetch_add(1, Ordering::SeqCst);
            break;
        }
        if sw.write_all(&head).await.is_err() || sw.write_all(&body).await.is_err() {
            break;
        }
    }
    back.abort();
    // Both sockets close here: the gateway sees its connection die, the server its client go.
}
