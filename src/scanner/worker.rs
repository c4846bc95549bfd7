//! The scan worker: re-checks stored objects without a client waiting.
//!
//! - Objects stored unscanned (a bucket with `on_scanner_unavailable = "store-unscanned"`) are
//!   retried every `retry_interval` until a scan settles them.
//! - A rescan job (admin API) re-checks every scanned object of the gateway, a tenant or a
//!   bucket, e.g. after a signature update, and reports its progress. Objects found infected are
//!   marked so and become unreadable; the event is logged like a refused upload.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::backend::Backends;
use crate::meta::{self, Change, Commit, Cursor, Meta, MetaError, ScanStatus};
use crate::pipeline::policy::{Rules, rules};
use crate::pipeline::{self, scan_info};
use crate::scanner::{Scanner, Verdict};

/// The progress of one rescan job, as the admin API reports it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Progress {
    pub id: String,
    pub tenant: Option<String>,
    pub bucket: Option<String>,
    pub started_ms: i64,
    pub finished_ms: Option<i64>,
    /// Objects looked at so far.
    pub seen: u64,
    pub clean: u64,
    pub infected: u64,
    /// No verdict (scanner unavailable, object too large to scan): the record is unchanged.
    pub failed: u64,
    /// In buckets that do not scan, or replaced while being scanned.
    pub skipped: u64,
}

/// What one scan of a stored object did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Clean,
    Infected,
    Failed,
    Skipped,
}

#[derive(Clone)]
pub struct Worker {
    meta: Arc<Meta>,
    backends: Arc<Backends>,
    scanner: Arc<Scanner>,
    rules: Rules,
    jobs: Arc<Mutex<BTreeMap<String, Progress>>>,
}

