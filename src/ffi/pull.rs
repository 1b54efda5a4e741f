//! Pull-mode subscriptions of the JSON APIs (store live queries, rules
//! topics): one handle per subscription, a next with a timeout, and an
//! unsubscribe that wakes a next waiting on another thread.

use std::ffi::c_char;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::args::client_arg;
use super::call::{new_out, text_out};
use super::client::fm_client;
use super::handles::Handles;
use super::store::store_guard;
use super::{fm_status, guard, OK};
use crate::error::Error;
use crate::store::{StoreError, StoreResult};

/// A subscription of the core that yields results one at a time.
pub(super) trait Source {
    type Item;
    /// The next result; None once the subscription ended (its client closed).
    async fn next(&mut self) -> Option<StoreResult<Self::Item>>;
}

impl Source for crate::store::Subscription {
    type Item = Arc<Value>;
    async fn next(&mut self) -> Option<StoreResult<Arc<Value>>> {
        crate::store::Subscription::next(self).await
    }
}

impl Source for crate::rules::Subscription {
    type Item = (String, Value);
    async fn next(&mut self) -> Option<StoreResult<(String, Value)>> {
        crate::rules::Subscription::next(self).await
    }
}

/// What a subscription handle stands for.
pub(super) struct Pull<S> {
    /// The client handle: each call looks it up, so after fm_client_close
    /// the subscription answers FM_ERR_CLOSED.
    client: usize,
    sub: tokio::sync::Mutex<Option<S>>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl<S> Pull<S> {
    pub(super) fn new(client: *mut fm_client, sub: S) -> Pull<S> {
        let (stop, _) = tokio::sync::watch::channel(false);
        Pull { client: client as usize, sub: tokio::sync::Mutex::new(Some(sub)), stop }
    }
}

/// The next result of the subscription `sub` of `table`, waiting up to
/// `timeout_ms`: `render`ed into `*out` (named `out_name`), NULL when none
/// came in time; a failed result as JSON in fm_last_error().
pub(super) unsafe fn pull_next<S: Source, H>(
    table: &Handles<Pull<S>>,
    sub: *mut H,
    timeout_ms: u64,
    out: *mut *mut c_char,
    out_name: &str,
    render: impl FnOnce(S::Item) -> String,
) -> fm_status {
    let ended = || format!("{} ended", table.kind());
    store_guard(|| {
        let out = new_out(out, out_name)?;
        let live = table.get(sub)?;
        let c = client_arg(live.client as *const fm_client)?;
        let mut stopped = live.stop.subscribe();
        let got = c.block_on(async {
            let mut guard = live.sub.lock().await;
            let Some(s) = guard.as_mut() else { return Err(Error::Closed(ended())) };
            tokio::select! {
                next = tokio::time::timeout(Duration::from_millis(timeout_ms), s.next()) => Ok(next),
                _ = stopped.wait_for(|stop| *stop) => Err(Error::Closed(ended())),
            }
        })?;
        match got {
            Err(_elapsed) => Ok(()),
            Ok(None) => Err(StoreError::new("CLOSED", format!("{} (its client closed)", ended()))),
            Ok(Some(Err(e))) => Err(e),
            Ok(Some(Ok(item))) => {
                *out = text_out(render(item));
                Ok(())
            }
        }
    })
}

/// Ends the subscription `sub` of `table` and frees it, after waking (and
/// waiting for) a next running on another thread. NULL is a no-op;
/// FM_ERR_CLOSED if it was ended already.
pub(super) fn pull_end<S, H>(table: &Handles<Pull<S>>, sub: *mut H) -> fm_status {
    if sub.is_null() {
        return OK;
    }
    guard(|| {
        let live: Arc<Pull<S>> = table.remove(sub).ok_or_else(|| Error::Closed(format!("{} ended", table.kind())))?;
        live.stop.send_replace(true);
        let ended = live.sub.blocking_lock().take();
        drop(ended);
        Ok(())
    })
}
