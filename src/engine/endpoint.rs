//! Connection URLs and opening the engine one names: `mem://`, `file://`
//! (embedded), `grpc://`/`grpcs://` (a broker), `ws://`/`wss://` (a broker
//! through a WebSocket tunnel) and `nats://` (JetStream).

use std::path::PathBuf;
use std::sync::Arc;

use super::config::EngineConfig;
use super::embedded::{EmbeddedConfig, EmbeddedEngine};
use super::Engine;
use crate::error::{Error, Result};

/// A parsed connection URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `mem://` (private) or `mem://name` (shared within the process).
    Memory(Option<String>),
    /// `file:///dir`
    File(PathBuf),
    /// `grpc://host:port` or `grpcs://host:port`
    Remote {
        /// The URL as given.
        url: String,
        /// `grpcs://`: the link is TLS.
        tls: bool,
    },
    /// `ws://host:port[/path]` or `wss://…`: a broker's `--ws` listener
    WebSocket(String),
    /// `nats://h1:4222,h2:4222` (hosts may be written `tls://h:p`): NATS JetStream
    Nats(Vec<String>),
}

impl Endpoint {
    /// Parses an engine URL; InvalidArgument for an unknown scheme or a malformed address.
    pub fn parse(url: &str) -> Result<Endpoint> {
        if let Some(rest) = url.strip_prefix("mem://") {
            return Ok(Endpoint::Memory(Some(rest.to_owned()).filter(|s| !s.is_empty())));
        }
        if let Some(path) = url.strip_prefix("file://") {
            if path.is_empty() {
                return Err(Error::invalid("file:// URL needs a directory, e.g. file:///var/lib/app/fm"));
            }
            return Ok(Endpoint::File(PathBuf::from(path)));
        }
        for (scheme, tls) in [("grpc://", false), ("grpcs://", true)] {
            if let Some(rest) = url.strip_prefix(scheme) {
                if rest.is_empty() || rest.contains('/') && !rest.ends_with('/') {
                    return Err(Error::invalid(format!("invalid broker URL {url:?}: expected {scheme}host:port")));
                }
                return Ok(Endpoint::Remote { url: url.to_owned(), tls });
            }
        }
        if url.starts_with("ws://") || url.starts_with("wss://") {
            super::ws::split_url(url)?;
            return Ok(Endpoint::WebSocket(url.to_owned()));
        }
        if let Some(rest) = url.strip_prefix("nats://") {
            return super::nats::parse_hosts(url, rest).map(Endpoint::Nats);
        }
        Err(Error::invalid(format!(
            "unsupported URL {url:?}: use mem://, file:///dir, grpc://host:port, grpcs://host:port, ws://host:port, wss://host:port or \
             nats://host:port"
        )))
    }

    /// Opens the engine this endpoint names.
    pub async fn open(&self, cfg: &EngineConfig) -> Result<Arc<dyn Engine>> {
        let embedded = |dir: Option<PathBuf>| EmbeddedConfig {
            dir,
            fsync: cfg.fsync,
            segment_bytes: cfg.segment_bytes,
            max_payload_bytes: cfg.max_payload_bytes,
        };
        if cfg.nats.any() && !matches!(self, Endpoint::Nats(_)) {
            return Err(Error::invalid(
                "options replicas, user, password, creds_file, tls_cert_file and js_domain apply to nats:// only",
            ));
        }
        match self {
            Endpoint::Nats(hosts) => super::nats::NatsEngine::connect(hosts, cfg).await,
            Endpoint::Memory(None) => Ok(Arc::new(EmbeddedEngine::open(embedded(None), None)?)),
            Endpoint::Memory(Some(name)) => {
                Ok(Arc::new(EmbeddedEngine::open(embedded(None), Some(format!("mem:{name}")))?))
            }
            Endpoint::File(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| Error::invalid(format!("cannot create data directory {}: {e}", dir.display())))?;
                let dir = dir.canonicalize().map_err(|e| Error::io("resolve data directory", e))?;
                let key = format!("file:{}", dir.display());
                Ok(Arc::new(EmbeddedEngine::open(embedded(Some(dir)), Some(key))?))
            }
            Endpoint::Remote { url, tls } => super::remote::RemoteEngine::connect(url, *tls, cfg).await,
            Endpoint::WebSocket(url) => super::ws::connect(url, cfg).await,
        }
    }
}

/// Opens the engine `url` names (see [`Endpoint`]).
pub async fn open(url: &str, cfg: &EngineConfig) -> Result<Arc<dyn Engine>> {
    Endpoint::parse(url)?.open(cfg).await
}
