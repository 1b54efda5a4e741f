//! Queues on JetStream. Each queue is a work-queue stream:
//! - ready jobs on `fm.q.<queue>.r.<priority>`, one durable pull consumer per
//!   priority band; a reserve takes from the highest band first;
//! - delayed jobs as scheduled messages (`Nats-Schedule: @at …`) on
//!   `fm.q.<queue>.d.<id>` whose target is their band;
//! - visibility timeouts: a reserved job is at once NAKed with the timeout as
//!   delay, so the server redelivers it then unless it is acked first;
//!   attempts are the server's delivery count;
//! - failed jobs with a backoff are re-scheduled like delayed jobs (a copy
//!   that carries the job id and its attempts so far; the delivery is
//!   acked), so every client counts them as delayed; without one they are
//!   NAKed for redelivery at once; out of attempts they move to the
//!   queue's dead-letter stream `FMD_<queue>`. A job reserved for its last
//!   attempt is dead-lettered by its reserving client when its visibility
//!   runs out (by the next reserve if that client is gone).
//!
//! A job's id is the sequence of its first message and travels in `Fm-Job`
//! when the job is re-published (delay, dead letter, replay).
//! Acks and nacks need the reply subject of the delivery, which only the
//! reserving client knows: elsewhere a job is redelivered after its
//! visibility timeout.
//!
//! Lifecycle: `extend` NAKs the delivery again with the new delay (the
//! server moves its redelivery timer); a purge deletes the delayed messages
//! and the ready ones no consumer delivered yet; a delete removes both
//! streams and the retry policy, and ends long polls on the server's
//! stream-deleted advisory.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use async_nats::jetstream::AckKind;
use async_nats::HeaderMap;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::json;

use super::api::{self, Js, RawMsg, H_ENQUEUED, H_JOB, H_PRIORITY};
use super::meta::Meta;
use super::names::{parse_priority_token, priority_token, token};
use crate::engine::{Job, QueueStats, Record, RetryPolicy};
use crate::error::{Error, Result};

const DEFAULT_VISIBILITY_MS: u64 = 30_000;
/// Attempts a dead job had when it failed for the last time.
const H_ATTEMPTS: &str = "Fm-Attempts";
/// Attempts a job had before a nack re-scheduled it: the server's delivery
/// count starts again on the new message.
const H_PRIOR_ATTEMPTS: &str = "Fm-Prior-Attempts";
/// How long another client's retry policy change may take to be seen.
const POLICY_CACHE: Duration = Duration::from_secs(1);
/// Polling step of a long poll (wakes early when a job is published).
const POLL: Duration = Duration::from_millis(200);
/// How long a reservation whose visibility ran out is remembered, so that
/// `extend` can tell "no longer reserved" (Conflict) from "never reserved".
const KEEP_EXPIRED: Duration = Duration::from_secs(600);
/// An extend must reach the server before the job's redelivery timer fires:
/// with less than this left it is refused as if the time had run out.
const EXTEND_MARGIN: Duration = Duration::from_millis(50);

struct Names {
    stream: String,
    dlq: String,
    prefix: String,
}

impl Names {
    fn of(queue: &str) -> Names {
        let t = token(queue);
        Names { stream: format!("FMQ_{t}"), dlq: format!("FMD_{t}"), prefix: format!("fm.q.{t}") }
    }
    fn band(&self, priority: i32) -> String {
        format!("{}.r.{}", self.prefix, priority_token(priority))
    }
    fn dlq_subject(&self) -> String {
        format!("fm.d.{}", &self.prefix["fm.q.".len()..])
    }
}

struct Reservation {
    reply: String,
    until: Instant,
    attempt: u32,
    msg: RawMsg,
}

type Reservations = HashMap<(String, u64), Reservation>;

