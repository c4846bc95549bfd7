//! An S3 load generator. It drives any S3 endpoint with aws-sdk-s3 (the client real users run)
//! and reports throughput and latency percentiles. Every PUT carries fresh bytes: a per-worker
//! random buffer whose first 16 bytes are unique per request, so no content-hash cache (clamd's,
//! a dedup layer) can serve a repeat.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use serde::Serialize;

/// Where to send load.
#[derive(Debug, Clone)]
pub struct Target {
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    Put,
    Get,
    /// 80 % GET, 20 % PUT.
    Mixed,
    /// One op = a full listing of the `list/` prefix, 1000 keys per page.
    List,
    Head,
    /// One op = create, parts of `part_size`, complete.
    Multipart,
    /// Not S3: one op = the body sent straight to clamd with `INSTREAM` (the endpoint is its
    /// `host:port`), for the raw scanner rate that the scanned-PUT benchmark is compared with.
    Instream,
}

#[derive(Debug, Clone)]
pub struct Spec {
    pub workload: Workload,
    pub bucket: String,
    pub size: u64,
    pub concurrency: usize,
    /// Stop after this long...
    pub duration: Option<Duration>,
    /// ...or after this many operations (whichever comes first).
    pub ops: Option<u64>,
    /// Keys under `list/` for the LIST workload.
    pub list_keys: usize,
    /// LIST: the keys are spread over this many common prefixes (`list/<group>/<key>`); 0:
    /// all directly under `list/`.
    pub list_prefixes: usize,
    /// LIST: list with the delimiter `/` (one op then counts keys and common prefixes).
    pub delimiter: bool,
    pub part_size: u64,
}

/// The result of one run; `Serialize`d as the JSON line scripts read.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub workload: Workload,
    pub size: u64,
    pub concurrency: usize,
    pub ops: u64,
    pub errors: u64,
    pub secs: f64,
    pub ops_per_sec: f64,
    pub mib_per_sec: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

pub fn client(t: &Target) -> Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version_latest()
        .region(Region::new(t.region.clone()))
        .endpoint_url(&t.endpoint)
        .credentials_provider(Credentials::new(
            &t.access_key,
            &t.secret_key,
            None,
            None,
            "loadgen",
        ))
        .force_path_style(true)
        .build();
    Client::from_conf(conf)
}

/// xorshift64*: fast, and good enough to defeat compression and dedup.
fn fill_random(buf: &mut [u8], mut seed: u64) {
    seed |= 1;
    for chunk in buf.chunks_mut(8) {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        let v = seed.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

/// A worker's payload source: one random buffer, made unique per request.
struct Payload {
    buf: Vec<u8>,
    nonce: u64,
}

impl Payload {
    fn new(size: u64, worker: u64) -> Self {
        let mut buf = vec![0u8; size as usize];
        let seed = worker.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ now_nanos();
        fill_random(&mut buf, seed);
        Self { buf, nonce: seed }
    }

    fn next(&mut self) -> Bytes {
        self.nonce = self.nonce.wrapping_add(1);
        let stamp = [self.nonce.to_le_bytes(), now_nanos().to_le_bytes()].concat();
        let n = stamp.len().min(self.buf.len());
        self.buf[..n].copy_from_slice(&stamp[..n]);
        Bytes::copy_from_slice(&self.buf)
    }
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

type Error = Box<dyn std::error::Error + Send + Sync>;

fn err<E: std::fmt::Debug>(e: E) -> Error {
    format!("{e:?}").into()
}

/// Objects the read workloads cycle through.
fn pool_key(i: u64) -> String {
    format!("pool/{i:06}")
}

const POOL: u64 = 64;

/// One `INSTREAM` of `body` to clamd at `addr`, in 64 KiB frames; a clean verdict is the only
/// success.
async fn instream(addr: &str, body: &[u8]) -> Result<(), Error> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    s.write_all(b"zINSTREAM\0").await?;
    for frame in body.chunks(64 * 1024) {
        s.write_all(&(frame.len() as u32).to_be_bytes()).await?;
        s.write_all(frame).await?;
    }
    s.write_all(&[0; 4]).await?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).await?;
    match String::from_utf8_lossy(&reply).trim_end_matches(['\0', '\n']) {
        "stream: OK" => Ok(()),
        r => Err(format!("clamd replied {r:?}").into()),
    }
}

/// The last pool object exists with the run's size (the pool is written in order, so the rest do).
async fn pool_ready(c: &Client, spec: &Spec) -> bool {
    let head = c
        .head_object()
        .bucket(&spec.bucket)
        .key(pool_key(POOL - 1))
        .send()
        .await;
    matches!(head, Ok(h) if h.content_length() == Some(spec.size as i64))
}

async fn prepare(c: &Client, spec: &Spec) -> Result<(), Error> {
    if spec.workload == Workload::Instream {
        return Ok(());
    }
    match c.create_bucket().bucket(&spec.bucket).send().await {
        Ok(_) => {}
        Err(e) => {
            let code = aws_sdk_s3::error::ProvideErrorMetadata::code(&e).unwrap_or("");
            if !matches!(code, "BucketAlreadyOwnedByYou" | "BucketAlreadyExists") {
                return Err(err(e));
            }
        }
    }
    let need_pool = matches!(
        spec.workload,
        Workload::Get | Workload::Head | Workload::Mixed
    );
    // A pool left by an earlier run against the same bucket is reused: re-uploading 64 objects
    // of 64 MiB before every run costs more than the run and churns the page cache.
    if need_pool && !pool_ready(c, spec).await {
        let mut p = Payload::new(spec.size, 999);
        for i in 0..POOL {
            c.put_object()
                .bucket(&spec.bucket)
                .key(pool_key(i))
                .body(ByteStream::from(p.next()))
                .send()
                .await
                .map_err(err)?;
        }
    }
    if spec.workload == Workload::List {
        let have = c
            .list_objects_v2()
            .bucket(&spec.bucket)
            .prefix("list/")
            .max_keys(1000)
            .send()
            .await
            .map_err(err)?
            .key_count()
            .unwrap_or(0);
        if have == 0 {
            let next = Arc::new(AtomicU64::new(0));
            let mut tasks = tokio::task::JoinSet::new();
            for _ in 0..32 {
                let (c, next, bucket, total, prefixes) = (
                    c.clone(),
                    next.clone(),
                    spec.bucket.clone(),
                    spec.list_keys as u64,
                    spec.list_prefixes as u64,
                );
                tasks.spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= total {
                            return Ok::<_, Error>(());
                        }
                        c.put_object()
                            .bucket(&bucket)
                            .key(list_key(i, prefixes))
                            .body(ByteStream::from_static(b""))
                            .send()
                            .await
                            .map_err(err)?;
                    }
                });
            }
            while let Some(r) = tasks.join_next().await {
                r.map_err(err)??;
            }
        }
    }
    Ok(())
}

