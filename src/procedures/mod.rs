//! Procedures (docs/PROCEDURES.md): named lists of steps stored in the KV
//! bucket `procedures` (key = name) and run atomically on call: store
//! operations, fact reads and writes and emitted events, with `${...}`
//! substitution of the call's parameters and earlier steps' results. All
//! the writes of a call land in one KV transaction (store transaction
//! scope) or none do; emitted events go through the rules outbox, so they
//! are appended to the event log after, and only after, that commit.

mod step;

use bytes::Bytes;
use serde_json::{json, Map, Value};

use crate::rules::Rules;
use crate::store::records::now_ms;
use crate::store::{StoreError, StoreResult, TxnFailure};

pub use self::step::Step;

/// The KV bucket that holds the registered procedures.
pub const PROCEDURES: &str = "procedures";
/// Runs of a call before it gives up with CONFLICT while what it read keeps changing.
const ATTEMPTS: usize = 16;
const FIELDS: [&str; 6] = ["name", "description", "steps", "version", "createdAt", "updatedAt"];

/// The procedures of one client (its tenant and namespace). Cheap to clone.
#[derive(Clone)]
pub struct Procedures {
    rules: Rules,
}

/// Procedure names: 1-200 bytes of `[A-Za-z0-9._:-]`.
fn check_name(name: &str) -> StoreResult<()> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-');
    if name.is_empty() || name.len() > 200 || !name.chars().all(ok) {
        return Err(StoreError::invalid(format!(
            "procedure name {name:?} must be 1-200 characters of [A-Za-z0-9._:-]"
        )));
    }
    Ok(())
}

/// Checks a definition; returns its name and steps.
pub fn parse(def: &Value) -> StoreResult<(String, Vec<Step>)> {
    let Some(m) = def.as_object() else { return Err(invalid(vec!["a procedure is a JSON object".into()])) };
    let mut errs = Vec::new();
    for k in m.keys() {
        if !FIELDS.contains(&k.as_str()) {
            errs.push(format!("unknown field {k:?} (name, description, steps)"));
        }
    }
    let name = m.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
    if let Err(e) = check_name(&name) {
        errs.push(e.message);
    }
    let steps = match m.get("steps") {
        Some(Value::Array(a)) if !a.is_empty() => step::parse_all(a, &mut errs),
        _ => {
            errs.push("steps must be a non-empty array".into());
            Vec::new()
        }
    };
    if errs.is_empty() {
        Ok((name, steps))
    } else {
        Err(invalid(errs))
    }
}

fn invalid(errors: Vec<String>) -> StoreError {
    let details = errors.iter().map(|e| json!({"field": "procedure", "message": e})).collect();
    StoreError::validation(format!("invalid procedure: {}", errors.join("; ")), details)
}

impl Procedures {
    /// Procedures kept in the store of `rules`, whose facts and events their steps use.
    pub fn new(rules: Rules) -> Procedures {
        Procedures { rules }
    }

