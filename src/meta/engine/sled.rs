//! The embedded engine: sled, zero setup. One sled tree per [`Tree`].
//!
//! Commits are applied one at a time by one committer thread: the checks are read and the writes
//! applied in one multi-tree sled transaction, so a check can never be overtaken (sled
//! transactions cannot range-scan, which [`Check::Range`] needs) and the transaction itself
//! never conflicts. Each takes microseconds: sled reads and writes are in memory; flushing
//! happens after, group-committed across writers.
//!
//! Neither commits nor scans run on the async workers: a listing that reads thousands of
//! records, or commits waiting their turn, would otherwise stall every other request scheduled
//! on that worker (two tenants' listings once made a third tenant's GET take 10 s). Scans run on
//! tokio's blocking pool; commits are queued to the committer thread (on the blocking pool,
//! 32 writers contending for a lock cost small PUTs a fifth of their rate). Point reads stay
//! inline: one lookup in sled's page cache, microseconds.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::{
    Batch, Check, Engine, EngineError, EngineResult, FlushTicket, Tree, Write, counters,
    counters_value,
};

pub struct SledEngine {
    db: sled::Db,
    trees: Arc<Trees>,
    /// The committer thread's queue; the thread ends when this is dropped.
    commits: std::sync::mpsc::Sender<(Batch, tokio::sync::oneshot::Sender<EngineResult<()>>)>,
    sync: bool,
    /// Flushes started and finished, numbered in start order (they run one at a time, under
    /// `flush_lock`): a flush numbered above the count of those started when a change was
    /// committed covers that change. See [`FlushTicket`].
    flushes_started: AtomicU64,
    flushes_done: AtomicU64,
    flush_lock: tokio::sync::Mutex<()>,
}

/// The trees, shared with the committer thread and the blocking pool's jobs.
struct Trees {
    /// Indexed by `Tree as usize`.
    trees: Vec<sled::Tree>,
}

impl Trees {
    fn tree(&self, tree: Tree) -> &sled::Tree {
        &self.trees[tree as usize]
    }

    fn holds(&self, check: &Check) -> EngineResult<bool> {
        Ok(match check {
            Check::Value { tree, key, expect } => {
                self.tree(*tree).get(key)?.as_deref() == expect.as_deref()
            }
            Check::Range {
                tree,
                prefix,
                expect,
            } => {
                let mut found = self.tree(*tree).scan_prefix(prefix);
                for (k, v) in expect {
                    match found.next().transpose()? {
                        Some((fk, fv)) if fk == k.as_slice() && fv == v.as_slice() => {}
                        _ => return Ok(false),
                    }
                }
                found.next().is_none()
            }
        })
    }

    fn scan(
        &self,
        tree: Tree,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
    ) -> EngineResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let from = if from < prefix { prefix } else { from };
        self.tree(tree)
            .range(from..)
            .take_while(|r| r.as_ref().map_or(true, |(k, _)| k.starts_with(prefix)))
            .take(limit)
            .map(|r| {
                let (k, v) = r?;
                Ok((k.to_vec(), v.to_vec()))
            })
            .collect()
    }

    /// Checks and applies `batch`; only the committer thread calls it, so commits never overlap.
    fn apply(&self, batch: &Batch) -> EngineResult<()> {
        for check in &batch.checks {
            if !self.holds(check)? {
                return Err(EngineError::Conflict);
            }
        }
        if batch.writes.is_empty() {
            return Ok(());
        }
        let trees: Vec<&sled::Tree> = self.trees.iter().collect();
        trees
            .as_slice()
            .transaction(|tx| {
                for w in &batch.writes {
                    match w {
                        Write::Put { tree, key, value } => {
                            tx[*tree as usize].insert(key.as_slice(), value.as_slice())?;
                        }
                        Write::Delete { tree, key } => {
                            tx[*tree as usize].remove(key.as_slice())?;
                        }
                        Write::Add { tree, key, delta } => {
                            let t = &tx[*tree as usize];
                            let [a, b] = counters(t.get(key.as_slice())?.as_deref());
                            let sum = [(a + delta[0]).max(0), (b + delta[1]).max(0)];
                            t.insert(key.as_slice(), counters_value(sum))?;
                        }
                    }
                }
                Ok::<_, ConflictableTransactionError<()>>(())
            })
            .map_err(|e| match e {
                TransactionError::Abort(()) => EngineError::Conflict,
                TransactionError::Storage(e) => e.into(),
            })
    }
}

/// Runs `f` on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> EngineResult<T> + Send + 'static,
) -> EngineResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| EngineError::Store(format!("engine task: {e}")))?
}

