//! Start-up and the S3 front: opens the data directory, bootstraps tenants from the config
//! (refusing the published development credentials off loopback), builds the S3 service and
//! serves it next to the admin API, the sweeper and the deleter.
//!
//! The request path, outside in:
//! 1. `transport::serve` — accept (TCP, optionally TLS) with connection limits and the
//!    first-byte/idle timeout, one task per connection, shared with the admin listener;
//! 2. hyper with a header-read timeout, so a slow client cannot pin a connection for free;
//! 3. [`S3Front::handle`] — request id, the `request` span, `x-amz-request-id`, the access-log
//!    line (from a drop guard, so a cancelled request is logged too), `s3::screen`, the body's
//!    pace, and draining (bounded) a body the gateway refused unread, so the client sees the
//!    S3 error;
//! 4. s3s — routing, XML (bounded by `server.max_xml_body`), SigV4, aws-chunked decoding;
//! 5. `Gateway` — the operations.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use s3s::service::{S3Service, S3ServiceBuilder};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::backend::Backends;
use crate::config::{Config, TlsConfig};
use crate::meta::{self, Change, Commit, Meta};
use crate::pace::{Pace, PaceOptions};
use crate::s3::{Access, Auth, Gateway, ScreenOptions};
use crate::transport;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("opening the metadata store in {path}: {source}")]
    Meta {
        path: String,
        source: meta::MetaError,
    },
    #[error("opening the backends: {0}")]
    Backend(#[from] crate::backend::BackendError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
    #[error("virtual-host domain: {0}")]
    Domain(String),
    #[error("joining the cluster: {0}")]
    Cluster(String),
    #[error(
        "{0}, which is public, and {1} is not a loopback address. Set your own: \
         `admin.token` (or `token_file`) to a random string of at least 16 characters, and for each \
         `[[tenants.keys]]` a new access key and `secret_key_file` (or create keys with the admin \
         API, `POST /tenants/{{id}}/keys`, and revoke the development ones); or listen on \
         127.0.0.1 only"
    )]
    DevCredentials(String, SocketAddr),
}

/// Virtual-hosted-style requests under one domain. Clients send `Host: bucket.domain:port`;
/// s3s's matcher expects no port, so it is removed first.
#[derive(Clone)]
struct VirtualHosts(Arc<s3s::host::SingleDomain>);

impl s3s::host::S3Host for VirtualHosts {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> s3s::S3Result<s3s::host::VirtualHost<'a>> {
        let name = match host.rsplit_once(':') {
            Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
                name
            }
            _ => host,
        };
        self.0.parse_host_header(name)
    }
}

/// A running gateway. Dropping it does not stop it; call [`Running::shutdown`].
pub struct Running {
    pub s3_addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    stop: CancellationToken,
    /// The listeners.
    tasks: tokio::task::JoinSet<()>,
    workers: crate::jobs::runner::Runner,
    meta: Arc<Meta>,
}

impl Running {
    /// Returns once the deleter is done with every blob released so far.
    pub async fn drain_deleter(&self) {
        self.meta.drained().await;
    }

    /// Stops accepting, lets in-flight requests finish (up to 30 s) and flushes the metadata.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
        self.workers.shutdown().await;
        if let Err(e) = self.meta.persist(self.meta.flush_ticket()).await {
            tracing::error!(error = %e, "flushing metadata at shutdown failed");
        }
    }

    /// Waits until the process is asked to stop (Ctrl-C or SIGTERM), then shuts down.
    pub async fn serve_until_signal(self) {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        tracing::info!("shutting down");
        self.shutdown().await;
    }
}

