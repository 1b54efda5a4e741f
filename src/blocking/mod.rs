//! The blocking client the C ABI stands on: it owns a tokio runtime, turns
//! every async call into a blocking one, runs subscription callbacks and
//! publish completions on library threads, and shuts everything down (and
//! joins every thread) on `close`.

mod dispatch;
pub(crate) mod events;
mod publisher;
mod state;
mod tiered;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::StreamExt;
use tokio::runtime::Runtime;

pub use self::dispatch::Delivery;
pub use self::publisher::Completion;

use self::dispatch::Dispatcher;
use self::publisher::Publisher;
use crate::client::{Client, ClientConfig};
use crate::engine::connection::{ConnState, ConnectionState, StateChange};
use crate::engine::*;
use crate::error::{Error, Result};
use crate::events::Events;
use crate::options::Options;

/// Auto-commit writes at least this often while messages keep coming.
const AUTO_COMMIT_EVERY: u64 = 256;

/// The synchronous client the C ABI stands on: a [`Client`] on its own runtime, callback threads and the async publish pipeline.
pub struct BlockingClient {
    runtime: Mutex<Option<Runtime>>,
    handle: tokio::runtime::Handle,
    client: Client,
    publisher: Publisher,
    subscriptions: Mutex<Vec<Weak<Dispatcher>>>,
    closed: AtomicBool,
    /// Fires when close starts: blocked calls return Closed at once.
    closing: tokio::sync::watch::Sender<bool>,
    /// Blocking calls in progress; close waits for them before stopping the runtime.
    active: AtomicUsize,
    states: state::StateListeners,
    /// Events API, made on first use (crate::events).
    events: std::sync::OnceLock<Events>,
}

/// A running subscription: callbacks on a library thread (stream or KV
/// watch), or pulled in batches by the application.
pub struct Subscription {
    kind: SubscriptionKind,
}

enum SubscriptionKind {
    Callback(Arc<Dispatcher>),
    Pull(Box<Puller>),
}

impl Subscription {
    /// Stops delivery; waits for a running callback unless called from it.
    pub fn stop(&self) {
        match &self.kind {
            SubscriptionKind::Callback(d) => d.stop(),
            SubscriptionKind::Pull(p) => p.stop(),
        }
    }

    /// Ok while the feed is healthy; the error that ended it otherwise.
    pub fn status(&self) -> Result<()> {
        match &self.kind {
            SubscriptionKind::Callback(d) => d.status(),
            SubscriptionKind::Pull(p) => p.ended.lock().unwrap().clone().map_or(Ok(()), Err),
        }
    }

    /// Up to `max` messages, waiting up to `timeout` for the first (pull
    /// subscriptions only). Empty on timeout. With auto-commit, what the
    /// previous call returned is committed first: it counts as processed.
    pub fn next(&self, max: usize, timeout: Duration) -> Result<Vec<Message>> {
        match &self.kind {
            SubscriptionKind::Callback(_) => {
                Err(Error::invalid("fm_subscription_next needs a subscription made with fm_subscribe_pull"))
            }
            SubscriptionKind::Pull(_) if max == 0 => Err(Error::invalid("max_messages must be at least 1")),
            SubscriptionKind::Pull(p) => p.next(max, timeout),
        }
    }
}

/// Messages buffered ahead of a pull subscriber (back-pressure beyond this).
const PULL_BUFFER: usize = 1024;

struct Puller {
    /// Weak: an open pull subscription must not keep a closed client alive.
    client: Weak<BlockingClient>,
    /// Set by the feed task the moment the feed fails (for status()).
    ended: Arc<Mutex<Option<Error>>>,
    rx: tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Result<Message>>>,
    task: tokio::task::JoinHandle<()>,
    failure: Mutex<Option<Error>>,
    /// An error met after messages in the same batch: reported next call.
    deferred: Mutex<Option<Error>>,
    committer: Mutex<Option<AutoCommit>>,
    /// (partition, offset) of what the last call returned, for auto-commit.
    returned: Mutex<Vec<(u32, u64)>>,
    /// Calls of `next` in progress: stop waits for them, so the C handle is
    /// never freed under a running fm_subscription_next.
    in_next: AtomicUsize,
}

