//! The admin API: JSON over HTTP on its own listener, bearer-token protected (off when no token
//! is configured). It manages tenants and access keys at run time, reports health, and can run a
//! sweeper pass on demand.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | /health | liveness: `{"status"}` only without the token (200 `ok`/`degraded`, 503 `unavailable`); with it, also the metadata store, every backend's and the scanner's state, the workers, and the nodes of the cluster and their leases (whose names carry tenant and bucket names) |
//! | GET | /metrics | Prometheus text: records read by listings |
//! | GET, POST | /tenants | list, create `{"id", "display_name"?, "backend"?, "backend_container"?, "backend_prefix"?, "locations"?}` |
//! | DELETE | /tenants/{id} | delete (refused while it owns buckets) |
//! | GET, POST | /tenants/{id}/keys | list (no secrets), create `{"user", "role", "access_key"?, "secret_key"?}` |
//! | DELETE | /tenants/{id}/keys/{access_key} | revoke |
//! | POST | /sweep | run one sweeper pass now |
//! | GET | /cluster | the nodes sharing the metadata store (heard from within the node timeout) and the leases they hold |
//! | GET | /workers | every background worker (sweeper, deleter, scan-retries): running or stopped, passes, last pass, last error |
//! | GET | /tenants/{id}/usage[?verify=true] | usage and limits of the tenant and each bucket, its open multipart uploads, its writes in flight and what they hold reserved, who last changed its data through this node (`last_commit`); `verify` recomputes it from the index and reports drift |
//! | PUT | /tenants/{id}/quota | set the tenant's limits `{"bytes"?, "objects"?}` (absent = unlimited) |
//! | PUT | /tenants/{id}/policy | set the default policy of the tenant's buckets |
//! | GET | /tenants/{id}/buckets/{bucket}/policy | the bucket's own settings and the policy in force |
//! | PUT | /tenants/{id}/buckets/{bucket}/quota, .../policy | set one bucket's limits or policy |
//! | GET, POST | /scans | list rescan jobs; start one `{"tenant"?, "bucket"?}` |
//! | GET | /scans/{id} | one job's progress |
//! | POST | /scans/pending | retry the objects stored unscanned now |

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use rand::Rng;
use serde::Deserialize;
use serde_json::json;

use crate::backend::Backends;
use crate::config::{Config, valid_access_key, valid_secret, valid_tenant_id};
use crate::meta::{self, Change, Commit, EngineError, Meta, MetaError, Role, Stamp};

const MAX_BODY: usize = 64 * 1024;

#[derive(Clone)]
pub struct State {
    pub meta: Arc<Meta>,
    pub backends: Arc<Backends>,
    pub token: String,
    pub sweeper: crate::jobs::sweeper::Sweeper,
    pub worker: Option<crate::jobs::scan::Worker>,
    pub scanner: Option<Arc<crate::scanner::Scanner>>,
    /// What every bucket's policy resolves against (as the S3 side uses it).
    pub rules: crate::pipeline::policy::Rules,
    /// Writes in flight, for usage and health reports.
    pub in_flight: Arc<crate::s3::InFlight>,
    /// This node's membership of the nodes sharing the store.
    pub node: Arc<crate::cluster::Node>,
    /// The background workers' state.
    pub workers: crate::jobs::runner::Board,
    pub config: Config,
}

#[derive(Debug, thiserror::Error)]
enum AdminError {
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Meta(#[from] MetaError),
}

impl AdminError {
    fn response(&self) -> Response<Full<Bytes>> {
        let (status, msg) = match self {
            AdminError::Unauthorized => (StatusCode::UNAUTHORIZED, self.to_string()),
            AdminError::NotFound => (StatusCode::NOT_FOUND, self.to_string()),
            AdminError::BadRequest(m) => (StatusCode::BAD_REQUEST, m.clone()),
            AdminError::Meta(e) => match e {
                MetaError::NoSuchTenant | MetaError::NoSuchAccessKey => {
                    (StatusCode::NOT_FOUND, e.to_string())
                }
                MetaError::TenantExists
                | MetaError::AccessKeyExists
                | MetaError::TenantNotEmpty => (StatusCode::CONFLICT, e.to_string()),
                MetaError::Engine(_) | MetaError::Contended => {
                    tracing::error!(error = %e, "admin request failed");
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the metadata store is unavailable; retry".to_string(),
                    )
                }
                _ => {
                    tracing::error!(error = %e, "admin request failed");
                    (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal error".to_string(),
                    )
                }
            },
        };
        json_response(status, &json!({ "error": msg }))
    }
}

