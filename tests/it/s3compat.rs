//! S3 behaviours real clients trip on (issue "S3 behaviours real clients trip on"): what a
//! browser, a CDN, an SDK or a create-if-missing script expects from S3, request by request.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedPart, Tag, Tagging};

use crate::harness::*;

/// A signed GET (no body) with `headers`, through reqwest: its status, headers and body bytes.
async fn signed_get(
    gw: &Gw,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    signed(gw, ACME, "GET", path, headers).await
}

/// A request signed with `key` (no body), through reqwest: its status, headers and body bytes.
async fn signed(
    gw: &Gw,
    key: (&str, &str),
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let all = sign_headers(
        &gw.endpoint(),
        None,
        key,
        method,
        path,
        headers,
        aws_sigv4::http_request::SignableBody::Bytes(b""),
    );
    let mut req =
        reqwest::Client::new().request(method.parse().unwrap(), format!("{}{path}", gw.endpoint()));
    for (k, v) in &all {
        req = req.header(k, v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let h = resp.headers().clone();
    (status, h, resp.bytes().await.unwrap().to_vec())
}

/// A 304 carries the validators and caching headers of the object (so a browser or CDN keeps
/// its copy fresh), and no body. Before: a bare 304 with an XML error body's headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_modified_carries_the_validators() {
    let gw = Gw::start().await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("web").send().await.unwrap();
    let put = s3
        .put_object()
        .bucket("web")
        .key("logo.png")
        .cache_control("max-age=3600")
        .body(ByteStream::from_static(b"png bytes"))
        .send()
        .await
        .unwrap();
    let etag = put.e_tag().unwrap().to_string();
    let (status, h, body) = signed_get(&gw, "/web/logo.png", &[("if-none-match", &etag)]).await;
    assert_eq!(status, 304);
    assert_eq!(h["etag"], etag.as_str());
    assert_eq!(h["cache-control"], "max-age=3600");
    let last_modified = h["last-modified"].to_str().unwrap().to_string();
    assert!(last_modified.ends_with(" GMT"), "{last_modified}");
    assert!(body.is_empty(), "no body on a 304");
    // The same validators when revalidating by date.
    let (status, h, _) = signed_get(
        &gw,
        "/web/logo.png",
        &[("if-modified-since", &last_modified)],
    )
    .await;
    assert_eq!(status, 304);
    assert_eq!(h["etag"], etag.as_str());
}

/// HEAD reports `x-amz-tagging-count` as GET does (the same count GetObjectTagging returns).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_reports_the_tag_count() {
    let gw = Gw::start().await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("tagged").send().await.unwrap();
    s3.put_object()
        .bucket("tagged")
        .key("k")
        .body(ByteStream::from_static(b"v"))
        .send()
        .await
        .unwrap();
    s3.put_object_tagging()
        .bucket("tagged")
        .key("k")
        .tagging(tags(&[("client", "acme"), ("kind", "invoice")]))
        .send()
        .await
        .unwrap();
    let returned = s3
        .get_object_tagging()
        .bucket("tagged")
        .key("k")
        .send()
        .await
        .unwrap()
        .tag_set()
        .len();
    let get = s3
        .get_object()
        .bucket("tagged")
        .key("k")
        .send()
        .await
        .unwrap();
    assert_eq!(get.tag_count(), Some(returned as i32));
    let (status, head, _) = signed(&gw, ACME, "HEAD", "/tagged/k", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(head["x-amz-tagging-count"], returned.to_string().as_str());
}

/// CreateBucket of a bucket the caller owns: 200 in us-east-1 (S3's legacy behaviour), and
/// `BucketAlreadyOwnedByYou` in any other region.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_an_own_bucket_again_is_200_in_us_east_1_only() {
    let gw = Gw::start().await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("twice").send().await.unwrap();
    s3.put_object()
        .bucket("twice")
        .key("kept")
        .body(ByteStream::from_static(b"v"))
        .send()
        .await
        .unwrap();
    s3.create_bucket().bucket("twice").send().await.unwrap();
    let listed = s3.list_objects_v2().bucket("twice").send().await.unwrap();
    assert_eq!(listed.key_count(), Some(1), "the bucket is unchanged");
    // Another tenant's bucket of the same name is its own business.
    gw.client(GLOBEX)
        .create_bucket()
        .bucket("twice")
        .send()
        .await
        .unwrap();

    let eu = Gw::start_setup(&Setup {
        server: "region = \"eu-west-1\"",
        ..Default::default()
    })
    .await;
    let s3 = eu.acme();
    s3.create_bucket().bucket("twice").send().await.unwrap();
    assert_eq!(
        code(s3.create_bucket().bucket("twice").send().await),
        "BucketAlreadyOwnedByYou"
    );
}

