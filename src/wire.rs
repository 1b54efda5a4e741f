//! The gRPC wire protocol (generated from proto/) and its conversions to and
//! from the engine types, shared by the broker and the remote engine.

#[allow(clippy::all, clippy::pedantic)]
#[allow(missing_docs)] // generated from proto/, documented there
pub mod pb {
    tonic::include_proto!("flowmesh.v1");
}

use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::{Code, Status};

use crate::error::{Error, Result};
use crate::model::*;
use crate::txn::{TxnOp, TxnResult};

/// Metadata key of the token (the usual HTTP header, `Bearer <token>`).
pub const AUTH_KEY: &str = "authorization";

/// Metadata key carrying the exact flowmesh status code.
pub const CODE_KEY: &str = "fm-code";

/// The gRPC status of an error, with its exact code in metadata [`CODE_KEY`].
pub fn to_status(e: &Error) -> Status {
    let code = match e {
        Error::InvalidArgument(_) => Code::InvalidArgument,
        Error::NotFound(_) => Code::NotFound,
        Error::Timeout(_) => Code::DeadlineExceeded,
        Error::Disconnected(_) | Error::Unavailable(_) => Code::Unavailable,
        Error::Unauthorized(_) => Code::PermissionDenied,
        Error::Closed(_) => Code::Cancelled,
        Error::AlreadyExists(_) => Code::AlreadyExists,
        Error::Conflict(_) => Code::FailedPrecondition,
        Error::TooLarge(_) => Code::ResourceExhausted,
        Error::Internal(_) => Code::Internal,
    };
    let mut status = Status::new(code, e.message().to_owned());
    status.metadata_mut().insert(CODE_KEY, e.code().to_string().parse().expect("digits are valid metadata"));
    status
}

/// Maps a gRPC status back to the flowmesh error it carries (or the closest
/// one for transport failures that never reached the broker's handlers).
pub fn from_status(s: &Status) -> Error {
    if let Some(code) = s.metadata().get(CODE_KEY).and_then(|v| v.to_str().ok()?.parse().ok()) {
        return Error::from_code(code, s.message());
    }
    let msg = if s.message().is_empty() { format!("{:?}", s.code()) } else { s.message().to_owned() };
    match s.code() {
        Code::InvalidArgument | Code::OutOfRange => Error::InvalidArgument(msg),
        Code::NotFound => Error::NotFound(msg),
        Code::DeadlineExceeded => Error::Timeout(msg),
        Code::Unauthenticated | Code::PermissionDenied => Error::Unauthorized(msg),
        Code::AlreadyExists => Error::AlreadyExists(msg),
        Code::FailedPrecondition | Code::Aborted => Error::Conflict(msg),
        Code::ResourceExhausted => Error::TooLarge(msg),
        Code::Unavailable | Code::Cancelled | Code::Unknown => Error::Disconnected(msg),
        _ => Error::Internal(msg),
    }
}

/// Headers in their wire form.
pub fn headers_to_pb(h: Vec<(String, String)>) -> Vec<pb::Header> {
    h.into_iter().map(|(key, value)| pb::Header { key, value }).collect()
}

/// Headers from their wire form.
pub fn headers_from_pb(h: Vec<pb::Header>) -> Vec<(String, String)> {
    h.into_iter().map(|h| (h.key, h.value)).collect()
}

impl From<Record> for pb::Record {
    fn from(r: Record) -> Self {
        pb::Record { key: r.key, payload: r.payload, headers: headers_to_pb(r.headers), msg_id: r.msg_id }
    }
}

impl From<pb::Record> for Record {
    fn from(r: pb::Record) -> Self {
        Record { key: r.key, payload: r.payload, headers: headers_from_pb(r.headers), msg_id: r.msg_id }
    }
}

impl From<Message> for pb::Message {
    fn from(m: Message) -> Self {
        pb::Message {
            stream: m.stream,
            partition: m.partition,
            offset: m.offset,
            timestamp_ms: m.timestamp_ms,
            key: m.key,
            payload: m.payload,
            headers: headers_to_pb(m.headers),
        }
    }
}

