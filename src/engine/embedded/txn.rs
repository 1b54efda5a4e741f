//! KV transactions of the embedded engine.
//!
//! Every bucket a transaction touches is locked (in name order, so two
//! transactions never deadlock) while its ops run against a private view;
//! nothing changes until every check passed. Then, on `file://`, the whole
//! transaction is appended to the engine's transaction log as one frame:
//! that append is the commit point. Only after it are the writes appended
//! to each bucket's own log and applied in memory, still under the locks,
//! so no reader or watcher sees part of a transaction.
//!
//! A crash between the two appends leaves a bucket log without some of the
//! writes; opening the engine replays the transaction log and re-applies
//! every write whose revision is above its bucket's, then empties the log.
//! A torn last frame of the transaction log is a transaction that never
//! committed (none of its writes reached a bucket log).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::model::KvEntry;
use crate::txn::{self, TxnOp, TxnResult};

use super::codec::{self, Piece, Reader};
use super::kv::{Bucket, Locked, TxnWrite};
use super::log::{LogFile, PendingSync, SyncRegistry};
use super::wal::damage_error;
use super::{now_ms, Inner};

/// The transaction log is emptied once it grows past this (after every
/// bucket log was made durable, so nothing depends on it any more).
const TXN_LOG_LIMIT: u64 = 64 << 20;

const TXN_RECORD: u8 = 1;

/// The engine's transaction log (`<dir>/txn/kv.log`); in memory, just the
/// lock that orders commits.
pub struct TxnLog {
    file: Mutex<Option<LogFile>>,
    /// A bucket append failed after a commit: the log is needed to repair
    /// it on the next open, so it is never emptied while running.
    keep: std::sync::atomic::AtomicBool,
}

/// The staged writes of one transaction, per bucket.
type Staged = Vec<(String, Vec<TxnWrite>)>;

impl TxnLog {
    pub fn memory() -> TxnLog {
        TxnLog { file: Mutex::new(None), keep: Default::default() }
    }

    fn path(dir: &Path) -> PathBuf {
        dir.join("txn").join("kv.log")
    }

    /// Opens the log of `dir`, re-applies what the bucket logs lack, makes
    /// the buckets durable and empties the log; later commits append to it.
    pub fn recover(inner: &Inner, dir: &Path, registry: &SyncRegistry) -> Result<()> {
        let path = Self::path(dir);
        std::fs::create_dir_all(path.parent().unwrap_or(dir)).map_err(|e| Error::io("create txn dir", e))?;
        let (mut log, data) = LogFile::open(&path)?;
        // Damage inside the log is refused like in every other log; only a
        // torn last frame (a transaction that never committed) is cut.
        let scan = codec::scan(&data, true, |_| true);
        let damaged: Vec<(usize, usize)> = scan.damaged().collect();
        if !damaged.is_empty() {
            return Err(damage_error(&path, &damaged));
        }
        let mut replayed = 0usize;
        for piece in &scan.pieces {
            let Piece::Frame { pos, body } = piece else { continue };
            let staged = decode(body).map_err(|_| {
                Error::Internal(format!("{}: the record at byte {pos} can not be decoded", path.display()))
            })?;
            for (bucket, writes) in staged {
                inner.bucket(&bucket)?.redo(&writes)?;
            }
            replayed += 1;
        }
        log.cut_tail(scan.tail as u64, &data)?;
        registry.register(log.syncer());
        if replayed > 0 {
            registry.sync_dirty()?;
            tracing::debug!(transactions = replayed, "transaction log checked against the buckets");
            log.replace(&[])?;
        }
        *inner.txn_log.file.lock().unwrap() = Some(log);
        Ok(())
    }
}

impl Inner {
    /// Runs a transaction; returns once it is durable as the policy asks.
    pub(super) async fn kv_txn(&self, ops: Vec<TxnOp>) -> Result<Vec<TxnResult>> {
        let (results, pending) = self.kv_txn_locked(ops)?;
        pending.wait(self.cfg.fsync).await?;
        Ok(results)
    }

