//! The embedded engine: everything in this process, in memory (`mem://`) or
//! durable on disk (`file:///dir`). Clients of one process that open the same
//! directory (or the same `mem://name`) share one engine; a directory is
//! locked against other processes.

mod check;
mod codec;
mod dedup;
mod fault;
#[cfg(test)]
pub(crate) mod fault_tests;
#[doc(hidden)]
pub mod fuzzing;
mod kv;
mod log;
mod partition;
mod queue;
mod stream;
mod txn;
mod wal;

use std::collections::HashMap;
use std::fs::{self, File};
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use once_cell::sync::Lazy;

pub use self::check::{check, CheckReport};
pub use self::codec::{frames as decode_frames, Frame};
pub use self::log::FsyncPolicy;
pub use self::partition::decode_record;

use self::kv::Bucket;
use self::log::SyncRegistry;
use self::queue::Queue;
use self::stream::{Stream, StreamStorage};
use crate::engine::*;
use crate::error::{Error, Result};
use crate::names;

pub(crate) fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// How often the maintenance thread expires keys and flushes.
const TICK: Duration = Duration::from_millis(20);

#[derive(Debug, Clone)]
/// Settings of the embedded engine, from [`EngineConfig`].
pub struct EmbeddedConfig {
    /// `None` = in memory.
    pub dir: Option<PathBuf>,
    /// When appends are synced to disk.
    pub fsync: FsyncPolicy,
    /// A partition rolls to a new segment file past this size.
    pub segment_bytes: u64,
    /// Largest record accepted.
    pub max_payload_bytes: usize,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig { dir: None, fsync: FsyncPolicy::Batch, segment_bytes: 64 << 20, max_payload_bytes: 8 << 20 }
    }
}

struct Inner {
    cfg: EmbeddedConfig,
    streams: RwLock<HashMap<String, Arc<Stream>>>,
    queues: RwLock<HashMap<String, Arc<Queue>>>,
    buckets: RwLock<HashMap<String, Arc<Bucket>>>,
    /// Serializes opening/creating resources (lookups stay lock-free-ish).
    opening: Mutex<()>,
    registry: SyncRegistry,
    /// Memory-tier fan-out, apart from the streams so it never touches them.
    live: crate::engine::live::LiveHub,
    txn_log: txn::TxnLog,
    _dir_lock: Option<File>,
}

/// Stops and joins the maintenance thread when the last client lets go.
struct Shared {
    inner: Arc<Inner>,
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        *self.stop.0.lock().unwrap() = true;
        self.stop.1.notify_all();
        if let Some(t) = self.thread.lock().unwrap().take() {
            let _ = t.join();
        }
        if !matches!(self.inner.cfg.fsync, FsyncPolicy::Never) {
            let _ = self.inner.registry.sync_dirty();
        }
    }
}

#[derive(Clone)]
/// The in-process engine (`mem://`, `file:///dir`): streams, queues and KV in memory or in a data directory. Cheap to clone.
pub struct EmbeddedEngine {
    shared: Arc<Shared>,
}

static OPEN_ENGINES: Lazy<Mutex<HashMap<String, Weak<Shared>>>> = Lazy::new(Default::default);

impl EmbeddedEngine {
    /// Opens an engine. `share_key` (a canonical directory, or a `mem://`
    /// name) makes clients of this process share it.
    pub fn open(cfg: EmbeddedConfig, share_key: Option<String>) -> Result<EmbeddedEngine> {
        let Some(key) = share_key else {
            return Self::open_new(cfg);
        };
        let mut open = OPEN_ENGINES.lock().unwrap();
        if let Some(shared) = open.get(&key).and_then(Weak::upgrade) {
            return Ok(EmbeddedEngine { shared });
        }
        let engine = Self::open_new(cfg)?;
        open.retain(|_, w| w.strong_count() > 0);
        open.insert(key, Arc::downgrade(&engine.shared));
        Ok(engine)
    }

