//! The evaluator: reads the event log partition by partition, in offset
//! order, and fires the matching rules of each event exactly once however
//! many evaluators (processes, clients, brokers) run over the same log.
//!
//! The authority is a watermark per partition in the KV bucket
//! `rules.state` (`w:<partition>` = `{"next", "processed", "fired"}`). An
//! event at offset `o` is evaluated in one store transaction scope that
//! reads the watermark and every fact the conditions look at, and commits
//! in ONE KV transaction: the facts the actions set or delete, the events
//! they emit (as outbox entries) and the watermark moved to `o + 1`. The
//! commit checks that the watermark and those facts are unchanged, so of
//! two evaluators racing over an event exactly one commits; the other sees
//! the watermark past `o` and moves on. A crash before the commit leaves
//! nothing behind (the event is evaluated again); a crash after it leaves
//! at most outbox entries, which the next flush appends. The consumer group
//! `rules` on the log is committed after each event so its lag shows how
//! far behind evaluation is; the watermark, not the group offset, decides.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};

use super::event::{Event, EVENT_LOG};
use super::rule::{Action, Rule};
use super::{facts, outbox, template, Rules};
use crate::backoff::Backoff;
use crate::model::{Message, StartFrom, SubscribeSpec};
use crate::store::records::now_ms;
use crate::store::{StoreError, StoreResult, TxnFailure};

pub const STATE: &str = "rules.state";
/// The consumer group the evaluators commit on the event log.
pub const GROUP: &str = "rules";
/// Deepest chain of rule-emitted events; an emit beyond it is dropped, so a
/// rule that triggers itself can not loop forever.
const MAX_DEPTH: u32 = 32;
/// Attempts at one event while its facts keep changing under it.
const ATTEMPTS: usize = 1000;

pub fn watermark_key(partition: u32) -> String {
    format!("w:{partition}")
}

/// `{"next", "processed", "fired"}` of a stored watermark (zeros when none).
pub fn watermark(raw: Option<&[u8]>) -> (u64, u64, u64) {
    let v: Value = raw.and_then(|r| serde_json::from_slice(r).ok()).unwrap_or(Value::Null);
    let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    (n("next"), n("processed"), n("fired"))
}

/// Runs the evaluator until the task is aborted: one loop per partition.
pub async fn run(rules: Rules) {
    let backoff = Backoff { initial_ms: 50, max_ms: 2000, multiplier: 2.0, jitter_ms: 50, max_attempts: 0 };
    let mut attempt = 0;
    let partitions = loop {
        match rules.ensure_log().await {
            Ok(()) => match rules.store.client().stream_info(EVENT_LOG).await {
                Ok(info) => break info.config.partitions.max(1),
                Err(e) => tracing::debug!("rules evaluator: stream info: {e}"),
            },
            Err(e) => tracing::debug!("rules evaluator: event log: {e}"),
        }
        attempt += 1;
        tokio::time::sleep(backoff.delay(attempt)).await;
    };
    let mut tasks = Vec::new();
    for p in 0..partitions {
        let rules = rules.clone();
        tasks.push(tokio::spawn(async move { partition_loop(rules, p, backoff).await }));
    }
    let _abort_on_drop = AbortAll(tasks);
    std::future::pending::<()>().await;
}

