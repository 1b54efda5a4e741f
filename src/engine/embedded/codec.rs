//! On-disk record framing and a tiny binary encoder shared by every log.
//!
//! A frame is `len: u32 LE | crc32(body): u32 LE | body` (never an empty
//! body, so zero-filled blocks are never frames). `scan` tells apart the two
//! ways bytes fail to be frames: a torn tail (the last write of the last file
//! never completed) and damage (bad bytes that valid frames follow).

use bytes::{Buf, BufMut, Bytes};

pub const FRAME_HEADER: usize = 8;
/// Guards recovery against a garbage length field.
pub const MAX_FRAME: usize = 1 << 30;

/// Appends one frame whose body is written by `body`.
pub fn put_frame(out: &mut Vec<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER]);
    body(out);
    let len = out.len() - start - FRAME_HEADER;
    let crc = crc32fast::hash(&out[start + FRAME_HEADER..]);
    out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Outcome of reading the frame at the start of `buf`.
#[derive(Debug, PartialEq)]
pub enum Frame<'a> {
    /// A valid body and the total frame length.
    Ok(&'a [u8], usize),
    /// Not enough bytes, or the checksum does not match: the log ends here.
    Torn,
}

pub fn read_frame(buf: &[u8]) -> Frame<'_> {
    if buf.len() < FRAME_HEADER {
        return Frame::Torn;
    }
    let len = u32::from_le_bytes(buf[0..4].try_into().unwrap()) as usize;
    let crc = u32::from_le_bytes(buf[4..8].try_into().unwrap());
    if len == 0 || len > MAX_FRAME || buf.len() < FRAME_HEADER + len {
        return Frame::Torn;
    }
    let body = &buf[FRAME_HEADER..FRAME_HEADER + len];
    if crc32fast::hash(body) != crc {
        return Frame::Torn;
    }
    Frame::Ok(body, FRAME_HEADER + len)
}

/// Splits a whole log into frame bodies; returns them and the length of the
/// valid prefix (where a torn tail starts).
pub fn frames(buf: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Frame::Ok(body, n) = read_frame(&buf[pos..]) {
        out.push(body);
        pos += n;
    }
    (out, pos)
}

/// One piece of a scanned log, in file order.
#[derive(Debug, PartialEq)]
pub enum Piece<'a> {
    /// A valid frame at byte `pos`.
    Frame { pos: usize, body: &'a [u8] },
    /// Bytes `[start, end)` hold no valid frame.
    Damaged { start: usize, end: usize },
}

/// A whole log file, split into frames and damaged byte ranges.
#[derive(Debug)]
pub struct Scan<'a> {
    pub pieces: Vec<Piece<'a>>,
    /// Where a torn tail starts (the file length when there is none).
    pub tail: usize,
}

impl Scan<'_> {
    pub fn damaged(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Damaged { start, end } => Some((*start, *end)),
            Piece::Frame { .. } => None,
        })
    }
}

/// Splits a log into frames and damage. `last`: this is the newest file of
/// its log, the only place a write can have been cut short. `plausible`
/// vets a checksummed body (a frame found while resynchronising could
/// otherwise be one embedded in a payload).
///
/// Bad bytes followed by a valid frame are damage: writes only ever append,
/// so something after them completed, and the bad bytes were once whole.
/// Bad bytes running to the end of the last file are a torn tail (the write
/// that never completed); in any other file they are damage.
pub fn scan<'a>(buf: &'a [u8], last: bool, plausible: impl Fn(&[u8]) -> bool) -> Scan<'a> {
    let mut pieces = Vec::new();
    let mut pos = 0;
    let valid_at = |p: usize| match read_frame(&buf[p..]) {
        Frame::Ok(body, n) if plausible(body) => Some((body, n)),
        _ => None,
    };
    while pos < buf.len() {
        if let Some((body, n)) = valid_at(pos) {
            pieces.push(Piece::Frame { pos, body });
            pos += n;
            continue;
        }
        match (pos + 1..buf.len().saturating_sub(FRAME_HEADER)).find(|&p| valid_at(p).is_some()) {
            Some(next) => {
                pieces.push(Piece::Damaged { start: pos, end: next });
                pos = next;
            }
            None if last => return Scan { pieces, tail: pos },
            None => {
                pieces.push(Piece::Damaged { start: pos, end: buf.len() });
                break;
            }
        }
    }
    Scan { pieces, tail: buf.len() }
}

pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.put_u32_le(b.len() as u32);
    out.extend_from_slice(b);
}

pub fn put_opt_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => put_bytes(out, b),
        None => out.put_u32_le(u32::MAX),
    }
}

pub fn put_headers(out: &mut Vec<u8>, headers: &[(String, String)]) {
    put_headers_and(out, headers, None);
}

/// Writes `headers` plus an optional extra one, as one header list.
pub fn put_headers_and(out: &mut Vec<u8>, headers: &[(String, String)], extra: Option<(&str, &str)>) {
    out.put_u32_le((headers.len() + extra.is_some() as usize) as u32);
    for (k, v) in headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).chain(extra) {
        put_bytes(out, k.as_bytes());
        put_bytes(out, v.as_bytes());
    }
}

/// Reads fields back; every getter fails cleanly on short or invalid input
/// (decoding is fuzzed: a corrupt body must never panic).
pub struct Reader<'a> {
    buf: &'a [u8],
}

