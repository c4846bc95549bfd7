//! The `s3` backend: blobs as objects of an S3 bucket, through aws-sdk-s3. Works with AWS and
//! with S3-compatible servers (path-style, custom endpoint).
//!
//! Writes stay streaming with bounded memory: a body of declared length goes out as one
//! streaming PutObject (no buffering at all); a body of unknown length is cut into parts of
//! `part_size` and sent through the backend's own multipart upload, at most [`PARTS_IN_FLIGHT`]
//! parts at a time. An interrupted multipart upload is aborted, also when the request future is
//! dropped.

use std::ops::Range;
use std::sync::{Arc, Mutex};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    StalledStreamProtectionConfig, retry::RetryConfig, timeout::TimeoutConfig,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream as SdkStream, SdkBody};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::BytesMut;
use futures::TryStreamExt;
use tokio_util::task::AbortOnDropHandle;

use super::options::{BackendConfig, BackendKind};
use super::{Backend, BackendError, BlobInfo, ByteStream, StdError, Written, fill, first_part};

/// Parts uploaded concurrently for a body of unknown length: memory is bounded by
/// `(PARTS_IN_FLIGHT + 1) × part_size`.
const PARTS_IN_FLIGHT: usize = 2;

/// S3's limit for one PutObject; larger declared bodies go through multipart.
const MAX_SINGLE_PUT: u64 = 5 * 1024 * 1024 * 1024;

pub struct S3Backend {
    name: String,
    client: Client,
    part_size: usize,
}

