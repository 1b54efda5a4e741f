//! Rules: their format (docs/RULES.md), validation that says what is wrong,
//! and the pure part of evaluation (does a rule's trigger match an event).
//!
//! ```json
//! {"id": "welcome", "priority": 10,
//!  "when": {"topic": "user.created",
//!           "data": {"age": {"$gte": 18}},
//!           "facts": {"user:${data.userId}:banned": {"$exists": false}}},
//!  "then": [{"type": "setFact", "key": "user:${data.userId}:status", "value": "active"},
//!           {"type": "emit", "topic": "user.welcomed", "data": {"userId": "${data.userId}"}}]}
//! ```

use serde_json::{json, Map, Value};

use super::pattern;
use super::template;
use crate::store::{Filter, StoreError, StoreResult};

/// The KV bucket holding rule definitions (key = rule id).
pub const RULES: &str = "rules.rules";
/// Roots a placeholder in a rule may start with.
pub const ROOTS: [&str; 4] = ["event", "data", "topic", "rule"];
const FIELDS: [&str; 11] =
    ["id", "name", "description", "priority", "enabled", "tags", "when", "then", "version", "createdAt", "updatedAt"];

/// One action of a rule's `then`.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Emit { topic: String, data: Value },
    SetFact { key: String, value: Value },
    DeleteFact { key: String },
}

/// A checked rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique id the rule is registered under.
    pub id: String,
    /// Rules with a higher priority are evaluated first.
    pub priority: i64,
    /// A disabled rule stays registered but never fires.
    pub enabled: bool,
    /// Topic pattern of the events that trigger it.
    pub topic: String,
    /// Condition on the event's data.
    pub data: Filter,
    /// Fact key template → filter over `{"value": <the fact's value>}`.
    pub facts: Vec<(String, Filter)>,
    /// What it does when it fires, in order.
    pub then: Vec<Action>,
    /// The stored definition, as the API returns it.
    pub source: Value,
}

/// Rule ids: 1-200 bytes of `[A-Za-z0-9._:-]`.
pub fn check_id(id: &str) -> Result<(), String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-');
    if id.is_empty() || id.len() > 200 || !id.chars().all(ok) {
        return Err(format!("rule id {id:?} must be 1-200 characters of [A-Za-z0-9._:-]"));
    }
    Ok(())
}

/// Every reason `v` is not a valid rule (empty: it is valid).
pub fn problems(v: &Value) -> Vec<String> {
    match parse(v) {
        Ok(_) => Vec::new(),
        Err(errs) => errs,
    }
}

/// `{"valid": bool, "errors": [...]}`.
pub fn validation(v: &Value) -> Value {
    let errors = problems(v);
    json!({"valid": errors.is_empty(), "errors": errors})
}

/// Parses a rule, collecting every problem.
pub fn parse(v: &Value) -> Result<Rule, Vec<String>> {
    let mut errs = Vec::new();
    let Some(m) = v.as_object() else { return Err(vec!["a rule is a JSON object".into()]) };
    for k in m.keys() {
        if !FIELDS.contains(&k.as_str()) {
            errs.push(format!("unknown field {k:?} (fields: {})", FIELDS.join(", ")));
        }
    }
    let id = match m.get("id") {
        Some(Value::String(id)) => {
            if let Err(e) = check_id(id) {
                errs.push(e);
            }
            id.clone()
        }
        Some(_) => {
            errs.push("id must be a string".into());
            String::new()
        }
        None => {
            errs.push("a rule needs an id".into());
            String::new()
        }
    };
    for k in ["name", "description"] {
        if m.get(k).is_some_and(|x| !x.is_string()) {
            errs.push(format!("{k} must be a string"));
        }
    }
    let priority = match m.get("priority") {
        None | Some(Value::Null) => 0,
        Some(p) => p.as_i64().unwrap_or_else(|| {
            errs.push("priority must be an integer".into());
            0
        }),
    };
    let enabled = match m.get("enabled") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            errs.push("enabled must be true or false".into());
            true
        }
    };
    if m.get("tags").is_some_and(|t| !t.as_array().is_some_and(|a| a.iter().all(Value::is_string))) {
        errs.push("tags must be an array of strings".into());
    }
    let (topic, data, facts) = parse_when(m.get("when"), &mut errs);
    let then = parse_then(m.get("then"), &mut errs);
    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(Rule { id, priority, enabled, topic, data, facts, then, source: v.clone() })
}