#[derive(Debug, PartialEq, Eq)]
pub struct Corrupt;

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    pub fn u8(&mut self) -> Result<u8, Corrupt> {
        if self.buf.is_empty() {
            return Err(Corrupt);
        }
        Ok(self.buf.get_u8())
    }

    pub fn u32(&mut self) -> Result<u32, Corrupt> {
        if self.buf.len() < 4 {
            return Err(Corrupt);
        }
        Ok(self.buf.get_u32_le())
    }

    pub fn i32(&mut self) -> Result<i32, Corrupt> {
        self.u32().map(|v| v as i32)
    }

    pub fn u64(&mut self) -> Result<u64, Corrupt> {
        if self.buf.len() < 8 {
            return Err(Corrupt);
        }
        Ok(self.buf.get_u64_le())
    }

    pub fn i64(&mut self) -> Result<i64, Corrupt> {
        self.u64().map(|v| v as i64)
    }

    pub fn f64(&mut self) -> Result<f64, Corrupt> {
        self.u64().map(f64::from_bits)
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], Corrupt> {
        let len = self.u32()? as usize;
        if self.buf.len() < len {
            return Err(Corrupt);
        }
        let (head, tail) = self.buf.split_at(len);
        self.buf = tail;
        Ok(head)
    }

    pub fn opt_bytes(&mut self) -> Result<Option<&'a [u8]>, Corrupt> {
        if self.buf.len() >= 4 && self.buf[0..4] == [0xff; 4] {
            self.buf.advance(4);
            return Ok(None);
        }
        self.bytes().map(Some)
    }

    pub fn string(&mut self) -> Result<String, Corrupt> {
        std::str::from_utf8(self.bytes()?).map(str::to_owned).map_err(|_| Corrupt)
    }

    pub fn headers(&mut self) -> Result<Vec<(String, String)>, Corrupt> {
        let n = self.u32()? as usize;
        // Each header needs at least 8 bytes: refuse counts the body cannot hold.
        if n > self.buf.len() / 8 {
            return Err(Corrupt);
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push((self.string()?, self.string()?));
        }
        Ok(out)
    }

    pub fn owned(&mut self) -> Result<Bytes, Corrupt> {
        self.bytes().map(Bytes::copy_from_slice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_stop_at_torn_tail() {
        let mut log = Vec::new();
        put_frame(&mut log, |b| put_bytes(b, b"one"));
        put_frame(&mut log, |b| put_bytes(b, b"two"));
        let whole = log.len();
        put_frame(&mut log, |b| put_bytes(b, b"three"));
        log.truncate(log.len() - 2); // torn final record
        let (bodies, valid) = frames(&log);
        assert_eq!(bodies.len(), 2);
        assert_eq!(valid, whole);
        assert_eq!(Reader::new(bodies[1]).bytes().unwrap(), b"two");
    }

    #[test]
    fn flipped_bit_is_detected() {
        let mut log = Vec::new();
        put_frame(&mut log, |b| put_bytes(b, b"payload"));
        log[10] ^= 1;
        assert_eq!(read_frame(&log), Frame::Torn);
    }

    fn three_frames() -> (Vec<u8>, [usize; 3]) {
        let mut log = Vec::new();
        let mut at = [0; 3];
        for (i, word) in [&b"alpha"[..], b"bravo", b"charlie"].iter().enumerate() {
            at[i] = log.len();
            put_frame(&mut log, |b| put_bytes(b, word));
        }
        (log, at)
    }

    #[test]
    fn scan_tells_damage_from_a_torn_tail() {
        let (mut log, at) = three_frames();
        let clean = scan(&log, true, |_| true);
        assert_eq!((clean.pieces.len(), clean.tail), (3, log.len()));
        // A flipped byte in the middle frame: damage, the third frame stays.
        log[at[1] + 10] ^= 0x40;
        let s = scan(&log, true, |_| true);
        assert_eq!(s.tail, log.len());
        assert_eq!(s.damaged().collect::<Vec<_>>(), vec![(at[1], at[2])]);
        assert!(matches!(s.pieces[2], Piece::Frame { pos, .. } if pos == at[2]));
        // The same bytes at the end of the last file: a torn tail.
        let (mut log, at) = three_frames();
        log.truncate(log.len() - 3);
        let s = scan(&log, true, |_| true);
        assert_eq!((s.pieces.len(), s.tail), (2, at[2]));
        // ... and damage in a file that is not the last.
        let s = scan(&log, false, |_| true);
        assert_eq!(s.damaged().collect::<Vec<_>>(), vec![(at[2], log.len())]);
    }

    #[test]
    fn zero_filled_blocks_are_not_frames() {
        let (mut log, _) = three_frames();
        let end = log.len();
        log.extend_from_slice(&[0u8; 4096]);
        let s = scan(&log, true, |_| true);
        assert_eq!((s.pieces.len(), s.tail), (3, end));
    }

    #[test]
    fn reader_rejects_short_input() {
        let mut r = Reader::new(&[5, 0, 0, 0, 1]);
        assert_eq!(r.bytes(), Err(Corrupt));
        assert_eq!(Reader::new(&[0xff, 0xff, 0xff, 0x7f]).headers(), Err(Corrupt));
    }
}
