//! The engine seam (DESIGN.md §10): named trees of byte keys, kept in byte order, read with `get`
//! and range scans and changed only by [`Engine::commit`] — a batch of writes applied atomically
//! if, and only if, its checks still hold. Everything above it (records, usage, blob reference
//! counts, the pending-scan index, preconditions) is written once, in `meta`, and runs on every
//! engine unchanged. An engine knows nothing of tenants, buckets or objects.
//!
//! Concurrency is optimistic: the domain reads what it needs, computes the writes, and commits
//! them together with a check of every value (and range) it read. A check that fails means
//! another commit got there first: [`EngineError::Conflict`], and the domain reads again.

pub mod postgres;
pub mod sled;

#[cfg(test)]
pub(crate) mod conformance;

use std::sync::Arc;

use async_trait::async_trait;

/// The named trees. Each engine keeps them apart (sled trees, a column of the PostgreSQL table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tree {
    Tenants,
    AccessKeys,
    Buckets,
    Objects,
    Uploads,
    Parts,
    Blobs,
    /// Usage per tenant and per bucket.
    Usage,
    /// Keys of objects stored unscanned.
    Pending,
    /// The gateway nodes sharing this store, each with its heartbeat (`cluster`).
    Nodes,
    /// Leases: who does which piece of shared work until when (workers, quota gates).
    Leases,
    /// Quota reservations of writes in flight, one counter pair per scope and node.
    Reservations,
    /// Background jobs (rescans) with their progress, resumable by any node.
    Jobs,
    /// Multipart uploads completed within the abandoned-upload lifetime, under the upload's key
    /// (`model::Completion`): a repeated completion is answered from here.
    Completions,
}

impl Tree {
    pub const ALL: [Tree; 14] = [
        Tree::Tenants,
        Tree::AccessKeys,
        Tree::Buckets,
        Tree::Objects,
        Tree::Uploads,
        Tree::Parts,
        Tree::Blobs,
        Tree::Usage,
        Tree::Pending,
        Tree::Nodes,
        Tree::Leases,
        Tree::Reservations,
        Tree::Jobs,
        Tree::Completions,
    ];

    /// The stable name of the tree (sled's tree name; never change one, stores hold it).
    pub fn name(self) -> &'static str {
        match self {
            Tree::Tenants => "tenants",
            Tree::AccessKeys => "access_keys",
            Tree::Buckets => "buckets",
            Tree::Objects => "objects",
            Tree::Uploads => "uploads",
            Tree::Parts => "parts",
            Tree::Blobs => "blobs",
            Tree::Usage => "usage",
            Tree::Pending => "pending",
            Tree::Nodes => "nodes",
            Tree::Leases => "leases",
            Tree::Reservations => "reservations",
            Tree::Jobs => "jobs",
            Tree::Completions => "completions",
        }
    }

    /// The permanent number of the tree (PostgreSQL's `tree` column): written explicitly, never
    /// derived from the declaration order, so a tree added anywhere in the enum cannot remap the
    /// rows of another. Never change or reuse one.
    pub fn id(self) -> i16 {
        match self {
            Tree::Tenants => 0,
            Tree::AccessKeys => 1,
            Tree::Buckets => 2,
            Tree::Objects => 3,
            Tree::Uploads => 4,
            Tree::Parts => 5,
            Tree::Blobs => 6,
            Tree::Usage => 7,
            Tree::Pending => 8,
            Tree::Nodes => 9,
            Tree::Leases => 10,
            Tree::Reservations => 11,
            Tree::Jobs => 12,
            Tree::Completions => 13,
        }
    }

    pub fn from_id(id: i16) -> Option<Tree> {
        Tree::ALL.into_iter().find(|t| t.id() == id)
    }

    /// Trees whose records every request reads (keys, tenants, buckets): nodes cache them, and
    /// a commit that changes one invalidates it on every node.
    pub fn cached(self) -> bool {
        matches!(self, Tree::AccessKeys | Tree::Tenants | Tree::Buckets)
    }
}

