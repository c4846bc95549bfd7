//! The write protocol of DESIGN.md §2 and the read path that stitches segments back together.
//!
//! A write, in this fixed order:
//! 1. admit — the caller (`s3::Gateway::admit`) checks the bucket, the key against the bucket's
//!    [`policy`] and the declared size, and reserves [`quota`] for it (every body has a length:
//!    S3, and s3s, refuse a PUT or part without one); `Declared::from_headers` records what the
//!    client promised (Content-MD5, `x-amz-checksum-*`);
//! 2. [`store`] — the body once through the [`stage`]s of [`stages`] (type on the first bytes,
//!    virus scan, digests) and into a fresh blob, all at once. The blob is owned by a
//!    [`BlobGuard`] that deletes it unless the write commits;
//! 3. verdicts — each stage's `finish`: only clean (or a bucket that does not scan) goes on;
//!    infected is quarantined or deleted; no verdict follows the bucket's fallback;
//! 4. verify — `Declared::verify` compares with the trailer values that arrived after the last
//!    byte;
//! 5. commit — one `meta::Commit` settles the reservation, is durable when it returns, and hands
//!    the blobs it freed to the deleter; `quota::Reservation::commit` takes the new blobs'
//!    guards and keeps them once the commit applied, or may have (an unknown outcome: the
//!    sweeper deletes them later if it did not), so no error path deletes the bytes of a
//!    published object.
//!
//! PutObject, UploadPart, CopyObject and CompleteMultipartUpload follow it; bytes already stored
//! (a copy, a completion) are judged by [`inspect`] instead of step 2.

pub mod checksum;
pub mod policy;
pub mod quota;
pub mod read;
pub mod stage;
mod stages;

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use s3s::crypto::Checksum as _;

use crate::backend::{BackendError, Backends, ByteStream, Placement};
use crate::meta::{Checksums, MetaError, ScanInfo, ScanStatus, Segment};
use crate::scanner::{ScanError, Scanner, Verdict};
pub use checksum::Declared;
use policy::{Effective, Fallback, PolicyError};
use quota::QuotaError;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("the {0} you specified did not match the calculated checksum")]
    BadDigest(String),
    #[error("the Content-MD5 you specified is not valid")]
    InvalidDigest,
    #[error("value of x-amz-checksum-{0} is not valid")]
    InvalidChecksum(String),
    #[error("checksum algorithm {0} is not supported")]
    UnsupportedChecksum(String),
    #[error("the body exceeds the maximum object size")]
    TooLarge,
    #[error("the request body ended before Content-Length bytes arrived")]
    IncompleteBody,
    #[error(transparent)]
    Quota(#[from] QuotaError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("virus {0} found")]
    Infected(String),
    #[error("{0}")]
    ScannerUnavailable(String),
    #[error("the object is larger than the {0} bytes the virus scanner accepts")]
    TooLargeToScan(u64),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Meta(#[from] MetaError),
}

impl From<ScanError> for PipelineError {
    fn from(e: ScanError) -> Self {
        PipelineError::ScannerUnavailable(e.to_string())
    }
}

/// A blob that was written but is not yet referenced by a commit. Dropping the guard (an error
/// path, or the request future being dropped because the client hung up) deletes the blob in
/// the background; [`BlobGuard::keep`] hands it over to the committed record.
pub struct BlobGuard {
    backend: Arc<Backends>,
    blob: Option<String>,
}

impl BlobGuard {
    pub fn keep(mut self) {
        self.blob = None;
    }
}

impl Drop for BlobGuard {
    fn drop(&mut self) {
        if let Some(blob) = self.blob.take() {
            let backend = self.backend.clone();
            tokio::spawn(async move {
                if let Err(e) = backend.delete(&blob).await {
                    // The sweeper will find it unreferenced later.
                    tracing::warn!(%blob, error = %e, "could not delete an uncommitted blob");
                }
            });
        }
    }
}

/// Who writes what, for the security log.
#[derive(Debug, Clone)]
pub struct Target {
    pub tenant: String,
    pub bucket: String,
    pub key: String,
    pub peer: Option<SocketAddr>,
}

/// What a write must pass besides its checksums.
/// How long a body is.
pub enum Length {
    /// As the client declared (`Content-Length`, or the decoded length of an aws-chunked body):
    /// the limits are checked and the quota reserved before the first byte.
    Declared(u64),
    /// Nobody declared it (a chunked stream): the meter stage checks the limits and grows the
    /// write's reservation as the bytes arrive.
    Metered(quota::Room),
}

pub struct Checks<'a> {
    pub policy: &'a Effective,
    /// Check the detected type against the policy: whole objects only, a multipart object is
    /// checked at completion.
    pub sniff: bool,
    pub content_type: Option<&'a str>,
    /// The scanner, when this write is scanned.
    pub scanner: Option<&'a Arc<Scanner>>,
    pub target: &'a Target,
}

