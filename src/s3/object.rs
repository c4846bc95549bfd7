//! What the object operations share (one file per operation beside it: `put`, `get` (and
//! HEAD), `delete`, `copy`, `tagging`): stored attributes and tags from request headers, the
//! verdict headers of a response, whether a record may be read, conditional-request evaluation,
//! and the current record of a key.

use std::collections::HashSet;

use http::HeaderMap;
use s3s::dto::*;
use s3s::{S3Error, S3Response, S3Result, s3_error};

use super::{Gateway, ms_of};
use crate::meta::{self, MetaError, Object, ObjectAttrs};

/// S3's limit on user-defined metadata (keys and values of `x-amz-meta-*`), in bytes.
const MAX_USER_METADATA: usize = 2048;
const MAX_TAGS: usize = 10;
const MAX_BUCKET_TAGS: usize = 50;

/// The tag through which existing antivirus tooling reads the verdict; read-only.
pub(super) const SCAN_TAG: &str = "scan-status";

/// Whether `o` shows the read-only `scan-status` tag: where there is a verdict (an object of a
/// bucket that scans). An object of a bucket that does not scan shows exactly the client's tags,
/// so exact tag-set comparisons hold; the tag never counts against the client's 10.
pub(super) fn shows_scan_tag(o: &Object) -> bool {
    o.scan_status() != meta::ScanStatus::NotScanned
}

/// The tags GetObjectTagging returns for `o`.
pub(super) fn visible_tags(o: &Object) -> Vec<(String, String)> {
    let mut tags = o.tags.clone();
    if shows_scan_tag(o) {
        tags.push((SCAN_TAG.to_string(), o.scan_status().as_str().to_string()));
    }
    tags
}

/// A response for PUT, GET or HEAD of `o`, with the headers that carry its stored verdict and
/// detected type (see the README).
pub(super) fn with_protection<T>(out: T, o: &Object) -> S3Response<T> {
    let mut resp = S3Response::new(out);
    resp.headers = protection_headers(o);
    resp
}

pub(super) fn protection_headers(o: &Object) -> HeaderMap {
    let mut h = HeaderMap::new();
    let mut put = |name: &'static str, v: &str| {
        if let Ok(v) = http::HeaderValue::from_str(v) {
            h.insert(name, v);
        }
    };
    put("x-portcullis-scan-status", o.scan_status().as_str());
    if let Some(scan) = &o.scan {
        if let Some(sig) = &scan.signature {
            put("x-portcullis-scan-signature", sig);
        }
        if let Some(engine) = &scan.engine {
            put("x-portcullis-scan-engine", engine);
        }
        let at =
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(scan.at_ms) * 1_000_000)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                });
        if let Some(at) = at {
            put("x-portcullis-scanned-at", &at);
        }
    }
    if let Some(t) = &o.detected_type {
        put("x-portcullis-detected-type", t);
    }
    h
}

/// The length of a write's body: `Some` as the client declared it (the decoded length of an
/// aws-chunked body, which s3s rewrites Content-Length to; Content-Length otherwise), `None` for
/// a stream nobody declared a length for (the front marked it [`super::UnknownLength`]; s3s
/// saw a placeholder). S3 refuses such a stream; Portcullis meters it (`pipeline::Length`).
pub(super) fn body_len(
    headers: &HeaderMap,
    extensions: &http::Extensions,
) -> S3Result<Option<u64>> {
    if extensions.get::<super::UnknownLength>().is_some() {
        return Ok(None);
    }
    let num = |name: &str| headers.get(name)?.to_str().ok()?.parse::<u64>().ok();
    let declared = if headers.contains_key("x-amz-decoded-content-length") {
        num("x-amz-decoded-content-length")
    } else {
        let chunked = headers
            .get("content-encoding")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("aws-chunked"));
        if chunked { None } else { num("content-length") }
    };
    // s3s refuses a body without either before it gets here; this keeps a write from ever
    // storing a body whose size was neither reserved nor metered.
    declared.map(Some).ok_or_else(|| {
        s3_error!(
            MissingContentLength,
            "You must provide the Content-Length HTTP header."
        )
    })
}

