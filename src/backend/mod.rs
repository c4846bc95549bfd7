//! Blob storage: the `Backend` trait, its implementations, and [`Backends`], the set of named
//! backends a gateway writes to.
//!
//! A backend stores immutable blobs under opaque keys that Portcullis chooses
//! (`<prefix><tenant>/<ULID>`); it never sees an S3 object key, so no client-chosen name can
//! reach a file system path or a backend's namespace. A blob is named everywhere else by a
//! *blob reference* `<backend>/<container>/<key>`: it says where the bytes are, so a record stays
//! readable whatever the placement configuration later says, and one index can point into
//! several backends.

pub mod azure;
mod batch;
pub mod gcs;
pub mod local;
mod options;
pub mod s3;

use std::collections::BTreeMap;
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;

pub use crate::model::Placement;
pub use options::{AzureAuth, BackendConfig, BackendKind, Secret};

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
    /// The backend could not be reached, timed out, or answered with a server error: worth
    /// retrying later, and the client is told so.
    #[error("backend {backend} unavailable: {cause}")]
    Unavailable { backend: String, cause: String },
    /// The backend asked us to slow down (S3 `SlowDown`, Azure `ServerBusy`, GCS 429).
    #[error("backend {backend} throttled: {cause}")]
    Throttled { backend: String, cause: String },
    /// Any other refusal (access denied, missing container): a configuration problem.
    #[error("backend {backend} failed: {cause}")]
    Failed { backend: String, cause: String },
    #[error("blob reference {0:?} names no configured backend")]
    UnknownBackend(String),
}

impl BackendError {
    fn retryable(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::Throttled { .. })
    }
}

/// What a completed put stored.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    pub len: u64,
    /// The blob's MD5 as the backend computed it over the bytes it received, when it reports
    /// one (see [`Backend::reports_md5`]).
    pub md5: Option<[u8; 16]>,
}

impl Written {
    pub fn len(len: u64) -> Self {
        Self { len, md5: None }
    }
}

/// A blob as the sweeper sees it: its key inside the container, and how long ago it was written.
#[derive(Debug, Clone)]
pub struct BlobInfo {
    pub key: String,
    pub age: Duration,
}

#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Writes `body` to a new blob `key` of `container` and returns its length. `len` is the
    /// body's length when the client declared it; `None` means it is known only at the end.
    /// The blob exists only once this returns `Ok`; on error, or when the future is dropped,
    /// nothing readable is left under `key` (at most a leftover the sweeper or the backend's
    /// own upload expiry removes).
    async fn put(
        &self,
        container: &str,
        key: &str,
        body: ByteStream,
        len: Option<u64>,
    ) -> Result<Written, BackendError>;

    /// [`Backend::put`] for a caller that will hash the blob itself later, off its critical
    /// path (a scanned upload reads it back while clamd scans): a backend that would spend its
    /// own CPU on the MD5 skips it and may report none. Backends whose MD5 costs nothing here
    /// (a remote computes it) keep reporting it.
    async fn put_unhashed(
        &self,
        container: &str,
        key: &str,
        body: ByteStream,
        len: Option<u64>,
    ) -> Result<Written, BackendError> {
        self.put(container, key, body, len).await
    }

    /// Whether a put of a body of `len` will usually report the blob's MD5, so the gateway need
    /// not hash it a second time (MD5 is most of a large PUT's CPU). A put that then reports
    /// none is hashed by reading the blob back.
    fn reports_md5(&self, _len: Option<u64>) -> bool {
        false
    }

    /// Streams `range` (never empty) of blob `key`.
    async fn get(
        &self,
        container: &str,
        key: &str,
        range: Range<u64>,
    ) -> Result<ByteStream, BackendError>;

    /// Deletes blob `key`; deleting a missing blob succeeds.
    async fn delete(&self, container: &str, key: &str) -> Result<(), BackendError>;

    /// Every blob under `prefix`, for the sweeper (never called on the request path).
    async fn list(&self, container: &str, prefix: &str) -> Result<Vec<BlobInfo>, BackendError>;

    /// Checks that `container` is reachable and usable, for the health endpoint.
    async fn probe(&self, container: &str) -> Result<(), BackendError>;

    /// Whether the backend's client retries failed calls itself (aws-sdk-s3 and object_store
    /// do, with the configured `retries`); [`Backends`] then only bounds them in time, so a call
    /// is never retried at two levels.
    fn retries_itself(&self) -> bool {
        false
    }

    /// Removes leftovers of writes that were interrupted by a crash. Called once at start-up,
    /// before any request is served.
    async fn recover(&self) -> Result<usize, BackendError> {
        Ok(0)
    }
}

