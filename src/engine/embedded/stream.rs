//! A stream: partitions, the round-robin/key-hash router, consumer-group
//! offsets and the change signal that wakes subscribers.

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::watch;

use crate::engine::{
    GroupPartitionState, GroupState, Message, MessageStream, PartitionInfo, Position, Record, StartFrom, StreamConfig,
    StreamInfo, StreamStats, SubscribeSpec, Tier,
};
use crate::error::{Error, Result};

use super::codec::{self, Reader};
use super::dedup::DedupWindow;
use super::log::{FsyncPolicy, PendingSync, SyncRegistry};
use super::now_ms;
use super::partition::{FilePartition, MemoryPartition, Partition};
use super::wal::{Compaction, Wal};

/// Messages a subscriber fetches per partition per round.
const SUBSCRIBE_BATCH: usize = 512;

pub struct Stream {
    name: String,
    /// Configuration and partitions change together (an update may add
    /// partitions); appends hold it shared, updates and deletes exclusively.
    layout: RwLock<Layout>,
    /// Set (under the exclusive layout lock) when the stream is deleted:
    /// later appends are refused and feeds end.
    deleted: AtomicBool,
    /// Directory and segment size, to add partitions (None in memory).
    dir: Option<PathBuf>,
    segment_bytes: u64,
    round_robin: AtomicU32,
    /// Bumped after every append; subscribers wait on it instead of polling.
    appended: watch::Sender<u64>,
    offsets: Mutex<Offsets>,
    fsync: FsyncPolicy,
    /// Held across check-append-remember by publishes carrying message ids,
    /// so a retry racing its original is still stored once.
    dedup: Mutex<DedupWindow>,
}

struct Layout {
    config: StreamConfig,
    partitions: Vec<Mutex<Partition>>,
}

struct Offsets {
    committed: HashMap<(String, u32), u64>,
    log: Option<Wal>,
}

/// The offsets log is small: rewrite it from 1 MiB, at 4x its live size.
const OFFSETS_COMPACTION: Compaction = Compaction { min_bytes: 1 << 20, factor: 4 };
/// Bytes one committed offset is counted as, for compaction.
const OFFSET_COST: u64 = 64;

#[derive(serde::Serialize, serde::Deserialize)]
struct Meta {
    partitions: u32,
    max_age_ms: u64,
    max_bytes: u64,
    max_messages: u64,
}

/// Storage settings handed down from the engine.
pub struct StreamStorage<'a> {
    pub dir: Option<PathBuf>,
    pub fsync: FsyncPolicy,
    pub segment_bytes: u64,
    pub registry: &'a SyncRegistry,
}

impl Stream {
    pub fn create(name: &str, mut config: StreamConfig, mut storage: StreamStorage<'_>) -> Result<Stream> {
        if config.partitions == 0 || config.partitions > 4096 {
            return Err(Error::invalid("partitions must be between 1 and 4096"));
        }
        if config.tier == Tier::Memory {
            // The memory tier never touches the disk and is always bounded.
            storage.dir = None;
            if config.max_messages == 0 {
                config.max_messages = Tier::memory_default_max_messages();
            }
            if config.max_bytes == 0 {
                config.max_bytes = Tier::memory_default_max_bytes();
            }
        }
        if let Some(dir) = &storage.dir {
            fs::create_dir_all(dir).map_err(|e| Error::io("create stream dir", e))?;
            write_meta(dir, &config)?;
        }
        Stream::open_with(name, config, storage)
    }