    /// Registers a procedure (VALIDATION_ERROR saying why when malformed,
    /// ALREADY_EXISTS when the name is taken); returns it as stored.
    pub async fn register(&self, def: &Value) -> StoreResult<Value> {
        let (name, _) = parse(def)?;
        let now = now_ms();
        let mut stored = def.clone();
        stored["version"] = json!(1);
        stored["createdAt"] = json!(now);
        stored["updatedAt"] = json!(now);
        let client = self.rules.store().client();
        match client.kv_cas(PROCEDURES, &name, Bytes::from(stored.to_string()), 0).await {
            Ok(_) => Ok(stored),
            Err(crate::Error::Conflict(_)) | Err(crate::Error::AlreadyExists(_)) => {
                Err(StoreError::new("ALREADY_EXISTS", format!("procedure {name} is already registered")))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn read(&self, name: &str) -> StoreResult<Option<(Value, u64)>> {
        check_name(name)?;
        match self.rules.store().client().kv_get(PROCEDURES, name).await {
            Ok(e) => {
                let v = serde_json::from_slice(&e.value)
                    .map_err(|err| StoreError::new("INTERNAL", format!("stored procedure {name}: {err}")))?;
                Ok(Some((v, e.revision)))
            }
            Err(crate::Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The procedure as stored, None when there is none.
    pub async fn get(&self, name: &str) -> StoreResult<Option<Value>> {
        Ok(self.read(name).await?.map(|(v, _)| v))
    }

    /// Every procedure as stored, by name.
    pub async fn list(&self) -> StoreResult<Vec<Value>> {
        let client = self.rules.store().client();
        let mut out = Vec::new();
        for name in client.kv_keys(PROCEDURES, "").await? {
            if let Some((v, _)) = self.read(&name).await? {
                out.push(v);
            }
        }
        Ok(out)
    }

    /// Merges `update` (`steps`, `description`) into the procedure; returns it.
    pub async fn update(&self, name: &str, update: &Value) -> StoreResult<Value> {
        let Some(u) = update.as_object() else { return Err(StoreError::invalid("an update is a JSON object")) };
        for _ in 0..ATTEMPTS {
            let Some((old, rev)) = self.read(name).await? else { return Err(not_found(name)) };
            let mut next: Map<String, Value> = old.as_object().cloned().unwrap_or_default();
            for (k, v) in u {
                if !["name", "version", "createdAt", "updatedAt"].contains(&k.as_str()) {
                    next.insert(k.clone(), v.clone());
                }
            }
            let mut next = Value::Object(next);
            parse(&next)?;
            next["version"] = json!(old.get("version").and_then(Value::as_u64).unwrap_or(1) + 1);
            next["updatedAt"] = json!(now_ms());
            let client = self.rules.store().client();
            match client.kv_cas(PROCEDURES, name, Bytes::from(next.to_string()), rev).await {
                Ok(_) => return Ok(next),
                Err(crate::Error::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::conflict(format!("procedure {name} kept changing")))
    }

    /// Removes a procedure; NOT_FOUND when there is none.
    pub async fn unregister(&self, name: &str) -> StoreResult<()> {
        check_name(name)?;
        if !self.rules.store().client().kv_delete(PROCEDURES, name).await? {
            return Err(not_found(name));
        }
        Ok(())
    }

    /// Runs the procedure's steps atomically with `params`; returns
    /// `{"results": [...]}`, one result per step. NOT_FOUND for an unknown
    /// procedure; a failing step fails the call and nothing is written.
    pub async fn call(&self, name: &str, params: &Value) -> StoreResult<Value> {
        let Some((def, _)) = self.read(name).await? else { return Err(not_found(name)) };
        let (_, steps) = parse(&def)?;
        let params = match params {
            Value::Null => json!({}),
            p @ Value::Object(_) => p.clone(),
            _ => return Err(StoreError::invalid("params is a JSON object")),
        };
        for _ in 0..ATTEMPTS {
            match step::run(&self.rules, &steps, &params).await {
                Ok((results, emitted)) => {
                    if emitted {
                        // Committed: the outbox holds the events; a failure
                        // here leaves them to the next flush.
                        if let Err(e) = self.rules.flush_outbox().await {
                            tracing::debug!("procedure {name}: events wait in the outbox: {e}");
                        }
                    }
                    return Ok(json!({ "results": results }));
                }
                Err(TxnFailure::Retry) => tokio::task::yield_now().await,
                Err(TxnFailure::Fail(e)) => return Err(e),
            }
        }
        Err(StoreError::conflict(format!("procedure {name}: what it read kept changing; gave up")))
    }

    /// Runs one request `{"type": "procedures.<op>", ...}` (the prefix is
    /// optional): register (procedure), call (name, params?), get (name),
    /// list, update (name, updates), unregister (name).
    pub async fn request(&self, req: &Value) -> StoreResult<Value> {
        let ty = req.get("type").and_then(Value::as_str).ok_or_else(|| StoreError::invalid("a request has a type"))?;
        let ty = ty.strip_prefix("procedures.").unwrap_or(ty);
        let name = || -> StoreResult<&str> {
            req.get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| StoreError::invalid(format!("{ty} needs name (a string)")))
        };
        let null = Value::Null;
        let field = |k: &str| req.get(k).unwrap_or(&null);
        Ok(match ty {
            "register" => self.register(field("procedure")).await?,
            "call" => self.call(name()?, field("params")).await?,
            "get" => self.get(name()?).await?.unwrap_or(Value::Null),
            "list" => json!(self.list().await?),
            "update" => self.update(name()?, field("updates")).await?,
            "unregister" => {
                self.unregister(name()?).await?;
                Value::Null
            }
            other => return Err(StoreError::invalid(format!("unknown procedures request type {other:?}"))),
        })
    }
}

fn not_found(name: &str) -> StoreError {
    StoreError::not_found(format!("procedure {name} is not registered"))
}
