//! An append-only file with group-commit fsync: many writers append under
//! their owner's lock, then wait for durability outside it, so one fsync
//! covers every append that happened before it.
//!
//! Waiting is asynchronous: one fsync per file runs at a time on the
//! blocking pool, and every writer whose append it does not cover waits for
//! the next one. A writer thus never holds a runtime worker while the disk
//! works, so many writes in flight from one task, from many tasks or from
//! many threads all share the same few fsyncs.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use crate::error::{Error, Result};

use super::fault;

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
///
/// A failed fsync stops the file for good (until it is reopened): the
/// kernel may already have dropped the pages it could not write, so a
/// retried fsync could succeed without the data ever reaching the disk.
pub struct Syncer {
    path: PathBuf,
    /// The file and the ticket known durable; the file is swapped when a
    /// compaction replaces it.
    synced: Mutex<(File, u64)>,
    written: AtomicU64,
    /// File length after the latest append (what an fsync now covers).
    bytes: AtomicU64,
    failed: OnceLock<String>,
    /// Already in a SyncRegistry: registering is then a no-op.
    registered: AtomicBool,
    /// The ticket known durable, for writers waiting asynchronously; it
    /// also changes (to wake them) when an fsync fails or ends.
    durable: tokio::sync::watch::Sender<u64>,
    /// An fsync for asynchronous waiters is running on the blocking pool.
    flushing: AtomicBool,
}

impl Syncer {
    /// Makes every append with `ticket <= ticket` durable.
    pub fn sync_to(&self, ticket: u64) -> Result<()> {
        let mut synced = self.synced.lock().unwrap();
        self.check()?;
        if synced.1 >= ticket {
            return Ok(()); // someone else's fsync covered us
        }
        let target = self.written.load(Ordering::Acquire);
        let len = self.bytes.load(Ordering::Acquire);
        if let Err(e) = fault::fsync(&self.path).and_then(|_| synced.0.sync_data()) {
            let msg = format!(
                "fsync of {} failed ({e}): its writes are refused until it is reopened, \
                 and writes since the last good fsync may not be on disk",
                self.path.display()
            );
            tracing::error!(path = %self.path.display(), error = %e, "fsync failed; the file stops taking writes");
            let _ = self.failed.set(msg);
            return self.check();
        }
        fault::synced(&self.path, len);
        synced.1 = target;
        self.durable.send_replace(target);
        Ok(())
    }

    /// Waits until every append with a ticket up to `ticket` is durable,
    /// without blocking the calling thread: at most one fsync runs at a
    /// time, and it covers every append made before it started.
    pub async fn wait_durable(self: &Arc<Self>, ticket: u64) -> Result<()> {
        let mut durable = self.durable.subscribe();
        loop {
            self.check()?;
            if *durable.borrow_and_update() >= ticket {
                return Ok(());
            }
            if !self.flushing.swap(true, Ordering::AcqRel) {
                let me = Arc::clone(self);
                tokio::task::spawn_blocking(move || me.flush_for_waiters());
            }
            // The sender lives in `self`, which we hold: changed() cannot fail.
            let _ = durable.changed().await;
        }
    }

    /// One fsync on behalf of every waiter; the error, if any, is kept in
    /// `failed` where each waiter's next check() finds it.
    fn flush_for_waiters(&self) {
        let _ = self.sync_to(self.written());
        self.flushing.store(false, Ordering::Release);
        // Wakes waiters this fsync did not cover (and all of them if it
        // failed) after `flushing` is clear, so one of them starts the next.
        self.durable.send_modify(|_| ());
    }

    /// Fails once an fsync of this file has failed.
    pub fn check(&self) -> Result<()> {
        match self.failed.get() {
            Some(msg) => Err(Error::Internal(msg.clone())),
            None => Ok(()),
        }
    }

