//! Client metrics: what one client did, in the Prometheus text
//! format, for every language at once (`fm_client_metrics`, the bindings'
//! `metrics()`). Counting happens in [`MeteredEngine`], a decorator around
//! the real engine installed by `Client::with_engine`, so the client's own
//! code stays unaware of it.
//!
//! Exported series (all prefixed `flowmesh_client_`):
//! - `operations_total{op,status}`: engine calls by kind and outcome; status
//!   is `ok` or the error kind (`not_found`, `timeout`, ... as in [`status_name`]).
//! - `operation_duration_seconds{op}`: latency histogram per kind.
//! - `in_flight`: engine calls running now.
//! - `messages_published_total`, `published_bytes_total`: records accepted by
//!   successful publishes (bytes as counted against size limits).
//! - `messages_delivered_total`, `delivered_bytes_total`: messages yielded by
//!   subscription feeds (callback, pull and async subscriptions alike; a pull
//!   subscription's feed runs up to 1024 messages ahead of the application).
//! - `jobs_enqueued_total`, `jobs_received_total`: queue traffic.
//! - `reconnects_total`, `connection_state`, `breaker_state`: hooks for the
//!   remote engine's reconnect logic ([`ClientMetrics::reconnect`],
//!   [`ClientMetrics::set_connection_state`], [`ClientMetrics::set_breaker_state`]).
//!
//! Calls rejected by the client before they reach the engine (a bad name, a
//! payload over max_payload_bytes) are not counted.

mod engine;
pub mod report;

use std::sync::OnceLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

pub use self::engine::MeteredEngine;
use crate::error::Error;

/// Latency buckets shared by client and broker: 50 µs doubling to ~13 s,
/// wide enough for an in-process call and a broker round trip alike.
pub(crate) fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 19))
}

/// The outcome label of a result: `ok` or the error kind.
pub fn status_name(err: Option<&Error>) -> &'static str {
    match err {
        None => "ok",
        Some(Error::InvalidArgument(_)) => "invalid_argument",
        Some(Error::NotFound(_)) => "not_found",
        Some(Error::Timeout(_)) => "timeout",
        Some(Error::Disconnected(_)) => "disconnected",
        Some(Error::Unauthorized(_)) => "unauthorized",
        Some(Error::Closed(_)) => "closed",
        Some(Error::AlreadyExists(_)) => "already_exists",
        Some(Error::Conflict(_)) => "conflict",
        Some(Error::TooLarge(_)) => "too_large",
        Some(Error::Unavailable(_)) => "unavailable",
        Some(Error::Internal(_)) => "internal",
    }
}

/// Every status, indexed like `Error::code()` (0 = ok).
const STATUS_COUNT: usize = crate::error::Status::all().len();

/// The engine operations a client counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
#[allow(missing_docs)] // each variant is the Engine method of that name
pub enum Op {
    Health,
    Ready,
    CreateStream,
    Publish,
    Read,
    StreamInfo,
    Subscribe,
    CommitOffset,
    GetOffset,
    GroupState,
    Enqueue,
    Reserve,
    Ack,
    Nack,
    QueueStats,
    SetRetryPolicy,
    GetRetryPolicy,
    DlqList,
    DlqReplay,
    DlqReplayAll,
    KvSet,
    KvCas,
    KvGet,
    KvDelete,
    KvExists,
    KvKeys,
    KvWatch,
    KvTxn,
    Sync,
    ListStreams,
    ListQueues,
    ListBuckets,
    DeleteStream,
    DeleteQueue,
    DeleteBucket,
    PurgeStream,
    PurgeQueue,
    Extend,
    UpdateStream,
}

const OP_COUNT: usize = Op::UpdateStream as usize + 1;

impl Op {
    /// The `op` label of the operation's series.
    pub fn name(self) -> &'static str {
        match self {
            Op::Health => "health",
            Op::Ready => "ready",
            Op::CreateStream => "create_stream",
            Op::Publish => "publish",
            Op::Read => "read",
            Op::StreamInfo => "stream_info",
            Op::Subscribe => "subscribe",
            Op::CommitOffset => "commit_offset",
            Op::GetOffset => "get_offset",
            Op::GroupState => "group_state",
            Op::Enqueue => "enqueue",
            Op::Reserve => "reserve",
            Op::Ack => "ack",
            Op::Nack => "nack",
            Op::QueueStats => "queue_stats",
            Op::SetRetryPolicy => "set_retry_policy",
            Op::GetRetryPolicy => "get_retry_policy",
            Op::DlqList => "dlq_list",
            Op::DlqReplay => "dlq_replay",
            Op::DlqReplayAll => "dlq_replay_all",
            Op::KvSet => "kv_set",
            Op::KvCas => "kv_cas",
            Op::KvGet => "kv_get",
            Op::KvDelete => "kv_delete",
            Op::KvExists => "kv_exists",
            Op::KvKeys => "kv_keys",
            Op::KvWatch => "kv_watch",
            Op::KvTxn => "kv_txn",
            Op::Sync => "sync",
            Op::ListStreams => "list_streams",
            Op::ListQueues => "list_queues",
            Op::ListBuckets => "list_buckets",
            Op::DeleteStream => "delete_stream",
            Op::DeleteQueue => "delete_queue",
            Op::DeleteBucket => "delete_bucket",
            Op::PurgeStream => "purge_stream",
            Op::PurgeQueue => "purge_queue",
            Op::Extend => "extend",
            Op::UpdateStream => "update_stream",
        }
    }
}

