//! GET and HEAD of an object: the version check, preconditions, the selected range (`Range`
//! or `partNumber`), and the body streamed from the object's segments.

use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};

use super::object::{
    Precondition, evaluate, no_version, not_modified, precondition_failed, readable,
    with_protection,
};
use super::{Gateway, caller, ts};
use crate::meta::{self, Object};
use crate::pipeline;

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
        let o = $gw.current($tenant, &i.bucket, &i.key).await?;
        match evaluate(
            &o,
            i.if_match.as_ref(),
            i.if_unmodified_since.as_ref(),
            i.if_none_match.as_ref(),
            i.if_modified_since.as_ref(),
        ) {
            Precondition::Ok => {}
            Precondition::NotModified => return Err(not_modified(&o)),
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
                e.set_status_code(http::StatusCode::BAD_REQUEST);
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
        let (o, range, partial, with_checksums) = read_plan!(self, &c.tenant, &req.input);
        readable(&o)?;
        let mut out = GetObjectOutput {
            content_length: Some((range.end - range.start) as i64),
            content_range: partial.then(|| content_range(&range, o.size)),
            tag_count: tag_count(&o),
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
        let mut resp = with_protection(out, &o);
        // S3 sends it on HEAD too; s3s's HEAD output has no field for it.
        if let Some(n) = tag_count(&o) {
            resp.headers
                .insert("x-amz-tagging-count", http::HeaderValue::from(n));
        }
        Ok(resp)
    }
}
