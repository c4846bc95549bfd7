#!/usr/bin/env bash
# One node against three, on this machine, in the same run: each target is nginx in front of
# its nodes (one upstream, or three), every node on PostgreSQL (a private cluster, scripts/pg.sh;
# one database per target) and s3s-fs as the shared S3 backend. Alternating runs of each
# workload; prints each run, the median ratio three / one, the CPU each request costs the
# gateways and PostgreSQL, and the PostgreSQL statements a 4 KiB PUT makes.
#
#   bash bench/cluster.sh                        # 3 pairs per workload
#   PAIRS=5 WORKLOADS="put 4KiB 32 4000" bash bench/cluster.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PAIRS=${PAIRS:-3}
AK=BENCHKEY SK=bench-secret
WORK=$(mktemp -d /tmp/pccluster.XXXXXX)
PIDS=()
# shellcheck source=bench/common.sh
source bench/common.sh
# shellcheck source=scripts/pg.sh
source scripts/pg.sh
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
trap 'cleanup; kill "$PORTCULLIS_PG_PID" 2>/dev/null || true; sleep 1; rm -rf "$PORTCULLIS_PG_DIR"' EXIT
command -v nginx >/dev/null || { echo "nginx is needed (Debian: apt-get install nginx-light)" >&2; exit 1; }

