//! The `portcullis` command line. Everything it does is in the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    version,
    about = "Portcullis: a multi-tenant S3-compatible object gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Configuration file.
        #[arg(long, default_value = "config/portcullis.toml")]
        config: PathBuf,
        /// Address of the S3 listener (overrides server.listen).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Data directory (overrides storage.data_dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Check a configuration file and exit.
    CheckConfig {
        #[arg(long, default_value = "config/portcullis.toml")]
        config: PathBuf,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    portcullis::telemetry::init();
    match Cli::parse().command {
        Command::Serve {
            config,
            listen,
            data_dir,
        } => {
            let mut cfg = match portcullis::Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("portcullis: {e}");
                    return ExitCode::from(2);
                }
            };
            if let Some(l) = listen {
                cfg.listen = l;
            }
            if let Some(d) = data_dir {
                cfg.set_data_dir(d);
            }
            match portcullis::start(cfg).await {
                Ok(running) => {
                    running.serve_until_signal().await;
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("portcullis: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CheckConfig { config } => match portcullis::Config::load(&config) {
            Ok(_) => {
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("portcullis: {e}");
                ExitCode::from(2)
            }
        },
    }
}
