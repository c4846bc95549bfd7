//! The scan worker: re-checks stored objects without a client waiting.
//!
//! - Objects stored unscanned (a bucket with `on_scanner_unavailable = "store-unscanned"`) are
//!   retried every `retry_interval` until a scan settles them.
//! - A rescan job (admin API) re-checks every scanned object of the gateway, a tenant or a
//!   bucket, e.g. after a signature update, and reports its progress. Objects found infected are
//!   marked so and become unreadable; the event is logged like a refused upload.
//!
//! Both run on one node at a time: the retries under the `scan-retries` lease, each rescan job
//! under its own lease in the shared job record, which holds its progress and a cursor saved
//! after every object. Any node shows a job's progress; when the node running it dies, its lease
//! expires and another node resumes it from the cursor.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::backend::Backends;
use crate::cluster::Node;
use crate::meta::coord::{Coord, JobRecord};
use crate::meta::{self, Change, Commit, Cursor, Meta, MetaError, ScanStatus, Stamp};
use crate::pipeline::policy::{Rules, rules};
use crate::pipeline::{read, scan_info};
use crate::scanner::{Scanner, Verdict};

/// The progress of one rescan job, as the admin API reports it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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
    /// The node instance running it now (none once finished).
    #[serde(default)]
    pub node: Option<String>,
    /// Where it has got to: the last object done, as (tenant, bucket, key).
    #[serde(default)]
    pub cursor: Option<(String, String, String)>,
}

const RESCAN: &str = "rescan";

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
    node: Arc<Node>,
}

impl Worker {
    pub fn new(
        meta: Arc<Meta>,
        backends: Arc<Backends>,
        scanner: Arc<Scanner>,
        rules: Rules,
        node: Arc<Node>,
    ) -> Self {
        Self {
            meta,
            backends,
            scanner,
            rules,
            node,
        }
    }

