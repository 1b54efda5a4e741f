//! The audit trail: security events appended as JSON to the per-tenant
//! stream `<tenant>/_system/_audit`. Recording never blocks or fails the
//! request path: events go through a bounded queue to one writer task, and
//! when the queue is full the event is dropped and counted in the log.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::engine::{Engine, Record};

/// Events queued for the writer before new ones are dropped.
const QUEUE: usize = 4096;
/// Events written in one engine call at most.
const BATCH: usize = 256;

pub const AUDIT_STREAM: &str = "_audit";

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct AuditEvent {
    /// RFC 3339 UTC time the broker saw the event.
    pub time: String,
    pub time_ms: u64,
    pub tenant: String,
    /// The token's id from the access file (never the token itself).
    pub token_id: Option<String>,
    /// The identity user who acted (`serve --identity`), if it was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    pub peer: Option<String>,
    pub operation: String,
    pub resource: String,
    /// ok, unauthenticated, denied
    pub outcome: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl AuditEvent {
    pub fn new(tenant: &str, operation: &str, resource: &str, outcome: &str) -> AuditEvent {
        let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        AuditEvent {
            time: rfc3339(ms),
            time_ms: ms,
            tenant: tenant.to_owned(),
            token_id: None,
            user_id: None,
            peer: None,
            operation: operation.to_owned(),
            resource: resource.to_owned(),
            outcome: outcome.to_owned(),
            detail: None,
        }
    }

    pub fn token(mut self, id: &str) -> AuditEvent {
        self.token_id = Some(id.to_owned());
        self
    }

    pub fn user(mut self, id: &str) -> AuditEvent {
        self.user_id = Some(id.to_owned());
        self
    }

    pub fn peer(mut self, peer: Option<SocketAddr>) -> AuditEvent {
        self.peer = peer.map(|p| p.to_string());
        self
    }

    pub fn detail(mut self, d: String) -> AuditEvent {
        self.detail = Some(d);
        self
    }
}

/// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem % 3600 / 60, rem % 60, ms % 1000)
}

/// Handle to the audit writer; cheap to clone.
#[derive(Clone)]
pub struct Audit {
    tx: mpsc::Sender<Item>,
    dropped: Arc<AtomicU64>,
}

impl Audit {
    /// Starts the writer task on the current runtime.
    pub fn start(engine: Arc<dyn Engine>) -> Audit {
        let (tx, mut rx) = mpsc::channel::<Item>(QUEUE);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            while rx.recv_many(&mut batch, BATCH).await > 0 {
                let mut events = Vec::with_capacity(batch.len());
                let mut flushed = Vec::new();
                for item in batch.drain(..) {
                    match item {
                        Item::Event(ev) => events.push(*ev),
                        Item::Flush(done) => flushed.push(done),
                    }
                }
                // One append per tenant stream, in arrival order.
                let mut events = events.into_iter().peekable();
                while let Some(first) = events.next() {
                    let stream = format!("{}/{}/{AUDIT_STREAM}", first.tenant, super::auth::SYSTEM_NAMESPACE);
                    let mut records = vec![to_record(&first)];
                    while let Some(ev) = events.next_if(|e| e.tenant == first.tenant) {
                        records.push(to_record(&ev));
                    }
                    if let Err(e) = engine.publish(&stream, records).await {
                        tracing::error!(%stream, error = %e, "cannot append to the audit stream");
                    }
                }
                for done in flushed {
                    let _ = done.send(());
                }
            }
        });
        Audit { tx, dropped: Arc::default() }
    }

    /// Queues an event; never waits.
    pub fn record(&self, ev: AuditEvent) {
        tracing::info!(target: "flowmesh::audit", tenant = %ev.tenant, token = ?ev.token_id, op = %ev.operation,
            resource = %ev.resource, outcome = %ev.outcome, "audit");
        if self.tx.try_send(Item::Event(Box::new(ev))).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(dropped = n, "audit queue full: events dropped");
            }
        }
    }
}

/// Waits (bounded) until the events queued so far are written: at shutdown,
/// so the last admin actions are not lost.
pub async fn flush(audit: &Audit, within: std::time::Duration) {
    let (done, written) = tokio::sync::oneshot::channel();
    let queued = tokio::time::timeout(within, audit.tx.send(Item::Flush(done))).await;
    if matches!(queued, Ok(Ok(()))) && tokio::time::timeout(within, written).await.is_ok() {
        return;
    }
    tracing::warn!("audit events still queued at shutdown were not all written");
}

