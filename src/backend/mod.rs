//! Blob storage: the `Backend` trait and its implementations. A backend stores immutable blobs
//! under opaque keys that Portcullis chooses (`<tenant>/<ulid>`); it never sees an S3 object key,
//! so no client-chosen name can reach a file system path or a backend's namespace.

pub mod local;

use std::ops::Range;
use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;

pub type StdError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A stream of body bytes, as the front hands it to a backend and a backend hands it back.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, StdError>> + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// Reading the request body failed: the client went away or sent a bad stream.
    #[error("reading the request body: {0}")]
    Body(StdError),
    #[error("blob not found: {0}")]
    NotFound(String),
    #[error("backend I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// A blob as the sweeper sees it.
#[derive(Debug, Clone)]
pub struct BlobInfo {
    pub key: String,
    pub age: std::time::Duration,
}

#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Writes `body` to a new blob `key` and returns its length. The blob exists only once this
    /// returns `Ok`; on error nothing is left under `key` (at most a temporary the sweeper owns).
    async fn put(&self, key: &str, body: ByteStream) -> Result<u64, BackendError>;

    /// Streams `range` of blob `key`.
    async fn get(&self, key: &str, range: Range<u64>) -> Result<ByteStream, BackendError>;

    /// Deletes blob `key`; deleting a missing blob succeeds.
    async fn delete(&self, key: &str) -> Result<(), BackendError>;

    /// Every blob, for the sweeper (never called on the request path).
    async fn list(&self) -> Result<Vec<BlobInfo>, BackendError>;

    /// Removes leftovers of writes that were interrupted by a crash. Called once at start-up,
    /// before any request is served.
    async fn recover(&self) -> Result<usize, BackendError>;
}
