//! The data model every layer speaks: records and messages of streams,
//! queue jobs, key-value entries and watch events, stream configuration and
//! the snapshots engines report. Plain data, no behaviour beyond small
//! helpers; re-exported by `crate::engine` and the crate root.

use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;

use crate::error::{Error, Result};

/// A message to append to a stream (or a job payload to enqueue).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record {
    /// Partition key; `None` spreads messages round robin over partitions.
    pub key: Option<Bytes>,
    /// The message body, opaque to flowmesh.
    pub payload: Bytes,
    /// Application headers, in order; names may repeat.
    pub headers: Vec<(String, String)>,
    /// De-duplication id: a stream stores a record whose id it has already
    /// seen (within its window of recent ids) only once and answers with the
    /// first copy's position. The remote client sets one on every publish
    /// (producer id + sequence) so retried publishes are stored once.
    pub msg_id: Option<String>,
}

impl Record {
    /// A record with only a payload: no key, headers or de-duplication id.
    pub fn new(payload: impl Into<Bytes>) -> Record {
        Record { key: None, payload: payload.into(), headers: Vec::new(), msg_id: None }
    }

    /// Sets the de-duplication id (see [`Record::msg_id`]).
    pub fn with_msg_id(mut self, id: impl Into<String>) -> Record {
        self.msg_id = Some(id.into());
        self
    }

    /// Sets the partition key: records with equal keys keep their order.
    pub fn with_key(mut self, key: impl Into<Bytes>) -> Record {
        self.key = Some(key.into());
        self
    }

    /// Appends one header.
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
    /// The stream it was read from.
    pub stream: String,
    /// The partition that stores it.
    pub partition: u32,
    /// Its position in the partition ([`NO_OFFSET`] for a memory-tier message).
    pub offset: u64,
    /// When the engine stored it, in milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// The partition key it was published with.
    pub key: Option<Bytes>,
    /// The message body.
    pub payload: Bytes,
    /// Application headers, as published.
    pub headers: Vec<(String, String)>,
}

/// Where a published message landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    /// The partition that stored the message.
    pub partition: u32,
    /// Its offset in that partition.
    pub offset: u64,
}

/// Creation-time configuration of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamConfig {
    /// Number of partitions (1 to 4096); keys hash onto them.
    pub partitions: u32,
    /// Retention limits; 0 = unlimited. Applied per partition.
    pub max_age_ms: u64,
    /// Retention by size in bytes; 0 = unlimited.
    pub max_bytes: u64,
    /// Retention by message count; 0 = unlimited.
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

    /// See [`Tier::memory_default_max_messages`]: the byte bound.
    pub const fn memory_default_max_bytes() -> u64 {
        64 << 20
    }

    /// The option value naming this tier (`durable`, `memory`).
    pub fn name(self) -> &'static str {
        match self {
            Tier::Durable => "durable",
            Tier::Memory => "memory",
        }
    }
}

/// Delivery tier of one publish (option `tier` of `fm_publish_with`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeliveryTier {
    /// Fan-out to the live subscribers of the stream: nothing stored, no
    /// offset; subscribers that are not connected never see it.
    Memory,
    /// Stored and acknowledged per the engine's durability.
    #[default]
    Persistent,
    /// Stored on a quorum of servers before it is acknowledged; engines that
    /// keep one copy refuse it (Unavailable), never store it with less.
    Replicated,
}

impl DeliveryTier {
    /// The option value naming this tier (`memory`, `persistent`, `replicated`).
    pub fn name(self) -> &'static str {
        match self {
            DeliveryTier::Memory => "memory",
            DeliveryTier::Persistent => "persistent",
            DeliveryTier::Replicated => "replicated",
        }
    }
}

