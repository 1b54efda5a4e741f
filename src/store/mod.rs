//! The document store (docs/STORE.md): buckets of JSON records with
//! generated ids and metadata, filters, pagination, aggregates, schemas with
//! validation, secondary indexes, named live queries and atomic
//! multi-bucket transactions — built on KV and KV transactions, so it runs
//! on every engine and every language gets the same behaviour.
//!
//! Every method speaks JSON ([`serde_json::Value`]); [`Store::call`] takes a
//! whole request (`{"type": "store.insert", "bucket": ..., "data": ...}`),
//! which is what the C ABI and the bindings use.

pub(crate) mod error;
pub(crate) mod filter;
mod live;
pub(crate) mod query;
pub(crate) mod records;
pub(crate) mod schema;
mod txn;

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Value};

use crate::client::Client;
use crate::engine::{TxnOp, TxnResult};
use crate::error::Error;

pub use self::error::{StoreError, StoreResult};
pub use self::filter::Filter;
pub use self::live::{Subscription, Update};
pub use self::query::QueryDef;
pub use self::schema::BucketDef;
pub use self::txn::Op as TxnStep;
pub use self::txn::{Failure as TxnFailure, Scope as TxnScope};

use self::query::Kind;
use self::records::CATALOG;

/// Most KV ops one `clear`/`drop_bucket` step deletes at once.
const CLEAR_CHUNK: usize = 5000;

/// The store of one client (its tenant and namespace). Cheap to clone.
#[derive(Clone)]
pub struct Store {
    client: Client,
    live: Arc<live::Hub>,
}

impl Store {
    /// The store on `client`'s tenant and namespace, with no live queries yet.
    pub fn new(client: Client) -> Store {
        Store { client, live: Arc::default() }
    }

    /// The client the store keeps its records in.
    pub fn client(&self) -> &Client {
        &self.client
    }

    // ---- records ----

    /// Inserts a record: the id is the data's key field (`id`) or generated;
    /// returns the record with `_version`, `_createdAt`, `_updatedAt`.
    pub async fn insert(&self, bucket: &str, data: Value) -> StoreResult<Value> {
        self.one(txn::Op::Insert { bucket: bucket.into(), data }).await
    }

    /// The record with id `id`, if any.
    pub async fn get(&self, bucket: &str, id: &str) -> StoreResult<Option<Value>> {
        records::check_id(id)?;
        let kvb = records::data_bucket(bucket)?;
        match self.client.kv_txn(vec![TxnOp::Get { bucket: kvb, key: records::record_key(id) }]).await?.pop() {
            Some(TxnResult::Get(Some(e))) => Ok(Some(txn::parse_record(&e.value)?)),
            _ => Ok(None),
        }
    }

    /// Merges `data` into the record; with `expected_version`, fails with
    /// CONFLICT unless the record is at that `_version`.
    pub async fn update(
        &self,
        bucket: &str,
        id: &str,
        data: Value,
        expected_version: Option<u64>,
    ) -> StoreResult<Value> {
        self.one(txn::Op::Update { bucket: bucket.into(), id: id.into(), data, expected_version }).await
    }

    /// Removes a record (fine when it is not there).
    pub async fn delete(&self, bucket: &str, id: &str) -> StoreResult<()> {
        self.one(txn::Op::Delete { bucket: bucket.into(), id: id.into() }).await.map(|_| ())
    }

    async fn one(&self, op: txn::Op) -> StoreResult<Value> {
        Ok(self.run_txn(vec![op]).await?.pop().unwrap_or(Value::Null))
    }

    /// Runs `[{"op": "get"|"insert"|"update"|"delete"|"where"|"findOne"|"count", ...}]`
    /// atomically; returns `{"results": [...]}`, one result per op.
    pub async fn transaction(&self, ops: &Value) -> StoreResult<Value> {
        let Some(items) = ops.as_array() else {
            return Err(StoreError::invalid("a transaction is an array of operations"));
        };
        let ops = items.iter().map(txn::Op::parse).collect::<StoreResult<Vec<_>>>()?;
        Ok(json!({ "results": self.run_txn(ops).await? }))
    }

    // ---- queries ----

    /// Every record of the bucket.
    pub async fn all(&self, bucket: &str) -> StoreResult<Vec<Value>> {
        self.matching(bucket, &Filter::everything()).await
    }

    /// The records matching `filter` (docs/STORE.md, "Filters").
    pub async fn where_(&self, bucket: &str, filter: &Value) -> StoreResult<Vec<Value>> {
        self.matching(bucket, &Filter::parse(filter)?).await
    }

