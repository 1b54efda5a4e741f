//! Events to named recipients: an application (connect option
//! `app_id`) publishes a named event to other applications; each recipient
//! controls delivery with ack, defer, discard, replay, pause and resume.
//! Payloads are sealed end to end when every recipient has a public key.
//!
//! Built only on the engine-agnostic [`Client`] API, so it works on every
//! engine (memory, file, broker) with no broker changes:
//! - the event log, stream `_events` (one partition): one record per event;
//!   its offset is the event id, unique within the tenant/namespace;
//! - one inbox queue per recipient and event name
//!   (`_inbox.<app>.<event>`): a job per delivery, so every recipient has its
//!   own durable cursor; the queue's visibility timeout (= `ack_wait_ms`)
//!   redelivers un-acked events with a growing delivery count, a nack with a
//!   delay defers, an ack acknowledges;
//! - the discard log, stream `_events.discarded`: what was discarded, by
//!   whom and why;
//! - the key registry, KV bucket `_keys`: app id -> X25519 public key
//!   (base64), written when a client with `app_secret_key` first uses events.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use flowmesh::events::{Events, SubscribeOptions};
//! use flowmesh::{Client, Options};
//! use std::time::Duration;
//! let alice = Events::new(Client::connect("mem://doc", &Options::new().with("app_id", "alice")?).await?)?;
//! let bob = Events::new(Client::connect("mem://doc", &Options::new().with("app_id", "bob")?).await?)?;
//! let inbox = bob.subscribe("orders/created", SubscribeOptions::default()).await?;
//! let id = alice.publish("orders/created", &["bob"], "hello".into(), Some(r#"{"k":"v"}"#)).await?;
//! let ev = inbox.next(Duration::from_secs(5)).await?.expect("delivered");
//! assert_eq!((ev.id, &ev.sender[..], &ev.payload[..]), (id, "alice", &b"hello"[..]));
//! inbox.ack(ev.id).await?;
//! # Ok::<(), flowmesh::Error>(())
//! # }).unwrap();
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;

use crate::client::Client;
use crate::engine::{Job, Record, StreamConfig};
use crate::error::{Error, Result};
use crate::keys;
pub use crate::keys::AppKey;
use crate::names;
use crate::options::{Context, Options};

/// The event log: one record per published event; the offset is the id.
pub const EVENT_LOG: &str = "_events";
/// Discarded events: one record per discard, with the reason.
pub const DISCARD_LOG: &str = "_events.discarded";
/// Registered public keys: key = app id, value = base64 X25519 public key.
pub const KEY_BUCKET: &str = "_keys";
/// Redelivery delay of an un-acked event when `ack_wait_ms` is not given.
pub(crate) const DEFAULT_ACK_WAIT_MS: u64 = 30_000;
/// Longest event name (its encoded form must fit a 128-character name).
pub(crate) const MAX_EVENT_NAME: usize = 96;
/// How often a waiting subscription looks at pause/resume.
const POLL_MS: u64 = 250;

const H_EVENT: &str = "event";
const H_SENDER: &str = "sender";
const H_RECIPIENTS: &str = "recipients";
const H_TS: &str = "ts";
const H_ENC: &str = "enc";
const H_METADATA: &str = "metadata";
const H_REPLY_TO: &str = "reply_to";
const H_ID: &str = "event_id";
const ENC_SEALED: &str = "sealed";
const ENC_NONE: &str = "none";

/// Escapes everything but `[A-Za-z0-9-]` as `_hh`, so any event name maps to
/// a distinct, path-safe name segment (`.` stays free as a separator).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}

fn check_event_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_EVENT_NAME || name.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "invalid event name {name:?}: 1-{MAX_EVENT_NAME} bytes without control characters"
        )));
    }
    Ok(())
}

