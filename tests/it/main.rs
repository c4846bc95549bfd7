//! One integration-test binary. Each test starts its own gateway (in-process, or the real binary
//! as a child) on 127.0.0.1:0 with a temp data dir, and drives it with real clients.

mod harness;
mod pgproxy;
mod services;

mod admin;
mod auth;
mod backends;
mod bench_smoke;
mod buckets;
mod cluster;
mod compat;
mod durability;
mod engines;
mod hardening;
mod hostile;
mod listing;
mod multipart;
mod objects;
mod protection;
mod s3compat;
mod security;
