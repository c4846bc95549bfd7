//! The storage backends against real services: one contract suite run unchanged on every
//! implementation, the gateway end to end on each backend (aws-sdk-s3 and the aws CLI),
//! backend processes killed mid-transfer, and per-tenant / per-bucket placement.

use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketLocationConstraint, CompletedPart, CreateBucketConfiguration};
use bytes::Bytes;
use futures::StreamExt;
use portcullis::backend::{BackendError, Backends, Placement};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;
use crate::services::*;

const MIB: usize = 1024 * 1024;

async fn open(svc: &Service) -> (Backends, Placement, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[storage]\ndata_dir = \"{}\"\ndefault_backend = \"x\"\n{}",
        dir.path().display(),
        // The smallest part size, so a few MiB already take the multi-part path.
        svc.backend_toml(
            "x",
            if svc.kind == Kind::Local {
                ""
            } else {
                "part_size_mb = 5"
            }
        )
    );
    let cfg = portcullis::Config::parse(&text).unwrap();
    let b = Backends::open(&cfg.backends, false).await.unwrap();
    (b, cfg.default_placement, dir)
}

fn stream(chunks: Vec<Bytes>) -> portcullis::backend::ByteStream {
    Box::pin(futures::stream::iter(chunks.into_iter().map(Ok)))
}

/// `data` cut into uneven chunks, as a client body arrives.
fn chunked(data: &[u8]) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut n = 1000;
    while at < data.len() {
        let end = (at + n).min(data.len());
        out.push(Bytes::copy_from_slice(&data[at..end]));
        at = end;
        n = n * 3 % 700_001 + 4096;
    }
    out
}

