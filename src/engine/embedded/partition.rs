//! One partition of a stream: a dense, append-only sequence of messages,
//! kept in memory (`mem://`) or in segment files (`file://`).

use std::collections::VecDeque;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::engine::{Message, Record, StreamConfig};
use crate::error::{Error, Result};

use super::codec::{self, Reader};
use super::log::{LogFile, Syncer};

/// A stored message without its stream name (added when read).
#[derive(Clone)]
struct Stored {
    offset: u64,
    timestamp_ms: i64,
    key: Option<Bytes>,
    payload: Bytes,
    headers: Vec<(String, String)>,
    msg_id: Option<String>,
}

/// The frame keeps a record's de-duplication id as a header under this key
/// (a NUL can not occur in header names coming from C), removed when read.
const MSG_ID_KEY: &str = "\0msg-id";

impl Stored {
    fn size(&self) -> u64 {
        (self.payload.len()
            + self.key.as_ref().map_or(0, |k| k.len())
            + self.headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()) as u64
    }

    fn into_message(self, stream: &str, partition: u32) -> Message {
        Message {
            stream: stream.to_owned(),
            partition,
            offset: self.offset,
            timestamp_ms: self.timestamp_ms,
            key: self.key,
            payload: self.payload,
            headers: self.headers,
        }
    }
}

/// Work to finish outside the partition lock.
pub enum ReadPlan {
    Ready(Vec<Message>),
    /// Bytes `[start, end)` of a segment file hold the wanted frames.
    File {
        file: Arc<File>,
        start: u64,
        end: u64,
    },
}

impl ReadPlan {
    pub fn execute(self, stream: &str, partition: u32) -> Result<Vec<Message>> {
        match self {
            ReadPlan::Ready(m) => Ok(m),
            ReadPlan::File { file, start, end } => {
                let mut buf = vec![0u8; (end - start) as usize];
                file.read_exact_at(&mut buf, start).map_err(|e| Error::io("read segment", e))?;
                let (bodies, _) = codec::frames(&buf);
                bodies
                    .into_iter()
                    .map(|b| decode(b).map(|s| s.into_message(stream, partition)))
                    .collect::<std::result::Result<_, _>>()
                    .map_err(|_| Error::Internal("corrupt record in segment".into()))
            }
        }
    }
}

pub enum Partition {
    Memory(MemoryPartition),
    File(FilePartition),
}

/// Result of an append: the first offset, and what to fsync (file only).
pub struct Appended {
    pub first: u64,
    pub sync: Option<(Arc<Syncer>, u64)>,
}

impl Partition {
    pub fn earliest(&self) -> u64 {
        match self {
            Partition::Memory(p) => p.base,
            Partition::File(p) => p.segments.first().map_or(p.next, |s| s.base),
        }
    }

    pub fn latest(&self) -> u64 {
        match self {
            Partition::Memory(p) => p.base + p.messages.len() as u64,
            Partition::File(p) => p.next,
        }
    }

    /// Message ids of the newest records found on disk when opening (once).
    pub fn take_recent_ids(&mut self) -> VecDeque<(String, u64)> {
        match self {
            Partition::Memory(_) => VecDeque::new(),
            Partition::File(p) => std::mem::take(&mut p.recent_ids),
        }
    }

    /// What to wait for so that everything appended so far is durable.
    pub fn sync_point(&self) -> Option<(Arc<Syncer>, u64)> {
        match self {
            Partition::Memory(_) => None,
            Partition::File(p) => p.segments.last().map(|s| (s.log.syncer().clone(), s.log.syncer().written())),
        }
    }

    /// Bytes retained, as counted against size limits.
    pub fn bytes(&self) -> u64 {
        match self {
            Partition::Memory(p) => p.bytes,
            Partition::File(p) => p.segments.iter().map(|s| s.bytes).sum(),
        }
    }

    pub fn append(&mut self, records: &[&Record], now_ms: i64) -> Result<Appended> {
        match self {
            Partition::Memory(p) => Ok(p.append(records, now_ms)),
            Partition::File(p) => p.append(records, now_ms),
        }
    }

    /// Plans a read of up to `max` messages from `offset` (clamped to earliest).
    pub fn plan_read(&self, stream: &str, partition: u32, offset: u64, max: usize) -> ReadPlan {
        let offset = offset.max(self.earliest());
        let end = self.latest().min(offset.saturating_add(max as u64));
        if offset >= end {
            return ReadPlan::Ready(Vec::new());
        }
        match self {
            Partition::Memory(p) => {
                let from = (offset - p.base) as usize;
                let to = (end - p.base) as usize;
                ReadPlan::Ready(p.messages.range(from..to).map(|s| s.clone().into_message(stream, partition)).collect())
            }
            Partition::File(p) => p.plan_read(offset, end),
        }
    }

