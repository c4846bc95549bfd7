//! DeleteObject and DeleteObjects: metadata changes; the freed blobs go to the deleter.

use s3s::dto::*;
use s3s::{S3Error, S3Request, S3Response, S3Result, s3_error};

use super::object::no_version;
use super::{Gateway, caller};

impl Gateway {
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
}
