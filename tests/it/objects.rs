//! Object operations through aws-sdk-s3: data and metadata round trips, ranges, conditionals,
//! overrides, copies, tagging, checksums and digests.

use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumMode, Delete, MetadataDirective, ObjectIdentifier, Tag, Tagging,
    TaggingDirective,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::harness::*;

async fn bucket(gw: &Gw, name: &str) -> aws_sdk_s3::Client {
    let s3 = gw.acme();
    s3.create_bucket().bucket(name).send().await.unwrap();
    s3
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_head_round_trip_with_metadata() {
    let gw = Gw::start().await;
    let s3 = bucket(&gw, "docs").await;
    let body = data(100_000, 1);
    let put = s3
        .put_object()
        .bucket("docs")
        .key("contracts/2024/acme.pdf")
        .body(ByteStream::from(body.clone()))
        .content_type("application/pdf")
        .content_disposition("attachment; filename=\"acme.pdf\"")
        .content_language("en")
        .cache_control("max-age=60")
        .content_encoding("identity")
        .expires(DateTime::from_secs(2_000_000_000))
        .metadata("customer", "acme")
        .metadata("signed-by", "Wile E. Coyote")
        .send()
        .await
        .unwrap();
    let md5 = format!("\"{}\"", hex::encode(md5_of(&body)));
    assert_eq!(put.e_tag(), Some(md5.as_str()));

    let got = s3
        .get_object()
        .bucket("docs")
        .key("contracts/2024/acme.pdf")
        .send()
        .await
        .unwrap();
    assert_eq!(got.e_tag(), Some(md5.as_str()));
    assert_eq!(got.content_type(), Some("application/pdf"));
    assert_eq!(
        got.content_disposition(),
        Some("attachment; filename=\"acme.pdf\"")
    );
    assert_eq!(got.content_language(), Some("en"));
    assert_eq!(got.cache_control(), Some("max-age=60"));
    assert_eq!(got.content_encoding(), Some("identity"));
    assert_eq!(got.expires_string(), Some("Wed, 18 May 2033 03:33:20 GMT"));
    assert_eq!(got.content_length(), Some(100_000));
    let meta = got.metadata().unwrap();
    assert_eq!(meta.get("customer").map(String::as_str), Some("acme"));
    assert_eq!(
        meta.get("signed-by").map(String::as_str),
        Some("Wile E. Coyote")
    );
    assert_eq!(body_of(got).await, body);

    let head = s3
        .head_object()
        .bucket("docs")
        .key("contracts/2024/acme.pdf")
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_length(), Some(100_000));
    assert_eq!(head.e_tag(), Some(md5.as_str()));
    assert!(head.last_modified().is_some());
    assert_eq!(
        code(s3.get_object().bucket("docs").key("missing").send().await),
        "NoSuchKey"
    );
    assert_eq!(
        code(s3.get_object().bucket("nobucket").key("x").send().await),
        "NoSuchBucket"
    );
}

