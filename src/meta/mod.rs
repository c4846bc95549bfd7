//! The metadata store: the index of every tenant, key, bucket, object, multipart upload and blob
//! reference, written once above the engines (DESIGN.md §10). Reads go straight to the engine;
//! every change is a [`Commit`] applied by [`Meta::commit`] (rules in [`commit`]), atomic and
//! durable when it returns. Key encoding ([`keys`]) and value formats never leave this module:
//! listings take and give opaque [`Cursor`]s and records.
//!
//! Blob reference counts live in the `blobs` tree: a blob is counted once for every segment of an
//! object or part that names it. A blob that is not counted there is garbage: the blobs a commit
//! frees are queued for the deleter with a [`FlushTicket`], and the sweeper may delete any other
//! unreferenced blob once it is older than the grace period.

mod cache;
pub mod commit;
pub mod coord;
pub mod engine;
mod keys;
mod txn;
mod usage;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

pub use crate::model::*;
pub use commit::{Actor, Change, Commit, Precondition, Stamp};
pub use engine::{Engine, EngineError, FlushTicket, Tree};

use txn::Txn;
use usage::{usage_bytes, usage_of};

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error(transparent)]
    Engine(EngineError),
    #[error("corrupt metadata record: {0}")]
    Corrupt(String),
    #[error("no such bucket")]
    NoSuchBucket,
    #[error("bucket already owned by you")]
    BucketAlreadyOwned,
    #[error("bucket not empty")]
    BucketNotEmpty,
    /// Uploads into the bucket are in progress (on any node).
    #[error("uploads into the bucket are in progress")]
    BucketBusy,
    #[error("no such key")]
    NoSuchKey,
    #[error("no such upload")]
    NoSuchUpload,
    #[error("no such tenant")]
    NoSuchTenant,
    #[error("tenant already exists")]
    TenantExists,
    #[error("access key already exists")]
    AccessKeyExists,
    #[error("no such access key")]
    NoSuchAccessKey,
    #[error("tenant still owns buckets")]
    TenantNotEmpty,
    /// The precondition of the commit does not hold (the object changed while it was being
    /// updated, or If-Match / If-None-Match failed).
    #[error("the object changed while it was being updated")]
    Conflict,
    /// The records the commit needs kept changing under it (many writers on one key): it gave
    /// up after [`MAX_ATTEMPTS`] attempts rather than spin.
    #[error("too many concurrent changes to the same records")]
    Contended,
    /// The commit would grow usage by more than the caller reserved (the version it replaces
    /// changed meanwhile); the caller reserves the difference and retries.
    #[error("the commit needs more quota than was reserved")]
    QuotaShort(Delta),
    /// This node was declared dead by the others (no heartbeat within the node timeout) and its
    /// reservations were reaped: what it reserved can no longer be settled.
    #[error("this gateway node lost its membership of the cluster (missed heartbeats)")]
    Fenced,
    /// A lease is held by another node (the holder's instance).
    #[error("lease held by {0}")]
    LeaseHeld(String),
    /// A fast quota admission cannot decide: the caller takes the gate and asks again.
    #[error("the quota admission needs the scope's gate")]
    GateNeeded,
    #[error(
        "{scope} is limited to {limit} {what}; {used} are stored or being uploaded and this request needs {need} more"
    )]
    OverQuota {
        scope: String,
        what: &'static str,
        limit: u64,
        used: u64,
        need: u64,
    },
}

impl From<EngineError> for MetaError {
    fn from(e: EngineError) -> Self {
        MetaError::Engine(e)
    }
}

impl MetaError {
    /// The commit that failed with this error may have applied (its answer was lost and could
    /// not be read back in time): the commit of what it names, resolvable with
    /// [`Meta::outcome`]. Every other error of a commit means it did not apply.
    pub fn unknown(&self) -> Option<&engine::PendingCommit> {
        match self {
            MetaError::Engine(EngineError::Unknown(p)) => Some(p),
            _ => None,
        }
    }
}

pub type MetaResult<T> = Result<T, MetaError>;

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![FORMAT_V1];
    serde_json::to_writer(&mut out, value).expect("meta records always serialize");
    out
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> MetaResult<T> {
    match bytes.split_first() {
        Some((&FORMAT_V1, rest)) => {
            serde_json::from_slice(rest).map_err(|e| MetaError::Corrupt(e.to_string()))
        }
        Some((v, _)) => Err(MetaError::Corrupt(format!("unknown format version {v}"))),
        None => Err(MetaError::Corrupt("empty record".into())),
    }
}

/// Which engine holds the index (`[meta]` of the config, validated).
#[derive(Debug, Clone, Default)]
pub enum MetaEngine {
    /// Embedded, in `<data_dir>/meta`.
    #[default]
    Sled,
    Postgres {
        url: DatabaseUrl,
        pool_size: usize,
        /// The bound of every call to the database (`[meta] timeout_ms`).
        timeout: std::time::Duration,
    },
}

/// A database URL, which may hold a password: never printed.
#[derive(Clone)]
pub struct DatabaseUrl(pub String);

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatabaseUrl(<redacted>)")
    }
}

impl MetaEngine {
    /// Opens the engine (creating or migrating its schema). sled lives in `dir`, flushes each
    /// commit before it returns with `sync`, and caches `cache_bytes` of pages.
    pub async fn open(
        &self,
        dir: &std::path::Path,
        sync: bool,
        cache_bytes: u64,
    ) -> MetaResult<Arc<dyn Engine>> {
        Ok(match self {
            MetaEngine::Sled => Arc::new(engine::sled::SledEngine::open(dir, sync, cache_bytes)?),
            MetaEngine::Postgres {
                url,
                pool_size,
                timeout,
            } => {
                let opts = engine::postgres::PgOptions {
                    pool_size: *pool_size,
                    timeout: *timeout,
                };
                Arc::new(engine::postgres::PgEngine::connect(&url.0, opts).await?)
            }
        })
    }
}

