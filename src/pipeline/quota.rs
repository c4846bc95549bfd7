//! Exact quotas (DESIGN.md §6): a write reserves what it may add before a byte is stored, and the
//! commit settles it.
//!
//! Committed usage lives in meta and changes only inside commit transactions; reservations live
//! here, in memory (a crash ends the writes that held them, so none can leak across a restart).
//! The invariant `committed + reserved ≤ limit` holds at every instant because:
//! - a tenant's reservations are checked and taken one at a time (`admission`): each reads what is
//!   reserved, then what is committed, then adds itself. Commits and releases may run meanwhile;
//!   reading reserved before committed means a commit between the two reads is counted twice
//!   (its usage and its reservation), never not at all, so the check errs only on the safe side;
//! - a commit grows committed usage by at most what its writer reserved (the transaction checks
//!   the real change against the allowance and refuses with `QuotaShort` otherwise, so a
//!   replaced version that vanished meanwhile is reserved for before the retry);
//! - a reservation is released only after its commit.
//!
//! Scopes without limits take no lock and reserve nothing: usage is still counted by the commit.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::meta::{Commit, Delta, Limits, Meta, MetaError, MetaResult, Usage};

#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    #[error(
        "{scope} is limited to {limit} {what}; {used} are stored or being uploaded and this request needs {need} more"
    )]
    Exceeded {
        scope: String,
        what: &'static str,
        limit: u64,
        used: u64,
        need: u64,
    },
    #[error(transparent)]
    Meta(#[from] MetaError),
}

type ScopeKey = (String, Option<String>);

pub struct Quotas {
    meta: Arc<Meta>,
    reserved: Mutex<HashMap<ScopeKey, Usage>>,
    /// Per tenant (its scope and its buckets' are the only ones a reservation touches), held
    /// while a reservation is checked and taken, across the read of committed usage: tenants
    /// never wait for each other's admissions.
    admission: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// A reservation for one write; released when dropped (after the commit, or on failure).
pub struct Reservation {
    quotas: Arc<Quotas>,
    /// The limited scopes this write counts against.
    scopes: Vec<(ScopeKey, Limits)>,
    held: Usage,
}

impl Quotas {
    pub fn new(meta: Arc<Meta>) -> Arc<Self> {
        Arc::new(Self {
            meta,
            reserved: Mutex::new(HashMap::new()),
            admission: Mutex::new(HashMap::new()),
        })
    }

    /// Reserves `want` in the tenant's scope and the bucket's, checking each one's limits.
    pub async fn reserve(
        self: &Arc<Self>,
        tenant: &str,
        bucket: &str,
        tenant_limits: Limits,
        bucket_limits: Limits,
        want: Usage,
    ) -> Result<Reservation, QuotaError> {
        let mut scopes = Vec::new();
        if !tenant_limits.is_unlimited() {
            scopes.push(((tenant.to_string(), None), tenant_limits));
        }
        if !bucket_limits.is_unlimited() {
            scopes.push((
                (tenant.to_string(), Some(bucket.to_string())),
                bucket_limits,
            ));
        }
        let mut r = Reservation {
            quotas: self.clone(),
            scopes,
            held: Usage::default(),
        };
        r.add(want).await?;
        Ok(r)
    }

    /// What `tenant`'s writes hold reserved now, per limited scope (`tenant t`, `bucket b`):
    /// empty once they all ended, so a leaked reservation shows in the usage report.
    pub fn reserved_of(&self, tenant: &str) -> BTreeMap<String, Usage> {
        let reserved = self.reserved.lock().unwrap_or_else(|e| e.into_inner());
        reserved
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|(scope, u)| (describe(scope), *u))
            .collect()
    }

    async fn committed(&self, scope: &ScopeKey) -> MetaResult<Usage> {
        self.meta.usage(&scope.0, scope.1.as_deref()).await
    }
}

fn describe(scope: &ScopeKey) -> String {
    match &scope.1 {
        Some(b) => format!("bucket {b}"),
        None => format!("tenant {}", scope.0),
    }
}

impl Reservation {
    /// Grows the reservation by `more`, or fails without changing it.
    pub async fn add(&mut self, more: Usage) -> Result<(), QuotaError> {
        if self.scopes.is_empty() || more == Usage::default() {
            return Ok(());
        }
        let q = self.quotas.clone();
        let turn = {
            let mut lanes = q.admission.lock().unwrap_or_else(|e| e.into_inner());
            lanes.entry(self.scopes[0].0.0.clone()).or_default().clone()
        };
        let _admission = turn.lock().await;
        let held: Vec<Usage> = {
            let reserved = q.reserved.lock().unwrap_or_else(|e| e.into_inner());
            self.scopes
                .iter()
                .map(|(scope, _)| reserved.get(scope).copied().unwrap_or_default())
                .collect()
        };
        for ((scope, limits), held) in self.scopes.iter().zip(held) {
            let committed = q.committed(scope).await?;
            let checks = [
                (
                    "bytes",
                    limits.bytes,
                    committed.bytes + held.bytes,
                    more.bytes,
                ),
                (
                    "objects",
                    limits.objects,
                    committed.objects + held.objects,
                    more.objects,
                ),
            ];
            for (what, limit, used, need) in checks {
                if let Some(limit) = limit
                    && need > 0
                    && used + need > limit
                {
                    return Err(QuotaError::Exceeded {
                        scope: describe(scope),
                        what,
                        limit,
                        used,
                        need,
                    });
                }
            }
        }
        let mut reserved = q.reserved.lock().unwrap_or_else(|e| e.into_inner());
        for (scope, _) in &self.scopes {
            let e = reserved.entry(scope.clone()).or_default();
            e.bytes += more.bytes;
            e.objects += more.objects;
        }
        self.held.bytes += more.bytes;
        self.held.objects += more.objects;
        Ok(())
    }

