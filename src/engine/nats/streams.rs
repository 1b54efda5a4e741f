//! Streams on JetStream: one JetStream stream per partition, so offsets stay
//! dense (offset = sequence - 1). Record key and headers travel in flowmesh
//! headers, `msg_id` as `Nats-Msg-Id` (the stream's de-duplication window).
//! Partition 0's stream carries the partition count in its metadata.
//! Lifecycle: a delete removes every partition's stream (partition 0 last,
//! so a delete cut short leaves a stream the next create completes) and the
//! groups' offsets; feeds end on the server's stream-deleted advisory; a purge
//! is JetStream's (sequences go on); an update grows partitions before
//! partition 0 records the new count.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use async_nats::HeaderMap;
use futures::StreamExt;
use serde_json::{json, Value};

use super::api::{self, Js, RawMsg};
use super::existence::Existence;
use super::meta::Meta;
use super::names::{encode, token};
use crate::engine::*;
use crate::error::{Error, Result};

/// How long a `msg_id` is remembered.
const DEDUP_WINDOW_MS: u64 = 120_000;
const META_PARTITIONS: &str = "flowmesh.partitions";
/// How long a stream's config is trusted before it is read again (another
/// client may have grown, updated or deleted the stream meanwhile).
const CONFIG_CACHE: Duration = Duration::from_secs(1);

pub fn stream_name(name: &str, partition: u32) -> String {
    format!("FMS_{}_{partition}", token(name))
}

fn subject(name: &str, partition: u32) -> String {
    format!("fm.s.{}.{partition}", token(name))
}

/// Core NATS subject of a stream's memory-tier messages: outside `fm.s.>`,
/// so no JetStream stream captures (stores) them.
fn live_subject(name: &str) -> String {
    format!("fm.l.{}", token(name))
}

pub struct Streams {
    js: Js,
    /// Configs recently read.
    parts: Mutex<HashMap<String, (Instant, StreamConfig)>>,
    rr: AtomicU64,
    /// Ends feeds whose stream vanished without an advisory.
    existence: Existence,
    /// Streams seen with 3+ replicas on every partition (replicas never
    /// shrink under flowmesh; a re-created stream is checked again).
    replicated: Mutex<std::collections::HashSet<String>>,
}

fn config_json(name: &str, p: u32, cfg: &StreamConfig) -> Value {
    let (max_msgs, max_bytes) = match cfg.tier {
        Tier::Memory => (
            if cfg.max_messages == 0 { Tier::memory_default_max_messages() } else { cfg.max_messages },
            if cfg.max_bytes == 0 { Tier::memory_default_max_bytes() } else { cfg.max_bytes },
        ),
        Tier::Durable => (cfg.max_messages, cfg.max_bytes),
    };
    let limit = |v: u64| if v == 0 { json!(-1) } else { json!(v) };
    json!({
        "name": stream_name(name, p),
        "subjects": [subject(name, p)],
        "retention": "limits",
        "storage": if cfg.tier == Tier::Memory { "memory" } else { "file" },
        "max_msgs": limit(max_msgs),
        "max_bytes": limit(max_bytes),
        // JetStream's smallest max_age is 100 ms.
        "max_age": if cfg.max_age_ms == 0 { 0 } else { api::nanos(cfg.max_age_ms.max(100)) },
        "discard": "old",
        "duplicate_window": api::nanos(DEDUP_WINDOW_MS.min(if cfg.max_age_ms == 0 { u64::MAX } else { cfg.max_age_ms.max(100) })),
        "metadata": {
            "flowmesh.name": name,
            META_PARTITIONS: cfg.partitions.to_string(),
            "flowmesh.tier": cfg.tier.name(),
        },
    })
}

