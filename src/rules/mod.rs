//! The rules engine (docs/RULES.md): events appended to the tenant's event
//! log, facts in KV, topic subscriptions, and rules whose `when` matches an
//! event (topic pattern, conditions on its data and on facts) and whose
//! `then` emits events and sets or deletes facts. Built on streams, KV and
//! store transaction scopes, so it runs on every engine; evaluation is
//! exactly once per event with any number of evaluators (see
//! `evaluator`).
//!
//! Every method speaks JSON; [`Rules::call`] takes a whole request
//! (`{"type": "rules.emit", "topic": ..., "data": ...}`), which is what the
//! C ABI and the bindings use.

pub(crate) mod evaluator;
pub(crate) mod event;
pub(crate) mod facts;
pub(crate) mod outbox;
pub(crate) mod pattern;
pub(crate) mod rule;
mod subscription;
pub(crate) mod template;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Value};

use crate::engine::{StartFrom, StreamConfig, SubscribeSpec, TxnOp, TxnResult};
use crate::store::records::{new_id, now_ms};
use crate::store::{Store, StoreError, StoreResult};

pub use self::evaluator::Evaluator;
pub use self::event::Event;
pub use self::rule::Rule;
pub use self::subscription::Subscription;

use self::event::EVENT_LOG;
use self::facts::FACTS;
use self::rule::RULES;

/// The rules engine of one client (its tenant and namespace). Cheap to clone.
#[derive(Clone)]
pub struct Rules {
    store: Store,
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    log_ready: tokio::sync::OnceCell<()>,
    flushing: tokio::sync::Mutex<()>,
    /// Events this process's evaluator committed.
    processed: AtomicU64,
}

impl Rules {
    /// A rules engine on the facts, events and rules kept in `store`.
    pub fn new(store: Store) -> Rules {
        Rules { store, inner: Arc::default() }
    }

    /// The store the rules engine keeps its state in.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Starts evaluating rules in this process (on the current Tokio
    /// runtime) until the returned handle is dropped. Any number of
    /// evaluators may run over one event log, in one or many processes.
    pub fn start_evaluator(&self) -> Evaluator {
        Evaluator(tokio::spawn(evaluator::run(self.clone())))
    }

    /// Creates the event log (one partition, so events are evaluated in the
    /// order they were appended) unless it exists.
    async fn ensure_log(&self) -> StoreResult<()> {
        self.inner
            .log_ready
            .get_or_try_init(|| async {
                match self.store.client().create_stream(EVENT_LOG, StreamConfig::default()).await {
                    Ok(()) | Err(crate::Error::AlreadyExists(_)) | Err(crate::Error::Conflict(_)) => Ok(()),
                    Err(e) => Err(StoreError::from(e)),
                }
            })
            .await
            .map(|_| ())
    }

    /// Appends the outbox to the event log (see `rules::outbox`).
    pub async fn flush_outbox(&self) -> StoreResult<usize> {
        let _one = self.inner.flushing.lock().await;
        self.ensure_log().await?;
        outbox::flush(self.store.client()).await
    }

    // ---- events ----

    /// Appends an event to the log; returns it
    /// (`{id, topic, data, timestamp, correlationId?, causationId?}`).
    pub async fn emit(
        &self,
        topic: &str,
        data: Value,
        correlation_id: Option<&str>,
        causation_id: Option<&str>,
    ) -> StoreResult<Value> {
        pattern::check_topic(topic).map_err(StoreError::invalid)?;
        for (what, id) in [("correlation_id", correlation_id), ("causation_id", causation_id)] {
            if let Some(id) = id {
                event::check_ref(what, id)?;
            }
        }
        let event = Event {
            id: new_id(),
            topic: topic.to_owned(),
            data,
            timestamp: now_ms(),
            correlation_id: correlation_id.map(str::to_owned),
            causation_id: causation_id.map(str::to_owned),
            depth: 0,
        };
        self.ensure_log().await?;
        self.store.client().publish(EVENT_LOG, event.to_record()).await?;
        Ok(event.to_json())
    }

    /// Events appended from now on whose topic matches `pattern` (`*` one
    /// segment, `>` the rest).
    pub async fn subscribe(&self, pattern: &str) -> StoreResult<Subscription> {
        pattern::check_topic_pattern(pattern).map_err(StoreError::invalid)?;
        self.ensure_log().await?;
        let spec = SubscribeSpec { partition: None, start: StartFrom::Latest, group: None };
        let feed = self.store.client().subscribe(EVENT_LOG, spec).await?;
        Ok(Subscription { feed, pattern: pattern.to_owned() })
    }

    // ---- facts ----

    /// Sets a fact; returns it (`{key, value, updatedAt, version}`).
    pub async fn set_fact(&self, key: &str, value: Value) -> StoreResult<Value> {
        facts::check_key(key)?;
        let raw = facts::encode(&value, now_ms());
        let rev = self.store.client().kv_set(FACTS, key, raw.clone(), 0).await?;
        facts::to_json(key, &raw, rev)
    }

