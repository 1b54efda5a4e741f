//! The `Engine` trait: the one contract every storage back end fulfils
//! (embedded memory, embedded durable, remote broker). The `Client` resolves
//! names and options, then forwards to an engine; the broker serves an engine
//! over gRPC. Names reaching an engine are always fully qualified
//! (`tenant/namespace/name`).

pub mod connection;
pub mod embedded;
pub mod lifecycle;
pub mod remote;
pub mod remote_tls;

use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;

use crate::error::Result;

pub use lifecycle::StreamUpdate;

/// A message to append to a stream (or a job payload to enqueue).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record {
    /// Partition key; `None` spreads messages round robin over partitions.
    pub key: Option<Bytes>,
    pub payload: Bytes,
    pub headers: Vec<(String, String)>,
    /// De-duplication id: a stream stores a record whose id it has already
    /// seen (within its window of recent ids) only once and answers with the
    /// first copy's position. The remote client sets one on every publish
    /// (producer id + sequence) so retried publishes are stored once.
    pub msg_id: Option<String>,
}

impl Record {
    pub fn new(payload: impl Into<Bytes>) -> Record {
        Record { key: None, payload: payload.into(), headers: Vec::new(), msg_id: None }
    }

    pub fn with_msg_id(mut self, id: impl Into<String>) -> Record {
        self.msg_id = Some(id.into());
        self
    }

    pub fn with_key(mut self, key: impl Into<Bytes>) -> Record {
        self.key = Some(key.into());
        self
    }

    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<String>) -> Record {
        self.headers.push((key.into(), value.into()));
        self
    }

    /// Bytes this record occupies, as counted against size limits.
    pub fn size(&self) -> usize {
        self.payload.len()
            + self.key.as_ref().map_or(0, |k| k.len())
            + self.headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
    }
}

/// A stored stream message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub stream: String,
    pub partition: u32,
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub payload: Bytes,
    pub headers: Vec<(String, String)>,
}

/// Where a published message landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    pub partition: u32,
    pub offset: u64,
}

/// Creation-time configuration of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamConfig {
    pub partitions: u32,
    /// Retention limits; 0 = unlimited. Applied per partition.
    pub max_age_ms: u64,
    pub max_bytes: u64,
    pub max_messages: u64,
    /// Where the stream's messages live (option `tier`).
    pub tier: Tier,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig { partitions: 1, max_age_ms: 0, max_bytes: 0, max_messages: 0, tier: Tier::Durable }
    }
}

/// Delivery tier of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tier {
    /// Written to the engine's storage and acknowledged per the fsync policy.
    #[default]
    Durable,
    /// Kept in memory only, even on a durable engine: no files, bounded
    /// (see [`Tier::memory_default_max_messages`]), oldest dropped first.
    Memory,
}

impl Tier {
    /// Bounds of a memory-tier stream created without explicit limits, per
    /// partition (functions, not consts, to keep them out of the C header).
    pub const fn memory_default_max_messages() -> u64 {
        100_000
    }

    pub const fn memory_default_max_bytes() -> u64 {
        64 << 20
    }

    pub fn name(self) -> &'static str {
        match self {
            Tier::Durable => "durable",
            Tier::Memory => "memory",
        }
    }
}

/// Offsets of one partition: `[earliest, latest)` are readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: u32,
    pub earliest: u64,
    /// The offset the next message will get.
    pub latest: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    pub config: StreamConfig,
    pub partitions: Vec<PartitionInfo>,
}

