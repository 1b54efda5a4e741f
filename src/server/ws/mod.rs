//! The broker's WebSocket listener (`flowmesh serve --ws ADDR`): plain
//! HTTP/1.1 (or TLS) with two WebSocket endpoints, both served by the same
//! gRPC services as `--listen`, so tokens, grants, limits, audit and metrics
//! are those of gRPC:
//! - `/grpc`: a tunnel, binary messages carrying the gRPC byte stream (the
//!   `ws://` remote engine of the core client);
//! - `/ws`: the JSON protocol of docs/WEBSOCKET.md (browsers), translated
//!   per request into a gRPC call on an in-process connection;
//! - `/`: the web console (plain HTTP GET, files built into the binary).

mod console;
mod json;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use super::metrics::{BrokerMetrics, OpenConn};
use crate::engine::ws::{ws_config, Io, WsBytes};
use crate::error::{Error, Result};

/// A connection handed to the in-process gRPC server: a WebSocket tunnel
/// or the gRPC side of a JSON session, with the WebSocket client's address
/// (per-connection limits and audit see the real peer).
pub(crate) struct Tunnel {
    io: Pin<Box<dyn Io>>,
    peer: SocketAddr,
    _open: Option<OpenConn>,
}

impl tonic::transport::server::Connected for Tunnel {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        tonic::transport::server::TcpConnectInfo { local_addr: None, remote_addr: Some(self.peer) }
    }
}

impl AsyncRead for Tunnel {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        self.io.as_mut().poll_read(cx, buf)
    }
}

impl AsyncWrite for Tunnel {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.io.as_mut().poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.io.as_mut().poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.io.as_mut().poll_shutdown(cx)
    }
}

/// What every WebSocket connection of the listener shares.
#[derive(Clone)]
pub(crate) struct WsShared {
    /// Into the in-process gRPC server.
    pub tunnels: mpsc::Sender<Tunnel>,
    pub metrics: Arc<BrokerMetrics>,
    pub stopping: watch::Receiver<bool>,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Largest message of the JSON protocol (payload limit plus slack).
    pub max_message: usize,
}

