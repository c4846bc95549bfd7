//! GET and HEAD of an object: what each asks of the read path (`pipeline::read`: the version,
//! the conditions, the range or part), and the answer made of what it opened.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};

use super::object::with_protection;
use super::{Gateway, caller, ts};
use crate::meta::Object;
use crate::pipeline;
use crate::pipeline::read::{self, Ask, Conditions, Reader};

/// What a GET or HEAD input asks of the read path (two s3s types with the same fields).
macro_rules! ask {
    ($reader:expr, $i:expr) => {
        Ask {
            reader: $reader,
            version_id: $i.version_id.as_deref(),
            conditions: Conditions {
                if_match: $i.if_match.as_ref(),
                if_unmodified_since: $i.if_unmodified_since.as_ref(),
                if_none_match: $i.if_none_match.as_ref(),
                if_modified_since: $i.if_modified_since.as_ref(),
            },
            range: $i.range.as_ref(),
            part_number: $i.part_number,
        }
    };
}

/// Whether the response carries the stored checksums: asked for, and the whole object read.
fn with_checksums(mode: Option<&ChecksumMode>, opened: &read::Opened) -> bool {
    mode.is_some_and(|m| m.as_str() == "ENABLED") && opened.whole()
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

/// How many tags GetObjectTagging returns (`x-amz-tagging-count`, sent only when there are
/// some, as S3 does).
fn tag_count(o: &Object) -> Option<i32> {
    let n = o.tags.len() + usize::from(super::object::shows_scan_tag(o));
    (n > 0).then_some(n as i32)
}

fn content_range(r: &std::ops::Range<u64>, size: u64) -> String {
    format!("bytes {}-{}/{}", r.start, r.end.saturating_sub(1), size)
}

impl Gateway {
    pub(super) async fn op_get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let c = caller(&req)?;
        let i = &req.input;
        let ask = ask!(Reader::Get, i);
        let opened = read::open(&self.meta, &c.tenant, &i.bucket, &i.key, &ask).await?;
        let (o, range) = (&opened.object, &opened.range);
        let mut out = GetObjectOutput {
            content_length: Some((range.end - range.start) as i64),
            content_range: opened.partial.then(|| content_range(range, o.size)),
            tag_count: tag_count(o),
            ..Default::default()
        };
        object_fields!(out, o, with_checksums(i.checksum_mode.as_ref(), &opened));
        out.body = Some(StreamingBlob::new(pipeline::OutBody::new(
            opened.body(&self.backend),
            range.end - range.start,
        )));
        Ok(with_protection(out, o))
    }

    pub(super) async fn op_head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let c = caller(&req)?;
        let i = &req.input;
        let ask = ask!(Reader::Head, i);
        let opened = read::open(&self.meta, &c.tenant, &i.bucket, &i.key, &ask).await?;
        let (o, range) = (&opened.object, &opened.range);
        let mut out = HeadObjectOutput {
            content_length: Some((range.end - range.start) as i64),
            content_range: opened.partial.then(|| content_range(range, o.size)),
            ..Default::default()
        };
        object_fields!(out, o, with_checksums(i.checksum_mode.as_ref(), &opened));
        let mut resp = with_protection(out, o);
        // S3 sends it on HEAD too; s3s's HEAD output has no field for it.
        if let Some(n) = tag_count(o) {
            resp.headers
                .insert("x-amz-tagging-count", http::HeaderValue::from(n));
        }
        Ok(resp)
    }
}
