//! The one place where internal errors become S3 errors. Client-caused errors get their precise
//! S3 code and a human message; the cause of an internal one is recorded on the request's span
//! (and logged once, with the 5xx, by the server) and reaches the client only as a generic
//! `InternalError`.

use s3s::{S3Error, S3ErrorCode, s3_error};

use crate::backend::BackendError;
use crate::meta::MetaError;
use crate::pipeline::PipelineError;
use crate::pipeline::policy::PolicyError;
use crate::pipeline::quota::QuotaError;
use crate::pipeline::read::ReadError;

/// An S3 error with its HTTP status set (s3s leaves it unset for some codes, and ours answer
/// with a status of their own).
pub fn with_status(code: S3ErrorCode, status: http::StatusCode, message: String) -> S3Error {
    let mut e = S3Error::with_message(code, message);
    e.set_status_code(status);
    e
}

/// An error with a code S3 does not define (Portcullis's own, documented in the README).
pub fn custom(code: &str, status: http::StatusCode, message: String) -> S3Error {
    with_status(
        S3ErrorCode::Custom(code.to_string().into()),
        status,
        message,
    )
}

/// Records the cause on the request's span; `server::handle` logs the 5xx once, with it.
fn record(e: &dyn std::fmt::Display) {
    tracing::Span::current().record("error", tracing::field::display(e));
}

fn internal(what: &str, e: &dyn std::fmt::Display) -> S3Error {
    record(&format_args!("{what}: {e}"));
    s3_error!(
        InternalError,
        "We encountered an internal error. Please try again."
    )
}

impl From<MetaError> for S3Error {
    fn from(e: MetaError) -> Self {
        match e {
            MetaError::NoSuchBucket => {
                s3_error!(NoSuchBucket, "The specified bucket does not exist")
            }
            MetaError::BucketAlreadyOwned => s3_error!(
                BucketAlreadyOwnedByYou,
                "Your previous request to create the named bucket succeeded and you already own it."
            ),
            MetaError::BucketNotEmpty => s3_error!(
                BucketNotEmpty,
                "The bucket you tried to delete is not empty (objects or open multipart uploads)"
            ),
            MetaError::BucketBusy => s3_error!(
                BucketNotEmpty,
                "The bucket you tried to delete has uploads in progress; retry once they finish"
            ),
            MetaError::NoSuchKey => s3_error!(NoSuchKey, "The specified key does not exist."),
            MetaError::NoSuchUpload => s3_error!(
                NoSuchUpload,
                "The specified multipart upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed."
            ),
            MetaError::Conflict => s3_error!(
                OperationAborted,
                "A conflicting operation is in progress against this resource. Please try again."
            ),
            MetaError::Engine(e @ crate::meta::EngineError::Unknown(_)) => {
                // Nothing was undone around it: the client may retry (S3 writes are
                // idempotent) or read back what stands.
                record(&format_args!("metadata store failed: {e}"));
                s3_error!(
                    ServiceUnavailable,
                    "The metadata store did not confirm this change in time; it may have been applied. Please retry, or read the resource back."
                )
            }
            MetaError::Engine(e) => {
                // A store that cannot be reached or refuses a write is transient for the client:
                // retry later (SDKs do on 503). The cause is logged once, never sent.
                record(&format_args!("metadata store failed: {e}"));
                s3_error!(
                    ServiceUnavailable,
                    "The metadata store is unavailable. Please retry."
                )
            }
            MetaError::Contended => s3_error!(SlowDown, "Please reduce your request rate."),
            MetaError::Fenced => {
                record(&MetaError::Fenced);
                s3_error!(
                    ServiceUnavailable,
                    "This gateway node is rejoining its cluster. Please retry."
                )
            }
            e @ (MetaError::Corrupt(_)
            | MetaError::QuotaShort(_)
            | MetaError::LeaseHeld(_)
            | MetaError::GateNeeded
            | MetaError::OverQuota { .. }) => internal("metadata store failed", &e),
            e @ (MetaError::NoSuchTenant
            | MetaError::TenantExists
            | MetaError::AccessKeyExists
            | MetaError::NoSuchAccessKey
            | MetaError::TenantNotEmpty) => internal("admin error on the S3 path", &e),
        }
    }
}