/// The LIST workload's `i`th key: under one of `prefixes` groups, or directly under `list/`.
fn list_key(i: u64, prefixes: u64) -> String {
    if prefixes == 0 {
        format!("list/{i:08}")
    } else {
        format!("list/{:08}/{i:08}", i % prefixes)
    }
}

async fn one_op(
    c: &Client,
    endpoint: &str,
    spec: &Spec,
    payload: &mut Payload,
    n: u64,
) -> Result<u64, Error> {
    let b = &spec.bucket;
    let workload = match spec.workload {
        // Deterministic 80/20 split over the op sequence.
        Workload::Mixed if n % 5 == 4 => Workload::Put,
        Workload::Mixed => Workload::Get,
        w => w,
    };
    match workload {
        Workload::Instream => {
            let body = payload.next();
            instream(endpoint, &body).await?;
            Ok(body.len() as u64)
        }
        Workload::Put => {
            let body = payload.next();
            let len = body.len() as u64;
            c.put_object()
                .bucket(b)
                .key(format!("put/{n:010}"))
                .body(ByteStream::from(body))
                .send()
                .await
                .map_err(err)?;
            Ok(len)
        }
        Workload::Get => {
            let out = c
                .get_object()
                .bucket(b)
                .key(pool_key(n % POOL))
                .send()
                .await
                .map_err(err)?;
            let mut body = out.body;
            let mut len = 0u64;
            while let Some(chunk) = body.try_next().await.map_err(err)? {
                len += chunk.len() as u64;
            }
            Ok(len)
        }
        Workload::Head => {
            c.head_object()
                .bucket(b)
                .key(pool_key(n % POOL))
                .send()
                .await
                .map_err(err)?;
            Ok(0)
        }
        Workload::List => {
            let mut token = None;
            let mut keys = 0usize;
            loop {
                let out = c
                    .list_objects_v2()
                    .bucket(b)
                    .prefix("list/")
                    .set_delimiter(spec.delimiter.then(|| "/".to_string()))
                    .max_keys(1000)
                    .set_continuation_token(token)
                    .send()
                    .await
                    .map_err(err)?;
                keys += out.contents().len() + out.common_prefixes().len();
                if out.is_truncated() != Some(true) {
                    break;
                }
                token = out.next_continuation_token().map(str::to_string);
            }
            let expected = if spec.delimiter && spec.list_prefixes > 0 {
                spec.list_prefixes
            } else {
                spec.list_keys
            };
            if keys != expected {
                return Err(format!("listed {keys} keys and prefixes, expected {expected}").into());
            }
            Ok(0)
        }
        Workload::Multipart => {
            let key = format!("mpu/{n:010}");
            let id = c
                .create_multipart_upload()
                .bucket(b)
                .key(&key)
                .send()
                .await
                .map_err(err)?
                .upload_id
                .unwrap_or_default();
            let mut parts = Vec::new();
            let mut left = spec.size;
            let mut pn = 1;
            while left > 0 {
                let len = left.min(spec.part_size);
                let mut body = payload.next();
                body.truncate(len as usize);
                let r = c
                    .upload_part()
                    .bucket(b)
                    .key(&key)
                    .upload_id(&id)
                    .part_number(pn)
                    .body(ByteStream::from(body))
                    .send()
                    .await
                    .map_err(err)?;
                parts.push(
                    CompletedPart::builder()
                        .part_number(pn)
                        .set_e_tag(r.e_tag)
                        .build(),
                );
                left -= len;
                pn += 1;
            }
            let done = CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build();
            c.complete_multipart_upload()
                .bucket(b)
                .key(&key)
                .upload_id(&id)
                .multipart_upload(done)
                .send()
                .await
                .map_err(err)?;
            Ok(spec.size)
        }
        Workload::Mixed => unreachable!("resolved above"),
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// Runs `spec` against `target`. `progress` prints a line per second to stderr.
pub async fn run(target: &Target, spec: &Spec, progress: bool) -> Result<Report, Error> {
    if spec.duration.is_none() && spec.ops.is_none() {
        return Err("set a duration or an op count".into());
    }
    let c = client(target);
    prepare(&c, spec).await?;
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let deadline = spec.duration.map(|d| started + d);
    let part = if spec.workload == Workload::Multipart {
        spec.part_size.min(spec.size)
    } else {
        spec.size
    };
    let payload_size = if matches!(
        spec.workload,
        Workload::Put | Workload::Mixed | Workload::Multipart | Workload::Instream
    ) {
        part
    } else {
        0
    };

    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..spec.concurrency {
        let endpoint = target.endpoint.clone();
        let (c, spec, next, done, bytes, stop) = (
            c.clone(),
            spec.clone(),
            next.clone(),
            done.clone(),
            bytes.clone(),
            stop.clone(),
        );
        tasks.spawn(async move {
            let mut payload = Payload::new(payload_size, w as u64);
            let mut lat = Vec::new();
            let (mut errors, mut first_error) = (0u64, None);
            loop {
                if stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let n = next.fetch_add(1, Ordering::Relaxed);
                if spec.ops.is_some_and(|max| n >= max) {
                    break;
                }
                let t0 = Instant::now();
                match one_op(&c, &endpoint, &spec, &mut payload, n).await {
                    Ok(b) => {
                        lat.push(t0.elapsed().as_micros() as u64);
                        bytes.fetch_add(b, Ordering::Relaxed);
                    }
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| e.to_string());
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            (lat, errors, first_error)
        });
    }
    let ticker = progress.then(|| {
        let (done, stop) = (done.clone(), stop.clone());
        tokio::spawn(async move {
            let mut last = 0;
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let now = done.load(Ordering::Relaxed);
                eprint!("\r  {:>8} ops  {:>8} ops/s   ", now, now - last);
                last = now;
            }
            eprintln!();
        })
    });
    let mut lat = Vec::new();
    let (mut errors, mut first_error) = (0, None);
    while let Some(r) = tasks.join_next().await {
        let (l, e, f) = r.map_err(err)?;
        lat.extend(l);
        errors += e;
        if first_error.is_none() {
            first_error = f;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    if let Some(t) = ticker {
        let _ = t.await;
    }
    lat.sort_unstable();
    let ops = lat.len() as u64;
    Ok(Report {
        workload: spec.workload,
        size: spec.size,
        concurrency: spec.concurrency,
        ops,
        errors,
        secs,
        ops_per_sec: ops as f64 / secs,
        mib_per_sec: bytes.load(Ordering::Relaxed) as f64 / secs / 1048576.0,
        p50_ms: percentile(&lat, 0.50),
        p90_ms: percentile(&lat, 0.90),
        p99_ms: percentile(&lat, 0.99),
        max_ms: lat.last().map_or(0.0, |&m| m as f64 / 1000.0),
        first_error,
    })
}

/// Parses sizes like `4KiB`, `1MiB`, `64MiB`, `1024`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = [
        ("GiB", 1u64 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
        ("G", 1 << 30),
        ("M", 1 << 20),
        ("K", 1 << 10),
    ]
    .iter()
    .find_map(|(suf, m)| s.strip_suffix(suf).map(|n| (n, *m)))
    .unwrap_or((s, 1));
    num.trim()
        .parse::<u64>()
        .map(|n| n * mult)
        .map_err(|_| format!("invalid size {s:?}"))
}
