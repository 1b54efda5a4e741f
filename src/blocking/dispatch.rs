//! Callback delivery on library threads. A tokio task pulls the engine's feed
//! into a small bounded channel (so a slow callback back-pressures the feed
//! instead of growing memory); one dispatcher thread per subscription runs
//! the callbacks in order, outside every lock and outside the runtime, so a
//! callback may call any blocking client method, including unsubscribing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{JoinHandle, ThreadId};

use futures::{Stream, StreamExt};
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use crate::error::{Error, Result};

/// Items buffered between the feed and a slow callback.
const DISPATCH_BUFFER: usize = 256;

/// What a subscription does with each item.
pub trait Delivery<T>: Send + 'static {
    /// Handles one item, on the subscription's dispatch thread, in order.
    fn deliver(&mut self, item: T);
    /// Called when the buffer is momentarily empty (e.g. to commit offsets).
    fn idle(&mut self) {}
    /// Called once, on the dispatcher thread, when the feed fails.
    fn failed(&mut self, err: Error) {
        tracing::warn!(error = %err, "subscription feed ended with an error");
    }
}

/// Moves a feed into a bounded channel (back-pressure when it is full) until
/// the feed ends, fails (reported to `on_error`, then sent) or the receiver
/// goes away.
pub(crate) async fn forward<T, S>(feed: S, tx: mpsc::Sender<Result<T>>, on_error: impl FnOnce(&Error))
where
    S: Stream<Item = Result<T>>,
{
    futures::pin_mut!(feed);
    while let Some(item) = feed.next().await {
        if let Err(e) = &item {
            on_error(e);
            let _ = tx.send(item).await;
            return;
        }
        if tx.send(item).await.is_err() {
            return;
        }
    }
}

pub struct Dispatcher {
    stopped: Arc<AtomicBool>,
    /// The error that ended the feed, if one did.
    failure: Arc<Mutex<Option<Error>>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    thread_id: ThreadId,
}

impl Dispatcher {
    pub fn start<T, S, D>(rt: &Handle, feed: S, mut delivery: D) -> Result<Arc<Dispatcher>>
    where
        T: Send + 'static,
        S: Stream<Item = Result<T>> + Send + 'static,
        D: Delivery<T>,
    {
        let (tx, mut rx) = mpsc::channel::<Result<T>>(DISPATCH_BUFFER);
        let stopped = Arc::new(AtomicBool::new(false));
        let task = rt.spawn(forward(feed, tx, |_| {}));
        let stop = stopped.clone();
        let failure: Arc<Mutex<Option<Error>>> = Arc::default();
        let failed_with = failure.clone();
        let thread = std::thread::Builder::new()
            .name("flowmesh-dispatch".into())
            .spawn(move || {
                crate::signals::block_sigpipe_on_this_thread();
                loop {
                    let item = match rx.try_recv() {
                        Ok(item) => item,
                        Err(mpsc::error::TryRecvError::Empty) => {
                            if !stop.load(Ordering::Acquire) {
                                delivery.idle();
                            }
                            match rx.blocking_recv() {
                                Some(item) => item,
                                None => break,
                            }
                        }
                        Err(mpsc::error::TryRecvError::Disconnected) => break,
                    };
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    match item {
                        Ok(item) => delivery.deliver(item),
                        Err(e) => {
                            *failed_with.lock().unwrap() = Some(e.clone());
                            delivery.failed(e);
                            break;
                        }
                    }
                }
            })
            .map_err(|e| Error::Internal(format!("spawn dispatcher thread: {e}")))?;
        let thread_id = thread.thread().id();
        Ok(Arc::new(Dispatcher {
            stopped,
            failure,
            task: Mutex::new(Some(task)),
            thread: Mutex::new(Some(thread)),
            thread_id,
        }))
    }

    /// Stops delivery and waits for a running callback, unless called from
    /// that callback (then the thread exits when the callback returns).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        if let Some(task) = self.task.lock().unwrap().take() {
            task.abort(); // drops the sender: the dispatcher wakes and exits
        }
        let thread = self.thread.lock().unwrap().take();
        if let Some(t) = thread {
            if std::thread::current().id() != self.thread_id {
                let _ = t.join();
            }
        }
    }

    /// Ok while delivering (or stopped by the user); the error that ended
    /// the feed otherwise.
    pub fn status(&self) -> Result<()> {
        match self.failure.lock().unwrap().clone() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    pub fn on_dispatcher_thread(&self) -> bool {
        std::thread::current().id() == self.thread_id
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        self.stop();
    }
}
