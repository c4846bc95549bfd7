//! Upload policies (DESIGN.md §6): what a bucket accepts — size, content types detected from the
//! bytes, key names — and how it is scanned. A policy is set at three levels (gateway, tenant,
//! bucket); each field of the most specific level that sets it wins, so a bucket that only
//! narrows the allowed types keeps the gateway's size limit and scan requirement.
//!
//! The type is detected from the first bytes ([`SNIFF_LEN`]) with `infer`, never taken from the
//! client's Content-Type, so a refusal happens before the rest of the body is read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

pub use crate::model::{Fallback, Limits, Policy, ScanMode};

/// How many leading bytes are read before the type is decided.
pub const SNIFF_LEN: usize = 8 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("the key is {len} bytes long; this bucket accepts at most {limit}")]
    KeyTooLong { len: usize, limit: usize },
    #[error("the key does not match this bucket's key pattern {0}")]
    KeyPattern(String),
    #[error("the object is larger than the {limit} bytes this bucket accepts")]
    TooLarge { limit: u64 },
    #[error("the content was detected as {detected}; this bucket accepts only {allowed}")]
    NotAllowed { detected: String, allowed: String },
    #[error("the content was detected as {detected}, which this bucket refuses")]
    Denied { detected: String },
    #[error("the content was detected as {detected}, but the {claim} says {claimed}")]
    Mismatch {
        detected: String,
        claim: &'static str,
        claimed: String,
    },
    #[error("invalid policy: {0}")]
    Invalid(String),
}

/// S3's own key limit.
const S3_MAX_KEY: usize = 1024;

/// The policy in force for one bucket, every field decided (the admin API shows it).
#[derive(Debug, Clone, Serialize)]
pub struct Effective {
    pub max_object_size: u64,
    pub allowed_types: Vec<String>,
    pub denied_types: Vec<String>,
    pub reject_type_mismatch: bool,
    #[serde(serialize_with = "as_written")]
    pub key_pattern: Option<regex::Regex>,
    pub max_key_length: usize,
    pub scan: bool,
    pub on_scanner_unavailable: Fallback,
    pub on_too_large_to_scan: Fallback,
}

impl Policy {
    /// Checks what can be checked without data: the key pattern compiles, type patterns are
    /// `type/subtype` or `type/*`.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if let Some(p) = &self.key_pattern {
            compile(p)?;
        }
        for t in self
            .allowed_types
            .iter()
            .chain(self.denied_types.iter())
            .flatten()
        {
            let ok = t
                .split_once('/')
                .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty() && !a.contains('*'));
            if !ok {
                return Err(PolicyError::Invalid(format!(
                    "content type pattern {t:?}: use type/subtype or type/*"
                )));
            }
        }
        if self.max_key_length == Some(0) || self.max_object_size == Some(0) {
            return Err(PolicyError::Invalid("limits must be positive".into()));
        }
        Ok(())
    }

    /// Resolves `levels`, most specific first, into the policy in force. `scanner` says whether
    /// a scanner is configured: without one, `scan` defaults to off. `compile` turns a key
    /// pattern into its regex ([`compile`], or a cache of it).
    pub fn resolve(
        levels: &[&Policy],
        scanner: bool,
        compile: impl Fn(&str) -> Result<regex::Regex, PolicyError>,
    ) -> Result<Effective, PolicyError> {
        macro_rules! pick {
            ($f:ident) => {
                levels.iter().find_map(|p| p.$f.clone())
            };
        }
        let key_pattern = pick!(key_pattern).map(|p| compile(&p)).transpose()?;
        Ok(Effective {
            max_object_size: pick!(max_object_size).unwrap_or(super::MAX_OBJECT_SIZE),
            allowed_types: pick!(allowed_types).unwrap_or_default(),
            denied_types: pick!(denied_types).unwrap_or_default(),
            reject_type_mismatch: pick!(reject_type_mismatch).unwrap_or(false),
            key_pattern,
            max_key_length: pick!(max_key_length).unwrap_or(S3_MAX_KEY).min(S3_MAX_KEY),
            scan: scanner && pick!(scan).unwrap_or(ScanMode::Required) == ScanMode::Required,
            on_scanner_unavailable: pick!(on_scanner_unavailable).unwrap_or(Fallback::Reject),
            on_too_large_to_scan: pick!(on_too_large_to_scan).unwrap_or(Fallback::Reject),
        })
    }
}

/// The gateway-level settings every bucket's policy resolves against.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    pub policy: Policy,
    /// A scanner is configured.
    pub scanner: bool,
    /// Key patterns compiled once, by source: compiling a regex costs more than all the other
    /// checks of a small PUT together. Patterns come from config and the admin API, so the set
    /// stays small.
    patterns: Arc<Mutex<HashMap<String, regex::Regex>>>,
}

impl Rules {
    pub fn new(policy: Policy, scanner: bool) -> Self {
        Self {
            policy,
            scanner,
            patterns: Default::default(),
        }
    }

    fn compiled(&self, p: &str) -> Result<regex::Regex, PolicyError> {
        let mut cache = self.patterns.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = cache.get(p) {
            return Ok(r.clone());
        }
        let r = compile(p)?;
        cache.insert(p.to_string(), r.clone());
        Ok(r)
    }
}

