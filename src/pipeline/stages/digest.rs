//! Digests: the MD5 of the ETag and the `x-amz-checksum-*` the client asked for, over the bytes
//! as they pass. The caller compares them with what the client declared (`Declared::verify`),
//! once the trailer has arrived.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use s3s::crypto::Checksum as _;

use crate::backend::Backends;
use crate::pipeline::checksum::{self, Declared};
use crate::pipeline::stage::{Found, Stage, Write, Written};
use crate::pipeline::{PipelineError, md5_of};

pub struct Digest {
    backend: Arc<Backends>,
    /// Hash the MD5 here: the backend does not report one (the local backend hashes on its
    /// writer thread, a remote S3 reports the single PUT's ETag; hashing the same bytes twice is
    /// most of a large PUT's CPU).
    own_md5: bool,
    md5: s3s::crypto::Md5,
    hasher: s3s::checksum::ChecksumHasher,
}

impl Digest {
    pub fn new(backend: Arc<Backends>, declared: &Declared, own_md5: bool) -> Self {
        Self {
            backend,
            own_md5,
            md5: s3s::crypto::Md5::new(),
            hasher: declared.hasher(),
        }
    }
}

#[async_trait]
impl Stage for Digest {
    async fn chunk(&mut self, bytes: &Bytes) -> Result<(), PipelineError> {
        if self.own_md5 {
            self.md5.update(bytes);
        }
        self.hasher.update(bytes);
        Ok(())
    }

    async fn finish(&mut self, _w: &Write<'_>, blob: &Written<'_>) -> Result<Found, PipelineError> {
        let md5 = match (self.own_md5, blob.backend_md5) {
            (true, _) => std::mem::take(&mut self.md5).finalize(),
            (false, Some(m)) => m,
            // Not reported (put unhashed, or an encrypted bucket's ETag): read the blob back.
            (false, None) => md5_of(&self.backend, &blob.segment.blob, blob.segment.len).await?,
        };
        Ok(Found {
            md5: Some(md5),
            checksums: Some(checksum::from_s3s(
                std::mem::take(&mut self.hasher).finalize(),
            )),
            ..Default::default()
        })
    }
}
