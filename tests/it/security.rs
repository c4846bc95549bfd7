//! The hostile client: replayed SigV2, unsigned headers on presigned URLs, encryption requests the
//! gateway cannot honour, trickling bodies, idle connections, open uploads without end. Each test
//! asserts the refusal the client gets and that the gateway keeps serving everyone else.

use std::time::{Duration, Instant};

use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sigv4::http_request::SignableBody;
use s3s::crypto::Checksum as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;
use crate::objects::walk;
use crate::services::{Kind, Service};

pub(crate) async fn put(s3: &aws_sdk_s3::Client, bucket: &str, key: &str, body: &[u8]) {
    s3.put_object()
        .bucket(bucket)
        .key(key)
        .body(ByteStream::from(body.to_vec()))
        .send()
        .await
        .unwrap_or_else(|e| panic!("PUT {bucket}/{key}: {e:?}"));
}

pub(crate) async fn exists(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> bool {
    match s3.head_object().bucket(bucket).key(key).send().await {
        Ok(_) => true,
        Err(e) => {
            assert_eq!(code(Err::<(), _>(e)), "NotFound");
            false
        }
    }
}

/// Whether the server closes `sock` (EOF or reset) within `limit`; whatever it sends first (the
/// rest of an answer, hyper's 408) is read and dropped.
async fn closed_within(sock: &mut tokio::net::TcpStream, limit: Duration) -> bool {
    let mut b = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, sock.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigv2_headers_and_forged_urls_are_refused_and_change_nothing() {
    let gw = Gw::start().await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("sig-v2").send().await.unwrap();
    put(&s3, "sig-v2", "kept", b"original").await;
    let http = reqwest::Client::new();
    // The replay of the review: a V2 header signature dated 2001, with a body of its choosing.
    // It is refused before any signature is checked, so its value does not matter.
    for (method, key) in [("PUT", "kept"), ("DELETE", "kept"), ("GET", "kept")] {
        let resp = http
            .request(
                method.parse().unwrap(),
                format!("{}/sig-v2/{key}", gw.endpoint()),
            )
            .header("date", "Mon, 01 Jan 2001 00:00:00 GMT")
            .header(
                "authorization",
                "AWS ACMEDEVKEY:frJIUN8DYpKDtOLCwo//yllqDzg=",
            )
            .body("replayed body")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 400, "{method}");
        let body = resp.text().await.unwrap();
        assert_eq!(xml_code(&body), "InvalidRequest", "{body}");
        assert!(body.contains("SigV2 is not supported; use SigV4"), "{body}");
    }
    // A V2 presigned URL valid until 2101 is beyond the 7-day bound; one within it with a
    // signature of someone else's making is refused by the signature check.
    let resp = http
        .get(format!(
            "{}/sig-v2/kept?AWSAccessKeyId=ACMEDEVKEY&Expires=4133894400&Signature=abc%3D",
            gw.endpoint()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(
        xml_code(&resp.text().await.unwrap()),
        "AuthorizationQueryParametersError"
    );
    let soon = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 300;
    let resp = http
        .put(format!(
            "{}/sig-v2/kept?AWSAccessKeyId=ACMEDEVKEY&Expires={soon}&Signature=abc%3D",
            gw.endpoint()
        ))
        .body("replayed body")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    assert_eq!(
        xml_code(&resp.text().await.unwrap()),
        "SignatureDoesNotMatch"
    );
    // Nothing changed, and SigV4 clients go on working.
    let got = body_of(
        s3.get_object()
            .bucket("sig-v2")
            .key("kept")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(got, b"original");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_presigned_upload_url_cannot_carry_unsigned_headers() {
    let gw = Gw::start().await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("crm").send().await.unwrap();
    put(&s3, "crm", "secret.txt", b"contract of another customer").await;
    let upload = s3
        .put_object()
        .bucket("crm")
        .key("uploads/user123.jpg")
        .presigned(PresigningConfig::expires_in(Duration::from_secs(600)).unwrap())
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let send = |extra: &'static [(&'static str, &'static str)]| {
        let mut req = http.put(upload.uri()).body("avatar bytes");
        for (k, v) in upload.headers() {
            req = req.header(k, v);
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        req.send()
    };
    // The attack of the review: copy any object of the signer's tenant into the upload key.
    for extra in [
        &[("x-amz-copy-source", "/crm/secret.txt")][..],
        &[("x-amz-meta-owner", "attacker")][..],
        &[("x-amz-tagging", "public=yes")][..],
        &[("x-amz-acl", "public-read")][..],
    ] {
        let resp = send(extra).await.unwrap();
        assert_eq!(resp.status().as_u16(), 403, "{extra:?}");
        let body = resp.text().await.unwrap();
        assert_eq!(xml_code(&body), "AccessDenied", "{body}");
        assert!(
            body.contains("There were headers present in the request which were not signed")
                && body.contains(extra[0].0),
            "{body}"
        );
        assert!(
            !exists(&s3, "crm", "uploads/user123.jpg").await,
            "{extra:?}"
        );
    }
    // The URL itself works, and stores what was sent.
    let resp = send(&[]).await.unwrap();
    assert_eq!(
        resp.status().as_u16(),
        200,
        "{}",
        resp.text().await.unwrap()
    );
    let got = body_of(
        s3.get_object()
            .bucket("crm")
            .key("uploads/user123.jpg")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(got, b"avatar bytes");

    // Header auth too: a header added after signing is refused.
    let mut headers = sign_headers(
        &gw.endpoint(),
        None,
        ACME,
        "PUT",
        "/crm/other",
        &[],
        SignableBody::UnsignedPayload,
    );
    headers.push(("x-amz-copy-source".into(), "/crm/secret.txt".into()));
    let mut req = http.put(format!("{}/crm/other", gw.endpoint()));
    for (k, v) in &headers {
        req = req.header(k, v);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    assert!(!exists(&s3, "crm", "other").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_urls_live_at_most_seven_days() {
    let gw = Gw::start().await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("presign").send().await.unwrap();
    put(&s3, "presign", "k", b"data").await;
    let week = s3
        .get_object()
        .bucket("presign")
        .key("k")
        .presigned(PresigningConfig::expires_in(Duration::from_secs(604_800)).unwrap())
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let resp = http.get(week.uri()).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.bytes().await.unwrap().as_ref(), b"data");
    // A year, as the review's URL: no SDK signs it, so the lifetime is edited in.
    let year = week
        .uri()
        .replace("X-Amz-Expires=604800", "X-Amz-Expires=31536000");
    assert_ne!(year, week.uri());
    let resp = http.get(&year).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let body = resp.text().await.unwrap();
    assert_eq!(
        xml_code(&body),
        "AuthorizationQueryParametersError",
        "{body}"
    );
    assert!(body.contains("604800"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encryption_requests_are_refused_not_ignored() {
    use aws_sdk_s3::types::{
        ServerSideEncryption, ServerSideEncryptionByDefault, ServerSideEncryptionConfiguration,
        ServerSideEncryptionRule,
    };
    use base64::Engine as _;
    let gw = Gw::start().await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("enc").send().await.unwrap();
    let refused = |r: Result<(), String>, header: &str| {
        let e = r.unwrap_err();
        assert!(e.contains("NotImplemented"), "{e}");
        assert!(e.contains(header), "the message names {header}: {e}");
    };
    let sdk_err = |e: &dyn std::fmt::Debug| format!("{e:?}");
    refused(
        s3.put_object()
            .bucket("enc")
            .key("sse-s3")
            .server_side_encryption(ServerSideEncryption::Aes256)
            .body(ByteStream::from_static(b"plaintext"))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| sdk_err(&e)),
        "x-amz-server-side-encryption",
    );
    let key = [7u8; 32];
    let b64 = base64::engine::general_purpose::STANDARD;
    let key_md5 = b64.encode(s3s::crypto::Md5::checksum(&key));
    refused(
        s3.put_object()
            .bucket("enc")
            .key("sse-c")
            .sse_customer_algorithm("AES256")
            .sse_customer_key(b64.encode(key))
            .sse_customer_key_md5(&key_md5)
            .body(ByteStream::from_static(b"plaintext"))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| sdk_err(&e)),
        "x-amz-server-side-encryption-customer",
    );
    refused(
        s3.create_multipart_upload()
            .bucket("enc")
            .key("mp")
            .server_side_encryption(ServerSideEncryption::Aes256)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| sdk_err(&e)),
        "x-amz-server-side-encryption",
    );
    put(&s3, "enc", "plain", b"plain").await;
    refused(
        s3.copy_object()
            .bucket("enc")
            .key("copy")
            .copy_source("enc/plain")
            .server_side_encryption(ServerSideEncryption::Aes256)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| sdk_err(&e)),
        "x-amz-server-side-encryption",
    );
    let rule = ServerSideEncryptionRule::builder()
        .apply_server_side_encryption_by_default(
            ServerSideEncryptionByDefault::builder()
                .sse_algorithm(ServerSideEncryption::Aes256)
                .build()
                .unwrap(),
        )
        .build();
    let r = s3
        .put_bucket_encryption()
        .bucket("enc")
        .server_side_encryption_configuration(
            ServerSideEncryptionConfiguration::builder()
                .rules(rule)
                .build()
                .unwrap(),
        )
        .send()
        .await;
    assert_eq!(code(r), "NotImplemented");
    // Nothing was stored.
    for k in ["sse-s3", "sse-c", "copy"] {
        assert!(!exists(&s3, "enc", k).await, "{k}");
    }
    let uploads = s3
        .list_multipart_uploads()
        .bucket("enc")
        .send()
        .await
        .unwrap();
    assert!(uploads.uploads().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_credential_scope_names_s3_and_optionally_the_region() {
    let gw = Gw::start_with("require_region = true", "").await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("region").send().await.unwrap();
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version_latest()
        .endpoint_url(gw.endpoint())
        .region(aws_sdk_s3::config::Region::new("eu-west-3"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            ACME.0, ACME.1, None, None, "test",
        ))
        .force_path_style(true)
        .build();
    let elsewhere = aws_sdk_s3::Client::from_conf(conf);
    let r = elsewhere.list_objects_v2().bucket("region").send().await;
    assert_eq!(code(r), "AuthorizationHeaderMalformed");
    // The default accepts any region, as documented.
    let open = Gw::start().await;
    open.acme()
        .create_bucket()
        .bucket("region")
        .send()
        .await
        .unwrap();
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version_latest()
        .endpoint_url(open.endpoint())
        .region(aws_sdk_s3::config::Region::new("eu-west-3"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            ACME.0, ACME.1, None, None, "test",
        ))
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
        .list_objects_v2()
        .bucket("region")
        .send()
        .await
        .unwrap();
    // A scope for another service is refused whatever the region setting.
    let resp = reqwest::Client::new()
        .get(format!("{}/region", open.endpoint()))
        .header("x-amz-date", "20260101T000000Z")
        .header("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=ACMEDEVKEY/20260101/us-east-1/sts/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=0000",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(
        xml_code(&resp.text().await.unwrap()),
        "AuthorizationHeaderMalformed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_chunk_signature_and_a_wrong_payload_hash_are_named() {
    let gw = Gw::start().await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("sig").send().await.unwrap();
    let zeros = "0".repeat(64);
    let chunked =
        format!("5;chunk-signature={zeros}\r\nhello\r\n0;chunk-signature={zeros}\r\n\r\n");
    let (status, body) = raw(
        &gw.endpoint(),
        ACME,
        "PUT",
        "/sig/chunked",
        &[
            ("content-encoding", "aws-chunked"),
            ("x-amz-decoded-content-length", "5"),
        ],
        chunked.into_bytes(),
        SignableBody::Precomputed("STREAMING-AWS4-HMAC-SHA256-PAYLOAD".into()),
    )
    .await;
    assert_eq!(
        (status, xml_code(&body)),
        (403, "SignatureDoesNotMatch"),
        "{body}"
    );
    let other = hex::encode(s3s::crypto::Sha256::checksum(b"other"));
    let (status, body) = raw(
        &gw.endpoint(),
        ACME,
        "PUT",
        "/sig/hashed",
        &[],
        b"hello".to_vec(),
        SignableBody::Precomputed(other),
    )
    .await;
    assert_eq!(
        (status, xml_code(&body)),
        (400, "XAmzContentSHA256Mismatch"),
        "{body}"
    );
    assert!(!exists(&s3, "sig", "chunked").await);
    assert!(!exists(&s3, "sig", "hashed").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_body_times_out_and_gives_its_reservation_back() {
    let gw = Gw::start_setup(&Setup {
        server: "body_timeout_secs = 2",
        acme: "quota_bytes = 1048576",
        ..Default::default()
    })
    .await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("slow").send().await.unwrap();
    let mut sock = raw_put_head(&gw.endpoint(), gw.addr, "/slow/k", 1 << 20).await;
    let (mut rd, mut wr) = sock.split();
    let started = Instant::now();
    // One byte every 300 ms: never idle for 2 s, far below the minimum rate.
    let trickle = async {
        for _ in 0..60 {
            if wr.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    let answer = async {
        let mut buf = vec![0u8; 8192];
        let n = rd.read(&mut buf).await.unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let resp = tokio::select! {
        r = answer => r,
        () = trickle => panic!("no answer within 18 s of trickling"),
    };
    let took = started.elapsed();
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert_eq!(xml_code(&resp), "RequestTimeout", "{resp}");
    assert!(took < Duration::from_secs(6), "answered after {took:?}");
    drop(sock);
    idle_usage(gw.admin, "acme").await;
    // While it trickled the whole declared MiB was reserved; now all of it is free again.
    put(&s3, "slow", "exactly-the-quota", &data(1 << 20, 3)).await;
    assert!(!exists(&s3, "slow", "k").await);
    assert_eq!(walk(&gw.dir.path().join("tmp")), 0);
}

/// The review's stall: 600 uploads of one tenant trickling while another tenant works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_hundred_trickling_uploads_do_not_stall_other_tenants() {
    let gw = Gw::start_with(
        "body_timeout_secs = 60\nmax_tenant_uploads_in_flight = 1000\nmax_uploads_in_flight = 2000\nmax_connections_per_ip = 1000",
        "",
    )
    .await;
    gw.acme()
        .create_bucket()
        .bucket("slow")
        .send()
        .await
        .unwrap();
    let globex = gw.client(GLOBEX);
    globex.create_bucket().bucket("fast").send().await.unwrap();
    put(&globex, "fast", "read-me", &data(256 * 1024, 1)).await;
    let mut socks = Vec::new();
    for i in 0..600 {
        let mut s = raw_put_head(&gw.endpoint(), gw.addr, &format!("/slow/t{i}"), 1 << 20).await;
        // Past the type sniffer's first bytes, so the write to the backend has begun.
        s.write_all(&data(64 * 1024, i)).await.unwrap();
        socks.push(s);
    }
    // Every one of them is admitted and waiting for its next byte (a blocking-pool thread each,
    // before the local backend's writer was changed: 600 > tokio's 512).
    let mut lat = Vec::new();
    for i in 0..40 {
        let t = Instant::now();
        let op = async {
            if i % 4 == 0 {
                put(&globex, "fast", &format!("w{i}"), &data(64 * 1024, i)).await;
            } else {
                let got = body_of(
                    globex
                        .get_object()
                        .bucket("fast")
                        .key("read-me")
                        .send()
                        .await
                        .unwrap(),
                )
                .await;
                assert_eq!(got.len(), 256 * 1024);
            }
        };
        // Before the local backend's writer changed, this stalled for good.
        tokio::time::timeout(Duration::from_secs(10), op)
            .await
            .unwrap_or_else(|_| panic!("request {i} of the other tenant stalled"));
        lat.push(t.elapsed());
    }
    lat.sort();
    let p99 = lat[lat.len() * 99 / 100];
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?}; all: {lat:?}");
    // The trickling uploads are still open (none was refused meanwhile).
    let mut b = [0u8; 1];
    for s in socks.iter_mut().take(10) {
        assert!(
            tokio::time::timeout(Duration::from_millis(10), s.read(&mut b))
                .await
                .is_err(),
            "a trickling upload was answered"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_in_flight_are_bounded_per_tenant_with_slow_down() {
    let gw = Gw::start_with("max_tenant_uploads_in_flight = 4", "").await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("bkt").send().await.unwrap();
    let globex = gw.client(GLOBEX);
    globex.create_bucket().bucket("glob").send().await.unwrap();
    let mut held = Vec::new();
    for i in 0..4 {
        let mut s = raw_put_head(&gw.endpoint(), gw.addr, &format!("/bkt/held{i}"), 1024).await;
        s.write_all(b"x").await.unwrap();
        held.push(s);
    }
    // The four are admitted once their heads are read: wait until the tenant has four writes
    // in flight, then a fifth upload is one too many.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = tenant_usage(gw.admin, "acme").await;
        if v["writes_in_flight"] == 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the four uploads were not admitted: {v}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = raw(
        &gw.endpoint(),
        ACME,
        "PUT",
        "/bkt/fifth",
        &[],
        b"x".to_vec(),
        SignableBody::UnsignedPayload,
    )
    .await;
    assert_eq!(status, 503, "{body}");

    assert_eq!(xml_code(&body), "SlowDown", "{body}");
    // Another tenant is not affected.
    put(&globex, "glob", "k", b"fine").await;
    // Once the held uploads end (their clients hang up), the tenant may upload again.
    drop(held);
    idle_usage(gw.admin, "acme").await;
    put(&s3, "bkt", "after", b"x").await;
}

/// Opens a connection to `to` from `from` (any 127.x address is local on Linux).
async fn connect_from(from: &str, to: std::net::SocketAddr) -> tokio::net::TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
    sock.connect(to).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_idle_connections_do_not_lock_out_clients() {
    let gw = Gw::start_with("header_timeout_secs = 4\nmax_connections_per_ip = 100", "").await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("bkt").send().await.unwrap();
    put(&s3, "bkt", "k", b"still here").await;
    let mut idle = Vec::new();
    for _ in 0..5000 {
        idle.push(connect_from("127.0.0.2", gw.addr).await);
    }
    // A signed GET from another address answers at once.
    let t = Instant::now();
    let got = body_of(s3.get_object().bucket("bkt").key("k").send().await.unwrap()).await;
    assert_eq!(got, b"still here");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    // Beyond the per-address limit they were closed at once, long before the timeout ...
    let mut tasks = tokio::task::JoinSet::new();
    for mut s in idle {
        tasks.spawn(async move {
            let early = closed_within(&mut s, Duration::from_millis(500)).await;
            (early, s)
        });
    }
    let mut still_open = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let (early, s) = r.unwrap();
        if !early {
            still_open.push(s);
        }
    }
    assert_eq!(still_open.len(), 100, "max_connections_per_ip were kept");
    // ... and the hundred it kept are closed by the first-byte timeout.
    for mut s in still_open {
        tasks.spawn(async move { (closed_within(&mut s, Duration::from_secs(8)).await, s) });
    }
    while let Some(r) = tasks.join_next().await {
        assert!(r.unwrap().0, "an idle connection outlived the timeout");
    }
    // An idle keep-alive connection is closed too, after its request was answered.
    let mut sock = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let headers = sign_headers(
        &gw.endpoint(),
        None,
        ACME,
        "GET",
        "/bkt/k",
        &[],
        SignableBody::UnsignedPayload,
    );
    let mut head = "GET /bkt/k HTTP/1.1\r\n".to_string();
    for (k, v) in &headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    sock.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = sock.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let t = Instant::now();
    assert!(closed_within(&mut sock, Duration::from_secs(8)).await);
    assert!(t.elapsed() >= Duration::from_secs(3), "{:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_has_the_same_timeouts_and_optional_tls() {
    let dir = tempfile::tempdir().unwrap();
    let TestCert { ca, cert, key } = TestCert::make(dir.path());
    let tail = format!(
        "[admin.tls]\ncert = \"{}\"\nkey = \"{}\"",
        cert.display(),
        key.display()
    );
    let gw = Gw::start_setup(&Setup {
        server: "header_timeout_secs = 2",
        tail: &tail,
        ..Default::default()
    })
    .await;
    // Silent and dripping connections are closed.
    let mut silent = tokio::net::TcpStream::connect(gw.admin).await.unwrap();
    let mut dripping = tokio::net::TcpStream::connect(gw.admin).await.unwrap();
    dripping.write_all(b"G").await.unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(5)).await);
    assert!(closed_within(&mut dripping, Duration::from_secs(5)).await);
    // The API answers over TLS with the configured certificate.
    let pem = std::fs::read(&ca).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let resp = client
        .get(format!("https://127.0.0.1:{}/tenants", gw.admin.port()))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.text().await.unwrap().contains("globex"));
    // A wrong token of another length is refused like any wrong token.
    for token in [
        "x",
        "test-admin-token-012345678",
        "test-admin-token-0123456789-longer",
    ] {
        let resp = client
            .get(format!("https://127.0.0.1:{}/tenants", gw.admin.port()))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 401, "{token}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_multipart_upload_is_admitted_like_a_put_and_bounded() {
    let gw = Gw::start_setup(&Setup {
        server: "max_open_uploads = 3",
        acme: "quota_objects = 1\n[tenants.policy]\nkey_pattern = \"[a-z0-9/.-]+\"",
        ..Default::default()
    })
    .await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("mpu").send().await.unwrap();
    // Key rules.
    let r = s3
        .create_multipart_upload()
        .bucket("mpu")
        .key("Bad Key")
        .send()
        .await;
    assert_eq!(code(r), "InvalidArgument");
    // Headers: ~180 KB of Content-Disposition once made a 180 KB upload record.
    let r = s3
        .create_multipart_upload()
        .bucket("mpu")
        .key("big-headers")
        .content_disposition("x".repeat(9000))
        .send()
        .await;
    assert_eq!(code(r), "RequestHeaderSectionTooLarge");
    // At most three open uploads.
    for i in 0..3 {
        s3.create_multipart_upload()
            .bucket("mpu")
            .key(format!("u{i}"))
            .send()
            .await
            .unwrap();
    }
    let r = s3
        .create_multipart_upload()
        .bucket("mpu")
        .key("u3")
        .send()
        .await;
    assert_eq!(code(r), "TooManyOpenUploads");
    let open = s3
        .list_multipart_uploads()
        .bucket("mpu")
        .send()
        .await
        .unwrap();
    assert_eq!(open.uploads().len(), 3);
    let usage = tenant_usage(gw.admin, "acme").await;
    assert_eq!(usage["open_uploads"], 3, "{usage}");
    // The quota: one object; once it is stored, no upload can make a second.
    for u in open.uploads() {
        s3.abort_multipart_upload()
            .bucket("mpu")
            .key(u.key().unwrap())
            .upload_id(u.upload_id().unwrap())
            .send()
            .await
            .unwrap();
    }
    put(&s3, "mpu", "only", b"1").await;
    let r = s3
        .create_multipart_upload()
        .bucket("mpu")
        .key("second")
        .send()
        .await;
    assert_eq!(code(r), "QuotaExceeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_whose_key_holds_nul_is_listed_url_encoded_and_aborted() {
    use aws_sdk_s3::types::EncodingType;
    let gw = Gw::start().await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("nul").send().await.unwrap();
    let key = "dir/nul\0inside & <tag>";
    // No SDK parses the answer of creating it (XML cannot carry NUL), so it is made by hand.
    let (status, body) = raw(
        &gw.endpoint(),
        ACME,
        "POST",
        "/nul/dir/nul%00inside%20%26%20%3Ctag%3E?uploads",
        &[],
        Vec::new(),
        SignableBody::UnsignedPayload,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let id = body
        .split("<UploadId>")
        .nth(1)
        .and_then(|s| s.split("</UploadId>").next())
        .unwrap()
        .to_string();
    let listed = s3
        .list_multipart_uploads()
        .bucket("nul")
        .encoding_type(EncodingType::Url)
        .prefix("dir/")
        .send()
        .await
        .unwrap();
    let found: Vec<(String, String)> = listed
        .uploads()
        .iter()
        .map(|u| {
            let k = form_urlencoded::parse(format!("k={}", u.key().unwrap()).as_bytes())
                .next()
                .unwrap()
                .1
                .into_owned();
            (k, u.upload_id().unwrap().to_string())
        })
        .collect();
    assert_eq!(found, [(key.to_string(), id.clone())]);
    assert_eq!(listed.prefix(), Some("dir%2F"));
    s3.abort_multipart_upload()
        .bucket("nul")
        .key(&found[0].0)
        .upload_id(&found[0].1)
        .send()
        .await
        .unwrap();
    let after = s3
        .list_multipart_uploads()
        .bucket("nul")
        .encoding_type(EncodingType::Url)
        .send()
        .await
        .unwrap();
    assert!(after.uploads().is_empty());
}

/// Complete (and Abort) against UploadPart of the same upload, raced: a part committed between
/// completion's scan of the parts and its transaction stayed charged forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completion_raced_against_upload_part_leaves_usage_exact() {
    let gw = Gw::start().await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("race").send().await.unwrap();
    for round in 0..30 {
        let key = format!("k{round}");
        let id = s3
            .create_multipart_upload()
            .bucket("race")
            .key(&key)
            .send()
            .await
            .unwrap()
            .upload_id()
            .unwrap()
            .to_string();
        let p1 = s3
            .upload_part()
            .bucket("race")
            .key(&key)
            .upload_id(&id)
            .part_number(1)
            .body(ByteStream::from(data(1000, round)))
            .send()
            .await
            .unwrap();
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(3));
        let (b1, b2, b3) = (barrier.clone(), barrier.clone(), barrier.clone());
        let (s_a, s_b) = (s3.clone(), s3.clone());
        let (key_a, id_a, key_b, id_b) = (key.clone(), id.clone(), key.clone(), id.clone());
        let etag = p1.e_tag().unwrap().to_string();
        let late_part = tokio::spawn(async move {
            b1.wait().await;
            let _ = s_a
                .upload_part()
                .bucket("race")
                .key(&key_a)
                .upload_id(&id_a)
                .part_number(2)
                .body(ByteStream::from(data(777, 5)))
                .send()
                .await;
        });
        let end = tokio::spawn(async move {
            b2.wait().await;
            if round % 2 == 0 {
                let parts = aws_sdk_s3::types::CompletedMultipartUpload::builder()
                    .parts(
                        aws_sdk_s3::types::CompletedPart::builder()
                            .part_number(1)
                            .e_tag(etag)
                            .build(),
                    )
                    .build();
                let _ = s_b
                    .complete_multipart_upload()
                    .bucket("race")
                    .key(&key_b)
                    .upload_id(&id_b)
                    .multipart_upload(parts)
                    .send()
                    .await;
            } else {
                let _ = s_b
                    .abort_multipart_upload()
                    .bucket("race")
                    .key(&key_b)
                    .upload_id(&id_b)
                    .send()
                    .await;
            }
        });
        b3.wait().await;
        late_part.await.unwrap();
        end.await.unwrap();
        // Whatever won, an upload that ended holds no parts: abort any that survived.
        let _ = s3
            .abort_multipart_upload()
            .bucket("race")
            .key(&key)
            .upload_id(&id)
            .send()
            .await;
    }
    let v = idle_usage(gw.admin, "acme").await;
    let stored: u64 = s3
        .list_objects_v2()
        .bucket("race")
        .send()
        .await
        .unwrap()
        .contents()
        .iter()
        .map(|o| o.size().unwrap() as u64)
        .sum();
    assert_eq!(v["usage"]["bytes"].as_u64(), Some(stored), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn development_credentials_are_refused_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    // The harness's config uses the published development keys.
    let text = config_setup(dir.path(), &Setup::default()).replacen(
        "listen = \"127.0.0.1:0\"",
        "listen = \"0.0.0.0:0\"",
        1,
    );
    let cfg = portcullis::Config::parse(&text).unwrap();
    let err = portcullis::start(cfg).await.err().expect("it started");
    let msg = err.to_string();
    assert!(msg.contains("development key"), "{msg}");
    assert!(msg.contains("secret_key_file"), "{msg}");
    // With keys of its own it starts on any address.
    let dir = tempfile::tempdir().unwrap();
    let text = config_setup(dir.path(), &Setup::default())
        .replacen("listen = \"127.0.0.1:0\"", "listen = \"0.0.0.0:0\"", 1)
        .replace(ACME.1, "a-real-secret-1")
        .replace(GLOBEX.1, "a-real-secret-2");
    let cfg = portcullis::Config::parse(&text).unwrap();
    let running = portcullis::start(cfg).await.unwrap();
    running.shutdown().await;
}

/// `RUST_LOG=debug` adds to the default filter: s3s stays silent (it would print the
/// `Authorization` header and, on a mismatch, the valid signature), and a request cancelled by
/// its client (here while a hung clamd holds its verdict) still leaves its access-log line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debug_logging_keeps_secrets_out_and_logs_cancelled_requests() {
    let clamd = Service::start(Kind::Clamd).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("portcullis.toml");
    let setup = Setup {
        tail: &clamd.scanner_toml(""),
        ..Default::default()
    };
    std::fs::write(&config, config_setup(&dir.path().join("data"), &setup)).unwrap();
    let p = Proc::start_config_env(&config, Some("debug"), None);
    let s3 = client(&p.endpoint(), ACME);
    s3.create_bucket().bucket("logs").send().await.unwrap();
    // A wrong secret: s3s would log the signature it expected.
    let wrong = client(&p.endpoint(), (ACME.0, "not-the-secret"));
    let r = wrong.list_objects_v2().bucket("logs").send().await;
    assert_eq!(code(r), "SignatureDoesNotMatch");
    // A PUT whose whole body was sent, waiting for the verdict of a hung clamd; its client
    // gives up.
    clamd.freeze(true);
    let mut sock = raw_put_head(&p.endpoint(), p.addr, "/logs/cut", 1000).await;
    sock.write_all(&data(1000, 1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(sock);
    let mut cancelled = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if p.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("request cancelled"))
        {
            cancelled = true;
            break;
        }
    }
    clamd.freeze(false);
    let log = p.log.lock().unwrap().join("\n");
    assert!(
        cancelled,
        "no access-log line for the cancelled PUT:\n{log}"
    );
    assert!(log.contains("request done"), "debug is on: {log}");
    for secret in ["AWS4-HMAC-SHA256", "Signature=", ACME.1, "authorization"] {
        assert!(!log.contains(secret), "the log holds {secret:?}:\n{log}");
    }
}

/// A write whose header section exceeds 8 KB is refused before anything is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_with_an_oversized_header_section_is_refused() {
    let gw = Gw::start().await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("hdr").send().await.unwrap();
    let r = s3
        .put_object()
        .bucket("hdr")
        .key("k")
        .cache_control("x".repeat(9000))
        .body(ByteStream::from_static(b"x"))
        .send()
        .await;
    assert_eq!(code(r), "RequestHeaderSectionTooLarge");
    assert!(!exists(&s3, "hdr", "k").await);
}

/// CPU seconds (user + system) the process `pid` has used so far.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// Out of file descriptors, both listeners back off instead of spinning on `EMFILE`, and serve
/// again once the idle connections are closed by the first-byte timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_descriptors_backs_off_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("portcullis.toml");
    let setup = Setup {
        server: "header_timeout_secs = 3",
        ..Default::default()
    };
    std::fs::write(&config, config_setup(&dir.path().join("data"), &setup)).unwrap();
    let p = Proc::start_config_env(&config, None, Some(256));
    let s3 = client(&p.endpoint(), ACME);
    s3.create_bucket().bucket("fds").send().await.unwrap();
    put(&s3, "fds", "k", b"served").await;
    // More idle connections than the process has descriptors, on both listeners.
    let mut idle = Vec::new();
    for i in 0..400 {
        let to = if i % 2 == 0 { p.addr } else { p.admin };
        idle.push(connect_from("127.0.0.3", to).await);
    }
    let before = cpu_secs(p.child.id());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = cpu_secs(p.child.id()) - before;
    assert!(
        used < 0.5,
        "{used} CPU seconds in 2 s: the accept loops spin"
    );
    drop(idle);
    // Once the timeout closed what it had accepted, it serves again.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match s3.get_object().bucket("fds").key("k").send().await {
            Ok(o) => {
                assert_eq!(body_of(o).await, b"served");
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "never served again: {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        p.log
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("accept failed; backing off")),
        "EMFILE was never reached"
    );
}
