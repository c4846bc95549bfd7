//! DeleteObject and DeleteObjects: metadata changes (the commit hands the freed blobs to the
//! deleter).

use s3s::dto::*;
use s3s::{S3Error, S3Request, S3Response, S3Result, s3_error};

use futures::StreamExt;

use super::object::no_version;
use super::{Caller, Gateway, caller};
use crate::meta::{Change, Commit};

fn delete(c: &Caller, bucket: &str, key: &str) -> Commit {
    Commit::new(Change::DeleteObject {
        tenant: c.tenant.clone(),
        bucket: bucket.to_string(),
        key: key.to_string(),
    })
    .by(c.stamp())
}

impl Gateway {
    pub(super) async fn op_delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let c = caller(&req)?;
        let i = &req.input;
        no_version(i.version_id.as_deref())?;
        self.meta.require_bucket(&c.tenant, &i.bucket).await?;
        // S3 answers 204 whether or not the key existed.
        self.meta.commit(&delete(&c, &i.bucket, &i.key)).await?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    pub(super) async fn op_delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let c = caller(&req)?;
        let i = req.input;
        self.meta.require_bucket(&c.tenant, &i.bucket).await?;
        if i.delete.objects.len() > 1000 {
            return Err(s3_error!(
                MalformedXML,
                "The XML you provided was not well-formed or did not validate against our published schema (at most 1000 keys)"
            ));
        }
        let quiet = i.delete.quiet.unwrap_or(false);
        let mut deleted = Vec::new();
        let mut errors = Vec::new();
        // Several commits at a time, so that with `sync` they share flushes (group commit);
        // answered in the order asked.
        let (c, bucket) = (&c, &i.bucket);
        let mut results = futures::stream::iter(i.delete.objects)
            .map(|obj| async move {
                let r = if obj.version_id.as_deref().is_some_and(|v| v != "null") {
                    Err(s3_error!(
                        NoSuchVersion,
                        "The specified version does not exist."
                    ))
                } else {
                    self.meta
                        .commit(&delete(c, bucket, &obj.key))
                        .await
                        .map_err(S3Error::from)
                };
                (obj, r)
            })
            .buffered(16);
        while let Some((obj, r)) = results.next().await {
            match r {
                Ok(()) if quiet => {}
                Ok(()) => deleted.push(DeletedObject {
                    key: Some(obj.key),
                    version_id: obj.version_id,
                    ..Default::default()
                }),
                Err(e) => errors.push(Error {
                    code: Some(e.code().as_str().to_string()),
                    key: Some(obj.key),
                    message: e.message().map(str::to_string),
                    version_id: obj.version_id,
                }),
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: Some(errors),
            ..Default::default()
        }))
    }
}