/// What is in force for one bucket: its policy, the tenant's limits and the bucket's limits.
pub async fn rules(
    meta: &crate::meta::Meta,
    base: &Rules,
    tenant: &str,
    bucket: &str,
) -> Result<(Effective, Limits, Limits), super::PipelineError> {
    let t = meta.tenant(tenant).await?;
    let own = t.as_ref().and_then(|t| t.buckets.get(bucket));
    let empty = Policy::default();
    let levels = [
        own.map_or(&empty, |b| &b.policy),
        t.as_ref().map_or(&empty, |t| &t.policy),
        &base.policy,
    ];
    let policy = Policy::resolve(&levels, base.scanner, |p| base.compiled(p))?;
    Ok((
        policy,
        t.as_ref().map(|t| t.quota).unwrap_or_default(),
        own.map(|b| b.quota).unwrap_or_default(),
    ))
}

pub fn compile(p: &str) -> Result<regex::Regex, PolicyError> {
    regex::Regex::new(&format!("^(?:{p})$"))
        .map_err(|e| PolicyError::Invalid(format!("key_pattern: {e}")))
}

/// A key pattern as its policy wrote it, without the anchors [`compile`] adds.
fn written(r: &regex::Regex) -> &str {
    r.as_str().trim_start_matches("^(?:").trim_end_matches(")$")
}

fn as_written<S: serde::Serializer>(r: &Option<regex::Regex>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_some(&r.as_ref().map(written))
}

fn matches(pattern: &str, mime: &str) -> bool {
    match pattern.strip_suffix("/*") {
        Some(top) => mime
            .split_once('/')
            .is_some_and(|(t, _)| t.eq_ignore_ascii_case(top)),
        None => pattern.eq_ignore_ascii_case(mime),
    }
}