impl SledEngine {
    /// Opens (or creates) the store in `dir`, keeping at most `cache_bytes` of pages in memory.
    /// With `sync`, every commit is flushed to disk before it returns.
    pub fn open(dir: &Path, sync: bool, cache_bytes: u64) -> EngineResult<Self> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .open()?;
        let trees = Tree::ALL
            .iter()
            .map(|t| db.open_tree(t.name()))
            .collect::<Result<_, _>>()?;
        let trees = Arc::new(Trees { trees });
        let (commits, queue) =
            std::sync::mpsc::channel::<(Batch, tokio::sync::oneshot::Sender<EngineResult<()>>)>();
        let committer = trees.clone();
        std::thread::Builder::new()
            .name("sled-committer".into())
            .spawn(move || {
                for (batch, reply) in queue {
                    let _ = reply.send(committer.apply(&batch));
                }
            })
            .map_err(|e| EngineError::Store(format!("starting the committer thread: {e}")))?;
        Ok(Self {
            db,
            trees,
            commits,
            sync,
            flushes_started: AtomicU64::new(0),
            flushes_done: AtomicU64::new(0),
            flush_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// Flushes done so far (for tests of the group commit).
    #[cfg(test)]
    pub(crate) fn flushes(&self) -> u64 {
        self.flushes_done.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Engine for SledEngine {
    fn kind(&self) -> &'static str {
        "sled"
    }

    async fn get(&self, tree: Tree, key: &[u8]) -> EngineResult<Option<Vec<u8>>> {
        Ok(self.trees.tree(tree).get(key)?.map(|v| v.to_vec()))
    }

    async fn scan(
        &self,
        tree: Tree,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
    ) -> EngineResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let trees = self.trees.clone();
        let (prefix, from) = (prefix.to_vec(), from.to_vec());
        blocking(move || trees.scan(tree, &prefix, &from, limit)).await
    }

    async fn commit(&self, batch: Batch) -> EngineResult<()> {
        // In process, a crash of the store is a crash of the gateway: the writes that
        // coordination state describes end with it, so it is not flushed.
        let ephemeral = batch.ephemeral || batch.coordination;
        let (reply, done) = tokio::sync::oneshot::channel();
        let gone = || EngineError::Store("the committer thread stopped".into());
        self.commits.send((batch, reply)).map_err(|_| gone())?;
        // In process, the outcome is always known: the committer answers after applying or
        // refusing the batch (a dropped answer means the thread died before applying it).
        done.await.map_err(|_| gone())??;
        if self.sync
            && !ephemeral
            && let Err(e) = self.persist(self.flush_ticket()).await
        {
            // Applied, and visible to every reader: answering an error now would make the
            // caller undo around a change that stands (delete the bytes of a listed object).
            tracing::error!(error = %e, "a commit applied but its flush failed: a crash before the next flush loses it");
        }
        Ok(())
    }

    fn flush_ticket(&self) -> FlushTicket {
        FlushTicket(self.flushes_started.load(Ordering::SeqCst) + 1)
    }

    /// A flush that started after the ticket was taken covers it: if one has finished already
    /// nothing is done, and callers arriving while a flush runs share the next one (group
    /// commit), so N concurrent writers cost about two flushes.
    async fn persist(&self, ticket: FlushTicket) -> EngineResult<()> {
        if self.flushes_done.load(Ordering::SeqCst) >= ticket.0 {
            return Ok(());
        }
        let _turn = self.flush_lock.lock().await;
        if self.flushes_done.load(Ordering::SeqCst) >= ticket.0 {
            return Ok(());
        }
        let this = self.flushes_started.fetch_add(1, Ordering::SeqCst) + 1;
        // Not `flush_async`: concurrent calls of it deadlock in sled 0.34 (spacejam/sled#1308,
        // fixed only on its unreleased main). One blocking flush at a time, off the reactor.
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| EngineError::Store(format!("flush task: {e}")))??;
        self.flushes_done.store(this, Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ticket is covered by the first flush that starts after it was taken, and by no
    /// earlier one; concurrent holders of one ticket share one flush.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flush_ticket_waits_for_a_flush_that_started_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let e = SledEngine::open(dir.path(), false, 8 << 20).unwrap();
        let first = e.flush_ticket();
        let (a, b) = tokio::join!(e.persist(first), e.persist(first));
        a.unwrap();
        b.unwrap();
        assert_eq!(
            e.flushes(),
            1,
            "one flush covers both holders of the ticket"
        );
        e.persist(first).await.unwrap();
        assert_eq!(e.flushes(), 1, "already covered: no flush");
        let second = e.flush_ticket();
        assert!(second > first);
        e.persist(second).await.unwrap();
        assert_eq!(e.flushes(), 2, "a later ticket needs a later flush");
        // Without `sync` a commit flushes nothing.
        e.commit(Batch::default()).await.unwrap();
        assert_eq!(e.flushes(), 2);
    }
}