impl Puller {
    fn next(&self, max: usize, timeout: Duration) -> Result<Vec<Message>> {
        self.in_next.fetch_add(1, Ordering::SeqCst);
        let r = self.next_batch(max, timeout);
        self.in_next.fetch_sub(1, Ordering::SeqCst);
        r
    }

    fn next_batch(&self, max: usize, timeout: Duration) -> Result<Vec<Message>> {
        if let Some(e) = self.deferred.lock().unwrap().take() {
            *self.failure.lock().unwrap() = Some(e);
        }
        if let Some(e) = self.failure.lock().unwrap().clone() {
            return Err(e);
        }
        self.commit_returned();
        let client = self.client.upgrade().ok_or_else(|| Error::Closed("client is closed".into()))?;
        let batch = client.block_on(async {
            let mut rx = self.rx.lock().await;
            let mut out = Vec::new();
            // Take what is buffered without arming a timer (timeout 0 polls).
            let first = match rx.try_recv() {
                Ok(item) => item?,
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                    return Err(Error::Closed("subscription stopped".into()))
                }
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) if timeout.is_zero() => return Ok(out),
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => {
                    match tokio::time::timeout(timeout, rx.recv()).await {
                        Err(_) => return Ok(out),
                        Ok(None) => return Err(Error::Closed("subscription stopped".into())),
                        Ok(Some(item)) => item?,
                    }
                }
            };
            out.push(first);
            while out.len() < max {
                match rx.try_recv() {
                    Ok(Ok(m)) => out.push(m),
                    // Deliver what came before the error; report it next call.
                    Ok(Err(e)) => {
                        *self.deferred.lock().unwrap() = Some(e);
                        break;
                    }
                    Err(_) => break,
                }
            }
            Ok(out)
        });
        match &batch {
            Ok(msgs) => {
                *self.returned.lock().unwrap() =
                    msgs.iter().filter(|m| !m.is_live()).map(|m| (m.partition, m.offset)).collect()
            }
            Err(e @ (Error::Closed(_) | Error::InvalidArgument(_))) => return Err(e.clone()),
            Err(e) => *self.failure.lock().unwrap() = Some(e.clone()),
        }
        batch
    }

    /// With auto-commit, what earlier calls returned counts as processed.
    fn commit_returned(&self) {
        if let Some(c) = self.committer.lock().unwrap().as_mut() {
            for (p, o) in self.returned.lock().unwrap().drain(..) {
                c.delivered(p, o);
            }
            c.commit();
        }
    }

    fn stop(&self) {
        self.task.abort(); // a waiting next wakes with Closed
        while self.in_next.load(Ordering::SeqCst) > 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        // The last batch is not committed: the application may not have
        // processed all of it (at-least-once; fm_commit_offset does it).
    }
}

impl Drop for Puller {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl BlockingClient {
    /// Connects on a runtime of its own (see [`Client::connect`]).
    pub fn connect(url: &str, opts: &Options) -> Result<BlockingClient> {
        let cfg = ClientConfig::from_options(opts)?;
        crate::client::check_login(url, &cfg)?;
        let endpoint = Endpoint::parse(url)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cfg.worker_threads)
            .thread_name("flowmesh-rt")
            .on_thread_start(crate::signals::block_sigpipe_on_this_thread)
            .enable_all()
            .build()
            .map_err(|e| Error::Internal(format!("start runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let engine = runtime.block_on(endpoint.open(&cfg.engine))?;
        let connection = engine.connection().unwrap_or_else(|| {
            // Embedded engines are connected from the start until closed.
            Arc::new(ConnectionState::new(ConnState::Connected))
        });
        let client = Client::with_engine(engine, cfg);
        let publisher = Publisher::start(&handle, client.clone())?;
        Ok(BlockingClient {
            runtime: Mutex::new(Some(runtime)),
            handle,
            client,
            publisher,
            subscriptions: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
            closing: tokio::sync::watch::channel(false).0,
            active: AtomicUsize::new(0),
            states: state::StateListeners::new(connection),
            events: std::sync::OnceLock::new(),
        })
    }

    /// The async client underneath, for calls without a blocking form.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Runs a future to completion on the caller's thread.
    pub fn block_on<T>(&self, fut: impl Future<Output = Result<T>>) -> Result<T> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(Error::Internal("blocking flowmesh call made from inside an async runtime".into()));
        }
        let _call = ActiveCall::enter(self)?;
        let mut fut = std::pin::pin!(fut);
        {
            // Fast path: embedded calls usually finish on their first poll,
            // so skip block_on's park/unpark machinery (most of the FFI cost).
            let _ctx = self.handle.enter();
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            if let std::task::Poll::Ready(r) = fut.as_mut().poll(&mut cx) {
                return r;
            }
        }
        let mut closing = self.closing.subscribe();
        // A concurrent close interrupts the call before the runtime stops.
        self.handle.block_on(async move {
            tokio::select! {
                biased;
                _ = closing.wait_for(|c| *c) => Err(Error::Closed("client closed during the call".into())),
                r = fut => r,
            }
        })
    }

