//! Store transactions, and every single write (a one-op transaction).
//!
//! Optimistic: the ops run against what they read (records, bucket
//! definitions), with their own writes visible to later ops; then one KV
//! transaction checks that nothing read has changed and applies every
//! record and index write at once. If something did change, the whole
//! store transaction runs again from fresh reads (a few times, then
//! `CONFLICT`). A record update with `expectedVersion` fails with
//! `CONFLICT` when the stored `_version` differs.
//!
//! `where`, `findOne` and `count` inside a transaction check the records
//! they saw; a record inserted meanwhile that would have matched is not
//! detected (no phantom protection).

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use serde_json::{json, Map, Value};

use crate::engine::{TxnOp, TxnResult};

use super::error::{StoreError, StoreResult};
use super::filter::{lookup, Filter};
use super::records::{self, CATALOG, RECORD_PREFIX};
use super::schema::BucketDef;
use super::Store;

/// Runs of an optimistic transaction before it gives up with CONFLICT.
const ATTEMPTS: usize = 16;

/// One op of a store transaction, parsed.
#[derive(Debug, Clone)]
#[allow(missing_docs)] // the fields are the request fields of docs/STORE.md
pub enum Op {
    /// Reads the record `id`.
    Get { bucket: String, id: String },
    /// Inserts `data` as a new record.
    Insert { bucket: String, data: Value },
    /// Merges `data` into record `id`, if it is at `expected_version` when given.
    Update { bucket: String, id: String, data: Value, expected_version: Option<u64> },
    /// Deletes record `id`.
    Delete { bucket: String, id: String },
    /// Reads the records matching `filter`.
    Where { bucket: String, filter: Filter },
    /// Reads one record matching `filter`.
    FindOne { bucket: String, filter: Filter },
    /// Counts the records matching `filter`.
    Count { bucket: String, filter: Filter },
}

impl Op {
    /// Parses `{"op": "get", "bucket": "users", "key": "u1", ...}`.
    pub fn parse(v: &Value) -> StoreResult<Op> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let bucket = s("bucket").ok_or_else(|| StoreError::invalid("every transaction op names its bucket"))?;
        let id = || {
            v.get("key").or_else(|| v.get("id")).and_then(records::id_of).ok_or_else(|| {
                StoreError::invalid(format!("op {} on {bucket} needs a key", s("op").unwrap_or_default()))
            })
        };
        let filter = || Filter::parse(v.get("filter").unwrap_or(&Value::Null));
        let data = || v.get("data").cloned().ok_or_else(|| StoreError::invalid("insert and update need data"));
        Ok(match s("op").as_deref() {
            Some("get") => Op::Get { id: id()?, bucket },
            Some("insert") => Op::Insert { data: data()?, bucket },
            Some("update") => Op::Update {
                id: id()?,
                data: data()?,
                expected_version: v.get("expectedVersion").and_then(Value::as_u64),
                bucket,
            },
            Some("delete") => Op::Delete { id: id()?, bucket },
            Some("where") => Op::Where { filter: filter()?, bucket },
            Some("findOne") => Op::FindOne { filter: filter()?, bucket },
            Some("count") => Op::Count { filter: filter()?, bucket },
            other => {
                return Err(StoreError::invalid(format!(
                    "unknown transaction op {other:?} (get, insert, update, delete, where, findOne, count)"
                )))
            }
        })
    }

    fn bucket(&self) -> &str {
        match self {
            Op::Get { bucket, .. }
            | Op::Insert { bucket, .. }
            | Op::Update { bucket, .. }
            | Op::Delete { bucket, .. }
            | Op::Where { bucket, .. }
            | Op::FindOne { bucket, .. }
            | Op::Count { bucket, .. } => bucket,
        }
    }
}

/// What one attempt read and wrote.
#[derive(Default)]
struct Attempt {
    /// (KV bucket, key) → revision seen (0 = absent).
    reads: BTreeMap<(String, String), u64>,
    defs: HashMap<String, BucketDef>,
    /// (store bucket, id) → the record as this transaction sees it now.
    overlay: HashMap<(String, String), Option<Value>>,
    /// (KV bucket, key) → a raw value as this transaction sees it now.
    raw: HashMap<(String, String), Option<Bytes>>,
    writes: Vec<TxnOp>,
}

