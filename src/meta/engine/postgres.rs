//! The PostgreSQL engine: every tree in one table `portcullis_kv (tree smallint, key bytea,
//! value bytea)`, primary key `(tree, key)`. Keys are `bytea`, so ranges and ORDER BY follow
//! byte order whatever the database's collation (S3 listings need byte order).
//!
//! A commit is one READ COMMITTED transaction that first locks what it checked, in one global
//! order (tree, key) so two commits never wait on each other in a circle: `FOR UPDATE` on keys it
//! writes, `FOR SHARE` on keys it only read. Each statement after a lock sees the latest committed
//! rows, so the comparisons are exact. A key checked as absent cannot be locked; it is written
//! with a plain INSERT, which a concurrent insert of the same key turns into a unique violation
//! (→ `Conflict`). Range checks are exact because the domain guards every range it checks with a
//! record that writers into the range lock too (a bucket for its objects and uploads, an upload
//! for its parts, a tenant for its buckets). Deadlocks and serialization failures are conflicts
//! as well: the domain reads again and retries. A commit is durable when it returns
//! (`synchronous_commit` as the server has it; off only for heartbeats).
//!
//! A commit is one statement when it only adds to one counter (a write counting itself in
//! flight: no transaction, so that row is locked only while the statement runs), marked with a
//! random id in `portcullis_commits` whose presence tells its outcome if the answer is lost.
//! Any other commit is two round trips: everything up to the last write is sent at once (BEGIN, the
//! transaction's id, the locks, the range checks, the writes, the notifications), then COMMIT
//! once the checks are seen to hold. Until COMMIT is sent the transaction cannot apply, so any
//! failure before it is a known "not applied" (the connection is dropped, the server rolls
//! back). A COMMIT whose answer is lost (a broken connection, a crash or failover, a stall past
//! the bound) is *unknown*: its outcome is read back on another connection with
//! `pg_xact_status` of the transaction id taken before COMMIT was sent, ending the old session
//! if it still holds the transaction, until the server answers or `timeout` passes
//! ([`EngineError::Unknown`] then, resolvable later with [`Engine::outcome`]).
//!
//! Every call is bounded by `timeout` (pool wait included) on the client's side, and by
//! `statement_timeout` on the server's; connections use TCP keepalive and `TCP_USER_TIMEOUT`, so
//! a silent partition breaks them in seconds instead of the kernel's ~15 minutes. A connection
//! whose call failed or timed out is never reused.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use super::{
    Batch, Check, Engine, EngineError, EngineResult, FlushTicket, Invalidation, PendingCommit,
    Tree, Write, prefix_end,
};

/// Bumped when the schema changes; `migrate` brings an older database up to it.
const SCHEMA_VERSION: i32 = 1;

/// Serialises schema migrations of nodes starting together (an arbitrary, fixed lock id).
const MIGRATION_LOCK: i64 = 0x706f_7274_6375_6c6c;

/// A [`Check::Value`] as (tree, key, expected value).
type PointCheck<'a> = (Tree, &'a [u8], Option<&'a [u8]>);
/// A [`Check::Range`] as (tree, prefix, expected entries).
type RangeCheck<'a> = (Tree, &'a [u8], &'a [(Vec<u8>, Vec<u8>)]);

/// The channel commits notify on when they change a record of a [`Tree::cached`] tree
/// (payload `<tree id>:<hex key>`).
const CHANNEL: &str = "portcullis_cache";

pub struct PgEngine {
    /// The request pool.
    main: PgPool,
    /// The control connections ([`Engine::control`]): two, apart from `main`.
    control: Arc<PgPool>,
    invalidations: tokio::sync::broadcast::Sender<Invalidation>,
    /// True while the listening connection is listening.
    listening: std::sync::Arc<std::sync::atomic::AtomicBool>,
    listener: tokio::task::JoinHandle<()>,
}