pub fn md5_of(b: &[u8]) -> [u8; 16] {
    use s3s::crypto::Checksum as _;
    s3s::crypto::Md5::checksum(b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_object_and_overwrite() {
    let gw = Gw::start().await;
    let s3 = bucket(&gw, "b-bkt").await;
    s3.put_object()
        .bucket("b-bkt")
        .key("empty")
        .body(ByteStream::from_static(b""))
        .send()
        .await
        .unwrap();
    let got = s3
        .get_object()
        .bucket("b-bkt")
        .key("empty")
        .send()
        .await
        .unwrap();
    assert_eq!(got.e_tag(), Some("\"d41d8cd98f00b204e9800998ecf8427e\""));
    assert!(body_of(got).await.is_empty());
    s3.put_object()
        .bucket("b-bkt")
        .key("k")
        .body(ByteStream::from_static(b"one"))
        .send()
        .await
        .unwrap();
    s3.put_object()
        .bucket("b-bkt")
        .key("k")
        .body(ByteStream::from_static(b"two"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        body_of(
            s3.get_object()
                .bucket("b-bkt")
                .key("k")
                .send()
                .await
                .unwrap()
        )
        .await,
        b"two"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_full_open_and_suffix() {
    let gw = Gw::start().await;
    let s3 = bucket(&gw, "r-bkt").await;
    let body = data(10_000, 2);
    s3.put_object()
        .bucket("r-bkt")
        .key("k")
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .unwrap();
    for (range, want, cr) in [
        ("bytes=0-99", &body[..100], "bytes 0-99/10000"),
        ("bytes=9990-", &body[9990..], "bytes 9990-9999/10000"),
        ("bytes=-10", &body[9990..], "bytes 9990-9999/10000"),
        ("bytes=5000-99999", &body[5000..], "bytes 5000-9999/10000"),
    ] {
        let got = s3
            .get_object()
            .bucket("r-bkt")
            .key("k")
            .range(range)
            .send()
            .await
            .unwrap();
        assert_eq!(got.content_range(), Some(cr), "{range}");
        assert_eq!(body_of(got).await, want, "{range}");
    }
    assert_eq!(
        code(
            s3.get_object()
                .bucket("r-bkt")
                .key("k")
                .range("bytes=10000-")
                .send()
                .await
        ),
        "InvalidRange"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_get_and_put() {
    let gw = Gw::start().await;
    let s3 = bucket(&gw, "c-bkt").await;
    let put = s3
        .put_object()
        .bucket("c-bkt")
        .key("k")
        .body(ByteStream::from_static(b"v1"))
        .send()
        .await
        .unwrap();
    let etag = put.e_tag().unwrap().to_string();
    s3.get_object()
        .bucket("c-bkt")
        .key("k")
        .if_match(&etag)
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(
            s3.get_object()
                .bucket("c-bkt")
                .key("k")
                .if_match("\"nope\"")
                .send()
                .await
        ),
        "PreconditionFailed"
    );
    let nm = s3
        .get_object()
        .bucket("c-bkt")
        .key("k")
        .if_none_match(&etag)
        .send()
        .await;
    assert_eq!(status_of(nm), 304, "If-None-Match with the current ETag");
    let past = DateTime::from_secs(1_000_000_000);
    let future = DateTime::from_secs(4_000_000_000);
    s3.get_object()
        .bucket("c-bkt")
        .key("k")
        .if_modified_since(past)
        .send()
        .await
        .unwrap();
    assert_eq!(
        status_of(
            s3.get_object()
                .bucket("c-bkt")
                .key("k")
                .if_modified_since(future)
                .send()
                .await
        ),
        304,
        "not modified since a later date"
    );
    assert_eq!(
        code(
            s3.get_object()
                .bucket("c-bkt")
                .key("k")
                .if_unmodified_since(past)
                .send()
                .await
        ),
        "PreconditionFailed"
    );
    s3.get_object()
        .bucket("c-bkt")
        .key("k")
        .if_unmodified_since(future)
        .send()
        .await
        .unwrap();
    // If-Match wins over a false If-Unmodified-Since (RFC 7232 §6).
    s3.get_object()
        .bucket("c-bkt")
        .key("k")
        .if_match(&etag)
        .if_unmodified_since(past)
        .send()
        .await
        .unwrap();
    // Conditional writes: create-only, and compare-and-swap on the ETag.
    assert_eq!(
        code(
            s3.put_object()
                .bucket("c-bkt")
                .key("k")
                .if_none_match("*")
                .body(ByteStream::from_static(b"x"))
                .send()
                .await
        ),
        "PreconditionFailed"
    );
    s3.put_object()
        .bucket("c-bkt")
        .key("new")
        .if_none_match("*")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(
            s3.put_object()
                .bucket("c-bkt")
                .key("k")
                .if_match("\"stale\"")
                .body(ByteStream::from_static(b"x"))
                .send()
                .await
        ),
        "PreconditionFailed"
    );
    s3.put_object()
        .bucket("c-bkt")
        .key("k")
        .if_match(&etag)
        .body(ByteStream::from_static(b"v2"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        body_of(
            s3.get_object()
                .bucket("c-bkt")
                .key("k")
                .send()
                .await
                .unwrap()
        )
        .await,
        b"v2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_header_overrides() {
    let gw = Gw::start().await;
    let s3 = bucket(&gw, "o-bkt").await;
    s3.put_object()
        .bucket("o-bkt")
        .key("k")
        .content_type("text/plain")
        .body(ByteStream::from_static(b"hi"))
        .send()
        .await
        .unwrap();
    let got = s3
        .get_object()
        .bucket("o-bkt")
        .key("k")
        .response_content_type("application/x-download")
        .response_content_disposition("attachment; filename=k.txt")
        .response_cache_control("no-store")
        .send()
        .await
        .unwrap();
    assert_eq!(got.content_type(), Some("application/x-download"));
    assert_eq!(
        got.content_disposition(),
        Some("attachment; filename=k.txt")
    );
    assert_eq!(got.cache_control(), Some("no-store"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_object_copy_and_replace_metadata() {
    let gw = Gw::start().await;
    let s3 = bucket(&gw, "src").await;
    s3.create_bucket().bucket("dst").send().await.unwrap();
    let body = data(50_000, 3);
    let put = s3
        .put_object()
        .bucket("src")
        .key("a b/ü.txt")
        .content_type("text/plain")
        .metadata("owner", "x")
        .tagging("team=red")
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .unwrap();
    let copy = s3
        .copy_object()
        .bucket("dst")
        .key("copy")
        .copy_source("src/a%20b/%C3%BC.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(copy.copy_object_result().unwrap().e_tag(), put.e_tag());
    let got = s3
        .get_object()
        .bucket("dst")
        .key("copy")
        .send()
        .await
        .unwrap();
    assert_eq!(got.content_type(), Some("text/plain"));
    assert_eq!(
        got.metadata().unwrap().get("owner").map(String::as_str),
        Some("x")
    );
    assert_eq!(body_of(got).await, body);
    let tags = s3
        .get_object_tagging()
        .bucket("dst")
        .key("copy")
        .send()
        .await
        .unwrap();
    assert_eq!(tags.tag_set()[0].key(), "team");

    s3.copy_object()
        .bucket("dst")
        .key("replaced")
        .copy_source("src/a%20b/%C3%BC.txt")
        .metadata_directive(MetadataDirective::Replace)
        .content_type("application/octet-stream")
        .metadata("owner", "y")
        .tagging_directive(TaggingDirective::Replace)
        .tagging("team=blue")
        .send()
        .await
        .unwrap();
    let head = s3
        .head_object()
        .bucket("dst")
        .key("replaced")
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_type(), Some("application/octet-stream"));
    assert_eq!(
        head.metadata().unwrap().get("owner").map(String::as_str),
        Some("y")
    );
    let tags = s3
        .get_object_tagging()
        .bucket("dst")
        .key("replaced")
        .send()
        .await
        .unwrap();
    assert_eq!(tags.tag_set()[0].value(), "blue");

    // Copy-source conditionals.
    assert_eq!(
        code(
            s3.copy_object()
                .bucket("dst")
                .key("c")
                .copy_source("src/a%20b/%C3%BC.txt")
                .copy_source_if_match("\"x\"")
                .send()
                .await
        ),
        "PreconditionFailed"
    );
    assert_eq!(
        code(
            s3.copy_object()
                .bucket("dst")
                .key("c")
                .copy_source("src/a%20b/%C3%BC.txt")
                .copy_source_if_none_match(put.e_tag().unwrap())
                .send()
                .await
        ),
        "PreconditionFailed"
    );
    // Copying onto itself without a change is refused, as S3 does.
    assert_eq!(
        code(
            s3.copy_object()
                .bucket("src")
                .key("a b/ü.txt")
                .copy_source("src/a%20b/%C3%BC.txt")
                .send()
                .await
        ),
        "InvalidRequest"
    );
    // Deleting the source leaves the copy readable: they share blobs by reference.
    s3.delete_object()
        .bucket("src")
        .key("a b/ü.txt")
        .send()
        .await
        .unwrap();
    assert_eq!(
        body_of(
            s3.get_object()
                .bucket("dst")
                .key("copy")
                .send()
                .await
                .unwrap()
        )
        .await,
        body
    );
    assert_eq!(
        code(
            s3.copy_object()
                .bucket("dst")
                .key("c")
                .copy_source("src/gone")
                .send()
                .await
        ),
        "NoSuchKey"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_tagging_put_get_delete_and_limits() {
    let gw = Gw::start().await;
    let s3 = bucket(&gw, "t-bkt").await;
    s3.put_object()
        .bucket("t-bkt")
        .key("k")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap();
    let tagging = |n: usize| {
        Tagging::builder()
            .set_tag_set(Some(
                (0..n)
                    .map(|i| {
                        Tag::builder()
                            .key(format!("k{i}"))
                            .value("v")
                            .build()
                            .unwrap()
                    })
                    .collect(),
            ))
            .build()
            .unwrap()
    };
    s3.put_object_tagging()
        .bucket("t-bkt")
        .key("k")
        .tagging(tagging(2))
        .send()
        .await
        .unwrap();
    let read_tags = || s3.get_object_tagging().bucket("t-bkt").key("k").send();
    let got = read_tags().await.unwrap();
    // Exactly the two set: a bucket that does not scan shows no scan-status tag (clients
    // compare tag sets exactly).
    let tags: Vec<(&str, &str)> = got.tag_set().iter().map(|t| (t.key(), t.value())).collect();
    assert_eq!(tags, [("k0", "v"), ("k1", "v")]);
    // Writing the tag set back as read (a read-modify-write) works.
    s3.put_object_tagging()
        .bucket("t-bkt")
        .key("k")
        .tagging(
            aws_sdk_s3::types::Tagging::builder()
                .set_tag_set(Some(got.tag_set().to_vec()))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let again = read_tags().await.unwrap();
    let mut keys: Vec<&str> = again.tag_set().iter().map(|t| t.key()).collect();
    keys.sort_unstable();
    let mut before: Vec<&str> = tags.iter().map(|t| t.0).collect();
    before.sort_unstable();
    assert_eq!(keys, before);
    assert_eq!(
        code(
            s3.put_object_tagging()
                .bucket("t-bkt")
                .key("k")
                .tagging(tagging(11))
                .send()
                .await
        ),
        "InvalidTag"
    );
    s3.delete_object_tagging()
        .bucket("t-bkt")
        .key("k")
        .send()
        .await
        .unwrap();
    let left = s3
        .get_object_tagging()
        .bucket("t-bkt")
        .key("k")
        .send()
        .await
        .unwrap();
    assert!(left.tag_set().is_empty());
    assert_eq!(
        code(
            s3.get_object_tagging()
                .bucket("t-bkt")
                .key("nope")
                .send()
                .await
        ),
        "NoSuchKey"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksums_are_verified_stored_and_returned() {
    let gw = Gw::start().await;
    let s3 = bucket(&gw, "sum").await;
    let body = data(300_000, 4);
    for alg in [
        ChecksumAlgorithm::Crc32,
        ChecksumAlgorithm::Crc32C,
        ChecksumAlgorithm::Sha1,
        ChecksumAlgorithm::Sha256,
        ChecksumAlgorithm::Crc64Nvme,
    ] {
        let key = format!("k-{}", alg.as_str());
        let put = s3
            .put_object()
            .bucket("sum")
            .key(&key)
            .checksum_algorithm(alg.clone())
            .body(ByteStream::from(body.clone()))
            .send()
            .await
            .unwrap();
        let head = s3
            .head_object()
            .bucket("sum")
            .key(&key)
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
            .unwrap();
        let (sent, stored) = match alg {
            ChecksumAlgorithm::Crc32 => (put.checksum_crc32(), head.checksum_crc32()),
            ChecksumAlgorithm::Crc32C => (put.checksum_crc32_c(), head.checksum_crc32_c()),
            ChecksumAlgorithm::Sha1 => (put.checksum_sha1(), head.checksum_sha1()),
            ChecksumAlgorithm::Sha256 => (put.checksum_sha256(), head.checksum_sha256()),
            _ => (put.checksum_crc64_nvme(), head.checksum_crc64_nvme()),
        };
        assert!(
            sent.is_some(),
            "{alg:?}: the gateway returns the checksum it verified"
        );
        assert_eq!(sent, stored, "{alg:?}");
        // The SDK validates the checksum of the GET response against the stored one.
        let got = s3
            .get_object()
            .bucket("sum")
            .key(&key)
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
            .unwrap();
        assert_eq!(body_of(got).await, body);
    }
    let sha = B64.encode(sha2_of(&body));
    s3.put_object()
        .bucket("sum")
        .key("explicit")
        .checksum_sha256(&sha)
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .unwrap();
}

fn sha2_of(b: &[u8]) -> Vec<u8> {
    use s3s::crypto::Checksum as _;
    s3s::crypto::Sha256::checksum(b).to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_digests_are_rejected_and_nothing_is_stored() {
    let gw = Gw::start().await;
    let s3 = bucket(&gw, "bad").await;
    let wrong_md5 = B64.encode(md5_of(b"something else"));
    assert_eq!(
        code(
            s3.put_object()
                .bucket("bad")
                .key("k")
                .content_md5(wrong_md5)
                .body(ByteStream::from_static(b"payload"))
                .send()
                .await
        ),
        "BadDigest"
    );
    assert_eq!(
        code(
            s3.put_object()
                .bucket("bad")
                .key("k")
                .content_md5("not-base64!")
                .body(ByteStream::from_static(b"payload"))
                .send()
                .await
        ),
        "InvalidDigest"
    );
    let wrong_crc = B64.encode([0u8, 0, 0, 0]);
    assert_eq!(
        code(
            s3.put_object()
                .bucket("bad")
                .key("k")
                .checksum_crc32(wrong_crc)
                .body(ByteStream::from_static(b"payload"))
                .send()
                .await
        ),
        "BadDigest"
    );
    let wrong_sha = B64.encode(sha2_of(b"other"));
    assert_eq!(
        code(
            s3.put_object()
                .bucket("bad")
                .key("k")
                .checksum_sha256(wrong_sha)
                .body(ByteStream::from_static(b"payload"))
                .send()
                .await
        ),
        "BadDigest"
    );
    assert_eq!(
        code(s3.head_object().bucket("bad").key("k").send().await),
        "NotFound"
    );
    let right_md5 = B64.encode(md5_of(b"payload"));
    s3.put_object()
        .bucket("bad")
        .key("k")
        .content_md5(right_md5)
        .body(ByteStream::from_static(b"payload"))
        .send()
        .await
        .unwrap();
    // The rejected bodies left no blob behind (their guards delete them in the background, right
    // after the answer): only the accepted object's blob remains.
    let dir = gw.dir.path().join("blobs");
    eventually("only the accepted object's blob remains", || {
        walk(&dir) == 1
    })
    .await;
}

pub fn walk(dir: &std::path::Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.map(|e| e.unwrap())
        .map(|e| {
            if e.file_type().unwrap().is_dir() {
                walk(&e.path())
            } else {
                1
            }
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_objects_verbose_and_quiet() {
    let gw = Gw::start().await;
    let s3 = bucket(&gw, "d-bkt").await;
    for k in ["a", "b", "c"] {
        s3.put_object()
            .bucket("d-bkt")
            .key(k)
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .unwrap();
    }
    let ids = |keys: &[&str]| {
        keys.iter()
            .map(|k| ObjectIdentifier::builder().key(*k).build().unwrap())
            .collect::<Vec<_>>()
    };
    let out = s3
        .delete_objects()
        .bucket("d-bkt")
        .delete(
            Delete::builder()
                .set_objects(Some(ids(&["a", "missing"])))
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let mut deleted: Vec<&str> = out.deleted().iter().filter_map(|d| d.key()).collect();
    deleted.sort();
    assert_eq!(
        deleted,
        ["a", "missing"],
        "S3 reports missing keys as deleted"
    );
    let out = s3
        .delete_objects()
        .bucket("d-bkt")
        .delete(
            Delete::builder()
                .set_objects(Some(ids(&["b", "c"])))
                .quiet(true)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert!(out.deleted().is_empty() && out.errors().is_empty());
    assert_eq!(
        s3.list_objects_v2()
            .bucket("d-bkt")
            .send()
            .await
            .unwrap()
            .key_count(),
        Some(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_over_2kb_is_refused() {
    let gw = Gw::start().await;
    let s3 = bucket(&gw, "m-bkt").await;
    assert_eq!(
        code(
            s3.put_object()
                .bucket("m-bkt")
                .key("k")
                .metadata("big", "x".repeat(2100))
                .body(ByteStream::from_static(b"x"))
                .send()
                .await
        ),
        "MetadataTooLarge"
    );
    s3.put_object()
        .bucket("m-bkt")
        .key("k")
        .metadata("ok", "x".repeat(1900))
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap();
}