impl From<BackendError> for S3Error {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::Body(e) => {
                tracing::debug!(error = %e, "request body failed");
                // s3s reports signature and chunk errors as S3Error inside the body stream.
                if let Some(s3) = e.downcast_ref::<S3Error>() {
                    let mut err = S3Error::new(s3.code().clone());
                    if let Some(m) = s3.message() {
                        err.set_message(m.to_string());
                    }
                    if let Some(status) = s3.status_code() {
                        err.set_status_code(status);
                    }
                    return err;
                }
                body_error(&*e)
            }
            e @ BackendError::NotFound(_) => internal("blob missing for a committed object", &e),
            e @ BackendError::Io(_) => internal("backend I/O failed", &e),
            // The cause (which may name hosts) stays on the span; the client learns only that
            // the storage is unavailable and may retry. Nothing was published.
            e @ BackendError::Unavailable { .. } => {
                record(&e);
                s3_error!(
                    ServiceUnavailable,
                    "The storage backend for this bucket is unavailable. Nothing was stored; please retry later."
                )
            }
            e @ BackendError::Throttled { .. } => {
                record(&e);
                s3_error!(
                    SlowDown,
                    "The storage backend for this bucket is throttling requests. Please reduce your request rate and retry."
                )
            }
            e @ (BackendError::Failed { .. } | BackendError::UnknownBackend(_)) => {
                internal("backend refused", &e)
            }
        }
    }
}

/// A request body that failed while it was read. s3s's aws-chunked and payload-hash streams
/// report through error types it does not export, and wrap ours (`pace::BodyTimeout`) into
/// their own message; so each cause is known by its text, along the whole `source` chain (s3s
/// is pinned to one exact version, and `tests/it/security.rs` tests each case).
pub fn body_error(e: &(dyn std::error::Error + 'static)) -> S3Error {
    let texts: Vec<String> = std::iter::successors(Some(e), |e| e.source())
        .map(ToString::to_string)
        .collect();
    let has = |needle: &str| texts.iter().any(|t| t.contains(needle));
    if has(crate::pace::MESSAGE) {
        s3_error!(
            RequestTimeout,
            "Your socket connection to the server was not read from or written to within the timeout period, or the body arrived too slowly. Nothing was stored."
        )
    } else if has("AwsChunkedStreamError: SignatureMismatch") {
        s3_error!(
            SignatureDoesNotMatch,
            "The signature of a chunk of the aws-chunked body does not match. Nothing was stored."
        )
    } else if has("UploadStreamError: Sha256Mismatch") {
        custom(
            "XAmzContentSHA256Mismatch",
            http::StatusCode::BAD_REQUEST,
            "The provided 'x-amz-content-sha256' header does not match what was computed. Nothing was stored.".into(),
        )
    } else {
        s3_error!(
            IncompleteBody,
            "The request body could not be read completely."
        )
    }
}

impl From<PipelineError> for S3Error {
    fn from(e: PipelineError) -> Self {
        match e {
            PipelineError::BadDigest(what) => S3Error::with_message(
                S3ErrorCode::BadDigest,
                format!("The {what} you specified did not match the calculated checksum."),
            ),
            PipelineError::InvalidDigest => {
                s3_error!(InvalidDigest, "The Content-MD5 you specified is not valid.")
            }
            PipelineError::InvalidChecksum(alg) => S3Error::with_message(
                S3ErrorCode::InvalidRequest,
                format!("Value for x-amz-checksum-{alg} header is invalid."),
            ),
            PipelineError::UnsupportedChecksum(alg) => S3Error::with_message(
                S3ErrorCode::InvalidRequest,
                format!("Checksum algorithm {alg} is not supported."),
            ),
            PipelineError::IncompleteBody => s3_error!(
                IncompleteBody,
                "You did not provide the number of bytes specified by the Content-Length HTTP header."
            ),
            PipelineError::TooLarge => crate::pipeline::too_large(),
            PipelineError::Quota(e) => e.into(),
            PipelineError::Policy(e) => e.into(),
            PipelineError::Infected(sig) => custom(
                "VirusDetected",
                http::StatusCode::FORBIDDEN,
                format!(
                    "The upload was refused: the virus scanner found {sig}. Nothing was stored."
                ),
            ),
            PipelineError::ScannerUnavailable(why) => {
                record(&why);
                custom(
                    "ScannerUnavailable",
                    http::StatusCode::SERVICE_UNAVAILABLE,
                    "The virus scanner is unavailable, and this bucket accepts only scanned uploads. Nothing was stored; please retry later.".into(),
                )
            }
            e @ PipelineError::TooLargeToScan(_) => S3Error::with_message(
                S3ErrorCode::EntityTooLarge,
                format!(
                    "Your upload was refused: {e}, and this bucket accepts only scanned uploads."
                ),
            ),
            PipelineError::Backend(e) => e.into(),
            PipelineError::Meta(e) => e.into(),
        }
    }
}

impl From<QuotaError> for S3Error {
    fn from(e: QuotaError) -> Self {
        match e {
            e @ QuotaError::Exceeded { .. } => custom(
                "QuotaExceeded",
                http::StatusCode::FORBIDDEN,
                format!("The upload was refused: {e}. Nothing was stored."),
            ),
            QuotaError::Meta(e) => e.into(),
        }
    }
}

impl From<PolicyError> for S3Error {
    fn from(e: PolicyError) -> Self {
        let msg = format!("The upload was refused by this bucket's policy: {e}.");
        match e {
            PolicyError::KeyTooLong { .. } => {
                S3Error::with_message(S3ErrorCode::KeyTooLongError, msg)
            }
            PolicyError::KeyPattern(_) => S3Error::with_message(S3ErrorCode::InvalidArgument, msg),
            PolicyError::TooLarge { .. } => S3Error::with_message(S3ErrorCode::EntityTooLarge, msg),
            PolicyError::NotAllowed { .. }
            | PolicyError::Denied { .. }
            | PolicyError::Mismatch { .. } => custom(
                "InvalidContentType",
                http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                msg,
            ),
            e @ PolicyError::Invalid(_) => internal("stored policy is invalid", &e),
        }
    }
}

impl From<ReadError> for S3Error {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::NoSuchVersion => {
                s3_error!(NoSuchVersion, "The specified version does not exist.")
            }
            ReadError::NotModified(o) => not_modified(&o),
            ReadError::PreconditionFailed => precondition_failed(),
            ReadError::RangeAndPart => s3_error!(
                InvalidRequest,
                "Cannot specify both Range header and partNumber query parameter"
            ),
            ReadError::InvalidRange => {
                s3_error!(InvalidRange, "The requested range is not satisfiable")
            }
            ReadError::InvalidPartNumber => custom(
                "InvalidPartNumber",
                http::StatusCode::BAD_REQUEST,
                "The requested partnumber is not satisfiable".into(),
            ),
            ReadError::Infected(sig) => custom(
                "VirusDetected",
                http::StatusCode::FORBIDDEN,
                format!("The object cannot be read: the virus scanner found {sig} in it."),
            ),
            ReadError::ScanPending => custom(
                "ScanPending",
                http::StatusCode::FORBIDDEN,
                "The object cannot be read yet: it was stored while the virus scanner was unavailable and becomes readable once a scan finds it clean.".into(),
            ),
            ReadError::Meta(e) => e.into(),
        }
    }
}

