//! The stage seam of the write protocol: each concern that looks at an upload's bytes (its type,
//! its digests, its virus scan, later its derivatives) is one [`Stage`], and
//! [`super::store`] runs the list of them in one pass over the body. A new concern is one new
//! file under `stages/` and one line in [`stages`](super::stages::for_write).

use async_trait::async_trait;
use bytes::Bytes;

use super::policy::Effective;
use super::{PipelineError, Target};
use crate::meta::{Checksums, ScanInfo, Segment};

/// What the stages know of the write.
pub struct Write<'a> {
    pub policy: &'a Effective,
    pub target: &'a Target,
    /// The declared length; `None` for a metered body (`super::Length::Metered`).
    pub len: Option<u64>,
    /// The client's Content-Type, if any.
    pub content_type: Option<&'a str>,
}

/// The blob once the backend has it.
pub struct Written<'a> {
    pub segment: &'a Segment,
    /// The MD5 the backend computed while writing, when it reports one.
    pub backend_md5: Option<[u8; 16]>,
}

/// What the stages found, merged into the record of the write.
#[derive(Default)]
pub struct Found {
    pub md5: Option<[u8; 16]>,
    pub checksums: Option<Checksums>,
    pub detected: Option<String>,
    pub scan: Option<ScanInfo>,
}

impl Found {
    fn merge(&mut self, other: Found) {
        self.md5 = other.md5.or(self.md5.take());
        self.checksums = other.checksums.or(self.checksums.take());
        self.detected = other.detected.or(self.detected.take());
        self.scan = other.scan.or(self.scan.take());
    }
}

/// One concern of the write protocol. Its hooks run in protocol order, for every stage before
/// the next hook: `head` on the first bytes (nothing is stored yet), `open` before the rest is
/// read, `chunk` on every chunk before the backend gets it, `finish` after the blob is written
/// (the stages finish concurrently: a scan's verdict and a digest read back overlap).
#[async_trait]
pub trait Stage: Send {
    /// Refuses before the rest of the body is read, or prepares (the scanner opens its stream,
    /// so an unreachable clamd fails the upload at once).
    async fn open(&mut self, _w: &Write<'_>) -> Result<(), PipelineError> {
        Ok(())
    }

    /// How many first bytes it must see before anything is stored (0: none).
    fn head_len(&self) -> usize {
        0
    }

    /// The first bytes of the body (up to the largest `head_len`, fewer if the body is shorter).
    fn head(&mut self, _first: &[u8], _w: &Write<'_>) -> Result<(), PipelineError> {
        Ok(())
    }

    /// Whether the backend should leave the MD5 to the stages because `finish` waits anyway (a
    /// scan keeps clamd busy after the last byte; the digest is read back meanwhile).
    fn defers_md5(&self) -> bool {
        false
    }

    /// Every chunk of the body, in order. An error ends the upload.
    async fn chunk(&mut self, _bytes: &Bytes) -> Result<(), PipelineError> {
        Ok(())
    }

    /// Its verdict on the stored blob.
    async fn finish(&mut self, w: &Write<'_>, blob: &Written<'_>) -> Result<Found, PipelineError>;
}

/// Runs every stage's `finish` at once; the first error in stage order wins (a scan's verdict
/// is listed before the digests: an infected blob may be gone before it is hashed).
pub async fn finish_all(
    stages: &mut [Box<dyn Stage>],
    w: &Write<'_>,
    blob: &Written<'_>,
) -> Result<Found, PipelineError> {
    let results = futures::future::join_all(stages.iter_mut().map(|s| s.finish(w, blob))).await;
    let mut found = Found::default();
    for r in results {
        found.merge(r?);
    }
    Ok(found)
}