async fn bootstrap(meta: &Meta, config: &Config) -> Result<(), meta::MetaError> {
    for t in &config.tenants {
        // What the file declares wins; what it leaves out keeps its admin-API value.
        let old = meta.tenant(&t.id).await?;
        let mut buckets = old.as_ref().map(|o| o.buckets.clone()).unwrap_or_default();
        buckets.extend(t.buckets.clone());
        let tenant = meta::Tenant {
            id: t.id.clone(),
            display_name: t.display_name.clone(),
            created_ms: meta::now_ms(),
            placement: Some(t.placement.clone()),
            locations: t.locations.clone(),
            quota: t
                .quota
                .or(old.as_ref().map(|o| o.quota))
                .unwrap_or_default(),
            policy: t
                .policy
                .clone()
                .or(old.map(|o| o.policy))
                .unwrap_or_default(),
            buckets,
        };
        meta.commit(&Commit::new(Change::UpsertTenant(tenant)))
            .await?;
        for k in &t.keys {
            let key = meta::AccessKey {
                access_key: k.access_key.clone(),
                secret_key: k.secret_key.clone(),
                tenant: t.id.clone(),
                user: k.user.clone(),
                role: k.role,
                created_ms: meta::now_ms(),
            };
            meta.commit(&Commit::new(Change::UpsertAccessKey(key)))
                .await?;
        }
    }
    let filled = meta.backfill_usage().await?;
    if filled > 0 {
        tracing::info!(tenants = filled, "usage computed from the existing records");
    }
    meta.persist(meta.flush_ticket()).await
}

fn tls_acceptor(t: &TlsConfig) -> Result<TlsAcceptor, StartError> {
    let err = |what: &str, e: &dyn std::fmt::Display| StartError::Tls(format!("{what}: {e}"));
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(&t.cert).map_err(|e| err(&t.cert.display().to_string(), &e))?,
    ))
    .collect::<Result<Vec<_>, _>>()
    .map_err(|e| err("reading certificates", &e))?;
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(&t.key).map_err(|e| err(&t.key.display().to_string(), &e))?,
    ))
    .map_err(|e| err("reading the private key", &e))?
    .ok_or_else(|| StartError::Tls(format!("{}: no private key found", t.key.display())))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| err("protocol versions", &e))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| err("certificate", &e))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// Refuses the published development credentials on any listener that is not on loopback
/// (declared in the file, or left in the metadata store by an earlier start with the shipped
/// file).
/// Registers this process in the store's node registry. A `local` backend keeps its blobs on one
/// machine, so a node that writes to one refuses to share the store with other live nodes (and
/// other nodes refuse to join it).
async fn join(
    meta: &Arc<Meta>,
    config: &Config,
    s3_addr: SocketAddr,
) -> Result<Arc<crate::cluster::Node>, StartError> {
    let meta_err = |source| StartError::Meta {
        path: meta_place(config),
        source,
    };
    // The directory of a local backend, as `<host>:<path>`.
    let local_dir = |name: &str| {
        config.backends.iter().find_map(|b| match &b.kind {
            crate::backend::BackendKind::Local { path, .. } if b.name == name => {
                let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
                Some(format!(
                    "{}:{}",
                    crate::cluster::host_name(),
                    path.display()
                ))
            }
            _ => None,
        })
    };
    // Every backend this node may write to: the default placement, the quarantine, and each
    // tenant's placement and locations (configured, or created at run time).
    let stored = meta.tenants().await.map_err(meta_err)?;
    let named: Vec<&String> = std::iter::once(&config.default_placement.backend)
        .chain(
            config
                .scanner
                .iter()
                .filter_map(|s| s.quarantine.as_ref())
                .map(|p| &p.backend),
        )
        .chain(config.tenants.iter().map(|t| &t.placement.backend))
        .chain(
            stored
                .iter()
                .flat_map(|t| t.placement.iter().map(|p| &p.backend)),
        )
        .chain(stored.iter().flat_map(|t| t.locations.iter()))
        .collect();
    let local = named.into_iter().find_map(|b| local_dir(b));
    // An embedded store serves one process (sled locks it), so every node record in it is a
    // previous life of this gateway: reap them now rather than after the node timeout, so what
    // they held (reservations, writes in flight) is free at once.
    if meta.engine_kind() == "sled" {
        for n in meta.nodes().await.map_err(meta_err)? {
            let reap = Change::Coord(meta::coord::Coord::Reap { node: n });
            meta.commit(&Commit::new(reap)).await.map_err(meta_err)?;
        }
    }
    let node = crate::cluster::Node::join(
        meta.clone(),
        config.cluster.clone(),
        s3_addr.to_string(),
        local.clone(),
    )
    .await
    .map_err(meta_err)?;
    let now = meta::now_ms();
    let others: Vec<_> = meta
        .nodes()
        .await
        .map_err(meta_err)?
        .into_iter()
        .filter(|n| n.instance != node.instance() && n.expires_ms >= now)
        .collect();
    // A live record with this node's own local directory is a previous life of this node (it
    // was killed; this process holds the directory's lock now): not another node, and reaped
    // now so that what it held is free at once.
    for n in others
        .iter()
        .filter(|n| local.is_some() && n.local_data == local)
    {
        let reap = Change::Coord(meta::coord::Coord::Reap { node: n.clone() });
        meta.commit(&Commit::new(reap)).await.map_err(meta_err)?;
    }
    let conflict = |n: &&crate::meta::coord::NodeRecord| {
        (local.is_some() || n.local_data.is_some()) && n.local_data != local
    };
    if let Some(other) = others.iter().find(conflict) {
        node.leave().await;
        return Err(StartError::Cluster(format!(
            "node {} ({}) shares this metadata store, and {} writes to a `local` backend, whose blobs only one machine has. \
             Run one node per store with a local backend, or put every node on a shared backend (s3, azure, gcs)",
            other.node_id,
            other.s3_addr,
            if local.is_some() {
                "this node"
            } else {
                "that node"
            }
        )));
    }
    Ok(node)
}

