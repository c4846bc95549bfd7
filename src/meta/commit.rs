//! The one write path (DESIGN.md §10): every change to the index is a [`Commit`] — the change as
//! data, its precondition as data, and what its writer reserved — applied by [`Meta::commit`],
//! atomic and durable when it returns. The rules every change obeys are written here once, above
//! the engines: usage deltas checked against the reservation, blob reference counts, the
//! pending-scan index, preconditions. Blobs a commit frees are handed to the deleter after the
//! commit, never before.
//!
//! [`Meta::commit`]: super::Meta::commit

use std::collections::HashMap;

use super::engine::Tree;
use super::txn::Txn;
use super::{MetaError, MetaResult, keys};
use crate::model::*;

/// What must hold of the current version for a write to apply (If-Match / If-None-Match).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Precondition {
    #[default]
    Always,
    /// `If-Match: *`: some version exists.
    Exists,
    /// `If-Match: "etag"`: the current version has this strong ETag.
    IfMatch(String),
    /// `If-None-Match: *`: no version exists.
    Absent,
    /// A condition nothing satisfies (`If-Match` with a weak ETag).
    Never,
}

impl Precondition {
    pub fn holds(&self, current: Option<&Object>) -> bool {
        match (self, current) {
            (Precondition::Always, _) => true,
            (Precondition::Exists, c) => c.is_some(),
            (Precondition::IfMatch(e), Some(c)) => &c.etag == e,
            (Precondition::IfMatch(_), None) => false,
            (Precondition::Absent, c) => c.is_none(),
            (Precondition::Never, _) => false,
        }
    }
}

/// A change to the index, as data.
// One lives per request, moved by reference into the commit: boxing the records would cost an
// allocation each and save nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Change {
    CreateTenant(Tenant),
    /// Creates the tenant or updates it, keeping its creation time (config bootstrap).
    UpsertTenant(Tenant),
    /// Replaces `old` by `new`; `Conflict` when the stored record is no longer `old`.
    ReplaceTenant {
        old: Tenant,
        new: Tenant,
    },
    /// Deletes a tenant and its keys; refused while it owns buckets.
    DeleteTenant(String),
    CreateAccessKey(AccessKey),
    UpsertAccessKey(AccessKey),
    DeleteAccessKey(String),
    CreateBucket {
        tenant: String,
        bucket: Bucket,
    },
    /// Removes an empty bucket; `BucketNotEmpty` while it holds objects or open uploads.
    DeleteBucket {
        tenant: String,
        bucket: String,
    },
    /// Makes `object` the current version of `key`. `shared`: its blobs belong to another
    /// object (a copy), and must still be referenced when the commit applies.
    PutObject {
        tenant: String,
        bucket: String,
        key: String,
        object: Object,
        shared: bool,
    },
    DeleteObject {
        tenant: String,
        bucket: String,
        key: String,
    },
    /// Replaces a bucket's tag set (empty: deletes it).
    SetBucketTags {
        tenant: String,
        bucket: String,
        tags: Vec<(String, String)>,
    },
    /// Replaces the tags of the current version.
    SetTags {
        tenant: String,
        bucket: String,
        key: String,
        tags: Vec<(String, String)>,
    },
    /// Stores a verdict on the version that was scanned (`etag`, `last_modified_ms`);
    /// `Conflict` when the key now holds another version.
    SetScan {
        tenant: String,
        bucket: String,
        key: String,
        etag: String,
        last_modified_ms: i64,
        scan: ScanInfo,
    },
    CreateUpload {
        tenant: String,
        bucket: String,
        upload: Upload,
    },
    /// Records a part (replacing one with the same number). `shared` as for `PutObject`.
    PutPart {
        tenant: String,
        bucket: String,
        key: String,
        upload_id: String,
        part: Part,
        shared: bool,
    },
    /// The upload and all its parts go; `object` (made of the chosen parts' segments) becomes
    /// current. Parts not chosen and the replaced version are freed.
    CompleteUpload {
        tenant: String,
        bucket: String,
        upload: Upload,
        object: Object,
        /// The parts list it is completed with (number, ETag), kept in its `Completion`.
        parts: Vec<(u32, String)>,
    },
    /// A completion past its lifetime is forgotten (the sweeper).
    ForgetCompletion {
        tenant: String,
        bucket: String,
        key: String,
        upload_id: String,
    },
    AbortUpload {
        tenant: String,
        bucket: String,
        key: String,
        upload_id: String,
    },
    /// Shared state of the nodes (registry, leases, reservations, jobs): `meta::coord`.
    Coord(super::coord::Coord),
}