/// What another process's commit changed, for caches of [`Tree::cached`] trees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    Key(Tree, Vec<u8>),
    /// Notifications may have been missed (the listening connection broke): forget everything,
    /// and cache nothing until `Resume`.
    Suspend,
    /// Listening again: caching may resume.
    Resume,
}

/// What a commit requires to be still true when it applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// The key holds exactly this value (`None`: the key is absent).
    Value {
        tree: Tree,
        key: Vec<u8>,
        expect: Option<Vec<u8>>,
    },
    /// The keys that start with `prefix` are exactly these, with these values, in order (empty:
    /// nothing starts with it).
    Range {
        tree: Tree,
        prefix: Vec<u8>,
        expect: Vec<(Vec<u8>, Vec<u8>)>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Put {
        tree: Tree,
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        tree: Tree,
        key: Vec<u8>,
    },
    /// Adds to a pair of counters stored as two big-endian i64 (an absent key counts as zeros),
    /// each clamped at zero. Adds commute, so they need no check: many writers can add to one
    /// key (a tenant's usage) without conflicting, only waiting their turn.
    Add {
        tree: Tree,
        key: Vec<u8>,
        delta: [i64; 2],
    },
}

impl Write {
    pub fn target(&self) -> (Tree, &[u8]) {
        match self {
            Write::Put { tree, key, .. }
            | Write::Delete { tree, key }
            | Write::Add { tree, key, .. } => (*tree, key),
        }
    }
}

/// The counters of a [`Write::Add`] value (missing bytes count as zeros).
pub fn counters(v: Option<&[u8]>) -> [i64; 2] {
    let v = v.unwrap_or(&[]);
    let num = |r: std::ops::Range<usize>| {
        v.get(r)
            .and_then(|b| b.try_into().ok())
            .map_or(0, i64::from_be_bytes)
    };
    [num(0..8), num(8..16)]
}

/// The value of a [`Write::Add`] key holding `c`.
pub fn counters_value(c: [i64; 2]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    out.extend_from_slice(&c[0].to_be_bytes());
    out.extend_from_slice(&c[1].to_be_bytes());
    out
}

/// Writes applied together, or not at all, if every check holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    pub checks: Vec<Check>,
    pub writes: Vec<Write>,
    /// Need not be on disk when the commit returns, whatever crashes (heartbeats), so no flush
    /// is waited for.
    pub ephemeral: bool,
    /// Describes the writes in flight of the processes sharing the store (reservations, gates,
    /// leases): it must survive a crash of the store alone (a database server), and need not
    /// be flushed by an embedded engine, whose crash ends those writes too.
    pub coordination: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A check of the batch no longer holds (or the engine detected a concurrent change): the
    /// caller reads again and retries.
    #[error("a concurrent change conflicts with this commit")]
    Conflict,
    /// The batch was not applied (or, for a read, nothing was read): the store failed, refused
    /// or did not answer in time before the commit was sent, or its outcome was read back.
    #[error("metadata engine: {0}")]
    Store(String),
    /// The commit was sent and its answer lost (a broken connection, a crash, a stall), and
    /// reading back its outcome did not succeed within the engine's bound: it may or may not
    /// have applied, and will not change its mind later. [`Engine::outcome`] tells, once the
    /// store answers. Callers keep everything the commit would reference and give nothing back
    /// until then.
    #[error("metadata engine: the outcome of a commit is unknown ({0})")]
    Unknown(PendingCommit),
}

/// A commit whose answer was lost, as the engine can find its outcome again. Opaque above the
/// engines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PendingCommit {
    /// PostgreSQL: the transaction id and the server process that ran it.
    Xact { xid: String, pid: i32 },
    /// PostgreSQL: a single statement that recorded this id as it applied.
    Marked { id: [u8; 16] },
}

impl std::fmt::Display for PendingCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PendingCommit::Xact { xid, .. } => write!(f, "transaction {xid}"),
            PendingCommit::Marked { id } => write!(f, "statement {}", hex::encode(id)),
        }
    }
}

impl From<::sled::Error> for EngineError {
    fn from(e: ::sled::Error) -> Self {
        EngineError::Store(e.to_string())
    }
}

