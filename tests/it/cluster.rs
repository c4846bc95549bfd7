//! Several gateway processes on one PostgreSQL database and one S3-compatible backend (moto):
//! clients that send each request to any node see what one node would show, quotas are exact
//! across nodes, a revoked key stops everywhere, and a node killed mid-work loses nothing and
//! leaves nothing held.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::CompletedPart;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::harness::{
    ACME, ADMIN_TOKEN, Proc, Setup, body_of, code, complete, config_setup, data, pg_database,
    raw_put_head, tenant_usage,
};
use crate::services::{Kind, Service};

const MIB: usize = 1024 * 1024;

/// The timings of the test clusters: a dead node is noticed within 1.5 s, a dead worker's lease
/// within 1 s of its last renewal.
const CLUSTER: &str =
    "[cluster]\nheartbeat_ms = 200\nnode_timeout_ms = 1500\nlease_secs = 1\nfast_reserve_mb = 1\n";

struct Cluster {
    nodes: Vec<Option<Proc>>,
    _dirs: Vec<tempfile::TempDir>,
    _backend: Service,
}

impl Cluster {
    /// `n` nodes on a fresh database and one moto, started at the same time (the schema is
    /// created once, under the migration lock). `acme`: lines of acme's tenant table; `tail`:
    /// more tables (a scanner).
    async fn start(n: usize, acme: &str, tail: &str) -> Self {
        Self::start_timed(n, acme, tail, CLUSTER).await
    }

    /// As `start`, with the `[cluster]` table `timing`.
    async fn start_timed(n: usize, acme: &str, tail: &str, timing: &str) -> Self {
        let backend = Service::start(Kind::Moto).await;
        let meta = format!(
            "[meta]\nengine = \"postgres\"\nurl = \"{}\"\npool_size = 8\n{timing}",
            pg_database()
        );
        let tail = format!("{}{tail}", backend.backend_toml("remote", ""));
        let dirs: Vec<_> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
        let configs: Vec<_> = dirs
            .iter()
            .map(|d| {
                let setup = Setup {
                    storage: "default_backend = \"remote\"",
                    sweeper: "interval_secs = 1\ngrace_secs = 0",
                    acme,
                    tail: &tail,
                    meta: &meta,
                    ..Default::default()
                };
                let config = d.path().join("portcullis.toml");
                std::fs::write(&config, config_setup(&d.path().join("data"), &setup)).unwrap();
                config
            })
            .collect();
        let nodes = std::thread::scope(|s| {
            let started: Vec<_> = configs
                .iter()
                .map(|c| s.spawn(move || Proc::start_config(c)))
                .collect();
            started
                .into_iter()
                .map(|h| Some(h.join().unwrap()))
                .collect()
        });
        Self {
            nodes,
            _dirs: dirs,
            _backend: backend,
        }
    }

    fn node(&self, i: usize) -> &Proc {
        self.nodes[i].as_ref().expect("a running node")
    }

    fn s3(&self, i: usize) -> aws_sdk_s3::Client {
        crate::harness::client(&self.node(i).endpoint(), ACME)
    }

    fn admin(&self, i: usize) -> SocketAddr {
        self.node(i).admin
    }

    fn live(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_some())
            .collect()
    }

    /// A client of a node picked at random among the live ones.
    fn any(&self) -> aws_sdk_s3::Client {
        let live = self.live();
        self.s3(live[rand::random_range(0..live.len())])
    }

    fn kill9(&mut self, i: usize) {
        self.nodes[i].take().unwrap().kill9();
    }

    fn config(&self, i: usize) -> std::path::PathBuf {
        self._dirs[i].path().join("portcullis.toml")
    }
}