impl Change {
    /// The tenant whose data the change is about (none for access-key deletions, which name
    /// only the key, and for the nodes' coordination).
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Change::CreateTenant(t) | Change::UpsertTenant(t) => Some(&t.id),
            Change::ReplaceTenant { new, .. } => Some(&new.id),
            Change::DeleteTenant(id) => Some(id),
            Change::CreateAccessKey(k) | Change::UpsertAccessKey(k) => Some(&k.tenant),
            Change::DeleteAccessKey(_) | Change::Coord(_) => None,
            Change::CreateBucket { tenant, .. }
            | Change::DeleteBucket { tenant, .. }
            | Change::PutObject { tenant, .. }
            | Change::DeleteObject { tenant, .. }
            | Change::SetBucketTags { tenant, .. }
            | Change::SetTags { tenant, .. }
            | Change::SetScan { tenant, .. }
            | Change::CreateUpload { tenant, .. }
            | Change::PutPart { tenant, .. }
            | Change::CompleteUpload { tenant, .. }
            | Change::ForgetCompletion { tenant, .. }
            | Change::AbortUpload { tenant, .. } => Some(tenant),
        }
    }
}

/// Who made a change, and in which request: what the audit trail and events will name.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Stamp {
    #[serde(flatten)]
    pub actor: Actor,
    /// The S3 request's id (its `x-amz-request-id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Actor {
    /// A request signed with a tenant's access key.
    Key {
        tenant: String,
        user: String,
        access_key: String,
    },
    /// The admin API.
    Admin,
    /// A background worker, by the name it runs under.
    Worker { name: String },
    /// The gateway itself: its configuration at start, the nodes' coordination.
    System,
}

impl Stamp {
    pub fn system() -> Self {
        Self {
            actor: Actor::System,
            request_id: None,
        }
    }

    pub fn admin() -> Self {
        Self {
            actor: Actor::Admin,
            request_id: None,
        }
    }

    pub fn worker(name: &str) -> Self {
        Self {
            actor: Actor::Worker {
                name: name.to_string(),
            },
            request_id: None,
        }
    }
}

/// A change, its precondition, and how much usage it may add (what its writer reserved).
#[derive(Debug, Clone)]
pub struct Commit {
    pub change: Change,
    pub precondition: Precondition,
    pub allowance: Delta,
    /// The writer's reservation, given back by this commit ([`super::coord::Settle`]).
    pub settle: Option<super::coord::Settle>,
    /// Who made it: every S3, admin and worker commit says so (`by`); the rest is the system's.
    pub by: Stamp,
}

impl Commit {
    /// A change with no precondition and no quota bound (admin changes, deletes, workers), made
    /// by the system until [`Commit::by`] says who.
    pub fn new(change: Change) -> Self {
        Self {
            change,
            precondition: Precondition::Always,
            allowance: Delta::UNLIMITED,
            settle: None,
            by: Stamp::system(),
        }
    }

    pub fn by(mut self, by: Stamp) -> Self {
        self.by = by;
        self
    }

    /// True for changes that need not be on disk when they return: a heartbeat (a lost one
    /// makes the node look older than it is; at worst it is fenced and joins again).
    /// Reservations, gates, leases and in-flight counts are durable: a database crash must not
    /// give another node the room of an upload still in flight.
    pub(super) fn ephemeral(&self) -> bool {
        matches!(
            self.change,
            Change::Coord(super::coord::Coord::Heartbeat { .. })
        )
    }

