//! Bucket definitions: the key field, a schema of typed fields, and the
//! indexed fields. A write that breaks the schema fails with
//! `VALIDATION_ERROR` listing every failed field, and writes nothing.

use serde_json::{json, Map, Value};

use super::error::{StoreError, StoreResult};
use super::filter::equal;

const TYPES: &[&str] = &["string", "number", "integer", "boolean", "object", "array", "any"];
const FIELD_KEYS: &[&str] =
    &["type", "required", "default", "enum", "min", "max", "minLength", "maxLength", "generated"];

/// A bucket's definition as stored in the catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketDef {
    /// Field holding the record id (`id`).
    pub key: String,
    /// Field name to its schema (type, required, ...).
    pub fields: Map<String, Value>,
    /// Fields kept in an index.
    pub indexes: Vec<String>,
}

impl Default for BucketDef {
    fn default() -> Self {
        BucketDef { key: "id".into(), fields: Map::new(), indexes: Vec::new() }
    }
}

impl BucketDef {
    /// Parses and checks `{"key"?, "schema"?, "indexes"?}`.
    pub fn parse(v: &Value) -> StoreResult<BucketDef> {
        let Some(m) = v.as_object() else {
            return Err(StoreError::invalid("a bucket definition is a JSON object"));
        };
        let mut def = BucketDef::default();
        for (k, v) in m {
            match k.as_str() {
                "key" => {
                    def.key =
                        v.as_str().filter(|s| check_field_name(s).is_ok()).map(str::to_owned).ok_or_else(|| {
                            StoreError::invalid("key names the id field: a non-empty string without ':'")
                        })?
                }
                "schema" => {
                    let fields = v.as_object().ok_or_else(|| StoreError::invalid("schema is an object of fields"))?;
                    for (name, spec) in fields {
                        check_field(name, spec)?;
                    }
                    def.fields = fields.clone();
                }
                "indexes" => def.indexes = parse_indexes(v)?,
                other => {
                    return Err(StoreError::invalid(format!(
                        "unknown bucket option {other:?} (expected key, schema, indexes)"
                    )))
                }
            }
        }
        Ok(def)
    }

    /// Merges an update: schema fields are added or replaced, indexes added.
    pub fn merge(&self, update: &Value) -> StoreResult<BucketDef> {
        let patch = BucketDef::parse(update)?;
        if update.get("key").is_some() && patch.key != self.key {
            return Err(StoreError::invalid("the key field of a bucket can not change"));
        }
        let mut out = self.clone();
        for (k, v) in patch.fields {
            out.fields.insert(k, v);
        }
        for i in patch.indexes {
            if !out.indexes.contains(&i) {
                out.indexes.push(i);
            }
        }
        Ok(out)
    }

    /// The definition as the API returns it.
    pub fn to_json(&self) -> Value {
        json!({ "key": self.key, "schema": self.fields, "indexes": self.indexes })
    }

    /// Fills defaults and generated fields of a new record.
    pub fn fill_new(&self, rec: &mut Map<String, Value>) {
        for (name, spec) in &self.fields {
            if rec.get(name).is_some_and(|v| !v.is_null()) {
                continue;
            }
            if let Some(d) = spec.get("default") {
                rec.insert(name.clone(), d.clone());
            } else if let Some(g) = spec.get("generated").and_then(Value::as_str) {
                let v = match g {
                    "uuid" => Value::String(super::records::uuid_v4()),
                    _ => Value::from(super::records::now_ms()),
                };
                rec.insert(name.clone(), v);
            }
        }
    }

    /// Checks a whole record against the schema (metadata fields skipped).
    pub fn validate(&self, rec: &Map<String, Value>) -> StoreResult<()> {
        let mut details = Vec::new();
        for (name, spec) in &self.fields {
            let v = rec.get(name).filter(|v| !v.is_null());
            let problem = match v {
                None if spec.get("required") == Some(&Value::Bool(true)) => Some("is required".to_owned()),
                None => None,
                Some(v) => check_value(spec, v),
            };
            if let Some(message) = problem {
                details.push(json!({ "field": name, "message": format!("{name} {message}") }));
            }
        }
        if details.is_empty() {
            return Ok(());
        }
        let first = details[0]["message"].as_str().unwrap_or_default().to_owned();
        Err(StoreError::validation(format!("validation failed: {first}"), details))
    }
}