async fn read(b: &Backends, blob: &str, range: std::ops::Range<u64>) -> Result<Vec<u8>, String> {
    let mut s = b.get(blob, range).await.map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    while let Some(c) = s.next().await {
        out.extend_from_slice(&c.map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// A backend that promises to report the MD5 reports it, and a reported MD5 is the data's.
fn check_md5(
    b: &Backends,
    blob: &str,
    len: Option<u64>,
    w: &portcullis::backend::Written,
    data: &[u8],
) {
    if b.reports_md5(blob, len) {
        assert!(w.md5.is_some(), "{blob}: MD5 promised but not reported");
    }
    if let Some(m) = w.md5 {
        use s3s::crypto::Checksum as _;
        let mut h = s3s::crypto::Md5::new();
        h.update(data);
        assert_eq!(m, h.finalize(), "{blob}: wrong MD5");
    }
}

async fn contract(kind: Kind) {
    let svc = Service::start(kind).await;
    let (b, place, _dir) = open(&svc).await;
    assert!(
        b.health().await.iter().all(|h| h.ok),
        "{:?}",
        b.health().await
    );

    // A small blob of declared length, whole and in ranges.
    let small = data(10_000, 1);
    let k1 = place.new_blob("acme");
    let w = b
        .put(&k1, stream(chunked(&small)), Some(small.len() as u64))
        .await
        .unwrap();
    assert_eq!(w.len, 10_000);
    check_md5(&b, &k1, Some(10_000), &w, &small);
    assert_eq!(read(&b, &k1, 0..10_000).await.unwrap(), small);
    assert_eq!(read(&b, &k1, 1234..5678).await.unwrap(), &small[1234..5678]);
    assert_eq!(read(&b, &k1, 9_999..10_000).await.unwrap(), &small[9_999..]);

    // A multi-part blob of unknown length (aws-chunked bodies): three 5 MiB parts and a tail.
    let big = data(16 * MIB + 12_345, 2);
    let k2 = place.new_blob("acme");
    let w = b.put(&k2, stream(chunked(&big)), None).await.unwrap();
    let n = w.len;
    assert_eq!(n, big.len() as u64);
    check_md5(&b, &k2, None, &w, &big);
    assert_eq!(
        read(&b, &k2, 0..n).await.unwrap(),
        big,
        "whole multi-part blob"
    );
    let across = (5 * MIB - 100) as u64..(10 * MIB + 100) as u64;
    assert_eq!(
        read(&b, &k2, across.clone()).await.unwrap(),
        &big[across.start as usize..across.end as usize],
        "a range across part boundaries"
    );

    // A large blob of declared length (the streaming single-request path where there is one).
    let k3 = place.new_blob("acme");
    let mid = data(7 * MIB, 3);
    let w = b
        .put(&k3, stream(chunked(&mid)), Some(mid.len() as u64))
        .await
        .unwrap();
    check_md5(&b, &k3, Some(mid.len() as u64), &w, &mid);
    assert_eq!(read(&b, &k3, 0..mid.len() as u64).await.unwrap(), mid);

    // An empty blob.
    let k4 = place.new_blob("acme");
    assert_eq!(b.put(&k4, stream(vec![]), Some(0)).await.unwrap().len, 0);
    assert_eq!(read(&b, &k4, 0..0).await.unwrap(), b"");

    // A body that fails half-way (the client hung up) leaves nothing readable, on both paths.
    for len in [Some(9 * MIB as u64), None] {
        let k = place.new_blob("acme");
        let mut chunks: Vec<Result<Bytes, portcullis::backend::StdError>> =
            chunked(&big[..6 * MIB]).into_iter().map(Ok).collect();
        chunks.push(Err("client went away".into()));
        let r = b
            .put(&k, Box::pin(futures::stream::iter(chunks)), len)
            .await;
        assert!(matches!(r, Err(BackendError::Body(_))), "{len:?}: {r:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let got = read(&b, &k, 0..10).await;
        assert!(
            got.is_err(),
            "{len:?}: a failed write is not readable: {got:?}"
        );
    }

    // The sweeper's listing sees exactly what was written under the tenant's prefix.
    let mut listed: Vec<String> = b
        .list(&place.backend, &place.container, "acme/")
        .await
        .unwrap()
        .into_iter()
        .map(|(r, _)| r)
        .collect();
    listed.sort();
    let mut want = vec![k1.clone(), k2.clone(), k3.clone(), k4.clone()];
    want.sort();
    assert_eq!(listed, want);
    assert!(
        b.list(&place.backend, &place.container, "globex/")
            .await
            .unwrap()
            .is_empty()
    );

    // Deletes: a present blob goes away, a missing one is not an error.
    b.delete(&k1).await.unwrap();
    assert!(read(&b, &k1, 0..10).await.is_err());
    b.delete(&k1).await.unwrap();
    b.delete(&place.new_blob("acme")).await.unwrap();
    for k in [&k2, &k3, &k4] {
        b.delete(k).await.unwrap();
    }
    assert!(
        b.list(&place.backend, &place.container, "acme/")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_local() {
    contract(Kind::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_s3_on_s3s_fs() {
    contract(Kind::S3sFs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_s3_on_moto() {
    contract(Kind::Moto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_azure_on_azurite() {
    contract(Kind::Azurite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_gcs_on_emulator() {
    contract(Kind::GcsEmulator).await;
}

/// Azure with a SAS token instead of the account key: the token alone grants blob access.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_with_a_sas_token() {
    let svc = Service::start(Kind::Azurite).await;
    let text = format!(
        "[backends.az]\ntype = \"azure\"\nendpoint = \"{}/{AZURITE_ACCOUNT}\"\naccount = \"{AZURITE_ACCOUNT}\"\ncontainer = \"{CONTAINER}\"\nsas_token = \"{}\"\n",
        svc.endpoint(),
        svc.azurite_sas()
    );
    let cfg = portcullis::Config::parse(&text).unwrap();
    let b = Backends::open(&cfg.backends, false).await.unwrap();
    let place = Placement {
        backend: "az".into(),
        container: CONTAINER.into(),
        prefix: String::new(),
    };
    let blob = place.new_blob("acme");
    let body = data(50_000, 5);
    b.put(&blob, stream(chunked(&body)), Some(50_000))
        .await
        .unwrap();
    assert_eq!(read(&b, &blob, 0..50_000).await.unwrap(), body);
    b.delete(&blob).await.unwrap();
    assert!(read(&b, &blob, 0..1).await.is_err());

    // A wrong token is refused by the service, and reported as a configuration failure.
    let bad = text.replace("sig=", "sig=AAAA");
    let cfg = portcullis::Config::parse(&bad).unwrap();
    let b = Backends::open(&cfg.backends, false).await.unwrap();
    let r = b
        .put(&place.new_blob("acme"), stream(chunked(&body)), None)
        .await;
    assert!(matches!(r, Err(BackendError::Failed { .. })), "{r:?}");
    let h = b.health().await;
    assert!(h.iter().any(|h| h.name == "az" && !h.ok), "{h:?}");
}

/// A GCS service-account file that cannot be read stops start-up with a message naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcs_credentials_file_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sa.json");
    std::fs::write(&path, "{\"type\": \"service_account\"}").unwrap();
    let text = format!(
        "[backends.g]\ntype = \"gcs\"\nbucket = \"ggg\"\ncredentials_file = \"{}\"\n",
        path.display()
    );
    let cfg = portcullis::Config::parse(&text).unwrap();
    let e = Backends::open(&cfg.backends, false)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("sa.json"), "{e}");
}

/// The gateway (the real binary) with every tenant on `kind`, driven by aws-sdk-s3 and then by
/// the aws CLI script of the compatibility suite.
async fn end_to_end(kind: Kind) {
    let svc = Service::start(kind).await;
    if kind == Kind::Moto {
        use aws_sdk_s3::types::{
            ServerSideEncryption, ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration,
            ServerSideEncryptionRule,
        };
        let rule = ServerSideEncryptionRule::builder()
            .apply_server_side_encryption_by_default(
                ServerSideEncryptionByDefault::builder()
                    .sse_algorithm(ServerSideEncryption::AwsKms)
                    .build()
                    .unwrap(),
            )
            .build();
        client(&svc.endpoint(), ("moto", "moto-secret"))
            .put_bucket_encryption()
            .bucket(CONTAINER)
            .server_side_encryption_configuration(
                ServerSideEncryptionConfiguration::builder()
                    .rules(rule)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let tail = svc.backend_toml("remote", "part_size_mb = 5");
    let p = Proc::start_setup(
        dir.path(),
        &Setup {
            storage: "default_backend = \"remote\"",
            tail: &tail,
            ..Default::default()
        },
    );
    let s3 = client(&p.endpoint(), ACME);
    s3.create_bucket().bucket("e2e").send().await.unwrap();

    let small = data(100_000, 10);
    let put = s3
        .put_object()
        .bucket("e2e")
        .key("small")
        .body(ByteStream::from(small.clone()))
        .send()
        .await
        .unwrap();
    // The ETag is the MD5 of the data, whichever side computed it (on moto the backend bucket
    // is SSE-KMS encrypted, so its ETag is not trusted and the blob is hashed by reading back).
    let md5 = {
        use s3s::crypto::Checksum as _;
        let mut h = s3s::crypto::Md5::new();
        h.update(&small);
        format!("\"{}\"", hex::encode(h.finalize()))
    };
    assert_eq!(put.e_tag(), Some(md5.as_str()));
    let head = s3
        .head_object()
        .bucket("e2e")
        .key("small")
        .send()
        .await
        .unwrap();
    assert_eq!(head.e_tag(), Some(md5.as_str()));
    let got = s3
        .get_object()
        .bucket("e2e")
        .key("small")
        .range("bytes=100-199")
        .send()
        .await
        .unwrap();
    assert_eq!(body_of(got).await, &small[100..200]);

    // Multipart: two 5 MiB parts and a tail, completed, read back whole.
    let big = data(11 * MIB, 11);
    let up = s3
        .create_multipart_upload()
        .bucket("e2e")
        .key("big")
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap();
    let mut parts = Vec::new();
    for (i, chunk) in big.chunks(5 * MIB).enumerate() {
        let n = i as i32 + 1;
        let r = s3
            .upload_part()
            .bucket("e2e")
            .key("big")
            .upload_id(id)
            .part_number(n)
            .body(ByteStream::from(chunk.to_vec()))
            .send()
            .await
            .unwrap();
        parts.push(
            CompletedPart::builder()
                .part_number(n)
                .e_tag(r.e_tag().unwrap())
                .build(),
        );
    }
    complete(&s3, "e2e", "big", id, parts).await;
    let got = s3
        .get_object()
        .bucket("e2e")
        .key("big")
        .send()
        .await
        .unwrap();
    assert_eq!(got.content_length(), Some(big.len() as i64));
    assert!(body_of(got).await == big, "multipart object read back");

    s3.copy_object()
        .bucket("e2e")
        .key("copy")
        .copy_source("e2e/big")
        .send()
        .await
        .unwrap();
    let got = s3
        .get_object()
        .bucket("e2e")
        .key("copy")
        .range("bytes=5242000-5243000")
        .send()
        .await
        .unwrap();
    assert_eq!(body_of(got).await, &big[5_242_000..=5_243_000]);
    let keys = s3.list_objects_v2().bucket("e2e").send().await.unwrap();
    assert_eq!(keys.key_count(), Some(3));

    // Nothing went to the local disk: the bytes are in the remote backend.
    let local = dir.path().join("data/blobs");
    assert!(
        !local.exists() || std::fs::read_dir(&local).unwrap().next().is_none(),
        "no blob on the local disk"
    );
    for k in ["small", "big", "copy"] {
        s3.delete_object()
            .bucket("e2e")
            .key(k)
            .send()
            .await
            .unwrap();
    }
    s3.delete_bucket().bucket("e2e").send().await.unwrap();

    crate::compat::run_against(p.endpoint(), dir.path(), "bash", "awscli.sh", ACME, &[]);
    let health: serde_json::Value = reqwest::Client::new()
        .get(format!("http://{}/health", p.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_s3_on_s3s_fs() {
    end_to_end(Kind::S3sFs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_s3_on_moto() {
    end_to_end(Kind::Moto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_azure_on_azurite() {
    end_to_end(Kind::Azurite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_gcs_on_emulator() {
    end_to_end(Kind::GcsEmulator).await;
}

/// Reads an HTTP response head from `sock` (status code), with a deadline.
async fn status_line(sock: &mut tokio::net::TcpStream) -> Option<u16> {
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout_at(deadline, sock.read(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    text.split_whitespace().nth(1)?.parse().ok()
}

/// The backend process dies mid-upload and mid-download: the client gets an error, nothing
/// becomes visible, tenants on other backends keep working, and once the backend is back the
/// same upload succeeds.
async fn backend_dies(kind: Kind) {
    let mut svc = Service::start(kind).await;
    let dir = tempfile::tempdir().unwrap();
    let tail = svc.backend_toml("remote", "part_size_mb = 5");
    let gw = Gw::start_setup(&Setup {
        acme: "backend = \"remote\"",
        tail: &tail,
        ..Default::default()
    })
    .await;
    drop(dir);
    let acme = gw.acme();
    let globex = gw.client(GLOBEX);
    acme.create_bucket().bucket("docs").send().await.unwrap();
    globex.create_bucket().bucket("docs").send().await.unwrap();

    // Mid-upload: 24 MiB declared, 8 MiB sent, then the backend is killed.
    let body = data(24 * MIB, 20);
    let mut sock = raw_put_head(
        &gw.endpoint(),
        gw.addr,
        "/docs/contract.pdf",
        body.len() as u64,
    )
    .await;
    sock.write_all(&body[..8 * MIB]).await.unwrap();
    sock.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    svc.kill();
    // The rest may or may not be accepted; the answer must be an error either way.
    let _ = tokio::time::timeout(Duration::from_secs(20), sock.write_all(&body[8 * MIB..])).await;
    let status = status_line(&mut sock).await;
    assert!(
        status.is_none_or(|s| s >= 500),
        "a dead backend fails the upload (got {status:?})"
    );
    drop(sock);
    assert_eq!(
        code(
            acme.head_object()
                .bucket("docs")
                .key("contract.pdf")
                .send()
                .await
        ),
        "NotFound",
        "nothing became visible"
    );
    let e = acme
        .put_object()
        .bucket("docs")
        .key("small")
        .body(ByteStream::from(data(1000, 21)))
        .send()
        .await;
    assert_eq!(
        code(e),
        "ServiceUnavailable",
        "a clear 503 while the backend is down"
    );

    // The other tenant, on the local backend, is unaffected.
    globex
        .put_object()
        .bucket("docs")
        .key("a")
        .body(ByteStream::from(data(5000, 22)))
        .send()
        .await
        .unwrap();
    let health: serde_json::Value = reqwest::Client::new()
        .get(format!("http://{}/health", gw.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "degraded", "{health}");

    // The backend returns (empty: these services keep data in memory); the same upload works.
    svc.launch().await;
    acme.put_object()
        .bucket("docs")
        .key("contract.pdf")
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .unwrap();
    let got = acme
        .get_object()
        .bucket("docs")
        .key("contract.pdf")
        .send()
        .await
        .unwrap();
    assert!(body_of(got).await == body, "the retried upload is whole");

    // Mid-download: the backend dies after the first bytes reached the client.
    let resp = reqwest::get(presigned_get(&acme, "docs", "contract.pdf").await)
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    svc.kill();
    let mut received = first.len();
    let mut failed = false;
    while let Some(c) = stream.next().await {
        match c {
            Ok(c) => received += c.len(),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(
        failed && received < body.len(),
        "the client sees a cut-off body, not a short success ({received} bytes)"
    );
    // The gateway itself keeps serving.
    let got = globex
        .get_object()
        .bucket("docs")
        .key("a")
        .send()
        .await
        .unwrap();
    assert_eq!(body_of(got).await, data(5000, 22));
}

async fn presigned_get(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> String {
    let cfg =
        aws_sdk_s3::presigning::PresigningConfig::expires_in(Duration::from_secs(300)).unwrap();
    s3.get_object()
        .bucket(bucket)
        .key(key)
        .presigned(cfg)
        .await
        .unwrap()
        .uri()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_killed_mid_transfer() {
    backend_dies(Kind::Moto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azurite_killed_mid_transfer() {
    backend_dies(Kind::Azurite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcs_emulator_killed_mid_transfer() {
    backend_dies(Kind::GcsEmulator).await;
}

/// Files under `dir`, recursively.
fn files(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(files(&e.path()));
        } else {
            out.push(e.path().display().to_string());
        }
    }
    out
}

/// Two tenants on two backends, and a bucket placed on another backend by LocationConstraint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_per_tenant_and_per_bucket() {
    let svc = Service::start(Kind::S3sFs).await;
    let tail = svc.backend_toml("remote", "");
    let gw = Gw::start_setup(&Setup {
        acme: "locations = [\"remote\"]",
        globex: "backend = \"remote\"\nbackend_prefix = \"crm/\"",
        tail: &tail,
        ..Default::default()
    })
    .await;
    let remote_files = || files(&svc.dir.path().join(CONTAINER));
    let local_files = || files(&gw.dir.path().join("blobs"));
    let (acme, globex) = (gw.acme(), gw.client(GLOBEX));

    // Same bucket name in both tenants; each tenant's bytes land on its own backend.
    acme.create_bucket()
        .bucket("invoices")
        .send()
        .await
        .unwrap();
    globex
        .create_bucket()
        .bucket("invoices")
        .send()
        .await
        .unwrap();
    for (s3, seed) in [(&acme, 1), (&globex, 2)] {
        s3.put_object()
            .bucket("invoices")
            .key("2026/01.pdf")
            .body(ByteStream::from(data(4000, seed)))
            .send()
            .await
            .unwrap();
    }
    let (local, remote) = (local_files(), remote_files());
    assert_eq!(local.len(), 1, "{local:?}");
    assert!(local[0].contains("/blobs/acme/"), "{local:?}");
    assert_eq!(remote.len(), 1, "{remote:?}");
    assert!(
        remote[0].contains("/crm/globex/"),
        "the tenant prefix: {remote:?}"
    );
    for (s3, seed) in [(&acme, 1), (&globex, 2)] {
        let got = s3
            .get_object()
            .bucket("invoices")
            .key("2026/01.pdf")
            .send()
            .await
            .unwrap();
        assert_eq!(body_of(got).await, data(4000, seed));
    }

    // acme may place a bucket on "remote"; GetBucketLocation reports it.
    let on = |l: &str| {
        CreateBucketConfiguration::builder()
            .location_constraint(BucketLocationConstraint::from(l))
            .build()
    };
    acme.create_bucket()
        .bucket("eu-contracts")
        .create_bucket_configuration(on("remote"))
        .send()
        .await
        .unwrap();
    let loc = acme
        .get_bucket_location()
        .bucket("eu-contracts")
        .send()
        .await
        .unwrap();
    assert_eq!(
        loc.location_constraint().map(|l| l.as_str()),
        Some("remote")
    );
    acme.put_object()
        .bucket("eu-contracts")
        .key("c.pdf")
        .body(ByteStream::from(data(3000, 3)))
        .send()
        .await
        .unwrap();
    assert_eq!(remote_files().len(), 2);
    assert!(
        remote_files()
            .iter()
            .any(|f| f.contains(&format!("{CONTAINER}/acme/")))
    );

    // A copy into the remote bucket moves the bytes there (placement is a residency promise).
    acme.copy_object()
        .bucket("eu-contracts")
        .key("copied.pdf")
        .copy_source("invoices/2026/01.pdf")
        .send()
        .await
        .unwrap();
    assert_eq!(
        remote_files().len(),
        3,
        "the copy's bytes are on the remote backend"
    );
    assert_eq!(local_files().len(), 1);
    let got = acme
        .get_object()
        .bucket("eu-contracts")
        .key("copied.pdf")
        .send()
        .await
        .unwrap();
    assert_eq!(body_of(got).await, data(4000, 1));
    // Deleting the source keeps the copy whole.
    acme.delete_object()
        .bucket("invoices")
        .key("2026/01.pdf")
        .send()
        .await
        .unwrap();
    let got = acme
        .get_object()
        .bucket("eu-contracts")
        .key("copied.pdf")
        .send()
        .await
        .unwrap();
    assert_eq!(body_of(got).await, data(4000, 1));

    // Unknown and disallowed locations.
    for (s3, l) in [(&acme, "mars"), (&globex, "local"), (&acme, "eu-west-1")] {
        let e = s3
            .create_bucket()
            .bucket("nowhere")
            .create_bucket_configuration(on(l))
            .send()
            .await;
        assert_eq!(code(e), "InvalidLocationConstraint", "{l}");
    }
    // The gateway's own region and the tenant's own backend are accepted.
    acme.create_bucket()
        .bucket("home")
        .create_bucket_configuration(on("local"))
        .send()
        .await
        .unwrap();

    // A tenant created at run time through the admin API, placed on "remote".
    use crate::admin::call;
    let post = reqwest::Method::POST;
    let bad = serde_json::json!({"id": "initech", "backend": "nowhere"});
    let (s, v) = call(&gw, post.clone(), "/tenants", Some(ADMIN_TOKEN), Some(bad)).await;
    assert_eq!(s, 400, "{v}");
    let t = serde_json::json!({"id": "initech", "backend": "remote", "backend_prefix": "hr/"});
    let (s, v) = call(&gw, post.clone(), "/tenants", Some(ADMIN_TOKEN), Some(t)).await;
    assert_eq!(s, 201, "{v}");
    let (s, k) = call(
        &gw,
        post,
        "/tenants/initech/keys",
        Some(ADMIN_TOKEN),
        Some(serde_json::json!({})),
    )
    .await;
    assert_eq!(s, 201, "{k}");
    let initech = gw.client((
        k["access_key"].as_str().unwrap(),
        k["secret_key"].as_str().unwrap(),
    ));
    initech
        .create_bucket()
        .bucket("staff")
        .send()
        .await
        .unwrap();
    initech
        .put_object()
        .bucket("staff")
        .key("p")
        .body(ByteStream::from(data(100, 9)))
        .send()
        .await
        .unwrap();
    assert!(
        remote_files().iter().any(|f| f.contains("/hr/initech/")),
        "{:?}",
        remote_files()
    );
}
