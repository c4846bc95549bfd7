//! Durability with the real binary: restarts keep everything, `kill -9` mid-upload leaves nothing
//! partial and the sweeper reclaims the orphans, and large bodies stream in bounded memory.

use std::path::Path;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use tokio::io::AsyncWriteExt;

use crate::harness::*;
use crate::objects::walk;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_uploads_and_tenants_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let p = Proc::start(dir.path(), "");
    let s3 = client(&p.endpoint(), ACME);
    s3.create_bucket().bucket("keep").send().await.unwrap();
    let body = data(300_000, 5);
    s3.put_object()
        .bucket("keep")
        .key("a/b.bin")
        .metadata("m", "1")
        .body(ByteStream::from(body.clone()))
        .send()
        .await
        .unwrap();
    let id = s3
        .create_multipart_upload()
        .bucket("keep")
        .key("mp")
        .send()
        .await
        .unwrap()
        .upload_id()
        .unwrap()
        .to_string();
    let part = s3
        .upload_part()
        .bucket("keep")
        .key("mp")
        .upload_id(&id)
        .part_number(1)
        .body(ByteStream::from(data(1000, 6)))
        .send()
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let admin = format!("http://{}", p.admin);
    let key: serde_json::Value = http
        .post(format!("{admin}/tenants"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"id": "hooli"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(key["id"], "hooli");
    let key: serde_json::Value = http
        .post(format!("{admin}/tenants/hooli/keys"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"access_key": "HOOLIKEY", "secret_key": "hooli-secret-1"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(key["access_key"], "HOOLIKEY");
    p.stop();

    let p = Proc::start_config(&dir.path().join("portcullis.toml"));
    let s3 = client(&p.endpoint(), ACME);
    let got = s3
        .get_object()
        .bucket("keep")
        .key("a/b.bin")
        .send()
        .await
        .unwrap();
    assert_eq!(got.metadata().unwrap()["m"], "1");
    assert_eq!(body_of(got).await, body);
    let parts = s3
        .list_parts()
        .bucket("keep")
        .key("mp")
        .upload_id(&id)
        .send()
        .await
        .unwrap();
    assert_eq!(parts.parts().len(), 1);
    let done = aws_sdk_s3::types::CompletedMultipartUpload::builder()
        .parts(
            aws_sdk_s3::types::CompletedPart::builder()
                .part_number(1)
                .e_tag(part.e_tag().unwrap())
                .build(),
        )
        .build();
    s3.complete_multipart_upload()
        .bucket("keep")
        .key("mp")
        .upload_id(&id)
        .multipart_upload(done)
        .send()
        .await
        .unwrap();
    let hooli = client(&p.endpoint(), ("HOOLIKEY", "hooli-secret-1"));
    hooli.create_bucket().bucket("keep").send().await.unwrap();
    p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_upload_leaves_nothing_partial_and_the_sweeper_reclaims_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let sweeper = "interval_secs = 1\ngrace_secs = 1";
    let p = Proc::start(dir.path(), sweeper);
    let s3 = client(&p.endpoint(), ACME);
    s3.create_bucket().bucket("crash").send().await.unwrap();
    s3.put_object()
        .bucket("crash")
        .key("kept")
        .body(ByteStream::from(data(10_000, 1)))
        .send()
        .await
        .unwrap();

    // A 64 MiB upload that is a quarter sent when the process dies.
    let mut sock = raw_put_head(&p.endpoint(), p.addr, "/crash/big", 64 * 1024 * 1024).await;
    sock.write_all(&data(16 * 1024 * 1024, 2)).await.unwrap();
    sock.flush().await.unwrap();
    let data_dir = dir.path().join("data");
    for _ in 0..100 {
        if walk(&data_dir.join("tmp")) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        walk(&data_dir.join("tmp")),
        1,
        "the upload is being written"
    );
    p.kill9();
    drop(sock);

    // Stands in for a crash between a blob's last byte and its commit (a window too narrow to
    // hit with kill -9): an unreferenced blob file, made to look old.
    let orphan = data_dir.join("blobs/acme/01ARZ3NDEKTSV4RRFFQ69G5FAV");
    std::fs::write(&orphan, b"orphan").unwrap();

    let p = Proc::start_config(&dir.path().join("portcullis.toml"));
    assert_eq!(
        walk(&data_dir.join("tmp")),
        0,
        "start-up removed the interrupted temporary"
    );
    let s3 = client(&p.endpoint(), ACME);
    assert_eq!(
        code(s3.head_object().bucket("crash").key("big").send().await),
        "NotFound"
    );
    let keys = s3.list_objects_v2().bucket("crash").send().await.unwrap();
    assert_eq!(keys.key_count(), Some(1));
    for _ in 0..100 {
        if !orphan.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !orphan.exists(),
        "the sweeper deleted the unreferenced blob"
    );
    assert_eq!(
        walk(&data_dir.join("blobs")),
        1,
        "the committed object's blob is kept"
    );
    assert_eq!(
        body_of(
            s3.get_object()
                .bucket("crash")
                .key("kept")
                .send()
                .await
                .unwrap()
        )
        .await,
        data(10_000, 1)
    );
    // The killed process's upload no longer holds the bucket: the restarted gateway reaped its
    // previous life at start.
    s3.delete_object()
        .bucket("crash")
        .key("kept")
        .send()
        .await
        .unwrap();
    s3.delete_bucket().bucket("crash").send().await.unwrap();
    p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_in_bounded_memory() {
    // Larger than the 150 MB bound: any buffering of the whole body would fail the test.
    const SIZE: u64 = 256 * 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let p = Proc::start(dir.path(), "");
    let before = p.peak_rss_kib();
    let s3 = client(&p.endpoint(), ACME);
    s3.create_bucket().bucket("big").send().await.unwrap();
    // The body streams from a file: it never exists whole in the test's memory either.
    let file = dir.path().join("src.bin");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        let chunk = data(1024 * 1024, 7);
        for _ in 0..SIZE / (1024 * 1024) {
            f.write_all(&chunk).unwrap();
        }
    }
    s3.put_object()
        .bucket("big")
        .key("blob")
        .body(ByteStream::from_path(&file).await.unwrap())
        .send()
        .await
        .unwrap();
    let got = s3
        .get_object()
        .bucket("big")
        .key("blob")
        .send()
        .await
        .unwrap();
    let mut body = got.body;
    let mut n = 0u64;
    while let Some(chunk) = body.try_next().await.unwrap() {
        n += chunk.len() as u64;
    }
    assert_eq!(n, SIZE);
    let peak = p.peak_rss_kib();
    eprintln!(
        "peak RSS: {} MiB (at start {} MiB)",
        peak / 1024,
        before / 1024
    );
    assert!(
        peak < 150 * 1024,
        "peak RSS {} MiB for a {} MiB object",
        peak / 1024,
        SIZE >> 20
    );
    p.stop();
}

/// Overwrites, deletes, copies and multipart completions, each followed by a `kill -9` just after
/// its acknowledgement or while it runs (with and without `sync`, on the engine the suite runs
/// on): after each restart every listed object reads back whole, as one of the versions written,
/// with the ETag listed, and the recorded usage equals the usage computed from the index. Before
/// the commit seam, the blob a commit freed was deleted before that commit reached disk; the
/// restarted gateway then listed the old version with its bytes gone.
async fn crash_rounds(sync: bool, rounds: u64) {
    use s3s::crypto::Checksum as _;
    let dir = tempfile::tempdir().unwrap();
    let storage = format!("sync = {sync}");
    let mut p = Proc::start_setup(
        dir.path(),
        &Setup {
            storage: &storage,
            ..Default::default()
        },
    );
    client(&p.endpoint(), ACME)
        .create_bucket()
        .bucket("crash")
        .send()
        .await
        .unwrap();
    let mut written: std::collections::HashMap<String, Vec<Vec<u8>>> = Default::default();
    let source = data(123_456, 99);
    client(&p.endpoint(), ACME)
        .put_object()
        .bucket("crash")
        .key("source")
        .body(ByteStream::from(source.clone()))
        .send()
        .await
        .unwrap();
    written.insert("source".into(), vec![source.clone()]);
    let (mut unreadable, mut drifted) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let s3 = client(&p.endpoint(), ACME);
        let key = format!("k{}", round % 3);
        let first = data(200_000 + round as usize, round * 2);
        s3.put_object()
            .bucket("crash")
            .key(&key)
            .body(ByteStream::from(first.clone()))
            .send()
            .await
            .unwrap();
        written.entry(key.clone()).or_default().push(first);
        if !sync && !on_postgres() {
            // Long enough for sled's own timer (500 ms) to write the first version down, so
            // that a change freeing its blob has something on disk to bring back.
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        // The change whose freed blob must survive until it is on disk: an overwrite, a delete,
        // a copy over the key, a multipart completion over it.
        let second = data(150_000 + round as usize, round * 2 + 1);
        written.get_mut(&key).unwrap().push(second.clone());
        written.get_mut(&key).unwrap().push(source.clone());
        let (s3c, keyc) = (s3.clone(), key.clone());
        let change = async move {
            match round % 4 {
                0 => s3c
                    .put_object()
                    .bucket("crash")
                    .key(&keyc)
                    .body(ByteStream::from(second))
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("{e:?}")),
                1 => s3c
                    .delete_object()
                    .bucket("crash")
                    .key(&keyc)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("{e:?}")),
                2 => s3c
                    .copy_object()
                    .bucket("crash")
                    .key(&keyc)
                    .copy_source("crash/source")
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("{e:?}")),
                _ => {
                    let id = s3c
                        .create_multipart_upload()
                        .bucket("crash")
                        .key(&keyc)
                        .send()
                        .await
                        .map_err(|e| format!("{e:?}"))?
                        .upload_id()
                        .unwrap_or_default()
                        .to_string();
                    let part = s3c
                        .upload_part()
                        .bucket("crash")
                        .key(&keyc)
                        .upload_id(&id)
                        .part_number(1)
                        .body(ByteStream::from(second))
                        .send()
                        .await
                        .map_err(|e| format!("{e:?}"))?;
                    let done = aws_sdk_s3::types::CompletedMultipartUpload::builder()
                        .parts(
                            aws_sdk_s3::types::CompletedPart::builder()
                                .part_number(1)
                                .e_tag(part.e_tag().unwrap_or_default())
                                .build(),
                        )
                        .build();
                    s3c.complete_multipart_upload()
                        .bucket("crash")
                        .key(&keyc)
                        .upload_id(&id)
                        .multipart_upload(done)
                        .send()
                        .await
                        .map(|_| ())
                        .map_err(|e| format!("{e:?}"))
                }
            }
        };
        if (round / 4) % 2 == 0 {
            // Just after the acknowledgement.
            change.await.unwrap();
            let wait = 50 + (round * 37) % 200;
            tokio::time::sleep(Duration::from_millis(wait)).await;
        } else {
            // During the request: its outcome may be either version.
            let t = tokio::spawn(change);
            tokio::time::sleep(Duration::from_millis((round * 7) % 30)).await;
            t.abort();
        }
        p.kill9();
        p = Proc::start_config(&dir.path().join("portcullis.toml"));
        let s3 = client(&p.endpoint(), ACME);
        let listed = s3.list_objects_v2().bucket("crash").send().await.unwrap();
        for o in listed.contents() {
            let k = o.key().unwrap().to_string();
            let got = match s3.get_object().bucket("crash").key(&k).send().await {
                Ok(r) => r.body.collect().await.map(|b| b.to_vec()).ok(),
                Err(_) => None,
            };
            let etag = o.e_tag().unwrap().trim_matches('"').to_string();
            // A completed multipart upload's ETag is the MD5 of its parts' MD5s.
            let whole = got.as_ref().is_some_and(|b| {
                written[&k].contains(b)
                    && b.len() as i64 == o.size().unwrap_or(-1)
                    && (etag.contains('-') || hex::encode(s3s::crypto::Md5::checksum(b)) == etag)
            });
            if !whole {
                unreadable.push((round, k, got.map(|b| b.len()), o.size()));
            }
        }
        let usage = tenant_usage(p.admin, "acme").await;
        if usage["verified"] != serde_json::json!(true) {
            drifted.push((round, usage["drift"].clone()));
        }
    }
    assert!(
        drifted.is_empty(),
        "recorded usage differed from the index after a restart (round, drift): {drifted:?}"
    );
    assert!(
        unreadable.is_empty(),
        "listed objects that did not read back whole (round, key, bytes read, size listed): {unreadable:?}"
    );
    p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_keep_their_bytes_across_kill_9_without_sync() {
    crash_rounds(false, 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_keep_their_bytes_across_kill_9_with_sync() {
    crash_rounds(true, 100).await;
}

/// A second gateway on a data directory in use is refused at start, naming the directory: its
/// start-up would delete the first one's temporaries (and, on sled, the store is locked too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_serves_one_gateway_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let p = Proc::start(dir.path(), "");
    let second = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--config"])
        .arg(dir.path().join("portcullis.toml"))
        .output()
        .unwrap();
    assert!(!second.status.success());
    let out = String::from_utf8_lossy(&second.stdout).to_string()
        + &String::from_utf8_lossy(&second.stderr);
    assert!(
        out.contains("in use") || out.contains("lock"),
        "the refusal says why: {out}"
    );
    // The first one is untouched.
    let s3 = client(&p.endpoint(), ACME);
    s3.create_bucket().bucket("still").send().await.unwrap();
    p.stop();
}

/// `serve --data-dir DIR`, started from another working directory with a config that names no
/// data directory: the metadata and the local backend's blobs both go under DIR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_flag_places_meta_and_blobs_together() {
    let dir = tempfile::tempdir().unwrap();
    let (cwd, data) = (dir.path().join("cwd"), dir.path().join("elsewhere"));
    std::fs::create_dir_all(&cwd).unwrap();
    let config = dir.path().join("portcullis.toml");
    let text =
        config_setup(Path::new("/unused"), &Setup::default()).replace("data_dir = \"/unused\"", "");
    std::fs::write(&config, text).unwrap();
    let data_arg = data.display().to_string();
    let p = Proc::launch(
        &config,
        &Launch {
            args: &["--data-dir", &data_arg],
            cwd: Some(&cwd),
            ..Default::default()
        },
    );
    let s3 = client(&p.endpoint(), ACME);
    s3.create_bucket().bucket("here").send().await.unwrap();
    s3.put_object()
        .bucket("here")
        .key("k")
        .body(ByteStream::from_static(b"placed"))
        .send()
        .await
        .unwrap();
    assert_eq!(walk(&data.join("blobs")), 1, "the blob is under --data-dir");
    if !on_postgres() {
        assert!(
            data.join("meta").is_dir(),
            "the embedded store is under --data-dir"
        );
    }
    assert!(
        !cwd.join("data").exists(),
        "nothing under the working directory's ./data"
    );
    p.stop();
}
