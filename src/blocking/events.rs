//! Callback delivery of events on the blocking client: the same dispatcher
//! thread machinery as `fm_subscribe`, fed one event at a time. The feed
//! reserves the next event only after the handler of the previous one
//! finished (its callback returned, or with `async_handler` the binding
//! called [`CallbackSubscription::done`]), so an event's ack_wait clock never
//! runs while it sits in a buffer. What happens then is the core's auto-ack
//! rule, [`EventSubscription::handled`].

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
    /// The event being handled: delivered, its handler not finished.
    current: Arc<Mutex<Option<u64>>>,
    /// Closed by unsubscribe: the feed reserves nothing more.
    permits: Arc<Semaphore>,
    /// Handlers finish with `done`, not when the callback returns.
    async_handler: bool,
}

impl CallbackSubscription {
    /// Subscribes `events` (of `client`) to `event_name` with options
    /// `auto_ack`, `ack_wait_ms`, `async_handler`; `callback` runs on a
    /// library thread.
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
        // One permit: the feed reserves the next event once the handler of
        // the previous one has finished.
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
        let async_handler = sopts.async_handler;
        let settle_sub = sub.clone();
        let settle_client = weak.clone();
        let current: Arc<Mutex<Option<u64>>> = Arc::default();
        let delivering = current.clone();
        let delivery = EventDelivery {
            callback: move |ev: &Event| {
                *delivering.lock().unwrap() = Some(ev.id);
                callback(ev);
                if !async_handler {
                    *delivering.lock().unwrap() = None;
                    handled(&settle_client, &settle_sub, ev.id, true);
                }
            },
            permits: (!async_handler).then(|| permits.clone()),
        };
        let dispatch = client.dispatch(feed, delivery)?;
        Ok(CallbackSubscription { sub, dispatch, client: weak, current, permits, async_handler })
    }

    /// Ends the handling of event `id` (`async_handler` subscriptions): the
    /// auto-ack rule applies with `ok`, then the next event is delivered.
    /// NotFound if `id` is not the event being handled.
    pub fn done(&self, id: u64, ok: bool) -> Result<()> {
        if !self.async_handler {
            return Err(Error::invalid(
                "this event subscription ends each handler when its callback returns (option async_handler is not set)",
            ));
        }
        {
            let mut current = self.current.lock().unwrap();
            if *current != Some(id) {
                return Err(Error::NotFound(format!("event {id} is not the event being handled on this subscription")));
            }
            *current = None;
        }
        let result = self.run(self.sub.handled(id, ok));
        self.permits.add_permits(1);
        result
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
    /// auto-acked event whose callback is unsubscribing is still acked. With
    /// `async_handler`, an event whose handler did not finish goes back too.
    pub fn unsubscribe(&self) {
        self.permits.close();
        self.dispatch.stop();
        let auto_acked = !self.async_handler && self.sub.options().auto_ack;
        let keep = if auto_acked { *self.current.lock().unwrap() } else { None };
        if let Some(c) = self.client.upgrade() {
            if !c.is_closed() {
                if let Err(e) = c.block_on(self.sub.release(keep)) {
                    tracing::warn!(error = %e, "could not release unsettled events; they return after ack_wait");
                }
            }
        }
    }
}

/// Applies the auto-ack rule once a handler finished.
fn handled(client: &Weak<BlockingClient>, sub: &EventSubscription, id: u64, ok: bool) {
    if let Some(c) = client.upgrade() {
        if let Err(e) = c.block_on(sub.handled(id, ok)) {
            tracing::warn!(event = id, error = %e, "auto-ack failed; the event will be redelivered");
        }
    }
}

struct EventDelivery<F> {
    callback: F,
    /// Released when the callback returns; `None` when `done` releases it.
    permits: Option<Arc<Semaphore>>,
}

impl<F: FnMut(&Event) + Send + 'static> Delivery<Event> for EventDelivery<F> {
    fn deliver(&mut self, ev: Event) {
        (self.callback)(&ev);
        if let Some(p) = &self.permits {
            p.add_permits(1);
        }
    }
}
