//! Engine-level settings: what an engine needs to open (storage, limits,
//! the link to a broker), parsed from the connect options. The client adds
//! its own settings (names, threads, events) on top, see
//! [`ClientConfig`](crate::client::ClientConfig).

use crate::backoff::Backoff;
use crate::engine::embedded::FsyncPolicy;
use crate::error::{Error, Result};
use crate::options::Options;

/// Largest message accepted when `max_payload_bytes` is not set.
pub(crate) const DEFAULT_MAX_PAYLOAD: usize = 8 << 20;

/// Settings of one engine, parsed from connect options.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Largest record accepted (option `max_payload_bytes`, default 8 MiB).
    pub max_payload_bytes: usize,
    /// When the embedded engine syncs its files to disk (option `fsync`).
    pub fsync: FsyncPolicy,
    /// Size at which a partition's log rolls over to a new segment file.
    pub segment_bytes: u64,
    /// Deadline of connecting to a broker.
    pub connect_timeout_ms: u64,
    /// Deadline of one request to a broker.
    pub request_timeout_ms: u64,
    /// Schedule of reconnect attempts after the link is lost.
    pub reconnect: Backoff,
    /// Bearer token sent to the broker (option `token`).
    pub token: Option<String>,
    /// Probe the broker this often to notice a dead peer; 0 = off.
    pub heartbeat_ms: u64,
    /// Times an idempotent call is sent again after the link came back.
    pub max_retries: u32,
    /// Consecutive failures that open the circuit breaker; 0 = no breaker.
    pub breaker_threshold: u32,
    /// How long an open breaker refuses calls before it lets one probe through.
    pub breaker_timeout_ms: u64,
    /// PEM file of the CA that signed the broker's certificate (grpcs://).
    pub tls_ca_file: Option<String>,
    /// Name to verify the broker's certificate against (default: URL host).
    pub tls_server_name: Option<String>,
    /// Settings only the `nats://` engine uses.
    pub nats: NatsSettings,
    /// Log in to a broker's identity after connect and after every
    /// reconnect (`identity_user` + `identity_password`, or `identity_secret`).
    pub login: Option<Login>,
}

/// Credentials the remote engine logs in with (docs/SECURITY.md, "Identity").
#[derive(Clone)]
pub enum Login {
    Password { user: String, password: String },
    Secret(String),
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Login::Password { user, .. } => write!(f, "Login::Password({user:?}, ***)"),
            Login::Secret(_) => write!(f, "Login::Secret(***)"),
        }
    }
}

impl Login {
    fn from_options(opts: &Options) -> Result<Option<Login>> {
        match (opts.get("identity_user"), opts.get("identity_password"), opts.get("identity_secret")) {
            (None, None, None) => Ok(None),
            (Some(u), Some(p), None) => Ok(Some(Login::Password { user: u.to_owned(), password: p.to_owned() })),
            (None, None, Some(s)) => Ok(Some(Login::Secret(s.to_owned()))),
            _ => Err(Error::invalid(
                "options identity_user and identity_password go together; identity_secret goes alone",
            )),
        }
    }

    /// The identity request this login sends.
    pub fn request(&self) -> serde_json::Value {
        match self {
            Login::Password { user, password } => {
                serde_json::json!({"type": "identity.login", "username": user, "password": password})
            }
            Login::Secret(s) => serde_json::json!({"type": "identity.login_with_secret", "secret": s}),
        }
    }
}

/// Connect options of the `nats://` engine.
#[derive(Debug, Clone, Default)]
pub struct NatsSettings {
    /// Replicas of every stream, queue and bucket (1-5); `None` = 3 when
    /// the cluster has 3 or more servers, else 1.
    pub replicas: Option<usize>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub creds_file: Option<String>,
    pub tls_cert_file: Option<String>,
    pub tls_key_file: Option<String>,
    pub js_domain: Option<String>,
}

