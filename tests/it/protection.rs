//! Upload protection end to end (issue 5): a real clamd with the offline EICAR signature, exact
//! quotas under concurrency, and type policies, through real clients — on the local backend and
//! on the s3 backend (in-process s3s-fs).

use std::sync::Arc;

use aws_sdk_s3::primitives::ByteStream;
use reqwest::Method;
use serde_json::{Value, json};

use crate::admin::call;
use crate::harness::*;
use crate::services::{EICAR, EICAR_NAME, Kind, Service};

const MIB: usize = 1024 * 1024;

async fn usage(gw: &Gw, tenant: &str) -> Value {
    let (st, v) = call(
        gw,
        Method::GET,
        &format!("/tenants/{tenant}/usage?verify=true"),
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["verified"],
        json!(true),
        "usage drifted from the index: {v}"
    );
    // Every caller asks when the tenant is idle: whatever failed before left no reservation.
    assert_eq!(
        (&v["writes_in_flight"], &v["reserved"]),
        (&json!(0), &json!({})),
        "a write or its reservation outlived it: {v}"
    );
    v
}

async fn admin_ok(gw: &Gw, method: Method, path: &str, body: Value) -> Value {
    let (st, v) = call(gw, method, path, Some(ADMIN_TOKEN), Some(body)).await;
    assert!((200..300).contains(&st), "{path}: {st} {v}");
    v
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// Every file under `dir`, recursively.
fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flat_map(|e| {
            let p = e.unwrap().path();
            if p.is_dir() { files(&p) } else { vec![p] }
        })
        .collect()
}

/// The gateway in front of `backend` with clamd, quarantining infected uploads on the local
/// backend; acme's total is limited so a leak would show.
async fn scanned_gateway(clamd: &Service, backend: Option<&Service>) -> Gw {
    let mut tail = clamd.scanner_toml("quarantine_container = \"quarantine\"");
    let mut acme = "quota_bytes = 1073741824\n".to_string();
    if let Some(b) = backend {
        tail.push_str(&b.backend_toml("remote", ""));
        acme.push_str("backend = \"remote\"\n");
    }
    Gw::start_setup(&Setup {
        tail: &tail,
        acme: &acme,
        ..Default::default()
    })
    .await
}

async fn eicar_everywhere(backend: Option<Kind>) {
    let clamd = Service::start(Kind::Clamd).await;
    let remote = match backend {
        Some(k) => Some(Service::start(k).await),
        None => None,
    };
    let gw = scanned_gateway(&clamd, remote.as_ref()).await;
    let dir = tempfile::tempdir().unwrap();
    let run = {
        let endpoint = gw.endpoint();
        let path = dir.path().to_path_buf();
        tokio::task::spawn_blocking(move || {
            crate::compat::run_against(
                endpoint,
                &path,
                "python",
                "protection.py",
                ACME,
                &[("BUCKET", "scanned".to_string())],
            )
        })
    };
    run.await.unwrap();
    // Everything refused left no byte charged: only the clean file counts.
    let u = usage(&gw, "acme").await;
    assert_eq!(u["usage"], json!({ "bytes": 3000, "objects": 1 }), "{u}");

    // The Rust SDK too: the signature is named, nothing is listed.
    let s3 = gw.acme();
    let mut body = data(100_000, 7);
    body[50_000..50_000 + EICAR.len()].copy_from_slice(EICAR);
    let e = s3
        .put_object()
        .bucket("scanned")
        .key("deep.bin")
        .body(ByteStream::from(body))
        .send()
        .await
        .unwrap_err();
    let meta = aws_sdk_s3::error::ProvideErrorMetadata::meta(&e);
    assert_eq!(meta.code(), Some("VirusDetected"));
    assert!(meta.message().unwrap().contains(EICAR_NAME), "{e:?}");
    let listed = s3.list_objects_v2().bucket("scanned").send().await.unwrap();
    assert_eq!(listed.key_count(), Some(1));
    // The five refused uploads (CLI, multipart, zip, presigned, SDK) sit in the quarantine
    // container, whole, where no S3 request can reach them.
    let quarantined = files(&gw.dir.path().join("quarantine"));
    assert_eq!(quarantined.len(), 5, "{quarantined:?}");
    let (zips, plain): (Vec<Vec<u8>>, Vec<Vec<u8>>) = quarantined
        .iter()
        .map(|f| std::fs::read(f).unwrap())
        .partition(|b| is_zip(b));
    assert_eq!(zips.len(), 1);
    assert!(
        plain
            .iter()
            .all(|b| b.windows(EICAR.len()).any(|w| w == EICAR))
    );
    if let Some(svc) = &remote {
        // The clean object's bytes are on the remote backend.
        let remote_blobs = files(&svc.dir.path().join(crate::services::CONTAINER));
        assert!(
            remote_blobs
                .iter()
                .any(|f| std::fs::metadata(f).unwrap().len() == 3000),
            "{remote_blobs:?}"
        );
    }
}

