//! WebSocket as a byte stream, and the `ws://`/`wss://` remote engine.
//!
//! The engine tunnels the broker's gRPC protocol through binary WebSocket
//! messages (the broker's `--ws` listener feeds them to the same gRPC
//! services), so reconnect, resume, connection state and breaker behaviour
//! are exactly those of `grpc://`: only the transport under tonic differs.
//! Browsers and proxies that pass nothing but HTTP/1.1 and WebSocket can
//! carry it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::config::EngineConfig;
use super::Engine;
use crate::error::{Error, Result};

/// Largest WebSocket message either side accepts. gRPC frames are cut into
/// writes of at most a few hundred KiB, so this only guards against a peer
/// that sends a huge message to exhaust memory.
const MAX_WS_MESSAGE: usize = 16 << 20;

/// The WebSocket settings of both ends of a tunnel.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().max_message_size(Some(MAX_WS_MESSAGE)).max_frame_size(Some(MAX_WS_MESSAGE))
}

/// Anything a tunnel can run over (TCP, TLS over TCP, an upgraded HTTP connection).
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A WebSocket connection read and written as a byte stream: every write is
/// one binary message, reads concatenate binary messages. Pings are
/// answered by tungstenite itself; text messages are not part of a tunnel
/// and are skipped.
pub struct WsBytes<S> {
    ws: WebSocketStream<S>,
    unread: Bytes,
}

impl<S> WsBytes<S> {
    pub fn new(ws: WebSocketStream<S>) -> WsBytes<S> {
        WsBytes { ws, unread: Bytes::new() }
    }
}

fn io_error(e: tokio_tungstenite::tungstenite::Error) -> io::Error {
    use tokio_tungstenite::tungstenite::Error as E;
    match e {
        E::Io(e) => e,
        E::ConnectionClosed | E::AlreadyClosed => io::Error::new(io::ErrorKind::BrokenPipe, "WebSocket closed"),
        other => io::Error::other(other),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsBytes<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.unread.is_empty() {
                let n = this.unread.len().min(buf.remaining());
                buf.put_slice(&this.unread[..n]);
                this.unread.advance(n);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(b))) => this.unread = b,
                // A close (or its end) is the end of the byte stream.
                None | Some(Ok(Message::Close(_))) => return Poll::Ready(Ok(())),
                Some(Ok(_)) => continue,
                Some(Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed)) => return Poll::Ready(Ok(())),
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsBytes<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.ws).poll_ready(cx)).map_err(io_error)?;
        // Bounded: tungstenite's poll_ready waits while its write buffer is full.
        let n = buf.len().min(MAX_WS_MESSAGE);
        Pin::new(&mut this.ws).start_send(Message::Binary(Bytes::copy_from_slice(&buf[..n]))).map_err(io_error)?;
        Poll::Ready(Ok(n))
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().ws).poll_flush(cx).map_err(io_error)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(Pin::new(&mut self.get_mut().ws).poll_close(cx)) {
            Ok(()) | Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed) => Poll::Ready(Ok(())),
            Err(e) => Poll::Ready(Err(io_error(e))),
        }
    }
}

/// Host, port and path of a `ws://`/`wss://` URL (path defaults to `/grpc`).
pub fn split_url(url: &str) -> Result<(bool, String, String)> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("ws://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("wss://") {
        (true, r)
    } else {
        return Err(Error::invalid(format!("not a WebSocket URL: {url:?}")));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let path = if path.is_empty() || path == "/" { "/grpc" } else { path };
    let port_ok = authority.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
    if !port_ok {
        let scheme = if tls { "wss" } else { "ws" };
        return Err(Error::invalid(format!("invalid broker URL {url:?}: expected {scheme}://host:port[/path]")));
    }
    Ok((tls, authority.to_owned(), path.to_owned()))
}

