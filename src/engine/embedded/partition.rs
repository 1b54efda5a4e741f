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

use super::codec::{self, Piece, Reader};
use super::log::{quarantine_path, save_aside, LogFile, Syncer};

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
    /// Bytes `[start, end)` of a segment file hold the records `first..first+count`.
    File {
        file: Arc<File>,
        path: Arc<PathBuf>,
        start: u64,
        end: u64,
        first: u64,
        count: u64,
    },
}

impl ReadPlan {
    pub fn execute(self, stream: &str, partition: u32) -> Result<Vec<Message>> {
        match self {
            ReadPlan::Ready(m) => Ok(m),
            ReadPlan::File { file, path, start, end, first, count } => {
                let mut buf = vec![0u8; (end - start) as usize];
                file.read_exact_at(&mut buf, start)
                    .map_err(|e| Error::io(&format!("read {} at byte {start}", path.display()), e))?;
                let (bodies, valid) = codec::frames(&buf);
                let out: Vec<Message> = bodies
                    .into_iter()
                    .filter_map(|b| decode(b).ok())
                    .map(|s| s.into_message(stream, partition))
                    .collect();
                // Checked at open; bytes that no longer check out were damaged since.
                let intact = valid == buf.len()
                    && out.len() as u64 == count
                    && out.iter().enumerate().all(|(i, m)| m.offset == first + i as u64);
                if !intact {
                    let at = start + valid as u64;
                    tracing::error!(path = %path.display(), at, "segment damaged since it was opened");
                    return Err(Error::Internal(format!(
                        "stream {stream} partition {partition}: {} is damaged at byte {at} (it was intact when \
                         opened); offsets {first}..{} can not be read; run `flowmesh check` on the data directory",
                        path.display(),
                        first + count
                    )));
                }
                Ok(out)
            }
        }
    }
}

/// Offsets `first..end` of a segment whose records are not readable: their
/// bytes `bytes` are damaged, or a repair moved them to a quarantine file
/// (then `repaired`, and reads go past them).
#[derive(Debug, Clone)]
pub struct Gap {
    pub first: u64,
    pub end: u64,
    pub bytes: (u64, u64),
    pub repaired: bool,
}

