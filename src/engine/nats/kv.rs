//! Key-value buckets on JetStream. Every bucket of a tenant lives in one
//! stream, laid out as one NATS KV bucket per tenant (stream `KV_fm_<tenant>`,
//! subjects `$KV.fm_<tenant>.<bucket>.<key>`, the last 64 changes kept per
//! subject) so that a transaction over several buckets of the tenant is one
//! JetStream atomic batch (see `txn`), and NATS tools can still read them.
//! A bucket exists while its record in `FM_META` (`fm.meta.bucket.<tenant>.
//! <bucket>`) is live; that record's sequence is the bucket's epoch, and
//! creating a bucket takes no revision of the tenant's stream. Deleting a
//! bucket turns the record into a tombstone, writes a deletion marker on
//! `$KV.fm_<tenant>.<bucket>` (watchers end on it, and transactions writing
//! the bucket fail), then purges the keys; a bucket re-created over a
//! tombstone purges them again, so a delete cut short never resurfaces.
//!
//! A revision is the entry's stream sequence; compare-and-set uses
//! `Nats-Expected-Last-Subject-Sequence`; a delete writes NATS KV's
//! `KV-Operation: DEL` marker. TTLs keep their millisecond meaning: each entry
//! carries its deadline (`Fm-Deadline`) and counts as absent once past it,
//! watchers get the expiry on time, and the server's per-message TTL (whole
//! seconds, rounded up) cleans up later.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::json;

use super::api::{self, Js, RawMsg, H_DEADLINE, H_KV_OP};
use super::meta::Meta;
use super::names::{decode, encode, token};
use crate::engine::{KvEntry, KvEvent, KvOp, ResumedWatch, WatchCursor};
use crate::error::{Error, Result};

const HISTORY: u64 = 64;
/// How long a bucket's record is trusted before it is read again (another
/// client may have deleted the bucket meanwhile).
const BUCKET_CACHE: Duration = Duration::from_secs(1);

/// Where a bucket lives.
pub struct Names {
    pub stream: String,
    /// `$KV.fm_<tenant>`: every subject of the tenant's stream starts with it.
    pub tenant: String,
    /// `$KV.fm_<tenant>.<bucket>.`: every key's subject starts with it.
    pub prefix: String,
    /// Where the bucket's deletion is marked in its stream.
    pub record: String,
    /// The bucket's record in `FM_META`.
    pub meta: [String; 3],
}

