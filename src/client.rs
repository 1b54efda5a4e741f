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

use std::sync::Arc;

use bytes::Bytes;

pub use crate::backoff::Backoff;
pub use crate::engine::Endpoint;
use crate::engine::*;
use crate::error::{Error, Result};
use crate::keys::AppKey;
use crate::names;
use crate::options::{Context, Options};

/// Settings of one client, parsed from its connect options: the engine's
/// own ([`EngineConfig`]) and those the client layers use.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Tenant that qualifies every name (option `tenant`, default `default`).
    pub tenant: String,
    /// Namespace within the tenant (option `namespace`, default `default`).
    pub namespace: String,
    /// Threads of the blocking client's runtime (option `worker_threads`, 1 to 64).
    pub worker_threads: usize,
    /// Asynchronous publishes accepted but not yet acknowledged.
    pub max_in_flight: usize,
    /// When `max_in_flight` is reached: fail with UNAVAILABLE instead of waiting.
    pub nonblocking: bool,
    /// Events: this application's id and X25519 key (see `crate::events`).
    pub app_id: Option<String>,
    /// Its key pair, which opens events sealed to it (option `app_secret_key`).
    pub app_key: Option<AppKey>,
    /// What the engine needs (storage, limits, the link to a broker).
    pub engine: EngineConfig,
}