    /// Opens a durable stream from its directory, if it exists.
    pub fn open(name: &str, storage: StreamStorage<'_>) -> Result<Option<Stream>> {
        let dir = storage.dir.as_ref().expect("open is for durable streams");
        let meta_path = dir.join("meta.json");
        let Ok(raw) = fs::read(&meta_path) else {
            return Ok(None);
        };
        let meta: Meta = serde_json::from_slice(&raw)
            .map_err(|e| Error::Internal(format!("corrupt {}: {e}", meta_path.display())))?;
        let config = StreamConfig {
            partitions: meta.partitions,
            max_age_ms: meta.max_age_ms,
            max_bytes: meta.max_bytes,
            max_messages: meta.max_messages,
            tier: Tier::Durable, // memory-tier streams never write a meta file
        };
        Stream::open_with(name, config, storage).map(Some)
    }

    fn open_with(name: &str, config: StreamConfig, storage: StreamStorage<'_>) -> Result<Stream> {
        let mut partitions = Vec::with_capacity(config.partitions as usize);
        let mut dedup = DedupWindow::default();
        for p in 0..config.partitions {
            let mut part = match &storage.dir {
                None => Partition::Memory(MemoryPartition::default()),
                Some(dir) => Partition::File(FilePartition::open(&dir.join(format!("p{p}")), storage.segment_bytes)?),
            };
            for (id, offset) in part.take_recent_ids() {
                dedup.insert(id, Position { partition: p, offset });
            }
            partitions.push(Mutex::new(part));
        }
        let offsets = match &storage.dir {
            None => Offsets { committed: HashMap::new(), log: None },
            Some(dir) => Offsets::open(&dir.join("offsets.log"))?,
        };
        if let Some(log) = &offsets.log {
            storage.registry.register(log.syncer());
        }
        Ok(Stream {
            name: name.to_owned(),
            layout: RwLock::new(Layout { config, partitions }),
            deleted: AtomicBool::new(false),
            dir: storage.dir.clone(),
            segment_bytes: storage.segment_bytes,
            round_robin: AtomicU32::new(0),
            appended: watch::channel(0).0,
            offsets: Mutex::new(offsets),
            fsync: storage.fsync,
            dedup: Mutex::new(dedup),
        })
    }

    pub fn config(&self) -> StreamConfig {
        self.layout.read().unwrap().config
    }

    fn check_partition(&self, layout: &Layout, p: u32) -> Result<()> {
        if (p as usize) < layout.partitions.len() {
            return Ok(());
        }
        Err(Error::NotFound(format!("stream {} has no partition {p} (it has {})", self.name, layout.partitions.len())))
    }

    fn partition(&self, p: u32) -> Result<()> {
        self.check_partition(&self.layout.read().unwrap(), p)
    }

    pub fn is_deleted(&self) -> bool {
        self.deleted.load(Ordering::Acquire)
    }

    fn gone(&self) -> Error {
        Error::NotFound(format!("stream {} was deleted", self.name))
    }

    fn route(&self, n: u32, r: &Record) -> u32 {
        if n == 1 {
            return 0;
        }
        match &r.key {
            Some(k) => crate::engine::key_partition(k, n),
            None => self.round_robin.fetch_add(1, Ordering::Relaxed) % n,
        }
    }

    /// Stores records; returns once they are durable as the policy asks.
    pub async fn publish(&self, records: &[Record], registry: &SyncRegistry) -> Result<Vec<Position>> {
        let (positions, pending) = if records.iter().any(|r| r.msg_id.is_some()) {
            self.publish_deduplicated(records, registry)?
        } else {
            self.append(&records.iter().collect::<Vec<_>>(), registry)?
        };
        pending.wait(self.fsync).await?;
        // Feeds wake only for what is durable.
        self.appended.send_modify(|v| *v = v.wrapping_add(1));
        Ok(positions)
    }

