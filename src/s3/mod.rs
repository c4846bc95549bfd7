//! The S3 front: `impl S3 for Gateway`, one thin forwarding method per operation, with the work in
//! one file per operation family (buckets, objects, listing, multipart). Operations that are not
//! implemented fall through to s3s's default `NotImplemented` answer (listed in the README).

mod attributes;
mod auth;
mod bucket;
mod copy;
mod delete;
mod get;
mod inflight;
mod list;
mod multipart;
mod object;
mod probes;
mod put;
mod screen;
mod sigv2;
mod tagging;

use std::sync::Arc;

use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};

pub use auth::{Access, Auth, Caller, RequestId};
pub use inflight::{InFlight, UploadLimits};
pub use screen::{AuthMethod, ScreenOptions, screen};
pub use sigv2::{Claim as SigV2Claim, strip as strip_sigv2};

use crate::backend::{Backends, Placement};
use crate::meta::Usage;
use crate::meta::{self, Meta};
use crate::pipeline::policy::{self, Effective, Rules};
use crate::pipeline::quota::Quotas;
use crate::pipeline::quota::Reservation;
use crate::scanner::Scanner;

/// What the S3 front is built from (assembled by `server::start`; this module does not read the
/// configuration itself).
pub struct Parts {
    pub meta: Arc<Meta>,
    pub backend: Arc<Backends>,
    /// Deletes the blobs commits free, once those commits are on disk.
    pub quotas: Arc<Quotas>,
    pub scanner: Option<Arc<Scanner>>,
    pub rules: Rules,
    /// Reported by GetBucketLocation.
    pub region: String,
    /// Where tenants without a placement of their own write.
    pub default_placement: Placement,
    /// Writes in flight and their bounds (shared with the admin API's reports).
    pub in_flight: Arc<InFlight>,
}

/// The S3 implementation. Cheap to clone; all state is shared.
#[derive(Clone)]
pub struct Gateway {
    meta: Arc<Meta>,
    backend: Arc<Backends>,
    region: String,
    default_placement: Placement,
    quotas: Arc<Quotas>,
    scanner: Option<Arc<Scanner>>,
    rules: Rules,
    in_flight: Arc<inflight::InFlight>,
}

impl Gateway {
    pub fn new(p: Parts) -> Self {
        Self {
            quotas: p.quotas,
            meta: p.meta,
            backend: p.backend,
            region: p.region,
            default_placement: p.default_placement,
            scanner: p.scanner,
            rules: p.rules,
            in_flight: p.in_flight,
        }
    }

    /// The placement of a tenant's new buckets.
    async fn tenant_placement(&self, tenant: &str) -> S3Result<Placement> {
        Ok(self
            .meta
            .tenant(tenant)
            .await?
            .and_then(|t| t.placement)
            .unwrap_or_else(|| self.default_placement.clone()))
    }

    /// Where new blobs of `bucket` go.
    async fn placement(&self, tenant: &str, bucket: &meta::Bucket) -> S3Result<Placement> {
        match &bucket.placement {
            Some(p) => Ok(p.clone()),
            None => self.tenant_placement(tenant).await,
        }
    }
}

/// The client's address, put in every request's extensions by the server (for the security log).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

fn peer<T>(req: &S3Request<T>) -> Option<std::net::SocketAddr> {
    req.extensions.get::<Peer>().map(|p| p.0)
}

/// What [`Gateway::admit`] lets a write go on with.
struct Admitted {
    /// Where the bucket's new blobs go.
    placement: Placement,
    policy: Effective,
    reservation: Reservation,
    /// The write's place among the uploads in flight, held until it is answered.
    _ticket: inflight::Ticket,
}

/// Who writes what, for the security log.
fn target(
    c: &Caller,
    bucket: &str,
    key: &str,
    peer: Option<std::net::SocketAddr>,
) -> crate::pipeline::Target {
    crate::pipeline::Target {
        tenant: c.tenant.clone(),
        bucket: bucket.to_string(),
        key: key.to_string(),
        peer,
    }
}

impl Gateway {
    /// What every write passes before its body is read: the bucket exists, the key suits its
    /// policy, the declared size fits the policy and the quota (which is reserved).
    async fn admit(
        &self,
        tenant: &str,
        bucket: &str,
        key: &str,
        len: Option<u64>,
        objects: u64,
    ) -> S3Result<Admitted> {
        let ticket = self.in_flight.enter(tenant)?;
        let placement = self
            .placement(tenant, &self.meta.require_bucket(tenant, bucket).await?)
            .await?;
        let (policy, tenant_limits, bucket_limits) =
            policy::rules(&self.meta, &self.rules, tenant, bucket).await?;
        policy.check_key(key)?;
        if let Some(n) = len {
            policy.check_size(n)?;
        }
        let want = Usage {
            bytes: len.unwrap_or(0),
            objects,
        };
        let reservation = self
            .quotas
            .reserve(tenant, bucket, tenant_limits, bucket_limits, want)
            .await?;
        Ok(Admitted {
            placement,
            policy,
            reservation,
            _ticket: ticket,
        })
    }

