//! A bound on things held at once, in all and per key, with a permit that gives its place back
//! when dropped. One mechanism for every such bound of the gateway: open connections (per
//! listener, per source address: `transport`) and writes in flight (per gateway, per tenant:
//! `s3::inflight`).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// Which bound refused a permit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The key holds this many already.
    Key(usize),
    /// The whole limit is taken.
    Total,
}

struct Counts<K> {
    total: usize,
    per_key: HashMap<K, usize>,
}

pub struct Limit<K> {
    total: usize,
    per_key: usize,
    counts: Mutex<Counts<K>>,
}

/// One place taken under a [`Limit`]; given back when dropped.
pub struct Permit<K: Hash + Eq> {
    limit: Arc<Limit<K>>,
    key: K,
}

impl<K: Hash + Eq + Clone> Limit<K> {
    pub fn new(total: usize, per_key: usize) -> Arc<Self> {
        Arc::new(Self {
            total,
            per_key,
            counts: Mutex::new(Counts {
                total: 0,
                per_key: HashMap::new(),
            }),
        })
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts<K>> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for `key`, unless the key or the whole limit is full.
    pub fn acquire(self: &Arc<Self>, key: &K) -> Result<Permit<K>, Full> {
        let mut c = self.counts();
        let mine = c.per_key.get(key).copied().unwrap_or(0);
        if mine >= self.per_key {
            return Err(Full::Key(mine));
        }
        if c.total >= self.total {
            return Err(Full::Total);
        }
        c.total += 1;
        *c.per_key.entry(key.clone()).or_default() += 1;
        Ok(Permit {
            limit: self.clone(),
            key: key.clone(),
        })
    }

    /// Places `key` holds now.
    pub fn held(&self, key: &K) -> usize {
        self.counts().per_key.get(key).copied().unwrap_or(0)
    }

    /// Places held now, in all.
    pub fn held_total(&self) -> usize {
        self.counts().total
    }
}

impl<K: Hash + Eq> Drop for Permit<K> {
    fn drop(&mut self) {
        let mut c = self.limit.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.total -= 1;
        if let Some(n) = c.per_key.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                c.per_key.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_in_all_and_per_key_and_given_back_on_drop() {
        let l = Limit::new(3, 2);
        let a1 = l.acquire(&"a").unwrap();
        let _a2 = l.acquire(&"a").unwrap();
        assert_eq!(l.acquire(&"a").err(), Some(Full::Key(2)));
        let _b1 = l.acquire(&"b").unwrap();
        assert_eq!(l.acquire(&"b").err(), Some(Full::Total));
        assert_eq!((l.held(&"a"), l.held(&"b"), l.held_total()), (2, 1, 3));
        drop(a1);
        assert_eq!((l.held(&"a"), l.held_total()), (1, 2));
        assert!(l.acquire(&"b").is_ok(), "a dropped permit frees its place");
        assert_eq!(l.held(&"c"), 0);
    }
}