fn json_response(status: StatusCode, v: &serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())))
        .expect("static response parts")
}

/// Compares in time independent of where the strings differ and of their lengths: both are
/// hashed first, so neither the token's length nor a common prefix shows in the timing.
fn same(a: &[u8], b: &[u8]) -> bool {
    use s3s::crypto::Checksum as _;
    use subtle::ConstantTimeEq as _;
    let (a, b) = (
        s3s::crypto::Sha256::checksum(a),
        s3s::crypto::Sha256::checksum(b),
    );
    a[..].ct_eq(&b[..]).into()
}

fn random_string(len: usize, alphabet: &[u8]) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
        .collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    id: String,
    display_name: Option<String>,
    backend: Option<String>,
    backend_container: Option<String>,
    backend_prefix: Option<String>,
    #[serde(default)]
    locations: Vec<String>,
    #[serde(default)]
    quota: meta::Limits,
    #[serde(default)]
    policy: meta::Policy,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NewScan {
    tenant: Option<String>,
    bucket: Option<String>,
}

fn valid_policy(p: &meta::Policy) -> Result<(), AdminError> {
    p.validate()
        .map_err(|e| AdminError::BadRequest(e.to_string()))
}

/// The usage report of a tenant; with `verify`, recomputed from the index and compared.
async fn usage_report(
    state: &State,
    id: &str,
    verify: bool,
) -> Result<serde_json::Value, AdminError> {
    let m = &state.meta;
    let t = m.tenant(id).await?.ok_or(MetaError::NoSuchTenant)?;
    let recorded = m.usage(id, None).await?;
    let mut buckets = serde_json::Map::new();
    for b in m.buckets(id).await? {
        let quota = t.buckets.get(&b.name).map(|s| s.quota).unwrap_or_default();
        buckets.insert(
            b.name.clone(),
            json!({
                "usage": m.usage(id, Some(&b.name)).await?,
                "quota": quota,
                // On every node: DeleteBucket is refused while this is not 0.
                "writes_in_flight": m.bucket_writes_in_flight(id, &b.name).await?,
            }),
        );
    }
    // Open multipart uploads count against `server.max_open_uploads`, their part records
    // against `server.max_open_parts`; their parts' bytes are in the usage already.
    let open = m.open_uploads(id).await?;
    let mut out = json!({
        "tenant": id,
        "usage": recorded,
        "quota": t.quota,
        "open_uploads": open.uploads,
        "open_parts": open.parts,
        // Writes between admission and answer, and what they hold reserved per limited scope:
        // 0 and {} once the tenant is idle, whatever failed before.
        "writes_in_flight": state.in_flight.of(id),
        "reserved": m.reserved_of(id).await?.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
        // Who last changed the tenant's data through this node (an access key with the
        // request's id, the admin API, a worker), and when; null before the first change.
        "last_commit": m.last_commit(id),
        "buckets": buckets,
    });
    if verify {
        let (total, per) = m.computed_usage(id).await?;
        let mut drift = Vec::new();
        if total != recorded {
            drift.push(json!({ "scope": "tenant", "recorded": recorded, "computed": total }));
        }
        for (b, computed) in per {
            let rec = m.usage(id, Some(&b)).await?;
            if rec != computed {
                drift.push(json!({ "scope": format!("bucket {b}"), "recorded": rec, "computed": computed }));
            }
        }
        let computed = m.computed_open_uploads(id).await?;
        if computed != open {
            drift.push(json!({ "scope": "open uploads", "recorded": open, "computed": computed }));
        }
        out["verified"] = json!(drift.is_empty());
        out["drift"] = json!(drift);
    }
    Ok(out)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    user: Option<String>,
    role: Option<Role>,
    access_key: Option<String>,
    secret_key: Option<String>,
}

async fn body_json<T: for<'de> Deserialize<'de>>(req: Request<Incoming>) -> Result<T, AdminError> {
    let bytes = Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| AdminError::BadRequest(format!("reading the body: {e}")))?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| AdminError::BadRequest(format!("invalid JSON: {e}")))
}

fn key_json(k: &meta::AccessKey) -> serde_json::Value {
    json!({ "access_key": k.access_key, "tenant": k.tenant, "user": k.user, "role": k.role, "created_ms": k.created_ms })
}

