//! The Rust client API: resolves names and options, enforces client-side
//! limits, then forwards to the engine chosen by the URL.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use flowmesh::{Client, Options, Record};
//! let client = Client::connect("mem://", &Options::new()).await?;
//! let pos = client.publish("orders", Record::new("hello")).await?;
//! let msgs = client.read("orders", pos.partition, pos.offset, 10).await?;
//! assert_eq!(&msgs[0].payload[..], b"hello");
//! # Ok::<(), flowmesh::Error>(())
//! # }).unwrap();
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use crate::engine::embedded::{EmbeddedConfig, EmbeddedEngine, FsyncPolicy};
use crate::engine::*;
use crate::error::{Error, Result};
use crate::names;
use crate::options::{Context, Options};

pub const DEFAULT_MAX_PAYLOAD: usize = 8 << 20;

/// Settings of one client, parsed from its connect options.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub tenant: String,
    pub namespace: String,
    pub max_payload_bytes: usize,
    pub fsync: FsyncPolicy,
    pub segment_bytes: u64,
    pub worker_threads: usize,
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
    /// Asynchronous publishes accepted but not yet acknowledged.
    pub max_in_flight: usize,
    /// When `max_in_flight` is reached: fail with UNAVAILABLE instead of waiting.
    pub nonblocking: bool,
    /// Events: this application's id and X25519 key (see `crate::events`).
    pub app_id: Option<String>,
    pub app_key: Option<crate::events::AppKey>,
    /// PEM file of the CA that signed the broker's certificate (grpcs://).
    pub tls_ca_file: Option<String>,
    /// Name to verify the broker's certificate against (default: URL host).
    pub tls_server_name: Option<String>,
}

impl ClientConfig {
    pub fn from_options(opts: &Options) -> Result<ClientConfig> {
        opts.check_context(Context::Connect)?;
        let fsync = match opts.get("fsync").unwrap_or("batch") {
            "batch" => FsyncPolicy::Batch,
            "none" => FsyncPolicy::Never,
            _ => FsyncPolicy::Interval(opts.u64("fsync_interval_ms")?.unwrap_or(100).max(1)),
        };
        let worker_threads = opts.u64("worker_threads")?.unwrap_or(2);
        if !(1..=64).contains(&worker_threads) {
            return Err(Error::invalid("option worker_threads: must be between 1 and 64"));
        }
        let max_payload = opts.u64("max_payload_bytes")?.unwrap_or(DEFAULT_MAX_PAYLOAD as u64);
        let small = |key: &str, default: u64| -> Result<u32> {
            let v = opts.u64(key)?.unwrap_or(default);
            u32::try_from(v).map_err(|_| Error::invalid(format!("option {key}: must be at most {}", u32::MAX)))
        };
        let max_in_flight = opts.u64("max_in_flight")?.unwrap_or(16_384);
        if !(1..=1 << 24).contains(&max_in_flight) {
            return Err(Error::invalid("option max_in_flight: must be between 1 and 16777216"));
        }
        if max_payload == 0 || max_payload > (1 << 30) {
            return Err(Error::invalid("option max_payload_bytes: must be between 1 and 1073741824"));
        }
        Ok(ClientConfig {
            tenant: opts.get("tenant").unwrap_or("default").to_owned(),
            namespace: opts.get("namespace").unwrap_or("default").to_owned(),
            max_payload_bytes: max_payload as usize,
            fsync,
            segment_bytes: opts.u64("segment_bytes")?.unwrap_or(64 << 20).clamp(4096, 1 << 31),
            worker_threads: worker_threads as usize,
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
            max_in_flight: max_in_flight as usize,
            nonblocking: opts.bool("nonblocking")?.unwrap_or(false),
            app_id: opts.get("app_id").map(str::to_owned),
            app_key: opts.get("app_secret_key").map(crate::events::AppKey::from_base64).transpose()?,
            tls_ca_file: opts.get("tls_ca_file").map(str::to_owned),
            tls_server_name: opts.get("tls_server_name").map(str::to_owned),
        })
    }
}

/// Reconnect schedule: exponential backoff with random jitter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub initial_ms: u64,
    pub max_ms: u64,
    pub multiplier: f64,
    pub jitter_ms: u64,
    /// Give up after this many consecutive failed attempts; 0 = never.
    pub max_attempts: u64,
}