    /// Removes every message, keeping `latest`; returns how many went.
    pub fn purge(&mut self) -> Result<u64> {
        let removed = self.latest() - self.earliest();
        match self {
            Partition::Memory(p) => {
                p.base += p.messages.len() as u64;
                p.messages.clear();
                p.bytes = 0;
            }
            Partition::File(p) => p.purge()?,
        }
        Ok(removed)
    }

    pub fn enforce_retention(&mut self, cfg: &StreamConfig, now_ms: i64) -> Result<()> {
        match self {
            Partition::Memory(p) => {
                p.enforce_retention(cfg, now_ms);
                Ok(())
            }
            Partition::File(p) => p.enforce_retention(cfg, now_ms),
        }
    }
}

#[derive(Default)]
pub struct MemoryPartition {
    base: u64,
    messages: VecDeque<Stored>,
    bytes: u64,
}

impl MemoryPartition {
    fn append(&mut self, records: &[&Record], now_ms: i64) -> Appended {
        let first = self.base + self.messages.len() as u64;
        for (i, r) in records.iter().enumerate() {
            let s = stored(r, first + i as u64, now_ms);
            self.bytes += s.size();
            self.messages.push_back(s);
        }
        Appended { first, sync: None }
    }

    fn enforce_retention(&mut self, cfg: &StreamConfig, now_ms: i64) {
        let cutoff = now_ms.saturating_sub(cfg.max_age_ms as i64);
        while let Some(front) = self.messages.front() {
            let over_count = cfg.max_messages > 0 && self.messages.len() as u64 > cfg.max_messages;
            let over_bytes = cfg.max_bytes > 0 && self.bytes > cfg.max_bytes;
            let too_old = cfg.max_age_ms > 0 && front.timestamp_ms < cutoff;
            if !(over_count || over_bytes || too_old) {
                break;
            }
            self.bytes -= front.size();
            self.messages.pop_front();
            self.base += 1;
        }
    }
}

fn stored(r: &Record, offset: u64, now_ms: i64) -> Stored {
    Stored {
        offset,
        timestamp_ms: now_ms,
        key: r.key.clone(),
        payload: r.payload.clone(),
        headers: r.headers.clone(),
        msg_id: r.msg_id.clone(),
    }
}

fn encode(out: &mut Vec<u8>, r: &Record, offset: u64, now_ms: i64) {
    codec::put_frame(out, |b| {
        b.extend_from_slice(&offset.to_le_bytes());
        b.extend_from_slice(&now_ms.to_le_bytes());
        codec::put_opt_bytes(b, r.key.as_deref());
        codec::put_headers_and(b, &r.headers, r.msg_id.as_deref().map(|id| (MSG_ID_KEY, id)));
        codec::put_bytes(b, &r.payload);
    });
}

fn decode(body: &[u8]) -> std::result::Result<Stored, codec::Corrupt> {
    let mut r = Reader::new(body);
    let offset = r.u64()?;
    let timestamp_ms = r.i64()?;
    let key = r.opt_bytes()?.map(Bytes::copy_from_slice);
    let mut headers = r.headers()?;
    let msg_id = headers.iter().position(|(k, _)| k == MSG_ID_KEY).map(|i| headers.remove(i).1);
    let payload = r.owned()?;
    Ok(Stored { offset, timestamp_ms, key, payload, headers, msg_id })
}

/// Decodes a segment record body; used by the recovery fuzz test.
pub fn decode_record(body: &[u8]) -> Option<(u64, i64, usize)> {
    decode(body).ok().map(|s| (s.offset, s.timestamp_ms, s.payload.len()))
}

struct Segment {
    base: u64,
    log: LogFile,
    reader: Arc<File>,
    /// File position of each record; index = offset - base.
    positions: Vec<u32>,
    max_ts: i64,
    bytes: u64,
}

impl Segment {
    fn count(&self) -> u64 {
        self.positions.len() as u64
    }
}