    fn open_new(cfg: EmbeddedConfig) -> Result<EmbeddedEngine> {
        let dir_lock = match &cfg.dir {
            Some(dir) => Some(lock_dir(dir)?),
            None => None,
        };
        let inner = Arc::new(Inner {
            cfg,
            streams: Default::default(),
            queues: Default::default(),
            buckets: Default::default(),
            opening: Mutex::new(()),
            registry: SyncRegistry::default(),
            live: Default::default(),
            txn_log: txn::TxnLog::memory(),
            _dir_lock: dir_lock,
        });
        if let Some(dir) = &inner.cfg.dir {
            txn::TxnLog::recover(&inner, dir, &inner.registry)?;
        }
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let thread = {
            let weak = Arc::downgrade(&inner);
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("flowmesh-maint".into())
                .spawn(move || {
                    crate::signals::block_sigpipe_on_this_thread();
                    maintenance(weak, stop)
                })
                .map_err(|e| Error::Internal(format!("spawn maintenance thread: {e}")))?
        };
        let shared = Arc::new(Shared { inner, stop, thread: Mutex::new(Some(thread)) });
        Ok(EmbeddedEngine { shared })
    }

    fn inner(&self) -> &Inner {
        &self.shared.inner
    }
}

/// How long a busy data directory lock is tried before giving up.
const LOCK_PATIENCE: Duration = Duration::from_secs(2);

fn lock_dir(dir: &std::path::Path) -> Result<File> {
    fs::create_dir_all(dir).map_err(|e| Error::io(&format!("create data directory {}", dir.display()), e))?;
    let f = File::create(dir.join("LOCK")).map_err(|e| Error::io("create LOCK file", e))?;
    // A lock just released can still be held for a moment: a child process
    // being spawned anywhere in this process shares every open file
    // description (this lock's too) until it execs. So a busy lock is tried
    // again for a while before it counts as another process's.
    let deadline = Instant::now() + LOCK_PATIENCE;
    // SAFETY: flock on a valid, owned fd.
    while unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        if Instant::now() >= deadline {
            return Err(Error::Unavailable(format!("data directory {} is in use by another process", dir.display())));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // Finish deletes a crash interrupted (their resources are already gone).
    let trash = dir.join(TRASH);
    if trash.exists() {
        fs::remove_dir_all(&trash).map_err(|e| Error::io("remove deleted resources", e))?;
    }
    Ok(f)
}

/// Where a deleted resource's directory is moved (one atomic rename) before
/// its files are removed, so a crash leaves the resource whole or gone.
const TRASH: &str = "trash";

/// Moves `path` into the trash (durably), then removes it.
fn remove_resource_dir(base: &std::path::Path, path: &std::path::Path) -> Result<()> {
    let trash = base.join(TRASH);
    fs::create_dir_all(&trash).map_err(|e| Error::io("create trash directory", e))?;
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let target = trash.join(format!("{}-{}-{seq}", std::process::id(), now_ms()));
    match fs::rename(path, &target) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(&format!("delete {}", path.display()), e)),
    }
    for dir in [path.parent(), Some(trash.as_path())].into_iter().flatten() {
        if let Ok(d) = File::open(dir) {
            d.sync_all().map_err(|e| Error::io("fsync directory", e))?;
        }
    }
    fs::remove_dir_all(&target).map_err(|e| Error::io(&format!("remove {}", target.display()), e))
}

/// Qualified names of the resources of one kind on disk (`kind/t/ns/name`
/// holding `marker`) that start with `prefix`.
fn names_on_disk(base: &std::path::Path, kind: &str, marker: &str, prefix: &str, out: &mut Vec<String>) {
    let list = |dir: &std::path::Path| -> Vec<String> {
        let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
        entries
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .collect()
    };
    let root = base.join(kind);
    for t in list(&root) {
        for ns in list(&root.join(&t)) {
            let scope = format!("{t}/{ns}/");
            if !(scope.starts_with(prefix) || prefix.starts_with(&scope)) {
                continue;
            }
            for name in list(&root.join(&t).join(&ns)) {
                let full = format!("{scope}{name}");
                if full.starts_with(prefix)
                    && names::check_qualified(&full).is_ok()
                    && root.join(&t).join(&ns).join(&name).join(marker).exists()
                {
                    out.push(full);
                }
            }
        }
    }
}

