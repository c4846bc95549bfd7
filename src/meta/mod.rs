//! The metadata store: the index of every tenant, key, bucket, object, multipart upload and blob
//! reference. It is the only module that knows it is sled; everything above it speaks in the
//! records of [`model`]. Multi-tree updates are sled transactions, so a commit either happens
//! whole or not at all (DESIGN.md §2).
//!
//! Blob reference counts live in the `blobs` tree: a blob is counted once for every segment of an
//! object or part that names it. A blob that is not counted there is garbage, and the sweeper may
//! delete it once it is older than the grace period.

pub mod keys;
pub mod model;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::{Transactional, Tree};

pub use model::*;

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("metadata store: {0}")]
    Store(#[from] sled::Error),
    #[error("corrupt metadata record: {0}")]
    Corrupt(String),
    #[error("metadata flush task failed: {0}")]
    FlushTask(String),
    #[error("no such bucket")]
    NoSuchBucket,
    #[error("bucket already owned by you")]
    BucketAlreadyOwned,
    #[error("bucket not empty")]
    BucketNotEmpty,
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
    #[error("the object changed while it was being updated")]
    Conflict,
    /// The commit would grow usage by more than the caller reserved (the version it replaces
    /// changed meanwhile); the caller reserves the difference and retries.
    #[error("the commit needs more quota than was reserved")]
    QuotaShort(Delta),
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

type TxResult<T> = Result<T, ConflictableTransactionError<MetaError>>;

fn tx_decode<T: DeserializeOwned>(bytes: &[u8]) -> TxResult<T> {
    decode(bytes).map_err(ConflictableTransactionError::Abort)
}

fn tx_abort<T>(e: MetaError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(e))
}

fn flatten<T>(r: Result<T, TransactionError<MetaError>>) -> MetaResult<T> {
    r.map_err(|e| match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => MetaError::Store(e),
    })
}

/// Applies reference-count deltas; returns the blobs whose count dropped to zero (garbage once the
/// transaction commits). With `shared`, the new references are to blobs that must already be
/// referenced (a copy): if the source was deleted meanwhile, its blobs may be gone, so the
/// commit is refused instead of creating an object without bytes.
fn adjust_refs<'a>(
    blobs: &TransactionalTree,
    deltas: impl IntoIterator<Item = (&'a str, i64)>,
    shared: bool,
) -> TxResult<Vec<String>> {
    let mut sum: HashMap<&str, i64> = HashMap::new();
    for (blob, d) in deltas {
        *sum.entry(blob).or_default() += d;
    }
    let mut freed = Vec::new();
    for (blob, d) in sum {
        if d == 0 {
            continue;
        }
        let cur = blobs
            .get(blob.as_bytes())?
            .map(|v| i64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8])))
            .unwrap_or(0);
        if shared && d > 0 && cur == 0 {
            return tx_abort(MetaError::NoSuchKey);
        }
        let next = cur + d;
        if next <= 0 {
            blobs.remove(blob.as_bytes())?;
            freed.push(blob.to_string());
        } else {
            blobs.insert(blob.as_bytes(), &next.to_be_bytes())?;
        }
    }
    Ok(freed)
}

/// Usage is stored as two big-endian u64: bytes, then objects.
fn usage_of(v: Option<sled::IVec>) -> Usage {
    let v = v.as_deref().unwrap_or(&[]);
    let num = |r: std::ops::Range<usize>| {
        v.get(r)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_be_bytes)
    };
    Usage {
        bytes: num(0..8),
        objects: num(8..16),
    }
}

fn usage_bytes(u: Usage) -> [u8; 16] {
    let mut out = [0; 16];
    out[..8].copy_from_slice(&u.bytes.to_be_bytes());
    out[8..].copy_from_slice(&u.objects.to_be_bytes());
    out
}

/// Applies `d` to the tenant's and the bucket's usage, after checking it against `allowance`
/// (what the caller reserved for this commit).
fn charge(
    usage: &TransactionalTree,
    tenant: &str,
    bucket: &str,
    d: Delta,
    allowance: &Delta,
) -> TxResult<()> {
    if !d.within(allowance) {
        return tx_abort(MetaError::QuotaShort(d));
    }
    if d == Delta::default() {
        return Ok(());
    }
    for scope in [keys::tenant_prefix(tenant), keys::bucket(tenant, bucket)] {
        let mut u = usage_of(usage.get(&scope)?);
        // Saturating: a drift (reported by verify) never wraps into a huge number.
        u.bytes = u.bytes.saturating_add_signed(d.bytes);
        u.objects = u.objects.saturating_add_signed(d.objects);
        usage.insert(scope, &usage_bytes(u))?;
    }
    Ok(())
}

