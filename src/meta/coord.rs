//! Shared state of the nodes of one store (ARCHITECTURE.md "Several nodes"): the node registry,
//! leases, quota reservations and background jobs. All of it lives in the engine next to the
//! index and changes only through [`Meta::commit`](super::Meta::commit), as [`Coord`] changes;
//! none of it needs to survive a crash, so those commits are not waited on to reach disk.
//!
//! - **Nodes**: one record per running process (an *instance*), renewed by its heartbeat. A
//!   record past its expiry belongs to a dead node: any node reaps it, with its reservations.
//!   A node whose record was reaped is *fenced*: its reservations are gone, so its commits that
//!   settle one, and its new reservations, are refused ([`MetaError::Fenced`]).
//! - **Leases**: a name, a holder and an expiry, taken with a conditional commit. Workers take
//!   one per pass; quota *gates* are leases too. Each take bumps `seq`, so a lease freed and
//!   taken again never looks unchanged to a commit that checked it free (no ABA).
//! - **Reservations**: per scope (a tenant, or one of its buckets) one counter pair per instance
//!   (`Write::Add`, so one node's writers never conflict with another's), summed on admission.
//!   The admission rules and why they are exact are in [`Coord::Reserve`].
//! - **Jobs**: a background job's state (rescans), with the lease of the node running it.

use serde::{Deserialize, Serialize};

use super::engine::{Engine, Tree};
use super::txn::Txn;
use super::{Meta, MetaError, MetaResult, keys, now_ms};
use crate::model::{Limits, Usage};

/// One running gateway process, as the registry shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Unique per process start: `<node_id>/<ULID>`.
    pub instance: String,
    /// The configured (or generated) name of the node.
    pub node_id: String,
    pub started_ms: i64,
    pub seen_ms: i64,
    pub expires_ms: i64,
    pub s3_addr: String,
    /// `<host>:<directory>` of the `local` backend it writes to, if any (then it must be the
    /// only node, but for dead instances of itself, which held the same directory).
    #[serde(default)]
    pub local_data: Option<String>,
    pub version: String,
}

/// Who does one piece of shared work until when. `holder: None`: free.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub name: String,
    pub holder: Option<String>,
    pub expires_ms: i64,
    /// Bumped by every take.
    pub seq: u64,
}

impl Lease {
    fn free_for(&self, holder: &str, now: i64) -> bool {
        match &self.holder {
            None => true,
            Some(h) => h == holder || self.expires_ms <= now,
        }
    }
}

/// A background job: its kind, its state (the job's own record), and the lease of the node
/// running it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    pub kind: String,
    pub holder: Option<String>,
    pub expires_ms: i64,
    pub done: bool,
    pub state: serde_json::Value,
}

/// A quota scope: a tenant (`bucket` `None`) or one of its buckets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope {
    pub tenant: String,
    pub bucket: Option<String>,
}

impl Scope {
    fn key(&self) -> Vec<u8> {
        match &self.bucket {
            None => [&[0u8][..], &keys::tenant_prefix(&self.tenant)].concat(),
            Some(b) => [&[1u8][..], &keys::bucket_prefix(&self.tenant, b)].concat(),
        }
    }

    /// The prefix of the scope's reservation rows (a NUL ends the length-prefixed scope).
    fn rows(&self) -> Vec<u8> {
        let mut k = self.key();
        k.push(0);
        k
    }

    fn row(&self, instance: &str) -> Vec<u8> {
        let mut k = self.rows();
        k.extend_from_slice(instance.as_bytes());
        k
    }

    fn gate(&self) -> Vec<u8> {
        [b"gate\0".as_slice(), &self.key()].concat()
    }

    fn usage_key(&self) -> Vec<u8> {
        match &self.bucket {
            None => keys::tenant_prefix(&self.tenant),
            Some(b) => keys::bucket(&self.tenant, b),
        }
    }

    pub fn describe(&self) -> String {
        match &self.bucket {
            Some(b) => format!("bucket {b}"),
            None => format!("tenant {}", self.tenant),
        }
    }

    /// The name of the scope's gate lease, as `/health` lists it.
    pub fn gate_name(&self) -> String {
        format!(
            "quota gate of {}/{}",
            self.tenant,
            self.bucket.as_deref().unwrap_or("*")
        )
    }
}

/// The prefix of the rows counting, per instance, the writes in flight into one bucket (every
/// write between admission and commit, limited or not). DeleteBucket is refused while they sum
/// to more than zero.
fn in_flight_rows(tenant: &str, bucket: &str) -> Vec<u8> {
    let mut k = [&[2u8][..], &keys::bucket_prefix(tenant, bucket)].concat();
    k.push(0);
    k
}