    /// True for coordination state (`engine::Batch::coordination`): an embedded engine need not
    /// flush it.
    pub(super) fn coordination(&self) -> bool {
        matches!(self.change, Change::Coord(_))
    }

    pub fn when(mut self, precondition: Precondition) -> Self {
        self.precondition = precondition;
        self
    }
}

/// Most parts an upload may have (S3's limit), the bound of the range its commits read.
const MAX_PARTS: usize = 10_000;

/// Applies the rules of `c` to one attempt; returns the blobs it frees.
pub(super) async fn apply(tx: &mut Txn<'_>, c: &Commit) -> MetaResult<Vec<String>> {
    let mut rules = Rules {
        tx,
        refs: HashMap::new(),
        shared: false,
    };
    if let Some(s) = &c.settle {
        super::coord::settle(rules.tx, s).await?;
    }
    match &c.change {
        Change::Coord(coord) => super::coord::apply(rules.tx, coord).await?,
        Change::CreateTenant(t) => {
            if rules
                .tx
                .get(Tree::Tenants, t.id.as_bytes())
                .await?
                .is_some()
            {
                return Err(MetaError::TenantExists);
            }
            rules
                .tx
                .put_record(Tree::Tenants, t.id.as_bytes().to_vec(), t);
        }
        Change::UpsertTenant(t) => {
            let old: Option<Tenant> = rules.tx.record(Tree::Tenants, t.id.as_bytes()).await?;
            let record = Tenant {
                created_ms: old.map_or(t.created_ms, |o| o.created_ms),
                ..t.clone()
            };
            rules
                .tx
                .put_record(Tree::Tenants, t.id.as_bytes().to_vec(), &record);
        }
        Change::ReplaceTenant { old, new } => {
            let cur = rules.tx.get(Tree::Tenants, old.id.as_bytes()).await?;
            match cur {
                None => return Err(MetaError::NoSuchTenant),
                Some(v) if v != super::encode(old) => return Err(MetaError::Conflict),
                Some(_) => {}
            }
            rules
                .tx
                .put_record(Tree::Tenants, new.id.as_bytes().to_vec(), new);
        }
        Change::DeleteTenant(id) => {
            if rules.tx.get(Tree::Tenants, id.as_bytes()).await?.is_none() {
                return Err(MetaError::NoSuchTenant);
            }
            // Buckets are created under a check of their tenant, so this range stays empty.
            if !rules
                .tx
                .is_empty(Tree::Buckets, &keys::tenant_prefix(id))
                .await?
            {
                return Err(MetaError::TenantNotEmpty);
            }
            for (k, v) in scan_all(rules.tx, Tree::AccessKeys).await? {
                let key: AccessKey = super::decode(&v)?;
                if key.tenant == *id {
                    rules.tx.delete(Tree::AccessKeys, k);
                }
            }
            rules.tx.delete(Tree::Tenants, id.as_bytes().to_vec());
        }
        Change::CreateAccessKey(k) => {
            if rules
                .tx
                .get(Tree::Tenants, k.tenant.as_bytes())
                .await?
                .is_none()
            {
                return Err(MetaError::NoSuchTenant);
            }
            let kk = k.access_key.as_bytes();
            if rules.tx.get(Tree::AccessKeys, kk).await?.is_some() {
                return Err(MetaError::AccessKeyExists);
            }
            rules.tx.put_record(Tree::AccessKeys, kk.to_vec(), k);
        }
        Change::UpsertAccessKey(k) => {
            rules
                .tx
                .put_record(Tree::AccessKeys, k.access_key.as_bytes().to_vec(), k);
        }
        Change::DeleteAccessKey(id) => {
            if rules
                .tx
                .get(Tree::AccessKeys, id.as_bytes())
                .await?
                .is_none()
            {
                return Err(MetaError::NoSuchAccessKey);
            }
            rules.tx.delete(Tree::AccessKeys, id.as_bytes().to_vec());
        }
        Change::CreateBucket { tenant, bucket } => {
            // Read (and so checked) for DeleteTenant's sake, which checks for buckets under it.
            rules.tx.get(Tree::Tenants, tenant.as_bytes()).await?;
            let bkey = keys::bucket(tenant, &bucket.name);
            if rules.tx.get(Tree::Buckets, &bkey).await?.is_some() {
                return Err(MetaError::BucketAlreadyOwned);
            }
            rules.tx.put_record(Tree::Buckets, bkey, bucket);
        }
        Change::DeleteBucket { tenant, bucket } => {
            let bkey = keys::bucket(tenant, bucket);
            if rules.tx.get(Tree::Buckets, &bkey).await?.is_none() {
                return Err(MetaError::NoSuchBucket);
            }
            // Writers into the bucket check its record, so these ranges stay empty until the
            // bucket is gone (engine.rs: ranges are guarded by a record).
            let prefix = keys::bucket_prefix(tenant, bucket);
            if !rules.tx.is_empty(Tree::Objects, &prefix).await?
                || !rules.tx.is_empty(Tree::Uploads, &prefix).await?
            {
                return Err(MetaError::BucketNotEmpty);
            }
            // A write admitted on any node counts itself in flight before its body is read; one
            // admitted after this read finds no bucket at its commit.
            if super::coord::writes_in_flight(rules.tx.engine(), tenant, bucket).await? > 0 {
                return Err(MetaError::BucketBusy);
            }
            rules.tx.delete(Tree::Buckets, bkey.clone());
            rules.tx.delete(Tree::Usage, bkey);
        }
        Change::PutObject {
            tenant,
            bucket,
            key,
            object,
            shared,
        } => {
            rules.require_bucket(tenant, bucket).await?;
            rules.shared = *shared;
            let okey = keys::object(tenant, bucket, key);
            let old: Option<Object> = rules.tx.record(Tree::Objects, &okey).await?;
            if !c.precondition.holds(old.as_ref()) {
                return Err(MetaError::Conflict);
            }
            let d = object_delta(Some(object), old.as_ref());
            rules.charge(tenant, bucket, d, &c.allowance).await?;
            rules.pending(&okey, Some(object), old.as_ref());
            rules.count(object.segments(), 1);
            if let Some(old) = &old {
                rules.count(old.segments(), -1);
            }
            rules.tx.put_record(Tree::Objects, okey, object);
        }
        Change::DeleteObject {
            tenant,
            bucket,
            key,
        } => {
            let okey = keys::object(tenant, bucket, key);
            let Some(old) = rules.tx.record::<Object>(Tree::Objects, &okey).await? else {
                return Ok(Vec::new());
            };
            if !c.precondition.holds(Some(&old)) {
                return Err(MetaError::Conflict);
            }
            let d = object_delta(None, Some(&old));
            rules.charge(tenant, bucket, d, &Delta::UNLIMITED).await?;
            rules.pending(&okey, None, Some(&old));
            rules.count(old.segments(), -1);
            rules.tx.delete(Tree::Objects, okey);
        }
        Change::SetBucketTags {
            tenant,
            bucket,
            tags,
        } => {
            let bkey = keys::bucket(tenant, bucket);
            let mut record: Bucket = rules
                .tx
                .record(Tree::Buckets, &bkey)
                .await?
                .ok_or(MetaError::NoSuchBucket)?;
            record.tags = tags.clone();
            rules.tx.put_record(Tree::Buckets, bkey, &record);
        }
        Change::SetTags {
            tenant,
            bucket,
            key,
            tags,
        } => {
            let okey = keys::object(tenant, bucket, key);
            let mut object: Object = rules
                .tx
                .record(Tree::Objects, &okey)
                .await?
                .ok_or(MetaError::NoSuchKey)?;
            object.tags = tags.clone();
            rules.tx.put_record(Tree::Objects, okey, &object);
        }
        Change::SetScan {
            tenant,
            bucket,
            key,
            etag,
            last_modified_ms,
            scan,
        } => {
            let okey = keys::object(tenant, bucket, key);
            let Some(old) = rules.tx.record::<Object>(Tree::Objects, &okey).await? else {
                return Err(MetaError::Conflict);
            };
            if old.etag != *etag || old.last_modified_ms != *last_modified_ms {
                return Err(MetaError::Conflict);
            }
            let new = Object {
                scan: Some(scan.clone()),
                ..old.clone()
            };
            rules.pending(&okey, Some(&new), Some(&old));
            rules.tx.put_record(Tree::Objects, okey, &new);
        }
        Change::CreateUpload {
            tenant,
            bucket,
            upload,
        } => {
            rules.require_bucket(tenant, bucket).await?;
            let ukey = keys::upload(tenant, bucket, &upload.key, &upload.upload_id);
            rules.tx.put_record(Tree::Uploads, ukey, upload);
            rules
                .tx
                .add(Tree::Usage, keys::open_uploads(tenant), [1, 0]);
        }
        Change::PutPart {
            tenant,
            bucket,
            key,
            upload_id,
            part,
            shared,
        } => {
            // Checked (so Complete and Abort, which delete it, are ordered with this commit).
            let ukey = keys::upload(tenant, bucket, key, upload_id);
            if rules.tx.get(Tree::Uploads, &ukey).await?.is_none() {
                return Err(MetaError::NoSuchUpload);
            }
            rules.shared = *shared;
            let pkey = keys::part(upload_id, part.part_number);
            let old: Option<Part> = rules.tx.record(Tree::Parts, &pkey).await?;
            let d = Delta {
                bytes: part.size as i64 - old.as_ref().map_or(0, |p| p.size as i64),
                objects: 0,
            };
            rules.charge(tenant, bucket, d, &c.allowance).await?;
            rules.count(&part.segments, 1);
            match &old {
                Some(old) => rules.count(&old.segments, -1),
                None => rules
                    .tx
                    .add(Tree::Usage, keys::open_uploads(tenant), [0, 1]),
            }
            rules.tx.put_record(Tree::Parts, pkey, part);
        }
        Change::AbortUpload {
            tenant,
            bucket,
            key,
            upload_id,
        } => {
            // Parts are found by the id as a prefix: only a whole id may name them.
            if upload_id.len() != keys::ULID_LEN {
                return Err(MetaError::NoSuchUpload);
            }
            let ukey = keys::upload(tenant, bucket, key, upload_id);
            if rules.tx.get(Tree::Uploads, &ukey).await?.is_none() {
                return Err(MetaError::NoSuchUpload);
            }
            rules.tx.delete(Tree::Uploads, ukey);
            let (part_bytes, parts) = rules.drop_parts(upload_id).await?;
            rules
                .tx
                .add(Tree::Usage, keys::open_uploads(tenant), [-1, -parts]);
            let d = Delta {
                bytes: -part_bytes,
                objects: 0,
            };
            rules.charge(tenant, bucket, d, &Delta::UNLIMITED).await?;
        }
        Change::CompleteUpload {
            tenant,
            bucket,
            upload,
            object,
            parts,
        } => {
            let ukey = keys::upload(tenant, bucket, &upload.key, &upload.upload_id);
            if rules.tx.get(Tree::Uploads, &ukey).await?.is_none() {
                return Err(MetaError::NoSuchUpload);
            }
            rules.tx.delete(Tree::Uploads, ukey.clone());
            let completion = Completion {
                key: upload.key.clone(),
                upload_id: upload.upload_id.clone(),
                completed_ms: object.last_modified_ms,
                etag: object.etag.clone(),
                parts: parts.clone(),
                checksums: object.checksums.clone(),
            };
            rules.tx.put_record(Tree::Completions, ukey, &completion);
            let (part_bytes, parts) = rules.drop_parts(&upload.upload_id).await?;
            rules
                .tx
                .add(Tree::Usage, keys::open_uploads(tenant), [-1, -parts]);
            let okey = keys::object(tenant, bucket, &upload.key);
            let old: Option<Object> = rules.tx.record(Tree::Objects, &okey).await?;
            if !c.precondition.holds(old.as_ref()) {
                return Err(MetaError::Conflict);
            }
            rules.count(object.segments(), 1);
            if let Some(old) = &old {
                rules.count(old.segments(), -1);
            }
            // The parts were charged as they arrived; they now become the object.
            let mut d = object_delta(Some(object), old.as_ref());
            d.bytes -= part_bytes;
            rules.charge(tenant, bucket, d, &c.allowance).await?;
            rules.pending(&okey, Some(object), old.as_ref());
            rules.tx.put_record(Tree::Objects, okey, object);
        }
        Change::ForgetCompletion {
            tenant,
            bucket,
            key,
            upload_id,
        } => {
            let ukey = keys::upload(tenant, bucket, key, upload_id);
            rules.tx.delete(Tree::Completions, ukey);
        }
    }
    rules.settle_refs().await
}

