//! The JetStream API as flowmesh uses it: JSON requests with errors mapped
//! onto flowmesh errors, stream creation with the exact config we want, raw
//! message reads, and the headers flowmesh keeps on every message.

use std::time::Duration;

use async_nats::jetstream;
use async_nats::HeaderMap;
use base64::Engine as _;
use bytes::Bytes;
use serde_json::{json, Value};

use crate::error::{Error, Result};

/// Record key (base64).
pub const H_KEY: &str = "Fm-Key";
/// Record headers: base64 of a JSON list of `[name, value]` pairs (order and
/// any characters kept, unlike NATS headers).
pub const H_HEADERS: &str = "Fm-Hdr";
/// Queue job id, priority and enqueue time (ms).
pub const H_JOB: &str = "Fm-Job";
pub const H_PRIORITY: &str = "Fm-Prio";
pub const H_ENQUEUED: &str = "Fm-Enq";
/// KV entry deadline (unix ms) for millisecond TTLs.
pub const H_DEADLINE: &str = "Fm-Deadline";
/// NATS KV's delete marker.
pub const H_KV_OP: &str = "KV-Operation";

/// A record's key and headers.
pub type RecordMeta = (Option<Bytes>, Vec<(String, String)>);

/// A message as stored in a stream, whichever way it was read.
#[derive(Debug, Clone)]
pub struct RawMsg {
    pub subject: String,
    pub seq: u64,
    pub headers: Vec<(String, String)>,
    pub payload: Bytes,
    pub time_ms: i64,
}

impl RawMsg {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().rev().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn header_u64(&self, name: &str) -> Option<u64> {
        self.header(name).and_then(|v| v.trim().parse().ok())
    }

    pub fn from_js(m: &jetstream::Message) -> Result<RawMsg> {
        let info = m.info().map_err(|e| Error::Internal(format!("JetStream message without metadata: {e}")))?;
        Ok(RawMsg {
            subject: m.subject.to_string(),
            seq: info.stream_sequence,
            headers: m.headers.as_ref().map(header_pairs).unwrap_or_default(),
            payload: m.payload.clone(),
            time_ms: (info.published.unix_timestamp_nanos() / 1_000_000) as i64,
        })
    }

    /// A core NATS message (the memory tier: no stream, no sequence).
    pub fn from_core(m: &async_nats::Message) -> RawMsg {
        RawMsg {
            subject: m.subject.to_string(),
            seq: 0,
            headers: m.headers.as_ref().map(header_pairs).unwrap_or_default(),
            payload: m.payload.clone(),
            time_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64),
        }
    }

    /// Record key and headers carried in flowmesh headers.
    pub fn record_meta(&self) -> Result<RecordMeta> {
        let key = match self.header(H_KEY) {
            Some(k) => Some(Bytes::from(b64(k)?)),
            None => None,
        };
        let headers = match self.header(H_HEADERS) {
            Some(h) => serde_json::from_slice(&b64(h)?)
                .map_err(|e| Error::Internal(format!("damaged {H_HEADERS} header: {e}")))?,
            None => Vec::new(),
        };
        Ok((key, headers))
    }
}

fn b64(s: &str) -> Result<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| Error::Internal(format!("damaged flowmesh header: {e}")))
}

pub fn header_pairs(h: &HeaderMap) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (k, vs) in h.iter() {
        for v in vs {
            out.push((k.to_string(), v.as_str().to_owned()));
        }
    }
    out
}

/// Adds a record's key and headers to `h`.
pub fn put_record_meta(h: &mut HeaderMap, key: Option<&Bytes>, headers: &[(String, String)]) {
    let enc = &base64::engine::general_purpose::STANDARD;
    if let Some(k) = key {
        h.insert(H_KEY, enc.encode(k).as_str());
    }
    if !headers.is_empty() {
        let json = serde_json::to_vec(headers).expect("headers serialize");
        h.insert(H_HEADERS, enc.encode(json).as_str());
    }
}

