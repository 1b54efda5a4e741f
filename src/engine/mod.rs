//! The `Engine` trait: the one contract every storage back end fulfils
//! (embedded memory, embedded durable, remote broker), with what the engines
//! share: their configuration ([`EngineConfig`]), the URL that picks one
//! ([`open`]) and the state of a link to a broker ([`connection`]). The
//! `Client` resolves names and options, then forwards to an engine; the
//! broker serves an engine over gRPC. Names reaching an engine are always
//! fully qualified (`tenant/namespace/name`).

pub(crate) mod config;
pub mod connection;
pub mod embedded;
mod endpoint;
pub(crate) mod live;
pub(crate) mod nats;
pub(crate) mod remote;
pub(crate) mod ws;

pub use self::config::EngineConfig;
pub use self::endpoint::{open, Endpoint};

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::Result;
pub use crate::model::*;
pub use crate::txn::{TxnOp, TxnResult};

/// The storage contract shared by every back end. All names are fully
/// qualified; every method is safe to call concurrently.
#[async_trait]
pub trait Engine: Send + Sync + 'static {
    /// The state machine of the link to a broker; `None` for embedded
    /// engines, which are always connected. (Decorators must forward it.)
    fn connection(&self) -> Option<std::sync::Arc<connection::ConnectionState>>;

    /// Checks that the engine answers (for a broker, one round trip).
    async fn health(&self) -> Result<()>;

    /// One identity request (a JSON object with a `type`, docs/SECURITY.md)
    /// to a broker started with `--identity`; its answer as JSON. A login
    /// that succeeds makes the engine send the new session token from then
    /// on; a logout stops it. Embedded engines have no identity.
    async fn identity(&self, request: &str) -> Result<String> {
        let _ = request;
        Err(crate::error::Error::Unavailable(
            "identity needs a broker started with --identity (grpc://, ws://); embedded engines have none".into(),
        ))
    }

    /// Sends `token` (a session or access-file token) on every call from
    /// now on; `None` goes back to the connect option `token`.
    fn set_token(&self, token: Option<&str>) -> Result<()> {
        let _ = token;
        Err(crate::error::Error::Unavailable("only a broker connection sends tokens".into()))
    }

    /// Checks that the engine can serve requests; by default as `health`.
    async fn ready(&self) -> Result<()> {
        self.health().await
    }

    // ---- streams ----
    /// Creates a stream; Ok if it exists with the same partition count.
    async fn create_stream(&self, stream: &str, config: StreamConfig) -> Result<()>;
    /// Appends records (creating the stream on first use); returns positions in order.
    async fn publish(&self, stream: &str, records: Vec<Record>) -> Result<Vec<Position>>;
    /// The memory tier: hands `record` to the live subscribers of `stream`
    /// (see `engine::live`) and stores nothing, not even the stream; with `ack`,
    /// returns once the engine's server has taken it (embedded engines fan
    /// out before returning either way).
    async fn publish_live(&self, stream: &str, record: Record, ack: bool) -> Result<()> {
        let _ = (stream, record, ack);
        Err(crate::Error::Unavailable("this engine has no memory-tier delivery".into()))
    }
    /// The replicated tier: like `publish`, acknowledged only once a quorum
    /// of servers stored it; Unavailable (naming why) on an engine that can not.
    async fn publish_replicated(&self, stream: &str, records: Vec<Record>) -> Result<Vec<Position>> {
        let _ = (stream, records);
        Err(crate::Error::Unavailable(
            "this engine keeps one copy: the replicated tier needs nats:// on a cluster of 3+ servers".into(),
        ))
    }
    /// Up to `max` stored messages of `partition` from `offset` on.
    async fn read(&self, stream: &str, partition: u32, offset: u64, max: usize) -> Result<Vec<Message>>;
    /// The stream's configuration and partition offsets.
    async fn stream_info(&self, stream: &str) -> Result<StreamInfo>;
    /// An endless, ordered, gap-free feed of messages (per partition) from `spec.start`.
    async fn subscribe(&self, stream: &str, spec: SubscribeSpec) -> Result<MessageStream>;
    /// Records that `group` processed `partition` up to `offset` (inclusive).
    async fn commit_offset(&self, stream: &str, group: &str, partition: u32, offset: u64) -> Result<()>;
    /// The offset `group` committed on `partition`.
    async fn get_offset(&self, stream: &str, group: &str, partition: u32) -> Result<u64>;
    /// Committed offsets and lag of `group` on every partition.
    async fn group_state(&self, stream: &str, group: &str) -> Result<GroupState>;

    // ---- queues ----
    /// Adds a job, ready after `delay_ms`; returns its id.
    async fn enqueue(&self, queue: &str, record: Record, delay_ms: u64, priority: i32) -> Result<u64>;
    /// Up to `max` jobs, waiting up to `wait_ms` for the first one.
    async fn reserve(&self, queue: &str, max: usize, visibility_ms: u64, wait_ms: u64) -> Result<Vec<Job>>;
    /// Completes a reserved job.
    async fn ack(&self, queue: &str, job_id: u64) -> Result<()>;
    /// Fails a reserved job: redelivered after `delay_ms` (or per the retry policy), or dead when out of attempts.
    async fn nack(&self, queue: &str, job_id: u64, delay_ms: u64) -> Result<()>;
    /// Job counts of the queue by state.
    async fn queue_stats(&self, queue: &str) -> Result<QueueStats>;
    /// Sets what happens to failing jobs of the queue.
    async fn set_retry_policy(&self, queue: &str, policy: RetryPolicy) -> Result<()>;
    /// The queue's retry policy (the default when none was set).
    async fn get_retry_policy(&self, queue: &str) -> Result<RetryPolicy>;
    /// Up to `max` jobs of the dead-letter queue, oldest first.
    async fn dlq_list(&self, queue: &str, max: usize) -> Result<Vec<Job>>;
    /// Moves one dead job back to the queue as a fresh job.
    async fn dlq_replay(&self, queue: &str, job_id: u64) -> Result<()>;
    /// Replays every dead job (matching `header` when given); returns how many.
    async fn dlq_replay_all(&self, queue: &str, header: Option<(String, String)>) -> Result<u64>;

    // ---- key-value ----
    /// Sets `key`, expiring after `ttl_ms` (0 = never); returns the new revision.
    async fn kv_set(&self, bucket: &str, key: &str, value: Bytes, ttl_ms: u64) -> Result<u64>;
    /// Compare-and-set: `expected` 0 means the key must not exist.
    async fn kv_cas(&self, bucket: &str, key: &str, value: Bytes, expected: u64, ttl_ms: u64) -> Result<u64>;
    /// The entry of `key`; NotFound if absent.
    async fn kv_get(&self, bucket: &str, key: &str) -> Result<KvEntry>;
    /// Ok when absent; returns whether a key was removed.
    async fn kv_delete(&self, bucket: &str, key: &str) -> Result<bool>;
    /// Whether `key` is set.
    async fn kv_exists(&self, bucket: &str, key: &str) -> Result<bool>;
    /// Keys of the bucket that start with `prefix`.
    async fn kv_keys(&self, bucket: &str, prefix: &str) -> Result<Vec<String>>;
    /// Changes to keys starting with `prefix`, from now on.
    async fn kv_watch(&self, bucket: &str, prefix: &str) -> Result<KvEventStream>;
    /// A watch that can be resumed: it starts now (`after` None) or replays
    /// the changes after `after` still kept in the bucket's recent history,
    /// then continues live; returns the cursor it starts from. Fails with
    /// Conflict when it can not resume exactly (history too short, or the
    /// bucket was reopened since, e.g. by a broker restart).
    async fn kv_watch_resume(&self, bucket: &str, prefix: &str, after: Option<WatchCursor>) -> Result<ResumedWatch> {
        let _ = (bucket, prefix, after);
        Err(crate::Error::Conflict("this engine can not resume watches".into()))
    }

    /// Runs one transaction atomically over buckets of one tenant (see
    /// [`crate::txn`]): results in op order, or `Error::Conflict` naming the first
    /// failed check with nothing written.
    async fn kv_txn(&self, ops: Vec<TxnOp>) -> Result<Vec<TxnResult>> {
        let _ = ops;
        Err(crate::Error::Unavailable("this engine does not support KV transactions".into()))
    }

    // ---- resource lifecycle ----
    // No defaults: every engine and decorator implements them.
    // Semantics shared by every engine:
    // - a listing returns fully qualified names starting with a qualified
    //   prefix (`tenant/namespace/` plus the caller's prefix), sorted;
    // - a delete removes the resource with everything in it; open
    //   subscriptions, KV watches and waiting reserves on it end with
    //   `NotFound` ("... was deleted"); a later use re-creates the resource
    //   empty, like any first use (stream offsets start again at 0);
    // - a stream purge removes every retained message while offsets keep
    //   growing from where they were; committed offsets of consumer groups
    //   that pointed into the removed range are moved to its end, so groups
    //   resume at the next new message;
    // - a queue purge removes pending and delayed jobs; jobs in flight are
    //   left to their workers (ack, nack and the visibility timeout still
    //   apply to them), and dead jobs stay in the dead-letter queue.
    /// Streams whose qualified name starts with `prefix`, sorted.
    async fn list_streams(&self, prefix: &str) -> Result<Vec<String>>;
    /// Queues whose qualified name starts with `prefix`, sorted.
    async fn list_queues(&self, prefix: &str) -> Result<Vec<String>>;
    /// Buckets whose qualified name starts with `prefix`, sorted.
    async fn list_buckets(&self, prefix: &str) -> Result<Vec<String>>;
    /// Removes a stream with its messages and group offsets; NotFound if absent.
    async fn delete_stream(&self, stream: &str) -> Result<()>;
    /// Removes a queue with every job (in flight and dead ones too); NotFound if absent.
    async fn delete_queue(&self, queue: &str) -> Result<()>;
    /// Removes a bucket with every key; NotFound if absent.
    async fn delete_bucket(&self, bucket: &str) -> Result<()>;
    /// Removes every retained message, keeping offsets; returns how many.
    async fn purge_stream(&self, stream: &str) -> Result<u64>;
    /// Removes pending and delayed jobs (not in-flight or dead ones); returns how many.
    async fn purge_queue(&self, queue: &str) -> Result<u64>;
    /// Gives a reserved job `visibility_ms` more from now; Conflict when it
    /// is not reserved (any more), NotFound when the queue has no such job.
    async fn extend(&self, queue: &str, job_id: u64, visibility_ms: u64) -> Result<()>;
    /// Changes retention and grows partitions; returns the new configuration.
    async fn update_stream(&self, stream: &str, update: StreamUpdate) -> Result<StreamConfig>;

    /// Flushes buffered writes to stable storage (fsync); a no-op in memory.
    async fn sync(&self) -> Result<()> {
        Ok(())
    }

    /// Every resource this engine holds and its size, for broker metrics
    /// (`flowmesh serve --metrics`). Engines that cannot tell return an empty one.
    async fn inventory(&self) -> Result<Inventory> {
        Ok(Inventory::default())
    }
}

/// The partition of `partitions` that records with `key` go to: FNV-1a,
/// stable across versions, platforms and engines, so a key lands in the
/// same partition wherever it is published.
pub(crate) fn key_partition(key: &[u8], partitions: u32) -> u32 {
    let mut h: u32 = 0x811c9dc5;
    for b in key {
        h ^= *b as u32;
        h = h.wrapping_mul(0x01000193);
    }
    h % partitions
}
