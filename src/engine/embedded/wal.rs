//! A write-ahead log: the one file behind a queue, a KV bucket or a stream's
//! consumer offsets. State lives in memory; every change is appended as a
//! frame, the whole log is replayed at open, and the log is rewritten as a
//! snapshot of the live state once it is mostly history.
//!
//! A log with damage in it (bytes that fail their checksum and that valid
//! records follow) is refused at open, naming the file and the byte ranges:
//! replaying around a lost record could serve wrong state (an acknowledged
//! job back, a deleted key alive). Nothing is cut; `flowmesh check --repair`
//! moves the damage to a quarantine file, after which the log opens with
//! every intact record. A torn tail (an append that never completed) is cut
//! off at open and saved beside the log.

use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};

use super::codec::{self, Piece};
use super::log::{LogFile, Syncer};

/// When a log is rewritten: once it holds at least `min_bytes` and more than
/// `factor` times the bytes of the state it describes.
#[derive(Debug, Clone, Copy)]
pub struct Compaction {
    pub min_bytes: u64,
    pub factor: u64,
}

impl Compaction {
    // pub(crate): a public associated const would reach the C header.
    pub(crate) const DEFAULT: Compaction = Compaction { min_bytes: 4 << 20, factor: 3 };

    pub fn due(&self, log_bytes: u64, live_bytes: u64) -> bool {
        log_bytes >= self.min_bytes && log_bytes >= live_bytes.saturating_mul(self.factor)
    }
}

pub struct Wal {
    log: LogFile,
    rule: Compaction,
}

impl Wal {
    /// Opens the log at `path` and hands every record's body to `replay`.
    pub fn open(
        path: &Path,
        rule: Compaction,
        mut replay: impl FnMut(&[u8]) -> std::result::Result<(), codec::Corrupt>,
    ) -> Result<Wal> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(&format!("create {}", dir.display()), e))?;
        }
        let (mut log, data) = LogFile::open(path)?;
        let scan = codec::scan(&data, true, |_| true);
        let damaged: Vec<(usize, usize)> = scan.damaged().collect();
        if !damaged.is_empty() {
            for (start, end) in &damaged {
                tracing::error!(path = %path.display(), start, end, "damaged bytes in a write-ahead log");
            }
            return Err(damage_error(path, &damaged));
        }
        for piece in &scan.pieces {
            if let Piece::Frame { pos, body } = piece {
                replay(body).map_err(|_| {
                    Error::Internal(format!("{}: the record at byte {pos} can not be decoded", path.display()))
                })?;
            }
        }
        log.cut_tail(scan.tail as u64, &data)?;
        Ok(Wal { log, rule })
    }

    /// Appends one record; returns what to wait on for durability.
    pub fn append(&mut self, encode: impl FnOnce(&mut Vec<u8>)) -> Result<(Arc<Syncer>, u64)> {
        self.append_frames(|buf| codec::put_frame(buf, encode))
    }

    /// Appends the frames `frames` writes (each made with `codec::put_frame`)
    /// in one append: several records that must reach the log together.
    pub fn append_frames(&mut self, frames: impl FnOnce(&mut Vec<u8>)) -> Result<(Arc<Syncer>, u64)> {
        let mut buf = Vec::new();
        frames(&mut buf);
        let ticket = self.log.append(&buf)?;
        Ok((self.log.syncer().clone(), ticket))
    }

    /// Rewrites the log as `snapshot` (one frame per live item, written by
    /// the closure) when the compaction rule says so.
    pub fn compact_if_due(&mut self, live_bytes: u64, snapshot: impl FnOnce(&mut Vec<u8>)) -> Result<()> {
        if !self.rule.due(self.log.len(), live_bytes) {
            return Ok(());
        }
        let mut buf = Vec::new();
        snapshot(&mut buf);
        self.log.replace(&buf)
    }

    pub fn syncer(&self) -> &Arc<Syncer> {
        self.log.syncer()
    }
}

/// The error for a log that has damaged byte ranges.
pub fn damage_error(path: &Path, damaged: &[(usize, usize)]) -> Error {
    let (start, end) = damaged[0];
    let more = match damaged.len() {
        1 => String::new(),
        n => format!(" and {} more range(s)", n - 1),
    };
    Error::Internal(format!(
        "{} is damaged at bytes {start}..{end}{more} (checksum mismatch); intact records are kept; \
         run `flowmesh check --repair` on the data directory to move the damage to a quarantine file",
        path.display()
    ))
}
