//! A check that the streams open feeds read from still exist.
//!
//! A feed learns that its stream was deleted from the server's
//! stream-deleted advisory, but an advisory can be lost (the server sends it
//! while the stream shuts down, and a client reconnecting at that moment
//! misses it), and without it a feed on a deleted stream waits forever: the
//! ordered consumer retries re-creating itself without end. So the streams
//! that open feeds depend on are also checked together every few seconds,
//! one request per distinct stream, however many feeds read it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::watch;

use super::api::Js;
use crate::error::Error;

/// How often the watched streams are checked.
const CHECK_EVERY: Duration = Duration::from_secs(2);

type Watched = Mutex<HashMap<String, watch::Sender<bool>>>;

pub struct Existence {
    js: Js,
    watched: Arc<Watched>,
    started: std::sync::Once,
}

impl Existence {
    pub fn new(js: Js) -> Existence {
        Existence { js, watched: Arc::new(Mutex::new(HashMap::new())), started: std::sync::Once::new() }
    }

    /// A receiver whose value turns `true` once JetStream stream `name` is
    /// found missing. Call from within the engine's runtime.
    pub fn watch(&self, name: &str) -> watch::Receiver<bool> {
        self.started.call_once(|| {
            tokio::spawn(check_loop(self.js.clone(), Arc::downgrade(&self.watched)));
        });
        let mut watched = self.watched.lock().unwrap();
        match watched.get(name) {
            Some(tx) if !*tx.borrow() => tx.subscribe(),
            _ => {
                let (tx, rx) = watch::channel(false);
                watched.insert(name.to_owned(), tx);
                rx
            }
        }
    }
}

/// Until the engine goes away: drops streams no feed watches any more and
/// marks the ones that no longer exist. A failed check (link down) says
/// nothing and is tried again next round.
async fn check_loop(js: Js, watched: Weak<Watched>) {
    loop {
        tokio::time::sleep(CHECK_EVERY).await;
        let Some(watched) = watched.upgrade() else { return };
        let names: Vec<String> = {
            let mut map = watched.lock().unwrap();
            map.retain(|_, tx| tx.receiver_count() > 0 && !*tx.borrow());
            map.keys().cloned().collect()
        };
        for name in names {
            if let Err(Error::NotFound(_)) = js.stream_info(&name).await {
                if let Some(tx) = watched.lock().unwrap().remove(&name) {
                    let _ = tx.send(true);
                }
            }
        }
    }
}
