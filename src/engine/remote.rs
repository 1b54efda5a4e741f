//! The remote engine: a gRPC client of `flowmesh serve`.

use std::sync::Arc;

use crate::client::ClientConfig;
use crate::engine::Engine;
use crate::error::{Error, Result};

pub struct RemoteEngine;

impl RemoteEngine {
    pub async fn connect(url: &str, _tls: bool, _cfg: &ClientConfig) -> Result<Arc<dyn Engine>> {
        Err(Error::Unavailable(format!(
            "remote engine for {url} is not built yet"
        )))
    }
}