pub fn precondition_failed() -> S3Error {
    s3_error!(
        PreconditionFailed,
        "At least one of the pre-conditions you specified did not hold"
    )
}

/// 304 Not Modified for GET/HEAD of `o`, with the validators and caching headers RFC 9110 and
/// S3 send on it (so a browser or CDN can revalidate and keep caching), and no body.
fn not_modified(o: &crate::meta::Object) -> S3Error {
    let mut h = http::HeaderMap::new();
    let mut put = |name: &'static str, v: String| {
        if let Ok(v) = http::HeaderValue::from_str(&v) {
            h.insert(name, v);
        }
    };
    let http_date = |ms: i64| {
        let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
        let mut out = Vec::new();
        s3s::dto::Timestamp::from(t)
            .format(s3s::dto::TimestampFormat::HttpDate, &mut out)
            .ok()
            .and_then(|()| String::from_utf8(out).ok())
    };
    put("etag", format!("\"{}\"", o.etag));
    if let Some(d) = http_date(o.last_modified_ms) {
        put("last-modified", d);
    }
    if let Some(c) = &o.attrs.cache_control {
        put("cache-control", c.clone());
    }
    if let Some(d) = o.attrs.expires_ms.and_then(http_date) {
        put("expires", d);
    }
    let mut e = s3_error!(NotModified);
    e.set_headers(h);
    e
}