/// The inbox queue of `app_id` for `event_name`.
pub fn inbox_queue(app_id: &str, event_name: &str) -> Result<String> {
    names::check_scope("app id", app_id)?;
    check_event_name(event_name)?;
    let q = format!("_inbox.{}.{}", encode_segment(app_id), encode_segment(event_name));
    if q.len() > names::MAX_SEGMENT {
        return Err(Error::invalid(format!(
            "event name {event_name:?} with app id {app_id:?} is too long (the inbox name {q:?} exceeds {} characters)",
            names::MAX_SEGMENT
        )));
    }
    Ok(q)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn header<'a>(headers: &'a [(String, String)], key: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// A delivered event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Unique within the tenant/namespace (the event log offset).
    pub id: u64,
    /// The event name it was published under.
    pub name: String,
    /// The app id of the publisher.
    pub sender: String,
    /// Milliseconds since the Unix epoch, set by the publisher.
    pub timestamp_ms: i64,
    /// The plaintext payload (decrypted when it was sealed).
    pub payload: Bytes,
    /// Metadata JSON object as text (never encrypted), if any.
    pub metadata: Option<String>,
    /// Deliveries of this event to this subscription so far, including this one.
    pub delivery_count: u32,
    /// Whether the payload travelled and was stored sealed.
    pub encrypted: bool,
    /// The event this one replies to, if it is a reply.
    pub reply_to: Option<u64>,
}

/// Subscription settings (options `auto_ack`, `ack_wait_ms`, `async_handler`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// Acknowledge each event once its handler finished without error (see
    /// [`EventSubscription::handled`]).
    pub auto_ack: bool,
    /// An event not acked (or deferred/discarded) within this is redelivered.
    pub ack_wait_ms: u64,
    /// Callback mode: the handler of an event finishes when the binding says
    /// so (fm_event_done), not when the callback returns. For bindings whose
    /// handlers run later on another thread (an event loop).
    pub async_handler: bool,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions { auto_ack: true, ack_wait_ms: DEFAULT_ACK_WAIT_MS, async_handler: false }
    }
}

impl SubscribeOptions {
    /// Parses and checks event-subscription options (`auto_ack`, `ack_wait_ms`, `async_handler`).
    pub fn from_options(opts: &Options) -> Result<SubscribeOptions> {
        opts.check_context(Context::Event)?;
        let ack_wait_ms = opts.u64("ack_wait_ms")?.unwrap_or(DEFAULT_ACK_WAIT_MS);
        if ack_wait_ms == 0 {
            return Err(Error::invalid("option ack_wait_ms: must be at least 1"));
        }
        Ok(SubscribeOptions {
            auto_ack: opts.bool("auto_ack")?.unwrap_or(true),
            ack_wait_ms,
            async_handler: opts.bool("async_handler")?.unwrap_or(false),
        })
    }
}

/// A discarded event as recorded in the discard log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discarded {
    /// The id of the discarded event.
    pub event_id: u64,
    /// The app that discarded it.
    pub app_id: String,
    /// Its event name.
    pub event: String,
    /// Why, as the app gave it.
    pub reason: String,
}

/// The events API of one client (one application id).
#[derive(Clone)]
pub struct Events {
    client: Client,
    app_id: String,
    key: Option<AppKey>,
    /// Set once this app's public key is registered and the log exists.
    ready: Arc<tokio::sync::OnceCell<()>>,
}

impl Events {
    /// Needs the connect option `app_id`; uses `app_secret_key` if given.
    pub fn new(client: Client) -> Result<Events> {
        let cfg = client.config();
        let app_id = cfg.app_id.clone().ok_or_else(|| {
            Error::invalid("events need the connect option app_id (this application's id, e.g. \"billing\")")
        })?;
        let key = cfg.app_key.clone();
        Ok(Events { client, app_id, key, ready: Arc::default() })
    }

    /// This application's id (connect option `app_id`).
    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// The client the events travel on.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// This app's public key (base64), if it has a key pair.
    pub fn public_key(&self) -> Option<String> {
        self.key.as_ref().map(AppKey::public_base64)
    }

