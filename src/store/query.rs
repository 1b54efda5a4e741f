//! Queries: what `all`, `where`, `find_one`, `count`, `first`, `last` and
//! the aggregates compute, and named query definitions
//! (`{"type": "where", "bucket": "users", "filter": {"role": {"$param": "role"}}}`)
//! that live queries evaluate.

use serde_json::{json, Value};

use super::error::{StoreError, StoreResult};
use super::filter::{bind, lookup, Filter};
use super::records;
use super::Store;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    All,
    Where,
    FindOne,
    Count,
    First,
    Last,
    Sum,
    Avg,
    Min,
    Max,
}

impl Kind {
    fn parse(s: &str) -> StoreResult<Kind> {
        Ok(match s {
            "all" => Kind::All,
            "where" => Kind::Where,
            "findOne" | "find_one" => Kind::FindOne,
            "count" => Kind::Count,
            "first" => Kind::First,
            "last" => Kind::Last,
            "sum" => Kind::Sum,
            "avg" => Kind::Avg,
            "min" => Kind::Min,
            "max" => Kind::Max,
            other => {
                return Err(StoreError::invalid(format!(
                    "unknown query type {other:?} (all, where, findOne, count, first, last, sum, avg, min, max)"
                )))
            }
        })
    }
}

/// A named query as defined (its filter may hold `{"$param": ...}`).
#[derive(Debug, Clone, PartialEq)]
pub struct QueryDef {
    /// What the query computes.
    pub kind: Kind,
    /// The bucket it reads.
    pub bucket: String,
    /// Its filter, parameters unresolved.
    pub filter: Value,
    /// Records taken by `first` and `last`.
    pub n: usize,
    /// The field `sum`, `avg`, `min` and `max` aggregate.
    pub field: Option<String>,
    /// The definition as given, which the API returns.
    pub source: Value,
}

impl QueryDef {
    /// Parses and checks a query definition (`defineQuery`).
    pub fn parse(v: &Value) -> StoreResult<QueryDef> {
        let kind = Kind::parse(v.get("type").and_then(Value::as_str).unwrap_or("where"))?;
        let bucket = v
            .get("bucket")
            .and_then(Value::as_str)
            .ok_or_else(|| StoreError::invalid("a query names its bucket"))?
            .to_owned();
        records::data_bucket(&bucket)?;
        let filter = v.get("filter").cloned().unwrap_or(Value::Null);
        // Checked now with placeholders standing in for the parameters.
        Filter::parse(&placeholders(&filter))?;
        let n = v.get("n").or_else(|| v.get("limit")).and_then(Value::as_u64).unwrap_or(10) as usize;
        let field = v.get("field").and_then(Value::as_str).map(str::to_owned);
        if matches!(kind, Kind::Sum | Kind::Avg | Kind::Min | Kind::Max) && field.is_none() {
            return Err(StoreError::invalid("an aggregate query names its field"));
        }
        Ok(QueryDef { kind, bucket, filter, n, field, source: v.clone() })
    }

    /// The query's result for these parameters.
    pub async fn run(&self, store: &Store, params: &Value) -> StoreResult<Value> {
        let filter = Filter::parse(&bind(&self.filter, params)?)?;
        let recs = store.matching(&self.bucket, &filter).await?;
        Ok(compute(self.kind, recs, self.n, self.field.as_deref()))
    }
}

fn placeholders(v: &Value) -> Value {
    match v {
        Value::Object(m) if m.len() == 1 && m.contains_key("$param") => Value::Null,
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), placeholders(v))).collect()),
        Value::Array(a) => Value::Array(a.iter().map(placeholders).collect()),
        other => other.clone(),
    }
}

/// Applies a query kind to matching records (sorted by id).
pub fn compute(kind: Kind, mut recs: Vec<Value>, n: usize, field: Option<&str>) -> Value {
    let nums = |recs: &[Value]| -> Vec<f64> {
        let f = field.unwrap_or_default();
        recs.iter().filter_map(|r| lookup(r, f).and_then(Value::as_f64)).collect()
    };
    match kind {
        Kind::All | Kind::Where => Value::Array(recs),
        Kind::FindOne => recs.into_iter().next().unwrap_or(Value::Null),
        Kind::Count => json!(recs.len()),
        Kind::First => {
            recs.truncate(n);
            Value::Array(recs)
        }
        Kind::Last => {
            let skip = recs.len().saturating_sub(n);
            Value::Array(recs.split_off(skip))
        }
        Kind::Sum => json!(nums(&recs).iter().sum::<f64>()),
        Kind::Avg => {
            let v = nums(&recs);
            json!(if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 })
        }
        Kind::Min => nums(&recs).into_iter().reduce(f64::min).map_or(Value::Null, |x| json!(x)),
        Kind::Max => nums(&recs).into_iter().reduce(f64::max).map_or(Value::Null, |x| json!(x)),
    }
}

/// `paginate(limit, after)`: records with an id after the cursor, in id
/// order; inserts never move a page boundary, so no record is skipped or
/// repeated across pages.
pub fn page(recs: Vec<Value>, key: &str, limit: usize, after: Option<&str>) -> Value {
    let id = |r: &Value| r.get(key).and_then(records::id_of).unwrap_or_default();
    let mut rest: Vec<Value> = recs.into_iter().filter(|r| after.is_none_or(|a| id(r).as_str() > a)).collect();
    let has_more = rest.len() > limit;
    rest.truncate(limit);
    let next = if has_more { rest.last().map(|r| Value::String(id(r))) } else { None };
    json!({ "records": rest, "hasMore": has_more, "nextCursor": next.unwrap_or(Value::Null) })
}
