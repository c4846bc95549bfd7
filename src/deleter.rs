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
use crate::meta::Meta;

pub struct Deleter {
    tx: mpsc::UnboundedSender<Vec<String>>,
    /// Blobs queued and not yet deleted (or given up).
    queued: AtomicUsize,
    idle: Notify,
}

impl Deleter {
    /// The deleter and its worker, to be spawned; the worker ends when `stop` is cancelled,
    /// after deleting what was queued by then.
    pub fn new(
        meta: Arc<Meta>,
        backends: Arc<Backends>,
        stop: CancellationToken,
    ) -> (Arc<Self>, impl Future<Output = ()> + Send + 'static) {
        let (tx, rx) = mpsc::unbounded_channel();
        let this = Arc::new(Self {
            tx,
            queued: AtomicUsize::new(0),
            idle: Notify::new(),
        });
        let worker = this.clone().run(rx, meta, backends, stop);
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

    async fn run(
        self: Arc<Self>,
        mut rx: mpsc::UnboundedReceiver<Vec<String>>,
        meta: Arc<Meta>,
        backends: Arc<Backends>,
        stop: CancellationToken,
    ) {
        loop {
            let mut batch = tokio::select! {
                biased;
                Some(b) = rx.recv() => b,
                () = stop.cancelled() => match rx.try_recv() {
                    Ok(b) => b,
                    Err(_) => return,
                },
            };
            while let Ok(more) = rx.try_recv() {
                batch.extend(more);
            }
            let n = batch.len();
            match meta.persist().await {
                Ok(()) => {
                    for blob in batch {
                        if let Err(e) = backends.delete(&blob).await {
                            tracing::warn!(%blob, error = %e, "could not delete a released blob");
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, blobs = n, "metadata flush failed; released blobs are left to the sweeper");
                }
            }
            self.queued.fetch_sub(n, Ordering::SeqCst);
            self.idle.notify_waiters();
        }
    }
}
