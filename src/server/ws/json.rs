//! One session of the JSON WebSocket protocol (docs/WEBSOCKET.md): each
//! request becomes a call of the broker's gRPC services on an in-process
//! connection carrying the session's token, so the request gate, limits,
//! audit and metrics are gRPC's own. Subscriptions and watches push to the
//! client within a credit each subscription holds: a client that stops
//! reading stops its subscriptions, and the gRPC stream's flow control
//! stops the broker, so a slow browser cannot grow the broker's memory.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, Semaphore};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tonic::transport::Channel;

use super::{PipeConnector, WsShared};
use crate::error::Error;
use crate::server::metrics::OpenConn;
use crate::wire::{self, pb};

/// The server pings this often; a client silent for three periods is gone.
const HEARTBEAT: Duration = Duration::from_secs(15);
/// Requests of one session served at once; the next waits (back-pressure).
const MAX_IN_FLIGHT: usize = 64;
/// Outgoing messages queued for the socket; producers wait when it is full.
const OUT_QUEUE: usize = 64;
/// Messages a subscription may push before the client grants more credit,
/// unless the subscribe request asks for another window.
const DEFAULT_WINDOW: u64 = 256;
const MAX_WINDOW: u64 = 10_000;
/// Largest credit one grant may add (a typo must not disable the bound).
const MAX_GRANT: u64 = 1 << 20;

type Ws = WebSocketStream<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;
type Reply = std::result::Result<Value, Error>;

fn b64() -> &'static base64::engine::GeneralPurpose {
    &base64::engine::general_purpose::STANDARD
}

/// The error object of every failed request and ended subscription.
pub(crate) fn error_json(e: &Error) -> Value {
    json!({"code": e.status().name(), "status": e.code(), "message": e.message()})
}

struct Subscription {
    credit: Arc<Semaphore>,
    task: tokio::task::AbortHandle,
}

struct Session {
    streams: pb::streams_client::StreamsClient<Channel>,
    queues: pb::queues_client::QueuesClient<Channel>,
    kv: pb::kv_client::KvClient<Channel>,
    resources: pb::resources_client::ResourcesClient<Channel>,
    health: pb::health_client::HealthClient<Channel>,
    token: Mutex<Option<String>>,
    out: mpsc::Sender<Message>,
    subs: Mutex<HashMap<u64, Subscription>>,
    max_message: usize,
}

