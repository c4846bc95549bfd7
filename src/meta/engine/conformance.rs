//! The engine conformance suite: the same tests, unchanged, against every engine. The
//! PostgreSQL run needs a server: `PORTCULLIS_TEST_PG` names a database URL of a role that may
//! create databases (scripts/pg.sh starts one and sets it; scripts/test.sh always does), and each
//! test gets a database of its own.

use std::future::Future;
use std::sync::Arc;

use super::postgres::PgEngine;
use super::sled::SledEngine;
use super::*;

/// Where an engine's data lives, so that a test can open it again (a restart).
enum Place {
    Sled(tempfile::TempDir),
    Postgres(String),
}

impl Place {
    async fn open(&self) -> Arc<dyn Engine> {
        match self {
            Place::Sled(dir) => {
                // sled's flusher thread lets go of the directory's lock a moment after the last
                // handle is dropped (a restarted process never meets that).
                let mut tries = 0;
                loop {
                    match SledEngine::open(dir.path(), true, 8 << 20) {
                        Ok(e) => return Arc::new(e),
                        Err(_) if tries < 100 => {
                            tries += 1;
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            }
            Place::Postgres(url) => Arc::new(
                PgEngine::connect(url, crate::meta::engine::postgres::PgOptions::testing(8))
                    .await
                    .unwrap(),
            ),
        }
    }
}

/// A fresh, empty PostgreSQL database on the test server; its URL.
pub(crate) async fn fresh_pg_database() -> String {
    let admin = std::env::var("PORTCULLIS_TEST_PG").expect(
        "PORTCULLIS_TEST_PG is not set: run the tests through scripts/test.sh, or `source scripts/pg.sh` first",
    );
    let name = format!("t_{}", ulid::Ulid::new().to_string().to_lowercase());
    let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    drop(client);
    let _ = conn.await;
    let (base, _) = admin.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

async fn both<F, Fut>(test: F)
where
    F: Fn(Place) -> Fut,
    Fut: Future<Output = ()>,
{
    test(Place::Sled(tempfile::tempdir().unwrap())).await;
    test(Place::Postgres(fresh_pg_database().await)).await;
}

fn put(tree: Tree, key: &[u8], value: &[u8]) -> Write {
    Write::Put {
        tree,
        key: key.to_vec(),
        value: value.to_vec(),
    }
}

async fn put_all(e: &dyn Engine, tree: Tree, keys: &[&[u8]]) {
    let writes = keys.iter().map(|k| put(tree, k, b"v")).collect();
    e.commit(Batch {
        ephemeral: false,
        coordination: false,
        checks: vec![],
        writes,
    })
    .await
    .unwrap();
}

async fn keys(
    e: &dyn Engine,
    tree: Tree,
    prefix: &[u8],
    from: &[u8],
    limit: usize,
) -> Vec<Vec<u8>> {
    e.scan(tree, prefix, from, limit)
        .await
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

/// S3 lists keys in the byte order of their UTF-8; NUL, 0xFF (never in UTF-8, used by cursors),
/// `/` and multi-byte characters must sort as bytes, whatever a database's collation says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_scan_in_byte_order() {
    both(async |place| {
        let e = place.open().await;
        let mut want: Vec<&[u8]> = vec![
            b"a",
            b"a\0",
            b"a\0b",
            b"a/",
            b"a/b",
            b"aB",
            b"ab",
            "aé".as_bytes(),
            "a\u{10FFFF}".as_bytes(),
            b"a\xff",
            b"a\xff\xff",
            b"B",
            b"\0",
            b"\xff",
            "Ω".as_bytes(),
        ];
        put_all(&*e, Tree::Objects, &want).await;
        put_all(&*e, Tree::Pending, &[b"a/other-tree"]).await;
        want.sort();
        assert_eq!(keys(&*e, Tree::Objects, b"", b"", 100).await, want);
        // A prefix ending in 0xFF has no simple upper bound.
        assert_eq!(
            keys(&*e, Tree::Objects, b"a\xff", b"", 100).await,
            [b"a\xff".to_vec(), b"a\xff\xff".to_vec()]
        );
        assert_eq!(
            keys(&*e, Tree::Objects, b"\xff", b"", 100).await,
            [b"\xff".to_vec()]
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_scans_honour_prefix_start_and_limit() {
    both(async |place| {
        let e = place.open().await;
        put_all(&*e, Tree::Objects, &[b"p/1", b"p/2", b"p/3", b"p0", b"q"]).await;
        assert_eq!(
            keys(&*e, Tree::Objects, b"p/", b"", 10).await,
            [b"p/1".to_vec(), b"p/2".to_vec(), b"p/3".to_vec()]
        );
        // `from` is inclusive; before the prefix it means the prefix's start.
        assert_eq!(
            keys(&*e, Tree::Objects, b"p/", b"p/2", 10).await,
            [b"p/2".to_vec(), b"p/3".to_vec()]
        );
        assert_eq!(
            keys(&*e, Tree::Objects, b"p/", b"a", 1).await,
            [b"p/1".to_vec()]
        );
        assert!(keys(&*e, Tree::Objects, b"p/", b"p/4", 10).await.is_empty());
        assert!(keys(&*e, Tree::Objects, b"r", b"", 10).await.is_empty());
        assert_eq!(
            e.get(Tree::Objects, b"q").await.unwrap(),
            Some(b"v".to_vec())
        );
        assert_eq!(e.get(Tree::Objects, b"p").await.unwrap(), None);
        assert_eq!(e.get(Tree::Pending, b"q").await.unwrap(), None);
    })
    .await;
}

/// Two commits that read the same key: the first wins, the second is refused with `Conflict`
/// and, reading again, sees the first one's effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_check_is_a_conflict_and_a_retry_sees_the_winner() {
    both(async |place| {
        let e = place.open().await;
        let claim = |v: &[u8]| Batch {
            ephemeral: false,
            coordination: false,
            checks: vec![Check::Value {
                tree: Tree::Buckets,
                key: b"k".to_vec(),
                expect: None,
            }],
            writes: vec![put(Tree::Buckets, b"k", v)],
        };
        e.commit(claim(b"first")).await.unwrap();
        assert!(matches!(
            e.commit(claim(b"second")).await,
            Err(EngineError::Conflict)
        ));
        let seen = e.get(Tree::Buckets, b"k").await.unwrap();
        assert_eq!(seen.as_deref(), Some(&b"first"[..]));
        let replace = Batch {
            ephemeral: false,
            coordination: false,
            checks: vec![Check::Value {
                tree: Tree::Buckets,
                key: b"k".to_vec(),
                expect: seen,
            }],
            writes: vec![Write::Delete {
                tree: Tree::Buckets,
                key: b"k".to_vec(),
            }],
        };
        e.commit(replace.clone()).await.unwrap();
        assert_eq!(e.get(Tree::Buckets, b"k").await.unwrap(), None);
        // The same batch again: its check is stale now.
        assert!(matches!(
            e.commit(replace).await,
            Err(EngineError::Conflict)
        ));
        // Nothing of a refused batch is applied.
        let refused = Batch {
            ephemeral: false,
            coordination: false,
            checks: vec![Check::Value {
                tree: Tree::Buckets,
                key: b"k".to_vec(),
                expect: Some(b"x".to_vec()),
            }],
            writes: vec![put(Tree::Objects, b"side-effect", b"1")],
        };
        assert!(e.commit(refused).await.is_err());
        assert_eq!(e.get(Tree::Objects, b"side-effect").await.unwrap(), None);
    })
    .await;
}

/// A range check fails when a key appears in (or leaves) the range after it was read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_check_sees_keys_that_arrived_or_left() {
    both(async |place| {
        let e = place.open().await;
        put_all(&*e, Tree::Parts, &[b"u1/1"]).await;
        let seen = e.scan(Tree::Parts, b"u1/", b"", 10).await.unwrap();
        let guarded = || Batch {
            ephemeral: false,
            coordination: false,
            checks: vec![Check::Range {
                tree: Tree::Parts,
                prefix: b"u1/".to_vec(),
                expect: seen.clone(),
            }],
            writes: vec![put(Tree::Objects, b"done", b"1")],
        };
        put_all(&*e, Tree::Parts, &[b"u1/2", b"u2/1"]).await;
        assert!(matches!(
            e.commit(guarded()).await,
            Err(EngineError::Conflict)
        ));
        e.commit(Batch {
            ephemeral: false,
            coordination: false,
            checks: vec![],
            writes: vec![Write::Delete {
                tree: Tree::Parts,
                key: b"u1/2".to_vec(),
            }],
        })
        .await
        .unwrap();
        e.commit(guarded()).await.unwrap();
        let empty = Batch {
            ephemeral: false,
            coordination: false,
            checks: vec![Check::Range {
                tree: Tree::Parts,
                prefix: b"u3/".to_vec(),
                expect: vec![],
            }],
            writes: vec![],
        };
        e.commit(empty).await.unwrap();
    })
    .await;
}

/// Many tasks incrementing one counter by read-check-write with retries: no increment is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_lose_no_update() {
    both(async |place| {
        let e = place.open().await;
        let tasks = (0..8).map(|_| {
            let e = e.clone();
            tokio::spawn(async move {
                for _ in 0..15 {
                    loop {
                        let cur = e.get(Tree::Usage, b"n").await.unwrap();
                        let n = cur
                            .as_deref()
                            .map_or(0, |v| u64::from_be_bytes(v.try_into().unwrap()));
                        let batch = Batch {
                            ephemeral: false,
                            coordination: false,
                            checks: vec![Check::Value {
                                tree: Tree::Usage,
                                key: b"n".to_vec(),
                                expect: cur,
                            }],
                            writes: vec![put(Tree::Usage, b"n", &(n + 1).to_be_bytes())],
                        };
                        match e.commit(batch).await {
                            Ok(()) => break,
                            Err(EngineError::Conflict) => continue,
                            Err(other) => panic!("{other}"),
                        }
                    }
                }
            })
        });
        for t in futures::future::join_all(tasks).await {
            t.unwrap();
        }
        let n = e.get(Tree::Usage, b"n").await.unwrap().unwrap();
        assert_eq!(u64::from_be_bytes(n.try_into().unwrap()), 120);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_data_survives_a_reopen() {
    both(async |place| {
        {
            let e = place.open().await;
            put_all(&*e, Tree::Tenants, &[b"t1", b"t2"]).await;
            e.persist(e.flush_ticket()).await.unwrap();
        }
        let e = place.open().await;
        assert_eq!(
            keys(&*e, Tree::Tenants, b"", b"", 10).await,
            [b"t1".to_vec(), b"t2".to_vec()]
        );
        assert!(e.is_empty(Tree::Buckets).await.unwrap());
        assert!(!e.is_empty(Tree::Tenants).await.unwrap());
    })
    .await;
}

/// Counter additions from many tasks at once, with no check: none is lost, none conflicts, and
/// a counter never goes below zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_adds_commute_and_clamp_at_zero() {
    both(async |place| {
        let e = place.open().await;
        let add = |delta: [i64; 2]| Batch {
            ephemeral: false,
            coordination: false,
            checks: vec![],
            writes: vec![Write::Add {
                tree: Tree::Usage,
                key: b"u".to_vec(),
                delta,
            }],
        };
        let tasks = (0..8).map(|_| {
            let e = e.clone();
            tokio::spawn(async move {
                for _ in 0..15 {
                    e.commit(add([100, 1])).await.unwrap();
                }
            })
        });
        for t in futures::future::join_all(tasks).await {
            t.unwrap();
        }
        let v = e.get(Tree::Usage, b"u").await.unwrap();
        assert_eq!(counters(v.as_deref()), [12_000, 120]);
        e.commit(add([-12_500, -1])).await.unwrap();
        let v = e.get(Tree::Usage, b"u").await.unwrap();
        assert_eq!(counters(v.as_deref()), [0, 119], "clamped at zero");
        // An absent key starts from zero.
        e.commit(Batch {
            ephemeral: false,
            coordination: false,
            checks: vec![],
            writes: vec![Write::Add {
                tree: Tree::Usage,
                key: b"fresh".to_vec(),
                delta: [-5, 7],
            }],
        })
        .await
        .unwrap();
        let v = e.get(Tree::Usage, b"fresh").await.unwrap();
        assert_eq!(counters(v.as_deref()), [0, 7]);
    })
    .await;
}