    /// Whether `close` ran; every call then fails with Closed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.client.config().engine.request_timeout_ms.max(1))
    }

    // ---- streams with callbacks ----

    /// Queues `record` for the publish pipeline; `done` runs on the completion thread with its position or error.
    pub fn publish_async(&self, stream: &str, record: Record, done: Completion) -> Result<()> {
        if self.is_closed() {
            return Err(Error::Closed("client is closed".into()));
        }
        let stream = self.client.qualify(stream)?;
        if record.size() > self.client.config().engine.max_payload_bytes {
            return Err(Error::TooLarge(format!(
                "message of {} bytes exceeds max_payload_bytes ({})",
                record.size(),
                self.client.config().engine.max_payload_bytes
            )));
        }
        self.publisher.publish(stream, record, done)
    }

    /// Waits up to `timeout` for every queued asynchronous publish to complete.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        if self.is_closed() {
            return Err(Error::Closed("client is closed".into()));
        }
        self.publisher.flush(timeout)
    }

    /// Subscribes with a callback run on a library thread; with auto-commit,
    /// delivered offsets are committed for the group after callbacks return.
    pub fn subscribe<F>(self: &Arc<Self>, stream: &str, opts: &Options, callback: F) -> Result<Subscription>
    where
        F: FnMut(&Message) + Send + 'static,
    {
        let (spec, auto_commit) = opts.subscription()?;
        let group = spec.group.clone();
        let feed = self.block_on(self.client.subscribe(stream, spec))?;
        let committer = match (auto_commit, group) {
            (true, Some(group)) => Some(self.auto_commit(&crate::subject::for_subscribe(stream)?.0, &group)),
            _ => None,
        };
        let delivery = MessageDelivery { callback, committer };
        self.track(Dispatcher::start(&self.handle, feed, delivery)?)
    }

    /// Calls `callback` for every change to keys of `bucket` starting with `prefix`, on a dispatch thread.
    pub fn kv_watch<F>(&self, bucket: &str, prefix: &str, callback: F) -> Result<Subscription>
    where
        F: FnMut(&KvEvent) + Send + 'static,
    {
        let feed = self.block_on(self.client.kv_watch(bucket, prefix))?;
        self.track(Dispatcher::start(&self.handle, feed, WatchDelivery(callback))?)
    }

    /// A subscription without a callback: the application pulls batches
    /// with [`Subscription::next`] at its own pace.
    pub fn subscribe_pull(self: &Arc<Self>, stream: &str, opts: &Options) -> Result<Subscription> {
        let (spec, auto_commit) = opts.subscription()?;
        let committer = match (auto_commit, &spec.group) {
            (true, Some(group)) => Some(self.auto_commit(&crate::subject::for_subscribe(stream)?.0, group)),
            _ => None,
        };
        let feed = self.block_on(self.client.subscribe(stream, spec))?;
        let (tx, rx) = tokio::sync::mpsc::channel(PULL_BUFFER);
        let ended: Arc<Mutex<Option<Error>>> = Arc::default();
        let ended_by = ended.clone();
        let task = self.handle.spawn(dispatch::forward(feed, tx, move |e| *ended_by.lock().unwrap() = Some(e.clone())));
        let puller = Puller {
            client: Arc::downgrade(self),
            ended,
            rx: tokio::sync::Mutex::new(rx),
            task,
            failure: Mutex::new(None),
            deferred: Mutex::new(None),
            committer: Mutex::new(committer),
            returned: Mutex::new(Vec::new()),
            in_next: AtomicUsize::new(0),
        };
        Ok(Subscription { kind: SubscriptionKind::Pull(Box::new(puller)) })
    }

    fn auto_commit(self: &Arc<Self>, stream: &str, group: &str) -> AutoCommit {
        AutoCommit {
            client: Arc::downgrade(self),
            stream: stream.to_owned(),
            group: group.to_owned(),
            pending: Vec::new(),
            since_commit: 0,
        }
    }

    /// Runs `feed` through a dispatcher thread like fm_subscribe's, closed
    /// with the client (used by the events callbacks in `events`).
    pub fn dispatch<T, S, D>(&self, feed: S, delivery: D) -> Result<Subscription>
    where
        T: Send + 'static,
        S: futures::Stream<Item = Result<T>> + Send + 'static,
        D: Delivery<T>,
    {
        self.track(Dispatcher::start(&self.handle, feed, delivery)?)
    }

    /// The events API of this client (needs the connect option app_id).
    pub fn events(&self) -> Result<&Events> {
        if let Some(e) = self.events.get() {
            return Ok(e);
        }
        let _ = self.events.set(Events::new(self.client.clone())?);
        Ok(self.events.get().expect("just set"))
    }

    fn track(&self, dispatcher: Arc<Dispatcher>) -> Result<Subscription> {
        let mut subs = self.subscriptions.lock().unwrap();
        if self.is_closed() {
            dispatcher.stop();
            return Err(Error::Closed("client is closed".into()));
        }
        subs.retain(|w| w.upgrade().is_some_and(|d| !d.is_stopped()));
        subs.push(Arc::downgrade(&dispatcher));
        Ok(Subscription { kind: SubscriptionKind::Callback(dispatcher) })
    }

    /// Stops delivery, waits for running callbacks, finishes queued
    /// publishes, joins every thread. Idempotent.
    pub fn close(&self) {
        // SeqCst pairs with ActiveCall::enter: a call either sees `closed`
        // or is counted in `active` before we wait for it.
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        self.closing.send_replace(true);
        let subs: Vec<Arc<Dispatcher>> =
            self.subscriptions.lock().unwrap().drain(..).filter_map(|w| w.upgrade()).collect();
        for d in &subs {
            d.stop();
        }
        let in_callback = subs.iter().any(|d| d.on_dispatcher_thread())
            || self.publisher.on_completion_thread()
            || self.states.on_listener_thread();
        self.publisher.shutdown(self.request_timeout());
        self.wait_for_calls();
        let _ = self.handle.block_on(self.client.engine().sync());
        self.states.close();
        if let Some(rt) = self.runtime.lock().unwrap().take() {
            if in_callback {
                rt.shutdown_background();
            } else {
                rt.shutdown_timeout(self.request_timeout());
            }
        }
    }

    /// Runs library-internal work (auto-commit) while the runtime exists,
    /// also during close, which waits for it; Closed once the runtime is gone.
    fn run_internal<T>(&self, fut: impl Future<Output = Result<T>>) -> Result<T> {
        let runtime = self.runtime.lock().unwrap();
        if runtime.is_none() {
            return Err(Error::Closed("client is closed".into()));
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(Error::Internal("auto-commit from inside an async runtime".into()));
        }
        self.handle.block_on(fut)
    }

    /// Waits (bounded) until interrupted calls have left the runtime.
    fn wait_for_calls(&self) {
        let deadline = std::time::Instant::now() + self.request_timeout();
        while self.active.load(Ordering::SeqCst) > 0 {
            if std::time::Instant::now() >= deadline {
                tracing::warn!(calls = self.active.load(Ordering::SeqCst), "closing with blocking calls still running");
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    // ---- connection state ----

    /// Calls `callback` on a library thread with every state change, in
    /// order, starting with the current state and ending with `Closed`.
    pub fn on_state(&self, callback: impl FnMut(&StateChange) + Send + 'static) -> Result<()> {
        if self.is_closed() {
            return Err(Error::Closed("client is closed".into()));
        }
        self.states.add(callback)
    }

    /// The link state now (always Connected on embedded engines).
    pub fn state(&self) -> ConnState {
        self.states.current()
    }

    // ---- plain blocking forwards ----

    /// [`Client::health`], blocking.
    pub fn health(&self) -> Result<()> {
        self.block_on(self.client.health())
    }

    /// [`Client::ready`], blocking.
    pub fn ready(&self) -> Result<()> {
        self.block_on(self.client.ready())
    }
}

impl Drop for BlockingClient {
    fn drop(&mut self) {
        self.close();
    }
}

/// Counts a blocking call in progress (refused once the client closed).
struct ActiveCall<'a>(&'a AtomicUsize);

impl<'a> ActiveCall<'a> {
    fn enter(c: &'a BlockingClient) -> Result<ActiveCall<'a>> {
        c.active.fetch_add(1, Ordering::SeqCst);
        let call = ActiveCall(&c.active);
        if c.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed("client is closed".into())); // drop uncounts
        }
        Ok(call)
    }
}