pub(super) async fn session(ws: Ws, peer: SocketAddr, token: Option<String>, shared: WsShared, open: Option<OpenConn>) {
    let _open = open;
    let channel = tonic::transport::Endpoint::from_static("http://flowmesh.ws")
        .connect_with_connector_lazy(PipeConnector { tunnels: shared.tunnels.clone(), peer });
    let max = shared.max_message;
    let (out, mut out_rx) = mpsc::channel::<Message>(OUT_QUEUE);
    let s = Arc::new(Session {
        streams: pb::streams_client::StreamsClient::new(channel.clone())
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
        queues: pb::queues_client::QueuesClient::new(channel.clone())
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
        kv: pb::kv_client::KvClient::new(channel.clone()).max_decoding_message_size(max).max_encoding_message_size(max),
        resources: pb::resources_client::ResourcesClient::new(channel.clone()),
        health: pb::health_client::HealthClient::new(channel),
        token: Mutex::new(token),
        out,
        subs: Mutex::new(HashMap::new()),
        max_message: max,
    });
    let (mut sink, mut stream) = ws.split();
    let writer = tokio::spawn(async move {
        let mut beat = tokio::time::interval(HEARTBEAT);
        beat.tick().await;
        loop {
            let msg = tokio::select! {
                m = out_rx.recv() => match m { Some(m) => m, None => break },
                _ = beat.tick() => Message::Ping(bytes::Bytes::from_static(b"fm")),
            };
            let close = matches!(msg, Message::Close(_));
            if sink.send(msg).await.is_err() || close {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut stopping = shared.stopping.clone();
    let stopped = async move {
        let _ = stopping.wait_for(|s| *s).await;
    };
    tokio::pin!(stopped);
    let mut last_seen = Instant::now();
    let mut check = tokio::time::interval(HEARTBEAT);
    let reason = loop {
        let frame = tokio::select! {
            _ = &mut stopped => break Some((CloseCode::Away, "the broker is shutting down")),
            _ = check.tick() => {
                if last_seen.elapsed() > HEARTBEAT * 3 {
                    break Some((CloseCode::Policy, "no frame from the client within three heartbeats"));
                }
                continue;
            }
            f = stream.next() => f,
        };
        last_seen = Instant::now();
        let text = match frame {
            None | Some(Ok(Message::Close(_))) => break None,
            Some(Err(e)) => {
                tracing::debug!(%peer, "WebSocket session: {e}");
                break Some((CloseCode::Size, "bad or oversized frame"));
            }
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Binary(_))) => {
                let e = Error::invalid("the JSON protocol takes text messages only (binary belongs to /grpc)");
                if s.out
                    .send(Message::text(json!({"id": null, "ok": false, "error": error_json(&e)}).to_string()))
                    .await
                    .is_err()
                {
                    break None;
                }
                continue;
            }
            Some(Ok(_)) => continue, // ping (answered by tungstenite), pong
        };
        let Ok(permit) = in_flight.clone().acquire_owned().await else { break None };
        let s = s.clone();
        tokio::spawn(async move {
            let reply = s.clone().handle(text.as_str()).await;
            let _ = s.out.send(Message::text(reply.to_string())).await;
            drop(permit);
        });
    };
    for (_, sub) in s.subs.lock().map(|mut m| std::mem::take(&mut *m)).unwrap_or_default() {
        sub.task.abort();
    }
    if let Some((code, why)) = reason {
        let _ = s.out.send(Message::Close(Some(CloseFrame { code, reason: why.into() }))).await;
    }
    drop(s);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
}

/// Field access on a request object, with errors that name the field.
struct Args<'a>(&'a Map<String, Value>);

impl<'a> Args<'a> {
    fn str(&self, name: &str) -> Result<String, Error> {
        match self.0.get(name) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(Error::invalid(format!("field {name:?} must be a string"))),
            None => Err(Error::invalid(format!("field {name:?} is required"))),
        }
    }
    fn opt_str(&self, name: &str) -> Result<Option<String>, Error> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.str(name).map(Some),
        }
    }
    fn str_or(&self, name: &str, default: &str) -> Result<String, Error> {
        Ok(self.opt_str(name)?.unwrap_or_else(|| default.to_owned()))
    }
    fn opt_u64(&self, name: &str) -> Result<Option<u64>, Error> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| Error::invalid(format!("field {name:?} must be a non-negative integer"))),
        }
    }
    fn u64_or(&self, name: &str, default: u64) -> Result<u64, Error> {
        Ok(self.opt_u64(name)?.unwrap_or(default))
    }
    fn u64(&self, name: &str) -> Result<u64, Error> {
        self.opt_u64(name)?.ok_or_else(|| Error::invalid(format!("field {name:?} is required")))
    }
    fn u32_or(&self, name: &str, default: u32) -> Result<u32, Error> {
        let v = self.u64_or(name, default as u64)?;
        u32::try_from(v).map_err(|_| Error::invalid(format!("field {name:?} is too large")))
    }
    fn opt_u32(&self, name: &str) -> Result<Option<u32>, Error> {
        match self.opt_u64(name)? {
            None => Ok(None),
            Some(v) => u32::try_from(v).map(Some).map_err(|_| Error::invalid(format!("field {name:?} is too large"))),
        }
    }
    fn i32_or(&self, name: &str, default: i32) -> Result<i32, Error> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_i64()
                .and_then(|v| i32::try_from(v).ok())
                .ok_or_else(|| Error::invalid(format!("field {name:?} must be a 32-bit integer"))),
        }
    }
    fn bytes(&self, name: &str) -> Result<bytes::Bytes, Error> {
        self.opt_bytes(name)?.ok_or_else(|| Error::invalid(format!("field {name:?} is required")))
    }
    fn opt_bytes(&self, name: &str) -> Result<Option<bytes::Bytes>, Error> {
        match self.opt_str(name)? {
            None => Ok(None),
            Some(s) => b64()
                .decode(s.as_bytes())
                .map(|b| Some(b.into()))
                .map_err(|e| Error::invalid(format!("field {name:?} must be base64: {e}"))),
        }
    }
    fn headers(&self) -> Result<Vec<pb::Header>, Error> {
        let Some(v) = self.0.get("headers").filter(|v| !v.is_null()) else { return Ok(Vec::new()) };
        let bad = || Error::invalid("field \"headers\" must be a list of [name, value] string pairs");
        let list = v.as_array().ok_or_else(bad)?;
        list.iter()
            .map(|pair| match pair.as_array().map(|p| p.as_slice()) {
                Some([Value::String(k), Value::String(v)]) => Ok(pb::Header { key: k.clone(), value: v.clone() }),
                _ => Err(bad()),
            })
            .collect()
    }
}

