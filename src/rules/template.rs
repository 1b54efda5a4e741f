//! Substitution in rule actions and procedure steps: `"${event.data.userId}"`
//! is replaced by the value at that dotted path of a context object. A
//! string that is exactly one placeholder takes the value with its JSON
//! type; placeholders inside a longer string are written as text (strings
//! as they are, other values as JSON). A missing path is `null` (or the
//! empty text inside a longer string). Path segments that are numbers index
//! into arrays.

use serde_json::{Map, Value};

/// The value at a dotted path (`steps.0.id`), objects by key, arrays by index.
pub fn lookup<'a>(ctx: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = ctx;
    for seg in path.split('.') {
        cur = match cur {
            Value::Object(m) => m.get(seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// `value` with every placeholder in its strings (and object keys' values,
/// arrays, nested objects) replaced from `ctx`.
pub fn substitute(value: &Value, ctx: &Value) -> Value {
    match value {
        Value::String(s) => substitute_str(s, ctx),
        Value::Array(a) => Value::Array(a.iter().map(|v| substitute(v, ctx)).collect()),
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, v)| (k.clone(), substitute(v, ctx))).collect::<Map<_, _>>())
        }
        other => other.clone(),
    }
}

/// A string with its placeholders replaced, as text (for keys and topics).
pub fn substitute_text(s: &str, ctx: &Value) -> String {
    match substitute_str(s, ctx) {
        Value::String(s) => s,
        other => text_of(&other),
    }
}

fn substitute_str(s: &str, ctx: &Value) -> Value {
    if let Some(path) = whole_placeholder(s) {
        return lookup(ctx, path).cloned().unwrap_or(Value::Null);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start + 2..].find('}') else { break };
        out.push_str(&rest[..start]);
        let path = rest[start + 2..start + 2 + len].trim();
        if let Some(v) = lookup(ctx, path) {
            out.push_str(&text_of(v));
        }
        rest = &rest[start + 3 + len..];
    }
    out.push_str(rest);
    Value::String(out)
}

fn whole_placeholder(s: &str) -> Option<&str> {
    let inner = s.strip_prefix("${")?.strip_suffix('}')?;
    (!inner.contains('}') && !inner.contains("${")).then(|| inner.trim())
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Placeholder paths used in a value whose first segment is not one of
/// `roots` (for validation: a typo such as `${evnt.id}` is reported).
pub fn unknown_roots(value: &Value, roots: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    collect(value, roots, &mut out);
    out
}

fn collect(value: &Value, roots: &[&str], out: &mut Vec<String>) {
    match value {
        Value::String(s) => {
            let mut rest = s.as_str();
            while let Some(start) = rest.find("${") {
                let Some(len) = rest[start + 2..].find('}') else { break };
                let path = rest[start + 2..start + 2 + len].trim();
                let root = path.split('.').next().unwrap_or_default();
                if !roots.contains(&root) {
                    out.push(path.to_owned());
                }
                rest = &rest[start + 3 + len..];
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect(v, roots, out)),
        Value::Object(m) => m.values().for_each(|v| collect(v, roots, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn whole_placeholders_keep_their_type_and_inline_ones_become_text() {
        let ctx = json!({"event": {"data": {"n": 3, "u": "ann", "tags": ["a"]}}, "steps": [{"id": "x"}]});
        assert_eq!(substitute(&json!("${event.data.n}"), &ctx), json!(3));
        assert_eq!(substitute(&json!("user:${event.data.u}:n=${event.data.n}"), &ctx), json!("user:ann:n=3"));
        assert_eq!(substitute(&json!({"a": ["${steps.0.id}"]}), &ctx), json!({"a": ["x"]}));
        assert_eq!(substitute(&json!("${event.missing}"), &ctx), Value::Null);
        assert_eq!(substitute_text("t-${event.data.tags}", &ctx), "t-[\"a\"]");
        assert_eq!(substitute_text("${unclosed", &ctx), "${unclosed");
        assert_eq!(unknown_roots(&json!(["${evnt.id}", "${event.id}"]), &["event"]), vec!["evnt.id"]);
    }
}
