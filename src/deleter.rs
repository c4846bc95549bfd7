//! The deleter: the one place where blobs freed by a commit (an overwrite, a delete, an abort, a
//! completion's unused parts, the sweeper's orphans) are deleted from their backend — and only
//! once the metadata that freed them is on disk.
//!
//! Why: with `storage.sync = false` a commit reaches disk on sled's own timer (or the next
//! flush), and with `sync = true` only at the flush after it. Deleting a freed blob before then
//! lets a crash bring back the record that still names it: a listed object without its bytes
//! (invariant 2). So freed blobs are queued here with a
//! [`FlushTicket`] taken after the commit that freed them, and the worker deletes a batch only
//! once a flush that covers every ticket in it has finished (the writer's own, with `sync`, or
//! one the worker runs).
//!
//! Deletes are best effort: a blob that cannot be deleted stays unreferenced, and the sweeper
//! finds it later.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::backend::Backends;
use crate::jobs::Reporter;
use crate::meta::{FlushTicket, Meta};

pub struct Deleter {
    tx: mpsc::UnboundedSender<(FlushTicket, Vec<String>)>,
    meta: Arc<Meta>,
}

impl Deleter {
    /// The deleter and its worker, for the runner (`jobs`); the worker ends when its stop token
    /// is cancelled, after deleting what was queued by then.
    pub fn new(meta: Arc<Meta>, backends: Arc<Backends>) -> (Arc<Self>, DeleterWorker) {
        let (tx, rx) = mpsc::unbounded_channel();
        let this = Arc::new(Self {
            tx,
            meta: meta.clone(),
        });
        (this, DeleterWorker { rx, meta, backends })
    }

    /// Queues blobs a commit freed; call after the commit returned.
    pub fn release(&self, blobs: Vec<String>) {
        if blobs.is_empty() {
            return;
        }
        // Taken now, after the commit: the flush this ticket waits for covers it. With
        // `sync = true` the writer's own flush usually does, and the deleter flushes nothing.
        let ticket = self.meta.flush_ticket();
        // A send fails only once the worker has stopped: the blobs stay for the sweeper.
        let _ = self.tx.send((ticket, blobs));
    }
}

/// The deleter's side of the queue, run by the worker runner.
pub struct DeleterWorker {
    rx: mpsc::UnboundedReceiver<(FlushTicket, Vec<String>)>,
    meta: Arc<Meta>,
    backends: Arc<Backends>,
}

impl DeleterWorker {
    /// One pass per batch: the flush that covers the batch's commits (unless one already
    /// did), then the deletes.
    pub async fn run(mut self, stop: CancellationToken, reporter: Reporter) {
        loop {
            let (mut ticket, mut batch) = tokio::select! {
                biased;
                Some(b) = self.rx.recv() => b,
                () = stop.cancelled() => match self.rx.try_recv() {
                    Ok(b) => b,
                    Err(_) => return,
                },
            };
            while let Ok((t, more)) = self.rx.try_recv() {
                ticket = ticket.max(t);
                batch.extend(more);
            }
            if let Err(e) = self.meta.persist(ticket).await {
                tracing::error!(error = %e, blobs = batch.len(), "metadata flush failed; released blobs are left to the sweeper");
                reporter.pass(Err(format!("metadata flush failed: {e}")));
                continue;
            }
            let n = batch.len();
            let mut failed = 0;
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
    }
}
