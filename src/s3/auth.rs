//! Authentication and authorisation: access key → secret for SigV4 (`Auth`, for s3s's
//! verifier), the verification of SigV2 presigned URLs (`Access`, from the front's claim), and
//! access key → tenant, user and role for every request (`Access`). A read-only key may only run read
//! operations. Bucket names are per tenant, so another tenant's bucket simply does not exist
//! for the caller — nothing reveals that it does.

use std::sync::Arc;

use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::{S3Auth, SecretKey};
use s3s::path::S3Path;
use s3s::{S3Result, s3_error};

use crate::meta::{Actor, Meta, Role, Stamp};

/// Who is calling: attached to the request by [`Access`], read by every operation.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant: String,
    pub user: String,
    pub role: Role,
    pub access_key: String,
    /// The request's id (`x-amz-request-id`), given by the front.
    pub request_id: Option<String>,
}

/// The id the front gave the request (its `x-amz-request-id`).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl Caller {
    /// Who makes this request's commits.
    pub fn stamp(&self) -> Stamp {
        Stamp {
            actor: Actor::Key {
                tenant: self.tenant.clone(),
                user: self.user.clone(),
                access_key: self.access_key.clone(),
            },
            request_id: self.request_id.clone(),
        }
    }
}

pub struct Auth(pub Arc<Meta>);

#[async_trait::async_trait]
impl S3Auth for Auth {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        match self.0.access_key(access_key).await? {
            Some(k) => Ok(SecretKey::from(k.secret_key)),
            None => Err(s3_error!(
                InvalidAccessKeyId,
                "The AWS Access Key Id you provided does not exist in our records."
            )),
        }
    }
}

pub struct Access(pub Arc<Meta>);

/// Operations a read-only key may run.
fn is_read(op: &str) -> bool {
    op.starts_with("Get")
        || op.starts_with("Head")
        || op.starts_with("List")
        || op == "SelectObjectContent"
}

#[async_trait::async_trait]
impl S3Access for Access {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        // The screen decided which mechanism authenticates the request (in s3s's order) and
        // checked that one; credentials without that decision mean s3s verified something else.
        let method = cx.extensions_mut().get::<super::AuthMethod>().copied();
        let unknown_key = || {
            s3_error!(
                InvalidAccessKeyId,
                "The AWS Access Key Id you provided does not exist in our records."
            )
        };
        let key = match (method, cx.credentials()) {
            (Some(super::AuthMethod::Header | super::AuthMethod::Presigned), Some(cred)) => self
                .0
                .access_key(&cred.access_key)
                .await?
                .ok_or_else(unknown_key)?,
            // s3s saw no signature: the front took the SigV2 parameters off for us to verify.
            (Some(super::AuthMethod::PresignedV2), None) => {
                let claim = cx
                    .extensions_mut()
                    .remove::<super::SigV2Claim>()
                    .ok_or_else(|| s3_error!(AccessDenied, "Access Denied"))?;
                let key = self
                    .0
                    .access_key(&claim.access_key)
                    .await?
                    .ok_or_else(unknown_key)?;
                if !claim.verify(&key.secret_key) {
                    return Err(s3_error!(
                        SignatureDoesNotMatch,
                        "The request signature we calculated does not match the signature you provided. Check your key and signing method."
                    ));
                }
                key
            }
            (_, None) => return Err(s3_error!(AccessDenied, "Anonymous access is not allowed.")),
            _ => {
                return Err(s3_error!(
                    AccessDenied,
                    "The request's authentication could not be determined."
                ));
            }
        };
        let op = cx.s3_op().name();
        let span = tracing::Span::current();
        span.record("tenant", key.tenant.as_str());
        span.record("op", op);
        match cx.s3_path() {
            S3Path::Root => {}
            S3Path::Bucket { bucket } => {
                span.record("bucket", &**bucket);
            }
            S3Path::Object { bucket, key } => {
                span.record("bucket", &**bucket);
                span.record("key", &**key);
            }
        }
        if key.role == Role::ReadOnly && !is_read(op) {
            return Err(s3_error!(AccessDenied, "This access key is read-only."));
        }
        let request_id = cx.extensions_mut().get::<RequestId>().map(|r| r.0.clone());
        cx.extensions_mut().insert(super::Caller {
            tenant: key.tenant,
            user: key.user,
            role: key.role,
            access_key: key.access_key,
            request_id,
        });
        Ok(())
    }
}