impl Drop for PgEngine {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl From<tokio_postgres::Error> for EngineError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.code() {
            Some(c)
                if *c == SqlState::T_R_SERIALIZATION_FAILURE
                    || *c == SqlState::T_R_DEADLOCK_DETECTED
                    || *c == SqlState::UNIQUE_VIOLATION =>
            {
                EngineError::Conflict
            }
            // The server's message, never the connection string (it may hold a password).
            _ => EngineError::Store(match e.as_db_error() {
                Some(db) => format!("PostgreSQL: {}", db.message()),
                None => match std::error::Error::source(&e) {
                    Some(cause) => format!("PostgreSQL: {e}: {cause}"),
                    None => format!("PostgreSQL: {e}"),
                },
            }),
        }
    }
}

impl From<deadpool_postgres::PoolError> for EngineError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            e => EngineError::Store(format!("PostgreSQL connection pool: {e}")),
        }
    }
}

const GET: &str = "SELECT value FROM portcullis_kv WHERE tree = $1 AND key = $2";
const SCAN: &str = "SELECT key, value FROM portcullis_kv WHERE tree = $1 AND key >= $2 AND key < $3 ORDER BY key LIMIT $4";
const SCAN_OPEN: &str =
    "SELECT key, value FROM portcullis_kv WHERE tree = $1 AND key >= $2 ORDER BY key LIMIT $3";
const LOCK_UPDATE: &str = "SELECT value FROM portcullis_kv WHERE tree = $1 AND key = $2 FOR UPDATE";
const LOCK_SHARE: &str = "SELECT value FROM portcullis_kv WHERE tree = $1 AND key = $2 FOR SHARE";
const INSERT: &str = "INSERT INTO portcullis_kv (tree, key, value) VALUES ($1, $2, $3)";
const UPSERT: &str = "INSERT INTO portcullis_kv (tree, key, value) VALUES ($1, $2, $3) \
     ON CONFLICT (tree, key) DO UPDATE SET value = EXCLUDED.value";
const DELETE: &str = "DELETE FROM portcullis_kv WHERE tree = $1 AND key = $2";
/// The transaction's id (taken before COMMIT is sent, to read its outcome back if the answer is
/// lost) and the server process running it.
const IDENT: &str = "SELECT pg_current_xact_id()::text, pg_backend_pid()";
const STATUS: &str = "SELECT pg_xact_status($1::text::xid8)";
/// Tells the listening nodes what changed (delivered only if the transaction commits).
const NOTIFY: &str = "SELECT pg_notify($1, $2)";
/// `Write::Add`: two big-endian i64 counters, added to in place under the row's lock (a
/// concurrent add waits and then adds to the newer row; nothing conflicts).
macro_rules! add_sql {
    () => {
        "INSERT INTO portcullis_kv (tree, key, value) \
     VALUES ($1, $2, int8send(GREATEST($3::bigint, 0)) || int8send(GREATEST($4::bigint, 0))) \
     ON CONFLICT (tree, key) DO UPDATE SET value = \
     int8send(GREATEST(('x' || encode(substring(portcullis_kv.value from 1 for 8), 'hex'))::bit(64)::bigint + $3, 0)) || \
     int8send(GREATEST(('x' || encode(substring(portcullis_kv.value from 9 for 8), 'hex'))::bit(64)::bigint + $4, 0))"
    };
}
const ADD: &str = add_sql!();
/// `Write::Add` alone, in one statement (no transaction: the row is locked only while it runs,
/// which matters for the counters every write of a node touches), recording a random id in
/// `portcullis_commits` as it applies, so that a lost answer can be read back.
const ADD_MARKED: &str = concat!(
    "WITH marked AS (INSERT INTO portcullis_commits (id) VALUES ($5)) ",
    add_sql!()
);
/// Reads back a marked statement's outcome by taking its id: inserted, it never applied (and
/// now never will); already there, it did.
const TOMBSTONE: &str = "INSERT INTO portcullis_commits (id) VALUES ($1) ON CONFLICT DO NOTHING";
/// Ids older than this are forgotten (an outcome is read back within seconds of the loss, or
/// by a background task as soon as the database answers again).
const FORGET_MARKS: &str = "DELETE FROM portcullis_commits WHERE at < now() - interval '1 day'";
/// Ends the session still holding a transaction whose COMMIT answer was lost (waiting for a
/// COMMIT that never arrived, or about to notice its client is gone), so its outcome is settled
/// now; matched on the transaction id too, so a reused process id is never hit.
const END_SESSION: &str = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
     WHERE pid = $1 AND backend_xid = $2::text::xid8::xid";

