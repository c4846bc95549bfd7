//! Exact quotas (DESIGN.md §6): a write reserves what it may add before a byte is stored, and the
//! commit settles it.
//!
//! Committed usage and reservations both live in the shared store, so every node sharing it
//! admits exactly what one node would: the rules, and why they are exact, are
//! `meta::coord::Coord::Reserve`'s. Here:
//! - a node takes one admission of a tenant at a time (`admission`), which bounds what the other
//!   nodes can admit unseen;
//! - an admission first tries the fast way (no gate, with a margin for the other nodes), and
//!   takes the scope's gate (a lease) when that cannot decide — near the limit, for a write
//!   larger than the fast bound, or while the gate is held;
//! - a commit grows committed usage by at most what its writer reserved (the transaction checks
//!   the real change against the allowance and refuses with `QuotaShort` otherwise, so a
//!   replaced version that vanished meanwhile is reserved for before the retry), and gives the
//!   reservation back in the same batch ([`crate::meta::coord::Settle`]);
//! - a write that ends without a commit gives its reservation back when dropped; a node that
//!   dies leaves its reservations to be reaped with its record;
//! - a reservation is given back exactly once: by the commit that settles it, or on failure,
//!   never both. A commit whose outcome is unknown (its answer lost and not read back in time,
//!   `MetaError::unknown`) hands the reservation to a task that reads the outcome back once the
//!   store answers, then gives it back only if the commit did not apply; a reservation or an
//!   entry whose own outcome is unknown is given back only if it did apply. Give-backs
//!   themselves never apply twice (`Meta::commit_once`).
//!
//! Scopes without limits take no lock and reserve nothing: usage is still counted by the commit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::BlobGuard;
use crate::cluster::Node;
use crate::meta::coord::{Admission, Coord, Scope, Settle, gate_lease};
use crate::meta::engine::PendingCommit;
use crate::meta::{Change, Commit, Delta, Limits, Meta, MetaError, Usage};

#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    #[error(
        "{scope} is limited to {limit} {what}; {used} are stored or being uploaded and this request needs {need} more"
    )]
    Exceeded {
        scope: String,
        what: &'static str,
        limit: u64,
        used: u64,
        need: u64,
    },
    #[error(transparent)]
    Meta(#[from] MetaError),
}

/// How long an admission waits for a gate another node holds before it answers SlowDown.
const GATE_WAIT: Duration = Duration::from_secs(10);

pub struct Quotas {
    meta: Arc<Meta>,
    node: Arc<Node>,
    /// Per tenant (its scope and its buckets' are the only ones a reservation touches), held
    /// for writing while a reservation is decided: tenants never wait for each other's
    /// admissions. A reservation given back holds it for reading until the store has it, so the
    /// node's next admission of the tenant sees it given back.
    admission: Mutex<HashMap<String, Arc<tokio::sync::RwLock<()>>>>,
}

/// A reservation for one write; given back by its commit, or when dropped. It also counts the
/// write in flight into its bucket (which DeleteBucket, on any node, waits for).
pub struct Reservation {
    quotas: Arc<Quotas>,
    /// The limited scopes this write counts against.
    scopes: Vec<(Scope, Limits)>,
    /// The node instance the reservation rows belong to.
    instance: String,
    held: Usage,
    /// The write's (tenant, bucket), and whether it is counted in flight there now.
    bucket: (String, String),
    entered: bool,
}

impl Quotas {
    pub fn new(meta: Arc<Meta>, node: Arc<Node>) -> Arc<Self> {
        Arc::new(Self {
            meta,
            node,
            admission: Mutex::new(HashMap::new()),
        })
    }