impl Worker {
    pub fn new(
        meta: Arc<Meta>,
        backends: Arc<Backends>,
        scanner: Arc<Scanner>,
        rules: Rules,
    ) -> Self {
        Self {
            meta,
            backends,
            scanner,
            rules,
            jobs: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    /// Scans the current version of one object and stores the verdict on it.
    pub async fn scan_object(
        &self,
        tenant: &str,
        bucket: &str,
        key: &str,
    ) -> Result<Outcome, MetaError> {
        let Some(o) = self.meta.object(tenant, bucket, key).await? else {
            return Ok(Outcome::Skipped);
        };
        let policy = match rules(&self.meta, &self.rules, tenant, bucket).await {
            Ok((p, _, _)) => p,
            Err(e) => {
                tracing::warn!(%tenant, %bucket, error = %e, "bucket policy unusable; not scanned");
                return Ok(Outcome::Failed);
            }
        };
        if !policy.scan {
            return Ok(Outcome::Skipped);
        }
        if o.size > self.scanner.config().max_stream {
            return Ok(Outcome::Failed);
        }
        let segments: Vec<meta::Segment> = o.segments().cloned().collect();
        let stream = pipeline::read(&self.backends, &segments, 0..o.size);
        let verdict = self.scanner.scan(stream).await;
        let (info, outcome) = match verdict {
            Ok(Verdict::Clean) => (
                scan_info(ScanStatus::Clean, None, self.scanner.engine().await),
                Outcome::Clean,
            ),
            Ok(Verdict::Infected(sig)) => {
                tracing::warn!(
                    target: "portcullis::security",
                    %tenant, %bucket, %key, signature = %sig,
                    "virus detected in a stored object; reads are refused from now on"
                );
                (
                    scan_info(ScanStatus::Infected, Some(sig), self.scanner.engine().await),
                    Outcome::Infected,
                )
            }
            Ok(v) => {
                tracing::debug!(%tenant, %bucket, %key, verdict = ?v, "no verdict");
                return Ok(Outcome::Failed);
            }
            Err(e) => {
                tracing::debug!(%tenant, %bucket, %key, error = %e, "no verdict");
                return Ok(Outcome::Failed);
            }
        };
        let verdict = Commit::new(Change::SetScan {
            tenant: tenant.to_string(),
            bucket: bucket.to_string(),
            key: key.to_string(),
            etag: o.etag.clone(),
            last_modified_ms: o.last_modified_ms,
            scan: info,
        });
        match self.meta.commit(&verdict).await {
            Ok(()) => Ok(outcome),
            // Replaced meanwhile: the new version has its own verdict.
            Err(MetaError::Conflict) => Ok(Outcome::Skipped),
            Err(e) => Err(e),
        }
    }

    /// Retries the objects stored unscanned until the scanner answers.
    pub async fn run(self, stop: CancellationToken, reporter: crate::jobs::Reporter) {
        let every = self.scanner.config().retry_interval;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            match self.retry_pending().await {
                Ok(_) => reporter.pass(Ok(())),
                Err(e) => {
                    tracing::error!(error = %e, "retrying unscanned objects failed");
                    reporter.pass(Err(e.to_string()));
                }
            }
        }
    }

    /// One pass over the objects waiting for a scan; returns how many were settled.
    pub async fn retry_pending(&self) -> Result<usize, MetaError> {
        let waiting = self.meta.pending_scans(1000).await?;
        if waiting.is_empty() || self.scanner.ping().await.is_err() {
            return Ok(0);
        }
        let mut settled = 0;
        for (tenant, bucket, key) in waiting {
            if matches!(
                self.scan_object(&tenant, &bucket, &key).await?,
                Outcome::Clean | Outcome::Infected
            ) {
                settled += 1;
            }
        }
        Ok(settled)
    }

    /// Starts a rescan of everything (or one tenant, or one bucket) in the background.
    pub fn start_rescan(&self, tenant: Option<String>, bucket: Option<String>) -> Progress {
        let p = Progress {
            id: ulid::Ulid::new().to_string(),
            tenant,
            bucket,
            started_ms: meta::now_ms(),
            ..Default::default()
        };
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(p.id.clone(), p.clone());
        let me = self.clone();
        let job = p.clone();
        tokio::spawn(async move {
            if let Err(e) = me.rescan(&job).await {
                tracing::error!(job = %job.id, error = %e, "rescan failed");
            }
            me.update(&job.id, |p| p.finished_ms = Some(meta::now_ms()));
        });
        p
    }

    pub fn jobs(&self) -> Vec<Progress> {
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    pub fn job(&self, id: &str) -> Option<Progress> {
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut Progress)) {
        if let Some(p) = self
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(id)
        {
            f(p);
        }
    }

    async fn rescan(&self, job: &Progress) -> Result<(), MetaError> {
        let tenants = match &job.tenant {
            Some(t) => vec![t.clone()],
            None => self
                .meta
                .tenants()
                .await?
                .into_iter()
                .map(|t| t.id)
                .collect(),
        };
        for t in tenants {
            let buckets = match &job.bucket {
                Some(b) => vec![b.clone()],
                None => self
                    .meta
                    .buckets(&t)
                    .await?
                    .into_iter()
                    .map(|b| b.name)
                    .collect(),
            };
            for b in buckets {
                // Keys are read a page at a time: the scan itself must not hold the iterator.
                let mut after = Cursor::Start;
                loop {
                    let page: Vec<(String, ScanStatus)> = self
                        .meta
                        .list_objects(&t, &b, "", &after, 100)
                        .await?
                        .into_iter()
                        .map(|o| (o.key, o.object.scan_status()))
                        .collect();
                    let Some((last, _)) = page.last() else { break };
                    after = Cursor::After(last.clone());
                    for (key, status) in page {
                        // An infected object is already unreadable; a second verdict adds nothing.
                        let outcome = if status == ScanStatus::Infected {
                            Outcome::Skipped
                        } else {
                            self.scan_object(&t, &b, &key).await?
                        };
                        self.update(&job.id, |p| {
                            p.seen += 1;
                            match outcome {
                                Outcome::Clean => p.clean += 1,
                                Outcome::Infected => p.infected += 1,
                                Outcome::Failed => p.failed += 1,
                                Outcome::Skipped => p.skipped += 1,
                            }
                        });
                    }
                }
            }
        }
        Ok(())
    }
}