/// What the engine is configured with (`[meta]`).
#[derive(Debug, Clone, Copy)]
pub struct PgOptions {
    /// Connections of the request pool.
    pub pool_size: usize,
    /// The bound of every call: the pool's wait, each query, each commit, and the read-back of
    /// a commit whose answer was lost.
    pub timeout: Duration,
}

#[cfg(test)]
impl PgOptions {
    /// A pool of `pool_size` with the default bound.
    pub(crate) fn testing(pool_size: usize) -> Self {
        Self {
            pool_size,
            timeout: Duration::from_secs(5),
        }
    }
}

impl PgEngine {
    /// Connects (`url` as libpq's `postgres://user:password@host:port/db`), then creates or
    /// migrates the schema under an advisory lock, so nodes starting together do it once.
    pub async fn connect(url: &str, opts: PgOptions) -> EngineResult<Self> {
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|e| EngineError::Store(format!("meta.url is not a PostgreSQL URL: {e}")))?;
        config.connect_timeout(opts.timeout.max(Duration::from_secs(1)));
        config.application_name("portcullis");
        // A partition or a frozen server breaks the connection within about the bound, not
        // after the kernel's retransmissions (~15 minutes).
        config.keepalives(true);
        config.keepalives_idle(opts.timeout.max(Duration::from_secs(1)));
        config.keepalives_interval(Duration::from_secs(1));
        config.keepalives_retries(3);
        config.tcp_user_timeout(opts.timeout);
        // The server's side of the same bound: no statement runs longer, and a session whose
        // client vanished mid-transaction does not hold its row locks for long.
        let ms = opts.timeout.as_millis();
        let server = format!(
            "-c statement_timeout={ms} -c idle_in_transaction_session_timeout={}",
            2 * ms
        );
        let options = match config.get_options() {
            Some(o) if !o.is_empty() => format!("{o} {server}"),
            _ => server,
        };
        config.options(options);
        let pool = |size: usize| {
            let manager = Manager::from_config(
                config.clone(),
                NoTls,
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            );
            Pool::builder(manager)
                .max_size(size)
                .runtime(Runtime::Tokio1)
                .wait_timeout(Some(opts.timeout))
                .create_timeout(Some(opts.timeout))
                .build()
                .map(|pool| PgPool {
                    pool,
                    timeout: opts.timeout,
                    commits: Default::default(),
                })
                .map_err(|e| EngineError::Store(format!("PostgreSQL connection pool: {e}")))
        };
        let control = Arc::new(pool(2)?);
        let main = pool(opts.pool_size)?;
        let (invalidations, _) = tokio::sync::broadcast::channel(4096);
        let listening = std::sync::Arc::default();
        let listener = tokio::spawn(listen(
            config,
            invalidations.clone(),
            Arc::clone(&listening),
        ));
        let this = Self {
            main,
            control,
            invalidations,
            listening,
            listener,
        };
        this.migrate().await?;
        Ok(this)
    }

    async fn migrate(&self) -> EngineResult<()> {
        let mut client = within(self.main.timeout, self.main.pool.get()).await??;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS portcullis_schema (version integer NOT NULL);
             CREATE TABLE IF NOT EXISTS portcullis_kv (
                 tree smallint NOT NULL,
                 key bytea NOT NULL,
                 value bytea NOT NULL,
                 PRIMARY KEY (tree, key)
             );
             CREATE TABLE IF NOT EXISTS portcullis_commits (
                 id bytea PRIMARY KEY,
                 at timestamptz NOT NULL DEFAULT now()
             );",
        )
        .await?;
        let found: Option<i32> = tx
            .query_opt("SELECT max(version) FROM portcullis_schema", &[])
            .await?
            .and_then(|r| r.get(0));
        match found {
            None => {
                tx.execute(
                    "INSERT INTO portcullis_schema (version) VALUES ($1)",
                    &[&SCHEMA_VERSION],
                )
                .await?;
            }
            Some(v) if v > SCHEMA_VERSION => {
                return Err(EngineError::Store(format!(
                    "the database holds schema version {v}, newer than this gateway's {SCHEMA_VERSION}; upgrade the gateway"
                )));
            }
            Some(_) => {}
        }
        tx.commit().await?;
        Ok(())
    }
}