fn in_flight_row(tenant: &str, bucket: &str, instance: &str) -> Vec<u8> {
    let mut k = in_flight_rows(tenant, bucket);
    k.extend_from_slice(instance.as_bytes());
    k
}

/// The sum of the counter rows under `prefix` (one per node), as the store holds them now.
/// Unchecked: the callers' rules say why a stale sum errs on the safe side.
async fn sum_rows(engine: &dyn Engine, prefix: &[u8]) -> MetaResult<[i64; 2]> {
    let rows = engine
        .scan(Tree::Reservations, prefix, prefix, 1_000_000)
        .await?;
    Ok(rows.iter().fold([0, 0], |[a, b], (_, v)| {
        let [x, y] = super::engine::counters(Some(v));
        [a + x, b + y]
    }))
}

/// Writes in flight into `tenant`'s `bucket`, on every node, as the store says now.
pub(super) async fn writes_in_flight(
    engine: &dyn Engine,
    tenant: &str,
    bucket: &str,
) -> MetaResult<i64> {
    Ok(sum_rows(engine, &in_flight_rows(tenant, bucket)).await?[0])
}

/// How an admission decides ([`Coord::Reserve`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Without the gate: only far from the limit, with room left for one write of at most
    /// `fast_bytes` (and one object) from every other node at once; never refuses (it answers
    /// `GateNeeded` instead).
    Fast { fast_bytes: u64 },
    /// Holding every scope's gate: the exact check; frees the gates in the same commit.
    Gated,
}

/// The coordination changes, applied by `commit::apply` like any other change.
#[derive(Debug, Clone)]
pub enum Coord {
    /// Registers or renews `node`. With `renew`, refused (`Fenced`) if the record is gone.
    Heartbeat { node: NodeRecord, renew: bool },
    /// Removes a dead node's record (if still `node`, unrenewed) and its reservations.
    Reap { node: NodeRecord },
    /// Takes (or renews) the lease `name` for `ttl_ms`; `LeaseHeld` if another holder has it.
    TakeLease {
        name: String,
        key: Vec<u8>,
        holder: String,
        ttl_ms: i64,
    },
    /// Frees the lease if `holder` has it.
    FreeLease { key: Vec<u8>, holder: String },
    /// Counts a write without a limited scope as in flight into its bucket, on `instance`.
    Enter {
        instance: String,
        tenant: String,
        bucket: String,
    },
    /// Reserves `want` in every scope for `instance` (and with `enter`, counts the write as in
    /// flight into `bucket`).
    ///
    /// Why this is exact (committed + reserved ≤ limit in every scope, at every instant): every
    /// node takes its admissions of one tenant one at a time (a local lock), and commits move a
    /// write's reservation to committed usage in one batch; reservations are read before
    /// committed usage, so a move between the two reads is counted twice, never missed.
    /// - `Fast` reads the node count `N`, the reservations and the usage, and admits only if
    ///   `committed + reserved + want + (N-1)·fast` fits (objects: `N-1`), where `fast` bounds
    ///   every fast admission. Take the fast admission whose reads came last: every fast
    ///   admission it did not see had read before it and committed after, so was in progress,
    ///   at most one per other node (a node registering later reads later), each within the
    ///   margin. Its commit checks that each gate is still free *with the same `seq`*.
    /// - `Gated` runs with the gate of every scope held: a fast admission that committed before
    ///   the gate was taken is visible to its reads, and one that would commit after fails its
    ///   gate check. With no margin, it refuses only what a single node would refuse.
    Reserve {
        instance: String,
        scopes: Vec<(Scope, Limits)>,
        want: Usage,
        how: Admission,
        enter: Option<(String, String)>,
    },
    /// Gives back what `instance` reserved, and its count in flight (a write that ended without
    /// a commit).
    Unreserve {
        instance: String,
        scopes: Vec<Scope>,
        held: Usage,
        leave: Option<(String, String)>,
    },
    /// Creates a job or stores its new state. `holder`: who must hold its lease (the writer);
    /// with `claim`, takes the lease for `ttl_ms` if free, expired, or already the writer's.
    SaveJob {
        job: JobRecord,
        claim: bool,
        ttl_ms: i64,
    },
}

/// A write's reservation, settled by the commit that ends the write: given back in the same batch
/// as the usage it becomes. Refused (`Fenced`) if the node was declared dead meanwhile.
#[derive(Debug, Clone)]
pub struct Settle {
    pub instance: String,
    pub scopes: Vec<Scope>,
    pub held: Usage,
    /// The write's bucket, counted in flight until this commit.
    pub leave: Option<(String, String)>,
}

fn neg(u: Usage) -> [i64; 2] {
    [-(u.bytes as i64), -(u.objects as i64)]
}