impl From<pb::Message> for Message {
    fn from(m: pb::Message) -> Self {
        Message {
            stream: m.stream,
            partition: m.partition,
            offset: m.offset,
            timestamp_ms: m.timestamp_ms,
            key: m.key,
            payload: m.payload,
            headers: headers_from_pb(m.headers),
        }
    }
}

impl From<Position> for pb::Position {
    fn from(p: Position) -> Self {
        pb::Position { partition: p.partition, offset: p.offset }
    }
}

impl From<pb::Position> for Position {
    fn from(p: pb::Position) -> Self {
        Position { partition: p.partition, offset: p.offset }
    }
}

impl From<StreamConfig> for pb::StreamConfig {
    fn from(c: StreamConfig) -> Self {
        pb::StreamConfig {
            partitions: c.partitions,
            max_age_ms: c.max_age_ms,
            max_bytes: c.max_bytes,
            max_messages: c.max_messages,
            tier: c.tier.name().to_owned(),
        }
    }
}

impl From<pb::StreamConfig> for StreamConfig {
    fn from(c: pb::StreamConfig) -> Self {
        StreamConfig {
            partitions: c.partitions,
            max_age_ms: c.max_age_ms,
            max_bytes: c.max_bytes,
            max_messages: c.max_messages,
            // Unknown names fall back to durable: never lose data by accident.
            tier: if c.tier == "memory" { Tier::Memory } else { Tier::Durable },
        }
    }
}

impl From<Job> for pb::Job {
    fn from(j: Job) -> Self {
        pb::Job {
            id: j.id,
            attempt: j.attempt,
            priority: j.priority,
            payload: j.payload,
            headers: headers_to_pb(j.headers),
            enqueued_ms: j.enqueued_ms,
        }
    }
}

impl From<pb::Job> for Job {
    fn from(j: pb::Job) -> Self {
        Job {
            id: j.id,
            attempt: j.attempt,
            priority: j.priority,
            payload: j.payload,
            headers: headers_from_pb(j.headers),
            enqueued_ms: j.enqueued_ms,
        }
    }
}

impl From<RetryPolicy> for pb::RetryPolicy {
    fn from(p: RetryPolicy) -> Self {
        pb::RetryPolicy {
            max_attempts: p.max_attempts,
            initial_backoff_ms: p.initial_backoff_ms,
            max_backoff_ms: p.max_backoff_ms,
            multiplier: p.multiplier,
        }
    }
}

impl From<pb::RetryPolicy> for RetryPolicy {
    fn from(p: pb::RetryPolicy) -> Self {
        RetryPolicy {
            max_attempts: p.max_attempts,
            initial_backoff_ms: p.initial_backoff_ms,
            max_backoff_ms: p.max_backoff_ms,
            multiplier: p.multiplier,
        }
    }
}

/// A consumer group's offsets and lag, as the group-state answer (and the
/// overview's inventory) carries them.
pub fn group_state_to_pb(g: GroupState) -> pb::GroupStateResponse {
    pb::GroupStateResponse {
        group: g.group,
        partitions: g
            .partitions
            .into_iter()
            .map(|p| pb::GroupPartitionState {
                partition: p.partition,
                committed: p.committed,
                latest: p.latest,
                lag: p.lag,
            })
            .collect(),
    }
}

/// A subscription's request to the broker.
pub fn spec_to_pb(stream: String, s: SubscribeSpec) -> pb::SubscribeRequest {
    let (start, offset) = match s.start {
        StartFrom::Earliest => (pb::StartFrom::Earliest, 0),
        StartFrom::Latest => (pb::StartFrom::Latest, 0),
        StartFrom::Committed => (pb::StartFrom::Committed, 0),
        StartFrom::Offset(o) => (pb::StartFrom::Offset, o),
    };
    pb::SubscribeRequest { stream, partition: s.partition, start: start as i32, offset, group: s.group }
}

