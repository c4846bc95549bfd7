//! The metadata engine failing under a running gateway: its PostgreSQL stopped at once (as in a
//! crash) and started again. The client gets a precise, retryable error, nothing half-written
//! becomes visible, nothing stays reserved, and the gateway serves again once the database is
//! back, without a restart.

use std::process::Command;
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;

use crate::harness::*;

/// A PostgreSQL cluster of the test's own (the suite's shared one must stay up for the others),
/// from scripts/pg.sh.
struct Cluster {
    url: String,
    dir: String,
}

impl Cluster {
    fn start() -> Self {
        let out = Command::new("bash")
            .arg("-c")
            .arg(r#"source scripts/pg.sh 2>/dev/null && echo "$PORTCULLIS_TEST_PG $PORTCULLIS_PG_DIR""#)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8(out.stdout).unwrap();
        let (admin, dir) = line.trim().split_once(' ').unwrap();
        Self {
            url: create_database(admin),
            dir: dir.to_string(),
        }
    }

    fn script(&self, name: &str) {
        let s = Command::new("bash")
            .arg(format!("{}/{name}", self.dir))
            .output()
            .unwrap();
        assert!(
            s.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&s.stderr)
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(format!("{}/stop.sh", self.dir))
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_database_is_a_retryable_error_and_the_gateway_recovers_with_it() {
    let pg = Cluster::start();
    let meta = format!(
        "[meta]\nengine = \"postgres\"\nurl = \"{}\"\npool_size = 4\n",
        pg.url
    );
    let gw = Gw::start_setup(&Setup {
        meta: &meta,
        ..Default::default()
    })
    .await;
    let s3 = gw.acme();
    s3.create_bucket().bucket("db-down").send().await.unwrap();
    let put = |key: &'static str, body: &'static [u8]| {
        s3.put_object()
            .bucket("db-down")
            .key(key)
            .body(ByteStream::from_static(body))
            .send()
    };
    put("before", b"kept").await.unwrap();

    pg.script("stop.sh");
    // Writes and reads alike: 503 ServiceUnavailable (SDKs retry it), whatever the request
    // needed first from the index (the access key, the bucket, the commit).
    let started = Instant::now();
    assert_eq!(code(put("during", b"lost").await), "ServiceUnavailable");
    assert_eq!(
        code(s3.get_object().bucket("db-down").key("before").send().await),
        "ServiceUnavailable"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the errors came at once, not after the pool's wait: {:?}",
        started.elapsed()
    );

    let health = |code: u16| async move {
        let r = reqwest::Client::new()
            .get(format!("http://{}/health", gw.admin))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), code);
        r.json::<serde_json::Value>().await.unwrap()
    };
    let h = health(503).await;
    assert_eq!(h["meta"]["ok"], false, "{h}");
    assert!(
        !h.to_string().contains(&pg.url),
        "the URL stays out of /health"
    );

    pg.script("start.sh");
    let deadline = Instant::now() + Duration::from_secs(20);
    while put("after", b"back").await.is_err() {
        assert!(Instant::now() < deadline, "the gateway did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let listed: Vec<String> = s3
        .list_objects_v2()
        .bucket("db-down")
        .send()
        .await
        .unwrap()
        .contents()
        .iter()
        .filter_map(|o| o.key().map(str::to_string))
        .collect();
    assert_eq!(
        listed,
        ["after", "before"],
        "the refused write left no object"
    );
    let got = s3
        .get_object()
        .bucket("db-down")
        .key("before")
        .send()
        .await
        .unwrap();
    assert_eq!(body_of(got).await, b"kept");
    assert_eq!(health(200).await["meta"]["engine"], "postgres");
    // Nothing reserved or charged for the refused write, and its blob is gone.
    let usage = idle_usage(gw.admin, "acme").await;
    assert_eq!(usage["usage"]["objects"], 2, "{usage}");
    let blobs = gw.dir.path().join("blobs");
    eventually("only the two committed blobs remain", || {
        crate::objects::walk(&blobs) == 2
    })
    .await;
}