/// Why an attempt did not commit.
pub enum Failure {
    /// Something read changed before the commit: run again.
    Retry,
    /// The transaction failed for good, with this error.
    Fail(StoreError),
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Failure {
        Failure::Fail(e)
    }
}

impl Store {
    /// Runs ops atomically; returns each op's result in order.
    pub async fn run_txn(&self, ops: Vec<Op>) -> StoreResult<Vec<Value>> {
        for b in ops.iter().map(Op::bucket) {
            records::data_bucket(b)?;
        }
        for _ in 0..ATTEMPTS {
            match self.attempt(&ops).await {
                Ok(results) => return Ok(results),
                Err(Failure::Fail(e)) => return Err(e),
                Err(Failure::Retry) => tokio::task::yield_now().await,
            }
        }
        Err(StoreError::conflict(format!("the transaction's records kept changing; gave up after {ATTEMPTS} attempts")))
    }

    async fn attempt(&self, ops: &[Op]) -> Result<Vec<Value>, Failure> {
        let mut a = Attempt::default();
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            results.push(self.exec(&mut a, op).await?);
        }
        self.commit(a).await?;
        Ok(results)
    }

    /// Runs one op against the attempt's view, staging its writes.
    async fn exec(&self, a: &mut Attempt, op: &Op) -> Result<Value, Failure> {
        let bucket = op.bucket();
        Ok(match op {
            Op::Get { id, .. } => self.record(a, bucket, id).await?.unwrap_or(Value::Null),
            Op::Insert { data, .. } => {
                let def = self.txn_def(a, bucket).await?;
                let mut rec = records::user_data(data)?;
                let id = match rec.get(&def.key).and_then(records::id_of) {
                    Some(id) => id,
                    None => records::new_id(),
                };
                records::check_id(&id)?;
                if self.record(a, bucket, &id).await?.is_some() {
                    return Err(Failure::Fail(StoreError::new(
                        "ALREADY_EXISTS",
                        format!("a record with id {id} is already in bucket {bucket}"),
                    )));
                }
                rec.insert(def.key.clone(), Value::String(id.clone()));
                def.fill_new(&mut rec);
                def.validate(&rec)?;
                let now = records::now_ms();
                rec.insert("_version".into(), json!(1));
                rec.insert("_createdAt".into(), json!(now));
                rec.insert("_updatedAt".into(), json!(now));
                let rec = Value::Object(rec);
                self.stage(a, &def, bucket, &id, None, Some(&rec))?;
                rec
            }
            Op::Update { id, data, expected_version, .. } => {
                let def = self.txn_def(a, bucket).await?;
                let Some(old) = self.record(a, bucket, id).await? else {
                    return Err(Failure::Fail(StoreError::not_found(format!("no record {id} in bucket {bucket}"))));
                };
                let version = old.get("_version").and_then(Value::as_u64).unwrap_or(0);
                if let Some(expected) = expected_version {
                    if *expected != version {
                        return Err(Failure::Fail(StoreError::conflict(format!(
                            "record {id} in {bucket} is at version {version}, expected {expected}"
                        ))));
                    }
                }
                let mut rec: Map<String, Value> = old.as_object().cloned().unwrap_or_default();
                for (k, v) in records::user_data(data)? {
                    if k != def.key {
                        rec.insert(k, v);
                    }
                }
                def.validate(&rec)?;
                rec.insert("_version".into(), json!(version + 1));
                rec.insert("_updatedAt".into(), json!(records::now_ms()));
                let rec = Value::Object(rec);
                self.stage(a, &def, bucket, id, Some(&old), Some(&rec))?;
                rec
            }
            Op::Delete { id, .. } => {
                let def = self.txn_def(a, bucket).await?;
                if let Some(old) = self.record(a, bucket, id).await? {
                    self.stage(a, &def, bucket, id, Some(&old), None)?;
                }
                Value::Null
            }
            Op::Where { filter, .. } => Value::Array(self.txn_where(a, bucket, filter).await?),
            Op::FindOne { filter, .. } => {
                self.txn_where(a, bucket, filter).await?.into_iter().next().unwrap_or(Value::Null)
            }
            Op::Count { filter, .. } => json!(self.txn_where(a, bucket, filter).await?.len()),
        })
    }

    /// Checks every read and applies every staged write in one KV
    /// transaction; `Retry` when something read has changed.
    async fn commit(&self, mut a: Attempt) -> Result<(), Failure> {
        if a.writes.is_empty() {
            return Ok(());
        }
        let mut kv: Vec<TxnOp> = a
            .reads
            .iter()
            .map(|((bucket, key), rev)| TxnOp::Check { bucket: bucket.clone(), key: key.clone(), revision: *rev })
            .collect();
        kv.append(&mut a.writes);
        match self.client.kv_txn(kv).await {
            Ok(_) => Ok(()),
            Err(crate::Error::Conflict(_)) => Err(Failure::Retry),
            Err(e) => Err(Failure::Fail(e.into())),
        }
    }

    /// The bucket's definition (the default for an undefined bucket), read
    /// once per attempt and checked at commit.
    async fn txn_def(&self, a: &mut Attempt, bucket: &str) -> Result<BucketDef, Failure> {
        if let Some(d) = a.defs.get(bucket) {
            return Ok(d.clone());
        }
        let (def, rev) = self.read_def(bucket).await?;
        a.reads.insert((CATALOG.to_owned(), records::def_key(bucket)), rev);
        let def = def.unwrap_or_default();
        a.defs.insert(bucket.to_owned(), def.clone());
        Ok(def)
    }

    /// A record as this attempt sees it.
    async fn record(&self, a: &mut Attempt, bucket: &str, id: &str) -> Result<Option<Value>, Failure> {
        records::check_id(id)?;
        if let Some(v) = a.overlay.get(&(bucket.to_owned(), id.to_owned())) {
            return Ok(v.clone());
        }
        let kvb = records::data_bucket(bucket)?;
        let key = records::record_key(id);
        let got = self
            .client
            .kv_txn(vec![TxnOp::Get { bucket: kvb.clone(), key: key.clone() }])
            .await
            .map_err(|e| Failure::Fail(e.into()))?;
        let (rec, rev) = match got.into_iter().next() {
            Some(TxnResult::Get(Some(e))) => (Some(parse_record(&e.value)?), e.revision),
            _ => (None, 0),
        };
        a.reads.entry((kvb, key)).or_insert(rev);
        a.overlay.insert((bucket.to_owned(), id.to_owned()), rec.clone());
        Ok(rec)
    }

    async fn txn_where(&self, a: &mut Attempt, bucket: &str, filter: &Filter) -> Result<Vec<Value>, Failure> {
        let def = self.txn_def(a, bucket).await?;
        let kvb = records::data_bucket(bucket)?;
        let mut seen: BTreeMap<String, Value> = BTreeMap::new();
        for (id, rec, rev) in self.candidates(&def, bucket, filter).await? {
            a.reads.entry((kvb.clone(), records::record_key(&id))).or_insert(rev);
            seen.insert(id, rec);
        }
        for ((b, id), rec) in &a.overlay {
            if b == bucket {
                match rec {
                    Some(r) => seen.insert(id.clone(), r.clone()),
                    None => seen.remove(id),
                };
            }
        }
        Ok(seen.into_values().filter(|r| filter.matches(r)).collect())
    }

    /// Queues the KV writes that turn `old` into `new` (record and index keys).
    fn stage(
        &self,
        a: &mut Attempt,
        def: &BucketDef,
        bucket: &str,
        id: &str,
        old: Option<&Value>,
        new: Option<&Value>,
    ) -> Result<(), Failure> {
        let kvb = records::data_bucket(bucket)?;
        let key = records::record_key(id);
        let old_idx = index_entries(def, old, id);
        let new_idx = index_entries(def, new, id)?;
        for k in old_idx.unwrap_or_default().into_iter().filter(|k| !new_idx.contains(k)) {
            a.writes.push(TxnOp::Delete { bucket: kvb.clone(), key: k });
        }
        match new {
            Some(rec) => {
                let value = Bytes::from(serde_json::to_vec(rec).map_err(|e| StoreError::invalid(e.to_string()))?);
                a.writes.push(TxnOp::Put { bucket: kvb.clone(), key, value, ttl_ms: 0 });
            }
            None => a.writes.push(TxnOp::Delete { bucket: kvb.clone(), key }),
        }
        for k in new_idx {
            a.writes.push(TxnOp::Put { bucket: kvb.clone(), key: k, value: Bytes::new(), ttl_ms: 0 });
        }
        a.overlay.insert((bucket.to_owned(), id.to_owned()), new.cloned());
        Ok(())
    }
}

