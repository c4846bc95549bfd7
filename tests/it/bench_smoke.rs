//! Keeps `bench/` from rotting: a few seconds of every load-generator workload against an
//! in-process gateway. It checks that every request succeeded and the report is well-formed —
//! never a speed (CI machines are noisy; speed lives in `bench/compare.sh`).

use std::time::Duration;

use portcullis_loadgen::{Spec, Target, Workload, run};

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_workload_runs_without_errors() {
    let gw = Gw::start().await;
    let target = Target {
        endpoint: gw.endpoint(),
        access_key: ACME.0.into(),
        secret_key: ACME.1.into(),
        region: "us-east-1".into(),
    };
    for (workload, size, ops) in [
        (Workload::Put, 4096, 40),
        (Workload::Get, 4096, 40),
        (Workload::Mixed, 65536, 40),
        (Workload::Head, 0, 40),
        (Workload::List, 0, 3),
        (Workload::Multipart, 11 << 20, 2),
    ] {
        let spec = Spec {
            workload,
            bucket: "bench".into(),
            size,
            concurrency: 4,
            duration: Some(Duration::from_secs(60)),
            ops: Some(ops),
            list_keys: 1500,
            list_prefixes: 0,
            delimiter: false,
            part_size: 5 << 20,
        };
        let r = run(&target, &spec, false).await.unwrap();
        assert_eq!(
            (r.errors, r.first_error.as_deref()),
            (0, None),
            "{workload:?}"
        );
        assert_eq!(r.ops, ops, "{workload:?}");
        assert!(
            r.p50_ms > 0.0 && r.p50_ms <= r.p99_ms && r.p99_ms <= r.max_ms,
            "{r:?}"
        );
        let line: serde_json::Value =
            serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        for field in [
            "ops_per_sec",
            "mib_per_sec",
            "p50_ms",
            "p90_ms",
            "p99_ms",
            "max_ms",
            "errors",
        ] {
            assert!(line[field].is_number(), "{field} in {line}");
        }
    }
    // The LIST workload verified that each listing returned all 1500 keys (it errors otherwise).
    // With a delimiter over 30 prefixes (bench/listing.sh), each listing returns the 30.
    let spec = Spec {
        workload: Workload::List,
        bucket: "bench-tree".into(),
        size: 0,
        concurrency: 2,
        duration: Some(Duration::from_secs(60)),
        ops: Some(3),
        list_keys: 300,
        list_prefixes: 30,
        delimiter: true,
        part_size: 5 << 20,
    };
    let r = run(&target, &spec, false).await.unwrap();
    assert_eq!((r.errors, r.first_error.as_deref(), r.ops), (0, None, 3));
}
