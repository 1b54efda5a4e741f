//! Live queries: `subscribe(query, params)` delivers the query's current
//! result at once and a fresh one after every change that alters it.
//!
//! Subscribers of the same query with the same parameters share one
//! evaluation (a group). Each store bucket with subscribed queries has one
//! KV watch on its records; a change marks only the groups reading that
//! bucket dirty, so its cost is proportional to the queries it touches. A
//! group's worker re-evaluates after a change (changes that arrive while it
//! evaluates are coalesced into one more evaluation), and sends the result
//! to its subscribers only when it differs from the last one: results come
//! in order and none is older than one already delivered.
//!
//! When a watch breaks for good (the broker restarted) it is opened again
//! with backoff and every group of the bucket is evaluated afresh.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio::sync::{mpsc, Notify};

use super::error::{StoreError, StoreResult};
use super::query::QueryDef;
use super::records;
use super::Store;

type GroupKey = (String, String);

/// What a subscriber receives: a result, or an error of an evaluation
/// (e.g. while the broker is unreachable; evaluation goes on).
pub type Update = StoreResult<Arc<Value>>;

#[derive(Default)]
pub(super) struct Hub {
    state: Mutex<HubState>,
}

#[derive(Default)]
struct HubState {
    groups: HashMap<GroupKey, Arc<Group>>,
    /// Store bucket → its watch task and the groups reading it.
    buckets: HashMap<String, (tokio::task::JoinHandle<()>, HashSet<GroupKey>)>,
    next_id: u64,
}

struct Group {
    def: QueryDef,
    params: Value,
    dirty: Notify,
    subs: Mutex<HashMap<u64, Sub>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

struct Sub {
    tx: mpsc::UnboundedSender<Update>,
    /// Generation of the last result sent (0 = none yet).
    seen: u64,
}

/// One subscription; dropping it (or [`Subscription::unsubscribe`]) ends it.
pub struct Subscription {
    /// Unique id of the subscription.
    pub id: String,
    rx: mpsc::UnboundedReceiver<Update>,
    hub: Weak<Hub>,
    key: GroupKey,
    num: u64,
}

impl Subscription {
    /// The next result (the first one is the result at subscribe time).
    pub async fn next(&mut self) -> Option<Update> {
        self.rx.recv().await
    }

    /// The next result if one is waiting.
    pub fn try_next(&mut self) -> Option<Update> {
        self.rx.try_recv().ok()
    }

    /// Ends the subscription (as dropping it does).
    pub fn unsubscribe(self) {}
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.remove(&self.key, self.num);
        }
    }
}

impl Hub {
    pub(super) async fn subscribe(
        self: &Arc<Self>,
        store: &Store,
        name: &str,
        params: Value,
    ) -> StoreResult<Subscription> {
        let def = store.query_def(name).await?;
        let params = if params.is_null() { Value::Object(Default::default()) } else { params };
        if !params.is_object() {
            return Err(StoreError::invalid("query parameters are a JSON object"));
        }
        // Fails now on missing parameters or a bad filter.
        let first = def.run(store, &params).await?;
        let key = (name.to_owned(), params.to_string());
        let (tx, rx) = mpsc::unbounded_channel();
        let (num, group) = {
            let mut st = self.state.lock().unwrap();
            st.next_id += 1;
            let num = st.next_id;
            let group = match st.groups.get(&key) {
                Some(g) => g.clone(),
                None => {
                    let g = Arc::new(Group {
                        def: def.clone(),
                        params: params.clone(),
                        dirty: Notify::new(),
                        subs: Mutex::new(HashMap::new()),
                        task: Mutex::new(None),
                    });
                    let worker = tokio::spawn(evaluate(store.clone(), Arc::downgrade(&g), Some(first.clone())));
                    *g.task.lock().unwrap() = Some(worker);
                    st.groups.insert(key.clone(), g.clone());
                    g
                }
            };
            let bucket = def.bucket.clone();
            let entry = st
                .buckets
                .entry(bucket.clone())
                .or_insert_with(|| (tokio::spawn(watch(store.clone(), Arc::downgrade(self), bucket)), HashSet::new()));
            entry.1.insert(key.clone());
            (num, group)
        };
        group.subs.lock().unwrap().insert(num, Sub { tx, seen: 0 });
        // The worker sends the current result to the new subscriber.
        group.dirty.notify_one();
        Ok(Subscription { id: format!("sub-{num}"), rx, hub: Arc::downgrade(self), key, num })
    }