impl Backoff {
    /// The wait before reconnect attempt `attempt` (1-based).
    pub fn delay(&self, attempt: u64) -> std::time::Duration {
        let exp = attempt.saturating_sub(1).min(64) as i32;
        let base = (self.initial_ms as f64 * self.multiplier.powi(exp)).min(self.max_ms as f64) as u64;
        let jitter = if self.jitter_ms == 0 { 0 } else { pseudo_random() % (self.jitter_ms + 1) };
        std::time::Duration::from_millis(base + jitter)
    }

    pub fn exhausted(&self, attempt: u64) -> bool {
        self.max_attempts > 0 && attempt > self.max_attempts
    }
}

/// Jitter only needs to spread clients apart, not be unpredictable.
pub(crate) fn pseudo_random() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static STATE: AtomicU64 = AtomicU64::new(0);
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
    let mut x = STATE.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed) ^ seed;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// A parsed connection URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `mem://` (private) or `mem://name` (shared within the process).
    Memory(Option<String>),
    /// `file:///dir`
    File(PathBuf),
    /// `grpc://host:port` or `grpcs://host:port`
    Remote { url: String, tls: bool },
}

impl Endpoint {
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
        Err(Error::invalid(format!(
            "unsupported URL {url:?}: use mem://, file:///dir, grpc://host:port or grpcs://host:port"
        )))
    }
}

/// Opens the engine an endpoint names.
pub async fn open_engine(endpoint: &Endpoint, cfg: &ClientConfig) -> Result<Arc<dyn Engine>> {
    let embedded = |dir: Option<PathBuf>| EmbeddedConfig {
        dir,
        fsync: cfg.fsync,
        segment_bytes: cfg.segment_bytes,
        max_payload_bytes: cfg.max_payload_bytes,
    };
    match endpoint {
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
        Endpoint::Remote { url, tls } => crate::engine::remote::RemoteEngine::connect(url, *tls, cfg).await,
    }
}

/// A connection to one engine. Cheap to clone; all methods are async and
/// safe to call concurrently.
#[derive(Clone)]
pub struct Client {
    engine: Arc<dyn Engine>,
    cfg: Arc<ClientConfig>,
    metrics: Arc<crate::metrics::ClientMetrics>,
}

impl Client {
    /// Connects to `url` (see [`Endpoint`]) with string options.
    pub async fn connect(url: &str, opts: &Options) -> Result<Client> {
        let cfg = ClientConfig::from_options(opts)?;
        let endpoint = Endpoint::parse(url)?;
        let engine = open_engine(&endpoint, &cfg).await?;
        Ok(Client::with_engine(engine, cfg))
    }

    pub fn with_engine(engine: Arc<dyn Engine>, cfg: ClientConfig) -> Client {
        Client::with_engine_and_metrics(engine, cfg, Default::default())
    }

    /// Like [`Client::with_engine`], counting into `metrics` (which the
    /// engine may also hold, e.g. to report reconnects).
    pub fn with_engine_and_metrics(
        engine: Arc<dyn Engine>,
        cfg: ClientConfig,
        metrics: Arc<crate::metrics::ClientMetrics>,
    ) -> Client {
        if let Some(link) = engine.connection() {
            link.observe(metrics.clone());
        }
        let engine = Arc::new(crate::metrics::MeteredEngine::new(engine, metrics.clone()));
        Client { engine, cfg: Arc::new(cfg), metrics }
    }

    /// What this client did, as counters and histograms (see [`crate::metrics`]).
    pub fn metrics(&self) -> &Arc<crate::metrics::ClientMetrics> {
        &self.metrics
    }

    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    /// The fully qualified form of `name`.
    pub fn qualify(&self, name: &str) -> Result<String> {
        names::qualify(name, &self.cfg.tenant, &self.cfg.namespace)
    }

    fn check_size(&self, size: usize) -> Result<()> {
        if size > self.cfg.max_payload_bytes {
            return Err(Error::TooLarge(format!(
                "message of {size} bytes exceeds max_payload_bytes ({})",
                self.cfg.max_payload_bytes
            )));
        }
        Ok(())
    }

    pub async fn health(&self) -> Result<()> {
        self.engine.health().await
    }

    pub async fn ready(&self) -> Result<()> {
        self.engine.ready().await
    }

    // ---- streams ----

    pub async fn create_stream(&self, stream: &str, config: StreamConfig) -> Result<()> {
        self.engine.create_stream(&self.qualify(stream)?, config).await
    }

    pub async fn publish(&self, stream: &str, record: Record) -> Result<Position> {
        let mut p = self.publish_batch(stream, vec![record]).await?;
        p.pop().ok_or_else(|| Error::Internal("engine returned no position".into()))
    }