fn maintenance(inner: Weak<Inner>, stop: Arc<(Mutex<bool>, Condvar)>) {
    let mut last_flush = Instant::now();
    let mut last_error = String::new();
    let mut last_retention = Instant::now();
    loop {
        {
            let stopped = stop.0.lock().unwrap();
            let (stopped, _) = stop.1.wait_timeout(stopped, TICK).unwrap();
            if *stopped {
                return;
            }
        }
        let Some(inner) = inner.upgrade() else { return };
        let buckets: Vec<Arc<Bucket>> = inner.buckets.read().unwrap().values().cloned().collect();
        for b in buckets {
            b.expire();
        }
        if let FsyncPolicy::Interval(ms) = inner.cfg.fsync {
            if last_flush.elapsed() >= Duration::from_millis(ms) {
                match inner.registry.sync_dirty() {
                    // A stopped file fails every flush: say so once.
                    Err(e) if e.to_string() != last_error => {
                        tracing::error!(error = %e, "background fsync failed");
                        last_error = e.to_string();
                    }
                    _ => {}
                }
                last_flush = Instant::now();
            }
        }
        if last_retention.elapsed() >= Duration::from_secs(1) {
            let streams: Vec<Arc<Stream>> = inner.streams.read().unwrap().values().cloned().collect();
            for s in streams {
                if let Err(e) = s.enforce_retention() {
                    tracing::error!(error = %e, "retention failed");
                }
            }
            last_retention = Instant::now();
        }
    }
}

fn resource_dir(base: &std::path::Path, kind: &str, name: &str) -> PathBuf {
    let mut p = base.join(kind);
    for seg in name.split('/') {
        p.push(seg);
    }
    p
}

impl Inner {
    fn storage(&self, name: &str) -> StreamStorage<'_> {
        StreamStorage {
            dir: self.cfg.dir.as_ref().map(|d| resource_dir(d, "streams", name)),
            fsync: self.cfg.fsync,
            segment_bytes: self.cfg.segment_bytes,
            registry: &self.registry,
        }
    }

    /// Finds a stream, opening it from disk, or creating it with `create`.
    fn stream(&self, name: &str, create: Option<StreamConfig>) -> Result<Arc<Stream>> {
        self.resource(&self.streams, name, || {
            let opened = match self.cfg.dir {
                Some(_) => Stream::open(name, self.storage(name))?,
                None => None,
            };
            match (opened, create) {
                (Some(s), _) => Ok(s),
                (None, Some(cfg)) => Stream::create(name, cfg, self.storage(name)),
                (None, None) => Err(Error::NotFound(format!("stream {name} does not exist"))),
            }
        })
    }

    fn queue(&self, name: &str) -> Result<Arc<Queue>> {
        self.resource(&self.queues, name, || {
            let path = self.cfg.dir.as_ref().map(|d| resource_dir(d, "queues", name).join("queue.log"));
            Queue::open(name, path.as_deref(), self.cfg.fsync, &self.registry)
        })
    }

    /// A queue that was used before (open, or on disk); NotFound otherwise.
    fn existing_queue(&self, name: &str) -> Result<Arc<Queue>> {
        names::check_qualified(name)?;
        let known = self.queues.read().unwrap().contains_key(name)
            || self.cfg.dir.as_ref().is_some_and(|d| resource_dir(d, "queues", name).join("queue.log").exists());
        if !known {
            return Err(Error::NotFound(format!("queue {name} does not exist")));
        }
        self.queue(name)
    }

    fn bucket(&self, name: &str) -> Result<Arc<Bucket>> {
        self.resource(&self.buckets, name, || {
            let path = self.cfg.dir.as_ref().map(|d| resource_dir(d, "kv", name).join("bucket.log"));
            Bucket::open(name, path.as_deref(), self.cfg.fsync, &self.registry)
        })
    }

    /// Looks a resource up by its checked name, opening it once (double
    /// checked under `opening`, so two first uses never open it twice).
    fn resource<T>(
        &self,
        map: &RwLock<HashMap<String, Arc<T>>>,
        name: &str,
        open: impl FnOnce() -> Result<T>,
    ) -> Result<Arc<T>> {
        names::check_qualified(name)?;
        if let Some(r) = map.read().unwrap().get(name) {
            return Ok(r.clone());
        }
        let _guard = self.opening.lock().unwrap();
        if let Some(r) = map.read().unwrap().get(name) {
            return Ok(r.clone());
        }
        let r = Arc::new(open()?);
        map.write().unwrap().insert(name.to_owned(), r.clone());
        Ok(r)
    }

    /// Names of one kind, open ones (including memory-only) and on disk.
    fn list<T>(
        &self,
        map: &RwLock<HashMap<String, Arc<T>>>,
        kind: &str,
        marker: &str,
        prefix: &str,
    ) -> Result<Vec<String>> {
        names::check_prefix(prefix)?;
        let _guard = self.opening.lock().unwrap();
        let mut names: Vec<String> = map.read().unwrap().keys().filter(|n| n.starts_with(prefix)).cloned().collect();
        if let Some(dir) = &self.cfg.dir {
            names_on_disk(dir, kind, marker, prefix, &mut names);
        }
        names.sort_unstable();
        names.dedup();
        Ok(names)
    }

    /// Takes a resource out of the engine (NotFound if it neither is open
    /// nor exists on disk), lets `close` detach it, then removes its files.
    fn delete<T>(
        &self,
        map: &RwLock<HashMap<String, Arc<T>>>,
        kind: &str,
        marker: &str,
        name: &str,
        what: &str,
        close: impl FnOnce(&T),
    ) -> Result<()> {
        names::check_qualified(name)?;
        let _guard = self.opening.lock().unwrap();
        let open = map.write().unwrap().remove(name);
        let dir = self.cfg.dir.as_ref().map(|d| resource_dir(d, kind, name)).filter(|d| d.join(marker).exists());
        if open.is_none() && dir.is_none() {
            return Err(Error::NotFound(format!("{what} {name} does not exist")));
        }
        if let Some(r) = &open {
            close(r);
        }
        // Moved away under the lock, so a re-creation never sees old files.
        if let (Some(base), Some(dir)) = (&self.cfg.dir, &dir) {
            remove_resource_dir(base, dir)?;
        }
        Ok(())
    }

    /// A KV write; one racing a bucket delete lands in the re-created bucket.
    async fn put(&self, bucket: &str, key: &str, value: Bytes, ttl_ms: u64, expected: Option<u64>) -> Result<u64> {
        loop {
            let b = self.bucket(bucket)?;
            match b.put(key, value.clone(), ttl_ms, expected).await {
                Err(_) if b.is_deleted() => continue,
                r => return r,
            }
        }
    }

    fn check_size(&self, size: usize) -> Result<()> {
        if size > self.cfg.max_payload_bytes {
            return Err(Error::TooLarge(format!(
                "message of {size} bytes exceeds the limit of {} bytes",
                self.cfg.max_payload_bytes
            )));
        }
        Ok(())
    }
}

