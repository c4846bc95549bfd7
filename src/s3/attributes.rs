//! GetObjectAttributes: the ETag, checksum, parts (paged by `MaxParts` / `PartNumberMarker`),
//! storage class and size of the current version, each only when asked for.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};

use super::object::no_version;
use super::{Gateway, caller, ts};

/// S3's default and largest page of parts.
const MAX_PARTS: usize = 1000;

impl Gateway {
    pub(super) async fn op_get_object_attributes(
        &self,
        req: S3Request<GetObjectAttributesInput>,
    ) -> S3Result<S3Response<GetObjectAttributesOutput>> {
        let c = caller(&req)?;
        let i = &req.input;
        no_version(i.version_id.as_deref())?;
        let o = self.current(&c.tenant, &i.bucket, &i.key).await?;
        let wants = |a: &str| i.object_attributes.iter().any(|x| x.as_str() == a);
        let mut out = GetObjectAttributesOutput {
            last_modified: Some(ts(o.last_modified_ms)),
            ..Default::default()
        };
        if wants(ObjectAttributes::ETAG) {
            out.e_tag = Some(ETag::Strong(o.etag.clone()));
        }
        if wants(ObjectAttributes::CHECKSUM) && !o.checksums.is_empty() {
            let cs = &o.checksums;
            out.checksum = Some(Checksum {
                checksum_crc32: cs.crc32.clone(),
                checksum_crc32c: cs.crc32c.clone(),
                checksum_sha1: cs.sha1.clone(),
                checksum_sha256: cs.sha256.clone(),
                checksum_crc64nvme: cs.crc64nvme.clone(),
                checksum_type: cs.kind.clone().map(ChecksumType::from),
            });
        }
        if wants(ObjectAttributes::OBJECT_PARTS) && o.multipart {
            let max = i.max_parts.map_or(MAX_PARTS, |m| {
                usize::try_from(m).unwrap_or(0).min(MAX_PARTS)
            });
            let marker = i
                .part_number_marker
                .map_or(0, |m| usize::try_from(m).unwrap_or(0));
            let page: Vec<ObjectPart> = o
                .parts
                .iter()
                .enumerate()
                .map(|(n, p)| (n + 1, p))
                .filter(|(n, _)| *n > marker)
                .take(max)
                .map(|(n, p)| ObjectPart {
                    part_number: Some(n as i32),
                    size: Some(p.size as i64),
                    checksum_crc32: p.checksums.crc32.clone(),
                    checksum_crc32c: p.checksums.crc32c.clone(),
                    checksum_sha1: p.checksums.sha1.clone(),
                    checksum_sha256: p.checksums.sha256.clone(),
                    checksum_crc64nvme: p.checksums.crc64nvme.clone(),
                })
                .collect();
            let last = page.last().and_then(|p| p.part_number);
            let truncated = last.is_some_and(|n| (n as usize) < o.parts.len());
            out.object_parts = Some(GetObjectAttributesParts {
                total_parts_count: Some(o.parts.len() as i32),
                part_number_marker: i.part_number_marker,
                next_part_number_marker: truncated.then_some(last).flatten(),
                max_parts: Some(max as i32),
                is_truncated: Some(truncated),
                parts: Some(page),
            });
        }
        if wants(ObjectAttributes::STORAGE_CLASS) {
            out.storage_class = Some(StorageClass::from_static(StorageClass::STANDARD));
        }
        if wants(ObjectAttributes::OBJECT_SIZE) {
            out.object_size = Some(o.size as i64);
        }
        Ok(S3Response::new(out))
    }
}