impl NatsSettings {
    fn from_options(opts: &Options) -> Result<NatsSettings> {
        let replicas = match opts.u64("replicas")? {
            Some(r) if !(1..=5).contains(&r) => return Err(Error::invalid("option replicas: must be between 1 and 5")),
            r => r.map(|r| r as usize),
        };
        let text = |k: &str| opts.get(k).map(str::to_owned);
        let s = NatsSettings {
            replicas,
            user: text("user"),
            password: text("password"),
            creds_file: text("creds_file"),
            tls_cert_file: text("tls_cert_file"),
            tls_key_file: text("tls_key_file"),
            js_domain: text("js_domain"),
        };
        if s.user.is_some() != s.password.is_some() {
            return Err(Error::invalid("options user and password go together"));
        }
        if s.tls_cert_file.is_some() != s.tls_key_file.is_some() {
            return Err(Error::invalid("options tls_cert_file and tls_key_file go together"));
        }
        Ok(s)
    }

    /// Whether any nats-only option is set (refused on other engines).
    pub fn any(&self) -> bool {
        self.replicas.is_some()
            || self.user.is_some()
            || self.creds_file.is_some()
            || self.tls_cert_file.is_some()
            || self.js_domain.is_some()
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig::from_options(&Options::new()).expect("the defaults are valid")
    }
}

impl EngineConfig {
    /// The engine options of a connect option set (the caller checks that
    /// the set is meant for connecting).
    pub fn from_options(opts: &Options) -> Result<EngineConfig> {
        let fsync = match opts.get("fsync").unwrap_or("batch") {
            "batch" => FsyncPolicy::Batch,
            "none" => FsyncPolicy::Never,
            _ => FsyncPolicy::Interval(opts.u64("fsync_interval_ms")?.unwrap_or(100).max(1)),
        };
        let max_payload = opts.u64("max_payload_bytes")?.unwrap_or(DEFAULT_MAX_PAYLOAD as u64);
        if max_payload == 0 || max_payload > (1 << 30) {
            return Err(Error::invalid("option max_payload_bytes: must be between 1 and 1073741824"));
        }
        let small = |key: &str, default: u64| -> Result<u32> {
            let v = opts.u64(key)?.unwrap_or(default);
            u32::try_from(v).map_err(|_| Error::invalid(format!("option {key}: must be at most {}", u32::MAX)))
        };
        Ok(EngineConfig {
            max_payload_bytes: max_payload as usize,
            fsync,
            segment_bytes: opts.u64("segment_bytes")?.unwrap_or(64 << 20).clamp(4096, 1 << 31),
            connect_timeout_ms: opts.u64("connect_timeout_ms")?.unwrap_or(5000),
            request_timeout_ms: opts.u64("request_timeout_ms")?.unwrap_or(10_000),
            reconnect: Backoff {
                initial_ms: opts.u64("reconnect_initial_ms")?.unwrap_or(1000).max(1),
                max_ms: opts.u64("reconnect_max_ms")?.unwrap_or(30_000).max(1),
                multiplier: opts.f64("reconnect_multiplier")?.unwrap_or(2.0),
                jitter_ms: opts.u64("reconnect_jitter_ms")?.unwrap_or(500),
                max_attempts: opts.u64("max_reconnect_attempts")?.unwrap_or(0),
            },
            token: opts.get("token").map(str::to_owned),
            heartbeat_ms: opts.u64("heartbeat_ms")?.unwrap_or(5000),
            max_retries: small("max_retries", 3)?,
            breaker_threshold: small("breaker_threshold", 10)?,
            breaker_timeout_ms: opts.u64("breaker_timeout_ms")?.unwrap_or(30_000),
            tls_ca_file: opts.get("tls_ca_file").map(str::to_owned),
            tls_server_name: opts.get("tls_server_name").map(str::to_owned),
            nats: NatsSettings::from_options(opts)?,
            login: Login::from_options(opts)?,
        })
    }
}