#[async_trait]
impl Engine for EmbeddedEngine {
    fn connection(&self) -> Option<Arc<crate::engine::connection::ConnectionState>> {
        None
    }

    async fn health(&self) -> Result<()> {
        Ok(())
    }

    async fn create_stream(&self, stream: &str, config: StreamConfig) -> Result<()> {
        let s = self.inner().stream(stream, Some(config))?;
        if s.config().partitions != config.partitions {
            return Err(Error::AlreadyExists(format!(
                "stream {stream} exists with {} partitions",
                s.config().partitions
            )));
        }
        if s.config().tier != config.tier {
            return Err(Error::AlreadyExists(format!("stream {stream} exists in the {} tier", s.config().tier.name())));
        }
        Ok(())
    }

    async fn publish(&self, stream: &str, records: Vec<Record>) -> Result<Vec<Position>> {
        for r in &records {
            self.inner().check_size(r.size())?;
        }
        if records.is_empty() {
            return Ok(Vec::new());
        }
        // A delete racing this publish: it lands in the re-created stream.
        loop {
            let s = self.inner().stream(stream, Some(StreamConfig::default()))?;
            match s.publish(&records, &self.inner().registry).await {
                Err(_) if s.is_deleted() => continue,
                r => return r,
            }
        }
    }

    async fn publish_live(&self, stream: &str, record: Record, _ack: bool) -> Result<()> {
        self.inner().check_size(record.size())?;
        names::check_qualified(stream)?;
        self.inner().live.publish(stream, record, now_ms());
        Ok(())
    }

    async fn publish_replicated(&self, _stream: &str, _records: Vec<Record>) -> Result<Vec<Position>> {
        Err(Error::Unavailable(format!(
            "the replicated tier needs copies on several servers; this embedded engine ({}) keeps one copy on this machine: use nats:// on a cluster of 3+ servers",
            if self.inner().cfg.dir.is_some() { "file://" } else { "mem://" }
        )))
    }