/// A body that was stored as a new blob.
pub struct Stored {
    pub guard: BlobGuard,
    pub segment: Segment,
    pub md5: [u8; 16],
    pub checksums: Checksums,
    /// The detected type, when the write was sniffed.
    pub detected: Option<String>,
    pub scan: ScanInfo,
}

impl Stored {
    pub fn etag(&self) -> String {
        hex::encode(self.md5)
    }
}

/// S3's largest single PUT or part: 5 GiB.
pub const MAX_OBJECT_SIZE: u64 = 5 * 1024 * 1024 * 1024;

/// The answer to a body over [`MAX_OBJECT_SIZE`].
pub fn too_large() -> s3s::S3Error {
    s3s::s3_error!(
        EntityTooLarge,
        "Your proposed upload exceeds the maximum allowed size of 5 GiB."
    )
}

/// An error raised inside the body stream: it reaches the backend as the body's error and comes
/// back out of `put` as `BackendError::Body`, which keeps the S3 error it carries.
fn stop(e: PipelineError) -> crate::backend::StdError {
    Box::new(s3s::S3Error::from(e))
}

pub fn scan_info(
    status: ScanStatus,
    signature: Option<String>,
    engine: Option<String>,
) -> ScanInfo {
    ScanInfo {
        status,
        signature,
        engine,
        at_ms: crate::meta::now_ms(),
    }
}

/// What a bucket's fallback makes of an upload that could not be scanned.
pub(crate) fn fallback(f: Fallback, e: PipelineError) -> Result<ScanInfo, PipelineError> {
    match f {
        Fallback::Reject => Err(e),
        Fallback::StoreUnscanned => {
            tracing::warn!(reason = %e, "stored unscanned; reads are refused until a scan");
            Ok(scan_info(ScanStatus::Pending, None, None))
        }
    }
}

/// The scan record of a write from clamd's answer: clean; or, when there is no verdict, the
/// bucket's fallback. An infected write is refused — moved to the quarantine when one is
/// configured (never readable through S3), logged — and gets no record; the caller's guards
/// delete the original blobs.
pub(crate) async fn settle(
    backend: &Arc<Backends>,
    scanner: &Scanner,
    verdict: Result<Verdict, ScanError>,
    policy: &Effective,
    segments: &[Segment],
    target: &Target,
) -> Result<ScanInfo, PipelineError> {
    let signature = match verdict {
        Ok(Verdict::Clean) => {
            return Ok(scan_info(ScanStatus::Clean, None, scanner.engine().await));
        }
        Ok(Verdict::Infected(sig)) => sig,
        Ok(Verdict::TooLarge) => {
            return fallback(
                policy.on_too_large_to_scan,
                PipelineError::TooLargeToScan(scanner.config().max_stream),
            );
        }
        Ok(Verdict::Failed(why)) => {
            return fallback(
                policy.on_scanner_unavailable,
                PipelineError::ScannerUnavailable(why),
            );
        }
        Err(e) => return fallback(policy.on_scanner_unavailable, e.into()),
    };
    let mut quarantined = None;
    if let Some(q) = &scanner.config().quarantine {
        let blob = q.new_blob(&target.tenant);
        let size = segments.iter().map(|s| s.len).sum();
        match backend
            .put(&blob, read(backend, segments, 0..size), Some(size))
            .await
        {
            Ok(_) => quarantined = Some(blob),
            Err(e) => {
                tracing::error!(error = %e, "could not quarantine an infected upload; it is deleted")
            }
        }
    }
    tracing::warn!(
        target: "portcullis::security",
        tenant = %target.tenant,
        bucket = %target.bucket,
        key = %target.key,
        signature = %signature,
        peer = ?target.peer,
        quarantined = ?quarantined,
        "virus detected; upload refused"
    );
    Err(PipelineError::Infected(signature))
}

