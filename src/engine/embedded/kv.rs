//! A key-value bucket: revisions, TTLs, compare-and-set and ordered watches.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::broadcast;
use tokio_stream::wrappers::{errors::BroadcastStreamRecvError, BroadcastStream};

use crate::engine::{KvEntry, KvEvent, KvEventStream, KvOp, ResumedWatch, WatchCursor};
use crate::error::{Error, Result};

use super::codec::{self, Reader};
use super::log::{FsyncPolicy, PendingSync, SyncRegistry, Syncer};
use super::now_ms;
use super::wal::{Compaction, Wal};

/// Events a watcher may fall behind by before its watch ends with an error.
const WATCH_BUFFER: usize = 16 * 1024;
/// Recent changes kept so a watch cut off by a lost link resumes exactly.
const HISTORY_EVENTS: usize = 8192;
const HISTORY_BYTES: u64 = 8 << 20;

const W_PUT: u8 = 1;
const W_DEL: u8 = 2;

struct Entry {
    value: Bytes,
    revision: u64,
    /// ms since epoch; 0 = never.
    expires_ms: i64,
}

impl Entry {
    fn live(&self, now: i64) -> bool {
        self.expires_ms == 0 || self.expires_ms > now
    }
}

#[derive(Default)]
struct BucketState {
    revision: u64,
    entries: BTreeMap<String, Entry>,
    expiries: BTreeSet<(i64, String)>,
    log: Option<Wal>,
    /// Approximate bytes of live state, kept up to date on every change so
    /// the compaction check is O(1).
    live_bytes: u64,
    /// Changes since the bucket was opened, and the most recent of them.
    seq: u64,
    history: VecDeque<KvEvent>,
    history_bytes: u64,
    /// The bucket was deleted: writes fail, reads find nothing.
    deleted: bool,
}

/// Replays `data` into an empty bucket as recovery does: as one record
/// body, then as a whole log file (the fuzz targets). Returns how many
/// records were accepted.
pub(super) fn fuzz_replay(data: &[u8], now: i64) -> usize {
    let mut st = BucketState::default();
    let mut accepted = usize::from(st.replay(data, now).is_ok());
    for piece in codec::scan(data, true, |_| true).pieces {
        if let codec::Piece::Frame { body, .. } = piece {
            if st.replay(body, now).is_err() {
                break;
            }
            accepted += 1;
        }
    }
    accepted
}

fn entry_cost(key: &str, value: &[u8]) -> u64 {
    32 + (key.len() + value.len()) as u64
}

pub struct Bucket {
    name: String,
    /// Identifies this opening of the bucket in watch cursors.
    epoch: u64,
    state: Mutex<BucketState>,
    events: broadcast::Sender<KvEvent>,
    /// Turns true when the bucket is deleted, ending every watch.
    gone: tokio::sync::watch::Sender<bool>,
    fsync: FsyncPolicy,
}

impl Bucket {
    pub fn open(name: &str, path: Option<&Path>, fsync: FsyncPolicy, registry: &SyncRegistry) -> Result<Bucket> {
        let mut st = BucketState::default();
        if let Some(path) = path {
            let now = now_ms();
            let log = Wal::open(path, Compaction::DEFAULT, |body| st.replay(body, now))?;
            registry.register(log.syncer());
            st.log = Some(log);
            st.compact_if_large()?;
        }
        Ok(Bucket {
            name: name.to_owned(),
            epoch: crate::backoff::pseudo_random() | 1,
            state: Mutex::new(st),
            events: broadcast::channel(WATCH_BUFFER).0,
            gone: tokio::sync::watch::channel(false).0,
            fsync,
        })
    }

