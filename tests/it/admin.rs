//! The admin API: health, tenants and keys at run time, token protection.

use aws_sdk_s3::primitives::ByteStream;
use serde_json::{Value, json};

use crate::harness::*;

pub(crate) async fn call(
    gw: &Gw,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, format!("http://{}{path}", gw.admin));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_needs_no_token_but_everything_else_does() {
    let gw = Gw::start().await;
    let (s, v) = call(&gw, reqwest::Method::GET, "/health", None, None).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("ok")));
    assert_eq!(
        call(&gw, reqwest::Method::GET, "/tenants", None, None)
            .await
            .0,
        401
    );
    assert_eq!(
        call(
            &gw,
            reqwest::Method::GET,
            "/tenants",
            Some("wrong-token-wrong-token"),
            None
        )
        .await
        .0,
        401
    );
    let (s, v) = call(
        &gw,
        reqwest::Method::GET,
        "/tenants",
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let ids: Vec<&str> = v["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["acme", "globex"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_and_keys_are_managed_without_a_restart() {
    let gw = Gw::start().await;
    let t = Some(ADMIN_TOKEN);
    let (s, _) = call(
        &gw,
        reqwest::Method::POST,
        "/tenants",
        t,
        Some(json!({"id": "initech", "display_name": "Initech"})),
    )
    .await;
    assert_eq!(s, 201);
    assert_eq!(
        call(
            &gw,
            reqwest::Method::POST,
            "/tenants",
            t,
            Some(json!({"id": "initech"}))
        )
        .await
        .0,
        409
    );
    assert_eq!(
        call(
            &gw,
            reqwest::Method::POST,
            "/tenants",
            t,
            Some(json!({"id": "Bad Id"}))
        )
        .await
        .0,
        400
    );
    assert_eq!(
        call(
            &gw,
            reqwest::Method::POST,
            "/tenants",
            t,
            Some(json!({"id": "x", "bogus": 1}))
        )
        .await
        .0,
        400
    );

    let (s, key) = call(
        &gw,
        reqwest::Method::POST,
        "/tenants/initech/keys",
        t,
        Some(json!({"user": "peter"})),
    )
    .await;
    assert_eq!(s, 201);
    let (ak, sk) = (
        key["access_key"].as_str().unwrap().to_string(),
        key["secret_key"].as_str().unwrap().to_string(),
    );
    // The new key works at once, in its own tenant.
    let s3 = gw.client((&ak, &sk));
    s3.create_bucket().bucket("tps").send().await.unwrap();
    s3.put_object()
        .bucket("tps")
        .key("report")
        .body(ByteStream::from_static(b"cover sheet"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        code(
            gw.acme()
                .get_object()
                .bucket("tps")
                .key("report")
                .send()
                .await
        ),
        "NoSuchBucket"
    );
    // Listing keys never shows secrets.
    let (_, keys) = call(&gw, reqwest::Method::GET, "/tenants/initech/keys", t, None).await;
    assert!(!keys.to_string().contains(&sk));
    assert_eq!(keys["keys"][0]["access_key"].as_str(), Some(ak.as_str()));
    // A tenant that owns buckets cannot be deleted; a revoked key stops working at once.
    assert_eq!(
        call(&gw, reqwest::Method::DELETE, "/tenants/initech", t, None)
            .await
            .0,
        409
    );
    assert_eq!(
        call(
            &gw,
            reqwest::Method::DELETE,
            &format!("/tenants/initech/keys/{ak}"),
            t,
            None
        )
        .await
        .0,
        200
    );
    assert_eq!(code(s3.list_buckets().send().await), "InvalidAccessKeyId");
    assert_eq!(
        call(
            &gw,
            reqwest::Method::POST,
            "/tenants/nobody/keys",
            t,
            Some(json!({}))
        )
        .await
        .0,
        404
    );
}

/// The background workers run on one runner and report their passes: after a delete the
/// deleter has done a pass (and the blob is gone), and the sweeper passes on its interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_report_their_passes() {
    use aws_sdk_s3::primitives::ByteStream;
    let gw = Gw::start_with("", "interval_secs = 1").await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("w-bkt").send().await.unwrap();
    s3.put_object()
        .bucket("w-bkt")
        .key("k")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap();
    let blobs = gw.dir.path().join("blobs");
    assert_eq!(crate::objects::walk(&blobs), 1);
    s3.delete_object()
        .bucket("w-bkt")
        .key("k")
        .send()
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let workers = loop {
        let (st, v) = call(
            &gw,
            reqwest::Method::GET,
            "/workers",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
        assert_eq!(st, 200, "{v}");
        let w = v["workers"].clone();
        if w["deleter"]["passes"].as_u64() >= Some(1) && w["sweeper"]["passes"].as_u64() >= Some(1)
        {
            break w;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no passes reported: {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(workers["deleter"]["state"], "running", "{workers}");
    assert_eq!(workers["sweeper"]["last_error"], Value::Null, "{workers}");
    assert!(
        workers.get("scan-retries").is_none(),
        "no scanner configured"
    );
    assert_eq!(
        crate::objects::walk(&blobs),
        0,
        "the deleter deleted the freed blob"
    );
    let (_, health) = call(
        &gw,
        reqwest::Method::GET,
        "/health",
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(health["workers"]["deleter"]["state"], "running", "{health}");
    let (st, _) = call(&gw, reqwest::Method::GET, "/workers", None, None).await;
    assert_eq!(st, 401);
}

/// Every commit says who made it: the usage report shows who last changed the tenant's data
/// through this node — the access key with the S3 request's id, the admin API, a worker — and
/// a request that changed nothing does not count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_names_who_last_changed_the_tenant() {
    use aws_sdk_s3::operation::RequestId as _;
    // Every upload counts as abandoned at once; the sweeper runs when the admin API asks.
    let gw = Gw::start_with("", "interval_secs = 3600\nabandoned_upload_secs = 0").await;
    let s3 = gw.acme();
    let last = || async {
        let (st, v) = call(
            &gw,
            reqwest::Method::GET,
            "/tenants/acme/usage",
            Some(ADMIN_TOKEN),
            None,
        )
        .await;
        assert_eq!(st, 200, "{v}");
        v["last_commit"].clone()
    };
    assert_eq!(last().await, Value::Null, "nothing changed yet");
    s3.create_bucket().bucket("who").send().await.unwrap();
    let put = s3
        .put_object()
        .bucket("who")
        .key("k")
        .body(ByteStream::from_static(b"x"))
        .send()
        .await
        .unwrap();
    let by = last().await;
    assert_eq!(by["kind"], "key", "{by}");
    assert_eq!(by["tenant"], "acme", "{by}");
    assert_eq!(by["access_key"], ACME.0, "{by}");
    assert_eq!(by["request_id"], put.request_id().unwrap(), "{by}");
    assert!(by["at_ms"].as_i64().unwrap() > 0, "{by}");
    // A read or a refused write changes nothing, and names nobody.
    s3.get_object().bucket("who").key("k").send().await.unwrap();
    let refused = s3.delete_bucket().bucket("who").send().await;
    assert_eq!(code(refused), "BucketNotEmpty");
    assert_eq!(last().await, by);
    // The admin API.
    let (st, _) = call(
        &gw,
        reqwest::Method::PUT,
        "/tenants/acme/quota",
        Some(ADMIN_TOKEN),
        Some(json!({ "bytes": 1_000_000 })),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(last().await["kind"], "admin");
    // A worker: the sweeper aborting an abandoned upload.
    s3.create_multipart_upload()
        .bucket("who")
        .key("left")
        .send()
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let (st, report) = call(
        &gw,
        reqwest::Method::POST,
        "/sweep",
        Some(ADMIN_TOKEN),
        None,
    )
    .await;
    assert_eq!(
        (st, &report["uploads_aborted"]),
        (200, &json!(1)),
        "{report}"
    );
    let by = last().await;
    assert_eq!(
        (&by["kind"], &by["name"]),
        (&json!("worker"), &json!("sweeper")),
        "{by}"
    );
}