async fn refuse_dev_credentials(config: &Config, meta: &Meta) -> Result<(), StartError> {
    let exposed = std::iter::once(config.listen)
        .chain(config.admin.as_ref().map(|a| a.listen))
        .find(|a| !a.ip().is_loopback());
    let Some(exposed) = exposed else {
        return Ok(());
    };
    let published = crate::config::published_credentials();
    if let Some(admin) = &config.admin
        && let Some((_, file)) = published.tokens.iter().find(|(t, _)| *t == admin.token)
    {
        return Err(StartError::DevCredentials(
            format!("the admin token is the published token of {file}"),
            exposed,
        ));
    }
    for (key, secret, file) in &published.keys {
        let stored = meta
            .access_key(key)
            .await
            .map_err(|source| StartError::Meta {
                path: meta_place(config),
                source,
            })?;
        if stored.is_some_and(|k| k.secret_key == *secret) {
            return Err(StartError::DevCredentials(
                format!("an access key ({key}) is a development key published in {file}"),
                exposed,
            ));
        }
    }
    Ok(())
}

/// Where the metadata lives, for error messages (never the database URL: it may hold a
/// password).
fn meta_place(config: &Config) -> String {
    match &config.meta {
        meta::MetaEngine::Sled => config.data_dir.join("meta").display().to_string(),
        meta::MetaEngine::Postgres { .. } => "the PostgreSQL database of [meta] url".into(),
    }
}