impl Placement {
    /// A fresh, never-reused blob reference. The tenant id keeps tenants apart in a shared
    /// container; the ULID makes every write a new blob.
    pub fn new_blob(&self, tenant: &str) -> String {
        format!(
            "{}/{}/{}{tenant}/{}",
            self.backend,
            self.container,
            self.prefix,
            ulid::Ulid::new()
        )
    }

    /// Whether blob reference `blob` lives where this placement writes.
    pub fn holds(&self, blob: &str) -> bool {
        BlobRef::parse(blob)
            .is_some_and(|r| r.backend == self.backend && r.container == self.container)
    }
}

/// A parsed blob reference `<backend>/<container>/<key>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobRef<'a> {
    pub backend: &'a str,
    pub container: &'a str,
    pub key: &'a str,
}

impl<'a> BlobRef<'a> {
    pub fn parse(s: &'a str) -> Option<Self> {
        let (backend, rest) = s.split_once('/')?;
        let (container, key) = rest.split_once('/')?;
        (!backend.is_empty() && !container.is_empty() && !key.is_empty()).then_some(Self {
            backend,
            container,
            key,
        })
    }
}

/// Names a backend kind for humans (health output, logs).
pub fn kind_name(kind: &BackendKind) -> &'static str {
    match kind {
        BackendKind::Local { .. } => "local",
        BackendKind::S3 { .. } => "s3",
        BackendKind::Azure { .. } => "azure",
        BackendKind::Gcs { .. } => "gcs",
    }
}

struct Named {
    backend: Arc<dyn Backend>,
    config: BackendConfig,
}

/// The configured backends by name. Every blob operation of the gateway goes through here: it
/// resolves a blob reference to its backend, bounds each idempotent call with a timeout and a
/// few retries with backoff, and reports per-backend health.
pub struct Backends {
    named: BTreeMap<String, Named>,
}

/// The health of one backend as the admin endpoint reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Health {
    pub name: String,
    pub kind: &'static str,
    pub container: String,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Backends {
    /// Opens every configured backend. Remote clients are built without contacting the
    /// services, so a backend that is down at start-up does not stop the gateway (its tenants get
    /// 503s until it returns, and health reports it).
    pub async fn open(configs: &[BackendConfig], fsync: bool) -> Result<Self, BackendError> {
        let mut named = BTreeMap::new();
        for c in configs {
            let backend: Arc<dyn Backend> = match &c.kind {
                BackendKind::Local { path, .. } => {
                    Arc::new(local::LocalBackend::open(path, fsync).await?)
                }
                BackendKind::S3 { .. } => Arc::new(s3::S3Backend::new(c).await?),
                BackendKind::Azure { .. } => Arc::new(azure::AzureBackend::new(c)?),
                BackendKind::Gcs { .. } => Arc::new(gcs::GcsBackend::new(c).await?),
            };
            named.insert(
                c.name.clone(),
                Named {
                    backend,
                    config: c.clone(),
                },
            );
        }
        Ok(Self { named })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.named.contains_key(name)
    }

    /// The backend's own default container: where a bucket placed on it by a
    /// LocationConstraint writes.
    pub fn default_container(&self, name: &str) -> Option<&str> {
        self.named.get(name).map(|n| n.config.container.as_str())
    }

    fn resolve<'a>(&self, blob: &'a str) -> Result<(&Named, BlobRef<'a>), BackendError> {
        let r = BlobRef::parse(blob).ok_or_else(|| BackendError::NotFound(blob.to_string()))?;
        let n = self
            .named
            .get(r.backend)
            .ok_or_else(|| BackendError::UnknownBackend(r.backend.to_string()))?;
        Ok((n, r))
    }

    /// Writes a new blob. Not retried here: the body is a one-shot stream. Backends retry what
    /// they buffered themselves (S3 parts, Azure blocks).
    pub async fn put(
        &self,
        blob: &str,
        body: ByteStream,
        len: Option<u64>,
    ) -> Result<Written, BackendError> {
        let (n, r) = self.resolve(blob)?;
        n.backend.put(r.container, r.key, body, len).await
    }

    pub async fn put_unhashed(
        &self,
        blob: &str,
        body: ByteStream,
        len: Option<u64>,
    ) -> Result<Written, BackendError> {
        let (n, r) = self.resolve(blob)?;
        n.backend.put_unhashed(r.container, r.key, body, len).await
    }

    pub fn reports_md5(&self, blob: &str, len: Option<u64>) -> bool {
        self.resolve(blob)
            .is_ok_and(|(n, _)| n.backend.reports_md5(len))
    }

    /// Opens a ranged read; the call that opens it is bounded and retried, the stream is not.
    /// Remote bodies are relayed in batches (`backend::batch`).
    pub async fn get(&self, blob: &str, range: Range<u64>) -> Result<ByteStream, BackendError> {
        if range.is_empty() {
            return Ok(Box::pin(futures::stream::empty()));
        }
        let (n, r) = self.resolve(blob)?;
        let body = retry(n, || n.backend.get(r.container, r.key, range.clone())).await?;
        Ok(batch::batched(
            body,
            range.end - range.start,
            n.config.read_batch,
        ))
    }

    pub async fn delete(&self, blob: &str) -> Result<(), BackendError> {
        let (n, r) = self.resolve(blob)?;
        retry(n, || n.backend.delete(r.container, r.key)).await
    }

    /// Lists blob keys under `prefix` of `container` on backend `name`, as references.
    pub async fn list(
        &self,
        name: &str,
        container: &str,
        prefix: &str,
    ) -> Result<Vec<(String, BlobInfo)>, BackendError> {
        let n = self
            .named
            .get(name)
            .ok_or_else(|| BackendError::UnknownBackend(name.to_string()))?;
        let found = retry(n, || n.backend.list(container, prefix)).await?;
        Ok(found
            .into_iter()
            .map(|b| (format!("{name}/{container}/{}", b.key), b))
            .collect())
    }

    pub async fn recover(&self) -> Result<usize, BackendError> {
        let mut total = 0;
        for n in self.named.values() {
            total += n.backend.recover().await?;
        }
        Ok(total)
    }

    /// Probes every backend's default container, concurrently, each bounded by its timeout.
    pub async fn health(&self) -> Vec<Health> {
        let probes = self.named.iter().map(|(name, n)| async move {
            let r = tokio::time::timeout(n.config.timeout, n.backend.probe(&n.config.container))
                .await
                .unwrap_or_else(|_| {
                    Err(BackendError::Unavailable {
                        backend: name.clone(),
                        cause: "health probe timed out".into(),
                    })
                });
            Health {
                name: name.clone(),
                kind: kind_name(&n.config.kind),
                container: n.config.container.clone(),
                ok: r.is_ok(),
                error: r.err().map(|e| e.to_string()),
            }
        });
        futures::future::join_all(probes).await
    }
}