    /// Writes `value` if `expected` matches (None = unconditional).
    pub async fn put(&self, key: &str, value: Bytes, ttl_ms: u64, expected: Option<u64>) -> Result<u64> {
        let now = now_ms();
        let (rev, sync) = {
            let mut st = self.state.lock().unwrap();
            self.check_live(&st)?;
            if let Some(expected) = expected {
                let current = st.entries.get(key).filter(|e| e.live(now)).map_or(0, |e| e.revision);
                if current != expected {
                    return Err(Error::Conflict(format!(
                        "key {key} in {} is at revision {current}, expected {expected}",
                        self.name
                    )));
                }
            }
            st.revision += 1;
            let rev = st.revision;
            let expires_ms = if ttl_ms > 0 { now + ttl_ms as i64 } else { 0 };
            let sync = st.write(|b| encode_put(b, key, &value, rev, expires_ms))?;
            st.set(key, Entry { value: value.clone(), revision: rev, expires_ms });
            // Sent under the lock so watchers see revisions in order.
            self.emit(&mut st, KvOp::Put, key.to_owned(), value, rev);
            st.compact_if_large()?;
            (rev, sync)
        };
        if let Some((syncer, ticket)) = sync {
            PendingSync::one(syncer, ticket).wait(self.fsync).await?;
        }
        Ok(rev)
    }

    fn check_live(&self, st: &BucketState) -> Result<()> {
        if st.deleted {
            return Err(Error::NotFound(format!("bucket {} was deleted", self.name)));
        }
        Ok(())
    }

    pub fn is_deleted(&self) -> bool {
        self.state.lock().unwrap().deleted
    }

    /// Marks the bucket deleted (no write after this one lands in it) and
    /// ends its watches.
    pub fn mark_deleted(&self) {
        let mut st = self.state.lock().unwrap();
        st.deleted = true;
        st.entries.clear();
        st.expiries.clear();
        self.gone.send_replace(true);
    }

    pub fn get(&self, key: &str) -> Result<KvEntry> {
        let st = self.state.lock().unwrap();
        match st.entries.get(key) {
            Some(e) if e.live(now_ms()) => {
                Ok(KvEntry { key: key.to_owned(), value: e.value.clone(), revision: e.revision })
            }
            _ => Err(Error::NotFound(format!("key {key} not in bucket {}", self.name))),
        }
    }

    pub fn exists(&self, key: &str) -> bool {
        let st = self.state.lock().unwrap();
        st.entries.get(key).is_some_and(|e| e.live(now_ms()))
    }