fn headers_json(h: &[pb::Header]) -> Value {
    Value::Array(h.iter().map(|h| json!([h.key, h.value])).collect())
}

fn message_json(m: &pb::Message) -> Value {
    json!({
        "stream": m.stream, "partition": m.partition, "offset": m.offset, "timestamp_ms": m.timestamp_ms,
        "key": m.key.as_ref().map(|k| b64().encode(k)), "payload": b64().encode(&m.payload),
        "headers": headers_json(&m.headers),
    })
}

fn job_json(j: &pb::Job) -> Value {
    json!({
        "id": j.id, "attempt": j.attempt, "priority": j.priority, "payload": b64().encode(&j.payload),
        "headers": headers_json(&j.headers), "enqueued_ms": j.enqueued_ms,
    })
}

fn kv_event_json(e: &pb::KvEvent) -> Value {
    let op = match pb::KvOp::try_from(e.op) {
        Ok(pb::KvOp::Put) => "put",
        Ok(pb::KvOp::Delete) => "delete",
        Ok(pb::KvOp::Expire) => "expire",
        _ => "unknown",
    };
    json!({
        "op": op, "key": e.key, "value": b64().encode(&e.value), "revision": e.revision,
        "cursor": e.cursor.as_ref().map(|c| json!({"epoch": c.epoch, "seq": c.seq})),
    })
}

fn record(v: &Value) -> Result<pb::Record, Error> {
    let obj = v.as_object().ok_or_else(|| Error::invalid("each record must be an object"))?;
    let a = Args(obj);
    Ok(pb::Record {
        key: a.opt_bytes("key")?,
        payload: a.bytes("payload")?,
        headers: a.headers()?,
        msg_id: a.opt_str("msg_id")?,
    })
}

fn kind(a: &Args) -> Result<pb::ResourceKind, Error> {
    match a.str("kind")?.as_str() {
        "stream" => Ok(pb::ResourceKind::Stream),
        "queue" => Ok(pb::ResourceKind::Queue),
        "bucket" => Ok(pb::ResourceKind::Bucket),
        other => Err(Error::invalid(format!("kind {other:?}: expected stream, queue or bucket"))),
    }
}

fn status(s: tonic::Status) -> Error {
    wire::from_status(&s)
}

impl Session {
    fn request<T>(&self, msg: T) -> Result<tonic::Request<T>, Error> {
        let mut req = tonic::Request::new(msg);
        if let Some(token) = self.token.lock().ok().and_then(|t| t.clone()) {
            let v = format!("Bearer {token}")
                .parse()
                .map_err(|_| Error::Unauthorized("the token holds characters not allowed in a header".into()))?;
            req.metadata_mut().insert(wire::AUTH_KEY, v);
        }
        Ok(req)
    }

