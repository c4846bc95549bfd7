//! Bucket operations and tenant isolation.

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_list_head_delete_bucket() {
    let gw = Gw::start().await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("invoices").send().await.unwrap();
    // Again: 200 in us-east-1, as on S3 (`s3compat::creating_an_own_bucket_again_…`).
    s3.create_bucket().bucket("invoices").send().await.unwrap();
    let names: Vec<String> = s3
        .list_buckets()
        .send()
        .await
        .unwrap()
        .buckets()
        .iter()
        .filter_map(|b| b.name().map(str::to_string))
        .collect();
    assert_eq!(names, ["invoices"]);
    s3.head_bucket().bucket("invoices").send().await.unwrap();
    let loc = s3
        .get_bucket_location()
        .bucket("invoices")
        .send()
        .await
        .unwrap();
    assert!(
        loc.location_constraint()
            .is_none_or(|l| l.as_str().is_empty()),
        "us-east-1 is reported empty"
    );
    s3.delete_bucket().bucket("invoices").send().await.unwrap();
    assert!(s3.head_bucket().bucket("invoices").send().await.is_err());
    assert_eq!(
        code(s3.delete_bucket().bucket("invoices").send().await),
        "NoSuchBucket"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_bucket_refuses_objects_and_open_uploads() {
    let gw = Gw::start().await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("full").send().await.unwrap();
    // Several objects: one is enough to refuse, and more must not change the answer.
    for key in ["a", "b", "c"] {
        s3.put_object()
            .bucket("full")
            .key(key)
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .unwrap();
    }
    assert_eq!(
        code(s3.delete_bucket().bucket("full").send().await),
        "BucketNotEmpty"
    );
    for key in ["a", "b", "c"] {
        s3.delete_object()
            .bucket("full")
            .key(key)
            .send()
            .await
            .unwrap();
    }
    s3.create_multipart_upload()
        .bucket("full")
        .key("big")
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(s3.delete_bucket().bucket("full").send().await),
        "BucketNotEmpty"
    );
}

/// An upload whose body is still arriving holds its bucket: DeleteBucket is refused until it
/// ends, and the upload completes whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_bucket_waits_for_uploads_in_flight() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = Gw::start().await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("busy").send().await.unwrap();
    let body = data(256 * 1024, 3);
    let mut sock = raw_put_head(&gw.endpoint(), gw.addr, "/busy/doc.pdf", body.len() as u64).await;
    sock.write_all(&body[..1000]).await.unwrap();
    sock.flush().await.unwrap();
    // Admitted (and counted in the store) before its body is read.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while tenant_usage(gw.admin, "acme").await["buckets"]["busy"]["writes_in_flight"] != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the upload was never admitted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let r = s3.delete_bucket().bucket("busy").send().await;
    let err = r.unwrap_err().into_service_error();
    assert_eq!(err.meta().code(), Some("BucketNotEmpty"));
    let refused = err.meta().message().unwrap_or("").to_string();
    assert!(refused.contains("in progress"), "{refused}");
    sock.write_all(&body[1000..]).await.unwrap();
    let mut head = [0u8; 12];
    sock.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    let got = s3
        .get_object()
        .bucket("busy")
        .key("doc.pdf")
        .send()
        .await
        .unwrap();
    assert_eq!(body_of(got).await, body);
    s3.delete_object()
        .bucket("busy")
        .key("doc.pdf")
        .send()
        .await
        .unwrap();
    s3.delete_bucket().bucket("busy").send().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_bucket_names_and_location_constraints() {
    let gw = Gw::start().await;
    let s3 = gw.acme();
    for bad in ["UPPER", "a", "under_score", "192.168.1.1", "-dash"] {
        assert_eq!(
            code(s3.create_bucket().bucket(bad).send().await),
            "InvalidBucketName",
            "{bad}"
        );
    }
    let cfg = CreateBucketConfiguration::builder()
        .location_constraint(BucketLocationConstraint::EuWest1)
        .build();
    assert_eq!(
        code(
            s3.create_bucket()
                .bucket("elsewhere")
                .create_bucket_configuration(cfg)
                .send()
                .await
        ),
        "InvalidLocationConstraint"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tenants_own_the_same_bucket_name_and_never_see_each_other() {
    let gw = Gw::start().await;
    let (acme, globex) = (gw.acme(), gw.client(GLOBEX));
    acme.create_bucket()
        .bucket("invoices")
        .send()
        .await
        .unwrap();
    // Globex cannot see acme's bucket at all...
    assert_eq!(
        code(globex.list_objects_v2().bucket("invoices").send().await),
        "NoSuchBucket"
    );
    assert_eq!(
        code(globex.get_object().bucket("invoices").key("x").send().await),
        "NoSuchBucket"
    );
    assert!(
        globex
            .list_buckets()
            .send()
            .await
            .unwrap()
            .buckets()
            .is_empty()
    );
    // ...and can create its own with the same name.
    globex
        .create_bucket()
        .bucket("invoices")
        .send()
        .await
        .unwrap();
    acme.put_object()
        .bucket("invoices")
        .key("2024/1.pdf")
        .body(ByteStream::from_static(b"acme"))
        .send()
        .await
        .unwrap();
    globex
        .put_object()
        .bucket("invoices")
        .key("2024/1.pdf")
        .body(ByteStream::from_static(b"globex"))
        .send()
        .await
        .unwrap();
    let a = body_of(
        acme.get_object()
            .bucket("invoices")
            .key("2024/1.pdf")
            .send()
            .await
            .unwrap(),
    )
    .await;
    let g = body_of(
        globex
            .get_object()
            .bucket("invoices")
            .key("2024/1.pdf")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((a.as_slice(), g.as_slice()), (&b"acme"[..], &b"globex"[..]));
    // Uploads are per tenant too.
    acme.create_multipart_upload()
        .bucket("invoices")
        .key("secret")
        .send()
        .await
        .unwrap();
    let g_uploads = globex
        .list_multipart_uploads()
        .bucket("invoices")
        .send()
        .await
        .unwrap();
    assert!(g_uploads.uploads().is_empty());
    // Deleting globex's copy leaves acme's.
    globex
        .delete_object()
        .bucket("invoices")
        .key("2024/1.pdf")
        .send()
        .await
        .unwrap();
    acme.head_object()
        .bucket("invoices")
        .key("2024/1.pdf")
        .send()
        .await
        .unwrap();
    // A copy cannot reach across tenants: the source bucket resolves in the caller's tenant.
    globex
        .delete_bucket()
        .bucket("invoices")
        .send()
        .await
        .unwrap();
    globex.create_bucket().bucket("mine").send().await.unwrap();
    assert_eq!(
        code(
            globex
                .copy_object()
                .bucket("mine")
                .key("stolen")
                .copy_source("invoices/2024/1.pdf")
                .send()
                .await
        ),
        "NoSuchBucket"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versioning_probes_answer_like_an_unversioned_bucket() {
    let gw = Gw::start().await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("plain").send().await.unwrap();
    s3.put_object()
        .bucket("plain")
        .key("k")
        .body(ByteStream::from_static(b"v"))
        .send()
        .await
        .unwrap();
    let v = s3
        .get_bucket_versioning()
        .bucket("plain")
        .send()
        .await
        .unwrap();
    assert!(v.status().is_none());
    let versions = s3
        .list_object_versions()
        .bucket("plain")
        .send()
        .await
        .unwrap();
    let vs = versions.versions();
    assert_eq!(vs.len(), 1);
    assert_eq!(vs[0].version_id(), Some("null"));
    assert_eq!(vs[0].is_latest(), Some(true));
    // Deleting version "null" deletes the object, as cleanup scripts expect.
    s3.delete_object()
        .bucket("plain")
        .key("k")
        .version_id("null")
        .send()
        .await
        .unwrap();
    assert!(
        s3.list_object_versions()
            .bucket("plain")
            .send()
            .await
            .unwrap()
            .versions()
            .is_empty()
    );
}
