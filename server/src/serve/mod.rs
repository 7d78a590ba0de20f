//! The serve flow: a validated index and its key, answered over gRPC with
//! health, reflection, API keys, quotas and metrics.
//!
//! * `config`: [`Settings`](config::Settings) (flags, environment, TOML) and
//!   the resolved [`Config`].
//! * `state`: [`AppState`] and the served (index, key) pair,
//!   swapped atomically on reload.
//! * `service`: the three handlers, returning `Result<_, Refusal>`.
//! * `auth`: API keys (`authorization: Bearer`), hashed, constant-time.
//! * `quota`: [`QuotaStore`](quota::QuotaStore) and its in-memory store.
//! * `metrics`: the Prometheus registry, its endpoint, and the tower layer
//!   that observes every call.
//! * `guard`: the tower layer that admits each call from its headers (token,
//!   request rate) before its body is read, bounds the body's arrival, and
//!   answers undecodable requests `INVALID_ARGUMENT`.
//! * `net`: the accept loop (connection cap, back-off on accept errors) and
//!   the per-connection handshake and idle deadlines; the descriptor limit.
//! * `watch`: warns when the served index file changes on disk (SIGHUP
//!   loads it).
//!
//! Two entry points, after mini-redis `server::run`: [`serve`] answers on a
//! listener the caller bound (tests bind `127.0.0.1:0`), and [`bind`] then
//! [`Bound::run`] do what `breachcheck-server serve` does: load, bind, serve
//! metrics, reload on SIGHUP, and drain on shutdown.

pub(crate) mod auth;
pub(crate) mod config;
pub(crate) mod guard;
pub(crate) mod metrics;
pub(crate) mod net;
pub(crate) mod quota;
pub(crate) mod redis;
pub(crate) mod service;
pub(crate) mod source;
pub(crate) mod state;
pub(crate) mod watch;
pub(crate) mod web;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use breachcheck_proto as proto;
use breachcheck_proto::pb::breach_check_server::BreachCheckServer;
use tokio::net::TcpListener;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::error::{Result, ServerError, io_err};
use crate::serve::config::Config;
use crate::serve::guard::GuardLayer;
use crate::serve::metrics::{MetricsLayer, serve_metrics};
use crate::serve::net::{
    ConnLimits, Cooldowns, Incoming, connection_cap, raise_nofile_limit, trim_after_churn,
};
use crate::serve::service::Service;
use crate::serve::state::{AppState, Served};

/// Largest request the server decodes: a full batch of elements plus framing.
pub(crate) fn max_request_bytes(max_batch: u32) -> usize {
    max_batch as usize * (proto::ELEMENT_LEN + 3) + 1024
}

/// Largest header block a request may send (HTTP/2 SETTINGS
/// MAX_HEADER_LIST_SIZE). gRPC requests send a few hundred bytes.
const MAX_HEADER_LIST_BYTES: u32 = 16 << 10;

/// Streams a peer may reset before the server accepted them, at once, before
/// the connection is closed with ENHANCE_YOUR_CALM (h2's default).
const MAX_PENDING_ACCEPT_RESETS: usize = 20;

/// Streams the server may reset for the peer's errors before it closes the
/// connection (hyper's default, which tonic turns off).
const MAX_LOCAL_ERROR_RESETS: usize = 1024;

