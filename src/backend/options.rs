//! What a backend is configured with (validated by `config.rs`, which depends on this module,
//! never the reverse).

use std::path::PathBuf;
use std::time::Duration;

/// A credential that never reaches a log line or `Debug` output.
#[derive(Clone)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone)]
pub struct BackendConfig {
    pub name: String,
    pub kind: BackendKind,
    /// The backend's default bucket / container / directory.
    pub container: String,
    /// Bound on each idempotent call (connect, first byte of a read, delete, probe).
    pub timeout: Duration,
    /// Extra attempts of an idempotent call that found the backend unavailable.
    pub retries: u32,
    /// Part / block / chunk size of the remote backends' streaming uploads.
    pub part_size: usize,
    /// Remote backends: downloads are relayed in batches of about this many bytes (0: off; see
    /// `backend::batch`).
    pub read_batch: usize,
}

#[derive(Debug, Clone)]
pub enum BackendKind {
    Local {
        path: PathBuf,
        /// No `path` was given: the backend lives in `storage.data_dir` and moves with it
        /// (`Config::set_data_dir`).
        in_data_dir: bool,
    },
    S3 {
        endpoint: Option<String>,
        region: String,
        path_style: bool,
        /// `None`: the standard AWS provider chain (env, profile, IMDS, ...).
        credentials: Option<(String, Secret)>,
    },
    Azure {
        account: String,
        endpoint: Option<String>,
        auth: AzureAuth,
    },
    Gcs {
        endpoint: Option<String>,
        /// `None`: no authentication (the emulator).
        credentials_file: Option<PathBuf>,
    },
}

#[derive(Debug, Clone)]
pub enum AzureAuth {
    AccessKey(Secret),
    Sas(Secret),
}