/// Runs `f` within `bound`; a call that runs out of time is a store error (the future, and
/// the connection it holds, are dropped).
async fn within<T>(bound: Duration, f: impl Future<Output = T>) -> EngineResult<T> {
    tokio::time::timeout(bound, f).await.map_err(|_| {
        EngineError::Store(format!(
            "PostgreSQL did not answer within {} ms",
            bound.as_millis()
        ))
    })
}

/// A pooled connection that goes back to the pool only through [`Conn::done`]: one dropped
/// otherwise (an error, a timeout, a caller that gave up) may be mid-statement or
/// mid-transaction, so it is closed instead of reused.
struct Conn(Option<deadpool_postgres::Object>);

impl Conn {
    async fn get(pool: &Pool) -> EngineResult<Self> {
        Ok(Self(Some(pool.get().await?)))
    }

    fn done(mut self) {
        drop(self.0.take());
    }
}

impl std::ops::Deref for Conn {
    type Target = deadpool_postgres::Object;
    fn deref(&self) -> &Self::Target {
        self.0.as_ref().expect("a connection until done")
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            drop(deadpool_postgres::Object::take(c));
        }
    }
}

/// What one statement of a commit's pipeline returned.
enum Answer {
    Done,
    Ident(PendingCommit),
    Row(Option<Vec<u8>>),
    Rows(Vec<(Vec<u8>, Vec<u8>)>),
}

/// One commit on a connection of `pool`, bounded by `bound`, resolving a lost COMMIT answer.
async fn try_commit(pool: &Pool, batch: &Batch, bound: Duration) -> EngineResult<()> {
    let deadline = tokio::time::Instant::now() + bound;
    let left = || deadline.saturating_duration_since(tokio::time::Instant::now());
    let conn = within(left(), Conn::get(pool)).await??;
    if let (true, [Write::Add { tree, key, delta }]) =
        (batch.checks.is_empty(), batch.writes.as_slice())
    {
        let id: [u8; 16] = rand::random();
        let add = async {
            let stmt = conn.prepare_cached(ADD_MARKED).await?;
            conn.execute(
                &stmt,
                &[&tree.id(), key, &delta[0], &delta[1], &id.as_slice()],
            )
            .await
        };
        return match within(left(), add).await {
            Ok(Ok(_)) => {
                conn.done();
                Ok(())
            }
            Ok(Err(e)) if e.as_db_error().is_some() => Err(e.into()),
            _ => {
                drop(conn);
                resolve(pool, &PendingCommit::Marked { id }, bound).await
            }
        };
    }
    // Up to COMMIT: a failure or a timeout here leaves the transaction unable to apply (COMMIT
    // was never sent); the connection is dropped and the server rolls back.
    let pending = match within(left(), stage(&conn, batch)).await? {
        Ok(Some(pending)) => pending,
        Ok(None) => {
            // Returned to the pool only once rolled back; the server rolls back either way.
            if let Ok(Ok(())) = within(left(), conn.batch_execute("ROLLBACK")).await {
                conn.done();
            }
            return Err(EngineError::Conflict);
        }
        Err(e) => return Err(e),
    };
    match within(left(), conn.batch_execute("COMMIT")).await {
        Ok(Ok(())) => {
            conn.done();
            Ok(())
        }
        // The server answered: the transaction did not apply.
        Ok(Err(e)) if e.as_db_error().is_some() => Err(e.into()),
        Ok(Err(e)) => {
            drop(conn);
            tracing::warn!(error = %e, %pending, "the answer to a COMMIT was lost; reading back its outcome");
            resolve(pool, &pending, bound).await
        }
        Err(_) => {
            drop(conn);
            tracing::warn!(%pending, "a COMMIT was not answered in time; reading back its outcome");
            resolve(pool, &pending, bound).await
        }
    }
}

