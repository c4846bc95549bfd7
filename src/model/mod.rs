//! The shared vocabulary: the records the index stores (tenants, keys, buckets, objects,
//! uploads, parts, usage, scan verdicts) and the data they carry (placement, policy, limits).
//! It imports nothing of ours, so every module can point down to it; behaviour lives with the
//! module that owns it (`impl Placement` in `backend`, `impl Policy` in `pipeline::policy`).
//!
//! Each record is written as one version byte followed by JSON, so a later format can be read
//! next to this one; new optional fields use `#[serde(default)]`.

mod placement;
mod policy;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use placement::Placement;
pub use policy::{Fallback, Limits, Policy, ScanMode};

/// Milliseconds since the Unix epoch: the time of every record.
pub fn now_ms() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() as i64 / 1_000_000
}

/// Current value format version.
pub const FORMAT_V1: u8 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Tenant {
    pub id: String,
    pub display_name: String,
    pub created_ms: i64,
    /// Where the tenant's buckets write; `None` follows the gateway's default backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
    /// Other backends the tenant may name in a bucket's LocationConstraint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locations: Vec<String>,
    /// Limits on everything the tenant stores.
    #[serde(default)]
    pub quota: Limits,
    /// The default policy of the tenant's buckets.
    #[serde(default)]
    pub policy: Policy,
    /// Per-bucket quotas and policies, by bucket name: they apply whether or not the bucket
    /// exists yet, so an application that creates its buckets on first use is covered.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub buckets: BTreeMap<String, BucketSettings>,
}

/// A bucket's own quota and policy overrides.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct BucketSettings {
    #[serde(default)]
    pub quota: Limits,
    #[serde(default)]
    pub policy: Policy,
}

/// What a scope (a tenant, or one bucket of it) stores: bytes of objects and of the parts of
/// open multipart uploads, and the number of objects.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Usage {
    pub bytes: u64,
    pub objects: u64,
}

/// A tenant's open multipart uploads and the part records they hold.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct OpenUploads {
    pub uploads: u64,
    pub parts: u64,
}

/// A change of [`Usage`] made by one commit.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Delta {
    pub bytes: i64,
    pub objects: i64,
}

impl Delta {
    /// A commit whose growth nobody limits.
    pub const UNLIMITED: Delta = Delta {
        bytes: i64::MAX,
        objects: i64::MAX,
    };

    /// True when this change grows usage by no more than `allowance`.
    pub fn within(&self, allowance: &Delta) -> bool {
        self.bytes <= allowance.bytes && self.objects <= allowance.objects
    }
}

/// The virus-scan state of a version.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ScanStatus {
    Clean,
    Infected,
    /// Stored while the scanner was unavailable; unreadable until a scan finds it clean.
    Pending,
    /// The bucket's policy does not scan.
    NotScanned,
}

impl ScanStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            ScanStatus::Clean => "clean",
            ScanStatus::Infected => "infected",
            ScanStatus::Pending => "pending",
            ScanStatus::NotScanned => "not-scanned",
        }
    }

    /// Only these may be read through S3.
    pub fn readable(&self) -> bool {
        matches!(self, ScanStatus::Clean | ScanStatus::NotScanned)
    }
}

/// The verdict stored with a version.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ScanInfo {
    pub status: ScanStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// The clamd version string (`ClamAV 1.0.7/27000/...`), engine and signature database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    pub at_ms: i64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    ReadWrite,
    ReadOnly,
}

/// An access key of a tenant's user. The secret is needed in clear to verify SigV4.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessKey {
    pub access_key: String,
    pub secret_key: String,
    pub tenant: String,
    pub user: String,
    pub role: Role,
    pub created_ms: i64,
}

impl std::fmt::Debug for AccessKey {
    // The secret never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessKey")
            .field("access_key", &self.access_key)
            .field("tenant", &self.tenant)
            .field("user", &self.user)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Bucket {
    pub name: String,
    pub created_ms: i64,
    /// The region / location constraint reported by GetBucketLocation.
    pub location: String,
    /// Where the bucket's new blobs go, fixed when it is created; `None` (records written before
    /// placement existed) follows the tenant's placement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
    /// The bucket's tag set (Put/Get/DeleteBucketTagging), in the client's order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<(String, String)>,
}

/// A byte range of one immutable blob. Objects and parts are lists of segments, so copies and
/// multipart completion share blobs instead of copying bytes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Segment {
    pub blob: String,
    pub offset: u64,
    pub len: u64,
}

