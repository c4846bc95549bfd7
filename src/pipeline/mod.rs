//! The write protocol of DESIGN.md §2 and the read path that stitches segments back together.
//!
//! Stages of a write, in this fixed order:
//! 1. `Declared::from_headers` — what the client promised (Content-MD5, `x-amz-checksum-*`);
//! 2. [`store`] — stream the body once: hash it (MD5 + requested checksums) while writing a fresh
//!    blob; the blob is owned by a [`BlobGuard`] that deletes it unless the write commits;
//! 3. `Declared::verify` — compare with the trailer values that arrived after the last byte;
//! 4. the caller commits the record in one meta transaction, then [`BlobGuard::keep`]s the blob
//!    and deletes the blobs the commit freed ([`release`]).
//!
//! Quota, validation and the virus scan (later issues) slot in between 1 and 4 as further stages.

pub mod checksum;

use std::ops::Range;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};

use s3s::crypto::Checksum as _;

use crate::backend::{BackendError, Backends, ByteStream, Placement};
use crate::meta::{Checksums, MetaError, Segment};
pub use checksum::Declared;

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
    Backend(#[from] BackendError),
    #[error(transparent)]
    Meta(#[from] MetaError),
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

/// A body that was stored as a new blob.
pub struct Stored {
    pub guard: BlobGuard,
    pub segment: Segment,
    pub md5: [u8; 16],
    pub checksums: Checksums,
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

/// Streams `body` into a new blob while hashing it (stage 2).
pub async fn store(
    backend: &Arc<Backends>,
    placement: &Placement,
    tenant: &str,
    body: s3s::dto::StreamingBlob,
    declared: &Declared,
    expected_len: Option<u64>,
) -> Result<Stored, PipelineError> {
    if expected_len.is_some_and(|n| n > MAX_OBJECT_SIZE) {
        return Err(PipelineError::TooLarge);
    }
    let blob = placement.new_blob(tenant);
    // The backend's own MD5 is used when it reports one and the client declared none to check
    // against: hashing the same bytes twice is most of a large PUT's CPU.
    let own_md5 = declared.md5.is_some() || !backend.reports_md5(&blob, expected_len);
    // The stream is handed to the backend as a `'static` box, so the hashers sit behind a mutex
    // that only this one stream ever locks; they are taken back once the backend has read it all.
    let state = Arc::new(std::sync::Mutex::new((
        s3s::crypto::Md5::new(),
        declared.hasher(),
    )));
    let hashing = state.clone();
    let mut seen = 0u64;
    let hashed: ByteStream = Box::pin(body.map(move |chunk| {
        let bytes = chunk?;
        seen += bytes.len() as u64;
        // Bodies of unknown length (aws-chunked) are cut off the moment they cross the limit.
        if seen > MAX_OBJECT_SIZE {
            return Err(too_large().into());
        }
        let mut st = hashing.lock().unwrap_or_else(|e| e.into_inner());
        if own_md5 {
            st.0.update(&bytes);
        }
        st.1.update(&bytes);
        Ok(bytes)
    }));
    let written = backend.put(&blob, hashed, expected_len).await?;
    let guard = BlobGuard {
        backend: backend.clone(),
        blob: Some(blob.clone()),
    };
    let len = written.len;
    if expected_len.is_some_and(|n| n != len) {
        return Err(PipelineError::IncompleteBody);
    }
    let (md5, hasher) = std::mem::take(&mut *state.lock().unwrap_or_else(|e| e.into_inner()));
    let md5 = match (own_md5, written.md5) {
        (true, _) => md5.finalize(),
        (false, Some(m)) => m,
        // The backend did not report it after all (an encrypted bucket): read the blob back.
        (false, None) => md5_of(backend, &blob, len).await?,
    };
    Ok(Stored {
        guard,
        segment: Segment {
            blob,
            offset: 0,
            len,
        },
        md5,
        checksums: checksum::from_s3s(hasher.finalize()),
    })
}

/// A stored blob's stream failed while the gateway itself was reading it.
fn source_failed(blob: &str, e: crate::backend::StdError) -> BackendError {
    BackendError::Unavailable {
        backend: blob.split('/').next().unwrap_or_default().to_string(),
        cause: e.to_string(),
    }
}

/// The MD5 of a stored blob, read back from its backend.
async fn md5_of(backend: &Arc<Backends>, blob: &str, len: u64) -> Result<[u8; 16], PipelineError> {
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

/// Deletes blobs that a commit released. Best effort: a blob that cannot be deleted now is
/// unreferenced, and the sweeper removes it later.
pub fn release(backend: &Arc<Backends>, blobs: Vec<String>) {
    if blobs.is_empty() {
        return;
    }
    let backend = backend.clone();
    tokio::spawn(async move {
        for blob in blobs {
            if let Err(e) = backend.delete(&blob).await {
                tracing::warn!(%blob, error = %e, "could not delete a released blob");
            }
        }
    });
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