fn config_from_info(info: &Value) -> Option<StreamConfig> {
    let c = &info["config"];
    let partitions = c["metadata"][META_PARTITIONS].as_str()?.parse().ok()?;
    let tier = if c["storage"] == "memory" { Tier::Memory } else { Tier::Durable };
    let pos = |v: &Value| v.as_i64().filter(|v| *v > 0).unwrap_or(0) as u64;
    Some(StreamConfig {
        partitions,
        max_age_ms: c["max_age"].as_u64().unwrap_or(0) / 1_000_000,
        max_bytes: pos(&c["max_bytes"]),
        max_messages: pos(&c["max_msgs"]),
        tier,
    })
}

fn partition_info(p: u32, info: &Value) -> PartitionInfo {
    let first = info["state"]["first_seq"].as_u64().unwrap_or(0);
    let last = info["state"]["last_seq"].as_u64().unwrap_or(0);
    PartitionInfo { partition: p, earliest: first.saturating_sub(1).min(last), latest: last }
}

pub fn to_message(name: &str, partition: u32, m: RawMsg) -> Result<Message> {
    let (key, headers) = m.record_meta()?;
    Ok(Message {
        stream: name.to_owned(),
        partition,
        offset: m.seq.saturating_sub(1),
        timestamp_ms: m.time_ms,
        key,
        payload: m.payload,
        headers,
    })
}

/// A memory-tier message as subscribers see it (no offset).
fn to_live_message(name: &str, m: RawMsg) -> Result<Message> {
    let (key, headers) = m.record_meta()?;
    let record = Record { key, payload: m.payload, headers, msg_id: None };
    Ok(crate::engine::live::live_message(name, record, m.time_ms))
}

impl Streams {
    pub fn new(js: Js) -> Streams {
        Streams {
            existence: Existence::new(js.clone()),
            js,
            parts: Mutex::new(HashMap::new()),
            rr: AtomicU64::new(0),
            replicated: Default::default(),
        }
    }

    pub async fn create(&self, name: &str, cfg: StreamConfig) -> Result<()> {
        let existing = match self.js.create_stream(config_json(name, 0, &cfg)).await {
            Ok(info) => config_from_info(&info),
            Err(Error::AlreadyExists(_)) => {
                let info = self.js.stream_info(&stream_name(name, 0)).await?;
                config_from_info(&info)
            }
            Err(e) => return Err(e),
        };
        let existing = existing.ok_or_else(|| Error::Internal(format!("stream {name}: no partition count")))?;
        if existing.partitions != cfg.partitions {
            return Err(Error::AlreadyExists(format!(
                "stream {name} exists with {} partitions, not {}",
                existing.partitions, cfg.partitions
            )));
        }
        if existing.tier != cfg.tier {
            return Err(Error::AlreadyExists(format!("stream {name} exists in the {} tier", existing.tier.name())));
        }
        // Partition 0 is the stream's record; the others may be missing after
        // a creator died half-way, so every create completes them.
        let rest = (1..existing.partitions).map(|p| {
            let cfg = config_json(name, p, &existing);
            async move {
                match self.js.create_stream(cfg).await {
                    Ok(_) | Err(Error::AlreadyExists(_)) => Ok(()),
                    Err(e) => Err(e),
                }
            }
        });
        for r in futures::future::join_all(rest).await {
            r?;
        }
        self.remember(name, existing);
        Ok(())
    }

    /// The stream's config; NotFound when it does not exist.
    pub async fn config(&self, name: &str) -> Result<StreamConfig> {
        if let Some((at, c)) = self.parts.lock().unwrap().get(name) {
            if at.elapsed() < CONFIG_CACHE {
                return Ok(*c);
            }
        }
        self.fresh_config(name).await
    }

    fn remember(&self, name: &str, cfg: StreamConfig) {
        self.parts.lock().unwrap().insert(name.to_owned(), (Instant::now(), cfg));
    }

    fn forget(&self, name: &str) {
        self.replicated.lock().unwrap().remove(name);
        self.parts.lock().unwrap().remove(name);
    }