/// How one message is published (see [`DeliveryTier`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PublishOptions {
    /// Where the message goes: live fan-out only, stored, or replicated.
    pub tier: DeliveryTier,
    /// Waits for the engine to confirm: for the memory tier, that the fan-out
    /// was taken by the engine (the server, the broker); stored tiers always wait.
    pub require_ack: bool,
    /// Deadline of the whole publish; `None` = the engine's own.
    pub timeout_ms: Option<u64>,
}

/// The offset of a message that has none: a memory-tier message (never
/// stored) as a subscriber receives it (C: FM_OFFSET_NONE).
pub const NO_OFFSET: u64 = u64::MAX;

impl Message {
    /// A memory-tier message: delivered live, never stored.
    pub fn is_live(&self) -> bool {
        self.offset == NO_OFFSET
    }
}

/// Offsets of one partition: `[earliest, latest)` are readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionInfo {
    /// The partition these offsets belong to.
    pub partition: u32,
    /// The oldest offset still retained.
    pub earliest: u64,
    /// The offset the next message will get.
    pub latest: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
/// A stream's configuration and the offsets of each of its partitions.
pub struct StreamInfo {
    /// How the stream was created (or last updated).
    pub config: StreamConfig,
    /// One entry per partition, in partition order.
    pub partitions: Vec<PartitionInfo>,
}

/// Where a subscription starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartFrom {
    /// The oldest retained message.
    Earliest,
    /// Only messages published after the subscription started.
    Latest,
    /// After the group's committed offset (earliest when none).
    Committed,
    /// At this offset (on every subscribed partition).
    Offset(u64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
/// What a subscription reads: which partitions, from where, and for which group.
pub struct SubscribeSpec {
    /// `None` = every partition.
    pub partition: Option<u32>,
    /// Where reading starts.
    pub start: StartFrom,
    /// Consumer group whose offsets are committed and resumed; `None` = no group.
    pub group: Option<String>,
}

/// Per-partition state of a consumer group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupPartitionState {
    /// The partition.
    pub partition: u32,
    /// Offset of the last processed message, if any was committed.
    pub committed: Option<u64>,
    /// The partition's next offset (what a caught-up group has reached).
    pub latest: u64,
    /// Messages not yet processed by the group.
    pub lag: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
/// A consumer group's progress over every partition of a stream.
pub struct GroupState {
    /// The group's name.
    pub group: String,
    /// One entry per partition, in partition order.
    pub partitions: Vec<GroupPartitionState>,
}

/// A queue job as handed to a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Queue-wide id, used to ack, nack or extend the job.
    pub id: u64,
    /// Deliveries so far, including this one (1 on first delivery).
    pub attempt: u32,
    /// Higher priorities are reserved first.
    pub priority: i32,
    /// The job body.
    pub payload: Bytes,
    /// Headers of the enqueued record.
    pub headers: Vec<(String, String)>,
    /// When it was enqueued, in milliseconds since the Unix epoch.
    pub enqueued_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
/// Job counts of a queue, by state.
pub struct QueueStats {
    /// Ready to be reserved.
    pub pending: u64,
    /// Reserved and not yet acked (within their visibility timeout).
    pub in_flight: u64,
    /// Enqueued with a delay or backing off after a failure.
    pub delayed: u64,
    /// In the dead-letter queue (out of attempts).
    pub dead: u64,
}

/// What happens to a job that fails (nack or visibility timeout).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Deliveries before the job goes to the dead-letter queue; 0 = unlimited.
    pub max_attempts: u32,
    /// Backoff after the first failure; 0 = redeliver at once.
    pub initial_backoff_ms: u64,
    /// Upper bound of the backoff; 0 = none.
    pub max_backoff_ms: u64,
    /// Growth of the backoff per failed delivery (at least 1).
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
    /// The key within its bucket.
    pub key: String,
    /// The stored value.
    pub value: Bytes,
    /// Revision of the last change to this key; compare-and-set checks it.
    pub revision: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
/// The kind of change a KV watch reports.
pub enum KvOp {
    /// The key was set.
    Put = 1,
    /// The key was deleted.
    Delete = 2,
    /// The key's time to live ran out.
    Expire = 3,
}

/// A change seen by a KV watch.
#[derive(Debug, Clone, PartialEq)]
pub struct KvEvent {
    /// What happened to the key.
    pub op: KvOp,
    /// The key that changed.
    pub key: String,
    /// Empty for deletes and expiries.
    pub value: Bytes,
    /// The revision the change took.
    pub revision: u64,
    /// Where this event sits in its bucket's change history, so a watch can
    /// resume right after it (see [`Engine::kv_watch_resume`](crate::engine::Engine::kv_watch_resume)).
    pub cursor: WatchCursor,
}

/// A position in a bucket's change history: `seq` counts changes since the
/// bucket was opened (`epoch`, random per open). Expiries take no new
/// revision, so revisions alone can not order them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchCursor {
    /// Random per open of the bucket, so a cursor from before a reopen is recognised.
    pub epoch: u64,
    /// Changes counted since that open.
    pub seq: u64,
}

