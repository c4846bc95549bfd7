//! Real storage services for the backend tests, started and stopped by the tests themselves:
//! moto and the GCS emulator (from the project venv), Azurite (from .ci/tools), and s3s-fs
//! in-process (it verifies SigV4), and clamd with the offline EICAR signature
//! (`.ci/tools/clamav/db`). `scripts/install-clients.sh` installs them.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's publicly documented development key.
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
pub const S3FS_KEY: (&str, &str) = ("S3FSBACKENDKEY", "s3fs-backend-secret");
/// The bucket / container every remote backend test writes into.
pub const CONTAINER: &str = "pc-blobs";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A TCP port claimed for one service for as long as the claim lives. A port picked by binding
/// `:0` and released is free only until someone else binds it, and nextest runs every test in a
/// process of its own: two tests could start their services on one port. A claim takes ports
/// from 20000–29999, below the kernel's ephemeral range (no `:0` bind or outgoing connection
/// is given one), and holds an exclusive lock on a file per port while it lives; the lock goes
/// with the process, however it ends. A port another program holds is skipped.
pub struct PortClaim {
    pub port: u16,
    _lock: std::fs::File,
}

pub fn claim_port() -> PortClaim {
    let dir = std::env::temp_dir().join("portcullis-test-ports");
    std::fs::create_dir_all(&dir).unwrap();
    let start = std::process::id() as usize * 7919;
    for i in 0..10_000 {
        let port = 20_000 + ((start + i) % 10_000) as u16;
        let lock = std::fs::File::create(dir.join(port.to_string())).unwrap();
        if lock.try_lock().is_ok() && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return PortClaim { port, _lock: lock };
        }
    }
    panic!("no port left to claim in 20000-29999");
}

/// Which real service a backend test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Local,
    S3sFs,
    Moto,
    Azurite,
    GcsEmulator,
    Clamd,
}

/// The standard EICAR test string: every scanner reports it, and it is harmless.
pub const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
/// How clamd names it with the project's signature database.
pub const EICAR_NAME: &str = "Eicar-Test-Signature.UNOFFICIAL";

/// A running storage service. Dropping it stops it.
pub struct Service {
    pub kind: Kind,
    pub port: u16,
    /// Held for the service's life: relaunches reuse the port, no other test takes it.
    _claim: PortClaim,
    child: Option<Child>,
    /// s3s-fs runs in-process: its serving task, and the directory it serves.
    task: Option<tokio::task::JoinHandle<()>>,
    pub dir: tempfile::TempDir,
}

impl Service {
    pub async fn start(kind: Kind) -> Self {
        let claim = claim_port();
        let mut s = Self {
            kind,
            port: claim.port,
            _claim: claim,
            child: None,
            task: None,
            dir: tempfile::tempdir().unwrap(),
        };
        s.launch().await;
        s
    }

