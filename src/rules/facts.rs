//! Facts: named JSON values in the KV bucket `rules.facts` (key = fact
//! key), stored as `{"value": v, "updatedAt": ms}`. Rules read them in
//! conditions and set or delete them in actions.

use bytes::Bytes;
use serde_json::{json, Value};

use crate::store::{StoreError, StoreResult};

pub const FACTS: &str = "rules.facts";

/// Fact keys: 1-512 bytes, no NUL (`*` is kept for patterns).
pub fn check_key(key: &str) -> StoreResult<()> {
    if key.is_empty() || key.len() > 512 || key.contains('\0') || key.contains('*') {
        return Err(StoreError::invalid(format!("invalid fact key {key:?}: 1-512 bytes, no NUL or *")));
    }
    Ok(())
}

pub fn encode(value: &Value, now_ms: i64) -> Bytes {
    Bytes::from(json!({"value": value, "updatedAt": now_ms}).to_string())
}

/// The stored form: `{"value", "updatedAt"}`.
pub fn decode(raw: &[u8]) -> StoreResult<Value> {
    serde_json::from_slice(raw).map_err(|e| StoreError::new("INTERNAL", format!("a stored fact is not JSON: {e}")))
}

pub fn value_of(raw: &[u8]) -> StoreResult<Value> {
    Ok(decode(raw)?.get("value").cloned().unwrap_or(Value::Null))
}

/// A fact as the API returns it: `{"key", "value", "updatedAt", "version"}`.
pub fn to_json(key: &str, raw: &[u8], revision: u64) -> StoreResult<Value> {
    let stored = decode(raw)?;
    Ok(json!({
        "key": key,
        "value": stored.get("value").cloned().unwrap_or(Value::Null),
        "updatedAt": stored.get("updatedAt").cloned().unwrap_or(Value::Null),
        "version": revision,
    }))
}