    async fn read(&self, stream: &str, partition: u32, offset: u64, max: usize) -> Result<Vec<Message>> {
        self.inner().stream(stream, None)?.read(partition, offset, max)
    }

    async fn stream_info(&self, stream: &str) -> Result<StreamInfo> {
        Ok(self.inner().stream(stream, None)?.info())
    }

    async fn subscribe(&self, stream: &str, spec: SubscribeSpec) -> Result<MessageStream> {
        // Subscribing creates the stream, so a consumer may start before producers.
        let live = crate::engine::live::wants_live(&spec).then(|| self.inner().live.subscribe(stream));
        let stored = self.inner().stream(stream, Some(StreamConfig::default()))?.subscribe(&spec)?;
        Ok(match live {
            Some(rx) => crate::engine::live::merge(stored, crate::engine::live::feed(rx)),
            None => stored,
        })
    }

    async fn commit_offset(&self, stream: &str, group: &str, partition: u32, offset: u64) -> Result<()> {
        names::check_group(group)?;
        self.inner().stream(stream, None)?.commit(group, partition, offset).await
    }

    async fn get_offset(&self, stream: &str, group: &str, partition: u32) -> Result<u64> {
        names::check_group(group)?;
        self.inner().stream(stream, None)?.get_offset(group, partition)
    }

    async fn group_state(&self, stream: &str, group: &str) -> Result<GroupState> {
        names::check_group(group)?;
        Ok(self.inner().stream(stream, None)?.group_state(group))
    }

    async fn enqueue(&self, queue: &str, record: Record, delay_ms: u64, priority: i32) -> Result<u64> {
        self.inner().check_size(record.size())?;
        loop {
            let q = self.inner().queue(queue)?;
            match q.enqueue(record.clone(), delay_ms, priority).await {
                Err(_) if q.is_deleted() => continue,
                r => return r,
            }
        }
    }

    async fn reserve(&self, queue: &str, max: usize, visibility_ms: u64, wait_ms: u64) -> Result<Vec<Job>> {
        self.inner().queue(queue)?.reserve(max, visibility_ms, wait_ms).await
    }

    async fn ack(&self, queue: &str, job_id: u64) -> Result<()> {
        self.inner().queue(queue)?.ack(job_id).await
    }

    async fn nack(&self, queue: &str, job_id: u64, delay_ms: u64) -> Result<()> {
        self.inner().queue(queue)?.nack(job_id, delay_ms).await
    }

    async fn queue_stats(&self, queue: &str) -> Result<QueueStats> {
        self.inner().queue(queue)?.stats().await
    }

    async fn set_retry_policy(&self, queue: &str, policy: RetryPolicy) -> Result<()> {
        self.inner().queue(queue)?.set_policy(policy).await
    }

    async fn get_retry_policy(&self, queue: &str) -> Result<RetryPolicy> {
        Ok(self.inner().queue(queue)?.policy())
    }

    async fn dlq_list(&self, queue: &str, max: usize) -> Result<Vec<Job>> {
        self.inner().queue(queue)?.dlq_list(max).await
    }

    async fn dlq_replay(&self, queue: &str, job_id: u64) -> Result<()> {
        self.inner().queue(queue)?.dlq_replay(job_id).await
    }

    async fn dlq_replay_all(&self, queue: &str, header: Option<(String, String)>) -> Result<u64> {
        self.inner().queue(queue)?.dlq_replay_all(header).await
    }

    async fn kv_set(&self, bucket: &str, key: &str, value: Bytes, ttl_ms: u64) -> Result<u64> {
        names::check_key(key)?;
        self.inner().check_size(value.len())?;
        self.inner().put(bucket, key, value, ttl_ms, None).await
    }

    async fn kv_cas(&self, bucket: &str, key: &str, value: Bytes, expected: u64, ttl_ms: u64) -> Result<u64> {
        names::check_key(key)?;
        self.inner().check_size(value.len())?;
        self.inner().put(bucket, key, value, ttl_ms, Some(expected)).await
    }

    async fn kv_get(&self, bucket: &str, key: &str) -> Result<KvEntry> {
        names::check_key(key)?;
        self.inner().bucket(bucket)?.get(key)
    }