enum Item {
    Event(Box<AuditEvent>),
    Flush(tokio::sync::oneshot::Sender<()>),
}

fn to_record(ev: &AuditEvent) -> Record {
    Record::new(serde_json::to_vec(ev).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(super::rfc3339(1_798_761_599_000), "2026-12-31T23:59:59.000Z");
    }
}

/// How many of the newest records of each partition one audit query scans
/// at most (a bounded scan, not an index).
pub(crate) const QUERY_SCAN: u64 = 10_000;
/// Entries one query returns at most (and by default).
pub(crate) const QUERY_MAX: usize = 1000;
pub(crate) const QUERY_DEFAULT: usize = 100;

/// An audit query's filter: `userId`, `operation`, `result`, `from`, `to`
/// (Unix ms, inclusive), `limit`.
#[derive(Debug, Default)]
pub struct Query {
    pub user_id: Option<String>,
    pub operation: Option<String>,
    pub result: Option<String>,
    pub from: Option<u64>,
    pub to: Option<u64>,
    pub limit: usize,
}

impl Query {
    pub fn parse(v: &serde_json::Value) -> crate::error::Result<Query> {
        use crate::error::Error;
        let s = |k: &str| -> crate::error::Result<Option<String>> {
            match v.get(k) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(Error::invalid(format!("audit.query: {k} must be a string"))),
            }
        };
        let n = |k: &str| -> crate::error::Result<Option<u64>> {
            match v.get(k) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(x) => {
                    x.as_u64().map(Some).ok_or_else(|| Error::invalid(format!("audit.query: {k} must be a number")))
                }
            }
        };
        let limit = n("limit")?.map_or(QUERY_DEFAULT, |l| (l as usize).clamp(1, QUERY_MAX));
        Ok(Query {
            user_id: s("userId")?,
            operation: s("operation")?,
            result: s("result")?,
            from: n("from")?,
            to: n("to")?,
            limit,
        })
    }

    fn matches(&self, ev: &AuditEvent) -> bool {
        let who = ev.user_id.as_deref().or(ev.token_id.as_deref());
        let result_ok = match self.result.as_deref() {
            None => true,
            Some("success") => ev.outcome == "ok",
            Some("error" | "failure") => ev.outcome != "ok",
            Some(r) => ev.outcome == r,
        };
        self.user_id.as_deref().is_none_or(|u| who == Some(u))
            && self.operation.as_deref().is_none_or(|o| ev.operation == o)
            && result_ok
            && self.from.is_none_or(|f| ev.time_ms >= f)
            && self.to.is_none_or(|t| ev.time_ms <= t)
    }
}

/// The newest matching entries of the audit stream `stream`, newest first:
/// a scan of at most [`QUERY_SCAN`] records per partition.
pub async fn query(engine: &dyn Engine, stream: &str, q: &Query) -> crate::error::Result<Vec<serde_json::Value>> {
    let info = match engine.stream_info(stream).await {
        Ok(i) => i,
        Err(crate::error::Error::NotFound(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found: Vec<AuditEvent> = Vec::new();
    for p in &info.partitions {
        let mut at = p.latest.saturating_sub(QUERY_SCAN).max(p.earliest);
        while at < p.latest {
            let batch = engine.read(stream, p.partition, at, 1000).await?;
            let Some(last) = batch.last() else { break };
            at = last.offset + 1;
            found.extend(
                batch
                    .iter()
                    .filter_map(|m| serde_json::from_slice::<AuditEvent>(&m.payload).ok())
                    .filter(|e| q.matches(e)),
            );
        }
    }
    found.sort_by_key(|e| std::cmp::Reverse(e.time_ms));
    found.truncate(q.limit);
    Ok(found
        .into_iter()
        .map(|e| {
            serde_json::json!({
                "timestamp": e.time_ms, "time": e.time, "tenant": e.tenant,
                "userId": e.user_id.clone().or(e.token_id.clone()), "tokenId": e.token_id,
                "operation": e.operation, "resource": e.resource, "result": e.outcome,
                "details": e.detail, "peer": e.peer,
            })
        })
        .collect())
}