    /// Answers one text message: `{"id": …, "ok": true, …}` or an error.
    async fn handle(self: Arc<Self>, text: &str) -> Value {
        let parsed: Result<Map<String, Value>, Error> = serde_json::from_str::<Value>(text)
            .map_err(|e| Error::invalid(format!("not JSON: {e}")))
            .and_then(|v| match v {
                Value::Object(m) => Ok(m),
                _ => Err(Error::invalid("a request must be a JSON object")),
            });
        let (id, result) = match parsed {
            Err(e) => (Value::Null, Err(e)),
            Ok(m) => {
                let id = m.get("id").cloned().unwrap_or(Value::Null);
                let r = match (id.as_u64(), m.get("op").and_then(|o| o.as_str())) {
                    (None, _) => Err(Error::invalid("field \"id\" (a non-negative integer) is required")),
                    (_, None) => Err(Error::invalid("field \"op\" (a string) is required")),
                    (Some(n), Some(op)) => self.dispatch(n, op, &Args(&m)).await,
                };
                (id, r)
            }
        };
        match result {
            Ok(Value::Object(mut fields)) => {
                fields.insert("id".into(), id);
                fields.insert("ok".into(), Value::Bool(true));
                Value::Object(fields)
            }
            Ok(other) => json!({"id": id, "ok": true, "result": other}),
            Err(e) => json!({"id": id, "ok": false, "error": error_json(&e)}),
        }
    }

