//! Policy data as written in config and the admin API: what a bucket accepts and how it is
//! scanned (resolved and enforced by `pipeline::policy`), and quota limits.

use serde::{Deserialize, Serialize};

/// What a bucket does about an object it cannot scan.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Fallback {
    /// Refuse the upload (the default: fail closed).
    Reject,
    /// Store it, mark it `pending`, and refuse reads until a scan finds it clean.
    StoreUnscanned,
}

/// Whether uploads are scanned. `off` is the one way an object becomes readable unscanned.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ScanMode {
    Required,
    Off,
}

/// One level of policy, as written in config and the admin API. Unset fields defer to the level
/// above.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Largest object in bytes (a whole multipart object included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_object_size: Option<u64>,
    /// Detected types accepted (`image/*`, `application/pdf`); empty or unset accepts any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_types: Option<Vec<String>>,
    /// Detected types refused even when allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denied_types: Option<Vec<String>>,
    /// Refuse an upload whose Content-Type or key extension contradicts the detected type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reject_type_mismatch: Option<bool>,
    /// A regular expression every key must match (anchored at both ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_pattern: Option<String>,
    /// Longest key in bytes (S3's own limit, 1024, is always enforced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_key_length: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan: Option<ScanMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_scanner_unavailable: Option<Fallback>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_too_large_to_scan: Option<Fallback>,
}

/// Per-scope limits: stored bytes and object count. `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objects: Option<u64>,
}

impl Limits {
    pub fn is_unlimited(&self) -> bool {
        self.bytes.is_none() && self.objects.is_none()
    }
}
