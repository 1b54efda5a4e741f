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

/// `serve --identity`: users, sessions, roles, ACL (docs/SECURITY.md).
#[derive(clap::Args)]
pub struct IdentityArgs {
    /// Built-in users, sessions, roles, ACL and ownership
    #[arg(long)]
    identity: bool,
    /// Secret of the bootstrap admin (login_with_secret); better from the
    /// environment or a file, so it is not in the process list
    #[arg(long, env = "FLOWMESH_ADMIN_SECRET", hide_env_values = true, requires = "identity")]
    admin_secret: Option<String>,
    /// File holding the admin secret (one line; trailing newline ignored)
    #[arg(long, conflicts_with = "admin_secret", requires = "identity")]
    admin_secret_file: Option<PathBuf>,
    /// Tenant of the bootstrap admin
    #[arg(long, default_value = "default", requires = "identity")]
    admin_tenant: String,
    /// Lifetime of a session without refresh_session, in seconds
    #[arg(long, default_value_t = 3600, requires = "identity")]
    session_ttl_secs: u64,
    /// argon2id memory per password hash, KiB (default: OWASP's 19 MiB)
    #[arg(long, default_value_t = 19 * 1024, requires = "identity")]
    password_hash_memory_kib: u32,
    /// argon2id passes per password hash
    #[arg(long, default_value_t = 2, requires = "identity")]
    password_hash_iterations: u32,
}

impl IdentityArgs {
    pub fn config(&self) -> Result<Option<flowmesh::server::identity::IdentityConfig>> {
        if !self.identity {
            return Ok(None);
        }
        let secret = match (&self.admin_secret, &self.admin_secret_file) {
            (Some(s), _) => s.clone(),
            (None, Some(path)) => String::from_utf8(read(path, "--admin-secret-file")?)
                .map_err(|_| Error::InvalidArgument("--admin-secret-file: not UTF-8".into()))?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
            (None, None) => {
                return Err(Error::InvalidArgument(
                    "--identity needs --admin-secret, FLOWMESH_ADMIN_SECRET or --admin-secret-file".into(),
                ))
            }
        };
        if self.session_ttl_secs == 0 {
            return Err(Error::InvalidArgument("--session-ttl-secs: at least 1".into()));
        }
        let mut cfg = flowmesh::server::identity::IdentityConfig::new(&secret);
        cfg.admin_tenant = self.admin_tenant.clone();
        cfg.session_ttl_ms = self.session_ttl_secs * 1000;
        cfg.hash_cost = flowmesh::server::identity::passwords::HashCost {
            memory_kib: self.password_hash_memory_kib,
            iterations: self.password_hash_iterations,
        };
        Ok(Some(cfg))
    }
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
