//! The filter language of `where`, `find_one`, `count` and the aggregates
//! (docs/STORE.md): a JSON object whose keys are field paths (`a.b` reaches
//! into nested objects) matched against a value (equality) or an operator
//! object (`$eq $ne $gt $gte $lt $lte $in $nin $contains $exists`), plus the
//! combinators `$and`, `$or` (arrays of filters) and `$not`. Several keys in
//! one object must all match. `{"$param": "name"}` in a query definition
//! stands for a parameter given at subscribe time.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use super::error::{StoreError, StoreResult};

/// A parsed, checked filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Every one of them holds (`$and`, or several fields side by side).
    All(Vec<Filter>),
    /// At least one holds (`$or`).
    Any(Vec<Filter>),
    /// It does not hold (`$not`).
    Not(Box<Filter>),
    /// A condition on one field.
    Field {
        /// Dotted path of the field in the record.
        path: String,
        /// What its value must satisfy.
        cond: Cond,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    Eq(Value),
    Ne(Value),
    Gt(Value),
    Gte(Value),
    Lt(Value),
    Lte(Value),
    In(Vec<Value>),
    Nin(Vec<Value>),
    /// An array holding the value, or a string holding the substring.
    Contains(Value),
    Exists(bool),
}

impl Filter {
    /// Matches everything.
    pub fn everything() -> Filter {
        Filter::All(Vec::new())
    }

    /// Parses a filter (`null` matches everything).
    pub fn parse(v: &Value) -> StoreResult<Filter> {
        match v {
            Value::Null => Ok(Filter::everything()),
            Value::Object(m) => parse_object(m),
            other => Err(StoreError::invalid(format!("a filter is a JSON object, got {other}"))),
        }
    }

    /// Whether `record` passes the filter.
    pub fn matches(&self, record: &Value) -> bool {
        match self {
            Filter::All(fs) => fs.iter().all(|f| f.matches(record)),
            Filter::Any(fs) => fs.iter().any(|f| f.matches(record)),
            Filter::Not(f) => !f.matches(record),
            Filter::Field { path, cond } => cond.matches(lookup(record, path)),
        }
    }

    /// Equality conditions that every match must satisfy (top-level and
    /// `$and` only): what an index can answer.
    pub fn required_equalities(&self) -> Vec<(&str, &Value)> {
        match self {
            Filter::All(fs) => fs.iter().flat_map(|f| f.required_equalities()).collect(),
            Filter::Field { path, cond: Cond::Eq(v) } => vec![(path.as_str(), v)],
            _ => Vec::new(),
        }
    }
}

fn parse_object(m: &Map<String, Value>) -> StoreResult<Filter> {
    let mut all = Vec::new();
    for (k, v) in m {
        match k.as_str() {
            "$and" | "$or" => {
                let Value::Array(items) = v else {
                    return Err(StoreError::invalid(format!("{k} takes an array of filters")));
                };
                let fs = items.iter().map(Filter::parse).collect::<StoreResult<Vec<_>>>()?;
                all.push(if k == "$and" { Filter::All(fs) } else { Filter::Any(fs) });
            }
            "$not" => all.push(Filter::Not(Box::new(Filter::parse(v)?))),
            op if op.starts_with('$') => return Err(StoreError::invalid(format!("unknown filter operator {op}"))),
            path => all.extend(parse_field(path, v)?),
        }
    }
    Ok(if all.len() == 1 { all.pop().unwrap() } else { Filter::All(all) })
}

fn parse_field(path: &str, v: &Value) -> StoreResult<Vec<Filter>> {
    let field = |cond| Filter::Field { path: path.to_owned(), cond };
    let Value::Object(ops) = v else { return Ok(vec![field(Cond::Eq(v.clone()))]) };
    if !ops.keys().any(|k| k.starts_with('$')) {
        return Ok(vec![field(Cond::Eq(v.clone()))]); // equality with an object
    }
    let list = |op: &str, v: &Value| match v {
        Value::Array(a) => Ok(a.clone()),
        _ => Err(StoreError::invalid(format!("{op} on {path} takes an array"))),
    };
    let mut out = Vec::new();
    for (op, arg) in ops {
        out.push(field(match op.as_str() {
            "$eq" => Cond::Eq(arg.clone()),
            "$ne" => Cond::Ne(arg.clone()),
            "$gt" => Cond::Gt(arg.clone()),
            "$gte" => Cond::Gte(arg.clone()),
            "$lt" => Cond::Lt(arg.clone()),
            "$lte" => Cond::Lte(arg.clone()),
            "$in" => Cond::In(list(op, arg)?),
            "$nin" => Cond::Nin(list(op, arg)?),
            "$contains" => Cond::Contains(arg.clone()),
            "$exists" => match arg {
                Value::Bool(b) => Cond::Exists(*b),
                _ => return Err(StoreError::invalid(format!("$exists on {path} takes true or false"))),
            },
            other => return Err(StoreError::invalid(format!("unknown operator {other} on field {path}"))),
        }));
    }
    Ok(out)
}