impl ClientConfig {
    /// Parses and checks the connect options; unknown or malformed ones are InvalidArgument.
    pub fn from_options(opts: &Options) -> Result<ClientConfig> {
        opts.check_context(Context::Connect)?;
        let worker_threads = opts.u64("worker_threads")?.unwrap_or(2);
        if !(1..=64).contains(&worker_threads) {
            return Err(Error::invalid("option worker_threads: must be between 1 and 64"));
        }
        let max_in_flight = opts.u64("max_in_flight")?.unwrap_or(16_384);
        if !(1..=1 << 24).contains(&max_in_flight) {
            return Err(Error::invalid("option max_in_flight: must be between 1 and 16777216"));
        }
        let engine = EngineConfig::from_options(opts)?;
        Ok(ClientConfig {
            tenant: opts.get("tenant").unwrap_or("default").to_owned(),
            namespace: opts.get("namespace").unwrap_or("default").to_owned(),
            worker_threads: worker_threads as usize,
            max_in_flight: max_in_flight as usize,
            nonblocking: opts.bool("nonblocking")?.unwrap_or(false),
            app_id: opts.get("app_id").map(str::to_owned),
            app_key: opts.get("app_secret_key").map(AppKey::from_base64).transpose()?,
            engine,
        })
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

/// Identity logins (`identity_user`, ...) need a broker URL.
pub(crate) fn check_login(url: &str, cfg: &ClientConfig) -> Result<()> {
    if cfg.engine.login.is_some() && !url.starts_with("grpc") && !url.starts_with("ws") {
        return Err(Error::invalid(
            "options identity_user/identity_password/identity_secret need a broker URL (grpc://, ws://)",
        ));
    }
    Ok(())
}

impl Client {
    /// Connects to `url` (see [`Endpoint`]) with string options.
    pub async fn connect(url: &str, opts: &Options) -> Result<Client> {
        let cfg = ClientConfig::from_options(opts)?;
        check_login(url, &cfg)?;
        let engine = crate::engine::open(url, &cfg.engine).await?;
        Ok(Client::with_engine(engine, cfg))
    }

    /// A client on an engine opened elsewhere (tests, the broker), counting into fresh metrics.
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

    /// The settings this client was connected with.
    pub fn config(&self) -> &ClientConfig {
        &self.cfg
    }

    /// The engine behind the client (with the metrics decorator); names passed to it must be qualified.
    pub fn engine(&self) -> &Arc<dyn Engine> {
        &self.engine
    }

    /// The fully qualified form of `name`.
    pub fn qualify(&self, name: &str) -> Result<String> {
        names::qualify(name, &self.cfg.tenant, &self.cfg.namespace)
    }

    fn check_size(&self, size: usize) -> Result<()> {
        if size > self.cfg.engine.max_payload_bytes {
            return Err(Error::TooLarge(format!(
                "message of {size} bytes exceeds max_payload_bytes ({})",
                self.cfg.engine.max_payload_bytes
            )));
        }
        Ok(())
    }

    /// Checks that the engine answers (for a broker, one round trip).
    pub async fn health(&self) -> Result<()> {
        self.engine.health().await
    }

    /// One identity request to a broker with `--identity` (JSON in, JSON
    /// out; docs/SECURITY.md "Identity"). A successful login makes the
    /// client send the session token from then on.
    pub async fn identity(&self, request: &serde_json::Value) -> Result<serde_json::Value> {
        let answer = self.engine.identity(&request.to_string()).await?;
        serde_json::from_str(&answer).map_err(|e| Error::Internal(format!("identity answer is not JSON: {e}")))
    }

    /// [`Client::identity`] on JSON text (what the C ABI passes).
    pub async fn identity_raw(&self, request: &str) -> Result<String> {
        self.engine.identity(request).await
    }

    /// Sends `token` on every call from now on (`None`: the connect option
    /// `token` again).
    pub fn set_token(&self, token: Option<&str>) -> Result<()> {
        self.engine.set_token(token)
    }

    /// Checks that the engine can serve requests (for a broker, its own engine too).
    pub async fn ready(&self) -> Result<()> {
        self.engine.ready().await
    }

    // ---- streams ----

    /// Creates a stream; Ok if it exists with the same partition count.
    pub async fn create_stream(&self, stream: &str, config: StreamConfig) -> Result<()> {
        self.engine.create_stream(&self.qualify(stream)?, config).await
    }

    /// Appends one record; returns where it was stored.
    pub async fn publish(&self, stream: &str, record: Record) -> Result<Position> {
        let mut p = self.publish_batch(stream, vec![record]).await?;
        p.pop().ok_or_else(|| Error::Internal("engine returned no position".into()))
    }

    /// Appends records in order, all checked against max_payload_bytes first; returns their positions.
    pub async fn publish_batch(&self, stream: &str, records: Vec<Record>) -> Result<Vec<Position>> {
        let stream = self.qualify(stream)?;
        for r in &records {
            self.check_size(r.size())?;
        }
        self.engine.publish(&stream, records).await
    }

    /// Publishes one message to `subject` (see [`crate::subject`]: the first
    /// token names the stream) in the tier `opts` asks for. Returns the
    /// position for a stored tier, `None` for the memory tier (nothing is
    /// stored, so there is no offset).
    pub async fn publish_with(&self, subject: &str, record: Record, opts: &PublishOptions) -> Result<Option<Position>> {
        let fut = self.publish_tier(subject, record, opts);
        match opts.timeout_ms {
            None => fut.await,
            Some(ms) => tokio::time::timeout(std::time::Duration::from_millis(ms), fut)
                .await
                .unwrap_or_else(|_| Err(Error::Timeout(format!("publish to {subject} took longer than {ms} ms")))),
        }
    }

    async fn publish_tier(&self, subject: &str, mut record: Record, opts: &PublishOptions) -> Result<Option<Position>> {
        let (stream, subject) = crate::subject::for_publish(subject)?;
        let stream = self.qualify(&stream)?;
        if let Some(s) = subject {
            record.headers.retain(|(k, _)| k != crate::subject::SUBJECT_HEADER);
            record.headers.push((crate::subject::SUBJECT_HEADER.to_owned(), s));
        }
        self.check_size(record.size())?;
        let one = |mut p: Vec<Position>| p.pop().ok_or_else(|| Error::Internal("engine returned no position".into()));
        match opts.tier {
            DeliveryTier::Memory => self.engine.publish_live(&stream, record, opts.require_ack).await.map(|()| None),
            DeliveryTier::Persistent => self.engine.publish(&stream, vec![record]).await.and_then(one).map(Some),
            DeliveryTier::Replicated => {
                self.engine.publish_replicated(&stream, vec![record]).await.and_then(one).map(Some)
            }
        }
    }

    /// Up to `max` stored messages of `partition` from `offset` on.
    pub async fn read(&self, stream: &str, partition: u32, offset: u64, max: usize) -> Result<Vec<Message>> {
        self.engine.read(&self.qualify(stream)?, partition, offset, max).await
    }

    /// The stream's configuration and partition offsets.
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

    /// Subscribes to a stream, or to the subjects of one that match a
    /// pattern (`orders.created`, `events.*`, `events.>`; see
    /// [`crate::subject`]). Memory-tier messages arrive too, with
    /// [`NO_OFFSET`].
    pub async fn subscribe(&self, stream: &str, spec: SubscribeSpec) -> Result<MessageStream> {
        use futures::StreamExt;
        let (stream, pattern) = crate::subject::for_subscribe(stream)?;
        let feed = self.engine.subscribe(&self.qualify(&stream)?, spec).await?;
        Ok(match pattern {
            None => feed,
            Some(p) => feed
                .filter(move |m| std::future::ready(m.as_ref().map_or(true, |m| p.matches(crate::subject::of(m)))))
                .boxed(),
        })
    }

    /// Records that `group` processed `partition` up to `offset` (inclusive).
    pub async fn commit_offset(&self, stream: &str, group: &str, partition: u32, offset: u64) -> Result<()> {
        self.engine.commit_offset(&self.qualify(stream)?, group, partition, offset).await
    }

    /// The offset `group` committed on `partition`.
    pub async fn get_offset(&self, stream: &str, group: &str, partition: u32) -> Result<u64> {
        self.engine.get_offset(&self.qualify(stream)?, group, partition).await
    }

    /// Committed offsets and lag of `group` on every partition.
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

    /// Queues whose name starts with `prefix`, as [`Client::list_streams`].
    pub async fn list_queues(&self, prefix: &str) -> Result<Vec<String>> {
        self.engine.list_queues(&self.qualify_prefix(prefix)?).await
    }

    /// Buckets whose name starts with `prefix`, as [`Client::list_streams`].
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
        names::check_prefix(&q)?;
        Ok(q)
    }

    // ---- queues ----

    /// Adds a job, ready after `delay_ms`; returns its id.
    pub async fn enqueue(&self, queue: &str, record: Record, delay_ms: u64, priority: i32) -> Result<u64> {
        self.check_size(record.size())?;
        self.engine.enqueue(&self.qualify(queue)?, record, delay_ms, priority).await
    }

    /// One job, or `None` when nothing arrived within `wait_ms`.
    pub async fn reserve(&self, queue: &str, visibility_ms: u64, wait_ms: u64) -> Result<Option<Job>> {
        Ok(self.receive(queue, 1, visibility_ms, wait_ms).await?.pop())
    }

    /// Up to `max` jobs, each hidden from other workers for `visibility_ms`, waiting up to `wait_ms` for the first.
    pub async fn receive(&self, queue: &str, max: usize, visibility_ms: u64, wait_ms: u64) -> Result<Vec<Job>> {
        if max == 0 {
            return Err(Error::invalid("max_jobs must be at least 1"));
        }
        self.engine.reserve(&self.qualify(queue)?, max, visibility_ms, wait_ms).await
    }

    /// Completes a reserved job: it is removed.
    pub async fn ack(&self, queue: &str, job_id: u64) -> Result<()> {
        self.engine.ack(&self.qualify(queue)?, job_id).await
    }

    /// Fails a reserved job: it comes back after `delay_ms` (or per the retry policy), or goes dead when out of attempts.
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

    /// Job counts of the queue by state.
    pub async fn queue_stats(&self, queue: &str) -> Result<QueueStats> {
        self.engine.queue_stats(&self.qualify(queue)?).await
    }

    /// Sets what happens to failing jobs of the queue.
    pub async fn set_retry_policy(&self, queue: &str, policy: RetryPolicy) -> Result<()> {
        if !(policy.multiplier.is_finite() && policy.multiplier >= 1.0) {
            return Err(Error::invalid("retry multiplier must be a finite number >= 1"));
        }
        self.engine.set_retry_policy(&self.qualify(queue)?, policy).await
    }

    /// The queue's retry policy (the default when none was set).
    pub async fn get_retry_policy(&self, queue: &str) -> Result<RetryPolicy> {
        self.engine.get_retry_policy(&self.qualify(queue)?).await
    }

    /// Dead jobs, oldest first; `max` 0 = all.
    pub async fn dlq_list(&self, queue: &str, max: usize) -> Result<Vec<Job>> {
        let max = if max == 0 { usize::MAX } else { max };
        self.engine.dlq_list(&self.qualify(queue)?, max).await
    }

    /// Moves one dead job back to the queue as a fresh job.
    pub async fn dlq_replay(&self, queue: &str, job_id: u64) -> Result<()> {
        self.engine.dlq_replay(&self.qualify(queue)?, job_id).await
    }

    /// Moves every dead job (with header `header`, when given) back to the queue; returns how many.
    pub async fn dlq_replay_all(&self, queue: &str, header: Option<(String, String)>) -> Result<u64> {
        self.engine.dlq_replay_all(&self.qualify(queue)?, header).await
    }

    // ---- key-value ----

    /// Sets `key`, expiring after `ttl_ms` (0 = never); returns the new revision.
    pub async fn kv_set(&self, bucket: &str, key: &str, value: impl Into<Bytes>, ttl_ms: u64) -> Result<u64> {
        let value = value.into();
        self.check_size(value.len())?;
        self.engine.kv_set(&self.qualify(bucket)?, key, value, ttl_ms).await
    }

    /// Sets `key` only if its revision is `expected` (0 = it must not exist); Conflict otherwise.
    pub async fn kv_cas(&self, bucket: &str, key: &str, value: impl Into<Bytes>, expected: u64) -> Result<u64> {
        let value = value.into();
        self.check_size(value.len())?;
        self.engine.kv_cas(&self.qualify(bucket)?, key, value, expected, 0).await
    }

    /// The entry of `key`; NotFound if absent.
    pub async fn kv_get(&self, bucket: &str, key: &str) -> Result<KvEntry> {
        self.engine.kv_get(&self.qualify(bucket)?, key).await
    }

    /// Deletes `key`; returns whether it existed.
    pub async fn kv_delete(&self, bucket: &str, key: &str) -> Result<bool> {
        self.engine.kv_delete(&self.qualify(bucket)?, key).await
    }

    /// Whether `key` is set.
    pub async fn kv_exists(&self, bucket: &str, key: &str) -> Result<bool> {
        self.engine.kv_exists(&self.qualify(bucket)?, key).await
    }

    /// Keys of the bucket that start with `prefix`.
    pub async fn kv_keys(&self, bucket: &str, prefix: &str) -> Result<Vec<String>> {
        self.engine.kv_keys(&self.qualify(bucket)?, prefix).await
    }

    /// Deletes a bucket with every key; its watches end with NotFound.
    pub async fn delete_bucket(&self, bucket: &str) -> Result<()> {
        self.engine.delete_bucket(&self.qualify(bucket)?).await
    }

    /// Changes to keys starting with `prefix`, from now on.
    pub async fn kv_watch(&self, bucket: &str, prefix: &str) -> Result<KvEventStream> {
        self.engine.kv_watch(&self.qualify(bucket)?, prefix).await
    }

    /// Runs `ops` as one atomic transaction (see [`crate::txn`]);
    /// bucket names are resolved like every other name.
    pub async fn kv_txn(&self, mut ops: Vec<TxnOp>) -> Result<Vec<TxnResult>> {
        for op in &mut ops {
            let q = self.qualify(op.bucket())?;
            *op.bucket_mut() = q;
            if let TxnOp::Put { value, .. } = op {
                self.check_size(value.len())?;
            }
        }
        self.engine.kv_txn(ops).await
    }
}