/// The zip in `protection.py` is deflated: its EICAR is inside, not in the clear.
fn is_zip(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eicar_is_refused_through_every_client_on_local() {
    eicar_everywhere(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eicar_is_refused_through_every_client_on_an_s3_backend() {
    eicar_everywhere(Some(Kind::S3sFs)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_scanner_refuses_uploads_until_it_returns() {
    let mut clamd = Service::start(Kind::Clamd).await;
    let gw = scanned_gateway(&clamd, None).await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("docs").send().await.unwrap();
    s3.create_bucket().bucket("inbox").send().await.unwrap();
    // inbox opts into storing unscanned uploads while the scanner is away.
    admin_ok(
        &gw,
        Method::PUT,
        "/tenants/acme/buckets/inbox/policy",
        json!({ "on_scanner_unavailable": "store-unscanned" }),
    )
    .await;
    s3.put_object()
        .bucket("docs")
        .key("before.txt")
        .body(ByteStream::from_static(b"scanned while clamd ran"))
        .send()
        .await
        .unwrap();

    clamd.kill();
    let r = s3
        .put_object()
        .bucket("docs")
        .key("during.txt")
        .body(ByteStream::from(data(300_000, 1)))
        .send()
        .await;
    assert_eq!(status_of(r), 503);
    let r = s3
        .put_object()
        .bucket("docs")
        .key("during.txt")
        .body(ByteStream::from(data(300_000, 1)))
        .send()
        .await;
    assert_eq!(code(r), "ScannerUnavailable");
    let listed = s3.list_objects_v2().bucket("docs").send().await.unwrap();
    assert_eq!(listed.key_count(), Some(1), "{listed:?}");
    // What was scanned before stays readable; the gateway reports the scanner down.
    s3.get_object()
        .bucket("docs")
        .key("before.txt")
        .send()
        .await
        .unwrap();
    let (_, h) = call(&gw, Method::GET, "/health", Some(ADMIN_TOKEN), None).await;
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(h["scanner"]["ok"], json!(false), "{h}");

    // The opted-in bucket stores it as pending, and refuses to serve it.
    let put = s3
        .put_object()
        .bucket("inbox")
        .key("scan-me.txt")
        .body(ByteStream::from_static(
            b"harmless, but nobody has looked yet",
        ))
        .send()
        .await
        .unwrap();
    assert!(put.e_tag().is_some());
    let r = s3
        .get_object()
        .bucket("inbox")
        .key("scan-me.txt")
        .send()
        .await;
    assert_eq!(code(r), "ScanPending");
    let h = head(&gw, "/inbox/scan-me.txt").await;
    assert_eq!(h.status(), 200);
    assert_eq!(header(&h, "x-portcullis-scan-status"), "pending");
    let copy = s3
        .copy_object()
        .bucket("inbox")
        .key("laundered.txt")
        .copy_source("inbox/scan-me.txt")
        .send()
        .await;
    assert_eq!(code(copy), "ScanPending");

    // clamd comes back on the same port: uploads work, and the pending object is settled.
    clamd.launch().await;
    s3.put_object()
        .bucket("docs")
        .key("after.txt")
        .body(ByteStream::from(data(300_000, 2)))
        .send()
        .await
        .unwrap();
    let v = admin_ok(&gw, Method::POST, "/scans/pending", json!({})).await;
    assert_eq!(v["settled"], json!(1), "{v}");
    // Settled objects leave the waiting list.
    let v = admin_ok(&gw, Method::POST, "/scans/pending", json!({})).await;
    assert_eq!(v["settled"], json!(0), "{v}");
    let got = s3
        .get_object()
        .bucket("inbox")
        .key("scan-me.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(
        body_of(got).await,
        b"harmless, but nobody has looked yet".to_vec()
    );
    usage(&gw, "acme").await;
}

/// The verdict a HEAD of `path` reports in `x-portcullis-scan-status`.
async fn scan_status(gw: &Gw, path: &str) -> String {
    header(&head(gw, path).await, "x-portcullis-scan-status")
}

/// A signed HEAD of `path`, to read the gateway's own response headers (the SDK drops them).
async fn head(gw: &Gw, path: &str) -> reqwest::Response {
    let headers = sign_headers(
        &gw.endpoint(),
        None,
        ACME,
        "HEAD",
        path,
        &[],
        aws_sigv4::http_request::SignableBody::UnsignedPayload,
    );
    let mut req = reqwest::Client::new().head(format!("{}{path}", gw.endpoint()));
    for (k, v) in headers {
        if k != "host" {
            req = req.header(k, v);
        }
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rescan_blocks_objects_found_infected_later() {
    let clamd = Service::start(Kind::Clamd).await;
    let gw = scanned_gateway(&clamd, None).await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("legacy").send().await.unwrap();
    // A bucket that did not scan took an infected file; then scanning is switched on.
    admin_ok(
        &gw,
        Method::PUT,
        "/tenants/acme/buckets/legacy/policy",
        json!({ "scan": "off" }),
    )
    .await;
    for (k, body) in [("bad.txt", EICAR.to_vec()), ("good.txt", b"fine".to_vec())] {
        s3.put_object()
            .bucket("legacy")
            .key(k)
            .body(ByteStream::from(body))
            .send()
            .await
            .unwrap();
    }
    s3.get_object()
        .bucket("legacy")
        .key("bad.txt")
        .send()
        .await
        .unwrap();
    // A copy into a bucket that scans is scanned: what was never checked cannot be laundered.
    s3.create_bucket().bucket("checked").send().await.unwrap();
    let copy = s3
        .copy_object()
        .bucket("checked")
        .key("bad.txt")
        .copy_source("legacy/bad.txt")
        .send()
        .await;
    assert_eq!(code(copy), "VirusDetected");
    s3.copy_object()
        .bucket("checked")
        .key("good.txt")
        .copy_source("legacy/good.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(scan_status(&gw, "/checked/good.txt").await, "clean");
    let listed = s3.list_objects_v2().bucket("checked").send().await.unwrap();
    assert_eq!(listed.key_count(), Some(1));
    admin_ok(
        &gw,
        Method::PUT,
        "/tenants/acme/buckets/legacy/policy",
        json!({ "scan": "required" }),
    )
    .await;
    let job = admin_ok(&gw, Method::POST, "/scans", json!({ "tenant": "acme" })).await;
    let id = job["id"].as_str().unwrap().to_string();
    let mut progress = Value::Null;
    for _ in 0..200 {
        progress = admin_ok(&gw, Method::GET, &format!("/scans/{id}"), Value::Null).await;
        if !progress["finished_ms"].is_null() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // bad.txt and good.txt in legacy, and the copy of good.txt in checked.
    assert_eq!(progress["seen"], json!(3), "{progress}");
    assert_eq!(progress["infected"], json!(1), "{progress}");
    assert_eq!(progress["clean"], json!(2), "{progress}");
    let r = s3.get_object().bucket("legacy").key("bad.txt").send().await;
    assert_eq!(code(r), "VirusDetected");
    s3.get_object()
        .bucket("legacy")
        .key("good.txt")
        .send()
        .await
        .unwrap();
    let tags = s3
        .get_object_tagging()
        .bucket("legacy")
        .key("bad.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(tags.tag_set()[0].value(), "infected");
}

/// A gateway whose tenant `acme` may store `quota` bytes, with `bucket` created.
async fn quota_gateway(quota: u64, bucket: &str) -> (Gw, aws_sdk_s3::Client) {
    let acme = format!("quota_bytes = {quota}\n");
    let gw = Gw::start_setup(&Setup {
        acme: &acme,
        ..Default::default()
    })
    .await;
    let s3 = gw.acme();
    s3.create_bucket().bucket(bucket).send().await.unwrap();
    (gw, s3)
}

/// The signed headers of a PUT to `path` whose body is not part of the signature.
fn unsigned_put_headers(gw: &Gw, path: &str) -> Vec<(String, String)> {
    sign_headers(
        &gw.endpoint(),
        None,
        ACME,
        "PUT",
        path,
        &[],
        aws_sigv4::http_request::SignableBody::UnsignedPayload,
    )
}

/// A refusal decided before the body is read must still reach the client: closing a connection
/// with a half-read body makes the kernel reset it, and the SDK then reports a broken pipe or a
/// reset instead of the S3 error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_before_the_body_is_read_reach_the_client() {
    let (gw, s3) = quota_gateway(MIB as u64, "refused").await;
    let s3 = Arc::new(s3);
    let forger = Arc::new(gw.client((ACME.0, "not-the-secret")));
    for round in 0..5 {
        // Half over the quota, half with a forged signature: both refused before the body.
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let (client, want) = if i % 2 == 0 {
                    (s3.clone(), "QuotaExceeded")
                } else {
                    (forger.clone(), "SignatureDoesNotMatch")
                };
                tokio::spawn(async move {
                    let r = client
                        .put_object()
                        .bucket("refused")
                        .key(format!("r{round}-{i}"))
                        .body(ByteStream::from(data(MIB + 1, i)))
                        .customize()
                        // One attempt: a retry could hide the reset.
                        .config_override(
                            aws_sdk_s3::config::Builder::default()
                                .retry_config(aws_sdk_s3::config::retry::RetryConfig::disabled()),
                        )
                        .send()
                        .await;
                    (want, r)
                })
            })
            .collect();
        for t in tasks {
            let (want, r) = t.await.unwrap();
            assert_eq!(code(r), want);
        }
    }
    // The gateway keeps serving and nothing was charged.
    s3.put_object()
        .bucket("refused")
        .key("small")
        .body(ByteStream::from_static(b"ok"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        usage(&gw, "acme").await["usage"],
        json!({ "bytes": 2, "objects": 1 })
    );
}

/// A client that asks `Expect: 100-continue` (the aws CLI and boto3 do for large PUTs) and is
/// refused before its body is needed gets the error at once and is never told to send it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upload_that_expects_100_continue_sends_no_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (gw, _s3) = quota_gateway(MIB as u64, "waiting").await;
    let path = "/waiting/big.bin";
    let headers = unsigned_put_headers(&gw, path);
    let mut head = format!("PUT {path} HTTP/1.1\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("content-length: 8388608\r\nexpect: 100-continue\r\n\r\n");
    let mut conn = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    conn.write_all(head.as_bytes()).await.unwrap();
    // The body is never sent: the answer must come without it, and must not be "continue".
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("</Error>") {
        let n = tokio::time::timeout(std::time::Duration::from_secs(3), conn.read(&mut buf))
            .await
            .expect("the refusal arrives without the body")
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    assert_eq!(
        xml_code(&text[text.find("<?xml").unwrap()..]),
        "QuotaExceeded"
    );
    assert_eq!(usage(&gw, "acme").await["usage"]["bytes"], json!(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_uploads_never_overshoot_the_quota() {
    let (gw, s3) = quota_gateway(10 * MIB as u64, "race").await;
    // 20 uploads of 1 MiB at once into 10 MiB: exactly 10 fit.
    let s3 = Arc::new(s3);
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let s3 = s3.clone();
            tokio::spawn(async move {
                s3.put_object()
                    .bucket("race")
                    .key(format!("f{i}"))
                    .body(ByteStream::from(data(MIB, i)))
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| {
                        let m = aws_sdk_s3::error::ProvideErrorMetadata::meta(&e);
                        (
                            m.code().unwrap_or("?").to_string(),
                            m.message().unwrap_or("").to_string(),
                        )
                    })
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => ok += 1,
            Err((code, msg)) => {
                assert_eq!(code, "QuotaExceeded", "{msg}");
                assert!(msg.contains("limited to 10485760 bytes"), "{msg}");
            }
        }
    }
    assert_eq!(ok, 10);
    let u = usage(&gw, "acme").await;
    assert_eq!(
        u["usage"],
        json!({ "bytes": 10 * MIB, "objects": 10 }),
        "{u}"
    );
    let listed = s3.list_objects_v2().bucket("race").send().await.unwrap();
    assert_eq!(listed.key_count(), Some(10));

    // Deleting releases; an overwrite is charged the difference once committed.
    let keys: Vec<String> = listed
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect();
    s3.delete_object()
        .bucket("race")
        .key(&keys[0])
        .send()
        .await
        .unwrap();
    s3.put_object()
        .bucket("race")
        .key(&keys[1])
        .body(ByteStream::from(data(MIB / 2, 99)))
        .send()
        .await
        .unwrap();
    let u = usage(&gw, "acme").await;
    assert_eq!(
        u["usage"],
        json!({ "bytes": 8 * MIB + MIB / 2, "objects": 9 }),
        "{u}"
    );

    // Multipart parts are charged as they arrive and released by Abort.
    let up = s3
        .create_multipart_upload()
        .bucket("race")
        .key("mp")
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap();
    s3.upload_part()
        .bucket("race")
        .key("mp")
        .upload_id(id)
        .part_number(1)
        .body(ByteStream::from(data(MIB, 5)))
        .send()
        .await
        .unwrap();
    let r = s3
        .upload_part()
        .bucket("race")
        .key("mp")
        .upload_id(id)
        .part_number(2)
        .body(ByteStream::from(data(MIB, 6)))
        .send()
        .await;
    assert_eq!(code(r), "QuotaExceeded");
    assert_eq!(
        usage(&gw, "acme").await["usage"]["bytes"],
        json!(9 * MIB + MIB / 2)
    );
    s3.abort_multipart_upload()
        .bucket("race")
        .key("mp")
        .upload_id(id)
        .send()
        .await
        .unwrap();
    assert_eq!(
        usage(&gw, "acme").await["usage"]["bytes"],
        json!(8 * MIB + MIB / 2)
    );

    // A per-bucket object limit, set through the admin API.
    s3.create_bucket().bucket("few").send().await.unwrap();
    admin_ok(
        &gw,
        Method::PUT,
        "/tenants/acme/buckets/few/quota",
        json!({ "objects": 2 }),
    )
    .await;
    for k in ["a", "b"] {
        s3.put_object()
            .bucket("few")
            .key(k)
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .unwrap();
    }
    let r = s3
        .put_object()
        .bucket("few")
        .key("c")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await;
    assert_eq!(code(r), "QuotaExceeded");
    let u = usage(&gw, "acme").await;
    assert_eq!(
        u["buckets"]["few"]["usage"],
        json!({ "bytes": 2, "objects": 2 }),
        "{u}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn type_policies_judge_the_bytes_not_the_name() {
    let gw = Gw::start_setup(&Setup {
        tail: "[policy]\nmax_object_size = 1000000\n",
        ..Default::default()
    })
    .await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("docs").send().await.unwrap();
    admin_ok(
        &gw,
        Method::PUT,
        "/tenants/acme/buckets/docs/policy",
        json!({
            "allowed_types": ["image/*", "application/pdf"],
            "reject_type_mismatch": true,
            "key_pattern": "[a-z0-9/._-]+",
        }),
    )
    .await;
    // The policy in force merges the bucket's fields with the config file's size limit.
    let (_, p) = call(
        &gw,
        Method::GET,
        "/tenants/acme/buckets/docs/policy",
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(p["effective"]["max_object_size"], json!(1_000_000), "{p}");
    assert_eq!(p["effective"]["key_pattern"], json!("[a-z0-9/._-]+"), "{p}");
    assert_eq!(p["effective"]["scan"], json!(false), "{p}");
    let put = |key: &'static str, body: Vec<u8>, ct: Option<&'static str>| {
        let s3 = s3.clone();
        async move {
            s3.put_object()
                .bucket("docs")
                .key(key)
                .set_content_type(ct.map(str::to_string))
                .body(ByteStream::from(body))
                .send()
                .await
        }
    };
    let mut pe = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00".to_vec();
    pe.resize(0x80, 0);
    pe[0x3c] = 0x40;
    pe[0x40..0x44].copy_from_slice(b"PE\0\0");
    pe.extend(data(4000, 3));
    let pdf = [b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n".to_vec(), data(3000, 4)].concat();
    let png = [
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x02\0\0\0".to_vec(),
        data(500, 5),
    ]
    .concat();

    // An executable renamed .pdf and declared as a PDF.
    let e = put("invoice.pdf", pe.clone(), Some("application/pdf"))
        .await
        .unwrap_err();
    let m = aws_sdk_s3::error::ProvideErrorMetadata::meta(&e);
    assert_eq!(m.code(), Some("InvalidContentType"));
    assert!(
        m.message().unwrap().contains("portable-executable"),
        "{:?}",
        m.message()
    );
    // A real PDF and PNG pass, and the detected type is stored and returned.
    put("invoice.pdf", pdf, Some("application/pdf"))
        .await
        .unwrap();
    put("logo.png", png, Some("image/png")).await.unwrap();
    let h = head(&gw, "/docs/logo.png").await;
    assert_eq!(header(&h, "x-portcullis-detected-type"), "image/png");
    assert_eq!(header(&h, "x-portcullis-scan-status"), "not-scanned");
    // A PNG named .pdf contradicts its extension.
    let r = put(
        "fake.pdf",
        [b"\x89PNG\r\n\x1a\n".to_vec(), data(100, 1)].concat(),
        None,
    )
    .await;
    assert_eq!(code(r), "InvalidContentType");
    // Plain text is not an allowed type here.
    let r = put("notes.txt", b"just text".to_vec(), None).await;
    assert_eq!(code(r), "InvalidContentType");
    // Key rules, and the gateway-wide size limit from the config file.
    let r = put("Upper.pdf", b"%PDF-1.4\n".to_vec(), None).await;
    assert_eq!(code(r), "InvalidArgument");
    let big = [b"%PDF-1.4\n".to_vec(), data(1_000_001, 6)].concat();
    let r = put("big.pdf", big, None).await;
    assert_eq!(code(r), "EntityTooLarge");
    let listed = s3.list_objects_v2().bucket("docs").send().await.unwrap();
    let keys: Vec<&str> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["invoice.pdf", "logo.png"]);
    usage(&gw, "acme").await;
    // Other buckets keep the gateway's defaults.
    s3.create_bucket().bucket("misc").send().await.unwrap();
    s3.put_object()
        .bucket("misc")
        .key("Notes.TXT")
        .body(ByteStream::from(pe))
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_too_large_to_scan_follow_the_bucket_policy() {
    let clamd = Service::start(Kind::Clamd).await;
    let gw = Gw::start_setup(&Setup {
        tail: &clamd.scanner_toml("max_stream_mb = 1"),
        ..Default::default()
    })
    .await;
    let s3 = gw.acme();
    for b in ["strict", "lenient", "images"] {
        s3.create_bucket().bucket(b).send().await.unwrap();
    }
    admin_ok(
        &gw,
        Method::PUT,
        "/tenants/acme/buckets/lenient/policy",
        json!({ "on_too_large_to_scan": "store-unscanned" }),
    )
    .await;
    admin_ok(
        &gw,
        Method::PUT,
        "/tenants/acme/buckets/images/policy",
        json!({ "allowed_types": ["image/*"] }),
    )
    .await;
    let big = || ByteStream::from(data(2 * MIB, 9));
    let e = s3
        .put_object()
        .bucket("strict")
        .key("big.bin")
        .body(big())
        .send()
        .await
        .unwrap_err();
    let m = aws_sdk_s3::error::ProvideErrorMetadata::meta(&e);
    assert_eq!(m.code(), Some("EntityTooLarge"));
    assert!(
        m.message().unwrap().contains("virus scanner accepts"),
        "{m:?}"
    );
    // The type is judged first: a refused type says so, whatever its size.
    let r = s3
        .put_object()
        .bucket("images")
        .key("big.bin")
        .body(big())
        .send()
        .await;
    assert_eq!(code(r), "InvalidContentType");
    // A bucket that stores such objects unscanned never reports them clean, nor serves them.
    s3.put_object()
        .bucket("lenient")
        .key("big.bin")
        .body(big())
        .send()
        .await
        .unwrap();
    assert_eq!(scan_status(&gw, "/lenient/big.bin").await, "pending");
    let r = s3
        .get_object()
        .bucket("lenient")
        .key("big.bin")
        .send()
        .await;
    assert_eq!(code(r), "ScanPending");
    // Under the limit, the same bucket scans as usual. A scanned upload's MD5 is computed from
    // the stored blob while clamd scans: the ETag and a declared Content-MD5 still hold.
    use base64::Engine as _;
    let body = data(MIB / 2, 9);
    let md5 = crate::objects::md5_of(&body);
    let put = s3
        .put_object()
        .bucket("strict")
        .key("small.bin")
        .content_md5(base64::engine::general_purpose::STANDARD.encode(md5))
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        put.e_tag(),
        Some(format!("\"{}\"", hex::encode(md5)).as_str())
    );
    assert_eq!(scan_status(&gw, "/strict/small.bin").await, "clean");
    let wrong = s3
        .put_object()
        .bucket("strict")
        .key("wrong.bin")
        .content_md5(base64::engine::general_purpose::STANDARD.encode([0u8; 16]))
        .body(ByteStream::from(body))
        .send()
        .await;
    assert_eq!(code(wrong), "BadDigest");
    let listed = s3.list_objects_v2().bucket("strict").send().await.unwrap();
    let keys: Vec<_> = listed.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["small.bin"]);
}

/// Scans in flight are bounded: with every slot taken, the next scan waits its timeout and is
/// refused as busy instead of piling onto clamd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_slots_are_bounded() {
    use portcullis::scanner::{Address, ScanError, Scanner, ScannerConfig, Verdict};
    let clamd = Service::start(Kind::Clamd).await;
    let scanner = Scanner::new(ScannerConfig {
        address: Address::Tcp(format!("127.0.0.1:{}", clamd.port)),
        timeout: std::time::Duration::from_secs(1),
        max_concurrent: 1,
        max_stream: 64 << 20,
        quarantine: None,
        retry_interval: std::time::Duration::from_secs(3600),
    });
    let (held, _sender) = scanner.start().await.unwrap();
    let started = std::time::Instant::now();
    assert!(matches!(scanner.start().await, Err(ScanError::Busy(1))));
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
    drop(held);
    drop(_sender);
    let body: portcullis::backend::ByteStream = Box::pin(futures::stream::iter([Ok(
        bytes::Bytes::from_static(b"hello"),
    )]));
    assert_eq!(scanner.scan(body).await.unwrap(), Verdict::Clean);
}

/// A PUT (or part) of a body nobody declared a length for, streamed by `tool`: `curl` reads
/// it from a pipe (`-T -`), `requests` from a generator (`tests/compat/stream_put.py`); both
/// send HTTP chunked transfer without Content-Length. Returns the status and the body.
fn stream_put(tool: &str, url: &str, body: &[u8]) -> (u16, String) {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut child = match tool {
        "curl" => Command::new("curl")
            .args(["-s", "-w", "\n%{http_code}", "-T", "-", url])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
        _ => Command::new(root.join(".venv/bin/python"))
            .arg(root.join("tests/compat/stream_put.py"))
            .arg(url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    };
    let mut stdin = child.stdin.take().unwrap();
    let body = body.to_vec();
    let writer = std::thread::spawn(move || {
        // The client may stop reading once it has its answer.
        let _ = stdin.write_all(&body);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (first, rest) = if tool == "curl" {
        let (b, s) = text
            .trim_end()
            .rsplit_once('\n')
            .unwrap_or(("", text.trim()));
        (s.to_string(), b.to_string())
    } else {
        let (s, b) = text.split_once('\n').unwrap_or((text.as_str(), ""));
        (s.to_string(), b.to_string())
    };
    (first.trim().parse().unwrap_or(0), rest)
}

/// A presigned PUT URL for `key` (and `part` of `upload`, when given).
async fn presigned_put(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    part: Option<(&str, i32)>,
) -> String {
    use aws_sdk_s3::presigning::PresigningConfig;
    let cfg = PresigningConfig::expires_in(std::time::Duration::from_secs(300)).unwrap();
    match part {
        None => s3
            .put_object()
            .bucket(bucket)
            .key(key)
            .presigned(cfg)
            .await
            .unwrap()
            .uri()
            .to_string(),
        Some((id, n)) => s3
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(id)
            .part_number(n)
            .presigned(cfg)
            .await
            .unwrap()
            .uri()
            .to_string(),
    }
}

/// A body nobody declared a length for (HTTP chunked, no Content-Length: curl `-T -` from a
/// pipe, `requests` with a generator, a SigV4-header PUT with an unsigned payload) goes through
/// the same write protocol as a sized one: the quota reserved as it arrives (one that grows past
/// it is refused where it crosses, leaves nothing and holds no reservation; one that fits
/// exactly is accepted), parts too, the type policy, the virus scan and clamd's size bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_without_a_declared_length_is_metered() {
    let clamd = Service::start(Kind::Clamd).await;
    let quota = 3 * MIB;
    let gw = Gw::start_setup(&Setup {
        acme: &format!("quota_bytes = {quota}\n"),
        tail: &clamd.scanner_toml("max_stream_mb = 2"),
        ..Default::default()
    })
    .await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("stream").send().await.unwrap();
    let get = |key: &'static str| {
        let s3 = s3.clone();
        async move {
            body_of(
                s3.get_object()
                    .bucket("stream")
                    .key(key)
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    let keys = || async {
        let listed = s3.list_objects_v2().bucket("stream").send().await.unwrap();
        listed
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect::<Vec<_>>()
    };

    // A stream past clamd's 2 MiB is too large to scan from there (refused here, the
    // default), as a sized one would be.
    let url = presigned_put(&s3, "stream", "huge.bin", None).await;
    let (status, body) = stream_put("requests", &url, &data(2 * MIB + 1000, 7));
    assert_eq!((status, xml_code(&body)), (400, "EntityTooLarge"), "{body}");
    assert!(body.contains("virus scanner"), "{body}");

    // Both tools, within the quota: stored whole.
    let piped = data(700 * 1024, 1);
    let url = presigned_put(&s3, "stream", "piped.bin", None).await;
    assert_eq!(stream_put("curl", &url, &piped).0, 200);
    assert_eq!(get("piped.bin").await, piped);
    let generated = data(500 * 1024, 2);
    let url = presigned_put(&s3, "stream", "generated.bin", None).await;
    let (status, body) = stream_put("requests", &url, &generated);
    assert_eq!(status, 200, "{body}");
    assert_eq!(get("generated.bin").await, generated);
    // A SigV4 header-signed PUT with an unsigned payload, streamed.
    let signed = data(300 * 1024, 3);
    let (status, body) =
        send_streamed(&gw.endpoint(), ACME, "PUT", "/stream/signed.bin", &signed).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(get("signed.bin").await, signed);
    let used = (700 + 500 + 300) * 1024;
    assert_eq!(usage(&gw, "acme").await["usage"]["bytes"], json!(used));

    // Past the quota halfway through: refused where it crosses, nothing stored, nothing held.
    for tool in ["curl", "requests"] {
        let url = presigned_put(&s3, "stream", "over.bin", None).await;
        let (status, body) = stream_put(tool, &url, &data(2 * MIB, 4));
        assert_eq!(
            (status, xml_code(&body)),
            (403, "QuotaExceeded"),
            "{tool}: {body}"
        );
        assert_eq!(
            usage(&gw, "acme").await["usage"]["bytes"],
            json!(used),
            "{tool}"
        );
    }
    assert!(!keys().await.contains(&"over.bin".to_string()));

    // A part streamed the same way, then completed.
    let id = s3
        .create_multipart_upload()
        .bucket("stream")
        .key("parted.bin")
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_string();
    let part = data(200 * 1024, 5);
    let url = presigned_put(&s3, "stream", "parted.bin", Some((&id, 1))).await;
    let (status, body) = stream_put("curl", &url, &part);
    assert_eq!(status, 200, "{body}");
    let parts = s3
        .list_parts()
        .bucket("stream")
        .key("parted.bin")
        .upload_id(&id)
        .send()
        .await
        .unwrap();
    let p = &parts.parts()[0];
    assert_eq!(p.size(), Some(200 * 1024));
    let done = aws_sdk_s3::types::CompletedPart::builder()
        .part_number(1)
        .e_tag(p.e_tag().unwrap())
        .build();
    complete(&s3, "stream", "parted.bin", &id, vec![done]).await;
    assert_eq!(get("parted.bin").await, part);
    let used = used + 200 * 1024;

    // Exactly what is left of the quota fits.
    let rest = data(quota - used, 6);
    let url = presigned_put(&s3, "stream", "exact.bin", None).await;
    let (status, body) = stream_put("requests", &url, &rest);
    assert_eq!(status, 200, "{body}");
    assert_eq!(usage(&gw, "acme").await["usage"]["bytes"], json!(quota));
    s3.delete_object()
        .bucket("stream")
        .key("exact.bin")
        .send()
        .await
        .unwrap();

    // An infected stream is refused.
    let url = presigned_put(&s3, "stream", "eicar.txt", None).await;
    let (status, body) = stream_put("curl", &url, EICAR);
    assert_eq!((status, xml_code(&body)), (403, "VirusDetected"), "{body}");
    // The type policy judges the first bytes of a stream too.
    admin_ok(
        &gw,
        Method::PUT,
        "/tenants/acme/buckets/stream/policy",
        json!({ "allowed_types": ["image/*"] }),
    )
    .await;
    let url = presigned_put(&s3, "stream", "notes.txt", None).await;
    let (status, body) = stream_put("curl", &url, b"just text, streamed");
    assert_eq!(
        (status, xml_code(&body)),
        (415, "InvalidContentType"),
        "{body}"
    );
    let mut left = keys().await;
    left.sort();
    assert_eq!(
        left,
        ["generated.bin", "parted.bin", "piped.bin", "signed.bin"]
    );
    usage(&gw, "acme").await;
}

/// Every way a write can fail after its admission gives the whole reservation back and leaves
/// usage exactly what is stored: a trickling body (`RequestTimeout`), a client that hangs up
/// mid-body, an infected body, a refused type, an aws-chunked body longer than it declared, a
/// dead backend — on a tenant with a quota, on both engines. In the end the tenant can store
/// exactly what its quota leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_upload_gives_its_whole_reservation_back() {
    use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let clamd = Service::start(Kind::Clamd).await;
    let mut remote = Service::start(Kind::S3sFs).await;
    let quota = 4 * MIB;
    let gw = Gw::start_setup(&Setup {
        server: "body_timeout_secs = 2",
        acme: &format!("quota_bytes = {quota}\nlocations = [\"remote\"]"),
        tail: &format!(
            "{}{}",
            clamd.scanner_toml(""),
            remote.backend_toml("remote", "")
        ),
        ..Default::default()
    })
    .await;
    let s3 = gw.acme();
    for b in ["fail", "images"] {
        s3.create_bucket().bucket(b).send().await.unwrap();
    }
    s3.create_bucket()
        .bucket("far")
        .create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from("remote"))
                .build(),
        )
        .send()
        .await
        .unwrap();
    s3.put_object()
        .bucket("fail")
        .key("kept")
        .body(ByteStream::from(data(MIB, 1)))
        .send()
        .await
        .unwrap();
    let settled = |what: &'static str| {
        let admin = gw.admin;
        async move {
            let v = idle_usage(admin, "acme").await;
            assert_eq!(v["usage"]["bytes"], json!(MIB), "{what}: {v}");
            assert_eq!(v["usage"]["objects"], json!(1), "{what}: {v}");
        }
    };

    // A body that trickles: refused when the pace says so.
    let mut sock = raw_put_head(&gw.endpoint(), gw.addr, "/fail/slow", MIB as u64).await;
    let (mut rd, mut wr) = sock.split();
    let trickle = async {
        for _ in 0..60 {
            if wr.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
    };
    let answer = async {
        let mut buf = vec![0u8; 8192];
        let n = rd.read(&mut buf).await.unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let resp = tokio::select! {
        r = answer => r,
        () = trickle => panic!("no answer to a trickling body"),
    };
    assert_eq!(xml_code(&resp), "RequestTimeout", "{resp}");
    drop(sock);
    settled("trickle").await;

    // A client that hangs up halfway.
    let mut sock = raw_put_head(&gw.endpoint(), gw.addr, "/fail/cut", 2 * MIB as u64).await;
    sock.write_all(&data(MIB, 2)).await.unwrap();
    sock.flush().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    drop(sock);
    settled("hang-up").await;

    // An infected body, and a type the bucket refuses.
    let e = s3
        .put_object()
        .bucket("fail")
        .key("eicar.txt")
        .body(ByteStream::from_static(EICAR))
        .send()
        .await;
    assert_eq!(code(e), "VirusDetected");
    settled("infected").await;
    admin_ok(
        &gw,
        Method::PUT,
        "/tenants/acme/buckets/images/policy",
        json!({ "allowed_types": ["image/*"] }),
    )
    .await;
    let e = s3
        .put_object()
        .bucket("images")
        .key("notes.txt")
        .body(ByteStream::from(b"plain text, not an image".to_vec()))
        .send()
        .await;
    assert_eq!(code(e), "InvalidContentType");
    settled("type").await;

    // An aws-chunked body carrying more than its declared decoded length.
    let (status, body) = raw(
        &gw.endpoint(),
        ACME,
        "PUT",
        "/fail/longer",
        &[
            ("content-encoding", "aws-chunked"),
            ("x-amz-decoded-content-length", "5"),
        ],
        b"a\r\nhellohello\r\n0\r\n\r\n".to_vec(),
        aws_sigv4::http_request::SignableBody::StreamingUnsignedPayloadTrailer,
    )
    .await;
    assert!((400..500).contains(&status), "{status} {body}");
    settled("longer than declared").await;

    // The backend of a bucket dies.
    remote.kill();
    let e = s3
        .put_object()
        .bucket("far")
        .key("lost")
        .body(ByteStream::from(data(MIB, 3)))
        .send()
        .await;
    assert!(e.is_err(), "a PUT to a dead backend succeeded");
    settled("dead backend").await;

    // Nothing failed kept any room: exactly the rest of the quota fits.
    s3.put_object()
        .bucket("fail")
        .key("rest")
        .body(ByteStream::from(data(quota - MIB, 4)))
        .send()
        .await
        .unwrap();
    let v = idle_usage(gw.admin, "acme").await;
    assert_eq!(v["usage"]["bytes"], json!(quota), "{v}");
    let mut keys: Vec<String> = s3
        .list_objects_v2()
        .bucket("fail")
        .send()
        .await
        .unwrap()
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect();
    keys.sort();
    assert_eq!(keys, ["kept", "rest"]);
}

/// A clamd that hangs (accepts, then answers nothing) is not clean: the upload waits no longer
/// than the scanner's timeouts and is refused, and nothing becomes visible.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_scanner_times_out_and_refuses_the_upload() {
    let clamd = Service::start(Kind::Clamd).await;
    let gw = Gw::start_setup(&Setup {
        tail: &clamd
            .scanner_toml("")
            .replace("timeout_secs = 10", "timeout_secs = 1"),
        ..Default::default()
    })
    .await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("docs").send().await.unwrap();
    clamd.freeze(true);
    let started = std::time::Instant::now();
    let r = s3
        .put_object()
        .bucket("docs")
        .key("stuck.bin")
        .body(ByteStream::from(data(MIB, 4)))
        .send()
        .await;
    let waited = started.elapsed();
    clamd.freeze(false);
    assert_eq!(code(r), "ScannerUnavailable");
    // A frozen clamd still accepts connections (the kernel's backlog), so the upload went
    // through the write and verdict timeouts (at least the 2 s verdict wait), and not beyond
    // them, SDK retries of the 503 included.
    assert!(waited >= std::time::Duration::from_secs(2), "{waited:?}");
    assert!(waited < std::time::Duration::from_secs(15), "{waited:?}");
    let listed = s3.list_objects_v2().bucket("docs").send().await.unwrap();
    assert_eq!(listed.key_count(), Some(0));
    // Thawed, it scans again.
    s3.put_object()
        .bucket("docs")
        .key("after.bin")
        .body(ByteStream::from(data(MIB, 5)))
        .send()
        .await
        .unwrap();
}
