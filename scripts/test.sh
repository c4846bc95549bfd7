#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs the real clients (aws CLI, boto3, s3cmd,
# rclone), checks formatting and lints, then runs every test (unit, integration, client
# compatibility, restart/crash, streaming memory) with nextest.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-clients.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --no-fail-fast
else
  cargo test --locked --no-fail-fast
fi