/// The TLS acceptor of `wss://` from the PEM certificate chain and key.
pub(crate) fn acceptor(cert: &[u8], key: &[u8]) -> Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::invalid(format!("TLS certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| Error::invalid(format!("TLS key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Internal(format!("TLS settings: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::invalid(format!("TLS certificate or key: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Accepts WebSocket clients on `listener` until the broker stops.
pub(crate) async fn serve(listener: tokio::net::TcpListener, shared: WsShared) {
    let mut stopping = shared.stopping.clone();
    let stopped = async move {
        let _ = stopping.wait_for(|s| *s).await;
    };
    tokio::pin!(stopped);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!("WebSocket listener: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(connection(tcp, peer, shared.clone()));
    }
}

async fn connection(tcp: tokio::net::TcpStream, peer: SocketAddr, shared: WsShared) {
    let open = shared.metrics.open_conn();
    let io: Box<dyn Io> = match &shared.tls {
        None => Box::new(tcp),
        Some(acceptor) => match tokio::time::timeout(super::TLS_HANDSHAKE, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => Box::new(tls),
            Ok(Err(e)) => return tracing::debug!(%peer, "WebSocket TLS handshake failed: {e}"),
            Err(_) => return tracing::debug!(%peer, "WebSocket TLS handshake timed out"),
        },
    };
    let open = Arc::new(std::sync::Mutex::new(Some(open)));
    let service = hyper::service::service_fn(move |req| {
        let shared = shared.clone();
        let open = open.clone();
        async move { Ok::<_, std::convert::Infallible>(route(req, peer, shared, open)) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(10))
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!(%peer, "WebSocket listener connection: {e}");
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_owned())));
    *r.status_mut() = status;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, "text/plain; charset=utf-8".parse().expect("static"));
    r
}

/// The token a JSON session starts with: `Authorization: Bearer …` on the
/// upgrade request, or `?token=…` (browsers cannot set headers on a WebSocket).
fn upgrade_token(req: &Request<Incoming>) -> Option<String> {
    if let Some(h) = req.headers().get(hyper::header::AUTHORIZATION).and_then(|h| h.to_str().ok()) {
        return Some(h.strip_prefix("Bearer ").unwrap_or(h).trim().to_owned());
    }
    let query = req.uri().query()?;
    query.split('&').find_map(|kv| kv.strip_prefix("token=")).map(percent_decode)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn route(
    req: Request<Incoming>,
    peer: SocketAddr,
    shared: WsShared,
    open: Arc<std::sync::Mutex<Option<OpenConn>>>,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let wants_ws = req
        .headers()
        .get(hyper::header::UPGRADE)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| h.eq_ignore_ascii_case("websocket"));
    if !wants_ws {
        return match (req.method(), path.as_str()) {
            (&hyper::Method::GET, "/ws" | "/grpc") => text(StatusCode::UPGRADE_REQUIRED, "a WebSocket endpoint\n"),
            (&hyper::Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
            (&hyper::Method::GET, p) => console::asset(p).unwrap_or_else(|| text(StatusCode::NOT_FOUND, "not found\n")),
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        };
    }
    let kind = match path.as_str() {
        "/grpc" => Kind::Tunnel,
        "/ws" => Kind::Json(upgrade_token(&req)),
        _ => return text(StatusCode::NOT_FOUND, "no WebSocket endpoint here: use /ws or /grpc\n"),
    };
    let key = req.headers().get("sec-websocket-key").map(|k| derive_accept_key(k.as_bytes()));
    let version_ok = req.headers().get("sec-websocket-version").is_some_and(|v| v.as_bytes() == b"13");
    let (Some(accept), true) = (key, version_ok && req.method() == hyper::Method::GET) else {
        return text(StatusCode::BAD_REQUEST, "bad WebSocket upgrade request\n");
    };
    tokio::spawn(async move {
        let upgraded = match hyper::upgrade::on(req).await {
            Ok(u) => u,
            Err(e) => return tracing::debug!(%peer, "WebSocket upgrade failed: {e}"),
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(ws_config())).await;
        // The connection is counted once, by whichever endpoint it became.
        let open = open.lock().ok().and_then(|mut o| o.take());
        match kind {
            Kind::Tunnel => {
                let t = Tunnel { io: Box::pin(WsBytes::new(ws)), peer, _open: open };
                let _ = shared.tunnels.send(t).await;
            }
            Kind::Json(token) => json::session(ws, peer, token, shared, open).await,
        }
    });
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(hyper::header::CONNECTION, "Upgrade".parse().expect("static"));
    h.insert(hyper::header::UPGRADE, "websocket".parse().expect("static"));
    h.insert("sec-websocket-accept", accept.parse().expect("base64 is a header value"));
    r
}

enum Kind {
    Tunnel,
    Json(Option<String>),
}

/// An in-process gRPC connection for a JSON session: each (re)connect of
/// the channel hands the server half of a pipe to the gRPC server.
#[derive(Clone)]
pub(crate) struct PipeConnector {
    tunnels: mpsc::Sender<Tunnel>,
    peer: SocketAddr,
}

/// Bytes buffered in each direction of the in-process pipe.
const PIPE_BYTES: usize = 256 << 10;

impl tower_service::Service<http::Uri> for PipeConnector {
    type Response = TokioIo<tokio::io::DuplexStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: http::Uri) -> Self::Future {
        let (tunnels, peer) = (self.tunnels.clone(), self.peer);
        Box::pin(async move {
            let (client, server) = tokio::io::duplex(PIPE_BYTES);
            tunnels
                .send(Tunnel { io: Box::pin(server), peer, _open: None })
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::NotConnected, "the broker is stopping"))?;
            Ok(TokioIo::new(client))
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn percent_decoding() {
        assert_eq!(super::percent_decode("a%2Fb%3d+c"), "a/b= c");
        assert_eq!(super::percent_decode("bad%zz%"), "bad%zz%");
        assert_eq!(super::percent_decode("%4"), "%4");
    }
}