    /// One record matching `filter`, if any.
    pub async fn find_one(&self, bucket: &str, filter: &Value) -> StoreResult<Option<Value>> {
        Ok(self.where_(bucket, filter).await?.into_iter().next())
    }

    /// How many records match `filter`.
    pub async fn count(&self, bucket: &str, filter: &Value) -> StoreResult<u64> {
        Ok(self.where_(bucket, filter).await?.len() as u64)
    }

    /// The first `n` records of [`Store::all`].
    pub async fn first(&self, bucket: &str, n: usize) -> StoreResult<Value> {
        Ok(query::compute(Kind::First, self.all(bucket).await?, n, None))
    }

    /// The last `n` records of [`Store::all`].
    pub async fn last(&self, bucket: &str, n: usize) -> StoreResult<Value> {
        Ok(query::compute(Kind::Last, self.all(bucket).await?, n, None))
    }

    /// `{"records": [...], "hasMore": bool, "nextCursor": id | null}`.
    pub async fn paginate(&self, bucket: &str, limit: usize, after: Option<&str>) -> StoreResult<Value> {
        if limit == 0 {
            return Err(StoreError::invalid("paginate needs a limit of at least 1"));
        }
        let (def, _) = self.read_def(bucket).await?;
        Ok(query::page(self.all(bucket).await?, &def.unwrap_or_default().key, limit, after))
    }

    /// `sum`, `avg`, `min` or `max` of a numeric field over matching records.
    pub async fn aggregate(&self, bucket: &str, kind: &str, field: &str, filter: &Value) -> StoreResult<Value> {
        let kind = match kind {
            "sum" => Kind::Sum,
            "avg" => Kind::Avg,
            "min" => Kind::Min,
            "max" => Kind::Max,
            other => return Err(StoreError::invalid(format!("unknown aggregate {other:?}"))),
        };
        Ok(query::compute(kind, self.where_(bucket, filter).await?, 0, Some(field)))
    }

    /// Removes every record of the bucket (in steps of a few thousand
    /// keys, each atomic); returns how many records went.
    pub async fn clear(&self, bucket: &str) -> StoreResult<u64> {
        let kvb = records::data_bucket(bucket)?;
        let keys = self.client.kv_keys(&kvb, "").await?;
        let removed = keys.iter().filter(|k| k.starts_with(records::RECORD_PREFIX)).count() as u64;
        for chunk in keys.chunks(CLEAR_CHUNK) {
            let ops = chunk.iter().map(|k| TxnOp::Delete { bucket: kvb.clone(), key: k.clone() }).collect();
            self.client.kv_txn(ops).await?;
        }
        Ok(removed)
    }

    /// Records matching `filter`, in id order. With an equality on an
    /// indexed field, only the index entries of that value and their
    /// records are read; otherwise the whole bucket.
    pub(crate) async fn matching(&self, bucket: &str, filter: &Filter) -> StoreResult<Vec<Value>> {
        let (def, _) = self.read_def(bucket).await?;
        let def = def.unwrap_or_default();
        let found = self.candidates(&def, bucket, filter).await?;
        Ok(found.into_iter().map(|(_, r, _)| r).filter(|r| filter.matches(r)).collect())
    }

    /// Records that may match (id, record, revision): an index lookup when
    /// the filter allows it, else every record.
    async fn candidates(
        &self,
        def: &BucketDef,
        bucket: &str,
        filter: &Filter,
    ) -> StoreResult<Vec<(String, Value, u64)>> {
        let kvb = records::data_bucket(bucket)?;
        let indexed = filter.required_equalities().into_iter().find_map(|(field, v)| {
            let enc = records::index_value(v)?;
            def.indexes.iter().any(|i| i == field).then(|| records::index_prefix(field, &enc))
        });
        let entries = match indexed {
            Some(prefix) => {
                let listed =
                    self.client.kv_txn(vec![TxnOp::List { bucket: kvb.clone(), prefix: prefix.clone() }]).await?;
                let Some(TxnResult::List(idx)) = listed.into_iter().next() else { return Ok(Vec::new()) };
                let gets: Vec<TxnOp> = idx
                    .iter()
                    .map(|e| TxnOp::Get { bucket: kvb.clone(), key: records::record_key(&e.key[prefix.len()..]) })
                    .collect();
                if gets.is_empty() {
                    return Ok(Vec::new());
                }
                let mut out = Vec::new();
                for chunk in gets.chunks(crate::txn::MAX_TXN_OPS) {
                    for r in self.client.kv_txn(chunk.to_vec()).await? {
                        if let TxnResult::Get(Some(e)) = r {
                            out.push(e);
                        }
                    }
                }
                out
            }
            None => {
                let listed = self
                    .client
                    .kv_txn(vec![TxnOp::List { bucket: kvb, prefix: records::RECORD_PREFIX.into() }])
                    .await?;
                match listed.into_iter().next() {
                    Some(TxnResult::List(all)) => all,
                    _ => Vec::new(),
                }
            }
        };
        entries
            .into_iter()
            .map(|e| {
                let id = txn::id_from_key(&e.key).unwrap_or_default().to_owned();
                Ok((id, txn::parse_record(&e.value)?, e.revision))
            })
            .collect()
    }