    async fn dispatch(self: &Arc<Self>, id: u64, op: &str, a: &Args<'_>) -> Reply {
        match op {
            "ping" => Ok(json!({})),
            "auth" => {
                *self.token.lock().map_err(|_| Error::Internal("session lock".into()))? = a.opt_str("token")?;
                Ok(json!({}))
            }
            "health" => {
                let r = self.health.clone().check(self.request(pb::CheckRequest::default())?).await;
                r.map_err(status).map(|_| json!({}))
            }
            // Streams
            "create_stream" => {
                let config = pb::StreamConfig {
                    partitions: a.u32_or("partitions", 1)?,
                    max_age_ms: a.u64_or("max_age_ms", 0)?,
                    max_bytes: a.u64_or("max_bytes", 0)?,
                    max_messages: a.u64_or("max_messages", 0)?,
                    tier: a.str_or("tier", "")?,
                };
                let req = pb::CreateStreamRequest { stream: a.str("stream")?, config: Some(config) };
                self.streams.clone().create_stream(self.request(req)?).await.map_err(status)?;
                Ok(json!({}))
            }
            "publish" => {
                let records = match a.0.get("records") {
                    Some(Value::Array(list)) if !list.is_empty() => {
                        list.iter().map(record).collect::<Result<Vec<_>, _>>()?
                    }
                    _ => return Err(Error::invalid("field \"records\" must be a non-empty list")),
                };
                // "tier": persistent (default), memory or replicated; a
                // memory-tier publish is answered once fanned out (no positions).
                let tier = a.opt_str("tier")?.unwrap_or_default();
                let require_ack = tier == "memory";
                let req = pb::PublishRequest { id: 1, stream: a.str("stream")?, records, tier, require_ack };
                let mut responses = self
                    .streams
                    .clone()
                    .publish(self.request(futures::stream::iter([req]))?)
                    .await
                    .map_err(status)?
                    .into_inner();
                let r = responses
                    .message()
                    .await
                    .map_err(status)?
                    .ok_or_else(|| Error::Disconnected("the publish stream ended before the answer".into()))?;
                if let Some(e) = r.error {
                    return Err(Error::from_code(e.code, e.message));
                }
                let positions: Vec<Value> =
                    r.positions.iter().map(|p| json!({"partition": p.partition, "offset": p.offset})).collect();
                Ok(json!({ "positions": positions }))
            }
            "read" => {
                let req = pb::ReadRequest {
                    stream: a.str("stream")?,
                    partition: a.u32_or("partition", 0)?,
                    offset: a.u64_or("offset", 0)?,
                    max_messages: a.u32_or("max", 100)?,
                };
                let r = self.streams.clone().read(self.request(req)?).await.map_err(status)?.into_inner();
                Ok(json!({"messages": r.messages.iter().map(message_json).collect::<Vec<_>>()}))
            }
            "stream_info" => {
                let req = pb::StreamInfoRequest { stream: a.str("stream")? };
                let r = self.streams.clone().info(self.request(req)?).await.map_err(status)?.into_inner();
                let c = r.config.unwrap_or_default();
                let parts: Vec<Value> = r
                    .partitions
                    .iter()
                    .map(|p| json!({"partition": p.partition, "earliest": p.earliest, "latest": p.latest}))
                    .collect();
                Ok(json!({
                    "config": {"partitions": c.partitions, "max_age_ms": c.max_age_ms, "max_bytes": c.max_bytes,
                               "max_messages": c.max_messages, "tier": c.tier},
                    "partitions": parts,
                }))
            }
            "commit" => {
                let req = pb::CommitOffsetRequest {
                    stream: a.str("stream")?,
                    group: a.str("group")?,
                    partition: a.u32_or("partition", 0)?,
                    offset: a.u64("offset")?,
                };
                self.streams.clone().commit_offset(self.request(req)?).await.map_err(status)?;
                Ok(json!({}))
            }
            "get_offset" => {
                let req = pb::GetOffsetRequest {
                    stream: a.str("stream")?,
                    group: a.str("group")?,
                    partition: a.u32_or("partition", 0)?,
                };
                let r = self.streams.clone().get_offset(self.request(req)?).await.map_err(status)?.into_inner();
                Ok(json!({"offset": r.offset}))
            }
            "group_state" => {
                let req = pb::GroupStateRequest { stream: a.str("stream")?, group: a.str("group")? };
                let r = self.streams.clone().group_state(self.request(req)?).await.map_err(status)?.into_inner();
                let parts: Vec<Value> = r
                    .partitions
                    .iter()
                    .map(|p| json!({"partition": p.partition, "committed": p.committed, "latest": p.latest, "lag": p.lag}))
                    .collect();
                Ok(json!({"group": r.group, "partitions": parts}))
            }
            "subscribe" => self.subscribe(id, a).await,
            "watch" => self.watch(id, a).await,
            "credit" => {
                let sub = a.u64("sub")?;
                let n = a.u64("n")?.min(MAX_GRANT);
                let subs = self.subs.lock().map_err(|_| Error::Internal("session lock".into()))?;
                let s = subs.get(&sub).ok_or_else(|| Error::NotFound(format!("no subscription {sub}")))?;
                s.credit.add_permits(n as usize);
                Ok(json!({}))
            }
            "unsubscribe" => {
                let sub = a.u64("sub")?;
                let removed = self.subs.lock().map_err(|_| Error::Internal("session lock".into()))?.remove(&sub);
                let s = removed.ok_or_else(|| Error::NotFound(format!("no subscription {sub}")))?;
                s.task.abort();
                Ok(json!({}))
            }
            // Queues
            "enqueue" => {
                let rec = pb::Record {
                    key: None,
                    payload: a.bytes("payload")?,
                    headers: a.headers()?,
                    msg_id: a.opt_str("msg_id")?,
                };
                let req = pb::EnqueueRequest {
                    queue: a.str("queue")?,
                    record: Some(rec),
                    delay_ms: a.u64_or("delay_ms", 0)?,
                    priority: a.i32_or("priority", 0)?,
                };
                let r = self.queues.clone().enqueue(self.request(req)?).await.map_err(status)?.into_inner();
                Ok(json!({"job_id": r.job_id}))
            }
            "reserve" => {
                let req = pb::ReserveRequest {
                    queue: a.str("queue")?,
                    max_jobs: a.u32_or("max", 1)?,
                    visibility_ms: a.u64_or("visibility_ms", 30_000)?,
                    wait_ms: a.u64_or("wait_ms", 0)?,
                };
                let r = self.queues.clone().reserve(self.request(req)?).await.map_err(status)?.into_inner();
                Ok(json!({"jobs": r.jobs.iter().map(job_json).collect::<Vec<_>>()}))
            }
            "ack" => {
                let req = pb::AckRequest { queue: a.str("queue")?, job_id: a.u64("job_id")? };
                self.queues.clone().ack(self.request(req)?).await.map_err(status)?;
                Ok(json!({}))
            }
            "nack" => {
                let req = pb::NackRequest {
                    queue: a.str("queue")?,
                    job_id: a.u64("job_id")?,
                    delay_ms: a.u64_or("delay_ms", 0)?,
                };
                self.queues.clone().nack(self.request(req)?).await.map_err(status)?;
                Ok(json!({}))
            }
            "extend" => {
                let req = pb::ExtendRequest {
                    queue: a.str("queue")?,
                    job_id: a.u64("job_id")?,
                    visibility_ms: a.u64("visibility_ms")?,
                };
                self.queues.clone().extend(self.request(req)?).await.map_err(status)?;
                Ok(json!({}))
            }
            "queue_stats" => {
                let req = pb::StatsRequest { queue: a.str("queue")? };
                let r = self.queues.clone().stats(self.request(req)?).await.map_err(status)?.into_inner();
                Ok(json!({"pending": r.pending, "in_flight": r.in_flight, "delayed": r.delayed, "dead": r.dead}))
            }
            "set_retry_policy" => {
                let multiplier = match a.0.get("multiplier") {
                    None | Some(Value::Null) => 2.0,
                    Some(v) => v.as_f64().ok_or_else(|| Error::invalid("field \"multiplier\" must be a number"))?,
                };
                let policy = pb::RetryPolicy {
                    max_attempts: a.u32_or("max_attempts", 0)?,
                    initial_backoff_ms: a.u64_or("initial_backoff_ms", 0)?,
                    max_backoff_ms: a.u64_or("max_backoff_ms", 0)?,
                    multiplier,
                };
                let req = pb::SetRetryPolicyRequest { queue: a.str("queue")?, policy: Some(policy) };
                self.queues.clone().set_retry_policy(self.request(req)?).await.map_err(status)?;
                Ok(json!({}))
            }
            "get_retry_policy" => {
                let req = pb::GetRetryPolicyRequest { queue: a.str("queue")? };
                let r = self.queues.clone().get_retry_policy(self.request(req)?).await.map_err(status)?.into_inner();
                let p = r.policy.unwrap_or_default();
                Ok(json!({"max_attempts": p.max_attempts, "initial_backoff_ms": p.initial_backoff_ms,
                          "max_backoff_ms": p.max_backoff_ms, "multiplier": p.multiplier}))
            }
            "dlq_list" => {
                let req = pb::DlqListRequest { queue: a.str("queue")?, max: a.u32_or("max", 0)? };
                let r = self.queues.clone().dlq_list(self.request(req)?).await.map_err(status)?.into_inner();
                Ok(json!({"jobs": r.jobs.iter().map(job_json).collect::<Vec<_>>()}))
            }
            "dlq_replay" => {
                let req = pb::DlqReplayRequest { queue: a.str("queue")?, job_id: a.u64("job_id")? };
                self.queues.clone().dlq_replay(self.request(req)?).await.map_err(status)?;
                Ok(json!({}))
            }
            "dlq_replay_all" => {
                let filter = match (a.opt_str("header")?, a.opt_str("value")?) {
                    (Some(key), Some(value)) => Some(pb::Header { key, value }),
                    (None, None) => None,
                    _ => return Err(Error::invalid("fields \"header\" and \"value\" go together")),
                };
                let req = pb::DlqReplayAllRequest { queue: a.str("queue")?, filter };
                let r = self.queues.clone().dlq_replay_all(self.request(req)?).await.map_err(status)?.into_inner();
                Ok(json!({"replayed": r.replayed}))
            }
            // KV
            "kv_set" => {
                let req = pb::KvSetRequest {
                    bucket: a.str("bucket")?,
                    key: a.str("key")?,
                    value: a.bytes("value")?,
                    ttl_ms: a.u64_or("ttl_ms", 0)?,
                    expected_revision: a.opt_u64("expected_revision")?,
                };
                let r = self.kv.clone().set(self.request(req)?).await.map_err(status)?.into_inner();
                Ok(json!({"revision": r.revision}))
            }
            "kv_get" => {
                let req = pb::KvGetRequest { bucket: a.str("bucket")?, key: a.str("key")? };
                let r = self.kv.clone().get(self.request(req)?).await.map_err(status)?.into_inner();
                Ok(json!({"value": b64().encode(&r.value), "revision": r.revision}))
            }
            "kv_delete" => {
                let req = pb::KvDeleteRequest { bucket: a.str("bucket")?, key: a.str("key")? };
                let r = self.kv.clone().delete(self.request(req)?).await.map_err(status)?.into_inner();
                Ok(json!({"deleted": r.deleted}))
            }
            "kv_exists" => {
                let req = pb::KvExistsRequest { bucket: a.str("bucket")?, key: a.str("key")? };
                let r = self.kv.clone().exists(self.request(req)?).await.map_err(status)?.into_inner();
                Ok(json!({"exists": r.exists}))
            }
            "kv_keys" => {
                let req = pb::KvKeysRequest { bucket: a.str("bucket")?, prefix: a.str_or("prefix", "")? };
                let r = self.kv.clone().keys(self.request(req)?).await.map_err(status)?.into_inner();
                Ok(json!({"keys": r.keys}))
            }
            // Resources
            "list" => {
                let req = pb::ListResourcesRequest { kind: kind(a)? as i32, prefix: a.str_or("prefix", "")? };
                let r = self.resources.clone().list(self.request(req)?).await.map_err(status)?.into_inner();
                Ok(json!({"names": r.names}))
            }
            "delete" => {
                let req = pb::DeleteResourceRequest { kind: kind(a)? as i32, name: a.str("name")? };
                self.resources.clone().delete(self.request(req)?).await.map_err(status)?;
                Ok(json!({}))
            }
            "purge" => {
                let req = pb::PurgeResourceRequest { kind: kind(a)? as i32, name: a.str("name")? };
                let r = self.resources.clone().purge(self.request(req)?).await.map_err(status)?.into_inner();
                Ok(json!({"removed": r.removed}))
            }
            other => Err(Error::invalid(format!("unknown op {other:?}"))),
        }
    }