    pub async fn publish_batch(&self, stream: &str, records: Vec<Record>) -> Result<Vec<Position>> {
        let stream = self.qualify(stream)?;
        for r in &records {
            self.check_size(r.size())?;
        }
        self.engine.publish(&stream, records).await
    }

    pub async fn read(&self, stream: &str, partition: u32, offset: u64, max: usize) -> Result<Vec<Message>> {
        self.engine.read(&self.qualify(stream)?, partition, offset, max).await
    }

    pub async fn stream_info(&self, stream: &str) -> Result<StreamInfo> {
        self.engine.stream_info(&self.qualify(stream)?).await
    }

    /// The offset the next message of `partition` will get.
    pub async fn latest_offset(&self, stream: &str, partition: u32) -> Result<u64> {
        let info = self.stream_info(stream).await?;
        info.partitions
            .get(partition as usize)
            .map(|p| p.latest)
            .ok_or_else(|| Error::NotFound(format!("stream {stream} has no partition {partition}")))
    }

    pub async fn subscribe(&self, stream: &str, spec: SubscribeSpec) -> Result<MessageStream> {
        self.engine.subscribe(&self.qualify(stream)?, spec).await
    }

    pub async fn commit_offset(&self, stream: &str, group: &str, partition: u32, offset: u64) -> Result<()> {
        self.engine.commit_offset(&self.qualify(stream)?, group, partition, offset).await
    }

    pub async fn get_offset(&self, stream: &str, group: &str, partition: u32) -> Result<u64> {
        self.engine.get_offset(&self.qualify(stream)?, group, partition).await
    }

    pub async fn group_state(&self, stream: &str, group: &str) -> Result<GroupState> {
        self.engine.group_state(&self.qualify(stream)?, group).await
    }

    /// Changes a stream's retention or grows its partitions (see [`StreamUpdate`]).
    pub async fn update_stream(&self, stream: &str, update: StreamUpdate) -> Result<StreamConfig> {
        if update.is_empty() {
            return Err(Error::invalid(
                "a stream update needs at least one of partitions, max_age_ms, max_bytes, max_messages",
            ));
        }
        self.engine.update_stream(&self.qualify(stream)?, update).await
    }

    /// Removes every retained message (offsets keep growing); returns how many.
    pub async fn purge_stream(&self, stream: &str) -> Result<u64> {
        self.engine.purge_stream(&self.qualify(stream)?).await
    }

    /// Deletes a stream with its messages and consumer-group offsets.
    pub async fn delete_stream(&self, stream: &str) -> Result<()> {
        self.engine.delete_stream(&self.qualify(stream)?).await
    }

    /// Streams of this client's tenant and namespace whose name starts with
    /// `prefix`, fully qualified and sorted (a prefix containing `/` is taken
    /// as the start of a qualified name, e.g. `acme/` for every namespace).
    pub async fn list_streams(&self, prefix: &str) -> Result<Vec<String>> {
        self.engine.list_streams(&self.qualify_prefix(prefix)?).await
    }

    pub async fn list_queues(&self, prefix: &str) -> Result<Vec<String>> {
        self.engine.list_queues(&self.qualify_prefix(prefix)?).await
    }

    pub async fn list_buckets(&self, prefix: &str) -> Result<Vec<String>> {
        self.engine.list_buckets(&self.qualify_prefix(prefix)?).await
    }

    /// The qualified listing prefix for a user's `prefix`.
    pub fn qualify_prefix(&self, prefix: &str) -> Result<String> {
        let q = if prefix.contains('/') {
            prefix.to_owned()
        } else {
            format!("{}/{}/{prefix}", self.cfg.tenant, self.cfg.namespace)
        };
        crate::engine::lifecycle::check_prefix(&q)?;
        Ok(q)
    }

    // ---- queues ----

    pub async fn enqueue(&self, queue: &str, record: Record, delay_ms: u64, priority: i32) -> Result<u64> {
        self.check_size(record.size())?;
        self.engine.enqueue(&self.qualify(queue)?, record, delay_ms, priority).await
    }

    /// One job, or `None` when nothing arrived within `wait_ms`.
    pub async fn reserve(&self, queue: &str, visibility_ms: u64, wait_ms: u64) -> Result<Option<Job>> {
        Ok(self.receive(queue, 1, visibility_ms, wait_ms).await?.pop())
    }