fn check_value(spec: &Value, v: &Value) -> Option<String> {
    let ty = spec.get("type").and_then(Value::as_str).unwrap_or("any");
    let ok = match ty {
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.as_f64().is_some_and(|f| f.fract() == 0.0),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        _ => true,
    };
    if !ok {
        return Some(format!("must be of type {ty}"));
    }
    if let Some(Value::Array(allowed)) = spec.get("enum") {
        if !allowed.iter().any(|a| equal(a, v)) {
            return Some(format!("must be one of {}", Value::Array(allowed.clone())));
        }
    }
    if let (Some(n), Some(min)) = (v.as_f64(), spec.get("min").and_then(Value::as_f64)) {
        if n < min {
            return Some(format!("must be at least {min}"));
        }
    }
    if let (Some(n), Some(max)) = (v.as_f64(), spec.get("max").and_then(Value::as_f64)) {
        if n > max {
            return Some(format!("must be at most {max}"));
        }
    }
    let len = v.as_str().map(|s| s.chars().count() as u64);
    if let (Some(l), Some(min)) = (len, spec.get("minLength").and_then(Value::as_u64)) {
        if l < min {
            return Some(format!("must be at least {min} characters long"));
        }
    }
    if let (Some(l), Some(max)) = (len, spec.get("maxLength").and_then(Value::as_u64)) {
        if l > max {
            return Some(format!("must be at most {max} characters long"));
        }
    }
    None
}

fn check_field_name(name: &str) -> StoreResult<()> {
    if name.is_empty() || name.contains(':') || name.len() > 200 {
        return Err(StoreError::invalid(format!("invalid field name {name:?}: 1-200 bytes without ':'")));
    }
    Ok(())
}

fn check_field(name: &str, spec: &Value) -> StoreResult<()> {
    check_field_name(name)?;
    let Some(m) = spec.as_object() else {
        return Err(StoreError::invalid(format!("field {name}: a field is an object like {{\"type\": \"string\"}}")));
    };
    for k in m.keys() {
        if !FIELD_KEYS.contains(&k.as_str()) {
            return Err(StoreError::invalid(format!(
                "field {name}: unknown option {k:?} (expected one of {FIELD_KEYS:?})"
            )));
        }
    }
    if let Some(t) = m.get("type") {
        if !t.as_str().is_some_and(|t| TYPES.contains(&t)) {
            return Err(StoreError::invalid(format!("field {name}: type must be one of {TYPES:?}")));
        }
    }
    if let Some(g) = m.get("generated") {
        if !matches!(g.as_str(), Some("uuid" | "timestamp")) {
            return Err(StoreError::invalid(format!("field {name}: generated is \"uuid\" or \"timestamp\"")));
        }
    }
    if m.get("enum").is_some_and(|e| !e.is_array()) {
        return Err(StoreError::invalid(format!("field {name}: enum takes an array")));
    }
    Ok(())
}

fn parse_indexes(v: &Value) -> StoreResult<Vec<String>> {
    let Some(items) = v.as_array() else {
        return Err(StoreError::invalid("indexes is an array of field names"));
    };
    let mut out = Vec::new();
    for i in items {
        let name = i.as_str().ok_or_else(|| StoreError::invalid("indexes is an array of field names"))?;
        check_field_name(name)?;
        if !out.iter().any(|o| o == name) {
            out.push(name.to_owned());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_types_required_enum_and_ranges() {
        let def = BucketDef::parse(&json!({
            "schema": {
                "name": {"type": "string", "required": true, "minLength": 1},
                "age": {"type": "integer", "min": 0},
                "role": {"type": "string", "enum": ["admin", "user"], "default": "user"},
            },
            "indexes": ["role"],
        }))
        .unwrap();
        let mut ok = json!({"name": "Ann", "age": 3}).as_object().unwrap().clone();
        def.fill_new(&mut ok);
        assert_eq!(ok["role"], "user");
        def.validate(&ok).unwrap();
        let bad = json!({"name": "", "age": 1.5, "role": "root"}).as_object().unwrap().clone();
        let e = def.validate(&bad).unwrap_err();
        assert_eq!(e.code, "VALIDATION_ERROR");
        assert_eq!(e.details.unwrap().as_array().unwrap().len(), 3);
        let missing = json!({}).as_object().unwrap().clone();
        assert!(def.validate(&missing).unwrap_err().message.contains("name is required"));
    }

    #[test]
    fn definitions_are_checked_and_merged() {
        for bad in
            [json!([]), json!({"schema": {"a": {"type": "float"}}}), json!({"colour": 1}), json!({"indexes": "a"})]
        {
            assert!(BucketDef::parse(&bad).is_err(), "{bad}");
        }
        let def = BucketDef::parse(&json!({"schema": {"a": {"type": "string"}}})).unwrap();
        let merged = def.merge(&json!({"schema": {"b": {"type": "number"}}, "indexes": ["b"]})).unwrap();
        assert_eq!(merged.fields.len(), 2);
        assert_eq!(merged.indexes, vec!["b"]);
        assert!(def.merge(&json!({"key": "sku"})).is_err());
    }
}
