//! Multipart uploads. Each part is its own blob; completion records the object as the ordered
//! list of the chosen parts' segments in one meta transaction and copies no bytes
//! (DESIGN.md §2). UploadPartCopy shares the source's blobs as well.

use futures::TryStreamExt;
use s3s::crypto::Checksum as _;
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::list::Enc;
use super::list::MAX_EXAMINED;
use super::object::body_len;
use super::object::{attrs, tags_from_header};
use super::{Admitted, Caller, Gateway, caller, owner, peer, target, ts};
use crate::meta::{self, Change, Checksums, Commit, Object, PartLayout, Upload, UploadCursor};
use crate::pipeline::{self, Declared, checksum};

/// S3's minimum size of every part but the last.
const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
const MAX_PART_NUMBER: i32 = 10_000;

fn part_number(n: i32) -> S3Result<u32> {
    if (1..=MAX_PART_NUMBER).contains(&n) {
        Ok(n as u32)
    } else {
        Err(s3_error!(
            InvalidArgument,
            "Part number must be an integer between 1 and 10000, inclusive"
        ))
    }
}

/// Parses `x-amz-copy-source-range: bytes=first-last` against the source size.
fn copy_range(r: Option<&str>, size: u64) -> S3Result<std::ops::Range<u64>> {
    let Some(r) = r else { return Ok(0..size) };
    let bad = || {
        s3_error!(
            InvalidArgument,
            "The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy"
        )
    };
    let (a, b) = r
        .strip_prefix("bytes=")
        .and_then(|x| x.split_once('-'))
        .ok_or_else(bad)?;
    let (a, b): (u64, u64) = (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
    if a > b || b >= size {
        return Err(s3_error!(
            InvalidRange,
            "The requested range is not satisfiable"
        ));
    }
    Ok(a..b + 1)
}

/// The five checksum values in S3's field order: CRC32, CRC32C, SHA1, SHA256, CRC64NVME.
fn part_checksums(c: &Checksums) -> [Option<String>; 5] {
    [
        c.crc32.clone(),
        c.crc32c.clone(),
        c.sha1.clone(),
        c.sha256.clone(),
        c.crc64nvme.clone(),
    ]
}

fn abort(c: &Caller, bucket: &str, key: &str, upload_id: &str) -> Commit {
    Commit::new(Change::AbortUpload {
        tenant: c.tenant.clone(),
        bucket: bucket.to_string(),
        key: key.to_string(),
        upload_id: upload_id.to_string(),
    })
    .by(c.stamp())
}

/// What a completion answers (the first time and every repeat of it).
fn completed(
    i: &CompleteMultipartUploadInput,
    etag: String,
    checksums: Checksums,
) -> S3Response<CompleteMultipartUploadOutput> {
    let [crc32, crc32c, sha1, sha256, crc64nvme] = part_checksums(&checksums);
    S3Response::new(CompleteMultipartUploadOutput {
        bucket: Some(i.bucket.clone()),
        key: Some(i.key.clone()),
        location: Some(format!("/{}/{}", i.bucket, i.key)),
        e_tag: Some(ETag::Strong(etag)),
        checksum_crc32: crc32,
        checksum_crc32c: crc32c,
        checksum_sha1: sha1,
        checksum_sha256: sha256,
        checksum_crc64nvme: crc64nvme,
        checksum_type: checksums.kind.map(ChecksumType::from),
        ..Default::default()
    })
}

impl Gateway {
    async fn open_upload(
        &self,
        tenant: &str,
        bucket: &str,
        key: &str,
        id: &str,
    ) -> S3Result<Upload> {
        self.meta.require_bucket(tenant, bucket).await?;
        Ok(self.meta.upload(tenant, bucket, key, id).await?)
    }

    pub(super) async fn op_create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let c = caller(&req)?;
        let i = req.input;
        let algorithm = i
            .checksum_algorithm
            .as_ref()
            .map(|a| a.as_str().to_ascii_lowercase());
        if let Some(a) = &algorithm {
            Declared::default().want(a)?;
        }
        let full_object = i
            .checksum_type
            .as_ref()
            .is_some_and(|t| t.as_str() == ChecksumType::FULL_OBJECT);
        if full_object && !matches!(algorithm.as_deref(), Some("crc32" | "crc32c" | "crc64nvme")) {
            return Err(s3_error!(
                InvalidRequest,
                "The FULL_OBJECT checksum type requires a CRC32, CRC32C or CRC64NVME checksum algorithm"
            ));
        }
        let checksum_type = algorithm.as_ref().map(|_| {
            if full_object {
                ChecksumType::FULL_OBJECT
            } else {
                ChecksumType::COMPOSITE
            }
            .to_string()
        });
        let upload = Upload {
            upload_id: ulid::Ulid::new().to_string(),
            key: i.key.clone(),
            initiated_ms: meta::now_ms(),
            initiator: c.user.clone(),
            attrs: attrs(
                i.content_type,
                i.content_encoding,
                i.content_disposition,
                i.content_language,
                i.cache_control,
                i.expires,
                i.metadata,
            )?,
            tags: tags_from_header(i.tagging.as_deref())?,
            checksum_algorithm: algorithm,
            checksum_type,
        };
        // What a PUT of the object would pass: the bucket, the key rules, a free object in the
        // quota. Nothing is reserved: the parts reserve their own bytes as they arrive.
        drop(self.admit(&c.tenant, &i.bucket, &i.key, None, 1).await?);
        {
            let _lane = self.in_flight.upload_lane(&c.tenant).await;
            let max = self.in_flight.limits().open_per_tenant;
            if self.meta.open_uploads(&c.tenant).await?.uploads >= max as u64 {
                return Err(crate::error::custom(
                    "TooManyOpenUploads",
                    http::StatusCode::FORBIDDEN,
                    format!(
                        "Your account has {max} multipart uploads open, the most allowed. Complete or abort some of them first."
                    ),
                ));
            }
            self.meta
                .commit(
                    &Commit::new(Change::CreateUpload {
                        tenant: c.tenant.clone(),
                        bucket: i.bucket.clone(),
                        upload: upload.clone(),
                    })
                    .by(c.stamp()),
                )
                .await?;
        }
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(i.bucket),
            key: Some(i.key),
            upload_id: Some(upload.upload_id),
            checksum_algorithm: i.checksum_algorithm,
            checksum_type: upload.checksum_type.clone().map(ChecksumType::from),
            ..Default::default()
        }))
    }

    pub(super) async fn op_upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let c = caller(&req)?;
        let client = peer(&req);
        let i = req.input;
        let n = part_number(i.part_number)?;
        let upload = self
            .open_upload(&c.tenant, &i.bucket, &i.key, &i.upload_id)
            .await?;
        let mut declared = Declared::from_headers(&req.headers)?;
        let len = body_len(&req.headers, &req.extensions)?;
        if let Some(a) = &upload.checksum_algorithm {
            declared.want(a)?;
        }
        // Every part record costs metadata, an empty one too: bounded per tenant (checked on the
        // counter the commits keep; concurrent parts may pass it by the tenant's writes in
        // flight). Replacing a part adds no record.
        let max = self.in_flight.limits().parts_per_tenant;
        if self.meta.open_uploads(&c.tenant).await?.parts >= max as u64
            && !self.meta.has_part(&upload.upload_id, n).await?
        {
            return Err(crate::error::custom(
                "TooManyParts",
                http::StatusCode::FORBIDDEN,
                format!(
                    "Your account's open multipart uploads hold {max} parts, the most allowed. Complete or abort some of them first."
                ),
            ));
        }
        // A part is charged as it arrives; its type and the virus scan are checked on the whole
        // object at completion.
        let Admitted {
            placement,
            policy,
            reservation,
            _ticket,
        } = self.admit(&c.tenant, &i.bucket, &i.key, len, 0).await?;
        let target = target(&c, &i.bucket, &i.key, client);
        let (stored, reservation) = self
            .ingest(
                &placement,
                i.body,
                req.trailing_headers,
                declared,
                len,
                reservation,
                pipeline::Checks {
                    policy: &policy,
                    sniff: false,
                    content_type: None,
                    scanner: None,
                    target: &target,
                },
            )
            .await?;
        let part = meta::Part {
            part_number: n,
            size: stored.segment.len,
            etag: stored.etag(),
            last_modified_ms: meta::now_ms(),
            segments: vec![stored.segment.clone()],
            checksums: stored.checksums.clone(),
        };
        reservation
            .commit(
                Commit::new(Change::PutPart {
                    tenant: c.tenant.clone(),
                    bucket: i.bucket.clone(),
                    key: i.key.clone(),
                    upload_id: i.upload_id.clone(),
                    part: part.clone(),
                    shared: false,
                })
                .by(c.stamp()),
                vec![stored.guard],
            )
            .await?;
        let [crc32, crc32c, sha1, sha256, crc64nvme] = part_checksums(&part.checksums);
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(ETag::Strong(part.etag)),
            checksum_crc32: crc32,
            checksum_crc32c: crc32c,
            checksum_sha1: sha1,
            checksum_sha256: sha256,
            checksum_crc64nvme: crc64nvme,
            ..Default::default()
        }))
    }

    pub(super) async fn op_upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let c = caller(&req)?;
        let i = req.input;
        let n = part_number(i.part_number)?;
        self.open_upload(&c.tenant, &i.bucket, &i.key, &i.upload_id)
            .await?;
        let (_, _, src) = self
            .copy_source(
                &c.tenant,
                &i.copy_source,
                i.copy_source_if_match.as_ref(),
                i.copy_source_if_unmodified_since.as_ref(),
                i.copy_source_if_none_match.as_ref(),
                i.copy_source_if_modified_since.as_ref(),
            )
            .await?;
        let range = copy_range(i.copy_source_range.as_deref(), src.size)?;
        let all: Vec<meta::Segment> = src.segments().cloned().collect();
        // The part's ETag is the MD5 of its bytes. A whole single-part source already has it;
        // otherwise the range is read (not written) to compute it.
        let etag = if !src.multipart && range == (0..src.size) {
            src.etag.clone()
        } else {
            let mut md5 = s3s::crypto::Md5::new();
            let mut stream = pipeline::read(&self.backend, &all, range.clone());
            while let Some(chunk) = stream
                .try_next()
                .await
                .map_err(crate::backend::BackendError::Body)?
            {
                md5.update(&chunk);
            }
            hex::encode(md5.finalize())
        };
        let mut part = meta::Part {
            part_number: n,
            size: range.end - range.start,
            etag,
            last_modified_ms: meta::now_ms(),
            segments: pipeline::slice(&all, range),
            checksums: Checksums::default(),
        };
        let Admitted {
            placement,
            reservation,
            _ticket,
            ..
        } = self
            .admit(&c.tenant, &i.bucket, &i.key, Some(part.size), 0)
            .await?;
        let copied = pipeline::relocate(
            &self.backend,
            &placement,
            &c.tenant,
            part.segments.iter_mut().collect(),
        )
        .await?;
        reservation
            .commit(
                Commit::new(Change::PutPart {
                    tenant: c.tenant.clone(),
                    bucket: i.bucket.clone(),
                    key: i.key.clone(),
                    upload_id: i.upload_id.clone(),
                    part: part.clone(),
                    // Shared blobs must still be referenced when the part commits.
                    shared: copied.is_empty(),
                })
                .by(c.stamp()),
                copied,
            )
            .await?;
        Ok(S3Response::new(UploadPartCopyOutput {
            copy_part_result: Some(CopyPartResult {
                e_tag: Some(ETag::Strong(part.etag)),
                last_modified: Some(ts(part.last_modified_ms)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    pub(super) async fn op_complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let c = caller(&req)?;
        let client = peer(&req);
        let i = req.input;
        let requested = i
            .multipart_upload
            .as_ref()
            .and_then(|m| m.parts.clone())
            .unwrap_or_default();
        if requested.is_empty() {
            return Err(s3_error!(
                MalformedXML,
                "The XML you provided was not well-formed or did not validate against our published schema: at least one part is required"
            ));
        }
        let bucket = self.meta.require_bucket(&c.tenant, &i.bucket).await?;
        let upload = match self
            .meta
            .upload(&c.tenant, &i.bucket, &i.key, &i.upload_id)
            .await
        {
            Ok(u) => u,
            Err(meta::MetaError::NoSuchUpload) => {
                return self
                    .completed_before(&c.tenant, &bucket, &i, &requested)
                    .await;
            }
            Err(e) => return Err(e.into()),
        };
        let stored: std::collections::HashMap<u32, meta::Part> = self
            .meta
            .parts(&upload.upload_id)
            .await?
            .into_iter()
            .map(|p| (p.part_number, p))
            .collect();
        let mut chosen: Vec<&meta::Part> = Vec::with_capacity(requested.len());
        let mut last = 0u32;
        for r in &requested {
            let n = r
                .part_number
                .ok_or_else(|| s3_error!(MalformedXML, "Every part needs a PartNumber"))?;
            let n = part_number(n)?;
            if n <= last {
                return Err(s3_error!(
                    InvalidPartOrder,
                    "The list of parts was not in ascending order. The parts list must be specified in order of the part number."
                ));
            }
            last = n;
            let invalid = || {
                s3_error!(
                    InvalidPart,
                    "One or more of the specified parts could not be found. The part might not have been uploaded, or the specified entity tag might not have matched the part's entity tag."
                )
            };
            let Some(p) = stored.get(&n) else {
                // A completion that raced this one may have taken the parts with the upload
                // since it was read: then this is a repeat of that one.
                if matches!(
                    self.meta
                        .upload(&c.tenant, &i.bucket, &i.key, &i.upload_id)
                        .await,
                    Err(meta::MetaError::NoSuchUpload)
                ) {
                    return self
                        .completed_before(&c.tenant, &bucket, &i, &requested)
                        .await;
                }
                return Err(invalid());
            };
            if let Some(e) = &r.e_tag
                && e.value().trim_matches('"') != p.etag
            {
                return Err(invalid());
            }
            let given = [
                ("crc32", &r.checksum_crc32),
                ("crc32c", &r.checksum_crc32c),
                ("sha1", &r.checksum_sha1),
                ("sha256", &r.checksum_sha256),
                ("crc64nvme", &r.checksum_crc64nvme),
            ];
            for (alg, v) in given {
                if let Some(v) = v
                    && checksum::get(&p.checksums, alg) != Some(v.as_str())
                {
                    return Err(s3_error!(
                        InvalidPart,
                        "The checksum of part {n} does not match the checksum that was uploaded with it."
                    ));
                }
            }
            chosen.push(p);
        }
        for p in &chosen[..chosen.len() - 1] {
            if p.size < MIN_PART_SIZE {
                return Err(s3_error!(
                    EntityTooSmall,
                    "Your proposed upload is smaller than the minimum allowed object size: every part but the last must be at least 5 MiB (part {} has {} bytes)",
                    p.part_number,
                    p.size
                ));
            }
        }
        let mut md5s = Vec::with_capacity(chosen.len() * 16);
        for p in &chosen {
            md5s.extend(hex::decode(&p.etag).map_err(|_| s3_error!(InternalError))?);
        }
        let etag = format!(
            "{}-{}",
            hex::encode(s3s::crypto::Md5::checksum(&md5s)),
            chosen.len()
        );
        let mut checksums = Checksums::default();
        if let Some(alg) = &upload.checksum_algorithm {
            let values: Option<Vec<(&str, u64)>> = chosen
                .iter()
                .map(|p| checksum::get(&p.checksums, alg).map(|v| (v, p.size)))
                .collect();
            let full_object = upload.checksum_type.as_deref() == Some(ChecksumType::FULL_OBJECT);
            let value = values.and_then(|v| {
                if full_object {
                    checksum::combined(alg, &v)
                } else {
                    let sums: Vec<&str> = v.iter().map(|(s, _)| *s).collect();
                    checksum::composite(alg, &sums)
                }
            });
            if let Some(v) = value {
                checksum::set(&mut checksums, alg, v);
                checksums.kind = upload.checksum_type.clone();
            }
        }
        checksum::check_declared_whole(
            &checksums,
            upload.checksum_algorithm.as_deref(),
            [
                ("crc32", i.checksum_crc32.as_deref()),
                ("crc32c", i.checksum_crc32c.as_deref()),
                ("sha1", i.checksum_sha1.as_deref()),
                ("sha256", i.checksum_sha256.as_deref()),
                ("crc64nvme", i.checksum_crc64nvme.as_deref()),
            ],
        )?;
        let size = chosen.iter().map(|p| p.size).sum();
        let parts: Vec<PartLayout> = chosen
            .iter()
            .map(|p| PartLayout {
                size: p.size,
                segments: p.segments.clone(),
                checksums: p.checksums.clone(),
            })
            .collect();
        // The parts' bytes are charged already; the object adds one to the count. Its type and
        // a scan of the whole, read back in order, decide before it becomes visible.
        let Admitted {
            policy,
            reservation,
            _ticket,
            ..
        } = self.admit(&c.tenant, &i.bucket, &i.key, None, 1).await?;
        let target = target(&c, &i.bucket, &i.key, client);
        let segments: Vec<meta::Segment> = parts
            .iter()
            .flat_map(|p| p.segments.iter().cloned())
            .collect();
        let inspected = pipeline::inspect(
            &self.backend,
            self.scanner_for(&policy),
            &policy,
            &segments,
            size,
            upload.attrs.content_type.as_deref(),
            None,
            &target,
        )
        .await;
        let (detected, scan) = match inspected {
            Ok(x) => x,
            Err(e) => {
                // An infected upload is dropped whole: its parts are released with their quota.
                if matches!(e, pipeline::PipelineError::Infected(_)) {
                    self.meta
                        .commit(&abort(&c, &i.bucket, &i.key, &i.upload_id))
                        .await?;
                }
                return Err(e.into());
            }
        };
        let object = Object {
            size,
            etag,
            last_modified_ms: meta::now_ms(),
            attrs: upload.attrs.clone(),
            checksums,
            tags: upload.tags.clone(),
            parts,
            multipart: true,
            detected_type: Some(detected),
            scan: Some(scan),
        };
        let committed = reservation
            .commit(
                Commit::new(Change::CompleteUpload {
                    tenant: c.tenant.clone(),
                    bucket: i.bucket.clone(),
                    upload: upload.clone(),
                    object: object.clone(),
                    parts: chosen
                        .iter()
                        .map(|p| (p.part_number, p.etag.clone()))
                        .collect(),
                })
                .by(c.stamp()),
                Vec::new(),
            )
            .await;
        match committed {
            Ok(()) => Ok(completed(&i, object.etag, object.checksums)),
            // Another request completed it meanwhile: answered as a repeat of that one.
            Err(pipeline::quota::QuotaError::Meta(meta::MetaError::NoSuchUpload)) => {
                self.completed_before(&c.tenant, &bucket, &i, &requested)
                    .await
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A completion of an upload that is no longer open: S3 answers a repeat with the same
    /// parts list as it answered the first (an SDK retrying after a lost answer), and anything
    /// else with `NoSuchUpload`. A completion recorded before the bucket was (re)created belongs
    /// to an earlier bucket of that name.
    async fn completed_before(
        &self,
        tenant: &str,
        bucket: &meta::Bucket,
        i: &CompleteMultipartUploadInput,
        requested: &[CompletedPart],
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let done = self
            .meta
            .completion(tenant, &bucket.name, &i.key, &i.upload_id)
            .await?
            .filter(|d| d.completed_ms >= bucket.created_ms);
        let parts = requested.iter().map(|p| {
            (
                p.part_number.map_or(0, |n| n.max(0) as u32),
                p.e_tag.as_ref().map(|e| e.value()),
            )
        });
        match done {
            Some(d) if d.same_parts(parts) => Ok(completed(i, d.etag, d.checksums)),
            _ => Err(meta::MetaError::NoSuchUpload.into()),
        }
    }

    pub(super) async fn op_abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let c = caller(&req)?;
        let i = &req.input;
        self.meta.require_bucket(&c.tenant, &i.bucket).await?;
        self.meta
            .commit(&abort(&c, &i.bucket, &i.key, &i.upload_id))
            .await?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    pub(super) async fn op_list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let c = caller(&req)?;
        let i = req.input;
        let upload = self
            .open_upload(&c.tenant, &i.bucket, &i.key, &i.upload_id)
            .await?;
        let max = i.max_parts.unwrap_or(1000).clamp(0, 1000) as usize;
        let marker = i.part_number_marker.unwrap_or(0).max(0) as u32;
        let mut parts: Vec<meta::Part> = self
            .meta
            .parts(&upload.upload_id)
            .await?
            .into_iter()
            .filter(|p| p.part_number > marker)
            .collect();
        let truncated = parts.len() > max;
        parts.truncate(max);
        let next = parts.last().map(|p| p.part_number as i32);
        let o = owner(&c);
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(i.bucket),
            key: Some(i.key),
            upload_id: Some(i.upload_id),
            part_number_marker: i.part_number_marker,
            next_part_number_marker: next,
            max_parts: Some(max as i32),
            is_truncated: Some(truncated),
            initiator: Some(Initiator {
                display_name: Some(upload.initiator.clone()),
                id: Some(upload.initiator.clone()),
            }),
            owner: Some(o),
            storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
            checksum_algorithm: upload
                .checksum_algorithm
                .as_ref()
                .map(|a| ChecksumAlgorithm::from(a.to_ascii_uppercase())),
            parts: Some(
                parts
                    .into_iter()
                    .map(|p| {
                        let [crc32, crc32c, sha1, sha256, crc64nvme] = part_checksums(&p.checksums);
                        Part {
                            part_number: Some(p.part_number as i32),
                            e_tag: Some(ETag::Strong(p.etag)),
                            size: Some(p.size as i64),
                            last_modified: Some(ts(p.last_modified_ms)),
                            checksum_crc32: crc32,
                            checksum_crc32c: crc32c,
                            checksum_sha1: sha1,
                            checksum_sha256: sha256,
                            checksum_crc64nvme: crc64nvme,
                        }
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }

    pub(super) async fn op_list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let c = caller(&req)?;
        let i = req.input;
        // XML 1.0 cannot carry every key (NUL, most control characters): with
        // `encoding-type=url` every key and prefix in the answer is URL-encoded, as on S3.
        let enc = Enc::new(i.encoding_type.as_ref())?;
        self.meta.require_bucket(&c.tenant, &i.bucket).await?;
        let prefix = i.prefix.clone().unwrap_or_default();
        let max = i.max_uploads.unwrap_or(1000).clamp(0, 1000) as usize;
        let delimiter = i.delimiter.clone().filter(|d| !d.is_empty());
        let key_marker = i.key_marker.clone().filter(|k| !k.is_empty());
        let id_marker = i.upload_id_marker.clone().filter(|k| !k.is_empty());
        // Without an upload-id marker, uploads of the marker key itself are skipped too; with
        // one, they are read and those up to the marker passed over.
        // A key marker that is itself a rolled-up prefix resumes after everything under it.
        let rolled_up = |m: &str| {
            delimiter.as_deref().is_some_and(|d| {
                m.strip_prefix(prefix.as_str())
                    .and_then(|rest| rest.find(d).map(|i| i + d.len() == rest.len()))
                    .unwrap_or(false)
            })
        };
        let mut cursor = match (&key_marker, &id_marker) {
            (Some(k), None) if rolled_up(k) => UploadCursor::Past(k.clone()),
            (Some(k), None) => UploadCursor::AfterKey(k.clone()),
            (Some(k), Some(_)) => UploadCursor::AtKey(k.clone()),
            (None, _) => UploadCursor::Start,
        };
        // The common prefix returned last: uploads under it are passed over.
        let mut rolled: Option<String> = None;
        let mut uploads = Vec::new();
        let mut prefixes: Vec<String> = Vec::new();
        let mut truncated = false;
        // A page that ends early having returned nothing resumes where it began.
        let (mut next_key, mut next_id) = (key_marker.clone(), id_marker.clone());
        // Read a chunk at a time, seeking past each rolled-up prefix, at most `MAX_EXAMINED`
        // records per page (as listings of objects).
        let mut examined = 0;
        'scan: loop {
            if examined >= MAX_EXAMINED {
                truncated = true;
                break;
            }
            let want = (max + 1)
                .saturating_sub(uploads.len() + prefixes.len())
                .clamp(1, 1001)
                .min(MAX_EXAMINED - examined);
            let chunk = self
                .meta
                .list_uploads(&c.tenant, &i.bucket, &prefix, &cursor, want)
                .await?;
            let complete = chunk.len() < want;
            examined += chunk.len();
            for u in chunk {
                if rolled.as_deref().is_some_and(|cp| u.key.starts_with(cp)) {
                    continue;
                }
                if let (Some(k), Some(id)) = (&key_marker, &id_marker)
                    && (u.key.as_str(), u.upload_id.as_str()) <= (k.as_str(), id.as_str())
                {
                    cursor = UploadCursor::AfterUpload(u.key.clone(), u.upload_id.clone());
                    continue;
                }
                if let Some(d) = &delimiter
                    && let Some(pos) = u.key[prefix.len()..].find(d.as_str())
                {
                    let cp = u.key[..prefix.len() + pos + d.len()].to_string();
                    if uploads.len() + prefixes.len() >= max {
                        truncated = true;
                        break 'scan;
                    }
                    cursor = UploadCursor::Past(cp.clone());
                    next_key = Some(cp.clone());
                    next_id = None;
                    prefixes.push(cp.clone());
                    rolled = Some(cp);
                    continue;
                }
                cursor = UploadCursor::AfterUpload(u.key.clone(), u.upload_id.clone());
                if uploads.len() + prefixes.len() >= max {
                    truncated = true;
                    break 'scan;
                }
                next_key = Some(u.key.clone());
                next_id = Some(u.upload_id.clone());
                uploads.push(MultipartUpload {
                    key: Some(enc.s(u.key)),
                    upload_id: Some(u.upload_id),
                    initiated: Some(ts(u.initiated_ms)),
                    initiator: Some(Initiator {
                        display_name: Some(u.initiator.clone()),
                        id: Some(u.initiator),
                    }),
                    owner: Some(owner(&c)),
                    storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
                    checksum_algorithm: u
                        .checksum_algorithm
                        .map(|a| ChecksumAlgorithm::from(a.to_ascii_uppercase())),
                    ..Default::default()
                });
            }
            if complete {
                break;
            }
        }
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(i.bucket),
            prefix: enc.o(i.prefix),
            delimiter: enc.o(i.delimiter),
            key_marker: enc.o(i.key_marker),
            upload_id_marker: i.upload_id_marker,
            max_uploads: Some(max as i32),
            is_truncated: Some(truncated),
            next_key_marker: if truncated { enc.o(next_key) } else { None },
            next_upload_id_marker: if truncated { next_id } else { None },
            uploads: Some(uploads),
            common_prefixes: Some(
                prefixes
                    .into_iter()
                    .map(|p| CommonPrefix {
                        prefix: Some(enc.s(p)),
                    })
                    .collect(),
            ),
            encoding_type: i.encoding_type,
            ..Default::default()
        }))
    }
}