    /// Validates, applies and logs a transaction under its buckets' locks.
    fn kv_txn_locked(&self, ops: Vec<TxnOp>) -> Result<(Vec<TxnResult>, PendingSync)> {
        txn::validate(&ops, self.cfg.max_payload_bytes)?;
        let mut names: Vec<String> = ops.iter().map(|o| o.bucket().to_owned()).collect();
        names.sort_unstable();
        names.dedup();
        let buckets: Vec<Arc<Bucket>> = names.iter().map(|n| self.bucket(n)).collect::<Result<_>>()?;
        let index: HashMap<String, usize> = names.iter().enumerate().map(|(i, n)| (n.clone(), i)).collect();
        // Sorted names: every transaction locks in the same order.
        let mut locked: Vec<Locked<'_>> = buckets.iter().map(|b| b.lock()).collect();
        let now = now_ms();
        let mut view = View::new(&locked);
        let mut results = Vec::with_capacity(ops.len());
        for (i, op) in ops.into_iter().enumerate() {
            let b = index[op.bucket()];
            results.push(match op {
                TxnOp::Get { key, .. } => TxnResult::Get(view.get(&locked, b, &key, now)),
                TxnOp::List { prefix, .. } => TxnResult::List(view.list(&locked, b, &prefix, now)),
                TxnOp::Put { key, value, ttl_ms, .. } => {
                    let expires_ms = if ttl_ms > 0 { now + ttl_ms as i64 } else { 0 };
                    TxnResult::Put(view.write(b, key, Some(value), expires_ms))
                }
                TxnOp::Delete { key, .. } => {
                    let existed = view.get(&locked, b, &key, now).is_some();
                    if existed {
                        view.write(b, key, None, 0);
                    }
                    TxnResult::Delete(existed)
                }
                TxnOp::Check { bucket, key, revision } => {
                    let current = view.get(&locked, b, &key, now).map_or(0, |e| e.revision);
                    if current != revision {
                        return Err(txn::conflict(i, &bucket, &key, current, revision));
                    }
                    TxnResult::Check
                }
            });
        }
        let staged: Staged = view
            .writes
            .into_iter()
            .enumerate()
            .filter(|(_, w)| !w.is_empty())
            .map(|(b, w)| (names[b].clone(), w))
            .collect();
        if staged.is_empty() {
            return Ok((results, PendingSync::none()));
        }
        let mut commit_log = self.txn_log.file.lock().unwrap();
        let ticket = match commit_log.as_mut() {
            Some(log) => {
                let mut buf = Vec::new();
                codec::put_frame(&mut buf, |b| encode(b, &staged));
                let ticket = log.append(&buf)?;
                Some((log.syncer().clone(), ticket))
            }
            None => None,
        };
        // Committed: from here on the transaction log holds it, so a failing
        // bucket append is repaired on the next open rather than undone.
        let mut repair = false;
        for (name, writes) in &staged {
            let b = index[name];
            if let Err(e) = locked[b].apply(writes) {
                tracing::error!(bucket = %name, error = %e, "transaction applied in memory; its bucket log append failed and is redone from the transaction log on the next open");
                repair = true;
            }
        }
        drop(locked);
        if repair {
            self.txn_log.keep.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let full = !self.txn_log.keep.load(std::sync::atomic::Ordering::Relaxed)
            && commit_log.as_ref().is_some_and(|l| l.len() > TXN_LOG_LIMIT);
        if full {
            // Every bucket log made durable first: then nothing needs the log.
            self.registry.sync_dirty()?;
            if let Some(log) = commit_log.as_mut() {
                log.replace(&[])?;
            }
        }
        drop(commit_log);
        // When the log was emptied, sync_dirty above already made this
        // transaction durable in its buckets.
        let pending = match (ticket, full) {
            (Some((syncer, ticket)), false) => PendingSync::one(syncer, ticket),
            _ => PendingSync::none(),
        };
        Ok((results, pending))
    }
}

/// The transaction's own view: the locked buckets plus its staged writes.
struct View {
    /// Latest staged state of each key written, per bucket.
    staged: Vec<HashMap<String, Option<KvEntry>>>,
    writes: Vec<Vec<TxnWrite>>,
    next_rev: Vec<u64>,
}

impl View {
    fn new(locked: &[Locked<'_>]) -> View {
        View {
            staged: locked.iter().map(|_| HashMap::new()).collect(),
            writes: locked.iter().map(|_| Vec::new()).collect(),
            next_rev: locked.iter().map(|l| l.revision()).collect(),
        }
    }

    fn get(&self, locked: &[Locked<'_>], b: usize, key: &str, now: i64) -> Option<KvEntry> {
        match self.staged[b].get(key) {
            Some(staged) => staged.clone(),
            None => locked[b].get(key, now),
        }
    }

    fn list(&self, locked: &[Locked<'_>], b: usize, prefix: &str, now: i64) -> Vec<KvEntry> {
        let mut out: BTreeMap<String, KvEntry> = locked[b].list(prefix, now);
        for (k, staged) in self.staged[b].iter().filter(|(k, _)| k.starts_with(prefix)) {
            match staged {
                Some(e) => out.insert(k.clone(), e.clone()),
                None => out.remove(k),
            };
        }
        out.into_values().collect()
    }

    /// Stages a put (Some) or delete (None); returns the revision it gets.
    fn write(&mut self, b: usize, key: String, value: Option<Bytes>, expires_ms: i64) -> u64 {
        self.next_rev[b] += 1;
        let revision = self.next_rev[b];
        let entry = value.clone().map(|value| KvEntry { key: key.clone(), value, revision });
        self.staged[b].insert(key.clone(), entry);
        self.writes[b].push(TxnWrite { key, value, revision, expires_ms });
        revision
    }
}

fn encode(b: &mut Vec<u8>, staged: &Staged) {
    b.push(TXN_RECORD);
    b.extend_from_slice(&(staged.len() as u32).to_le_bytes());
    for (bucket, writes) in staged {
        codec::put_bytes(b, bucket.as_bytes());
        b.extend_from_slice(&(writes.len() as u32).to_le_bytes());
        for w in writes {
            codec::put_bytes(b, w.key.as_bytes());
            codec::put_opt_bytes(b, w.value.as_deref());
            b.extend_from_slice(&w.revision.to_le_bytes());
            b.extend_from_slice(&w.expires_ms.to_le_bytes());
        }
    }
}

/// Decodes `data` as one transaction record, then as a whole log file
/// (the fuzz targets); the number of transactions decoded.
pub(super) fn fuzz_decode(data: &[u8]) -> usize {
    let mut n = usize::from(decode(data).is_ok());
    for piece in codec::scan(data, true, |_| true).pieces {
        if let Piece::Frame { body, .. } = piece {
            n += usize::from(decode(body).is_ok());
        }
    }
    n
}

fn decode(body: &[u8]) -> std::result::Result<Staged, codec::Corrupt> {
    let mut r = Reader::new(body);
    if r.u8()? != TXN_RECORD {
        return Err(codec::Corrupt);
    }
    let buckets = r.u32()? as usize;
    let mut out = Vec::new();
    for _ in 0..buckets {
        let name = r.string()?;
        crate::names::check_qualified(&name).map_err(|_| codec::Corrupt)?;
        let n = r.u32()? as usize;
        let mut writes = Vec::new();
        for _ in 0..n {
            let key = r.string()?;
            let value = r.opt_bytes()?.map(Bytes::copy_from_slice);
            let revision = r.u64()?;
            let expires_ms = r.i64()?;
            writes.push(TxnWrite { key, value, revision, expires_ms });
        }
        out.push((name, writes));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_reject_garbage() {
        let staged: Staged = vec![(
            "t/n/a".into(),
            vec![
                TxnWrite { key: "k".into(), value: Some(Bytes::from_static(b"v")), revision: 3, expires_ms: 0 },
                TxnWrite { key: "gone".into(), value: None, revision: 4, expires_ms: 0 },
            ],
        )];
        let mut buf = Vec::new();
        encode(&mut buf, &staged);
        assert_eq!(decode(&buf).unwrap(), staged);
        for cut in 0..buf.len() {
            assert!(decode(&buf[..cut]).is_err(), "short record of {cut} bytes accepted");
        }
    }
}
