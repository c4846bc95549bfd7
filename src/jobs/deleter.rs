//! The deleter: the one place where blobs freed by a commit (an overwrite, a delete, an abort, a
//! completion's unused parts, the sweeper's orphans) are deleted from their backend — and only
//! once the metadata that freed them is on disk.
//!
//! Why: with `storage.sync = false` a commit reaches disk on sled's own timer (or the next
//! flush), and with `sync = true` only at the flush after it. Deleting a freed blob before then
//! lets a crash bring back the record that still names it: a listed object without its bytes
//! (invariant 2). So `Meta::commit` queues freed blobs with a
//! [`FlushTicket`](crate::meta::FlushTicket) taken after the commit that freed them, and the worker deletes a batch only
//! once a flush that covers every ticket in it has finished (the writer's own, with `sync`, or
//! one the worker runs).
//!
//! Deletes are best effort: a blob that cannot be deleted stays unreferenced, and the sweeper
//! finds it later.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::runner::Reporter;
use crate::backend::Backends;
use crate::meta::{Meta, Released};

/// The worker that drains meta's queue of released blobs, run by the runner (`jobs`).
pub struct DeleterWorker {
    rx: mpsc::UnboundedReceiver<Released>,
    meta: Arc<Meta>,
    backends: Arc<Backends>,
}

impl DeleterWorker {
    /// Takes meta's release queue (`None` if a deleter already has it). The worker ends when
    /// its stop token is cancelled, after deleting what was queued by then.
    pub fn new(meta: Arc<Meta>, backends: Arc<Backends>) -> Option<Self> {
        let rx = meta.take_release_queue()?;
        Some(Self { rx, meta, backends })
    }
}

impl DeleterWorker {
    /// One pass per batch: the flush that covers the batch's commits (unless one already
    /// did), then the deletes.
    pub async fn run(mut self, stop: CancellationToken, reporter: Reporter) {
        loop {
            let first = tokio::select! {
                biased;
                Some(b) = self.rx.recv() => b,
                () = stop.cancelled() => match self.rx.try_recv() {
                    Ok(b) => b,
                    Err(_) => return,
                },
            };
            let (mut ticket, mut batch, mut seq) = (first.ticket, first.blobs, first.seq);
            while let Ok(more) = self.rx.try_recv() {
                ticket = ticket.max(more.ticket);
                batch.extend(more.blobs);
                seq = seq.max(more.seq);
            }
            if let Err(e) = self.meta.persist(ticket).await {
                tracing::error!(error = %e, blobs = batch.len(), "metadata flush failed; released blobs are left to the sweeper");
                reporter.pass(Err(format!("metadata flush failed: {e}")));
                self.meta.deleted_up_to(seq);
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
            self.meta.deleted_up_to(seq);
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
