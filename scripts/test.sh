#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs the real clients (aws CLI, boto3, s3cmd,
# rclone), starts a private PostgreSQL cluster, checks formatting and lints, then runs every test
# (unit, engine conformance on sled and PostgreSQL, integration, client compatibility,
# restart/crash, streaming memory) with nextest on the embedded engine, and the engine-facing
# half of the integration suite (buckets, objects, listing, multipart, quotas, tenancy, auth,
# admin, restarts and the kill -9 crash rounds) again on PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-clients.sh
source scripts/pg.sh
trap 'bash "$PORTCULLIS_PG_DIR/stop.sh" 2>/dev/null || kill "$PORTCULLIS_PG_PID" 2>/dev/null; rm -rf "$PORTCULLIS_PG_DIR"' EXIT
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

# What runs a second time on PostgreSQL: every test whose outcome depends on the metadata
# engine. The backends, clamd, client-compatibility and connection-handling suites stay on sled.
ON_POSTGRES='test(/^(admin|auth|buckets|hostile|listing|multipart|objects|s3compat)::/)
  | test(/^protection::(concurrent_uploads|refusals|a_refused_upload|type_policies|a_body_without)/)
  | test(/^security::(completion_raced|create_multipart_upload_is_admitted|debug_logging)/)
  | test(/^hardening::(a_delimiter_listing|empty_parts|the_open_upload_bound|a_request_with_two|upload_listings)/)
  | (test(/^durability::/) - test(/large_bodies/))'

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --no-fail-fast
  echo "--- the engine-facing integration tests again, on PostgreSQL"
  PORTCULLIS_TEST_ENGINE=postgres cargo nextest run --locked --no-fail-fast -E "$ON_POSTGRES"
else
  cargo test --locked --no-fail-fast
  PORTCULLIS_TEST_ENGINE=postgres cargo test --locked --no-fail-fast --test it -- \
    admin:: auth:: buckets:: hostile:: listing:: multipart:: objects:: s3compat:: durability::
fi
