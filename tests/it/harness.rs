//! Test harness: gateways started in-process on 127.0.0.1:0 with a temp data dir, the real
//! `portcullis` binary as a child process, and aws-sdk-s3 clients for the two dev tenants.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use aws_sdk_s3::config::{Credentials, Region};
use aws_sdk_s3::error::ProvideErrorMetadata;

pub const ACME: (&str, &str) = ("ACMEDEVKEY", "acme-dev-secret");
pub const GLOBEX: (&str, &str) = ("GLOBEXDEVKEY", "globex-dev-secret");
pub const READER: (&str, &str) = ("ACMEREADKEY", "acme-read-secret");
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// Extra lines for each part of the test config.
#[derive(Default, Clone, Copy)]
pub struct Setup<'a> {
    pub server: &'a str,
    pub sweeper: &'a str,
    pub storage: &'a str,
    /// Lines of the acme / globex `[[tenants]]` tables (placement).
    pub acme: &'a str,
    pub globex: &'a str,
    /// Tables appended at the end (`[backends.*]`).
    pub tail: &'a str,
    /// A `[meta]` table; empty: the suite's engine (`PORTCULLIS_TEST_ENGINE`).
    pub meta: &'a str,
}

/// The `[meta]` table of the engine the suite runs on: sled (nothing to add) unless
/// `PORTCULLIS_TEST_ENGINE=postgres`, which gives every gateway a fresh database of its own on
/// the test cluster (scripts/test.sh runs the suite's engine-facing half that way).
fn test_engine_section() -> String {
    match std::env::var("PORTCULLIS_TEST_ENGINE").as_deref() {
        Ok("postgres") => postgres_meta(),
        Ok("sled") | Err(_) => String::new(),
        Ok(other) => panic!("PORTCULLIS_TEST_ENGINE={other}: use sled or postgres"),
    }
}

/// True when the suite runs on PostgreSQL (`PORTCULLIS_TEST_ENGINE=postgres`).
pub fn on_postgres() -> bool {
    std::env::var("PORTCULLIS_TEST_ENGINE").as_deref() == Ok("postgres")
}

/// A `[meta]` table on a fresh database of the test PostgreSQL cluster.
pub fn postgres_meta() -> String {
    format!(
        "[meta]\nengine = \"postgres\"\nurl = \"{}\"\npool_size = 8\n",
        pg_database()
    )
}

/// Creates an empty database on the test cluster (`PORTCULLIS_TEST_PG`, set by scripts/pg.sh);
/// its URL.
pub fn pg_database() -> String {
    let admin = std::env::var("PORTCULLIS_TEST_PG").expect(
        "PORTCULLIS_TEST_PG is not set: run the tests through scripts/test.sh, or `source scripts/pg.sh` first",
    );
    create_database(&admin)
}

/// Creates an empty database on the cluster of the `admin` URL; the new database's URL.
pub fn create_database(admin: &str) -> String {
    let name = format!("it_{}", ulid::Ulid::new().to_string().to_lowercase());
    let out = Command::new("psql")
        .args([admin, "-qc", &format!("CREATE DATABASE {name}")])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "CREATE DATABASE: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (base, _) = admin.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

/// A config for tests: both dev tenants, a read-only acme key, an admin token, the given extras.
pub fn config_setup(data_dir: &Path, s: &Setup) -> String {
    let (extra_server, sweeper) = (s.server, s.sweeper);
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
{extra_server}

[admin]
listen = "127.0.0.1:0"
token = "{ADMIN_TOKEN}"

[storage]
data_dir = "{data}"
{storage}
{meta}

[sweeper]
{sweeper}

[[tenants]]
id = "acme"
{acme}
[[tenants.keys]]
access_key = "{ak}"
secret_key = "{sk}"
[[tenants.keys]]
access_key = "{rk}"
secret_key = "{rs}"
user = "auditor"
role = "read-only"

[[tenants]]
id = "globex"
{globex}
[[tenants.keys]]
access_key = "{gk}"
secret_key = "{gs}"

{tail}
"#,
        storage = s.storage,
        meta = if s.meta.is_empty() {
            test_engine_section()
        } else {
            s.meta.to_string()
        },
        acme = s.acme,
        globex = s.globex,
        tail = s.tail,
        data = data_dir.display(),
        ak = ACME.0,
        sk = ACME.1,
        rk = READER.0,
        rs = READER.1,
        gk = GLOBEX.0,
        gs = GLOBEX.1,
    )
}

