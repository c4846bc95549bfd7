//! Answers to the configuration reads that tools issue on every bucket (`s3cmd info`, SDK
//! helpers, backup tools). Portcullis has no bucket policies, CORS, lifecycle rules, bucket tags
//! or bucket-level encryption settings yet, so each answers exactly what S3 answers for a bucket
//! without that configuration. ACLs report the canned `private` ACL, which is what the
//! tenant-scoped access model enforces. The matching Put operations stay `NotImplemented`.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::{Gateway, caller, owner};

fn private_acl(o: Owner) -> (Option<Grants>, Option<Owner>) {
    let grant = Grant {
        grantee: Some(Grantee {
            display_name: o.display_name.clone(),
            email_address: None,
            id: o.id.clone(),
            type_: Type::from_static(Type::CANONICAL_USER),
            uri: None,
        }),
        permission: Some(Permission::from_static(Permission::FULL_CONTROL)),
    };
    (Some(vec![grant]), Some(o))
}

impl Gateway {
    pub(super) async fn op_get_bucket_acl(
        &self,
        req: S3Request<GetBucketAclInput>,
    ) -> S3Result<S3Response<GetBucketAclOutput>> {
        let c = caller(&req)?;
        self.meta
            .require_bucket(&c.tenant, &req.input.bucket)
            .await?;
        let (grants, owner) = private_acl(owner(&c));
        Ok(S3Response::new(GetBucketAclOutput { grants, owner }))
    }

    pub(super) async fn op_get_object_acl(
        &self,
        req: S3Request<GetObjectAclInput>,
    ) -> S3Result<S3Response<GetObjectAclOutput>> {
        let c = caller(&req)?;
        let i = &req.input;
        self.current(&c.tenant, &i.bucket, &i.key).await?;
        let (grants, owner) = private_acl(owner(&c));
        Ok(S3Response::new(GetObjectAclOutput {
            grants,
            owner,
            ..Default::default()
        }))
    }

    /// Checks the bucket exists, then answers with `error` as S3 does for an unset configuration.
    async fn unset(&self, tenant: &str, bucket: &str, error: s3s::S3Error) -> s3s::S3Error {
        match self.meta.require_bucket(tenant, bucket).await {
            Ok(_) => error,
            Err(e) => e.into(),
        }
    }

    pub(super) async fn op_get_bucket_policy(
        &self,
        req: S3Request<GetBucketPolicyInput>,
    ) -> S3Result<S3Response<GetBucketPolicyOutput>> {
        let c = caller(&req)?;
        Err(self
            .unset(
                &c.tenant,
                &req.input.bucket,
                s3_error!(NoSuchBucketPolicy, "The bucket policy does not exist"),
            )
            .await)
    }

    pub(super) async fn op_get_bucket_cors(
        &self,
        req: S3Request<GetBucketCorsInput>,
    ) -> S3Result<S3Response<GetBucketCorsOutput>> {
        let c = caller(&req)?;
        Err(self
            .unset(
                &c.tenant,
                &req.input.bucket,
                s3_error!(
                    NoSuchCORSConfiguration,
                    "The CORS configuration does not exist"
                ),
            )
            .await)
    }

    pub(super) async fn op_get_bucket_lifecycle_configuration(
        &self,
        req: S3Request<GetBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<GetBucketLifecycleConfigurationOutput>> {
        let c = caller(&req)?;
        Err(self
            .unset(
                &c.tenant,
                &req.input.bucket,
                s3_error!(
                    NoSuchLifecycleConfiguration,
                    "The lifecycle configuration does not exist"
                ),
            )
            .await)
    }

    pub(super) async fn op_get_bucket_encryption(
        &self,
        req: S3Request<GetBucketEncryptionInput>,
    ) -> S3Result<S3Response<GetBucketEncryptionOutput>> {
        let c = caller(&req)?;
        Err(self
            .unset(
                &c.tenant,
                &req.input.bucket,
                s3_error!(
                    ServerSideEncryptionConfigurationNotFoundError,
                    "The server side encryption configuration was not found"
                ),
            )
            .await)
    }
}
