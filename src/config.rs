//! Configuration: one TOML file, parsed into raw serde structs that refuse unknown keys, then
//! validated into the typed [`Config`] that is passed explicitly to everything that needs it.
//! Every key is documented in `config/portcullis.toml`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::meta::Role;

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
        pub sweeper: Sweeper,
        #[serde(default)]
        pub tenants: Vec<Tenant>,
    }

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Server {
        pub listen: Option<String>,
        pub region: Option<String>,
        pub domain: Option<String>,
        pub max_xml_body: Option<usize>,
        pub tls: Option<Tls>,
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
    }

    #[derive(Debug, Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    pub struct Storage {
        pub data_dir: Option<PathBuf>,
        pub sync: Option<bool>,
        pub meta_cache_mb: Option<u64>,
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
        #[serde(default)]
        pub keys: Vec<Key>,
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
    pub admin: Option<AdminConfig>,
    pub data_dir: PathBuf,
    /// Flush metadata and fsync blobs before a write is acknowledged.
    pub sync: bool,
    /// Bytes of metadata pages sled may keep in memory.
    pub meta_cache_bytes: u64,
    pub sweeper: SweeperConfig,
    pub tenants: Vec<TenantConfig>,
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
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct SweeperConfig {
    pub interval: Duration,
    /// An unreferenced blob younger than this may belong to a write about to commit.
    pub grace: Duration,
    /// Multipart uploads left open longer than this are aborted.
    pub abandoned_upload: Duration,
}

#[derive(Debug, Clone)]
pub struct TenantConfig {
    pub id: String,
    pub display_name: String,
    pub keys: Vec<KeyConfig>,
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
        let region = raw.server.region.unwrap_or_else(|| "us-east-1".into());
        if region.is_empty()
            || !region
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(ConfigError::Invalid(format!("server.region: {region:?}")));
        }
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
            }),
            None => None,
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
            tenants.push(TenantConfig {
                display_name: t.display_name.unwrap_or_else(|| t.id.clone()),
                id: t.id,
                keys,
            });
        }
        let sweeper = SweeperConfig {
            interval: Duration::from_secs(raw.sweeper.interval_secs.unwrap_or(300).max(1)),
            grace: Duration::from_secs(raw.sweeper.grace_secs.unwrap_or(3600)),
            abandoned_upload: Duration::from_secs(
                raw.sweeper.abandoned_upload_secs.unwrap_or(7 * 24 * 3600),
            ),
        };
        Ok(Config {
            listen,
            region,
            domain: raw.server.domain.filter(|d| !d.is_empty()),
            max_xml_body: raw.server.max_xml_body.unwrap_or(1024 * 1024),
            tls: raw.server.tls.map(|t| TlsConfig {
                cert: t.cert,
                key: t.key,
            }),
            admin,
            data_dir: raw
                .storage
                .data_dir
                .unwrap_or_else(|| PathBuf::from("./data")),
            sync: raw.storage.sync.unwrap_or(true),
            meta_cache_bytes: raw.storage.meta_cache_mb.unwrap_or(128).max(8) * 1024 * 1024,
            sweeper,
            tenants,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_refused() {
        let err = Config::parse("[server]\nlisten = \"127.0.0.1:1\"\nlistne = 1\n").unwrap_err();
        assert!(err.to_string().contains("listne"), "{err}");
    }

    #[test]
    fn shipped_config_is_valid() {
        let text = include_str!("../config/portcullis.toml");
        let c = Config::parse(text).unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.tenants.len(), 2);
    }

    #[test]
    fn secrets_do_not_reach_debug_output() {
        let text = include_str!("../config/portcullis.toml");
        let c = Config::parse(text).unwrap();
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("acme-dev-secret"), "{dbg}");
    }
}