/// The attributes a write request sets. `aws-chunked` is a transfer detail, never stored.
#[allow(clippy::too_many_arguments)]
pub(super) fn attrs(
    content_type: Option<String>,
    content_encoding: Option<String>,
    content_disposition: Option<String>,
    content_language: Option<String>,
    cache_control: Option<String>,
    expires: Option<Timestamp>,
    metadata: Option<Metadata>,
) -> S3Result<ObjectAttrs> {
    let content_encoding = content_encoding.and_then(|e| {
        let rest: Vec<&str> = e
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case("aws-chunked"))
            .collect();
        (!rest.is_empty()).then(|| rest.join(", "))
    });
    let user_metadata: std::collections::BTreeMap<String, String> =
        metadata.unwrap_or_default().into_iter().collect();
    let size: usize = user_metadata.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_USER_METADATA {
        return Err(s3_error!(
            MetadataTooLarge,
            "Your metadata headers exceed the maximum allowed metadata size of 2048 bytes."
        ));
    }
    Ok(ObjectAttrs {
        content_type,
        content_encoding,
        content_disposition,
        content_language,
        cache_control,
        expires_ms: expires.as_ref().map(ms_of),
        user_metadata,
    })
}

/// A client's bad tag set: 400, as on S3 (a code s3s does not know would answer 500).
fn invalid_tag(msg: &'static str) -> S3Error {
    crate::error::custom("InvalidTag", http::StatusCode::BAD_REQUEST, msg.into())
}

/// Validates a tag set as S3 does: at most 10 tags, unique keys of ≤128 and values of ≤256
/// characters. `scan-status` is read-only: a client writing back the set it read (with the
/// gateway's tag in it) must not fail, so the tag is dropped, never stored.
pub(super) fn check_tags(mut tags: Vec<(String, String)>) -> S3Result<Vec<(String, String)>> {
    tags.retain(|(k, _)| k != SCAN_TAG);
    if tags.len() > MAX_TAGS {
        return Err(invalid_tag("Object tags cannot be greater than 10"));
    }
    check_tag_set(tags)
}

/// Validates a bucket's tag set as S3 does: at most 50 tags, the object tags' key and value
/// rules, and no `aws:` keys (reserved for the system).
pub(super) fn check_bucket_tags(tags: Vec<(String, String)>) -> S3Result<Vec<(String, String)>> {
    if tags.len() > MAX_BUCKET_TAGS {
        return Err(invalid_tag("Bucket tag count cannot be greater than 50"));
    }
    if tags.iter().any(|(k, _)| k.starts_with("aws:")) {
        return Err(invalid_tag(
            "System tags cannot be added/updated by requester",
        ));
    }
    check_tag_set(tags)
}

/// Keys of 1 to 128 characters, values of at most 256, each key once.
fn check_tag_set(tags: Vec<(String, String)>) -> S3Result<Vec<(String, String)>> {
    let mut seen = HashSet::new();
    for (k, v) in &tags {
        if k.is_empty() || k.chars().count() > 128 {
            return Err(invalid_tag("The TagKey you have provided is invalid"));
        }
        if v.chars().count() > 256 {
            return Err(invalid_tag("The TagValue you have provided is invalid"));
        }
        if !seen.insert(k.as_str()) {
            return Err(invalid_tag(
                "Cannot provide multiple Tags with the same key",
            ));
        }
    }
    Ok(tags)
}

/// Parses the `x-amz-tagging` header (URL-encoded `k=v&k2=v2`).
pub(super) fn tags_from_header(h: Option<&str>) -> S3Result<Vec<(String, String)>> {
    let Some(h) = h else { return Ok(Vec::new()) };
    check_tags(
        form_urlencoded::parse(h.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
    )
}

pub(super) fn no_version(v: Option<&str>) -> S3Result<()> {
    match v {
        None | Some("null") => Ok(()),
        Some(_) => Err(s3_error!(
            NoSuchVersion,
            "The specified version does not exist."
        )),
    }
}

impl Gateway {
    pub(super) async fn current(&self, tenant: &str, bucket: &str, key: &str) -> S3Result<Object> {
        self.meta.require_bucket(tenant, bucket).await?;
        Ok(self
            .meta
            .object(tenant, bucket, key)
            .await?
            .ok_or(MetaError::NoSuchKey)?)
    }
}

pub(super) use crate::error::precondition_failed;
