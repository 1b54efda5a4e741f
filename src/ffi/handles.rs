//! The handle policy of the C ABI, one for every handle type.
//!
//! - Long-lived objects shared between threads (clients, stream and KV
//!   subscriptions, event subscriptions) are handed out as *ids*, not
//!   addresses: a process-wide counter that never repeats, shown to C as an
//!   opaque pointer and never dereferenced. The library looks each id up in
//!   the table of its type. A call on a closed (or freed) handle therefore
//!   gets FM_ERR_CLOSED, never a use-after-free, and since no later object
//!   can get the same id, a stale handle can never act on a newer object.
//!   A call running while another thread closes the handle keeps its object
//!   alive until it returns.
//! - Result objects owned by one caller (fm_messages, fm_jobs, fm_job,
//!   fm_buf, fm_strings, fm_event, fm_options) are plain heap allocations:
//!   the caller frees each exactly once with its `*_free`, like `free()`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use crate::error::{Error, Result};

/// The next id; shared by every table, so a handle of one type is never
/// taken for one of another type either.
static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

/// The live objects of one handle type, by id.
pub(crate) struct Handles<T> {
    kind: &'static str,
    live: OnceLock<RwLock<HashMap<usize, Arc<T>>>>,
}

impl<T> Handles<T> {
    /// An empty table; `kind` names the type in error messages ("client").
    pub const fn new(kind: &'static str) -> Handles<T> {
        Handles { kind, live: OnceLock::new() }
    }

    /// The type's name in error messages.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    fn live(&self) -> &RwLock<HashMap<usize, Arc<T>>> {
        self.live.get_or_init(Default::default)
    }

    /// Registers `value` under a new id and returns that id as a handle.
    pub fn insert<H>(&self, value: T) -> *mut H {
        // Shifted so that handles look like aligned pointers (some binding
        // runtimes inspect pointer values); ids never wrap in practice.
        let handle = NEXT_ID.fetch_add(1, Ordering::Relaxed) << 4;
        self.live().write().unwrap().insert(handle, Arc::new(value));
        handle as *mut H
    }

    /// The object behind `handle`: InvalidArgument for NULL, Closed when it
    /// was removed (or never was a handle of this type).
    pub fn get<H>(&self, handle: *const H) -> Result<Arc<T>> {
        if handle.is_null() {
            return Err(Error::invalid(format!("{} is NULL", self.kind)));
        }
        self.live()
            .read()
            .unwrap()
            .get(&(handle as usize))
            .cloned()
            .ok_or_else(|| Error::Closed(format!("{} is closed (or not a {} handle)", self.kind, self.kind)))
    }

    /// Takes the object out of the table: later calls with `handle` get
    /// Closed. `None` for NULL or a handle already removed.
    pub fn remove<H>(&self, handle: *mut H) -> Option<Arc<T>> {
        if handle.is_null() {
            return None;
        }
        self.live().write().unwrap().remove(&(handle as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_never_reused() {
        let table: Handles<u32> = Handles::new("thing");
        let a: *mut u8 = table.insert(1);
        assert_eq!(*table.get(a).unwrap(), 1);
        assert!(table.remove(a).is_some());
        let b: *mut u8 = table.insert(2);
        assert_ne!(a, b);
        assert!(matches!(table.get(a), Err(Error::Closed(_))));
        assert!(table.remove(a).is_none());
        assert!(matches!(table.get(std::ptr::null::<u8>()), Err(Error::InvalidArgument(_))));
        assert_eq!(*table.get(b).unwrap(), 2);
    }
}
