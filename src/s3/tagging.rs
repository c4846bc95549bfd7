//! Put/Get/DeleteObjectTagging (the read-only `scan-status` tag is reported where there is a
//! verdict, never stored) and
//! Put/Get/DeleteBucketTagging.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};

use super::object::{check_bucket_tags, check_tags, no_version, visible_tags};
use super::{Caller, Gateway, caller};
use crate::meta::{Change, Commit};

fn set_tags(c: &Caller, bucket: &str, key: &str, tags: Vec<(String, String)>) -> Commit {
    Commit::new(Change::SetTags {
        tenant: c.tenant.clone(),
        bucket: bucket.to_string(),
        key: key.to_string(),
        tags,
    })
    .by(c.stamp())
}

fn set_bucket_tags(c: &Caller, bucket: &str, tags: Vec<(String, String)>) -> Commit {
    Commit::new(Change::SetBucketTags {
        tenant: c.tenant.clone(),
        bucket: bucket.to_string(),
        tags,
    })
    .by(c.stamp())
}

/// A request's tag set as (key, value) pairs.
fn pairs(t: Tagging) -> Vec<(String, String)> {
    t.tag_set
        .into_iter()
        .map(|t| (t.key.unwrap_or_default(), t.value.unwrap_or_default()))
        .collect()
}

fn tag_set(tags: Vec<(String, String)>) -> Vec<Tag> {
    tags.into_iter()
        .map(|(k, v)| Tag {
            key: Some(k),
            value: Some(v),
        })
        .collect()
}

impl Gateway {
    pub(super) async fn op_put_bucket_tagging(
        &self,
        req: S3Request<PutBucketTaggingInput>,
    ) -> S3Result<S3Response<PutBucketTaggingOutput>> {
        let c = caller(&req)?;
        let i = req.input;
        let tags = check_bucket_tags(pairs(i.tagging))?;
        self.meta
            .commit(&set_bucket_tags(&c, &i.bucket, tags))
            .await?;
        Ok(S3Response::new(PutBucketTaggingOutput::default()))
    }

    pub(super) async fn op_get_bucket_tagging(
        &self,
        req: S3Request<GetBucketTaggingInput>,
    ) -> S3Result<S3Response<GetBucketTaggingOutput>> {
        let c = caller(&req)?;
        let b = self
            .meta
            .require_bucket(&c.tenant, &req.input.bucket)
            .await?;
        if b.tags.is_empty() {
            return Err(s3s::s3_error!(NoSuchTagSet, "The TagSet does not exist"));
        }
        Ok(S3Response::new(GetBucketTaggingOutput {
            tag_set: tag_set(b.tags),
        }))
    }

    pub(super) async fn op_delete_bucket_tagging(
        &self,
        req: S3Request<DeleteBucketTaggingInput>,
    ) -> S3Result<S3Response<DeleteBucketTaggingOutput>> {
        let c = caller(&req)?;
        self.meta
            .commit(&set_bucket_tags(&c, &req.input.bucket, Vec::new()))
            .await?;
        Ok(S3Response::new(DeleteBucketTaggingOutput::default()))
    }

    pub(super) async fn op_put_object_tagging(
        &self,
        req: S3Request<PutObjectTaggingInput>,
    ) -> S3Result<S3Response<PutObjectTaggingOutput>> {
        let c = caller(&req)?;
        let i = req.input;
        no_version(i.version_id.as_deref())?;
        let tags = check_tags(pairs(i.tagging))?;
        self.meta.require_bucket(&c.tenant, &i.bucket).await?;
        self.meta
            .commit(&set_tags(&c, &i.bucket, &i.key, tags))
            .await?;
        Ok(S3Response::new(PutObjectTaggingOutput::default()))
    }

    pub(super) async fn op_get_object_tagging(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> S3Result<S3Response<GetObjectTaggingOutput>> {
        let c = caller(&req)?;
        let i = &req.input;
        no_version(i.version_id.as_deref())?;
        let o = self.current(&c.tenant, &i.bucket, &i.key).await?;
        Ok(S3Response::new(GetObjectTaggingOutput {
            tag_set: tag_set(visible_tags(&o)),
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
        self.meta.require_bucket(&c.tenant, &i.bucket).await?;
        self.meta
            .commit(&set_tags(&c, &i.bucket, &i.key, Vec::new()))
            .await?;
        Ok(S3Response::new(DeleteObjectTaggingOutput::default()))
    }
}