impl Drop for ActiveCall<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

struct AutoCommit {
    /// Weak: a subscription must not keep a closed client's engine alive.
    client: Weak<BlockingClient>,
    stream: String,
    group: String,
    /// Highest delivered offset per partition not yet committed.
    pending: Vec<(u32, u64)>,
    since_commit: u64,
}

impl AutoCommit {
    fn delivered(&mut self, partition: u32, offset: u64) {
        match self.pending.iter_mut().find(|(p, _)| *p == partition) {
            Some(slot) => slot.1 = offset,
            None => self.pending.push((partition, offset)),
        }
        self.since_commit += 1;
        if self.since_commit >= AUTO_COMMIT_EVERY {
            self.commit();
        }
    }

    fn commit(&mut self) {
        let Some(client) = self.client.upgrade() else {
            self.pending.clear();
            return;
        };
        for (partition, offset) in self.pending.drain(..) {
            let commit = client.client.commit_offset(&self.stream, &self.group, partition, offset);
            if let Err(e) = client.run_internal(commit) {
                tracing::warn!(error = %e, stream = %self.stream, group = %self.group, "auto-commit failed");
            }
        }
        self.since_commit = 0;
    }
}

impl Drop for AutoCommit {
    fn drop(&mut self) {
        if !self.pending.is_empty() && tokio::runtime::Handle::try_current().is_err() {
            self.commit();
        }
    }
}

struct MessageDelivery<F> {
    callback: F,
    committer: Option<AutoCommit>,
}

impl<F: FnMut(&Message) + Send + 'static> Delivery<Message> for MessageDelivery<F> {
    fn deliver(&mut self, msg: Message) {
        (self.callback)(&msg);
        // Memory-tier messages have no offset to commit.
        if let Some(c) = self.committer.as_mut().filter(|_| !msg.is_live()) {
            c.delivered(msg.partition, msg.offset);
        }
    }

    fn idle(&mut self) {
        if let Some(c) = &mut self.committer {
            c.commit();
        }
    }
}

struct WatchDelivery<F>(F);

impl<F: FnMut(&KvEvent) + Send + 'static> Delivery<KvEvent> for WatchDelivery<F> {
    fn deliver(&mut self, ev: KvEvent) {
        (self.0)(&ev);
    }
}

/// Drives a stream of items for tests and tools that want them pulled.
pub async fn collect<T>(mut s: impl futures::Stream<Item = Result<T>> + Unpin, n: usize) -> Result<Vec<T>> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match s.next().await {
            Some(item) => out.push(item?),
            None => break,
        }
    }
    Ok(out)
}