/// One entry of a bucket listing.
pub struct ListedObject {
    pub key: String,
    pub object: Object,
}

/// A record a listing read, not decoded yet: a listing decodes only what it returns, not the
/// records it passes over under a rolled-up common prefix.
pub struct Listed {
    pub key: String,
    raw: Vec<u8>,
}

impl Listed {
    pub fn decode(self) -> MetaResult<ListedObject> {
        Ok(ListedObject {
            object: decode(&self.raw)?,
            key: self.key,
        })
    }
}

/// Where a listing resumes. Opaque: the key encoding stays in this module.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Cursor {
    #[default]
    Start,
    /// Strictly after this key.
    After(String),
    /// After every key that starts with this (a rolled-up common prefix).
    Past(String),
}

/// Where a listing of open uploads resumes. Opaque, as [`Cursor`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadCursor {
    Start,
    /// The uploads of this key and after.
    AtKey(String),
    /// After every upload of this key.
    AfterKey(String),
    /// Strictly after this upload (key, upload id).
    AfterUpload(String, String),
    /// After every key that starts with this (a rolled-up common prefix).
    Past(String),
}

/// Blobs freed by commits, with the ticket of the flush that makes their freeing durable, and
/// their place in the queue (for [`Meta::drained`]).
pub struct Released {
    pub ticket: FlushTicket,
    pub blobs: Vec<String>,
    pub seq: u64,
}

/// How many times a commit is attempted before it gives up with `Contended`.
const MAX_ATTEMPTS: u32 = 64;

/// Most entries one engine scan reads for a worker's pass over a whole tree.
const SCAN_PAGE: usize = 1000;

pub struct Meta {
    engine: Arc<dyn Engine>,
    /// Access keys, tenants and buckets as this node last read them (`cache.rs`).
    cache: cache::Cache,
    /// The queue to the deleter, and how many batches were sent on it: numbered and sent under
    /// one lock, so batches arrive in number order (what [`Meta::drained`] relies on).
    released: Mutex<(u64, mpsc::UnboundedSender<Released>)>,
    /// The deleter's end of `released`, until it takes it.
    release_queue: Mutex<Option<mpsc::UnboundedReceiver<Released>>>,
    /// The last batch the deleter has finished with.
    deleted_seq: tokio::sync::watch::Sender<u64>,
    /// Records read by listings since start (`/metrics`): what a listing costs.
    listed: std::sync::atomic::AtomicU64,
    /// Per tenant, the last change this node committed for someone (not the system's own).
    last: Mutex<std::collections::HashMap<String, LastCommit>>,
}

/// Who last changed a tenant's data through this node, and when (the usage report shows it).
#[derive(Debug, Clone, Serialize)]
pub struct LastCommit {
    #[serde(flatten)]
    pub by: Stamp,
    pub at_ms: i64,
}

