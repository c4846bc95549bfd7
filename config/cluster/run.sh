#!/usr/bin/env bash
# The three-node example: s3s-fs as the shared backend (127.0.0.1:9100), three gateway nodes
# (9001-9003, admin 9011-9013) on the PostgreSQL database of config/postgres.toml, nginx on
# 9000 in front. Run from the repository root: `bash config/cluster/run.sh` to start,
# `bash config/cluster/run.sh stop` to stop. Logs and data go under data/cluster/.
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=data/cluster
if [ "${1:-start}" = stop ]; then
  for f in "$dir"/*.pid; do [ -e "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; rm -f "$f"; done
  nginx -c "$PWD/config/cluster/nginx.conf" -s quit 2>/dev/null || true
  echo "stopped (data kept in $dir; the index in the database)"
  exit 0
fi
mkdir -p "$dir/blobs/portcullis-blobs"
s3s=bench/.tools/bin/s3s-fs
[ -x "$s3s" ] || cargo install --locked --quiet --root bench/.tools --version 0.14.1 --features binary s3s-fs
cargo build --release --locked --quiet -p portcullis
"$s3s" --host 127.0.0.1 --port 9100 --access-key CLUSTEREXAMPLEKEY \
  --secret-key cluster-example-secret "$dir/blobs" >"$dir/s3s-fs.log" 2>&1 &
echo $! >"$dir/s3s-fs.pid"
# Started together: the first creates the schema under the migration lock.
for n in 1 2 3; do
  target/release/portcullis serve --config "config/cluster/node-$n.toml" >"$dir/node-$n.log" 2>&1 &
  echo $! >"$dir/node-$n.pid"
done
nginx -c "$PWD/config/cluster/nginx.conf"
for port in 9001 9002 9003 9000; do
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
done
curl -s -H "Authorization: Bearer cluster-example-admin-token" http://127.0.0.1:9011/health | python3 -c 'import json,sys; h=json.load(sys.stdin); print("nodes:", [n["node_id"] for n in h["cluster"]["nodes"]])'
echo "S3 endpoint: http://127.0.0.1:9000 (ACMEDEVKEY / acme-dev-secret)"
