#!/usr/bin/env bash
# Before/after on the hot path (issue 18: sled's work off the async workers, the connection's
# progress watch, the screen's one decision; issue 19: the PostgreSQL commit pipeline, durable
# reservations, bounded calls): the binary of BASE (default: the commit before issue 18)
# against this checkout's, both on the local backend with `storage.sync = false`, in alternating
# runs of each workload (the order flips every pair; `sync` before each run). Prints each run,
# the median ratio head / base of the throughput, and of the gateway's CPU time per operation
# (base / head: above 1, head spends less).
#
#   bash bench/hardening.sh                    # 5 pairs per workload
#   PAIRS=3 BASE=b604fad bash bench/hardening.sh
#   WORKLOADS="get 64MiB 4 64" PAIRS=9 bash bench/hardening.sh
#   TENANT='quota_bytes = 1099511627776' bash bench/hardening.sh   # lines of the bench tenant
#   META=postgres BASE=b641f55 WORKLOADS="put 4KiB 16 3000;get 4KiB 16 3000;put 64MiB 4 32" \
#     bash bench/hardening.sh                  # metadata on PostgreSQL (scripts/pg.sh: a private
#                                              # cluster, fsync off; one database per binary)
set -euo pipefail
cd "$(dirname "$0")/.."
PAIRS=${PAIRS:-5}
BASE=${BASE:-f777028}
AK=ACMEDEVKEY SK=acme-dev-secret
WORK=$(mktemp -d /tmp/pchard.XXXXXX)
PIDS=()
# shellcheck source=bench/common.sh
source bench/common.sh
BASE_TREE="$WORK-base"
trap 'cleanup; git worktree remove --force "$BASE_TREE" 2>/dev/null || true' EXIT

# The base binary, built in a worktree sharing this target directory (dependencies are reused).
git worktree add --force --detach "$BASE_TREE" "$BASE" >/dev/null
CARGO_TARGET_DIR="$(pwd)/target" cargo build --release --locked --manifest-path "$BASE_TREE/Cargo.toml" -p portcullis
cp target/release/portcullis "$WORK/portcullis-base"
# The two checkouts share the target directory, and cargo's fingerprints name the workspace's
# files relative to its root: with the base's sources still there, the head build could be
# taken as fresh (the base binary compared with itself). Gone, and this tree's touched, it
# cannot.
git worktree remove --force "$BASE_TREE"
touch src/lib.rs src/main.rs bench/loadgen/src/lib.rs bench/loadgen/src/main.rs
cargo build --release --locked -p portcullis -p portcullis-loadgen
cp target/release/portcullis "$WORK/portcullis-head"
LOADGEN=target/release/loadgen

META_TABLE() { :; }
if [ "${META:-sled}" = postgres ]; then
  # shellcheck source=scripts/pg.sh
  source scripts/pg.sh
  trap 'cleanup; git worktree remove --force "$BASE_TREE" 2>/dev/null || true; bash "$PORTCULLIS_PG_DIR/stop.sh"; rm -rf "$PORTCULLIS_PG_DIR"' EXIT
  for db in bench_base bench_head; do psql "$PORTCULLIS_TEST_PG" -qc "CREATE DATABASE $db"; done
  META_TABLE() { printf '[meta]\nengine = "postgres"\nurl = "%s"\n' "${PORTCULLIS_TEST_PG%/*}/bench_$1"; }
fi

# Not in a command substitution: PIDS must be this shell's, for the cleanup to stop them.
start() { # name binary; sets PORT and PID
  PORT=$(free_port)
  printf '[server]\nlisten = "127.0.0.1:%s"\n[storage]\ndata_dir = "%s"\nsync = false\n%s\n%s\n' \
    "$PORT" "$WORK/$1-data" "$(META_TABLE "$1")" "$(bench_tenant "${TENANT:-}")" >"$WORK/$1.toml"
  "$2" serve --config "$WORK/$1.toml" >"$WORK/$1.log" 2>&1 &
  PID=$!; PIDS+=("$PID"); wait_port "$PORT"
}
start base "$WORK/portcullis-base"; BASE_PORT=$PORT; BASE_PID=$PID
start head "$WORK/portcullis-head"; HEAD_PORT=$PORT; HEAD_PID=$PID

# CPU seconds (user + system) the process has used so far.
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.3f", ($14 + $15) / hz }' "/proc/$1/stat"; }

run() { # label port pid workload size concurrency ops
  local before; before=$(cpu_s "$3")
  "$LOADGEN" --endpoint "http://127.0.0.1:$2" --access-key "$AK" --secret-key "$SK" \
    --bucket "b-$4-${5,,}" --quiet --workload "$4" --size "$5" --concurrency "$6" --ops "$7" >"$WORK/one.json"
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); r["target"]=sys.argv[2]; r["w"]=sys.argv[3]; r["cpu_s"]=float(sys.argv[5])-float(sys.argv[4]); print(json.dumps(r))' \
    "$WORK/one.json" "$1" "$4 $5 c$6" "$before" "$(cpu_s "$3")" | tee -a "$WORK/runs.jsonl"
}

# WORKLOADS: ";"-separated "workload size concurrency ops" (default: the four below).
IFS=';' read -r -a WORKLOADS <<<"${WORKLOADS:-put 64MiB 4 32;put 4KiB 32 4000;get 64MiB 4 32;get 4KiB 32 4000}"
for w in "${WORKLOADS[@]}"; do
  # shellcheck disable=SC2086
  set -- $w
  for i in $(seq 1 "$PAIRS"); do
    # Each run starts with no dirty pages of the one before (with `sync = false` a 2 GiB run
    # leaves them to the kernel, which writes them back during the next run), and the order
    # flips every pair: with base always first, head paid for base's writeback in every pair.
    if ((i % 2)); then order=(base head); else order=(head base); fi
    for t in "${order[@]}"; do
      sync
      if [ "$t" = base ]; then run base "$BASE_PORT" "$BASE_PID" "$@"; else run head "$HEAD_PORT" "$HEAD_PID" "$@"; fi
    done
  done
done

python3 - "$WORK/runs.jsonl" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
assert all(r["errors"] == 0 for r in runs), "a request failed"
print("\nhead / base, alternating runs (MiB/s for 64 MiB, ops/s for 4 KiB; ratio of each pair)")
for w in dict.fromkeys(r["w"] for r in runs):
    base = [r for r in runs if r["w"] == w and r["target"] == "base"]
    head = [r for r in runs if r["w"] == w and r["target"] == "head"]
    key = "mib_per_sec" if "64MiB" in w else "ops_per_sec"
    ratios = [h[key] / b[key] for b, h in zip(base, head)]
    cpu = [(b["cpu_s"] / b["ops"]) / (h["cpu_s"] / h["ops"]) for b, h in zip(base, head) if h["cpu_s"] > 0]
    print(f"  {w:16} median {statistics.median(ratios):.2f}  (each: {' '.join(f'{x:.2f}' for x in ratios)};"
          f" base median {statistics.median(b[key] for b in base):.1f}, head {statistics.median(h[key] for h in head):.1f})")
    print(f"  {'':16} CPU per op base / head median {statistics.median(cpu):.2f}  (each: {' '.join(f'{x:.2f}' for x in cpu)};"
          f" head {statistics.median(1000 * h['cpu_s'] / h['ops'] for h in head):.2f} ms/op)")
PY
