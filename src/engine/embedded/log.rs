//! An append-only file with group-commit fsync: many writers append under
//! their owner's lock, then wait for durability outside it, so one fsync
//! covers every append that happened before it.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crate::error::{Error, Result};

use super::codec;

/// When acknowledged writes reach stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fsync before every call returns (concurrent calls share one fsync).
    /// Survives power loss; slowest for single small writes.
    Batch,
    /// fsync in the background every N ms: survives a process crash at once,
    /// a power loss can lose the last interval.
    Interval(u64),
    /// Never fsync explicitly: the OS writes back when it likes. Survives a
    /// process crash (data is in the page cache), not a power loss.
    Never,
}

/// Tracks what was written and what is known durable for one file.
pub struct Syncer {
    file: File,
    written: AtomicU64,
    synced: Mutex<u64>,
    /// Already in a SyncRegistry: registering is then a no-op.
    registered: std::sync::atomic::AtomicBool,
}

impl Syncer {
    /// Makes every append with `ticket <= ticket` durable.
    pub fn sync_to(&self, ticket: u64) -> Result<()> {
        let mut synced = self.synced.lock().unwrap();
        if *synced >= ticket {
            return Ok(()); // someone else's fsync covered us
        }
        let target = self.written.load(Ordering::Acquire);
        self.file.sync_data().map_err(|e| Error::io("fsync", e))?;
        *synced = target;
        Ok(())
    }

    /// The ticket of the latest append.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    pub fn sync_all(&self) -> Result<()> {
        self.sync_to(self.written.load(Ordering::Acquire))
    }

    pub fn dirty(&self) -> bool {
        *self.synced.lock().unwrap() < self.written.load(Ordering::Acquire)
    }
}

/// Files that the background interval flusher should visit.
#[derive(Default)]
pub struct SyncRegistry {
    files: Mutex<Vec<Weak<Syncer>>>,
}

impl SyncRegistry {
    /// Adds a file once; later calls for the same file cost one atomic swap.
    pub fn register(&self, s: &Arc<Syncer>) {
        if s.registered.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut files = self.files.lock().unwrap();
        files.retain(|w| w.strong_count() > 0);
        files.push(Arc::downgrade(s));
    }

    /// fsyncs every dirty file; returns the first error.
    pub fn sync_dirty(&self) -> Result<()> {
        let live: Vec<Arc<Syncer>> = {
            let mut files = self.files.lock().unwrap();
            files.retain(|w| w.strong_count() > 0);
            files.iter().filter_map(Weak::upgrade).collect()
        };
        let mut first = Ok(());
        for s in live.iter().filter(|s| s.dirty()) {
            if let Err(e) = s.sync_all() {
                first = first.and(Err(e));
            }
        }
        first
    }
}

pub struct LogFile {
    path: PathBuf,
    file: File,
    len: u64,
    syncer: Arc<Syncer>,
}

impl LogFile {
    /// Opens (or creates) a log, drops a torn tail, and returns its valid bytes.
    pub fn open(path: &Path) -> Result<(LogFile, Vec<u8>)> {
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(&format!("open {}", path.display()), e))?;
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(|e| Error::io("read log", e))?;
        let (_, valid) = codec::frames(&data);
        if valid < data.len() {
            tracing::warn!(path = %path.display(), dropped = data.len() - valid, "dropping torn log tail");
            file.set_len(valid as u64).map_err(|e| Error::io("truncate torn tail", e))?;
            data.truncate(valid);
        }
        if !existed {
            sync_dir(path)?;
        }
        let log = LogFile::wrap(path, file, valid as u64)?;
        Ok((log, data))
    }

    /// Atomically replaces the log at `path` with `contents` (compaction).
    pub fn replace(path: &Path, contents: &[u8]) -> Result<LogFile> {
        let tmp = path.with_extension("compact");
        let mut f = File::create(&tmp).map_err(|e| Error::io("create compacted log", e))?;
        f.write_all(contents).map_err(|e| Error::io("write compacted log", e))?;
        f.sync_all().map_err(|e| Error::io("fsync compacted log", e))?;
        fs::rename(&tmp, path).map_err(|e| Error::io("install compacted log", e))?;
        sync_dir(path)?;
        let file =
            OpenOptions::new().read(true).append(true).open(path).map_err(|e| Error::io("reopen compacted log", e))?;
        LogFile::wrap(path, file, contents.len() as u64)
    }

    fn wrap(path: &Path, file: File, len: u64) -> Result<LogFile> {
        let dup = file.try_clone().map_err(|e| Error::io("dup log fd", e))?;
        let syncer = Arc::new(Syncer {
            file: dup,
            written: AtomicU64::new(0),
            synced: Mutex::new(0),
            registered: std::sync::atomic::AtomicBool::new(false),
        });
        Ok(LogFile { path: path.to_owned(), file, len, syncer })
    }

    /// Appends bytes (whole frames) in one write; returns a ticket for `Syncer::sync_to`.
    pub fn append(&mut self, buf: &[u8]) -> Result<u64> {
        if let Err(e) = self.file.write_all(buf) {
            // Cut off a partial write so the log stays a sequence of whole frames.
            let _ = self.file.set_len(self.len);
            return Err(Error::io(&format!("append to {}", self.path.display()), e));
        }
        self.len += buf.len() as u64;
        Ok(self.syncer.written.fetch_add(1, Ordering::AcqRel) + 1)
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn syncer(&self) -> &Arc<Syncer> {
        &self.syncer
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// fsyncs the directory holding `path` so a new or renamed file survives a crash.
pub fn sync_dir(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io("fsync directory", e))?;
    }
    Ok(())
}

/// Applies the policy after an append made outside the owner's lock.
pub fn make_durable(policy: FsyncPolicy, syncer: &Syncer, ticket: u64) -> Result<()> {
    match policy {
        FsyncPolicy::Batch => blocking_io(|| syncer.sync_to(ticket)),
        FsyncPolicy::Interval(_) | FsyncPolicy::Never => Ok(()),
    }
}

/// Runs a blocking disk wait. On a multi-threaded runtime's worker it hands
/// the worker's other tasks to another thread first, so concurrent writers
/// keep running, reach `sync_to` and share one fsync (group commit).
fn blocking_io<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}
