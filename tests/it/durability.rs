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

/// The change a writer makes to its key after a PUT, and the state it leaves there.
async fn change(
    s3: aws_sdk_s3::Client,
    key: String,
    op: u64,
    second: Vec<u8>,
) -> Result<(), String> {
    let e = |e: &dyn std::fmt::Debug| format!("{e:?}");
    match op {
        0 => s3
            .put_object()
            .bucket("crash")
            .key(&key)
            .body(ByteStream::from(second))
            .send()
            .await
            .map(|_| ())
            .map_err(|x| e(&x)),
        1 => s3
            .delete_object()
            .bucket("crash")
            .key(&key)
            .send()
            .await
            .map(|_| ())
            .map_err(|x| e(&x)),
        2 => s3
            .copy_object()
            .bucket("crash")
            .key(&key)
            .copy_source("crash/source")
            .send()
            .await
            .map(|_| ())
            .map_err(|x| e(&x)),
        _ => {
            let id = s3
                .create_multipart_upload()
                .bucket("crash")
                .key(&key)
                .send()
                .await
                .map_err(|x| e(&x))?
                .upload_id()
                .unwrap_or_default()
                .to_string();
            let part = s3
                .upload_part()
                .bucket("crash")
                .key(&key)
                .upload_id(&id)
                .part_number(1)
                .body(ByteStream::from(second))
                .send()
                .await
                .map_err(|x| e(&x))?;
            let done = aws_sdk_s3::types::CompletedMultipartUpload::builder()
                .parts(
                    aws_sdk_s3::types::CompletedPart::builder()
                        .part_number(1)
                        .e_tag(part.e_tag().unwrap_or_default())
                        .build(),
                )
                .build();
            s3.complete_multipart_upload()
                .bucket("crash")
                .key(&key)
                .upload_id(&id)
                .multipart_upload(done)
                .send()
                .await
                .map(|_| ())
                .map_err(|x| e(&x))
        }
    }
}