    /// Scans the current version of one object and stores the verdict on it.
    pub async fn scan_object(
        &self,
        tenant: &str,
        bucket: &str,
        key: &str,
    ) -> Result<Outcome, MetaError> {
        let ask = read::Ask {
            reader: read::Reader::Scan,
            version_id: None,
            conditions: read::Conditions::default(),
            range: None,
            part_number: None,
        };
        let opened = match read::open(&self.meta, tenant, bucket, key, &ask).await {
            Ok(o) => o,
            // Gone meanwhile (the key or its bucket): nothing to scan.
            Err(read::ReadError::Meta(MetaError::NoSuchKey | MetaError::NoSuchBucket)) => {
                return Ok(Outcome::Skipped);
            }
            Err(read::ReadError::Meta(e)) => return Err(e),
            Err(e) => {
                tracing::warn!(%tenant, %bucket, error = %e, "not readable for a scan");
                return Ok(Outcome::Failed);
            }
        };
        let o = &opened.object;
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
        let verdict = self.scanner.scan(opened.body(&self.backends)).await;
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
        })
        .by(Stamp::worker("scan"));
        match self.meta.commit(&verdict).await {
            Ok(()) => Ok(outcome),
            // Replaced meanwhile: the new version has its own verdict.
            Err(MetaError::Conflict) => Ok(Outcome::Skipped),
            Err(e) => Err(e),
        }
    }

    /// Retries the objects stored unscanned until the scanner answers.
    pub async fn run(self, stop: CancellationToken, reporter: super::runner::Reporter) {
        let every = self.scanner.config().retry_interval;
        while super::runner::next_pass(&self.node, "scan-retries", every, &stop, &reporter).await {
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

    /// Records a rescan of everything (or one tenant, or one bucket); the `rescans` worker of
    /// some node runs it.
    pub async fn start_rescan(
        &self,
        tenant: Option<String>,
        bucket: Option<String>,
    ) -> Result<Progress, MetaError> {
        let p = Progress {
            id: ulid::Ulid::new().to_string(),
            tenant,
            bucket,
            started_ms: meta::now_ms(),
            ..Default::default()
        };
        let job = JobRecord {
            id: p.id.clone(),
            kind: RESCAN.into(),
            holder: None,
            expires_ms: 0,
            done: false,
            state: serde_json::to_value(&p).expect("progress serializes"),
        };
        self.save(job, false).await?;
        Ok(p)
    }

    async fn save(&self, job: JobRecord, claim: bool) -> Result<(), MetaError> {
        let ttl_ms = self.node.options().lease.as_millis() as i64;
        let save = Coord::SaveJob { job, claim, ttl_ms };
        self.meta.commit(&Commit::new(Change::Coord(save))).await
    }

    fn progress(job: &JobRecord) -> Progress {
        let mut p: Progress = serde_json::from_value(job.state.clone()).unwrap_or_default();
        p.node = if job.done { None } else { job.holder.clone() };
        p
    }

    pub async fn jobs(&self) -> Result<Vec<Progress>, MetaError> {
        Ok(self
            .meta
            .jobs(RESCAN)
            .await?
            .iter()
            .map(Self::progress)
            .collect())
    }

    pub async fn job(&self, id: &str) -> Result<Option<Progress>, MetaError> {
        Ok(self
            .meta
            .job(id)
            .await?
            .filter(|j| j.kind == RESCAN)
            .map(|j| Self::progress(&j)))
    }

    /// The `rescans` worker: takes every job that no live node runs, and runs it.
    pub async fn run_rescans(self, stop: CancellationToken, reporter: super::runner::Reporter) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(self.node.options().heartbeat) => {}
            }
            let jobs = match self.meta.jobs(RESCAN).await {
                Ok(j) => j,
                Err(e) => {
                    reporter.pass(Err(e.to_string()));
                    continue;
                }
            };
            let now = meta::now_ms();
            for job in jobs {
                if job.done || (job.holder.is_some() && job.expires_ms > now) {
                    continue;
                }
                let me = self.node.instance();
                let claim = JobRecord {
                    holder: Some(me.clone()),
                    ..job.clone()
                };
                match self.save(claim, true).await {
                    Ok(()) => {}
                    Err(MetaError::LeaseHeld(_)) => continue,
                    Err(e) => {
                        reporter.pass(Err(e.to_string()));
                        continue;
                    }
                }
                // The stored state, which a claim of an abandoned job keeps.
                let Ok(Some(job)) = self.meta.job(&job.id).await else {
                    continue;
                };
                let id = job.id.clone();
                tracing::info!(job = %id, "running a rescan");
                let r = tokio::select! {
                    () = stop.cancelled() => return,
                    r = self.rescan(job) => r,
                };
                match r {
                    Ok(()) => reporter.pass(Ok(())),
                    // Taken over (this node was too slow to renew): the other node finishes it.
                    Err(MetaError::LeaseHeld(_)) => {}
                    Err(e) => {
                        tracing::error!(job = %id, error = %e, "rescan failed");
                        reporter.pass(Err(e.to_string()));
                    }
                }
            }
        }
    }

    /// Runs a claimed job from its cursor, saving progress and cursor after every object
    /// (which renews the lease).
    async fn rescan(&self, mut job: JobRecord) -> Result<(), MetaError> {
        let mut p = Self::progress(&job);
        let resume = p.cursor.clone();
        let tenants = match &p.tenant {
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
            if resume.as_ref().is_some_and(|(rt, _, _)| t < *rt) {
                continue;
            }
            let buckets = match &p.bucket {
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
                let mut after = Cursor::Start;
                if let Some((rt, rb, rk)) = &resume
                    && *rt == t
                {
                    if b < *rb {
                        continue;
                    }
                    if b == *rb {
                        after = Cursor::After(rk.clone());
                    }
                }
                // Keys are read a page at a time: the scan itself must not hold the iterator.
                loop {
                    let page: Vec<(String, ScanStatus)> = self
                        .meta
                        .list_objects(&t, &b, "", &after, 100)
                        .await?
                        .into_iter()
                        .map(|l| l.decode().map(|o| (o.key, o.object.scan_status())))
                        .collect::<Result<_, _>>()?;
                    let Some((last, _)) = page.last() else { break };
                    after = Cursor::After(last.clone());
                    for (key, status) in page {
                        // An infected object is already unreadable; a second verdict adds nothing.
                        let outcome = if status == ScanStatus::Infected {
                            Outcome::Skipped
                        } else {
                            self.scan_object(&t, &b, &key).await?
                        };
                        p.seen += 1;
                        match outcome {
                            Outcome::Clean => p.clean += 1,
                            Outcome::Infected => p.infected += 1,
                            Outcome::Failed => p.failed += 1,
                            Outcome::Skipped => p.skipped += 1,
                        }
                        p.cursor = Some((t.clone(), b.clone(), key));
                        job.state = serde_json::to_value(&p).expect("progress serializes");
                        self.save(job.clone(), false).await?;
                    }
                }
            }
        }
        p.finished_ms = Some(meta::now_ms());
        job.state = serde_json::to_value(&p).expect("progress serializes");
        job.done = true;
        self.save(job, false).await
    }
}