    /// The config as JetStream has it now; NotFound when the stream does not exist.
    async fn fresh_config(&self, name: &str) -> Result<StreamConfig> {
        let info = self.js.stream_info(&stream_name(name, 0)).await.map_err(|e| match e {
            Error::NotFound(_) => Error::NotFound(format!("stream {name} does not exist")),
            e => e,
        })?;
        let cfg = config_from_info(&info)
            .ok_or_else(|| Error::Internal(format!("stream {name}: JetStream stream without flowmesh metadata")))?;
        self.remember(name, cfg);
        Ok(cfg)
    }

    /// The config, creating the stream with defaults on first use.
    async fn config_or_create(&self, name: &str) -> Result<StreamConfig> {
        match self.config(name).await {
            Err(Error::NotFound(_)) => {
                match self.create(name, StreamConfig::default()).await {
                    Ok(()) | Err(Error::AlreadyExists(_)) => {}
                    Err(e) => return Err(e),
                }
                self.config(name).await
            }
            r => r,
        }
    }

    async fn partition_count(&self, name: &str, partition: u32) -> Result<u32> {
        let n = self.config(name).await?.partitions;
        if partition >= n {
            return Err(Error::NotFound(format!("stream {name} has no partition {partition} (it has {n})")));
        }
        Ok(n)
    }

    pub async fn publish(&self, name: &str, records: Vec<Record>) -> Result<Vec<Position>> {
        let n = self.config_or_create(name).await?.partitions;
        let mut pending = Vec::with_capacity(records.len());
        let mut retry = Vec::with_capacity(records.len());
        for r in records {
            let p = match (&r.key, &r.msg_id) {
                (Some(k), _) => key_partition(k, n),
                // A retried publish must land where its first copy did.
                (None, Some(id)) => key_partition(id.as_bytes(), n),
                (None, None) => (self.rr.fetch_add(1, Ordering::Relaxed) % n as u64) as u32,
            };
            let mut h = HeaderMap::new();
            if let Some(id) = &r.msg_id {
                h.insert("Nats-Msg-Id", id.as_str());
            }
            api::put_record_meta(&mut h, r.key.as_ref(), &r.headers);
            retry.push((h.clone(), r.payload.clone()));
            pending.push((p, self.js.send(subject(name, p), h, r.payload).await?));
        }
        let mut out = Vec::with_capacity(pending.len());
        for (i, (p, ack)) in pending.into_iter().enumerate() {
            let seq = match ack.await {
                Ok((seq, _)) => (p, seq),
                // A new stream without a leader yet, the same id twice in one
                // batch on a cluster, or a stream another client deleted:
                // sent again (ids keep it once), re-creating it if needed.
                Err(Error::Unavailable(_)) | Err(Error::NotFound(_)) => self.republish(name, p, &retry[i]).await?,
                // A cluster deleting the stream may drop the ack: sent again
                // only when the stream is gone (so nothing is stored twice).
                Err(Error::Timeout(t)) => match self.js.stream_info(&stream_name(name, p)).await {
                    Err(Error::NotFound(_)) => self.republish(name, p, &retry[i]).await?,
                    _ => {
                        self.forget(name);
                        return Err(Error::Timeout(t));
                    }
                },
                Err(e) => {
                    self.forget(name);
                    return Err(e);
                }
            };
            out.push(Position { partition: seq.0, offset: seq.1 - 1 });
        }
        Ok(out)
    }

    /// The memory tier: a core NATS publish (no JetStream stream is
    /// created or touched); with `ack`, a flush: the server has it.
    pub async fn publish_live(&self, name: &str, r: Record, ack: bool) -> Result<()> {
        let mut h = HeaderMap::new();
        api::put_record_meta(&mut h, r.key.as_ref(), &r.headers);
        let what = || format!("memory-tier publish to {name}");
        self.js
            .client
            .publish_with_headers(live_subject(name), h, r.payload)
            .await
            .map_err(|e| api::link_error(&what(), e))?;
        if ack {
            self.js.client.flush().await.map_err(|e| api::link_error(&what(), e))?;
        }
        Ok(())
    }