    pub async fn delete(&self, key: &str) -> Result<bool> {
        let sync = {
            let mut st = self.state.lock().unwrap();
            self.check_live(&st)?;
            let now = now_ms();
            let Some(e) = st.entries.get(key) else {
                return Ok(false);
            };
            let was_live = e.live(now);
            st.revision += 1;
            let rev = st.revision;
            let sync = st.write(|b| encode_del(b, key, rev))?;
            st.unset(key);
            if was_live {
                self.emit(&mut st, KvOp::Delete, key.to_owned(), Bytes::new(), rev);
            }
            if !was_live {
                return Ok(false);
            }
            sync
        };
        if let Some((syncer, ticket)) = sync {
            PendingSync::one(syncer, ticket).wait(self.fsync).await?;
        }
        Ok(true)
    }

    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let st = self.state.lock().unwrap();
        let now = now_ms();
        st.entries
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(_, e)| e.live(now))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Removes expired keys and tells watchers; called by the maintenance thread.
    pub fn expire(&self) {
        let mut st = self.state.lock().unwrap();
        let now = now_ms();
        while let Some((t, key)) = st.expiries.first().cloned() {
            if t > now {
                break;
            }
            st.expiries.pop_first();
            let Some(e) = st.entries.remove(&key) else {
                continue;
            };
            // Expiry is implied by the logged deadline: nothing to write.
            self.emit(&mut st, KvOp::Expire, key, Bytes::new(), e.revision);
        }
    }

    /// Tells watchers about a change and keeps it in the recent history.
    /// Called under the state lock, so watchers see changes in order.
    fn emit(&self, st: &mut BucketState, op: KvOp, key: String, value: Bytes, revision: u64) {
        st.seq += 1;
        let ev = KvEvent { op, key, value, revision, cursor: WatchCursor { epoch: self.epoch, seq: st.seq } };
        st.history_bytes += entry_cost(&ev.key, &ev.value);
        st.history.push_back(ev.clone());
        while st.history.len() > HISTORY_EVENTS || st.history_bytes > HISTORY_BYTES {
            let Some(old) = st.history.pop_front() else { break };
            st.history_bytes -= entry_cost(&old.key, &old.value);
        }
        let _ = self.events.send(ev);
    }

    pub fn watch(&self, prefix: &str) -> KvEventStream {
        let rx = self.events.subscribe();
        self.live(rx, prefix, Vec::new())
    }

    /// Replays the kept changes after `after` (none: starts now), then
    /// continues live; also returns the cursor it starts from.
    pub fn watch_resume(&self, prefix: &str, after: Option<WatchCursor>) -> Result<ResumedWatch> {
        let st = self.state.lock().unwrap();
        self.check_live(&st)?;
        let after = after.unwrap_or(WatchCursor { epoch: self.epoch, seq: st.seq });
        if after.epoch != self.epoch {
            return Err(Error::Conflict(format!(
                "watch on {} can not resume: the bucket was reopened (broker restart); watch again",
                self.name
            )));
        }
        let oldest = st.history.front().map_or(st.seq + 1, |e| e.cursor.seq);
        if after.seq + 1 < oldest {
            return Err(Error::Conflict(format!(
                "watch on {} can not resume: {} changes happened meanwhile, more than are kept",
                self.name,
                st.seq - after.seq
            )));
        }
        let backlog =
            st.history.iter().filter(|e| e.cursor.seq > after.seq && e.key.starts_with(prefix)).cloned().collect();
        // Subscribed under the lock: nothing falls between backlog and live.
        let rx = self.events.subscribe();
        drop(st);
        Ok((after, self.live(rx, prefix, backlog)))
    }

    fn live(&self, rx: broadcast::Receiver<KvEvent>, prefix: &str, backlog: Vec<KvEvent>) -> KvEventStream {
        let prefix = prefix.to_owned();
        let name = self.name.clone();
        // Deleting the bucket ends the watch with NotFound.
        let gone = self.gone.subscribe();
        let mut waiting = gone.clone();
        let deleted = async move {
            let _ = waiting.wait_for(|d| *d).await.is_ok();
        };
        let gone_name = name.clone();
        let tail = futures::stream::once(async move {
            let deleted = *gone.borrow();
            deleted.then(|| Err(Error::NotFound(format!("bucket {gone_name} was deleted"))))
        })
        .filter_map(futures::future::ready);
        Box::pin(
            futures::stream::iter(backlog.into_iter().map(Ok))
                .chain(BroadcastStream::new(rx))
                .filter_map(move |ev| {
                    let out = match ev {
                        Ok(ev) if ev.key.starts_with(&prefix) => Some(Ok(ev)),
                        Ok(_) => None,
                        Err(BroadcastStreamRecvError::Lagged(n)) => Some(Err(Error::Unavailable(format!(
                            "watch on {name} fell {n} events behind and was stopped"
                        )))),
                    };
                    futures::future::ready(out)
                })
                .take_until(deleted)
                .chain(tail)
                // A lagged watch ends after reporting it, so nothing is silently skipped.
                .scan(false, |failed, ev| {
                    if *failed {
                        return futures::future::ready(None);
                    }
                    *failed = ev.is_err();
                    futures::future::ready(Some(ev))
                }),
        )
    }
}

/// One write of a transaction, with the revision it was given.
#[derive(Debug, Clone, PartialEq)]
pub struct TxnWrite {
    pub key: String,
    /// None = delete.
    pub value: Option<Bytes>,
    pub revision: u64,
    /// ms since epoch; 0 = never (puts only).
    pub expires_ms: i64,
}

/// A bucket held locked by a transaction: reads see its state as of the
/// lock, and [`Locked::apply`] changes it in one step.
pub struct Locked<'a> {
    bucket: &'a Bucket,
    st: MutexGuard<'a, BucketState>,
}

