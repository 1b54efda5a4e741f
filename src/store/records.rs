//! How records live in KV: bucket `users` of the store is the KV bucket
//! `store.users`; a record is the key `r:<id>` holding its JSON, an index
//! entry is the empty key `x:<field>:<value as JSON>:<id>`. The catalog of
//! bucket definitions and named queries is the KV bucket `store._meta`
//! (`b:<bucket>`, `q:<query>`).

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Map, Value};

use super::error::{StoreError, StoreResult};

pub const CATALOG: &str = "store._meta";
pub const RECORD_PREFIX: &str = "r:";
/// Metadata fields the store keeps on every record.
pub const META: [&str; 3] = ["_version", "_createdAt", "_updatedAt"];

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The KV bucket of a store bucket (after checking the name).
pub fn data_bucket(name: &str) -> StoreResult<String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > 100 || name.starts_with('_') || !name.chars().all(ok) {
        return Err(StoreError::invalid(format!(
            "invalid bucket name {name:?}: 1-100 characters of [A-Za-z0-9._-], not starting with _"
        )));
    }
    Ok(format!("store.{name}"))
}

pub fn check_query_name(name: &str) -> StoreResult<()> {
    if name.is_empty() || name.len() > 200 || name.contains('\0') {
        return Err(StoreError::invalid(format!("invalid query name {name:?}: 1-200 bytes")));
    }
    Ok(())
}

pub fn def_key(bucket: &str) -> String {
    format!("b:{bucket}")
}

pub fn query_key(name: &str) -> String {
    format!("q:{name}")
}

pub fn record_key(id: &str) -> String {
    format!("{RECORD_PREFIX}{id}")
}

/// Record ids: 1-512 bytes, no NUL.
pub fn check_id(id: &str) -> StoreResult<()> {
    if id.is_empty() || id.len() > 512 || id.contains('\0') {
        return Err(StoreError::invalid(format!("invalid record id {id:?}: 1-512 bytes, no NUL")));
    }
    Ok(())
}

/// The id of a record as a string key (strings as they are, numbers printed).
pub fn id_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A new id that sorts after the ids this process made before: 12 hex
/// digits of milliseconds, 4 of a per-process counter, 8 random.
pub fn new_id() -> String {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let ms = now_ms().max(0) as u64;
    // (ms << 16 | counter), strictly increasing within this process.
    let candidate = ms << 16;
    let mut prev = LAST.load(Ordering::Relaxed);
    let next = loop {
        let next = candidate.max(prev + 1);
        match LAST.compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => break next,
            Err(p) => prev = p,
        }
    };
    format!("{:012x}{:04x}{:08x}", next >> 16, next & 0xffff, crate::backoff::pseudo_random() as u32)
}

/// A random (version 4) UUID.
pub fn uuid_v4() -> String {
    let mut b = [0u8; 16];
    if getrandom::getrandom(&mut b).is_err() {
        b[..8].copy_from_slice(&crate::backoff::pseudo_random().to_le_bytes());
        b[8..].copy_from_slice(&crate::backoff::pseudo_random().to_le_bytes());
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

/// The data of a write: a JSON object without the store's metadata.
pub fn user_data(data: &Value) -> StoreResult<Map<String, Value>> {
    let Some(m) = data.as_object() else {
        return Err(StoreError::validation(
            "record data must be a JSON object",
            vec![serde_json::json!({"field": "", "message": "data must be an object"})],
        ));
    };
    let mut m = m.clone();
    for k in META {
        m.remove(k);
    }
    Ok(m)
}

/// The JSON form of a number or string that an index key holds: numbers
/// canonical (1 and 1.0 are one key), only scalars (None: not indexable).
pub fn index_value(v: &Value) -> Option<String> {
    match v {
        Value::String(_) | Value::Bool(_) => Some(v.to_string()),
        Value::Number(n) => {
            let f = n.as_f64()?;
            if f.fract() == 0.0 && f.abs() < 9.0e15 {
                Some(format!("{}", f as i64))
            } else {
                Some(v.to_string())
            }
        }
        _ => None,
    }
}

pub fn index_prefix(field: &str, value: &str) -> String {
    format!("x:{field}:{value}:")
}

pub fn index_key(field: &str, value: &str, id: &str) -> String {
    format!("x:{field}:{value}:{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_in_creation_order_and_uuids_are_v4() {
        let ids: Vec<String> = (0..1000).map(|_| new_id()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        let u = uuid_v4();
        assert_eq!((u.len(), &u[14..15]), (36, "4"));
    }

    #[test]
    fn index_values_are_canonical() {
        assert_eq!(index_value(&serde_json::json!(1.0)), index_value(&serde_json::json!(1)));
        assert_eq!(index_value(&serde_json::json!("a")).unwrap(), "\"a\"");
        assert_eq!(index_value(&serde_json::json!([1])), None);
        assert!(data_bucket("_meta").is_err());
        assert_eq!(data_bucket("users").unwrap(), "store.users");
    }
}