/// Serves the BreachCheck service, health and reflection on `listener` until
/// `shutdown` resolves, then drains in-flight calls. Every BreachCheck call
/// is observed by the metrics layer and admitted by the guard layer from its
/// headers; connections are accepted by our own loop under the connection
/// cap and deadlines of the configuration (`docs/PROTOCOL.md` §8).
///
/// # Errors
///
/// Transport errors (TLS configuration, accept failures).
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    tls: Option<ServerTlsConfig>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::result::Result<(), tonic::transport::Error> {
    let config = state.config().clone();
    let metrics = state.metrics.clone();
    // A PIR query (key material and the encrypted selector) may be larger
    // than a full batch; the limit follows the index served at start (a
    // reload to a larger PIR shape needs a restart).
    let pir_request = state
        .current()
        .pir
        .as_ref()
        .map_or(0, |p| p.keys_len() + p.query_len() + 1024);
    let svc = BreachCheckServer::new(Service::new(state.clone()))
        .max_decoding_message_size(max_request_bytes(config.max_batch).max(pir_request));
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<BreachCheckServer<Service>>().await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1();
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha();
    let mut builder = Server::builder()
        .max_concurrent_streams(config.max_concurrent_streams)
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
        // Rapid-reset bounds (CVE-2023-44487). tonic leaves both unset, and
        // hyper reads an unset local-error limit as none at all.
        .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_ACCEPT_RESETS))
        .http2_max_local_error_reset_streams(Some(MAX_LOCAL_ERROR_RESETS))
        .http2_keepalive_interval(Some(config.keepalive_interval))
        .http2_keepalive_timeout(Some(config.keepalive_timeout))
        .max_connection_age(config.max_connection_age)
        .max_connection_age_grace(config.max_connection_age_grace)
        .timeout(config.request_timeout);
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    if config.web {
        // Browsers speak grpc-web over HTTP/1.1 (HTTP/2 only with TLS).
        builder = builder.accept_http1(true);
    }
    let web = config.web.then(tonic_web::GrpcWebLayer::new);
    let cors = (config.web && !config.cors_origins.is_empty()).then(|| cors(&config));
    // Outermost first: CORS answers preflights; the page's GETs are
    // answered before grpc-web (which refuses any other HTTP/1.1 request);
    // grpc-web is translated to gRPC before metrics and the guard see it;
    // metrics see every answer, the guard's refusals too.
    let mut router = builder
        .layer(tower::util::option_layer(cors))
        .layer(web::PageLayer::new(config.web))
        .layer(tower::util::option_layer(web))
        .layer(MetricsLayer::new(metrics.clone()))
        .layer(GuardLayer::new(state))
        .add_service(health)
        .add_service(svc);
    if let Ok(r) = reflection_v1 {
        router = router.add_service(r);
    }
    if let Ok(r) = reflection_v1alpha {
        router = router.add_service(r);
    }
    let limits = ConnLimits {
        handshake: config.handshake_timeout,
        idle: config.idle_timeout,
    };
    let cap = connection_cap(config.max_connections);
    let trimmer = tokio::spawn(trim_after_churn(metrics.clone()));
    let cooldowns = Arc::new(Cooldowns::new(
        config.source_cooldown,
        config.trusted_proxies.clone(),
        metrics.clone(),
    ));
    let incoming = Incoming::new(listener, cap, limits, cooldowns, metrics);
    let served = router
        .serve_with_incoming_shutdown(incoming, async move {
            shutdown.await;
            reporter
                .set_not_serving::<BreachCheckServer<Service>>()
                .await;
        })
        .await;
    trimmer.abort();
    served
}

/// CORS for the configured origins: grpc-web POSTs with their headers, and
/// the status headers readable by the calling page.
fn cors(config: &Config) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origins: Vec<http::HeaderValue> = config
        .cors_origins
        .iter()
        .filter_map(|o| http::HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([http::Method::POST])
        .allow_headers([
            http::header::CONTENT_TYPE,
            http::header::AUTHORIZATION,
            http::HeaderName::from_static("x-grpc-web"),
            http::HeaderName::from_static("x-user-agent"),
            http::HeaderName::from_static("grpc-timeout"),
        ])
        .expose_headers([
            http::HeaderName::from_static("grpc-status"),
            http::HeaderName::from_static("grpc-message"),
            http::HeaderName::from_static("retry-after"),
        ])
        .max_age(std::time::Duration::from_secs(600))
}

/// A server loaded and bound, not yet answering: [`bind`]'s result.
#[derive(Debug)]
pub struct Bound {
    listener: TcpListener,
    addr: SocketAddr,
    metrics_listener: Option<TcpListener>,
    state: Arc<AppState>,
    tls: Option<ServerTlsConfig>,
    index: PathBuf,
    key: Option<PathBuf>,
}

