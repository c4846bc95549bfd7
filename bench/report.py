"""Prints the comparison table of a bench/compare.sh run: absolute numbers, and for each
Portcullis row the ratio to `direct` and to `s3s-proxy` measured in the same run. A workload
that ran several rounds is reported by its median round (by the table's metric)."""
import json
import sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]


def label(r):
    w = r["report"]
    size = w["size"]
    human = f"{size >> 20}MiB" if size >= 1 << 20 else (f"{size >> 10}KiB" if size >= 1024 else f"{size}B")
    return f'{w["workload"]} {human} c{w["concurrency"]}'


def metric(w):
    # Throughput for large objects, operations per second for the rest.
    return w["mib_per_sec"] if w["size"] >= 1 << 20 and w["workload"] != "list" else w["ops_per_sec"]


rounds = {}
for r in rows:
    rounds.setdefault(label(r), {}).setdefault(r["target"], []).append(r)
by = {}
for name, per in rounds.items():
    for t, rs in per.items():
        rs.sort(key=lambda r: metric(r["report"]))
        median = dict(rs[len(rs) // 2])
        median["rss_mib"] = max(r["rss_mib"] for r in rs)
        median["rounds"] = len(rs)
        by.setdefault(name, {})[t] = median

targets = []
for r in rows:
    if r["target"] not in targets:
        targets.append(r["target"])

print(f'| workload | target | rounds | ops/s | MiB/s | p50 ms | p99 ms | max ms | errors | peak RSS MiB | vs direct | vs s3s-proxy | p99 vs direct |')
print('|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
for name, per in by.items():
    for t in targets:
        if t not in per:
            continue
        r = per[t]
        w = r["report"]
        ratio = lambda other: (f'{metric(w) / metric(per[other]["report"]):.2f}' if other in per and metric(per[other]["report"]) > 0 and t.startswith("portcullis") else "")
        p99 = (f'{w["p99_ms"] / per["direct"]["report"]["p99_ms"]:.2f}' if "direct" in per and t.startswith("portcullis") and per["direct"]["report"]["p99_ms"] > 0 else "")
        print(f'| {name} | {t} | {r["rounds"]} | {w["ops_per_sec"]:.1f} | {w["mib_per_sec"]:.1f} | {w["p50_ms"]:.2f} | {w["p99_ms"]:.2f} | {w["max_ms"]:.1f} | {w["errors"]} | {r["rss_mib"]} | {ratio("direct")} | {ratio("s3s-proxy")} | {p99} |')