fn parse_when(when: Option<&Value>, errs: &mut Vec<String>) -> (String, Filter, Vec<(String, Filter)>) {
    let none = (String::new(), Filter::everything(), Vec::new());
    let Some(when) = when else {
        errs.push("a rule needs when: {\"topic\": pattern, \"data\"?: filter, \"facts\"?: {key: condition}}".into());
        return none;
    };
    let Some(w) = when.as_object() else {
        errs.push("when must be an object".into());
        return none;
    };
    for k in w.keys() {
        if !["topic", "data", "facts"].contains(&k.as_str()) {
            errs.push(format!("when: unknown field {k:?} (topic, data, facts)"));
        }
    }
    let topic = match w.get("topic") {
        Some(Value::String(t)) => {
            if let Err(e) = pattern::check_topic_pattern(t) {
                errs.push(format!("when.topic: {e}"));
            }
            t.clone()
        }
        _ => {
            errs.push("when.topic must be a topic pattern such as \"order.*\" or \"user.>\"".into());
            String::new()
        }
    };
    let data = match w.get("data") {
        None | Some(Value::Null) => Filter::everything(),
        Some(f) => Filter::parse(f).unwrap_or_else(|e| {
            errs.push(format!("when.data: {}", e.message));
            Filter::everything()
        }),
    };
    let mut facts = Vec::new();
    match w.get("facts") {
        None | Some(Value::Null) => {}
        Some(Value::Object(fm)) => {
            for (key, cond) in fm {
                if key.is_empty() {
                    errs.push("when.facts: a fact key is empty".into());
                }
                for bad in template::unknown_roots(&json!(key), &ROOTS) {
                    errs.push(format!("when.facts: ${{{bad}}} in {key:?} names nothing (event, data, topic, rule)"));
                }
                match Filter::parse(&json!({ "value": cond })) {
                    Ok(f) => facts.push((key.clone(), f)),
                    Err(e) => errs.push(format!("when.facts[{key:?}]: {}", e.message)),
                }
            }
        }
        Some(_) => errs.push("when.facts must be an object of fact key → condition".into()),
    }
    (topic, data, facts)
}

fn parse_then(then: Option<&Value>, errs: &mut Vec<String>) -> Vec<Action> {
    let items: Vec<Value> = match then {
        Some(Value::Array(a)) => a.clone(),
        Some(o @ Value::Object(_)) => vec![o.clone()],
        _ => {
            errs.push("a rule needs then: an action or an array of actions".into());
            return Vec::new();
        }
    };
    if items.is_empty() {
        errs.push("then has no actions".into());
    }
    let mut out = Vec::new();
    for (i, a) in items.iter().enumerate() {
        let at = format!("then[{i}]");
        let Some(m) = a.as_object() else {
            errs.push(format!("{at}: an action is an object"));
            continue;
        };
        for bad in template::unknown_roots(a, &ROOTS) {
            errs.push(format!("{at}: ${{{bad}}} names nothing (event, data, topic, rule)"));
        }
        let s = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_owned);
        let allowed: &[&str] = match s("type").as_deref() {
            Some("emit") => {
                match s("topic") {
                    Some(t) if t.contains("${") || pattern::check_topic(&t).is_ok() => {
                        out.push(Action::Emit { topic: t, data: m.get("data").cloned().unwrap_or(json!({})) })
                    }
                    Some(t) => errs.push(format!("{at}: {}", pattern::check_topic(&t).unwrap_err())),
                    None => errs.push(format!("{at}: emit needs a topic")),
                }
                &["type", "topic", "data"]
            }
            Some("setFact") => {
                match (s("key"), m.get("value")) {
                    (Some(key), Some(value)) if !key.is_empty() => {
                        out.push(Action::SetFact { key, value: value.clone() })
                    }
                    _ => errs.push(format!("{at}: setFact needs key (a string) and value")),
                }
                &["type", "key", "value"]
            }
            Some("deleteFact") => {
                match s("key") {
                    Some(key) if !key.is_empty() => out.push(Action::DeleteFact { key }),
                    _ => errs.push(format!("{at}: deleteFact needs key (a string)")),
                }
                &["type", "key"]
            }
            other => {
                errs.push(format!("{at}: unknown action type {other:?} (emit, setFact, deleteFact)"));
                &[]
            }
        };
        for k in m.keys() {
            if !allowed.is_empty() && !allowed.contains(&k.as_str()) {
                errs.push(format!("{at}: unknown field {k:?} ({})", allowed.join(", ")));
            }
        }
    }
    out
}

