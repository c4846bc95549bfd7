//! PutObject: admit (quota, policy), stream the body through the pipeline into a new blob,
//! verify what the client declared, then one meta commit makes the version current.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::object::{attrs, body_len, precondition_failed, tags_from_header, with_protection};
use super::{Admitted, Gateway, caller, peer, target};
use crate::backend::Placement;
use crate::meta::{self, Change, Commit, MetaError, Object, PartLayout};
use crate::pipeline::quota::{QuotaError, Reservation, Room};
use crate::pipeline::{self, Declared};

impl Gateway {
    /// Stages 2 and 3 of the write protocol for PUT and UploadPart: stream the body into a new
    /// blob, then check it against what the client declared (headers, and the aws-chunked
    /// trailer, which is readable only once the body has been consumed). A body of unknown
    /// length (`len` = `None`) grows `reservation` as it arrives; the reservation is handed back
    /// for the commit.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn ingest(
        &self,
        placement: &Placement,
        body: Option<StreamingBlob>,
        trailers: Option<s3s::TrailingHeaders>,
        mut declared: Declared,
        len: Option<u64>,
        reservation: Reservation,
        checks: pipeline::Checks<'_>,
    ) -> S3Result<(pipeline::Stored, Reservation)> {
        let body = body.unwrap_or_else(|| {
            StreamingBlob::wrap(futures::stream::empty::<Result<bytes::Bytes, std::io::Error>>())
        });
        // A body of unknown length hands the reservation to the meter's room while it streams
        // (`Err`: where it is while the body is stored).
        let (length, held) = match len {
            Some(n) => (pipeline::Length::Declared(n), Ok(reservation)),
            None => {
                let room = Room::new(reservation);
                (pipeline::Length::Metered(room.clone()), Err(room))
            }
        };
        let stored =
            pipeline::store(&self.backend, placement, body, &declared, length, checks).await?;
        let reservation = match held {
            Ok(r) => r,
            Err(room) => room
                .into_inner()
                .await
                .ok_or_else(|| s3_error!(InternalError, "the write's reservation was lost"))?,
        };
        if let Some(t) = trailers.and_then(|t| t.take()) {
            declared.add_trailers(&t)?;
        }
        declared.verify(&stored.md5, &stored.checksums)?;
        Ok((stored, reservation))
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
        let len = body_len(&req.headers, &req.extensions)?;
        let Admitted {
            placement,
            policy,
            reservation,
            _ticket,
        } = self
            .admit(&c.tenant, &input.bucket, &input.key, len, 1)
            .await?;
        let if_match = input.if_match.is_some();
        let precondition = match (input.if_match, input.if_none_match) {
            (Some(ETagCondition::ETag(ETag::Strong(e))), _) => meta::Precondition::IfMatch(e),
            (Some(ETagCondition::ETag(_)), _) => meta::Precondition::Never,
            (Some(_), _) => meta::Precondition::Exists,
            (None, Some(ETagCondition::Any)) => meta::Precondition::Absent,
            // S3 writes take only `*` here ("create if absent").
            (None, Some(_)) => {
                return Err(s3_error!(
                    NotImplemented,
                    "If-None-Match on a write accepts only '*'."
                ));
            }
            (None, None) => meta::Precondition::Always,
        };
        // Fail before reading the body when the precondition is already false (the commit
        // checks it again; an unconditional PUT reads nothing here).
        if precondition != meta::Precondition::Always {
            let current = self
                .meta
                .object(&c.tenant, &input.bucket, &input.key)
                .await?;
            if !precondition.holds(current.as_ref()) {
                // S3: If-Match on a key that does not exist is 404, not 412.
                if if_match && current.is_none() {
                    return Err(s3_error!(NoSuchKey, "The specified key does not exist."));
                }
                return Err(precondition_failed());
            }
        }

        let target = target(&c, &input.bucket, &input.key, client);
        let (stored, reservation) = self
            .ingest(
                &placement,
                input.body,
                req.trailing_headers,
                declared,
                len,
                reservation,
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
                checksums: Default::default(),
            }],
            multipart: false,
            detected_type: stored.detected.clone(),
            scan: Some(stored.scan.clone()),
        };
        reservation
            .commit(
                Commit::new(Change::PutObject {
                    tenant: c.tenant.clone(),
                    bucket: input.bucket.clone(),
                    key: input.key.clone(),
                    object: object.clone(),
                    shared: false,
                })
                .when(precondition)
                .by(c.stamp()),
                vec![stored.guard],
            )
            .await
            .map_err(|e| match e {
                QuotaError::Meta(MetaError::Conflict) => precondition_failed(),
                e => e.into(),
            })?;
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
}
