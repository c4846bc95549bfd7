#!/usr/bin/env bash
# s3cmd against Portcullis, without a config file. Needs ENDPOINT, AK, SK, WORK, BIN.
set -euo pipefail
hostport=${ENDPOINT#http://}
s3cmd() { "$BIN/s3cmd" -c /dev/null --access_key="$AK" --secret_key="$SK" --host="$hostport" \
  --host-bucket="$hostport" --no-ssl --region=us-east-1 "$@"; }
cd "$WORK"
s3cmd mb s3://s3cmd-bucket
head -c 7340032 /dev/urandom > file.bin             # 7 MiB: s3cmd uploads it in parts
s3cmd put --multipart-chunk-size-mb=5 file.bin s3://s3cmd-bucket/path/file.bin
grep -q file.bin <<<"$(s3cmd ls s3://s3cmd-bucket/path/)"
s3cmd get s3://s3cmd-bucket/path/file.bin file.back
cmp file.bin file.back
grep -q "7340032" <<<"$(s3cmd info s3://s3cmd-bucket/path/file.bin)"
# signurl makes a SigV2 presigned GET (an expiry in seconds from now with `+`).
url=$(s3cmd signurl s3://s3cmd-bucket/path/file.bin +300)
curl -sf -o signed.back "$url"
cmp file.bin signed.back
s3cmd del s3://s3cmd-bucket/path/file.bin
s3cmd rb s3://s3cmd-bucket
echo "s3cmd: ok"