    // ---- bucket definitions ----

    /// The bucket's definition and the catalog revision it was read at (0:
    /// not defined).
    pub(crate) async fn read_def(&self, bucket: &str) -> StoreResult<(Option<BucketDef>, u64)> {
        records::data_bucket(bucket)?;
        let got =
            self.client.kv_txn(vec![TxnOp::Get { bucket: CATALOG.into(), key: records::def_key(bucket) }]).await?;
        match got.into_iter().next() {
            Some(TxnResult::Get(Some(e))) => {
                let v: Value = serde_json::from_slice(&e.value)
                    .map_err(|err| StoreError::new("INTERNAL", format!("stored definition of {bucket}: {err}")))?;
                Ok((Some(BucketDef::parse(&v)?), e.revision))
            }
            _ => Ok((None, 0)),
        }
    }

    /// Defines a bucket: `{"key"?, "schema"?, "indexes"?}`. Records already
    /// in it are indexed.
    pub async fn define_bucket(&self, bucket: &str, config: &Value) -> StoreResult<()> {
        let def = BucketDef::parse(config)?;
        self.put_def(bucket, &def, 0).await.map_err(|e| match e.code {
            "CONFLICT" => StoreError::new("ALREADY_EXISTS", format!("bucket {bucket} is already defined")),
            _ => e,
        })?;
        self.reindex(bucket, &def).await
    }

    /// Adds or replaces schema fields and adds indexes (existing records are
    /// indexed; they are not validated again).
    pub async fn update_bucket(&self, bucket: &str, update: &Value) -> StoreResult<()> {
        loop {
            let (Some(def), rev) = self.read_def(bucket).await? else {
                return Err(StoreError::new("BUCKET_NOT_DEFINED", format!("bucket {bucket} is not defined")));
            };
            let merged = def.merge(update)?;
            match self.put_def(bucket, &merged, rev).await {
                Ok(()) => return self.reindex(bucket, &merged).await,
                Err(e) if e.code == "CONFLICT" => continue, // defined again meanwhile: merge into that
                Err(e) => return Err(e),
            }
        }
    }

    /// The bucket's definition as `defineBucket` took it; BUCKET_NOT_DEFINED if it has none.
    pub async fn get_bucket_schema(&self, bucket: &str) -> StoreResult<Value> {
        match self.read_def(bucket).await? {
            (Some(def), _) => Ok(def.to_json()),
            (None, _) => Err(StoreError::new("BUCKET_NOT_DEFINED", format!("bucket {bucket} is not defined"))),
        }
    }

    /// Removes the definition and every record.
    pub async fn drop_bucket(&self, bucket: &str) -> StoreResult<()> {
        let kvb = records::data_bucket(bucket)?;
        let gone =
            self.client.kv_txn(vec![TxnOp::Delete { bucket: CATALOG.into(), key: records::def_key(bucket) }]).await?;
        let keys = self.client.kv_keys(&kvb, "").await?;
        if gone.first() == Some(&TxnResult::Delete(false)) && keys.is_empty() {
            return Err(StoreError::new("BUCKET_NOT_DEFINED", format!("bucket {bucket} is not defined")));
        }
        self.clear(bucket).await.map(|_| ())
    }

    /// Names of the defined buckets.
    pub async fn buckets(&self) -> StoreResult<Vec<String>> {
        let keys = self.client.kv_keys(CATALOG, "b:").await?;
        Ok(keys.into_iter().map(|k| k[2..].to_owned()).collect())
    }