/// Opens everything and starts serving; returns once the listeners are bound.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let meta_err = |source| StartError::Meta {
        path: meta_place(&config),
        source,
    };
    let engine = config
        .meta
        .open(
            &config.data_dir.join("meta"),
            config.sync,
            config.meta_cache_bytes,
        )
        .await
        .map_err(meta_err)?;
    tracing::info!(engine = engine.kind(), "metadata store open");
    let meta = Arc::new(Meta::new(engine));
    bootstrap(&meta, &config).await.map_err(meta_err)?;
    refuse_dev_credentials(&config, &meta).await?;
    let backends = Arc::new(Backends::open(&config.backends, config.sync).await?);
    let recovered = backends.recover().await?;
    if recovered > 0 {
        tracing::info!(
            files = recovered,
            "removed temporaries of interrupted writes"
        );
    }

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let s3_addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: config.listen,
        source,
    })?;
    let node = join(&meta, &config, s3_addr).await?;
    let scanner = config.scanner.clone().map(crate::scanner::Scanner::new);
    let rules = crate::pipeline::policy::Rules::new(config.policy.clone(), scanner.is_some());
    let worker = scanner.clone().map(|s| {
        crate::jobs::scan::Worker::new(
            meta.clone(),
            backends.clone(),
            s,
            rules.clone(),
            node.clone(),
        )
    });
    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut workers = crate::jobs::runner::Runner::default();
    if let Some(deleter) = crate::jobs::deleter::DeleterWorker::new(meta.clone(), backends.clone())
    {
        // Last to stop: what the last requests and sweeps freed is still deleted.
        workers.spawn("deleter", true, |stop, r| deleter.run(stop, r));
    }
    let tls = config.tls.as_ref().map(tls_acceptor).transpose()?;
    workers.spawn("heartbeat", true, |stop, r| {
        crate::jobs::heartbeat::run(node.clone(), stop, r)
    });
    let quotas = crate::pipeline::quota::Quotas::new(meta.clone(), node.clone());
    let in_flight = Arc::new(crate::s3::InFlight::new(config.uploads));
    let mut builder = S3ServiceBuilder::new(Gateway::new(crate::s3::Parts {
        meta: meta.clone(),
        backend: backends.clone(),
        quotas: quotas.clone(),
        scanner: scanner.clone(),
        rules: rules.clone(),
        region: config.region.clone(),
        default_placement: config.default_placement.clone(),
        in_flight: in_flight.clone(),
    }));
    builder.set_auth(Auth(meta.clone()));
    builder.set_access(Access(meta.clone()));
    let hosts = match &config.domain {
        Some(domain) => {
            let domain = s3s::host::SingleDomain::new(domain)
                .map_err(|e| StartError::Domain(e.to_string()))?;
            let hosts = VirtualHosts(Arc::new(domain));
            builder.set_host(hosts.clone());
            Some(hosts)
        }
        None => None,
    };
    let mut s3_config = s3s::config::S3Config::default();
    s3_config.xml_max_body_size = config.max_xml_body;
    // POST forms are refused by the screen before s3s sees them; should one get through, s3s
    // buffers no more than a few KB of it (it reads a form whole before checking its
    // signature).
    s3_config.post_object_max_file_size = 0;
    s3_config.form_max_field_size = 4 * 1024;
    s3_config.form_max_fields_size = 8 * 1024;
    s3_config.form_max_parts = 16;
    builder.set_config(Arc::new(s3s::config::StaticConfigProvider::new(Arc::new(
        s3_config,
    ))));
    let service = builder.build();

    let s3 = S3Front {
        service,
        max_xml_body: config.max_xml_body,
        screen: Arc::new(ScreenOptions {
            region: config.region.clone(),
            require_region: config.require_region,
        }),
        pace: config.pace,
        hosts,
    };
    tasks.spawn(transport::serve(
        "s3",
        listener,
        tls,
        config.conn,
        move |peer| {
            let s3 = s3.clone();
            hyper::service::service_fn(move |req| s3.clone().handle(peer, req))
        },
        stop.clone(),
    ));
    let sweeper = crate::jobs::sweeper::Sweeper::new(
        meta.clone(),
        backends.clone(),
        config.sweeper.clone(),
        config.default_placement.clone(),
    );
    let s = sweeper.clone();
    let n = node.clone();
    workers.spawn("sweeper", false, |stop, r| s.run(n, stop, r));
    if let Some(w) = worker.clone() {
        workers.spawn("scan-retries", false, |stop, r| w.clone().run(stop, r));
        workers.spawn("rescans", false, |stop, r| w.run_rescans(stop, r));
    }

    let admin_addr = match &config.admin {
        Some(admin) => {
            let l = TcpListener::bind(admin.listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: admin.listen,
                    source,
                })?;
            let addr = l.local_addr().map_err(|source| StartError::Bind {
                addr: admin.listen,
                source,
            })?;
            let state = crate::admin::State {
                meta: meta.clone(),
                backends: backends.clone(),
                token: admin.token.clone(),
                sweeper,
                worker,
                scanner,
                rules,
                in_flight,
                node: node.clone(),
                workers: workers.board(),
                config: config.clone(),
            };
            let tls = admin.tls.as_ref().map(tls_acceptor).transpose()?;
            tasks.spawn(transport::serve(
                "admin",
                l,
                tls,
                config.conn,
                move |_peer| crate::admin::service(state.clone()),
                stop.clone(),
            ));
            Some(addr)
        }
        None => None,
    };
    tracing::info!(%s3_addr, ?admin_addr, tls = config.tls.is_some(), data_dir = %config.data_dir.display(), "portcullis is serving");
    Ok(Running {
        s3_addr,
        admin_addr,
        stop,
        tasks,
        workers,
        meta,
    })
}