    /// The replicated tier: JetStream's acknowledgement comes from a quorum
    /// of the stream's replicas, so the stream must have 3 or more. A stream
    /// made by this publish gets the connect option replicas (3 on a
    /// cluster of 3+); one with fewer is refused, never written.
    pub async fn publish_replicated(&self, name: &str, records: Vec<Record>) -> Result<Vec<Position>> {
        if self.config(name).await.is_err() && self.js.replicas < 3 {
            return Err(Error::Unavailable(format!(
                "the replicated tier needs a stream on 3+ servers; stream {name} would get {} replica(s) here (a single NATS server, or connect option replicas below 3)",
                self.js.replicas
            )));
        }
        if self.replicated.lock().unwrap().contains(name) {
            return self.publish(name, records).await;
        }
        let n = self.config_or_create(name).await?.partitions;
        for p in 0..n {
            let info = self.js.stream_info(&stream_name(name, p)).await?;
            let replicas = info["config"]["num_replicas"].as_u64().unwrap_or(1);
            if replicas < 3 {
                return Err(Error::Unavailable(format!(
                    "the replicated tier needs a stream on 3+ servers; stream {name} has {replicas} replica(s)"
                )));
            }
        }
        self.replicated.lock().unwrap().insert(name.to_owned());
        self.publish(name, records).await
    }

    /// Publishes one record again after a failed acknowledgement; returns
    /// (partition, sequence). A stream re-created meanwhile may have fewer
    /// partitions: the record then goes to one it has.
    async fn republish(&self, name: &str, p: u32, (h, payload): &(HeaderMap, bytes::Bytes)) -> Result<(u32, u64)> {
        self.forget(name);
        let n = self.config_or_create(name).await?.partitions;
        let p = if p < n { p } else { p % n };
        let r = self.js.publish(subject(name, p), h.clone(), payload.clone()).await;
        r.map(|(seq, _)| (p, seq)).inspect_err(|_| self.forget(name))
    }

    pub async fn partition(&self, name: &str, p: u32) -> Result<PartitionInfo> {
        let info = self.js.stream_info(&stream_name(name, p)).await?;
        Ok(partition_info(p, &info))
    }

    pub async fn read(&self, name: &str, p: u32, offset: u64, max: usize) -> Result<Vec<Message>> {
        self.partition_count(name, p).await?;
        let info = self.partition(name, p).await?;
        let start = offset.max(info.earliest);
        let end = info.latest.min(start.saturating_add(max as u64));
        let sname = stream_name(name, p);
        let gets = (start..end).map(|o| {
            let sname = sname.clone();
            async move { self.js.get_msg(&sname, json!({"seq": o + 1})).await }
        });
        let got: Vec<Result<Option<RawMsg>>> = futures::stream::iter(gets).buffered(32).collect().await;
        let mut out = Vec::new();
        for m in got {
            if let Some(m) = m? {
                out.push(to_message(name, p, m)?);
            }
        }
        Ok(out)
    }

    pub async fn info(&self, name: &str) -> Result<StreamInfo> {
        let config = self.config(name).await?;
        let parts = (0..config.partitions).map(|p| self.partition(name, p));
        let partitions = futures::future::join_all(parts).await.into_iter().collect::<Result<Vec<_>>>()?;
        Ok(StreamInfo { config, partitions })
    }

