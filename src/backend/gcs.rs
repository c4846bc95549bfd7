//! The `gcs` backend: blobs as objects of a Google Cloud Storage bucket, through the JSON API on
//! reqwest (no maintained crate speaks the JSON API and works against the emulator; the XML API
//! clients do not work with it). Service-account JSON credentials through `gcp_auth` for real
//! GCS; no authentication when only an emulator `endpoint` is set.
//!
//! A body that fits in one part is a single `uploadType=media` request; a larger one is a
//! resumable upload sent in chunks of `part_size` (a multiple of 256 KiB, as GCS requires),
//! holding at most two chunks in memory. An unfinished resumable session is cancelled, and GCS
//! expires it after a week regardless; it is never readable.

use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::TryStreamExt;
use reqwest::{Method, RequestBuilder, Response, StatusCode};

use super::options::{BackendConfig, BackendKind};
use super::{Backend, BackendError, BlobInfo, ByteStream, StdError, Written, fill, first_part};

const SCOPES: &[&str] = &["https://www.googleapis.com/auth/devstorage.read_write"];

pub struct GcsBackend {
    name: String,
    base: String,
    http: reqwest::Client,
    auth: Option<Arc<dyn gcp_auth::TokenProvider>>,
    part_size: usize,
}

/// Object names are always our own `prefix/tenant/ULID` keys (letters, digits, `-`, `_`, `/`),
/// so escaping `/` is all a path segment or query value needs.
fn enc(name: &str) -> String {
    name.replace('/', "%2F")
}

impl GcsBackend {
    pub async fn new(c: &BackendConfig) -> Result<Self, BackendError> {
        let BackendKind::Gcs {
            endpoint,
            credentials_file,
        } = &c.kind
        else {
            unreachable!("GcsBackend for another kind");
        };
        let failed = |cause: String| BackendError::Failed {
            backend: c.name.clone(),
            cause,
        };
        let auth = match credentials_file {
            Some(path) => {
                let sa = gcp_auth::CustomServiceAccount::from_file(path)
                    .map_err(|e| failed(format!("reading {}: {e}", path.display())))?;
                Some(Arc::new(sa) as Arc<dyn gcp_auth::TokenProvider>)
            }
            None => None,
        };
        let mut http = reqwest::Client::builder().connect_timeout(c.timeout);
        if auth.is_none() {
            // The emulator (an HTTP/1.0 Python server) closes connections that reqwest would
            // otherwise try to reuse.
            http = http.pool_max_idle_per_host(0);
        }
        let http = http.build().map_err(|e| failed(e.to_string()))?;
        Ok(Self {
            name: c.name.clone(),
            base: endpoint
                .clone()
                .unwrap_or_else(|| "https://storage.googleapis.com".into())
                .trim_end_matches('/')
                .to_string(),
            http,
            auth,
            part_size: c.part_size,
        })
    }

    async fn request(&self, method: Method, url: &str) -> Result<RequestBuilder, BackendError> {
        let req = self.http.request(method, url);
        match &self.auth {
            None => Ok(req),
            Some(a) => {
                let token = a
                    .token(SCOPES)
                    .await
                    .map_err(|e| BackendError::Unavailable {
                        backend: self.name.clone(),
                        cause: format!("getting an access token: {e}"),
                    })?;
                Ok(req.bearer_auth(token.as_str()))
            }
        }
    }

    /// Sends a request and turns transport failures and error statuses into backend errors.
    async fn send(&self, req: RequestBuilder) -> Result<Response, BackendError> {
        let resp = req.send().await.map_err(|e| BackendError::Unavailable {
            backend: self.name.clone(),
            cause: super::chain(&e),
        })?;
        let status = resp.status();
        if status.is_success() || status == StatusCode::PERMANENT_REDIRECT {
            return Ok(resp);
        }
        let body: String = resp
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(300)
            .collect();
        let (backend, cause) = (self.name.clone(), format!("{status}: {body}"));
        Err(match status.as_u16() {
            404 => BackendError::NotFound(cause),
            429 => BackendError::Throttled { backend, cause },
            408 | 500.. => BackendError::Unavailable { backend, cause },
            _ => BackendError::Failed { backend, cause },
        })
    }

    /// POSTs to the upload endpoint: a whole small object (`media`) or a resumable session.
    async fn upload(
        &self,
        bucket: &str,
        key: &str,
        kind: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<Response, BackendError> {
        let url = format!(
            "{}/upload/storage/v1/b/{bucket}/o?uploadType={kind}&name={}",
            self.base,
            enc(key)
        );
        self.send(
            self.request(Method::POST, &url)
                .await?
                .header("content-type", content_type)
                .body(body),
        )
        .await
    }

    fn object_url(&self, bucket: &str, key: &str) -> String {
        format!("{}/storage/v1/b/{bucket}/o/{}", self.base, enc(key))
    }

    async fn resumable(
        &self,
        bucket: &str,
        key: &str,
        mut body: ByteStream,
        first: Bytes,
        mut carry: Option<Bytes>,
    ) -> Result<Written, BackendError> {
        let resp = self
            .upload(
                bucket,
                key,
                "resumable",
                "application/json",
                Bytes::from("{}"),
            )
            .await?;
        let session = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| BackendError::Failed {
                backend: self.name.clone(),
                cause: "resumable upload answered without a session location".into(),
            })?
            .to_string();
        let mut cancel = CancelOnDrop {
            http: self.http.clone(),
            session: Some(session.clone()),
        };
        let mut offset = 0u64;
        let mut current = first;
        loop {
            // Look one chunk ahead: only the last chunk may carry the total length.
            let mut next = BytesMut::with_capacity(self.part_size);
            let ended = fill(&mut body, &mut next, self.part_size, &mut carry).await?;
            let last = ended && next.is_empty();
            let end = offset + current.len() as u64;
            let range = if last && current.is_empty() {
                format!("bytes */{end}")
            } else if last {
                format!("bytes {offset}-{}/{end}", end - 1)
            } else {
                format!("bytes {offset}-{}/*", end - 1)
            };
            let resp = self
                .send(
                    self.request(Method::PUT, &session)
                        .await?
                        .header("content-range", range)
                        .body(current),
                )
                .await?;
            offset = end;
            if last {
                if !resp.status().is_success() {
                    return Err(BackendError::Failed {
                        backend: self.name.clone(),
                        cause: format!("last chunk answered {}", resp.status()),
                    });
                }
                cancel.session = None;
                return Ok(Written {
                    len: offset,
                    md5: md5_of(resp).await,
                });
            }
            current = next.freeze();
        }
    }
}