/// An S3 error body names the request it answers, as on S3: `<Resource>` (the request's path)
/// and `<RequestId>` (equal to the `x-amz-request-id` header), whoever produced the error (our
/// mapping, the screen, or s3s itself). Error bodies are small and whole in memory.
fn identify_error(resp: &mut http::Response<s3s::Body>, id: &str, resource: &str) {
    if !resp.status().is_client_error() && !resp.status().is_server_error() {
        return;
    }
    let Some(body) = resp.body().bytes() else {
        return;
    };
    let text = String::from_utf8_lossy(&body);
    let Some(end) = text.rfind("</Error>") else {
        return;
    };
    if text.contains("<RequestId>") {
        return;
    }
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let mut out = String::with_capacity(text.len() + 128);
    out.push_str(&text[..end]);
    if !text.contains("<Resource>") {
        out.push_str(&format!("<Resource>{}</Resource>", escape(resource)));
    }
    out.push_str(&format!("<RequestId>{}</RequestId>", escape(id)));
    out.push_str(&text[end..]);
    if resp.headers().contains_key(http::header::CONTENT_LENGTH) {
        resp.headers_mut().insert(
            http::header::CONTENT_LENGTH,
            http::HeaderValue::from(out.len()),
        );
    }
    *resp.body_mut() = s3s::Body::from(bytes::Bytes::from(out));
}

/// SigV4 takes the request time from `x-amz-date`, or from `Date` when that is absent (S3
/// does; s3s reads only the first). Such a request gets `x-amz-date` from its `Date`: the
/// string to sign uses that instant either way, and the signed headers are the client's, so the
/// signature covers exactly what the client signed.
fn date_as_amz_date(h: &mut http::HeaderMap) {
    if h.contains_key("x-amz-date") {
        return;
    }
    let Some(date) = h.get(http::header::DATE).and_then(|v| v.to_str().ok()) else {
        return;
    };
    let Ok(t) = s3s::dto::Timestamp::parse(s3s::dto::TimestampFormat::HttpDate, date) else {
        return;
    };
    let t = time::OffsetDateTime::from(t).to_offset(time::UtcOffset::UTC);
    let amz = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    if let Ok(v) = http::HeaderValue::from_str(&amz) {
        h.insert("x-amz-date", v);
    }
}

/// S3 has no operation on any other method: answered 405 (a client's mistake, logged at
/// debug), never passed to s3s, which answers it as an internal error.
fn known_method(m: &http::Method) -> Result<(), s3s::S3Error> {
    use http::Method;
    if [
        Method::GET,
        Method::HEAD,
        Method::PUT,
        Method::POST,
        Method::DELETE,
    ]
    .contains(m)
    {
        return Ok(());
    }
    Err(crate::error::with_status(
        s3s::S3ErrorCode::MethodNotAllowed,
        http::StatusCode::METHOD_NOT_ALLOWED,
        format!("The specified method ({m}) is not allowed against this resource."),
    ))
}