    /// Starts (or restarts, on the same port) the service and prepares the container.
    pub async fn launch(&mut self) {
        let port = self.port.to_string();
        let venv = root().join(".venv/bin");
        let spawn = |cmd: &mut Command| {
            cmd.stdout(Stdio::null())
                .stderr(if std::env::var_os("PC_SERVICE_LOGS").is_some() {
                    Stdio::inherit()
                } else {
                    Stdio::null()
                })
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("starting {:?}: {e} (run scripts/install-clients.sh)", cmd)
                })
        };
        match self.kind {
            Kind::Local => return,
            Kind::S3sFs => {
                std::fs::create_dir_all(self.dir.path().join(CONTAINER)).unwrap();
                self.task = Some(serve_s3s_fs(self.dir.path(), self.port).await);
            }
            Kind::Moto => {
                self.child = Some(spawn(Command::new(venv.join("moto_server")).args([
                    "-H",
                    "127.0.0.1",
                    "-p",
                    &port,
                ])));
            }
            Kind::Azurite => {
                self.child = Some(spawn(
                    Command::new(root().join(".ci/tools/azurite/node_modules/.bin/azurite-blob"))
                        .args([
                            "--blobHost",
                            "127.0.0.1",
                            "--blobPort",
                            &port,
                            "--inMemoryPersistence",
                            "--skipApiVersionCheck",
                            "--loose",
                            "--disableTelemetry",
                        ])
                        .current_dir(self.dir.path()),
                ));
            }
            Kind::Clamd => {
                let conf = self.dir.path().join("clamd.conf");
                std::fs::write(
                    &conf,
                    format!(
                        "DatabaseDirectory {db}\nTCPSocket {port}\nTCPAddr 127.0.0.1\nForeground yes\n\
                         StreamMaxLength 64M\nMaxFileSize 64M\nMaxScanSize 64M\n\
                         TemporaryDirectory {tmp}\n",
                        db = root().join(".ci/tools/clamav/db").display(),
                        tmp = self.dir.path().display(),
                    ),
                )
                .unwrap();
                self.child = Some(spawn(
                    Command::new("/usr/sbin/clamd")
                        .arg(format!("--config-file={}", conf.display())),
                ));
            }
            Kind::GcsEmulator => {
                self.child = Some(spawn(Command::new(venv.join("gcp-storage-emulator")).args(
                    [
                        "start",
                        "--host",
                        "127.0.0.1",
                        "--port",
                        &port,
                        "--in-memory",
                        "--default-bucket",
                        CONTAINER,
                    ],
                )));
            }
        }
        self.wait_ready().await;
        match self.kind {
            Kind::Moto => {
                crate::harness::client(&self.endpoint(), ("moto", "moto-secret"))
                    .create_bucket()
                    .bucket(CONTAINER)
                    .send()
                    .await
                    .unwrap();
            }
            Kind::Azurite => {
                let conn = format!(
                    "DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};BlobEndpoint={}/{AZURITE_ACCOUNT};",
                    self.endpoint()
                );
                let script = format!(
                    "from azure.storage.blob import BlobServiceClient as B\nB.from_connection_string({conn:?}).create_container({CONTAINER:?})"
                );
                let out = Command::new(venv.join("python"))
                    .args(["-c", &script])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "creating the Azurite container: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            _ => {}
        }
    }

    async fn wait_ready(&mut self) {
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        for _ in 0..300 {
            if let Some(c) = self.child.as_mut()
                && let Some(st) = c.try_wait().unwrap()
            {
                panic!("{:?} exited at start: {st}", self.kind);
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{:?} did not listen on {addr} within 15 s", self.kind);
    }

    /// Kills the service abruptly (SIGKILL, or aborting the in-process server).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the service: it keeps its socket, accepts
    /// connections into the backlog, and answers nothing — a hung server, not a dead one.
    pub fn freeze(&self, frozen: bool) {
        let pid = self
            .child
            .as_ref()
            .expect("a child process")
            .id()
            .to_string();
        let sig = if frozen { "-STOP" } else { "-CONT" };
        let st = Command::new("kill").args([sig, &pid]).status().unwrap();
        assert!(st.success());
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The `[backends.<name>]` table that points Portcullis at this service.
    pub fn backend_toml(&self, name: &str, extra: &str) -> String {
        let ep = self.endpoint();
        let body = match self.kind {
            Kind::Local => "type = \"local\"\n".to_string(),
            Kind::S3sFs => format!(
                "type = \"s3\"\nendpoint = \"{ep}\"\nbucket = \"{CONTAINER}\"\naccess_key = \"{}\"\nsecret_key = \"{}\"\n",
                S3FS_KEY.0, S3FS_KEY.1
            ),
            Kind::Moto => format!(
                "type = \"s3\"\nendpoint = \"{ep}\"\nbucket = \"{CONTAINER}\"\naccess_key = \"moto\"\nsecret_key = \"moto-secret\"\n"
            ),
            Kind::Azurite => format!(
                "type = \"azure\"\nendpoint = \"{ep}/{AZURITE_ACCOUNT}\"\naccount = \"{AZURITE_ACCOUNT}\"\naccount_key = \"{AZURITE_KEY}\"\ncontainer = \"{CONTAINER}\"\n"
            ),
            Kind::GcsEmulator => {
                format!("type = \"gcs\"\nendpoint = \"{ep}\"\nbucket = \"{CONTAINER}\"\n")
            }
            Kind::Clamd => panic!("clamd is a scanner, not a backend: use scanner_toml"),
        };
        format!("[backends.{name}]\n{body}timeout_secs = 5\nretries = 1\n{extra}\n")
    }
}

impl Service {
    /// The `[scanner]` table that points Portcullis at this clamd.
    pub fn scanner_toml(&self, extra: &str) -> String {
        format!(
            "[scanner]\naddress = \"127.0.0.1:{}\"\ntimeout_secs = 10\nretry_secs = 3600\n{extra}\n",
            self.port
        )
    }

    /// A container SAS token for Azurite (read, write, delete, list), made by the Azure SDK.
    pub fn azurite_sas(&self) -> String {
        let script = format!(
            "import datetime as d\nfrom azure.storage.blob import generate_container_sas as g, ContainerSasPermissions as P\nprint(g({AZURITE_ACCOUNT:?}, {CONTAINER:?}, account_key={AZURITE_KEY:?}, permission=P(read=True, write=True, delete=True, list=True), expiry=d.datetime.now(d.timezone.utc) + d.timedelta(hours=1)))"
        );
        let out = Command::new(root().join(".venv/bin/python"))
            .args(["-c", &script])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// s3s-fs on `dir`, checking SigV4 with [`S3FS_KEY`], on 127.0.0.1:`port`.
async fn serve_s3s_fs(dir: &Path, port: u16) -> tokio::task::JoinHandle<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let fs = s3s_fs::FileSystem::new(dir).unwrap();
    let mut b = s3s::service::S3ServiceBuilder::new(fs);
    b.set_auth(s3s::auth::SimpleAuth::from_single(S3FS_KEY.0, S3FS_KEY.1));
    let service = b.build();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move {
        let http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        // Connections live in a JoinSet owned by this task, so aborting it (a "kill") also
        // drops every open connection mid-transfer.
        let mut conns = tokio::task::JoinSet::new();
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                continue;
            };
            let (http, service) = (http.clone(), service.clone());
            conns.spawn(async move {
                let _ = http.serve_connection(TokioIo::new(sock), service).await;
            });
        }
    })
}