struct AbortAll(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortAll {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

async fn partition_loop(rules: Rules, partition: u32, backoff: Backoff) {
    let mut failures = 0;
    loop {
        match follow(&rules, partition).await {
            Ok(()) => failures = 0,
            Err(e) => {
                failures += 1;
                tracing::debug!("rules evaluator, partition {partition}: {e}");
            }
        }
        tokio::time::sleep(backoff.delay(failures.max(1))).await;
    }
}

/// Follows the log from the watermark, evaluating each event.
async fn follow(rules: &Rules, partition: u32) -> StoreResult<()> {
    rules.flush_outbox().await?;
    let client = rules.store.client();
    let got = client.kv_get(STATE, &watermark_key(partition)).await;
    let next = match got {
        Ok(e) => watermark(Some(&e.value)).0,
        Err(crate::Error::NotFound(_)) => 0,
        Err(e) => return Err(e.into()),
    };
    let spec = SubscribeSpec { partition: Some(partition), start: StartFrom::Offset(next), group: None };
    let mut feed = client.subscribe(EVENT_LOG, spec).await?;
    while let Some(m) = feed.next().await {
        let m = m?;
        if process(rules, partition, &m).await? {
            rules.flush_outbox().await?;
        }
        // Visibility only (lag of the group); the watermark decides.
        let _ = client.commit_offset(EVENT_LOG, GROUP, partition, m.offset).await;
    }
    Ok(())
}

/// Evaluates one event unless the watermark is past it; returns whether it
/// staged emitted events.
async fn process(rules: &Rules, partition: u32, m: &Message) -> StoreResult<bool> {
    let event = Event::from_message(m).ok();
    for _ in 0..ATTEMPTS {
        let list = rules.enabled_rules().await?;
        let mut scope = rules.store.scope();
        let wkey = watermark_key(partition);
        let raw = scope.kv_get(STATE, &wkey).await.map_err(fail)?;
        let (next, processed, fired) = watermark(raw.as_deref());
        if next > m.offset {
            return Ok(false); // another evaluator did it
        }
        let mut emitted = false;
        let mut count = 0;
        if let Some(event) = &event {
            for rule in list.iter().filter(|r| r.triggered_by(&event.topic, &event.data)) {
                match fire(&mut scope, rule, event).await {
                    Ok(Some(e)) => {
                        emitted |= e;
                        count += 1;
                    }
                    Ok(None) => {}
                    Err(TxnFailure::Retry) => break,
                    Err(TxnFailure::Fail(e)) => return Err(e),
                }
            }
        }
        let state = json!({"next": m.offset + 1, "processed": processed + 1, "fired": fired + count});
        scope.kv_put(STATE, &wkey, Bytes::from(state.to_string()));
        match scope.commit().await {
            Ok(()) => {
                rules.inner.processed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Ok(emitted);
            }
            Err(TxnFailure::Retry) => tokio::time::sleep(Duration::from_millis(1)).await,
            Err(TxnFailure::Fail(e)) => return Err(e),
        }
    }
    Err(StoreError::conflict(format!("event at offset {} kept conflicting; will retry", m.offset)))
}

fn fail(e: TxnFailure) -> StoreError {
    match e {
        TxnFailure::Retry => StoreError::conflict("retry"),
        TxnFailure::Fail(e) => e,
    }
}

/// The context placeholders of a rule see.
pub fn context(rule_id: &str, event: &Event) -> Value {
    json!({"event": event.to_json(), "data": event.data, "topic": event.topic, "rule": {"id": rule_id}})
}

/// Checks the rule's fact conditions and applies its actions in the scope;
/// `Some(emitted)` when it fired.
async fn fire(scope: &mut crate::store::TxnScope<'_>, rule: &Rule, event: &Event) -> Result<Option<bool>, TxnFailure> {
    let ctx = context(&rule.id, event);
    for (key, cond) in &rule.facts {
        let key = template::substitute_text(key, &ctx);
        let value = match facts::check_key(&key) {
            Ok(()) => match scope.kv_get(facts::FACTS, &key).await? {
                Some(raw) => facts::value_of(&raw)?,
                None => Value::Null,
            },
            Err(_) => Value::Null,
        };
        if !cond.matches(&json!({ "value": value })) {
            return Ok(None);
        }
    }
    let now = now_ms();
    let mut emitted = false;
    let mut n = 0;
    for action in &rule.then {
        match action {
            Action::SetFact { key, value } => {
                let key = template::substitute_text(key, &ctx);
                if facts::check_key(&key).is_ok() {
                    scope.kv_put(facts::FACTS, &key, facts::encode(&template::substitute(value, &ctx), now));
                }
            }
            Action::DeleteFact { key } => {
                let key = template::substitute_text(key, &ctx);
                if facts::check_key(&key).is_ok() {
                    scope.kv_delete(facts::FACTS, &key);
                }
            }
            Action::Emit { topic, data } => {
                let topic = template::substitute_text(topic, &ctx);
                if event.depth + 1 > MAX_DEPTH || super::pattern::check_topic(&topic).is_err() {
                    continue;
                }
                let out = Event {
                    // Deterministic: the same firing always emits the same ids.
                    id: format!("{}:{}:{n}", event.id, rule.id),
                    topic,
                    data: template::substitute(data, &ctx),
                    timestamp: now,
                    correlation_id: Some(event.correlation_id.clone().unwrap_or_else(|| event.id.clone())),
                    causation_id: Some(event.id.clone()),
                    depth: event.depth + 1,
                };
                n += 1;
                outbox::stage(scope, &out);
                emitted = true;
            }
        }
    }
    Ok(Some(emitted))
}

/// A running evaluator; dropping it stops it.
pub struct Evaluator(pub(super) tokio::task::JoinHandle<()>);

impl Drop for Evaluator {
    fn drop(&mut self) {
        self.0.abort();
    }
}