    /// Reserves `want` in the tenant's scope and the bucket's, checking each one's limits.
    pub async fn reserve(
        self: &Arc<Self>,
        tenant: &str,
        bucket: &str,
        tenant_limits: Limits,
        bucket_limits: Limits,
        want: Usage,
    ) -> Result<Reservation, QuotaError> {
        let mut scopes = Vec::new();
        if !tenant_limits.is_unlimited() {
            let t = Scope {
                tenant: tenant.to_string(),
                bucket: None,
            };
            scopes.push((t, tenant_limits));
        }
        if !bucket_limits.is_unlimited() {
            let b = Scope {
                tenant: tenant.to_string(),
                bucket: Some(bucket.to_string()),
            };
            scopes.push((b, bucket_limits));
        }
        let mut r = Reservation {
            quotas: self.clone(),
            scopes,
            instance: self.node.instance(),
            held: Usage::default(),
            bucket: (tenant.to_string(), bucket.to_string()),
            entered: false,
        };
        r.add(want).await?;
        Ok(r)
    }

    /// Returns once every reservation of `tenant` that this node's writes dropped has been
    /// given back to the store (a client's next request sees the store as its last answer left
    /// it).
    pub async fn settled(&self, tenant: &str) {
        drop(self.lane(tenant).write_owned().await);
    }

    fn lane(&self, tenant: &str) -> Arc<tokio::sync::RwLock<()>> {
        let mut lanes = self.admission.lock().unwrap_or_else(|e| e.into_inner());
        lanes.entry(tenant.to_string()).or_default().clone()
    }

    /// Takes the gate of every scope (in order), waiting while other nodes hold them.
    async fn take_gates(&self, r: &Reservation) -> Result<(), QuotaError> {
        let deadline = tokio::time::Instant::now() + GATE_WAIT;
        for (scope, _) in &r.scopes {
            let mut pause = Duration::from_millis(1);
            loop {
                let take = Coord::TakeLease {
                    name: scope.gate_name(),
                    key: gate_lease(scope),
                    holder: r.instance.clone(),
                    ttl_ms: self.node.options().node_timeout.as_millis() as i64,
                };
                match self.meta.commit(&Commit::new(Change::Coord(take))).await {
                    Ok(()) => break,
                    Err(MetaError::LeaseHeld(_)) if tokio::time::Instant::now() < deadline => {
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_millis(20));
                    }
                    Err(MetaError::LeaseHeld(_)) => {
                        self.free_gates(r).await;
                        return Err(MetaError::Contended.into());
                    }
                    Err(e) => {
                        self.free_gates(r).await;
                        return Err(e.into());
                    }
                }
            }
        }
        Ok(())
    }

    async fn free_gates(&self, r: &Reservation) {
        for (scope, _) in &r.scopes {
            let free = Coord::FreeLease {
                key: gate_lease(scope),
                holder: r.instance.clone(),
            };
            // A gate that cannot be freed expires with the node timeout.
            if let Err(e) = self.meta.commit(&Commit::new(Change::Coord(free))).await {
                tracing::warn!(error = %e, "could not free a quota gate");
            }
        }
    }
}

impl Reservation {
    /// Grows the reservation by `more`, or fails without changing it.
    pub async fn add(&mut self, more: Usage) -> Result<(), QuotaError> {
        if self.scopes.is_empty() || more == Usage::default() {
            if !self.entered {
                let enter = Coord::Enter {
                    instance: self.instance.clone(),
                    tenant: self.bucket.0.clone(),
                    bucket: self.bucket.1.clone(),
                };
                let meta = &self.quotas.meta;
                if let Err(e) = meta.commit(&Commit::new(Change::Coord(enter))).await {
                    if let Some(p) = e.unknown() {
                        self.ghost(Usage::default(), true)
                            .resolve_later(p.clone(), true);
                    }
                    return Err(e.into());
                }
                self.entered = true;
            }
            return Ok(());
        }
        let q = self.quotas.clone();
        let _admission = q.lane(&self.bucket.0).write_owned().await;
        let enter = (!self.entered).then(|| self.bucket.clone());
        let reserve = |how| {
            Commit::new(Change::Coord(Coord::Reserve {
                instance: self.instance.clone(),
                scopes: self.scopes.clone(),
                want: more,
                how,
                enter: enter.clone(),
            }))
        };
        let fast = q.node.fast_reserve_bytes().filter(|f| more.bytes <= *f);
        let mut decided = match fast {
            Some(fast_bytes) => {
                q.meta
                    .commit(&reserve(Admission::Fast { fast_bytes }))
                    .await
            }
            None => Err(MetaError::GateNeeded),
        };
        // The gate may be lost to expiry between its take and the admission: take it again.
        for _ in 0..3 {
            if !matches!(decided, Err(MetaError::GateNeeded)) {
                break;
            }
            q.take_gates(self).await?;
            decided = q.meta.commit(&reserve(Admission::Gated)).await;
            if !matches!(decided, Ok(())) {
                q.free_gates(self).await;
            }
        }
        match decided {
            Ok(()) => {
                self.held.bytes += more.bytes;
                self.held.objects += more.objects;
                self.entered = true;
                Ok(())
            }
            Err(MetaError::OverQuota {
                scope,
                what,
                limit,
                used,
                need,
            }) => Err(QuotaError::Exceeded {
                scope,
                what,
                limit,
                used,
                need,
            }),
            Err(MetaError::GateNeeded) => Err(MetaError::Contended.into()),
            Err(e) => {
                if let Some(p) = e.unknown() {
                    // The store may hold this reservation (and entry) although the answer
                    // never came: given back if it did.
                    self.ghost(more, enter.is_some())
                        .resolve_later(p.clone(), true);
                }
                Err(e.into())
            }
        }
    }