impl Cond {
    fn matches(&self, v: Option<&Value>) -> bool {
        match self {
            Cond::Exists(want) => v.is_some_and(|v| !v.is_null()) == *want,
            Cond::Eq(x) => v.is_some_and(|v| equal(v, x)) || (x.is_null() && v.is_none()),
            Cond::Ne(x) => !Cond::Eq(x.clone()).matches(v),
            Cond::In(xs) => v.is_some_and(|v| xs.iter().any(|x| equal(v, x))),
            Cond::Nin(xs) => !v.is_some_and(|v| xs.iter().any(|x| equal(v, x))),
            Cond::Gt(x) => v.and_then(|v| compare(v, x)) == Some(Ordering::Greater),
            Cond::Gte(x) => matches!(v.and_then(|v| compare(v, x)), Some(Ordering::Greater | Ordering::Equal)),
            Cond::Lt(x) => v.and_then(|v| compare(v, x)) == Some(Ordering::Less),
            Cond::Lte(x) => matches!(v.and_then(|v| compare(v, x)), Some(Ordering::Less | Ordering::Equal)),
            Cond::Contains(x) => match (v, x) {
                (Some(Value::Array(items)), x) => items.iter().any(|i| equal(i, x)),
                (Some(Value::String(s)), Value::String(sub)) => s.contains(sub.as_str()),
                _ => false,
            },
        }
    }
}

/// The value at a dotted path.
pub fn lookup<'a>(record: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = record;
    for seg in path.split('.') {
        cur = cur.as_object()?.get(seg)?;
    }
    Some(cur)
}

/// Equality where 1 and 1.0 are the same number.
pub fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// Order of two numbers or two strings; None for anything else.
pub fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// Replaces every `{"$param": "name"}` in a filter with `params[name]`.
pub fn bind(v: &Value, params: &Value) -> StoreResult<Value> {
    match v {
        Value::Object(m) if m.len() == 1 && m.contains_key("$param") => {
            let name = m["$param"].as_str().ok_or_else(|| StoreError::invalid("$param takes a parameter name"))?;
            params.get(name).cloned().ok_or_else(|| {
                StoreError::validation(
                    format!("missing query parameter {name}"),
                    vec![serde_json::json!({ "field": name, "message": "parameter is required" })],
                )
            })
        }
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                out.insert(k.clone(), bind(v, params)?);
            }
            Ok(Value::Object(out))
        }
        Value::Array(a) => Ok(Value::Array(a.iter().map(|v| bind(v, params)).collect::<StoreResult<_>>()?)),
        other => Ok(other.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn m(filter: Value, rec: Value) -> bool {
        Filter::parse(&filter).unwrap().matches(&rec)
    }

    #[test]
    fn equality_comparison_sets_and_combinators() {
        let r = json!({"name": "Ann", "age": 30, "tags": ["a", "b"], "addr": {"city": "Brno"}, "none": null});
        assert!(m(json!({"name": "Ann"}), r.clone()));
        assert!(!m(json!({"name": "Bob"}), r.clone()));
        assert!(m(json!({"age": 30.0}), r.clone()));
        assert!(m(json!({"age": {"$gt": 18, "$lte": 30}}), r.clone()));
        assert!(!m(json!({"age": {"$lt": 30}}), r.clone()));
        assert!(m(json!({"name": {"$in": ["Bob", "Ann"]}}), r.clone()));
        assert!(m(json!({"name": {"$nin": ["Bob"]}}), r.clone()));
        assert!(m(json!({"tags": {"$contains": "b"}}), r.clone()));
        assert!(m(json!({"name": {"$contains": "nn"}}), r.clone()));
        assert!(m(json!({"addr.city": "Brno"}), r.clone()));
        assert!(m(json!({"missing": {"$exists": false}, "none": {"$exists": false}}), r.clone()));
        assert!(m(json!({"$or": [{"name": "Bob"}, {"age": 30}]}), r.clone()));
        assert!(!m(json!({"$and": [{"name": "Ann"}, {"age": 31}]}), r.clone()));
        assert!(m(json!({"$not": {"name": "Bob"}}), r.clone()));
        assert!(!m(json!({"age": {"$gt": "x"}}), r.clone()), "mixed types never compare");
        assert!(m(json!(null), r));
    }

    #[test]
    fn bad_filters_are_clear_errors() {
        for bad in [json!([1]), json!({"$xor": []}), json!({"a": {"$in": 3}}), json!({"a": {"$bogus": 1}})] {
            assert_eq!(Filter::parse(&bad).unwrap_err().code, "INVALID_ARGUMENT", "{bad}");
        }
    }

    #[test]
    fn parameters_bind_and_missing_ones_fail() {
        let f = json!({"role": {"$param": "role"}, "age": {"$gt": {"$param": "min"}}});
        let bound = bind(&f, &json!({"role": "admin", "min": 3})).unwrap();
        assert_eq!(bound, json!({"role": "admin", "age": {"$gt": 3}}));
        assert_eq!(bind(&f, &json!({"role": "x"})).unwrap_err().code, "VALIDATION_ERROR");
    }
}
