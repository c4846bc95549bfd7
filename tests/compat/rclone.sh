#!/usr/bin/env bash
# rclone against Portcullis: copy a tree, verify with check, purge. Needs ENDPOINT, AK, SK, WORK.
set -euo pipefail
export RCLONE_CONFIG=/dev/null
export RCLONE_CONFIG_PC_TYPE=s3 RCLONE_CONFIG_PC_PROVIDER=Other RCLONE_CONFIG_PC_ENV_AUTH=false \
  RCLONE_CONFIG_PC_ACCESS_KEY_ID="$AK" RCLONE_CONFIG_PC_SECRET_ACCESS_KEY="$SK" \
  RCLONE_CONFIG_PC_ENDPOINT="$ENDPOINT" RCLONE_CONFIG_PC_REGION=us-east-1 \
  RCLONE_CONFIG_PC_FORCE_PATH_STYLE=true
rclone() { env -u AWS_CA_BUNDLE rclone "$@"; }
cd "$WORK"
mkdir -p src/deep/er
for i in 1 2 3; do head -c $((i * 100000)) /dev/urandom > "src/f$i.bin"; done
head -c 12582912 /dev/urandom > src/deep/er/large.bin   # above rclone's multipart cutoff
echo "unicode" > "src/deep/ünï cødé.txt"
rclone mkdir pc:rclone-bucket
rclone copy src pc:rclone-bucket/data
rclone check src pc:rclone-bucket/data
grep -q "ünï cødé.txt" <<<"$(rclone lsf -R pc:rclone-bucket/data)"
rclone purge pc:rclone-bucket
if rclone lsf pc:rclone-bucket >/dev/null 2>&1; then echo "bucket still exists after purge"; exit 1; fi
echo "rclone: ok"