pub struct Queues {
    js: Js,
    meta: std::sync::Arc<Meta>,
    ready: Mutex<HashSet<String>>,
    consumers: Mutex<HashMap<(String, i32), PullConsumer>>,
    reserved: Arc<Mutex<Reservations>>,
    /// Jobs this client acked lately (the newest [`ACKED_MEMORY`]): a second
    /// ack of one is NOT_FOUND even while a cluster is still removing it.
    acked: Mutex<VecDeque<(String, u64)>>,
    policies: Mutex<HashMap<String, (Instant, RetryPolicy)>>,
}

const ACKED_MEMORY: usize = 1024;

fn gone(queue: &str) -> Error {
    Error::NotFound(format!("queue {queue} was deleted"))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn job_of(m: &RawMsg, attempt: u32) -> Result<Job> {
    let (_, headers) = m.record_meta()?;
    Ok(Job {
        id: m.header_u64(H_JOB).unwrap_or(m.seq),
        attempt,
        priority: m.header(H_PRIORITY).and_then(|p| p.parse().ok()).unwrap_or(0),
        payload: m.payload.clone(),
        headers,
        enqueued_ms: m.header(H_ENQUEUED).and_then(|v| v.parse().ok()).unwrap_or(m.time_ms),
    })
}

/// The headers a job keeps when it is re-published.
fn job_headers(m: &RawMsg, id: u64) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in &m.headers {
        if k.starts_with("Fm-") && k != H_JOB && k != H_ATTEMPTS && k != H_PRIOR_ATTEMPTS {
            h.insert(k.as_str(), v.as_str());
        }
    }
    h.insert(H_JOB, id.to_string().as_str());
    h
}

impl Queues {
    pub fn new(js: Js, meta: std::sync::Arc<Meta>) -> Queues {
        Queues {
            js,
            meta,
            ready: Mutex::new(HashSet::new()),
            consumers: Mutex::new(HashMap::new()),
            reserved: Arc::new(Mutex::new(HashMap::new())),
            acked: Mutex::new(VecDeque::new()),
            policies: Mutex::new(HashMap::new()),
        }
    }

    async fn ensure(&self, queue: &str) -> Result<Names> {
        let n = Names::of(queue);
        if self.ready.lock().unwrap().contains(queue) {
            return Ok(n);
        }
        let main = json!({
            "name": n.stream,
            "subjects": [format!("{}.>", n.prefix)],
            "retention": "workqueue",
            "storage": "file",
            "discard": "old",
            "allow_msg_schedules": true,
            "allow_rollup_hdrs": true,
            "duplicate_window": api::nanos(120_000),
            "metadata": {"flowmesh.queue": queue},
        });
        let dlq = json!({
            "name": n.dlq,
            "subjects": [n.dlq_subject()],
            "retention": "limits",
            "storage": "file",
            "discard": "old",
            "duplicate_window": api::nanos(120_000),
            "metadata": {"flowmesh.dead_letters_of": queue},
        });
        for cfg in [main, dlq] {
            match self.js.create_stream(cfg).await {
                Ok(_) | Err(Error::AlreadyExists(_)) => {}
                Err(e) => return Err(e),
            }
        }
        self.ready.lock().unwrap().insert(queue.to_owned());
        Ok(n)
    }

    pub async fn enqueue(&self, queue: &str, record: Record, delay_ms: u64, priority: i32) -> Result<u64> {
        let n = self.ensure(queue).await?;
        let mut h = HeaderMap::new();
        api::put_record_meta(&mut h, None, &record.headers);
        h.insert(H_PRIORITY, priority.to_string().as_str());
        h.insert(H_ENQUEUED, now_ms().to_string().as_str());
        if delay_ms == 0 {
            if let Some(id) = &record.msg_id {
                h.insert("Nats-Msg-Id", id.as_str());
            }
            return Ok(self.js.publish(n.band(priority), h, record.payload).await?.0);
        }
        // A delayed job's id comes first (the sequence of a marker that rolls
        // up its predecessor), so the scheduled copy can carry it.
        let mut idh = HeaderMap::new();
        idh.insert("Nats-Rollup", "sub");
        if let Some(id) = &record.msg_id {
            idh.insert("Nats-Msg-Id", id.as_str());
        }
        let (id, dup) = self.js.publish(format!("{}.id", n.prefix), idh, Bytes::new()).await?;
        if dup {
            return Ok(id);
        }
        h.insert(H_JOB, id.to_string().as_str());
        h.insert("Nats-Schedule", schedule_at(delay_ms)?.as_str());
        h.insert("Nats-Schedule-Target", n.band(priority).as_str());
        self.js.publish(format!("{}.d.{id}", n.prefix), h, record.payload).await?;
        Ok(id)
    }

