#!/usr/bin/env bash
# The issue-4 GET row in isolation: 64 MiB GETs at c4 against one s3s-fs, directly and through
# two Portcullis gateways on the `s3` backend in front of it — one relaying downloads piece by
# piece (read_batch_kib = 0), one with the default batching — in alternating pairs, with the
# CPU each process spent per GiB. Prints one line per run and the median ratios to direct.
#
#   bash bench/relay.sh            # 9 pairs of 32 GETs each (about 8 minutes)
#   PAIRS=3 OPS=16 bash bench/relay.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PAIRS=${PAIRS:-9}
OPS=${OPS:-32}
cargo build --release --locked -p portcullis -p portcullis-loadgen
LOADGEN=target/release/loadgen
AK=ACMEDEVKEY SK=acme-dev-secret
WORK=$(mktemp -d /tmp/pcrelay.XXXXXX)
PIDS=()
# shellcheck source=bench/common.sh
source bench/common.sh
trap cleanup EXIT

start_s3s_fs

pc() { # name extra-backend-keys
  start_portcullis "$1" "sync = false
default_backend = \"s3fs\"
$(s3fs_backend "$2")
$(bench_tenant)"
}
pc off "read_batch_kib = 0"
OFF_PORT=$PC_PORT OFF_PID=$PC_PID
pc batched ""
ON_PORT=$PC_PORT ON_PID=$PC_PID

cpu() { awk '{print ($14 + $15) / 100}' "/proc/$1/stat"; }
# run LABEL PORT GATEWAY_PID: one loadgen run; appends a JSON line to $WORK/runs.jsonl
run() {
  local label=$1 port=$2 gw=${3:-} fs0 gw0=0
  fs0=$(cpu "$FS_PID"); [ -n "$gw" ] && gw0=$(cpu "$gw")
  /usr/bin/time -o "$WORK/time" -f "%U %S" "$LOADGEN" --endpoint "http://127.0.0.1:$port" \
    --access-key "$AK" --secret-key "$SK" --bucket "b-$label" --quiet \
    --workload get --size 64MiB --concurrency 4 --ops "$OPS" >"$WORK/out"
  python3 - "$label" "$OPS" "$(cpu "$FS_PID")" "$fs0" "$( [ -n "$gw" ] && cpu "$gw" || echo 0)" "$gw0" \
    "$WORK/time" "$WORK/out" <<'PY' | tee -a "$WORK/runs.jsonl"
import json, sys
label, ops, fs1, fs0, gw1, gw0, tfile, ofile = sys.argv[1:]
gib = int(ops) * 64 / 1024
user, system = map(float, open(tfile).read().split())
r = json.load(open(ofile))
print(json.dumps({"target": label, "mib_per_sec": round(r["mib_per_sec"], 1),
                  "errors": r["errors"],
                  "cpu_per_gib": {"loadgen": round((user + system) / gib, 2),
                                  "s3s_fs": round((float(fs1) - float(fs0)) / gib, 2),
                                  "gateway": round((float(gw1) - float(gw0)) / gib, 2)}}))
PY
}

# The loadgen writes its 64-object pool on the first run against each bucket and reuses it.
for t in direct:$FS_PORT off:$OFF_PORT batched:$ON_PORT; do
  "$LOADGEN" --endpoint "http://127.0.0.1:${t#*:}" --access-key "$AK" --secret-key "$SK" \
    --bucket "b-${t%%:*}" --quiet --workload get --size 64MiB --concurrency 4 --ops 4 >/dev/null
done
for _ in $(seq 1 "$PAIRS"); do
  run direct "$FS_PORT"
  run off "$OFF_PORT" "$OFF_PID"
  run batched "$ON_PORT" "$ON_PID"
done

python3 - "$WORK/runs.jsonl" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
assert all(r["errors"] == 0 for r in runs), "a GET failed"
by = {t: [r for r in runs if r["target"] == t] for t in ("direct", "off", "batched")}
print(f"\n64 MiB GET c4, {len(by['direct'])} alternating triples (ratio = MiB/s / the direct run just before)")
for t in ("off", "batched"):
    ratios = [x["mib_per_sec"] / d["mib_per_sec"] for d, x in zip(by["direct"], by[t])]
    cpu = {k: round(statistics.median(r["cpu_per_gib"][k] for r in by[t]), 2) for k in ("gateway", "loadgen", "s3s_fs")}
    print(f"  {t:8} median {statistics.median(ratios):.2f} × direct  (each: {' '.join(f'{x:.2f}' for x in ratios)})"
          f"  median CPU s/GiB: gateway {cpu['gateway']}, loadgen {cpu['loadgen']}, s3s-fs {cpu['s3s_fs']}")
d = {k: round(statistics.median(r["cpu_per_gib"][k] for r in by["direct"]), 2) for k in ("loadgen", "s3s_fs")}
print(f"  direct   median CPU s/GiB: loadgen {d['loadgen']}, s3s-fs {d['s3s_fs']}")
PY
