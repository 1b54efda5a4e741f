//! Callback delivery of events on the blocking client: the same dispatcher
//! thread machinery as `fm_subscribe`, fed one event at a time. The feed
//! reserves the next event only after the previous callback returned, so an
//! event's ack_wait clock never runs while it sits in a buffer.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Semaphore;

use super::{BlockingClient, Delivery, Subscription};
use crate::error::{Error, Result};
use crate::events::{Event, EventSubscription, Events, SubscribeOptions};
use crate::options::Options;

/// A callback subscription to events; stop it with [`unsubscribe`](Self::unsubscribe).
pub struct CallbackSubscription {
    sub: Arc<EventSubscription>,
    dispatch: Subscription,
    client: Weak<BlockingClient>,
    /// The event whose callback is running, when auto-ack will settle it.
    current: Arc<Mutex<Option<u64>>>,
    /// Closed by unsubscribe: the feed reserves nothing more.
    permits: Arc<Semaphore>,
}

impl CallbackSubscription {
    /// Subscribes `events` (of `client`) to `event_name` with options
    /// `auto_ack`, `ack_wait_ms`; `callback` runs on a library thread.
    pub fn start<F>(
        client: &Arc<BlockingClient>,
        events: &Events,
        event_name: &str,
        opts: &Options,
        mut callback: F,
    ) -> Result<CallbackSubscription>
    where
        F: FnMut(&Event) + Send + 'static,
    {
        let sopts = SubscribeOptions::from_options(opts)?;
        let sub = Arc::new(client.block_on(events.subscribe(event_name, sopts))?);
        // One permit: the feed reserves the next event once the callback of
        // the previous one has returned.
        let permits = Arc::new(Semaphore::new(1));
        let feed = futures::stream::unfold((sub.clone(), permits.clone()), |(sub, permits)| async move {
            match permits.acquire().await {
                Ok(p) => p.forget(),
                Err(_) => return None,
            }
            let next = loop {
                match sub.next(Duration::from_secs(3600)).await {
                    Ok(Some(ev)) => break Ok(ev),
                    Ok(None) => continue,
                    Err(e) => break Err(e),
                }
            };
            if permits.is_closed() {
                // Unsubscribed while this event was being reserved: hand it
                // back now rather than after ack_wait.
                if next.is_ok() {
                    let _ = sub.release(None).await;
                }
                return None;
            }
            Some((next, (sub, permits)))
        });
        let weak = Arc::downgrade(client);
        let auto_ack = sopts.auto_ack;
        let settle_sub = sub.clone();
        let settle_client = weak.clone();
        let current: Arc<Mutex<Option<u64>>> = Arc::default();
        let delivering = current.clone();
        let delivery = EventDelivery {
            callback: move |ev: &Event| {
                *delivering.lock().unwrap() = auto_ack.then_some(ev.id);
                callback(ev);
                *delivering.lock().unwrap() = None;
                if auto_ack {
                    if let Some(c) = settle_client.upgrade() {
                        if let Err(e) = c.block_on(settle_sub.settle(ev.id)) {
                            tracing::warn!(event = ev.id, error = %e, "auto-ack failed; the event will be redelivered");
                        }
                    }
                }
            },
            permits: permits.clone(),
        };
        let dispatch = client.dispatch(feed, delivery)?;
        Ok(CallbackSubscription { sub, dispatch, client: weak, current, permits })
    }

    pub fn subscription(&self) -> &Arc<EventSubscription> {
        &self.sub
    }

    /// Runs one of the subscription's async operations on the client.
    pub fn run<T>(&self, f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        let c = self.client.upgrade().ok_or_else(|| Error::Closed("client is closed".into()))?;
        c.block_on(f)
    }

    /// Ok while delivering; the error that ended delivery, or else the last
    /// rejected (tampered) delivery, otherwise.
    pub fn status(&self) -> Result<()> {
        self.dispatch.status()?;
        match self.sub.rejected().1 {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Stops delivery (waits for a running callback unless called from it)
    /// and hands delivered, unsettled events back to the queue at once; an
    /// auto-acked event whose callback is unsubscribing is still acked.
    pub fn unsubscribe(&self) {
        self.permits.close();
        self.dispatch.stop();
        let keep = *self.current.lock().unwrap();
        if let Some(c) = self.client.upgrade() {
            if !c.is_closed() {
                if let Err(e) = c.block_on(self.sub.release(keep)) {
                    tracing::warn!(error = %e, "could not release unsettled events; they return after ack_wait");
                }
            }
        }
    }
}

struct EventDelivery<F> {
    callback: F,
    permits: Arc<Semaphore>,
}

impl<F: FnMut(&Event) + Send + 'static> Delivery<Event> for EventDelivery<F> {
    fn deliver(&mut self, ev: Event) {
        (self.callback)(&ev);
        self.permits.add_permits(1);
    }
}