/// Sends everything of the commit up to COMMIT in one pipeline and reads the checks: the
/// transaction's id if they hold, `None` on a conflict (the transaction is then to be rolled
/// back).
async fn stage(
    client: &deadpool_postgres::Object,
    batch: &Batch,
) -> EngineResult<Option<PendingCommit>> {
    let targets: HashSet<(Tree, &[u8])> = batch.writes.iter().map(Write::target).collect();
    let written = |t: Tree, k: &[u8]| targets.contains(&(t, k));
    // Point checks, locked in (tree, key) order.
    let mut values: Vec<PointCheck<'_>> = batch
        .checks
        .iter()
        .filter_map(|c| match c {
            Check::Value { tree, key, expect } => Some((*tree, key.as_slice(), expect.as_deref())),
            Check::Range { .. } => None,
        })
        .collect();
    values.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let ranges: Vec<RangeCheck<'_>> = batch
        .checks
        .iter()
        .filter_map(|c| match c {
            Check::Range {
                tree,
                prefix,
                expect,
            } => Some((*tree, prefix.as_slice(), expect.as_slice())),
            Check::Value { .. } => None,
        })
        .collect();
    let absent: HashSet<(Tree, &[u8])> = values
        .iter()
        .filter(|v| v.2.is_none())
        .map(|v| (v.0, v.1))
        .collect();

    let tree_ids: Vec<i16> = values.iter().map(|v| v.0.id()).collect();
    let lock_params: Vec<[&(dyn ToSql + Sync); 2]> = values
        .iter()
        .zip(&tree_ids)
        .map(|(v, id)| [id as _, &v.1 as _])
        .collect();
    let range_ids: Vec<i16> = ranges.iter().map(|r| r.0.id()).collect();
    let range_ends: Vec<Option<Vec<u8>>> = ranges.iter().map(|r| prefix_end(r.1)).collect();
    let range_limits: Vec<i64> = ranges
        .iter()
        .map(|r| i64::try_from(r.2.len() + 1).unwrap_or(i64::MAX))
        .collect();
    let range_params: Vec<Vec<&(dyn ToSql + Sync)>> = ranges
        .iter()
        .enumerate()
        .map(|(i, r)| match &range_ends[i] {
            Some(end) => vec![
                &range_ids[i] as _,
                &r.1 as _,
                end as _,
                &range_limits[i] as _,
            ],
            None => vec![&range_ids[i] as _, &r.1 as _, &range_limits[i] as _],
        })
        .collect();
    let write_ids: Vec<i16> = batch.writes.iter().map(|w| w.target().0.id()).collect();
    let write_params: Vec<Vec<&(dyn ToSql + Sync)>> = batch
        .writes
        .iter()
        .zip(&write_ids)
        .map(|(w, id)| match w {
            Write::Put { key, value, .. } => vec![id as _, key as _, value as _],
            Write::Delete { key, .. } => vec![id as _, key as _],
            Write::Add { key, delta, .. } => {
                vec![id as _, key as _, &delta[0] as _, &delta[1] as _]
            }
        })
        .collect();
    // Delivered to every listening node when (and only if) the transaction commits.
    let payloads: Vec<String> = batch
        .writes
        .iter()
        .map(Write::target)
        .filter(|(tree, _)| tree.cached())
        .map(|(tree, key)| format!("{}:{}", tree.id(), hex::encode(key)))
        .collect();
    let note_params: Vec<[&(dyn ToSql + Sync); 2]> =
        payloads.iter().map(|p| [&CHANNEL as _, p as _]).collect();

    // The statement of each step.
    let lock_sql: Vec<&str> = values
        .iter()
        .map(|(tree, key, _)| {
            if written(*tree, key) {
                LOCK_UPDATE
            } else {
                LOCK_SHARE
            }
        })
        .collect();
    let range_sql: Vec<&str> = range_ends
        .iter()
        .map(|end| if end.is_some() { SCAN } else { SCAN_OPEN })
        .collect();
    let write_sql: Vec<&str> = batch
        .writes
        .iter()
        .map(|w| match w {
            Write::Put { tree, key, .. } if absent.contains(&(*tree, key.as_slice())) => INSERT,
            Write::Put { .. } => UPSERT,
            Write::Delete { .. } => DELETE,
            Write::Add { .. } => ADD,
        })
        .collect();
    let notify_sql = (!note_params.is_empty()).then_some(NOTIFY);
    // Each statement this commit uses prepared first (cached on the connection after its first
    // use), so that each future below sends its statement on its first poll, in this order.
    let mut prepared: std::collections::HashMap<&str, tokio_postgres::Statement> =
        std::collections::HashMap::new();
    let used = [IDENT]
        .into_iter()
        .chain(lock_sql.iter().copied())
        .chain(range_sql.iter().copied())
        .chain(write_sql.iter().copied())
        .chain(notify_sql);
    for sql in used {
        if !prepared.contains_key(sql) {
            prepared.insert(sql, client.prepare_cached(sql).await?);
        }
    }
    let prepared = &prepared;

    type Step<'a> = futures::future::BoxFuture<'a, Result<Answer, tokio_postgres::Error>>;
    let mut steps: Vec<Step<'_>> = Vec::new();
    let begin = if batch.ephemeral {
        "BEGIN; SET LOCAL synchronous_commit TO OFF"
    } else {
        "BEGIN"
    };
    steps.push(Box::pin(async move {
        client.batch_execute(begin).await.map(|()| Answer::Done)
    }));
    steps.push(Box::pin(async move {
        let row = client.query_one(&prepared[IDENT], &[]).await?;
        Ok(Answer::Ident(PendingCommit::Xact {
            xid: row.get(0),
            pid: row.get(1),
        }))
    }));
    for (sql, p) in lock_sql.iter().zip(&lock_params) {
        let stmt = &prepared[sql];
        steps.push(Box::pin(async move {
            let row = client.query_opt(stmt, p).await?;
            Ok(Answer::Row(row.map(|r| r.get(0))))
        }));
    }
    for (sql, p) in range_sql.iter().zip(&range_params) {
        let stmt = &prepared[sql];
        steps.push(Box::pin(async move {
            let rows = client.query(stmt, p).await?;
            Ok(Answer::Rows(
                rows.into_iter().map(|r| (r.get(0), r.get(1))).collect(),
            ))
        }));
    }
    for (sql, p) in write_sql.iter().zip(&write_params) {
        let stmt = &prepared[sql];
        steps.push(Box::pin(async move {
            client.execute(stmt, p).await.map(|_| Answer::Done)
        }));
    }
    for p in &note_params {
        steps.push(Box::pin(async move {
            client
                .execute(&prepared[NOTIFY], p)
                .await
                .map(|_| Answer::Done)
        }));
    }
    // Sent in order on the one connection (each step's first poll sends it) and executed in
    // that order: the locks are taken before anything is written. A write that fails (a lost
    // insert race: a unique violation) aborts the transaction and is a conflict.
    let answers = match futures::future::try_join_all(steps).await {
        Ok(a) => a,
        Err(e) => {
            let e = EngineError::from(e);
            return match e {
                EngineError::Conflict => Ok(None),
                e => Err(e),
            };
        }
    };
    let mut answers = answers.into_iter();
    let (Some(Answer::Done), Some(Answer::Ident(pending))) = (answers.next(), answers.next())
    else {
        return Err(EngineError::Store("PostgreSQL: unexpected answers".into()));
    };
    for (_, _, expect) in &values {
        let Some(Answer::Row(have)) = answers.next() else {
            return Err(EngineError::Store("PostgreSQL: unexpected answers".into()));
        };
        if have.as_deref() != *expect {
            return Ok(None);
        }
    }
    for (_, _, expect) in &ranges {
        let Some(Answer::Rows(rows)) = answers.next() else {
            return Err(EngineError::Store("PostgreSQL: unexpected answers".into()));
        };
        if rows != *expect {
            return Ok(None);
        }
    }
    Ok(Some(pending))
}

