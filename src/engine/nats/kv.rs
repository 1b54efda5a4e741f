//! Key-value buckets on JetStream, laid out as NATS KV buckets (stream
//! `KV_fm_<bucket>`, subjects `$KV.fm_<bucket>.<key>`, the last 64
//! changes kept per key) so NATS tools can read them. A revision is the entry's stream
//! sequence; compare-and-set uses `Nats-Expected-Last-Subject-Sequence`; a
//! delete writes NATS KV's `KV-Operation: DEL` marker. TTLs keep their
//! millisecond meaning: each entry carries its deadline (`Fm-Deadline`) and
//! counts as absent once past it, watchers get the expiry on time, and the
//! server's per-message TTL (whole seconds, rounded up) cleans up later.
//! Deleting a bucket deletes its stream; watches end on the server's
//! stream-deleted advisory.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::json;

use super::api::{self, Js, RawMsg, H_DEADLINE, H_KV_OP};
use super::names::{decode, encode, token};
use crate::engine::{KvEntry, KvEvent, KvEventStream, KvOp, WatchCursor};
use crate::error::{Error, Result};

const HISTORY: u64 = 64;

struct Names {
    stream: String,
    prefix: String,
}

impl Names {
    fn of(bucket: &str) -> Names {
        let b = format!("fm_{}", token(bucket));
        Names { stream: format!("KV_{b}"), prefix: format!("$KV.{b}.") }
    }
    fn subject(&self, key: &str) -> String {
        format!("{}{}", self.prefix, encode(key))
    }
    fn key_of(&self, subject: &str) -> Option<String> {
        decode(subject.strip_prefix(&self.prefix)?).ok()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn deadline(m: &RawMsg) -> Option<i64> {
    m.header(H_DEADLINE).and_then(|d| d.parse().ok())
}

/// A put that has not expired (not a delete marker or a server marker).
fn live(m: &RawMsg, now: i64) -> bool {
    if m.header(H_KV_OP).is_some() || m.header("Nats-Marker-Reason").is_some() {
        return false;
    }
    deadline(m).is_none_or(|d| d > now)
}

pub struct Kv {
    js: Js,
    /// Bucket → epoch (from the stream's creation time: a recreated bucket
    /// has a new one, so stale watch cursors are refused).
    ready: Mutex<HashMap<String, u64>>,
}

impl Kv {
    pub fn new(js: Js) -> Kv {
        Kv { js, ready: Mutex::new(HashMap::new()) }
    }

    async fn ensure(&self, bucket: &str) -> Result<(Names, u64)> {
        let n = Names::of(bucket);
        if let Some(e) = self.ready.lock().unwrap().get(bucket) {
            return Ok((n, *e));
        }
        let cfg = json!({
            "name": n.stream,
            "subjects": [format!("{}>", n.prefix)],
            "retention": "limits",
            "storage": "file",
            // Enough history that a watcher lagging behind a burst of
            // changes to one key still sees each (NATS KV's maximum).
            "max_msgs_per_subject": HISTORY,
            "discard": "old",
            "allow_rollup_hdrs": true,
            "deny_delete": true,
            "allow_msg_ttl": true,
            "metadata": {"flowmesh.bucket": bucket},
        });
        let info = match self.js.create_stream(cfg).await {
            Ok(info) => info,
            Err(Error::AlreadyExists(_)) => self.js.stream_info(&n.stream).await?,
            Err(e) => return Err(e),
        };
        let created = info["created"].as_str().unwrap_or_default();
        let epoch = crc32fast::hash(created.as_bytes()) as u64 | 1;
        self.ready.lock().unwrap().insert(bucket.to_owned(), epoch);
        Ok((n, epoch))
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let mut out: Vec<String> = self
            .js
            .list_configs("$KV.>")
            .await?
            .iter()
            .filter_map(|c| c["metadata"]["flowmesh.bucket"].as_str().map(str::to_owned))
            .filter(|b| b.starts_with(prefix))
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    pub async fn delete_bucket(&self, bucket: &str) -> Result<()> {
        self.ready.lock().unwrap().remove(bucket);
        let deleted = self.js.delete_stream(&Names::of(bucket).stream).await?;
        self.ready.lock().unwrap().remove(bucket);
        if deleted {
            Ok(())
        } else {
            Err(Error::NotFound(format!("bucket {bucket} does not exist")))
        }
    }

    async fn last(&self, n: &Names, key: &str) -> Result<Option<RawMsg>> {
        self.js.get_msg(&n.stream, json!({"last_by_subj": n.subject(key)})).await
    }

    fn put_headers(ttl_ms: u64) -> HeaderMap {
        let mut h = HeaderMap::new();
        if ttl_ms > 0 {
            h.insert(H_DEADLINE, (now_ms() + ttl_ms as i64).to_string().as_str());
            // The server's TTL only cleans up: a second beyond the deadline.
            h.insert("Nats-TTL", format!("{}s", ttl_ms.div_ceil(1000) + 1).as_str());
        }
        h
    }

    pub async fn set(&self, bucket: &str, key: &str, value: Bytes, ttl_ms: u64) -> Result<u64> {
        let (n, _) = self.ensure(bucket).await?;
        Ok(self.js.publish(n.subject(key), Self::put_headers(ttl_ms), value).await?.0)
    }

    pub async fn cas(&self, bucket: &str, key: &str, value: Bytes, expected: u64, ttl_ms: u64) -> Result<u64> {
        let (n, _) = self.ensure(bucket).await?;
        let cur = self.last(&n, key).await?;
        let now = now_ms();
        let last_seq = match (&cur, expected) {
            (None, 0) => 0,
            (Some(m), 0) if !live(m, now) => m.seq,
            (Some(m), e) if e > 0 && m.seq == e && live(m, now) => e,
            _ => {
                return Err(Error::Conflict(format!(
                    "key {key:?} of bucket {bucket} is not at revision {expected}{}",
                    if expected == 0 { " (absent)" } else { "" }
                )))
            }
        };
        let mut h = Self::put_headers(ttl_ms);
        h.insert("Nats-Expected-Last-Subject-Sequence", last_seq.to_string().as_str());
        match self.js.publish(n.subject(key), h, value).await {
            Ok((seq, _)) => Ok(seq),
            Err(Error::Conflict(_)) => {
                Err(Error::Conflict(format!("key {key:?} of bucket {bucket} changed meanwhile")))
            }
            Err(e) => Err(e),
        }
    }

    pub async fn get(&self, bucket: &str, key: &str) -> Result<KvEntry> {
        let (n, _) = self.ensure(bucket).await?;
        match self.last(&n, key).await? {
            Some(m) if live(&m, now_ms()) => Ok(KvEntry { key: key.to_owned(), value: m.payload, revision: m.seq }),
            _ => Err(Error::NotFound(format!("key {key:?} is not in bucket {bucket}"))),
        }
    }

    pub async fn delete(&self, bucket: &str, key: &str) -> Result<bool> {
        let (n, _) = self.ensure(bucket).await?;
        for _ in 0..16 {
            let Some(cur) = self.last(&n, key).await?.filter(|m| live(m, now_ms())) else {
                return Ok(false);
            };
            let mut h = HeaderMap::new();
            h.insert(H_KV_OP, "DEL");
            h.insert("Nats-Expected-Last-Subject-Sequence", cur.seq.to_string().as_str());
            match self.js.publish(n.subject(key), h, Bytes::new()).await {
                Ok(_) => return Ok(true),
                Err(Error::Conflict(_)) => continue, // changed meanwhile: look again
                Err(e) => return Err(e),
            }
        }
        Err(Error::Conflict(format!("key {key:?} of bucket {bucket} keeps changing; delete not applied")))
    }

    /// The last message of every key, and the stream's last sequence before
    /// the scan.
    async fn scan(&self, n: &Names) -> Result<(Vec<RawMsg>, u64)> {
        let info = self.js.stream_info(&n.stream).await?;
        let last = info["state"]["last_seq"].as_u64().unwrap_or(0);
        if info["state"]["messages"].as_u64().unwrap_or(0) == 0 {
            return Ok((Vec::new(), last));
        }
        let (_, mut messages) = self.ordered(n, DeliverPolicy::LastPerSubject).await?;
        let mut out = Vec::new();
        loop {
            let m = tokio::time::timeout(self.js.timeout, messages.next())
                .await
                .map_err(|_| Error::Timeout(format!("listing stream {}", n.stream)))?;
            let Some(m) = m else { break };
            let m = m.map_err(|e| api::link_error("list keys", e))?;
            let pending = m.info().map(|i| i.pending).unwrap_or(0);
            let raw = RawMsg::from_js(&m)?;
            if raw.seq <= last {
                out.push(raw);
            }
            if pending == 0 {
                break;
            }
        }
        Ok((out, last))
    }

    /// An ordered consumer from `deliver`, and how many messages it has to
    /// deliver now.
    async fn ordered(&self, n: &Names, deliver: DeliverPolicy) -> Result<(u64, pull::Ordered)> {
        let what = format!("read bucket stream {}", n.stream);
        let stream = self.js.js.get_stream_no_info(&n.stream).await.map_err(|e| api::link_error(&what, e))?;
        let mut consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: format!("{}>", n.prefix),
                deliver_policy: deliver,
                ..Default::default()
            })
            .await
            .map_err(|e| api::link_error(&what, e))?;
        let pending = consumer.info().await.map(|i| i.num_pending).map_err(|e| api::link_error(&what, e))?;
        Ok((pending, consumer.messages().await.map_err(|e| api::link_error(&what, e))?))
    }

    pub async fn keys(&self, bucket: &str, prefix: &str) -> Result<Vec<String>> {
        let (n, _) = self.ensure(bucket).await?;
        let now = now_ms();
        let (msgs, _) = self.scan(&n).await?;
        let mut keys: Vec<String> = msgs
            .iter()
            .filter(|m| live(m, now))
            .filter_map(|m| n.key_of(&m.subject))
            .filter(|k| k.starts_with(prefix))
            .collect();
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    pub async fn watch(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<WatchCursor>,
    ) -> Result<(WatchCursor, KvEventStream)> {
        let (n, epoch) = self.ensure(bucket).await?;
        let deleted = self.js.deleted_advisory(&n.stream).await?;
        let (msgs, last) = self.scan(&n).await?;
        let from = match after {
            None => last,
            Some(c) if c.epoch != epoch => {
                return Err(Error::Conflict(format!("bucket {bucket} was recreated since this watch cursor")))
            }
            Some(c) if c.seq > last => {
                return Err(Error::Conflict(format!("watch cursor {} is ahead of bucket {bucket}", c.seq)))
            }
            Some(c) => c.seq,
        };
        // Keys with deadlines at the start, so their expiry is told on time.
        let now = now_ms();
        let mut deadlines: HashMap<String, (u64, i64)> = HashMap::new();
        for m in msgs.iter().filter(|m| m.seq <= from && live(m, now)) {
            if let (Some(k), Some(d)) = (n.key_of(&m.subject), deadline(m)) {
                if k.starts_with(prefix) {
                    deadlines.insert(k, (m.seq, d));
                }
            }
        }
        let (pending, mut messages) =
            self.ordered(&n, DeliverPolicy::ByStartSequence { start_sequence: from + 1 }).await?;
        if after.is_some() && pending < last - from {
            // Changes after the cursor were dropped (history or TTL limits):
            // this watch cannot resume exactly.
            return Err(Error::Conflict(format!("bucket {bucket} no longer holds every change after revision {from}")));
        }
        let cursor = WatchCursor { epoch, seq: from };
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<KvEvent>>(1024);
        let prefix = prefix.to_owned();
        tokio::spawn(async move {
            let mut seen = from;
            loop {
                let next = deadlines.values().map(|(_, d)| *d).min();
                let sleep = async {
                    match next {
                        Some(d) => tokio::time::sleep(Duration::from_millis((d - now_ms()).max(0) as u64)).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = sleep => {
                        let now = now_ms();
                        let mut due: Vec<(String, u64, i64)> = deadlines
                            .iter()
                            .filter(|(_, (_, d))| *d <= now)
                            .map(|(k, (r, d))| (k.clone(), *r, *d))
                            .collect();
                        due.sort_by_key(|(_, r, d)| (*d, *r));
                        for (key, revision, _) in due {
                            deadlines.remove(&key);
                            let ev = KvEvent { op: KvOp::Expire, key, value: Bytes::new(), revision, cursor: WatchCursor { epoch, seq: seen } };
                            if tx.send(Ok(ev)).await.is_err() {
                                return;
                            }
                        }
                    }
                    m = messages.next() => {
                        let m = match m {
                            None => return,
                            Some(Err(e)) => {
                                tracing::warn!(error = %e, "KV watch feed error; the ordered consumer recovers");
                                continue;
                            }
                            Some(Ok(m)) => m,
                        };
                        let Ok(raw) = RawMsg::from_js(&m) else { continue };
                        seen = raw.seq;
                        let Some(key) = n.key_of(&raw.subject).filter(|k| k.starts_with(&prefix)) else { continue };
                        if raw.header("Nats-Marker-Reason").is_some() {
                            continue; // the server cleaning up: told already
                        }
                        let op = if raw.header(H_KV_OP).is_some() { KvOp::Delete } else { KvOp::Put };
                        deadlines.remove(&key);
                        if op == KvOp::Put {
                            if let Some(d) = deadline(&raw) {
                                deadlines.insert(key.clone(), (raw.seq, d));
                            }
                        }
                        let value = if op == KvOp::Put { raw.payload } else { Bytes::new() };
                        let ev = KvEvent { op, key, value, revision: raw.seq, cursor: WatchCursor { epoch, seq: raw.seq } };
                        if tx.send(Ok(ev)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let feed = futures::StreamExt::boxed(tokio_stream::wrappers::ReceiverStream::new(rx));
        Ok((cursor, api::ends_on_delete(feed, vec![deleted], format!("bucket {bucket} was deleted"))))
    }
}
