//! Configuration: one TOML file, parsed into raw serde structs that refuse unknown keys, then
//! validated into the typed [`Config`] that is passed explicitly to everything that needs it.
//! Every key is documented in `config/portcullis.toml`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::backend::{AzureAuth, BackendConfig, BackendKind, Placement, Secret};
pub use crate::cluster::ClusterOptions;
pub use crate::jobs::sweeper::SweeperConfig;
use crate::meta::{BucketSettings, DatabaseUrl, Limits, MetaEngine, Policy, Role};
use crate::pace::PaceOptions;
use crate::s3::UploadLimits;
use crate::scanner::{Address, ScannerConfig};
use crate::transport::ConnOptions;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

mod raw {
    use super::*;

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct File {
        #[serde(default)]
        pub server: Server,
        #[serde(default)]
        pub admin: Admin,
        #[serde(default)]
        pub storage: Storage,
        #[serde(default)]
        pub meta: Meta,
        #[serde(default)]
        pub sweeper: Sweeper,
        #[serde(default)]
        pub cluster: Cluster,
        #[serde(default)]
        pub backends: std::collections::BTreeMap<String, Backend>,
        #[serde(default)]
        pub tenants: Vec<Tenant>,
        pub scanner: Option<Scanner>,
        /// The gateway-wide default policy of every bucket.
        pub policy: Option<Policy>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Scanner {
        pub address: Option<String>,
        pub socket: Option<PathBuf>,
        pub timeout_secs: Option<u64>,
        pub max_concurrent: Option<usize>,
        pub max_stream_mb: Option<u64>,
        pub quarantine_backend: Option<String>,
        pub quarantine_container: Option<String>,
        pub quarantine_prefix: Option<String>,
        pub retry_secs: Option<u64>,
    }

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct BucketSettings {
        pub quota_bytes: Option<u64>,
        pub quota_objects: Option<u64>,
        pub policy: Option<Policy>,
    }

    /// One `[backends.<name>]` table. Flat on purpose: `validate` refuses every key that does
    /// not apply to the `type`, with a message naming it.
    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Backend {
        #[serde(rename = "type")]
        pub kind: String,
        #[serde(alias = "bucket")]
        pub container: Option<String>,
        pub path: Option<PathBuf>,
        pub endpoint: Option<String>,
        pub region: Option<String>,
        pub path_style: Option<bool>,
        pub access_key: Option<String>,
        pub secret_key: Option<String>,
        pub secret_key_file: Option<PathBuf>,
        pub account: Option<String>,
        pub account_key: Option<String>,
        pub sas_token: Option<String>,
        pub credentials_file: Option<PathBuf>,
        pub part_size_mb: Option<usize>,
        pub read_batch_kib: Option<usize>,
        pub timeout_secs: Option<u64>,
        pub retries: Option<u32>,
    }

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Server {
        pub listen: Option<String>,
        pub region: Option<String>,
        pub domain: Option<String>,
        pub max_xml_body: Option<usize>,
        pub tls: Option<Tls>,
        pub require_region: Option<bool>,
        pub header_timeout_secs: Option<u64>,
        pub max_connections: Option<usize>,
        pub max_connections_per_ip: Option<usize>,
        pub body_timeout_secs: Option<u64>,
        pub body_min_rate: Option<u64>,
        pub max_uploads_in_flight: Option<usize>,
        pub max_tenant_uploads_in_flight: Option<usize>,
        pub max_open_uploads: Option<usize>,
        pub max_open_parts: Option<usize>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Tls {
        pub cert: PathBuf,
        pub key: PathBuf,
    }

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Admin {
        pub listen: Option<String>,
        pub token: Option<String>,
        pub token_file: Option<PathBuf>,
        pub tls: Option<Tls>,
    }

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Meta {
        pub engine: Option<String>,
        pub url: Option<String>,
        pub url_file: Option<PathBuf>,
        pub pool_size: Option<usize>,
        pub timeout_ms: Option<u64>,
    }

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Storage {
        pub data_dir: Option<PathBuf>,
        pub sync: Option<bool>,
        pub meta_cache_mb: Option<u64>,
        pub default_backend: Option<String>,
    }

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Cluster {
        pub node_id: Option<String>,
        pub heartbeat_ms: Option<u64>,
        pub node_timeout_ms: Option<u64>,
        pub lease_secs: Option<u64>,
        pub fast_reserve_mb: Option<u64>,
    }

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Sweeper {
        pub interval_secs: Option<u64>,
        pub grace_secs: Option<u64>,
        pub abandoned_upload_secs: Option<u64>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Tenant {
        pub id: String,
        pub display_name: Option<String>,
        pub backend: Option<String>,
        pub backend_container: Option<String>,
        pub backend_prefix: Option<String>,
        #[serde(default)]
        pub locations: Vec<String>,
        #[serde(default)]
        pub keys: Vec<Key>,
        pub quota_bytes: Option<u64>,
        pub quota_objects: Option<u64>,
        pub policy: Option<Policy>,
        #[serde(default)]
        pub buckets: std::collections::BTreeMap<String, BucketSettings>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Key {
        pub access_key: String,
        pub secret_key: Option<String>,
        pub secret_key_file: Option<PathBuf>,
        pub user: Option<String>,
        pub role: Option<Role>,
    }

    impl std::fmt::Debug for Key {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Key")
                .field("access_key", &self.access_key)
                .finish_non_exhaustive()
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub region: String,
    /// Base domain for virtual-hosted-style requests (`bucket.domain`); path style always works.
    pub domain: Option<String>,
    pub max_xml_body: usize,
    pub tls: Option<TlsConfig>,
    /// Refuse SigV4 scopes that name another region than `region`.
    pub require_region: bool,
    /// Connection limits and timeouts of each listener (S3 and admin, counted apart).
    pub conn: ConnOptions,
    /// How slowly a request body may arrive.
    pub pace: PaceOptions,
    /// Bounds on uploads in flight and open multipart uploads.
    pub uploads: UploadLimits,
    pub admin: Option<AdminConfig>,
    pub data_dir: PathBuf,
    /// Flush metadata and fsync blobs before a write is acknowledged.
    pub sync: bool,
    /// Bytes of metadata pages sled may keep in memory.
    pub meta_cache_bytes: u64,
    /// Which metadata engine holds the index.
    pub meta: MetaEngine,
    pub sweeper: SweeperConfig,
    /// This node's name and the timings of its membership of the nodes sharing the store.
    pub cluster: ClusterOptions,
    /// Every backend, the implicit `local` one included.
    pub backends: Vec<BackendConfig>,
    /// Where tenants without a placement of their own write.
    pub default_placement: Placement,
    pub tenants: Vec<TenantConfig>,
    /// `None`: nothing is scanned.
    pub scanner: Option<ScannerConfig>,
    /// The gateway-wide default of every bucket's policy.
    pub policy: Policy,
}

/// The example configuration files this repository publishes: every admin token and access key
/// in them is known to anyone, so each is refused off loopback. Read from the files themselves,
/// so an example added with a credential of its own is covered without a second list.
const PUBLISHED: [(&str, &str); 5] = [
    (
        "config/portcullis.toml",
        include_str!("../config/portcullis.toml"),
    ),
    (
        "config/postgres.toml",
        include_str!("../config/postgres.toml"),
    ),
    (
        "config/cluster/node-1.toml",
        include_str!("../config/cluster/node-1.toml"),
    ),
    (
        "config/cluster/node-2.toml",
        include_str!("../config/cluster/node-2.toml"),
    ),
    (
        "config/cluster/node-3.toml",
        include_str!("../config/cluster/node-3.toml"),
    ),
];

/// What the repository publishes: admin tokens and (access key, secret) pairs, with the file
/// each comes from.
#[derive(Debug, Default)]
pub struct Published {
    pub tokens: Vec<(String, &'static str)>,
    pub keys: Vec<(String, String, &'static str)>,
}

pub fn published_credentials() -> Published {
    let mut out = Published::default();
    for (file, text) in PUBLISHED {
        let Ok(v) = text.parse::<toml::Table>() else {
            continue;
        };
        if let Some(t) = v
            .get("admin")
            .and_then(|a| a.get("token"))
            .and_then(|t| t.as_str())
        {
            out.tokens.push((t.to_string(), file));
        }
        let tenants = v.get("tenants").and_then(|t| t.as_array());
        for t in tenants.into_iter().flatten() {
            let keys = t.get("keys").and_then(|k| k.as_array());
            for k in keys.into_iter().flatten() {
                let field = |n: &str| k.get(n).and_then(|x| x.as_str()).map(str::to_string);
                if let (Some(a), Some(s)) = (field("access_key"), field("secret_key")) {
                    out.keys.push((a, s, file));
                }
            }
        }
    }
    out
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Clone)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    pub token: String,
    pub tls: Option<TlsConfig>,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct TenantConfig {
    pub id: String,
    pub display_name: String,
    pub placement: Placement,
    /// Other backends this tenant may place a bucket on with a LocationConstraint.
    pub locations: Vec<String>,
    pub keys: Vec<KeyConfig>,
    /// Set only when the file declares it: a quota set through the admin API survives a
    /// restart unless the file says otherwise.
    pub quota: Option<Limits>,
    pub policy: Option<Policy>,
    /// Per-bucket settings the file declares (merged by bucket name).
    pub buckets: std::collections::BTreeMap<String, BucketSettings>,
}

#[derive(Clone)]
pub struct KeyConfig {
    pub access_key: String,
    pub secret_key: String,
    pub user: String,
    pub role: Role,
}

impl std::fmt::Debug for KeyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyConfig")
            .field("access_key", &self.access_key)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Tenant ids appear in blob keys and admin URLs: lowercase letters, digits and `-`.
pub fn valid_tenant_id(id: &str) -> bool {
    (1..=63).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Access keys: 3–128 of `A-Z a-z 0-9 _ -`. Secrets: 8–128 printable ASCII characters.
pub fn valid_access_key(k: &str) -> bool {
    (3..=128).contains(&k.len())
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

pub fn valid_secret(s: &str) -> bool {
    (8..=128).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_graphic())
}

/// Backend names appear in blob references and LocationConstraints.
pub fn valid_backend_name(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Containers: what S3, Azure and GCS all accept as a bucket / container name.
pub fn valid_container(s: &str) -> bool {
    (3..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !s.starts_with(['-', '.'])
}

/// Key prefixes: path-like, `A-Z a-z 0-9 - _ /`, no empty component, no leading `/`.
pub fn valid_prefix(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 256
            && !s.starts_with('/')
            && !s.contains("//")
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'/'))
}

/// Resolves a tenant's placement settings against the backends.
pub fn placement(
    backends: &[BackendConfig],
    default: &Placement,
    backend: Option<&str>,
    container: Option<&str>,
    prefix: Option<&str>,
) -> Result<Placement, String> {
    let name = backend.unwrap_or(&default.backend);
    let b = backends
        .iter()
        .find(|b| b.name == name)
        .ok_or_else(|| format!("backend {name:?} is not configured"))?;
    let container = container.unwrap_or(&b.container);
    if !valid_container(container) {
        return Err(format!(
            "container {container:?}: use 3-63 of a-z, 0-9, - and ."
        ));
    }
    let prefix = prefix.unwrap_or("");
    if !valid_prefix(prefix) {
        return Err(format!(
            "prefix {prefix:?}: use A-Z, a-z, 0-9, -, _ and / (no leading or double /)"
        ));
    }
    Ok(Placement {
        backend: name.to_string(),
        container: container.to_string(),
        prefix: prefix.to_string(),
    })
}

fn backend(name: String, b: raw::Backend, data_dir: &Path) -> Result<BackendConfig, ConfigError> {
    let bad = |msg: String| ConfigError::Invalid(format!("backends.{name}: {msg}"));
    if !valid_backend_name(&name) {
        return Err(bad("use 1-63 of a-z, 0-9 and - for a backend name".into()));
    }
    // Keys each type accepts besides the common ones.
    let given: Vec<(&str, bool)> = vec![
        ("path", b.path.is_some()),
        ("endpoint", b.endpoint.is_some()),
        ("region", b.region.is_some()),
        ("path_style", b.path_style.is_some()),
        ("access_key", b.access_key.is_some()),
        ("secret_key", b.secret_key.is_some()),
        ("secret_key_file", b.secret_key_file.is_some()),
        ("account", b.account.is_some()),
        ("account_key", b.account_key.is_some()),
        ("sas_token", b.sas_token.is_some()),
        ("credentials_file", b.credentials_file.is_some()),
        ("part_size_mb", b.part_size_mb.is_some()),
        ("read_batch_kib", b.read_batch_kib.is_some()),
    ];
    let allowed: &[&str] = match b.kind.as_str() {
        "local" => &["path"],
        "s3" => &[
            "endpoint",
            "region",
            "path_style",
            "access_key",
            "secret_key",
            "secret_key_file",
            "part_size_mb",
            "read_batch_kib",
        ],
        "azure" => &[
            "endpoint",
            "account",
            "account_key",
            "secret_key_file",
            "sas_token",
            "part_size_mb",
            "read_batch_kib",
        ],
        "gcs" => &[
            "endpoint",
            "credentials_file",
            "part_size_mb",
            "read_batch_kib",
        ],
        other => {
            return Err(bad(format!("type {other:?}: use local, s3, azure or gcs")));
        }
    };
    if let Some((k, _)) = given.iter().find(|(k, set)| *set && !allowed.contains(k)) {
        return Err(bad(format!("{k} does not apply to type {:?}", b.kind)));
    }
    let secret = |inline: Option<String>, file: Option<PathBuf>| match (inline, file) {
        (Some(s), None) => Ok(Some(Secret(s))),
        (None, Some(f)) => read_secret(&f).map(|s| Some(Secret(s))),
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(bad("set the secret inline or in a file, not both".into())),
    };
    let kind = match b.kind.as_str() {
        "local" => BackendKind::Local {
            in_data_dir: b.path.is_none(),
            path: b.path.unwrap_or_else(|| data_dir.to_path_buf()),
        },
        "s3" => {
            let credentials = match (b.access_key, secret(b.secret_key, b.secret_key_file)?) {
                (Some(a), Some(s)) => Some((a, s)),
                (None, None) => None,
                _ => return Err(bad("set both access_key and secret_key, or neither".into())),
            };
            BackendKind::S3 {
                path_style: b.path_style.unwrap_or(b.endpoint.is_some()),
                endpoint: b.endpoint,
                region: b.region.unwrap_or_else(|| "us-east-1".into()),
                credentials,
            }
        }
        "azure" => {
            let key = secret(b.account_key, b.secret_key_file)?;
            let auth = match (key, b.sas_token) {
                (Some(k), None) => AzureAuth::AccessKey(k),
                (None, Some(s)) => AzureAuth::Sas(Secret(s.trim_start_matches('?').to_string())),
                _ => {
                    return Err(bad(
                        "set exactly one of account_key (or secret_key_file) and sas_token".into(),
                    ));
                }
            };
            BackendKind::Azure {
                account: b.account.ok_or_else(|| bad("account is required".into()))?,
                endpoint: b.endpoint,
                auth,
            }
        }
        _ => {
            if b.endpoint.is_none() && b.credentials_file.is_none() {
                return Err(bad(
                    "set credentials_file (a service-account JSON) or an emulator endpoint".into(),
                ));
            }
            BackendKind::Gcs {
                endpoint: b.endpoint,
                credentials_file: b.credentials_file,
            }
        }
    };
    let container = match (&kind, b.container) {
        (_, Some(c)) => c,
        (BackendKind::Local { .. }, None) => "blobs".into(),
        (_, None) => return Err(bad("container (or bucket) is required".into())),
    };
    if !valid_container(&container)
        || (matches!(kind, BackendKind::Local { .. }) && container == "tmp")
    {
        return Err(bad(format!(
            "container {container:?}: use 3-63 of a-z, 0-9, - and ."
        )));
    }
    // Azure blocks and GCS chunks must be multiples of 256 KiB; S3 parts at least 5 MiB.
    let part_size = b.part_size_mb.unwrap_or(16);
    if !(5..=512).contains(&part_size) {
        return Err(bad("part_size_mb: use 5 to 512".into()));
    }
    let read_batch = match (&kind, b.read_batch_kib) {
        (BackendKind::Local { .. }, _) => 0,
        (_, None) => 256,
        (_, Some(k)) if k <= 4096 => k,
        (_, Some(_)) => return Err(bad("read_batch_kib: use 0 (off) to 4096".into())),
    };
    Ok(BackendConfig {
        name,
        kind,
        container,
        timeout: Duration::from_secs(b.timeout_secs.unwrap_or(30).max(1)),
        retries: b.retries.unwrap_or(3),
        part_size: part_size * 1024 * 1024,
        read_batch: read_batch * 1024,
    })
}

fn scanner(
    sc: raw::Scanner,
    backends: &[BackendConfig],
    default: &Placement,
) -> Result<ScannerConfig, ConfigError> {
    let bad = |m: &str| ConfigError::Invalid(format!("scanner: {m}"));
    let address = match (sc.address, sc.socket) {
        (Some(a), None) => Address::Tcp(a),
        (None, Some(p)) => Address::Unix(p),
        _ => {
            return Err(bad(
                "set exactly one of address (host:port) and socket (a path)",
            ));
        }
    };
    let quarantine = match (sc.quarantine_backend, sc.quarantine_container) {
        (None, None) if sc.quarantine_prefix.is_none() => None,
        (b, c) => Some(
            placement(
                backends,
                default,
                b.as_deref(),
                Some(c.as_deref().unwrap_or("quarantine")),
                sc.quarantine_prefix.as_deref(),
            )
            .map_err(|e| bad(&format!("quarantine: {e}")))?,
        ),
    };
    let max_stream_mb = sc.max_stream_mb.unwrap_or(25);
    // libclamav cannot scan beyond 2 GiB - 1.
    if !(1..=2047).contains(&max_stream_mb) {
        return Err(bad(
            "max_stream_mb must be 1-2047 (clamd's StreamMaxLength)",
        ));
    }
    Ok(ScannerConfig {
        address,
        timeout: Duration::from_secs(sc.timeout_secs.unwrap_or(30).max(1)),
        max_concurrent: sc.max_concurrent.unwrap_or(4).max(1),
        max_stream: max_stream_mb * 1024 * 1024,
        quarantine,
        retry_interval: Duration::from_secs(sc.retry_secs.unwrap_or(30).max(1)),
    })
}

fn cluster(c: raw::Cluster) -> Result<ClusterOptions, ConfigError> {
    let bad = |what: &str| ConfigError::Invalid(format!("[cluster] {what}"));
    let d = ClusterOptions::default();
    let node_id = match c.node_id {
        Some(id) => {
            let ok = !id.is_empty()
                && id.len() <= 64
                && id
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'));
            if !ok {
                return Err(bad(
                    "node_id must be 1 to 64 characters of letters, digits, '-', '_' and '.'",
                ));
            }
            id
        }
        None => d.node_id,
    };
    let heartbeat = c.heartbeat_ms.map_or(d.heartbeat, Duration::from_millis);
    let node_timeout = c
        .node_timeout_ms
        .map_or(d.node_timeout, Duration::from_millis);
    if heartbeat < Duration::from_millis(100) {
        return Err(bad("heartbeat_ms must be at least 100"));
    }
    if node_timeout < 3 * heartbeat {
        return Err(bad(
            "node_timeout_ms must be at least three heartbeats (a node is not declared dead for one late beat)",
        ));
    }
    Ok(ClusterOptions {
        node_id,
        heartbeat,
        node_timeout,
        lease: c.lease_secs.map_or(d.lease, Duration::from_secs),
        fast_reserve_bytes: c
            .fast_reserve_mb
            .map_or(d.fast_reserve_bytes, |mb| mb << 20),
    })
}

fn meta_engine(m: raw::Meta) -> Result<MetaEngine, ConfigError> {
    let bad = |what: &str| ConfigError::Invalid(format!("[meta] {what}"));
    match m.engine.as_deref().unwrap_or("sled") {
        "sled" => {
            if m.url.is_some()
                || m.url_file.is_some()
                || m.pool_size.is_some()
                || m.timeout_ms.is_some()
            {
                return Err(bad(
                    "url, url_file, pool_size and timeout_ms apply to engine = \"postgres\" only",
                ));
            }
            Ok(MetaEngine::Sled)
        }
        "postgres" => {
            let url = match (m.url, m.url_file) {
                (Some(u), None) => u,
                (None, Some(f)) => read_secret(&f)?,
                (None, None) => return Err(bad("engine = \"postgres\" needs url or url_file")),
                (Some(_), Some(_)) => return Err(bad("set url or url_file, not both")),
            };
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                return Err(bad("url must start with postgres://"));
            }
            let pool_size = m.pool_size.unwrap_or(32);
            if pool_size == 0 {
                return Err(bad("pool_size must be at least 1"));
            }
            let timeout_ms = m.timeout_ms.unwrap_or(5000);
            if !(100..=600_000).contains(&timeout_ms) {
                return Err(bad("timeout_ms must be between 100 and 600000"));
            }
            Ok(MetaEngine::Postgres {
                url: DatabaseUrl(url),
                pool_size,
                timeout: Duration::from_millis(timeout_ms),
            })
        }
        other => Err(bad(&format!("engine {other:?}: use sled or postgres"))),
    }
}

fn read_secret(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })
}

fn addr(s: &str, what: &str) -> Result<SocketAddr, ConfigError> {
    s.parse().map_err(|_| {
        ConfigError::Invalid(format!(
            "{what}: {s:?} is not an address like 127.0.0.1:9000"
        ))
    })
}

impl Config {
    /// Moves the data directory (`serve --data-dir`): the metadata store and every local
    /// backend that names no `path` of its own go with it, so one directory holds a gateway's
    /// whole state and two gateways never share blobs by accident.
    pub fn set_data_dir(&mut self, dir: PathBuf) {
        for b in &mut self.backends {
            if let BackendKind::Local {
                path,
                in_data_dir: true,
            } = &mut b.kind
            {
                *path = dir.clone();
            }
        }
        self.data_dir = dir;
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                source,
            },
            e => e,
        })
    }

    /// Parses a config text; relative `*_file` paths are taken from the working directory.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let raw: raw::File = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            source: Box::new(e),
        })?;
        Self::validate(raw)
    }

    fn validate(raw: raw::File) -> Result<Self, ConfigError> {
        let listen = addr(
            raw.server.listen.as_deref().unwrap_or("127.0.0.1:9000"),
            "server.listen",
        )?;
        let region = raw
            .server
            .region
            .clone()
            .unwrap_or_else(|| "us-east-1".into());
        if region.is_empty()
            || !region
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(ConfigError::Invalid(format!("server.region: {region:?}")));
        }
        // Zero would refuse every connection or request, so each bound is at least 1; the
        // defaults are the subsystems' own.
        let count = |v: Option<usize>, default: usize, what: &str| match v {
            Some(0) => Err(ConfigError::Invalid(format!(
                "server.{what} must be at least 1"
            ))),
            v => Ok(v.unwrap_or(default)),
        };
        let secs = |v: Option<u64>, default: Duration, what: &str| match v {
            Some(0) => Err(ConfigError::Invalid(format!(
                "server.{what} must be at least 1"
            ))),
            v => Ok(v.map_or(default, Duration::from_secs)),
        };
        let s = &raw.server;
        let (dc, dp, du) = (
            ConnOptions::default(),
            PaceOptions::default(),
            UploadLimits::default(),
        );
        let conn = ConnOptions {
            max_connections: count(s.max_connections, dc.max_connections, "max_connections")?,
            max_connections_per_ip: count(
                s.max_connections_per_ip,
                dc.max_connections_per_ip,
                "max_connections_per_ip",
            )?,
            header_timeout: secs(
                s.header_timeout_secs,
                dc.header_timeout,
                "header_timeout_secs",
            )?,
        };
        let pace = PaceOptions {
            timeout: secs(s.body_timeout_secs, dp.timeout, "body_timeout_secs")?,
            min_rate: s.body_min_rate.unwrap_or(dp.min_rate),
        };
        let uploads = UploadLimits {
            in_flight: count(
                s.max_uploads_in_flight,
                du.in_flight,
                "max_uploads_in_flight",
            )?,
            tenant_in_flight: count(
                s.max_tenant_uploads_in_flight,
                du.tenant_in_flight,
                "max_tenant_uploads_in_flight",
            )?,
            open_per_tenant: count(s.max_open_uploads, du.open_per_tenant, "max_open_uploads")?,
            parts_per_tenant: count(s.max_open_parts, du.parts_per_tenant, "max_open_parts")?,
        };
        let admin = match (raw.admin.token, raw.admin.token_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid(
                    "admin: set token or token_file, not both".into(),
                ));
            }
            (Some(t), None) => Some(t),
            (None, Some(f)) => Some(read_secret(&f)?),
            (None, None) => None,
        };
        let admin = match admin {
            Some(token) if token.len() < 16 => {
                return Err(ConfigError::Invalid(
                    "admin.token must be at least 16 characters".into(),
                ));
            }
            Some(token) => Some(AdminConfig {
                listen: addr(
                    raw.admin.listen.as_deref().unwrap_or("127.0.0.1:9001"),
                    "admin.listen",
                )?,
                token,
                tls: raw.admin.tls.map(|t| TlsConfig {
                    cert: t.cert,
                    key: t.key,
                }),
            }),
            None => None,
        };
        let data_dir = raw
            .storage
            .data_dir
            .unwrap_or_else(|| PathBuf::from("./data"));
        let mut backends = Vec::new();
        for (name, b) in raw.backends {
            backends.push(backend(name, b, &data_dir)?);
        }
        if !backends.iter().any(|b| b.name == "local") {
            backends.push(backend(
                "local".into(),
                raw::Backend {
                    kind: "local".into(),
                    ..Default::default()
                },
                &data_dir,
            )?);
        }
        let default_name = raw
            .storage
            .default_backend
            .unwrap_or_else(|| "local".into());
        let default_backend = backends
            .iter()
            .find(|b| b.name == default_name)
            .ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "storage.default_backend: backend {default_name:?} is not configured"
                ))
            })?;
        let default_placement = Placement {
            backend: default_name.clone(),
            container: default_backend.container.clone(),
            prefix: String::new(),
        };
        let mut tenants = Vec::new();
        let mut seen_keys = std::collections::HashSet::new();
        for t in raw.tenants {
            if !valid_tenant_id(&t.id) {
                return Err(ConfigError::Invalid(format!(
                    "tenant id {:?}: use 1-63 of a-z, 0-9 and -",
                    t.id
                )));
            }
            if tenants.iter().any(|x: &TenantConfig| x.id == t.id) {
                return Err(ConfigError::Invalid(format!(
                    "tenant {:?} declared twice",
                    t.id
                )));
            }
            let placement = placement(
                &backends,
                &default_placement,
                t.backend.as_deref(),
                t.backend_container.as_deref(),
                t.backend_prefix.as_deref(),
            )
            .map_err(|e| ConfigError::Invalid(format!("tenant {:?}: {e}", t.id)))?;
            if let Some(l) = t
                .locations
                .iter()
                .find(|l| !backends.iter().any(|b| &b.name == *l))
            {
                return Err(ConfigError::Invalid(format!(
                    "tenant {:?}: location {l:?} is not a configured backend",
                    t.id
                )));
            }
            let mut keys = Vec::new();
            for k in t.keys {
                if !valid_access_key(&k.access_key) {
                    return Err(ConfigError::Invalid(format!(
                        "access key {:?}: use 3-128 of A-Z, a-z, 0-9, _ and -",
                        k.access_key
                    )));
                }
                if !seen_keys.insert(k.access_key.clone()) {
                    return Err(ConfigError::Invalid(format!(
                        "access key {:?} declared twice",
                        k.access_key
                    )));
                }
                let secret = match (k.secret_key, k.secret_key_file) {
                    (Some(s), None) => s,
                    (None, Some(f)) => read_secret(&f)?,
                    _ => {
                        return Err(ConfigError::Invalid(format!(
                            "access key {:?}: set exactly one of secret_key and secret_key_file",
                            k.access_key
                        )));
                    }
                };
                if !valid_secret(&secret) {
                    return Err(ConfigError::Invalid(format!(
                        "access key {:?}: the secret must be 8-128 printable ASCII characters",
                        k.access_key
                    )));
                }
                keys.push(KeyConfig {
                    access_key: k.access_key,
                    secret_key: secret,
                    user: k.user.unwrap_or_else(|| "admin".into()),
                    role: k.role.unwrap_or(Role::ReadWrite),
                });
            }
            let invalid = |e: crate::pipeline::policy::PolicyError| {
                ConfigError::Invalid(format!("tenant {:?}: {e}", t.id))
            };
            if let Some(p) = &t.policy {
                p.validate().map_err(invalid)?;
            }
            let quota = (t.quota_bytes.is_some() || t.quota_objects.is_some()).then_some(Limits {
                bytes: t.quota_bytes,
                objects: t.quota_objects,
            });
            let mut buckets = std::collections::BTreeMap::new();
            for (name, b) in t.buckets {
                let policy = b.policy.unwrap_or_default();
                policy.validate().map_err(invalid)?;
                buckets.insert(
                    name,
                    BucketSettings {
                        quota: Limits {
                            bytes: b.quota_bytes,
                            objects: b.quota_objects,
                        },
                        policy,
                    },
                );
            }
            tenants.push(TenantConfig {
                display_name: t.display_name.unwrap_or_else(|| t.id.clone()),
                placement,
                locations: t.locations,
                id: t.id,
                keys,
                quota,
                policy: t.policy,
                buckets,
            });
        }
        let sweeper = SweeperConfig {
            interval: Duration::from_secs(raw.sweeper.interval_secs.unwrap_or(300).max(1)),
            grace: Duration::from_secs(raw.sweeper.grace_secs.unwrap_or(3600)),
            abandoned_upload: Duration::from_secs(
                raw.sweeper.abandoned_upload_secs.unwrap_or(7 * 24 * 3600),
            ),
        };
        let policy = raw.policy.unwrap_or_default();
        policy
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("policy: {e}")))?;
        let scanner = match raw.scanner {
            None => None,
            Some(sc) => Some(scanner(sc, &backends, &default_placement)?),
        };
        Ok(Config {
            scanner,
            policy,
            listen,
            region,
            domain: raw.server.domain.filter(|d| !d.is_empty()),
            max_xml_body: raw.server.max_xml_body.unwrap_or(1024 * 1024),
            require_region: raw.server.require_region.unwrap_or(false),
            conn,
            pace,
            uploads,
            tls: raw.server.tls.map(|t| TlsConfig {
                cert: t.cert,
                key: t.key,
            }),
            admin,
            data_dir,
            sync: raw.storage.sync.unwrap_or(true),
            meta_cache_bytes: raw.storage.meta_cache_mb.unwrap_or(128).max(8) * 1024 * 1024,
            meta: meta_engine(raw.meta)?,
            cluster: cluster(raw.cluster)?,
            sweeper,
            backends,
            default_placement,
            tenants,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hardening_keys_parse_and_zero_bounds_are_refused() {
        let c = Config::parse(
            "[server]\nrequire_region = true\nheader_timeout_secs = 5\nmax_connections = 10\nmax_connections_per_ip = 2\nbody_timeout_secs = 7\nbody_min_rate = 0\nmax_uploads_in_flight = 9\nmax_tenant_uploads_in_flight = 3\nmax_open_uploads = 4\n",
        )
        .unwrap();
        assert!(c.require_region);
        assert_eq!(c.conn.header_timeout, Duration::from_secs(5));
        assert_eq!(
            (c.conn.max_connections, c.conn.max_connections_per_ip),
            (10, 2)
        );
        assert_eq!(c.pace.timeout, Duration::from_secs(7));
        assert_eq!(c.pace.min_rate, 0, "0 turns the minimum rate off");
        assert_eq!(
            (
                c.uploads.in_flight,
                c.uploads.tenant_in_flight,
                c.uploads.open_per_tenant
            ),
            (9, 3, 4)
        );
        let d = Config::parse("").unwrap();
        assert_eq!(
            d.conn.max_connections,
            ConnOptions::default().max_connections
        );
        assert!(!d.require_region, "any region by default");
        for key in [
            "header_timeout_secs",
            "max_connections",
            "max_connections_per_ip",
            "body_timeout_secs",
            "max_uploads_in_flight",
            "max_tenant_uploads_in_flight",
            "max_open_uploads",
        ] {
            let err = Config::parse(&format!("[server]\n{key} = 0\n")).unwrap_err();
            assert!(err.to_string().contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = Config::parse("[server]\nlisten = \"127.0.0.1:1\"\nlistne = 1\n").unwrap_err();
        assert!(err.to_string().contains("listne"), "{err}");
    }

    #[test]
    fn every_protection_key_parses_and_is_checked() {
        let text = r#"
[scanner]
address = "127.0.0.1:3310"
timeout_secs = 30
max_concurrent = 4
max_stream_mb = 25
quarantine_backend = "local"
quarantine_container = "quarantine"
quarantine_prefix = ""
retry_secs = 30
[policy]
max_object_size = 5368709120
allowed_types = ["image/*", "application/pdf"]
denied_types = ["application/vnd.microsoft.portable-executable"]
reject_type_mismatch = false
key_pattern = "[A-Za-z0-9/._ -]+"
max_key_length = 1024
scan = "required"
on_scanner_unavailable = "reject"
on_too_large_to_scan = "reject"
[[tenants]]
id = "acme"
quota_bytes = 10737418240
quota_objects = 100000
[tenants.policy]
reject_type_mismatch = true
[tenants.buckets.avatars]
quota_bytes = 1073741824
quota_objects = 50000
[tenants.buckets.avatars.policy]
allowed_types = ["image/*"]
[[tenants.keys]]
access_key = "ACMEDEVKEY"
secret_key = "acme-dev-secret"
"#;
        let c = Config::parse(text).unwrap();
        let sc = c.scanner.as_ref().unwrap();
        assert_eq!(sc.max_stream, 25 * 1024 * 1024);
        assert_eq!(sc.quarantine.as_ref().unwrap().container, "quarantine");
        let t = &c.tenants[0];
        assert_eq!(t.quota.unwrap().bytes, Some(10737418240));
        assert_eq!(
            t.buckets["avatars"].policy.allowed_types,
            Some(vec!["image/*".to_string()])
        );
        for bad in [
            text.replace("[A-Za-z0-9/._ -]+", "(unclosed"),
            text.replace("\"image/*\"]\n[[", "\"image\"]\n[["),
            text.replace(
                "address = \"127.0.0.1:3310\"",
                "socket = \"/x\"\naddress = \"a:1\"",
            ),
            text.replace("max_stream_mb = 25", "max_stream_mb = 4096"),
            text.replace("scan = \"required\"", "scan = \"sometimes\""),
        ] {
            assert!(Config::parse(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shipped_config_is_valid() {
        let text = include_str!("../config/portcullis.toml");
        let c = Config::parse(text).unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.tenants.len(), 2);
    }

    #[test]
    fn backends_are_validated_per_type() {
        let base = "[storage]\ndata_dir = \"/tmp/x\"\n";
        let parse = |tail: &str| Config::parse(&format!("{base}{tail}"));
        // The implicit local backend, and a declared one of each kind.
        let c = parse(concat!(
            "[backends.aws]\ntype = \"s3\"\nbucket = \"b-1\"\n",
            "[backends.az]\ntype = \"azure\"\naccount = \"a\"\nsas_token = \"?sv=1&sig=2\"\ncontainer = \"c-1\"\n",
            "[backends.g]\ntype = \"gcs\"\nbucket = \"g-1\"\nendpoint = \"http://127.0.0.1:1\"\n",
            "[[tenants]]\nid = \"t\"\nbackend = \"az\"\nbackend_prefix = \"crm/\"\nlocations = [\"aws\"]\n",
        ))
        .unwrap();
        assert_eq!(c.backends.len(), 4);
        assert_eq!(c.default_placement.backend, "local");
        assert_eq!(c.default_placement.container, "blobs");
        let t = &c.tenants[0];
        assert_eq!(
            (t.placement.backend.as_str(), t.placement.container.as_str()),
            ("az", "c-1")
        );
        assert_eq!(t.placement.prefix, "crm/");
        let batch = |name: &str| {
            c.backends
                .iter()
                .find(|b| b.name == name)
                .unwrap()
                .read_batch
        };
        assert_eq!((batch("local"), batch("aws")), (0, 256 * 1024));
        for (tail, want) in [
            ("[backends.x]\ntype = \"ftp\"\n", "type \"ftp\""),
            (
                "[backends.x]\ntype = \"s3\"\n",
                "container (or bucket) is required",
            ),
            (
                "[backends.x]\ntype = \"local\"\nregion = \"r\"\n",
                "region does not apply",
            ),
            (
                "[backends.x]\ntype = \"s3\"\nbucket = \"bb1\"\naccess_key = \"k\"\n",
                "set both access_key and secret_key",
            ),
            (
                "[backends.x]\ntype = \"azure\"\naccount = \"a\"\ncontainer = \"ccc\"\n",
                "exactly one of account_key",
            ),
            (
                "[backends.x]\ntype = \"gcs\"\nbucket = \"ggg\"\n",
                "credentials_file",
            ),
            ("[backends.X]\ntype = \"local\"\n", "backend name"),
            (
                "[backends.x]\ntype = \"local\"\nread_batch_kib = 64\n",
                "read_batch_kib does not apply",
            ),
            (
                "[backends.x]\ntype = \"s3\"\nbucket = \"bb1\"\nread_batch_kib = 5000\n",
                "read_batch_kib: use 0 (off) to 4096",
            ),
            (
                "[backends.x]\ntype = \"s3\"\nbucket = \"../up\"\n",
                "container",
            ),
            ("[storage2]\n", "storage2"),
            (
                "[[tenants]]\nid = \"t\"\nbackend = \"nope\"\n",
                "\"nope\" is not configured",
            ),
            (
                "[[tenants]]\nid = \"t\"\nbackend_prefix = \"/abs\"\n",
                "prefix",
            ),
            (
                "[[tenants]]\nid = \"t\"\nlocations = [\"mars\"]\n",
                "\"mars\" is not a configured backend",
            ),
        ] {
            let e = parse(tail).unwrap_err().to_string();
            assert!(e.contains(want), "{tail}: {e}");
        }
        let e = Config::parse("[storage]\ndefault_backend = \"gone\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("default_backend"), "{e}");
    }

    #[test]
    fn backend_secrets_do_not_reach_debug_output() {
        let c = Config::parse(concat!(
            "[backends.aws]\ntype = \"s3\"\nbucket = \"b-1\"\naccess_key = \"AK\"\nsecret_key = \"very-secret-s3\"\n",
            "[backends.az]\ntype = \"azure\"\naccount = \"a\"\naccount_key = \"very-secret-az\"\ncontainer = \"c-1\"\n",
        ))
        .unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("very-secret"), "{dbg}");
    }

    #[test]
    fn the_postgres_config_differs_from_the_default_only_in_its_engine() {
        let c = Config::parse(include_str!("../config/postgres.toml")).unwrap();
        match &c.meta {
            MetaEngine::Postgres { url, pool_size, .. } => {
                assert_eq!(url.0, "postgres://portcullis@127.0.0.1:5432/portcullis");
                assert_eq!(*pool_size, 32);
            }
            other => panic!("{other:?}"),
        }
        let default = Config::parse(include_str!("../config/portcullis.toml")).unwrap();
        assert!(matches!(default.meta, MetaEngine::Sled));
        assert_eq!(
            format!("{:?}", default.backends),
            format!("{:?}", c.backends)
        );
    }

    #[test]
    fn the_cluster_example_nodes_differ_only_in_name_and_addresses() {
        let nodes = [
            include_str!("../config/cluster/node-1.toml"),
            include_str!("../config/cluster/node-2.toml"),
            include_str!("../config/cluster/node-3.toml"),
        ]
        .map(|t| Config::parse(t).unwrap());
        let ids: Vec<&str> = nodes.iter().map(|c| c.cluster.node_id.as_str()).collect();
        assert_eq!(ids, ["gw-1", "gw-2", "gw-3"]);
        for c in &nodes {
            assert!(matches!(c.meta, MetaEngine::Postgres { .. }));
            assert_eq!(c.default_placement.backend, "shared");
            let shared = |c: &Config| {
                let b = c.backends.iter().find(|b| b.name == "shared").unwrap();
                format!("{b:?}")
            };
            assert_eq!(shared(c), shared(&nodes[0]));
            assert_eq!(
                format!("{:?}", c.tenants),
                format!("{:?}", nodes[0].tenants)
            );
        }
        assert!(Config::parse("[cluster]\nnode_id = \"a/b\"").is_err());
        assert!(Config::parse("[cluster]\nheartbeat_ms = 1000\nnode_timeout_ms = 2000").is_err());
    }

    #[test]
    fn meta_engine_keys_are_validated_and_the_url_never_printed() {
        let with = |meta: &str| Config::parse(&format!("[meta]\n{meta}"));
        let err = |meta: &str| with(meta).unwrap_err().to_string();
        assert!(err("engine = \"mysql\"").contains("use sled or postgres"));
        assert!(err("engine = \"postgres\"").contains("needs url or url_file"));
        assert!(err("url = \"postgres://x@h/db\"").contains("apply to engine = \"postgres\" only"));
        assert!(err("engine = \"postgres\"\nurl = \"mysql://h\"").contains("postgres://"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("url");
        std::fs::write(&file, "postgres://u:hunter2-secret@db/p\n").unwrap();
        let c = with(&format!(
            "engine = \"postgres\"\nurl_file = \"{}\"",
            file.display()
        ))
        .unwrap();
        let MetaEngine::Postgres { url, pool_size, .. } = &c.meta else {
            panic!("{:?}", c.meta)
        };
        assert_eq!(url.0, "postgres://u:hunter2-secret@db/p");
        assert_eq!(*pool_size, 32);
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn secrets_do_not_reach_debug_output() {
        let text = include_str!("../config/portcullis.toml");
        let c = Config::parse(text).unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("acme-dev-secret"), "{dbg}");
    }

    /// Every example file's admin token and keys are refused off loopback: the cluster
    /// example's token was once missed by a hand-kept list.
    #[test]
    fn every_published_token_and_key_is_known() {
        let p = published_credentials();
        let tokens: Vec<&str> = p.tokens.iter().map(|(t, _)| t.as_str()).collect();
        assert!(tokens.contains(&"dev-admin-token-change-me"), "{p:?}");
        assert!(tokens.contains(&"cluster-example-admin-token"), "{p:?}");
        assert_eq!(tokens.len(), PUBLISHED.len(), "one token per file: {p:?}");
        for (k, s) in [
            ("ACMEDEVKEY", "acme-dev-secret"),
            ("GLOBEXDEVKEY", "globex-dev-secret"),
        ] {
            assert!(p.keys.iter().any(|(a, b, _)| a == k && b == s), "{p:?}");
        }
        // Each file is a configuration the gateway accepts, so nothing in it was missed by a
        // parse that failed.
        for (file, text) in PUBLISHED {
            assert!(text.parse::<toml::Table>().is_ok(), "{file}");
        }
    }
}
