//! Put/Get/DeleteObjectTagging; the read-only `scan-status` tag is reported, never stored.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result};

use super::object::{SCAN_TAG, check_tags, no_version};
use super::{Gateway, caller};
use crate::meta::{Change, Commit};

fn set_tags(tenant: &str, bucket: &str, key: &str, tags: Vec<(String, String)>) -> Commit {
    Commit::new(Change::SetTags {
        tenant: tenant.to_string(),
        bucket: bucket.to_string(),
        key: key.to_string(),
        tags,
    })
}

impl Gateway {
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
        self.meta.require_bucket(&c.tenant, &i.bucket).await?;
        self.meta
            .commit(&set_tags(&c.tenant, &i.bucket, &i.key, tags))
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
        self.meta.require_bucket(&c.tenant, &i.bucket).await?;
        self.meta
            .commit(&set_tags(&c.tenant, &i.bucket, &i.key, Vec::new()))
            .await?;
        Ok(S3Response::new(DeleteObjectTaggingOutput::default()))
    }
}