    /// The ticket of the latest append.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    pub fn sync_all(&self) -> Result<()> {
        self.sync_to(self.written.load(Ordering::Acquire))
    }

    pub fn dirty(&self) -> bool {
        self.synced.lock().unwrap().1 < self.written.load(Ordering::Acquire)
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
    /// Opens (or creates) a log and returns all its bytes; the caller scans
    /// them and cuts a torn tail with `cut_tail`.
    pub fn open(path: &Path) -> Result<(LogFile, Vec<u8>)> {
        let existed = path.exists();
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(&format!("open {}", path.display()), e))?;
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(|e| Error::io(&format!("read {}", path.display()), e))?;
        if !existed {
            sync_dir(path)?;
        }
        let log = LogFile::wrap(path, file, data.len() as u64)?;
        Ok((log, data))
    }

    /// Cuts off a torn tail starting at byte `at` (an append that never
    /// completed). Its bytes are first saved beside the log, so even a
    /// misjudged cut destroys nothing.
    pub fn cut_tail(&mut self, at: u64, data: &[u8]) -> Result<()> {
        let tail = &data[at as usize..];
        if tail.is_empty() {
            return Ok(());
        }
        let aside = quarantine_path(&self.path, "torn", at, self.len);
        tracing::warn!(path = %self.path.display(), at, bytes = tail.len(), saved = %aside.display(),
            "cutting off a torn tail (a write that never completed)");
        save_aside(&aside, tail)?;
        self.file.set_len(at).map_err(|e| Error::io(&format!("cut torn tail of {}", self.path.display()), e))?;
        self.len = at;
        self.syncer.bytes.store(at, Ordering::Release);
        Ok(())
    }

    /// Atomically replaces the log's contents (compaction); the syncer, and so
    /// its registration for background flushes, carries over.
    pub fn replace(&mut self, contents: &[u8]) -> Result<()> {
        self.syncer.check()?;
        let path = self.path.clone();
        let tmp = path.with_extension("compact");
        write_durably(&tmp, contents)?;
        fs::rename(&tmp, &path).map_err(|e| Error::io(&format!("install compacted {}", path.display()), e))?;
        fault::renamed(&tmp, &path);
        sync_dir(&path)?;
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&format!("reopen compacted {}", path.display()), e))?;
        let dup = file.try_clone().map_err(|e| Error::io("dup log fd", e))?;
        let mut synced = self.syncer.synced.lock().unwrap();
        synced.0 = dup;
        synced.1 = self.syncer.written.load(Ordering::Acquire);
        self.syncer.durable.send_replace(synced.1);
        self.syncer.bytes.store(contents.len() as u64, Ordering::Release);
        self.file = file;
        self.len = contents.len() as u64;
        Ok(())
    }

    fn wrap(path: &Path, file: File, len: u64) -> Result<LogFile> {
        let dup = file.try_clone().map_err(|e| Error::io("dup log fd", e))?;
        let syncer = Arc::new(Syncer {
            path: path.to_owned(),
            synced: Mutex::new((dup, 0)),
            written: AtomicU64::new(0),
            bytes: AtomicU64::new(len),
            failed: OnceLock::new(),
            registered: AtomicBool::new(false),
            durable: tokio::sync::watch::Sender::new(0),
            flushing: AtomicBool::new(false),
        });
        Ok(LogFile { path: path.to_owned(), file, len, syncer })
    }

    /// Appends bytes (whole frames) in one write; returns a ticket for `Syncer::sync_to`.
    pub fn append(&mut self, buf: &[u8]) -> Result<u64> {
        self.syncer.check()?;
        let allowed = fault::writable(&self.path, buf.len());
        let wrote = self.file.write_all(&buf[..allowed]).and_then(|_| match allowed < buf.len() {
            true => Err(fault::no_space()),
            false => Ok(()),
        });
        if let Err(e) = wrote {
            // Cut off a partial write so the log stays a sequence of whole frames.
            let _ = self.file.set_len(self.len);
            return Err(Error::io(&format!("append to {}", self.path.display()), e));
        }
        self.len += buf.len() as u64;
        self.syncer.bytes.store(self.len, Ordering::Release);
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

/// Where bytes moved out of `log` are kept: `<log>.<why>-<start>-<end>`.
pub fn quarantine_path(log: &Path, why: &str, start: u64, end: u64) -> PathBuf {
    let mut name = log.file_name().unwrap_or_default().to_owned();
    name.push(format!(".{why}-{start}-{end}"));
    log.with_file_name(name)
}

/// Writes `bytes` to a new file beside a log, durably (quarantine).
pub fn save_aside(path: &Path, bytes: &[u8]) -> Result<()> {
    write_durably(path, bytes)?;
    sync_dir(path)
}

/// Creates `path` with `contents` and fsyncs it.
pub fn write_durably(path: &Path, contents: &[u8]) -> Result<()> {
    let mut f = File::create(path).map_err(|e| Error::io(&format!("create {}", path.display()), e))?;
    let allowed = fault::writable(path, contents.len());
    f.write_all(&contents[..allowed])
        .and_then(|_| if allowed < contents.len() { Err(fault::no_space()) } else { Ok(()) })
        .and_then(|_| fault::fsync(path))
        .and_then(|_| f.sync_all())
        .map_err(|e| {
            let _ = fs::remove_file(path);
            Error::io(&format!("write {}", path.display()), e)
        })?;
    fault::synced(path, contents.len() as u64);
    Ok(())
}

/// fsyncs the directory holding `path` so a new or renamed file survives a crash.
pub fn sync_dir(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io("fsync directory", e))?;
    }
    Ok(())
}

/// The appends a write made, which its acknowledgement must wait for under
/// `fsync=batch`. Writers collect them under their owner's lock and wait
/// after releasing it.
#[must_use = "a write is acknowledged only after waiting for its durability"]
#[derive(Default)]
pub struct PendingSync(Vec<(Arc<Syncer>, u64)>);

impl PendingSync {
    /// Nothing to wait for.
    pub fn none() -> PendingSync {
        PendingSync(Vec::new())
    }

    /// One append (`ticket`) to `syncer`'s file.
    pub fn one(syncer: Arc<Syncer>, ticket: u64) -> PendingSync {
        PendingSync(vec![(syncer, ticket)])
    }

    pub fn add(&mut self, syncer: Arc<Syncer>, ticket: u64) {
        self.0.push((syncer, ticket));
    }

    /// Waits as the policy asks: under `Batch` until every append is
    /// durable (the files' fsyncs run concurrently); otherwise not at all.
    pub async fn wait(self, policy: FsyncPolicy) -> Result<()> {
        match (policy, self.0.len()) {
            (FsyncPolicy::Interval(_) | FsyncPolicy::Never, _) | (_, 0) => Ok(()),
            (FsyncPolicy::Batch, 1) => self.0[0].0.wait_durable(self.0[0].1).await,
            (FsyncPolicy::Batch, _) => {
                futures::future::try_join_all(self.0.iter().map(|(s, t)| s.wait_durable(*t))).await.map(|_| ())
            }
        }
    }
}