    /// A reservation of `held` (and of an entry in flight) beside this one, in the same scopes,
    /// for a change whose outcome is unknown.
    fn ghost(&self, held: Usage, entered: bool) -> Reservation {
        Reservation {
            quotas: self.quotas.clone(),
            scopes: self.scopes.clone(),
            instance: self.instance.clone(),
            held,
            bucket: self.bucket.clone(),
            entered,
        }
    }

    /// Holds nothing any more (the commit that settled it applied).
    fn forget(&mut self) {
        self.held = Usage::default();
        self.entered = false;
    }

    /// Gives this reservation back once the commit of `pending` is known to have applied
    /// (`give_back_if_applied`) or known not to have (otherwise); until then it stays held, so
    /// the quota errs on the safe side.
    fn resolve_later(mut self, pending: PendingCommit, give_back_if_applied: bool) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let meta = self.quotas.meta.clone();
        rt.spawn(async move {
            // Held until then: the quota errs on the safe side.
            if meta.outcome(&pending).await != give_back_if_applied {
                self.forget();
            }
            // Drop gives back what is still held.
        });
    }

    /// How much the commit may grow usage by.
    pub fn allowance(&self) -> Delta {
        if self.scopes.is_empty() {
            return Delta::UNLIMITED;
        }
        Delta {
            bytes: self.held.bytes as i64,
            objects: self.held.objects as i64,
        }
    }

    /// Commits `c` with this reservation's allowance, giving the reservation back in the same
    /// batch. When the commit needs more (the version it replaces changed since the write
    /// began), the difference is reserved and it is retried.
    ///
    /// `blobs` are the new blobs the commit references: kept when it applied, or may have (an
    /// unknown outcome: the sweeper deletes them later if it did not), deleted when it did not.
    ///
    /// The commit runs on a task of its own: a client that hangs up drops the request's
    /// future, and a commit cancelled after its COMMIT was sent would still apply while the
    /// dropped guards deleted its bytes. On its own task it ends, and its blobs and reservation
    /// follow its outcome, whatever the client does.
    pub async fn commit(self, c: Commit, blobs: Vec<BlobGuard>) -> Result<(), QuotaError> {
        use tracing::Instrument as _;
        let run = self
            .commit_here(c, blobs)
            .instrument(tracing::Span::current());
        match tokio::spawn(run).await {
            Ok(r) => r,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // The runtime is shutting down.
            Err(e) => Err(MetaError::Engine(crate::meta::EngineError::Store(e.to_string())).into()),
        }
    }

    async fn commit_here(mut self, mut c: Commit, blobs: Vec<BlobGuard>) -> Result<(), QuotaError> {
        loop {
            c.allowance = self.allowance();
            c.settle = Some(Settle {
                instance: self.instance.clone(),
                scopes: self.scopes.iter().map(|(s, _)| s.clone()).collect(),
                held: self.held,
                leave: self.entered.then(|| self.bucket.clone()),
            });
            match self.quotas.meta.commit(&c).await {
                Err(MetaError::QuotaShort(d)) => {
                    let a = self.allowance();
                    self.add(Usage {
                        bytes: (d.bytes - a.bytes).max(0) as u64,
                        objects: (d.objects - a.objects).max(0) as u64,
                    })
                    .await?;
                }
                Ok(()) => {
                    blobs.into_iter().for_each(BlobGuard::keep);
                    self.forget();
                    return Ok(());
                }
                Err(e) => {
                    if let Some(p) = e.unknown() {
                        blobs.into_iter().for_each(BlobGuard::keep);
                        self.resolve_later(p.clone(), false);
                    }
                    return Err(e.into());
                }
            }
        }
    }
}