/// GET and HEAD with a `partNumber` beyond the object's parts: 400 InvalidPartNumber.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_number_beyond_the_parts_is_400() {
    let gw = Gw::start().await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("parts").send().await.unwrap();
    let id = s3
        .create_multipart_upload()
        .bucket("parts")
        .key("two.bin")
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_string();
    let mut parts = Vec::new();
    for (n, len) in [(1, 5 * 1024 * 1024), (2, 1000)] {
        let p = s3
            .upload_part()
            .bucket("parts")
            .key("two.bin")
            .upload_id(&id)
            .part_number(n)
            .body(ByteStream::from(data(len, n as u64)))
            .send()
            .await
            .unwrap();
        parts.push(
            CompletedPart::builder()
                .part_number(n)
                .e_tag(p.e_tag().unwrap())
                .build(),
        );
    }
    complete(&s3, "parts", "two.bin", &id, parts).await;
    let got = s3
        .get_object()
        .bucket("parts")
        .key("two.bin")
        .part_number(2)
        .send()
        .await
        .unwrap();
    assert_eq!(got.content_length(), Some(1000));
    let (status, body) = raw(
        &gw.endpoint(),
        ACME,
        "GET",
        "/parts/two.bin?partNumber=3",
        &[],
        Vec::new(),
        aws_sigv4::http_request::SignableBody::Bytes(b""),
    )
    .await;
    assert_eq!(
        (status, xml_code(&body)),
        (400, "InvalidPartNumber"),
        "{body}"
    );
    let head = s3
        .head_object()
        .bucket("parts")
        .key("two.bin")
        .part_number(3)
        .send()
        .await;
    assert_eq!(
        head.unwrap_err().raw_response().unwrap().status().as_u16(),
        400
    );
}

/// Conditional PUT as S3 answers it: `If-Match` on a key that does not exist is 404 NoSuchKey
/// (not 412); `If-None-Match` takes only `*` on a write (anything else: 501 NotImplemented).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_puts_answer_as_s3() {
    let gw = Gw::start().await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("cond").send().await.unwrap();
    let put = || {
        s3.put_object()
            .bucket("cond")
            .key("k")
            .body(ByteStream::from_static(b"v"))
    };
    assert_eq!(code(put().if_match("\"abc\"").send().await), "NoSuchKey");
    assert_eq!(
        code(put().if_none_match("\"abc\"").send().await),
        "NotImplemented"
    );
    put().if_none_match("*").send().await.unwrap();
    assert_eq!(
        code(put().if_none_match("*").send().await),
        "PreconditionFailed"
    );
    assert_eq!(
        code(put().if_match("\"abc\"").send().await),
        "PreconditionFailed"
    );
    let listed = s3.list_objects_v2().bucket("cond").send().await.unwrap();
    assert_eq!(listed.key_count(), Some(1));
}