impl Bucket {
    pub fn lock(&self) -> Locked<'_> {
        Locked { bucket: self, st: self.state.lock().unwrap() }
    }

    /// Re-applies the writes of a logged transaction that the bucket's own
    /// log lacks (a crash between the two appends): those with a revision
    /// above the bucket's.
    pub fn redo(&self, writes: &[TxnWrite]) -> Result<()> {
        let mut l = self.lock();
        let rev = l.st.revision;
        let missing: Vec<TxnWrite> = writes.iter().filter(|w| w.revision > rev).cloned().collect();
        if !missing.is_empty() {
            l.apply(&missing)?;
        }
        Ok(())
    }
}

impl Locked<'_> {
    pub fn revision(&self) -> u64 {
        self.st.revision
    }

    /// The live entry of `key`, if any.
    pub fn get(&self, key: &str, now: i64) -> Option<KvEntry> {
        self.st.entries.get(key).filter(|e| e.live(now)).map(|e| KvEntry {
            key: key.to_owned(),
            value: e.value.clone(),
            revision: e.revision,
        })
    }

    /// Live entries whose key starts with `prefix`, sorted.
    pub fn list(&self, prefix: &str, now: i64) -> BTreeMap<String, KvEntry> {
        self.st
            .entries
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(_, e)| e.live(now))
            .map(|(k, e)| (k.clone(), KvEntry { key: k.clone(), value: e.value.clone(), revision: e.revision }))
            .collect()
    }

    /// Appends `writes` to the bucket's log in one write, applies them and
    /// tells watchers (in revision order, while still locked). Returns what
    /// to wait on for durability.
    pub fn apply(&mut self, writes: &[TxnWrite]) -> Result<Option<(Arc<Syncer>, u64)>> {
        let st = &mut *self.st;
        let sync = st.write_frames(|buf| {
            for w in writes {
                match &w.value {
                    Some(v) => codec::put_frame(buf, |b| encode_put(b, &w.key, v, w.revision, w.expires_ms)),
                    None => codec::put_frame(buf, |b| encode_del(b, &w.key, w.revision)),
                }
            }
        })?;
        let now = now_ms();
        for w in writes {
            st.revision = st.revision.max(w.revision);
            match &w.value {
                Some(v) => {
                    st.set(&w.key, Entry { value: v.clone(), revision: w.revision, expires_ms: w.expires_ms });
                    self.bucket.emit(st, KvOp::Put, w.key.clone(), v.clone(), w.revision);
                }
                None => {
                    let was_live = st.entries.get(&w.key).is_some_and(|e| e.live(now));
                    st.unset(&w.key);
                    if was_live {
                        self.bucket.emit(st, KvOp::Delete, w.key.clone(), Bytes::new(), w.revision);
                    }
                }
            }
        }
        st.compact_if_large()?;
        Ok(sync)
    }
}

impl BucketState {
    fn set(&mut self, key: &str, e: Entry) {
        self.unset(key);
        self.live_bytes += entry_cost(key, &e.value);
        if e.expires_ms != 0 {
            self.expiries.insert((e.expires_ms, key.to_owned()));
        }
        self.entries.insert(key.to_owned(), e);
    }

    fn unset(&mut self, key: &str) {
        if let Some(old) = self.entries.remove(key) {
            self.live_bytes -= entry_cost(key, &old.value);
            if old.expires_ms != 0 {
                self.expiries.remove(&(old.expires_ms, key.to_owned()));
            }
        }
    }

    /// Appends the frames `frames` writes (one per record) in one append.
    fn write_frames(&mut self, frames: impl FnOnce(&mut Vec<u8>)) -> Result<Option<(Arc<Syncer>, u64)>> {
        match self.log.as_mut() {
            Some(log) => log.append_frames(frames).map(Some),
            None => Ok(None),
        }
    }

