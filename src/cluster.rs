//! This process's membership of the nodes that share one metadata store: its registration and
//! heartbeat, the reaping of dead nodes, and the worker leases (ARCHITECTURE.md "Several
//! nodes"). The records themselves, and the rules of every change to them, are `meta::coord`'s.
//!
//! A node is one *instance* (`<node_id>/<ULID>`, new at every start): a restarted node never
//! inherits what its previous life reserved or leased. A node that misses heartbeats for
//! `node_timeout` is reaped by the others; if it was only paused, it finds its record gone,
//! is fenced (what it had reserved can no longer commit) and joins again as a new instance.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::meta::coord::{Coord, Lease, NodeRecord, worker_lease};
use crate::meta::{Change, Commit, Meta, MetaError, MetaResult, now_ms};
use serde::Serialize;

/// `[cluster]`: the node's name and its timings.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Default: the host name and a random suffix.
    pub node_id: String,
    pub heartbeat: Duration,
    /// A node unheard of for this long is dead: its reservations and leases are freed.
    pub node_timeout: Duration,
    /// How long a worker's lease lasts beyond its pass interval.
    pub lease: Duration,
    /// Largest write admitted without the quota gate (see `meta::coord::Coord::Reserve`).
    pub fast_reserve_bytes: u64,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            node_id: default_node_id(),
            heartbeat: Duration::from_secs(1),
            node_timeout: Duration::from_secs(10),
            lease: Duration::from_secs(30),
            fast_reserve_bytes: 16 << 20,
        }
    }
}

/// This machine's host name (`node` if it has none).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into())
}

/// The host name and six random characters.
pub fn default_node_id() -> String {
    let host = host_name();
    let suffix: String = ulid::Ulid::new().to_string()[20..].to_lowercase();
    format!("{host}-{suffix}")
}

pub struct Node {
    meta: Arc<Meta>,
    /// The store over the control connections: heartbeats, reaping and worker leases never
    /// wait behind requests for a pooled connection (or a saturated pool would get this node
    /// reaped and its writes fenced).
    control: Arc<Meta>,
    opts: ClusterOptions,
    record: Mutex<NodeRecord>,
    /// When the current instance registered, and when a heartbeat last succeeded.
    joined: Mutex<(Instant, Instant)>,
    /// When the first record of another node expires (ms since the epoch, `i64::MAX` when none
    /// is known): the heartbeat wakes then to reap it, so a dead node's room is free within
    /// `node_timeout` of its last heartbeat, not up to one heartbeat later.
    next_expiry: AtomicI64,
}

/// The cluster as one node sees it, for `/health` and the admin API.
#[derive(Debug, Serialize)]
pub struct ClusterView {
    pub this: String,
    /// Nodes heard from within the node timeout.
    pub nodes: Vec<NodeView>,
    /// Leases held now (expired ones left out).
    pub leases: Vec<LeaseView>,
}

#[derive(Debug, Serialize)]
pub struct NodeView {
    pub instance: String,
    pub node_id: String,
    pub s3_addr: String,
    pub started_ms: i64,
    pub seen_ms_ago: i64,
}

#[derive(Debug, Serialize)]
pub struct LeaseView {
    pub name: String,
    pub holder: String,
    pub expires_in_ms: i64,
}