pub type EngineResult<T> = Result<T, EngineError>;

/// The changes committed up to the moment it was taken ([`Engine::flush_ticket`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct FlushTicket(pub u64);

/// The smallest key greater than every key that starts with `prefix` (`None`: no such key, the
/// prefix is empty or all 0xFF), for engines whose range scans need an upper bound.
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[async_trait]
pub trait Engine: Send + Sync {
    /// A short name for logs and `/health` (`sled`, `postgres`).
    fn kind(&self) -> &'static str;

    async fn get(&self, tree: Tree, key: &[u8]) -> EngineResult<Option<Vec<u8>>>;

    /// Up to `limit` entries whose key starts with `prefix` and is ≥ `from`, in byte order.
    async fn scan(
        &self,
        tree: Tree,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
    ) -> EngineResult<Vec<(Vec<u8>, Vec<u8>)>>;

    /// Applies the writes atomically if every check holds, else `Conflict`. On return the batch
    /// is as durable as the engine was configured to make it (sled with `sync`, PostgreSQL
    /// always); see [`Engine::persist`] for the rest. The outcome is known whenever this
    /// returns `Ok`, `Conflict` or `Store` (applied, not applied, not applied); a commit whose
    /// answer was lost is resolved here, within the engine's bound, and only then reported as
    /// [`EngineError::Unknown`].
    async fn commit(&self, batch: Batch) -> EngineResult<()>;

    /// Whether the commit of an [`EngineError::Unknown`] applied (`true`) or never will
    /// (`false`); `Unknown` again while the store does not answer within its bound.
    async fn outcome(&self, pending: &PendingCommit) -> EngineResult<bool> {
        // Only an engine that reports pending commits is asked about one.
        Err(EngineError::Unknown(pending.clone()))
    }

    /// A ticket for the commits made so far, for [`Engine::persist`].
    fn flush_ticket(&self) -> FlushTicket;

    /// Returns once the commits of `ticket` are on disk, whatever the configuration (the deleter
    /// calls it before it deletes the blobs they freed). Concurrent callers share flushes.
    async fn persist(&self, ticket: FlushTicket) -> EngineResult<()>;

    /// Changes made by other processes sharing the store, for caches, and whether they are
    /// being received now (subscribe first, then read it: a later `Resume` is not missed).
    /// `None` when no other process can share the store (sled): local invalidation is enough.
    fn invalidations(&self) -> Option<(tokio::sync::broadcast::Receiver<Invalidation>, bool)> {
        None
    }

    /// The same store over connections of its own, for the node's control traffic (heartbeats,
    /// reaping, worker leases), so that requests saturating the engine's pool cannot delay a
    /// heartbeat past the node timeout and get a healthy node fenced. `None` when the engine has
    /// no pool to saturate (sled).
    fn control(&self) -> Option<Arc<dyn Engine>> {
        None
    }

    /// True when nothing has ever been written to `tree`.
    async fn is_empty(&self, tree: Tree) -> EngineResult<bool> {
        Ok(self.scan(tree, &[], &[], 1).await?.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stores hold these names (sled) and numbers (PostgreSQL): a change to one silently
    /// points every record of that tree at another tree, or at none.
    #[test]
    fn tree_names_and_ids_are_permanent() {
        let table: Vec<(&str, i16)> = Tree::ALL.iter().map(|t| (t.name(), t.id())).collect();
        assert_eq!(
            table,
            [
                ("tenants", 0),
                ("access_keys", 1),
                ("buckets", 2),
                ("objects", 3),
                ("uploads", 4),
                ("parts", 5),
                ("blobs", 6),
                ("usage", 7),
                ("pending", 8),
                ("nodes", 9),
                ("leases", 10),
                ("reservations", 11),
                ("jobs", 12),
                ("completions", 13),
            ]
        );
        for t in Tree::ALL {
            assert_eq!(Tree::from_id(t.id()), Some(t));
        }
    }

    #[test]
    fn prefix_end_is_the_first_key_past_the_prefix() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xFF, 0xFF]), None);
        assert_eq!(prefix_end(&[]), None);
    }
}