    /// `{"buckets": n, "queries": n, "subscriptions": n, "records": {bucket: n}}`.
    pub async fn stats(&self) -> StoreResult<Value> {
        let buckets = self.buckets().await?;
        let mut records = serde_json::Map::new();
        for b in &buckets {
            let kvb = records::data_bucket(b)?;
            let n = self.client.kv_keys(&kvb, records::RECORD_PREFIX).await?.len();
            records.insert(b.clone(), json!(n));
        }
        let queries = self.client.kv_keys(CATALOG, "q:").await?.len();
        Ok(json!({
            "buckets": buckets.len(),
            "queries": queries,
            "subscriptions": self.live.count(),
            "records": records,
        }))
    }

    async fn put_def(&self, bucket: &str, def: &BucketDef, expected: u64) -> StoreResult<()> {
        let value = Bytes::from(def.to_json().to_string());
        let key = records::def_key(bucket);
        let ops = vec![
            TxnOp::Check { bucket: CATALOG.into(), key: key.clone(), revision: expected },
            TxnOp::Put { bucket: CATALOG.into(), key, value, ttl_ms: 0 },
        ];
        self.client.kv_txn(ops).await?;
        Ok(())
    }

    /// Writes the index entries the records of `bucket` lack under `def`;
    /// each record's entries are written only if it is unchanged (a record
    /// written meanwhile was indexed by its writer).
    async fn reindex(&self, bucket: &str, def: &BucketDef) -> StoreResult<()> {
        if def.indexes.is_empty() {
            return Ok(());
        }
        let kvb = records::data_bucket(bucket)?;
        for (id, rec, rev) in self.candidates(def, bucket, &Filter::everything()).await? {
            let mut ops = vec![TxnOp::Check { bucket: kvb.clone(), key: records::record_key(&id), revision: rev }];
            for field in &def.indexes {
                if let Some(v) = filter::lookup(&rec, field).and_then(records::index_value) {
                    let key = records::index_key(field, &v, &id);
                    if key.len() <= 1024 {
                        ops.push(TxnOp::Put { bucket: kvb.clone(), key, value: Bytes::new(), ttl_ms: 0 });
                    }
                }
            }
            match self.client.kv_txn(ops).await {
                Ok(_) | Err(crate::Error::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    // ---- named queries and live queries ----

    /// Defines a named query (see [`QueryDef`]); redefining replaces it.
    pub async fn define_query(&self, name: &str, definition: &Value) -> StoreResult<()> {
        records::check_query_name(name)?;
        QueryDef::parse(definition)?;
        let value = Bytes::from(definition.to_string());
        self.client.kv_set(CATALOG, &records::query_key(name), value, 0).await?;
        Ok(())
    }

    /// Removes a named query; its live subscriptions end.
    pub async fn undefine_query(&self, name: &str) -> StoreResult<()> {
        records::check_query_name(name)?;
        if !self.client.kv_delete(CATALOG, &records::query_key(name)).await? {
            return Err(StoreError::new("QUERY_NOT_DEFINED", format!("query {name} is not defined")));
        }
        Ok(())
    }

    /// `[{"name": ..., "definition": {...}}]`, by name.
    pub async fn list_queries(&self) -> StoreResult<Value> {
        let mut out = Vec::new();
        for key in self.client.kv_keys(CATALOG, "q:").await? {
            let name = &key[2..];
            if let Ok(def) = self.query_def(name).await {
                out.push(json!({ "name": name, "definition": def.source }));
            }
        }
        Ok(Value::Array(out))
    }

    pub(crate) async fn query_def(&self, name: &str) -> StoreResult<QueryDef> {
        records::check_query_name(name)?;
        match self.client.kv_get(CATALOG, &records::query_key(name)).await {
            Ok(e) => {
                let v: Value = serde_json::from_slice(&e.value)
                    .map_err(|err| StoreError::new("INTERNAL", format!("stored query {name}: {err}")))?;
                QueryDef::parse(&v)
            }
            Err(crate::Error::NotFound(_)) => {
                Err(StoreError::new("QUERY_NOT_DEFINED", format!("query {name} is not defined")))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Runs a named query once.
    pub async fn run_query(&self, name: &str, params: &Value) -> StoreResult<Value> {
        self.query_def(name).await?.run(self, params).await
    }

    /// Subscribes to a named query: the first update is its current result,
    /// then one per change of the result.
    pub async fn subscribe(&self, name: &str, params: Value) -> StoreResult<Subscription> {
        self.live.subscribe(self, name, params).await
    }

    // ---- one entry point for JSON requests ----

    /// Runs one request `{"type": "store.<op>", ...}` (the `store.` prefix is
    /// optional); see docs/STORE.md for every type and its fields.
    ///
    /// A request does not outlive the link it started on: if the link to
    /// the broker is lost while it runs, it fails with `DISCONNECTED` at
    /// once and sends nothing more (the remote engine would otherwise retry
    /// its reads after the reconnect and then commit, after the caller was
    /// told it failed). Only a commit already on the wire may have landed.
    pub async fn call(&self, req: &Value) -> StoreResult<Value> {
        let Some(link) = self.client.engine().connection() else {
            return self.dispatch(req).await;
        };
        let lost = link.loss_after_now();
        tokio::select! {
            biased;
            result = self.dispatch(req) => result,
            () = lost => Err(StoreError::from(Error::Disconnected(
                "the link was lost while the store request ran; it was not retried".into(),
            ))),
        }
    }

    async fn dispatch(&self, req: &Value) -> StoreResult<Value> {
        let ty = req.get("type").and_then(Value::as_str).ok_or_else(|| StoreError::invalid("a request has a type"))?;
        let ty = ty.strip_prefix("store.").unwrap_or(ty);
        let s = |k: &str| -> StoreResult<&str> {
            req.get(k).and_then(Value::as_str).ok_or_else(|| StoreError::invalid(format!("{ty} needs {k} (a string)")))
        };
        let id = || -> StoreResult<String> {
            req.get("key")
                .or_else(|| req.get("id"))
                .and_then(records::id_of)
                .ok_or_else(|| StoreError::invalid(format!("{ty} needs key")))
        };
        let null = Value::Null;
        let filter = req.get("filter").unwrap_or(&null);
        let n = |k: &str, default: u64| req.get(k).and_then(Value::as_u64).unwrap_or(default) as usize;
        Ok(match ty {
            "insert" => self.insert(s("bucket")?, req.get("data").cloned().unwrap_or(Value::Null)).await?,
            "get" => self.get(s("bucket")?, &id()?).await?.unwrap_or(Value::Null),
            "update" => {
                let expected = req.get("expectedVersion").and_then(Value::as_u64);
                self.update(s("bucket")?, &id()?, req.get("data").cloned().unwrap_or(Value::Null), expected).await?
            }
            "delete" => {
                self.delete(s("bucket")?, &id()?).await?;
                Value::Null
            }
            "all" => Value::Array(self.all(s("bucket")?).await?),
            "where" => Value::Array(self.where_(s("bucket")?, filter).await?),
            "findOne" | "find_one" => self.find_one(s("bucket")?, filter).await?.unwrap_or(Value::Null),
            "count" => json!(self.count(s("bucket")?, filter).await?),
            "first" => self.first(s("bucket")?, n("n", 1)).await?,
            "last" => self.last(s("bucket")?, n("n", 1)).await?,
            "paginate" => {
                let after = req.get("after").and_then(records::id_of);
                self.paginate(s("bucket")?, n("limit", 10), after.as_deref()).await?
            }
            "sum" | "avg" | "min" | "max" => self.aggregate(s("bucket")?, ty, s("field")?, filter).await?,
            "clear" => json!(self.clear(s("bucket")?).await?),
            "transaction" => self.transaction(req.get("operations").unwrap_or(&null)).await?,
            "defineBucket" | "define_bucket" => {
                self.define_bucket(s("name")?, req.get("config").unwrap_or(&json!({}))).await?;
                Value::Null
            }
            "updateBucket" | "update_bucket" => {
                self.update_bucket(s("name")?, req.get("updates").or_else(|| req.get("config")).unwrap_or(&null))
                    .await?;
                Value::Null
            }
            "getBucketSchema" | "get_bucket_schema" => self.get_bucket_schema(s("name")?).await?,
            "dropBucket" | "drop_bucket" => {
                self.drop_bucket(s("name")?).await?;
                Value::Null
            }
            "buckets" => json!(self.buckets().await?),
            "stats" => self.stats().await?,
            "defineQuery" | "define_query" => {
                self.define_query(s("name")?, req.get("definition").unwrap_or(&null)).await?;
                Value::Null
            }
            "undefineQuery" | "undefine_query" => {
                self.undefine_query(s("name")?).await?;
                Value::Null
            }
            "listQueries" | "list_queries" => self.list_queries().await?,
            "runQuery" | "run_query" => self.run_query(s("query")?, req.get("params").unwrap_or(&null)).await?,
            other => return Err(StoreError::invalid(format!("unknown store request type {other:?}"))),
        })
    }
}