impl Drop for Reservation {
    /// A write that ended without its commit gives its reservation back, retrying in the
    /// background while the store is unreachable (until then the quota errs on the safe side),
    /// and never twice (a lost answer is read back before a retry).
    fn drop(&mut self) {
        if !self.entered && (self.scopes.is_empty() || self.held == Usage::default()) {
            return;
        }
        let give_back = Commit::new(Change::Coord(Coord::Unreserve {
            instance: self.instance.clone(),
            scopes: self.scopes.iter().map(|(s, _)| s.clone()).collect(),
            held: self.held,
            leave: self.entered.then(|| self.bucket.clone()),
        }));
        let meta = self.quotas.meta.clone();
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let turn = self.quotas.lane(&self.bucket.0).try_read_owned().ok();
        rt.spawn(async move {
            let _turn = turn;
            meta.commit_once(&give_back).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::testing::{delete, meta, object, put as put_commit};

    async fn quotas(m: &Arc<Meta>) -> Arc<Quotas> {
        let opts = crate::cluster::ClusterOptions::default();
        let node = Node::join(m.clone(), opts, "test".into(), None)
            .await
            .unwrap();
        Quotas::new(m.clone(), node)
    }

    const LIMIT: Limits = Limits {
        bytes: Some(100),
        objects: Some(3),
    };

    async fn put(q: &Arc<Quotas>, key: &str, size: u64) -> Result<(), QuotaError> {
        let want = Usage {
            bytes: size,
            objects: 1,
        };
        let r = q.reserve("t", "b", LIMIT, Limits::default(), want).await?;
        r.commit(put_commit(key, object(size)), Vec::new()).await
    }

    #[tokio::test]
    async fn reservations_count_until_released() {
        let (_d, m) = meta().await;
        let q = quotas(&m).await;
        let want = Usage {
            bytes: 60,
            objects: 1,
        };
        let held = q
            .reserve("t", "b", LIMIT, Limits::default(), want)
            .await
            .unwrap();
        // 60 reserved: another 60 does not fit, 40 does.
        assert!(
            q.reserve("t", "b", LIMIT, Limits::default(), want)
                .await
                .is_err()
        );
        drop(held);
        put(&q, "a", 60).await.unwrap();
        assert!(put(&q, "b", 41).await.is_err());
        put(&q, "b", 40).await.unwrap();
        assert_eq!(m.usage("t", None).await.unwrap().bytes, 100);
        assert_eq!(m.usage("t", Some("b")).await.unwrap().objects, 2);
    }

    #[tokio::test]
    async fn an_overwrite_needs_room_for_the_new_version_only_while_it_uploads() {
        let (_d, m) = meta().await;
        let q = quotas(&m).await;
        put(&q, "a", 90).await.unwrap();
        // The replaced version is released at commit, but the new bytes must fit beside it.
        assert!(put(&q, "a", 20).await.is_err());
        put(&q, "a", 10).await.unwrap();
        assert_eq!(
            m.usage("t", None).await.unwrap(),
            Usage {
                bytes: 10,
                objects: 1
            }
        );
        // Deleting releases.
        m.commit(&delete("a")).await.unwrap();
        assert_eq!(m.usage("t", None).await.unwrap(), Usage::default());
    }

    #[tokio::test]
    async fn a_commit_needing_more_than_reserved_reserves_the_difference_or_fails() {
        let (_d, m) = meta().await;
        let q = quotas(&m).await;
        // A writer that reserved nothing for its object count (as if crediting a replaced
        // version that no longer exists) must reserve it at commit, or fail.
        let bytes_only = async || {
            let want = Usage {
                bytes: 10,
                objects: 0,
            };
            q.reserve("t", "b", LIMIT, Limits::default(), want)
                .await
                .unwrap()
        };
        bytes_only()
            .await
            .commit(put_commit("x", object(10)), Vec::new())
            .await
            .unwrap();
        assert_eq!(m.usage("t", None).await.unwrap().objects, 1);
        // What the commit reserved on top was released with the rest: two more objects fit.
        put(&q, "y", 10).await.unwrap();
        put(&q, "z", 10).await.unwrap();
        let e = bytes_only()
            .await
            .commit(put_commit("w", object(10)), Vec::new())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("limited to 3 objects"), "{e}");
        assert!(m.object("t", "b", "w").await.unwrap().is_none());
    }

    /// Writers racing for the last room of a quota: exactly as many as fit commit, and usage
    /// never passes the limit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_writers_never_pass_the_limit() {
        let (_d, m) = meta().await;
        racing_writers(m).await;
        racing_writers(crate::meta::testing::meta_on_postgres().await).await;
    }

    async fn racing_writers(m: Arc<Meta>) {
        let q = quotas(&m).await;
        let tasks = (0..12).map(|i| {
            let q = q.clone();
            tokio::spawn(async move { put(&q, &format!("k{i}"), 30).await.is_ok() })
        });
        let ok = futures::future::join_all(tasks)
            .await
            .into_iter()
            .filter(|r| *r.as_ref().unwrap())
            .count();
        assert_eq!(ok, 3, "100 bytes fit three objects of 30");
        assert_eq!(m.usage("t", None).await.unwrap().bytes, 90);
        assert!(m.reserved_of("t").await.unwrap().is_empty());
    }

    /// Nodes sharing one store, with heartbeats running so that they admit fast when they can.
    async fn nodes(m: &Arc<Meta>, n: usize) -> Vec<(Arc<Node>, Arc<Quotas>)> {
        let opts = crate::cluster::ClusterOptions {
            heartbeat: Duration::from_millis(100),
            node_timeout: Duration::from_millis(600),
            fast_reserve_bytes: 10,
            ..Default::default()
        };
        let mut out = Vec::new();
        for i in 0..n {
            let node = Node::join(m.clone(), opts.clone(), format!("n{i}"), None)
                .await
                .unwrap();
            out.push((node.clone(), Quotas::new(m.clone(), node)));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        for (node, _) in &out {
            node.beat().await.unwrap();
        }
        out
    }

    /// Three nodes, 60 writers spread over them, a quota that fits 20 objects: exactly 20
    /// commit, whichever way each admission went (fast while far from the limit, gated near it).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writers_on_three_nodes_get_exactly_the_room_there_is() {
        let (_d, m) = meta().await;
        three_nodes(m).await;
        three_nodes(crate::meta::testing::meta_on_postgres().await).await;
    }

    async fn three_nodes(m: Arc<Meta>) {
        let nodes = nodes(&m, 3).await;
        assert!(
            nodes[0].0.fast_reserve_bytes().is_some(),
            "the fast way is open"
        );
        const ROOM: Limits = Limits {
            bytes: Some(1000),
            objects: Some(20),
        };
        let tasks = (0..60).map(|i| {
            let q = nodes[i % 3].1.clone();
            tokio::spawn(async move {
                let want = Usage {
                    bytes: 5,
                    objects: 1,
                };
                let r = q.reserve("t", "b", ROOM, Limits::default(), want).await?;
                r.commit(put_commit(&format!("k{i}"), object(5)), Vec::new())
                    .await
            })
        });
        let results: Vec<_> = futures::future::join_all(tasks).await;
        let ok = results
            .iter()
            .filter(|r| r.as_ref().unwrap().is_ok())
            .count();
        for r in &results {
            if let Err(e) = r.as_ref().unwrap() {
                assert!(e.to_string().contains("limited to 20 objects"), "{e}");
            }
        }
        assert_eq!(ok, 20);
        assert_eq!(m.usage("t", None).await.unwrap().objects, 20);
        assert!(m.reserved_of("t").await.unwrap().is_empty());
    }

    /// A node that dies holding a reservation: the others reap it once its heartbeat is overdue,
    /// which frees the room; if it was only paused, it can no longer commit (fenced).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_nodes_reservation_expires_and_it_is_fenced() {
        let (_d, m) = meta().await;
        let nodes = nodes(&m, 2).await;
        let ((_, alive), (dead, paused)) = (&nodes[0], &nodes[1]);
        let want = Usage {
            bytes: 60,
            objects: 1,
        };
        let held = paused
            .reserve("t", "b", LIMIT, Limits::default(), want)
            .await
            .unwrap();
        assert!(
            alive
                .reserve("t", "b", LIMIT, Limits::default(), want)
                .await
                .is_err()
        );
        assert_eq!(m.reserved_of("t").await.unwrap().len(), 1);
        // `dead` beats no more; the live node's heartbeat reaps it after the timeout.
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(nodes[0].0.beat().await.unwrap(), 1);
        assert!(m.reserved_of("t").await.unwrap().is_empty());
        let mine = alive
            .reserve("t", "b", LIMIT, Limits::default(), want)
            .await
            .unwrap();
        let late = held
            .commit(put_commit("late", object(60)), Vec::new())
            .await;
        assert!(
            matches!(late, Err(QuotaError::Meta(MetaError::Fenced))),
            "{:?}",
            late.err()
        );
        assert!(m.object("t", "b", "late").await.unwrap().is_none());
        mine.commit(put_commit("k", object(60)), Vec::new())
            .await
            .unwrap();
        // The paused node, back, joins again as a new instance and works.
        let before = dead.instance();
        dead.beat().await.unwrap();
        assert_ne!(dead.instance(), before);
        m.commit(&delete("k")).await.unwrap();
        put(paused, "again", 60).await.unwrap();
    }
}