impl Gap {
    fn error(&self, stream: &str, partition: u32, path: &Path) -> Error {
        Error::Internal(format!(
            "stream {stream} partition {partition}: offsets {}..{} are damaged (bytes {}..{} of {} fail their \
             checksum); read from offset {} to go past them, or run `flowmesh check --repair` on the data directory",
            self.first,
            self.end,
            self.bytes.0,
            self.bytes.1,
            path.display(),
            self.end
        ))
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
    pub fn plan_read(&self, stream: &str, partition: u32, offset: u64, max: usize) -> Result<ReadPlan> {
        let offset = offset.max(self.earliest());
        let end = self.latest().min(offset.saturating_add(max as u64));
        if offset >= end {
            return Ok(ReadPlan::Ready(Vec::new()));
        }
        match self {
            Partition::Memory(p) => {
                let from = (offset - p.base) as usize;
                let to = (end - p.base) as usize;
                Ok(ReadPlan::Ready(
                    p.messages.range(from..to).map(|s| s.clone().into_message(stream, partition)).collect(),
                ))
            }
            Partition::File(p) => p.plan_read(stream, partition, offset, max as u64),
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

/// Indexes `data` as a segment starting at offset 0 (the fuzz targets);
/// the number of intact records.
pub(super) fn fuzz_load(data: &[u8], last: bool) -> usize {
    load(0, data, last, None).records as usize
}

/// Decodes a segment record body; used by the recovery fuzz test.
pub fn decode_record(body: &[u8]) -> Option<(u64, i64, usize)> {
    decode(body).ok().map(|s| (s.offset, s.timestamp_ms, s.payload.len()))
}

/// A repair leaves this header on a record standing for offsets
/// `offset..offset+count` whose damaged bytes went to a quarantine file.
const GAP_KEY: &str = "\0gap";

fn encode_gap(out: &mut Vec<u8>, first: u64, count: u64) {
    codec::put_frame(out, |b| {
        b.extend_from_slice(&first.to_le_bytes());
        b.extend_from_slice(&0i64.to_le_bytes());
        codec::put_opt_bytes(b, None);
        codec::put_headers(b, &[(GAP_KEY.to_owned(), count.to_string())]);
        codec::put_bytes(b, b"");
    });
}

fn gap_count(s: &Stored) -> Option<u64> {
    s.headers.iter().find(|(k, _)| k == GAP_KEY).and_then(|(_, v)| v.parse().ok())
}

struct Segment {
    base: u64,
    log: LogFile,
    path: Arc<PathBuf>,
    reader: Arc<File>,
    /// File position of each record; index = offset - base.
    positions: Vec<u32>,
    /// Offsets without a readable record, in order.
    gaps: Vec<Gap>,
    max_ts: i64,
    bytes: u64,
}

/// What a segment's bytes hold, as found by `load`.
struct Loaded {
    positions: Vec<u32>,
    gaps: Vec<Gap>,
    ids: Vec<(String, u64)>,
    max_ts: i64,
    bytes: u64,
    /// Records read.
    records: u64,
    /// Where a torn tail starts (the data length when there is none).
    tail: usize,
}

/// The fewest bytes a record takes in a segment: the frame header and a
/// body of offset, timestamp, key, header count and payload length.
const MIN_RECORD_BYTES: u64 = codec::FRAME_HEADER as u64 + 28;
/// The most offsets one segment can span (see `load`).
const MAX_SEGMENT_OFFSETS: u64 = u32::MAX as u64 / MIN_RECORD_BYTES;

/// Indexes a segment's bytes. `last`: the newest segment (the only one a
/// torn tail can end); `next_base`: the following segment's first offset,
/// which bounds damage at the end of this one.
fn load(base: u64, data: &[u8], last: bool, next_base: Option<u64>) -> Loaded {
    // Positions are u32 byte positions, so a segment spans at most this
    // many offsets; a record claiming more (its own offset or a gap) is
    // implausible, and would otherwise make the index below allocate for
    // offsets no file can hold.
    let fits = |end: u64| end.checked_sub(base).is_some_and(|n| n <= MAX_SEGMENT_OFFSETS);
    let plausible =
        |s: &Stored| fits(s.offset) && gap_count(s).is_none_or(|n| s.offset.checked_add(n).is_some_and(fits));
    let scan = codec::scan(data, last, |b| decode(b).is_ok_and(|s| plausible(&s)));
    let mut l = Loaded {
        positions: Vec::new(),
        gaps: Vec::new(),
        ids: Vec::new(),
        max_ts: i64::MIN,
        bytes: 0,
        records: 0,
        tail: scan.tail,
    };
    let mut expected = base;
    // Damaged bytes not yet matched to the offsets they held.
    let mut pending: Option<(usize, usize)> = None;
    let close = |l: &mut Loaded, expected: &mut u64, upto: u64, bytes: (usize, usize), repaired: bool| {
        // Also bounds damage up to the next segment's base (a file name).
        let upto = upto.max(*expected).min(base.saturating_add(MAX_SEGMENT_OFFSETS));
        l.positions.extend(std::iter::repeat_n(bytes.0 as u32, (upto - *expected) as usize));
        l.gaps.push(Gap { first: *expected, end: upto, bytes: (bytes.0 as u64, bytes.1 as u64), repaired });
        *expected = upto;
    };
    for piece in &scan.pieces {
        let (pos, body) = match *piece {
            Piece::Frame { pos, body } => (pos, body),
            Piece::Damaged { start, end } => {
                pending = Some(pending.map_or((start, end), |(s, _)| (s, end)));
                continue;
            }
        };
        let frame_end = pos + codec::FRAME_HEADER + body.len();
        let s = decode(body).expect("vetted by the scan");
        if s.offset < expected {
            // Checksummed but out of order: as unreadable as damage.
            pending = Some(pending.map_or((pos, frame_end), |(st, _)| (st, frame_end)));
            continue;
        }
        if let Some(bytes) = pending.take() {
            close(&mut l, &mut expected, s.offset, bytes, false);
        } else if s.offset > expected {
            close(&mut l, &mut expected, s.offset, (pos, pos), false);
        }
        if let Some(count) = gap_count(&s) {
            close(&mut l, &mut expected, s.offset + count, (pos, frame_end), true);
            continue;
        }
        if let Some(id) = &s.msg_id {
            l.ids.push((id.clone(), s.offset));
        }
        l.positions.push(pos as u32);
        l.max_ts = l.max_ts.max(s.timestamp_ms);
        l.bytes += s.size();
        l.records += 1;
        expected += 1;
    }
    if let Some(bytes) = pending {
        let upto = next_base.unwrap_or(expected);
        close(&mut l, &mut expected, upto, bytes, false);
    }
    l
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
    /// Opens the partition directory, validating every record. A torn tail
    /// of the last segment is cut off (and saved beside it); damage anywhere
    /// is kept as it is, reported, and fails the reads that reach it.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<FilePartition> {
        fs::create_dir_all(dir).map_err(|e| Error::io("create partition dir", e))?;
        let bases = segment_bases(dir)?;
        let mut p = FilePartition {
            recent_ids: VecDeque::new(),
            dir: dir.to_owned(),
            segments: Vec::new(),
            next: 0,
            segment_bytes,
            scratch: Vec::new(),
        };
        for (i, &base) in bases.iter().enumerate() {
            let path = segment_path(dir, base);
            let (mut log, data) = LogFile::open(&path)?;
            let loaded = load(base, &data, i + 1 == bases.len(), bases.get(i + 1).copied());
            log.cut_tail(loaded.tail as u64, &data)?;
            for g in loaded.gaps.iter().filter(|g| !g.repaired) {
                tracing::error!(path = %path.display(), start = g.bytes.0, end = g.bytes.1, first = g.first,
                    end_offset = g.end, "damaged records in a segment (kept; reads of them fail)");
            }
            let mut seg = Segment::new(base, log)?;
            for (id, offset) in loaded.ids {
                if p.recent_ids.len() == super::dedup::DEDUP_WINDOW {
                    p.recent_ids.pop_front();
                }
                p.recent_ids.push_back((id, offset));
            }
            seg.positions = loaded.positions;
            seg.gaps = loaded.gaps;
            seg.max_ts = loaded.max_ts;
            seg.bytes = loaded.bytes;
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

    /// Plans a read of up to `max` records from `offset` (>= earliest, <
    /// next) within one segment: it stops short of damaged offsets, fails
    /// when it starts on them, and steps over repaired ones.
    fn plan_read(&self, stream: &str, partition: u32, mut offset: u64, max: u64) -> Result<ReadPlan> {
        'segment: loop {
            if offset >= self.next {
                return Ok(ReadPlan::Ready(Vec::new()));
            }
            let idx = self.segments.partition_point(|s| s.base <= offset) - 1;
            let seg = &self.segments[idx];
            if offset - seg.base >= seg.count() {
                let next = self.segments.get(idx + 1).map_or(self.next, |s| s.base);
                return Err(Error::Internal(format!(
                    "stream {stream} partition {partition}: offsets {offset}..{next} are missing from {} \
                     (no segment file holds them); read from offset {next} to go past them",
                    self.dir.display()
                )));
            }
            let mut end = offset.saturating_add(max).min(seg.base + seg.count());
            // The first gap at or after `offset` (gaps are in order).
            if let Some(g) = seg.gaps.iter().find(|g| g.first < g.end && g.end > offset) {
                if g.first > offset {
                    end = end.min(g.first);
                } else if !g.repaired {
                    return Err(g.error(stream, partition, &seg.path));
                } else {
                    offset = g.end; // quarantined by a repair: step over
                    continue 'segment;
                }
            }
            let from = (offset - seg.base) as usize;
            let to = (end - seg.base) as usize;
            let start = seg.positions[from] as u64;
            let stop = if to < seg.positions.len() { seg.positions[to] as u64 } else { seg.log.len() };
            return Ok(ReadPlan::File {
                file: seg.reader.clone(),
                path: seg.path.clone(),
                start,
                end: stop,
                first: offset,
                count: end - offset,
            });
        }
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
        let path = Arc::new(log.path().to_owned());
        Ok(Segment { base, log, path, reader, positions: Vec::new(), gaps: Vec::new(), max_ts: i64::MIN, bytes: 0 })
    }
}

fn segment_bases(dir: &Path) -> Result<Vec<u64>> {
    let mut bases: Vec<u64> = fs::read_dir(dir)
        .map_err(|e| Error::io(&format!("list {}", dir.display()), e))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".log")?.parse().ok())
        .collect();
    bases.sort_unstable();
    Ok(bases)
}

/// A problem `check_partition` found in one file.
#[derive(Debug, Clone)]
pub struct Finding {
    pub file: PathBuf,
    pub bytes: (u64, u64),
    pub what: String,
    /// Where a repair moved the bytes.
    pub moved_to: Option<PathBuf>,
}

/// Lists the damage and torn tails of a (closed) partition directory;
/// `repair` moves damaged bytes to quarantine files beside their segment,
/// leaving a gap record that reads step over, and cuts torn tails (saved
/// aside too). Returns the findings and the number of intact records.
pub fn check_partition(dir: &Path, repair: bool) -> Result<(Vec<Finding>, u64)> {
    let bases = segment_bases(dir)?;
    let mut findings = Vec::new();
    let mut records = 0;
    for (i, &base) in bases.iter().enumerate() {
        let path = segment_path(dir, base);
        let data = fs::read(&path).map_err(|e| Error::io(&format!("read {}", path.display()), e))?;
        let loaded = load(base, &data, i + 1 == bases.len(), bases.get(i + 1).copied());
        records += loaded.records;
        let damaged: Vec<&Gap> = loaded.gaps.iter().filter(|g| !g.repaired).collect();
        let mut moves = Vec::new();
        for g in &damaged {
            let aside = quarantine_path(&path, "damaged", g.bytes.0, g.bytes.1);
            findings.push(Finding {
                file: path.clone(),
                bytes: g.bytes,
                what: format!("damaged: offsets {}..{} unreadable ({} records)", g.first, g.end, g.end - g.first),
                moved_to: repair.then(|| aside.clone()),
            });
            moves.push((*g, aside));
        }
        let torn = (loaded.tail < data.len()).then_some(loaded.tail);
        if let Some(at) = torn {
            findings.push(Finding {
                file: path.clone(),
                bytes: (at as u64, data.len() as u64),
                what: "torn tail: an append that never completed".into(),
                moved_to: repair.then(|| quarantine_path(&path, "torn", at as u64, data.len() as u64)),
            });
        }
        if !repair || (moves.is_empty() && torn.is_none()) {
            continue;
        }
        // Rewrite: intact bytes as they are, a gap record for each damaged range.
        let mut out = Vec::with_capacity(data.len());
        let mut at = 0usize;
        for (g, aside) in &moves {
            let (start, end) = (g.bytes.0 as usize, g.bytes.1 as usize);
            out.extend_from_slice(&data[at..start]);
            save_aside(aside, &data[start..end])?;
            if g.end > g.first {
                encode_gap(&mut out, g.first, g.end - g.first);
            }
            at = end;
        }
        let stop = torn.unwrap_or(data.len());
        out.extend_from_slice(&data[at..stop]);
        if let Some(at) = torn {
            save_aside(&quarantine_path(&path, "torn", at as u64, data.len() as u64), &data[at..])?;
        }
        install(&path, &out)?;
    }
    Ok((findings, records))
}

/// Atomically replaces a file's contents.
pub fn install(path: &Path, contents: &[u8]) -> Result<()> {
    let tmp = path.with_extension("repair");
    super::log::write_durably(&tmp, contents)?;
    fs::rename(&tmp, path).map_err(|e| Error::io(&format!("install {}", path.display()), e))?;
    super::log::sync_dir(path)
}