/// Liveness for anyone (a load balancer has no token); the detail (tenant and bucket names in
/// lease names, node ids, addresses, workers' errors) only with the token.
/// How long `/health` waits for the metadata store: a load balancer's probe gets its 503
/// within this, not after the store's own bound (`[meta] timeout_ms`).
const HEALTH_BOUND: std::time::Duration = std::time::Duration::from_secs(2);

async fn health(state: &State, authorized: bool) -> Response<Full<Bytes>> {
    // Without its index the gateway serves nothing: 503, so a load balancer takes the node
    // out until the store is back.
    let probe = tokio::time::timeout(HEALTH_BOUND, state.meta.tenants());
    let meta = match probe.await.unwrap_or_else(|_| {
        Err(MetaError::Engine(EngineError::Store(format!(
            "no answer within {} ms",
            HEALTH_BOUND.as_millis()
        ))))
    }) {
        Ok(_) => json!({ "engine": state.meta.engine_kind(), "ok": true }),
        Err(e) => {
            let body = if authorized {
                json!({
                    "status": "unavailable",
                    "meta": { "engine": state.meta.engine_kind(), "ok": false, "error": e.to_string() },
                })
            } else {
                json!({ "status": "unavailable" })
            };
            return json_response(StatusCode::SERVICE_UNAVAILABLE, &body);
        }
    };
    // The gateway itself is up; a backend that is down affects only the tenants on it, so
    // it degrades the answer instead of failing it.
    let backends = state.backends.health().await;
    let scanner = match &state.scanner {
        Some(s) => Some(match s.ping().await {
            Ok(()) => json!({ "ok": true, "engine": s.engine().await }),
            Err(e) => json!({ "ok": false, "error": e }),
        }),
        None => None,
    };
    let scanner_ok = scanner.as_ref().is_none_or(|s| s["ok"] == json!(true));
    let status = if backends.iter().all(|b| b.ok) && scanner_ok {
        "ok"
    } else {
        "degraded"
    };
    if !authorized {
        return json_response(StatusCode::OK, &json!({ "status": status }));
    }
    let cluster = match tokio::time::timeout(HEALTH_BOUND, state.node.view()).await {
        Ok(Ok(v)) => json!(v),
        Ok(Err(e)) => json!({ "error": e.to_string() }),
        Err(_) => json!({ "error": "no answer from the metadata store in time" }),
    };
    json_response(
        StatusCode::OK,
        &json!({
            "status": status,
            "meta": meta,
            "backends": backends,
            "scanner": scanner,
            "writes_in_flight": state.in_flight.total(),
            "workers": state.workers.snapshot(),
            "cluster": cluster,
        }),
    )
}