    /// Creates the event log and registers this app's public key, once.
    async fn prepare(&self) -> Result<()> {
        self.ready
            .get_or_try_init(|| async {
                self.client.create_stream(EVENT_LOG, StreamConfig::default()).await?;
                if let Some(k) = &self.key {
                    self.client.kv_set(KEY_BUCKET, &self.app_id, Bytes::from(k.public_base64()), 0).await?;
                }
                Ok::<(), Error>(())
            })
            .await?;
        Ok(())
    }

    /// The registered public key of `app_id`, if any.
    pub async fn public_key_of(&self, app_id: &str) -> Result<Option<String>> {
        match self.client.kv_get(KEY_BUCKET, app_id).await {
            Ok(e) => Ok(Some(String::from_utf8_lossy(&e.value).into_owned())),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Publishes `payload` to each recipient; returns the event id. When
    /// every recipient has a registered public key, the payload is sealed
    /// for each and stored only as ciphertext; when none has, it is stored
    /// as is; a mix is refused (it would store the payload in clear).
    /// `metadata` must be a JSON object; it is never encrypted.
    pub async fn publish(
        &self,
        event_name: &str,
        recipients: &[&str],
        payload: Bytes,
        metadata: Option<&str>,
    ) -> Result<u64> {
        self.publish_inner(event_name, recipients, payload, metadata, None).await
    }

    /// Publishes to the sender of `to`, under the same event name.
    pub async fn reply(&self, to: &Event, payload: Bytes, metadata: Option<&str>) -> Result<u64> {
        self.publish_inner(&to.name, &[to.sender.as_str()], payload, metadata, Some(to.id)).await
    }

    async fn publish_inner(
        &self,
        event_name: &str,
        recipients: &[&str],
        payload: Bytes,
        metadata: Option<&str>,
        reply_to: Option<u64>,
    ) -> Result<u64> {
        if recipients.is_empty() {
            return Err(Error::invalid("an event needs at least one recipient"));
        }
        let mut unique: Vec<&str> = Vec::with_capacity(recipients.len());
        let mut queues = Vec::with_capacity(recipients.len());
        for r in recipients {
            if unique.contains(r) {
                continue;
            }
            queues.push(inbox_queue(r, event_name)?);
            unique.push(r);
        }
        if let Some(m) = metadata {
            serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(m)
                .map_err(|e| Error::invalid(format!("metadata must be a JSON object: {e}")))?;
        }
        self.prepare().await?;

        let mut keys = Vec::with_capacity(unique.len());
        for r in &unique {
            keys.push(self.public_key_of(r).await?);
        }
        let keyed = keys.iter().filter(|k| k.is_some()).count();
        if keyed > 0 && keyed < keys.len() {
            let missing: Vec<&str> = unique.iter().zip(&keys).filter(|(_, k)| k.is_none()).map(|(r, _)| *r).collect();
            return Err(Error::invalid(format!(
                "recipients {} have no registered public key while others have one: refusing to store the \
                 payload in clear (publish to them separately)",
                missing.join(", ")
            )));
        }
        let sealed: Option<Vec<Vec<u8>>> = if keyed > 0 {
            let mut out = Vec::with_capacity(keys.len());
            for (r, k) in unique.iter().zip(&keys) {
                let pk = keys::public_key(k.as_deref().unwrap_or_default().as_bytes(), r)?;
                out.push(keys::seal(&pk, &payload)?);
            }
            Some(out)
        } else {
            None
        };

        let ts = now_ms().to_string();
        let enc = if sealed.is_some() { ENC_SEALED } else { ENC_NONE };
        let mut common = vec![
            (H_EVENT.to_owned(), event_name.to_owned()),
            (H_SENDER.to_owned(), self.app_id.clone()),
            (H_TS.to_owned(), ts),
            (H_ENC.to_owned(), enc.to_owned()),
        ];
        if let Some(m) = metadata {
            common.push((H_METADATA.to_owned(), m.to_owned()));
        }
        if let Some(r) = reply_to {
            common.push((H_REPLY_TO.to_owned(), r.to_string()));
        }
        let log_payload = match &sealed {
            Some(boxes) => {
                let map: serde_json::Map<String, serde_json::Value> =
                    unique.iter().zip(boxes).map(|(r, b)| (r.to_string(), keys::b64(b).into())).collect();
                Bytes::from(serde_json::to_vec(&map).map_err(|e| Error::Internal(e.to_string()))?)
            }
            None => payload.clone(),
        };
        let mut log_record = Record { key: None, payload: log_payload, headers: common.clone(), msg_id: None };
        log_record.headers.push((H_RECIPIENTS.to_owned(), unique.join(",")));
        let id = self.client.publish(EVENT_LOG, log_record).await?.offset;

        for (i, queue) in queues.iter().enumerate() {
            let body = match &sealed {
                Some(boxes) => Bytes::from(boxes[i].clone()),
                None => payload.clone(),
            };
            let mut headers = common.clone();
            headers.push((H_ID.to_owned(), id.to_string()));
            self.client.enqueue(queue, Record { key: None, payload: body, headers, msg_id: None }, 0, 0).await?;
        }
        Ok(id)
    }

    /// Subscribes this app to `event_name`: delivery from its own inbox.
    pub async fn subscribe(&self, event_name: &str, opts: SubscribeOptions) -> Result<EventSubscription> {
        let queue = inbox_queue(&self.app_id, event_name)?;
        if opts.ack_wait_ms == 0 {
            return Err(Error::invalid("ack_wait_ms must be at least 1"));
        }
        self.prepare().await?;
        Ok(EventSubscription {
            events: self.clone(),
            name: event_name.to_owned(),
            queue,
            opts,
            inflight: Mutex::default(),
            paused: tokio::sync::watch::channel(None).0,
            held: Mutex::new(None),
            rejected: Mutex::default(),
        })
    }

    /// Reads one event from the log as this app would receive it.
    pub async fn get(&self, id: u64) -> Result<Event> {
        let (record, _) = self.load_for_me(id).await?;
        self.decode(record.payload, &record.headers, 0)
    }

    /// The log record of event `id` turned into this app's inbox record.
    async fn load_for_me(&self, id: u64) -> Result<(Record, String)> {
        let not_found = || Error::NotFound(format!("event {id} does not exist or was not sent to {}", self.app_id));
        let msgs = match self.client.read(EVENT_LOG, 0, id, 1).await {
            Err(Error::NotFound(_)) => return Err(not_found()),
            r => r?,
        };
        let msg = msgs.into_iter().find(|m| m.offset == id).ok_or_else(not_found)?;
        let recipients = header(&msg.headers, H_RECIPIENTS).unwrap_or_default();
        if !recipients.split(',').any(|r| r == self.app_id) {
            return Err(not_found());
        }
        let name = header(&msg.headers, H_EVENT).unwrap_or_default().to_owned();
        let payload = if header(&msg.headers, H_ENC) == Some(ENC_SEALED) {
            let map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&msg.payload)
                .map_err(|e| Error::Internal(format!("event {id}: bad sealed envelope: {e}")))?;
            let b = map.get(&self.app_id).and_then(|v| v.as_str()).ok_or_else(not_found)?;
            Bytes::from(keys::unb64(b)?)
        } else {
            msg.payload
        };
        let mut headers: Vec<(String, String)> = msg.headers.into_iter().filter(|(k, _)| k != H_RECIPIENTS).collect();
        headers.push((H_ID.to_owned(), id.to_string()));
        Ok((Record { key: None, payload, headers, msg_id: None }, name))
    }

    /// Turns a delivery (inbox job) into an event, opening a sealed payload.
    fn decode(&self, payload: Bytes, headers: &[(String, String)], delivery_count: u32) -> Result<Event> {
        let bad = |what: &str| Error::Unauthorized(format!("malformed event delivery: {what}"));
        let id = header(headers, H_ID).and_then(|v| v.parse().ok()).ok_or_else(|| bad("no event id"))?;
        let encrypted = match header(headers, H_ENC) {
            Some(ENC_SEALED) => true,
            Some(ENC_NONE) => false,
            _ => return Err(bad("unknown encoding")),
        };
        let payload = if encrypted {
            let key = self.key.as_ref().ok_or_else(|| {
                Error::Unauthorized(format!(
                    "event {id} is sealed for {} but this client has no app_secret_key",
                    self.app_id
                ))
            })?;
            Bytes::from(key.open(&payload).map_err(|e| Error::Unauthorized(format!("event {id}: {e}")))?)
        } else {
            payload
        };
        Ok(Event {
            id,
            name: header(headers, H_EVENT).ok_or_else(|| bad("no name"))?.to_owned(),
            sender: header(headers, H_SENDER).ok_or_else(|| bad("no sender"))?.to_owned(),
            timestamp_ms: header(headers, H_TS).and_then(|v| v.parse().ok()).unwrap_or(0),
            payload,
            metadata: header(headers, H_METADATA).map(str::to_owned),
            delivery_count,
            encrypted,
            reply_to: header(headers, H_REPLY_TO).and_then(|v| v.parse().ok()),
        })
    }

    /// Records a discard in the discard log.
    async fn record_discard(&self, event_id: u64, event: &str, reason: &str) -> Result<()> {
        let record = Record::new(Bytes::new())
            .with_header(H_ID, event_id.to_string())
            .with_header("app_id", self.app_id.clone())
            .with_header(H_EVENT, event)
            .with_header("reason", reason)
            .with_header(H_TS, now_ms().to_string());
        self.client.publish(DISCARD_LOG, record).await.map(|_| ())
    }

    /// The discard log, oldest first (up to `max` records).
    pub async fn discarded(&self, max: usize) -> Result<Vec<Discarded>> {
        let msgs = match self.client.read(DISCARD_LOG, 0, 0, max).await {
            Err(Error::NotFound(_)) => return Ok(Vec::new()),
            r => r?,
        };
        Ok(msgs
            .iter()
            .map(|m| Discarded {
                event_id: header(&m.headers, H_ID).and_then(|v| v.parse().ok()).unwrap_or(u64::MAX),
                app_id: header(&m.headers, "app_id").unwrap_or_default().to_owned(),
                event: header(&m.headers, H_EVENT).unwrap_or_default().to_owned(),
                reason: header(&m.headers, "reason").unwrap_or_default().to_owned(),
            })
            .collect())
    }
}

/// One app's subscription to one event name. Pull events with
/// [`next`](Self::next) (the C ABI delivers them to callbacks); every method is
/// safe to call concurrently.
pub struct EventSubscription {
    events: Events,
    name: String,
    queue: String,
    opts: SubscribeOptions,
    /// Delivered, not yet acked/deferred/discarded: event id -> job id.
    inflight: Mutex<HashMap<u64, u64>>,
    /// `Some(reason)` while paused.
    paused: tokio::sync::watch::Sender<Option<String>>,
    /// A job reserved just as a pause began: kept (not nacked, which would
    /// send it behind later events and count an attempt) and handed out
    /// first after resume.
    held: Mutex<Option<Job>>,
    /// Deliveries rejected (tampered or malformed) and the last such error.
    rejected: Mutex<(u64, Option<Error>)>,
}

impl EventSubscription {
    /// The event name subscribed to.
    pub fn event_name(&self) -> &str {
        &self.name
    }