    async fn consumer(&self, queue: &str, n: &Names, priority: i32) -> Result<PullConsumer> {
        let key = (queue.to_owned(), priority);
        if let Some(c) = self.consumers.lock().unwrap().get(&key) {
            return Ok(c.clone());
        }
        let cfg = pull::Config {
            durable_name: Some(format!("band_{}", priority_token(priority))),
            filter_subject: n.band(priority),
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_deliver: -1,
            max_ack_pending: 1_000_000,
            ..Default::default()
        };
        let what = format!("queue {queue}");
        let c = self
            .js
            .js
            .create_consumer_on_stream(cfg, n.stream.as_str())
            .await
            .map_err(|e| api::link_error(&what, e))?;
        self.consumers.lock().unwrap().insert(key, c.clone());
        Ok(c)
    }

    /// Priority bands holding messages (ready or in flight), highest first.
    async fn bands(&self, n: &Names) -> Result<Vec<(i32, u64)>> {
        let prefix = format!("{}.r.", n.prefix);
        let mut bands: Vec<(i32, u64)> = self
            .js
            .subject_counts(&n.stream, &format!("{prefix}*"))
            .await?
            .into_iter()
            .filter_map(|(s, c)| Some((parse_priority_token(s.strip_prefix(&prefix)?)?, c)))
            .filter(|(_, c)| *c > 0)
            .collect();
        bands.sort_by_key(|b| std::cmp::Reverse(b.0));
        Ok(bands)
    }

    pub async fn reserve(&self, queue: &str, max: usize, visibility_ms: u64, wait_ms: u64) -> Result<Vec<Job>> {
        let n = self.ensure(queue).await?;
        let visibility = Duration::from_millis(if visibility_ms == 0 { DEFAULT_VISIBILITY_MS } else { visibility_ms });
        let deadline = Instant::now() + Duration::from_millis(wait_ms);
        let mut wake = if wait_ms > 0 {
            let sub = self
                .js
                .client
                .subscribe(format!("{}.r.>", n.prefix))
                .await
                .map_err(|e| api::link_error(&format!("queue {queue}"), e))?;
            Some((sub, self.js.deleted_advisory(&n.stream).await?))
        } else {
            None
        };
        let mut first = true;
        loop {
            let jobs = match self.try_reserve(queue, &n, max, visibility).await {
                // Deleted by another client since this one used it: a first
                // use re-creates it, as everywhere.
                Err(Error::NotFound(_)) if first => {
                    self.forget(queue);
                    self.ensure(queue).await?;
                    self.try_reserve(queue, &n, max, visibility).await?
                }
                Err(Error::NotFound(_)) => return Err(gone(queue)),
                r => r?,
            };
            first = false;
            let now = Instant::now();
            if !jobs.is_empty() || now >= deadline {
                return Ok(jobs);
            }
            let step = (deadline - now).min(POLL);
            match wake.as_mut() {
                Some((sub, deleted)) => {
                    tokio::select! {
                        _ = tokio::time::timeout(step, sub.next()) => {}
                        Some(_) = deleted.next() => return Err(gone(queue)),
                    }
                }
                None => tokio::time::sleep(step).await,
            }
        }
    }