async fn route(state: &State, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, AdminError> {
    let path: Vec<String> = req
        .uri()
        .path()
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let segs: Vec<&str> = path.iter().map(String::as_str).collect();
    let authorized = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| same(t.as_bytes(), state.token.as_bytes()));
    if req.method() == Method::GET && segs == ["health"] {
        return Ok(health(state, authorized).await);
    }
    if !authorized {
        return Err(AdminError::Unauthorized);
    }
    let m = &state.meta;
    match (req.method().clone(), segs.as_slice()) {
        (Method::GET, ["metrics"]) => {
            let text = format!(
                "# HELP portcullis_list_records_read_total Records read from the index by listings.\n\
                 # TYPE portcullis_list_records_read_total counter\n\
                 portcullis_list_records_read_total {}\n",
                m.records_listed()
            );
            let mut resp = Response::new(Full::new(Bytes::from(text)));
            resp.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            Ok(resp)
        }
        (Method::GET, ["tenants"]) => Ok(json_response(
            StatusCode::OK,
            &json!({ "tenants": m.tenants().await? }),
        )),
        (Method::POST, ["tenants"]) => {
            let t: NewTenant = body_json(req).await?;
            if !valid_tenant_id(&t.id) {
                return Err(AdminError::BadRequest(
                    "tenant id: use 1-63 of a-z, 0-9 and -".into(),
                ));
            }
            let cfg = &state.config;
            let placement = crate::config::placement(
                &cfg.backends,
                &cfg.default_placement,
                t.backend.as_deref(),
                t.backend_container.as_deref(),
                t.backend_prefix.as_deref(),
            )
            .map_err(AdminError::BadRequest)?;
            if let Some(l) = t.locations.iter().find(|l| !state.backends.contains(l)) {
                return Err(AdminError::BadRequest(format!(
                    "location {l:?} is not a configured backend"
                )));
            }
            valid_policy(&t.policy)?;
            // A local backend's blobs are on this node's disk only: not while others serve.
            let local = std::iter::once(&placement.backend)
                .chain(t.locations.iter())
                .find(|b| {
                    cfg.backends.iter().any(|c| {
                        c.name == **b && matches!(c.kind, crate::backend::BackendKind::Local { .. })
                    })
                });
            if let Some(b) = local {
                let others = state.node.view().await?.nodes.len().saturating_sub(1);
                if others > 0 {
                    return Err(AdminError::BadRequest(format!(
                        "backend {b:?} is a local backend, whose blobs only this node has, and {others} other node(s) share this metadata store: use a shared backend (s3, azure, gcs)"
                    )));
                }
            }
            let tenant = meta::Tenant {
                display_name: t.display_name.unwrap_or_else(|| t.id.clone()),
                id: t.id,
                created_ms: meta::now_ms(),
                placement: Some(placement),
                locations: t.locations,
                quota: t.quota,
                policy: t.policy,
                buckets: Default::default(),
            };
            m.commit(&Commit::new(Change::CreateTenant(tenant.clone())).by(Stamp::admin()))
                .await?;
            Ok(json_response(StatusCode::CREATED, &json!(tenant)))
        }
        (Method::DELETE, ["tenants", id]) => {
            m.commit(&Commit::new(Change::DeleteTenant(id.to_string())).by(Stamp::admin()))
                .await?;
            Ok(json_response(StatusCode::OK, &json!({ "deleted": id })))
        }
        (Method::GET, ["tenants", id, "keys"]) => {
            m.tenant(id).await?.ok_or(MetaError::NoSuchTenant)?;
            let keys: Vec<_> = m.keys_of(id).await?.iter().map(key_json).collect();
            Ok(json_response(StatusCode::OK, &json!({ "keys": keys })))
        }
        (Method::POST, ["tenants", id, "keys"]) => {
            let tenant = id.to_string();
            let k: NewKey = body_json(req).await?;
            let access_key = k.access_key.unwrap_or_else(|| {
                format!(
                    "PC{}",
                    random_string(18, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
                )
            });
            let secret_key = k.secret_key.unwrap_or_else(|| {
                random_string(
                    40,
                    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
                )
            });
            if !valid_access_key(&access_key) || !valid_secret(&secret_key) {
                return Err(AdminError::BadRequest(
                    "access_key: 3-128 of A-Z a-z 0-9 _ -; secret_key: 8-128 printable ASCII"
                        .into(),
                ));
            }
            let key = meta::AccessKey {
                access_key,
                secret_key,
                tenant,
                user: k.user.unwrap_or_else(|| "admin".into()),
                role: k.role.unwrap_or(Role::ReadWrite),
                created_ms: meta::now_ms(),
            };
            m.commit(&Commit::new(Change::CreateAccessKey(key.clone())).by(Stamp::admin()))
                .await?;
            // The secret is shown once, here, and never again.
            let mut v = key_json(&key);
            v["secret_key"] = json!(key.secret_key);
            Ok(json_response(StatusCode::CREATED, &v))
        }
        (Method::DELETE, ["tenants", id, "keys", ak]) => {
            match m.access_key(ak).await? {
                Some(k) if k.tenant == *id => {}
                _ => return Err(MetaError::NoSuchAccessKey.into()),
            }
            m.commit(&Commit::new(Change::DeleteAccessKey(ak.to_string())).by(Stamp::admin()))
                .await?;
            Ok(json_response(StatusCode::OK, &json!({ "deleted": ak })))
        }
        (Method::GET, ["tenants", id, "usage"]) => {
            let verify = req
                .uri()
                .query()
                .unwrap_or("")
                .split('&')
                .any(|p| p == "verify" || p == "verify=true" || p == "verify=1");
            Ok(json_response(
                StatusCode::OK,
                &usage_report(state, id, verify).await?,
            ))
        }
        (Method::PUT, ["tenants", id, "quota"]) => {
            let id = id.to_string();
            let q: meta::Limits = body_json(req).await?;
            let t = m
                .update_tenant(&id, Stamp::admin(), |t| t.quota = q)
                .await?;
            Ok(json_response(
                StatusCode::OK,
                &json!({ "tenant": id, "quota": t.quota }),
            ))
        }
        (Method::PUT, ["tenants", id, "policy"]) => {
            let id = id.to_string();
            let p: meta::Policy = body_json(req).await?;
            valid_policy(&p)?;
            let t = m
                .update_tenant(&id, Stamp::admin(), |t| t.policy = p.clone())
                .await?;
            Ok(json_response(
                StatusCode::OK,
                &json!({ "tenant": id, "policy": t.policy }),
            ))
        }
        (
            Method::PUT,
            [
                "tenants",
                id,
                "buckets",
                bucket,
                what @ ("quota" | "policy"),
            ],
        ) => {
            let (id, bucket, what) = (id.to_string(), bucket.to_string(), *what);
            let (mut quota, mut policy) = (None, None);
            if what == "quota" {
                quota = Some(body_json::<meta::Limits>(req).await?);
            } else {
                let p: meta::Policy = body_json(req).await?;
                valid_policy(&p)?;
                policy = Some(p);
            }
            // Changed inside the compare-and-swap, so a concurrent change of the bucket's other
            // setting is kept.
            let t = m
                .update_tenant(&id, Stamp::admin(), |t| {
                    let s = t.buckets.entry(bucket.clone()).or_default();
                    if let Some(q) = quota {
                        s.quota = q;
                    }
                    if let Some(p) = &policy {
                        s.policy = p.clone();
                    }
                })
                .await?;
            Ok(json_response(
                StatusCode::OK,
                &json!({ "tenant": id, "bucket": bucket, "settings": t.buckets[&bucket] }),
            ))
        }
        (Method::GET, ["tenants", id, "buckets", bucket, "policy"]) => {
            let t = m.tenant(id).await?.ok_or(MetaError::NoSuchTenant)?;
            let own = t.buckets.get(*bucket).cloned().unwrap_or_default();
            let (effective, _, _) = crate::pipeline::policy::rules(m, &state.rules, id, bucket)
                .await
                .map_err(|e| AdminError::BadRequest(e.to_string()))?;
            Ok(json_response(
                StatusCode::OK,
                &json!({ "bucket": bucket, "settings": own, "effective": effective }),
            ))
        }
        (method, ["scans", rest @ ..]) => {
            let w = state
                .worker
                .as_ref()
                .ok_or_else(|| AdminError::BadRequest("no scanner is configured".into()))?;
            match (method, rest) {
                (Method::GET, []) => Ok(json_response(
                    StatusCode::OK,
                    &json!({ "jobs": w.jobs().await? }),
                )),
                (Method::POST, []) => {
                    let has_body = req
                        .headers()
                        .get(http::header::CONTENT_LENGTH)
                        .is_some_and(|v| v != "0");
                    let n: NewScan = if has_body {
                        body_json(req).await?
                    } else {
                        NewScan::default()
                    };
                    if n.bucket.is_some() && n.tenant.is_none() {
                        return Err(AdminError::BadRequest("a bucket needs its tenant".into()));
                    }
                    if let Some(t) = &n.tenant {
                        m.tenant(t).await?.ok_or(MetaError::NoSuchTenant)?;
                    }
                    Ok(json_response(
                        StatusCode::ACCEPTED,
                        &json!(w.start_rescan(n.tenant, n.bucket).await?),
                    ))
                }
                (Method::POST, ["pending"]) => {
                    let settled = w.retry_pending().await?;
                    Ok(json_response(
                        StatusCode::OK,
                        &json!({ "settled": settled }),
                    ))
                }
                (Method::GET, [id]) => match w.job(id).await? {
                    Some(p) => Ok(json_response(StatusCode::OK, &json!(p))),
                    None => Err(AdminError::NotFound),
                },
                _ => Err(AdminError::NotFound),
            }
        }
        (Method::GET, ["cluster"]) => Ok(json_response(
            StatusCode::OK,
            &json!(state.node.view().await?),
        )),
        (Method::GET, ["workers"]) => Ok(json_response(
            StatusCode::OK,
            &json!({ "workers": state.workers.snapshot() }),
        )),
        (Method::POST, ["sweep"]) => {
            let r = state.sweeper.sweep_once().await;
            Ok(json_response(StatusCode::OK, &json!(r)))
        }
        _ => Err(AdminError::NotFound),
    }
}

/// The admin API as a hyper service, for one connection (served by `transport::serve`).
pub fn service(
    state: State,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Full<Bytes>>,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<Response<Full<Bytes>>, std::convert::Infallible>> + Send,
> + Send {
    hyper::service::service_fn(move |req| {
        let state = state.clone();
        async move {
            let resp = route(&state, req).await.unwrap_or_else(|e| e.response());
            Ok::<_, std::convert::Infallible>(resp)
        }
    })
}