/// Checked: the instance's record must exist (it is not fenced).
async fn require_member(tx: &mut Txn<'_>, instance: &str) -> MetaResult<()> {
    match tx.get(Tree::Nodes, instance.as_bytes()).await? {
        Some(_) => Ok(()),
        None => Err(MetaError::Fenced),
    }
}

pub(super) async fn settle(tx: &mut Txn<'_>, s: &Settle) -> MetaResult<()> {
    leave(tx, &s.instance, s.leave.as_ref());
    if s.held == Usage::default() {
        return Ok(());
    }
    require_member(tx, &s.instance).await?;
    for scope in &s.scopes {
        tx.add(Tree::Reservations, scope.row(&s.instance), neg(s.held));
    }
    Ok(())
}

fn leave(tx: &mut Txn<'_>, instance: &str, bucket: Option<&(String, String)>) {
    if let Some((t, b)) = bucket {
        tx.add(Tree::Reservations, in_flight_row(t, b, instance), [-1, 0]);
    }
}

pub(super) async fn apply(tx: &mut Txn<'_>, c: &Coord) -> MetaResult<()> {
    let now = now_ms();
    match c {
        Coord::Heartbeat { node, renew } => {
            let key = node.instance.as_bytes().to_vec();
            if *renew && tx.get(Tree::Nodes, &key).await?.is_none() {
                return Err(MetaError::Fenced);
            }
            tx.put_record(Tree::Nodes, key, node);
        }
        Coord::Reap { node } => {
            let key = node.instance.as_bytes().to_vec();
            let current: Option<NodeRecord> = tx.record(Tree::Nodes, &key).await?;
            if current.as_ref() != Some(node) {
                return Ok(());
            }
            tx.delete(Tree::Nodes, key);
            // Its rows take no more writes (the node is dead, or fenced by this very delete).
            for (k, _) in tx.peek_scan(Tree::Reservations, &[]).await? {
                if k.ends_with(node.instance.as_bytes())
                    && k[..k.len() - node.instance.len()].ends_with(&[0])
                {
                    tx.delete(Tree::Reservations, k);
                }
            }
        }
        Coord::TakeLease {
            name,
            key,
            holder,
            ttl_ms,
        } => {
            let current: Option<Lease> = tx.record(Tree::Leases, key).await?;
            if let Some(l) = &current
                && !l.free_for(holder, now)
            {
                return Err(MetaError::LeaseHeld(l.holder.clone().unwrap_or_default()));
            }
            let lease = Lease {
                name: name.clone(),
                holder: Some(holder.clone()),
                expires_ms: now + ttl_ms,
                seq: current.map_or(0, |l| l.seq) + 1,
            };
            tx.put_record(Tree::Leases, key.clone(), &lease);
        }
        Coord::FreeLease { key, holder } => free_lease(tx, key, holder).await?,
        Coord::Enter {
            instance,
            tenant,
            bucket,
        } => {
            tx.add(
                Tree::Reservations,
                in_flight_row(tenant, bucket, instance),
                [1, 0],
            );
        }
        Coord::Reserve {
            instance,
            scopes,
            want,
            how,
            enter,
        } => {
            if let Some((t, b)) = enter {
                tx.add(Tree::Reservations, in_flight_row(t, b, instance), [1, 0]);
            }
            require_member(tx, instance).await?;
            let others = match how {
                Admission::Fast { .. } => {
                    let n = tx.peek_scan(Tree::Nodes, &[]).await?.len() as u64;
                    n.saturating_sub(1)
                }
                Admission::Gated => 0,
            };
            for (scope, limits) in scopes {
                let gate: Option<Lease> = tx.record(Tree::Leases, &scope.gate()).await?;
                match how {
                    Admission::Fast { .. } => {
                        if gate.is_none_or(|g| g.holder.is_some()) {
                            return Err(MetaError::GateNeeded);
                        }
                    }
                    Admission::Gated => {
                        // Lost to expiry and taken by another node: the caller takes it again.
                        if gate.is_none_or(|g| g.holder.as_deref() != Some(instance)) {
                            return Err(MetaError::GateNeeded);
                        }
                    }
                }
                // Reservations first, then usage (see above).
                let reserved = sum_rows(tx.engine(), &scope.rows()).await?;
                let committed = super::usage::usage_of(
                    tx.peek(Tree::Usage, &scope.usage_key()).await?.as_deref(),
                );
                let margin = match how {
                    Admission::Fast { fast_bytes } => [others * fast_bytes, others],
                    Admission::Gated => [0, 0],
                };
                let checks = [
                    (
                        "bytes",
                        limits.bytes,
                        committed.bytes + reserved[0].max(0) as u64,
                        want.bytes,
                        margin[0],
                    ),
                    (
                        "objects",
                        limits.objects,
                        committed.objects + reserved[1].max(0) as u64,
                        want.objects,
                        margin[1],
                    ),
                ];
                for (what, limit, used, need, margin) in checks {
                    if let Some(limit) = limit
                        && need > 0
                        && used + need + margin > limit
                    {
                        return Err(match how {
                            Admission::Fast { .. } => MetaError::GateNeeded,
                            Admission::Gated => MetaError::OverQuota {
                                scope: scope.describe(),
                                what,
                                limit,
                                used,
                                need,
                            },
                        });
                    }
                }
                tx.add(
                    Tree::Reservations,
                    scope.row(instance),
                    [want.bytes as i64, want.objects as i64],
                );
                if *how == Admission::Gated {
                    free_lease(tx, &scope.gate(), instance).await?;
                }
            }
        }
        Coord::Unreserve {
            instance,
            scopes,
            held,
            leave: bucket,
        } => {
            leave(tx, instance, bucket.as_ref());
            for scope in scopes {
                tx.add(Tree::Reservations, scope.row(instance), neg(*held));
            }
        }
        Coord::SaveJob { job, claim, ttl_ms } => {
            let key = job.id.as_bytes().to_vec();
            let current: Option<JobRecord> = tx.record(Tree::Jobs, &key).await?;
            let mut job = job.clone();
            if let Some(cur) = &current {
                let mine = cur.holder.is_some() && cur.holder == job.holder;
                let free = cur.holder.is_none() || cur.expires_ms <= now;
                if !(mine || (*claim && free)) || cur.done {
                    return Err(MetaError::LeaseHeld(cur.holder.clone().unwrap_or_default()));
                }
                if *claim && !mine {
                    // A node taking over resumes from the stored state.
                    job.state = cur.state.clone();
                }
            }
            if job.holder.is_some() {
                job.expires_ms = now + ttl_ms;
            }
            tx.put_record(Tree::Jobs, key, &job);
        }
    }
    Ok(())
}