/// The usage change of replacing `old` by `new` (either may be absent).
fn object_delta(new: Option<&Object>, old: Option<&Object>) -> Delta {
    let size = |o: Option<&Object>| o.map_or(0, |o| o.size as i64);
    Delta {
        bytes: size(new) - size(old),
        objects: i64::from(new.is_some()) - i64::from(old.is_some()),
    }
}

/// Keeps the `pending` index in step when `old` is replaced by `new` (either may be absent).
/// Most writes involve no pending version and so touch the index not at all.
fn mark_pending(
    pending: &TransactionalTree,
    okey: &[u8],
    new: Option<&Object>,
    old: Option<&Object>,
) -> TxResult<()> {
    let waits = |o: Option<&Object>| o.is_some_and(|o| o.scan_status() == ScanStatus::Pending);
    match (waits(new), waits(old)) {
        (true, false) => {
            pending.insert(okey, &[])?;
        }
        (false, true) => {
            pending.remove(okey)?;
        }
        _ => {}
    }
    Ok(())
}

fn refs<'a>(segments: impl IntoIterator<Item = &'a Segment>, d: i64) -> Vec<(&'a str, i64)> {
    segments.into_iter().map(|s| (s.blob.as_str(), d)).collect()
}

pub fn now_ms() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 / 1_000_000
}

/// One entry of a bucket listing scan.
pub struct ListedObject {
    pub key: String,
    pub object: Object,
}

/// The changes committed up to the moment it was taken ([`Meta::flush_ticket`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FlushTicket(u64);

pub struct Meta {
    db: sled::Db,
    tenants: Tree,
    access_keys: Tree,
    buckets: Tree,
    objects: Tree,
    uploads: Tree,
    parts: Tree,
    blobs: Tree,
    /// Usage per tenant and per bucket, updated in the same transaction as the records.
    usage: Tree,
    /// Keys of objects stored unscanned, for the scan worker.
    pending: Tree,
    /// Object commits hold it shared, DeleteBucket exclusively: a bucket found empty stays empty
    /// until it is gone (sled transactions cannot range-scan).
    bucket_gate: RwLock<()>,
    /// Striped by upload id. PutPart holds its stripe for its transaction, Complete and Abort
    /// across the scan of the upload's parts and their transaction (which cannot range-scan):
    /// a part committed between the two would otherwise outlive its upload, charged forever.
    upload_locks: Vec<std::sync::Mutex<()>>,
    sync: bool,
    /// Flushes started and finished, numbered in start order (they run one at a time, under
    /// `flush_lock`): a flush numbered above the count of those started when a change was
    /// committed covers that change. See [`FlushTicket`].
    flushes_started: AtomicU64,
    flushes_done: AtomicU64,
    flush_lock: tokio::sync::Mutex<()>,
}

const UPLOAD_STRIPES: usize = 64;

