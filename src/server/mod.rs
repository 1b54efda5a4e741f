//! The broker: serves any [`Engine`] over gRPC (`flowmesh serve`). Each
//! service is a thin face that converts wire types and forwards to the
//! engine, so the embedded and remote paths share every semantic.

pub(crate) mod audit;
pub mod auth;
mod gate;
mod health;
pub mod identity;
mod kv;
pub(crate) mod metrics;
mod overview;
mod queues;
mod resources;
#[cfg(test)]
mod storage_fault_tests;
mod streams;
mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tonic::transport::Server;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::wire::pb;

/// Wire overhead allowed on top of the payload limit in one gRPC message.
const FRAME_SLACK: usize = 1 << 20;

#[derive(Debug, Clone)]
/// Settings of `flowmesh serve`.
pub struct ServerConfig {
    /// Largest record accepted.
    pub max_payload_bytes: usize,
    /// Largest gRPC message accepted (a publish batch or a response).
    pub max_message_bytes: usize,
    /// Serve Prometheus metrics on `http://ADDR/metrics` (`--metrics`).
    pub metrics_addr: Option<SocketAddr>,
    /// PEM certificate chain and private key: serve TLS instead of plaintext.
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
    /// Tokens, grants and limits; `None` = no authentication (open broker).
    pub access: Option<Arc<auth::AccessControl>>,
    /// Also serve WebSocket clients on this address (`--ws`): `/grpc` and
    /// `/ws` (docs/WEBSOCKET.md), with the same TLS as gRPC.
    pub ws_addr: Option<SocketAddr>,
    /// Users, sessions, roles, ACL and ownership (`--identity`); state in
    /// the engine's bucket `_flowmesh/_system/identity`.
    pub identity: Option<identity::IdentityConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_payload_bytes: 8 << 20,
            max_message_bytes: 64 << 20,
            metrics_addr: None,
            tls: None,
            access: None,
            ws_addr: None,
            identity: None,
        }
    }
}

/// What every service holds.
#[derive(Clone)]
pub(crate) struct Shared {
    engine: Arc<dyn Engine>,
    cfg: Arc<ServerConfig>,
    /// Becomes true when shutdown starts: endless streams (subscriptions,
    /// watches, publish streams) end so the graceful drain can finish.
    stopping: tokio::sync::watch::Receiver<bool>,
    /// The broker's request and connection counters (Overview service).
    metrics: Arc<metrics::BrokerMetrics>,
}

/// A client must finish the TLS handshake within this time.
const TLS_HANDSHAKE: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a graceful shutdown may take before the broker stops anyway.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves `engine` on `addr` until `shutdown` resolves, then finishes the
/// requests in flight and flushes the engine to disk.
pub async fn serve(
    engine: Arc<dyn Engine>,
    addr: SocketAddr,
    cfg: ServerConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Unavailable(format!("cannot listen on {addr}: {e}")))?;
    serve_on(engine, listener, cfg, shutdown).await
}

/// Like [`serve`], on a listener the caller already bound (e.g. to port 0).
pub async fn serve_on(
    engine: Arc<dyn Engine>,
    listener: tokio::net::TcpListener,
    mut cfg: ServerConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    if let Some(icfg) = cfg.identity.clone() {
        // Sessions are bearer tokens like the access file's: the same gate.
        let ac = cfg.access.get_or_insert_with(|| Arc::new(auth::AccessControl::without_file())).clone();
        ac.attach_identity(identity::Identity::open(engine.clone(), icfg).await?);
        tracing::info!("identity on: users, sessions, roles, ACL (bootstrap admin: login_with_secret)");
    }
    let max = cfg.max_message_bytes.max(cfg.max_payload_bytes + FRAME_SLACK);
    let broker_metrics = Arc::new(metrics::BrokerMetrics::new());
    let metrics_listener = match cfg.metrics_addr {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| Error::Unavailable(format!("cannot listen for metrics on {addr}: {e}")))?,
        ),
        None => None,
    };
    let ws_listener = match cfg.ws_addr {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| Error::Unavailable(format!("cannot listen for WebSocket on {addr}: {e}")))?,
        ),
        None => None,
    };
    let (stop_tx, stopping) = tokio::sync::watch::channel(false);
    let metered = Arc::new(crate::metrics::MeteredEngine::new(engine.clone(), broker_metrics.engine.clone()));
    let cfg_access = cfg.access.clone();
    let shared = Shared { engine: metered, cfg: Arc::new(cfg), stopping, metrics: broker_metrics.clone() };
    let mut stopped = stop_tx.subscribe();
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: ending streams, finishing requests in flight");
        let _ = stop_tx.send(true);
    };
    // tonic ignores Server::tcp_nodelay for a given listener: set it here, or
    // small responses wait ~40 ms for Nagle's algorithm.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let counted = broker_metrics.clone();
    let incoming = futures::StreamExt::map(incoming, move |conn| conn.map(|c| metrics::CountedConn::new(c, &counted)));
    if let Some(l) = metrics_listener {
        tracing::info!(addr = %l.local_addr().map_err(|e| Error::io("metrics address", e))?, "serving /metrics");
        tokio::spawn(metrics::serve_http(l, broker_metrics.clone(), engine.clone(), shared.stopped()));
    }
    let mut builder = Server::builder().tcp_nodelay(true);
    if let Some((cert, key)) = &shared.cfg.tls {
        let tls = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(cert, key))
            .timeout(TLS_HANDSHAKE);
        builder = builder
            .tls_config(tls)
            .map_err(|e| Error::invalid(format!("TLS certificate or key: {}", crate::wire::chain(&e))))?;
    }
    match &shared.cfg.access {
        Some(ac) => ac.attach_audit(audit::Audit::start(engine.clone())),
        None => tracing::warn!("no --access-file: the broker accepts every request without a token"),
    }
    if let Some(l) = ws_listener {
        start_ws(l, &shared, &broker_metrics, max)?;
    }
    let server = builder
        .layer(metrics::MetricsLayer(broker_metrics))
        .add_routes(routes(&shared, max))
        .serve_with_incoming_shutdown(incoming, signal);
    tokio::select! {
        r = server => r.map_err(|e| Error::Internal(format!("gRPC server failed: {e}")))?,
        _ = async {
            let _ = stopped.wait_for(|s| *s).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => tracing::warn!("graceful shutdown took longer than {SHUTDOWN_GRACE:?}; stopping anyway"),
    }
    if let Some(ac) = &cfg_access {
        ac.flush_audit().await;
    }
    engine.sync().await
}

