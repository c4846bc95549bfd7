//! CopyObject (and the copy-source resolution UploadPartCopy shares): the source's blobs are
//! shared, or copied when the destination is placed on another backend or container.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::object::{attrs, tags_from_header};
use super::{Admitted, Gateway, caller, peer, target, ts};
use crate::meta::{self, Change, Commit, Object};
use crate::pipeline;
use crate::pipeline::read::{self, Ask, Conditions, Reader};

impl Gateway {
    /// Resolves an `x-amz-copy-source` within the caller's tenant and checks its conditions.
    pub(super) async fn copy_source(
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
        let ask = Ask {
            reader: Reader::CopySource,
            version_id: version_id.as_deref(),
            conditions: Conditions {
                if_match,
                if_unmodified_since,
                if_none_match,
                if_modified_since,
            },
            range: None,
            part_number: None,
        };
        let opened = read::open(&self.meta, tenant, bucket, key, &ask).await?;
        Ok((bucket.to_string(), key.to_string(), opened.object))
    }

    pub(super) async fn op_copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let c = caller(&req)?;
        let client = peer(&req);
        let i = req.input;
        let (src_bucket, src_key, src) = self
            .copy_source(
                &c.tenant,
                &i.copy_source,
                i.copy_source_if_match.as_ref(),
                i.copy_source_if_unmodified_since.as_ref(),
                i.copy_source_if_none_match.as_ref(),
                i.copy_source_if_modified_since.as_ref(),
            )
            .await?;
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
        } = self
            .admit(&c.tenant, &i.bucket, &i.key, Some(src.size), 1)
            .await?;
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
        reservation
            .commit(
                Commit::new(Change::PutObject {
                    tenant: c.tenant.clone(),
                    bucket: i.bucket.clone(),
                    key: i.key.clone(),
                    object: object.clone(),
                    // Shared blobs must still be referenced when the copy commits.
                    shared: copied.is_empty(),
                })
                .by(c.stamp()),
                copied,
            )
            .await?;
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
}