/// Reads back whether the commit of `pending` applied, retrying until the server answers or
/// `bound` passes: `Ok` if it applied, a store error if it did not, `Unknown` if no answer came.
async fn resolve(pool: &Pool, pending: &PendingCommit, bound: Duration) -> EngineResult<()> {
    let deadline = tokio::time::Instant::now() + bound;
    let mut pause = Duration::from_millis(10);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if let Ok(Ok(Some(applied))) = within(left, outcome_once(pool, pending)).await {
            return if applied {
                tracing::info!(%pending, "a commit whose answer was lost had applied");
                Ok(())
            } else {
                Err(EngineError::Store(format!(
                    "PostgreSQL: the connection broke during the COMMIT of {pending}, which did not apply"
                )))
            };
        }
        if tokio::time::Instant::now() + pause >= deadline {
            return Err(EngineError::Unknown(pending.clone()));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// One reading of a pending commit's outcome: `None` while its transaction is still in progress
/// (its session is ended, so the next reading settles it).
async fn outcome_once(pool: &Pool, pending: &PendingCommit) -> EngineResult<Option<bool>> {
    let conn = Conn::get(pool).await?;
    let (xid, pid) = match pending {
        PendingCommit::Xact { xid, pid } => (xid, pid),
        PendingCommit::Marked { id } => {
            // Waits for a statement still holding the id, then decides for good: the id was
            // there (applied), or this row now stands in its way (it never will).
            let stmt = conn.prepare_cached(TOMBSTONE).await?;
            let inserted = conn.execute(&stmt, &[&id.as_slice()]).await?;
            conn.done();
            return Ok(Some(inserted == 0));
        }
    };
    let row = conn.query_one(STATUS, &[xid]).await?;
    let status: Option<String> = row.get(0);
    let answer = match status.as_deref() {
        Some("committed") => Some(true),
        Some("aborted") => Some(false),
        Some(_) => {
            conn.execute(END_SESSION, &[pid, xid]).await?;
            None
        }
        // Too old for the commit log: cannot happen within a resolution's bound.
        None => {
            return Err(EngineError::Store(format!(
                "PostgreSQL no longer knows {pending}"
            )));
        }
    };
    conn.done();
    Ok(answer)
}

/// Keeps one connection listening on [`CHANNEL`] and passes what other nodes' commits changed
/// to the caches. While it is not listening (at start, after a broken connection) the caches
/// are told to `Suspend`: a missed notification must not leave a revoked key usable.
async fn listen(
    config: tokio_postgres::Config,
    out: tokio::sync::broadcast::Sender<Invalidation>,
    listening: Arc<AtomicBool>,
) {
    use futures::StreamExt;
    let mut pause = Duration::from_millis(100);
    loop {
        if let Ok((client, mut conn)) = config.connect(NoTls).await {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let pump = tokio::spawn(async move {
                let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
                while let Some(Ok(m)) = messages.next().await {
                    if let tokio_postgres::AsyncMessage::Notification(n) = m {
                        let _ = tx.send(n.payload().to_string());
                    }
                }
            });
            if client
                .batch_execute(&format!("LISTEN {CHANNEL}"))
                .await
                .is_ok()
            {
                listening.store(true, Ordering::SeqCst);
                let _ = out.send(Invalidation::Resume);
                pause = Duration::from_millis(100);
                while let Some(payload) = rx.recv().await {
                    if let Some(inv) = parse_note(&payload) {
                        let _ = out.send(inv);
                    }
                }
            }
            pump.abort();
            listening.store(false, Ordering::SeqCst);
            let _ = out.send(Invalidation::Suspend);
            tracing::warn!(
                "the cache invalidation connection to PostgreSQL broke; caching is off until it is back"
            );
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

fn parse_note(payload: &str) -> Option<Invalidation> {
    let (tree, key) = payload.split_once(':')?;
    let tree = Tree::from_id(tree.parse().ok()?)?;
    Some(Invalidation::Key(tree, hex::decode(key).ok()?))
}

/// Up to `limit` rows of `tree` under `prefix` from `from`, on any client or transaction.
async fn scan_in(
    client: &impl deadpool_postgres::GenericClient,
    tree: Tree,
    prefix: &[u8],
    from: &[u8],
    limit: usize,
) -> EngineResult<Vec<(Vec<u8>, Vec<u8>)>> {
    let from = if from < prefix { prefix } else { from };
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = match prefix_end(prefix) {
        Some(end) => {
            let stmt = client.prepare_cached(SCAN).await?;
            client
                .query(&stmt, &[&tree.id(), &from, &end, &limit])
                .await?
        }
        None => {
            let stmt = client.prepare_cached(SCAN_OPEN).await?;
            client.query(&stmt, &[&tree.id(), &from, &limit]).await?
        }
    };
    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
}

#[async_trait]
impl Engine for PgEngine {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn get(&self, tree: Tree, key: &[u8]) -> EngineResult<Option<Vec<u8>>> {
        self.main.get(tree, key).await
    }

    async fn scan(
        &self,
        tree: Tree,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
    ) -> EngineResult<Vec<(Vec<u8>, Vec<u8>)>> {
        self.main.scan(tree, prefix, from, limit).await
    }

    async fn commit(&self, batch: Batch) -> EngineResult<()> {
        self.main.commit(batch).await
    }

    async fn outcome(&self, pending: &PendingCommit) -> EngineResult<bool> {
        self.main.outcome(pending).await
    }

    fn invalidations(&self) -> Option<(tokio::sync::broadcast::Receiver<Invalidation>, bool)> {
        let rx = self.invalidations.subscribe();
        Some((rx, self.listening.load(Ordering::SeqCst)))
    }

    fn control(&self) -> Option<Arc<dyn Engine>> {
        Some(self.control.clone())
    }

    fn flush_ticket(&self) -> FlushTicket {
        self.main.flush_ticket()
    }

    async fn persist(&self, ticket: FlushTicket) -> EngineResult<()> {
        self.main.persist(ticket).await
    }
}

/// The database over one pool of connections: the request pool of a [`PgEngine`], and its
/// control connections ([`Engine::control`], which read no cached tree and so need no
/// invalidations).
pub struct PgPool {
    pool: Pool,
    timeout: Duration,
    /// Commits so far: every 10 000th forgets the old ids of `portcullis_commits`.
    commits: std::sync::atomic::AtomicU64,
}

#[cfg(test)]
impl PgEngine {
    /// Takes every connection of the request pool (as requests saturating it would).
    pub(crate) async fn hold_pool(&self) -> Vec<deadpool_postgres::Object> {
        let mut held = Vec::new();
        while let Ok(c) =
            tokio::time::timeout(Duration::from_millis(200), self.main.pool.get()).await
        {
            held.push(c.expect("a pooled connection"));
        }
        held
    }
}

#[async_trait]
impl Engine for PgPool {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn get(&self, tree: Tree, key: &[u8]) -> EngineResult<Option<Vec<u8>>> {
        within(self.timeout, async {
            let conn = Conn::get(&self.pool).await?;
            let stmt = conn.prepare_cached(GET).await?;
            let row = conn.query_opt(&stmt, &[&tree.id(), &key]).await?;
            conn.done();
            Ok(row.map(|r| r.get(0)))
        })
        .await?
    }

    async fn scan(
        &self,
        tree: Tree,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
    ) -> EngineResult<Vec<(Vec<u8>, Vec<u8>)>> {
        within(self.timeout, async {
            let conn = Conn::get(&self.pool).await?;
            let rows = scan_in(&*conn, tree, prefix, from, limit).await?;
            conn.done();
            Ok(rows)
        })
        .await?
    }

    async fn commit(&self, batch: Batch) -> EngineResult<()> {
        if self
            .commits
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(10_000)
        {
            let pool = self.pool.clone();
            tokio::spawn(async move {
                if let Ok(c) = pool.get().await
                    && let Err(e) = c.execute(FORGET_MARKS, &[]).await
                {
                    tracing::warn!(error = %e, "could not forget old commit ids");
                }
            });
        }
        try_commit(&self.pool, &batch, self.timeout).await
    }

    async fn outcome(&self, pending: &PendingCommit) -> EngineResult<bool> {
        match within(self.timeout, outcome_once(&self.pool, pending)).await {
            Ok(Ok(Some(applied))) => Ok(applied),
            _ => Err(EngineError::Unknown(pending.clone())),
        }
    }

    /// Commits are durable when they return: every ticket is covered.
    fn flush_ticket(&self) -> FlushTicket {
        FlushTicket(0)
    }

    async fn persist(&self, _ticket: FlushTicket) -> EngineResult<()> {
        Ok(())
    }
}
