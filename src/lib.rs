//! Portcullis: a multi-tenant S3-compatible gateway. The library holds everything; `main.rs` only
//! parses the command line. Start a gateway with [`server::start`] and a validated
//! [`config::Config`] — nothing is global, so tests run many gateways in one process.

pub mod admin;
pub mod backend;
pub mod cluster;
pub mod config;
pub mod error;
pub mod jobs;
pub mod limit;
pub mod meta;
pub mod model;
pub mod pace;
pub mod pipeline;
pub mod s3;
pub mod scanner;
pub mod server;
pub mod telemetry;
pub mod transport;

pub use config::Config;
pub use server::{Running, start};