    /// Drops what this client remembers of a queue.
    fn forget(&self, queue: &str) {
        self.ready.lock().unwrap().remove(queue);
        self.consumers.lock().unwrap().retain(|(q, _), _| q != queue);
        self.policies.lock().unwrap().remove(queue);
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let mut out: Vec<String> = self
            .js
            .list_configs("fm.q.>")
            .await?
            .iter()
            .filter_map(|c| c["metadata"]["flowmesh.queue"].as_str().map(str::to_owned))
            .filter(|q| q.starts_with(prefix))
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    pub async fn delete(&self, queue: &str) -> Result<()> {
        let n = Names::of(queue);
        self.forget(queue);
        self.reserved.lock().unwrap().retain(|(q, _), _| q != queue);
        match self.js.stream_info(&n.stream).await {
            Err(Error::NotFound(_)) => return Err(Error::NotFound(format!("queue {queue} does not exist"))),
            r => r?,
        };
        // The work-queue stream is the queue's record: it goes last, so a
        // delete cut short leaves a queue that can be deleted again.
        self.js.delete_stream(&n.dlq).await?;
        self.meta.remove(&["retry", &token(queue)]).await?;
        self.js.delete_stream(&n.stream).await?;
        self.forget(queue);
        Ok(())
    }

    /// Deletes delayed jobs and ready jobs no consumer delivered yet; jobs in
    /// flight (delivered, not acked) stay, and so do dead ones.
    pub async fn purge(&self, queue: &str) -> Result<u64> {
        let n = Names::of(queue);
        match self.js.stream_info(&n.stream).await {
            Err(Error::NotFound(_)) => return Err(Error::NotFound(format!("queue {queue} does not exist"))),
            r => r?,
        };
        let mut removed = self.js.purge(&n.stream, &json!({"filter": format!("{}.d.>", n.prefix)})).await?;
        for (priority, _) in self.bands(&n).await? {
            let band = n.band(priority);
            let name = format!("band_{}", priority_token(priority));
            let (delivered, in_flight) =
                match self.js.call(&format!("CONSUMER.INFO.{}.{name}", n.stream), &json!({}), "purge queue").await {
                    Ok(v) => {
                        (v["delivered"]["stream_seq"].as_u64().unwrap_or(0), v["num_ack_pending"].as_u64().unwrap_or(0))
                    }
                    Err(Error::NotFound(_)) => (0, 0),
                    Err(e) => return Err(e),
                };
            if in_flight == 0 {
                removed += self.js.purge(&n.stream, &json!({"filter": band})).await?;
                continue;
            }
            // Jobs after the last delivered one are pending; those up to it
            // that are still stored are in flight.
            let mut seq = delivered + 1;
            while let Some(m) = self.js.get_msg(&n.stream, json!({"seq": seq, "next_by_subj": band})).await? {
                seq = m.seq + 1;
                if self.js.delete_msg(&n.stream, m.seq).await? {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// More visibility from now for a job this client holds.
    pub async fn extend(&self, queue: &str, id: u64, visibility_ms: u64) -> Result<()> {
        let held = {
            let mut reserved = self.reserved.lock().unwrap();
            let key = (queue.to_owned(), id);
            match reserved.get(&key) {
                None => None,
                Some(r) if r.until <= Instant::now() + EXTEND_MARGIN => {
                    reserved.remove(&key);
                    return Err(Error::Conflict(format!(
                        "job {id} of queue {queue} is no longer reserved: its visibility timeout ran out"
                    )));
                }
                Some(r) => Some(r.reply.clone()),
            }
        };
        let Some(reply) = held else {
            return Err(self.not_held(queue, id).await);
        };
        let visibility = Duration::from_millis(visibility_ms);
        let before = Instant::now();
        self.ack_reply(&reply, AckKind::Nak(Some(visibility))).await?;
        if let Some(r) = self.reserved.lock().unwrap().get_mut(&(queue.to_owned(), id)) {
            r.until = before + visibility;
        }
        Ok(())
    }

    async fn try_reserve(&self, queue: &str, n: &Names, max: usize, visibility: Duration) -> Result<Vec<Job>> {
        let mut jobs = Vec::new();
        let policy = self.policy(queue).await?;
        for (priority, _) in self.bands(n).await? {
            if jobs.len() >= max {
                break;
            }
            let consumer = self.consumer(queue, n, priority).await?;
            let what = format!("reserve from queue {queue}");
            let mut fetched = Vec::new();
            // A consumer just created in a cluster answers 503 until its
            // leader is elected: retry briefly.
            for retry in 0.. {
                let mut batch = consumer
                    .fetch()
                    .max_messages(max - jobs.len())
                    .messages()
                    .await
                    .map_err(|e| api::link_error(&what, e))?;
                let mut unavailable = None;
                while let Some(m) = batch.next().await {
                    match m {
                        Ok(m) => fetched.push(m),
                        Err(e) if e.to_string().contains("503") => unavailable = Some(e.to_string()),
                        Err(e) => return Err(api::link_error(&what, e)),
                    }
                }
                match unavailable {
                    Some(e) if fetched.is_empty() && retry < 100 => {
                        tracing::debug!(error = %e, "queue consumer not ready yet");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Some(e) if fetched.is_empty() => return Err(api::link_error(&what, e)),
                    _ => break,
                }
            }
            for m in fetched {
                let info = m.info().map_err(|e| Error::Internal(format!("job without metadata: {e}")))?;
                let raw = RawMsg::from_js(&m)?;
                let prior = raw.header(H_PRIOR_ATTEMPTS).and_then(|a| a.parse::<u32>().ok()).unwrap_or(0);
                let attempt = prior.saturating_add(info.delivered.max(1) as u32);
                let reply = m.reply.as_ref().map(|r| r.to_string()).unwrap_or_default();
                if policy.max_attempts > 0 && attempt > policy.max_attempts {
                    // Its last visibility timeout ran out: out of attempts.
                    dead_letter(&self.js, n, &raw, &reply, attempt - 1).await?;
                    continue;
                }
                // The server's redelivery timer starts after `before`, so
                // `until` never outlasts it.
                let before = Instant::now();
                m.ack_with(AckKind::Nak(Some(visibility))).await.map_err(|e| api::link_error(&what, e))?;
                let job = job_of(&raw, attempt)?;
                let key = (queue.to_owned(), job.id);
                let last = policy.max_attempts > 0 && attempt >= policy.max_attempts;
                {
                    let mut reserved = self.reserved.lock().unwrap();
                    let now = Instant::now();
                    reserved.retain(|_, r| r.until + KEEP_EXPIRED > now);
                    let r = Reservation { reply: reply.clone(), until: before + visibility, attempt, msg: raw };
                    reserved.insert(key.clone(), r);
                }
                // After the insert: a timer started first could find no
                // reservation, take the job for settled and never fire.
                if last {
                    tokio::spawn(dead_letter_on_expiry(self.js.clone(), self.reserved.clone(), key, reply));
                }
                jobs.push(job);
            }
        }
        Ok(jobs)
    }

    fn take(&self, queue: &str, id: u64) -> Option<Reservation> {
        let r = self.reserved.lock().unwrap().remove(&(queue.to_owned(), id))?;
        (r.until > Instant::now()).then_some(r)
    }

    async fn ack_reply(&self, reply: &str, kind: AckKind) -> Result<()> {
        ack_reply(&self.js, reply, kind).await
    }

    pub async fn ack(&self, queue: &str, id: u64) -> Result<()> {
        let Some(r) = self.take(queue, id) else {
            return Err(self.not_held(queue, id).await);
        };
        self.ack_reply(&r.reply, AckKind::Ack).await?;
        let mut acked = self.acked.lock().unwrap();
        if acked.len() == ACKED_MEMORY {
            acked.pop_front();
        }
        acked.push_back((queue.to_owned(), id));
        Ok(())
    }

    /// Why this client can not settle job `id`: CONFLICT while the queue
    /// still holds it (its visibility ran out, or another client reserved
    /// it), so the job is delivered again; NOT_FOUND once it is gone.
    async fn not_held(&self, queue: &str, id: u64) -> Error {
        if self.acked.lock().unwrap().iter().any(|(q, j)| *j == id && q == queue) {
            return Error::NotFound(format!("job {id} of queue {queue} was acked"));
        }
        match self.stored(queue, id).await {
            Ok(true) => Error::Conflict(format!(
                "job {id} of queue {queue} is not reserved by this client (its visibility ran out, or it was never \
                 reserved here); it will be delivered again"
            )),
            Ok(false) => Error::NotFound(format!("queue {queue} holds no job {id}")),
            Err(e) => e,
        }
    }

    pub async fn nack(&self, queue: &str, id: u64, delay_ms: u64) -> Result<()> {
        let Some(r) = self.take(queue, id) else {
            return Err(self.not_held(queue, id).await);
        };
        let policy = self.policy(queue).await?;
        if policy.max_attempts > 0 && r.attempt >= policy.max_attempts {
            let n = self.ensure(queue).await?;
            return dead_letter(&self.js, &n, &r.msg, &r.reply, r.attempt).await;
        }
        let delay = if delay_ms > 0 { delay_ms } else { policy.backoff_ms(r.attempt) };
        if delay == 0 {
            return self.ack_reply(&r.reply, AckKind::Nak(None)).await;
        }
        // A delayed retry is a scheduled copy, as a delayed enqueue is, so
        // every client counts it as delayed rather than in flight; the
        // delivery it replaces is acked once the copy is stored (a crash in
        // between redelivers the job twice, never loses it).
        let n = self.ensure(queue).await?;
        let mut h = job_headers(&r.msg, id);
        h.insert(H_PRIOR_ATTEMPTS, r.attempt.to_string().as_str());
        h.insert("Nats-Schedule", schedule_at(delay)?.as_str());
        let priority = r.msg.header(H_PRIORITY).and_then(|p| p.parse().ok()).unwrap_or(0);
        h.insert("Nats-Schedule-Target", n.band(priority).as_str());
        self.js.publish(format!("{}.d.{id}", n.prefix), h, r.msg.payload.clone()).await?;
        self.ack_reply(&r.reply, AckKind::Ack).await
    }

    /// Whether the queue still holds job `id` (pending, delayed or reserved
    /// by someone), as far as its stream tells without a scan: the job's
    /// first message, or its scheduled copy while it is delayed.
    async fn stored(&self, queue: &str, id: u64) -> Result<bool> {
        let n = Names::of(queue);
        let found = |r: Result<Option<RawMsg>>| match r {
            Err(Error::NotFound(_)) => Ok(None),
            r => r,
        };
        if found(self.js.get_msg(&n.stream, json!({"last_by_subj": format!("{}.d.{id}", n.prefix)})).await)?.is_some() {
            return Ok(true);
        }
        let first = found(self.js.get_msg(&n.stream, json!({"seq": id})).await)?;
        Ok(first.is_some_and(|m| m.subject.starts_with(&format!("{}.r.", n.prefix))))
    }

    pub async fn stats(&self, queue: &str) -> Result<QueueStats> {
        let n = self.ensure(queue).await?;
        let mut delayed = 0;
        for (s, c) in self.js.subject_counts(&n.stream, &format!("{}.>", n.prefix)).await? {
            let rest = &s[n.prefix.len()..];
            if rest.starts_with(".d.") {
                delayed += c;
            }
        }
        // Per band: the consumer's counts (exact while acked jobs are still
        // being removed); bands nobody reserved from yet count as pending.
        let mut in_flight = 0;
        let mut pending = 0;
        for (priority, stored) in self.bands(&n).await? {
            let name = format!("band_{}", priority_token(priority));
            match self.js.call(&format!("CONSUMER.INFO.{}.{name}", n.stream), &json!({}), "queue stats").await {
                Ok(v) => {
                    in_flight += v["num_ack_pending"].as_u64().unwrap_or(0);
                    pending += v["num_pending"].as_u64().unwrap_or(0);
                }
                Err(Error::NotFound(_)) => pending += stored,
                Err(e) => return Err(e),
            }
        }
        let dead = self.js.stream_info(&n.dlq).await?["state"]["messages"].as_u64().unwrap_or(0);
        Ok(QueueStats { pending, in_flight, delayed, dead })
    }

    pub async fn set_policy(&self, queue: &str, policy: RetryPolicy) -> Result<()> {
        if !(policy.multiplier.is_finite() && policy.multiplier >= 1.0) {
            return Err(Error::invalid("retry multiplier must be a finite number >= 1"));
        }
        self.ensure(queue).await?;
        let v = json!([policy.max_attempts, policy.initial_backoff_ms, policy.max_backoff_ms, policy.multiplier]);
        self.meta.put(&["retry", &token(queue)], Bytes::from(v.to_string())).await?;
        self.policies.lock().unwrap().insert(queue.to_owned(), (Instant::now(), policy));
        Ok(())
    }

    pub async fn get_policy(&self, queue: &str) -> Result<RetryPolicy> {
        let p = match self.meta.get(&["retry", &token(queue)]).await? {
            None => RetryPolicy::default(),
            Some(v) => {
                let (a, i, m, x): (u32, u64, u64, f64) = serde_json::from_slice(&v)
                    .map_err(|e| Error::Internal(format!("damaged retry policy of {queue}: {e}")))?;
                RetryPolicy { max_attempts: a, initial_backoff_ms: i, max_backoff_ms: m, multiplier: x }
            }
        };
        self.policies.lock().unwrap().insert(queue.to_owned(), (Instant::now(), p));
        Ok(p)
    }

    /// The retry policy, as recently read (the engine holds the meta store).
    async fn policy(&self, queue: &str) -> Result<RetryPolicy> {
        if let Some((at, p)) = self.policies.lock().unwrap().get(queue) {
            if at.elapsed() < POLICY_CACHE {
                return Ok(*p);
            }
        }
        self.get_policy(queue).await
    }

    /// Every dead job in order of death, with its stream sequence.
    async fn dead(&self, n: &Names, max: usize) -> Result<Vec<(u64, RawMsg)>> {
        let info = self.js.stream_info(&n.dlq).await?;
        let first = info["state"]["first_seq"].as_u64().unwrap_or(0).max(1);
        let last = info["state"]["last_seq"].as_u64().unwrap_or(0);
        let mut out = Vec::new();
        if info["state"]["messages"].as_u64().unwrap_or(0) == 0 {
            return Ok(out);
        }
        let mut seq = first;
        while seq <= last && out.len() < max {
            match self.js.get_msg(&n.dlq, json!({"seq": seq, "next_by_subj": n.dlq_subject()})).await? {
                Some(m) => {
                    seq = m.seq + 1;
                    out.push((m.seq, m));
                }
                None => break,
            }
        }
        Ok(out)
    }

    pub async fn dlq_list(&self, queue: &str, max: usize) -> Result<Vec<Job>> {
        let n = self.ensure(queue).await?;
        let max = if max == 0 { usize::MAX } else { max };
        let mut jobs = Vec::new();
        for (_, m) in self.dead(&n, max).await? {
            jobs.push(job_of(&m, m.header(H_ATTEMPTS).and_then(|a| a.parse().ok()).unwrap_or(0))?);
        }
        jobs.sort_by_key(|j| j.id);
        Ok(jobs)
    }

    async fn replay(&self, n: &Names, seq: u64, m: &RawMsg) -> Result<()> {
        let id = m.header_u64(H_JOB).unwrap_or(m.seq);
        let priority = m.header(H_PRIORITY).and_then(|p| p.parse().ok()).unwrap_or(0);
        let mut h = job_headers(m, id);
        h.insert("Nats-Msg-Id", format!("replay-{id}-{seq}").as_str());
        self.js.publish(n.band(priority), h, m.payload.clone()).await?;
        self.js.delete_msg(&n.dlq, seq).await?;
        Ok(())
    }

    pub async fn dlq_replay(&self, queue: &str, id: u64) -> Result<()> {
        let n = self.ensure(queue).await?;
        for (seq, m) in self.dead(&n, usize::MAX).await? {
            if m.header_u64(H_JOB) == Some(id) {
                return self.replay(&n, seq, &m).await;
            }
        }
        Err(Error::NotFound(format!("job {id} is not in the dead-letter queue of {queue}")))
    }

    pub async fn dlq_replay_all(&self, queue: &str, header: Option<(String, String)>) -> Result<u64> {
        let n = self.ensure(queue).await?;
        let mut count = 0;
        for (seq, m) in self.dead(&n, usize::MAX).await? {
            if let Some((k, v)) = &header {
                let (_, headers) = m.record_meta()?;
                if !headers.iter().any(|(hk, hv)| hk == k && hv == v) {
                    continue;
                }
            }
            self.replay(&n, seq, &m).await?;
            count += 1;
        }
        Ok(count)
    }
}

/// Acks, NAKs or extends a delivery and waits for the server's
/// confirmation, so the change holds on return.
async fn ack_reply(js: &Js, reply: &str, kind: AckKind) -> Result<()> {
    let what = "acknowledge job";
    let req = async_nats::Request::new().payload(Bytes::from(kind)).timeout(Some(js.timeout));
    js.client.send_request(reply.to_owned(), req).await.map_err(|e| api::link_error(what, e))?;
    Ok(())
}

/// Copies a job into the dead-letter stream, then removes it. Its message id
/// makes a second copy of the same delivery (the expiry timer racing a
/// redelivery) a duplicate the server drops.
async fn dead_letter(js: &Js, n: &Names, m: &RawMsg, reply: &str, attempts: u32) -> Result<()> {
    let id = m.header_u64(H_JOB).unwrap_or(m.seq);
    let mut h = job_headers(m, id);
    h.insert(H_ATTEMPTS, attempts.to_string().as_str());
    h.insert("Nats-Msg-Id", format!("dead-{id}-{}", m.seq).as_str());
    js.publish(n.dlq_subject(), h, m.payload.clone()).await?;
    ack_reply(js, reply, AckKind::Ack).await
}

/// A job reserved for its last attempt goes to the dead-letter stream when
/// its visibility runs out (unless it is acked, nacked or extended first),
/// as on the other engines, instead of waiting for the next reserve to see
/// it redelivered. If this client dies first, the next reserve still does.
async fn dead_letter_on_expiry(js: Js, reserved: Arc<Mutex<Reservations>>, key: (String, u64), reply: String) {
    loop {
        let due = {
            let map = reserved.lock().unwrap();
            match map.get(&key) {
                Some(r) if r.reply == reply => r.until,
                // Acked, nacked or reserved again: nothing to do.
                _ => return,
            }
        };
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
            continue; // an extend may have moved it
        }
        let (msg, attempts) = match reserved.lock().unwrap().get(&key) {
            Some(r) if r.reply == reply => (r.msg.clone(), r.attempt),
            _ => return,
        };
        if let Err(e) = dead_letter(&js, &Names::of(&key.0), &msg, &reply, attempts).await {
            // The server redelivers it; the next reserve dead-letters it.
            tracing::debug!(error = %e, queue = %key.0, job = key.1, "dead-lettering an expired job failed");
        }
        return;
    }
}

/// The `Nats-Schedule` value that fires `delay_ms` from now.
fn schedule_at(delay_ms: u64) -> Result<String> {
    let at = time::OffsetDateTime::now_utc() + time::Duration::milliseconds(delay_ms.min(i64::MAX as u64) as i64);
    let at = at
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| Error::Internal(format!("format schedule time: {e}")))?;
    Ok(format!("@at {at}"))
}
