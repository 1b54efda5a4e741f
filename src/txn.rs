//! KV transactions: one atomic call holding reads, writes and revision
//! checks over keys and buckets of one tenant (see [`Engine::kv_txn`](crate::Engine::kv_txn)).
//!
//! Ops run in order against the transaction's own view, so a read after a
//! write in the same transaction sees that write. Either every check passes
//! and every write is applied at once (no reader or watcher sees part of
//! it), or the first failed check is reported as `Error::Conflict` and
//! nothing is written. Engines run them in `Engine::kv_txn`.

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::model::KvEntry;
use crate::names;

/// Most ops one transaction may hold.
pub const MAX_TXN_OPS: usize = 10_000;

/// One operation of a transaction. Bucket names are fully qualified.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)] // the fields are named in each variant's doc
pub enum TxnOp {
    /// Reads one key: [`TxnResult::Get`] (None when absent).
    Get { bucket: String, key: String },
    /// Reads every live key starting with `prefix`, sorted by key.
    List { bucket: String, prefix: String },
    /// Writes a value (`ttl_ms` 0 = never expires).
    Put { bucket: String, key: String, value: Bytes, ttl_ms: u64 },
    /// Removes a key; the result tells whether it was there.
    Delete { bucket: String, key: String },
    /// Fails the whole transaction unless the key is at `revision` (0 = the
    /// key must not exist), as seen at this point of the transaction.
    Check { bucket: String, key: String, revision: u64 },
}

impl TxnOp {
    /// The bucket the op works on.
    pub fn bucket(&self) -> &str {
        match self {
            TxnOp::Get { bucket, .. }
            | TxnOp::List { bucket, .. }
            | TxnOp::Put { bucket, .. }
            | TxnOp::Delete { bucket, .. }
            | TxnOp::Check { bucket, .. } => bucket,
        }
    }

    /// The bucket, to qualify it in place.
    pub fn bucket_mut(&mut self) -> &mut String {
        match self {
            TxnOp::Get { bucket, .. }
            | TxnOp::List { bucket, .. }
            | TxnOp::Put { bucket, .. }
            | TxnOp::Delete { bucket, .. }
            | TxnOp::Check { bucket, .. } => bucket,
        }
    }

    /// Whether this op changes data (a transaction of reads only may be retried).
    pub fn writes(&self) -> bool {
        matches!(self, TxnOp::Put { .. } | TxnOp::Delete { .. })
    }
}

/// What one op of a committed transaction produced, in the order of the ops.
#[derive(Debug, Clone, PartialEq)]
pub enum TxnResult {
    /// The entry read; None when the key is absent.
    Get(Option<KvEntry>),
    /// The entries listed, sorted by key.
    List(Vec<KvEntry>),
    /// The revision the write got.
    Put(u64),
    /// Whether the key was there.
    Delete(bool),
    /// The check held.
    Check,
}

/// Checks what every engine requires of a transaction before running it:
/// qualified bucket names of one tenant, valid keys, values within `max_value`
/// bytes, at most [`MAX_TXN_OPS`] ops.
pub fn validate(ops: &[TxnOp], max_value: usize) -> Result<()> {
    if ops.len() > MAX_TXN_OPS {
        return Err(Error::invalid(format!("a transaction holds at most {MAX_TXN_OPS} ops, got {}", ops.len())));
    }
    let mut tenant: Option<&str> = None;
    for (i, op) in ops.iter().enumerate() {
        let bucket = op.bucket();
        names::check_qualified(bucket)?;
        let t = bucket.split('/').next().unwrap_or_default();
        match tenant {
            None => tenant = Some(t),
            Some(first) if first != t => {
                return Err(Error::invalid(format!(
                    "op {i}: bucket {bucket} is in tenant {t}, the transaction in tenant {first}: \
                     a transaction stays within one tenant"
                )))
            }
            Some(_) => {}
        }
        match op {
            TxnOp::Get { key, .. } | TxnOp::Delete { key, .. } | TxnOp::Check { key, .. } => {
                names::check_key(key).map_err(|e| Error::invalid(format!("op {i}: {}", e.message())))?
            }
            TxnOp::Put { key, value, .. } => {
                names::check_key(key).map_err(|e| Error::invalid(format!("op {i}: {}", e.message())))?;
                if value.len() > max_value {
                    return Err(Error::TooLarge(format!(
                        "op {i}: value of {} bytes exceeds the limit of {max_value} bytes",
                        value.len()
                    )));
                }
            }
            TxnOp::List { .. } => {}
        }
    }
    Ok(())
}

/// The message of a failed check, the same on every engine.
pub fn conflict(index: usize, bucket: &str, key: &str, current: u64, expected: u64) -> Error {
    Error::Conflict(format!(
        "transaction check {index} failed: key {key} in {bucket} is at revision {current}, expected {expected}"
    ))
}