/// Every error body names its request as S3's do: `<RequestId>` equal to the
/// `x-amz-request-id` header, and `<Resource>`; whoever produced the error (the gateway's
/// mapping, the screen before s3s, or s3s's signature check).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_bodies_carry_the_request_id() {
    let gw = Gw::start().await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("errs").send().await.unwrap();
    s3.put_object()
        .bucket("errs")
        .key("k")
        .body(ByteStream::from_static(b"v"))
        .send()
        .await
        .unwrap();
    let check = |status: u16, h: &reqwest::header::HeaderMap, body: &[u8], code: &str| {
        let body = String::from_utf8_lossy(body).to_string();
        assert_eq!(xml_code(&body), code, "{body}");
        let id = h["x-amz-request-id"].to_str().unwrap();
        assert!(
            body.contains(&format!("<RequestId>{id}</RequestId>")),
            "{status}: {body}"
        );
        assert!(body.contains("<Resource>/errs/"), "{status}: {body}");
    };
    let (st, h, b) = signed_get(&gw, "/errs/missing", &[]).await;
    assert_eq!(st, 404);
    check(st, &h, &b, "NoSuchKey");
    let (st, h, b) = signed_get(&gw, "/errs/k", &[("if-match", "\"nope\"")]).await;
    assert_eq!(st, 412);
    check(st, &h, &b, "PreconditionFailed");
    // Refused by the screen, before s3s.
    let (st, h, b) = signed_get(
        &gw,
        "/errs/k",
        &[("x-amz-server-side-encryption", "AES256")],
    )
    .await;
    assert!(st >= 400, "{st}");
    let code = xml_code(std::str::from_utf8(&b).unwrap()).to_string();
    check(st, &h, &b, &code);
    // A wrong secret: s3s's own signature check.
    let (st, h, b) = signed(&gw, (ACME.0, "not-the-secret"), "GET", "/errs/k", &[]).await;
    assert_eq!(st, 403);
    check(st, &h, &b, "SignatureDoesNotMatch");
}

fn tags(pairs: &[(&str, &str)]) -> Tagging {
    let mut t = Tagging::builder();
    for (k, v) in pairs {
        t = t.tag_set(Tag::builder().key(*k).value(*v).build().unwrap());
    }
    t.build().unwrap()
}

/// Put/Get/DeleteBucketTagging with S3's validation: `NoSuchTagSet` when none, at most 50
/// tags, keys of 1–128 and values of at most 256 characters, no duplicate keys, no `aws:` keys
/// (`InvalidTag`); a refused set leaves the stored one as it was. Another tenant's bucket of the
/// same name keeps its own tags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_tagging_as_s3() {
    let gw = Gw::start().await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("crm").send().await.unwrap();
    let get = || s3.get_bucket_tagging().bucket("crm").send();
    assert_eq!(code(get().await), "NoSuchTagSet");

    let put = |t: Tagging| s3.put_bucket_tagging().bucket("crm").tagging(t).send();
    put(tags(&[("team", "sales"), ("cost-center", "42")]))
        .await
        .unwrap();
    let got: Vec<(String, String)> = get()
        .await
        .unwrap()
        .tag_set()
        .iter()
        .map(|t| (t.key().to_string(), t.value().to_string()))
        .collect();
    assert_eq!(
        got,
        [
            ("team".to_string(), "sales".to_string()),
            ("cost-center".to_string(), "42".to_string())
        ]
    );

    // n tags k0..k{n-1}.
    let many = |n: usize| {
        let owned: Vec<(String, String)> = (0..n).map(|i| (format!("k{i}"), "v".into())).collect();
        let pairs: Vec<(&str, &str)> = owned
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        tags(&pairs)
    };
    put(many(50)).await.unwrap();
    assert_eq!(get().await.unwrap().tag_set().len(), 50);
    let long_key = "k".repeat(129);
    let long_value = "v".repeat(257);
    for bad in [
        many(51),
        tags(&[(long_key.as_str(), "v")]),
        tags(&[("k", long_value.as_str())]),
        tags(&[("dup", "1"), ("dup", "2")]),
        tags(&[("aws:cloudformation", "x")]),
    ] {
        assert_eq!(code(put(bad).await), "InvalidTag");
    }
    assert_eq!(get().await.unwrap().tag_set().len(), 50, "unchanged");

    // Globex's "crm" is another bucket.
    let globex = gw.client(GLOBEX);
    globex.create_bucket().bucket("crm").send().await.unwrap();
    assert_eq!(
        code(globex.get_bucket_tagging().bucket("crm").send().await),
        "NoSuchTagSet"
    );

    s3.delete_bucket_tagging()
        .bucket("crm")
        .send()
        .await
        .unwrap();
    assert_eq!(code(get().await), "NoSuchTagSet");
    assert_eq!(
        code(s3.get_bucket_tagging().bucket("nope").send().await),
        "NoSuchBucket"
    );
    // Objects can still be written into a bucket whose tags changed.
    s3.put_object()
        .bucket("crm")
        .key("k")
        .body(ByteStream::from_static(b"v"))
        .send()
        .await
        .unwrap();
}

