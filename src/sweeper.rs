//! The sweeper: a background worker that removes what interrupted work left behind — blobs that
//! no committed record references (a crash between writing a blob and committing it, or a failed
//! delete), and multipart uploads abandoned for longer than the configured expiry.
//!
//! Listing the backend is fine here: the sweeper is never on the request path.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::backend::Backend;
use crate::config::SweeperConfig;
use crate::meta::{self, Meta};

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct SweepReport {
    pub blobs_seen: usize,
    pub orphans_deleted: usize,
    pub uploads_aborted: usize,
}

pub async fn sweep_once(
    meta: &Meta,
    backend: &Arc<dyn Backend>,
    cfg: &SweeperConfig,
) -> SweepReport {
    let mut report = SweepReport::default();
    let cutoff = meta::now_ms() - cfg.abandoned_upload.as_millis() as i64;
    match meta.stale_uploads(cutoff) {
        Ok(stale) => {
            for (tenant, bucket, u) in stale {
                match meta.abort_upload(&tenant, &bucket, &u.key, &u.upload_id) {
                    Ok(freed) => {
                        report.uploads_aborted += 1;
                        crate::pipeline::release(backend, freed);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, upload = %u.upload_id, "sweeper could not abort an upload")
                    }
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "sweeper could not scan uploads"),
    }
    let blobs = match backend.list().await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "sweeper could not list the backend");
            return report;
        }
    };
    report.blobs_seen = blobs.len();
    for b in blobs {
        if b.age < cfg.grace {
            continue;
        }
        match meta.blob_referenced(&b.key) {
            Ok(true) => {}
            Ok(false) => match backend.delete(&b.key).await {
                Ok(()) => report.orphans_deleted += 1,
                Err(e) => {
                    tracing::warn!(error = %e, blob = %b.key, "sweeper could not delete an orphan")
                }
            },
            Err(e) => tracing::warn!(error = %e, "sweeper could not read blob references"),
        }
    }
    report
}

/// Runs [`sweep_once`] every `cfg.interval` until `stop` is cancelled.
pub async fn run(
    meta: Arc<Meta>,
    backend: Arc<dyn Backend>,
    cfg: SweeperConfig,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(cfg.interval) => {}
        }
        let r = sweep_once(&meta, &backend, &cfg).await;
        if r.orphans_deleted > 0 || r.uploads_aborted > 0 {
            tracing::info!(
                orphans = r.orphans_deleted,
                uploads = r.uploads_aborted,
                "sweeper reclaimed space"
            );
        }
    }
}