/// The answer to an XML body over `server.max_xml_body`.
fn xml_too_large(limit: usize) -> s3s::S3Error {
    crate::error::with_status(
        s3s::S3ErrorCode::MaxMessageLengthExceeded,
        http::StatusCode::BAD_REQUEST,
        format!("Your request body is larger than the {limit} bytes allowed for XML requests."),
    )
}

/// An XML body that declares no length, read whole before s3s (as s3s would read it, and
/// bounded the same way) and handed on with its length: s3s refuses such a body with
/// `MissingContentLength` or, past its bound, `InternalError`.
async fn read_xml(
    req: http::Request<Returnable>,
    limit: usize,
) -> Result<http::Request<s3s::Body>, s3s::S3Error> {
    use http_body_util::BodyExt as _;
    let (mut parts, body) = req.into_parts();
    let bytes = match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(xml_too_large(limit)),
        Err(e) => return Err(crate::error::body_error(&*e)),
    };
    parts
        .headers
        .insert(http::header::CONTENT_LENGTH, bytes.len().into());
    Ok(http::Request::from_parts(parts, s3s::Body::from(bytes)))
}

/// Whether the request's body is object data rather than an XML document: a PUT whose query
/// names no configuration sub-resource (an object or a part), or a browser POST form.
fn carries_data<B>(req: &http::Request<B>) -> bool {
    let data_param = |p: &str| {
        let name = p.split('=').next().unwrap_or("");
        name.is_empty()
            || matches!(name, "partNumber" | "uploadId" | "versionId" | "x-id")
            || name.to_ascii_lowercase().starts_with("x-amz-")
    };
    match *req.method() {
        http::Method::PUT => req.uri().query().unwrap_or("").split('&').all(data_param),
        http::Method::POST => req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("multipart/form-data")),
        _ => false,
    }
}

/// True for a request whose body is XML (not object data) and whose declared length exceeds the
/// limit.
fn xml_body_too_large<B>(req: &http::Request<B>, limit: usize) -> bool {
    let len = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let Some(len) = len.filter(|&l| l > limit as u64) else {
        return false;
    };
    !carries_data(req) && len > 0
}

/// What the front does with a body that declares no length (`Transfer-Encoding: chunked`, or
/// HTTP/2 without `content-length`; an aws-chunked body declares its decoded length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unsized {
    /// It declares one.
    No,
    /// Object data: metered by the write protocol (`s3::UnknownLength`).
    Data,
    /// An XML document (or nothing a PUT of data could carry): read whole by the front, up to
    /// `max_xml_body` ([`read_xml`]).
    Xml,
}

fn unsized_body(req: &http::Request<Incoming>) -> Unsized {
    use hyper::body::Body as _;
    let headers = req.headers();
    if headers.contains_key(http::header::CONTENT_LENGTH)
        || headers.contains_key("x-amz-decoded-content-length")
        || req.body().is_end_stream()
        || req.body().size_hint().exact().is_some()
    {
        return Unsized::No;
    }
    if *req.method() == http::Method::PUT && carries_data(req) {
        Unsized::Data
    } else {
        Unsized::Xml
    }
}