    pub async fn subscribe(&self, name: &str, spec: SubscribeSpec, meta: &Meta) -> Result<MessageStream> {
        let n = self.config_or_create(name).await?.partitions;
        let parts: Vec<u32> = match spec.partition {
            Some(p) if p >= n => return Err(Error::NotFound(format!("stream {name} has no partition {p}"))),
            Some(p) => vec![p],
            None => (0..n).collect(),
        };
        let mut feeds = Vec::new();
        let mut deleted = Vec::new();
        let mut missing = Vec::new();
        let live = if crate::engine::live::wants_live(&spec) {
            let sub = self
                .js
                .client
                .subscribe(live_subject(name))
                .await
                .map_err(|e| api::link_error(&format!("subscribe to stream {name}"), e))?;
            let name = name.to_owned();
            Some(sub.map(move |m| to_live_message(&name, RawMsg::from_core(&m))).boxed())
        } else {
            None
        };
        for p in parts {
            deleted.push(self.js.deleted_advisory(&stream_name(name, p)).await?);
            missing.push(self.existence.watch(&stream_name(name, p)));
            let deliver = match spec.start {
                StartFrom::Earliest => DeliverPolicy::All,
                StartFrom::Latest => {
                    DeliverPolicy::ByStartSequence { start_sequence: self.partition(name, p).await?.latest + 1 }
                }
                StartFrom::Offset(o) => DeliverPolicy::ByStartSequence { start_sequence: o + 1 },
                StartFrom::Committed => {
                    let group = spec.group.as_deref().ok_or_else(|| Error::invalid("start=committed needs a group"))?;
                    match read_offset(meta, name, group, p).await? {
                        Some(c) => DeliverPolicy::ByStartSequence { start_sequence: c + 2 },
                        None => DeliverPolicy::All,
                    }
                }
            };
            let stream = self
                .js
                .js
                .get_stream_no_info(stream_name(name, p))
                .await
                .map_err(|e| api::link_error(&format!("stream {name}"), e))?;
            let consumer = stream
                .create_consumer(pull::OrderedConfig {
                    filter_subject: subject(name, p),
                    deliver_policy: deliver,
                    ..Default::default()
                })
                .await
                .map_err(|e| api::link_error(&format!("subscribe to stream {name}"), e))?;
            let messages =
                consumer.messages().await.map_err(|e| api::link_error(&format!("subscribe to stream {name}"), e))?;
            let name = name.to_owned();
            feeds.push(
                messages
                    .map(move |m| {
                        let m = m.map_err(|e| api::link_error(&format!("feed of stream {name}"), e))?;
                        to_message(&name, p, RawMsg::from_js(&m)?)
                    })
                    .boxed(),
            );
        }
        let feed = futures::stream::select_all(feeds).boxed();
        let feed = api::ends_on_delete(feed, deleted, missing, format!("stream {name} was deleted"));
        Ok(match live {
            Some(live) => crate::engine::live::merge(feed, live),
            None => feed,
        })
    }

    /// Every stream name starting with `prefix`, sorted.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let mut out: Vec<String> = self
            .js
            .list_configs("fm.s.>")
            .await?
            .iter()
            .filter_map(|c| {
                let name = c["metadata"]["flowmesh.name"].as_str()?;
                // Partition 0 stands for the stream.
                (c["name"].as_str() == Some(&stream_name(name, 0))).then(|| name.to_owned())
            })
            .filter(|n| n.starts_with(prefix))
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The JetStream streams of every partition of `name`, partition 0 last.
    async fn partition_streams(&self, name: &str) -> Result<Vec<String>> {
        let t = token(name);
        let mut found: Vec<(u32, String)> = self
            .js
            .list_configs(&format!("fm.s.{t}.*"))
            .await?
            .iter()
            .filter_map(|c| {
                let sname = c["name"].as_str()?;
                let p: u32 = sname.strip_prefix(&format!("FMS_{t}_"))?.parse().ok()?;
                Some((p, sname.to_owned()))
            })
            .collect();
        found.sort_by_key(|(p, _)| std::cmp::Reverse(*p));
        Ok(found.into_iter().map(|(_, s)| s).collect())
    }

