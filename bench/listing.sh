#!/usr/bin/env bash
# Delimiter listings against plain ones (issue 18): 10 000 keys rolled up by the delimiter `/`
# into 10 000 common prefixes, and into 10, each against the same keys listed without a
# delimiter, on one gateway (local backend, `storage.sync = false`), in alternating runs.
# One op is a whole listing (every page). Prints each run and the median ratio of the pairs
# (delimiter / plain, ops/s); the target is ≥ 0.8 for both.
#
#   bash bench/listing.sh            # 5 pairs per layout
#   PAIRS=9 OPS=20 bash bench/listing.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PAIRS=${PAIRS:-5}
OPS=${OPS:-10}
KEYS=${KEYS:-10000}
AK=ACMEDEVKEY SK=acme-dev-secret
WORK=$(mktemp -d /tmp/pclist.XXXXXX)
PIDS=()
# shellcheck source=bench/common.sh
source bench/common.sh
trap cleanup EXIT

cargo build --release --locked -p portcullis -p portcullis-loadgen
LOADGEN=target/release/loadgen
PORT=$(free_port)
printf '[server]\nlisten = "127.0.0.1:%s"\n[storage]\ndata_dir = "%s"\nsync = false\n%s\n' \
  "$PORT" "$WORK/data" "$(bench_tenant "")" >"$WORK/gw.toml"
target/release/portcullis serve --config "$WORK/gw.toml" >"$WORK/gw.log" 2>&1 &
PIDS+=("$!"); wait_port "$PORT"

run() { # label prefixes delimiter-flag
  "$LOADGEN" --endpoint "http://127.0.0.1:$PORT" --access-key "$AK" --secret-key "$SK" \
    --bucket "tree-$2" --quiet --workload list --list-keys "$KEYS" --list-prefixes "$2" \
    $3 --concurrency 1 --ops "$OPS" |
    python3 -c 'import json,sys; r=json.load(sys.stdin); r["target"]=sys.argv[1]; r["w"]=sys.argv[2]; print(json.dumps(r))' \
      "$1" "$2 prefixes" | tee -a "$WORK/runs.jsonl"
}

for prefixes in "$KEYS" 10; do
  run plain "$prefixes" "" >/dev/null # fills the bucket
  for _ in $(seq 1 "$PAIRS"); do
    run plain "$prefixes" ""
    run delimiter "$prefixes" --delimiter
  done
done

python3 - "$WORK/runs.jsonl" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
assert all(r["errors"] == 0 for r in runs), "a request failed"
print("\ndelimiter / plain, alternating runs (whole listings per second; ratio of each pair)")
for w in dict.fromkeys(r["w"] for r in runs):
    plain = [r for r in runs if r["w"] == w and r["target"] == "plain"][1:]
    delim = [r for r in runs if r["w"] == w and r["target"] == "delimiter"]
    ratios = [d["ops_per_sec"] / p["ops_per_sec"] for p, d in zip(plain, delim)]
    print(f"  {w:16} median {statistics.median(ratios):.2f}  (each: {' '.join(f'{x:.2f}' for x in ratios)};"
          f" plain median {statistics.median(p['ops_per_sec'] for p in plain):.1f}, delimiter {statistics.median(d['ops_per_sec'] for d in delim):.1f} listings/s)")
PY