/// A gateway running inside the test process.
pub struct Gw {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    /// Keeps the gateway's tasks alive for the test's duration.
    _running: portcullis::Running,
}

impl Gw {
    pub async fn start() -> Self {
        Self::start_with("", "").await
    }

    pub async fn start_with(extra_server: &str, sweeper: &str) -> Self {
        Self::start_setup(&Setup {
            server: extra_server,
            sweeper,
            ..Default::default()
        })
        .await
    }

    pub async fn start_setup(setup: &Setup<'_>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let cfg = portcullis::Config::parse(&config_setup(dir.path(), setup)).unwrap();
        let running = portcullis::start(cfg).await.unwrap();
        Self {
            addr: running.s3_addr,
            admin: running.admin_addr.unwrap(),
            dir,
            _running: running,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits until the deleter is done with every blob released so far.
    pub async fn drain(&self) {
        self._running.drain_deleter().await;
    }

    pub fn client(&self, key: (&str, &str)) -> aws_sdk_s3::Client {
        client(&self.endpoint(), key)
    }

    pub fn acme(&self) -> aws_sdk_s3::Client {
        self.client(ACME)
    }
}

pub fn client(endpoint: &str, (ak, sk): (&str, &str)) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version_latest()
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(ak, sk, None, None, "test"))
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// Completes a multipart upload with `parts` (which must succeed).
pub async fn complete(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    key: &str,
    upload_id: &str,
    parts: Vec<aws_sdk_s3::types::CompletedPart>,
) -> aws_sdk_s3::operation::complete_multipart_upload::CompleteMultipartUploadOutput {
    s3.complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .multipart_upload(
            aws_sdk_s3::types::CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .unwrap()
}

/// The S3 error code of a failed SDK call.
pub fn code<T: std::fmt::Debug, E: ProvideErrorMetadata + std::fmt::Debug>(
    r: Result<T, E>,
) -> String {
    match r {
        Ok(v) => panic!("expected an S3 error, got {v:?}"),
        Err(e) => e
            .code()
            .map(str::to_string)
            .unwrap_or_else(|| format!("{e:?}")),
    }
}

/// The HTTP status of a failed SDK call (for answers without an error body, such as 304).
pub fn status_of<T: std::fmt::Debug, E: std::fmt::Debug>(
    r: Result<T, aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>>,
) -> u16 {
    match r {
        Ok(v) => panic!("expected an error status, got {v:?}"),
        Err(e) => e
            .raw_response()
            .map(|r| r.status().as_u16())
            .unwrap_or_else(|| panic!("no HTTP response: {e:?}")),
    }
}

/// Deterministic pseudo-random bytes (distinct per seed), cheap to generate in bulk.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub async fn body_of(o: aws_sdk_s3::operation::get_object::GetObjectOutput) -> Vec<u8> {
    o.body.collect().await.unwrap().into_bytes().to_vec()
}

/// How [`Proc::launch`] runs the binary.
#[derive(Default)]
pub struct Launch<'a> {
    pub rust_log: Option<&'a str>,
    pub nofile: Option<u32>,
    /// More `serve` arguments (`--data-dir`, `--listen`).
    pub args: &'a [&'a str],
    pub cwd: Option<&'a Path>,
}

/// The real binary, started with a config file of its own, stopped (SIGTERM or SIGKILL) by PID.
pub struct Proc {
    pub child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    /// Every line the process printed so far.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Proc {
    /// Writes a config under `dir` and starts `portcullis serve` on it.
    pub fn start(dir: &Path, sweeper: &str) -> Self {
        Self::start_with(dir, "", sweeper)
    }

    /// [`Proc::start`] with extra `[server]` lines (TLS, domain).
    pub fn start_with(dir: &Path, extra_server: &str, sweeper: &str) -> Self {
        Self::start_setup(
            dir,
            &Setup {
                server: extra_server,
                sweeper,
                ..Default::default()
            },
        )
    }