    /// How much the commit may grow usage by.
    pub fn allowance(&self) -> Delta {
        if self.scopes.is_empty() {
            return Delta::UNLIMITED;
        }
        Delta {
            bytes: self.held.bytes as i64,
            objects: self.held.objects as i64,
        }
    }

    /// Commits `c` with this reservation's allowance. When the commit needs more (the version
    /// it replaces changed since the write began), the difference is reserved and it is retried.
    /// The reservation is released on return, as the commit has then settled it either way.
    pub async fn commit(mut self, mut c: Commit) -> Result<(), QuotaError> {
        loop {
            c.allowance = self.allowance();
            match self.quotas.meta.commit(&c).await {
                Err(MetaError::QuotaShort(d)) => {
                    let a = self.allowance();
                    self.add(Usage {
                        bytes: (d.bytes - a.bytes).max(0) as u64,
                        objects: (d.objects - a.objects).max(0) as u64,
                    })
                    .await?;
                }
                r => return Ok(r?),
            }
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.scopes.is_empty() || self.held == Usage::default() {
            return;
        }
        let mut reserved = self
            .quotas
            .reserved
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for (scope, _) in &self.scopes {
            if let Some(e) = reserved.get_mut(scope) {
                e.bytes = e.bytes.saturating_sub(self.held.bytes);
                e.objects = e.objects.saturating_sub(self.held.objects);
                if *e == Usage::default() {
                    reserved.remove(scope);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::testing::{delete, meta, object, put as put_commit};

    const LIMIT: Limits = Limits {
        bytes: Some(100),
        objects: Some(3),
    };

    async fn put(q: &Arc<Quotas>, key: &str, size: u64) -> Result<(), QuotaError> {
        let want = Usage {
            bytes: size,
            objects: 1,
        };
        let r = q.reserve("t", "b", LIMIT, Limits::default(), want).await?;
        r.commit(put_commit(key, object(size))).await
    }

    #[tokio::test]
    async fn reservations_count_until_released() {
        let (_d, m) = meta().await;
        let q = Quotas::new(m.clone());
        let want = Usage {
            bytes: 60,
            objects: 1,
        };
        let held = q
            .reserve("t", "b", LIMIT, Limits::default(), want)
            .await
            .unwrap();
        // 60 reserved: another 60 does not fit, 40 does.
        assert!(
            q.reserve("t", "b", LIMIT, Limits::default(), want)
                .await
                .is_err()
        );
        drop(held);
        put(&q, "a", 60).await.unwrap();
        assert!(put(&q, "b", 41).await.is_err());
        put(&q, "b", 40).await.unwrap();
        assert_eq!(m.usage("t", None).await.unwrap().bytes, 100);
        assert_eq!(m.usage("t", Some("b")).await.unwrap().objects, 2);
    }

    #[tokio::test]
    async fn an_overwrite_needs_room_for_the_new_version_only_while_it_uploads() {
        let (_d, m) = meta().await;
        let q = Quotas::new(m.clone());
        put(&q, "a", 90).await.unwrap();
        // The replaced version is released at commit, but the new bytes must fit beside it.
        assert!(put(&q, "a", 20).await.is_err());
        put(&q, "a", 10).await.unwrap();
        assert_eq!(
            m.usage("t", None).await.unwrap(),
            Usage {
                bytes: 10,
                objects: 1
            }
        );
        // Deleting releases.
        m.commit(&delete("a")).await.unwrap();
        assert_eq!(m.usage("t", None).await.unwrap(), Usage::default());
    }

    #[tokio::test]
    async fn a_commit_needing_more_than_reserved_reserves_the_difference_or_fails() {
        let (_d, m) = meta().await;
        let q = Quotas::new(m.clone());
        // A writer that reserved nothing for its object count (as if crediting a replaced
        // version that no longer exists) must reserve it at commit, or fail.
        let bytes_only = async || {
            let want = Usage {
                bytes: 10,
                objects: 0,
            };
            q.reserve("t", "b", LIMIT, Limits::default(), want)
                .await
                .unwrap()
        };
        bytes_only()
            .await
            .commit(put_commit("x", object(10)))
            .await
            .unwrap();
        assert_eq!(m.usage("t", None).await.unwrap().objects, 1);
        // What the commit reserved on top was released with the rest: two more objects fit.
        put(&q, "y", 10).await.unwrap();
        put(&q, "z", 10).await.unwrap();
        let e = bytes_only()
            .await
            .commit(put_commit("w", object(10)))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("limited to 3 objects"), "{e}");
        assert!(m.object("t", "b", "w").await.unwrap().is_none());
    }

    /// Writers racing for the last room of a quota: exactly as many as fit commit, and usage
    /// never passes the limit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_writers_never_pass_the_limit() {
        let (_d, m) = meta().await;
        racing_writers(m).await;
        racing_writers(crate::meta::testing::meta_on_postgres().await).await;
    }

    async fn racing_writers(m: Arc<Meta>) {
        let q = Quotas::new(m.clone());
        let tasks = (0..12).map(|i| {
            let q = q.clone();
            tokio::spawn(async move { put(&q, &format!("k{i}"), 30).await.is_ok() })
        });
        let ok = futures::future::join_all(tasks)
            .await
            .into_iter()
            .filter(|r| *r.as_ref().unwrap())
            .count();
        assert_eq!(ok, 3, "100 bytes fit three objects of 30");
        assert_eq!(m.usage("t", None).await.unwrap().bytes, 90);
        assert!(q.reserved_of("t").is_empty());
    }
}