impl Names {
    pub fn of(bucket: &str) -> Names {
        let (tenant, rest) = bucket.split_once('/').unwrap_or((bucket, ""));
        let t = format!("fm_{}", token(tenant));
        let b = token(rest);
        Names {
            stream: format!("KV_{t}"),
            tenant: format!("$KV.{t}"),
            prefix: format!("$KV.{t}.{b}."),
            record: format!("$KV.{t}.{b}"),
            meta: ["bucket".to_owned(), token(tenant), b],
        }
    }
    pub fn subject(&self, key: &str) -> String {
        format!("{}{}", self.prefix, encode(key))
    }
    pub fn key_of(&self, subject: &str) -> Option<String> {
        decode(subject.strip_prefix(&self.prefix)?).ok()
    }
    /// The subject of a transaction's checks on keys it does not write
    /// (never a bucket: encoded names hold `_` only before two hex digits).
    pub fn checks(&self) -> String {
        format!("{}._txn", self.tenant)
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn deadline(m: &RawMsg) -> Option<i64> {
    m.header(H_DEADLINE).and_then(|d| d.parse().ok())
}

/// A put that has not expired (not a delete marker or a server marker).
pub fn live(m: &RawMsg, now: i64) -> bool {
    if m.header(H_KV_OP).is_some() || m.header("Nats-Marker-Reason").is_some() {
        return false;
    }
    deadline(m).is_none_or(|d| d > now)
}

/// A bucket record: its name, and whether it is a tombstone.
#[derive(serde::Serialize, serde::Deserialize)]
struct Record {
    name: String,
    deleted: bool,
}

fn record(name: &str, deleted: bool) -> Bytes {
    Bytes::from(serde_json::to_vec(&Record { name: name.to_owned(), deleted }).expect("record serializes"))
}

fn parse_record(v: &[u8]) -> Result<Record> {
    serde_json::from_slice(v).map_err(|e| Error::Internal(format!("damaged bucket record: {e}")))
}

pub struct Kv {
    pub js: Js,
    meta: std::sync::Arc<Meta>,
    pub max_value: usize,
    /// Tenant streams known to exist.
    tenants: Mutex<HashSet<String>>,
    /// Bucket → (when its record was read, epoch).
    ready: Mutex<HashMap<String, (Instant, u64)>>,
}

impl Kv {
    pub fn new(js: Js, meta: std::sync::Arc<Meta>, max_value: usize) -> Kv {
        Kv { js, meta, max_value, tenants: Mutex::new(HashSet::new()), ready: Mutex::new(HashMap::new()) }
    }

    async fn ensure_tenant(&self, n: &Names, bucket: &str) -> Result<()> {
        if self.tenants.lock().unwrap().contains(&n.stream) {
            return Ok(());
        }
        let tenant = bucket.split('/').next().unwrap_or_default();
        let cfg = json!({
            "name": n.stream,
            "subjects": [format!("{}.>", n.tenant)],
            "retention": "limits",
            "storage": "file",
            // Enough history that a watcher lagging behind a burst of
            // changes to one key still sees each (NATS KV's maximum).
            "max_msgs_per_subject": HISTORY,
            "discard": "old",
            "allow_rollup_hdrs": true,
            "deny_delete": true,
            "allow_msg_ttl": true,
            // Transactions: atomic batches, and isolated multi-key reads.
            "allow_atomic": true,
            "allow_direct": true,
            "metadata": {"flowmesh.tenant": tenant},
        });
        match self.js.create_stream(cfg).await {
            Ok(_) | Err(Error::AlreadyExists(_)) => {}
            Err(e) => return Err(e),
        }
        self.tenants.lock().unwrap().insert(n.stream.clone());
        Ok(())
    }

    /// The bucket's names and epoch, creating the bucket on first use.
    pub async fn ensure(&self, bucket: &str) -> Result<(Names, u64)> {
        let n = Names::of(bucket);
        if let Some((at, e)) = self.ready.lock().unwrap().get(bucket) {
            if at.elapsed() < BUCKET_CACHE {
                return Ok((n, *e));
            }
        }
        self.ensure_tenant(&n, bucket).await?;
        let subject = Meta::subject_of(&n.meta);
        for _ in 0..16 {
            let rec = self.meta.get_subject(&subject).await?;
            let epoch = match rec {
                Some((seq, v)) if !parse_record(&v)?.deleted => seq,
                other => {
                    // Keys a delete cut short left behind go before the
                    // bucket comes back.
                    if other.is_some() {
                        self.js.purge(&n.stream, &json!({"filter": format!("{}>", n.prefix)})).await?;
                    }
                    let expected = other.map_or(0, |(seq, _)| seq);
                    match self.meta.put_subject_if(&subject, record(bucket, false), expected).await {
                        Ok(seq) => seq,
                        Err(Error::Conflict(_)) => continue, // someone else created or deleted it: look again
                        Err(e) => return Err(e),
                    }
                }
            };
            self.ready.lock().unwrap().insert(bucket.to_owned(), (Instant::now(), epoch));
            return Ok((n, epoch));
        }
        Err(Error::Conflict(format!("bucket {bucket} keeps being created and deleted; try again")))
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let mut parts = vec!["bucket".to_owned()];
        // A qualified prefix names its tenant whole.
        if let Some((tenant, _)) = prefix.split_once('/') {
            parts.push(token(tenant));
        }
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        let mut out = Vec::new();
        for (subject, _) in self.meta.list(&parts).await? {
            if let Some((_, v)) = self.meta.get_subject(&subject).await? {
                let r = parse_record(&v)?;
                if !r.deleted && r.name.starts_with(prefix) {
                    out.push(r.name);
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    pub async fn delete_bucket(&self, bucket: &str) -> Result<()> {
        let n = Names::of(bucket);
        self.ready.lock().unwrap().remove(bucket);
        let subject = Meta::subject_of(&n.meta);
        for _ in 0..16 {
            let Some((seq, v)) =
                self.meta.get_subject(&subject).await?.filter(|(_, v)| parse_record(v).is_ok_and(|r| !r.deleted))
            else {
                return Err(Error::NotFound(format!("bucket {bucket} does not exist")));
            };
            let _ = v;
            match self.meta.put_subject_if(&subject, record(bucket, true), seq).await {
                Ok(_) => {
                    self.ensure_tenant(&n, bucket).await?;
                    self.js.publish(n.record.clone(), HeaderMap::new(), Bytes::from(bucket.to_owned())).await?;
                    self.js.purge(&n.stream, &json!({"filter": format!("{}>", n.prefix)})).await?;
                    self.ready.lock().unwrap().remove(bucket);
                    return Ok(());
                }
                Err(Error::Conflict(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Conflict(format!("bucket {bucket} keeps being created and deleted; try again")))
    }

    async fn last(&self, n: &Names, key: &str) -> Result<Option<RawMsg>> {
        self.js.get_msg(&n.stream, json!({"last_by_subj": n.subject(key)})).await
    }

    pub fn put_headers(ttl_ms: u64) -> HeaderMap {
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

    /// The last message of every subject matching `filter`, and the
    /// stream's last sequence before the scan.
    async fn last_per_subject(&self, stream: &str, filter: &str) -> Result<(Vec<RawMsg>, u64)> {
        let info = self.js.stream_info(stream).await?;
        let last = info["state"]["last_seq"].as_u64().unwrap_or(0);
        if info["state"]["messages"].as_u64().unwrap_or(0) == 0 {
            return Ok((Vec::new(), last));
        }
        let (pending, mut messages) =
            self.ordered(stream, vec![filter.to_owned()], DeliverPolicy::LastPerSubject).await?;
        let mut out = Vec::new();
        if pending == 0 {
            return Ok((out, last));
        }
        loop {
            let m = tokio::time::timeout(self.js.timeout, messages.next())
                .await
                .map_err(|_| Error::Timeout(format!("listing stream {stream}")))?;
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
    async fn ordered(
        &self,
        stream: &str,
        filters: Vec<String>,
        deliver: DeliverPolicy,
    ) -> Result<(u64, pull::Ordered)> {
        let what = format!("read bucket stream {stream}");
        let s = self.js.js.get_stream_no_info(stream).await.map_err(|e| api::link_error(&what, e))?;
        let mut config = pull::OrderedConfig { deliver_policy: deliver, ..Default::default() };
        if filters.len() == 1 {
            config.filter_subject = filters[0].clone();
        } else {
            config.filter_subjects = filters;
        }
        let mut consumer = s.create_consumer(config).await.map_err(|e| api::link_error(&what, e))?;
        let pending = consumer.info().await.map(|i| i.num_pending).map_err(|e| api::link_error(&what, e))?;
        Ok((pending, consumer.messages().await.map_err(|e| api::link_error(&what, e))?))
    }

    pub async fn keys(&self, bucket: &str, prefix: &str) -> Result<Vec<String>> {
        let (n, _) = self.ensure(bucket).await?;
        let now = now_ms();
        // One isolated read that sees every acknowledged write (a consumer
        // on a lagging replica might not); a bucket too large for it is
        // scanned by a consumer instead.
        let msgs = match self.js.multi_last(&n.stream, &[format!("{}*", n.prefix)]).await {
            Ok((msgs, _)) => msgs,
            Err(Error::TooLarge(_)) => self.last_per_subject(&n.stream, &format!("{}>", n.prefix)).await?.0,
            Err(e) => return Err(e),
        };
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

    /// Whether the stream still holds every message after `from` (nothing
    /// removed by history or TTL limits or a purge since): then a watch
    /// resumes exactly. Checked over the whole tenant stream, so a removal in
    /// another bucket refuses a resume too (safe, never wrong).
    async fn holds_all_after(&self, stream: &str, from: u64) -> Result<bool> {
        let info = self
            .js
            .call(&format!("STREAM.INFO.{stream}"), &json!({"deleted_details": true}), &format!("stream {stream}"))
            .await?;
        let state = &info["state"];
        let first = state["first_seq"].as_u64().unwrap_or(0);
        if first > from + 1 && state["messages"].as_u64().unwrap_or(0) > 0 {
            return Ok(false);
        }
        let gaps = state["deleted"].as_array().cloned().unwrap_or_default();
        Ok(!gaps.iter().filter_map(|s| s.as_u64()).any(|s| s > from))
    }

    pub async fn watch(&self, bucket: &str, prefix: &str, after: Option<WatchCursor>) -> Result<ResumedWatch> {
        let (n, epoch) = self.ensure(bucket).await?;
        let (msgs, last) = self.last_per_subject(&n.stream, &format!("{}>", n.prefix)).await?;
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
        // The bucket's record too: its tombstone ends the watch.
        let filters = vec![format!("{}>", n.prefix), n.record.clone()];
        let (_, mut messages) =
            self.ordered(&n.stream, filters, DeliverPolicy::ByStartSequence { start_sequence: from + 1 }).await?;
        if after.is_some() && !self.holds_all_after(&n.stream, from).await? {
            // Changes after the cursor were dropped (history or TTL limits):
            // this watch cannot resume exactly.
            return Err(Error::Conflict(format!("bucket {bucket} no longer holds every change after revision {from}")));
        }
        let cursor = WatchCursor { epoch, seq: from };
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<KvEvent>>(1024);
        let prefix = prefix.to_owned();
        let bucket = bucket.to_owned();
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
                        if raw.subject == n.record {
                            let _ = tx.send(Err(Error::NotFound(format!("bucket {bucket} was deleted")))).await;
                            return;
                        }
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
        Ok((cursor, Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }
}
