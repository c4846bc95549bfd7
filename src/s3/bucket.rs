//! Bucket operations. A bucket belongs to one tenant; its name is unique only within the tenant.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::{Gateway, caller, owner, ts};
use crate::backend::Placement;
use crate::meta::{self, Change, Commit};

impl Gateway {
    pub(super) async fn op_list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let c = caller(&req)?;
        let prefix = req.input.prefix.unwrap_or_default();
        let buckets = self
            .meta
            .buckets(&c.tenant)
            .await?
            .into_iter()
            .filter(|b| b.name.starts_with(&prefix))
            .map(|b| Bucket {
                name: Some(b.name),
                creation_date: Some(ts(b.created_ms)),
                bucket_region: Some(self.region.clone()),
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            owner: Some(owner(&c)),
            ..Default::default()
        }))
    }

    pub(super) async fn op_create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let c = caller(&req)?;
        let input = req.input;
        let constraint = input
            .create_bucket_configuration
            .and_then(|cfg| cfg.location_constraint)
            .map(|l| l.as_str().to_string())
            .filter(|l| !l.is_empty());
        let (location, placement) = self.place_bucket(&c.tenant, constraint).await?;
        let bucket = meta::Bucket {
            name: input.bucket.clone(),
            created_ms: meta::now_ms(),
            location,
            placement: Some(placement),
            tags: Vec::new(),
        };
        let created = self
            .meta
            .commit(
                &Commit::new(Change::CreateBucket {
                    tenant: c.tenant.clone(),
                    bucket,
                })
                .by(c.stamp()),
            )
            .await;
        match created {
            Ok(()) => {}
            // S3's legacy behaviour in us-east-1, which create-if-missing scripts rely on: the
            // caller's own bucket is "created" again, unchanged.
            Err(meta::MetaError::BucketAlreadyOwned) if self.region == "us-east-1" => {}
            Err(e) => return Err(e.into()),
        }
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{}", input.bucket)),
        }))
    }

    /// Resolves a CreateBucket LocationConstraint: none or the gateway's region means the
    /// tenant's own placement; the name of a backend the tenant may use places the bucket there
    /// (in that backend's default container, under the tenant's prefix).
    async fn place_bucket(
        &self,
        tenant: &str,
        constraint: Option<String>,
    ) -> S3Result<(String, Placement)> {
        let record = self.meta.tenant(tenant).await?;
        let own = self.tenant_placement(tenant).await?;
        let allowed = record.map(|t| t.locations).unwrap_or_default();
        let Some(l) = constraint else {
            return Ok((self.region.clone(), own));
        };
        if l == self.region || l == own.backend {
            return Ok((l, own));
        }
        match self.backend.default_container(&l) {
            Some(container) if allowed.contains(&l) => {
                let placement = Placement {
                    backend: l.clone(),
                    container: container.to_string(),
                    prefix: own.prefix,
                };
                Ok((l, placement))
            }
            _ => {
                let mut valid = vec![self.region.clone(), own.backend];
                valid.extend(allowed);
                Err(s3_error!(
                    InvalidLocationConstraint,
                    "The specified location-constraint {:?} is not valid; this account may use: {}",
                    l,
                    valid.join(", ")
                ))
            }
        }
    }

    pub(super) async fn op_head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        let c = caller(&req)?;
        self.meta
            .require_bucket(&c.tenant, &req.input.bucket)
            .await?;
        Ok(S3Response::new(HeadBucketOutput {
            bucket_region: Some(self.region.clone()),
            ..Default::default()
        }))
    }

    pub(super) async fn op_delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let c = caller(&req)?;
        // A write of this tenant that just failed here still counts as in flight until its
        // give-back reaches the store.
        self.quotas.settled(&c.tenant).await;
        self.meta
            .commit(
                &Commit::new(Change::DeleteBucket {
                    tenant: c.tenant.clone(),
                    bucket: req.input.bucket.clone(),
                })
                .by(c.stamp()),
            )
            .await?;
        Ok(S3Response::new(DeleteBucketOutput {}))
    }

    pub(super) async fn op_get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        let c = caller(&req)?;
        let b = self
            .meta
            .require_bucket(&c.tenant, &req.input.bucket)
            .await?;
        // S3 reports us-east-1 as an empty LocationConstraint.
        let location =
            (b.location != "us-east-1").then(|| BucketLocationConstraint::from(b.location));
        Ok(S3Response::new(GetBucketLocationOutput {
            location_constraint: location,
        }))
    }

    /// Versioning is not offered yet: every bucket reports the "never enabled" state (no Status),
    /// which is what S3 says for a bucket whose versioning was never turned on.
    pub(super) async fn op_get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        let c = caller(&req)?;
        self.meta
            .require_bucket(&c.tenant, &req.input.bucket)
            .await?;
        Ok(S3Response::new(GetBucketVersioningOutput::default()))
    }
}