/// The broker's gRPC services, the same for every listener.
fn routes(shared: &Shared, max: usize) -> tonic::service::Routes {
    tonic::service::Routes::new(pb::health_server::HealthServer::new(health::HealthService(shared.clone())))
        .add_service(
            pb::streams_server::StreamsServer::new(streams::StreamsService(shared.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            pb::queues_server::QueuesServer::new(queues::QueuesService(shared.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(pb::resources_server::ResourcesServer::new(resources::ResourcesService(shared.clone())))
        .add_service(pb::identity_server::IdentityServer::new(identity::IdentityService(shared.clone())))
        .add_service(
            pb::kv_server::KvServer::new(kv::KvService(shared.clone()))
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
        )
        .add_service(
            pb::overview_server::OverviewServer::new(overview::OverviewService(shared.clone()))
                .max_encoding_message_size(max),
        )
}

/// Serves WebSocket clients on `listener`: TLS (if configured) ends there,
/// and the connections it carries go to a second gRPC server of the same
/// services, which stops with the broker.
fn start_ws(
    listener: tokio::net::TcpListener,
    shared: &Shared,
    broker_metrics: &Arc<metrics::BrokerMetrics>,
    max: usize,
) -> Result<()> {
    let tls = match &shared.cfg.tls {
        Some((cert, key)) => Some(ws::acceptor(cert, key)?),
        None => None,
    };
    let addr = listener.local_addr().map_err(|e| Error::io("WebSocket address", e))?;
    tracing::info!(%addr, tls = tls.is_some(), "serving WebSocket on /ws and /grpc");
    let (tunnels, incoming) = tokio::sync::mpsc::channel::<ws::Tunnel>(64);
    let incoming =
        futures::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(incoming), Ok::<_, std::io::Error>);
    let inner = Server::builder()
        .tcp_nodelay(true)
        .layer(metrics::MetricsLayer(broker_metrics.clone()))
        .add_routes(routes(shared, max))
        .serve_with_incoming_shutdown(incoming, shared.stopped());
    tokio::spawn(async move {
        if let Err(e) = inner.await {
            tracing::error!("gRPC server of the WebSocket listener failed: {e}");
        }
    });
    let ws_shared = ws::WsShared {
        tunnels,
        metrics: broker_metrics.clone(),
        stopping: shared.stopping.clone(),
        tls,
        max_message: max,
    };
    tokio::spawn(ws::serve(listener, ws_shared));
    Ok(())
}

impl Shared {
    /// Resolves when the broker starts shutting down.
    fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.stopping.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    fn check_payload(&self, size: usize) -> Result<()> {
        if size > self.cfg.max_payload_bytes {
            return Err(Error::TooLarge(format!(
                "message of {size} bytes exceeds the broker's limit of {} bytes",
                self.cfg.max_payload_bytes
            )));
        }
        Ok(())
    }
}

/// Turns an engine result into a gRPC response.
fn reply<T>(r: Result<T>) -> std::result::Result<tonic::Response<T>, tonic::Status> {
    r.map(tonic::Response::new).map_err(|e| crate::wire::to_status(&e))
}