    /// The options the subscription was opened with.
    pub fn options(&self) -> SubscribeOptions {
        self.opts
    }

    /// The inbox queue this subscription reads.
    pub fn queue(&self) -> &str {
        &self.queue
    }

    /// The next event, waiting up to `wait`; `None` on timeout (or while
    /// paused). Tampered or malformed deliveries are never returned: they are
    /// discarded (recorded with the reason) and counted in
    /// [`rejected`](Self::rejected). Fails (leaving the event queued) when
    /// an event is sealed for this app but the client has no secret key.
    pub async fn next(&self, wait: Duration) -> Result<Option<Event>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let mut paused = self.paused.subscribe();
            if paused.borrow().is_some() {
                let resumed = tokio::time::timeout_at(deadline, paused.wait_for(Option::is_none)).await;
                if resumed.is_err() {
                    return Ok(None);
                }
            }
            let held = self.held.lock().unwrap().take();
            if let Some(job) = held {
                // Renew the reservation; if it ran out during the pause the
                // queue has the job again and delivers it in its turn.
                match self.events.client.extend(&self.queue, job.id, self.opts.ack_wait_ms).await {
                    Ok(()) => {
                        if let Some(ev) = self.accept(job).await? {
                            return Ok(Some(ev));
                        }
                    }
                    Err(Error::NotFound(_) | Error::Conflict(_)) => {}
                    Err(e) => {
                        *self.held.lock().unwrap() = Some(job);
                        return Err(e);
                    }
                }
                continue;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let poll = left.min(Duration::from_millis(POLL_MS)).as_millis() as u64;
            let job = self.events.client.reserve(&self.queue, self.opts.ack_wait_ms, poll).await?;
            let Some(job) = job else {
                if tokio::time::Instant::now() >= deadline {
                    return Ok(None);
                }
                continue;
            };
            if self.paused.borrow().is_some() {
                // Paused while we waited: keep it for after resume.
                *self.held.lock().unwrap() = Some(job);
                continue;
            }
            if let Some(ev) = self.accept(job).await? {
                return Ok(Some(ev));
            }
        }
    }