/// Every entry of a small tree (access keys), through the attempt.
async fn scan_all(tx: &mut Txn<'_>, tree: Tree) -> MetaResult<Vec<(Vec<u8>, Vec<u8>)>> {
    tx.range(tree, &[], 1_000_000).await
}

/// The usage change of replacing `old` by `new` (either may be absent).
fn object_delta(new: Option<&Object>, old: Option<&Object>) -> Delta {
    let size = |o: Option<&Object>| o.map_or(0, |o| o.size as i64);
    Delta {
        bytes: size(new) - size(old),
        objects: i64::from(new.is_some()) - i64::from(old.is_some()),
    }
}

/// The rules shared by the changes, applied to one attempt.
struct Rules<'a, 'e> {
    tx: &'a mut Txn<'e>,
    /// Reference-count deltas per blob, settled once at the end.
    refs: HashMap<String, i64>,
    /// The new references are to blobs that must already be referenced (a copy): if the source
    /// was deleted meanwhile, its blobs may be gone, so the commit is refused instead of creating
    /// an object without bytes.
    shared: bool,
}

impl Rules<'_, '_> {
    async fn require_bucket(&mut self, tenant: &str, bucket: &str) -> MetaResult<()> {
        // Read, so checked: DeleteBucket deletes this record, so the two are ordered.
        match self
            .tx
            .get(Tree::Buckets, &keys::bucket(tenant, bucket))
            .await?
        {
            Some(_) => Ok(()),
            None => Err(MetaError::NoSuchBucket),
        }
    }