/// GetObjectTagging returns exactly the client's tags on a bucket that does not scan; on one
/// that scans it adds the read-only `scan-status` (documented), which never counts against the
/// client's 10 tags, and a tag set written back as read (with it) is accepted and not stored.
/// The tagging count of GET and HEAD is what GetObjectTagging returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_tags_are_exactly_the_clients() {
    let clamd = crate::services::Service::start(crate::services::Kind::Clamd).await;
    let gw = Gw::start_setup(&Setup {
        tail: &clamd.scanner_toml(""),
        ..Default::default()
    })
    .await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("scanned").send().await.unwrap();
    let ten: Vec<(String, String)> = (0..10).map(|i| (format!("k{i}"), "v".into())).collect();
    let pairs: Vec<(&str, &str)> = ten.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    s3.put_object()
        .bucket("scanned")
        .key("contract.pdf")
        .body(ByteStream::from_static(b"%PDF-1.4 a clean file"))
        .send()
        .await
        .unwrap();
    s3.put_object_tagging()
        .bucket("scanned")
        .key("contract.pdf")
        .tagging(tags(&pairs))
        .send()
        .await
        .unwrap();
    let got = s3
        .get_object_tagging()
        .bucket("scanned")
        .key("contract.pdf")
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.tag_set().len(),
        11,
        "ten of the client's and the verdict"
    );
    assert!(
        got.tag_set()
            .iter()
            .any(|t| t.key() == "scan-status" && t.value() == "clean")
    );
    // Written back as read: accepted, and still ten of the client's.
    s3.put_object_tagging()
        .bucket("scanned")
        .key("contract.pdf")
        .tagging(
            Tagging::builder()
                .set_tag_set(Some(got.tag_set().to_vec()))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let get = s3
        .get_object()
        .bucket("scanned")
        .key("contract.pdf")
        .send()
        .await
        .unwrap();
    assert_eq!(get.tag_count(), Some(11));
}

/// A whole-object checksum declared on CompleteMultipartUpload is checked against the parts'
/// composite: a wrong one (or one computed over a part's earlier bytes, since re-uploaded) is
/// `BadDigest` and stores nothing; another algorithm than the upload's is `InvalidRequest`;
/// the right one completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_checksum_must_match_the_parts() {
    use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload};
    use base64::Engine as _;
    let gw = Gw::start().await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("sums").send().await.unwrap();
    let id = s3
        .create_multipart_upload()
        .bucket("sums")
        .key("k")
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_string();
    let upload = |body: Vec<u8>| {
        s3.upload_part()
            .bucket("sums")
            .key("k")
            .upload_id(&id)
            .part_number(1)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .body(ByteStream::from(body))
            .send()
    };
    let composite = |part_sum: &str| {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(part_sum)
            .unwrap();
        let digest = <s3s::crypto::Sha256 as s3s::crypto::Checksum>::checksum(&raw);
        base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
    };
    let first = upload(data(1000, 1)).await.unwrap();
    let stale = composite(first.checksum_sha256().unwrap());
    let second = upload(data(1000, 2)).await.unwrap();
    let right = composite(second.checksum_sha256().unwrap());
    let complete = |sum: Option<String>, sha1: Option<String>| {
        s3.complete_multipart_upload()
            .bucket("sums")
            .key("k")
            .upload_id(&id)
            .set_checksum_sha256(sum)
            .set_checksum_sha1(sha1)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .parts(
                        CompletedPart::builder()
                            .part_number(1)
                            .e_tag(second.e_tag().unwrap())
                            .checksum_sha256(second.checksum_sha256().unwrap())
                            .build(),
                    )
                    .build(),
            )
            .send()
    };
    assert_eq!(code(complete(Some(stale), None).await), "BadDigest");
    assert_eq!(
        code(complete(None, Some("AAAAAAAAAAAAAAAAAAAAAAAAAAA=".into())).await),
        "InvalidRequest"
    );
    let listed = s3.list_objects_v2().bucket("sums").send().await.unwrap();
    assert_eq!(listed.key_count(), Some(0), "nothing stored");
    let done = complete(Some(format!("{right}-1")), None).await.unwrap();
    assert_eq!(
        done.checksum_sha256().map(|s| s.split('-').next().unwrap()),
        Some(right.as_str())
    );
}