/// The messages of a subscription, in order per partition.
pub type MessageStream = Pin<Box<dyn Stream<Item = Result<Message>> + Send>>;
/// The changes a KV watch delivers, in order.
pub type KvEventStream = Pin<Box<dyn Stream<Item = Result<KvEvent>> + Send>>;
/// A resumed watch: the cursor it starts from, and the changes from there.
pub type ResumedWatch = (WatchCursor, KvEventStream);

/// A snapshot of an engine's resources (see [`Engine::inventory`](crate::engine::Engine::inventory)).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inventory {
    /// Every stream, with its size and groups.
    pub streams: Vec<StreamStats>,
    /// Every queue by name, with its job counts.
    pub queues: Vec<(String, QueueStats)>,
    /// Bucket name and live key count.
    pub buckets: Vec<(String, u64)>,
    /// Bytes of the data directory's files (0 in memory).
    pub storage_bytes: u64,
}

#[derive(Debug, Clone, PartialEq)]
/// One stream of an [`Inventory`].
pub struct StreamStats {
    /// The stream's name.
    pub name: String,
    /// Where its messages live.
    pub tier: Tier,
    /// Messages retained (latest - earliest, summed over partitions).
    pub messages: u64,
    /// Bytes retained, as counted against size limits.
    pub bytes: u64,
    /// Its consumer groups and their lag.
    pub groups: Vec<GroupState>,
}

/// A change of a stream's configuration: `None` keeps a setting. The
/// partition count may only grow (keys then map to other partitions);
/// retention limits (0 = unlimited) apply from the next enforcement on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamUpdate {
    /// New partition count (may only grow).
    pub partitions: Option<u32>,
    /// New retention by age in milliseconds.
    pub max_age_ms: Option<u64>,
    /// New retention by size in bytes.
    pub max_bytes: Option<u64>,
    /// New retention by message count.
    pub max_messages: Option<u64>,
}

impl StreamUpdate {
    /// `config` with this update applied, refusing a shrinking partition count.
    pub fn apply(&self, stream: &str, config: StreamConfig) -> Result<StreamConfig> {
        let mut next = config;
        if let Some(p) = self.partitions {
            if p < config.partitions {
                return Err(Error::InvalidArgument(format!(
                    "stream {stream} has {} partitions; the partition count may only grow",
                    config.partitions
                )));
            }
            if p > 4096 {
                return Err(Error::InvalidArgument("partitions must be between 1 and 4096".into()));
            }
            next.partitions = p;
        }
        next.max_age_ms = self.max_age_ms.unwrap_or(config.max_age_ms);
        next.max_bytes = self.max_bytes.unwrap_or(config.max_bytes);
        next.max_messages = self.max_messages.unwrap_or(config.max_messages);
        Ok(next)
    }

    /// Whether the update changes nothing (a request must change something).
    pub fn is_empty(&self) -> bool {
        *self == StreamUpdate::default()
    }
}