    async fn accept(&self, job: Job) -> Result<Option<Event>> {
        match self.events.decode(job.payload, &job.headers, job.attempt) {
            Ok(ev) => {
                self.inflight.lock().unwrap().insert(ev.id, job.id);
                Ok(Some(ev))
            }
            Err(e) if self.events.key.is_none() && header(&job.headers, H_ENC) == Some(ENC_SEALED) => {
                // A configuration error, not tampering: keep the event.
                self.events.client.nack(&self.queue, job.id, 0).await?;
                Err(e)
            }
            Err(e) => {
                let id = header(&job.headers, H_ID).and_then(|v| v.parse().ok()).unwrap_or(u64::MAX);
                tracing::warn!(event = id, app = %self.events.app_id, error = %e, "rejected an event delivery");
                self.events.record_discard(id, &self.name, &format!("rejected: {e}")).await?;
                self.events.client.ack(&self.queue, job.id).await?;
                let mut r = self.rejected.lock().unwrap();
                r.0 += 1;
                r.1 = Some(e);
                Ok(None)
            }
        }
    }

    fn take(&self, id: u64) -> Result<u64> {
        self.inflight.lock().unwrap().remove(&id).ok_or_else(|| {
            Error::NotFound(format!(
                "event {id} is not awaiting acknowledgement on this subscription (never delivered, or already \
                 acked, deferred or discarded)"
            ))
        })
    }

