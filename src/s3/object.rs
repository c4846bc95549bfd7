//! Object operations: PUT, GET, HEAD, DELETE, multi-delete, copy and tagging.
//!
//! Every write goes through the pipeline (stream → verify → one meta commit); a copy shares the
//! source's blobs and copies no bytes.

use std::collections::HashSet;

use http::HeaderMap;
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};

use super::{Admitted, Gateway, caller, ms_of, peer, target, ts};
use crate::backend::Placement;
use crate::meta::{self, MetaError, Object, ObjectAttrs, PartLayout};
use crate::pipeline::quota::QuotaError;
use crate::pipeline::{self, Declared};

/// S3's limit on user-defined metadata (keys and values of `x-amz-meta-*`), in bytes.
const MAX_USER_METADATA: usize = 2048;
const MAX_TAGS: usize = 10;

/// The tag through which existing antivirus tooling reads the verdict; read-only.
pub(super) const SCAN_TAG: &str = "scan-status";

/// A response for PUT, GET or HEAD of `o`, with the headers that carry its stored verdict and
/// detected type (see the README).
fn with_protection<T>(out: T, o: &Object) -> S3Response<T> {
    let mut resp = S3Response::new(out);
    resp.headers = protection_headers(o);
    resp
}

fn protection_headers(o: &Object) -> HeaderMap {
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

/// Reads of a version that is not (yet) known clean are refused: only the verdict is visible.
pub(super) fn readable(o: &Object) -> S3Result<()> {
    let status = o.scan_status();
    if status.readable() {
        return Ok(());
    }
    let sig = o
        .scan
        .as_ref()
        .and_then(|s| s.signature.clone())
        .unwrap_or_default();
    Err(match status {
        meta::ScanStatus::Infected => crate::error::custom(
            "VirusDetected",
            http::StatusCode::FORBIDDEN,
            format!("The object cannot be read: the virus scanner found {sig} in it."),
        ),
        _ => crate::error::custom(
            "ScanPending",
            http::StatusCode::FORBIDDEN,
            "The object cannot be read yet: it was stored while the virus scanner was unavailable and becomes readable once a scan finds it clean.".into(),
        ),
    })
}

/// The number of bytes the body must have, when the client said: the decoded length for
/// aws-chunked bodies (s3s rewrites Content-Length to it), Content-Length otherwise.
pub(super) fn expected_len(headers: &HeaderMap) -> Option<u64> {
    let num = |name: &str| headers.get(name)?.to_str().ok()?.parse::<u64>().ok();
    if headers.contains_key("x-amz-decoded-content-length") {
        return num("x-amz-decoded-content-length");
    }
    let chunked = headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("aws-chunked"));
    if chunked { None } else { num("content-length") }
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

fn invalid_tag(msg: &'static str) -> S3Error {
    S3Error::with_message(S3ErrorCode::Custom("InvalidTag".into()), msg)
}

/// Validates a tag set as S3 does: at most 10 tags, unique keys of ≤128 and values of ≤256
/// characters. `scan-status` is read-only: a client writing back the set it read (with the
/// gateway's tag in it) must not fail, so the tag is dropped, never stored.
pub(super) fn check_tags(mut tags: Vec<(String, String)>) -> S3Result<Vec<(String, String)>> {
    tags.retain(|(k, _)| k != SCAN_TAG);
    if tags.len() > MAX_TAGS {
        return Err(invalid_tag("Object tags cannot be greater than 10"));
    }
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

/// Outcome of the HTTP conditional headers against the current version.
pub(super) enum Precondition {
    Ok,
    NotModified,
    Failed,
}

/// RFC 7232 / S3 evaluation order: If-Match, then If-Unmodified-Since (ignored when If-Match is
/// present), If-None-Match, then If-Modified-Since (ignored when If-None-Match is present).
/// Times compare at the one-second resolution of HTTP dates.
pub(super) fn evaluate(
    o: &Object,
    if_match: Option<&ETagCondition>,
    if_unmodified_since: Option<&Timestamp>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
) -> Precondition {
    let etag = ETag::Strong(o.etag.clone());
    let matches = |c: &ETagCondition| match c {
        ETagCondition::Any => true,
        ETagCondition::ETag(e) => etag.weak_cmp(e),
    };
    let secs = o.last_modified_ms.div_euclid(1000);
    let secs_of = |t: &Timestamp| ms_of(t).div_euclid(1000);
    if let Some(c) = if_match {
        if !matches(c) {
            return Precondition::Failed;
        }
    } else if let Some(t) = if_unmodified_since
        && secs > secs_of(t)
    {
        return Precondition::Failed;
    }
    if let Some(c) = if_none_match {
        if matches(c) {
            return Precondition::NotModified;
        }
    } else if let Some(t) = if_modified_since
        && secs <= secs_of(t)
    {
        return Precondition::NotModified;
    }
    Precondition::Ok
}

/// Fills the fields GET and HEAD share from the stored record.
macro_rules! object_fields {
    ($out:ident, $o:expr, $with_checksums:expr) => {{
        let o: &Object = $o;
        $out.e_tag = Some(ETag::Strong(o.etag.clone()));
        $out.last_modified = Some(ts(o.last_modified_ms));
        $out.content_type = Some(
            o.attrs
                .content_type
                .clone()
                .unwrap_or_else(|| "binary/octet-stream".to_string()),
        );
        $out.content_encoding = o.attrs.content_encoding.clone();
        $out.content_disposition = o.attrs.content_disposition.clone();
        $out.content_language = o.attrs.content_language.clone();
        $out.cache_control = o.attrs.cache_control.clone();
        $out.expires = o.attrs.expires_ms.map(ts);
        $out.metadata = (!o.attrs.user_metadata.is_empty())
            .then(|| o.attrs.user_metadata.clone().into_iter().collect());
        $out.accept_ranges = Some("bytes".to_string());
        $out.parts_count = o.multipart.then(|| o.parts.len() as i32);
        if $with_checksums {
            $out.checksum_crc32 = o.checksums.crc32.clone();
            $out.checksum_crc32c = o.checksums.crc32c.clone();
            $out.checksum_sha1 = o.checksums.sha1.clone();
            $out.checksum_sha256 = o.checksums.sha256.clone();
            $out.checksum_crc64nvme = o.checksums.crc64nvme.clone();
            $out.checksum_type = o.checksums.kind.clone().map(ChecksumType::from);
        }
    }};
}

/// What GET and HEAD share: the version check, the current record, its preconditions, the
/// selected range, and whether checksums are returned (asked for, and the whole object).
/// A macro because the two inputs are distinct s3s types with the same fields.
macro_rules! read_plan {
    ($gw:expr, $tenant:expr, $input:expr) => {{
        let i = $input;
        no_version(i.version_id.as_deref())?;
        let o = $gw.current($tenant, &i.bucket, &i.key)?;
        match evaluate(
            &o,
            i.if_match.as_ref(),
            i.if_unmodified_since.as_ref(),
            i.if_none_match.as_ref(),
            i.if_modified_since.as_ref(),
        ) {
            Precondition::Ok => {}
            Precondition::NotModified => return Err(s3_error!(NotModified)),
            Precondition::Failed => return Err(precondition_failed()),
        }
        let (range, partial) = select(&o, i.range.as_ref(), i.part_number)?;
        let enabled = i
            .checksum_mode
            .as_ref()
            .is_some_and(|m| m.as_str() == "ENABLED");
        let whole = range.start == 0 && range.end == o.size;
        (o, range, partial, enabled && whole)
    }};
}

/// The byte range a GET/HEAD selects: all, a `Range`, or one part (`partNumber`).
fn select(
    o: &Object,
    range: Option<&Range>,
    part_number: Option<i32>,
) -> S3Result<(std::ops::Range<u64>, bool)> {
    match (range, part_number) {
        (Some(_), Some(_)) => Err(s3_error!(
            InvalidRequest,
            "Cannot specify both Range header and partNumber query parameter"
        )),
        (Some(r), None) => {
            let r = r
                .check(o.size)
                .map_err(|_| s3_error!(InvalidRange, "The requested range is not satisfiable"))?;
            Ok((r, true))
        }
        (None, Some(n)) => {
            let n = usize::try_from(n).unwrap_or(0);
            if n == 0 || n > o.parts.len() {
                let mut e = S3Error::with_message(
                    S3ErrorCode::Custom("InvalidPartNumber".into()),
                    "The requested partnumber is not satisfiable",
                );
                e.set_status_code(http::StatusCode::RANGE_NOT_SATISFIABLE);
                return Err(e);
            }
            let start: u64 = o.parts[..n - 1].iter().map(|p| p.size).sum();
            let r = start..start + o.parts[n - 1].size;
            let partial = o.parts.len() > 1;
            Ok((r, partial))
        }
        (None, None) => Ok((0..o.size, false)),
    }
}

fn content_range(r: &std::ops::Range<u64>, size: u64) -> String {
    format!("bytes {}-{}/{}", r.start, r.end.saturating_sub(1), size)
}

fn no_version(v: Option<&str>) -> S3Result<()> {
    match v {
        None | Some("null") => Ok(()),
        Some(_) => Err(s3_error!(
            NoSuchVersion,
            "The specified version does not exist."
        )),
    }
}

impl Gateway {
    /// Stages 2 and 3 of the write protocol for PUT and UploadPart: stream the body into a new
    /// blob, then check it against what the client declared (headers, and the aws-chunked
    /// trailer, which is readable only once the body has been consumed).
    pub(super) async fn ingest(
        &self,
        placement: &Placement,
        body: Option<StreamingBlob>,
        headers: &HeaderMap,
        trailers: Option<s3s::TrailingHeaders>,
        mut declared: Declared,
        checks: pipeline::Checks<'_>,
    ) -> S3Result<pipeline::Stored> {
        let body = body.unwrap_or_else(|| {
            StreamingBlob::wrap(futures::stream::empty::<Result<bytes::Bytes, std::io::Error>>())
        });
        // S3 refuses a PUT or part without a length, and s3s does too before it gets here; the
        // check keeps this path from ever writing a body whose size was not reserved.
        let len = expected_len(headers).ok_or_else(|| {
            s3_error!(
                MissingContentLength,
                "You must provide the Content-Length HTTP header."
            )
        })?;
        let stored =
            pipeline::store(&self.backend, placement, body, &declared, len, checks).await?;
        if let Some(t) = trailers.and_then(|t| t.take()) {
            declared.add_trailers(&t)?;
        }
        declared.verify(&stored.md5, &stored.checksums)?;
        Ok(stored)
    }

    pub(super) fn current(&self, tenant: &str, bucket: &str, key: &str) -> S3Result<Object> {
        self.meta.require_bucket(tenant, bucket)?;
        Ok(self
            .meta
            .object(tenant, bucket, key)?
            .ok_or(MetaError::NoSuchKey)?)
    }

    pub(super) async fn op_put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let c = caller(&req)?;
        let client = peer(&req);
        let input = req.input;
        let declared = Declared::from_headers(&req.headers)?;
        let attrs = attrs(
            input.content_type,
            input.content_encoding,
            input.content_disposition,
            input.content_language,
            input.cache_control,
            input.expires,
            input.metadata,
        )?;
        let tags = tags_from_header(input.tagging.as_deref())?;
        let Admitted {
            placement,
            policy,
            reservation,
            _ticket,
        } = self.admit(
            &c.tenant,
            &input.bucket,
            &input.key,
            expected_len(&req.headers),
            1,
        )?;
        let (if_match, if_none_match) = (input.if_match, input.if_none_match);
        let check = |old: Option<&Object>| -> meta::MetaResult<()> {
            let ok = match (&if_match, &if_none_match, old) {
                (Some(_), _, None) => false,
                (Some(ETagCondition::ETag(e)), _, Some(o)) => {
                    ETag::Strong(o.etag.clone()).strong_cmp(e)
                }
                (_, Some(_), Some(_)) => false,
                _ => true,
            };
            if ok { Ok(()) } else { Err(MetaError::Conflict) }
        };
        // Fail before reading the body when the precondition is already false.
        check(
            self.meta
                .object(&c.tenant, &input.bucket, &input.key)?
                .as_ref(),
        )
        .map_err(|_| precondition_failed())?;

        let target = target(&c, &input.bucket, &input.key, client);
        let stored = self
            .ingest(
                &placement,
                input.body,
                &req.headers,
                req.trailing_headers,
                declared,
                pipeline::Checks {
                    policy: &policy,
                    sniff: true,
                    content_type: attrs.content_type.as_deref(),
                    scanner: self.scanner_for(&policy),
                    target: &target,
                },
            )
            .await?;

        let mut checksums = stored.checksums.clone();
        if checksums != meta::Checksums::default() {
            checksums.kind = Some("FULL_OBJECT".into());
        }
        let object = Object {
            size: stored.segment.len,
            etag: stored.etag(),
            last_modified_ms: meta::now_ms(),
            attrs,
            checksums,
            tags,
            parts: vec![PartLayout {
                size: stored.segment.len,
                segments: vec![stored.segment.clone()],
            }],
            multipart: false,
            detected_type: stored.detected.clone(),
            scan: Some(stored.scan.clone()),
        };
        let freed = reservation
            .commit(|allow| {
                self.meta.put_object(
                    &c.tenant,
                    &input.bucket,
                    &input.key,
                    &object,
                    false,
                    allow,
                    &check,
                )
            })
            .map_err(|e| match e {
                QuotaError::Meta(MetaError::Conflict) => precondition_failed(),
                e => e.into(),
            })?;
        stored.guard.keep();
        self.deleter.release(freed);
        self.meta.durable().await?;
        let cs = object.checksums.clone();
        let out = PutObjectOutput {
            e_tag: Some(ETag::Strong(object.etag.clone())),
            checksum_crc32: cs.crc32,
            checksum_crc32c: cs.crc32c,
            checksum_sha1: cs.sha1,
            checksum_sha256: cs.sha256,
            checksum_crc64nvme: cs.crc64nvme,
            checksum_type: cs.kind.map(ChecksumType::from),
            size: Some(object.size as i64),
            ..Default::default()
        };
        Ok(with_protection(out, &object))
    }

    pub(super) async fn op_get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let c = caller(&req)?;
        let (o, range, partial, with_checksums) = read_plan!(self, &c.tenant, &req.input);
        readable(&o)?;
        let mut out = GetObjectOutput {
            content_length: Some((range.end - range.start) as i64),
            content_range: partial.then(|| content_range(&range, o.size)),
            // The read-only scan-status tag counts.
            tag_count: Some(o.tags.len() as i32 + 1),
            ..Default::default()
        };
        object_fields!(out, &o, with_checksums);
        let segments: Vec<meta::Segment> = o.segments().cloned().collect();
        let len = range.end - range.start;
        out.body = Some(StreamingBlob::new(pipeline::OutBody::new(
            pipeline::read(&self.backend, &segments, range),
            len,
        )));
        Ok(with_protection(out, &o))
    }

    pub(super) async fn op_head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let c = caller(&req)?;
        let (o, range, partial, with_checksums) = read_plan!(self, &c.tenant, &req.input);
        let mut out = HeadObjectOutput {
            content_length: Some((range.end - range.start) as i64),
            content_range: partial.then(|| content_range(&range, o.size)),
            ..Default::default()
        };
        object_fields!(out, &o, with_checksums);
        Ok(with_protection(out, &o))
    }

    pub(super) async fn op_delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let c = caller(&req)?;
        let i = &req.input;
        no_version(i.version_id.as_deref())?;
        self.meta.require_bucket(&c.tenant, &i.bucket)?;
        // S3 answers 204 whether or not the key existed.
        let freed = self.meta.delete_object(&c.tenant, &i.bucket, &i.key)?;
        self.deleter.release(freed);
        self.meta.durable().await?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    pub(super) async fn op_delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let c = caller(&req)?;
        let i = req.input;
        self.meta.require_bucket(&c.tenant, &i.bucket)?;
        if i.delete.objects.len() > 1000 {
            return Err(s3_error!(
                MalformedXML,
                "The XML you provided was not well-formed or did not validate against our published schema (at most 1000 keys)"
            ));
        }
        let quiet = i.delete.quiet.unwrap_or(false);
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        for obj in i.delete.objects {
            if obj.version_id.as_deref().is_some_and(|v| v != "null") {
                errors.push(Error {
                    code: Some("NoSuchVersion".into()),
                    key: Some(obj.key),
                    message: Some("The specified version does not exist.".into()),
                    version_id: obj.version_id,
                });
                continue;
            }
            match self.meta.delete_object(&c.tenant, &i.bucket, &obj.key) {
                Ok(freed) => {
                    self.deleter.release(freed);
                    if !quiet {
                        deleted.push(DeletedObject {
                            key: Some(obj.key),
                            version_id: obj.version_id,
                            ..Default::default()
                        });
                    }
                }
                Err(e) => {
                    let e = S3Error::from(e);
                    errors.push(Error {
                        code: Some(e.code().as_str().to_string()),
                        key: Some(obj.key),
                        message: e.message().map(str::to_string),
                        version_id: obj.version_id,
                    });
                }
            }
        }
        self.meta.durable().await?;
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: Some(errors),
            ..Default::default()
        }))
    }

    /// Resolves an `x-amz-copy-source` within the caller's tenant and checks its conditions.
    pub(super) fn copy_source(
        &self,
        tenant: &str,
        source: &CopySource,
        if_match: Option<&ETagCondition>,
        if_unmodified_since: Option<&Timestamp>,
        if_none_match: Option<&ETagCondition>,
        if_modified_since: Option<&Timestamp>,
    ) -> S3Result<(String, String, Object)> {
        let CopySource::Bucket {
            bucket,
            key,
            version_id,
        } = source
        else {
            return Err(s3_error!(
                NotImplemented,
                "Access point copy sources are not supported"
            ));
        };
        no_version(version_id.as_deref())?;
        let o = self.current(tenant, bucket, key)?;
        // A copy must not launder what a read would refuse.
        readable(&o)?;
        match evaluate(
            &o,
            if_match,
            if_unmodified_since,
            if_none_match,
            if_modified_since,
        ) {
            Precondition::Ok => Ok((bucket.to_string(), key.to_string(), o)),
            Precondition::NotModified | Precondition::Failed => Err(precondition_failed()),
        }
    }

    pub(super) async fn op_copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let c = caller(&req)?;
        let client = peer(&req);
        let i = req.input;
        let (src_bucket, src_key, src) = self.copy_source(
            &c.tenant,
            &i.copy_source,
            i.copy_source_if_match.as_ref(),
            i.copy_source_if_unmodified_since.as_ref(),
            i.copy_source_if_none_match.as_ref(),
            i.copy_source_if_modified_since.as_ref(),
        )?;
        let replace_meta = i
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        let replace_tags = i
            .tagging_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == TaggingDirective::REPLACE);
        if src_bucket == i.bucket && src_key == i.key && !replace_meta && !replace_tags {
            return Err(s3_error!(
                InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata, storage class, website redirect location or encryption attributes."
            ));
        }
        let attrs = if replace_meta {
            attrs(
                i.content_type,
                i.content_encoding,
                i.content_disposition,
                i.content_language,
                i.cache_control,
                i.expires,
                i.metadata,
            )?
        } else {
            src.attrs.clone()
        };
        let tags = if replace_tags {
            tags_from_header(i.tagging.as_deref())?
        } else {
            src.tags.clone()
        };
        // The destination's policy and quota apply to a copy as to an upload.
        let Admitted {
            placement,
            policy,
            reservation,
            _ticket,
        } = self.admit(&c.tenant, &i.bucket, &i.key, Some(src.size), 1)?;
        let target = target(&c, &i.bucket, &i.key, client);
        let scanner = self
            .scanner_for(&policy)
            .filter(|_| src.scan_status() != meta::ScanStatus::Clean);
        let src_segments: Vec<meta::Segment> = src.segments().cloned().collect();
        let (detected, scan) = pipeline::inspect(
            &self.backend,
            scanner,
            &policy,
            &src_segments,
            src.size,
            attrs.content_type.as_deref(),
            src.detected_type.clone(),
            &target,
        )
        .await?;
        let scan = if scanner.is_some() {
            Some(scan)
        } else {
            src.scan.clone()
        };
        let mut object = Object {
            last_modified_ms: meta::now_ms(),
            attrs,
            tags,
            detected_type: Some(detected),
            scan,
            ..src
        };
        let copied = pipeline::relocate(
            &self.backend,
            &placement,
            &c.tenant,
            object
                .parts
                .iter_mut()
                .flat_map(|p| p.segments.iter_mut())
                .collect(),
        )
        .await?;
        let freed = reservation.commit(|allow| {
            self.meta.put_object(
                &c.tenant,
                &i.bucket,
                &i.key,
                &object,
                copied.is_empty(),
                allow,
                &|_| Ok(()),
            )
        })?;
        copied.into_iter().for_each(pipeline::BlobGuard::keep);
        self.deleter.release(freed);
        self.meta.durable().await?;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(ETag::Strong(object.etag)),
                last_modified: Some(ts(object.last_modified_ms)),
                checksum_crc32: object.checksums.crc32,
                checksum_crc32c: object.checksums.crc32c,
                checksum_sha1: object.checksums.sha1,
                checksum_sha256: object.checksums.sha256,
                checksum_crc64nvme: object.checksums.crc64nvme,
                checksum_type: object.checksums.kind.map(ChecksumType::from),
            }),
            ..Default::default()
        }))
    }

    pub(super) async fn op_put_object_tagging(
        &self,
        req: S3Request<PutObjectTaggingInput>,
    ) -> S3Result<S3Response<PutObjectTaggingOutput>> {
        let c = caller(&req)?;
        let i = req.input;
        no_version(i.version_id.as_deref())?;
        let tags = check_tags(
            i.tagging
                .tag_set
                .into_iter()
                .map(|t| (t.key.unwrap_or_default(), t.value.unwrap_or_default()))
                .collect(),
        )?;
        self.meta.require_bucket(&c.tenant, &i.bucket)?;
        self.meta.set_tags(&c.tenant, &i.bucket, &i.key, tags)?;
        self.meta.durable().await?;
        Ok(S3Response::new(PutObjectTaggingOutput::default()))
    }

    pub(super) async fn op_get_object_tagging(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> S3Result<S3Response<GetObjectTaggingOutput>> {
        let c = caller(&req)?;
        let i = &req.input;
        no_version(i.version_id.as_deref())?;
        let o = self.current(&c.tenant, &i.bucket, &i.key)?;
        let status = o.scan_status().as_str().to_string();
        Ok(S3Response::new(GetObjectTaggingOutput {
            tag_set: o
                .tags
                .into_iter()
                .chain([(SCAN_TAG.to_string(), status)])
                .map(|(k, v)| Tag {
                    key: Some(k),
                    value: Some(v),
                })
                .collect(),
            version_id: None,
        }))
    }

    pub(super) async fn op_delete_object_tagging(
        &self,
        req: S3Request<DeleteObjectTaggingInput>,
    ) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
        let c = caller(&req)?;
        let i = &req.input;
        no_version(i.version_id.as_deref())?;
        self.meta.require_bucket(&c.tenant, &i.bucket)?;
        self.meta
            .set_tags(&c.tenant, &i.bucket, &i.key, Vec::new())?;
        self.meta.durable().await?;
        Ok(S3Response::new(DeleteObjectTaggingOutput::default()))
    }
}

pub(super) fn precondition_failed() -> S3Error {
    s3_error!(
        PreconditionFailed,
        "At least one of the pre-conditions you specified did not hold"
    )
}
