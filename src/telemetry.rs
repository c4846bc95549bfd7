//! Logging. One `request` span per S3 request carries the request id, tenant, operation, bucket
//! and key; 4xx answers are logged at debug, 5xx at error (by `error.rs`, once). s3s's own logs
//! are off: they print whole requests, `Authorization` headers and, on a mismatch, the valid
//! signature it computed.
//!
//! `RUST_LOG` *adds to* the default filter instead of replacing it: `RUST_LOG=debug` raises the
//! level of everything the default does not name, and s3s stays off. Only a directive that names
//! s3s itself (`RUST_LOG=s3s=debug`, the documented switch, for debugging signatures on a test
//! key) turns it on; the same holds for sled, hyper and tokio-postgres (whose debug lines print
//! statement parameters, i.e. records with secret keys).
//!
//! The secret-bearing targets (s3s, tokio-postgres) are also capped by a second, fixed filter
//! ([`guard`]) that only a directive naming them lifts: a span directive (`[request]=trace`)
//! enables every target inside the spans it names, whatever the per-target directives say, so
//! the first filter alone once let s3s print `Authorization` headers inside request spans.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The default filter.
/// tokio-postgres logs every statement's parameters at debug — record values, secret keys among
/// them — so it stays at warn unless a directive names it, like s3s.
pub const DEFAULT_FILTER: &str = "info,s3s=off,sled=warn,hyper=warn,tokio_postgres=warn";

/// The target a directive names, or `None` for a bare level (`debug`), which names none.
fn target(directive: &str) -> Option<&str> {
    let t = directive.split(['=', '[']).next().unwrap_or("").trim();
    let bare_level = !directive.contains('=')
        && !directive.contains('[')
        && matches!(
            t.to_ascii_lowercase().as_str(),
            "off" | "error" | "warn" | "info" | "debug" | "trace"
        );
    (!bare_level && !t.is_empty()).then_some(t)
}

/// The filter: the default's directives, except those `user` replaces (the same target, or the
/// global level), followed by `user`'s.
pub fn filter_spec(user: Option<&str>) -> String {
    let user: Vec<&str> = user
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    // A span directive (`[request]=trace`) names no target and no global level: it replaces
    // nothing.
    let replaced = |d: &str| {
        user.iter()
            .filter(|u| !u.starts_with('['))
            .any(|u| target(u) == target(d))
    };
    DEFAULT_FILTER
        .split(',')
        .filter(|d| !replaced(d))
        .chain(user.iter().copied())
        .collect::<Vec<_>>()
        .join(",")
}

/// Targets whose lines carry secrets, and the most they may log unless a directive names them.
const GUARDED: [(&str, LevelFilter); 2] = [
    ("s3s", LevelFilter::OFF),
    ("tokio_postgres", LevelFilter::WARN),
];

/// The fixed cap on [`GUARDED`] targets, except those `user` names (`s3s=debug`,
/// `s3s::ops=trace`): applied on top of the `RUST_LOG` filter, so no span directive lifts it.
pub fn guard(user: Option<&str>) -> Targets {
    let named: Vec<&str> = user
        .unwrap_or("")
        .split(',')
        .filter_map(|d| target(d.trim()))
        .collect();
    GUARDED
        .iter()
        .filter(|(t, _)| !named.iter().any(|n| n.starts_with(t)))
        .fold(
            Targets::new().with_default(LevelFilter::TRACE),
            |g, (t, cap)| g.with_target(*t, *cap),
        )
}

pub fn init() {
    let user = std::env::var("RUST_LOG").ok();
    let spec = filter_spec(user.as_deref());
    let filter = EnvFilter::try_new(&spec).unwrap_or_else(|e| {
        eprintln!("RUST_LOG: {e}; using the default filter");
        EnvFilter::new(DEFAULT_FILTER)
    });
    // Colours only on a terminal: log files and pipes get plain `key=value` text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(guard(user.as_deref()))
        .with(
            tracing_subscriber::fmt::layer()
                .with_target(false)
                .with_ansi(ansi),
        )
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// What a subscriber with the filter for `rust_log` prints of an s3s and an own event.
    fn printed(rust_log: Option<&str>) -> String {
        let out = Arc::new(Mutex::new(Vec::<u8>::new()));
        let sink = out.clone();
        // Composed as `init` composes it.
        let sub = tracing_subscriber::registry()
            .with(EnvFilter::new(filter_spec(rust_log)))
            .with(guard(rust_log))
            .with(tracing_subscriber::fmt::layer().with_writer(move || Sink(sink.clone())));
        tracing::subscriber::with_default(sub, || {
            // As in the gateway: every line of a request is inside its `request` span.
            let _span =
                tracing::info_span!(target: "portcullis::server", "request", id = 1).entered();
            tracing::debug!(target: "s3s::ops::signature", "authorization=AWS4-HMAC-SHA256 secret");
            tracing::debug!(target: "tokio_postgres::query", "parameters: [\"secret_key\"]");
            tracing::debug!(target: "portcullis::server", "own debug line");
        });
        String::from_utf8(out.lock().unwrap().clone()).unwrap()
    }

    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn rust_log_debug_adds_to_the_default_and_keeps_s3s_silent() {
        let by_default = printed(None);
        assert!(!by_default.contains("own debug line"), "{by_default}");
        for spec in [
            "debug",
            "trace",
            "portcullis=debug",
            "debug,sled=info",
            // Span directives naming no target (the review's bypass).
            "[request]=trace",
            "debug,[request]=trace",
            "[request{id}]=trace",
        ] {
            let out = printed(Some(spec));
            assert!(out.contains("own debug line"), "{spec}: {out}");
            assert!(
                !out.contains("secret"),
                "{spec} let s3s or tokio-postgres log: {out}"
            );
        }
        // Only naming s3s turns it on.
        assert!(printed(Some("debug,s3s=debug")).contains("secret"));
        assert!(printed(Some("[request]=trace,s3s=trace")).contains("authorization"));
        // A span directive keeps the default's global level for everything else.
        assert!(filter_spec(Some("[request]=trace")).starts_with("info,"));
    }
}
