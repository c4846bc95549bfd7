#!/usr/bin/env bash
# Installs the real S3 clients the compatibility tests drive: the aws CLI, boto3 and s3cmd in a
# project venv (.venv), and rclone from Debian. Idempotent: re-running skips what is present.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/aws ] || [ ! -x .venv/bin/s3cmd ] || ! .venv/bin/python -c 'import boto3' 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check awscli boto3 s3cmd
fi

if ! command -v rclone >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq rclone >/dev/null
fi

for tool in .venv/bin/aws .venv/bin/s3cmd "$(command -v rclone)" "$(command -v curl)"; do
  [ -x "$tool" ] || { echo "install-clients: $tool missing" >&2; exit 1; }
done
echo "clients: $(.venv/bin/aws --version 2>&1 | cut -d' ' -f1), boto3 $(.venv/bin/python -c 'import boto3; print(boto3.__version__)'), $(.venv/bin/s3cmd --version), $(rclone version | head -1)"