/// The reservation of a write whose body has no declared length (a chunked stream without
/// `Content-Length`): it grows ahead of the bytes as they arrive (the pipeline's meter stage),
/// and is handed back for the commit once the body is stored. An upload that grows past the
/// quota is refused at the chunk that crosses it; dropping the room gives everything back.
#[derive(Clone)]
pub struct Room(Arc<tokio::sync::Mutex<Option<Reservation>>>);

/// The smallest and largest step a room grows by: reserving ahead (doubling what it holds)
/// keeps a large stream to a few reservation commits; near the limit it takes exactly what
/// arrived, so an upload that fits the quota exactly is accepted.
const MIN_STEP: u64 = 1 << 20;
const MAX_STEP: u64 = 256 << 20;

impl Room {
    pub fn new(r: Reservation) -> Self {
        Self(Arc::new(tokio::sync::Mutex::new(Some(r))))
    }

    /// Makes the reservation hold at least `bytes`.
    pub async fn grow_to(&self, bytes: u64) -> Result<(), QuotaError> {
        let mut slot = self.0.lock().await;
        let Some(r) = slot.as_mut() else {
            return Ok(());
        };
        let Some(need) = bytes.checked_sub(r.held.bytes).filter(|n| *n > 0) else {
            return Ok(());
        };
        let step = need.max(r.held.bytes.clamp(MIN_STEP, MAX_STEP));
        let more = |bytes| Usage { bytes, objects: 0 };
        match r.add(more(step)).await {
            Err(QuotaError::Exceeded { .. }) if step > need => r.add(more(need)).await,
            done => done,
        }
    }

    /// The reservation, for the commit (the store is done with the room).
    pub async fn into_inner(self) -> Option<Reservation> {
        self.0.lock().await.take()
    }
}