/// A SigV4 request that dates itself with `Date` and no `x-amz-date` (S3 accepts it; s3-tests
/// `test_object_create_amz_date_and_no_date`), signed by hand as such a client does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigv4_with_date_instead_of_x_amz_date() {
    use hmac::{KeyInit, Mac};
    type HmacSha256 = hmac::Hmac<sha2::Sha256>;
    let hmac = |key: &[u8], msg: &str| {
        let mut m = HmacSha256::new_from_slice(key).unwrap();
        m.update(msg.as_bytes());
        m.finalize().into_bytes().to_vec()
    };
    let sha256_hex = |s: &str| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(s.as_bytes()));
    let gw = Gw::start().await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("dated").send().await.unwrap();

    let now = time::OffsetDateTime::now_utc();
    let mut date = Vec::new();
    s3s::dto::Timestamp::from(now)
        .format(s3s::dto::TimestampFormat::HttpDate, &mut date)
        .unwrap();
    let date = String::from_utf8(date).unwrap();
    let amz = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    let day = &amz[..8];
    let host = gw.addr.to_string();
    let path = "/dated/k";
    let signed = "date;host;x-amz-content-sha256";
    let canonical = format!(
        "PUT\n{path}\n\ndate:{date}\nhost:{host}\nx-amz-content-sha256:UNSIGNED-PAYLOAD\n\n{signed}\nUNSIGNED-PAYLOAD"
    );
    let scope = format!("{day}/us-east-1/s3/aws4_request");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz}\n{scope}\n{}",
        sha256_hex(&canonical)
    );
    let mut key = hmac(format!("AWS4{}", ACME.1).as_bytes(), day);
    for part in ["us-east-1", "s3", "aws4_request"] {
        key = hmac(&key, part);
    }
    let signature = hex::encode(hmac(&key, &to_sign));
    let auth = format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed}, Signature={signature}",
        ACME.0
    );
    // The same request in the variants the screen decides once: each refused, nothing stored.
    let send = |client: reqwest::Client, auth: String, query: &str, second_auth: bool| {
        let mut req = client
            .put(format!("{}{path}{query}", gw.endpoint()))
            .header("date", &date)
            .header("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
            .header("authorization", auth)
            .body("dated by Date");
        if second_auth {
            req = req.header("authorization", "Bearer x");
        }
        req.send()
    };
    let plain = reqwest::Client::new;
    for (auth, query, second, what) in [
        (
            auth.replacen("AWS4-HMAC-SHA256", "aws4-hmac-sha256", 1),
            "",
            false,
            "lower-cased token",
        ),
        (auth.clone(), "", true, "a second Authorization header"),
        (
            auth.clone(),
            "?X-Amz-Signature=00",
            false,
            "a query signature as well",
        ),
    ] {
        let r = send(plain(), auth, query, second).await.unwrap();
        assert_eq!(
            r.status().as_u16(),
            400,
            "{what}: {}",
            r.text().await.unwrap()
        );
    }
    assert_eq!(
        code(s3.head_object().bucket("dated").key("k").send().await),
        "NotFound"
    );
    // Over HTTP/2 as over HTTP/1.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = send(h2, auth.clone(), "", false).await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let status = resp.status().as_u16();
    assert_eq!(status, 200, "{}", resp.text().await.unwrap());
    let got = s3
        .get_object()
        .bucket("dated")
        .key("k")
        .send()
        .await
        .unwrap();
    assert_eq!(body_of(got).await, b"dated by Date");
}

