//! KV transactions as JetStream atomic batches. Every bucket of a tenant
//! lives in one stream (see `kv`) and a transaction stays within one tenant,
//! so one batch holds all of it:
//! - reads come from one isolated multi-subject read (`DIRECT.GET` with
//!   `multi_last`), a snapshot as of one stream sequence;
//! - ops run in order against that snapshot plus the transaction's own
//!   writes; a failed check ends it with nothing sent;
//! - the writes go out as one batch (`Nats-Batch-Id`, `-Sequence`,
//!   `-Commit`) that the server stores whole or not at all; each key the
//!   transaction read carries `Nats-Expected-Last-Subject-Sequence` (on its
//!   first write, or on a check message of its own when it is not written),
//!   so a concurrent change fails the commit with Conflict. A transaction that
//!   listed keys requires instead that nothing at all changed in the tenant's
//!   stream since its snapshot (`Nats-Expected-Last-Sequence`), which also
//!   covers keys added under the listed prefix.
//!
//! Limits JetStream imposes: at most [`MAX_BATCH`] messages (writes plus
//! checks of keys read but not written) and 1024 keys read (listed keys
//! included) per transaction.

use std::collections::{BTreeMap, HashMap, HashSet};

use async_nats::HeaderMap;
use bytes::Bytes;

use super::api::{RawMsg, H_KV_OP};
use super::kv::{live, now_ms, Kv, Names};
use crate::engine::{KvEntry, TxnOp, TxnResult};
use crate::error::{Error, Result};

/// JetStream's largest atomic batch (the servers' default `max_batch_size`).
pub(crate) const MAX_BATCH: usize = 1000;

/// A revision known now, or that of the `n`th message of the batch.
#[derive(Clone, Copy)]
enum Rev {
    Known(u64),
    Staged(usize),
}

#[derive(Clone)]
struct Cur {
    value: Bytes,
    rev: Rev,
}

enum Pending {
    Get(Option<(String, Cur)>),
    List(Vec<(String, Cur)>),
    Put(usize),
    Delete(bool),
    Check,
}

/// The transaction's view: the snapshot, its own writes, what it read.
struct View {
    snapshot: HashMap<String, RawMsg>,
    overlay: HashMap<String, Option<Cur>>,
    /// Subject → its last sequence in the snapshot (0: none), for every key
    /// whose snapshot state an op depended on.
    read: BTreeMap<String, u64>,
    written: HashSet<String>,
    writes: Vec<(String, HeaderMap, Bytes)>,
    listed: bool,
    now: i64,
}

impl View {
    fn current(&mut self, subject: &str) -> Option<Cur> {
        if let Some(c) = self.overlay.get(subject) {
            return c.clone();
        }
        let snap = self.snapshot.get(subject);
        self.read.entry(subject.to_owned()).or_insert(snap.map_or(0, |m| m.seq));
        snap.filter(|m| live(m, self.now)).map(|m| Cur { value: m.payload.clone(), rev: Rev::Known(m.seq) })
    }

    fn write(&mut self, subject: String, mut h: HeaderMap, value: Option<Bytes>) -> usize {
        if self.written.insert(subject.clone()) {
            // Only a subject's first write in a batch may carry a check.
            if let Some(seq) = self.read.get(&subject).filter(|_| !self.listed) {
                h.insert("Nats-Expected-Last-Subject-Sequence", seq.to_string().as_str());
            }
        }
        let i = self.writes.len();
        let cur = value.clone().map(|value| Cur { value, rev: Rev::Staged(i) });
        self.writes.push((subject.clone(), h, value.unwrap_or_default()));
        self.overlay.insert(subject, cur);
        i
    }
}

pub async fn run(kv: &Kv, ops: Vec<TxnOp>) -> Result<Vec<TxnResult>> {
    crate::txn::validate(&ops, kv.max_value)?;
    if ops.is_empty() {
        return Ok(Vec::new());
    }
    let mut names: BTreeMap<String, Names> = BTreeMap::new();
    for op in &ops {
        if !names.contains_key(op.bucket()) {
            let (n, _) = kv.ensure(op.bucket()).await?;
            names.insert(op.bucket().to_owned(), n);
        }
    }
    let first = names.values().next().expect("ops name a bucket");
    let (stream, checks) = (first.stream.clone(), first.checks());

    // One isolated read of everything the ops may look at.
    let mut subjects: Vec<String> = names.values().map(|n| n.record.clone()).collect();
    let mut seen = HashSet::new();
    for op in &ops {
        let n = &names[op.bucket()];
        let s = match op {
            TxnOp::Get { key, .. } | TxnOp::Delete { key, .. } | TxnOp::Check { key, .. } => n.subject(key),
            TxnOp::List { .. } => format!("{}*", n.prefix),
            TxnOp::Put { .. } => continue,
        };
        if seen.insert(s.clone()) {
            subjects.push(s);
        }
    }
    let (msgs, upto) = kv.js.multi_last(&stream, &subjects).await?;
    let snapshot: HashMap<String, RawMsg> = msgs.into_iter().map(|m| (m.subject.clone(), m)).collect();

    let mut view = View {
        snapshot,
        overlay: HashMap::new(),
        read: BTreeMap::new(),
        written: HashSet::new(),
        writes: Vec::new(),
        listed: false,
        now: now_ms(),
    };
    let mut pending = Vec::with_capacity(ops.len());
    for (i, op) in ops.into_iter().enumerate() {
        let n = &names[op.bucket()];
        pending.push(match op {
            TxnOp::Get { key, .. } => {
                let s = n.subject(&key);
                Pending::Get(view.current(&s).map(|c| (key, c)))
            }
            TxnOp::List { prefix, .. } => {
                view.listed = true;
                let mut found: BTreeMap<String, Cur> = BTreeMap::new();
                for m in view.snapshot.values() {
                    if let Some(k) = n.key_of(&m.subject).filter(|k| k.starts_with(&prefix)) {
                        if !view.overlay.contains_key(&m.subject) && live(m, view.now) {
                            found.insert(k, Cur { value: m.payload.clone(), rev: Rev::Known(m.seq) });
                        }
                    }
                }
                for (s, c) in &view.overlay {
                    if let Some(k) = n.key_of(s).filter(|k| k.starts_with(&prefix)) {
                        match c {
                            Some(c) => found.insert(k, c.clone()),
                            None => found.remove(&k),
                        };
                    }
                }
                Pending::List(found.into_iter().collect())
            }
            TxnOp::Put { key, value, ttl_ms, .. } => {
                Pending::Put(view.write(n.subject(&key), Kv::put_headers(ttl_ms), Some(value)))
            }
            TxnOp::Delete { key, .. } => {
                let s = n.subject(&key);
                let existed = view.current(&s).is_some();
                if existed {
                    let mut h = HeaderMap::new();
                    h.insert(H_KV_OP, "DEL");
                    view.write(s, h, None);
                }
                Pending::Delete(existed)
            }
            TxnOp::Check { bucket, key, revision } => {
                let current = match view.current(&n.subject(&key)) {
                    None => 0,
                    Some(Cur { rev: Rev::Known(r), .. }) => r,
                    // Its own write: the revision it will get (never the
                    // one a caller could name before the commit).
                    Some(Cur { rev: Rev::Staged(w), .. }) => {
                        return Err(crate::txn::conflict(i, &bucket, &key, upto + 1 + w as u64, revision))
                    }
                };
                if current != revision {
                    return Err(crate::txn::conflict(i, &bucket, &key, current, revision));
                }
                Pending::Check
            }
        });
    }
    if view.writes.is_empty() {
        return Ok(resolve(pending, 0));
    }
    let base = commit(kv, &stream, &checks, &names, view, upto).await?;
    Ok(resolve(pending, base))
}