    /// Acknowledges a delivered event: it is never delivered again.
    pub async fn ack(&self, id: u64) -> Result<()> {
        let job = self.take(id)?;
        self.events.client.ack(&self.queue, job).await
    }

    /// The auto-ack rule, one for every binding: once the handler of a
    /// delivered event finished, with auto_ack an event handled without
    /// error (`ok`) is acknowledged unless the handler settled it itself
    /// (ack, defer, discard); a failed handler leaves it unacknowledged, so
    /// it comes back after ack_wait_ms. Without auto_ack nothing happens.
    pub async fn handled(&self, id: u64, ok: bool) -> Result<()> {
        if !self.opts.auto_ack {
            return Ok(());
        }
        if !ok {
            tracing::debug!(event = id, "event handler failed; redelivered after ack_wait");
            return Ok(());
        }
        match self.ack(id).await {
            Err(Error::NotFound(_)) => Ok(()),
            r => r,
        }
    }

    /// Redelivers a delivered event after `delay_ms` (not before).
    pub async fn defer(&self, id: u64, delay_ms: u64, reason: &str) -> Result<()> {
        let job = self.take(id)?;
        tracing::debug!(event = id, delay_ms, reason, "event deferred");
        self.events.client.nack(&self.queue, job, delay_ms).await
    }