async fn admin(addr: SocketAddr, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("http://{addr}{path}"))
        .bearer_auth(ADMIN_TOKEN);
    if !body.is_null() {
        req = req.json(&body);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn health(addr: SocketAddr) -> Value {
    admin(addr, reqwest::Method::GET, "/health", Value::Null)
        .await
        .1
}

/// Waits (up to `secs`) for `check` to hold of the admin answer of `path`.
async fn wait_for(
    addr: SocketAddr,
    path: &str,
    secs: u64,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (_, v) = admin(addr, reqwest::Method::GET, path, Value::Null).await;
        if check(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never satisfied the check: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn put(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    body: Vec<u8>,
) -> Result<(), String> {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body))
        .send()
        .await
        .map(|_| ())
        .map_err(|e| code::<(), _>(Err(e)))
}

async fn keys(s3: &aws_sdk_s3::Client, bucket: &str) -> Vec<String> {
    s3.list_objects_v2()
        .bucket(bucket)
        .send()
        .await
        .unwrap()
        .contents()
        .iter()
        .map(|o| o.key().unwrap().to_string())
        .collect()
}

/// Requests sent to random nodes read their own writes: PUT, GET, LIST, DELETE, and a multipart
/// upload whose parts go to three different nodes. Every node lists the three, and one holds
/// the sweeper's lease while uploads are in flight on others (whose blobs it must not take).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_answer_as_one() {
    let c = Cluster::start(3, "", "").await;
    c.any().create_bucket().bucket("crm").send().await.unwrap();
    let mut expect = std::collections::BTreeSet::new();
    for i in 0..24u64 {
        let key = format!("contracts/{i:02}.pdf");
        let body = data(1000 + i as usize * 37, i);
        put(&c.any(), "crm", &key, body.clone()).await.unwrap();
        expect.insert(key.clone());
        let got = c
            .any()
            .get_object()
            .bucket("crm")
            .key(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(
            body_of(got).await,
            body,
            "{key} read back through another node"
        );
        assert_eq!(
            keys(&c.any(), "crm").await,
            expect.iter().cloned().collect::<Vec<_>>()
        );
        if i % 3 == 2 {
            c.any()
                .delete_object()
                .bucket("crm")
                .key(&key)
                .send()
                .await
                .unwrap();
            expect.remove(&key);
            let gone = c.any().get_object().bucket("crm").key(&key).send().await;
            assert_eq!(code(gone), "NoSuchKey");
        }
    }
    assert_eq!(
        keys(&c.any(), "crm").await,
        expect.iter().cloned().collect::<Vec<_>>()
    );

    // A multipart upload, a part per node, while a slow upload is in flight on node 2.
    let mut slow = raw_put_head(
        &c.node(2).endpoint(),
        c.node(2).addr,
        "/crm/slow.bin",
        4 * MIB as u64,
    )
    .await;
    let slow_body = data(4 * MIB, 99);
    slow.write_all(&slow_body[..2 * MIB]).await.unwrap();
    let up = c
        .s3(0)
        .create_multipart_upload()
        .bucket("crm")
        .key("big.bin")
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap();
    let body = data(11 * MIB, 7);
    let mut parts = Vec::new();
    for (n, chunk) in body.chunks(5 * MIB).enumerate() {
        let r = c
            .s3(n % 3)
            .upload_part()
            .bucket("crm")
            .key("big.bin")
            .upload_id(id)
            .part_number(n as i32 + 1)
            .body(ByteStream::from(chunk.to_vec()))
            .send()
            .await
            .unwrap();
        parts.push(
            CompletedPart::builder()
                .part_number(n as i32 + 1)
                .e_tag(r.e_tag().unwrap())
                .build(),
        );
    }
    complete(&c.s3(1), "crm", "big.bin", id, parts).await;
    let got = c
        .s3(2)
        .get_object()
        .bucket("crm")
        .key("big.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(body_of(got).await, body);

    // Sweeps (grace 0) on every node while the slow upload waits: its blob is not yet listed by
    // the backend, so none is taken; it completes whole.
    for i in 0..3 {
        let (st, _) = admin(c.admin(i), reqwest::Method::POST, "/sweep", Value::Null).await;
        assert_eq!(st, 200);
    }
    slow.write_all(&slow_body[2 * MIB..]).await.unwrap();
    let mut head = vec![0u8; 12];
    tokio::io::AsyncReadExt::read_exact(&mut slow, &mut head)
        .await
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    let got = c
        .s3(0)
        .get_object()
        .bucket("crm")
        .key("slow.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(body_of(got).await, slow_body);

    // Every node sees the three, and one of them holds the sweeper's lease.
    let h = health(c.admin(1)).await;
    assert_eq!(h["cluster"]["nodes"].as_array().unwrap().len(), 3, "{h}");
    let v = wait_for(c.admin(0), "/cluster", 5, |v| {
        v["leases"]
            .as_array()
            .is_some_and(|l| l.iter().any(|l| l["name"] == "worker sweeper"))
    })
    .await;
    let holder = v["leases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "worker sweeper")
        .unwrap()["holder"]
        .clone();
    let instances: Vec<Value> = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["instance"].clone())
        .collect();
    assert!(instances.contains(&holder), "{v}");
    let usage = tenant_usage(c.admin(2), "acme").await;
    assert_eq!(usage["verified"], json!(true), "{usage}");
}

/// 60 uploads at once, 20 per node, into a tenant whose quota fits 20: exactly 20 succeed, the
/// others are refused with QuotaExceeded, and usage equals what is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_uploads_on_three_nodes_fill_a_quota_of_twenty_exactly() {
    let c = Cluster::start(3, "quota_objects = 20", "").await;
    c.s3(0)
        .create_bucket()
        .bucket("avatars")
        .send()
        .await
        .unwrap();
    // Past every node's first heartbeats, so that admissions far from the limit go the fast way.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let uploads = (0..60).map(|i| {
        let s3 = c.s3(i % 3);
        tokio::spawn(async move {
            put(
                &s3,
                "avatars",
                &format!("u{i}.png"),
                data(32 * 1024, i as u64),
            )
            .await
        })
    });
    let results = futures::future::join_all(uploads).await;
    let mut ok = 0;
    for r in results {
        match r.unwrap() {
            Ok(()) => ok += 1,
            Err(code) => assert_eq!(code, "QuotaExceeded"),
        }
    }
    assert_eq!(ok, 20);
    assert_eq!(keys(&c.s3(2), "avatars").await.len(), 20);
    for i in 0..3 {
        let v = tenant_usage(c.admin(i), "acme").await;
        assert_eq!(v["usage"]["objects"], json!(20), "{v}");
        assert_eq!(v["usage"]["bytes"], json!(20 * 32 * 1024), "{v}");
        assert_eq!(v["verified"], json!(true), "{v}");
        assert_eq!(v["reserved"], json!({}), "{v}");
    }
}