/// Loads the index and key named by `config` (hashing the body unless
/// `no_verify`), reads the TLS files, and binds the gRPC and metrics
/// listeners.
///
/// # Errors
///
/// A missing `index` or `key` setting, key, index or TLS file errors, or an
/// address that cannot be bound.
pub async fn bind(config: Config) -> Result<Bound> {
    // Before anything opens descriptors: the connection cap is fitted under
    // the soft limit, so lift it to the hard one first.
    raise_nofile_limit();
    let index = config.index.clone().ok_or_else(|| {
        ServerError::Input("no index: give --index or `index` in the config".into())
    })?;
    // A bucket-only replica never reads the key, even if one is configured.
    let key = if config.buckets_only {
        None
    } else {
        Some(config.key.clone().ok_or_else(|| {
            ServerError::Input(
                "no key: give --key or `key` in the config (or --buckets-only)".into(),
            )
        })?)
    };
    let key_mode = crate::key::InsecureKeyMode::allow_if(config.allow_insecure_key_mode);
    let served = tokio::task::spawn_blocking({
        let (i, k) = (index.clone(), key.clone());
        let pir = config.pir;
        move || {
            let served = Served::load_optional_key(&i, k.as_deref(), key_mode)?;
            if pir { served.with_pir() } else { Ok(served) }
        }
    })
    .await??;
    let tls = tls_config(&config)?;
    let h = served.index.header();
    tracing::info!(
        index = %index.display(),
        entries = h.entry_count,
        bucket_bits = h.bucket_bits,
        index_id = %hex::encode(h.index_id),
        public_key = %served.index.public_key_fingerprint(),
        buckets_only = served.key.is_none(),
        anonymous = config.allow_anonymous,
        api_keys = config.api_keys.len(),
        web = config.web,
        pir = config.pir,
        "index loaded"
    );
    if config.web && tls.is_none() {
        tracing::warn!(
            "--web without TLS: anyone on the network path can replace the page (and with it \
             the check); serve it over HTTPS (--tls-cert/--tls-key, or a TLS proxy in front)"
        );
    }
    if config.web && !config.allow_anonymous {
        tracing::warn!(
            "--web without --allow-anonymous: the page has no API key, so its checks will be \
             refused (UNAUTHENTICATED); allow anonymous access for a public page"
        );
    }
    let listener = bind_tcp(config.listen).await?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: config.listen,
        source,
    })?;
    let metrics_listener = match config.metrics_listen {
        Some(m) => Some(bind_tcp(m).await?),
        None => None,
    };
    Ok(Bound {
        listener,
        addr,
        metrics_listener,
        state: Arc::new(AppState::new(served, config)?),
        tls,
        index,
        key,
    })
}

/// Loads, binds and serves until `shutdown` resolves: [`bind`] then
/// [`Bound::run`].
///
/// # Errors
///
/// As [`bind`] and [`Bound::run`].
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
    bind(config).await?.run(shutdown).await
}

impl Bound {
    /// The address the gRPC listener is bound to (the real port when the
    /// configuration asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared state (metrics, the served pair).
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Serves until `shutdown` resolves, then drains in-flight calls. Also
    /// serves `/metrics` when configured, and on SIGHUP reloads the index
    /// and key from their paths, keeping the old pair when that fails.
    ///
    /// # Errors
    ///
    /// The SIGHUP handler cannot be installed, or a transport error.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        let mut tasks = Vec::new();
        if let Some(ml) = self.metrics_listener {
            if let Ok(addr) = ml.local_addr() {
                tracing::info!(addr = %addr, "metrics on /metrics");
            }
            tasks.push(tokio::spawn(serve_metrics(ml, self.state.metrics.clone())));
        }
        tasks.push(watch::spawn(self.state.clone(), self.index.clone()));
        #[cfg(unix)]
        tasks.push(reload_on_sighup(self.state.clone(), self.index, self.key)?);
        let served = serve(self.listener, self.state, self.tls, shutdown).await;
        for t in tasks {
            t.abort();
        }
        served?;
        tracing::info!("shut down");
        Ok(())
    }
}

/// SIGHUP: reload index and key; failures keep the old pair served.
#[cfg(unix)]
fn reload_on_sighup(
    state: Arc<AppState>,
    index: PathBuf,
    key: Option<PathBuf>,
) -> Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).map_err(ServerError::Signal)?;
    Ok(tokio::spawn(async move {
        while hup.recv().await.is_some() {
            let (state, i, k) = (state.clone(), index.clone(), key.clone());
            let r = tokio::task::spawn_blocking(move || state.reload(&i, k.as_deref())).await;
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "reload failed; still serving the previous index");
                }
                Err(e) => tracing::error!(error = %e, "reload task failed"),
            }
        }
    }))
}

/// Pending connections the kernel may queue before `accept` (it caps this
/// at `net.core.somaxconn`). Deeper than tokio's 1,024 so a burst of
/// connections waits for the accept loop, which closes what is over the
/// cap, instead of being half-made by the kernel and never seen by us.
const LISTEN_BACKLOG: u32 = 4096;

async fn bind_tcp(addr: SocketAddr) -> Result<TcpListener> {
    let bind = || {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        // As TcpListener::bind does on unix: restarts need not wait for
        // TIME_WAIT to pass.
        #[cfg(unix)]
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    bind().map_err(|source| ServerError::Bind { addr, source })
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(io_err(path))
}

/// TLS from `tls_cert` and `tls_key`, with mTLS when `client_ca` is set.
fn tls_config(config: &Config) -> Result<Option<ServerTlsConfig>> {
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
        return Ok(None);
    };
    let identity = Identity::from_pem(read(cert)?, read(key)?);
    let mut tls = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &config.client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    Ok(Some(tls))
}

/// Resolves on SIGINT or SIGTERM (Ctrl-C elsewhere): the shutdown signal of
/// `breachcheck-server serve`.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutdown requested: draining in-flight calls");
}