/// The protocol once (stages 2 and 3 of the module's list): streams `body` (of the declared
/// `len`) into a new blob, through every stage of [`stages::for_write`] on the way.
pub async fn store(
    backend: &Arc<Backends>,
    placement: &Placement,
    mut body: s3s::dto::StreamingBlob,
    declared: &Declared,
    length: Length,
    checks: Checks<'_>,
) -> Result<Stored, PipelineError> {
    let (len, room) = match length {
        Length::Declared(n) => (Some(n), None),
        Length::Metered(room) => (None, Some(room)),
    };
    let w = stage::Write {
        policy: checks.policy,
        target: checks.target,
        len,
        content_type: checks.content_type,
    };
    if let Some(len) = len {
        if len > MAX_OBJECT_SIZE {
            return Err(PipelineError::TooLarge);
        }
        w.policy.check_size(len)?;
    }
    let blob = placement.new_blob(&w.target.tenant);
    let own_md5 = !backend.reports_md5(&blob, len);
    let mut stages = stages::for_write(
        backend,
        declared,
        own_md5,
        checks.sniff,
        checks.scanner,
        room,
    );

    // Head: the first bytes, judged before anything is stored.
    let want = stages.iter().map(|s| s.head_len()).max().unwrap_or(0);
    let mut head: Vec<bytes::Bytes> = Vec::new();
    if want > 0 {
        let mut first = Vec::with_capacity(want);
        while first.len() < want {
            match body.next().await {
                Some(Ok(b)) => {
                    let room = want - first.len();
                    first.extend_from_slice(&b[..b.len().min(room)]);
                    head.push(b);
                }
                Some(Err(e)) => return Err(BackendError::Body(e).into()),
                None => break,
            }
        }
        for s in &mut stages {
            s.head(&first, &w)?;
        }
    }
    // Open: each stage may refuse before the rest is read (an unreachable scanner).
    for s in &mut stages {
        s.open(&w).await?;
    }
    // Stream: every chunk through every stage, then to the backend. The backend takes the
    // stream as a `'static` box, so the stages sit behind a lock only this stream takes, once
    // per chunk; they are taken back when the backend is done.
    let defers_md5 = stages.iter().any(|s| s.defers_md5());
    let shared = Arc::new(tokio::sync::Mutex::new(stages));
    let chunks = shared.clone();
    let hashed: ByteStream = Box::pin(
        futures::stream::iter(head.into_iter().map(Ok))
            .chain(body)
            .then(move |chunk| {
                let chunks = chunks.clone();
                async move {
                    let bytes = chunk?;
                    for s in chunks.lock().await.iter_mut() {
                        s.chunk(&bytes).await.map_err(stop)?;
                    }
                    Ok(bytes)
                }
            }),
    );
    let written = if defers_md5 {
        backend.put_unhashed(&blob, hashed, len).await?
    } else {
        backend.put(&blob, hashed, len).await?
    };
    let guard = BlobGuard {
        backend: backend.clone(),
        blob: Some(blob.clone()),
    };
    if len.is_some_and(|n| written.len != n) {
        return Err(PipelineError::IncompleteBody);
    }
    // Finish: the verdicts on the stored blob.
    let segment = Segment {
        blob,
        offset: 0,
        len: written.len,
    };
    let done = stage::Written {
        segment: &segment,
        backend_md5: written.md5,
    };
    let mut stages = std::mem::take(&mut *shared.lock().await);
    let found = stage::finish_all(&mut stages, &w, &done).await?;
    Ok(Stored {
        guard,
        md5: found.md5.expect("the digest stage always runs"),
        checksums: found.checksums.unwrap_or_default(),
        detected: found.detected,
        scan: found
            .scan
            .unwrap_or_else(|| scan_info(ScanStatus::NotScanned, None, None)),
        segment,
    })
}

/// Checks an object that is already stored as `segments` (a completed multipart upload, a copy
/// into a bucket with another policy): its type (`known_type`, or detected from the first bytes)
/// before anything else, then with `scanner` a scan of the whole, read back in order. Returns
/// the detected type and the scan record.
#[allow(clippy::too_many_arguments)]
pub async fn inspect(
    backend: &Arc<Backends>,
    scanner: Option<&Arc<Scanner>>,
    policy: &Effective,
    segments: &[Segment],
    size: u64,
    content_type: Option<&str>,
    known_type: Option<String>,
    target: &Target,
) -> Result<(String, ScanInfo), PipelineError> {
    policy.check_size(size)?;
    let detected = match known_type {
        Some(t) => t,
        None => {
            let mut head = Vec::new();
            let first = segments.first().map_or("", |s| s.blob.as_str());
            let mut stream = read(backend, segments, 0..size.min(policy::SNIFF_LEN as u64));
            while let Some(chunk) = stream.next().await {
                head.extend_from_slice(&chunk.map_err(|e| source_failed(first, e))?);
            }
            policy::detect(&head)
        }
    };
    policy.check_type(&detected, content_type, &target.key)?;
    let scan = match scanner {
        None => scan_info(ScanStatus::NotScanned, None, None),
        Some(s) if size > s.config().max_stream => fallback(
            policy.on_too_large_to_scan,
            PipelineError::TooLargeToScan(s.config().max_stream),
        )?,
        Some(s) => {
            let verdict = s.scan(read(backend, segments, 0..size)).await;
            settle(backend, s, verdict, policy, segments, target).await?
        }
    };
    Ok((detected, scan))
}

