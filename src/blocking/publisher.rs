//! Asynchronous publishing: callers enqueue into a bounded pipeline (a full
//! pipeline blocks the caller: back-pressure, not unbounded memory); one task
//! drains it in batches per stream, and a completion thread runs the
//! callbacks in issue order, outside the runtime.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::sync::mpsc;

use crate::client::Client;
use crate::engine::{Position, Record};
use crate::error::{Error, Result};

/// Records sent to the engine in one call at most.
const MAX_BATCH: usize = 1024;

/// Called once with the outcome of an asynchronous publish.
pub type Completion = Box<dyn FnOnce(Result<Position>) + Send>;

/// Finished publishes on their way to the completion thread.
type Done = std::sync::mpsc::Sender<Vec<(Once, Result<Position>)>>;

struct Pending {
    stream: String,
    record: Record,
    done: Once,
}

/// Runs the completion exactly once: with the result, or with `Closed` if
/// the publish is dropped unfinished (client closed while it was queued).
struct Once(Option<Completion>);

impl Once {
    fn complete(mut self, result: Result<Position>) {
        if let Some(done) = self.0.take() {
            done(result);
        }
    }
}

impl Drop for Once {
    fn drop(&mut self) {
        if let Some(done) = self.0.take() {
            done(Err(Error::Closed("client closed before the publish completed".into())));
        }
    }
}

#[derive(Default)]
struct Counters {
    issued: u64,
    completed: u64,
}

pub struct Publisher {
    tx: Mutex<Option<mpsc::Sender<Pending>>>,
    /// For publishes that run as tasks of their own (`spawn`): the runtime
    /// and the completion thread's queue.
    rt: Handle,
    done_tx: Mutex<Option<Done>>,
    /// Set when shutdown gives up waiting: running tasks end with Closed.
    abort: tokio::sync::watch::Sender<bool>,
    /// Spawned publishes in flight are bounded by `max_in_flight` too.
    permits: Arc<tokio::sync::Semaphore>,
    /// Fail instead of waiting when `max_in_flight` publishes are pending.
    nonblocking: bool,
    counters: Arc<(Mutex<Counters>, Condvar)>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    completion_thread: Mutex<Option<JoinHandle<()>>>,
    completion_thread_id: std::thread::ThreadId,
}

