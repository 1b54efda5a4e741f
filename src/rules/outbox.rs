//! The outbox: events that rule actions and procedures emit are written to
//! the KV bucket `rules.outbox` in the same transaction as the rest of their
//! effects, then appended to the event log and removed. An entry left
//! behind by a crash is appended by the next flush (any process's); its
//! event id is the message id, so an entry appended twice is stored once
//! within the stream's de-duplication window.

use bytes::Bytes;
use serde_json::Value;

use super::event::{Event, EVENT_LOG};
use crate::client::Client;
use crate::engine::{TxnOp, TxnResult};
use crate::store::{StoreError, StoreResult, TxnScope};

pub const OUTBOX: &str = "rules.outbox";
/// Entries appended per flush round.
const BATCH: usize = 500;

/// Stages `event` in the outbox as part of the scope's transaction.
pub fn stage(scope: &mut TxnScope<'_>, event: &Event) {
    let key = format!("e:{}", crate::store::records::new_id());
    scope.kv_put(OUTBOX, &key, Bytes::from(event.to_stored().to_string()));
}

/// Appends every outbox entry to the event log (oldest first) and removes
/// it; returns how many were appended.
pub async fn flush(client: &Client) -> StoreResult<usize> {
    let mut total = 0;
    loop {
        let listed = client.kv_txn(vec![TxnOp::List { bucket: OUTBOX.into(), prefix: "e:".into() }]).await?;
        let Some(TxnResult::List(entries)) = listed.into_iter().next() else { return Ok(total) };
        if entries.is_empty() {
            return Ok(total);
        }
        let entries: Vec<_> = entries.into_iter().take(BATCH).collect();
        let mut records = Vec::with_capacity(entries.len());
        for e in &entries {
            let v: Value = serde_json::from_slice(&e.value)
                .map_err(|err| StoreError::new("INTERNAL", format!("outbox entry {}: {err}", e.key)))?;
            records.push(Event::from_json(&v)?.to_record());
        }
        client.publish_batch(EVENT_LOG, records).await?;
        let deletes = entries.iter().map(|e| TxnOp::Delete { bucket: OUTBOX.into(), key: e.key.clone() }).collect();
        client.kv_txn(deletes).await?;
        total += entries.len();
    }
}