    /// The scanner, when `policy` scans.
    fn scanner_for(&self, policy: &Effective) -> Option<&Arc<Scanner>> {
        self.scanner.as_ref().filter(|_| policy.scan)
    }
}

/// Marks a write whose body has no declared length (a chunked stream without
/// `Content-Length`): set by the front, which alone sees the request as it arrived; read by
/// `object::body_len`. Clients cannot set an extension.
#[derive(Debug, Clone, Copy)]
pub struct UnknownLength;

/// The caller resolved by [`Access`]; every authenticated request carries one.
fn caller<T>(req: &S3Request<T>) -> S3Result<Caller> {
    req.extensions
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| s3_error!(AccessDenied, "Access Denied"))
}

fn ts(ms: i64) -> Timestamp {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    Timestamp::from(t)
}

fn ms_of(t: &Timestamp) -> i64 {
    let t: time::OffsetDateTime = t.clone().into();
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

fn owner(c: &Caller) -> Owner {
    Owner {
        display_name: Some(c.tenant.clone()),
        id: Some(c.tenant.clone()),
    }
}

#[async_trait::async_trait]
impl S3 for Gateway {
    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        self.op_list_buckets(req).await
    }
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        self.op_create_bucket(req).await
    }
    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.op_head_bucket(req).await
    }
    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.op_delete_bucket(req).await
    }
    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.op_get_bucket_location(req).await
    }
    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        self.op_get_bucket_versioning(req).await
    }
    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        self.op_put_object(req).await
    }
    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        self.op_get_object(req).await
    }
    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        self.op_head_object(req).await
    }
    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.op_delete_object(req).await
    }
    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.op_delete_objects(req).await
    }
    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        self.op_copy_object(req).await
    }
    async fn put_object_tagging(
        &self,
        req: S3Request<PutObjectTaggingInput>,
    ) -> S3Result<S3Response<PutObjectTaggingOutput>> {
        self.op_put_object_tagging(req).await
    }
    async fn get_object_tagging(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> S3Result<S3Response<GetObjectTaggingOutput>> {
        self.op_get_object_tagging(req).await
    }
    async fn delete_object_tagging(
        &self,
        req: S3Request<DeleteObjectTaggingInput>,
    ) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
        self.op_delete_object_tagging(req).await
    }
    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        self.op_list_objects(req).await
    }
    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.op_list_objects_v2(req).await
    }
    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        self.op_list_object_versions(req).await
    }
    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.op_create_multipart_upload(req).await
    }
    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        self.op_upload_part(req).await
    }
    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        self.op_upload_part_copy(req).await
    }
    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        self.op_complete_multipart_upload(req).await
    }
    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.op_abort_multipart_upload(req).await
    }
    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        self.op_list_parts(req).await
    }
    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        self.op_list_multipart_uploads(req).await
    }
    async fn get_bucket_acl(
        &self,
        req: S3Request<GetBucketAclInput>,
    ) -> S3Result<S3Response<GetBucketAclOutput>> {
        self.op_get_bucket_acl(req).await
    }
    async fn get_object_acl(
        &self,
        req: S3Request<GetObjectAclInput>,
    ) -> S3Result<S3Response<GetObjectAclOutput>> {
        self.op_get_object_acl(req).await
    }
    async fn get_bucket_policy(
        &self,
        req: S3Request<GetBucketPolicyInput>,
    ) -> S3Result<S3Response<GetBucketPolicyOutput>> {
        self.op_get_bucket_policy(req).await
    }
    async fn get_bucket_cors(
        &self,
        req: S3Request<GetBucketCorsInput>,
    ) -> S3Result<S3Response<GetBucketCorsOutput>> {
        self.op_get_bucket_cors(req).await
    }
    async fn get_bucket_lifecycle_configuration(
        &self,
        req: S3Request<GetBucketLifecycleConfigurationInput>,
    ) -> S3Result<S3Response<GetBucketLifecycleConfigurationOutput>> {
        self.op_get_bucket_lifecycle_configuration(req).await
    }
    async fn get_object_attributes(
        &self,
        req: S3Request<GetObjectAttributesInput>,
    ) -> S3Result<S3Response<GetObjectAttributesOutput>> {
        self.op_get_object_attributes(req).await
    }
    async fn get_bucket_tagging(
        &self,
        req: S3Request<GetBucketTaggingInput>,
    ) -> S3Result<S3Response<GetBucketTaggingOutput>> {
        self.op_get_bucket_tagging(req).await
    }
    async fn put_bucket_tagging(
        &self,
        req: S3Request<PutBucketTaggingInput>,
    ) -> S3Result<S3Response<PutBucketTaggingOutput>> {
        self.op_put_bucket_tagging(req).await
    }
    async fn delete_bucket_tagging(
        &self,
        req: S3Request<DeleteBucketTaggingInput>,
    ) -> S3Result<S3Response<DeleteBucketTaggingOutput>> {
        self.op_delete_bucket_tagging(req).await
    }
    async fn get_bucket_encryption(
        &self,
        req: S3Request<GetBucketEncryptionInput>,
    ) -> S3Result<S3Response<GetBucketEncryptionOutput>> {
        self.op_get_bucket_encryption(req).await
    }
}