cargo build --release --locked -p portcullis -p portcullis-loadgen
LOADGEN=target/release/loadgen
start_s3s_fs
psql_admin() { "$PG_BIN/psql" -qtA "$PORTCULLIS_TEST_PG" -c "$1"; }
psql_admin "CREATE DATABASE one" >/dev/null
psql_admin "CREATE DATABASE three" >/dev/null
DB_BASE=${PORTCULLIS_TEST_PG%/*}

GW_PIDS=()
node() { # name database
  start_portcullis "$1" "$(printf 'default_backend = "s3fs"\nsync = false\n[meta]\nengine = "postgres"\nurl = "%s/%s"\n[cluster]\nnode_id = "%s"\n%s\n%s' \
    "$DB_BASE" "$2" "$1" "$(bench_tenant)" "$(s3fs_backend)")"
  GW_PIDS+=("$PC_PID")
}
lb() { # name port upstream-ports...
  local name=$1 port=$2; shift 2
  mkdir -p "$WORK/$name"
  {
    echo "daemon off; worker_processes 1; pid $WORK/$name/nginx.pid; error_log $WORK/$name/error.log warn;"
    echo "events { worker_connections 4096; }"
    echo "http { access_log off; client_body_temp_path $WORK/$name/body; proxy_temp_path $WORK/$name/proxy;"
    echo "  upstream nodes { keepalive 128;"
    for p in "$@"; do echo "    server 127.0.0.1:$p;"; done
    echo "  }"
    echo "  server { listen 127.0.0.1:$port; client_max_body_size 0; proxy_request_buffering off; proxy_buffering off; proxy_http_version 1.1;"
    echo "    location / { proxy_pass http://nodes; proxy_set_header Host \$http_host; proxy_set_header Connection \"\"; } }"
    echo "}"
  } >"$WORK/$name/nginx.conf"
  nginx -c "$WORK/$name/nginx.conf" -p "$WORK/$name" 2>"$WORK/$name/stderr" &
  PIDS+=("$!"); wait_port "$port"
}
node one-1 one; ONE=("$PC_PORT")
THREE=()
for n in 1 2 3; do node "three-$n" three; THREE+=("$PC_PORT"); done
LB1=$(free_port); lb lb-one "$LB1" "${ONE[@]}"
LB3=$(free_port); lb lb-three "$LB3" "${THREE[@]}"
sleep 3 # past the nodes' first heartbeats: quota admissions may go the fast way

# CPU seconds (user + system) so far of the gateways and of every PostgreSQL process.
cpu() {
  python3 - "$PORTCULLIS_PG_PID" "${GW_PIDS[@]}" <<'PY'
import os, sys
hz = os.sysconf("SC_CLK_TCK")
pg, gws = int(sys.argv[1]), {int(p) for p in sys.argv[2:]}
gw = db = 0.0
for d in os.listdir("/proc"):
    if not d.isdigit():
        continue
    try:
        f = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        continue
    t = (int(f[11]) + int(f[12])) / hz
    if int(d) in gws:
        gw += t
    elif int(d) == pg or int(f[1]) == pg:
        db += t
print(f"{gw} {db}")
PY
}

run() { # label port workload size concurrency ops
  local before after
  before=$(cpu)
  "$LOADGEN" --endpoint "http://127.0.0.1:$2" --access-key "$AK" --secret-key "$SK" \
    --bucket "b-$3-${4,,}" --quiet --workload "$3" --size "$4" --concurrency "$5" --ops "$6" >"$WORK/run.json"
  after=$(cpu)
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); r["target"]=sys.argv[2]; r["w"]=sys.argv[3]
b=list(map(float,sys.argv[4].split())); a=list(map(float,sys.argv[5].split()))
r["gw_cpu_ms_per_op"]=(a[0]-b[0])*1000/r["ops"]; r["pg_cpu_ms_per_op"]=(a[1]-b[1])*1000/r["ops"]
print(json.dumps(r))' "$WORK/run.json" "$1" "$3 $4 c$5" "$before" "$after" | tee -a "$WORK/runs.jsonl"
}

# WORKLOADS: ";"-separated "workload size concurrency ops".
IFS=';' read -r -a WORKLOADS <<<"${WORKLOADS:-put 4KiB 32 4000;get 4KiB 32 4000;put 64MiB 8 32;get 64MiB 8 32}"
for w in "${WORKLOADS[@]}"; do
  # shellcheck disable=SC2086
  set -- $w
  for _ in $(seq 1 "$PAIRS"); do
    run one "$LB1" "$@"
    run three "$LB3" "$@"
  done
done

# Statements per 4 KiB PUT: every statement logged for a run of 200 PUTs through one node.
psql_admin "ALTER SYSTEM SET log_min_duration_statement = 0" >/dev/null
psql_admin "SELECT pg_reload_conf()" >/dev/null
sleep 1
lines_before=$(wc -l <"$PORTCULLIS_PG_DIR/server.log")
"$LOADGEN" --endpoint "http://127.0.0.1:${ONE[0]}" --access-key "$AK" --secret-key "$SK" \
  --bucket b-statements --quiet --workload put --size 4KiB --concurrency 1 --ops 200 >/dev/null
sleep 1
psql_admin "ALTER SYSTEM RESET log_min_duration_statement" >/dev/null
psql_admin "SELECT pg_reload_conf()" >/dev/null
tail -n +"$((lines_before + 1))" "$PORTCULLIS_PG_DIR/server.log" >"$WORK/statements.log"

python3 - "$WORK/runs.jsonl" "$WORK/statements.log" <<'PY'
import json, re, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
assert all(r["errors"] == 0 for r in runs), "a request failed"
print("\nthree nodes / one node behind nginx, alternating runs (MiB/s for 64 MiB, ops/s for 4 KiB)")
for w in dict.fromkeys(r["w"] for r in runs):
    one = [r for r in runs if r["w"] == w and r["target"] == "one"]
    three = [r for r in runs if r["w"] == w and r["target"] == "three"]
    key = "mib_per_sec" if "64MiB" in w else "ops_per_sec"
    ratios = [t[key] / o[key] for o, t in zip(one, three)]
    med = lambda rs, k: statistics.median(r[k] for r in rs)
    print(f"  {w:16} median {statistics.median(ratios):.2f}  (each: {' '.join(f'{x:.2f}' for x in ratios)};"
          f" one {med(one, key):.1f}, three {med(three, key):.1f};"
          f" CPU ms/op gateway {med(one, 'gw_cpu_ms_per_op'):.3f} / {med(three, 'gw_cpu_ms_per_op'):.3f},"
          f" PostgreSQL {med(one, 'pg_cpu_ms_per_op'):.3f} / {med(three, 'pg_cpu_ms_per_op'):.3f})")
text = open(sys.argv[2]).read()
stmts = re.findall(r"duration: [0-9.]+ ms  (?:statement|execute [^:]*): (.*)", text)
kinds = {}
for s in stmts:
    k = s.split()[0].upper() if s.split() else "?"
    kinds[k] = kinds.get(k, 0) + 1
print(f"\nPostgreSQL statements per 4 KiB PUT (200 PUTs, one at a time, one node): {len(stmts) / 200:.1f}"
      f"  ({', '.join(f'{k} {v / 200:.1f}' for k, v in sorted(kinds.items()))})")
PY