/// GetObjectAttributes of a multipart object with SHA-256 parts: ETag, the composite checksum,
/// the parts with their sizes and checksums paged by `MaxParts` / `PartNumberMarker`, the
/// storage class and the size; only what was asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_attributes_with_parts() {
    use aws_sdk_s3::types::{ChecksumAlgorithm, ObjectAttributes};
    let gw = Gw::start().await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("attrs").send().await.unwrap();
    let id = s3
        .create_multipart_upload()
        .bucket("attrs")
        .key("big.bin")
        .checksum_algorithm(ChecksumAlgorithm::Sha256)
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_string();
    let sizes = [5 * 1024 * 1024, 5 * 1024 * 1024, 1000];
    let mut parts = Vec::new();
    let mut sums = Vec::new();
    for (n, len) in sizes.iter().enumerate() {
        let n = n as i32 + 1;
        let p = s3
            .upload_part()
            .bucket("attrs")
            .key("big.bin")
            .upload_id(&id)
            .part_number(n)
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .body(ByteStream::from(data(*len, n as u64)))
            .send()
            .await
            .unwrap();
        sums.push(p.checksum_sha256().unwrap().to_string());
        parts.push(
            CompletedPart::builder()
                .part_number(n)
                .e_tag(p.e_tag().unwrap())
                .checksum_sha256(p.checksum_sha256().unwrap())
                .build(),
        );
    }
    let done = complete(&s3, "attrs", "big.bin", &id, parts).await;
    let all = [
        ObjectAttributes::Etag,
        ObjectAttributes::Checksum,
        ObjectAttributes::ObjectParts,
        ObjectAttributes::StorageClass,
        ObjectAttributes::ObjectSize,
    ];
    let a = s3
        .get_object_attributes()
        .bucket("attrs")
        .key("big.bin")
        .set_object_attributes(Some(all.to_vec()))
        .max_parts(2)
        .send()
        .await
        .unwrap();
    assert_eq!(
        a.e_tag().map(|e| e.trim_matches('"')),
        done.e_tag().map(|e| e.trim_matches('"'))
    );
    assert_eq!(
        a.checksum().and_then(|c| c.checksum_sha256()),
        done.checksum_sha256()
    );
    assert_eq!(a.object_size(), Some(sizes.iter().sum::<usize>() as i64));
    assert_eq!(a.storage_class().map(|s| s.as_str()), Some("STANDARD"));
    let p = a.object_parts().unwrap();
    assert_eq!(p.total_parts_count(), Some(3));
    assert_eq!(p.is_truncated(), Some(true));
    assert_eq!(p.next_part_number_marker(), Some("2"));
    let got: Vec<(i32, i64, &str)> = p
        .parts()
        .iter()
        .map(|x| {
            (
                x.part_number().unwrap(),
                x.size().unwrap(),
                x.checksum_sha256().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (1, sizes[0] as i64, sums[0].as_str()),
            (2, sizes[1] as i64, sums[1].as_str())
        ]
    );
    let rest = s3
        .get_object_attributes()
        .bucket("attrs")
        .key("big.bin")
        .object_attributes(ObjectAttributes::ObjectParts)
        .part_number_marker("2")
        .send()
        .await
        .unwrap();
    assert!(rest.e_tag().is_none(), "only what was asked for");
    let p = rest.object_parts().unwrap();
    assert_eq!(p.is_truncated(), Some(false));
    assert_eq!(p.parts().len(), 1);
    assert_eq!(p.parts()[0].part_number(), Some(3));
    assert_eq!(p.parts()[0].size(), Some(1000));
}