/// A key created on one node and revoked through another: every node accepts it (and caches
/// it), then refuses it within the cache bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_on_one_node_is_refused_by_every_node() {
    let c = Cluster::start(3, "", "").await;
    let (st, key) = admin(
        c.admin(0),
        reqwest::Method::POST,
        "/tenants/acme/keys",
        json!({ "user": "app" }),
    )
    .await;
    assert_eq!(st, 201, "{key}");
    let creds = (
        key["access_key"].as_str().unwrap(),
        key["secret_key"].as_str().unwrap(),
    );
    for i in 0..3 {
        let s3 = crate::harness::client(&c.node(i).endpoint(), creds);
        s3.list_buckets().send().await.unwrap();
    }
    let path = format!("/tenants/acme/keys/{}", creds.0);
    let (st, _) = admin(c.admin(1), reqwest::Method::DELETE, &path, Value::Null).await;
    assert_eq!(st, 200);
    // Every node cached the key above; each must refuse it within the cache's bound (1 s; the
    // revoking commit's NOTIFY makes it milliseconds in practice).
    let revoked = Instant::now();
    for i in 0..3 {
        let s3 = crate::harness::client(&c.node(i).endpoint(), creds);
        loop {
            match s3.list_buckets().send().await {
                Err(e) => {
                    assert_eq!(code::<(), _>(Err(e)), "InvalidAccessKeyId");
                    break;
                }
                Ok(_) => {
                    assert!(
                        revoked.elapsed() < Duration::from_secs(1),
                        "node {i} still accepts the revoked key"
                    );
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    }
    assert!(
        revoked.elapsed() < Duration::from_secs(1),
        "{:?}",
        revoked.elapsed()
    );
}

/// Node 0 is killed (-9) with an upload half sent and while it runs a rescan: nothing partial
/// becomes visible, its reservation is freed once the others reap it, and another node finishes
/// the rescan from where it stopped, counting every object once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_upload_and_mid_rescan_leaves_nothing_held() {
    let clamd = Service::start(Kind::Clamd).await;
    let scanner = clamd.scanner_toml("");
    let body_len = 3 * MIB;
    // Room for what is stored below, and for one more upload of `body_len`.
    let stored = 300 * 2048;
    let quota = format!("quota_bytes = {}", stored + body_len);
    let mut c = Cluster::start(3, &quota, &scanner).await;
    c.s3(1).create_bucket().bucket("docs").send().await.unwrap();
    let puts = (0..300).map(|i| {
        let s3 = c.any();
        tokio::spawn(async move { put(&s3, "docs", &format!("f{i:03}.txt"), data(2048, i)).await })
    });
    for r in futures::future::join_all(puts).await {
        r.unwrap().unwrap();
    }

    // Node 0 reserves the last room for an upload, gets half of it, and dies.
    let mut sock = raw_put_head(
        &c.node(0).endpoint(),
        c.node(0).addr,
        "/docs/half.pdf",
        body_len as u64,
    )
    .await;
    sock.write_all(&data(body_len / 2, 5)).await.unwrap();
    sock.flush().await.unwrap();
    wait_for(c.admin(1), "/tenants/acme/usage", 5, |v| {
        v["reserved"] != json!({})
    })
    .await;
    let full = put(&c.s3(1), "docs", "other.pdf", data(body_len, 6)).await;
    assert_eq!(
        full,
        Err("QuotaExceeded".to_string()),
        "node 0 holds the room"
    );

    // A rescan, claimed by some node: kill node 0 if it has it, else move on (the one running it
    // is killed below).
    let (st, job) = admin(
        c.admin(2),
        reqwest::Method::POST,
        "/scans",
        json!({ "tenant": "acme" }),
    )
    .await;
    assert_eq!(st, 202, "{job}");
    let path = format!("/scans/{}", job["id"].as_str().unwrap());
    let running = wait_for(c.admin(2), &path, 10, |v| {
        v["seen"].as_u64().unwrap_or(0) > 0
    })
    .await;
    assert!(
        running["finished_ms"].is_null(),
        "the rescan is still running: {running}"
    );
    let runner = running["node"].as_str().unwrap().to_string();
    let view = admin(c.admin(2), reqwest::Method::GET, "/cluster", Value::Null)
        .await
        .1;
    let runner_addr = view["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["instance"] == json!(runner))
        .unwrap()["s3_addr"]
        .as_str()
        .unwrap()
        .to_string();
    let victim = (0..3)
        .find(|i| c.node(*i).addr.to_string() == runner_addr)
        .unwrap();
    c.kill9(0);
    if victim != 0 {
        c.kill9(victim);
    }
    let survivor = c.live()[0];
    drop(sock);

    let done = wait_for(c.admin(survivor), &path, 60, |v| {
        !v["finished_ms"].is_null()
    })
    .await;
    assert_eq!(
        done["seen"],
        json!(300),
        "every object counted once: {done}"
    );
    assert_eq!(done["clean"], json!(300), "{done}");
    assert_ne!(done["node"], json!(runner));

    // Reaped: the reservation is gone, nothing partial is visible, and the room is back.
    let v = wait_for(
        c.admin(survivor),
        "/tenants/acme/usage?verify=true",
        10,
        |v| v["reserved"] == json!({}),
    )
    .await;
    assert_eq!(v["verified"], json!(true), "{v}");
    assert_eq!(v["usage"]["bytes"], json!(stored), "{v}");
    assert_eq!(
        code(
            c.s3(survivor)
                .head_object()
                .bucket("docs")
                .key("half.pdf")
                .send()
                .await
        ),
        "NotFound"
    );
    put(&c.s3(survivor), "docs", "other.pdf", data(body_len, 6))
        .await
        .unwrap();
    let h = health(c.admin(survivor)).await;
    assert_eq!(
        h["cluster"]["nodes"].as_array().unwrap().len(),
        c.live().len(),
        "{h}"
    );
}

/// Two nodes race CreateBucket, then DeleteBucket against PutObject, on the same names: every
/// round ends in a state one node could have produced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_bucket_lifecycles_on_two_nodes_end_as_on_one() {
    let c = Cluster::start(2, "", "").await;
    let (a, b) = (c.s3(0), c.s3(1));
    for round in 0..15 {
        let bucket = format!("race-{round}");
        let (x, y) = tokio::join!(
            a.create_bucket().bucket(&bucket).send(),
            b.create_bucket().bucket(&bucket).send()
        );
        // Both 200 in us-east-1 (S3's answer to the owner creating its bucket again); the
        // bucket exists once.
        x.unwrap();
        y.unwrap();
        let listed = b.list_buckets().send().await.unwrap();
        assert_eq!(
            listed
                .buckets()
                .iter()
                .filter(|x| x.name() == Some(bucket.as_str()))
                .count(),
            1
        );

        let (del, put) = tokio::join!(
            a.delete_bucket().bucket(&bucket).send(),
            put(&b, &bucket, "k", b"v".to_vec())
        );
        match (del, put) {
            (Ok(_), Err(code)) => {
                assert_eq!(code, "NoSuchBucket");
                assert_eq!(code_of_head(&b, &bucket).await, "NotFound");
            }
            (Err(e), Ok(())) => {
                assert_eq!(crate::harness::code::<(), _>(Err(e)), "BucketNotEmpty");
                let got = a
                    .get_object()
                    .bucket(&bucket)
                    .key("k")
                    .send()
                    .await
                    .unwrap();
                assert_eq!(body_of(got).await, b"v");
            }
            (d, p) => panic!("round {round}: delete {d:?} and put {p:?} cannot both happen"),
        }
    }

    // An upload in flight on node 0 holds its bucket against a DeleteBucket on node 1.
    a.create_bucket().bucket("busy").send().await.unwrap();
    let body = data(MIB, 4);
    let mut sock = raw_put_head(&c.node(0).endpoint(), c.node(0).addr, "/busy/k", MIB as u64).await;
    sock.write_all(&body[..1000]).await.unwrap();
    sock.flush().await.unwrap();
    wait_for(c.admin(1), "/tenants/acme/usage", 10, |v| {
        v["buckets"]["busy"]["writes_in_flight"] == 1
    })
    .await;
    assert_eq!(
        code(b.delete_bucket().bucket("busy").send().await),
        "BucketNotEmpty"
    );
    sock.write_all(&body[1000..]).await.unwrap();
    let mut head = [0u8; 12];
    tokio::io::AsyncReadExt::read_exact(&mut sock, &mut head)
        .await
        .unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    b.delete_object()
        .bucket("busy")
        .key("k")
        .send()
        .await
        .unwrap();
    b.delete_bucket().bucket("busy").send().await.unwrap();
    let v = tenant_usage(c.admin(0), "acme").await;
    assert_eq!(v["verified"], json!(true), "{v}");
}

async fn code_of_head(s3: &aws_sdk_s3::Client, bucket: &str) -> String {
    code(s3.head_bucket().bucket(bucket).send().await)
}

/// A node with a `local` backend refuses to share its store with a live node, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_backend_node_does_not_share_its_store() {
    let meta = format!(
        "[meta]\nengine = \"postgres\"\nurl = \"{}\"\n{CLUSTER}",
        pg_database()
    );
    let setup = Setup {
        meta: &meta,
        ..Default::default()
    };
    let first = tempfile::tempdir().unwrap();
    let _one = Proc::start_setup(first.path(), &setup);
    let second = tempfile::tempdir().unwrap();
    let config = second.path().join("portcullis.toml");
    std::fs::write(&config, config_setup(&second.path().join("data"), &setup)).unwrap();
    let out = refused(&config);
    assert!(out.contains("writes to a `local` backend"), "{out}");
    assert!(out.contains("shares this metadata store"), "{out}");
}