    fn write(
        &mut self,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> Result<Option<(std::sync::Arc<super::log::Syncer>, u64)>> {
        match self.log.as_mut() {
            Some(log) => log.append(encode).map(Some),
            None => Ok(None),
        }
    }

    fn replay(&mut self, body: &[u8], now: i64) -> std::result::Result<(), codec::Corrupt> {
        let mut r = Reader::new(body);
        match r.u8()? {
            W_PUT => {
                let key = r.string()?;
                let value = r.owned()?;
                let revision = r.u64()?;
                let expires_ms = r.i64()?;
                self.revision = self.revision.max(revision);
                let e = Entry { value, revision, expires_ms };
                if e.live(now) {
                    self.set(&key, e);
                } else {
                    self.unset(&key);
                }
            }
            W_DEL => {
                let key = r.string()?;
                self.revision = self.revision.max(r.u64()?);
                self.unset(&key);
            }
            _ => return Err(codec::Corrupt),
        }
        Ok(())
    }

    fn compact_if_large(&mut self) -> Result<()> {
        let Some(log) = self.log.as_mut() else { return Ok(()) };
        let (entries, rev) = (&self.entries, self.revision);
        log.compact_if_due(self.live_bytes, |buf| {
            for (k, e) in entries {
                codec::put_frame(buf, |b| encode_put(b, k, &e.value, e.revision, e.expires_ms));
            }
            // Keep the bucket revision monotonic even if the newest key was deleted.
            codec::put_frame(buf, |b| encode_del(b, "", rev));
        })
    }
}

/// Writes the body of a put record (framed by the caller).
fn encode_put(b: &mut Vec<u8>, key: &str, value: &[u8], rev: u64, expires_ms: i64) {
    b.push(W_PUT);
    codec::put_bytes(b, key.as_bytes());
    codec::put_bytes(b, value);
    b.extend_from_slice(&rev.to_le_bytes());
    b.extend_from_slice(&expires_ms.to_le_bytes());
}

/// Writes the body of a delete record (framed by the caller).
fn encode_del(b: &mut Vec<u8>, key: &str, rev: u64) {
    b.push(W_DEL);
    codec::put_bytes(b, key.as_bytes());
    b.extend_from_slice(&rev.to_le_bytes());
}

#[cfg(test)]
mod watch_resume_tests {
    use super::*;

    fn bucket() -> Bucket {
        Bucket::open("t/n/b", None, FsyncPolicy::Never, &SyncRegistry::default()).unwrap()
    }

    #[tokio::test]
    async fn resumes_exactly_from_a_kept_cursor() {
        let b = bucket();
        let (start, _) = b.watch_resume("", None).unwrap();
        b.put("a", Bytes::from_static(b"1"), 0, None).await.unwrap();
        b.put("b", Bytes::from_static(b"2"), 0, None).await.unwrap();
        b.delete("a").await.unwrap();
        let (_, mut w) = b.watch_resume("", Some(start)).unwrap();
        let mut seen = Vec::new();
        for _ in 0..3 {
            let e = w.next().await.unwrap().unwrap();
            seen.push((e.op, e.key, e.cursor.seq));
        }
        assert_eq!(seen, vec![(KvOp::Put, "a".into(), 1), (KvOp::Put, "b".into(), 2), (KvOp::Delete, "a".into(), 3)]);
        // From the middle: only what came after.
        let (_, mut w) = b.watch_resume("b", Some(WatchCursor { epoch: start.epoch, seq: 1 })).unwrap();
        b.put("b", Bytes::from_static(b"3"), 0, None).await.unwrap();
        assert_eq!(w.next().await.unwrap().unwrap().cursor.seq, 2);
        assert_eq!(w.next().await.unwrap().unwrap().cursor.seq, 4);
    }

    #[tokio::test]
    async fn refuses_what_it_can_not_replay() {
        let b = bucket();
        let (start, _) = b.watch_resume("", None).unwrap();
        assert!(matches!(
            b.watch_resume("", Some(WatchCursor { epoch: start.epoch ^ 2, seq: 0 })),
            Err(Error::Conflict(_))
        ));
        for i in 0..HISTORY_EVENTS + 1 {
            b.put("k", Bytes::from(i.to_string()), 0, None).await.unwrap();
        }
        assert!(matches!(b.watch_resume("", Some(start)), Err(Error::Conflict(_))));
        let recent = WatchCursor { epoch: start.epoch, seq: HISTORY_EVENTS as u64 };
        assert!(b.watch_resume("", Some(recent)).is_ok());
    }
}