/// The subscription a broker request asks for; InvalidArgument when malformed.
pub fn spec_from_pb(r: &pb::SubscribeRequest) -> Result<SubscribeSpec, Error> {
    let start = match pb::StartFrom::try_from(r.start) {
        Ok(pb::StartFrom::Earliest) => StartFrom::Earliest,
        Ok(pb::StartFrom::Latest) => StartFrom::Latest,
        Ok(pb::StartFrom::Committed) => StartFrom::Committed,
        Ok(pb::StartFrom::Offset) => StartFrom::Offset(r.offset),
        Err(_) => return Err(Error::invalid(format!("unknown start position {}", r.start))),
    };
    Ok(SubscribeSpec { partition: r.partition, start, group: r.group.clone() })
}

impl From<KvEvent> for pb::KvEvent {
    fn from(e: KvEvent) -> Self {
        let op = match e.op {
            KvOp::Put => pb::KvOp::Put,
            KvOp::Delete => pb::KvOp::Delete,
            KvOp::Expire => pb::KvOp::Expire,
        };
        let cursor = Some(pb::WatchCursor { epoch: e.cursor.epoch, seq: e.cursor.seq });
        pb::KvEvent { op: op as i32, key: e.key, value: e.value, revision: e.revision, cursor }
    }
}

/// A watch event from its wire form; an error for an unknown op.
pub fn kv_event_from_pb(e: pb::KvEvent) -> Result<KvEvent, Error> {
    let op = match pb::KvOp::try_from(e.op) {
        Ok(pb::KvOp::Put) => KvOp::Put,
        Ok(pb::KvOp::Delete) => KvOp::Delete,
        Ok(pb::KvOp::Expire) => KvOp::Expire,
        _ => return Err(Error::Internal(format!("broker sent unknown KV op {}", e.op))),
    };
    let cursor = e.cursor.map(|c| WatchCursor { epoch: c.epoch, seq: c.seq }).unwrap_or_default();
    Ok(KvEvent { op, key: e.key, value: e.value, revision: e.revision, cursor })
}

/// The whole cause chain of an error: tonic's own Display says only
/// "transport error", the useful part is in the sources.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// Puts `authorization: Bearer <token>` on every request. Clones share the
/// token, so a login (identity session) changes it for every channel.
#[derive(Clone)]
pub struct TokenInterceptor {
    value: std::sync::Arc<std::sync::RwLock<Option<AsciiMetadataValue>>>,
}

fn bearer_value(token: Option<&str>) -> Result<Option<AsciiMetadataValue>> {
    match token {
        None => Ok(None),
        Some("") => Err(Error::invalid("option token: must not be empty")),
        Some(t) => Ok(Some(
            MetadataValue::try_from(format!("Bearer {t}"))
                .map_err(|_| Error::invalid("option token: must be printable ASCII"))?,
        )),
    }
}

impl TokenInterceptor {
    /// Sends `token` as the bearer token (None: none); InvalidArgument for a token that is not printable ASCII.
    pub fn new(token: Option<&str>) -> Result<TokenInterceptor> {
        Ok(TokenInterceptor { value: std::sync::Arc::new(std::sync::RwLock::new(bearer_value(token)?)) })
    }

    /// Sends `token` from now on (`None`: no token).
    pub fn set(&self, token: Option<&str>) -> Result<()> {
        let v = bearer_value(token)?;
        *self.value.write().unwrap() = v;
        Ok(())
    }
}

impl tonic::service::Interceptor for TokenInterceptor {
    fn call(&mut self, mut req: tonic::Request<()>) -> std::result::Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = self.value.read().unwrap().as_ref() {
            req.metadata_mut().insert(AUTH_KEY, v.clone());
        }
        Ok(req)
    }
}

// ---- KV transactions ----