    pub fn start_setup(dir: &Path, setup: &Setup) -> Self {
        let data = dir.join("data");
        let config = dir.join("portcullis.toml");
        std::fs::write(&config, config_setup(&data, setup)).unwrap();
        Self::start_config(&config)
    }

    pub fn start_config(config: &Path) -> Self {
        Self::launch(config, &Launch::default())
    }

    /// [`Proc::start_config`] with `RUST_LOG` set to `rust_log`, and at most `nofile` open
    /// file descriptors (`prlimit`).
    pub fn start_config_env(config: &Path, rust_log: Option<&str>, nofile: Option<u32>) -> Self {
        Self::launch(
            config,
            &Launch {
                rust_log,
                nofile,
                ..Default::default()
            },
        )
    }

    pub fn launch(config: &Path, how: &Launch) -> Self {
        let bin = env!("CARGO_BIN_EXE_portcullis");
        let mut cmd = match how.nofile {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}")).arg("--").arg(bin);
                c
            }
            None => Command::new(bin),
        };
        cmd.args(["serve", "--config"]).arg(config).args(how.args);
        if let Some(dir) = how.cwd {
            cmd.current_dir(dir);
        }
        match how.rust_log {
            Some(v) => cmd.env("RUST_LOG", v),
            None => cmd.env_remove("RUST_LOG"),
        };
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line.clone());
                if let Some(t) = tx.as_ref()
                    && line.contains("portcullis is serving")
                {
                    let _ = t.send(line.clone());
                    tx = None;
                }
                eprintln!("[portcullis] {line}");
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("portcullis did not report its address within 30 s");
        let field = |name: &str| -> SocketAddr {
            let start = line.find(name).unwrap() + name.len();
            let rest = &line[start..];
            let rest = rest.trim_start_matches("Some(");
            let end = rest.find([' ', ')']).unwrap_or(rest.len());
            rest[..end].parse().unwrap()
        };
        let addr = field("s3_addr=");
        let admin = field("admin_addr=");
        assert!(
            child.try_wait().unwrap().is_none(),
            "portcullis exited at start"
        );
        Self {
            child,
            addr,
            admin,
            log,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(mut self) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "portcullis exited with {status}");
    }

    /// Peak resident memory (VmHWM) of the process, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    /// Resident memory (VmRSS) of the process now, in KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a SigV4-signed request built by hand (for what no SDK would send: malformed XML, a
/// forged trailer). `payload` is the `x-amz-content-sha256` mode.
pub async fn raw(
    endpoint: &str,
    key: (&str, &str),
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
    payload: aws_sigv4::http_request::SignableBody<'_>,
) -> (u16, String) {
    raw_host(
        endpoint,
        None,
        key,
        method,
        path_and_query,
        headers,
        body,
        payload,
    )
    .await
}

