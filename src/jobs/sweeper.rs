//! The sweeper: a background worker that removes what interrupted work left behind — blobs that
//! no committed record references (a crash between writing a blob and committing it, or a failed
//! delete), multipart uploads abandoned for longer than the configured expiry, and the records
//! of completed uploads (kept to answer a repeated completion) after the same lifetime.
//!
//! Listing the backend is fine here: the sweeper is never on the request path.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::runner::Reporter;
use crate::backend::{Backends, Placement};
use crate::cluster::Node;
use crate::meta::{self, Change, Commit, Meta, Stamp};

#[derive(Debug, Clone)]
pub struct SweeperConfig {
    pub interval: Duration,
    /// An unreferenced blob younger than this may belong to a write about to commit.
    pub grace: Duration,
    /// Multipart uploads left open longer than this are aborted; completions older than this are
    /// forgotten.
    pub abandoned_upload: Duration,
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct SweepReport {
    pub blobs_seen: usize,
    /// Unreferenced blobs handed to the deleter.
    pub orphans_released: usize,
    pub uploads_aborted: usize,
    pub completions_forgotten: usize,
}

#[derive(Clone)]
pub struct Sweeper {
    meta: Arc<Meta>,
    backends: Arc<Backends>,
    cfg: SweeperConfig,
    default_placement: Placement,
}

impl Sweeper {
    pub fn new(
        meta: Arc<Meta>,
        backends: Arc<Backends>,
        cfg: SweeperConfig,
        default_placement: Placement,
    ) -> Self {
        Self {
            meta,
            backends,
            cfg,
            default_placement,
        }
    }

    /// The `(backend, container, prefix)` places any tenant or bucket writes to. Only these are
    /// listed, each under `<prefix><tenant>/`: a container shared with other data loses nothing
    /// that Portcullis did not write.
    async fn places(&self) -> Result<BTreeSet<(String, String, String)>, meta::MetaError> {
        let mut out = BTreeSet::new();
        for t in self.meta.tenants().await? {
            let tp = t
                .placement
                .clone()
                .unwrap_or_else(|| self.default_placement.clone());
            let mut add = |p: &Placement| {
                out.insert((
                    p.backend.clone(),
                    p.container.clone(),
                    format!("{}{}/", p.prefix, t.id),
                ));
            };
            add(&tp);
            for b in self.meta.buckets(&t.id).await? {
                if let Some(p) = &b.placement {
                    add(p);
                }
            }
        }
        Ok(out)
    }

    pub async fn sweep_once(&self) -> SweepReport {
        let (meta, cfg) = (&self.meta, &self.cfg);
        let mut report = SweepReport::default();
        let cutoff = meta::now_ms() - cfg.abandoned_upload.as_millis() as i64;
        match meta.stale_uploads(cutoff).await {
            Ok(stale) => {
                for (tenant, bucket, u) in stale {
                    let abort = Commit::new(Change::AbortUpload {
                        tenant,
                        bucket,
                        key: u.key.clone(),
                        upload_id: u.upload_id.clone(),
                    })
                    .by(Stamp::worker("sweeper"));
                    match meta.commit(&abort).await {
                        Ok(()) => report.uploads_aborted += 1,
                        Err(e) => {
                            tracing::warn!(error = %e, upload = %u.upload_id, "sweeper could not abort an upload")
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "sweeper could not scan uploads"),
        }
        match meta.stale_completions(cutoff).await {
            Ok(stale) => {
                for (tenant, bucket, c) in stale {
                    let forget = Commit::new(Change::ForgetCompletion {
                        tenant,
                        bucket,
                        key: c.key,
                        upload_id: c.upload_id,
                    })
                    .by(Stamp::worker("sweeper"));
                    match meta.commit(&forget).await {
                        Ok(()) => report.completions_forgotten += 1,
                        Err(e) => {
                            tracing::warn!(error = %e, "sweeper could not forget a completion")
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "sweeper could not scan completions"),
        }
        let places = match self.places().await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "sweeper could not read tenants");
                return report;
            }
        };
        for (backend, container, prefix) in places {
            let blobs = match self.backends.list(&backend, &container, &prefix).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(%backend, error = %e, "sweeper could not list a backend");
                    continue;
                }
            };
            report.blobs_seen += blobs.len();
            let mut orphans = Vec::new();
            for (blob, info) in blobs {
                // Only names Portcullis generates: `<prefix><tenant>/<ULID>`.
                let ours = info
                    .key
                    .strip_prefix(&prefix)
                    .is_some_and(|rest| ulid::Ulid::from_string(rest).is_ok());
                if !ours || info.age < cfg.grace {
                    continue;
                }
                match meta.blob_referenced(&blob).await {
                    Ok(true) => {}
                    Ok(false) => orphans.push(blob),
                    Err(e) => tracing::warn!(error = %e, "sweeper could not read blob references"),
                }
            }
            // Unreferenced in memory may be unreferenced only since a commit not yet on disk: the
            // deleter deletes them once a flush covers that (a blob stays unreferenced once it
            // is: copies refuse a source without references).
            report.orphans_released += orphans.len();
            meta.release(orphans);
        }
        report
    }

    /// Runs [`Sweeper::sweep_once`] every interval until `stop` is cancelled, on one node of
    /// the cluster at a time (the `sweeper` lease; a dead holder's lease expires and another
    /// node takes over).
    pub async fn run(self, node: Arc<Node>, stop: CancellationToken, reporter: Reporter) {
        while super::runner::next_pass(&node, "sweeper", self.cfg.interval, &stop, &reporter).await
        {
            let r = self.sweep_once().await;
            reporter.pass(Ok(()));
            if r.orphans_released > 0 || r.uploads_aborted > 0 || r.completions_forgotten > 0 {
                tracing::info!(
                    orphans = r.orphans_released,
                    uploads = r.uploads_aborted,
                    completions = r.completions_forgotten,
                    "sweeper reclaimed space"
                );
            }
        }
    }
}
