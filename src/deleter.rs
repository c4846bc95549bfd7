//! The deleter: the one place where blobs freed by a commit (an overwrite, a delete, an abort, a
//! completion's unused parts, the sweeper's orphans) are deleted from their backend — and only
//! once the metadata that freed them is on disk.
//!
//! Why: with `storage.sync = false` a commit reaches disk on sled's own timer (or the next
//! flush), and with `sync = true` only at the flush after it. Deleting a freed blob before then
//! lets a crash bring back the record that still names it: a listed object without its bytes
//! (invariant 2). So freed blobs are queued here, and the worker flushes the metadata once per
//! batch — a flush started after a blob was queued covers the commit that freed it, since that
//! commit returned before the blob was queued — and deletes the batch after that flush.
//!
//! Deletes are best effort: a blob that cannot be deleted stays unreferenced, and the sweeper
//! finds it later.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::backend::Backends;
use crate::jobs::Reporter;
use crate::meta::Meta;

pub struct Deleter {
    tx: mpsc::UnboundedSender<Vec<String>>,
    /// Blobs queued and not yet deleted (or given up).
    queued: AtomicUsize,
    idle: Notify,
}

impl Deleter {
    /// The deleter and its worker, for the runner (`jobs`); the worker ends when its stop token
    /// is cancelled, after deleting what was queued by then.
    pub fn new(meta: Arc<Meta>, backends: Arc<Backends>) -> (Arc<Self>, DeleterWorker) {
        let (tx, rx) = mpsc::unbounded_channel();
        let this = Arc::new(Self {
            tx,
            queued: AtomicUsize::new(0),
            idle: Notify::new(),
        });
        let worker = DeleterWorker {
            deleter: this.clone(),
            rx,
            meta,
            backends,
        };
        (this, worker)
    }

    /// Queues blobs a commit freed; call after the commit returned.
    pub fn release(&self, blobs: Vec<String>) {
        if blobs.is_empty() {
            return;
        }
        self.queued.fetch_add(blobs.len(), Ordering::SeqCst);
        if self.tx.send(blobs).is_err() {
            // The worker is gone (shutting down): the blobs stay for the sweeper.
            self.queued.store(0, Ordering::SeqCst);
        }
    }

    /// Waits until every blob queued so far is deleted (or given up).
    pub async fn drain(&self) {
        loop {
            let notified = self.idle.notified();
            if self.queued.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// The deleter's side of the queue, run by the worker runner.
pub struct DeleterWorker {
    deleter: Arc<Deleter>,
    rx: mpsc::UnboundedReceiver<Vec<String>>,
    meta: Arc<Meta>,
    backends: Arc<Backends>,
}

impl DeleterWorker {
    /// One pass per batch: flush the metadata, then delete the batch.
    pub async fn run(mut self, stop: CancellationToken, reporter: Reporter) {
        loop {
            let mut batch = tokio::select! {
                biased;
                Some(b) = self.rx.recv() => b,
                () = stop.cancelled() => match self.rx.try_recv() {
                    Ok(b) => b,
                    Err(_) => return,
                },
            };
            while let Ok(more) = self.rx.try_recv() {
                batch.extend(more);
            }
            let n = batch.len();
            let mut failed = 0;
            match self.meta.persist().await {
                Ok(()) => {
                    for blob in batch {
                        if let Err(e) = self.backends.delete(&blob).await {
                            failed += 1;
                            tracing::warn!(%blob, error = %e, "could not delete a released blob");
                        }
                    }
                    reporter.pass(if failed == 0 {
                        Ok(())
                    } else {
                        Err(format!(
                            "{failed} of {n} blobs could not be deleted; the sweeper will retry"
                        ))
                    });
                }
                Err(e) => {
                    tracing::error!(error = %e, blobs = n, "metadata flush failed; released blobs are left to the sweeper");
                    reporter.pass(Err(format!("metadata flush failed: {e}")));
                }
            }
            self.deleter.queued.fetch_sub(n, Ordering::SeqCst);
            self.deleter.idle.notify_waiters();
        }
    }
}