/// Reads and drops up to 16 MiB (for at most 5 s) of a body that is refused unread. Closing a
/// connection with unread data makes the kernel answer with a reset, which can destroy the
/// error response before the client reads it; past the bound the connection is given up.
async fn discard_body(mut body: Incoming) {
    use http_body_util::BodyExt;
    const LIMIT: usize = 16 * 1024 * 1024;
    let drain = async {
        let mut seen = 0;
        while seen < LIMIT {
            match body.frame().await {
                Some(Ok(f)) => seen += f.data_ref().map_or(0, |d| d.len()),
                _ => return,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
}

/// The request body as s3s sees it. If the gateway refuses a request without reading its whole
/// body (a quota or policy refusal, a bad signature), the rest is handed back through `unread`
/// when s3s drops it, so [`S3Front::handle`] can drain it before answering (see
/// [`discard_body`]). Except when the client asked `Expect: 100-continue` and the body was never
/// polled: hyper has not said "continue", the client sends nothing, and the error goes out at
/// once. The body's [`Pace`] fails it with [`crate::pace::BodyTimeout`] when it trickles.
struct Returnable {
    inner: Option<Incoming>,
    unread: Arc<std::sync::Mutex<Option<Incoming>>>,
    /// Whether dropping the body unread would leave bytes on the wire: false only while a
    /// `100-continue` request's body is untouched.
    sent: bool,
    pace: Pace,
}

impl hyper::body::Body for Returnable {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        let this = &mut *self;
        this.sent = true;
        let Some(b) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match std::pin::Pin::new(b).poll_frame(cx) {
            Poll::Pending => match this.pace.pending(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => {
                    // The rest of a trickling body is not worth draining: the connection goes.
                    this.inner = None;
                    Poll::Ready(Some(Err(Box::new(e))))
                }
            },
            Poll::Ready(Some(Ok(f))) => {
                this.pace.ready(f.data_ref().map_or(0, bytes::Bytes::len));
                Poll::Ready(Some(Ok(f)))
            }
            Poll::Ready(other) => {
                this.pace.ready(0);
                Poll::Ready(other.map(|r| r.map_err(Into::into)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| hyper::body::SizeHint::with_exact(0), |b| b.size_hint())
    }
}

impl Drop for Returnable {
    fn drop(&mut self) {
        if let Some(b) = self
            .inner
            .take()
            .filter(|b| !hyper::body::Body::is_end_stream(b))
            && self.sent
            && let Ok(mut slot) = self.unread.lock()
        {
            *slot = Some(b);
        }
    }
}

/// The S3 listener's per-request work around s3s; cheap to clone.
#[derive(Clone)]
struct S3Front {
    service: S3Service,
    max_xml_body: usize,
    screen: Arc<ScreenOptions>,
    pace: PaceOptions,
    /// The virtual-host domain, for the bucket a SigV2 presigned URL signs.
    hosts: Option<VirtualHosts>,
}

/// The access-log line of one request, written when it is dropped: also for a request whose
/// client went away mid-way (its future is dropped, and nothing after an `.await` runs).
struct AccessLog {
    span: tracing::Span,
    started: std::time::Instant,
    status: Option<u16>,
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        let _enter = self.span.enter();
        let ms = self.started.elapsed().as_millis() as u64;
        // 5xx at error (once, with the cause recorded on the span by `error.rs`), everything
        // else at debug.
        match self.status {
            Some(status) if status >= 500 => tracing::error!(status, ms, "request failed"),
            Some(status) => tracing::debug!(status, ms, "request done"),
            None => tracing::debug!(ms, "request cancelled: the client went away"),
        }
    }
}

impl S3Front {
    /// The bucket a virtual-hosted request names in its `Host`, as s3s will read it.
    fn bucket_from_host<B>(&self, req: &http::Request<B>) -> Option<String> {
        use s3s::host::S3Host as _;
        let hosts = self.hosts.as_ref()?;
        let host = req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))?;
        let vh = hosts.parse_host_header(host).ok()?;
        vh.bucket().map(str::to_string)
    }

    /// Wraps one S3 request in its span, names it with a request id and logs its outcome.
    async fn handle(
        self,
        peer: SocketAddr,
        mut req: http::Request<Incoming>,
    ) -> Result<http::Response<s3s::Body>, s3s::HttpError> {
        req.extensions_mut().insert(crate::s3::Peer(peer));
        let id = ulid::Ulid::new().to_string();
        req.extensions_mut()
            .insert(crate::s3::RequestId(id.clone()));
        let resource = req.uri().path().to_string();
        let span = tracing::info_span!(
            "request",
            id = %id,
            method = %req.method(),
            tenant = tracing::field::Empty,
            op = tracing::field::Empty,
            bucket = tracing::field::Empty,
            key = tracing::field::Empty,
            auth = tracing::field::Empty,
            error = tracing::field::Empty,
        );
        let mut log = AccessLog {
            span: span.clone(),
            started: std::time::Instant::now(),
            status: None,
        };
        let max_xml_body = self.max_xml_body;
        let screened = known_method(req.method())
            .and_then(|()| crate::s3::screen(&req, &self.screen))
            .and_then(|method| {
                if xml_body_too_large(&req, max_xml_body) {
                    // s3s bounds XML bodies too, but reports an oversized streamed body as
                    // InternalError.
                    return Err(xml_too_large(max_xml_body));
                }
                Ok(method)
            });
        let length = unsized_body(&req);
        let refused = match screened {
            Ok(method) => {
                if length == Unsized::Data {
                    req.extensions_mut().insert(crate::s3::UnknownLength);
                    // s3s refuses an unsigned payload without a length before any operation
                    // runs; the placeholder passes that check, and `UnknownLength` (which
                    // `object::body_len` reads first) is what the write goes by. A payload
                    // signed with its SHA-256 still needs its real length from s3s (411): a
                    // client that hashed its body knows how long it is.
                    let unsigned = req
                        .headers()
                        .get("x-amz-content-sha256")
                        .is_none_or(|v| v.as_bytes() == b"UNSIGNED-PAYLOAD");
                    if unsigned {
                        req.headers_mut().insert(
                            http::header::CONTENT_LENGTH,
                            http::HeaderValue::from_static("0"),
                        );
                    }
                }
                match method {
                    crate::s3::AuthMethod::Header => date_as_amz_date(req.headers_mut()),
                    crate::s3::AuthMethod::PresignedV2 => {
                        // Verified by `Access` from the request as sent; s3s gets it without
                        // the parameters and so never verifies them itself.
                        let host_bucket = self.bucket_from_host(&req);
                        let claim = crate::s3::SigV2Claim::of(&req, host_bucket.as_deref());
                        *req.uri_mut() = crate::s3::strip_sigv2(req.uri());
                        req.extensions_mut().insert(claim);
                    }
                    _ => {}
                }
                // The mechanism s3s will verify, decided once: `S3Access` reads it, and the
                // access log shows it.
                span.record("auth", method.as_str());
                req.extensions_mut().insert(method);
                None
            }
            Err(e) => Some(e),
        };
        let unread = Arc::default();
        let sent = !req
            .headers()
            .get(http::header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let req = req.map(|inner| Returnable {
            inner: Some(inner),
            unread: Arc::clone(&unread),
            sent,
            pace: Pace::new(self.pace),
        });
        let req = match refused {
            Some(e) => {
                // Now, so that what it leaves unread is drained before the answer.
                drop(req);
                Err(e)
            }
            None if length == Unsized::Xml => read_xml(req, max_xml_body).await,
            None => Ok(req.map(s3s::Body::http_body)),
        };
        let result = match req {
            Err(e) => {
                span.in_scope(|| tracing::debug!(code = %e.code().as_str(), "refused before s3s"));
                e.to_http_response()
                    .map_err(|e| s3s::HttpError::new(Box::new(e)))
            }
            Ok(req) => self.service.call(req).instrument(span.clone()).await,
        };
        // Whatever was refused unread is drained before the answer goes out.
        let rest = unread.lock().ok().and_then(|mut s| s.take());
        if let Some(body) = rest {
            discard_body(body).await;
        }
        match result {
            Ok(mut resp) => {
                log.status = Some(resp.status().as_u16());
                identify_error(&mut resp, &id, &resource);
                if let Ok(v) = http::HeaderValue::from_str(&id) {
                    resp.headers_mut().insert("x-amz-request-id", v);
                }
                Ok(resp)
            }
            Err(e) => {
                // No S3 answer at all: logged once, by the access log, with this cause.
                log.status = Some(500);
                span.record("error", tracing::field::debug(&e));
                Err(e)
            }
        }
    }
}