impl Meta {
    fn upload_lock(&self, upload_id: &str) -> std::sync::MutexGuard<'_, ()> {
        let h = upload_id
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
        self.upload_locks[h % UPLOAD_STRIPES]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Opens (or creates) the store in `dir`, keeping at most `cache_bytes` of pages in memory.
    /// With `sync`, every commit is flushed to disk before the caller acknowledges it.
    pub fn open(dir: &Path, sync: bool, cache_bytes: u64) -> MetaResult<Self> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .open()?;
        Ok(Self {
            tenants: db.open_tree("tenants")?,
            access_keys: db.open_tree("access_keys")?,
            buckets: db.open_tree("buckets")?,
            objects: db.open_tree("objects")?,
            uploads: db.open_tree("uploads")?,
            parts: db.open_tree("parts")?,
            blobs: db.open_tree("blobs")?,
            usage: db.open_tree("usage")?,
            pending: db.open_tree("pending")?,
            bucket_gate: RwLock::new(()),
            upload_locks: (0..UPLOAD_STRIPES)
                .map(|_| std::sync::Mutex::new(()))
                .collect(),
            sync,
            flushes_started: AtomicU64::new(0),
            flushes_done: AtomicU64::new(0),
            flush_lock: tokio::sync::Mutex::new(()),
            db,
        })
    }

    /// Makes every change committed before this call durable (when configured to); called
    /// before a write is acknowledged.
    pub async fn durable(&self) -> MetaResult<()> {
        if !self.sync {
            return Ok(());
        }
        self.persist(self.flush_ticket()).await
    }

    /// A ticket for the changes committed so far: [`Meta::persist`] with it returns once they
    /// are on disk.
    pub fn flush_ticket(&self) -> FlushTicket {
        FlushTicket(self.flushes_started.load(Ordering::SeqCst) + 1)
    }

    /// Puts the changes of `ticket` on disk, whatever `sync` says (the deleter does before it
    /// deletes blobs that commits freed). A flush that started after the ticket was taken covers
    /// them: if one has finished already nothing is done, and callers arriving while a flush
    /// runs share the next one (group commit), so N concurrent writers cost about two flushes.
    pub async fn persist(&self, ticket: FlushTicket) -> MetaResult<()> {
        if self.flushes_done.load(Ordering::SeqCst) >= ticket.0 {
            return Ok(());
        }
        let _turn = self.flush_lock.lock().await;
        if self.flushes_done.load(Ordering::SeqCst) >= ticket.0 {
            return Ok(());
        }
        let this = self.flushes_started.fetch_add(1, Ordering::SeqCst) + 1;
        // Not `flush_async`: concurrent calls of it deadlock in sled 0.34 (spacejam/sled#1308,
        // fixed only on its unreleased main). One blocking flush at a time, off the reactor.
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| MetaError::FlushTask(e.to_string()))??;
        self.flushes_done.store(this, Ordering::SeqCst);
        Ok(())
    }

    pub fn flush(&self) -> MetaResult<()> {
        self.db.flush()?;
        Ok(())
    }

    // ---- tenants and keys -------------------------------------------------------------------

    pub fn tenant(&self, id: &str) -> MetaResult<Option<Tenant>> {
        self.tenants.get(id)?.map(|v| decode(&v)).transpose()
    }

    pub fn tenants(&self) -> MetaResult<Vec<Tenant>> {
        self.tenants.iter().map(|r| decode(&r?.1)).collect()
    }

    pub fn create_tenant(&self, tenant: &Tenant) -> MetaResult<()> {
        self.tenants
            .compare_and_swap(&tenant.id, None::<&[u8]>, Some(encode(tenant)))?
            .map_err(|_| MetaError::TenantExists)
    }

    /// Creates the tenant or updates its display name (config bootstrap is idempotent).
    pub fn upsert_tenant(&self, tenant: &Tenant) -> MetaResult<()> {
        let existing = self.tenant(&tenant.id)?;
        let record = Tenant {
            created_ms: existing.map_or(tenant.created_ms, |t| t.created_ms),
            ..tenant.clone()
        };
        self.tenants.insert(&record.id, encode(&record))?;
        Ok(())
    }

    /// Deletes a tenant and its keys; refused while it owns buckets, so no data is orphaned.
    pub fn delete_tenant(&self, id: &str) -> MetaResult<()> {
        if self.tenant(id)?.is_none() {
            return Err(MetaError::NoSuchTenant);
        }
        if self
            .buckets
            .scan_prefix(keys::tenant_prefix(id))
            .next()
            .is_some()
        {
            return Err(MetaError::TenantNotEmpty);
        }
        for key in self.keys_of(id)? {
            self.access_keys.remove(&key.access_key)?;
        }
        self.tenants.remove(id)?;
        Ok(())
    }

    pub fn access_key(&self, access_key: &str) -> MetaResult<Option<AccessKey>> {
        self.access_keys
            .get(access_key)?
            .map(|v| decode(&v))
            .transpose()
    }

    pub fn keys_of(&self, tenant: &str) -> MetaResult<Vec<AccessKey>> {
        let mut out = Vec::new();
        for r in self.access_keys.iter() {
            let k: AccessKey = decode(&r?.1)?;
            if k.tenant == tenant {
                out.push(k);
            }
        }
        Ok(out)
    }

    pub fn create_access_key(&self, key: &AccessKey) -> MetaResult<()> {
        if self.tenant(&key.tenant)?.is_none() {
            return Err(MetaError::NoSuchTenant);
        }
        self.access_keys
            .compare_and_swap(&key.access_key, None::<&[u8]>, Some(encode(key)))?
            .map_err(|_| MetaError::AccessKeyExists)
    }

    /// Writes a key declared in the config file (replacing a previous version of it).
    pub fn upsert_access_key(&self, key: &AccessKey) -> MetaResult<()> {
        self.access_keys.insert(&key.access_key, encode(key))?;
        Ok(())
    }

    pub fn delete_access_key(&self, access_key: &str) -> MetaResult<()> {
        self.access_keys
            .remove(access_key)?
            .map(|_| ())
            .ok_or(MetaError::NoSuchAccessKey)
    }

    // ---- buckets ----------------------------------------------------------------------------

    pub fn bucket(&self, tenant: &str, name: &str) -> MetaResult<Option<Bucket>> {
        self.buckets
            .get(keys::bucket(tenant, name))?
            .map(|v| decode(&v))
            .transpose()
    }

    pub fn require_bucket(&self, tenant: &str, name: &str) -> MetaResult<Bucket> {
        self.bucket(tenant, name)?.ok_or(MetaError::NoSuchBucket)
    }

    pub fn buckets(&self, tenant: &str) -> MetaResult<Vec<Bucket>> {
        self.buckets
            .scan_prefix(keys::tenant_prefix(tenant))
            .map(|r| decode(&r?.1))
            .collect()
    }

    pub fn create_bucket(&self, tenant: &str, bucket: &Bucket) -> MetaResult<()> {
        self.buckets
            .compare_and_swap(
                keys::bucket(tenant, &bucket.name),
                None::<&[u8]>,
                Some(encode(bucket)),
            )?
            .map_err(|_| MetaError::BucketAlreadyOwned)
    }

    /// Removes an empty bucket; `BucketNotEmpty` while it holds objects or open uploads.
    pub fn delete_bucket(&self, tenant: &str, name: &str) -> MetaResult<()> {
        let _gate = self.bucket_gate.write().unwrap_or_else(|e| e.into_inner());
        self.require_bucket(tenant, name)?;
        let prefix = keys::bucket_prefix(tenant, name);
        if self.objects.scan_prefix(&prefix).next().is_some()
            || self.uploads.scan_prefix(&prefix).next().is_some()
        {
            return Err(MetaError::BucketNotEmpty);
        }
        self.buckets.remove(keys::bucket(tenant, name))?;
        self.usage.remove(keys::bucket(tenant, name))?;
        Ok(())
    }

    // ---- objects ----------------------------------------------------------------------------

    pub fn object(&self, tenant: &str, bucket: &str, key: &str) -> MetaResult<Option<Object>> {
        self.objects
            .get(keys::object(tenant, bucket, key))?
            .map(|v| decode(&v))
            .transpose()
    }

    /// Makes `object` the current version of `key`; returns the blobs freed by the replaced
    /// version. `shared`: the object's blobs belong to another object (a copy). `precondition`
    /// sees the current version inside the transaction (If-Match on PUT) and may refuse.
    #[allow(clippy::too_many_arguments)] // every input is used inside the one transaction
    pub fn put_object(
        &self,
        tenant: &str,
        bucket: &str,
        key: &str,
        object: &Object,
        shared: bool,
        allowance: &Delta,
        precondition: &(dyn Fn(Option<&Object>) -> MetaResult<()> + Sync),
    ) -> MetaResult<Vec<String>> {
        let _gate = self.bucket_gate.read().unwrap_or_else(|e| e.into_inner());
        let bkey = keys::bucket(tenant, bucket);
        let okey = keys::object(tenant, bucket, key);
        let value = encode(object);
        flatten(
            (
                &self.buckets,
                &self.objects,
                &self.blobs,
                &self.usage,
                &self.pending,
            )
                .transaction(|(buckets, objects, blobs, usage, pending)| {
                    if buckets.get(&bkey)?.is_none() {
                        return tx_abort(MetaError::NoSuchBucket);
                    }
                    let old: Option<Object> = match objects.get(&okey)? {
                        Some(v) => Some(tx_decode(&v)?),
                        None => None,
                    };
                    precondition(old.as_ref()).or_else(tx_abort)?;
                    charge(
                        usage,
                        tenant,
                        bucket,
                        object_delta(Some(object), old.as_ref()),
                        allowance,
                    )?;
                    mark_pending(pending, &okey, Some(object), old.as_ref())?;
                    objects.insert(okey.as_slice(), value.as_slice())?;
                    let mut deltas = refs(object.segments(), 1);
                    if let Some(old) = &old {
                        deltas.extend(refs(old.segments(), -1));
                    }
                    adjust_refs(blobs, deltas, shared)
                }),
        )
    }

    /// Removes `key`; returns the blobs freed (empty when the key did not exist).
    pub fn delete_object(&self, tenant: &str, bucket: &str, key: &str) -> MetaResult<Vec<String>> {
        let okey = keys::object(tenant, bucket, key);
        flatten(
            (&self.objects, &self.blobs, &self.usage, &self.pending).transaction(
                |(objects, blobs, usage, pending)| match objects.remove(okey.as_slice())? {
                    Some(v) => {
                        let old: Object = tx_decode(&v)?;
                        let d = object_delta(None, Some(&old));
                        charge(usage, tenant, bucket, d, &Delta::UNLIMITED)?;
                        mark_pending(pending, &okey, None, Some(&old))?;
                        adjust_refs(blobs, refs(old.segments(), -1), false)
                    }
                    None => Ok(Vec::new()),
                },
            ),
        )
    }

    /// Replaces the tags of the current version (compare-and-swap, so a concurrent overwrite is
    /// never undone).
    pub fn set_tags(
        &self,
        tenant: &str,
        bucket: &str,
        key: &str,
        tags: Vec<(String, String)>,
    ) -> MetaResult<()> {
        let okey = keys::object(tenant, bucket, key);
        loop {
            let cur = self.objects.get(&okey)?.ok_or(MetaError::NoSuchKey)?;
            let mut object: Object = decode(&cur)?;
            object.tags = tags.clone();
            if self
                .objects
                .compare_and_swap(&okey, Some(&cur), Some(encode(&object)))?
                .is_ok()
            {
                return Ok(());
            }
        }
    }

    /// Objects of a bucket in key order, starting strictly after `after` (or at the start),
    /// restricted to `prefix`. The iterator is lazy: a page reads only what it returns.
    pub fn scan_objects<'a>(
        &'a self,
        tenant: &str,
        bucket: &str,
        prefix: &str,
        after: Option<&[u8]>,
    ) -> impl Iterator<Item = MetaResult<ListedObject>> + 'a {
        let bprefix = keys::bucket_prefix(tenant, bucket);
        let mut start = bprefix.clone();
        start.extend_from_slice(prefix.as_bytes());
        let mut from = start.clone();
        if let Some(after) = after {
            let mut a = bprefix.clone();
            a.extend_from_slice(after);
            a.push(0); // strictly after
            if a > from {
                from = a;
            }
        }
        let plen = bprefix.len();
        self.objects
            .range(from..)
            .take_while(move |r| r.as_ref().map_or(true, |(k, _)| k.starts_with(&start)))
            .map(move |r| {
                let (k, v) = r?;
                let key = String::from_utf8(k[plen..].to_vec())
                    .map_err(|e| MetaError::Corrupt(e.to_string()))?;
                Ok(ListedObject {
                    key,
                    object: decode(&v)?,
                })
            })
    }

    // ---- multipart uploads ------------------------------------------------------------------

    pub fn create_upload(&self, tenant: &str, bucket: &str, upload: &Upload) -> MetaResult<()> {
        let _gate = self.bucket_gate.read().unwrap_or_else(|e| e.into_inner());
        let bkey = keys::bucket(tenant, bucket);
        let ukey = keys::upload(tenant, bucket, &upload.key, &upload.upload_id);
        let value = encode(upload);
        flatten(
            (&self.buckets, &self.uploads).transaction(|(buckets, uploads)| {
                if buckets.get(&bkey)?.is_none() {
                    return tx_abort(MetaError::NoSuchBucket);
                }
                uploads.insert(ukey.as_slice(), value.as_slice())?;
                Ok(())
            }),
        )
    }

    pub fn upload(
        &self,
        tenant: &str,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> MetaResult<Upload> {
        if upload_id.len() != keys::ULID_LEN {
            return Err(MetaError::NoSuchUpload);
        }
        self.uploads
            .get(keys::upload(tenant, bucket, key, upload_id))?
            .map(|v| decode(&v))
            .transpose()?
            .ok_or(MetaError::NoSuchUpload)
    }

    /// The tenant's open uploads, counted up to `limit`.
    pub fn open_uploads(&self, tenant: &str, limit: usize) -> MetaResult<usize> {
        let mut n = 0;
        for k in self.uploads.scan_prefix(keys::tenant_prefix(tenant)).keys() {
            k?;
            n += 1;
            if n >= limit {
                break;
            }
        }
        Ok(n)
    }

    /// Open uploads of a bucket in (key, upload id) order, from `after` = (key, upload id).
    pub fn scan_uploads<'a>(
        &'a self,
        tenant: &str,
        bucket: &str,
        prefix: &str,
        after_key: Option<&str>,
    ) -> impl Iterator<Item = MetaResult<Upload>> + 'a {
        let bprefix = keys::bucket_prefix(tenant, bucket);
        let mut start = bprefix.clone();
        start.extend_from_slice(prefix.as_bytes());
        let mut from = start.clone();
        if let Some(after) = after_key {
            // Every upload of key K is stored as K\0<id>, so starting at K\x01 skips them all.
            let mut a = bprefix.clone();
            a.extend_from_slice(after.as_bytes());
            a.push(1);
            if a > from {
                from = a;
            }
        }
        self.uploads
            .range(from..)
            .take_while(move |r| r.as_ref().map_or(true, |(k, _)| k.starts_with(&start)))
            .map(|r| decode(&r?.1))
    }

    pub fn parts(&self, upload_id: &str) -> MetaResult<Vec<Part>> {
        self.parts
            .scan_prefix(upload_id.as_bytes())
            .map(|r| decode(&r?.1))
            .collect()
    }

    /// Records a part of an open upload (replacing a part with the same number); returns the
    /// blobs freed by the replaced part. `shared` as for [`Meta::put_object`] (UploadPartCopy).
    #[allow(clippy::too_many_arguments)] // every input is used inside the one transaction
    pub fn put_part(
        &self,
        tenant: &str,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part: &Part,
        shared: bool,
        allowance: &Delta,
    ) -> MetaResult<Vec<String>> {
        let ukey = keys::upload(tenant, bucket, key, upload_id);
        let pkey = keys::part(upload_id, part.part_number);
        let value = encode(part);
        let _upload = self.upload_lock(upload_id);
        flatten(
            (&self.uploads, &self.parts, &self.blobs, &self.usage).transaction(
                |(uploads, parts, blobs, usage)| {
                    if uploads.get(&ukey)?.is_none() {
                        return tx_abort(MetaError::NoSuchUpload);
                    }
                    let mut deltas = refs(&part.segments, 1);
                    let old = parts.insert(pkey.as_slice(), value.as_slice())?;
                    let old: Option<Part> = old.map(|v| tx_decode(&v)).transpose()?;
                    if let Some(old) = &old {
                        deltas.extend(refs(&old.segments, -1));
                    }
                    let d = Delta {
                        bytes: part.size as i64 - old.as_ref().map_or(0, |p| p.size as i64),
                        objects: 0,
                    };
                    charge(usage, tenant, bucket, d, allowance)?;
                    adjust_refs(blobs, deltas, shared)
                },
            ),
        )
    }

    /// Removes an upload and all its parts; returns the freed blobs.
    pub fn abort_upload(
        &self,
        tenant: &str,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> MetaResult<Vec<String>> {
        self.upload(tenant, bucket, key, upload_id)?;
        let ukey = keys::upload(tenant, bucket, key, upload_id);
        let _upload = self.upload_lock(upload_id);
        let part_keys: Vec<Vec<u8>> = self
            .parts
            .scan_prefix(upload_id.as_bytes())
            .keys()
            .map(|k| k.map(|k| k.to_vec()))
            .collect::<Result<_, _>>()?;
        flatten(
            (&self.uploads, &self.parts, &self.blobs, &self.usage).transaction(
                |(uploads, parts, blobs, usage)| {
                    if uploads.remove(ukey.as_slice())?.is_none() {
                        return tx_abort(MetaError::NoSuchUpload);
                    }
                    let mut deltas = Vec::new();
                    let mut bytes = 0i64;
                    for pk in &part_keys {
                        if let Some(v) = parts.remove(pk.as_slice())? {
                            let p: Part = tx_decode(&v)?;
                            bytes -= p.size as i64;
                            deltas.extend(p.segments.into_iter().map(|s| (s.blob, -1)));
                        }
                    }
                    let d = Delta { bytes, objects: 0 };
                    charge(usage, tenant, bucket, d, &Delta::UNLIMITED)?;
                    adjust_refs(blobs, deltas.iter().map(|(b, d)| (b.as_str(), *d)), false)
                },
            ),
        )
    }

    /// Turns an upload into the current version of its key in one transaction: the upload and
    /// all its parts go, `object` (whose segments are those of the chosen parts) becomes current.
    /// Parts that were uploaded but not chosen, and the replaced version, are released.
    pub fn complete_upload(
        &self,
        tenant: &str,
        bucket: &str,
        upload: &Upload,
        object: &Object,
        allowance: &Delta,
    ) -> MetaResult<Vec<String>> {
        let _gate = self.bucket_gate.read().unwrap_or_else(|e| e.into_inner());
        let ukey = keys::upload(tenant, bucket, &upload.key, &upload.upload_id);
        let okey = keys::object(tenant, bucket, &upload.key);
        let _upload = self.upload_lock(&upload.upload_id);
        let part_keys: Vec<Vec<u8>> = self
            .parts
            .scan_prefix(upload.upload_id.as_bytes())
            .keys()
            .map(|k| k.map(|k| k.to_vec()))
            .collect::<Result<_, _>>()?;
        let value = encode(object);
        flatten(
            (
                &self.uploads,
                &self.parts,
                &self.objects,
                &self.blobs,
                &self.usage,
                &self.pending,
            )
                .transaction(|(uploads, parts, objects, blobs, usage, pending)| {
                    if uploads.remove(ukey.as_slice())?.is_none() {
                        return tx_abort(MetaError::NoSuchUpload);
                    }
                    let mut deltas: Vec<(String, i64)> = Vec::new();
                    let mut part_bytes = 0i64;
                    for pk in &part_keys {
                        if let Some(v) = parts.remove(pk.as_slice())? {
                            let p: Part = tx_decode(&v)?;
                            part_bytes += p.size as i64;
                            deltas.extend(p.segments.into_iter().map(|s| (s.blob, -1)));
                        }
                    }
                    deltas.extend(object.segments().map(|s| (s.blob.clone(), 1)));
                    let old: Option<Object> = objects
                        .insert(okey.as_slice(), value.as_slice())?
                        .map(|v| tx_decode(&v))
                        .transpose()?;
                    if let Some(old) = &old {
                        deltas.extend(old.segments().map(|s| (s.blob.clone(), -1)));
                    }
                    // The parts were charged as they arrived; they now become the object.
                    let mut d = object_delta(Some(object), old.as_ref());
                    d.bytes -= part_bytes;
                    charge(usage, tenant, bucket, d, allowance)?;
                    mark_pending(pending, &okey, Some(object), old.as_ref())?;
                    adjust_refs(blobs, deltas.iter().map(|(b, d)| (b.as_str(), *d)), false)
                }),
        )
    }

    // ---- usage, settings and scans ----------------------------------------------------------

    /// What the tenant (`bucket` = `None`) or one of its buckets stores, as recorded.
    pub fn usage(&self, tenant: &str, bucket: Option<&str>) -> MetaResult<Usage> {
        let scope = match bucket {
            Some(b) => keys::bucket(tenant, b),
            None => keys::tenant_prefix(tenant),
        };
        Ok(usage_of(self.usage.get(scope)?))
    }

    /// Recomputes usage from the records themselves: the tenant's total and each bucket's.
    pub fn computed_usage(&self, tenant: &str) -> MetaResult<(Usage, BTreeMap<String, Usage>)> {
        let mut total = Usage::default();
        let mut per = BTreeMap::new();
        for b in self.buckets(tenant)? {
            let mut u = Usage::default();
            for o in self.scan_objects(tenant, &b.name, "", None) {
                u.bytes += o?.object.size;
                u.objects += 1;
            }
            for up in self.scan_uploads(tenant, &b.name, "", None) {
                for p in self.parts(&up?.upload_id)? {
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
    pub fn backfill_usage(&self) -> MetaResult<usize> {
        if !self.usage.is_empty() || (self.objects.is_empty() && self.parts.is_empty()) {
            return Ok(0);
        }
        let tenants = self.tenants()?;
        for t in &tenants {
            let (total, per) = self.computed_usage(&t.id)?;
            self.usage
                .insert(keys::tenant_prefix(&t.id), &usage_bytes(total))?;
            for (b, u) in per {
                self.usage
                    .insert(keys::bucket(&t.id, &b), &usage_bytes(u))?;
            }
        }
        Ok(tenants.len())
    }

    /// Changes a tenant record in place (compare-and-swap, retried on a concurrent change).
    pub fn update_tenant(&self, id: &str, change: impl Fn(&mut Tenant)) -> MetaResult<Tenant> {
        loop {
            let cur = self.tenants.get(id)?.ok_or(MetaError::NoSuchTenant)?;
            let mut t: Tenant = decode(&cur)?;
            change(&mut t);
            if self
                .tenants
                .compare_and_swap(id, Some(&cur), Some(encode(&t)))?
                .is_ok()
            {
                return Ok(t);
            }
        }
    }

    /// Stores a scan verdict on the version that was scanned; `Conflict` when the key now holds
    /// another version (the new one has its own verdict).
    pub fn set_scan(
        &self,
        tenant: &str,
        bucket: &str,
        key: &str,
        etag: &str,
        last_modified_ms: i64,
        scan: ScanInfo,
    ) -> MetaResult<()> {
        let okey = keys::object(tenant, bucket, key);
        flatten(
            (&self.objects, &self.pending).transaction(|(objects, pending)| {
                let Some(cur) = objects.get(&okey)? else {
                    return tx_abort(MetaError::Conflict);
                };
                let old: Object = tx_decode(&cur)?;
                if old.etag != etag || old.last_modified_ms != last_modified_ms {
                    return tx_abort(MetaError::Conflict);
                }
                let new = Object {
                    scan: Some(scan.clone()),
                    ..old.clone()
                };
                objects.insert(okey.as_slice(), encode(&new).as_slice())?;
                mark_pending(pending, &okey, Some(&new), Some(&old))
            }),
        )
    }

    /// Up to `limit` objects waiting for a scan, as (tenant, bucket, key).
    pub fn pending_scans(&self, limit: usize) -> MetaResult<Vec<(String, String, String)>> {
        let mut out = Vec::new();
        for k in self.pending.iter().keys().take(limit) {
            let k = k?;
            let (tenant, bucket) =
                split_bucket_prefix(&k).ok_or_else(|| MetaError::Corrupt("pending key".into()))?;
            let rest = &k[keys::bucket_prefix(&tenant, &bucket).len()..];
            let key =
                String::from_utf8(rest.to_vec()).map_err(|e| MetaError::Corrupt(e.to_string()))?;
            out.push((tenant, bucket, key));
        }
        Ok(out)
    }

    // ---- blobs ------------------------------------------------------------------------------

    /// True when some object or part still names `blob`.
    pub fn blob_referenced(&self, blob: &str) -> MetaResult<bool> {
        Ok(self.blobs.contains_key(blob)?)
    }

    /// Open uploads initiated before `before_ms`, for the sweeper to abort.
    pub fn stale_uploads(&self, before_ms: i64) -> MetaResult<Vec<(String, String, Upload)>> {
        let mut out = Vec::new();
        for r in self.uploads.iter() {
            let (k, v) = r?;
            let upload: Upload = decode(&v)?;
            if upload.initiated_ms < before_ms {
                let (tenant, bucket) = split_bucket_prefix(&k)
                    .ok_or_else(|| MetaError::Corrupt("upload key".into()))?;
                out.push((tenant, bucket, upload));
            }
        }
        Ok(out)
    }
}

fn split_bucket_prefix(k: &[u8]) -> Option<(String, String)> {
    let tl = *k.first()? as usize;
    let tenant = k.get(1..1 + tl)?;
    let bl = *k.get(1 + tl)? as usize;
    let bucket = k.get(2 + tl..2 + tl + bl)?;
    Some((
        String::from_utf8(tenant.to_vec()).ok()?,
        String::from_utf8(bucket.to_vec()).ok()?,
    ))
}

/// Fixtures for the unit tests of meta and of the modules built on it.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Arc;

    use super::*;

    /// A store with tenant `t` and its bucket `b`.
    pub(crate) fn meta() -> (tempfile::TempDir, Arc<Meta>) {
        let dir = tempfile::tempdir().unwrap();
        let m = Arc::new(Meta::open(dir.path(), false, 8 << 20).unwrap());
        m.create_tenant(&Tenant {
            id: "t".into(),
            display_name: "t".into(),
            created_ms: 0,
            placement: None,
            locations: vec![],
            quota: Limits::default(),
            policy: Default::default(),
            buckets: Default::default(),
        })
        .unwrap();
        m.create_bucket(
            "t",
            &Bucket {
                name: "b".into(),
                created_ms: 0,
                location: "r".into(),
                placement: None,
            },
        )
        .unwrap();
        (dir, m)
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
            }],
            multipart: false,
            detected_type: None,
            scan: None,
        }
    }
}

