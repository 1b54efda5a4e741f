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
    pub max_payload_bytes: usize,
    pub fsync: FsyncPolicy,
    pub segment_bytes: u64,
    pub connect_timeout_ms: u64,
    pub request_timeout_ms: u64,
    pub reconnect: Backoff,
    pub token: Option<String>,
    /// Probe the broker this often to notice a dead peer; 0 = off.
    pub heartbeat_ms: u64,
    /// Times an idempotent call is sent again after the link came back.
    pub max_retries: u32,
    /// Consecutive failures that open the circuit breaker; 0 = no breaker.
    pub breaker_threshold: u32,
    pub breaker_timeout_ms: u64,
    /// PEM file of the CA that signed the broker's certificate (grpcs://).
    pub tls_ca_file: Option<String>,
    /// Name to verify the broker's certificate against (default: URL host).
    pub tls_server_name: Option<String>,
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
        })
    }
}