fn client_tls(cfg: &EngineConfig) -> Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match &cfg.tls_ca_file {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| Error::invalid(format!("option tls_ca_file: cannot read {path}: {e}")))?;
            let certs: Vec<_> =
                rustls::pki_types::CertificateDer::pem_slice_iter(&pem).filter_map(|c| c.ok()).collect();
            if certs.is_empty() {
                return Err(Error::invalid(format!("option tls_ca_file: {path} holds no PEM certificate")));
            }
            // A private CA replaces the system roots: trust exactly what was asked.
            for c in certs {
                roots.add(c).map_err(|e| Error::invalid(format!("option tls_ca_file: {path}: {e}")))?;
            }
        }
        None => {
            for c in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(c);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Internal(format!("TLS settings: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Where and how one tunnel connects.
#[derive(Clone)]
struct Target {
    authority: String,
    path: String,
    tls: Option<(Arc<rustls::ClientConfig>, rustls::pki_types::ServerName<'static>)>,
}

impl Target {
    async fn open(self) -> io::Result<hyper_util::rt::TokioIo<WsBytes<Box<dyn Io>>>> {
        let tcp = tokio::net::TcpStream::connect(&self.authority).await?;
        tcp.set_nodelay(true)?;
        let stream: Box<dyn Io> = match self.tls {
            Some((config, name)) => Box::new(tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?),
            None => Box::new(tcp),
        };
        let url = format!("ws://{}{}", self.authority, self.path);
        let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(ws_config()))
            .await
            .map_err(|e| io::Error::other(format!("WebSocket handshake: {e}")))?;
        Ok(hyper_util::rt::TokioIo::new(WsBytes::new(ws)))
    }
}

/// Opens a remote engine on a `ws://` or `wss://` broker URL.
pub async fn connect(url: &str, cfg: &EngineConfig) -> Result<Arc<dyn Engine>> {
    let (tls, authority, path) = split_url(url)?;
    let host = authority.rsplit_once(':').map_or(authority.as_str(), |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    let tls = match tls {
        false => None,
        true => {
            let name = cfg.tls_server_name.clone().unwrap_or(host);
            let name = rustls::pki_types::ServerName::try_from(name)
                .map_err(|e| Error::invalid(format!("TLS server name of {url}: {e}")))?;
            Some((client_tls(cfg)?, name))
        }
    };
    let target = Target { authority: authority.clone(), path, tls };
    let connect_timeout = Duration::from_millis(cfg.connect_timeout_ms.max(1));
    // The URI only names the HTTP/2 authority inside the tunnel; the
    // connector below decides where the bytes go.
    let endpoint = super::remote::endpoint(&format!("http://{authority}"), url, connect_timeout)?;
    let connector = Connector(target);
    let channel = tokio::time::timeout(connect_timeout, endpoint.connect_with_connector(connector))
        .await
        .map_err(|_| Error::Timeout(format!("connecting to {url} took longer than {connect_timeout:?}")))?
        .map_err(|e| Error::Unavailable(format!("cannot connect to broker at {url}: {}", crate::wire::chain(&e))))?;
    super::remote::RemoteEngine::over(url, channel, cfg).await
}

/// The connector tonic calls for every (re)connect of the channel.
#[derive(Clone)]
struct Connector(Target);

impl tower_service::Service<http::Uri> for Connector {
    type Response = hyper_util::rt::TokioIo<WsBytes<Box<dyn Io>>>;
    type Error = io::Error;
    type Future = Pin<Box<dyn std::future::Future<Output = io::Result<Self::Response>> + Send>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: http::Uri) -> Self::Future {
        Box::pin(self.0.clone().open())
    }
}

#[cfg(test)]
mod tests {
    use super::split_url;

    #[test]
    fn urls() {
        assert_eq!(split_url("ws://h:1").unwrap(), (false, "h:1".into(), "/grpc".into()));
        assert_eq!(split_url("wss://h:1/").unwrap(), (true, "h:1".into(), "/grpc".into()));
        assert_eq!(split_url("ws://[::1]:8/x/grpc").unwrap(), (false, "[::1]:8".into(), "/x/grpc".into()));
        for bad in ["ws://", "ws://h", "ws://:1", "wss://h:x", "grpc://h:1"] {
            assert!(split_url(bad).is_err(), "{bad}");
        }
    }
}
