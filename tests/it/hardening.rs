//! The second hostile review, request by request: an anonymous form held in memory before its
//! signature, a request carrying two auth mechanisms (each checked on the one the screen saw,
//! verified on the other), delimiter listings that cost one scan per prefix and stalled other
//! tenants, free empty parts, HTTP/2 connections kept alive by PING frames, a gateway-wide lock
//! on CreateMultipartUpload, a tokenless `/health` that named tenants, 500s for a client's bad
//! tags, and unknown methods logged as errors.

use std::time::{Duration, Instant};

use aws_sdk_s3::error::ProvideErrorMetadata as _;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sigv4::http_request::SignableBody;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;
use crate::security::{exists, put};

/// PUTs every key (32 at a time), each with its own name as the body.
async fn fill(s3: &aws_sdk_s3::Client, bucket: &str, keys: Vec<String>) {
    futures::stream::iter(keys)
        .map(|k| async move { put(s3, bucket, &k, k.as_bytes()).await })
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
}

/// A SigV4 presigned URL built by hand, for what the SDK refuses to make (a year's lifetime, a
/// scope naming another service).
fn presign(
    endpoint: &str,
    key: (&str, &str),
    method: &str,
    path: &str,
    service: &str,
    expires: Duration,
) -> String {
    use aws_sigv4::http_request::{SignableRequest, SignatureLocation, SigningSettings, sign};
    let url = format!("{endpoint}{path}");
    let host = endpoint.trim_start_matches("http://").to_string();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(expires);
    let identity = aws_credential_types::Credentials::new(key.0, key.1, None, None, "t").into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name(service)
        .time(std::time::SystemTime::now())
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let signable = SignableRequest::new(
        method,
        &url,
        [("host", host.as_str())].into_iter(),
        SignableBody::UnsignedPayload,
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    let mut req = http::Request::builder()
        .method(method)
        .uri(&url)
        .body(())
        .unwrap();
    instructions.apply_to_request_http1x(&mut req);
    req.uri().to_string()
}

/// A valid SigV2 presigned URL (HMAC-SHA1 over method, expiry and path).
fn presign_v2(endpoint: &str, key: (&str, &str), method: &str, path: &str, expires: u64) -> String {
    use base64::Engine as _;
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(key.1.as_bytes()).unwrap();
    mac.update(format!("{method}\n\n\n{expires}\n{path}").as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let sig: String = form_urlencoded::byte_serialize(sig.as_bytes()).collect();
    format!(
        "{endpoint}{path}?AWSAccessKeyId={}&Expires={expires}&Signature={sig}",
        key.0
    )
}

/// The status and the S3 error code of a refused SDK call.
fn refused<T: std::fmt::Debug, E: aws_sdk_s3::error::ProvideErrorMetadata + std::fmt::Debug>(
    r: Result<T, aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>>,
) -> (u16, String) {
    match r {
        Ok(v) => panic!("expected an S3 error, got {v:?}"),
        Err(e) => (
            e.raw_response()
                .map(|r| r.status().as_u16())
                .unwrap_or_else(|| panic!("no HTTP response: {e:?}")),
            e.code().unwrap_or("").to_string(),
        ),
    }
}

async fn text(resp: reqwest::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

fn assert_one_mechanism(status: u16, body: &str) {
    assert_eq!(status, 400, "{body}");
    assert_eq!(xml_code(body), "InvalidArgument", "{body}");
    assert!(body.contains("Only one auth mechanism allowed"), "{body}");
}

/// Each request of the review carried one mechanism that the screen checked and another that
/// s3s verified; each is refused now, and nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_two_auth_mechanisms_is_refused() {
    let gw = Gw::start().await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("crm").send().await.unwrap();
    put(&s3, "crm", "secret.txt", b"contract of another customer").await;
    let http = reqwest::Client::new();

    // 1. A presigned PUT URL plus any Authorization header and a copy source (with REPLACE
    //    and injected metadata): once a copy of any object of the tenant.
    let upload = s3
        .put_object()
        .bucket("crm")
        .key("uploads/avatar.jpg")
        .presigned(PresigningConfig::expires_in(Duration::from_secs(600)).unwrap())
        .await
        .unwrap();
    for auth in ["Bearer x", "AWS4-HMAC-SHA256 Credential=x", "x"] {
        let (status, body) = text(
            http.put(upload.uri())
                .header("authorization", auth)
                .header("x-amz-copy-source", "/crm/secret.txt")
                .header("x-amz-metadata-directive", "REPLACE")
                .header("x-amz-meta-injected", "yes")
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_one_mechanism(status, &body);
        assert!(!exists(&s3, "crm", "uploads/avatar.jpg").await, "{auth}");
    }

    // 2. The same trick past the 7-day bound and the service check: a 365-day URL, a URL
    //    scoped to `sts`.
    let year = presign(
        &gw.endpoint(),
        ACME,
        "GET",
        "/crm/secret.txt",
        "s3",
        Duration::from_secs(365 * 86_400),
    );
    let sts = presign(
        &gw.endpoint(),
        ACME,
        "GET",
        "/crm/secret.txt",
        "sts",
        Duration::from_secs(600),
    );
    for url in [&year, &sts] {
        let (status, body) = text(
            http.get(url.as_str())
                .header("authorization", "Bearer x")
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_one_mechanism(status, &body);
    }
    // Alone, each is refused on its own defect.
    let (status, body) = text(http.get(year.as_str()).send().await.unwrap()).await;
    assert_eq!(
        (status, xml_code(&body)),
        (400, "AuthorizationQueryParametersError"),
        "{body}"
    );
    let (status, body) = text(http.get(sts.as_str()).send().await.unwrap()).await;
    assert_eq!(
        (status, xml_code(&body)),
        (400, "AuthorizationQueryParametersError"),
        "{body}"
    );

    // 3. A captured header-signed request with the algorithm in lower case, and an unsigned
    //    copy source added.
    let mut headers = sign_headers(
        &gw.endpoint(),
        None,
        ACME,
        "PUT",
        "/crm/copied",
        &[],
        SignableBody::UnsignedPayload,
    );
    for (k, v) in &mut headers {
        if k == "authorization" {
            *v = v.replacen("AWS4-HMAC-SHA256", "aws4-hmac-sha256", 1);
        }
    }
    headers.push(("x-amz-copy-source".into(), "/crm/secret.txt".into()));
    let mut req = http.put(format!("{}/crm/copied", gw.endpoint()));
    for (k, v) in &headers {
        req = req.header(k, v);
    }
    let (status, body) = text(req.send().await.unwrap()).await;
    assert_eq!(
        (status, xml_code(&body)),
        (400, "InvalidArgument"),
        "{body}"
    );
    assert!(body.contains("Unsupported Authorization Type"), "{body}");
    assert!(!exists(&s3, "crm", "copied").await);

    // 4. A valid SigV2 query URL with `X-Amz-Signature=x` appended.
    let soon = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 300;
    for method in ["GET", "PUT"] {
        let url = presign_v2(&gw.endpoint(), ACME, method, "/crm/v2.txt", soon);
        let req = http.request(method.parse().unwrap(), format!("{url}&X-Amz-Signature=x"));
        let (status, body) = text(req.body("v2 body").send().await.unwrap()).await;
        assert_one_mechanism(status, &body);
        // Good until 2101: beyond the 7 days a presigned URL may live.
        let url = presign_v2(&gw.endpoint(), ACME, method, "/crm/v2.txt", 4_133_894_400);
        let req = http.request(method.parse().unwrap(), url);
        let (status, body) = text(req.body("v2 body").send().await.unwrap()).await;
        assert_eq!(
            (status, xml_code(&body)),
            (400, "AuthorizationQueryParametersError"),
            "{body}"
        );
    }
    assert!(!exists(&s3, "crm", "v2.txt").await);
    // Without the marker and within the bound, the SigV2 URL is the one mechanism: it works.
    let url = presign_v2(&gw.endpoint(), ACME, "PUT", "/crm/v2.txt", soon);
    let (status, body) = text(http.put(url).body("v2 body").send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert!(exists(&s3, "crm", "v2.txt").await);

    // The same attacks over HTTP/2 are the same requests to the screen.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = h2
        .put(upload.uri())
        .header("authorization", "Bearer x")
        .header("x-amz-copy-source", "/crm/secret.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let (status, body) = text(resp).await;
    assert_one_mechanism(status, &body);

    // The legitimate requests still work.
    let resp = http.put(upload.uri()).body("avatar").send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let got = body_of(
        s3.get_object()
            .bucket("crm")
            .key("uploads/avatar.jpg")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(got, b"avatar");
}

/// Four anonymous 256 MiB form POSTs once took the gateway from 43 MB to 1.09 GB before any
/// signature was checked. Now a form is refused before a body byte is read: memory stays flat
/// while the senders push and hold, and each gets `501 NotImplemented`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_form_post_is_refused_before_its_body_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let p = Proc::start(dir.path(), "");
    let before = p.rss_kib();
    let addr = p.addr;
    const LEN: usize = 256 << 20;
    let senders: Vec<_> = (0..4)
        .map(|i| {
            tokio::spawn(async move {
                let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
                let head = format!(
                    "POST /crm HTTP/1.1\r\nhost: {addr}\r\ncontent-type: multipart/form-data; boundary=xx\r\ncontent-length: {LEN}\r\n\r\n"
                );
                sock.write_all(head.as_bytes()).await.unwrap();
                // A file field (or, for one sender, a field never terminated, once re-parsed
                // from its start at every chunk).
                let field = if i == 0 {
                    "--xx\r\ncontent-disposition: form-data; name=\"key\"\r\n\r\n"
                } else {
                    "--xx\r\ncontent-disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\n\r\n"
                };
                sock.write_all(field.as_bytes()).await.unwrap();
                let chunk = vec![b'a'; 1 << 20];
                let mut sent = field.len();
                // Push for up to 4 s (the gateway stops reading long before 256 MiB).
                let until = tokio::time::Instant::now() + Duration::from_secs(4);
                while sent + chunk.len() < LEN {
                    match tokio::time::timeout_at(until, sock.write_all(&chunk)).await {
                        Ok(Ok(())) => sent += chunk.len(),
                        _ => break,
                    }
                }
                let mut answer = Vec::new();
                let _ = tokio::time::timeout(
                    Duration::from_secs(10),
                    sock.read_to_end(&mut answer),
                )
                .await;
                (sent, String::from_utf8_lossy(&answer).to_string())
            })
        })
        .collect();
    // While they push and hold.
    let mut peak = 0;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        peak = peak.max(p.rss_kib());
    }
    for s in senders {
        let (sent, answer) = s.await.unwrap();
        assert!(sent < LEN, "the gateway read the whole form");
        if !answer.is_empty() {
            assert!(answer.starts_with("HTTP/1.1 501"), "{answer}");
            assert!(answer.contains("NotImplemented"), "{answer}");
        }
    }
    let grown = peak.saturating_sub(before);
    assert!(
        grown < 48 * 1024,
        "RSS grew by {grown} KiB (from {before}) while four anonymous forms were held"
    );
    // A signed-looking form is refused the same way, at once, without its body.
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}/crm"))
        .header("content-type", "multipart/form-data; boundary=xx")
        .body("--xx\r\ncontent-disposition: form-data; name=\"x-amz-signature\"\r\n\r\nab\r\n--xx--\r\n")
        .send()
        .await
        .unwrap();
    let (status, body) = text(resp).await;
    assert_eq!((status, xml_code(&body)), (501, "NotImplemented"), "{body}");
    assert!(body.contains("POST object uploads"), "{body}");
}

/// Records read by listings so far, from `/metrics`.
async fn records_listed(admin: std::net::SocketAddr) -> u64 {
    let text = reqwest::Client::new()
        .get(format!("http://{admin}/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("portcullis_list_records_read_total "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no listing counter in {text}"))
}

/// A delimiter listing of 1000 one-key prefixes once started one scan of up to 1001 records per
/// prefix (~500 000 records read and decoded). A page reads what it returns now, plus what it
/// passes over under a prefix, in a few scans; and one tenant's listings do not stall another
/// tenant's GET.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delimiter_listing_reads_what_it_returns() {
    let gw = Gw::start().await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("wide").send().await.unwrap();
    s3.create_bucket().bucket("deep").send().await.unwrap();
    fill(
        &s3,
        "wide",
        (0..1000).map(|i| format!("p{i:04}/x")).collect(),
    )
    .await;
    fill(
        &s3,
        "deep",
        (0..1000).map(|i| format!("d{}/k{i:04}", i % 10)).collect(),
    )
    .await;

    let cost = |bucket: &'static str, delimiter: Option<&'static str>| {
        let s3 = s3.clone();
        let admin = gw.admin;
        async move {
            let before = records_listed(admin).await;
            let out = s3
                .list_objects_v2()
                .bucket(bucket)
                .set_delimiter(delimiter.map(str::to_string))
                .send()
                .await
                .unwrap();
            (records_listed(admin).await - before, out)
        }
    };
    // 1000 prefixes of one key: exactly the 1000 records, and the page is complete.
    let (read, out) = cost("wide", Some("/")).await;
    assert_eq!(out.common_prefixes().len(), 1000);
    assert_eq!(out.common_prefixes()[999].prefix(), Some("p0999/"));
    assert_eq!(out.is_truncated(), Some(false));
    assert_eq!(read, 1000, "records read for 1000 one-key prefixes");
    // The same keys without a delimiter: the same 1000.
    let (read, out) = cost("wide", None).await;
    assert_eq!(out.contents().len(), 1000);
    assert_eq!(read, 1000);
    // Ten prefixes of 100 keys: the first scan (64 records) ends inside d0/, then one seek of
    // 16 records past each prefix: 64 + 9 × 16.
    let (read, out) = cost("deep", Some("/")).await;
    let got: Vec<&str> = out
        .common_prefixes()
        .iter()
        .filter_map(|p| p.prefix())
        .collect();
    assert_eq!(
        got,
        (0..10).map(|i| format!("d{i}/")).collect::<Vec<_>>(),
        "{out:?}"
    );
    assert_eq!(read, 64 + 9 * 16);

    // Paging through prefixes (markers that are prefixes) gives every one once.
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let out = s3
            .list_objects_v2()
            .bucket("wide")
            .delimiter("/")
            .max_keys(333)
            .set_continuation_token(token)
            .send()
            .await
            .unwrap();
        seen.extend(
            out.common_prefixes()
                .iter()
                .filter_map(|p| p.prefix().map(str::to_string)),
        );
        token = out.next_continuation_token().map(str::to_string);
        if token.is_none() {
            break;
        }
    }
    assert_eq!(
        seen,
        (0..1000).map(|i| format!("p{i:04}/")).collect::<Vec<_>>()
    );

    // Six delimiter listings of one tenant running without pause; another tenant's GETs and
    // PUTs are answered meanwhile (once: 10.7 s).
    let globex = gw.client(GLOBEX);
    globex.create_bucket().bucket("other").send().await.unwrap();
    put(&globex, "other", "k", b"globex data").await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let listers: Vec<_> = (0..6)
        .map(|i| {
            let s3 = s3.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    s3.list_objects_v2()
                        .bucket(if i % 2 == 0 { "wide" } else { "deep" })
                        .delimiter("/")
                        .send()
                        .await
                        .unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut slowest = Duration::ZERO;
    for i in 0..10 {
        let t = Instant::now();
        let got = body_of(
            globex
                .get_object()
                .bucket("other")
                .key("k")
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(got, b"globex data");
        put(&globex, "other", &format!("n{i}"), b"x").await;
        slowest = slowest.max(t.elapsed());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut listings = 0;
    for l in listers {
        listings += l.await.unwrap();
    }
    assert!(listings >= 6, "the listings ran: {listings}");
    assert!(
        slowest < Duration::from_secs(2),
        "another tenant's GET + PUT took {slowest:?} while {listings} delimiter listings ran"
    );
}

/// Empty parts cost a record each: they count as open parts in the usage report, a tenant's
/// open parts are bounded (`max_open_parts`), and an empty part that is not the last one is
/// refused at completion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_parts_are_counted_bounded_and_refused_at_completion() {
    let gw = Gw::start_with("max_open_parts = 5", "").await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("parts").send().await.unwrap();
    let up = s3
        .create_multipart_upload()
        .bucket("parts")
        .key("doc.pdf")
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap();
    let part = |n: i32, body: Vec<u8>| {
        s3.upload_part()
            .bucket("parts")
            .key("doc.pdf")
            .upload_id(id)
            .part_number(n)
            .body(ByteStream::from(body))
            .send()
    };
    let mut etags = Vec::new();
    for n in 1..=5 {
        etags.push(
            part(n, Vec::new())
                .await
                .unwrap()
                .e_tag()
                .unwrap()
                .to_string(),
        );
    }
    // Replacing a part adds no record.
    part(5, b"last".to_vec()).await.unwrap();
    let usage = idle_usage(gw.admin, "acme").await;
    assert_eq!(usage["open_uploads"], 1, "{usage}");
    assert_eq!(usage["open_parts"], 5, "{usage}");
    assert_eq!(
        refused(part(6, Vec::new()).await),
        (403, "TooManyParts".to_string())
    );
    // An empty part followed by another: refused as on S3.
    let parts = (0..2)
        .map(|i| {
            aws_sdk_s3::types::CompletedPart::builder()
                .part_number(i as i32 + 1)
                .e_tag(&etags[i])
                .build()
        })
        .collect();
    let e = s3
        .complete_multipart_upload()
        .bucket("parts")
        .key("doc.pdf")
        .upload_id(id)
        .multipart_upload(
            aws_sdk_s3::types::CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await;
    assert_eq!(refused(e), (400, "EntityTooSmall".to_string()));
    assert!(!exists(&s3, "parts", "doc.pdf").await);
    s3.abort_multipart_upload()
        .bucket("parts")
        .key("doc.pdf")
        .upload_id(id)
        .send()
        .await
        .unwrap();
    let usage = idle_usage(gw.admin, "acme").await;
    assert_eq!(
        (&usage["open_uploads"], &usage["open_parts"]),
        (&serde_json::json!(0), &serde_json::json!(0)),
        "{usage}"
    );
    // The room is back: five more parts fit.
    let up = s3
        .create_multipart_upload()
        .bucket("parts")
        .key("doc.pdf")
        .send()
        .await
        .unwrap();
    for n in 1..=5 {
        s3.upload_part()
            .bucket("parts")
            .key("doc.pdf")
            .upload_id(up.upload_id().unwrap())
            .part_number(n)
            .body(ByteStream::from_static(b""))
            .send()
            .await
            .unwrap();
    }
}

/// The open-upload bound is now a counter the commits keep, checked in a lane per tenant (the
/// lane's isolation is `s3::inflight::tests::a_tenants_upload_lane_holds_up_no_other_tenant`).
/// Raced by 32 concurrent attempts beside another tenant's uploads, it stays exact, and the
/// counter agrees with the records (`verify`). It does not time the other tenant: a timed
/// version measured the commit's fsync and the test's own CPU, on the old build as on this one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_upload_bound_stays_exact_under_a_race() {
    let gw = Gw::start_with("max_open_uploads = 300", "").await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("many").send().await.unwrap();
    let globex = gw.client(GLOBEX);
    globex.create_bucket().bucket("mine").send().await.unwrap();
    // 340 attempts at once for 300 places: exactly 300 open.
    let created = futures::stream::iter(0..340)
        .map(|i| {
            let s3 = s3.clone();
            async move {
                match s3
                    .create_multipart_upload()
                    .bucket("many")
                    .key(format!("u{i}"))
                    .send()
                    .await
                {
                    Ok(_) => true,
                    Err(e) => {
                        assert_eq!(code(Err::<(), _>(e)), "TooManyOpenUploads");
                        false
                    }
                }
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<bool>>();
    // Meanwhile another tenant's uploads are created.
    let other = async {
        for i in 0..20 {
            globex
                .create_multipart_upload()
                .bucket("mine")
                .key(format!("g{i}"))
                .send()
                .await
                .unwrap();
        }
    };
    let (created, ()) = futures::join!(created, other);
    assert_eq!(created.iter().filter(|c| **c).count(), 300);
    let usage = tenant_usage(gw.admin, "acme").await;
    assert_eq!(usage["open_uploads"], 300, "{usage}");
    assert_eq!(usage["verified"], true, "{usage}");
    let usage = tenant_usage(gw.admin, "globex").await;
    assert_eq!(usage["open_uploads"], 20, "{usage}");
}

/// Whether the server closes the connection (EOF or reset) within `limit`, while `ping` writes a
/// PING frame every 300 ms.
async fn closed_while_pinging(addr: std::net::SocketAddr, limit: Duration) -> bool {
    let sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = sock.into_split();
    // Prior knowledge: the preface and an empty SETTINGS frame.
    wr.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let pinger = tokio::spawn(async move {
        // A 17-byte PING frame: length 8, type 6, no flags, stream 0.
        let ping = b"\x00\x00\x08\x06\x00\x00\x00\x00\x00pingpong";
        while wr.write_all(ping).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let mut b = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    let closed = loop {
        match tokio::time::timeout_at(deadline, rd.read(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(_)) => continue,
            Err(_) => break false,
        }
    };
    pinger.abort();
    closed
}

/// An HTTP/2 connection that only sends PING frames held its place (and so the per-address and
/// per-listener bounds) forever: every byte counted as activity. Only request progress does now,
/// on the S3 and the admin listener alike; a connection with requests keeps being served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_connections_sending_only_pings_are_closed() {
    let gw = Gw::start_with("header_timeout_secs = 1", "").await;
    for addr in [gw.addr, gw.admin] {
        assert!(
            closed_while_pinging(addr, Duration::from_secs(5)).await,
            "{addr}: a PING-only connection stayed open"
        );
    }
    // A client that keeps making requests over one HTTP/2 connection is served throughout.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for _ in 0..4 {
        let resp = h2
            .get(format!("http://{}/health", gw.admin))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
}

/// `/health` answers liveness to anyone; the detail (lease names carry tenant and bucket names,
/// node ids are host names, workers' errors) needs the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_without_the_token_tells_only_liveness() {
    let gw = Gw::start().await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/health", gw.admin);
    let resp = http.get(&url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v, serde_json::json!({ "status": "ok" }));
    let v: serde_json::Value = http
        .get(&url)
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["status"], "ok");
    assert!(
        v["cluster"]["nodes"]
            .as_array()
            .is_some_and(|n| n.len() == 1),
        "{v}"
    );
    assert!(v["workers"].is_array() || v["workers"].is_object(), "{v}");
}

/// A client's bad tag set is a 400, never a 500; a method S3 does not have is a 405.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_mistakes_answer_as_client_errors() {
    let gw = Gw::start().await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("tags").send().await.unwrap();
    let eleven = (0..11)
        .map(|i| format!("k{i}=v"))
        .collect::<Vec<_>>()
        .join("&");
    let long_key = format!("{}=v", "k".repeat(200));
    for tagging in [eleven.as_str(), long_key.as_str()] {
        let e = s3
            .put_object()
            .bucket("tags")
            .key("t")
            .tagging(tagging)
            .body(ByteStream::from_static(b"x"))
            .send()
            .await;
        assert_eq!(refused(e), (400, "InvalidTag".to_string()), "{tagging}");
    }
    assert!(!exists(&s3, "tags", "t").await);
    let http = reqwest::Client::new();
    for m in ["TRACE", "PATCH", "FOO"] {
        let (status, body) = text(
            http.request(m.parse().unwrap(), format!("{}/tags/t", gw.endpoint()))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!((status, xml_code(&body)), (405, "MethodNotAllowed"), "{m}");
    }
}

/// `RUST_LOG='[request]=trace'` (a span directive naming no target) once turned s3s and
/// tokio-postgres logging back on inside request spans: `Authorization` headers and, on a
/// mismatch, the valid signature. And an unknown method was logged at ERROR, so anyone could
/// flood the error log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_span_directive_keeps_secrets_out_and_client_mistakes_below_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("portcullis.toml");
    std::fs::write(
        &config,
        config_setup(&dir.path().join("data"), &Setup::default()),
    )
    .unwrap();
    let p = Proc::start_config_env(&config, Some("[request]=trace"), None);
    let s3 = client(&p.endpoint(), ACME);
    s3.create_bucket().bucket("logs").send().await.unwrap();
    let wrong = client(&p.endpoint(), (ACME.0, "not-the-secret"));
    let r = wrong.list_objects_v2().bucket("logs").send().await;
    assert_eq!(code(r), "SignatureDoesNotMatch");
    let http = reqwest::Client::new();
    for m in ["TRACE", "FOO"] {
        let resp = http
            .request(m.parse().unwrap(), format!("{}/logs", p.endpoint()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 405, "{m}");
    }
    let mut sock = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    sock.write_all(b"CONNECT example.com:443 HTTP/1.1\r\nhost: example.com:443\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 64];
    let n = sock.read(&mut answer).await.unwrap();
    assert!(
        answer[..n].starts_with(b"HTTP/1.1 405"),
        "{}",
        String::from_utf8_lossy(&answer[..n])
    );
    let log = loop {
        let log = p.log.lock().unwrap().join("\n");
        if log.matches("request done").count() >= 5 {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(log.contains("TRACE"), "the span directive is on: {log}");
    for secret in ["AWS4-HMAC-SHA256", "Signature=", ACME.1, "authorization"] {
        assert!(!log.contains(secret), "the log holds {secret:?}:\n{log}");
    }
    assert!(
        !log.lines().any(|l| l.contains("ERROR")),
        "a client's mistake was logged as an error:\n{log}"
    );
}

/// ListMultipartUploads follows the listing rule too (a page reads in chunks and passes over
/// a rolled-up prefix); paged one entry at a time, it returns each prefix and each upload once,
/// two uploads of one key included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_listings_page_through_prefixes_and_repeated_keys() {
    let gw = Gw::start().await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("ups").send().await.unwrap();
    let mut ids = std::collections::BTreeMap::<String, Vec<String>>::new();
    for key in (0..40).map(|i| format!("a/{i:02}")).chain([
        "b".to_string(),
        "b".to_string(),
        "c".to_string(),
    ]) {
        let id = s3
            .create_multipart_upload()
            .bucket("ups")
            .key(&key)
            .send()
            .await
            .unwrap()
            .upload_id()
            .unwrap()
            .to_string();
        ids.entry(key).or_default().push(id);
    }
    let mut b_ids = ids["b"].clone();
    b_ids.sort();
    let expected = vec![
        "prefix a/".to_string(),
        format!("b {}", b_ids[0]),
        format!("b {}", b_ids[1]),
        format!("c {}", ids["c"][0]),
    ];
    let (mut key_marker, mut id_marker) = (None::<String>, None::<String>);
    let mut seen = Vec::new();
    for _ in 0..10 {
        let before = records_listed(gw.admin).await;
        let out = s3
            .list_multipart_uploads()
            .bucket("ups")
            .delimiter("/")
            .max_uploads(1)
            .set_key_marker(key_marker.clone())
            .set_upload_id_marker(id_marker.clone())
            .send()
            .await
            .unwrap();
        let read = records_listed(gw.admin).await - before;
        assert!(read <= 41, "a page of one entry read {read} records");
        seen.extend(
            out.common_prefixes()
                .iter()
                .map(|p| format!("prefix {}", p.prefix().unwrap())),
        );
        seen.extend(
            out.uploads()
                .iter()
                .map(|u| format!("{} {}", u.key().unwrap(), u.upload_id().unwrap())),
        );
        if out.is_truncated() != Some(true) {
            break;
        }
        key_marker = out.next_key_marker().map(str::to_string);
        id_marker = out.next_upload_id_marker().map(str::to_string);
    }
    assert_eq!(seen, expected);
}
