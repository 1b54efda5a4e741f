//! `flowmesh serve` security flags and `flowmesh token`: kept out of the
//! main CLI file so the command table there stays readable.

use std::path::PathBuf;
use std::sync::Arc;

use flowmesh::server::auth::{hash_token, new_token, AccessControl};
use flowmesh::server::ServerConfig;
use flowmesh::{Error, Result};

fn read(path: &PathBuf, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::InvalidArgument(format!("cannot read {what} {}: {e}", path.display())))
}

/// Loads TLS files and the access file; starts the SIGHUP reloader.
pub fn configure(
    cfg: &mut ServerConfig,
    cert: &Option<PathBuf>,
    key: &Option<PathBuf>,
    access: &Option<PathBuf>,
) -> Result<()> {
    if let (Some(cert), Some(key)) = (cert, key) {
        cfg.tls = Some((read(cert, "--tls-cert")?, read(key, "--tls-key")?));
        tracing::info!(cert = %cert.display(), "serving TLS");
    }
    if let Some(path) = access {
        let ac = Arc::new(AccessControl::load(path)?);
        let reload = ac.clone();
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(mut hup) => {
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        // A bad file keeps the old table; reload() logs why.
                        let _ = reload.reload();
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP: access file reload disabled"),
        }
        tracing::info!(path = %path.display(), "access control on");
        cfg.access = Some(ac);
    }
    Ok(())
}

/// A new token and the access-file entry that admits it (no grants yet).
pub fn new_token_entry(id: &str, tenant: &str) -> Result<String> {
    flowmesh::names::check_scope("tenant", tenant)?;
    let token = new_token()?;
    let entry = serde_json::json!({
        "id": id,
        "sha256": hash_token(&token),
        "tenant": tenant,
        "grants": [{ "namespace": "*", "ops": ["read", "subscribe"] }],
    });
    Ok(format!("token: {token}\nentry: {entry}"))
}