    fn remove(&self, key: &GroupKey, num: u64) {
        let mut st = self.state.lock().unwrap();
        let Some(g) = st.groups.get(key).cloned() else { return };
        let empty = {
            let mut subs = g.subs.lock().unwrap();
            subs.remove(&num);
            subs.is_empty()
        };
        if !empty {
            return;
        }
        st.groups.remove(key);
        if let Some(t) = g.task.lock().unwrap().take() {
            t.abort();
        }
        let bucket = g.def.bucket.clone();
        if let Some((task, keys)) = st.buckets.get_mut(&bucket) {
            keys.remove(key);
            if keys.is_empty() {
                task.abort();
                st.buckets.remove(&bucket);
            }
        }
    }

    /// Marks every group reading `bucket` dirty.
    fn touch(&self, bucket: &str) {
        let st = self.state.lock().unwrap();
        if let Some((_, keys)) = st.buckets.get(bucket) {
            for k in keys {
                if let Some(g) = st.groups.get(k) {
                    g.dirty.notify_one();
                }
            }
        }
    }

    /// Live subscriptions, for stats.
    pub(super) fn count(&self) -> usize {
        let st = self.state.lock().unwrap();
        st.groups.values().map(|g| g.subs.lock().unwrap().len()).sum()
    }
}

/// A group's worker: evaluates after each wake-up, sends changed results.
async fn evaluate(store: Store, group: Weak<Group>, first: Option<Value>) {
    let mut generation = 0u64;
    let mut last: Option<Arc<Value>> = None;
    if let Some(v) = first {
        generation = 1;
        last = Some(Arc::new(v));
    }
    let mut failing = false;
    loop {
        let Some(g) = group.upgrade() else { return };
        g.dirty.notified().await;
        match g.def.run(&store, &g.params).await {
            Ok(v) => {
                failing = false;
                if last.as_deref() != Some(&v) {
                    generation += 1;
                    last = Some(Arc::new(v));
                }
            }
            Err(e) => {
                // Sent once per failing spell; retried until it works again.
                if !failing {
                    for s in g.subs.lock().unwrap().values() {
                        let _ = s.tx.send(Err(e.clone()));
                    }
                }
                failing = true;
                drop(g);
                tokio::time::sleep(Duration::from_millis(200)).await;
                if let Some(g) = group.upgrade() {
                    g.dirty.notify_one();
                }
                continue;
            }
        }
        let Some(current) = last.clone() else { continue };
        g.subs.lock().unwrap().retain(|_, s| {
            if s.seen == generation {
                return true;
            }
            s.seen = generation;
            s.tx.send(Ok(current.clone())).is_ok()
        });
    }
}

/// Watches a store bucket's records; re-opens a broken watch with backoff
/// and then has every group evaluated afresh.
async fn watch(store: Store, hub: Weak<Hub>, bucket: String) {
    let Ok(kv_bucket) = records::data_bucket(&bucket) else { return };
    let mut delay = Duration::from_millis(50);
    // Also on the first open: a change between a group's first evaluation
    // and the watch starting is not missed.
    let mut reopened = true;
    loop {
        match store.client.kv_watch(&kv_bucket, records::RECORD_PREFIX).await {
            Ok(mut events) => {
                delay = Duration::from_millis(50);
                if reopened {
                    // Changes may have happened while it was not watching.
                    match hub.upgrade() {
                        Some(h) => h.touch(&bucket),
                        None => return,
                    }
                }
                while let Some(ev) = events.next().await {
                    let Some(h) = hub.upgrade() else { return };
                    if ev.is_err() {
                        break;
                    }
                    h.touch(&bucket);
                }
            }
            Err(e) => tracing::debug!(bucket = %bucket, error = %e, "live query watch failed; retrying"),
        }
        reopened = true;
        if hub.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}