/// Transaction ops in their wire form.
pub fn txn_ops_to_pb(ops: Vec<TxnOp>) -> Vec<pb::KvTxnOp> {
    use pb::kv_txn_op::Op;
    ops.into_iter()
        .map(|op| pb::KvTxnOp {
            op: Some(match op {
                TxnOp::Get { bucket, key } => Op::Get(pb::KvTxnGet { bucket, key }),
                TxnOp::List { bucket, prefix } => Op::List(pb::KvTxnList { bucket, prefix }),
                TxnOp::Put { bucket, key, value, ttl_ms } => Op::Put(pb::KvTxnPut { bucket, key, value, ttl_ms }),
                TxnOp::Delete { bucket, key } => Op::Delete(pb::KvTxnDelete { bucket, key }),
                TxnOp::Check { bucket, key, revision } => Op::Check(pb::KvTxnCheck { bucket, key, revision }),
            }),
        })
        .collect()
}

/// Transaction ops from their wire form; InvalidArgument when malformed.
pub fn txn_ops_from_pb(ops: Vec<pb::KvTxnOp>) -> Result<Vec<TxnOp>, Error> {
    use pb::kv_txn_op::Op;
    ops.into_iter()
        .enumerate()
        .map(|(i, op)| {
            Ok(match op.op {
                Some(Op::Get(g)) => TxnOp::Get { bucket: g.bucket, key: g.key },
                Some(Op::List(l)) => TxnOp::List { bucket: l.bucket, prefix: l.prefix },
                Some(Op::Put(p)) => TxnOp::Put { bucket: p.bucket, key: p.key, value: p.value, ttl_ms: p.ttl_ms },
                Some(Op::Delete(d)) => TxnOp::Delete { bucket: d.bucket, key: d.key },
                Some(Op::Check(c)) => TxnOp::Check { bucket: c.bucket, key: c.key, revision: c.revision },
                None => return Err(Error::invalid(format!("transaction op {i} is empty"))),
            })
        })
        .collect()
}

fn entry_to_pb(e: KvEntry) -> pb::KvTxnEntry {
    pb::KvTxnEntry { key: e.key, value: e.value, revision: e.revision }
}

fn entry_from_pb(e: pb::KvTxnEntry) -> KvEntry {
    KvEntry { key: e.key, value: e.value, revision: e.revision }
}

/// Transaction results in their wire form.
pub fn txn_results_to_pb(results: Vec<TxnResult>) -> Vec<pb::KvTxnResult> {
    use pb::kv_txn_result::Result as R;
    results
        .into_iter()
        .map(|r| pb::KvTxnResult {
            result: Some(match r {
                TxnResult::Get(Some(e)) => R::Get(entry_to_pb(e)),
                TxnResult::Get(None) => R::GetMissing(true),
                TxnResult::List(entries) => {
                    R::List(pb::KvTxnEntries { entries: entries.into_iter().map(entry_to_pb).collect() })
                }
                TxnResult::Put(rev) => R::PutRevision(rev),
                TxnResult::Delete(d) => R::Deleted(d),
                TxnResult::Check => R::Checked(true),
            }),
        })
        .collect()
}

/// Transaction results from their wire form.
pub fn txn_results_from_pb(results: Vec<pb::KvTxnResult>) -> Result<Vec<TxnResult>, Error> {
    use pb::kv_txn_result::Result as R;
    results
        .into_iter()
        .map(|r| {
            Ok(match r.result {
                Some(R::Get(e)) => TxnResult::Get(Some(entry_from_pb(e))),
                Some(R::GetMissing(_)) => TxnResult::Get(None),
                Some(R::List(l)) => TxnResult::List(l.entries.into_iter().map(entry_from_pb).collect()),
                Some(R::PutRevision(rev)) => TxnResult::Put(rev),
                Some(R::Deleted(d)) => TxnResult::Delete(d),
                Some(R::Checked(_)) => TxnResult::Check,
                None => return Err(Error::Internal("broker sent an empty transaction result".into())),
            })
        })
        .collect()
}
