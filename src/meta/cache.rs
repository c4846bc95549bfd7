//! The node's cache of the records every request reads: access keys, tenants, buckets
//! ([`Tree::cached`]). It saves a round trip per read on a shared store (PostgreSQL) and never
//! makes an answer staler than the bound below. On the embedded store reads are already in
//! this process's memory, and it stays off (measured: on, it cost 12 % of small PUTs on sled).
//!
//! - A commit of this process invalidates what it changed as it returns.
//! - A commit of another node invalidates it through the engine's notifications (PostgreSQL
//!   `NOTIFY` in the committing transaction, delivered when it commits). While they cannot be
//!   received (the listening connection is down or has not connected yet), nothing is cached.
//! - Every entry is also dropped after [`TTL`], so even a lost notification leaves a record
//!   (a revoked key) stale for at most that long.
//! - A read that started before an invalidation does not put its (maybe older) value in the
//!   cache: each invalidation bumps a generation that fills must match.
//!
//! Commits never read through it: their checks compare against the store itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::engine::{Engine, Invalidation, Tree};

/// The longest a cached record may be served after another node changed it.
pub const TTL: Duration = Duration::from_secs(1);

/// Entries kept at most; past it the cache is emptied (tenants, keys and buckets are few).
const MAX_ENTRIES: usize = 100_000;

type Key = (Tree, Vec<u8>);

#[derive(Default)]
struct Inner {
    on: bool,
    generation: u64,
    entries: HashMap<Key, (Instant, Option<Vec<u8>>)>,
}

impl Inner {
    fn forget(&mut self, key: Option<&Key>) {
        self.generation += 1;
        match key {
            Some(k) => {
                self.entries.remove(k);
            }
            None => self.entries.clear(),
        }
    }
}

pub(super) struct Cache(Arc<Mutex<Inner>>);

/// A lookup: the record, or the generation a fill after reading the store must match.
pub(super) enum Lookup {
    Hit(Option<Vec<u8>>),
    Miss(u64),
}

impl Cache {
    pub(super) fn new(engine: &dyn Engine) -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        match engine.invalidations() {
            // An embedded store (sled) is read from this process's memory: nothing to save.
            None => lock(&inner).on = false,
            Some((rx, listening)) => match tokio::runtime::Handle::try_current() {
                Ok(rt) => {
                    lock(&inner).on = listening;
                    rt.spawn(follow(rx, Arc::downgrade(&inner)));
                }
                Err(_) => lock(&inner).on = false,
            },
        }
        Self(inner)
    }

    pub(super) fn lookup(&self, tree: Tree, key: &[u8]) -> Lookup {
        let mut c = lock(&self.0);
        if !c.on {
            return Lookup::Miss(u64::MAX);
        }
        let k = (tree, key.to_vec());
        match c.entries.get(&k) {
            Some((at, v)) if at.elapsed() < TTL => Lookup::Hit(v.clone()),
            Some(_) => {
                c.entries.remove(&k);
                Lookup::Miss(c.generation)
            }
            None => Lookup::Miss(c.generation),
        }
    }

    /// Keeps what was read from the store, unless something was invalidated since the lookup.
    pub(super) fn fill(&self, generation: u64, tree: Tree, key: &[u8], value: Option<Vec<u8>>) {
        let mut c = lock(&self.0);
        if !c.on || c.generation != generation {
            return;
        }
        if c.entries.len() >= MAX_ENTRIES {
            c.entries.clear();
        }
        c.entries
            .insert((tree, key.to_vec()), (Instant::now(), value));
    }

    /// Forgets `key` (this process just changed it).
    pub(super) fn invalidate(&self, tree: Tree, key: &[u8]) {
        lock(&self.0).forget(Some(&(tree, key.to_vec())));
    }
}

fn lock(m: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Applies the engine's notifications until the cache or the engine is gone.
async fn follow(mut rx: tokio::sync::broadcast::Receiver<Invalidation>, cache: Weak<Mutex<Inner>>) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let event = rx.recv().await;
        let Some(inner) = cache.upgrade() else { return };
        let mut c = lock(&inner);
        match event {
            Ok(Invalidation::Key(tree, key)) => c.forget(Some(&(tree, key))),
            Ok(Invalidation::Resume) => {
                c.forget(None);
                c.on = true;
            }
            Ok(Invalidation::Suspend) => {
                c.forget(None);
                c.on = false;
            }
            // Some notifications were dropped: what they named is unknown.
            Err(RecvError::Lagged(_)) => c.forget(None),
            Err(RecvError::Closed) => {
                c.forget(None);
                c.on = false;
                return;
            }
        }
    }
}