    /// The credit window a subscribe or watch asks for.
    fn window(a: &Args) -> Result<u64, Error> {
        let w = a.u64_or("window", DEFAULT_WINDOW)?;
        if w == 0 || w > MAX_WINDOW {
            return Err(Error::invalid(format!("field \"window\" must be 1..={MAX_WINDOW}")));
        }
        Ok(w)
    }

    /// Starts a subscription's pump under the lock, so its end (which
    /// removes it) cannot run before it is registered.
    fn start<F>(&self, id: u64, credit: Arc<Semaphore>, pump: F) -> Result<(), Error>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let mut subs = self.subs.lock().map_err(|_| Error::Internal("session lock".into()))?;
        if subs.contains_key(&id) {
            return Err(Error::invalid(format!("subscription {id} is already open: use a fresh request id")));
        }
        let task = tokio::spawn(pump).abort_handle();
        subs.insert(id, Subscription { credit, task });
        Ok(())
    }

    async fn subscribe(self: &Arc<Self>, id: u64, a: &Args<'_>) -> Reply {
        let window = Self::window(a)?;
        let start = match a.str_or("start", "earliest")?.as_str() {
            "earliest" => pb::StartFrom::Earliest,
            "latest" => pb::StartFrom::Latest,
            "committed" => pb::StartFrom::Committed,
            "offset" => pb::StartFrom::Offset,
            other => {
                return Err(Error::invalid(format!("start {other:?}: expected earliest, latest, committed or offset")))
            }
        };
        let req = pb::SubscribeRequest {
            stream: a.str("stream")?,
            partition: a.opt_u32("partition")?,
            start: start as i32,
            offset: a.u64_or("offset", 0)?,
            group: a.opt_str("group")?,
        };
        let mut messages = self.streams.clone().subscribe(self.request(req)?).await.map_err(status)?.into_inner();
        let credit = Arc::new(Semaphore::new(window as usize));
        let (me, gate) = (self.clone(), credit.clone());
        let max_push = self.max_message;
        self.start(id, credit, async move {
            let end = loop {
                match messages.message().await {
                    Ok(Some(batch)) => {
                        let items: Vec<Value> = batch.messages.iter().map(message_json).collect();
                        if !me.push(id, "messages", items, &gate, max_push).await {
                            return;
                        }
                    }
                    Ok(None) => break None,
                    Err(e) => break Some(status(e)),
                }
            };
            me.end(id, end).await;
        })?;
        Ok(json!({"sub": id, "window": window}))
    }

    async fn watch(self: &Arc<Self>, id: u64, a: &Args<'_>) -> Reply {
        let window = Self::window(a)?;
        let resume_after = match a.0.get("resume_after") {
            None | Some(Value::Null) => None,
            Some(Value::Object(c)) => {
                let c = Args(c);
                Some(pb::WatchCursor { epoch: c.u64("epoch")?, seq: c.u64("seq")? })
            }
            Some(_) => return Err(Error::invalid("field \"resume_after\" must be {\"epoch\": n, \"seq\": n}")),
        };
        let req = pb::KvWatchRequest { bucket: a.str("bucket")?, prefix: a.str_or("prefix", "")?, resume_after };
        let mut events = self.kv.clone().watch(self.request(req)?).await.map_err(status)?.into_inner();
        // The broker's first event marks where the watch starts: its cursor
        // goes in the reply, so a client cut off before any change resumes exactly.
        let start = match events.message().await.map_err(status)? {
            Some(m) if m.op == pb::KvOp::Unspecified as i32 => m.cursor,
            _ => return Err(Error::Internal("the watch did not start with its cursor".into())),
        };
        let credit = Arc::new(Semaphore::new(window as usize));
        let (me, gate) = (self.clone(), credit.clone());
        let max_push = self.max_message;
        self.start(id, credit, async move {
            let end = loop {
                match events.message().await {
                    Ok(Some(e)) => {
                        if !me.push(id, "events", vec![kv_event_json(&e)], &gate, max_push).await {
                            return;
                        }
                    }
                    Ok(None) => break None,
                    Err(e) => break Some(status(e)),
                }
            };
            me.end(id, end).await;
        })?;
        let cursor = start.map(|c| json!({"epoch": c.epoch, "seq": c.seq}));
        Ok(json!({"sub": id, "window": window, "cursor": cursor}))
    }

    /// Pushes `items` in pieces the subscription's credit allows, waiting
    /// for grants; false once the session is gone.
    async fn push(&self, sub: u64, field: &str, items: Vec<Value>, credit: &Semaphore, max_bytes: usize) -> bool {
        let mut items = items.into_iter().peekable();
        while items.peek().is_some() {
            // Wait for at least one unit of credit, then take what is there.
            let Ok(first) = credit.acquire().await else { return false };
            first.forget();
            let extra = credit.available_permits();
            let mut piece = Vec::new();
            let mut size = 0;
            piece.extend(items.next());
            while piece.len() < extra + 1 && size < max_bytes / 2 {
                match items.next() {
                    Some(v) => {
                        size += v.to_string().len();
                        piece.push(v);
                    }
                    None => break,
                }
            }
            if piece.len() > 1 {
                match credit.try_acquire_many(piece.len() as u32 - 1) {
                    Ok(p) => p.forget(),
                    Err(_) => return false,
                }
            }
            let msg = json!({"sub": sub, "push": field, field: piece});
            if self.out.send(Message::text(msg.to_string())).await.is_err() {
                return false;
            }
        }
        true
    }

    /// The last push of a subscription: why it ended (null = the broker ended it cleanly).
    async fn end(&self, sub: u64, e: Option<Error>) {
        if let Ok(mut subs) = self.subs.lock() {
            subs.remove(&sub);
        }
        let msg = json!({"sub": sub, "push": "end", "error": e.as_ref().map(error_json)});
        let _ = self.out.send(Message::text(msg.to_string())).await;
    }
}