/// Runs an idempotent backend call with the backend's timeout, retrying unavailable or
/// throttled answers with exponential backoff (100 ms, 200 ms, 400 ms, ...) unless the
/// backend's client already does.
async fn retry<T, F, Fut>(n: &Named, mut call: F) -> Result<T, BackendError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, BackendError>>,
{
    let config = &n.config;
    let retries = if n.backend.retries_itself() {
        0
    } else {
        config.retries
    };
    let mut delay = Duration::from_millis(100);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let r = match tokio::time::timeout(config.timeout, call()).await {
            Ok(r) => r,
            Err(_) => Err(BackendError::Unavailable {
                backend: config.name.clone(),
                cause: format!("no answer within {:?}", config.timeout),
            }),
        };
        match r {
            Err(e) if e.retryable() && attempt <= retries => {
                tracing::debug!(backend = %config.name, attempt, error = %e, "retrying");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            r => return r,
        }
    }
}

/// An error with its sources, for the span's `error` field (transport errors hide the cause,
/// such as "connection refused", in their sources).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// The first part of a body for the remote backends: up to `part` bytes, what was read beyond
/// them, and whether the body ended within them (then one single-request upload suffices).
/// The buffer starts small, so a small body does not cost a whole part of memory.
pub(crate) async fn first_part(
    body: &mut ByteStream,
    part: usize,
) -> Result<(bytes::BytesMut, Option<Bytes>, bool), BackendError> {
    let mut buf = bytes::BytesMut::with_capacity(part.min(1024 * 1024));
    let mut carry = None;
    let ended = fill(body, &mut buf, part, &mut carry).await?;
    Ok((buf, carry, ended))
}

/// Reads from `body` until `buf` holds `want` bytes or the stream ends; returns whether it ended.
/// The remote backends use it to cut a stream into parts without holding more than one part.
pub(crate) async fn fill(
    body: &mut ByteStream,
    buf: &mut bytes::BytesMut,
    want: usize,
    carry: &mut Option<Bytes>,
) -> Result<bool, BackendError> {
    use futures::StreamExt;
    loop {
        let chunk = match carry.take() {
            Some(c) => c,
            None => match body.next().await {
                Some(Ok(c)) => c,
                Some(Err(e)) => return Err(BackendError::Body(e)),
                None => return Ok(true),
            },
        };
        let room = want - buf.len();
        if chunk.len() > room {
            buf.extend_from_slice(&chunk[..room]);
            *carry = Some(chunk.slice(room..));
            return Ok(false);
        }
        buf.extend_from_slice(&chunk);
        if buf.len() == want {
            return Ok(false);
        }
    }
}