    /// Stores each record whose message id is new; a known id (earlier, or
    /// earlier in this batch) gets the position of its first copy.
    fn publish_deduplicated(
        &self,
        records: &[Record],
        registry: &SyncRegistry,
    ) -> Result<(Vec<Position>, PendingSync)> {
        enum Slot {
            Known(Position),
            SameAs(usize),
            Fresh(usize),
        }
        let mut window = self.dedup.lock().unwrap();
        let mut first_in_batch: HashMap<&str, usize> = HashMap::new();
        let mut fresh: Vec<&Record> = Vec::with_capacity(records.len());
        let mut slots = Vec::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            let slot = match r.msg_id.as_deref() {
                Some(id) => match (window.get(id), first_in_batch.get(id)) {
                    (Some(pos), _) => Slot::Known(pos),
                    (None, Some(&first)) => Slot::SameAs(first),
                    (None, None) => {
                        first_in_batch.insert(id, i);
                        fresh.push(r);
                        Slot::Fresh(fresh.len() - 1)
                    }
                },
                None => {
                    fresh.push(r);
                    Slot::Fresh(fresh.len() - 1)
                }
            };
            slots.push(slot);
        }
        let (stored, mut pending) =
            if fresh.is_empty() { (Vec::new(), PendingSync::none()) } else { self.append(&fresh, registry)? };
        let mut positions: Vec<Position> = Vec::with_capacity(records.len());
        let mut known_partitions = Vec::new();
        for slot in &slots {
            positions.push(match *slot {
                Slot::Known(pos) => {
                    known_partitions.push(pos.partition);
                    pos
                }
                Slot::SameAs(first) => positions[first],
                Slot::Fresh(k) => stored[k],
            });
        }
        for (r, pos) in records.iter().zip(&positions) {
            if let Some(id) = &r.msg_id {
                window.insert(id.clone(), *pos);
            }
        }
        drop(window);
        // A duplicate is acknowledged only once its first copy is durable
        // (that copy's own publish may still be waiting for its fsync).
        known_partitions.sort_unstable();
        known_partitions.dedup();
        for p in known_partitions {
            let point = self
                .layout
                .read()
                .unwrap()
                .partitions
                .get(p as usize)
                .and_then(|part| part.lock().unwrap().sync_point());
            if let Some((syncer, ticket)) = point {
                pending.add(syncer, ticket);
            }
        }
        Ok((positions, pending))
    }

    fn append(&self, records: &[&Record], registry: &SyncRegistry) -> Result<(Vec<Position>, PendingSync)> {
        let now = now_ms();
        let layout = self.layout.read().unwrap();
        if self.is_deleted() {
            return Err(self.gone());
        }
        let routes: Vec<u32> = records.iter().map(|r| self.route(layout.config.partitions, r)).collect();
        let mut positions = vec![Position { partition: 0, offset: 0 }; records.len()];
        let mut pending = PendingSync::none();
        for p in 0..layout.config.partitions {
            let batch: Vec<&Record> = records.iter().zip(&routes).filter(|(_, &rp)| rp == p).map(|(r, _)| *r).collect();
            if batch.is_empty() {
                continue;
            }
            let appended = {
                let mut part = layout.partitions[p as usize].lock().unwrap();
                let a = part.append(&batch, now)?;
                part.enforce_retention(&layout.config, now)?;
                a
            };
            let slots = routes.iter().enumerate().filter(|(_, &rp)| rp == p).map(|(slot, _)| slot);
            for (offset, slot) in (appended.first..).zip(slots) {
                positions[slot] = Position { partition: p, offset };
            }
            if let Some((syncer, ticket)) = appended.sync {
                registry.register(&syncer);
                pending.add(syncer, ticket);
            }
        }
        Ok((positions, pending))
    }

    pub fn read(&self, partition: u32, offset: u64, max: usize) -> Result<Vec<Message>> {
        let plan = {
            let layout = self.layout.read().unwrap();
            self.check_partition(&layout, partition)?;
            let plan =
                layout.partitions[partition as usize].lock().unwrap().plan_read(&self.name, partition, offset, max)?;
            plan
        };
        plan.execute(&self.name, partition)
    }

    pub fn enforce_retention(&self) -> Result<()> {
        let now = now_ms();
        let layout = self.layout.read().unwrap();
        if self.is_deleted() {
            return Ok(()); // its files are going away
        }
        for p in &layout.partitions {
            p.lock().unwrap().enforce_retention(&layout.config, now)?;
        }
        Ok(())
    }

    /// Marks the stream deleted once no append is running (appends hold the
    /// layout shared), wakes its feeds so they end, and returns its
    /// directory for the caller to remove.
    pub fn mark_deleted(&self) -> Option<PathBuf> {
        let _layout = self.layout.write().unwrap();
        self.deleted.store(true, Ordering::Release);
        self.appended.send_modify(|v| *v = v.wrapping_add(1));
        self.dir.clone()
    }

    /// Removes every retained message; offsets continue from where they
    /// were, and committed offsets inside the removed range move to its end.
    pub async fn purge(&self) -> Result<u64> {
        let (removed, pending) = self.purge_locked()?;
        pending.wait(self.fsync).await?;
        self.appended.send_modify(|v| *v = v.wrapping_add(1));
        Ok(removed)
    }

    fn purge_locked(&self) -> Result<(u64, PendingSync)> {
        let layout = self.layout.read().unwrap();
        if self.is_deleted() {
            return Err(self.gone());
        }
        let mut removed = 0;
        let mut ends = Vec::with_capacity(layout.partitions.len());
        for (i, p) in layout.partitions.iter().enumerate() {
            let mut part = p.lock().unwrap();
            removed += part.purge()?;
            ends.push((i as u32, part.latest()));
        }
        drop(layout);
        let mut o = self.offsets.lock().unwrap();
        let mut last = None;
        for (partition, end) in ends {
            let behind: Vec<String> = o
                .committed
                .iter()
                .filter(|((_, p), c)| *p == partition && **c + 1 < end)
                .map(|((g, _), _)| g.clone())
                .collect();
            for group in behind {
                o.committed.insert((group.clone(), partition), end - 1);
                if let Some(t) = o.append(&group, partition, end - 1)? {
                    last = Some(t);
                }
            }
        }
        drop(o);
        let pending = match last {
            Some((syncer, ticket)) => PendingSync::one(syncer, ticket),
            None => PendingSync::none(),
        };
        Ok((removed, pending))
    }

    /// Applies an update: new partitions first (empty directories are
    /// harmless if the meta write is lost), then the meta file, atomically.
    pub fn update(&self, update: &crate::engine::StreamUpdate) -> Result<StreamConfig> {
        let mut layout = self.layout.write().unwrap();
        if self.is_deleted() {
            return Err(self.gone());
        }
        let mut next = update.apply(&self.name, layout.config)?;
        if layout.config.tier == Tier::Memory {
            if next.max_messages == 0 {
                next.max_messages = Tier::memory_default_max_messages();
            }
            if next.max_bytes == 0 {
                next.max_bytes = Tier::memory_default_max_bytes();
            }
        }
        let mut added = Vec::new();
        for p in layout.config.partitions..next.partitions {
            added.push(Mutex::new(match &self.dir {
                None => Partition::Memory(MemoryPartition::default()),
                Some(dir) => Partition::File(FilePartition::open(&dir.join(format!("p{p}")), self.segment_bytes)?),
            }));
        }
        if let Some(dir) = &self.dir {
            write_meta(dir, &next)?;
        }
        layout.partitions.extend(added);
        layout.config = next;
        drop(layout);
        self.enforce_retention()?;
        self.appended.send_modify(|v| *v = v.wrapping_add(1));
        Ok(next)
    }

    pub fn info(&self) -> StreamInfo {
        let layout = self.layout.read().unwrap();
        let partitions = layout
            .partitions
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let p = p.lock().unwrap();
                PartitionInfo { partition: i as u32, earliest: p.earliest(), latest: p.latest() }
            })
            .collect();
        StreamInfo { config: layout.config, partitions }
    }

    /// Sizes and consumer-group lags, for broker metrics.
    pub fn stats(&self) -> StreamStats {
        let (mut messages, mut bytes) = (0, 0);
        let layout = self.layout.read().unwrap();
        for p in &layout.partitions {
            let p = p.lock().unwrap();
            messages += p.latest() - p.earliest();
            bytes += p.bytes();
        }
        let mut groups: Vec<String> = self.offsets.lock().unwrap().committed.keys().map(|(g, _)| g.clone()).collect();
        groups.sort_unstable();
        groups.dedup();
        StreamStats {
            name: self.name.clone(),
            tier: layout.config.tier,
            messages,
            bytes,
            groups: groups.iter().map(|g| self.group_state(g)).collect(),
        }
    }

    pub async fn commit(&self, group: &str, partition: u32, offset: u64) -> Result<()> {
        self.partition(partition)?;
        let appended = self.offsets.lock().unwrap().append(group, partition, offset)?;
        match appended {
            Some((syncer, ticket)) => PendingSync::one(syncer, ticket).wait(self.fsync).await,
            None => Ok(()),
        }
    }

    pub fn committed(&self, group: &str, partition: u32) -> Option<u64> {
        self.offsets.lock().unwrap().committed.get(&(group.to_owned(), partition)).copied()
    }

    pub fn get_offset(&self, group: &str, partition: u32) -> Result<u64> {
        self.partition(partition)?;
        self.committed(group, partition).ok_or_else(|| {
            Error::NotFound(format!("group {group} has no committed offset on {}/{partition}", self.name))
        })
    }

    pub fn group_state(&self, group: &str) -> GroupState {
        let partitions = self
            .info()
            .partitions
            .into_iter()
            .map(|p| {
                let committed = self.committed(group, p.partition);
                let next = committed.map_or(p.earliest, |c| c + 1).max(p.earliest);
                GroupPartitionState {
                    partition: p.partition,
                    committed,
                    latest: p.latest,
                    lag: p.latest.saturating_sub(next),
                }
            })
            .collect();
        GroupState { group: group.to_owned(), partitions }
    }

    /// An ordered feed from `spec.start`, woken by appends (no polling).
    pub fn subscribe(self: &Arc<Self>, spec: &SubscribeSpec) -> Result<MessageStream> {
        let layout = self.layout.read().unwrap();
        if self.is_deleted() {
            return Err(self.gone());
        }
        let parts: Vec<u32> = match spec.partition {
            Some(p) => {
                self.check_partition(&layout, p)?;
                vec![p]
            }
            None => (0..layout.config.partitions).collect(),
        };
        if spec.start == StartFrom::Committed && spec.group.is_none() {
            return Err(Error::invalid("start=committed needs a consumer group"));
        }
        // Subscribe to the change signal before computing positions, so an
        // append racing with this call still wakes us.
        let signal = self.appended.subscribe();
        let cursors: Vec<(u32, u64)> = parts
            .into_iter()
            .map(|p| {
                let part = layout.partitions[p as usize].lock().unwrap();
                let next = match spec.start {
                    StartFrom::Earliest => part.earliest(),
                    StartFrom::Latest => part.latest(),
                    StartFrom::Offset(o) => o,
                    StartFrom::Committed => {
                        let group = spec.group.as_deref().unwrap_or_default();
                        self.committed(group, p).map_or(part.earliest(), |c| c + 1)
                    }
                };
                (p, next)
            })
            .collect();
        drop(layout);
        let all = spec.partition.is_none();
        let state = Feed { stream: self.clone(), cursors, all, buffer: VecDeque::new(), signal, failed: false };
        Ok(Box::pin(futures::stream::unfold(state, |mut feed| async move {
            let item = feed.next().await?;
            Some((item, feed))
        })))
    }
}