impl Meta {
    pub fn new(engine: Arc<dyn Engine>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            cache: cache::Cache::new(&*engine),
            engine,
            released: Mutex::new((0, tx)),
            release_queue: Mutex::new(Some(rx)),
            deleted_seq: tokio::sync::watch::Sender::new(0),
            listed: std::sync::atomic::AtomicU64::new(0),
            last: Mutex::default(),
        }
    }

    /// The last change committed through this node for the tenant by an S3 request, the admin
    /// API or a worker.
    pub fn last_commit(&self, tenant: &str) -> Option<LastCommit> {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.get(tenant).cloned()
    }

    /// Records read by listings since start.
    pub fn records_listed(&self) -> u64 {
        self.listed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The embedded store in `dir` (tests and tools; the server opens what the config says).
    pub fn open(dir: &std::path::Path, sync: bool, cache_bytes: u64) -> MetaResult<Self> {
        Ok(Self::new(Arc::new(engine::sled::SledEngine::open(
            dir,
            sync,
            cache_bytes,
        )?)))
    }

    /// The store for this node's control traffic (heartbeats, reaping, worker leases): on its
    /// own connections where the engine has a pool (see [`Engine::control`]), else this one.
    pub fn control(self: &Arc<Self>) -> Arc<Meta> {
        match self.engine.control() {
            Some(engine) => Arc::new(Meta::new(engine)),
            None => self.clone(),
        }
    }

    pub fn engine_kind(&self) -> &'static str {
        self.engine.kind()
    }

    /// The queue of blobs freed by commits, for the deleter (once).
    pub fn take_release_queue(&self) -> Option<mpsc::UnboundedReceiver<Released>> {
        self.release_queue
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Queues blobs no record names (the sweeper's orphans) for the deleter, behind a flush of
    /// everything committed so far.
    pub fn release(&self, blobs: Vec<String>) {
        if blobs.is_empty() {
            return;
        }
        let ticket = self.engine.flush_ticket();
        let mut queue = self.released.lock().unwrap_or_else(|e| e.into_inner());
        queue.0 += 1;
        let seq = queue.0;
        // A send fails only once the deleter has stopped: the blobs stay for the sweeper.
        let _ = queue.1.send(Released { ticket, blobs, seq });
    }

    /// Called by the deleter once it is done with every batch up to `seq` (deleted, or left to
    /// the sweeper).
    pub fn deleted_up_to(&self, seq: u64) {
        self.deleted_seq.send_if_modified(|d| {
            let newer = seq > *d;
            if newer {
                *d = seq;
            }
            newer
        });
    }

    /// Returns once the deleter is done with every blob released before the call: an event
    /// to wait on instead of a sleep.
    pub async fn drained(&self) {
        let target = self.released.lock().unwrap_or_else(|e| e.into_inner()).0;
        let mut rx = self.deleted_seq.subscribe();
        // Err: the deleter is gone; nothing more will be deleted.
        let _ = rx.wait_for(|d| *d >= target).await;
    }

    /// Applies one change: atomic, durable when it returns (as configured), its rules applied
    /// once. A concurrent change to what it read makes it read again and retry. The blobs it
    /// frees go to the deleter, which deletes them once the commit is on disk.
    pub async fn commit(&self, c: &Commit) -> MetaResult<()> {
        let mut attempt = 0u32;
        loop {
            let mut tx = Txn::new(&*self.engine);
            let freed = commit::apply(&mut tx, c).await?;
            let mut batch = tx.into_batch();
            batch.ephemeral = c.ephemeral();
            batch.coordination = c.coordination();
            let cached: Vec<(Tree, Vec<u8>)> = batch
                .writes
                .iter()
                .map(|w| w.target())
                .filter(|(tree, _)| tree.cached())
                .map(|(tree, key)| (tree, key.to_vec()))
                .collect();
            match self.engine.commit(batch).await {
                Err(EngineError::Unknown(p)) => {
                    // It may have applied: drop what it would have changed from the cache. The
                    // blobs it would free stay (the sweeper finds them if it did apply).
                    for (tree, key) in &cached {
                        self.cache.invalidate(*tree, key);
                    }
                    return Err(MetaError::Engine(EngineError::Unknown(p)));
                }
                Ok(()) => {
                    for (tree, key) in &cached {
                        self.cache.invalidate(*tree, key);
                    }
                    if let (Some(t), false) = (c.change.tenant(), c.by.actor == Actor::System) {
                        let last = LastCommit {
                            by: c.by.clone(),
                            at_ms: now_ms(),
                        };
                        let mut map = self.last.lock().unwrap_or_else(|e| e.into_inner());
                        map.insert(t.to_string(), last);
                    }
                    // Taken now, after the commit: the flush this ticket waits for covers it.
                    // With `sync` the commit's own flush usually does, and the deleter flushes
                    // nothing.
                    self.release(freed);
                    return Ok(());
                }
                Err(EngineError::Conflict) => {
                    attempt += 1;
                    if attempt >= MAX_ATTEMPTS {
                        return Err(MetaError::Contended);
                    }
                    if attempt > 3 {
                        // Many writers on one record: spread their retries.
                        let ms = rand::random_range(0..(1u64 << attempt.min(5)));
                        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Whether the commit of an unknown outcome ([`MetaError::unknown`]) applied (`true`) or
    /// never will (`false`), asking until the store answers: for background tasks only.
    pub async fn outcome(&self, pending: &engine::PendingCommit) -> bool {
        let mut pause = std::time::Duration::from_millis(50);
        loop {
            match self.engine.outcome(pending).await {
                Ok(applied) => return applied,
                Err(e) => {
                    tracing::warn!(error = %e, %pending, "the outcome of a commit is still unknown; asking again");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_secs(5));
                }
            }
        }
    }

    /// Commits `c` until it has applied exactly once, in the background of a caller that cannot
    /// fail (a reservation given back): a lost answer is read back before any retry, so the
    /// change is never applied twice; a store that is down is waited for.
    pub async fn commit_once(&self, c: &Commit) {
        let mut pause = std::time::Duration::from_millis(50);
        loop {
            match self.commit(c).await {
                Ok(()) => return,
                Err(MetaError::Engine(EngineError::Unknown(p))) => {
                    if self.outcome(&p).await {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "a change waits for the metadata store; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_secs(5));
                }
            }
        }
    }

    /// A ticket for the changes committed so far: [`Meta::persist`] with it returns once they
    /// are on disk.
    pub fn flush_ticket(&self) -> FlushTicket {
        self.engine.flush_ticket()
    }

    /// Puts the changes of `ticket` on disk, whatever the configuration says.
    pub async fn persist(&self, ticket: FlushTicket) -> MetaResult<()> {
        Ok(self.engine.persist(ticket).await?)
    }

    /// A record; through the cache for the trees every request reads.
    async fn record<T: DeserializeOwned>(&self, tree: Tree, key: &[u8]) -> MetaResult<Option<T>> {
        let raw = if tree.cached() {
            match self.cache.lookup(tree, key) {
                cache::Lookup::Hit(v) => v,
                cache::Lookup::Miss(generation) => {
                    let v = self.engine.get(tree, key).await?;
                    self.cache.fill(generation, tree, key, v.clone());
                    v
                }
            }
        } else {
            self.engine.get(tree, key).await?
        };
        raw.map(|v| decode(&v)).transpose()
    }

    /// A record as the store holds it now, never from the cache (for read-modify-write).
    async fn fresh_record<T: DeserializeOwned>(
        &self,
        tree: Tree,
        key: &[u8],
    ) -> MetaResult<Option<T>> {
        self.engine
            .get(tree, key)
            .await?
            .map(|v| decode(&v))
            .transpose()
    }

    /// Every record of a small tree (nodes, leases, jobs, tenants), without keys.
    async fn records<T: DeserializeOwned>(&self, tree: Tree) -> MetaResult<Vec<T>> {
        Ok(self
            .scan_all::<T>(tree, &[])
            .await?
            .into_iter()
            .map(|(_, v)| v)
            .collect())
    }

    /// Every record under `prefix` from `from`, page by page.
    async fn scan_all<T: DeserializeOwned>(
        &self,
        tree: Tree,
        prefix: &[u8],
    ) -> MetaResult<Vec<(Vec<u8>, T)>> {
        self.scan_where(tree, prefix, |_| true).await
    }

    /// The records under `prefix` that `keep` keeps, read page by page (only those are held).
    async fn scan_where<T: DeserializeOwned>(
        &self,
        tree: Tree,
        prefix: &[u8],
        mut keep: impl FnMut(&T) -> bool,
    ) -> MetaResult<Vec<(Vec<u8>, T)>> {
        let mut out = Vec::new();
        let mut from = prefix.to_vec();
        loop {
            let page = self.engine.scan(tree, prefix, &from, SCAN_PAGE).await?;
            let full = page.len() == SCAN_PAGE;
            for (k, v) in page {
                from = k.clone();
                from.push(0);
                let record = decode(&v)?;
                if keep(&record) {
                    out.push((k, record));
                }
            }
            if !full {
                return Ok(out);
            }
        }
    }

    // ---- tenants and keys -------------------------------------------------------------------

    pub async fn tenant(&self, id: &str) -> MetaResult<Option<Tenant>> {
        self.record(Tree::Tenants, id.as_bytes()).await
    }

    pub async fn tenants(&self) -> MetaResult<Vec<Tenant>> {
        self.records(Tree::Tenants).await
    }

    /// Changes a tenant record (read, change, commit if it is still what was read), by `by`.
    pub async fn update_tenant(
        &self,
        id: &str,
        by: Stamp,
        change: impl Fn(&mut Tenant),
    ) -> MetaResult<Tenant> {
        loop {
            let old: Tenant = self
                .fresh_record(Tree::Tenants, id.as_bytes())
                .await?
                .ok_or(MetaError::NoSuchTenant)?;
            let mut new = old.clone();
            change(&mut new);
            match self
                .commit(
                    &Commit::new(Change::ReplaceTenant {
                        old,
                        new: new.clone(),
                    })
                    .by(by.clone()),
                )
                .await
            {
                Err(MetaError::Conflict) => continue,
                r => return r.map(|()| new),
            }
        }
    }

    pub async fn access_key(&self, access_key: &str) -> MetaResult<Option<AccessKey>> {
        self.record(Tree::AccessKeys, access_key.as_bytes()).await
    }

    pub async fn keys_of(&self, tenant: &str) -> MetaResult<Vec<AccessKey>> {
        Ok(self
            .scan_all::<AccessKey>(Tree::AccessKeys, &[])
            .await?
            .into_iter()
            .map(|(_, k)| k)
            .filter(|k| k.tenant == tenant)
            .collect())
    }

    // ---- buckets ----------------------------------------------------------------------------

    pub async fn bucket(&self, tenant: &str, name: &str) -> MetaResult<Option<Bucket>> {
        self.record(Tree::Buckets, &keys::bucket(tenant, name))
            .await
    }

    pub async fn require_bucket(&self, tenant: &str, name: &str) -> MetaResult<Bucket> {
        self.bucket(tenant, name)
            .await?
            .ok_or(MetaError::NoSuchBucket)
    }

    pub async fn buckets(&self, tenant: &str) -> MetaResult<Vec<Bucket>> {
        Ok(self
            .scan_all(Tree::Buckets, &keys::tenant_prefix(tenant))
            .await?
            .into_iter()
            .map(|(_, b)| b)
            .collect())
    }

    // ---- objects ----------------------------------------------------------------------------

    pub async fn object(
        &self,
        tenant: &str,
        bucket: &str,
        key: &str,
    ) -> MetaResult<Option<Object>> {
        self.record(Tree::Objects, &keys::object(tenant, bucket, key))
            .await
    }

    /// Up to `limit` objects of a bucket in key order from `from`, restricted to `prefix`.
    pub async fn list_objects(
        &self,
        tenant: &str,
        bucket: &str,
        prefix: &str,
        from: &Cursor,
        limit: usize,
    ) -> MetaResult<Vec<Listed>> {
        let bprefix = keys::bucket_prefix(tenant, bucket);
        let mut start = bprefix.clone();
        start.extend_from_slice(prefix.as_bytes());
        let mut first = bprefix.clone();
        match from {
            Cursor::Start => {}
            Cursor::After(k) => {
                first.extend_from_slice(k.as_bytes());
                first.push(0);
            }
            Cursor::Past(p) => first.extend_from_slice(&keys::after_prefix(p.as_bytes())),
        }
        let page = self
            .engine
            .scan(Tree::Objects, &start, &first, limit)
            .await?;
        self.listed
            .fetch_add(page.len() as u64, std::sync::atomic::Ordering::Relaxed);
        page.into_iter()
            .map(|(k, raw)| {
                let key = String::from_utf8(k[bprefix.len()..].to_vec())
                    .map_err(|e| MetaError::Corrupt(e.to_string()))?;
                Ok(Listed { key, raw })
            })
            .collect()
    }

    // ---- multipart uploads ------------------------------------------------------------------

    pub async fn upload(
        &self,
        tenant: &str,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> MetaResult<Upload> {
        if upload_id.len() != keys::ULID_LEN {
            return Err(MetaError::NoSuchUpload);
        }
        self.record(Tree::Uploads, &keys::upload(tenant, bucket, key, upload_id))
            .await?
            .ok_or(MetaError::NoSuchUpload)
    }

    /// The tenant's open uploads and their parts, as counted by the commits (one read).
    pub async fn open_uploads(&self, tenant: &str) -> MetaResult<OpenUploads> {
        let [uploads, parts] = engine::counters(
            self.engine
                .get(Tree::Usage, &keys::open_uploads(tenant))
                .await?
                .as_deref(),
        );
        Ok(OpenUploads {
            uploads: uploads.max(0) as u64,
            parts: parts.max(0) as u64,
        })
    }

    /// The tenant's open uploads and their parts, counted from the records.
    pub async fn computed_open_uploads(&self, tenant: &str) -> MetaResult<OpenUploads> {
        let mut n = OpenUploads::default();
        for (_, up) in self
            .scan_all::<Upload>(Tree::Uploads, &keys::tenant_prefix(tenant))
            .await?
        {
            n.uploads += 1;
            n.parts += self
                .engine
                .scan(Tree::Parts, up.upload_id.as_bytes(), &[], usize::MAX)
                .await?
                .len() as u64;
        }
        Ok(n)
    }

    /// Up to `limit` open uploads of a bucket in (key, upload id) order from `from`, restricted
    /// to `prefix`.
    pub async fn list_uploads(
        &self,
        tenant: &str,
        bucket: &str,
        prefix: &str,
        from: &UploadCursor,
        limit: usize,
    ) -> MetaResult<Vec<Upload>> {
        let bprefix = keys::bucket_prefix(tenant, bucket);
        let mut start = bprefix.clone();
        start.extend_from_slice(prefix.as_bytes());
        let mut first = bprefix;
        // Every upload of key K is stored as K\0<id>.
        match from {
            UploadCursor::Start => {}
            UploadCursor::AtKey(k) => {
                first.extend_from_slice(k.as_bytes());
                first.push(0);
            }
            UploadCursor::AfterKey(k) => {
                first.extend_from_slice(k.as_bytes());
                first.push(1);
            }
            UploadCursor::AfterUpload(k, id) => {
                first.extend_from_slice(k.as_bytes());
                first.push(0);
                first.extend_from_slice(id.as_bytes());
                first.push(0);
            }
            UploadCursor::Past(p) => first.extend_from_slice(&keys::after_prefix(p.as_bytes())),
        }
        let page = self
            .engine
            .scan(Tree::Uploads, &start, &first, limit)
            .await?;
        self.listed
            .fetch_add(page.len() as u64, std::sync::atomic::Ordering::Relaxed);
        page.into_iter().map(|(_, v)| decode(&v)).collect()
    }

    /// Whether the upload has a part numbered `n`.
    pub async fn has_part(&self, upload_id: &str, n: u32) -> MetaResult<bool> {
        Ok(self
            .engine
            .get(Tree::Parts, &keys::part(upload_id, n))
            .await?
            .is_some())
    }

    pub async fn parts(&self, upload_id: &str) -> MetaResult<Vec<Part>> {
        Ok(self
            .scan_all(Tree::Parts, upload_id.as_bytes())
            .await?
            .into_iter()
            .map(|(_, p)| p)
            .collect())
    }

    /// Open uploads initiated before `before_ms`, for the sweeper to abort.
    pub async fn stale_uploads(&self, before_ms: i64) -> MetaResult<Vec<(String, String, Upload)>> {
        let mut out = Vec::new();
        for (k, upload) in self.scan_all::<Upload>(Tree::Uploads, &[]).await? {
            if upload.initiated_ms < before_ms {
                let (tenant, bucket) = keys::split_bucket_prefix(&k)
                    .ok_or_else(|| MetaError::Corrupt("upload key".into()))?;
                out.push((tenant, bucket, upload));
            }
        }
        Ok(out)
    }

    /// The completion of an upload that is no longer open, if it completed within the
    /// abandoned-upload lifetime.
    pub async fn completion(
        &self,
        tenant: &str,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> MetaResult<Option<Completion>> {
        if upload_id.len() != keys::ULID_LEN {
            return Ok(None);
        }
        self.record(
            Tree::Completions,
            &keys::upload(tenant, bucket, key, upload_id),
        )
        .await
    }

    /// Completions recorded before `before_ms`, for the sweeper to forget.
    pub async fn stale_completions(
        &self,
        before_ms: i64,
    ) -> MetaResult<Vec<(String, String, Completion)>> {
        let mut out = Vec::new();
        for (k, c) in self
            .scan_where::<Completion>(Tree::Completions, &[], |c| c.completed_ms < before_ms)
            .await?
        {
            let (tenant, bucket) = keys::split_bucket_prefix(&k)
                .ok_or_else(|| MetaError::Corrupt("completion key".into()))?;
            out.push((tenant, bucket, c));
        }
        Ok(out)
    }

    // ---- usage and scans --------------------------------------------------------------------

    /// What the tenant (`bucket` = `None`) or one of its buckets stores, as recorded.
    pub async fn usage(&self, tenant: &str, bucket: Option<&str>) -> MetaResult<Usage> {
        let scope = match bucket {
            Some(b) => keys::bucket(tenant, b),
            None => keys::tenant_prefix(tenant),
        };
        Ok(usage_of(
            self.engine.get(Tree::Usage, &scope).await?.as_deref(),
        ))
    }

    /// Counts the open uploads of each tenant whose counter row is missing (a store written
    /// before the counter existed). Each row is written only if still absent, so a node that
    /// counted meanwhile wins.
    async fn backfill_open_uploads(&self) -> MetaResult<()> {
        if self.engine.is_empty(Tree::Uploads).await? {
            return Ok(());
        }
        for t in self.tenants().await? {
            let key = keys::open_uploads(&t.id);
            if self.engine.get(Tree::Usage, &key).await?.is_some() {
                continue;
            }
            let n = self.computed_open_uploads(&t.id).await?;
            if n == OpenUploads::default() {
                continue;
            }
            let batch = engine::Batch {
                checks: vec![engine::Check::Value {
                    tree: Tree::Usage,
                    key: key.clone(),
                    expect: None,
                }],
                writes: vec![engine::Write::Put {
                    tree: Tree::Usage,
                    key,
                    value: engine::counters_value([n.uploads as i64, n.parts as i64]),
                }],
                ..Default::default()
            };
            match self.engine.commit(batch).await {
                Ok(()) | Err(engine::EngineError::Conflict) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Recomputes usage from the records themselves: the tenant's total and each bucket's.
    pub async fn computed_usage(
        &self,
        tenant: &str,
    ) -> MetaResult<(Usage, BTreeMap<String, Usage>)> {
        let mut total = Usage::default();
        let mut per = BTreeMap::new();
        for b in self.buckets(tenant).await? {
            let mut u = Usage::default();
            let bprefix = keys::bucket_prefix(tenant, &b.name);
            for (_, o) in self.scan_all::<Object>(Tree::Objects, &bprefix).await? {
                u.bytes += o.size;
                u.objects += 1;
            }
            for (_, up) in self.scan_all::<Upload>(Tree::Uploads, &bprefix).await? {
                for p in self.parts(&up.upload_id).await? {
                    u.bytes += p.size;
                }
            }
            total.bytes += u.bytes;
            total.objects += u.objects;
            per.insert(b.name, u);
        }
        Ok((total, per))
    }

    /// Records usage computed from the records when none is recorded yet (a store written
    /// before usage was tracked); returns how many tenants were filled in.
    pub async fn backfill_usage(&self) -> MetaResult<usize> {
        self.backfill_open_uploads().await?;
        if !self.engine.is_empty(Tree::Usage).await?
            || (self.engine.is_empty(Tree::Objects).await?
                && self.engine.is_empty(Tree::Parts).await?)
        {
            return Ok(0);
        }
        let tenants = self.tenants().await?;
        let mut batch = engine::Batch::default();
        for t in &tenants {
            let (total, per) = self.computed_usage(&t.id).await?;
            batch.writes.push(engine::Write::Put {
                tree: Tree::Usage,
                key: keys::tenant_prefix(&t.id),
                value: usage_bytes(total),
            });
            for (b, u) in per {
                batch.writes.push(engine::Write::Put {
                    tree: Tree::Usage,
                    key: keys::bucket(&t.id, &b),
                    value: usage_bytes(u),
                });
            }
        }
        // Runs at start, before the gateway serves: nothing commits meanwhile.
        self.engine.commit(batch).await?;
        Ok(tenants.len())
    }

    /// Up to `limit` objects waiting for a scan, as (tenant, bucket, key).
    pub async fn pending_scans(&self, limit: usize) -> MetaResult<Vec<(String, String, String)>> {
        let mut out = Vec::new();
        for (k, _) in self.engine.scan(Tree::Pending, &[], &[], limit).await? {
            let (tenant, bucket) = keys::split_bucket_prefix(&k)
                .ok_or_else(|| MetaError::Corrupt("pending key".into()))?;
            let rest = &k[keys::bucket_prefix(&tenant, &bucket).len()..];
            let key =
                String::from_utf8(rest.to_vec()).map_err(|e| MetaError::Corrupt(e.to_string()))?;
            out.push((tenant, bucket, key));
        }
        Ok(out)
    }

    // ---- blobs ------------------------------------------------------------------------------

    /// True when some object or part still names `blob`.
    pub async fn blob_referenced(&self, blob: &str) -> MetaResult<bool> {
        Ok(self
            .engine
            .get(Tree::Blobs, blob.as_bytes())
            .await?
            .is_some())
    }
}

/// Fixtures for the unit tests of meta and of the modules built on it.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use super::*;

    /// A store with tenant `t` and its bucket `b`.
    pub(crate) async fn meta() -> (tempfile::TempDir, Arc<Meta>) {
        let dir = tempfile::tempdir().unwrap();
        let m = Meta::open(dir.path(), false, 8 << 20).unwrap();
        (dir, seeded(m).await)
    }

    /// The same on a fresh database of the test PostgreSQL cluster.
    pub(crate) async fn meta_on_postgres() -> Arc<Meta> {
        let url = engine::conformance::fresh_pg_database().await;
        let e = engine::postgres::PgEngine::connect(&url, engine::postgres::PgOptions::testing(8))
            .await
            .unwrap();
        seeded(Meta::new(Arc::new(e))).await
    }

    pub(crate) async fn seeded(m: Meta) -> Arc<Meta> {
        let m = Arc::new(m);
        m.commit(&Commit::new(Change::CreateTenant(Tenant {
            id: "t".into(),
            display_name: "t".into(),
            created_ms: 0,
            placement: None,
            locations: vec![],
            quota: Limits::default(),
            policy: Default::default(),
            buckets: Default::default(),
        })))
        .await
        .unwrap();
        m.commit(&Commit::new(Change::CreateBucket {
            tenant: "t".into(),
            bucket: Bucket {
                name: "b".into(),
                created_ms: 0,
                location: "r".into(),
                placement: None,
                tags: Vec::new(),
            },
        }))
        .await
        .unwrap();
        m
    }

    pub(crate) fn object(size: u64) -> Object {
        Object {
            size,
            etag: "e".into(),
            last_modified_ms: 0,
            attrs: Default::default(),
            checksums: Default::default(),
            tags: vec![],
            parts: vec![PartLayout {
                size,
                segments: vec![],
                checksums: Default::default(),
            }],
            multipart: false,
            detected_type: None,
            scan: None,
        }
    }

    pub(crate) fn put(key: &str, object: Object) -> Commit {
        Commit::new(Change::PutObject {
            tenant: "t".into(),
            bucket: "b".into(),
            key: key.into(),
            object,
            shared: false,
        })
    }

    pub(crate) fn delete(key: &str) -> Commit {
        Commit::new(Change::DeleteObject {
            tenant: "t".into(),
            bucket: "b".into(),
            key: key.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{delete, meta, object, put};
    use super::*;

    /// Two nodes on one database: a key one of them reads is cached (a change that bypasses
    /// the gateway shows only after the TTL), and a change committed by the other node is seen
    /// at once (its NOTIFY), well within the TTL.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn another_nodes_change_invalidates_the_cache_and_entries_expire() {
        use std::time::Duration;
        let url = engine::conformance::fresh_pg_database().await;
        let node = || async {
            let e =
                engine::postgres::PgEngine::connect(&url, engine::postgres::PgOptions::testing(4))
                    .await
                    .unwrap();
            Meta::new(Arc::new(e))
        };
        let (a, b) = (testing::seeded(node().await).await, Arc::new(node().await));
        let key = |secret: &str| AccessKey {
            access_key: "AK1".into(),
            secret_key: secret.into(),
            tenant: "t".into(),
            user: "u".into(),
            role: Role::ReadWrite,
            created_ms: 0,
        };
        a.commit(&Commit::new(Change::CreateAccessKey(key("one"))))
            .await
            .unwrap();
        let secret = |m: &Arc<Meta>| {
            let m = m.clone();
            async move { m.access_key("AK1").await.unwrap().map(|k| k.secret_key) }
        };
        // Until b listens it caches nothing; then a read fills its cache.
        let (db, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let overwrite = |v: Vec<u8>| {
            let db = &db;
            async move {
                db.execute(
                    "UPDATE portcullis_kv SET value = $1 WHERE tree = $2 AND key = $3",
                    &[&v, &Tree::AccessKeys.id(), &b"AK1".as_slice()],
                )
                .await
                .unwrap();
            }
        };
        let started = std::time::Instant::now();
        loop {
            assert_eq!(secret(&b).await.as_deref(), Some("one"));
            // Behind the gateway's back (no NOTIFY): a cached read still says "one".
            overwrite(encode(&key("sideways"))).await;
            let cached = secret(&b).await;
            overwrite(encode(&key("one"))).await;
            if cached.as_deref() == Some("one") {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "b never cached"
            );
            b.cache.invalidate(Tree::AccessKeys, b"AK1");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Expiry: a change the cache was never told of shows within the TTL.
        overwrite(encode(&key("sideways"))).await;
        tokio::time::sleep(cache::TTL + Duration::from_millis(50)).await;
        assert_eq!(secret(&b).await.as_deref(), Some("sideways"));
        // Revoked through node a: b refuses it at once, far within the TTL.
        assert!(secret(&b).await.is_some());
        a.commit(&Commit::new(Change::DeleteAccessKey("AK1".into())))
            .await
            .unwrap();
        let revoked = std::time::Instant::now();
        while secret(&b).await.is_some() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            revoked.elapsed() < Duration::from_millis(500),
            "seen after {:?}",
            revoked.elapsed()
        );
    }

    fn pending(status: ScanStatus) -> Object {
        Object {
            scan: Some(ScanInfo {
                status,
                signature: None,
                engine: None,
                at_ms: 0,
            }),
            ..object(5)
        }
    }

    #[tokio::test]
    async fn the_pending_index_follows_the_current_version() {
        let (_d, m) = meta().await;
        for (k, s) in [
            ("a", ScanStatus::Pending),
            ("b", ScanStatus::Pending),
            ("c", ScanStatus::Clean),
        ] {
            m.commit(&put(k, pending(s))).await.unwrap();
        }
        let keys = async || -> Vec<String> {
            m.pending_scans(10)
                .await
                .unwrap()
                .into_iter()
                .map(|(_, _, k)| k)
                .collect()
        };
        assert_eq!(keys().await, ["a", "b"]);
        // A verdict, an overwrite and a delete each take a key off the list.
        let clean = ScanInfo {
            status: ScanStatus::Clean,
            signature: None,
            engine: None,
            at_ms: 1,
        };
        m.commit(&Commit::new(Change::SetScan {
            tenant: "t".into(),
            bucket: "b".into(),
            key: "a".into(),
            etag: "e".into(),
            last_modified_ms: 0,
            scan: clean,
        }))
        .await
        .unwrap();
        m.commit(&put("b", pending(ScanStatus::Clean)))
            .await
            .unwrap();
        assert!(keys().await.is_empty());
        m.commit(&put("c", pending(ScanStatus::Pending)))
            .await
            .unwrap();
        m.commit(&delete("c")).await.unwrap();
        assert!(keys().await.is_empty());
    }

    #[tokio::test]
    async fn usage_is_backfilled_once_for_a_store_without_it() {
        let (_d, m) = meta().await;
        m.commit(&put("k", object(7))).await.unwrap();
        // A store written before usage was tracked has objects and no usage.
        let mut clear = engine::Batch::default();
        for scope in [keys::tenant_prefix("t"), keys::bucket("t", "b")] {
            clear.writes.push(engine::Write::Delete {
                tree: Tree::Usage,
                key: scope,
            });
        }
        m.engine.commit(clear).await.unwrap();
        assert_eq!(m.usage("t", None).await.unwrap(), Usage::default());
        assert_eq!(m.backfill_usage().await.unwrap(), 1);
        let want = Usage {
            bytes: 7,
            objects: 1,
        };
        assert_eq!(m.usage("t", None).await.unwrap(), want);
        assert_eq!(m.usage("t", Some("b")).await.unwrap(), want);
        // Recorded usage is never recomputed over.
        assert_eq!(m.backfill_usage().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn a_bucket_or_tenant_with_many_entries_is_not_empty() {
        let (_d, m) = meta().await;
        for k in ["a", "b", "c"] {
            m.commit(&put(k, object(1))).await.unwrap();
        }
        let delete_bucket = Commit::new(Change::DeleteBucket {
            tenant: "t".into(),
            bucket: "b".into(),
        });
        let e = m.commit(&delete_bucket).await.unwrap_err();
        assert!(matches!(e, MetaError::BucketNotEmpty), "{e}");
        let e = m
            .commit(&Commit::new(Change::DeleteTenant("t".into())))
            .await
            .unwrap_err();
        assert!(matches!(e, MetaError::TenantNotEmpty), "{e}");
        for k in ["a", "b", "c"] {
            m.commit(&delete(k)).await.unwrap();
        }
        m.commit(&delete_bucket).await.unwrap();
        m.commit(&Commit::new(Change::DeleteTenant("t".into())))
            .await
            .unwrap();
        assert!(m.tenant("t").await.unwrap().is_none());
    }

    /// A fake engine (named as such): every commit conflicts, a state two real writers can
    /// hold each other in only for a moment. The commit gives up instead of spinning forever.
    struct AlwaysConflicts(engine::sled::SledEngine);

    #[async_trait::async_trait]
    impl Engine for AlwaysConflicts {
        fn kind(&self) -> &'static str {
            "fake"
        }
        async fn get(&self, t: Tree, k: &[u8]) -> engine::EngineResult<Option<Vec<u8>>> {
            self.0.get(t, k).await
        }
        async fn scan(
            &self,
            t: Tree,
            p: &[u8],
            f: &[u8],
            l: usize,
        ) -> engine::EngineResult<Vec<(Vec<u8>, Vec<u8>)>> {
            self.0.scan(t, p, f, l).await
        }
        async fn commit(&self, _: engine::Batch) -> engine::EngineResult<()> {
            Err(EngineError::Conflict)
        }
        fn flush_ticket(&self) -> FlushTicket {
            self.0.flush_ticket()
        }
        async fn persist(&self, t: FlushTicket) -> engine::EngineResult<()> {
            self.0.persist(t).await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_commit_that_always_conflicts_gives_up_as_contended() {
        let dir = tempfile::tempdir().unwrap();
        let sled = engine::sled::SledEngine::open(dir.path(), false, 8 << 20).unwrap();
        let m = Meta::new(Arc::new(AlwaysConflicts(sled)));
        let e = m.commit(&delete("k")).await.unwrap_err();
        assert!(matches!(e, MetaError::Contended), "{e}");
    }

    /// A part committed while Complete reads the upload's parts must not outlive the upload:
    /// Complete's commit checks the part range it read, so one of the two retries.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_part_racing_complete_is_either_in_the_object_or_refused() {
        let (_d, m) = meta().await;
        part_races_complete(m).await;
        part_races_complete(testing::meta_on_postgres().await).await;
    }

    async fn part_races_complete(m: Arc<Meta>) {
        for round in 0..50 {
            let id = ulid::Ulid::new().to_string();
            let upload = Upload {
                upload_id: id.clone(),
                key: format!("k{round}"),
                initiated_ms: 0,
                initiator: "t".into(),
                attrs: Default::default(),
                tags: vec![],
                checksum_algorithm: None,
                checksum_type: None,
            };
            m.commit(&Commit::new(Change::CreateUpload {
                tenant: "t".into(),
                bucket: "b".into(),
                upload: upload.clone(),
            }))
            .await
            .unwrap();
            let part = |n: u32| Part {
                part_number: n,
                size: 3,
                etag: "p".into(),
                last_modified_ms: 0,
                checksums: Default::default(),
                segments: vec![],
            };
            let put_part = Commit::new(Change::PutPart {
                tenant: "t".into(),
                bucket: "b".into(),
                key: upload.key.clone(),
                upload_id: id.clone(),
                part: part(2),
                shared: false,
            });
            let complete = Commit::new(Change::CompleteUpload {
                tenant: "t".into(),
                bucket: "b".into(),
                upload: upload.clone(),
                object: object(0),
                parts: vec![(1, "e".into())],
            });
            let (a, b) = tokio::join!(m.commit(&put_part), m.commit(&complete));
            b.unwrap();
            if let Err(e) = a {
                assert!(matches!(e, MetaError::NoSuchUpload), "{e}");
            }
            assert!(m.parts(&id).await.unwrap().is_empty(), "round {round}");
        }
        let (computed, _) = m.computed_usage("t").await.unwrap();
        assert_eq!(m.usage("t", None).await.unwrap(), computed);
    }
}