impl Node {
    /// Registers this process as a new instance of `opts.node_id`.
    pub async fn join(
        meta: Arc<Meta>,
        opts: ClusterOptions,
        s3_addr: String,
        local_data: Option<String>,
    ) -> MetaResult<Arc<Self>> {
        let now = now_ms();
        let record = NodeRecord {
            instance: new_instance(&opts.node_id),
            node_id: opts.node_id.clone(),
            started_ms: now,
            seen_ms: now,
            expires_ms: now + opts.node_timeout.as_millis() as i64,
            s3_addr,
            local_data,
            version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let control = meta.control();
        control
            .commit(&Commit::new(Change::Coord(Coord::Heartbeat {
                node: record.clone(),
                renew: false,
            })))
            .await?;
        tracing::info!(instance = %record.instance, "joined the cluster");
        Ok(Arc::new(Self {
            meta,
            control,
            opts,
            record: Mutex::new(record),
            joined: Mutex::new((Instant::now(), Instant::now())),
            next_expiry: AtomicI64::new(i64::MAX),
        }))
    }

    pub fn options(&self) -> &ClusterOptions {
        &self.opts
    }

    /// This process's current instance.
    pub fn instance(&self) -> String {
        self.record
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .instance
            .clone()
    }

    /// The bound of a fast (ungated) quota admission, or `None` while this node may not admit
    /// fast: in its first two heartbeats (until every other node counts it), and whenever its
    /// own heartbeat is late (it may be about to be reaped).
    pub fn fast_reserve_bytes(&self) -> Option<u64> {
        let (joined, beat) = *self.joined.lock().unwrap_or_else(|e| e.into_inner());
        let hb = self.opts.heartbeat;
        (joined.elapsed() >= 2 * hb && beat.elapsed() <= 2 * hb)
            .then_some(self.opts.fast_reserve_bytes)
    }

    /// One heartbeat: renews this node's record (joining again if it was reaped), then reaps
    /// the nodes whose records expired. After a failed one, the next waits the whole interval.
    pub async fn beat(&self) -> MetaResult<usize> {
        let beat = self.renew_and_reap().await;
        if beat.is_err() {
            self.next_expiry.store(i64::MAX, Ordering::Relaxed);
        }
        beat
    }

    async fn renew_and_reap(&self) -> MetaResult<usize> {
        let now = now_ms();
        let mut rec = self
            .record
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        rec.seen_ms = now;
        rec.expires_ms = now + self.opts.node_timeout.as_millis() as i64;
        let renewed = self
            .control
            .commit(&Commit::new(Change::Coord(Coord::Heartbeat {
                node: rec.clone(),
                renew: true,
            })))
            .await;
        match renewed {
            Ok(()) => {
                self.joined.lock().unwrap_or_else(|e| e.into_inner()).1 = Instant::now();
            }
            Err(MetaError::Fenced) => {
                let old = rec.instance.clone();
                rec.instance = new_instance(&self.opts.node_id);
                rec.started_ms = now;
                self.control
                    .commit(&Commit::new(Change::Coord(Coord::Heartbeat {
                        node: rec.clone(),
                        renew: false,
                    })))
                    .await?;
                tracing::error!(%old, new = %rec.instance, "this node was declared dead by the others (missed heartbeats); its writes in flight fail, and it joined again");
                *self.joined.lock().unwrap_or_else(|e| e.into_inner()) =
                    (Instant::now(), Instant::now());
            }
            Err(e) => return Err(e),
        }
        let mine = rec.instance.clone();
        *self.record.lock().unwrap_or_else(|e| e.into_inner()) = rec;
        let mut reaped = 0;
        let mut next = i64::MAX;
        let now = now_ms();
        for n in self.control.nodes().await? {
            if n.instance != mine && n.expires_ms >= now {
                next = next.min(n.expires_ms);
            }
            if n.expires_ms < now {
                tracing::warn!(instance = %n.instance, "reaping a node that stopped sending heartbeats; its reservations are freed");
                self.control
                    .commit(&Commit::new(Change::Coord(Coord::Reap { node: n })))
                    .await?;
                reaped += 1;
            }
        }
        self.next_expiry.store(next, Ordering::Relaxed);
        Ok(reaped)
    }

    /// How long the heartbeat worker (`jobs::heartbeat`) waits for the next beat: the
    /// heartbeat interval, or less, until the moment another node's record expires (+1 ms: a
    /// record is expired once its expiry has passed).
    pub fn until_next_beat(&self) -> Duration {
        let until_expiry = self.next_expiry.load(Ordering::Relaxed) - now_ms() + 1;
        self.opts
            .heartbeat
            .min(Duration::from_millis(until_expiry.max(1) as u64))
    }

    /// Removes this node's record (and with it its reservations) now.
    pub async fn leave(&self) {
        let rec = self
            .record
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let _ = self
            .control
            .commit(&Commit::new(Change::Coord(Coord::Reap { node: rec })))
            .await;
    }

    /// Takes or renews the lease of worker `name` for `hold` plus the lease margin: true if this
    /// node holds it now, false if another live node does.
    pub async fn lease(&self, name: &str, hold: Duration) -> MetaResult<bool> {
        let take = Coord::TakeLease {
            name: format!("worker {name}"),
            key: worker_lease(name),
            holder: self.instance(),
            ttl_ms: (hold + self.opts.lease).as_millis() as i64,
        };
        match self.control.commit(&Commit::new(Change::Coord(take))).await {
            Ok(()) => Ok(true),
            Err(MetaError::LeaseHeld(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The nodes heard from recently and the leases held now.
    pub async fn view(&self) -> MetaResult<ClusterView> {
        let now = now_ms();
        let nodes = self
            .meta
            .nodes()
            .await?
            .into_iter()
            .filter(|n| n.expires_ms >= now)
            .map(|n| NodeView {
                seen_ms_ago: now - n.seen_ms,
                instance: n.instance,
                node_id: n.node_id,
                s3_addr: n.s3_addr,
                started_ms: n.started_ms,
            })
            .collect();
        let leases = self
            .meta
            .leases()
            .await?
            .into_iter()
            .filter_map(|l: Lease| {
                let holder = l.holder?;
                (l.expires_ms > now).then(|| LeaseView {
                    name: l.name,
                    holder,
                    expires_in_ms: l.expires_ms - now,
                })
            })
            .collect();
        let mut leases: Vec<LeaseView> = leases;
        // A running job's lease is kept in its record (`jobs`): listed here too.
        for j in self.meta.all_jobs().await? {
            if let Some(holder) = j.holder.filter(|_| !j.done && j.expires_ms > now) {
                leases.push(LeaseView {
                    name: format!("job {} {}", j.kind, j.id),
                    holder,
                    expires_in_ms: j.expires_ms - now,
                });
            }
        }
        Ok(ClusterView {
            this: self.instance(),
            nodes,
            leases,
        })
    }
}

fn new_instance(node_id: &str) -> String {
    format!("{node_id}/{}", ulid::Ulid::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker's lease: one holder at a time, renewed by it, taken over only once it expired;
    /// every take bumps `seq`, so a lease freed and taken again never looks unchanged.
    #[tokio::test]
    async fn a_lease_has_one_holder_until_it_expires() {
        let (_d, m) = crate::meta::testing::meta().await;
        let opts = ClusterOptions {
            lease: Duration::ZERO,
            ..Default::default()
        };
        let a = Node::join(m.clone(), opts.clone(), "a".into(), None)
            .await
            .unwrap();
        let b = Node::join(m.clone(), opts, "b".into(), None).await.unwrap();
        let hold = Duration::from_millis(200);
        assert!(a.lease("sweeper", hold).await.unwrap());
        assert!(!b.lease("sweeper", hold).await.unwrap());
        assert!(a.lease("sweeper", hold).await.unwrap(), "the holder renews");
        assert!(!b.lease("sweeper", hold).await.unwrap());
        tokio::time::sleep(hold + Duration::from_millis(50)).await;
        assert!(
            b.lease("sweeper", hold).await.unwrap(),
            "expired: another node takes it"
        );
        assert!(!a.lease("sweeper", hold).await.unwrap());
        let l = m.leases().await.unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].holder.as_deref(), Some(b.instance().as_str()));
        assert_eq!(l[0].seq, 3, "three takes");
        let view = a.view().await.unwrap();
        assert_eq!(view.nodes.len(), 2);
        assert_eq!(view.leases[0].holder, b.instance());
    }

    /// Requests that take every connection of the PostgreSQL pool (the review's delimiter
    /// listings on several nodes) must not delay this node's heartbeat past the node timeout:
    /// the others would reap it and fence its writes, for every tenant.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_saturated_pool_delays_no_heartbeat_and_no_lease() {
        let url = crate::meta::engine::conformance::fresh_pg_database().await;
        let engine = Arc::new(
            crate::meta::engine::postgres::PgEngine::connect(
                &url,
                crate::meta::engine::postgres::PgOptions::testing(2),
            )
            .await
            .unwrap(),
        );
        let m = Arc::new(Meta::new(engine.clone()));
        let node = Node::join(m.clone(), ClusterOptions::default(), "n".into(), None)
            .await
            .unwrap();
        let held = engine.hold_pool().await;
        assert_eq!(held.len(), 2, "the pool is saturated");
        assert!(
            tokio::time::timeout(Duration::from_millis(300), m.tenants())
                .await
                .is_err(),
            "a request waits for a pooled connection"
        );
        let quick = Duration::from_secs(2);
        tokio::time::timeout(quick, node.beat())
            .await
            .expect("the heartbeat waited for the saturated pool")
            .unwrap();
        assert!(
            tokio::time::timeout(quick, node.lease("sweeper", Duration::from_secs(1)))
                .await
                .expect("the worker lease waited for the saturated pool")
                .unwrap()
        );
        drop(held);
        assert_eq!(m.nodes().await.unwrap().len(), 1);
    }
}
