#!/usr/bin/env bash
# The aws CLI against Portcullis: mb/cp/sync/ls/rm/rb, a 20 MiB multipart round trip compared
# byte for byte, and presigned GETs (SigV4 and the CLI v1's default SigV2) fetched with curl. Needs ENDPOINT, AK, SK, WORK, BIN.
set -euo pipefail
export AWS_ACCESS_KEY_ID="$AK" AWS_SECRET_ACCESS_KEY="$SK" AWS_DEFAULT_REGION=us-east-1
export AWS_CONFIG_FILE="$WORK/aws.cfg" AWS_SHARED_CREDENTIALS_FILE=/dev/null
# signature_version: `aws s3 presign` signs with SigV2 unless told otherwise (both are tested).
printf '[default]\ns3 =\n  addressing_style = path\n  signature_version = s3v4\n' > "$AWS_CONFIG_FILE"
aws() { "$BIN/aws" --endpoint-url "$ENDPOINT" "$@"; }
s3() { aws s3 "$@"; }
q() { aws s3 "$@" --no-progress; }   # cp and sync without progress bars; warnings (exit 2) still print
cd "$WORK"

s3 mb s3://cli-bucket
head -c 20971520 /dev/urandom > big.bin          # 20 MiB: multipart with the CLI's 8 MiB parts
q cp big.bin s3://cli-bucket/dir/big.bin
q cp s3://cli-bucket/dir/big.bin big.back
cmp big.bin big.back
etag=$(aws s3api head-object --bucket cli-bucket --key dir/big.bin --query ETag --output text)
[[ "$etag" == *-3\" ]] || { echo "expected a 3-part multipart ETag, got $etag"; exit 1; }

mkdir -p tree/sub && echo one > tree/a.txt && echo two > tree/sub/b.txt && echo "spaced out" > "tree/sub/with space.txt"
q sync tree s3://cli-bucket/tree
listing=$(aws s3 ls --recursive s3://cli-bucket/tree/)
for k in tree/a.txt tree/sub/b.txt "tree/sub/with space.txt"; do
  grep -qF "$k" <<<"$listing" || { echo "missing $k in: $listing"; exit 1; }
done
echo three > tree/c.txt
q sync tree s3://cli-bucket/tree --delete
n=$(aws s3 ls --recursive s3://cli-bucket/tree/ | wc -l)
[ "$n" = 4 ] || { echo "expected 4 objects after sync --delete, listed $n"; exit 1; }
mkdir back && q sync s3://cli-bucket/tree back && diff -r tree back

url=$(aws s3 presign s3://cli-bucket/tree/a.txt --expires-in 300)
# Each check says what it got: a silent `[ … ]` failing under `set -e` tells nothing.
expect() { grep -qF -- "$1" <<<"$2" || { echo "expected '$1' from $3, got: $2"; exit 1; }; }
expect one "$(curl -s "$url")" "a SigV4 presigned GET"
# The same URL with one hex digit of its signature changed.
if [ "${url: -1}" = a ]; then bad="${url%?}b"; else bad="${url%?}a"; fi
expect 403 "$(curl -s -o /dev/null -w '%{http_code}' "$bad")" "a SigV4 URL with its signature changed"
# Without that setting the CLI signs with SigV2: accepted too, within the same 7 days.
printf '[default]\ns3 =\n  addressing_style = path\n' > "$WORK/aws-v2.cfg"
v2() { AWS_CONFIG_FILE="$WORK/aws-v2.cfg" aws s3 presign "$@"; }
url=$(v2 s3://cli-bucket/tree/a.txt --expires-in 300)
[[ "$url" == *"Signature="* && "$url" != *"X-Amz-Signature="* ]] || { echo "expected a SigV2 URL: $url"; exit 1; }
expect one "$(curl -s "$url")" "a SigV2 presigned GET ($url)"
# The URL rebuilt around a forged signature (not `${url/$sig/…}`: a signature that begins with
# `%2B` or `%2F` — an encoded `+` or `/` — would read as a `%` pattern, anchored at the end,
# and leave the URL unchanged).
rest=${url#*Signature=}
sig=${rest%%&*}
tail=""; [[ "$rest" == *"&"* ]] && tail="&${rest#*&}"
if [ "${sig:0:1}" = A ]; then forged="B${sig:1}"; else forged="A${sig:1}"; fi
forged_url="${url%%Signature=*}Signature=${forged}${tail}"
[ "$forged_url" != "$url" ] || { echo "the forged URL is the URL: $url"; exit 1; }
expect SignatureDoesNotMatch "$(curl -s "$forged_url")" "a forged SigV2 signature ($forged_url)"
short=$(v2 s3://cli-bucket/tree/a.txt --expires-in 1)
sleep 2
expect "Request has expired" "$(curl -s "$short")" "an expired SigV2 URL ($short, now $(date +%s))"
expect AuthorizationQueryParametersError "$(curl -s "$(v2 s3://cli-bucket/tree/a.txt --expires-in 691200)")" "an 8-day SigV2 URL"

s3 rm --recursive s3://cli-bucket/ --only-show-errors
s3 rb s3://cli-bucket
if aws s3 ls s3://cli-bucket 2>/dev/null; then echo "bucket still exists after rb"; exit 1; fi
echo "aws cli: ok"