    pub async fn delete(&self, meta: &Meta, name: &str) -> Result<()> {
        self.forget(name);
        self.fresh_config(name).await?;
        for sname in self.partition_streams(name).await? {
            self.js.delete_stream(&sname).await?;
        }
        meta.purge(&["off", &token(name)]).await?;
        self.forget(name);
        Ok(())
    }

    /// Removes every message, keeping sequences; groups' committed offsets
    /// inside the removed range move to its end.
    pub async fn purge(&self, meta: &Meta, name: &str) -> Result<u64> {
        let cfg = self.fresh_config(name).await?;
        let mut removed = 0;
        let mut ends = Vec::new();
        for p in 0..cfg.partitions {
            removed += self.js.purge(&stream_name(name, p), &json!({})).await?;
            ends.push(self.partition(name, p).await?.latest);
        }
        for (subject, parts) in meta.list(&["off", &token(name)]).await? {
            let Some(end) = parts.last().and_then(|p| p.parse::<usize>().ok()).and_then(|p| ends.get(p).copied())
            else {
                continue;
            };
            // A commit racing the purge wins (compare-and-set on the record).
            if let Some((seq, v)) = meta.get_subject(&subject).await? {
                let committed: Option<u64> = std::str::from_utf8(&v).ok().and_then(|s| s.parse().ok());
                if committed.is_some_and(|c| c + 1 < end) {
                    match meta.put_subject_if(&subject, (end - 1).to_string().into(), seq).await {
                        Ok(_) | Err(Error::Conflict(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(removed)
    }

    /// Applies `upd`: new partitions are created first, then the existing
    /// ones take the new config (partition 0, which records the count, last).
    pub async fn update(&self, name: &str, upd: StreamUpdate) -> Result<StreamConfig> {
        let cur = self.fresh_config(name).await?;
        let next = upd.apply(name, cur)?;
        for p in cur.partitions..next.partitions {
            match self.js.create_stream(config_json(name, p, &next)).await {
                Ok(_) | Err(Error::AlreadyExists(_)) => {}
                Err(e) => return Err(e),
            }
        }
        for p in (0..cur.partitions).rev() {
            self.js.update_stream(config_json(name, p, &next)).await?;
        }
        self.remember(name, next);
        Ok(next)
    }

    pub async fn commit(&self, meta: &Meta, name: &str, group: &str, p: u32, offset: u64) -> Result<()> {
        self.partition_count(name, p).await?;
        let key = [token(name), encode(group), p.to_string()];
        meta.put(&["off", &key[0], &key[1], &key[2]], offset.to_string().into()).await?;
        Ok(())
    }

    pub async fn get_offset(&self, meta: &Meta, name: &str, group: &str, p: u32) -> Result<u64> {
        self.partition_count(name, p).await?;
        read_offset(meta, name, group, p)
            .await?
            .ok_or_else(|| Error::NotFound(format!("group {group} has no committed offset on {name} partition {p}")))
    }

    pub async fn group_state(&self, meta: &Meta, name: &str, group: &str) -> Result<GroupState> {
        let info = self.info(name).await?;
        let mut partitions = Vec::new();
        for p in info.partitions {
            let committed = read_offset(meta, name, group, p.partition).await?;
            let next = committed.map_or(p.earliest, |c| (c + 1).max(p.earliest));
            partitions.push(GroupPartitionState {
                partition: p.partition,
                committed,
                latest: p.latest,
                lag: p.latest.saturating_sub(next),
            });
        }
        Ok(GroupState { group: group.to_owned(), partitions })
    }
}

async fn read_offset(meta: &Meta, name: &str, group: &str, p: u32) -> Result<Option<u64>> {
    let key = [token(name), encode(group), p.to_string()];
    match meta.get(&["off", &key[0], &key[1], &key[2]]).await? {
        Some(v) => {
            let s = std::str::from_utf8(&v).unwrap_or_default();
            s.parse().map(Some).map_err(|_| Error::Internal(format!("damaged offset record {s:?}")))
        }
        None => Ok(None),
    }
}