/// Where a subscription starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    Earliest,
    Latest,
    /// After the group's committed offset (earliest when none).
    Committed,
    Offset(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeSpec {
    /// `None` = every partition.
    pub partition: Option<u32>,
    pub start: StartFrom,
    pub group: Option<String>,
}

/// Per-partition state of a consumer group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupPartitionState {
    pub partition: u32,
    /// Offset of the last processed message, if any was committed.
    pub committed: Option<u64>,
    pub latest: u64,
    /// Messages not yet processed by the group.
    pub lag: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupState {
    pub group: String,
    pub partitions: Vec<GroupPartitionState>,
}

/// A queue job as handed to a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: u64,
    /// Deliveries so far, including this one (1 on first delivery).
    pub attempt: u32,
    pub priority: i32,
    pub payload: Bytes,
    pub headers: Vec<(String, String)>,
    pub enqueued_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStats {
    pub pending: u64,
    pub in_flight: u64,
    pub delayed: u64,
    pub dead: u64,
}

/// What happens to a job that fails (nack or visibility timeout).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Deliveries before the job goes to the dead-letter queue; 0 = unlimited.
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    pub multiplier: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { max_attempts: 0, initial_backoff_ms: 0, max_backoff_ms: 0, multiplier: 2.0 }
    }
}

impl RetryPolicy {
    /// Backoff before the next delivery after failed delivery number `attempt`.
    pub fn backoff_ms(&self, attempt: u32) -> u64 {
        if self.initial_backoff_ms == 0 {
            return 0;
        }
        let exp = attempt.saturating_sub(1).min(64) as i32;
        let raw = self.initial_backoff_ms as f64 * self.multiplier.max(1.0).powi(exp);
        let cap = if self.max_backoff_ms == 0 { u64::MAX as f64 } else { self.max_backoff_ms as f64 };
        raw.min(cap) as u64
    }
}

/// One stored key-value entry.
#[derive(Debug, Clone, PartialEq)]
pub struct KvEntry {
    pub key: String,
    pub value: Bytes,
    pub revision: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum KvOp {
    Put = 1,
    Delete = 2,
    Expire = 3,
}

/// A change seen by a KV watch.
#[derive(Debug, Clone, PartialEq)]
pub struct KvEvent {
    pub op: KvOp,
    pub key: String,
    /// Empty for deletes and expiries.
    pub value: Bytes,
    pub revision: u64,
    /// Where this event sits in its bucket's change history, so a watch can
    /// resume right after it (see [`Engine::kv_watch_resume`]).
    pub cursor: WatchCursor,
}

/// A position in a bucket's change history: `seq` counts changes since the
/// bucket was opened (`epoch`, random per open). Expiries take no new
/// revision, so revisions alone can not order them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchCursor {
    pub epoch: u64,
    pub seq: u64,
}

pub type MessageStream = Pin<Box<dyn Stream<Item = Result<Message>> + Send>>;
pub type KvEventStream = Pin<Box<dyn Stream<Item = Result<KvEvent>> + Send>>;