/// Cancels an unfinished resumable session in the background (an error, or a dropped request).
struct CancelOnDrop {
    http: reqwest::Client,
    session: Option<String>,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(url) = self.session.take() {
            let req = self.http.delete(url);
            tokio::spawn(async move {
                let _ = req.send().await;
            });
        }
    }
}

/// GCS computes the MD5 of every non-composite object and returns it (base64) as `md5Hash`.
async fn md5_of(resp: Response) -> Option<[u8; 16]> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Meta {
        md5_hash: Option<String>,
    }
    use base64::Engine as _;
    let m: Meta = resp.json().await.ok()?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(m.md5_hash?)
        .ok()?;
    raw.try_into().ok()
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Listing {
    #[serde(default)]
    items: Vec<Item>,
    next_page_token: Option<String>,
}

#[derive(serde::Deserialize)]
struct Item {
    name: String,
    updated: Option<String>,
}

#[async_trait::async_trait]
impl Backend for GcsBackend {
    fn reports_md5(&self, _len: Option<u64>) -> bool {
        true
    }

    async fn put(
        &self,
        bucket: &str,
        key: &str,
        mut body: ByteStream,
        _len: Option<u64>,
    ) -> Result<Written, BackendError> {
        let (buf, carry, ended) = first_part(&mut body, self.part_size).await?;
        // An empty body goes through a resumable session too: the emulator fails an empty
        // media upload, and real GCS accepts both.
        if !ended || buf.is_empty() {
            return self.resumable(bucket, key, body, buf.freeze(), carry).await;
        }
        let n = buf.len() as u64;
        let resp = self
            .upload(
                bucket,
                key,
                "media",
                "application/octet-stream",
                buf.freeze(),
            )
            .await?;
        Ok(Written {
            len: n,
            md5: md5_of(resp).await,
        })
    }

    async fn get(
        &self,
        bucket: &str,
        key: &str,
        range: Range<u64>,
    ) -> Result<ByteStream, BackendError> {
        let url = format!("{}?alt=media", self.object_url(bucket, key));
        let resp = self
            .send(
                self.request(Method::GET, &url)
                    .await?
                    .header("range", format!("bytes={}-{}", range.start, range.end - 1)),
            )
            .await?;
        // A server that ignores Range would hand back the whole blob: refuse rather than serve
        // the wrong bytes.
        if resp.status() != StatusCode::PARTIAL_CONTENT
            && resp
                .content_length()
                .is_some_and(|n| n != range.end - range.start)
        {
            return Err(BackendError::Failed {
                backend: self.name.clone(),
                cause: format!("range request answered {} without the range", resp.status()),
            });
        }
        Ok(Box::pin(
            resp.bytes_stream().map_err(|e| Box::new(e) as StdError),
        ))
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<(), BackendError> {
        let req = self
            .request(Method::DELETE, &self.object_url(bucket, key))
            .await?;
        match self.send(req).await {
            Ok(_) | Err(BackendError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn list(&self, bucket: &str, prefix: &str) -> Result<Vec<BlobInfo>, BackendError> {
        let now = time::OffsetDateTime::now_utc();
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut url = format!(
                "{}/storage/v1/b/{bucket}/o?prefix={}",
                self.base,
                enc(prefix)
            );
            if let Some(t) = &token {
                url.push_str("&pageToken=");
                url.push_str(&form_urlencoded::byte_serialize(t.as_bytes()).collect::<String>());
            }
            let resp = self.send(self.request(Method::GET, &url).await?).await?;
            let page: Listing = resp.json().await.map_err(|e| BackendError::Failed {
                backend: self.name.clone(),
                cause: format!("listing: {e}"),
            })?;
            for i in page.items {
                let updated = i.updated.as_deref().and_then(|u| {
                    time::OffsetDateTime::parse(u, &time::format_description::well_known::Rfc3339)
                        .ok()
                });
                let age = updated
                    .map(|u| (now - u).unsigned_abs())
                    .unwrap_or_default();
                out.push(BlobInfo { key: i.name, age });
            }
            match page.next_page_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => return Ok(out),
            }
        }
    }

    async fn probe(&self, bucket: &str) -> Result<(), BackendError> {
        let url = format!("{}/storage/v1/b/{bucket}", self.base);
        match self.send(self.request(Method::GET, &url).await?).await {
            Ok(_) => Ok(()),
            Err(BackendError::NotFound(_)) => Err(BackendError::Failed {
                backend: self.name.clone(),
                cause: format!("bucket {bucket} not found"),
            }),
            Err(e) => Err(e),
        }
    }
}