/// A stored blob's stream failed while the gateway itself was reading it.
fn source_failed(blob: &str, e: crate::backend::StdError) -> BackendError {
    BackendError::Unavailable {
        backend: blob.split('/').next().unwrap_or_default().to_string(),
        cause: e.to_string(),
    }
}

/// The MD5 of a stored blob, read back from its backend.
pub(crate) async fn md5_of(
    backend: &Arc<Backends>,
    blob: &str,
    len: u64,
) -> Result<[u8; 16], PipelineError> {
    let mut md5 = s3s::crypto::Md5::new();
    let mut stream = backend.get(blob, 0..len).await?;
    while let Some(chunk) = stream.next().await {
        md5.update(&chunk.map_err(|e| source_failed(blob, e))?);
    }
    Ok(md5.finalize())
}

/// Copies the bytes of `segments` into new blobs where `placement` writes, unless they all live
/// there already: a bucket's placement is a data-residency promise, so a copy from a bucket on
/// another backend must not leave the copy's bytes behind. Returns the guards of the new blobs
/// (empty when nothing moved and the segments may be shared).
pub async fn relocate(
    backend: &Arc<Backends>,
    placement: &Placement,
    tenant: &str,
    segments: Vec<&mut Segment>,
) -> Result<Vec<BlobGuard>, PipelineError> {
    if segments.iter().all(|s| placement.holds(&s.blob)) {
        return Ok(Vec::new());
    }
    let mut guards = Vec::new();
    for s in segments {
        let blob = placement.new_blob(tenant);
        let source = backend.get(&s.blob, s.offset..s.offset + s.len).await?;
        let len = match backend.put(&blob, source, Some(s.len)).await {
            Ok(w) => w.len,
            // The "body" here is the source backend's stream, not a client's.
            Err(BackendError::Body(e)) => return Err(source_failed(&s.blob, e).into()),
            Err(e) => return Err(e.into()),
        };
        guards.push(BlobGuard {
            backend: backend.clone(),
            blob: Some(blob.clone()),
        });
        if len != s.len {
            return Err(PipelineError::Backend(BackendError::NotFound(
                s.blob.clone(),
            )));
        }
        *s = Segment {
            blob,
            offset: 0,
            len,
        };
    }
    Ok(guards)
}

/// A response body for s3s: its stream must be `Sync`, which a chain of backend futures is not;
/// `SyncWrapper` provides that soundly because the stream is only ever polled through `&mut`.
pub struct OutBody {
    inner: sync_wrapper::SyncWrapper<ByteStream>,
    remaining: u64,
}

impl OutBody {
    pub fn new(inner: ByteStream, len: u64) -> Self {
        Self {
            inner: sync_wrapper::SyncWrapper::new(inner),
            remaining: len,
        }
    }
}

impl futures::Stream for OutBody {
    type Item = Result<bytes::Bytes, crate::backend::StdError>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let this = &mut *self;
        let r = this.inner.get_mut().as_mut().poll_next(cx);
        if let std::task::Poll::Ready(Some(Ok(b))) = &r {
            this.remaining = this.remaining.saturating_sub(b.len() as u64);
        }
        r
    }
}

impl s3s::stream::ByteStream for OutBody {
    fn remaining_length(&self) -> s3s::stream::RemainingLength {
        s3s::stream::RemainingLength::new_exact(self.remaining as usize)
    }
}

/// The segments that hold `range` of an object made of `segments`, trimmed to it.
pub fn slice(segments: &[Segment], range: Range<u64>) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut pos = 0u64;
    for s in segments {
        let (start, end) = (pos, pos + s.len);
        pos = end;
        let (from, to) = (range.start.max(start), range.end.min(end));
        if from < to {
            out.push(Segment {
                blob: s.blob.clone(),
                offset: s.offset + from - start,
                len: to - from,
            });
        }
    }
    out
}

/// Streams `range` of an object made of `segments`, opening each blob only when the previous
/// one is exhausted, so a GET holds one backend stream at a time.
pub fn read(backend: &Arc<Backends>, segments: &[Segment], range: Range<u64>) -> ByteStream {
    let pieces = slice(segments, range);
    let backend = backend.clone();
    Box::pin(
        futures::stream::iter(pieces)
            .then(move |s| {
                let backend = backend.clone();
                async move { backend.get(&s.blob, s.offset..s.offset + s.len).await }
            })
            .map_err(|e| Box::new(e) as crate::backend::StdError)
            .try_flatten(),
    )
}
