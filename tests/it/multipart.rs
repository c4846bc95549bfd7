//! Multipart uploads: completion without copying, ETags, part rules, copies, listings, aborts.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumMode, CompletedMultipartUpload, CompletedPart};

use crate::harness::*;

const MIB: usize = 1024 * 1024;

fn completed(parts: &[(i32, &str)]) -> CompletedMultipartUpload {
    CompletedMultipartUpload::builder()
        .set_parts(Some(
            parts
                .iter()
                .map(|(n, e)| CompletedPart::builder().part_number(*n).e_tag(*e).build())
                .collect(),
        ))
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_complete_get_ranges_and_parts() {
    let gw = Gw::start().await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("mp-bkt").send().await.unwrap();
    let up = s3
        .create_multipart_upload()
        .bucket("mp-bkt")
        .key("big.bin")
        .content_type("video/mp4")
        .metadata("a", "b")
        .send()
        .await
        .unwrap();
    let id = up.upload_id().unwrap();
    let p1 = data(5 * MIB, 10);
    let p2 = data(5 * MIB, 11);
    let p3 = data(1234, 12);
    let mut etags = Vec::new();
    // Upload out of order; completion orders by part number.
    for (n, body) in [(2, &p2), (1, &p1), (3, &p3)] {
        let r = s3
            .upload_part()
            .bucket("mp-bkt")
            .key("big.bin")
            .upload_id(id)
            .part_number(n)
            .body(ByteStream::from(body.clone()))
            .send()
            .await
            .unwrap();
        etags.push((n, r.e_tag().unwrap().to_string()));
    }
    etags.sort();
    let listed = s3
        .list_parts()
        .bucket("mp-bkt")
        .key("big.bin")
        .upload_id(id)
        .send()
        .await
        .unwrap();
    assert_eq!(
        listed
            .parts()
            .iter()
            .map(|p| p.part_number().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let uploads = s3
        .list_multipart_uploads()
        .bucket("mp-bkt")
        .send()
        .await
        .unwrap();
    assert_eq!(uploads.uploads().len(), 1);
    let parts: Vec<(i32, &str)> = etags.iter().map(|(n, e)| (*n, e.as_str())).collect();
    let done = s3
        .complete_multipart_upload()
        .bucket("mp-bkt")
        .key("big.bin")
        .upload_id(id)
        .multipart_upload(completed(&parts))
        .send()
        .await
        .unwrap();
    // md5 of the concatenated binary part MD5s, then "-3".
    let mut md5s = Vec::new();
    for (_, e) in &etags {
        md5s.extend(hex::decode(e.trim_matches('"')).unwrap());
    }
    let expected = format!("\"{}-3\"", hex::encode(crate::objects::md5_of(&md5s)));
    assert_eq!(done.e_tag(), Some(expected.as_str()));

    let whole: Vec<u8> = [p1.as_slice(), &p2, &p3].concat();
    let got = s3
        .get_object()
        .bucket("mp-bkt")
        .key("big.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(got.content_type(), Some("video/mp4"));
    assert_eq!(got.e_tag(), Some(expected.as_str()));
    assert_eq!(body_of(got).await, whole);
    // A range across the part boundary.
    let from = 5 * MIB as u64 - 10;
    let got = s3
        .get_object()
        .bucket("mp-bkt")
        .key("big.bin")
        .range(format!("bytes={from}-{}", from + 19))
        .send()
        .await
        .unwrap();
    assert_eq!(
        body_of(got).await,
        &whole[from as usize..from as usize + 20]
    );
    // partNumber selects one part and reports the part count.
    let got = s3
        .get_object()
        .bucket("mp-bkt")
        .key("big.bin")
        .part_number(3)
        .send()
        .await
        .unwrap();
    assert_eq!(got.parts_count(), Some(3));
    assert_eq!(body_of(got).await, p3);
    let head = s3
        .head_object()
        .bucket("mp-bkt")
        .key("big.bin")
        .part_number(2)
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_length(), Some(5 * MIB as i64));
    assert!(
        s3.list_multipart_uploads()
            .bucket("mp-bkt")
            .send()
            .await
            .unwrap()
            .uploads()
            .is_empty()
    );
    // Completion copied no bytes: the data dir holds exactly the three part blobs.
    assert_eq!(crate::objects::walk(&gw.dir.path().join("blobs")), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completion_rules_are_enforced() {
    let gw = Gw::start().await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("mp-bkt").send().await.unwrap();
    let id = s3
        .create_multipart_upload()
        .bucket("mp-bkt")
        .key("k")
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_string();
    let small = s3
        .upload_part()
        .bucket("mp-bkt")
        .key("k")
        .upload_id(&id)
        .part_number(1)
        .body(ByteStream::from(data(1000, 1)))
        .send()
        .await
        .unwrap();
    let last = s3
        .upload_part()
        .bucket("mp-bkt")
        .key("k")
        .upload_id(&id)
        .part_number(2)
        .body(ByteStream::from(data(1000, 2)))
        .send()
        .await
        .unwrap();
    let (e1, e2) = (small.e_tag().unwrap(), last.e_tag().unwrap());
    let complete = |parts: &[(i32, &str)]| {
        s3.complete_multipart_upload()
            .bucket("mp-bkt")
            .key("k")
            .upload_id(&id)
            .multipart_upload(completed(parts))
            .send()
    };
    assert_eq!(code(complete(&[(1, e1), (2, e2)]).await), "EntityTooSmall");
    assert_eq!(
        code(complete(&[(2, e2), (1, e1)]).await),
        "InvalidPartOrder"
    );
    assert_eq!(code(complete(&[(1, "\"0000\"")]).await), "InvalidPart");
    assert_eq!(code(complete(&[(7, e1)]).await), "InvalidPart");
    assert_eq!(
        code(
            s3.upload_part()
                .bucket("mp-bkt")
                .key("k")
                .upload_id(&id)
                .part_number(0)
                .body(ByteStream::from_static(b"x"))
                .send()
                .await
        ),
        "InvalidArgument"
    );
    assert_eq!(
        code(
            s3.upload_part()
                .bucket("mp-bkt")
                .key("k")
                .upload_id(&id)
                .part_number(10001)
                .body(ByteStream::from_static(b"x"))
                .send()
                .await
        ),
        "InvalidArgument"
    );
    // A single small part is a valid object (the last part may be small).
    let done = complete(&[(2, e2)]).await.unwrap();
    // Completed: the same list again is answered as the first time, another list is not.
    assert_eq!(complete(&[(2, e2)]).await.unwrap().e_tag(), done.e_tag());
    assert_eq!(code(complete(&[(1, e1)]).await), "NoSuchUpload");
    assert_eq!(
        body_of(
            s3.get_object()
                .bucket("mp-bkt")
                .key("k")
                .send()
                .await
                .unwrap()
        )
        .await,
        data(1000, 2)
    );
    // The unused part 1 was released with the upload.
    gw.drain().await;
    assert_eq!(crate::objects::walk(&gw.dir.path().join("blobs")), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_releases_parts_and_unknown_uploads_fail() {
    let gw = Gw::start().await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("mp-bkt").send().await.unwrap();
    let id = s3
        .create_multipart_upload()
        .bucket("mp-bkt")
        .key("k")
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_string();
    s3.upload_part()
        .bucket("mp-bkt")
        .key("k")
        .upload_id(&id)
        .part_number(1)
        .body(ByteStream::from(data(1000, 1)))
        .send()
        .await
        .unwrap();
    s3.abort_multipart_upload()
        .bucket("mp-bkt")
        .key("k")
        .upload_id(&id)
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(
            s3.list_parts()
                .bucket("mp-bkt")
                .key("k")
                .upload_id(&id)
                .send()
                .await
        ),
        "NoSuchUpload"
    );
    assert_eq!(
        code(
            s3.upload_part()
                .bucket("mp-bkt")
                .key("k")
                .upload_id("bogus")
                .part_number(1)
                .body(ByteStream::from_static(b"x"))
                .send()
                .await
        ),
        "NoSuchUpload"
    );
    gw.drain().await;
    assert_eq!(crate::objects::walk(&gw.dir.path().join("blobs")), 0);
    s3.delete_bucket().bucket("mp-bkt").send().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_part_copy_shares_source_bytes() {
    let gw = Gw::start().await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("mp-bkt").send().await.unwrap();
    let src = data(6 * MIB, 20);
    s3.put_object()
        .bucket("mp-bkt")
        .key("src")
        .body(ByteStream::from(src.clone()))
        .send()
        .await
        .unwrap();
    let id = s3
        .create_multipart_upload()
        .bucket("mp-bkt")
        .key("dst")
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_string();
    let c1 = s3
        .upload_part_copy()
        .bucket("mp-bkt")
        .key("dst")
        .upload_id(&id)
        .part_number(1)
        .copy_source("mp-bkt/src")
        .send()
        .await
        .unwrap();
    let c2 = s3
        .upload_part_copy()
        .bucket("mp-bkt")
        .key("dst")
        .upload_id(&id)
        .part_number(2)
        .copy_source("mp-bkt/src")
        .copy_source_range("bytes=100-199")
        .send()
        .await
        .unwrap();
    let e1 = c1.copy_part_result().unwrap().e_tag().unwrap().to_string();
    let e2 = c2.copy_part_result().unwrap().e_tag().unwrap().to_string();
    assert_eq!(
        e2,
        format!(
            "\"{}\"",
            hex::encode(crate::objects::md5_of(&src[100..200]))
        )
    );
    s3.complete_multipart_upload()
        .bucket("mp-bkt")
        .key("dst")
        .upload_id(&id)
        .multipart_upload(completed(&[(1, &e1), (2, &e2)]))
        .send()
        .await
        .unwrap();
    let got = body_of(
        s3.get_object()
            .bucket("mp-bkt")
            .key("dst")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(got, [src.as_slice(), &src[100..200]].concat());
    assert_eq!(
        crate::objects::walk(&gw.dir.path().join("blobs")),
        1,
        "no byte was copied"
    );
    assert_eq!(
        code(
            s3.upload_part_copy()
                .bucket("mp-bkt")
                .key("dst")
                .upload_id("x")
                .part_number(1)
                .copy_source("mp-bkt/src")
                .send()
                .await
        ),
        "NoSuchUpload"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn part_checksums_and_composite_checksum() {
    let gw = Gw::start().await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("mp-bkt").send().await.unwrap();
    let id = s3
        .create_multipart_upload()
        .bucket("mp-bkt")
        .key("k")
        .checksum_algorithm(ChecksumAlgorithm::Crc32)
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_string();
    let mut parts = Vec::new();
    for (n, len) in [(1, 5 * MIB), (2, 100)] {
        let r = s3
            .upload_part()
            .bucket("mp-bkt")
            .key("k")
            .upload_id(&id)
            .part_number(n)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .body(ByteStream::from(data(len, n as u64)))
            .send()
            .await
            .unwrap();
        assert!(r.checksum_crc32().is_some());
        parts.push(
            CompletedPart::builder()
                .part_number(n)
                .e_tag(r.e_tag().unwrap())
                .checksum_crc32(r.checksum_crc32().unwrap())
                .build(),
        );
    }
    let done = complete(&s3, "mp-bkt", "k", &id, parts).await;
    let sum = done.checksum_crc32().unwrap();
    assert!(sum.ends_with("-2"), "{sum}");
    let head = s3
        .head_object()
        .bucket("mp-bkt")
        .key("k")
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    assert_eq!(head.checksum_crc32(), Some(sum));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_aborts_abandoned_uploads() {
    // Every upload counts as abandoned at once; the sweeper runs when the admin API asks.
    let gw = Gw::start_with("", "interval_secs = 3600\nabandoned_upload_secs = 0").await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("stale").send().await.unwrap();
    let id = s3
        .create_multipart_upload()
        .bucket("stale")
        .key("k")
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_string();
    s3.upload_part()
        .bucket("stale")
        .key("k")
        .upload_id(&id)
        .part_number(1)
        .body(ByteStream::from(data(1000, 1)))
        .send()
        .await
        .unwrap();
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
    assert_eq!(report["uploads_aborted"], 1, "{report}");
    assert_eq!(
        code(
            s3.list_parts()
                .bucket("stale")
                .key("k")
                .upload_id(&id)
                .send()
                .await
        ),
        "NoSuchUpload"
    );
    gw.drain().await;
    assert_eq!(
        crate::objects::walk(&gw.dir.path().join("blobs")),
        0,
        "the part's blob was released"
    );
    s3.delete_bucket().bucket("stale").send().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_object_checksum_is_the_crc_of_the_whole_body() {
    use aws_sdk_s3::types::ChecksumType;
    use base64::Engine as _;
    use s3s::crypto::Checksum as _;
    let gw = Gw::start().await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("full").send().await.unwrap();
    let id = s3
        .create_multipart_upload()
        .bucket("full")
        .key("k")
        .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
        .checksum_type(ChecksumType::FullObject)
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_string();
    let (p1, p2) = (data(5 * MIB, 31), data(777, 32));
    let mut parts = Vec::new();
    for (n, body) in [(1, &p1), (2, &p2)] {
        let r = s3
            .upload_part()
            .bucket("full")
            .key("k")
            .upload_id(&id)
            .part_number(n)
            .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
            .body(ByteStream::from(body.clone()))
            .send()
            .await
            .unwrap();
        parts.push(
            CompletedPart::builder()
                .part_number(n)
                .e_tag(r.e_tag().unwrap())
                .checksum_crc64_nvme(r.checksum_crc64_nvme().unwrap())
                .build(),
        );
    }
    let done = complete(&s3, "full", "k", &id, parts).await;
    let whole = [p1.as_slice(), &p2].concat();
    let expected =
        base64::engine::general_purpose::STANDARD.encode(s3s::crypto::Crc64Nvme::checksum(&whole));
    assert_eq!(done.checksum_crc64_nvme(), Some(expected.as_str()));
    assert_eq!(done.checksum_type(), Some(&ChecksumType::FullObject));
    // The SDK validates a full-object checksum on GET against the body it receives.
    let got = s3
        .get_object()
        .bucket("full")
        .key("k")
        .checksum_mode(ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    assert_eq!(got.checksum_crc64_nvme(), Some(expected.as_str()));
    assert_eq!(body_of(got).await, whole);
    // FULL_OBJECT needs a CRC algorithm.
    assert_eq!(
        code(
            s3.create_multipart_upload()
                .bucket("full")
                .key("x")
                .checksum_algorithm(ChecksumAlgorithm::Sha256)
                .checksum_type(ChecksumType::FullObject)
                .send()
                .await
        ),
        "InvalidRequest"
    );
}