/// A store transaction driven op by op from outside the store (procedures,
/// the rules evaluator): store ops and raw KV reads and writes of the same
/// tenant that commit together, with the same read checks as
/// [`Store::run_txn`]. On `Failure::Retry` start a new scope.
pub struct Scope<'s> {
    store: &'s Store,
    a: Attempt,
}

impl Store {
    /// A new, empty transaction scope on this store.
    pub fn scope(&self) -> Scope<'_> {
        Scope { store: self, a: Attempt::default() }
    }
}

impl Scope<'_> {
    /// Runs one store op, seeing the writes staged before it.
    pub async fn op(&mut self, op: &Op) -> Result<Value, Failure> {
        self.store.exec(&mut self.a, op).await
    }

    /// Reads a KV key (checked at commit), seeing this scope's own writes.
    pub async fn kv_get(&mut self, bucket: &str, key: &str) -> Result<Option<Bytes>, Failure> {
        let slot = (bucket.to_owned(), key.to_owned());
        if let Some(v) = self.a.raw.get(&slot) {
            return Ok(v.clone());
        }
        let got = self
            .store
            .client
            .kv_txn(vec![TxnOp::Get { bucket: bucket.into(), key: key.into() }])
            .await
            .map_err(|e| Failure::Fail(e.into()))?;
        let (value, rev) = match got.into_iter().next() {
            Some(TxnResult::Get(Some(e))) => (Some(e.value), e.revision),
            _ => (None, 0),
        };
        self.a.reads.entry(slot.clone()).or_insert(rev);
        self.a.raw.insert(slot, value.clone());
        Ok(value)
    }

    /// Stages a KV write.
    pub fn kv_put(&mut self, bucket: &str, key: &str, value: Bytes) {
        self.a.raw.insert((bucket.to_owned(), key.to_owned()), Some(value.clone()));
        self.a.writes.push(TxnOp::Put { bucket: bucket.into(), key: key.into(), value, ttl_ms: 0 });
    }

    /// Stages a KV delete (fine when the key is absent).
    pub fn kv_delete(&mut self, bucket: &str, key: &str) {
        self.a.raw.insert((bucket.to_owned(), key.to_owned()), None);
        self.a.writes.push(TxnOp::Delete { bucket: bucket.into(), key: key.into() });
    }

    /// Checks the reads and applies the writes at once.
    pub async fn commit(self) -> Result<(), Failure> {
        self.store.commit(self.a).await
    }
}

/// The index keys of a record; an indexed value too long for a key is a
/// validation error.
fn index_entries(def: &BucketDef, rec: Option<&Value>, id: &str) -> StoreResult<Vec<String>> {
    let Some(rec) = rec else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for field in &def.indexes {
        if let Some(v) = lookup(rec, field).and_then(records::index_value) {
            let key = records::index_key(field, &v, id);
            if key.len() > 1024 {
                return Err(StoreError::validation(
                    format!("validation failed: indexed field {field} is too long"),
                    vec![json!({"field": field, "message": format!("{field} is indexed: at most ~500 bytes")})],
                ));
            }
            out.push(key);
        }
    }
    Ok(out)
}

pub(super) fn parse_record(raw: &[u8]) -> StoreResult<Value> {
    serde_json::from_slice(raw).map_err(|e| StoreError::new("INTERNAL", format!("a stored record is not JSON: {e}")))
}

/// Strips the record key prefix (`r:`) from a KV key.
pub(super) fn id_from_key(key: &str) -> Option<&str> {
    key.strip_prefix(RECORD_PREFIX)
}
