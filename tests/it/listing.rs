//! ListObjects v1/v2 semantics: prefixes, delimiters, pagination, markers, URL encoding.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::EncodingType;

use crate::harness::*;

async fn seeded(gw: &Gw, keys: &[&str]) -> aws_sdk_s3::Client {
    let s3 = gw.acme();
    s3.create_bucket().bucket("l-bkt").send().await.unwrap();
    for k in keys {
        s3.put_object()
            .bucket("l-bkt")
            .key(*k)
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .unwrap();
    }
    s3
}

const KEYS: &[&str] = &[
    "a.txt",
    "photos/2023/jan.jpg",
    "photos/2023/feb.jpg",
    "photos/2024/mar.jpg",
    "photos/index.html",
    "z/deep/er/file",
    "zz",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_prefix_delimiter_and_common_prefixes() {
    let gw = Gw::start().await;
    let s3 = seeded(&gw, KEYS).await;
    let out = s3
        .list_objects_v2()
        .bucket("l-bkt")
        .delimiter("/")
        .send()
        .await
        .unwrap();
    let keys: Vec<&str> = out.contents().iter().filter_map(|o| o.key()).collect();
    let prefixes: Vec<&str> = out
        .common_prefixes()
        .iter()
        .filter_map(|p| p.prefix())
        .collect();
    assert_eq!(keys, ["a.txt", "zz"]);
    assert_eq!(prefixes, ["photos/", "z/"]);
    assert_eq!(out.key_count(), Some(4));
    assert_eq!(out.is_truncated(), Some(false));

    let out = s3
        .list_objects_v2()
        .bucket("l-bkt")
        .prefix("photos/")
        .delimiter("/")
        .send()
        .await
        .unwrap();
    let keys: Vec<&str> = out.contents().iter().filter_map(|o| o.key()).collect();
    let prefixes: Vec<&str> = out
        .common_prefixes()
        .iter()
        .filter_map(|p| p.prefix())
        .collect();
    assert_eq!(keys, ["photos/index.html"]);
    assert_eq!(prefixes, ["photos/2023/", "photos/2024/"]);

    let out = s3
        .list_objects_v2()
        .bucket("l-bkt")
        .prefix("photos/2023/")
        .send()
        .await
        .unwrap();
    let keys: Vec<&str> = out.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(
        keys,
        ["photos/2023/feb.jpg", "photos/2023/jan.jpg"],
        "binary key order"
    );
    let o = &out.contents()[0];
    assert_eq!(o.size(), Some(1));
    assert_eq!(o.e_tag(), Some("\"9dd4e461268c8034f5c8564e155c67a6\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_pagination_visits_every_key_once() {
    let gw = Gw::start().await;
    let s3 = seeded(&gw, KEYS).await;
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let out = s3
            .list_objects_v2()
            .bucket("l-bkt")
            .max_keys(2)
            .delimiter("/")
            .set_continuation_token(token.clone())
            .send()
            .await
            .unwrap();
        assert!(out.key_count().unwrap() <= 2);
        seen.extend(
            out.contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_string)),
        );
        seen.extend(
            out.common_prefixes()
                .iter()
                .filter_map(|p| p.prefix().map(str::to_string)),
        );
        if out.is_truncated() != Some(true) {
            break;
        }
        token = out.next_continuation_token().map(str::to_string);
        assert!(token.is_some());
    }
    seen.sort();
    assert_eq!(seen, ["a.txt", "photos/", "z/", "zz"]);

    let after = s3
        .list_objects_v2()
        .bucket("l-bkt")
        .start_after("photos/2024/mar.jpg")
        .send()
        .await
        .unwrap();
    let keys: Vec<&str> = after.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["photos/index.html", "z/deep/er/file", "zz"]);
    assert_eq!(
        code(
            s3.list_objects_v2()
                .bucket("l-bkt")
                .continuation_token("!!!")
                .send()
                .await
        ),
        "InvalidArgument"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_marker_and_next_marker() {
    let gw = Gw::start().await;
    let s3 = seeded(&gw, KEYS).await;
    let first = s3
        .list_objects()
        .bucket("l-bkt")
        .max_keys(3)
        .send()
        .await
        .unwrap();
    assert_eq!(first.is_truncated(), Some(true));
    let keys: Vec<&str> = first.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(
        keys,
        ["a.txt", "photos/2023/feb.jpg", "photos/2023/jan.jpg"]
    );
    let marker = first.next_marker().unwrap().to_string();
    let rest = s3
        .list_objects()
        .bucket("l-bkt")
        .marker(marker)
        .send()
        .await
        .unwrap();
    let keys: Vec<&str> = rest.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(
        keys,
        [
            "photos/2024/mar.jpg",
            "photos/index.html",
            "z/deep/er/file",
            "zz"
        ]
    );
    assert_eq!(rest.is_truncated(), Some(false));
    assert!(rest.contents()[0].owner().is_some(), "v1 lists the owner");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_encoding_type_encodes_keys() {
    let gw = Gw::start().await;
    let s3 = seeded(&gw, &["with space+plus", "ü/ñ"]).await;
    let out = s3
        .list_objects_v2()
        .bucket("l-bkt")
        .encoding_type(EncodingType::Url)
        .send()
        .await
        .unwrap();
    let keys: Vec<&str> = out.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["with+space%2Bplus", "%C3%BC%2F%C3%B1"]);
    let plain = s3.list_objects_v2().bucket("l-bkt").send().await.unwrap();
    let keys: Vec<&str> = plain.contents().iter().filter_map(|o| o.key()).collect();
    assert_eq!(keys, ["with space+plus", "ü/ñ"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_listing_is_paged_in_thousands() {
    let gw = Gw::start().await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("many").send().await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1100 {
        let s3 = s3.clone();
        tasks.spawn(async move {
            s3.put_object()
                .bucket("many")
                .key(format!("k/{i:05}"))
                .body(ByteStream::from_static(b""))
                .send()
                .await
                .unwrap();
        });
        while tasks.len() >= 16 {
            tasks.join_next().await.unwrap().unwrap();
        }
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let first = s3.list_objects_v2().bucket("many").send().await.unwrap();
    assert_eq!(first.key_count(), Some(1000));
    assert_eq!(first.is_truncated(), Some(true));
    let second = s3
        .list_objects_v2()
        .bucket("many")
        .continuation_token(first.next_continuation_token().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(second.key_count(), Some(100));
    assert_eq!(second.contents().last().unwrap().key(), Some("k/01099"));
}