/// A tenant on the `local` backend is refused through the admin API while other nodes serve;
/// once it exists (created while one node served), a second node refuses to join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_on_a_local_backend_keeps_the_store_to_one_node() {
    let mut c = Cluster::start(2, "", "").await;
    let solo = json!({ "id": "solo", "backend": "local" });
    let (st, v) = admin(c.admin(0), reqwest::Method::POST, "/tenants", solo.clone()).await;
    assert_eq!(st, 400, "{v}");
    assert!(v.to_string().contains("local backend"), "{v}");
    c.kill9(1);
    wait_for(c.admin(0), "/cluster", 10, |v| {
        v["nodes"].as_array().is_some_and(|n| n.len() == 1)
    })
    .await;
    let (st, v) = admin(c.admin(0), reqwest::Method::POST, "/tenants", solo).await;
    assert_eq!(st, 201, "{v}");
    let out = refused(&c.config(1));
    assert!(
        out.contains("this node writes to a `local` backend"),
        "{out}"
    );
}

/// Runs `portcullis serve` on `config`, which must exit with an error; its output.
fn refused(config: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(!out.status.success(), "the node started");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A node killed with an upload in flight: its room is free again within `node_timeout_ms` of
/// its last heartbeat, as the README states. The heartbeat here is a third of the timeout, so
/// a reaper that only looked at each of its own heartbeats (as it did) freed the room up to a
/// whole heartbeat later (3.0–4.0 s instead of 3.0 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_nodes_room_is_free_within_the_node_timeout() {
    let timing = "[cluster]\nheartbeat_ms = 1000\nnode_timeout_ms = 3000\nlease_secs = 1\nfast_reserve_mb = 1\n";
    let mut c = Cluster::start_timed(2, "quota_bytes = 100000000", "", timing).await;
    // Node 0 again, half a heartbeat later: the two nodes' heartbeats started together, and a
    // reaper that looks only at its own heartbeats would meet the expiry on time by chance.
    c.kill9(0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.nodes[0] = Some(Proc::start_config(&c.config(0)));
    c.s3(1).create_bucket().bucket("held").send().await.unwrap();
    let mut sock = raw_put_head(
        &c.node(0).endpoint(),
        c.node(0).addr,
        "/held/half.bin",
        2 * MIB as u64,
    )
    .await;
    sock.write_all(&data(MIB, 1)).await.unwrap();
    sock.flush().await.unwrap();
    wait_for(c.admin(1), "/tenants/acme/usage", 5, |v| {
        v["reserved"] != json!({})
    })
    .await;
    let dead_addr = c.node(0).addr.to_string();
    c.kill9(0);

    // When node 0 was last heard of, as node 1 sees it.
    let (_, view) = admin(c.admin(1), reqwest::Method::GET, "/cluster", Value::Null).await;
    let seen_ago = view["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["s3_addr"] == json!(dead_addr))
        .expect("node 0 is not reaped yet")["seen_ms_ago"]
        .as_u64()
        .unwrap();
    let last_beat = Instant::now() - Duration::from_millis(seen_ago);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, v) = admin(
            c.admin(1),
            reqwest::Method::GET,
            "/tenants/acme/usage",
            Value::Null,
        )
        .await;
        if v["reserved"] == json!({}) {
            break;
        }
        assert!(Instant::now() < deadline, "never freed: {v}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let freed_after = last_beat.elapsed();
    drop(sock);
    assert!(
        freed_after >= Duration::from_millis(2900),
        "not before the timeout: {freed_after:?}"
    );
    assert!(
        freed_after <= Duration::from_millis(3300),
        "freed {freed_after:?} after the last heartbeat (node_timeout_ms = 3000)"
    );
}
