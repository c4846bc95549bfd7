//! Authentication, roles and presigned URLs.

use std::time::Duration;

use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_and_unknown_key_are_refused() {
    let gw = Gw::start().await;
    gw.acme()
        .create_bucket()
        .bucket("b-bkt")
        .send()
        .await
        .unwrap();
    let wrong = gw.client((ACME.0, "not-the-secret"));
    assert_eq!(
        code(wrong.list_objects_v2().bucket("b-bkt").send().await),
        "SignatureDoesNotMatch"
    );
    let unknown = gw.client(("NOSUCHKEY", "whatever-secret"));
    assert_eq!(
        code(unknown.list_buckets().send().await),
        "InvalidAccessKeyId"
    );
    // Anonymous requests get AccessDenied.
    let resp = reqwest::get(format!("{}/b-bkt", gw.endpoint()))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    assert_eq!(xml_code(&resp.text().await.unwrap()), "AccessDenied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_keys_read_but_never_write() {
    let gw = Gw::start().await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("shared").send().await.unwrap();
    s3.put_object()
        .bucket("shared")
        .key("k")
        .body(ByteStream::from_static(b"v"))
        .send()
        .await
        .unwrap();
    let ro = gw.client(READER);
    assert_eq!(
        body_of(
            ro.get_object()
                .bucket("shared")
                .key("k")
                .send()
                .await
                .unwrap()
        )
        .await,
        b"v"
    );
    ro.list_objects_v2().bucket("shared").send().await.unwrap();
    assert_eq!(
        code(
            ro.put_object()
                .bucket("shared")
                .key("x")
                .body(ByteStream::from_static(b"v"))
                .send()
                .await
        ),
        "AccessDenied"
    );
    assert_eq!(
        code(ro.delete_object().bucket("shared").key("k").send().await),
        "AccessDenied"
    );
    assert_eq!(
        code(ro.create_bucket().bucket("mine").send().await),
        "AccessDenied"
    );
    s3.head_object()
        .bucket("shared")
        .key("k")
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_get_and_put_work_and_expire() {
    let gw = Gw::start().await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("p-bkt").send().await.unwrap();
    let http = reqwest::Client::new();

    let put = s3
        .put_object()
        .bucket("p-bkt")
        .key("up load.txt")
        .presigned(PresigningConfig::expires_in(Duration::from_secs(300)).unwrap())
        .await
        .unwrap();
    let resp = http
        .put(put.uri())
        .body("from a browser")
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status().as_u16(),
        200,
        "{}",
        resp.text().await.unwrap()
    );

    let get = s3
        .get_object()
        .bucket("p-bkt")
        .key("up load.txt")
        .presigned(PresigningConfig::expires_in(Duration::from_secs(300)).unwrap())
        .await
        .unwrap();
    let resp = http.get(get.uri()).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.text().await.unwrap(), "from a browser");

    // A tampered signature is refused.
    let uri = get.uri().to_string();
    let last = uri.chars().last().unwrap();
    let tampered = format!(
        "{}{}",
        &uri[..uri.len() - 1],
        if last == '0' { '1' } else { '0' }
    );
    let resp = http.get(tampered).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 403);

    // An expired URL is refused with AccessDenied.
    let old = s3
        .get_object()
        .bucket("p-bkt")
        .key("up load.txt")
        .presigned(
            PresigningConfig::builder()
                .start_time(std::time::SystemTime::now() - Duration::from_secs(3600))
                .expires_in(Duration::from_secs(60))
                .build()
                .unwrap(),
        )
        .await
        .unwrap();
    let resp = http.get(old.uri()).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    assert_eq!(xml_code(&resp.text().await.unwrap()), "AccessDenied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_hosted_style_requests_when_a_domain_is_configured() {
    let gw = Gw::start_with("domain = \"s3.localtest\"", "").await;
    gw.acme()
        .create_bucket()
        .bucket("vhost")
        .send()
        .await
        .unwrap();
    gw.acme()
        .put_object()
        .bucket("vhost")
        .key("dir/k")
        .body(ByteStream::from_static(b"virtual"))
        .send()
        .await
        .unwrap();
    // The bucket travels in the Host header, as a virtual-hosted client sends it.
    let host = format!("vhost.s3.localtest:{}", gw.addr.port());
    let (status, body) = raw_host(
        &gw.endpoint(),
        Some(&host),
        ACME,
        "GET",
        "/dir/k",
        &[],
        Vec::new(),
        aws_sigv4::http_request::SignableBody::UnsignedPayload,
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "virtual"));
}
