//! `loadgen`: the command line of the load generator. Prints a human line and a JSON line per run.

use std::time::Duration;

use clap::Parser;
use portcullis_loadgen::{Spec, Target, Workload, parse_size, run};

#[derive(Parser)]
#[command(about = "S3 load generator: throughput and latency percentiles against any S3 endpoint")]
struct Cli {
    #[arg(long, default_value = "http://127.0.0.1:9000")]
    endpoint: String,
    #[arg(long, default_value = "ACMEDEVKEY")]
    access_key: String,
    #[arg(long, default_value = "acme-dev-secret")]
    secret_key: String,
    #[arg(long, default_value = "us-east-1")]
    region: String,
    #[arg(long, default_value = "loadgen")]
    bucket: String,
    #[arg(long, value_enum, default_value = "put")]
    workload: Workload,
    /// Object size: 4KiB, 1MiB, 64MiB, ...
    #[arg(long, default_value = "4KiB", value_parser = parse_size)]
    size: u64,
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Seconds to run (default 10 when --ops is not given).
    #[arg(long)]
    duration: Option<u64>,
    /// Number of operations to run.
    #[arg(long)]
    ops: Option<u64>,
    #[arg(long, default_value_t = 10_000)]
    list_keys: usize,
    /// LIST: spread the keys over this many common prefixes (0: none).
    #[arg(long, default_value_t = 0)]
    list_prefixes: usize,
    /// LIST: list with the delimiter `/`.
    #[arg(long)]
    delimiter: bool,
    #[arg(long, default_value = "8MiB", value_parser = parse_size)]
    part_size: u64,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let target = Target {
        endpoint: cli.endpoint,
        access_key: cli.access_key,
        secret_key: cli.secret_key,
        region: cli.region,
    };
    let duration = match (cli.duration, cli.ops) {
        (None, None) => Some(Duration::from_secs(10)),
        (d, _) => d.map(Duration::from_secs),
    };
    let spec = Spec {
        workload: cli.workload,
        bucket: cli.bucket,
        size: cli.size,
        concurrency: cli.concurrency.max(1),
        duration,
        ops: cli.ops,
        list_keys: cli.list_keys,
        list_prefixes: cli.list_prefixes,
        delimiter: cli.delimiter,
        part_size: cli.part_size,
    };
    match run(&target, &spec, !cli.quiet).await {
        Ok(r) => {
            eprintln!(
                "{:?} size={} c={}: {} ops in {:.1}s, {:.1} ops/s, {:.1} MiB/s, p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {} errors",
                r.workload,
                r.size,
                r.concurrency,
                r.ops,
                r.secs,
                r.ops_per_sec,
                r.mib_per_sec,
                r.p50_ms,
                r.p90_ms,
                r.p99_ms,
                r.max_ms,
                r.errors
            );
            if let Some(e) = &r.first_error {
                eprintln!("first error: {e}");
            }
            println!("{}", serde_json::to_string(&r).expect("report serializes"));
            if r.errors > 0 {
                std::process::ExitCode::FAILURE
            } else {
                std::process::ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