pub struct FilePartition {
    /// Message ids (and offsets) of the newest records found when opening,
    /// handed to the stream's de-duplication window once.
    recent_ids: VecDeque<(String, u64)>,
    dir: PathBuf,
    segments: Vec<Segment>,
    next: u64,
    segment_bytes: u64,
    scratch: Vec<u8>,
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

impl FilePartition {
    /// Opens the partition directory, validating every record (a torn tail
    /// of the last segment is cut off).
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<FilePartition> {
        fs::create_dir_all(dir).map_err(|e| Error::io("create partition dir", e))?;
        let mut bases: Vec<u64> = fs::read_dir(dir)
            .map_err(|e| Error::io("list partition dir", e))?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".log")?.parse().ok())
            .collect();
        bases.sort_unstable();
        let mut p = FilePartition {
            recent_ids: VecDeque::new(),
            dir: dir.to_owned(),
            segments: Vec::new(),
            next: 0,
            segment_bytes,
            scratch: Vec::new(),
        };
        for base in bases {
            let (log, data) = LogFile::open(&segment_path(dir, base))?;
            let mut seg = Segment::new(base, log)?;
            let mut pos = 0usize;
            for body in codec::frames(&data).0 {
                let s = decode(body).map_err(|_| Error::Internal(format!("corrupt record in segment {base}")))?;
                if s.offset != base + seg.count() {
                    return Err(Error::Internal(format!("offset gap in segment {base}")));
                }
                if let Some(id) = &s.msg_id {
                    if p.recent_ids.len() == super::dedup::DEDUP_WINDOW {
                        p.recent_ids.pop_front();
                    }
                    p.recent_ids.push_back((id.clone(), s.offset));
                }
                seg.positions.push(pos as u32);
                seg.max_ts = seg.max_ts.max(s.timestamp_ms);
                seg.bytes += s.size();
                pos += codec::FRAME_HEADER + body.len();
            }
            if let Some(last) = p.segments.last() {
                if last.base + last.count() != base {
                    tracing::warn!(dir = %dir.display(), base, "segment does not follow its predecessor");
                }
            }
            p.next = base + seg.count();
            p.segments.push(seg);
        }
        Ok(p)
    }

    fn roll(&mut self) -> Result<()> {
        if let Some(last) = self.segments.last() {
            last.log.syncer().sync_all()?;
        }
        let (log, _) = LogFile::open(&segment_path(&self.dir, self.next))?;
        self.segments.push(Segment::new(self.next, log)?);
        Ok(())
    }

    fn append(&mut self, records: &[&Record], now_ms: i64) -> Result<Appended> {
        let need_roll = match self.segments.last() {
            None => true,
            Some(s) => s.log.len() >= self.segment_bytes && s.count() > 0,
        };
        if need_roll {
            self.roll()?;
        }
        let first = self.next;
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        let seg = self.segments.last_mut().expect("rolled above");
        let start = seg.log.len();
        let mut positions = Vec::with_capacity(records.len());
        let mut bytes = 0;
        for (i, r) in records.iter().enumerate() {
            positions.push((start + buf.len() as u64) as u32);
            encode(&mut buf, r, first + i as u64, now_ms);
            bytes += r.size() as u64;
        }
        let ticket = seg.log.append(&buf)?;
        seg.positions.extend(positions);
        seg.max_ts = seg.max_ts.max(now_ms);
        seg.bytes += bytes;
        self.next += records.len() as u64;
        let sync = Some((seg.log.syncer().clone(), ticket));
        self.scratch = buf;
        Ok(Appended { first, sync })
    }

    fn plan_read(&self, offset: u64, end: u64) -> ReadPlan {
        let idx = self.segments.partition_point(|s| s.base <= offset) - 1;
        let seg = &self.segments[idx];
        let from = (offset - seg.base) as usize;
        let to = ((end - seg.base) as usize).min(seg.positions.len());
        let start = seg.positions[from] as u64;
        let stop = if to < seg.positions.len() { seg.positions[to] as u64 } else { seg.log.len() };
        ReadPlan::File { file: seg.reader.clone(), start, end: stop }
    }

    /// Starts an empty active segment at `next` and deletes the older ones,
    /// oldest first (a crash in between leaves a suffix, as retention does).
    fn purge(&mut self) -> Result<()> {
        if self.segments.last().is_some_and(|s| s.count() > 0) {
            self.roll()?;
        }
        let keep = self.segments.len().saturating_sub(1);
        for seg in self.segments.drain(..keep) {
            fs::remove_file(seg.log.path()).map_err(|e| Error::io("delete purged segment", e))?;
        }
        Ok(())
    }

    fn enforce_retention(&mut self, cfg: &StreamConfig, now_ms: i64) -> Result<()> {
        let cutoff = now_ms.saturating_sub(cfg.max_age_ms as i64);
        loop {
            let total: u64 = self.segments.iter().map(Segment::count).sum();
            let total_bytes: u64 = self.segments.iter().map(|s| s.bytes).sum();
            let Some(first) = self.segments.first() else {
                return Ok(());
            };
            if first.count() == 0 {
                return Ok(());
            }
            let rest = total - first.count();
            let rest_bytes = total_bytes - first.bytes;
            let drop = (cfg.max_age_ms > 0 && first.max_ts < cutoff)
                || (cfg.max_messages > 0 && rest >= cfg.max_messages)
                || (cfg.max_bytes > 0 && rest_bytes >= cfg.max_bytes && rest > 0);
            if !drop {
                return Ok(());
            }
            if self.segments.len() == 1 {
                self.roll()?; // keep an (empty) active segment at `next`
            }
            let seg = self.segments.remove(0);
            fs::remove_file(seg.log.path()).map_err(|e| Error::io("delete expired segment", e))?;
        }
    }
}

impl Segment {
    fn new(base: u64, log: LogFile) -> Result<Segment> {
        let reader = Arc::new(log.file().try_clone().map_err(|e| Error::io("dup segment fd", e))?);
        Ok(Segment { base, log, reader, positions: Vec::new(), max_ts: i64::MIN, bytes: 0 })
    }
}
