#!/usr/bin/env bash
# Runs the same workloads, back to back on this machine, against:
#   direct          s3s-fs (=0.14.1, SigV4 on) over a temp dir — the floor
#   s3s-proxy       s3s-proxy (=0.14.1) in front of that s3s-fs — the featureless peer gateway
#   nginx           nginx as a plain reverse proxy in front of that s3s-fs — the cost of a hop
#   portcullis      Portcullis, local backend, storage.sync = false (s3s-fs does not fsync either)
#   portcullis-s3   Portcullis, s3 backend in front of that same s3s-fs (the issue-4 row: its
#                   64 MiB throughput against direct)
#   portcullis-pg   Portcullis, local backend, metadata on PostgreSQL (a private cluster from
#                   scripts/pg.sh, fsync off like the rest of this table)
#   portcullis-sync Portcullis, local backend, shipped default storage.sync = true (full run only)
# and prints absolute numbers plus, for each Portcullis row, ratios to direct and to s3s-proxy
# measured in the same run, and the peak RSS of each server process.
#
#   bash bench/compare.sh           # full run
#   bash bench/compare.sh --quick   # smoke comparison, under 3 minutes
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1

TOOLS=bench/.tools
cargo build --release --locked -p portcullis -p portcullis-loadgen
[ -x "$TOOLS/bin/s3s-proxy" ] || cargo install --locked --quiet --root "$TOOLS" --version 0.14.1 s3s-proxy
if ! command -v nginx >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq nginx >/dev/null
fi
LOADGEN=target/release/loadgen
AK=ACMEDEVKEY SK=acme-dev-secret

WORK=$(mktemp -d /tmp/pcbench.XXXXXX)
PIDS=()
# shellcheck source=bench/common.sh
source bench/common.sh
trap cleanup EXIT

# --- servers ----------------------------------------------------------------------------------
start_s3s_fs

PROXY_PORT=$(free_port)
AWS_ACCESS_KEY_ID=$AK AWS_SECRET_ACCESS_KEY=$SK AWS_REGION=us-east-1 \
  "$TOOLS/bin/s3s-proxy" --host 127.0.0.1 --port "$PROXY_PORT" --endpoint-url "http://127.0.0.1:$FS_PORT" \
  >"$WORK/s3s-proxy.log" 2>&1 &
PROXY_PID=$!; PIDS+=("$PROXY_PID"); wait_port "$PROXY_PORT"

NGINX_PORT=$(free_port)
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<CONF
worker_processes 2;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
daemon off;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  upstream fs { server 127.0.0.1:$FS_PORT; keepalive 64; }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    client_max_body_size 0;
    proxy_request_buffering off;
    proxy_buffering off;
    proxy_http_version 1.1;
    location / {
      proxy_set_header Host \$http_host;
      proxy_set_header Connection "";
      proxy_pass http://fs;
    }
  }
}
CONF
nginx -c "$WORK/nginx/nginx.conf" &
NGINX_PID=$!; PIDS+=("$NGINX_PID"); wait_port "$NGINX_PORT"

pc() { # name sync [backend]
  start_portcullis "$1" "sync = $2
default_backend = \"${3:-local}\"
$(s3fs_backend)
$(bench_tenant)"
}

# --- workloads --------------------------------------------------------------------------------
if [ "$QUICK" = 1 ]; then
  DUR=2; BIG_OPS=8; LIST_KEYS=1000; LIST_OPS=5; MEM_OPS=16; ROUNDS=1
else
  DUR=15; BIG_OPS=32; LIST_KEYS=10000; LIST_OPS=20; MEM_OPS=64; ROUNDS=3
fi
RESULTS="$WORK/results.jsonl"
run() { # target endpoint pid -- loadgen args
  local target=$1 endpoint=$2 pid=$3; shift 3
  local line
  sync # the previous run's dirty pages are written back before this one starts
  line=$("$LOADGEN" --endpoint "$endpoint" --access-key "$AK" --secret-key "$SK" --bucket "b-$target" --quiet "$@")
  echo "{\"target\":\"$target\",\"rss_mib\":$(peak_rss_mib "$pid"),\"report\":$line}" >>"$RESULTS"
  echo "  $target $*: $line" >&2
}

pc portcullis false
TARGETS=("direct http://127.0.0.1:$FS_PORT $FS_PID"
         "s3s-proxy http://127.0.0.1:$PROXY_PORT $PROXY_PID"
         "nginx http://127.0.0.1:$NGINX_PORT $NGINX_PID"
         "portcullis http://127.0.0.1:$PC_PORT $PC_PID")
pc portcullis-s3 false s3fs
TARGETS+=("portcullis-s3 http://127.0.0.1:$PC_PORT $PC_PID")
# shellcheck source=scripts/pg.sh
source scripts/pg.sh
PIDS+=("$PORTCULLIS_PG_PID")
psql -q "$PORTCULLIS_TEST_PG" -c "CREATE DATABASE bench"
start_portcullis portcullis-pg "sync = false
$(bench_tenant)
[meta]
engine = \"postgres\"
url = \"${PORTCULLIS_TEST_PG%/*}/bench\"
pool_size = 32"
TARGETS+=("portcullis-pg http://127.0.0.1:$PC_PORT $PC_PID")
if [ "$QUICK" = 0 ]; then
  pc portcullis-sync true
  TARGETS+=("portcullis-sync http://127.0.0.1:$PC_PORT $PC_PID")
fi
WORKLOADS=("--workload put --size 64MiB --concurrency 4 --ops $BIG_OPS"
           "--workload get --size 64MiB --concurrency 4 --ops $BIG_OPS"
           "--workload put --size 4KiB --concurrency 16 --duration $DUR"
           "--workload get --size 4KiB --concurrency 16 --duration $DUR"
           "--workload head --size 4KiB --concurrency 16 --duration $DUR"
           "--workload mixed --size 1MiB --concurrency 16 --duration $DUR"
           "--workload list --list-keys $LIST_KEYS --concurrency 1 --ops $LIST_OPS"
           "--workload multipart --size 64MiB --part-size 8MiB --concurrency 4 --ops $((BIG_OPS / 4))")
# Each workload runs on every target back to back, so drift and background writeback hit all
# targets alike instead of whichever happened to run last.
# Large-object runs are bound by disk writeback and vary by ±15 % from run to run, so they are
# repeated ROUNDS times (interleaved) and the report takes the median per target.
for w in "${WORKLOADS[@]}"; do
  rounds=1
  [[ "$w" == *64MiB* ]] && rounds=$ROUNDS
  for _ in $(seq 1 "$rounds"); do
    for t in "${TARGETS[@]}"; do
      # shellcheck disable=SC2086
      run $t $w
    done
  done
done
# Memory under 16 concurrent 64 MiB PUTs (the peak RSS column of this row is the target).
read -r _ PC_EP PC_P <<<"${TARGETS[3]}"
run portcullis "$PC_EP" "$PC_P" --workload put --size 64MiB --concurrency 16 --ops "$MEM_OPS"

python3 bench/report.py "$RESULTS"
cp "$RESULTS" "bench/last-run.jsonl"