async fn free_lease(tx: &mut Txn<'_>, key: &[u8], holder: &str) -> MetaResult<()> {
    if let Some(mut l) = tx.record::<Lease>(Tree::Leases, key).await?
        && l.holder.as_deref() == Some(holder)
    {
        l.holder = None;
        tx.put_record(Tree::Leases, key.to_vec(), &l);
    }
    Ok(())
}

/// The key of a worker's lease.
pub fn worker_lease(name: &str) -> Vec<u8> {
    [b"worker\0".as_slice(), name.as_bytes()].concat()
}

/// The key of a scope's quota gate.
pub fn gate_lease(scope: &Scope) -> Vec<u8> {
    scope.gate()
}

impl Meta {
    /// Every registered node, dead ones included until reaped.
    pub async fn nodes(&self) -> MetaResult<Vec<NodeRecord>> {
        self.records(Tree::Nodes).await
    }

    /// Every lease ever taken (free ones show `holder: None`).
    pub async fn leases(&self) -> MetaResult<Vec<Lease>> {
        self.records(Tree::Leases).await
    }

    /// What is reserved now in each of the tenant's scopes, summed over nodes (`tenant t`,
    /// `bucket b`); scopes with nothing reserved are left out.
    pub async fn reserved_of(&self, tenant: &str) -> MetaResult<Vec<(String, Usage)>> {
        let mut out = Vec::new();
        let tscope = Scope {
            tenant: tenant.to_string(),
            bucket: None,
        };
        let mut scopes = vec![tscope];
        for b in self.buckets(tenant).await? {
            scopes.push(Scope {
                tenant: tenant.to_string(),
                bucket: Some(b.name),
            });
        }
        for s in scopes {
            let sum = sum_rows(&*self.engine, &s.rows()).await?;
            if sum != [0, 0] {
                out.push((
                    s.describe(),
                    Usage {
                        bytes: sum[0].max(0) as u64,
                        objects: sum[1].max(0) as u64,
                    },
                ));
            }
        }
        Ok(out)
    }

    /// Writes in flight into a bucket, on every node (admitted, not yet committed or failed).
    pub async fn bucket_writes_in_flight(&self, tenant: &str, bucket: &str) -> MetaResult<u64> {
        Ok(writes_in_flight(&*self.engine, tenant, bucket)
            .await?
            .max(0) as u64)
    }

    pub async fn jobs(&self, kind: &str) -> MetaResult<Vec<JobRecord>> {
        let mut all = self.all_jobs().await?;
        all.retain(|j| j.kind == kind);
        Ok(all)
    }

    /// Every job of every kind, finished ones included.
    pub async fn all_jobs(&self) -> MetaResult<Vec<JobRecord>> {
        self.records(Tree::Jobs).await
    }

    pub async fn job(&self, id: &str) -> MetaResult<Option<JobRecord>> {
        self.record(Tree::Jobs, id.as_bytes()).await
    }
}
