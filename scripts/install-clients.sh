#!/usr/bin/env bash
# Installs what the tests drive and talk to, all real: the aws CLI, boto3 and s3cmd (clients) plus
# moto, gcp-storage-emulator and azure-storage-blob (backend servers and the Azurite container
# setup) in a project venv (.venv); rclone and clamd from Debian; Azurite from npm into
# .ci/tools/azurite; an offline EICAR signature database for clamd in .ci/tools/clamav (no
# signatures ship with Debian's clamav and freshclam cannot reach the internet here).
# Idempotent: re-running skips what is present.
set -euo pipefail
cd "$(dirname "$0")/.."

PY_PKGS=(awscli boto3 requests s3cmd 'moto[server]' gcp-storage-emulator azure-storage-blob)
if [ ! -x .venv/bin/aws ] || [ ! -x .venv/bin/s3cmd ] || [ ! -x .venv/bin/moto_server ] \
  || [ ! -x .venv/bin/gcp-storage-emulator ] \
  || ! .venv/bin/python -c 'import boto3, requests, azure.storage.blob' 2>/dev/null; then
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check "${PY_PKGS[@]}"
fi

APT_PKGS=()
command -v rclone >/dev/null 2>&1 || APT_PKGS+=(rclone)
{ command -v clamd >/dev/null 2>&1 || [ -x /usr/sbin/clamd ]; } || APT_PKGS+=(clamav-daemon clamdscan)
if [ "${#APT_PKGS[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${APT_PKGS[@]}" >/dev/null
fi

# The standard 68-byte EICAR test string, as a body signature matched anywhere in a file (also
# inside zip/gz). clamd names it Eicar-Test-Signature.UNOFFICIAL.
SIGDB=.ci/tools/clamav/db
if [ ! -s "$SIGDB/eicar.ndb" ]; then
  mkdir -p "$SIGDB"
  EICAR='X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*'
  echo "Eicar-Test-Signature:0:*:$(printf '%s' "$EICAR" | sigtool --hex-dump | tr -d '\n')" > "$SIGDB/eicar.ndb"
fi

# Azurite 3.35 is the last release that runs on Node 20.
AZURITE=.ci/tools/azurite/node_modules/.bin/azurite-blob
if [ ! -x "$AZURITE" ]; then
  mkdir -p .ci/tools/azurite
  (cd .ci/tools/azurite && npm install --silent --no-audit --no-fund --prefix . azurite@3.35.0 >/dev/null)
fi

for tool in .venv/bin/aws .venv/bin/s3cmd .venv/bin/moto_server .venv/bin/gcp-storage-emulator \
  "$AZURITE" "$(command -v rclone)" "$(command -v curl)" "$(command -v clamd || echo /usr/sbin/clamd)"; do
  [ -x "$tool" ] || { echo "install-clients: $tool missing" >&2; exit 1; }
done
echo "clients: $(.venv/bin/aws --version 2>&1 | cut -d' ' -f1), boto3 $(.venv/bin/python -c 'import boto3; print(boto3.__version__)'), $(.venv/bin/s3cmd --version), $(rclone version | head -1)"
echo "scanner: $(/usr/sbin/clamd --version), signatures: $(cat "$SIGDB/eicar.ndb" | cut -d: -f1)"
echo "backends: moto $(.venv/bin/python -c 'import moto; print(moto.__version__)'), gcp-storage-emulator, azurite $("$AZURITE" --version)"