/// The essence of a Content-Type (`text/plain; charset=utf-8` → `text/plain`), lowercased.
fn essence(ct: &str) -> String {
    ct.split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Types that say nothing about the content.
fn generic(mime: &str) -> bool {
    matches!(
        mime,
        "" | "application/octet-stream" | "binary/octet-stream" | "application/x-empty"
    )
}

/// Names for the same format that clients and `infer` spell differently.
fn canonical(mime: &str) -> &str {
    match mime {
        "image/jpg" | "image/pjpeg" => "image/jpeg",
        "application/x-zip-compressed" | "application/x-zip" => "application/zip",
        "audio/mp3" => "audio/mpeg",
        "application/x-pdf" => "application/pdf",
        "application/x-msdownload" | "application/x-msdos-program" | "application/x-dosexec" => {
            "application/vnd.microsoft.portable-executable"
        }
        m => m,
    }
}

/// The type of the content that starts with `head` (the whole body when it is shorter than
/// [`SNIFF_LEN`]). Formats `infer` does not know are `text/plain` when they look like text,
/// `application/octet-stream` otherwise; an empty body is `application/x-empty`.
pub fn detect(head: &[u8]) -> String {
    if head.is_empty() {
        return "application/x-empty".into();
    }
    if let Some(t) = infer::get(head) {
        return t.mime_type().to_string();
    }
    // A multi-byte character cut by the end of the sniffed bytes is still text.
    let text = match std::str::from_utf8(head) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none() && e.valid_up_to() + 4 > head.len(),
    };
    let controls = head
        .iter()
        .any(|&b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r' | 0x0c));
    if text && !controls {
        "text/plain".into()
    } else {
        "application/octet-stream".into()
    }
}

/// True when content detected as `detected` may honestly be called `claimed`.
fn compatible(detected: &str, claimed: &str) -> bool {
    let (d, c) = (canonical(detected), canonical(claimed));
    if d == c || generic(c) {
        return true;
    }
    match d {
        // Unrecognised bytes contradict only a claim of a format `infer` would have recognised.
        "text/plain" | "application/octet-stream" | "application/x-empty" => {
            !infer::is_mime_supported(c)
        }
        // Office and similar formats are zip files `infer` may not look deep enough into.
        "application/zip" => {
            c.starts_with("application/vnd.openxmlformats")
                || c.starts_with("application/vnd.oasis.opendocument")
                || matches!(c, "application/java-archive" | "application/epub+zip")
        }
        _ => false,
    }
}

impl Effective {
    /// The checks that need only the key; run before any byte is read.
    pub fn check_key(&self, key: &str) -> Result<(), PolicyError> {
        if key.len() > self.max_key_length {
            return Err(PolicyError::KeyTooLong {
                len: key.len(),
                limit: self.max_key_length,
            });
        }
        if let Some(p) = &self.key_pattern
            && !p.is_match(key)
        {
            return Err(PolicyError::KeyPattern(written(p).to_string()));
        }
        Ok(())
    }

    pub fn check_size(&self, len: u64) -> Result<(), PolicyError> {
        if len > self.max_object_size {
            return Err(PolicyError::TooLarge {
                limit: self.max_object_size,
            });
        }
        Ok(())
    }

    /// The checks on the detected type against the policy and, when asked, the client's claims.
    pub fn check_type(
        &self,
        detected: &str,
        content_type: Option<&str>,
        key: &str,
    ) -> Result<(), PolicyError> {
        if self.denied_types.iter().any(|p| matches(p, detected)) {
            return Err(PolicyError::Denied {
                detected: detected.into(),
            });
        }
        if !self.allowed_types.is_empty()
            && !self.allowed_types.iter().any(|p| matches(p, detected))
        {
            return Err(PolicyError::NotAllowed {
                detected: detected.into(),
                allowed: self.allowed_types.join(", "),
            });
        }
        if !self.reject_type_mismatch {
            return Ok(());
        }
        if let Some(ct) = content_type.map(essence)
            && !compatible(detected, &ct)
        {
            return Err(PolicyError::Mismatch {
                detected: detected.into(),
                claim: "Content-Type",
                claimed: ct,
            });
        }
        let by_ext: Vec<String> = mime_guess::from_path(key)
            .iter()
            .map(|m| m.essence_str().to_string())
            .collect();
        if !by_ext.is_empty() && !by_ext.iter().any(|m| compatible(detected, m)) {
            return Err(PolicyError::Mismatch {
                detected: detected.into(),
                claim: "key's extension",
                claimed: by_ext[0].clone(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eff(p: Policy) -> Effective {
        Policy::resolve(&[&p], false, compile).unwrap()
    }

    #[test]
    fn the_most_specific_level_wins_field_by_field() {
        let gateway = Policy {
            max_object_size: Some(100),
            scan: Some(ScanMode::Required),
            ..Default::default()
        };
        let bucket = Policy {
            allowed_types: Some(vec!["image/*".into()]),
            ..Default::default()
        };
        let e = Policy::resolve(&[&bucket, &gateway], true, compile).unwrap();
        assert_eq!(e.max_object_size, 100);
        assert_eq!(e.allowed_types, vec!["image/*".to_string()]);
        assert!(e.scan);
        // Without a scanner nothing can be scanned.
        assert!(
            !Policy::resolve(&[&bucket, &gateway], false, compile)
                .unwrap()
                .scan
        );
    }

    #[test]
    fn types_are_detected_from_bytes() {
        assert_eq!(detect(b"%PDF-1.7\n%\xe2\xe3"), "application/pdf");
        assert_eq!(detect(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), "image/png");
        assert_eq!(detect("héllo, wörld\n".as_bytes()), "text/plain");
        assert_eq!(detect(&[0, 1, 2, 3, 250]), "application/octet-stream");
        assert_eq!(detect(b""), "application/x-empty");
        // A UTF-8 character cut by the end of the sniffed bytes.
        assert_eq!(detect(&"aé".as_bytes()[..2]), "text/plain");
    }

    #[test]
    fn an_executable_named_pdf_is_a_mismatch() {
        let e = eff(Policy {
            reject_type_mismatch: Some(true),
            ..Default::default()
        });
        let pe = "application/vnd.microsoft.portable-executable";
        assert!(matches!(
            e.check_type(pe, None, "invoice.pdf"),
            Err(PolicyError::Mismatch { .. })
        ));
        assert!(matches!(
            e.check_type(pe, Some("application/pdf"), "x"),
            Err(PolicyError::Mismatch { .. })
        ));
        assert!(
            e.check_type("application/pdf", Some("application/pdf"), "invoice.pdf")
                .is_ok()
        );
        // Text formats infer does not know are not contradicted by plain text.
        assert!(
            e.check_type("text/plain", Some("text/csv"), "a.csv")
                .is_ok()
        );
        // But garbage called .pdf is.
        assert!(
            e.check_type("application/octet-stream", None, "a.pdf")
                .is_err()
        );
        assert!(
            e.check_type("image/jpeg", Some("image/jpg"), "a.JPG")
                .is_ok()
        );
    }

    #[test]
    fn allowed_and_denied_types() {
        let e = eff(Policy {
            allowed_types: Some(vec!["image/*".into(), "application/pdf".into()]),
            denied_types: Some(vec!["image/svg+xml".into()]),
            ..Default::default()
        });
        assert!(e.check_type("image/png", None, "a").is_ok());
        assert!(e.check_type("application/pdf", None, "a").is_ok());
        assert!(matches!(
            e.check_type("text/plain", None, "a"),
            Err(PolicyError::NotAllowed { .. })
        ));
        assert!(matches!(
            e.check_type("image/svg+xml", None, "a"),
            Err(PolicyError::Denied { .. })
        ));
    }

    #[test]
    fn key_rules() {
        let e = eff(Policy {
            key_pattern: Some("[a-z0-9/._-]+".into()),
            max_key_length: Some(20),
            ..Default::default()
        });
        assert!(e.check_key("avatars/a.png").is_ok());
        assert!(e.check_key("Avatars/a.png").is_err());
        assert!(e.check_key("avatars/this-is-too-long.png").is_err());
        assert!(
            Policy {
                key_pattern: Some("(".into()),
                ..Default::default()
            }
            .validate()
            .is_err()
        );
    }
}