impl Publisher {
    pub fn start(rt: &Handle, client: Client) -> Result<Publisher> {
        // Publishes accepted but not yet acknowledged are bounded by
        // `max_in_flight`: memory stays bounded when the engine is slow.
        let client_max_in_flight = client.config().max_in_flight;
        let (tx, mut rx) = mpsc::channel::<Pending>(client_max_in_flight);
        let nonblocking = client.config().nonblocking;
        let (done_tx, done_rx) = std::sync::mpsc::channel::<Vec<(Once, Result<Position>)>>();
        let task_done_tx = done_tx.clone();
        let counters: Arc<(Mutex<Counters>, Condvar)> = Arc::default();
        let task = rt.spawn(async move {
            let mut batch = Vec::with_capacity(MAX_BATCH);
            while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
                let mut results = Vec::with_capacity(batch.len());
                // Consecutive publishes to one stream go in one engine call.
                let mut rest = batch.drain(..).peekable();
                while let Some(first) = rest.next() {
                    let stream = first.stream;
                    let mut records = vec![first.record];
                    let mut dones = vec![first.done];
                    while let Some(p) = rest.next_if(|p| p.stream == stream) {
                        records.push(p.record);
                        dones.push(p.done);
                    }
                    match client.publish_batch(&stream, records).await {
                        Ok(positions) => results.extend(dones.into_iter().zip(positions.into_iter().map(Ok))),
                        Err(e) => results.extend(dones.into_iter().map(|d| (d, Err(e.clone())))),
                    }
                }
                if done_tx.send(results).is_err() {
                    break;
                }
            }
        });
        let c = counters.clone();
        let completion_thread = std::thread::Builder::new()
            .name("flowmesh-publish".into())
            .spawn(move || {
                crate::signals::block_sigpipe_on_this_thread();
                while let Ok(results) = done_rx.recv() {
                    let n = results.len() as u64;
                    for (done, result) in results {
                        done.complete(result);
                    }
                    c.0.lock().unwrap().completed += n;
                    c.1.notify_all();
                }
            })
            .map_err(|e| Error::Internal(format!("spawn publish thread: {e}")))?;
        let completion_thread_id = completion_thread.thread().id();
        Ok(Publisher {
            rt: rt.clone(),
            done_tx: Mutex::new(Some(task_done_tx)),
            abort: tokio::sync::watch::channel(false).0,
            permits: Arc::new(tokio::sync::Semaphore::new(client_max_in_flight)),
            completion_thread_id,
            tx: Mutex::new(Some(tx)),
            nonblocking,
            counters,
            task: Mutex::new(Some(task)),
            completion_thread: Mutex::new(Some(completion_thread)),
        })
    }

    /// Queues a publish; while the pipeline is full it waits, or with
    /// `nonblocking` fails with Unavailable (and `done` is not called).
    pub fn publish(&self, stream: String, record: Record, done: Completion) -> Result<()> {
        let tx = self.tx.lock().unwrap().clone().ok_or_else(|| Error::Closed("client is closed".into()))?;
        self.counters.0.lock().unwrap().issued += 1;
        let pending = Pending { stream, record, done: Once(Some(done)) };
        let refused = if self.nonblocking {
            match tx.try_send(pending) {
                Ok(()) => None,
                Err(mpsc::error::TrySendError::Full(mut p)) => {
                    p.done.0.take(); // refused: the caller learns it from the status, not the callback
                    self.uncount();
                    return Err(Error::Unavailable(format!(
                        "{} publishes already in flight (max_in_flight); try again later",
                        tx.max_capacity()
                    )));
                }
                Err(mpsc::error::TrySendError::Closed(p)) => Some(p),
            }
        } else {
            tx.blocking_send(pending).err().map(|mpsc::error::SendError(p)| p)
        };
        if let Some(p) = refused {
            drop(p); // pipeline gone (closing): the callback reports Closed
            self.uncount();
        }
        Ok(())
    }

    /// Runs one publish as a task of its own (not batched: e.g. a
    /// per-publish tier); `done` runs on the completion thread like the
    /// pipeline's, and `flush` and `shutdown` wait for it the same way.
    pub fn spawn<F>(&self, publish: F, done: Completion) -> Result<()>
    where
        F: std::future::Future<Output = Result<Position>> + Send + 'static,
    {
        let done_tx = self.done_tx.lock().unwrap().clone().ok_or_else(|| Error::Closed("client is closed".into()))?;
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) if self.nonblocking => {
                return Err(Error::Unavailable("max_in_flight publishes already in flight; try again later".into()))
            }
            // Full: wait here like a full pipeline does (never on a runtime thread:
            // callers are application and callback threads).
            Err(_) => futures::executor::block_on(self.permits.clone().acquire_owned())
                .map_err(|_| Error::Closed("client is closed".into()))?,
        };
        self.counters.0.lock().unwrap().issued += 1;
        let done = Once(Some(done));
        let mut abort = self.abort.subscribe();
        self.rt.spawn(async move {
            let result = tokio::select! {
                r = publish => r,
                _ = abort.wait_for(|a| *a) => Err(Error::Closed("client closed before the publish completed".into())),
            };
            // The completion thread is gone only once closed: `done` then
            // reports Closed when dropped.
            drop(permit);
            let _ = done_tx.send(vec![(done, result)]);
        });
        Ok(())
    }

    /// Marks an issued publish as finished without running the engine.
    fn uncount(&self) {
        self.counters.0.lock().unwrap().completed += 1;
        self.counters.1.notify_all();
    }

    /// Waits until every publish issued before this call has completed.
    pub fn flush(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.counters;
        let mut c = lock.lock().unwrap();
        let target = c.issued;
        while c.completed < target {
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout(format!("{} publishes still pending", target - c.completed)));
            }
            c = cv.wait_timeout(c, deadline - now).unwrap().0;
        }
        Ok(())
    }

    /// True on the thread that runs publish callbacks.
    pub fn on_completion_thread(&self) -> bool {
        std::thread::current().id() == self.completion_thread_id
    }

    /// Stops accepting, lets queued publishes finish, and joins the thread.
    /// From inside a publish callback it cannot wait for itself: queued
    /// publishes then complete with Closed and the thread ends on its own.
    pub fn shutdown(&self, timeout: Duration) {
        let drained = !self.on_completion_thread() && self.flush(timeout).is_ok();
        self.tx.lock().unwrap().take(); // the task ends once the channel drains
        self.done_tx.lock().unwrap().take();
        if let Some(task) = self.task.lock().unwrap().take() {
            if !drained {
                task.abort(); // engine stuck: queued callbacks report Closed
            }
        }
        if !drained {
            self.abort.send_replace(true); // and so do the spawned ones
        }
        if let Some(t) = self.completion_thread.lock().unwrap().take() {
            if !self.on_completion_thread() {
                let _ = t.join();
            }
        }
    }
}
