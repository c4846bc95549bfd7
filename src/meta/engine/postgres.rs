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
//! (`synchronous_commit` as the server has it).

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
    Batch, Check, Engine, EngineError, EngineResult, FlushTicket, Invalidation, Tree, Write,
    prefix_end,
};

/// Bumped when the schema changes; `migrate` brings an older database up to it.
const SCHEMA_VERSION: i32 = 1;

/// Serialises schema migrations of nodes starting together (an arbitrary, fixed lock id).
const MIGRATION_LOCK: i64 = 0x706f_7274_6375_6c6c;

/// A [`Check::Value`] as (tree, key, expected value).
type PointCheck<'a> = (Tree, &'a [u8], Option<&'a [u8]>);

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
/// `Write::Add`: two big-endian i64 counters, added to in place under the row's lock (a
/// concurrent add waits and then adds to the newer row; nothing conflicts).
const ADD: &str = "INSERT INTO portcullis_kv (tree, key, value) \
     VALUES ($1, $2, int8send(GREATEST($3::bigint, 0)) || int8send(GREATEST($4::bigint, 0))) \
     ON CONFLICT (tree, key) DO UPDATE SET value = \
     int8send(GREATEST(('x' || encode(substring(portcullis_kv.value from 1 for 8), 'hex'))::bit(64)::bigint + $3, 0)) || \
     int8send(GREATEST(('x' || encode(substring(portcullis_kv.value from 9 for 8), 'hex'))::bit(64)::bigint + $4, 0))";

impl PgEngine {
    /// Connects (`url` as libpq's `postgres://user:password@host:port/db`), then creates or
    /// migrates the schema under an advisory lock, so nodes starting together do it once.
    pub async fn connect(url: &str, pool_size: usize) -> EngineResult<Self> {
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|e| EngineError::Store(format!("meta.url is not a PostgreSQL URL: {e}")))?;
        config.connect_timeout(Duration::from_secs(10));
        config.application_name("portcullis");
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
                .wait_timeout(Some(Duration::from_secs(30)))
                .create_timeout(Some(Duration::from_secs(10)))
                .build()
                .map_err(|e| EngineError::Store(format!("PostgreSQL connection pool: {e}")))
        };
        let control = Arc::new(PgPool { pool: pool(2)? });
        let main = PgPool {
            pool: pool(pool_size)?,
        };
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
        let mut client = self.main.pool.get().await?;
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