struct Feed {
    stream: Arc<Stream>,
    cursors: Vec<(u32, u64)>,
    /// Follows every partition, including ones an update adds later.
    all: bool,
    buffer: VecDeque<Message>,
    signal: watch::Receiver<u64>,
    /// An error was handed out: the feed ends (a retry would fail the same way).
    failed: bool,
}

impl Feed {
    async fn next(&mut self) -> Option<Result<Message>> {
        loop {
            if let Some(m) = self.buffer.pop_front() {
                return Some(Ok(m));
            }
            if self.failed {
                return None;
            }
            self.signal.borrow_and_update();
            if self.stream.is_deleted() {
                return Some(Err(self.stream.gone()));
            }
            if self.all {
                let count = self.stream.config().partitions;
                for p in self.cursors.len() as u32..count {
                    self.cursors.push((p, 0)); // a new partition: all of it is new
                }
            }
            for (p, next) in self.cursors.iter_mut() {
                match self.stream.read(*p, *next, SUBSCRIBE_BATCH) {
                    Ok(batch) => {
                        if let Some(last) = batch.last() {
                            *next = last.offset + 1;
                        }
                        self.buffer.extend(batch);
                    }
                    Err(e) if self.buffer.is_empty() => {
                        self.failed = true;
                        return Some(Err(e));
                    }
                    Err(_) => break, // deliver what came before first
                }
            }
            if self.buffer.is_empty() && self.signal.changed().await.is_err() {
                return None; // stream dropped: engine closed
            }
        }
    }
}