/// Three writers, each owning a key, each round PUT their key and then overwrite, delete, copy
/// over it or complete a multipart upload over it; then `kill -9`, just after every change was
/// acknowledged or while they run (with and without `sync`, on the engine the suite runs on).
/// Each writer records every state it had acknowledged (the bytes, or absent). After each
/// restart every key must hold its last acknowledged state, or the state of the change that was
/// in flight; with `sync = false` an earlier acknowledged state is allowed too (the README's
/// window), a state never written never is. The listing must agree with GET (the keys listed
/// are the keys that read back, with their size and ETag), and the recorded usage with the
/// usage computed from the index. Before the commit seam, the blob a commit freed was deleted
/// before that commit reached disk; the restarted gateway then listed the old version with its
/// bytes gone.
async fn crash_rounds(sync: bool, rounds: u64) {
    use s3s::crypto::Checksum as _;
    const WRITERS: u64 = 3;
    type State = Option<Vec<u8>>;
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
    let source = data(123_456, 99);
    client(&p.endpoint(), ACME)
        .put_object()
        .bucket("crash")
        .key("source")
        .body(ByteStream::from(source.clone()))
        .send()
        .await
        .unwrap();
    // Per key: every state acknowledged so far, the last one current.
    let mut acked: std::collections::BTreeMap<String, Vec<State>> = Default::default();
    acked.insert("source".into(), vec![Some(source.clone())]);
    for w in 0..WRITERS {
        acked.insert(format!("k{w}"), vec![None]);
    }
    let mut wrong = Vec::new();
    let mut drifted = Vec::new();
    for round in 0..rounds {
        let s3 = client(&p.endpoint(), ACME);
        let during = (round / 4) % 2 == 1;
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let key = format!("k{w}");
            let first = data(200_000 + (round * WRITERS + w) as usize, round * 8 + w * 2);
            let second = data(
                150_000 + (round * WRITERS + w) as usize,
                round * 8 + w * 2 + 1,
            );
            let op = (round + w) % 4;
            let after: State = match op {
                1 => None,
                2 => Some(source.clone()),
                _ => Some(second.clone()),
            };
            let s3 = s3.clone();
            let slow_sled = !sync && !on_postgres();
            writers.push((
                key.clone(),
                first.clone(),
                after,
                tokio::spawn(async move {
                    s3.put_object()
                        .bucket("crash")
                        .key(&key)
                        .body(ByteStream::from(first))
                        .send()
                        .await
                        .map_err(|e| format!("{e:?}"))?;
                    if slow_sled {
                        // Long enough for sled's own timer (500 ms) to write the first version
                        // down, so that a change freeing its blob has something on disk to
                        // bring back.
                        tokio::time::sleep(Duration::from_millis(600)).await;
                    }
                    change(s3, key, op, second).await
                }),
            ));
        }
        // The first PUTs are acknowledged before any change begins; wait for them (a change
        // cut short still leaves its PUT acknowledged).
        let mut in_flight: std::collections::BTreeMap<String, State> = Default::default();
        if during {
            tokio::time::sleep(Duration::from_millis(
                if !sync && !on_postgres() { 600 } else { 0 } + (round * 7) % 30 + 40,
            ))
            .await;
        }
        for (key, first, after, t) in writers {
            if during {
                t.abort();
                let finished = t.await;
                // The first PUT may or may not have been acknowledged, the change may or may
                // not have applied: each is a possible state.
                let states = acked.get_mut(&key).unwrap();
                match finished {
                    Ok(Ok(())) => {
                        states.push(Some(first));
                        states.push(after);
                    }
                    _ => {
                        in_flight.insert(key.clone(), Some(first));
                        // Stored as a second possibility below.
                        in_flight.insert(format!("{key}\0after"), after);
                    }
                }
            } else {
                t.await.unwrap().unwrap();
                let states = acked.get_mut(&key).unwrap();
                states.push(Some(first));
                states.push(after);
                let wait = 50 + (round * 37) % 200;
                tokio::time::sleep(Duration::from_millis(wait)).await;
            }
        }
        p.kill9();
        p = Proc::start_config(&dir.path().join("portcullis.toml"));
        let s3 = client(&p.endpoint(), ACME);
        let listed = s3.list_objects_v2().bucket("crash").send().await.unwrap();
        let listed: std::collections::BTreeMap<String, (i64, String)> = listed
            .contents()
            .iter()
            .map(|o| {
                (
                    o.key().unwrap().to_string(),
                    (
                        o.size().unwrap_or(-1),
                        o.e_tag().unwrap().trim_matches('"').to_string(),
                    ),
                )
            })
            .collect();
        for (key, states) in acked.iter_mut() {
            let got: Result<State, String> =
                match s3.get_object().bucket("crash").key(key).send().await {
                    Ok(r) => r
                        .body
                        .collect()
                        .await
                        .map(|b| Some(b.to_vec()))
                        .map_err(|e| format!("{e:?}")),
                    Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => Ok(None),
                    Err(e) => Err(format!("{e:?}")),
                };
            let got = match got {
                Ok(g) => g,
                Err(e) => {
                    wrong.push((round, key.clone(), format!("unreadable: {e}")));
                    continue;
                }
            };
            let last = states.last().unwrap();
            let possible: Vec<&State> =
                [in_flight.get(key), in_flight.get(&format!("{key}\0after"))]
                    .into_iter()
                    .flatten()
                    .collect();
            let allowed =
                &got == last || possible.contains(&&got) || (!sync && states.contains(&got));
            if !allowed {
                wrong.push((
                    round,
                    key.clone(),
                    format!(
                        "holds {:?}, last acknowledged {:?}",
                        got.as_ref().map(Vec::len),
                        last.as_ref().map(Vec::len)
                    ),
                ));
            }
            // The listing says the same.
            match (&got, listed.get(key)) {
                (None, None) => {}
                (Some(b), Some((size, etag)))
                    if b.len() as i64 == *size
                        && (etag.contains('-')
                            || hex::encode(s3s::crypto::Md5::checksum(b)) == *etag) => {}
                (g, l) => wrong.push((
                    round,
                    key.clone(),
                    format!("GET {:?} but listed {l:?}", g.as_ref().map(Vec::len)),
                )),
            }
            // What it holds now is where the next round starts from.
            if &got != last {
                states.push(got);
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
        wrong.is_empty(),
        "keys that did not hold an acknowledged state, or a listing that disagreed with GET (round, key, what): {wrong:?}"
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
