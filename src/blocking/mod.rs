//! The blocking client the C ABI stands on: it owns a tokio runtime, turns
//! every async call into a blocking one, runs subscription callbacks and
//! publish completions on library threads, and shuts everything down (and
//! joins every thread) on `close`.

mod dispatch;
mod publisher;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

use futures::StreamExt;
use tokio::runtime::Runtime;

pub use self::dispatch::Delivery;
pub use self::publisher::Completion;

use self::dispatch::Dispatcher;
use self::publisher::Publisher;
use crate::client::{Client, ClientConfig, Endpoint};
use crate::engine::*;
use crate::error::{Error, Result};
use crate::options::Options;

/// Auto-commit writes at least this often while messages keep coming.
const AUTO_COMMIT_EVERY: u64 = 256;

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
    active: Arc<(Mutex<usize>, Condvar)>,
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
            SubscriptionKind::Pull(p) => p.failure.lock().unwrap().clone().map_or(Ok(()), Err),
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
            SubscriptionKind::Pull(p) => p.next(max.max(1), timeout),
        }
    }
}

/// Messages buffered ahead of a pull subscriber (back-pressure beyond this).
const PULL_BUFFER: usize = 1024;

struct Puller {
    client: Arc<BlockingClient>,
    rx: tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Result<Message>>>,
    task: tokio::task::JoinHandle<()>,
    failure: Mutex<Option<Error>>,
    committer: Mutex<Option<AutoCommit>>,
    /// (partition, offset) of what the last call returned, for auto-commit.
    returned: Mutex<Vec<(u32, u64)>>,
}

impl Puller {
    fn next(&self, max: usize, timeout: Duration) -> Result<Vec<Message>> {
        if let Some(e) = self.failure.lock().unwrap().clone() {
            return Err(e);
        }
        if let Some(c) = self.committer.lock().unwrap().as_mut() {
            for (p, o) in self.returned.lock().unwrap().drain(..) {
                c.delivered(p, o);
            }
            c.commit();
        }
        let batch = self.client.block_on(async {
            let mut rx = self.rx.lock().await;
            let mut out = Vec::new();
            let first = match tokio::time::timeout(timeout, rx.recv()).await {
                Err(_) => return Ok(out),
                Ok(None) => return Err(Error::Closed("subscription stopped".into())),
                Ok(Some(item)) => item?,
            };
            out.push(first);
            while out.len() < max {
                match rx.try_recv() {
                    Ok(item) => out.push(item?),
                    Err(_) => break,
                }
            }
            Ok(out)
        });
        match &batch {
            Ok(msgs) => *self.returned.lock().unwrap() = msgs.iter().map(|m| (m.partition, m.offset)).collect(),
            Err(e @ (Error::Closed(_) | Error::InvalidArgument(_))) => return Err(e.clone()),
            Err(e) => *self.failure.lock().unwrap() = Some(e.clone()),
        }
        batch
    }

    fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Puller {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl BlockingClient {
    pub fn connect(url: &str, opts: &Options) -> Result<BlockingClient> {
        let cfg = ClientConfig::from_options(opts)?;
        let endpoint = Endpoint::parse(url)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cfg.worker_threads)
            .thread_name("flowmesh-rt")
            .on_thread_start(crate::signals::block_sigpipe_on_this_thread)
            .enable_all()
            .build()
            .map_err(|e| Error::Internal(format!("start runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let engine = runtime.block_on(crate::client::open_engine(&endpoint, &cfg))?;
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
            active: Arc::default(),
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Runs a future to completion on the caller's thread.
    pub fn block_on<T>(&self, fut: impl Future<Output = Result<T>>) -> Result<T> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(Error::Internal("blocking flowmesh call made from inside an async runtime".into()));
        }
        let _call = ActiveCall::enter(self)?;
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

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.client.config().request_timeout_ms.max(1))
    }

    // ---- streams with callbacks ----

    pub fn publish_async(&self, stream: &str, record: Record, done: Completion) -> Result<()> {
        if self.is_closed() {
            return Err(Error::Closed("client is closed".into()));
        }
        let stream = self.client.qualify(stream)?;
        if record.size() > self.client.config().max_payload_bytes {
            return Err(Error::TooLarge(format!(
                "message of {} bytes exceeds max_payload_bytes ({})",
                record.size(),
                self.client.config().max_payload_bytes
            )));
        }
        self.publisher.publish(stream, record, done)
    }

    pub fn flush(&self, timeout: Duration) -> Result<()> {
        if self.is_closed() {
            return Err(Error::Closed("client is closed".into()));
        }
        self.publisher.flush(timeout)
    }

    /// Subscribes with a callback run on a library thread; with auto-commit,
    /// delivered offsets are committed for the group after callbacks return.
    pub fn subscribe<F>(&self, stream: &str, opts: &Options, callback: F) -> Result<Subscription>
    where
        F: FnMut(&Message) + Send + 'static,
    {
        let (spec, auto_commit) = opts.subscription()?;
        let group = spec.group.clone();
        let feed = self.block_on(self.client.subscribe(stream, spec))?;
        let committer = match (auto_commit, group) {
            (true, Some(group)) => Some(self.auto_commit(stream, &group)),
            _ => None,
        };
        let delivery = MessageDelivery { callback, committer };
        self.track(Dispatcher::start(&self.handle, feed, delivery)?)
    }

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
            (true, Some(group)) => Some(self.auto_commit(stream, group)),
            _ => None,
        };
        let mut feed = self.block_on(self.client.subscribe(stream, spec))?;
        let (tx, rx) = tokio::sync::mpsc::channel(PULL_BUFFER);
        let task = self.handle.spawn(async move {
            while let Some(item) = feed.next().await {
                let last = item.is_err();
                if tx.send(item).await.is_err() || last {
                    break;
                }
            }
        });
        let puller = Puller {
            client: self.clone(),
            rx: tokio::sync::Mutex::new(rx),
            task,
            failure: Mutex::new(None),
            committer: Mutex::new(committer),
            returned: Mutex::new(Vec::new()),
        };
        Ok(Subscription { kind: SubscriptionKind::Pull(Box::new(puller)) })
    }

    fn auto_commit(&self, stream: &str, group: &str) -> AutoCommit {
        AutoCommit {
            client: self.client.clone(),
            handle: self.handle.clone(),
            stream: stream.to_owned(),
            group: group.to_owned(),
            pending: Vec::new(),
            since_commit: 0,
        }
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
        {
            // Under the call counter's lock, so no call starts after this.
            let _calls = self.active.0.lock().unwrap();
            if self.closed.swap(true, Ordering::AcqRel) {
                return;
            }
        }
        self.closing.send_replace(true);
        let subs: Vec<Arc<Dispatcher>> =
            self.subscriptions.lock().unwrap().drain(..).filter_map(|w| w.upgrade()).collect();
        for d in &subs {
            d.stop();
        }
        let in_callback = subs.iter().any(|d| d.on_dispatcher_thread()) || self.publisher.on_completion_thread();
        self.publisher.shutdown(self.request_timeout());
        self.wait_for_calls();
        let _ = self.handle.block_on(self.client.engine().sync());
        if let Some(rt) = self.runtime.lock().unwrap().take() {
            if in_callback {
                rt.shutdown_background();
            } else {
                rt.shutdown_timeout(self.request_timeout());
            }
        }
    }

    /// Waits (bounded) until interrupted calls have left the runtime.
    fn wait_for_calls(&self) {
        let (lock, cv) = &*self.active;
        let mut n = lock.lock().unwrap();
        let deadline = std::time::Instant::now() + self.request_timeout();
        while *n > 0 {
            let now = std::time::Instant::now();
            if now >= deadline {
                tracing::warn!(calls = *n, "closing with blocking calls still running");
                return;
            }
            n = cv.wait_timeout(n, deadline - now).unwrap().0;
        }
    }

    // ---- plain blocking forwards ----

    pub fn health(&self) -> Result<()> {
        self.block_on(self.client.health())
    }

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
struct ActiveCall(Arc<(Mutex<usize>, Condvar)>);

impl ActiveCall {
    fn enter(c: &BlockingClient) -> Result<ActiveCall> {
        let mut n = c.active.0.lock().unwrap();
        if c.closed.load(Ordering::Acquire) {
            return Err(Error::Closed("client is closed".into()));
        }
        *n += 1;
        Ok(ActiveCall(c.active.clone()))
    }
}

impl Drop for ActiveCall {
    fn drop(&mut self) {
        *self.0 .0.lock().unwrap() -= 1;
        self.0 .1.notify_all();
    }
}

struct AutoCommit {
    client: Client,
    handle: tokio::runtime::Handle,
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
        for (partition, offset) in self.pending.drain(..) {
            let r = self.handle.block_on(self.client.commit_offset(&self.stream, &self.group, partition, offset));
            if let Err(e) = r {
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
        if let Some(c) = &mut self.committer {
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