/// One commit on a connection of `pool`.
async fn try_commit(pool: &Pool, batch: &Batch) -> EngineResult<()> {
    let mut client = pool.get().await?;
    // One addition and nothing to check (a write counting itself in flight): one statement,
    // atomic by itself, one round trip instead of a transaction's three.
    if let (true, [Write::Add { tree, key, delta }]) =
        (batch.checks.is_empty(), batch.writes.as_slice())
    {
        let add = client.prepare_cached(ADD).await?;
        client
            .execute(&add, &[&tree.id(), key, &delta[0], &delta[1]])
            .await?;
        return Ok(());
    }
    let tx = client.transaction().await?;
    if batch.ephemeral {
        tx.batch_execute("SET LOCAL synchronous_commit TO OFF")
            .await?;
    }
    let targets: HashSet<(Tree, &[u8])> = batch.writes.iter().map(Write::target).collect();
    let written = |t: Tree, k: &[u8]| targets.contains(&(t, k));

    // Point checks first, locked in (tree, key) order.
    let mut values: Vec<PointCheck<'_>> = batch
        .checks
        .iter()
        .filter_map(|c| match c {
            Check::Value { tree, key, expect } => Some((*tree, key.as_slice(), expect.as_deref())),
            Check::Range { .. } => None,
        })
        .collect();
    values.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    let lock_update = tx.prepare_cached(LOCK_UPDATE).await?;
    let lock_share = tx.prepare_cached(LOCK_SHARE).await?;
    let ids: Vec<i16> = values.iter().map(|v| v.0.id()).collect();
    let params: Vec<[&(dyn ToSql + Sync); 2]> = values
        .iter()
        .zip(&ids)
        .map(|(v, id)| [id as _, &v.1 as _])
        .collect();
    // Pipelined on the one connection, executed in the order sent.
    let locks = values.iter().zip(&params).map(|((tree, key, _), p)| {
        let stmt = if written(*tree, key) {
            &lock_update
        } else {
            &lock_share
        };
        tx.query_opt(stmt, p)
    });
    let found = futures::future::try_join_all(locks).await?;
    for ((_, _, expect), row) in values.iter().zip(found) {
        let have: Option<Vec<u8>> = row.map(|r| r.get(0));
        if have.as_deref() != *expect {
            return Err(EngineError::Conflict);
        }
    }

    for check in &batch.checks {
        let Check::Range {
            tree,
            prefix,
            expect,
        } = check
        else {
            continue;
        };
        let rows = scan_in(&tx, *tree, prefix, prefix, expect.len() + 1).await?;
        if rows != *expect {
            return Err(EngineError::Conflict);
        }
    }

    let insert = tx.prepare_cached(INSERT).await?;
    let upsert = tx.prepare_cached(UPSERT).await?;
    let delete = tx.prepare_cached(DELETE).await?;
    let add = tx.prepare_cached(ADD).await?;
    let absent: HashSet<(Tree, &[u8])> = values
        .iter()
        .filter(|v| v.2.is_none())
        .map(|v| (v.0, v.1))
        .collect();
    let ids: Vec<i16> = batch.writes.iter().map(|w| w.target().0.id()).collect();
    let params: Vec<Vec<&(dyn ToSql + Sync)>> = batch
        .writes
        .iter()
        .zip(&ids)
        .map(|(w, id)| match w {
            Write::Put { key, value, .. } => vec![id as _, key as _, value as _],
            Write::Delete { key, .. } => vec![id as _, key as _],
            Write::Add { key, delta, .. } => {
                vec![id as _, key as _, &delta[0] as _, &delta[1] as _]
            }
        })
        .collect();
    let writes = batch.writes.iter().zip(&params).map(|(w, p)| {
        let stmt = match w {
            Write::Put { tree, key, .. } if absent.contains(&(*tree, key.as_slice())) => &insert,
            Write::Put { .. } => &upsert,
            Write::Delete { .. } => &delete,
            Write::Add { .. } => &add,
        };
        tx.execute(stmt, p)
    });
    futures::future::try_join_all(writes).await?;
    // Delivered to every listening node when (and only if) the transaction commits.
    let notify = tx.prepare_cached("SELECT pg_notify($1, $2)").await?;
    let payloads: Vec<String> = batch
        .writes
        .iter()
        .map(Write::target)
        .filter(|(tree, _)| tree.cached())
        .map(|(tree, key)| format!("{}:{}", tree.id(), hex::encode(key)))
        .collect();
    let params: Vec<[&(dyn ToSql + Sync); 2]> =
        payloads.iter().map(|p| [&CHANNEL as _, p as _]).collect();
    let notes = params.iter().map(|p| tx.execute(&notify, p));
    futures::future::try_join_all(notes).await?;
    tx.commit().await?;
    Ok(())
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
        let client = self.pool.get().await?;
        let stmt = client.prepare_cached(GET).await?;
        let row = client.query_opt(&stmt, &[&tree.id(), &key]).await?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn scan(
        &self,
        tree: Tree,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
    ) -> EngineResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let client = self.pool.get().await?;
        scan_in(&client, tree, prefix, from, limit).await
    }

    async fn commit(&self, batch: Batch) -> EngineResult<()> {
        try_commit(&self.pool, &batch).await
    }

    /// Commits are durable when they return: every ticket is covered.
    fn flush_ticket(&self) -> FlushTicket {
        FlushTicket(0)
    }

    async fn persist(&self, _ticket: FlushTicket) -> EngineResult<()> {
        Ok(())
    }
}