    async fn kv_delete(&self, bucket: &str, key: &str) -> Result<bool> {
        names::check_key(key)?;
        self.inner().bucket(bucket)?.delete(key).await
    }

    async fn kv_exists(&self, bucket: &str, key: &str) -> Result<bool> {
        names::check_key(key)?;
        Ok(self.inner().bucket(bucket)?.exists(key))
    }

    async fn kv_keys(&self, bucket: &str, prefix: &str) -> Result<Vec<String>> {
        Ok(self.inner().bucket(bucket)?.keys(prefix))
    }

    async fn kv_watch(&self, bucket: &str, prefix: &str) -> Result<KvEventStream> {
        Ok(self.inner().bucket(bucket)?.watch(prefix))
    }

    async fn kv_watch_resume(&self, bucket: &str, prefix: &str, after: Option<WatchCursor>) -> Result<ResumedWatch> {
        self.inner().bucket(bucket)?.watch_resume(prefix, after)
    }

    async fn kv_txn(&self, ops: Vec<TxnOp>) -> Result<Vec<TxnResult>> {
        self.inner().kv_txn(ops).await
    }

    async fn sync(&self) -> Result<()> {
        self.inner().registry.sync_dirty()
    }

    async fn list_streams(&self, prefix: &str) -> Result<Vec<String>> {
        self.inner().list(&self.inner().streams, "streams", "meta.json", prefix)
    }

    async fn list_queues(&self, prefix: &str) -> Result<Vec<String>> {
        self.inner().list(&self.inner().queues, "queues", "queue.log", prefix)
    }

    async fn list_buckets(&self, prefix: &str) -> Result<Vec<String>> {
        self.inner().list(&self.inner().buckets, "kv", "bucket.log", prefix)
    }

    async fn delete_stream(&self, stream: &str) -> Result<()> {
        self.inner().delete(&self.inner().streams, "streams", "meta.json", stream, "stream", |s| {
            s.mark_deleted();
        })
    }

    async fn delete_queue(&self, queue: &str) -> Result<()> {
        self.inner().delete(&self.inner().queues, "queues", "queue.log", queue, "queue", Queue::mark_deleted)
    }

    async fn delete_bucket(&self, bucket: &str) -> Result<()> {
        self.inner().delete(&self.inner().buckets, "kv", "bucket.log", bucket, "bucket", Bucket::mark_deleted)
    }

    async fn purge_stream(&self, stream: &str) -> Result<u64> {
        self.inner().stream(stream, None)?.purge().await
    }

    async fn purge_queue(&self, queue: &str) -> Result<u64> {
        self.inner().existing_queue(queue)?.purge().await
    }

    async fn extend(&self, queue: &str, job_id: u64, visibility_ms: u64) -> Result<()> {
        self.inner().queue(queue)?.extend(job_id, visibility_ms).await
    }

    async fn update_stream(&self, stream: &str, update: StreamUpdate) -> Result<StreamConfig> {
        self.inner().stream(stream, None)?.update(&update)
    }

    async fn inventory(&self) -> Result<Inventory> {
        let inner = self.inner();
        let mut inv = Inventory::default();
        let streams: Vec<Arc<Stream>> = inner.streams.read().unwrap().values().cloned().collect();
        inv.streams = streams.iter().map(|s| s.stats()).collect();
        let queues: Vec<(String, Arc<Queue>)> =
            inner.queues.read().unwrap().iter().map(|(n, q)| (n.clone(), q.clone())).collect();
        for (name, q) in queues {
            inv.queues.push((name, q.stats().await?));
        }
        let buckets: Vec<(String, Arc<Bucket>)> =
            inner.buckets.read().unwrap().iter().map(|(n, b)| (n.clone(), b.clone())).collect();
        inv.buckets = buckets.into_iter().map(|(n, b)| (n, b.keys("").len() as u64)).collect();
        inv.streams.sort_by(|a, b| a.name.cmp(&b.name));
        inv.queues.sort_by(|a, b| a.0.cmp(&b.0));
        inv.buckets.sort();
        if let Some(dir) = &inner.cfg.dir {
            inv.storage_bytes = dir_bytes(dir);
        }
        Ok(inv)
    }
}

/// Total size of the files under `dir` (best effort: unreadable entries count 0).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(_) => e.metadata().map_or(0, |m| m.len()),
            Err(_) => 0,
        })
        .sum()
}
