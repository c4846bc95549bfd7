//! Logging. One `request` span per S3 request carries the request id, tenant, operation, bucket
//! and key; 4xx answers are logged at debug, 5xx at error (by `error.rs`, once). s3s's own logs
//! are off by default: they print whole requests, signatures included.

use tracing_subscriber::EnvFilter;

/// The default filter; `RUST_LOG` replaces it (e.g. `RUST_LOG=portcullis=debug`).
pub const DEFAULT_FILTER: &str = "info,s3s=off,sled=warn,hyper=warn";

pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // Colours only on a terminal: log files and pipes get plain `key=value` text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .try_init();
}