type Labels2 = [(&'static str, &'static str); 2];
type Labels1 = [(&'static str, &'static str); 1];

/// The metrics of one client. Thread-safe; updates are lock-free after the
/// first use of each (op, status) pair.
#[derive(Debug)]
pub struct ClientMetrics {
    registry: Registry,
    operations: Family<Labels2, Counter>,
    durations: Family<Labels1, Histogram, fn() -> Histogram>,
    /// Handles cached per (op, status) and per op, so the hot path skips
    /// the family's lock and hashing.
    op_cache: Box<[OnceLock<Counter>]>,
    duration_cache: Box<[OnceLock<Histogram>]>,
    pub(crate) in_flight: Gauge,
    pub(crate) published: Counter,
    pub(crate) published_bytes: Counter,
    pub(crate) delivered: Counter,
    pub(crate) delivered_bytes: Counter,
    pub(crate) enqueued: Counter,
    pub(crate) received_jobs: Counter,
    reconnects: Counter,
    connection_state: Gauge,
    breaker_state: Gauge,
}

impl Default for ClientMetrics {
    fn default() -> Self {
        ClientMetrics::new()
    }
}

impl ClientMetrics {
    /// A client's series, prefixed `flowmesh_client_`.
    pub fn new() -> ClientMetrics {
        ClientMetrics::with_prefix("flowmesh_client")
    }

    /// The same series under another prefix (the broker meters its engine
    /// as `flowmesh_broker_engine_*`).
    pub fn with_prefix(prefix: &str) -> ClientMetrics {
        let m = ClientMetrics {
            registry: Registry::default(),
            operations: Family::default(),
            durations: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            op_cache: (0..OP_COUNT * STATUS_COUNT).map(|_| OnceLock::new()).collect(),
            duration_cache: (0..OP_COUNT).map(|_| OnceLock::new()).collect(),
            in_flight: Gauge::default(),
            published: Counter::default(),
            published_bytes: Counter::default(),
            delivered: Counter::default(),
            delivered_bytes: Counter::default(),
            enqueued: Counter::default(),
            received_jobs: Counter::default(),
            reconnects: Counter::default(),
            connection_state: Gauge::default(),
            breaker_state: Gauge::default(),
        };
        let mut r = Registry::with_prefix(prefix);
        r.register("operations", "Engine operations by kind and outcome", m.operations.clone());
        r.register("operation_duration_seconds", "Engine operation latency by kind", m.durations.clone());
        r.register("in_flight", "Engine operations running now", m.in_flight.clone());
        r.register("messages_published", "Messages accepted by successful publishes", m.published.clone());
        r.register("published_bytes", "Bytes of messages accepted by successful publishes", m.published_bytes.clone());
        r.register("messages_delivered", "Messages yielded by subscription feeds", m.delivered.clone());
        r.register("delivered_bytes", "Bytes of messages yielded by subscription feeds", m.delivered_bytes.clone());
        r.register("jobs_enqueued", "Jobs accepted by successful enqueues", m.enqueued.clone());
        r.register("jobs_received", "Jobs handed to this client by reserve/receive", m.received_jobs.clone());
        r.register("reconnects", "Reconnections to the broker after a lost connection", m.reconnects.clone());
        r.register(
            "connection_state",
            "Connection state as last set by the remote engine (0 until it reports one; see its docs)",
            m.connection_state.clone(),
        );
        r.register(
            "breaker_state",
            "Circuit breaker state as set by the remote engine (0 closed, 1 open, 2 half-open)",
            m.breaker_state.clone(),
        );
        ClientMetrics { registry: r, ..m }
    }

    /// Counts one finished operation and its latency.
    pub fn record(&self, op: Op, err: Option<&Error>, seconds: f64) {
        let status = err.map_or(0, |e| e.code() as usize).min(STATUS_COUNT - 1);
        let o = op as usize;
        self.op_cache[o * STATUS_COUNT + status]
            .get_or_init(|| self.operations.get_or_create_owned(&[("op", op.name()), ("status", status_name(err))]))
            .inc();
        self.duration_cache[o]
            .get_or_init(|| self.durations.get_or_create_owned(&[("op", op.name())]))
            .observe(seconds);
    }

    /// How many operations of `op` ended with `status` (see [`status_name`]).
    pub fn operations(&self, op: Op, status: &'static str) -> u64 {
        self.operations.get(&[("op", op.name()), ("status", status)]).map_or(0, |c| c.get())
    }

    /// Hook for the remote engine: one successful reconnection.
    pub fn reconnect(&self) {
        self.reconnects.inc();
    }

    /// Hook for the remote engine: its connection state machine's current
    /// state, as a small number it documents.
    pub fn set_connection_state(&self, state: u8) {
        self.connection_state.set(state as i64);
    }

    /// Hook for the remote engine: the circuit breaker's current state
    /// (0 closed, 1 open, 2 half-open).
    pub fn set_breaker_state(&self, state: u8) {
        self.breaker_state.set(state as i64);
    }

    /// Everything in the Prometheus text exposition format (version 0.0.4).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// The remote engine's connection state machine reports here.
impl crate::engine::connection::LinkObserver for ClientMetrics {
    fn state(&self, state: crate::engine::connection::ConnState) {
        self.set_connection_state(state as u8);
    }

    fn reconnected(&self) {
        self.reconnect();
    }

    fn breaker(&self, state: u8) {
        self.set_breaker_state(state);
    }
}