/// A SigV4 request with an unsigned payload whose body is streamed in 64 KiB pieces with HTTP
/// chunked transfer, no Content-Length (what SDK and `requests` streams send). Returns the
/// status and the response body.
pub async fn send_streamed(
    endpoint: &str,
    key: (&str, &str),
    method: &str,
    path_and_query: &str,
    body: &[u8],
) -> (u16, String) {
    let headers = sign_headers(
        endpoint,
        None,
        key,
        method,
        path_and_query,
        &[],
        aws_sigv4::http_request::SignableBody::UnsignedPayload,
    );
    let pieces: Vec<Result<bytes::Bytes, std::io::Error>> = body
        .chunks(64 * 1024)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let mut req = reqwest::Client::new()
        .request(
            method.parse().unwrap(),
            format!("{endpoint}{path_and_query}"),
        )
        .body(reqwest::Body::wrap_stream(futures::stream::iter(pieces)));
    for (k, v) in headers {
        if k != "host" {
            req = req.header(k, v);
        }
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

/// SigV4 headers (and the Host header) for a request to `endpoint` + `path_and_query`.
pub fn sign_headers(
    endpoint: &str,
    host: Option<&str>,
    key: (&str, &str),
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    payload: aws_sigv4::http_request::SignableBody<'_>,
) -> Vec<(String, String)> {
    use aws_sigv4::http_request::{
        PayloadChecksumKind, PercentEncodingMode, SignableRequest, SigningSettings,
        UriPathNormalizationMode, sign,
    };
    let url = format!("{endpoint}{path_and_query}");
    let host = host.map_or_else(
        || endpoint.trim_start_matches("http://").to_string(),
        str::to_string,
    );
    let mut all: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    all.push(("host".into(), host));
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    let identity = Credentials::new(key.0, key.1, None, None, "test").into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("s3")
        .time(std::time::SystemTime::now())
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let signable = SignableRequest::new(
        method,
        &url,
        all.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        payload,
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    for (k, v) in instructions.headers() {
        all.push((k.to_string(), v.to_string()));
    }
    all
}

/// [`raw`] with a Host header of its own (virtual-hosted style), sent to `endpoint`'s address.
#[allow(clippy::too_many_arguments)]
pub async fn raw_host(
    endpoint: &str,
    host: Option<&str>,
    key: (&str, &str),
    method: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
    payload: aws_sigv4::http_request::SignableBody<'_>,
) -> (u16, String) {
    let all = sign_headers(
        endpoint,
        host,
        key,
        method,
        path_and_query,
        headers,
        payload,
    );
    let client = reqwest::Client::new();
    let mut req = client
        .request(
            method.parse().unwrap(),
            format!("{endpoint}{path_and_query}"),
        )
        .body(body);
    for (k, v) in &all {
        req = req.header(k, v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

/// Connects to `addr` and sends the head of a SigV4-signed `PUT path` announcing
/// `content_length` bytes; the caller writes (some of) the body on the returned socket. For the
/// failures no client library produces: hanging up mid-body, lying about the length.
pub async fn raw_put_head(
    endpoint: &str,
    addr: SocketAddr,
    path: &str,
    content_length: u64,
) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let len = content_length.to_string();
    let headers = sign_headers(
        endpoint,
        None,
        ACME,
        "PUT",
        path,
        &[("content-length", &len)],
        aws_sigv4::http_request::SignableBody::UnsignedPayload,
    );
    let mut head = format!("PUT {path} HTTP/1.1\r\n");
    for (k, v) in &headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    sock.write_all(head.as_bytes()).await.unwrap();
    sock
}

/// The `<Code>` of an S3 XML error body.
pub fn xml_code(body: &str) -> &str {
    body.split("<Code>")
        .nth(1)
        .and_then(|s| s.split("</Code>").next())
        .unwrap_or("")
}

/// Waits (up to 10 s) until `done` holds: for effects that follow an answer in the background
/// without an event to wait on (a rejected body's blob deleted by its guard).
pub async fn eventually(what: &str, done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The tenant's usage report, verified against the index, once no write of it is in flight
/// (a write whose client went away ends a moment after the client sees the connection close).
pub async fn idle_usage(admin: std::net::SocketAddr, tenant: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let v = tenant_usage(admin, tenant).await;
        if v["writes_in_flight"] == 0 && v["reserved"] == serde_json::json!({}) {
            assert_eq!(v["verified"], serde_json::json!(true), "{v}");
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "reservations outlived their writes: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The tenant's usage report from the admin API, verified against the index.
pub async fn tenant_usage(admin: std::net::SocketAddr, tenant: &str) -> serde_json::Value {
    reqwest::Client::new()
        .get(format!("http://{admin}/tenants/{tenant}/usage?verify=true"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A test CA and a certificate for 127.0.0.1 it signed, made by openssl under `dir` (rustls
/// clients refuse a self-signed CA certificate as a server's own).
pub struct TestCert {
    /// The CA certificate, for clients to trust.
    pub ca: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

impl TestCert {
    pub fn make(dir: &Path) -> Self {
        let script = r#"set -e
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=portcullis-test-ca -keyout ca.key -out ca.pem
openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout key.pem -out leaf.csr
printf 'subjectAltName=IP:127.0.0.1\n' > leaf.ext
openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile leaf.ext -out cert.pem
"#;
        let out = Command::new("sh")
            .args(["-c", script])
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        }
    }
}