/// A part re-uploaded while an earlier attempt of the same number is still streaming: the
/// attempt that completes last wins, and CompleteMultipartUpload with the ETag that attempt
/// got back succeeds with its bytes (s3-tests `test_multipart_resend_first_finishes_last`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_part_attempt_that_finishes_last_wins() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = Gw::start().await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("resend").send().await.unwrap();
    let id = s3
        .create_multipart_upload()
        .bucket("resend")
        .key("k")
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_string();
    // The first attempt starts, and stalls halfway.
    let first = data(200_000, 1);
    let path = format!("/resend/k?partNumber=1&uploadId={id}");
    let mut slow = raw_put_head(&gw.endpoint(), gw.addr, &path, first.len() as u64).await;
    slow.write_all(&first[..100_000]).await.unwrap();
    slow.flush().await.unwrap();
    // The second attempt runs whole meanwhile.
    s3.upload_part()
        .bucket("resend")
        .key("k")
        .upload_id(&id)
        .part_number(1)
        .body(ByteStream::from(data(200_000, 2)))
        .send()
        .await
        .unwrap();
    // The first one finishes last.
    slow.write_all(&first[100_000..]).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("\r\n\r\n") {
        let n = slow.read(&mut buf).await.unwrap();
        assert!(n > 0, "the first attempt got no answer");
        answer.extend_from_slice(&buf[..n]);
    }
    let head = String::from_utf8_lossy(&answer).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let etag = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("etag: ")
                .or_else(|| l.strip_prefix("ETag: "))
        })
        .unwrap()
        .trim()
        .to_string();
    let done = CompletedPart::builder().part_number(1).e_tag(&etag).build();
    complete(&s3, "resend", "k", &id, vec![done]).await;
    let got = s3
        .get_object()
        .bucket("resend")
        .key("k")
        .send()
        .await
        .unwrap();
    assert_eq!(
        body_of(got).await,
        first,
        "the bytes of the attempt that finished last"
    );
}