    pub async fn receive(&self, queue: &str, max: usize, visibility_ms: u64, wait_ms: u64) -> Result<Vec<Job>> {
        if max == 0 {
            return Err(Error::invalid("max_jobs must be at least 1"));
        }
        self.engine.reserve(&self.qualify(queue)?, max, visibility_ms, wait_ms).await
    }

    pub async fn ack(&self, queue: &str, job_id: u64) -> Result<()> {
        self.engine.ack(&self.qualify(queue)?, job_id).await
    }

    pub async fn nack(&self, queue: &str, job_id: u64, delay_ms: u64) -> Result<()> {
        self.engine.nack(&self.qualify(queue)?, job_id, delay_ms).await
    }

    /// Gives reserved job `job_id` `visibility_ms` more from now.
    pub async fn extend(&self, queue: &str, job_id: u64, visibility_ms: u64) -> Result<()> {
        if visibility_ms == 0 {
            return Err(Error::invalid("visibility_ms must be at least 1"));
        }
        self.engine.extend(&self.qualify(queue)?, job_id, visibility_ms).await
    }

    /// Removes pending and delayed jobs (in-flight ones are left to finish).
    pub async fn purge_queue(&self, queue: &str) -> Result<u64> {
        self.engine.purge_queue(&self.qualify(queue)?).await
    }

    /// Deletes a queue with every job, including in-flight and dead ones.
    pub async fn delete_queue(&self, queue: &str) -> Result<()> {
        self.engine.delete_queue(&self.qualify(queue)?).await
    }

    pub async fn queue_stats(&self, queue: &str) -> Result<QueueStats> {
        self.engine.queue_stats(&self.qualify(queue)?).await
    }

    pub async fn set_retry_policy(&self, queue: &str, policy: RetryPolicy) -> Result<()> {
        if !(policy.multiplier.is_finite() && policy.multiplier >= 1.0) {
            return Err(Error::invalid("retry multiplier must be a finite number >= 1"));
        }
        self.engine.set_retry_policy(&self.qualify(queue)?, policy).await
    }

    pub async fn get_retry_policy(&self, queue: &str) -> Result<RetryPolicy> {
        self.engine.get_retry_policy(&self.qualify(queue)?).await
    }

    /// Dead jobs, oldest first; `max` 0 = all.
    pub async fn dlq_list(&self, queue: &str, max: usize) -> Result<Vec<Job>> {
        let max = if max == 0 { usize::MAX } else { max };
        self.engine.dlq_list(&self.qualify(queue)?, max).await
    }

    pub async fn dlq_replay(&self, queue: &str, job_id: u64) -> Result<()> {
        self.engine.dlq_replay(&self.qualify(queue)?, job_id).await
    }

    pub async fn dlq_replay_all(&self, queue: &str, header: Option<(String, String)>) -> Result<u64> {
        self.engine.dlq_replay_all(&self.qualify(queue)?, header).await
    }

    // ---- key-value ----

    pub async fn kv_set(&self, bucket: &str, key: &str, value: impl Into<Bytes>, ttl_ms: u64) -> Result<u64> {
        let value = value.into();
        self.check_size(value.len())?;
        self.engine.kv_set(&self.qualify(bucket)?, key, value, ttl_ms).await
    }

    pub async fn kv_cas(&self, bucket: &str, key: &str, value: impl Into<Bytes>, expected: u64) -> Result<u64> {
        let value = value.into();
        self.check_size(value.len())?;
        self.engine.kv_cas(&self.qualify(bucket)?, key, value, expected, 0).await
    }

    pub async fn kv_get(&self, bucket: &str, key: &str) -> Result<KvEntry> {
        self.engine.kv_get(&self.qualify(bucket)?, key).await
    }

    pub async fn kv_delete(&self, bucket: &str, key: &str) -> Result<bool> {
        self.engine.kv_delete(&self.qualify(bucket)?, key).await
    }

    pub async fn kv_exists(&self, bucket: &str, key: &str) -> Result<bool> {
        self.engine.kv_exists(&self.qualify(bucket)?, key).await
    }

    pub async fn kv_keys(&self, bucket: &str, prefix: &str) -> Result<Vec<String>> {
        self.engine.kv_keys(&self.qualify(bucket)?, prefix).await
    }

    /// Deletes a bucket with every key; its watches end with NotFound.
    pub async fn delete_bucket(&self, bucket: &str) -> Result<()> {
        self.engine.delete_bucket(&self.qualify(bucket)?).await
    }

    pub async fn kv_watch(&self, bucket: &str, prefix: &str) -> Result<KvEventStream> {
        self.engine.kv_watch(&self.qualify(bucket)?, prefix).await
    }
}
