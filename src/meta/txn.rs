//! One attempt at a commit: reads go to the engine and are remembered as checks, writes are
//! buffered (and read back by later reads of the same attempt), and the whole becomes one
//! [`Batch`] that the engine applies only if nothing it read has changed.

use std::collections::BTreeMap;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::engine::{Batch, Check, Engine, Tree, Write};
use super::{MetaError, MetaResult, decode, encode};

pub(crate) struct Txn<'e> {
    engine: &'e dyn Engine,
    /// What each key read held, checked at commit.
    read: BTreeMap<(Tree, Vec<u8>), Option<Vec<u8>>>,
    ranges: Vec<Check>,
    /// `None`: delete.
    writes: BTreeMap<(Tree, Vec<u8>), Option<Vec<u8>>>,
    /// Counter additions, never read back by the attempt.
    adds: BTreeMap<(Tree, Vec<u8>), [i64; 2]>,
}

impl<'e> Txn<'e> {
    pub(crate) fn new(engine: &'e dyn Engine) -> Self {
        Self {
            engine,
            read: BTreeMap::new(),
            ranges: Vec::new(),
            writes: BTreeMap::new(),
            adds: BTreeMap::new(),
        }
    }

    pub(crate) async fn get(&mut self, tree: Tree, key: &[u8]) -> MetaResult<Option<Vec<u8>>> {
        let k = (tree, key.to_vec());
        if let Some(w) = self.writes.get(&k) {
            return Ok(w.clone());
        }
        if let Some(r) = self.read.get(&k) {
            return Ok(r.clone());
        }
        let v = self.engine.get(tree, key).await?;
        self.read.insert(k, v.clone());
        Ok(v)
    }

    /// The engine, for reads the attempt does not check (see [`Txn::peek`]).
    pub(crate) fn engine(&self) -> &'e dyn Engine {
        self.engine
    }

    /// Reads without a check: for reads whose staleness the caller's rules make safe (the
    /// quota admission's sums, `meta::coord`).
    pub(crate) async fn peek(&self, tree: Tree, key: &[u8]) -> MetaResult<Option<Vec<u8>>> {
        Ok(self.engine.get(tree, key).await?)
    }

    /// Every entry under `prefix`, without a check (see [`Txn::peek`]); small trees only.
    pub(crate) async fn peek_scan(
        &self,
        tree: Tree,
        prefix: &[u8],
    ) -> MetaResult<Vec<(Vec<u8>, Vec<u8>)>> {
        Ok(self.engine.scan(tree, prefix, prefix, 1_000_000).await?)
    }

    pub(crate) async fn record<T: DeserializeOwned>(
        &mut self,
        tree: Tree,
        key: &[u8],
    ) -> MetaResult<Option<T>> {
        self.get(tree, key).await?.map(|v| decode(&v)).transpose()
    }

    /// Every entry under `prefix` (at most `limit`, else `Corrupt`), checked at commit to be
    /// still exactly these. For small, bounded ranges only (the parts of one upload).
    pub(crate) async fn range(
        &mut self,
        tree: Tree,
        prefix: &[u8],
        limit: usize,
    ) -> MetaResult<Vec<(Vec<u8>, Vec<u8>)>> {
        debug_assert!(
            !self
                .writes
                .keys()
                .any(|(t, k)| *t == tree && k.starts_with(prefix)),
            "a range is read before anything is written into it"
        );
        let found = self.engine.scan(tree, prefix, prefix, limit + 1).await?;
        if found.len() > limit {
            return Err(MetaError::Corrupt(format!(
                "more than {limit} entries under one {} prefix",
                tree.name()
            )));
        }
        self.ranges.push(Check::Range {
            tree,
            prefix: prefix.to_vec(),
            expect: found.clone(),
        });
        Ok(found)
    }

    /// True when nothing starts with `prefix`; then checked at commit to be still so. (When
    /// something does, the caller refuses the change, and nothing needs checking.)
    pub(crate) async fn is_empty(&mut self, tree: Tree, prefix: &[u8]) -> MetaResult<bool> {
        if !self.engine.scan(tree, prefix, prefix, 1).await?.is_empty() {
            return Ok(false);
        }
        self.ranges.push(Check::Range {
            tree,
            prefix: prefix.to_vec(),
            expect: Vec::new(),
        });
        Ok(true)
    }

    pub(crate) fn put(&mut self, tree: Tree, key: Vec<u8>, value: Vec<u8>) {
        self.writes.insert((tree, key), Some(value));
    }

    pub(crate) fn put_record<T: Serialize>(&mut self, tree: Tree, key: Vec<u8>, value: &T) {
        self.put(tree, key, encode(value));
    }

    /// Adds to the counters of `key` ([`Write::Add`]): no read, no check.
    pub(crate) fn add(&mut self, tree: Tree, key: Vec<u8>, delta: [i64; 2]) {
        let sum = self.adds.entry((tree, key)).or_default();
        sum[0] += delta[0];
        sum[1] += delta[1];
    }

    pub(crate) fn delete(&mut self, tree: Tree, key: Vec<u8>) {
        self.writes.insert((tree, key), None);
    }

    pub(crate) fn into_batch(self) -> Batch {
        let mut checks: Vec<Check> = self
            .read
            .into_iter()
            .map(|((tree, key), expect)| Check::Value { tree, key, expect })
            .collect();
        checks.extend(self.ranges);
        debug_assert!(
            !self.adds.keys().any(|k| self.writes.contains_key(k)),
            "a key is either added to or written, not both"
        );
        let mut writes: Vec<Write> = self
            .writes
            .into_iter()
            .map(|((tree, key), v)| match v {
                Some(value) => Write::Put { tree, key, value },
                None => Write::Delete { tree, key },
            })
            .collect();
        writes.extend(
            self.adds
                .into_iter()
                .filter(|(_, d)| *d != [0, 0])
                .map(|((tree, key), delta)| Write::Add { tree, key, delta }),
        );
        Batch {
            checks,
            writes,
            ephemeral: false,
            coordination: false,
        }
    }
}