/// An SDK that repeats CompleteMultipartUpload (its first answer was lost, or two workers raced)
/// gets the first completion's answer for the same parts list, `NoSuchUpload` for any other;
/// the record goes with the sweeper's abandoned-upload lifetime, and a bucket deleted and
/// created again does not inherit it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_completion_answers_as_the_first() {
    use aws_sdk_s3::types::ChecksumAlgorithm;
    // Every completion counts as past its lifetime when the admin API asks for a sweep.
    let gw = Gw::start_with("", "interval_secs = 3600\nabandoned_upload_secs = 0").await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("again").send().await.unwrap();
    let start = |key: &'static str| {
        let s3 = s3.clone();
        async move {
            let id = s3
                .create_multipart_upload()
                .bucket("again")
                .key(key)
                .checksum_algorithm(ChecksumAlgorithm::Sha256)
                .send()
                .await
                .unwrap()
                .upload_id()
                .unwrap()
                .to_string();
            let mut parts = Vec::new();
            for (n, body) in [(1, data(5 * 1024 * 1024, 1)), (2, data(1000, 2))] {
                let p = s3
                    .upload_part()
                    .bucket("again")
                    .key(key)
                    .upload_id(&id)
                    .part_number(n)
                    .checksum_algorithm(ChecksumAlgorithm::Sha256)
                    .body(ByteStream::from(body))
                    .send()
                    .await
                    .unwrap();
                parts.push(
                    CompletedPart::builder()
                        .part_number(n)
                        .e_tag(p.e_tag().unwrap())
                        .build(),
                );
            }
            (id, parts)
        }
    };
    let finish = |key: &'static str, id: String, parts: Vec<CompletedPart>| {
        s3.complete_multipart_upload()
            .bucket("again")
            .key(key)
            .upload_id(id)
            .multipart_upload(
                aws_sdk_s3::types::CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
    };
    let (id, parts) = start("k").await;
    let first = finish("k", id.clone(), parts.clone()).await.unwrap();
    let again = finish("k", id.clone(), parts.clone()).await.unwrap();
    assert_eq!(again.e_tag(), first.e_tag());
    assert!(first.e_tag().unwrap().ends_with("-2\""), "{first:?}");
    assert_eq!(again.location(), first.location());
    assert_eq!(again.bucket(), Some("again"));
    assert_eq!(again.key(), Some("k"));
    assert_eq!(again.checksum_sha256(), first.checksum_sha256());
    assert!(first.checksum_sha256().is_some());
    // Without the ETags (S3 requires them; the numbers alone still name the same list).
    let bare: Vec<CompletedPart> = (1..=2)
        .map(|n| CompletedPart::builder().part_number(n).build())
        .collect();
    let third = finish("k", id.clone(), bare).await;
    assert_eq!(third.unwrap().e_tag(), first.e_tag());
    // Another parts list is not that completion.
    assert_eq!(
        code(finish("k", id.clone(), parts[..1].to_vec()).await),
        "NoSuchUpload"
    );
    let mut wrong = parts.clone();
    wrong[1] = CompletedPart::builder()
        .part_number(2)
        .e_tag("\"00000000000000000000000000000000\"")
        .build();
    assert_eq!(code(finish("k", id.clone(), wrong).await), "NoSuchUpload");
    // Two completions at once: both answer the one object, whichever point of the other's
    // commit each reads the upload at (rounds of one small part each, to meet every window).
    let (id2, parts2) = start("k2").await;
    let (a, b) = tokio::join!(
        finish("k2", id2.clone(), parts2.clone()),
        finish("k2", id2.clone(), parts2.clone())
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.e_tag(), b.e_tag());
    for round in 0..20 {
        let id = s3
            .create_multipart_upload()
            .bucket("again")
            .key("raced")
            .send()
            .await
            .unwrap()
            .upload_id()
            .unwrap()
            .to_string();
        let p = s3
            .upload_part()
            .bucket("again")
            .key("raced")
            .upload_id(&id)
            .part_number(1)
            .body(ByteStream::from(data(1000, round as u64)))
            .send()
            .await
            .unwrap();
        let parts = vec![
            CompletedPart::builder()
                .part_number(1)
                .e_tag(p.e_tag().unwrap())
                .build(),
        ];
        let (a, b) = tokio::join!(
            finish("raced", id.clone(), parts.clone()),
            finish("raced", id.clone(), parts.clone())
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(a.e_tag(), b.e_tag(), "round {round}");
    }
    s3.delete_object()
        .bucket("again")
        .key("raced")
        .send()
        .await
        .unwrap();
    // The repeats stored nothing twice.
    let usage = tenant_usage(gw.admin, "acme").await;
    assert_eq!(usage["usage"]["objects"], 2, "{usage}");
    assert_eq!(
        usage["usage"]["bytes"],
        2 * (5 * 1024 * 1024 + 1000),
        "{usage}"
    );
    let got = s3
        .get_object()
        .bucket("again")
        .key("k")
        .send()
        .await
        .unwrap();
    assert_eq!(got.e_tag(), first.e_tag());
    // A bucket deleted and created again does not answer for its predecessor's uploads.
    for k in ["k", "k2"] {
        s3.delete_object()
            .bucket("again")
            .key(k)
            .send()
            .await
            .unwrap();
    }
    s3.delete_bucket().bucket("again").send().await.unwrap();
    s3.create_bucket().bucket("again").send().await.unwrap();
    assert_eq!(
        code(finish("k", id.clone(), parts.clone()).await),
        "NoSuchUpload"
    );
    // The sweeper forgets them after the lifetime.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let report: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{}/sweep", gw.admin))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["completions_forgotten"], 22, "{report}");
}