impl S3Backend {
    pub async fn new(c: &BackendConfig) -> Result<Self, BackendError> {
        let BackendKind::S3 {
            endpoint,
            region,
            path_style,
            credentials,
        } = &c.kind
        else {
            unreachable!("S3Backend::new called for another kind");
        };
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.clone()))
            // Only the connect timeout here: the SDK's read timeout runs from sending the request
            // to the response head, which for a streaming PutObject includes the whole upload.
            // Reads, deletes and probes are bounded by `Backends` instead.
            .timeout_config(TimeoutConfig::builder().connect_timeout(c.timeout).build())
            .retry_config(RetryConfig::standard().with_max_attempts(c.retries + 1));
        if let Some((access_key, secret)) = credentials {
            loader = loader.credentials_provider(Credentials::new(
                access_key,
                &secret.0,
                None,
                None,
                "portcullis-config",
            ));
        }
        let shared = loader.load().await;
        // Integrity is Portcullis's own job (its own hashes, or the MD5 S3 reports for what it
        // stored); an extra CRC per request would only cost CPU.
        // Stalled-stream protection is off: on uploads it would fail a backend write whenever
        // the *client* pauses for a few seconds, and on downloads it times every chunk. A dead
        // backend resets the connection; first bytes are bounded by `Backends`.
        let mut b = aws_sdk_s3::config::Builder::from(&shared)
            .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
            .force_path_style(*path_style)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(e) = endpoint {
            b = b.endpoint_url(e);
        }
        Ok(Self {
            name: c.name.clone(),
            client: Client::from_conf(b.build()),
            part_size: c.part_size,
        })
    }

    fn classify<E>(&self, e: SdkError<E, HttpResponse>) -> BackendError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        classify(&self.name, e)
    }

    async fn put_single(
        &self,
        bucket: &str,
        key: &str,
        body: SdkStream,
        len: u64,
    ) -> Result<Written, BackendError> {
        let out = self
            .client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_length(len as i64)
            .body(body)
            .send()
            .await
            .map_err(|e| self.classify(e))?;
        // S3 documents the ETag of a single PutObject as the MD5 of the data unless the object
        // is encrypted with SSE-KMS or SSE-C; anything that does not look like one is ignored.
        let plain = matches!(
            out.server_side_encryption(),
            None | Some(aws_sdk_s3::types::ServerSideEncryption::Aes256)
        ) && out.sse_customer_algorithm().is_none();
        let md5 = out
            .e_tag()
            .filter(|_| plain)
            .map(|e| e.trim_matches('"'))
            .and_then(|e| hex::decode(e).ok())
            .and_then(|d| <[u8; 16]>::try_from(d).ok());
        Ok(Written { len, md5 })
    }

    async fn put_multipart(
        &self,
        bucket: &str,
        key: &str,
        mut body: ByteStream,
        first: bytes::Bytes,
        mut carry: Option<bytes::Bytes>,
    ) -> Result<Written, BackendError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.classify(e))?;
        let upload_id = created.upload_id().unwrap_or_default().to_string();
        let guard = AbortOnDrop {
            client: self.client.clone(),
            bucket: bucket.to_string(),
            key: key.to_string(),
            upload_id: Some(upload_id.clone()),
        };
        let mut total = first.len() as u64;
        let mut parts = Vec::new();
        // Parts upload on their own tasks, so the next part is read from the client while the
        // previous ones are being sent.
        let mut in_flight = std::collections::VecDeque::new();
        let mut next = Some(first);
        let mut ended = false;
        let mut number = 0i32;
        loop {
            if let Some(part) = next.take() {
                number += 1;
                let req = self
                    .client
                    .upload_part()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .part_number(number)
                    .content_length(part.len() as i64)
                    .body(SdkStream::from(part));
                // Aborted when dropped: an error or a hung-up client must not leave part uploads
                // running against an upload that `AbortOnDrop` is aborting.
                let task = AbortOnDropHandle::new(tokio::spawn(req.send()));
                in_flight.push_back((number, task));
            }
            while in_flight.len() >= PARTS_IN_FLIGHT || (ended && !in_flight.is_empty()) {
                let Some((n, task)) = in_flight.pop_front() else {
                    break;
                };
                let out = task
                    .await
                    .map_err(|e| BackendError::Io(std::io::Error::other(e)))?
                    .map_err(|e| self.classify(e))?;
                parts.push(
                    CompletedPart::builder()
                        .part_number(n)
                        .set_e_tag(out.e_tag().map(str::to_string))
                        .build(),
                );
            }
            if ended {
                break;
            }
            let mut buf = BytesMut::with_capacity(self.part_size);
            ended = fill(&mut body, &mut buf, self.part_size, &mut carry).await?;
            if !buf.is_empty() {
                total += buf.len() as u64;
                next = Some(buf.freeze());
            }
        }
        self.client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(&upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.classify(e))?;
        guard.disarm();
        // A multipart ETag is not an MD5 of the data.
        Ok(Written::len(total))
    }
}

/// Aborts an unfinished multipart upload in the background, so an error or a dropped request
/// does not leave parts the backend bills for.
struct AbortOnDrop {
    client: Client,
    bucket: String,
    key: String,
    upload_id: Option<String>,
}

impl AbortOnDrop {
    fn disarm(mut self) {
        self.upload_id = None;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(id) = self.upload_id.take() {
            let req = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(&self.key)
                .upload_id(id);
            tokio::spawn(async move {
                if let Err(e) = req.send().await {
                    tracing::warn!(error = %e, "could not abort a backend multipart upload");
                }
            });
        }
    }
}

fn classify<E>(backend: &str, e: SdkError<E, HttpResponse>) -> BackendError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let backend = backend.to_string();
    let status = e.raw_response().map(|r| r.status().as_u16());
    let code = e.code().map(str::to_string);
    let cause = match (&code, e.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.clone(),
        _ => aws_sdk_s3::error::DisplayErrorContext(&e).to_string(),
    };
    match (&e, status, code.as_deref()) {
        (SdkError::DispatchFailure(_) | SdkError::TimeoutError(_), _, _) => {
            BackendError::Unavailable { backend, cause }
        }
        (_, Some(404), Some("NoSuchKey" | "NotFound")) => BackendError::NotFound(cause),
        (_, _, Some("SlowDown" | "Throttling" | "RequestLimitExceeded")) | (_, Some(429), _) => {
            BackendError::Throttled { backend, cause }
        }
        (_, Some(s), _) if s >= 500 => BackendError::Unavailable { backend, cause },
        (SdkError::ResponseError(_), _, _) => BackendError::Unavailable { backend, cause },
        _ => BackendError::Failed { backend, cause },
    }
}