/// Checksums as S3 returns them (base64 of the raw digest; composite ones carry `-N`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Checksums {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc32: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc32c: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha1: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crc64nvme: Option<String>,
    /// `COMPOSITE` or `FULL_OBJECT`, as S3 reports `x-amz-checksum-type`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

impl Checksums {
    pub fn is_empty(&self) -> bool {
        *self == Checksums::default()
    }
}

/// The S3 attributes a client sets on an object and gets back on GET/HEAD.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ObjectAttrs {
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub content_encoding: Option<String>,
    #[serde(default)]
    pub content_disposition: Option<String>,
    #[serde(default)]
    pub content_language: Option<String>,
    #[serde(default)]
    pub cache_control: Option<String>,
    /// Unix milliseconds of the `Expires` header.
    #[serde(default)]
    pub expires_ms: Option<i64>,
    #[serde(default)]
    pub user_metadata: BTreeMap<String, String>,
}

/// One part of a stored object: its size and where its bytes are.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PartLayout {
    pub size: u64,
    pub segments: Vec<Segment>,
    /// The part's own checksums, for GetObjectAttributes (multipart objects only; records
    /// written before they were kept have none).
    #[serde(default, skip_serializing_if = "Checksums::is_empty")]
    pub checksums: Checksums,
}

/// The current version of an object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Object {
    pub size: u64,
    /// ETag without quotes: hex MD5, or `md5-of-md5s-N` for multipart objects.
    pub etag: String,
    pub last_modified_ms: i64,
    #[serde(default)]
    pub attrs: ObjectAttrs,
    #[serde(default)]
    pub checksums: Checksums,
    #[serde(default)]
    pub tags: Vec<(String, String)>,
    /// Exactly one entry for a single PUT; one per part for a completed multipart upload.
    pub parts: Vec<PartLayout>,
    /// True when created by CompleteMultipartUpload (S3 then reports `PartsCount`).
    #[serde(default)]
    pub multipart: bool,
    /// The type detected from the bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected_type: Option<String>,
    /// `None` on records written before scanning existed: treated as not scanned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan: Option<ScanInfo>,
}

impl Object {
    pub fn scan_status(&self) -> ScanStatus {
        self.scan
            .as_ref()
            .map_or(ScanStatus::NotScanned, |s| s.status)
    }

    pub fn segments(&self) -> impl Iterator<Item = &Segment> {
        self.parts.iter().flat_map(|p| p.segments.iter())
    }
}

/// An open multipart upload.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Upload {
    pub upload_id: String,
    pub key: String,
    pub initiated_ms: i64,
    pub initiator: String,
    #[serde(default)]
    pub attrs: ObjectAttrs,
    #[serde(default)]
    pub tags: Vec<(String, String)>,
    /// The checksum algorithm declared at creation (`CRC32`, ...), if any.
    #[serde(default)]
    pub checksum_algorithm: Option<String>,
    /// `FULL_OBJECT` or `COMPOSITE` (the default), as declared at creation.
    #[serde(default)]
    pub checksum_type: Option<String>,
}

/// What a completed multipart upload became, kept for the sweeper's abandoned-upload lifetime so
/// that a client repeating `CompleteMultipartUpload` (its answer was lost) gets the same answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Completion {
    pub key: String,
    pub upload_id: String,
    pub completed_ms: i64,
    pub etag: String,
    /// The parts list the upload was completed with: part number and the part's ETag.
    pub parts: Vec<(u32, String)>,
    #[serde(default, skip_serializing_if = "Checksums::is_empty")]
    pub checksums: Checksums,
}

impl Completion {
    /// Whether a repeated request names the same parts: the same numbers in the same order, and
    /// the same ETag wherever the request gives one.
    pub fn same_parts<'a>(
        &self,
        requested: impl ExactSizeIterator<Item = (u32, Option<&'a str>)>,
    ) -> bool {
        requested.len() == self.parts.len()
            && requested.zip(&self.parts).all(|((n, etag), (m, stored))| {
                n == *m && etag.is_none_or(|e| e.trim_matches('"') == stored)
            })
    }
}

/// An uploaded part of an open multipart upload.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Part {
    pub part_number: u32,
    pub size: u64,
    pub etag: String,
    pub last_modified_ms: i64,
    pub segments: Vec<Segment>,
    #[serde(default)]
    pub checksums: Checksums,
}
