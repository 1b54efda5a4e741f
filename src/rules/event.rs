//! Events of the rules engine and how they live in the tenant's event log
//! (the stream `rules.events`): the record's payload is the event as JSON
//! `{id, topic, data, timestamp, correlationId?, causationId?}`, its key the
//! topic and its message id the event id, so an event appended twice (a
//! retried emit, an outbox flushed again) is stored once within the
//! stream's de-duplication window.

use bytes::Bytes;
use serde_json::{json, Value};

use crate::model::{Message, Record};
use crate::store::{StoreError, StoreResult};

/// (No dot in the name: a dotted name is a subject whose first token names the stream.)
/// The tenant's event log.
pub const EVENT_LOG: &str = "rules_events";
/// The header holding how many rule firings led to an event (absent: 0).
pub const DEPTH_HEADER: &str = "fm-rules-depth";

#[derive(Debug, Clone, PartialEq)]
/// An event of the rules engine, as stored in the event log.
pub struct Event {
    /// Unique id given on emit.
    pub id: String,
    /// Dot-separated topic that rules and subscriptions match.
    pub topic: String,
    /// The event's JSON payload.
    pub data: Value,
    /// When it was emitted, in milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// Groups the events of one flow.
    pub correlation_id: Option<String>,
    /// The id of the event that caused this one.
    pub causation_id: Option<String>,
    /// Rule firings that led here (0 for an event emitted by a client).
    pub depth: u32,
}

impl Event {
    /// The JSON form requests and subscriptions see (`correlationId`, `causationId` when set).
    pub fn to_json(&self) -> Value {
        let mut v = json!({"id": self.id, "topic": self.topic, "data": self.data, "timestamp": self.timestamp});
        if let Some(c) = &self.correlation_id {
            v["correlationId"] = json!(c);
        }
        if let Some(c) = &self.causation_id {
            v["causationId"] = json!(c);
        }
        v
    }

    /// The stored form (outbox entries carry the depth too).
    pub fn to_stored(&self) -> Value {
        let mut v = self.to_json();
        v["depth"] = json!(self.depth);
        v
    }

    /// An event from its JSON form; INVALID_ARGUMENT when malformed.
    pub fn from_json(v: &Value) -> StoreResult<Event> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        Ok(Event {
            id: s("id").ok_or_else(|| StoreError::new("INTERNAL", "a stored event has no id"))?,
            topic: s("topic").ok_or_else(|| StoreError::new("INTERNAL", "a stored event has no topic"))?,
            data: v.get("data").cloned().unwrap_or(Value::Null),
            timestamp: v.get("timestamp").and_then(Value::as_i64).unwrap_or(0),
            correlation_id: s("correlationId"),
            causation_id: s("causationId"),
            depth: v.get("depth").and_then(Value::as_u64).unwrap_or(0) as u32,
        })
    }

    /// The record appended to the event log.
    pub fn to_record(&self) -> Record {
        let mut r = Record::new(Bytes::from(self.to_json().to_string()))
            .with_key(self.topic.clone())
            .with_msg_id(self.id.clone());
        if self.depth > 0 {
            r = r.with_header(DEPTH_HEADER, self.depth.to_string());
        }
        r
    }

    /// The event an event-log message holds; an error for a foreign message.
    pub fn from_message(m: &Message) -> StoreResult<Event> {
        let v: Value = serde_json::from_slice(&m.payload)
            .map_err(|e| StoreError::new("INTERNAL", format!("event at offset {} is not JSON: {e}", m.offset)))?;
        let mut e = Event::from_json(&v)?;
        e.depth = m.headers.iter().find(|(k, _)| k == DEPTH_HEADER).and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
        Ok(e)
    }
}

/// Checks an id given by the caller (correlation, causation): 1-256 bytes.
pub fn check_ref(what: &str, id: &str) -> StoreResult<()> {
    if id.is_empty() || id.len() > 256 || id.contains('\0') {
        return Err(StoreError::invalid(format!("{what} is 1-256 bytes without NUL")));
    }
    Ok(())
}
