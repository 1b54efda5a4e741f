//! Connection-state listeners: each runs on its own library thread and gets
//! every transition in order, starting with the current state; the last one
//! it sees is `Closed`, when the client closes.

use std::sync::{Arc, Mutex};
use std::thread::{JoinHandle, ThreadId};

use crate::engine::connection::{ConnState, ConnectionState, StateChange};
use crate::error::{Error, Result};

/// More would only mean a thread each; one listener per concern is plenty.
const MAX_LISTENERS: usize = 16;

pub struct StateListeners {
    state: Arc<ConnectionState>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl StateListeners {
    pub fn new(state: Arc<ConnectionState>) -> StateListeners {
        StateListeners { state, threads: Mutex::new(Vec::new()) }
    }

    pub fn current(&self) -> ConnState {
        self.state.current()
    }

    pub fn add(&self, mut callback: impl FnMut(&StateChange) + Send + 'static) -> Result<()> {
        let mut threads = self.threads.lock().unwrap();
        if self.state.current() == ConnState::Closed {
            return Err(Error::Closed("client is closed".into()));
        }
        if threads.len() >= MAX_LISTENERS {
            return Err(Error::invalid(format!("at most {MAX_LISTENERS} state listeners per client")));
        }
        let changes = self.state.listen();
        let thread = std::thread::Builder::new()
            .name("flowmesh-state".into())
            .spawn(move || {
                crate::signals::block_sigpipe_on_this_thread();
                for change in changes {
                    callback(&change);
                }
            })
            .map_err(|e| Error::Internal(format!("spawn state thread: {e}")))?;
        threads.push(thread);
        Ok(())
    }

    /// Reports `Closed` and joins the listener threads (except the caller's
    /// own, when a state callback closes the client: it ends by itself).
    pub fn close(&self) {
        self.state.set(ConnState::Closed, None);
        let me: ThreadId = std::thread::current().id();
        for t in self.threads.lock().unwrap().drain(..) {
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
    }

    pub fn on_listener_thread(&self) -> bool {
        let me = std::thread::current().id();
        self.threads.lock().unwrap().iter().any(|t| t.thread().id() == me)
    }
}