/// Parses a raw `NATS/1.0` header block (as in STREAM.MSG.GET answers).
fn parse_header_block(raw: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(raw);
    let mut out = Vec::new();
    for line in text.split("\r\n").skip(1) {
        if let Some((k, v)) = line.split_once(':') {
            out.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    out
}

/// Maps a JetStream API error object onto a flowmesh error.
pub fn api_error(err: &Value, what: &str) -> Error {
    let code = err.get("err_code").and_then(Value::as_u64).unwrap_or(0);
    let status = err.get("code").and_then(Value::as_u64).unwrap_or(0);
    let desc = err.get("description").and_then(Value::as_str).unwrap_or("error");
    let msg = format!("{what}: {desc} (JetStream error {code})");
    match code {
        10059 | 10037 | 10014 => Error::NotFound(msg),
        10058 | 10013 => Error::AlreadyExists(msg),
        10071 | 10164 | 10070 => Error::Conflict(msg),
        10054 | 10097 => Error::TooLarge(msg),
        _ if status == 503 => Error::Unavailable(msg),
        _ if status == 404 => Error::NotFound(msg),
        _ => Error::Internal(msg),
    }
}

/// Maps a client-side failure (no answer, link down) onto a flowmesh error.
pub fn link_error(what: &str, e: impl std::fmt::Display) -> Error {
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    if lower.contains("timed out") || lower.contains("timeout") {
        Error::Timeout(format!("{what}: {text}"))
    } else if lower.contains("payload") && (lower.contains("large") || lower.contains("exceed")) {
        Error::TooLarge(format!("{what}: {text}"))
    } else if lower.contains("no responders") {
        Error::Unavailable(format!("{what}: JetStream did not answer (no quorum or not enabled): {text}"))
    } else {
        Error::Unavailable(format!("{what}: {text}"))
    }
}

/// The JetStream context plus the engine-wide settings every module needs.
#[derive(Clone)]
pub struct Js {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    /// Replicas of every stream created.
    pub replicas: usize,
    /// `$JS.API` or `$JS.<domain>.API`, for requests made without the context.
    pub api_prefix: String,
    pub timeout: Duration,
}

impl Js {
    /// A JetStream API call (`subject` without the `$JS.API.` prefix).
    pub async fn call(&self, subject: &str, body: &Value, what: &str) -> Result<Value> {
        let v: Value = self.js.request(subject.to_owned(), body).await.map_err(|e| link_error(what, e))?;
        match v.get("error") {
            Some(err) => Err(api_error(err, what)),
            None => Ok(v),
        }
    }

    /// Creates a stream; Ok when it exists with the same config. Returns the
    /// stream info (existing or new).
    pub async fn create_stream(&self, mut config: Value) -> Result<Value> {
        let name = config["name"].as_str().expect("stream name").to_owned();
        config["num_replicas"] = json!(self.replicas);
        let what = format!("create stream {name}");
        // Creating is idempotent: a cluster slow to answer is asked again.
        let mut tries = 0;
        loop {
            tries += 1;
            match self.call(&format!("STREAM.CREATE.{name}"), &config, &what).await {
                Err(Error::Timeout(_)) | Err(Error::Unavailable(_)) if tries < 3 => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                r => return r,
            }
        }
    }

    /// The configs of every stream with a subject matching `subject`
    /// (STREAM.LIST, paged).
    pub async fn list_configs(&self, subject: &str) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        loop {
            let v = self.call("STREAM.LIST", &json!({"subject": subject, "offset": out.len()}), "list streams").await?;
            let page = v["streams"].as_array().cloned().unwrap_or_default();
            let n = page.len();
            out.extend(page.into_iter().map(|s| s["config"].clone()));
            if n == 0 || out.len() as u64 >= v["total"].as_u64().unwrap_or(0) {
                return Ok(out);
            }
        }
    }

    /// Deletes a stream; false when there was none.
    pub async fn delete_stream(&self, name: &str) -> Result<bool> {
        match self.call(&format!("STREAM.DELETE.{name}"), &json!({}), &format!("delete stream {name}")).await {
            Ok(_) => Ok(true),
            Err(Error::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Purges a stream (`body` may hold a subject `filter`); returns how
    /// many messages went. Sequences go on from where they were.
    pub async fn purge(&self, name: &str, body: &Value) -> Result<u64> {
        let v = self.call(&format!("STREAM.PURGE.{name}"), body, &format!("purge stream {name}")).await?;
        Ok(v["purged"].as_u64().unwrap_or(0))
    }

    /// A subscription to the server's advisory that stream `name` was
    /// deleted, so feeds on it can end instead of waiting forever.
    pub async fn deleted_advisory(&self, name: &str) -> Result<async_nats::Subscriber> {
        self.client
            .subscribe(format!("$JS.EVENT.ADVISORY.STREAM.DELETED.{name}"))
            .await
            .map_err(|e| link_error(&format!("watch stream {name}"), e))
    }

    /// The last message of every subject matching `subjects` (exact or
    /// wildcards) in one read the server isolates from writes (`DIRECT.GET`
    /// with `multi_last`), and the stream sequence it is as of. At most 1024
    /// messages. On a replicated stream a follower may answer: an answer
    /// older than the leader's last sequence before the read is asked again,
    /// so the read sees every write acknowledged before it.
    /// When nothing matches, the answer is as of the leader's sequence
    /// before the read (a lagging follower's "nothing" is believed: a commit
    /// based on it still fails its checks, a read-only one may be stale).
    pub async fn multi_last(&self, stream: &str, subjects: &[String]) -> Result<(Vec<RawMsg>, u64)> {
        let what = format!("read stream {stream}");
        // The stream's last sequence before the read: what an answer with
        // no message at all is as of (nothing matched then either).
        let floor = self.stream_info(stream).await?["state"]["last_seq"].as_u64().unwrap_or(0);
        for _ in 0..50 {
            let (msgs, upto) = match self.multi_last_once(stream, subjects, &what).await {
                Err(Error::NotFound(_)) => (Vec::new(), floor),
                r => r?,
            };
            if upto >= floor {
                return Ok((msgs, upto));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(Error::Unavailable(format!("{what}: no replica caught up with the stream's leader")))
    }

    async fn multi_last_once(&self, stream: &str, subjects: &[String], what: &str) -> Result<(Vec<RawMsg>, u64)> {
        use futures::StreamExt;
        let inbox = self.client.new_inbox();
        let mut sub = self.client.subscribe(inbox.clone()).await.map_err(|e| link_error(what, e))?;
        let body = serde_json::to_vec(&json!({"multi_last": subjects})).expect("request serializes");
        self.client
            .publish_with_reply(format!("{}.DIRECT.GET.{stream}", self.api_prefix), inbox, body.into())
            .await
            .map_err(|e| link_error(what, e))?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut out = Vec::new();
        loop {
            let m = tokio::time::timeout_at(deadline, sub.next())
                .await
                .map_err(|_| Error::Timeout(format!("{what}: no answer within {} ms", self.timeout.as_millis())))?
                .ok_or_else(|| Error::Unavailable(format!("{what}: the connection closed")))?;
            let headers = m.headers.as_ref().map(header_pairs).unwrap_or_default();
            let get =
                |name: &str| headers.iter().rev().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone());
            match m.status.map(|s| s.as_u16()) {
                Some(204) => {
                    let upto = get("Nats-UpTo-Sequence").and_then(|v| v.parse().ok()).unwrap_or(0);
                    return Ok((out, upto));
                }
                Some(413) => {
                    return Err(Error::TooLarge(format!(
                        "{what}: a transaction on nats:// reads at most 1024 keys (listed ones included)"
                    )))
                }
                Some(404) => return Err(Error::NotFound(format!("{what}: none of the subjects holds a message"))),
                Some(503) => return Err(Error::Unavailable(format!("{what}: JetStream did not answer"))),
                Some(code) => {
                    return Err(Error::Internal(format!("{what}: JetStream answered {code} {:?}", m.description)))
                }
                None => {
                    let time_ms = get("Nats-Time-Stamp")
                        .and_then(|t| {
                            time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339).ok()
                        })
                        .map_or(0, |t| (t.unix_timestamp_nanos() / 1_000_000) as i64);
                    out.push(RawMsg {
                        subject: get("Nats-Subject").unwrap_or_default(),
                        seq: get("Nats-Sequence").and_then(|v| v.parse().ok()).unwrap_or(0),
                        headers: headers.clone(),
                        payload: m.payload,
                        time_ms,
                    });
                }
            }
        }
    }

    /// Changes an existing stream's config (replicas as they are).
    pub async fn update_stream(&self, mut config: Value) -> Result<Value> {
        let name = config["name"].as_str().expect("stream name").to_owned();
        let info = self.stream_info(&name).await?;
        config["num_replicas"] = info["config"]["num_replicas"].clone();
        self.call(&format!("STREAM.UPDATE.{name}"), &config, &format!("update stream {name}")).await
    }

    pub async fn stream_info(&self, name: &str) -> Result<Value> {
        self.call(&format!("STREAM.INFO.{name}"), &json!({}), &format!("stream {name}")).await
    }

    /// Subject → message count of a stream's subjects matching `filter`.
    pub async fn subject_counts(&self, name: &str, filter: &str) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        let mut offset = 0u64;
        loop {
            let v = self
                .call(
                    &format!("STREAM.INFO.{name}"),
                    &json!({"subjects_filter": filter, "offset": offset}),
                    &format!("stream {name}"),
                )
                .await?;
            let subjects = v["state"]["subjects"].as_object().cloned().unwrap_or_default();
            let n = subjects.len() as u64;
            for (s, c) in subjects {
                out.push((s, c.as_u64().unwrap_or(0)));
            }
            let total = v["total"].as_u64().unwrap_or(0);
            offset += n;
            if n == 0 || offset >= total {
                return Ok(out);
            }
        }
    }

    /// One message by sequence or last by subject (`req` is the MSG.GET body).
    pub async fn get_msg(&self, stream: &str, req: Value) -> Result<Option<RawMsg>> {
        let what = format!("read stream {stream}");
        match self.call(&format!("STREAM.MSG.GET.{stream}"), &req, &what).await {
            Ok(v) => {
                let m = &v["message"];
                let dec = &base64::engine::general_purpose::STANDARD;
                let headers = match m["hdrs"].as_str() {
                    Some(h) => parse_header_block(&dec.decode(h).map_err(|e| Error::Internal(e.to_string()))?),
                    None => Vec::new(),
                };
                let payload = match m["data"].as_str() {
                    Some(d) => Bytes::from(dec.decode(d).map_err(|e| Error::Internal(e.to_string()))?),
                    None => Bytes::new(),
                };
                let time_ms = m["time"]
                    .as_str()
                    .and_then(|t| time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
                    .map_or(0, |t| (t.unix_timestamp_nanos() / 1_000_000) as i64);
                Ok(Some(RawMsg {
                    subject: m["subject"].as_str().unwrap_or_default().to_owned(),
                    seq: m["seq"].as_u64().unwrap_or(0),
                    headers,
                    payload,
                    time_ms,
                }))
            }
            Err(Error::NotFound(m)) if m.contains("10037") => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn delete_msg(&self, stream: &str, seq: u64) -> Result<bool> {
        let what = format!("delete from stream {stream}");
        match self.call(&format!("STREAM.MSG.DELETE.{stream}"), &json!({"seq": seq, "no_erase": true}), &what).await {
            Ok(v) => Ok(v["success"].as_bool().unwrap_or(false)),
            Err(Error::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Publishes and waits for the stream's acknowledgement; returns
    /// (sequence, duplicate).
    ///
    /// A stream just created in a cluster has no leader for a moment (the
    /// publish finds no responder): that is retried within the request
    /// timeout, as are duplicates of an id still being stored (10158).
    pub async fn publish(&self, subject: String, headers: HeaderMap, payload: Bytes) -> Result<(u64, bool)> {
        let deadline = std::time::Instant::now() + self.timeout;
        loop {
            let ack = self.send(subject.clone(), headers.clone(), payload.clone()).await?;
            match ack.await {
                Err(Error::NotFound(_)) | Err(Error::Unavailable(_)) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                r => return r,
            }
        }
    }

    /// Sends a publish without waiting for its acknowledgement (pipelining,
    /// order kept); await the returned future for the ack.
    pub async fn send(
        &self,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<impl std::future::Future<Output = Result<(u64, bool)>> + Send + use<>> {
        let what = format!("publish to {subject}");
        let msg = jetstream::message::PublishMessage::build().payload(payload).headers(headers);
        let fut = self.js.send_publish(subject, msg).await.map_err(|e| publish_error(&what, e))?;
        Ok(async move {
            let ack = fut.await.map_err(|e| publish_error(&what, e))?;
            Ok((ack.sequence, ack.duplicate))
        })
    }
}

fn publish_error(what: &str, e: jetstream::context::PublishError) -> Error {
    use jetstream::context::PublishErrorKind as K;
    match e.kind() {
        K::MaxPayloadExceeded => Error::TooLarge(format!("{what}: {e} (raise the servers' max_payload)")),
        K::WrongLastSequence | K::WrongLastMessageId => Error::Conflict(format!("{what}: {e}")),
        K::StreamNotFound => Error::NotFound(format!("{what}: {e}")),
        K::TimedOut => Error::Timeout(format!("{what}: {e}")),
        _ => {
            let text = e.to_string();
            if text.contains("10054") || text.contains("exceeds maximum") {
                Error::TooLarge(format!("{what}: {text}"))
            } else if text.contains("10071") || text.contains("wrong last sequence") {
                Error::Conflict(format!("{what}: {text}"))
            } else {
                link_error(what, text)
            }
        }
    }
}

/// `feed` until one of `deleted` (stream-deleted advisories) fires: then one
/// `NotFound(why)` and the end, as feeds end on a deleted resource elsewhere.
pub fn ends_on_delete<T: Send + 'static>(
    feed: futures::stream::BoxStream<'static, Result<T>>,
    deleted: Vec<async_nats::Subscriber>,
    why: String,
) -> futures::stream::BoxStream<'static, Result<T>> {
    use futures::StreamExt;
    let gone = futures::stream::select_all(deleted).map(move |_| (true, Err(Error::NotFound(why.clone()))));
    futures::stream::select(feed.map(|m| (false, m)), gone)
        .scan(false, |ended, (last, m)| {
            let out = if *ended { None } else { Some(m) };
            *ended |= last;
            futures::future::ready(out)
        })
        .boxed()
}

/// Milliseconds as the nanoseconds JetStream durations are given in.
pub fn nanos(ms: u64) -> u64 {
    ms.saturating_mul(1_000_000)
}