#[cfg(test)]
mod tests {

    /// A ticket is covered by the first flush that starts after it was taken, and by no
    /// earlier one; concurrent holders of one ticket share one flush.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flush_ticket_waits_for_a_flush_that_started_after_it() {
        let (_dir, m) = testing::meta();
        let flushes = || m.flushes_done.load(Ordering::SeqCst);
        let first = m.flush_ticket();
        let (a, b) = tokio::join!(m.persist(first), m.persist(first));
        a.unwrap();
        b.unwrap();
        assert_eq!(flushes(), 1, "one flush covers both holders of the ticket");
        m.persist(first).await.unwrap();
        assert_eq!(flushes(), 1, "already covered: no flush");
        let second = m.flush_ticket();
        assert!(second > first);
        m.persist(second).await.unwrap();
        assert_eq!(flushes(), 2, "a later ticket needs a later flush");
        // `durable` does nothing without `sync` (testing::meta opens with sync off).
        m.durable().await.unwrap();
        assert_eq!(flushes(), 2);
    }
    use super::testing::{meta, object};
    use super::*;

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

    #[test]
    fn the_pending_index_follows_the_current_version() {
        let (_d, m) = meta();
        let put = |k: &str, o: &Object| {
            m.put_object("t", "b", k, o, false, &Delta::UNLIMITED, &|_| Ok(()))
                .unwrap();
        };
        put("a", &pending(ScanStatus::Pending));
        put("b", &pending(ScanStatus::Pending));
        put("c", &pending(ScanStatus::Clean));
        let keys = |m: &Meta| -> Vec<String> {
            m.pending_scans(10)
                .unwrap()
                .into_iter()
                .map(|(_, _, k)| k)
                .collect()
        };
        assert_eq!(keys(&m), ["a", "b"]);
        // A verdict, an overwrite and a delete each take a key off the list.
        let clean = ScanInfo {
            status: ScanStatus::Clean,
            signature: None,
            engine: None,
            at_ms: 1,
        };
        m.set_scan("t", "b", "a", "e", 0, clean).unwrap();
        put("b", &pending(ScanStatus::Clean));
        assert!(keys(&m).is_empty());
        put("c", &pending(ScanStatus::Pending));
        m.delete_object("t", "b", "c").unwrap();
        assert!(keys(&m).is_empty());
    }

    #[test]
    fn usage_is_backfilled_once_for_a_store_without_it() {
        let (_d, m) = meta();
        m.put_object("t", "b", "k", &object(7), false, &Delta::UNLIMITED, &|_| {
            Ok(())
        })
        .unwrap();
        // A store written before usage was tracked has objects and no usage.
        m.usage.clear().unwrap();
        assert_eq!(m.usage("t", None).unwrap(), Usage::default());
        assert_eq!(m.backfill_usage().unwrap(), 1);
        let want = Usage {
            bytes: 7,
            objects: 1,
        };
        assert_eq!(m.usage("t", None).unwrap(), want);
        assert_eq!(m.usage("t", Some("b")).unwrap(), want);
        // Recorded usage is never recomputed over.
        assert_eq!(m.backfill_usage().unwrap(), 0);
    }
}
