//! The `azure` backend: blobs as block blobs of an Azure Blob Storage container, through the
//! `object_store` crate's Azure client (which also speaks to Azurite). Account key or SAS token.
//!
//! A body that fits in one part is one Put Blob; a larger one is staged as blocks of
//! `part_size` (at most two in flight) and committed with one Put Block List, so memory stays
//! bounded whatever the length. Uncommitted blocks are never readable, and Azure discards them
//! on its own after a week.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use futures::{StreamExt, TryStreamExt};
use object_store::azure::{MicrosoftAzure, MicrosoftAzureBuilder};
use object_store::path::Path;
use object_store::{
    ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
    WriteMultipart,
};

use super::options::{AzureAuth, BackendConfig, BackendKind};
use super::{Backend, BackendError, BlobInfo, ByteStream, StdError, Written, fill, first_part};

/// Blocks staged concurrently for a large body.
const BLOCKS_IN_FLIGHT: usize = 2;

pub struct AzureBackend {
    config: BackendConfig,
    /// One client per container, built on first use.
    stores: Mutex<HashMap<String, Arc<MicrosoftAzure>>>,
}

impl AzureBackend {
    pub fn new(c: &BackendConfig) -> Result<Self, BackendError> {
        let b = Self {
            config: c.clone(),
            stores: Mutex::new(HashMap::new()),
        };
        // Build the default container's client now, so a bad setting fails at start-up.
        b.store(&c.container)?;
        Ok(b)
    }

    fn store(&self, container: &str) -> Result<Arc<MicrosoftAzure>, BackendError> {
        let mut stores = self.stores.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = stores.get(container) {
            return Ok(s.clone());
        }
        let BackendKind::Azure {
            account,
            endpoint,
            auth,
        } = &self.config.kind
        else {
            unreachable!("AzureBackend for another kind");
        };
        let mut b = MicrosoftAzureBuilder::new()
            .with_account(account)
            .with_container_name(container)
            // Reads are bounded by `Backends` (first byte) and must not be cut off mid-stream.
            .with_client_options(
                ClientOptions::new()
                    .with_allow_http(true)
                    .with_connect_timeout(self.config.timeout)
                    .with_timeout_disabled(),
            )
            .with_retry(RetryConfig {
                max_retries: self.config.retries as usize,
                retry_timeout: self.config.timeout,
                ..Default::default()
            });
        if let Some(e) = endpoint {
            b = b.with_endpoint(e.clone());
        }
        b = match auth {
            AzureAuth::AccessKey(k) => b.with_access_key(&k.0),
            AzureAuth::Sas(s) => b.with_sas_authorization(
                form_urlencoded::parse(s.0.as_bytes())
                    .into_owned()
                    .collect::<Vec<_>>(),
            ),
        };
        let store = Arc::new(b.build().map_err(|e| BackendError::Failed {
            backend: self.config.name.clone(),
            cause: e.to_string(),
        })?);
        stores.insert(container.to_string(), store.clone());
        Ok(store)
    }

    fn classify(&self, e: object_store::Error) -> BackendError {
        let backend = self.config.name.clone();
        if let object_store::Error::NotFound { path, .. } = &e {
            return BackendError::NotFound(path.clone());
        }
        let cause = e.to_string();
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = source {
            if let Some(h) = s.downcast_ref::<object_store::client::HttpError>() {
                use object_store::client::HttpErrorKind as K;
                return match h.kind() {
                    K::Connect | K::Request | K::Timeout | K::Interrupted => {
                        BackendError::Unavailable { backend, cause }
                    }
                    _ => BackendError::Failed { backend, cause },
                };
            }
            source = s.source();
        }
        // Status answers carry their code only in the message (the error type is private).
        let status = cause
            .split_once("status code: ")
            .and_then(|(_, rest)| rest.get(..3))
            .and_then(|s| s.parse::<u16>().ok());
        match status {
            Some(429 | 503) => BackendError::Throttled { backend, cause },
            Some(s) if s >= 500 => BackendError::Unavailable { backend, cause },
            _ => BackendError::Failed { backend, cause },
        }
    }
}

#[async_trait::async_trait]
impl Backend for AzureBackend {
    fn retries_itself(&self) -> bool {
        true
    }

    async fn put(
        &self,
        container: &str,
        key: &str,
        mut body: ByteStream,
        _len: Option<u64>,
    ) -> Result<Written, BackendError> {
        let store = self.store(container)?;
        let path = Path::from(key);
        let part = self.config.part_size;
        let (buf, mut carry, ended) = first_part(&mut body, part).await?;
        let mut total = buf.len() as u64;
        if ended {
            store
                .put(&path, PutPayload::from(buf.freeze()))
                .await
                .map_err(|e| self.classify(e))?;
            return Ok(Written::len(total));
        }
        let upload = store
            .put_multipart(&path)
            .await
            .map_err(|e| self.classify(e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, part);
        writer.put(buf.freeze());
        loop {
            let mut buf = BytesMut::with_capacity(part);
            let ended = match fill(&mut body, &mut buf, part, &mut carry).await {
                Ok(e) => e,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(e);
                }
            };
            total += buf.len() as u64;
            if let Err(e) = writer.wait_for_capacity(BLOCKS_IN_FLIGHT).await {
                return Err(self.classify(e));
            }
            writer.put(buf.freeze());
            if ended {
                break;
            }
        }
        writer.finish().await.map_err(|e| self.classify(e))?;
        Ok(Written::len(total))
    }

    async fn get(
        &self,
        container: &str,
        key: &str,
        range: Range<u64>,
    ) -> Result<ByteStream, BackendError> {
        let store = self.store(container)?;
        let r = store
            .get_opts(
                &Path::from(key),
                GetOptions {
                    range: Some(GetRange::Bounded(range)),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| self.classify(e))?;
        Ok(Box::pin(
            r.into_stream().map_err(|e| Box::new(e) as StdError),
        ))
    }

    async fn delete(&self, container: &str, key: &str) -> Result<(), BackendError> {
        let store = self.store(container)?;
        match store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.classify(e)),
        }
    }

    async fn list(&self, container: &str, prefix: &str) -> Result<Vec<BlobInfo>, BackendError> {
        let store = self.store(container)?;
        // object_store lists by path segments: list the prefix's directory, then filter.
        let dir = prefix.rsplit_once('/').map(|(d, _)| Path::from(d));
        let mut items = store.list(dir.as_ref());
        let now = crate::meta::now_ms();
        let mut out = Vec::new();
        while let Some(m) = items.next().await {
            let m = m.map_err(|e| self.classify(e))?;
            let key = m.location.to_string();
            if key.starts_with(prefix) {
                let age_ms = (now - m.last_modified.timestamp_millis()).max(0) as u64;
                out.push(BlobInfo {
                    key,
                    age: std::time::Duration::from_millis(age_ms),
                });
            }
        }
        Ok(out)
    }

    async fn probe(&self, container: &str) -> Result<(), BackendError> {
        let store = self.store(container)?;
        // A listing fails on a missing container, a wrong key and an unreachable service.
        store
            .list_with_delimiter(Some(&Path::from("portcullis-probe")))
            .await
            .map_err(|e| match self.classify(e) {
                BackendError::NotFound(p) => BackendError::Failed {
                    backend: self.config.name.clone(),
                    cause: format!("container {container} not found ({p})"),
                },
                e => e,
            })?;
        Ok(())
    }
}
