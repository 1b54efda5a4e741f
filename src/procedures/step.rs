//! The steps of a procedure and running them in one store transaction scope.
//!
//! A step is a store transaction op (`get`, `insert`, `update`, `delete`,
//! `where`, `findOne`, `count`, as in docs/STORE.md) or one of `getFact`,
//! `setFact`, `deleteFact`, `emit`; any step may name its result with
//! `"as"`. Strings may hold `${params.x}`, `${steps.0.id}` (an earlier
//! step's result by index) or `${<as name>.field}`.

use serde_json::{json, Map, Value};

use crate::rules::event::Event;
use crate::rules::{facts, outbox, pattern, template, Rules};
use crate::store::records::{new_id, now_ms};
use crate::store::{StoreError, TxnFailure, TxnStep};

const STORE_OPS: [&str; 7] = ["get", "insert", "update", "delete", "where", "findOne", "count"];
const FACT_OPS: [&str; 4] = ["getFact", "setFact", "deleteFact", "emit"];

/// One checked step: its op, its result name and its fields (with placeholders).
#[derive(Debug, Clone)]
pub struct Step {
    /// The operation (a store op such as `insert`, or a fact op such as `setFact`).
    pub op: String,
    /// Name under which later steps see its result.
    pub name: Option<String>,
    /// The op's fields, with `{{...}}` placeholders still in them.
    pub fields: Value,
}

/// Checks every step, collecting problems into `errs`.
pub fn parse_all(items: &[Value], errs: &mut Vec<String>) -> Vec<Step> {
    let mut out = Vec::new();
    let mut roots: Vec<String> = vec!["params".into(), "steps".into()];
    for (i, item) in items.iter().enumerate() {
        let at = format!("steps[{i}]");
        let Some(m) = item.as_object() else {
            errs.push(format!("{at}: a step is an object"));
            continue;
        };
        let op = m.get("op").and_then(Value::as_str).unwrap_or_default().to_owned();
        let name = match m.get("as") {
            None => None,
            Some(Value::String(n)) if !n.is_empty() && !n.contains('.') && !roots.contains(n) => Some(n.clone()),
            Some(_) => {
                errs.push(format!("{at}: as must be a new name without dots (not params or steps)"));
                None
            }
        };
        let mut fields: Map<String, Value> = m.clone();
        fields.remove("as");
        let fields = Value::Object(fields);
        let known: Vec<&str> = roots.iter().map(String::as_str).collect();
        for bad in template::unknown_roots(&fields, &known) {
            errs.push(format!("{at}: ${{{bad}}} names nothing (params, steps{})", names_hint(&roots)));
        }
        let s = |k: &str| m.get(k).and_then(Value::as_str);
        if STORE_OPS.contains(&op.as_str()) {
            if let Err(e) = TxnStep::parse(&fields) {
                errs.push(format!("{at}: {}", e.message));
            }
        } else {
            match op.as_str() {
                "getFact" | "deleteFact" if s("key").is_none() => errs.push(format!("{at}: {op} needs key")),
                "setFact" if s("key").is_none() || !m.contains_key("value") => {
                    errs.push(format!("{at}: setFact needs key and value"))
                }
                "emit" => match s("topic") {
                    Some(t) if t.contains("${") || pattern::check_topic(t).is_ok() => {}
                    Some(t) => errs.push(format!("{at}: {}", pattern::check_topic(t).unwrap_err())),
                    None => errs.push(format!("{at}: emit needs topic")),
                },
                "getFact" | "deleteFact" | "setFact" => {}
                other => {
                    errs.push(format!("{at}: unknown op {other:?} ({}, {})", STORE_OPS.join(", "), FACT_OPS.join(", ")))
                }
            }
        }
        if let Some(n) = &name {
            roots.push(n.clone());
        }
        out.push(Step { op, name, fields });
    }
    out
}

fn names_hint(roots: &[String]) -> String {
    roots[2..].iter().map(|r| format!(", {r}")).collect()
}

/// Runs the steps in one scope and commits; returns the results and
/// whether events were emitted. `Retry` when what was read changed.
pub async fn run(rules: &Rules, steps: &[Step], params: &Value) -> Result<(Vec<Value>, bool), TxnFailure> {
    let mut scope = rules.store().scope();
    let mut ctx = json!({"params": params, "steps": []});
    let mut results = Vec::with_capacity(steps.len());
    let mut emitted = false;
    for (i, step) in steps.iter().enumerate() {
        let at = |e: StoreError| {
            TxnFailure::Fail(StoreError { message: format!("step {i} ({}): {}", step.op, e.message), ..e })
        };
        let f = template::substitute(&step.fields, &ctx);
        let key = || -> Result<String, TxnFailure> {
            let k = template::substitute_text(step.fields["key"].as_str().unwrap_or_default(), &ctx);
            facts::check_key(&k).map_err(at)?;
            Ok(k)
        };
        let result = match step.op.as_str() {
            "getFact" => match scope.kv_get(facts::FACTS, &key()?).await? {
                Some(raw) => facts::value_of(&raw).map_err(at)?,
                None => Value::Null,
            },
            "setFact" => {
                let k = key()?;
                let value = f.get("value").cloned().unwrap_or(Value::Null);
                scope.kv_put(facts::FACTS, &k, facts::encode(&value, now_ms()));
                json!({"key": k, "value": value})
            }
            "deleteFact" => {
                let k = key()?;
                let existed = scope.kv_get(facts::FACTS, &k).await?.is_some();
                scope.kv_delete(facts::FACTS, &k);
                json!(existed)
            }
            "emit" => {
                let topic = template::substitute_text(step.fields["topic"].as_str().unwrap_or_default(), &ctx);
                pattern::check_topic(&topic).map_err(|e| at(StoreError::invalid(e)))?;
                let text = |k: &str| f.get(k).and_then(Value::as_str).map(str::to_owned);
                let event = Event {
                    id: new_id(),
                    topic,
                    data: f.get("data").cloned().unwrap_or(json!({})),
                    timestamp: now_ms(),
                    correlation_id: text("correlationId"),
                    causation_id: text("causationId"),
                    depth: 0,
                };
                outbox::stage(&mut scope, &event);
                emitted = true;
                event.to_json()
            }
            _ => {
                let op = TxnStep::parse(&f).map_err(at)?;
                match scope.op(&op).await {
                    Err(TxnFailure::Fail(e)) => return Err(at(e)),
                    other => other?,
                }
            }
        };
        ctx["steps"].as_array_mut().expect("steps is an array").push(result.clone());
        if let Some(n) = &step.name {
            ctx[n.as_str()] = result.clone();
        }
        results.push(result);
    }
    scope.commit().await?;
    Ok((results, emitted))
}