/// Wraps a body for the SDK: records the body's own error, so a client that hangs up is told
/// apart from a backend that fails.
fn sdk_body(body: ByteStream) -> (SdkStream, Arc<Mutex<Option<StdError>>>) {
    let failed = Arc::new(Mutex::new(None));
    let seen = failed.clone();
    let stream = body.map_err(move |e| {
        let msg = e.to_string();
        *seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
        std::io::Error::other(msg)
    });
    let frames = sync_wrapper::SyncStream::new(stream.map_ok(hyper::body::Frame::data));
    let body = http_body_util::StreamBody::new(frames);
    (SdkStream::new(SdkBody::from_body_1_x(body)), failed)
}

fn body_error(failed: &Mutex<Option<StdError>>) -> Option<BackendError> {
    failed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .map(BackendError::Body)
}

#[async_trait::async_trait]
impl Backend for S3Backend {
    fn retries_itself(&self) -> bool {
        true
    }

    async fn put(
        &self,
        bucket: &str,
        key: &str,
        mut body: ByteStream,
        len: Option<u64>,
    ) -> Result<Written, BackendError> {
        if let Some(n) = len.filter(|n| *n <= MAX_SINGLE_PUT) {
            let (sdk, failed) = sdk_body(body);
            return match self.put_single(bucket, key, sdk, n).await {
                Ok(w) => Ok(w),
                Err(e) => Err(body_error(&failed).unwrap_or(e)),
            };
        }
        let (buf, carry, ended) = first_part(&mut body, self.part_size).await?;
        if ended {
            let n = buf.len() as u64;
            return self
                .put_single(bucket, key, SdkStream::from(buf.freeze()), n)
                .await;
        }
        self.put_multipart(bucket, key, body, buf.freeze(), carry)
            .await
    }

    fn reports_md5(&self, len: Option<u64>) -> bool {
        len.is_some_and(|n| n <= MAX_SINGLE_PUT)
    }

    async fn get(
        &self,
        bucket: &str,
        key: &str,
        range: Range<u64>,
    ) -> Result<ByteStream, BackendError> {
        let out = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .range(format!("bytes={}-{}", range.start, range.end - 1))
            .send()
            .await
            .map_err(|e| self.classify(e))?;
        Ok(Box::pin(futures::stream::unfold(
            out.body,
            |mut b| async move {
                b.next()
                    .await
                    .map(|r| (r.map_err(|e| Box::new(e) as StdError), b))
            },
        )))
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), BackendError> {
        match self
            .client
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match self.classify(e) {
                BackendError::NotFound(_) => Ok(()),
                e => Err(e),
            },
        }
    }

    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<BlobInfo>, BackendError> {
        let mut out = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        let now = std::time::SystemTime::now();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.classify(e))?;
            for o in page.contents() {
                let age = o
                    .last_modified()
                    .and_then(|t| std::time::SystemTime::try_from(*t).ok())
                    .and_then(|t| now.duration_since(t).ok())
                    .unwrap_or_default();
                out.push(BlobInfo {
                    key: o.key().unwrap_or_default().to_string(),
                    age,
                });
            }
        }
        Ok(out)
    }

    async fn probe(&self, bucket: &str) -> Result<(), BackendError> {
        self.client
            .head_bucket()
            .bucket(bucket)
            .send()
            .await
            .map_err(|e| self.classify(e))?;
        Ok(())
    }
}