    /// A fact's value, None when it is not set.
    pub async fn get_fact(&self, key: &str) -> StoreResult<Option<Value>> {
        facts::check_key(key)?;
        match self.store.client().kv_get(FACTS, key).await {
            Ok(e) => Ok(Some(facts::value_of(&e.value)?)),
            Err(crate::Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes a fact; returns whether it was set.
    pub async fn delete_fact(&self, key: &str) -> StoreResult<bool> {
        facts::check_key(key)?;
        Ok(self.store.client().kv_delete(FACTS, key).await?)
    }

    /// Facts whose key matches `pattern` (`*` any characters), by key.
    pub async fn query_facts(&self, pattern: &str) -> StoreResult<Vec<Value>> {
        if pattern.is_empty() || pattern.len() > 512 || pattern.contains('\0') {
            return Err(StoreError::invalid("a fact pattern is 1-512 bytes without NUL"));
        }
        let prefix = pattern::key_prefix(pattern).to_owned();
        let listed = self.store.client().kv_txn(vec![TxnOp::List { bucket: FACTS.into(), prefix }]).await?;
        let Some(TxnResult::List(entries)) = listed.into_iter().next() else { return Ok(Vec::new()) };
        entries
            .iter()
            .filter(|e| pattern::key_matches(pattern, &e.key))
            .map(|e| facts::to_json(&e.key, &e.value, e.revision))
            .collect()
    }

    /// Every fact.
    pub async fn get_all_facts(&self) -> StoreResult<Vec<Value>> {
        self.query_facts("*").await
    }

    // ---- rules ----

    /// Registers a rule (VALIDATION_ERROR saying why when malformed,
    /// ALREADY_EXISTS when the id is taken); returns it as stored.
    pub async fn register_rule(&self, def: &Value) -> StoreResult<Value> {
        let parsed = rule::parse(def).map_err(rule::invalid)?;
        let now = now_ms();
        let mut stored = def.clone();
        stored["enabled"] = json!(parsed.enabled);
        stored["priority"] = json!(parsed.priority);
        stored["version"] = json!(1);
        stored["createdAt"] = json!(now);
        stored["updatedAt"] = json!(now);
        match self.store.client().kv_cas(RULES, &parsed.id, Bytes::from(stored.to_string()), 0).await {
            Ok(_) => Ok(stored),
            Err(crate::Error::Conflict(_)) | Err(crate::Error::AlreadyExists(_)) => {
                Err(StoreError::new("ALREADY_EXISTS", format!("rule {} is already registered", parsed.id)))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The rule as stored, None when there is none.
    pub async fn get_rule(&self, id: &str) -> StoreResult<Option<Value>> {
        Ok(self.read_rule(id).await?.map(|(v, _)| v))
    }

    async fn read_rule(&self, id: &str) -> StoreResult<Option<(Value, u64)>> {
        rule::check_id(id).map_err(StoreError::invalid)?;
        match self.store.client().kv_get(RULES, id).await {
            Ok(e) => {
                let v = serde_json::from_slice(&e.value)
                    .map_err(|err| StoreError::new("INTERNAL", format!("stored rule {id}: {err}")))?;
                Ok(Some((v, e.revision)))
            }
            Err(crate::Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Every rule as stored, by id.
    pub async fn get_rules(&self) -> StoreResult<Vec<Value>> {
        let listed =
            self.store.client().kv_txn(vec![TxnOp::List { bucket: RULES.into(), prefix: String::new() }]).await?;
        let Some(TxnResult::List(entries)) = listed.into_iter().next() else { return Ok(Vec::new()) };
        Ok(entries.iter().filter_map(|e| serde_json::from_slice(&e.value).ok()).collect())
    }

    /// The enabled rules, highest priority first (then by id).
    pub(crate) async fn enabled_rules(&self) -> StoreResult<Vec<Rule>> {
        let mut rules: Vec<Rule> =
            self.get_rules().await?.iter().filter_map(|v| rule::parse(v).ok()).filter(|r| r.enabled).collect();
        rules.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| a.id.cmp(&b.id)));
        Ok(rules)
    }

    /// Merges `update` into the rule (top-level fields replace; the id
    /// stays), checks the result and stores it; returns it.
    pub async fn update_rule(&self, id: &str, update: &Value) -> StoreResult<Value> {
        for _ in 0..16 {
            let Some((old, rev)) = self.read_rule(id).await? else {
                return Err(StoreError::not_found(format!("rule {id} is not registered")));
            };
            let mut next = rule::merge(&old, update)?;
            let parsed = rule::parse(&next).map_err(rule::invalid)?;
            next["enabled"] = json!(parsed.enabled);
            next["priority"] = json!(parsed.priority);
            next["version"] = json!(old.get("version").and_then(Value::as_u64).unwrap_or(1) + 1);
            next["updatedAt"] = json!(now_ms());
            match self.store.client().kv_cas(RULES, id, Bytes::from(next.to_string()), rev).await {
                Ok(_) => return Ok(next),
                Err(crate::Error::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::conflict(format!("rule {id} kept changing")))
    }

    /// Turns a rule on: it fires again for matching events.
    pub async fn enable_rule(&self, id: &str) -> StoreResult<Value> {
        self.update_rule(id, &json!({"enabled": true})).await
    }

    /// Turns a rule off: it stays registered but never fires.
    pub async fn disable_rule(&self, id: &str) -> StoreResult<Value> {
        self.update_rule(id, &json!({"enabled": false})).await
    }

    /// Removes a rule; NOT_FOUND when there is none.
    pub async fn unregister_rule(&self, id: &str) -> StoreResult<()> {
        rule::check_id(id).map_err(StoreError::invalid)?;
        if !self.store.client().kv_delete(RULES, id).await? {
            return Err(StoreError::not_found(format!("rule {id} is not registered")));
        }
        Ok(())
    }

    /// `{"valid": bool, "errors": [...]}`: every reason the rule is malformed.
    pub fn validate_rule(&self, def: &Value) -> Value {
        rule::validation(def)
    }

    /// `{"rulesCount", "factsCount", "eventsProcessed", "rulesFired"}` over
    /// the tenant (every evaluator's work).
    pub async fn stats(&self) -> StoreResult<Value> {
        let client = self.store.client();
        let rules = client.kv_keys(RULES, "").await?.len();
        let facts = client.kv_keys(FACTS, "").await?.len();
        let listed = client.kv_txn(vec![TxnOp::List { bucket: evaluator::STATE.into(), prefix: "w:".into() }]).await?;
        let (mut processed, mut fired) = (0, 0);
        if let Some(TxnResult::List(entries)) = listed.into_iter().next() {
            for e in entries {
                let (_, p, f) = evaluator::watermark(Some(&e.value));
                processed += p;
                fired += f;
            }
        }
        Ok(json!({"rulesCount": rules, "factsCount": facts, "eventsProcessed": processed, "rulesFired": fired}))
    }

    // ---- one entry point for JSON requests ----

    /// Runs one request `{"type": "rules.<op>", ...}` (the `rules.` prefix
    /// is optional); docs/RULES.md lists every type and its fields. Like a
    /// store request, it does not outlive the link it started on.
    pub async fn call(&self, req: &Value) -> StoreResult<Value> {
        let Some(link) = self.store.client().engine().connection() else {
            return self.dispatch(req).await;
        };
        let lost = link.loss_after_now();
        tokio::select! {
            biased;
            result = self.dispatch(req) => result,
            () = lost => Err(StoreError::from(crate::Error::Disconnected(
                "the link was lost while the rules request ran; it was not retried".into(),
            ))),
        }
    }

    async fn dispatch(&self, req: &Value) -> StoreResult<Value> {
        let ty = req.get("type").and_then(Value::as_str).ok_or_else(|| StoreError::invalid("a request has a type"))?;
        let ty = ty.strip_prefix("rules.").unwrap_or(ty);
        let s = |k: &str| -> StoreResult<&str> {
            req.get(k).and_then(Value::as_str).ok_or_else(|| StoreError::invalid(format!("{ty} needs {k} (a string)")))
        };
        let opt = |k: &str| -> StoreResult<Option<&str>> {
            match req.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(v)) => Ok(Some(v.as_str())),
                Some(_) => Err(StoreError::invalid(format!("{ty}: {k} must be a string"))),
            }
        };
        let null = Value::Null;
        let field = |k: &str| req.get(k).unwrap_or(&null);
        Ok(match ty {
            "emit" => {
                let corr = opt("correlationId")?.or(opt("correlation_id")?);
                let cause = opt("causationId")?.or(opt("causation_id")?);
                self.emit(s("topic")?, req.get("data").cloned().unwrap_or(json!({})), corr, cause).await?
            }
            "setFact" | "set_fact" => self.set_fact(s("key")?, field("value").clone()).await?,
            "getFact" | "get_fact" => self.get_fact(s("key")?).await?.unwrap_or(Value::Null),
            "deleteFact" | "delete_fact" => json!(self.delete_fact(s("key")?).await?),
            "queryFacts" | "query_facts" => json!(self.query_facts(s("pattern")?).await?),
            "getAllFacts" | "get_all_facts" => json!(self.get_all_facts().await?),
            "registerRule" | "register_rule" => self.register_rule(field("rule")).await?,
            "enableRule" | "enable_rule" => self.enable_rule(s("id")?).await?,
            "disableRule" | "disable_rule" => self.disable_rule(s("id")?).await?,
            "getRule" | "get_rule" => self.get_rule(s("id")?).await?.unwrap_or(Value::Null),
            "getRules" | "get_rules" => json!(self.get_rules().await?),
            "updateRule" | "update_rule" => self.update_rule(s("id")?, field("updates")).await?,
            "validateRule" | "validate_rule" => self.validate_rule(field("rule")),
            "unregisterRule" | "unregister_rule" => {
                self.unregister_rule(s("id")?).await?;
                Value::Null
            }
            "stats" => self.stats().await?,
            other => return Err(StoreError::invalid(format!("unknown rules request type {other:?}"))),
        })
    }
}