fn write_meta(dir: &Path, config: &StreamConfig) -> Result<()> {
    let meta = Meta {
        partitions: config.partitions,
        max_age_ms: config.max_age_ms,
        max_bytes: config.max_bytes,
        max_messages: config.max_messages,
    };
    let tmp = dir.join("meta.json.tmp");
    fs::write(&tmp, serde_json::to_vec(&meta).expect("meta serializes"))
        .map_err(|e| Error::io("write stream meta", e))?;
    fs::rename(&tmp, dir.join("meta.json")).map_err(|e| Error::io("install stream meta", e))?;
    super::log::sync_dir(&dir.join("meta.json"))
}

impl Offsets {
    fn open(path: &Path) -> Result<Offsets> {
        let mut committed = HashMap::new();
        let log = Wal::open(path, OFFSETS_COMPACTION, |body| {
            let mut r = Reader::new(body);
            let (group, partition, offset) = (r.string()?, r.u32()?, r.u64()?);
            committed.insert((group, partition), offset);
            Ok(())
        })?;
        let mut o = Offsets { committed, log: Some(log) };
        o.compact_if_large()?;
        Ok(o)
    }

    fn append(&mut self, group: &str, partition: u32, offset: u64) -> Result<Option<(Arc<super::log::Syncer>, u64)>> {
        let Some(log) = self.log.as_mut() else {
            self.committed.insert((group.to_owned(), partition), offset);
            return Ok(None);
        };
        let sync = log.append(|b| encode_commit(b, group, partition, offset))?;
        // Only a logged commit counts.
        self.committed.insert((group.to_owned(), partition), offset);
        self.compact_if_large()?;
        Ok(Some(sync))
    }

    /// Rewrites the log as one record per (group, partition) when it has
    /// grown far beyond that.
    fn compact_if_large(&mut self) -> Result<()> {
        let Some(log) = self.log.as_mut() else { return Ok(()) };
        let committed = &self.committed;
        log.compact_if_due(committed.len() as u64 * OFFSET_COST, |buf| {
            for ((g, p), o) in committed {
                codec::put_frame(buf, |b| encode_commit(b, g, *p, *o));
            }
        })
    }
}

fn encode_commit(b: &mut Vec<u8>, group: &str, partition: u32, offset: u64) {
    codec::put_bytes(b, group.as_bytes());
    b.extend_from_slice(&partition.to_le_bytes());
    b.extend_from_slice(&offset.to_le_bytes());
}