/// Sends the batch; returns the sequence of its first message.
async fn commit(
    kv: &Kv,
    stream: &str,
    checks: &str,
    names: &BTreeMap<String, Names>,
    mut view: View,
    upto: u64,
) -> Result<u64> {
    let mut msgs = std::mem::take(&mut view.writes);
    if !view.listed {
        // Keys read but not written, and the record of every bucket written
        // (a bucket deleted meanwhile fails the commit): a check message each.
        let mut reads: Vec<(String, u64)> =
            view.read.iter().filter(|(s, _)| !view.written.contains(*s)).map(|(s, q)| (s.clone(), *q)).collect();
        for n in names.values() {
            if view.written.iter().any(|s| s.starts_with(&n.prefix)) {
                reads.push((n.record.clone(), view.snapshot.get(&n.record).map_or(0, |m| m.seq)));
            }
        }
        for (subject, seq) in reads {
            let mut h = HeaderMap::new();
            h.insert("Nats-Expected-Last-Subject-Sequence", seq.to_string().as_str());
            h.insert("Nats-Expected-Last-Subject-Sequence-Subject", subject.as_str());
            msgs.push((checks.to_owned(), h, Bytes::new()));
        }
    }
    if msgs.len() > MAX_BATCH {
        return Err(Error::invalid(format!(
            "a transaction on nats:// holds at most {MAX_BATCH} writes and checks of keys it reads (JetStream's \
             atomic batch limit), this one needs {}",
            msgs.len()
        )));
    }
    let id = batch_id()?;
    let count = msgs.len();
    let what = format!("commit a transaction to {stream}");
    let mut last = None;
    for (i, (subject, mut h, payload)) in msgs.into_iter().enumerate() {
        h.insert("Nats-Batch-Id", id.as_str());
        h.insert("Nats-Batch-Sequence", (i + 1).to_string().as_str());
        if i == 0 && view.listed {
            h.insert("Nats-Expected-Last-Sequence", upto.to_string().as_str());
        }
        if i + 1 == count {
            h.insert("Nats-Batch-Commit", "1");
            last = Some(kv.js.send(subject, h, payload).await?.await);
        } else {
            kv.js
                .client
                .publish_with_headers(subject, h, payload)
                .await
                .map_err(|e| super::api::link_error(&what, e))?;
        }
    }
    match last.expect("a batch has a commit") {
        Ok((seq, _)) => Ok(seq + 1 - count as u64),
        Err(Error::Conflict(m)) => {
            Err(Error::Conflict(format!("transaction not applied: a key it read changed ({m})")))
        }
        Err(e) => {
            let text = e.message().to_owned();
            if text.contains("last sequence") || text.contains("10164") {
                return Err(Error::Conflict(format!("transaction not applied: a key it read changed ({text})")));
            }
            Err(e)
        }
    }
}

fn resolve(pending: Vec<Pending>, base: u64) -> Vec<TxnResult> {
    let rev = |r: Rev| match r {
        Rev::Known(r) => r,
        Rev::Staged(i) => base + i as u64,
    };
    let entry = |(key, c): (String, Cur)| KvEntry { key, value: c.value, revision: rev(c.rev) };
    pending
        .into_iter()
        .map(|p| match p {
            Pending::Get(e) => TxnResult::Get(e.map(entry)),
            Pending::List(es) => TxnResult::List(es.into_iter().map(entry).collect()),
            Pending::Put(i) => TxnResult::Put(base + i as u64),
            Pending::Delete(d) => TxnResult::Delete(d),
            Pending::Check => TxnResult::Check,
        })
        .collect()
}

/// A batch id unique among the stream's open batches.
fn batch_id() -> Result<String> {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b).map_err(|e| Error::Internal(format!("no randomness for a batch id: {e}")))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}