/// The storage contract shared by every back end. All names are fully
/// qualified; every method is safe to call concurrently.
#[async_trait]
pub trait Engine: Send + Sync + 'static {
    /// The state machine of the link to a broker; `None` for embedded
    /// engines, which are always connected. (Decorators must forward it.)
    fn connection(&self) -> Option<std::sync::Arc<connection::ConnectionState>>;

    async fn health(&self) -> Result<()>;
    async fn ready(&self) -> Result<()> {
        self.health().await
    }

    // ---- streams ----
    /// Creates a stream; Ok if it exists with the same partition count.
    async fn create_stream(&self, stream: &str, config: StreamConfig) -> Result<()>;
    /// Appends records (creating the stream on first use); returns positions in order.
    async fn publish(&self, stream: &str, records: Vec<Record>) -> Result<Vec<Position>>;
    async fn read(&self, stream: &str, partition: u32, offset: u64, max: usize) -> Result<Vec<Message>>;
    async fn stream_info(&self, stream: &str) -> Result<StreamInfo>;
    /// An endless, ordered, gap-free feed of messages (per partition) from `spec.start`.
    async fn subscribe(&self, stream: &str, spec: SubscribeSpec) -> Result<MessageStream>;
    async fn commit_offset(&self, stream: &str, group: &str, partition: u32, offset: u64) -> Result<()>;
    async fn get_offset(&self, stream: &str, group: &str, partition: u32) -> Result<u64>;
    async fn group_state(&self, stream: &str, group: &str) -> Result<GroupState>;

    // ---- queues ----
    async fn enqueue(&self, queue: &str, record: Record, delay_ms: u64, priority: i32) -> Result<u64>;
    /// Up to `max` jobs, waiting up to `wait_ms` for the first one.
    async fn reserve(&self, queue: &str, max: usize, visibility_ms: u64, wait_ms: u64) -> Result<Vec<Job>>;
    async fn ack(&self, queue: &str, job_id: u64) -> Result<()>;
    async fn nack(&self, queue: &str, job_id: u64, delay_ms: u64) -> Result<()>;
    async fn queue_stats(&self, queue: &str) -> Result<QueueStats>;
    async fn set_retry_policy(&self, queue: &str, policy: RetryPolicy) -> Result<()>;
    async fn get_retry_policy(&self, queue: &str) -> Result<RetryPolicy>;
    async fn dlq_list(&self, queue: &str, max: usize) -> Result<Vec<Job>>;
    async fn dlq_replay(&self, queue: &str, job_id: u64) -> Result<()>;
    /// Replays every dead job (matching `header` when given); returns how many.
    async fn dlq_replay_all(&self, queue: &str, header: Option<(String, String)>) -> Result<u64>;

    // ---- key-value ----
    async fn kv_set(&self, bucket: &str, key: &str, value: Bytes, ttl_ms: u64) -> Result<u64>;
    /// Compare-and-set: `expected` 0 means the key must not exist.
    async fn kv_cas(&self, bucket: &str, key: &str, value: Bytes, expected: u64, ttl_ms: u64) -> Result<u64>;
    async fn kv_get(&self, bucket: &str, key: &str) -> Result<KvEntry>;
    /// Ok when absent; returns whether a key was removed.
    async fn kv_delete(&self, bucket: &str, key: &str) -> Result<bool>;
    async fn kv_exists(&self, bucket: &str, key: &str) -> Result<bool>;
    async fn kv_keys(&self, bucket: &str, prefix: &str) -> Result<Vec<String>>;
    async fn kv_watch(&self, bucket: &str, prefix: &str) -> Result<KvEventStream>;
    /// A watch that can be resumed: it starts now (`after` None) or replays
    /// the changes after `after` still kept in the bucket's recent history,
    /// then continues live; returns the cursor it starts from. Fails with
    /// Conflict when it can not resume exactly (history too short, or the
    /// bucket was reopened since, e.g. by a broker restart).
    async fn kv_watch_resume(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<WatchCursor>,
    ) -> Result<(WatchCursor, KvEventStream)> {
        let _ = (bucket, prefix, after);
        Err(crate::Error::Conflict("this engine can not resume watches".into()))
    }

    // ---- resource lifecycle (see [`lifecycle`] for the shared semantics) ----
    // No defaults: every engine and decorator implements them.
    /// Streams whose qualified name starts with `prefix`, sorted.
    async fn list_streams(&self, prefix: &str) -> Result<Vec<String>>;
    async fn list_queues(&self, prefix: &str) -> Result<Vec<String>>;
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

/// A snapshot of an engine's resources (see [`Engine::inventory`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inventory {
    pub streams: Vec<StreamStats>,
    pub queues: Vec<(String, QueueStats)>,
    /// Bucket name and live key count.
    pub buckets: Vec<(String, u64)>,
    /// Bytes of the data directory's files (0 in memory).
    pub storage_bytes: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StreamStats {
    pub name: String,
    pub tier: Tier,
    /// Messages retained (latest - earliest, summed over partitions).
    pub messages: u64,
    /// Bytes retained, as counted against size limits.
    pub bytes: u64,
    pub groups: Vec<GroupState>,
}