    fn count<'s>(&mut self, segments: impl IntoIterator<Item = &'s Segment>, d: i64) {
        for s in segments {
            *self.refs.entry(s.blob.clone()).or_default() += d;
        }
    }

    /// Removes every part of an upload; returns their bytes and their number.
    async fn drop_parts(&mut self, upload_id: &str) -> MetaResult<(i64, i64)> {
        let (mut bytes, mut n) = (0, 0);
        for (k, v) in self
            .tx
            .range(Tree::Parts, upload_id.as_bytes(), MAX_PARTS)
            .await?
        {
            let p: Part = super::decode(&v)?;
            bytes += p.size as i64;
            n += 1;
            self.count(&p.segments, -1);
            self.tx.delete(Tree::Parts, k);
        }
        Ok((bytes, n))
    }

    /// Applies `d` to the tenant's and the bucket's usage, after checking it against `allowance`
    /// (what the caller reserved for this commit).
    async fn charge(
        &mut self,
        tenant: &str,
        bucket: &str,
        d: Delta,
        allowance: &Delta,
    ) -> MetaResult<()> {
        if !d.within(allowance) {
            return Err(MetaError::QuotaShort(d));
        }
        if d == Delta::default() {
            return Ok(());
        }
        // Added, not read and rewritten: every commit of a tenant changes its usage, and
        // commits that only add commute (no conflict, whatever the concurrency). Clamped at zero
        // by the engine, so a drift (reported by verify) never wraps into a huge number.
        for scope in [keys::tenant_prefix(tenant), keys::bucket(tenant, bucket)] {
            self.tx.add(Tree::Usage, scope, [d.bytes, d.objects]);
        }
        Ok(())
    }

    /// Keeps the `pending` index in step when `old` is replaced by `new` (either may be absent).
    /// Most writes involve no pending version and so touch the index not at all.
    fn pending(&mut self, okey: &[u8], new: Option<&Object>, old: Option<&Object>) {
        let waits = |o: Option<&Object>| o.is_some_and(|o| o.scan_status() == ScanStatus::Pending);
        match (waits(new), waits(old)) {
            (true, false) => self.tx.put(Tree::Pending, okey.to_vec(), Vec::new()),
            (false, true) => self.tx.delete(Tree::Pending, okey.to_vec()),
            _ => {}
        }
    }

    /// Writes the reference counts; returns the blobs no record names any more.
    async fn settle_refs(self) -> MetaResult<Vec<String>> {
        let mut freed = Vec::new();
        let mut refs: Vec<(String, i64)> = self.refs.into_iter().filter(|(_, d)| *d != 0).collect();
        refs.sort();
        for (blob, d) in refs {
            let cur = self
                .tx
                .get(Tree::Blobs, blob.as_bytes())
                .await?
                .map(|v| i64::from_be_bytes(v.as_slice().try_into().unwrap_or([0; 8])))
                .unwrap_or(0);
            if self.shared && d > 0 && cur == 0 {
                return Err(MetaError::NoSuchKey);
            }
            let next = cur + d;
            if next <= 0 {
                self.tx.delete(Tree::Blobs, blob.as_bytes().to_vec());
                freed.push(blob);
            } else {
                self.tx
                    .put(Tree::Blobs, blob.into_bytes(), next.to_be_bytes().to_vec());
            }
        }
        Ok(freed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::coord::{Admission, Coord, NodeRecord, Scope};

    /// A database crash may lose a heartbeat (the node looks older; at worst it is fenced and
    /// joins again), never a reservation, an entry in flight, a give-back or a gate: another
    /// node would admit the room of an upload still in flight.
    #[test]
    fn only_heartbeats_may_be_lost_in_a_database_crash() {
        let scope = Scope {
            tenant: "t".into(),
            bucket: None,
        };
        let want = Usage {
            bytes: 1,
            objects: 1,
        };
        let durable = [
            Coord::Reserve {
                instance: "n/1".into(),
                scopes: vec![(scope.clone(), Limits::default())],
                want,
                how: Admission::Gated,
                enter: Some(("t".into(), "b".into())),
            },
            Coord::Enter {
                instance: "n/1".into(),
                tenant: "t".into(),
                bucket: "b".into(),
            },
            Coord::Unreserve {
                instance: "n/1".into(),
                scopes: vec![scope.clone()],
                held: want,
                leave: None,
            },
            Coord::TakeLease {
                name: scope.gate_name(),
                key: b"gate".to_vec(),
                holder: "n/1".into(),
                ttl_ms: 1000,
            },
            Coord::FreeLease {
                key: b"gate".to_vec(),
                holder: "n/1".into(),
            },
        ];
        for c in durable {
            let name = format!("{c:?}");
            assert!(!Commit::new(Change::Coord(c)).ephemeral(), "{name}");
        }
        let node = NodeRecord {
            instance: "n/1".into(),
            node_id: "n".into(),
            started_ms: 0,
            seen_ms: 0,
            expires_ms: 1,
            s3_addr: "127.0.0.1:1".into(),
            local_data: None,
            version: "0".into(),
        };
        let beat = Coord::Heartbeat { node, renew: true };
        assert!(Commit::new(Change::Coord(beat)).ephemeral());
    }
}