    /// Drops a delivered event for good, recording it (and `reason`) in the
    /// discard log.
    pub async fn discard(&self, id: u64, reason: &str) -> Result<()> {
        let job = self.take(id)?;
        self.events.record_discard(id, &self.name, reason).await?;
        self.events.client.ack(&self.queue, job).await
    }

    /// Delivers a past event of this name to this app again (once), and
    /// returns it. NOT_FOUND if it does not exist, has another name or was
    /// not sent to this app.
    pub async fn replay(&self, id: u64) -> Result<Event> {
        let (record, name) = self.events.load_for_me(id).await?;
        if name != self.name {
            return Err(Error::NotFound(format!("event {id} is a {name:?} event, not {:?}", self.name)));
        }
        let event = self.events.decode(record.payload.clone(), &record.headers, 0)?;
        self.events.client.enqueue(&self.queue, record, 0, 0).await?;
        Ok(event)
    }

    /// Stops delivery until [`resume`](Self::resume); events stay queued.
    pub fn pause(&self, reason: &str) {
        tracing::debug!(event = %self.name, reason, "event subscription paused");
        self.paused.send_replace(Some(reason.to_owned()));
    }

    /// Restarts delivery after [`pause`](Self::pause).
    pub fn resume(&self) {
        self.paused.send_replace(None);
    }

    /// The pause reason while paused.
    pub fn paused(&self) -> Option<String> {
        self.paused.borrow().clone()
    }

    /// How many deliveries were rejected, and the last rejection.
    pub fn rejected(&self) -> (u64, Option<Error>) {
        self.rejected.lock().unwrap().clone()
    }

    /// Hands every delivered, unsettled event but `keep` back to the queue
    /// at once (instead of after ack_wait), e.g. on unsubscribe.
    pub async fn release(&self, keep: Option<u64>) -> Result<()> {
        let jobs: Vec<u64> = {
            let mut inflight = self.inflight.lock().unwrap();
            let kept = keep.and_then(|id| inflight.remove(&id).map(|job| (id, job)));
            let mut jobs: Vec<u64> = inflight.drain().map(|(_, j)| j).collect();
            inflight.extend(kept);
            jobs.extend(self.held.lock().unwrap().take().map(|job| job.id));
            jobs
        };
        for job in jobs {
            match self.events.client.nack(&self.queue, job, 0).await {
                Ok(()) | Err(Error::NotFound(_) | Error::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// A new random key pair: (secret, public), both base64.
pub fn generate_key() -> (String, String) {
    let k = AppKey::generate();
    (k.secret_base64(), k.public_base64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_names_are_distinct_and_safe() {
        assert_eq!(inbox_queue("billing", "orders/status").unwrap(), "_inbox.billing.orders_2fstatus");
        assert_ne!(inbox_queue("a.b", "c").unwrap(), inbox_queue("a", "b.c").unwrap());
        assert!(names::qualify(&inbox_queue("x", "a b/ü").unwrap(), "t", "n").is_ok());
        assert!(inbox_queue("bad/app", "e").is_err());
        assert!(inbox_queue("a", "").is_err());
        assert!(inbox_queue("a", &"x".repeat(97)).is_err());
        assert!(inbox_queue("a", &"/".repeat(40)).is_err());
    }
}