/// A definition merged with an update (top-level fields replace; the id stays).
pub fn merge(old: &Value, update: &Value) -> StoreResult<Value> {
    let Some(u) = update.as_object() else { return Err(StoreError::invalid("a rule update is a JSON object")) };
    let mut m: Map<String, Value> = old.as_object().cloned().unwrap_or_default();
    for (k, v) in u {
        if k != "id" && !["version", "createdAt", "updatedAt"].contains(&k.as_str()) {
            m.insert(k.clone(), v.clone());
        }
    }
    Ok(Value::Object(m))
}

/// The error a malformed rule gets: VALIDATION_ERROR listing every problem.
pub fn invalid(errors: Vec<String>) -> StoreError {
    let details = errors.iter().map(|e| json!({"field": "rule", "message": e})).collect();
    StoreError::validation(format!("invalid rule: {}", errors.join("; ")), details)
}

impl Rule {
    /// Whether the trigger matches the event (topic and data; facts are
    /// checked by the evaluator, which reads them).
    pub fn triggered_by(&self, topic: &str, data: &Value) -> bool {
        self.enabled && pattern::topic_matches(&self.topic, topic) && self.data.matches(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_good_rule_parses_and_bad_ones_say_why() {
        let good = json!({"id": "r1", "when": {"topic": "user.*", "data": {"age": {"$gte": 18}},
            "facts": {"user:${data.id}:banned": {"$exists": false}}},
            "then": {"type": "emit", "topic": "user.adult", "data": {"id": "${data.id}"}}});
        let r = parse(&good).unwrap();
        assert!(r.triggered_by("user.created", &json!({"age": 20})));
        assert!(!r.triggered_by("user.created", &json!({"age": 2})));
        assert!(!r.triggered_by("order.created", &json!({"age": 20})));
        let cases = [
            (json!({"when": {"topic": "a"}, "then": []}), "needs an id"),
            (json!({"id": "x", "then": {"type": "emit", "topic": "a"}}), "needs when"),
            (json!({"id": "x", "when": {"topic": "a..b"}, "then": {"type": "emit", "topic": "a"}}), "empty segment"),
            (
                json!({"id": "x", "when": {"topic": "a", "data": {"n": {"$bogus": 1}}}, "then": {"type": "emit", "topic": "a"}}),
                "when.data",
            ),
            (json!({"id": "x", "when": {"topic": "a"}, "then": {"type": "shout"}}), "unknown action type"),
            (json!({"id": "x", "when": {"topic": "a"}, "then": {"type": "setFact", "key": "k"}}), "setFact needs"),
            (
                json!({"id": "x", "when": {"topic": "a"}, "then": {"type": "emit", "topic": "${evnt.t}"}}),
                "names nothing",
            ),
            (json!({"id": "bad id", "when": {"topic": "a"}, "then": {"type": "emit", "topic": "b"}}), "rule id"),
        ];
        for (rule, why) in cases {
            let errs = problems(&rule);
            assert!(errs.iter().any(|e| e.contains(why)), "{rule}: {errs:?} lacks {why:?}");
            assert_eq!(validation(&rule)["valid"], json!(false));
        }
    }
}
