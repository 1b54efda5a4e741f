//! The C ABI. This layer only converts, checks and forwards to
//! [`crate::blocking::BlockingClient`]: every entry point runs inside
//! `guard` (no panic crosses the boundary, errors become an `fm_status`
//! plus a thread-local message), and all raw-pointer plumbing lives in
//! [`args`].

#![allow(non_camel_case_types)]
#![allow(clippy::missing_safety_doc)]

pub mod args;
mod call;
pub mod client;
pub mod events;
pub(crate) mod handles;
pub mod identity;
pub mod kv;
pub mod metrics;
pub mod options;
mod pull;
pub mod queue;
pub mod resources;
pub mod rules;
pub mod store;
pub mod stream;
pub mod tiers;
pub mod tiers_async;

use std::cell::{Cell, RefCell};
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Once, OnceLock};

use crate::error::{Error, Status};

/// Result code of every fallible call: `FM_OK` (0) or one of `FM_ERR_*`
/// (the constants of `fm_status_code`).
pub type fm_status = i32;

/// Success, as an `fm_status`.
pub(crate) const OK: fm_status = Status::FM_OK.code();

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
    /// Set while an entry point runs: its panics are reported through the
    /// status and fm_last_error, not printed on the host's stderr.
    static IN_ENTRY_POINT: Cell<bool> = const { Cell::new(false) };
}

/// Wraps the process panic hook once, so it stays quiet for panics that the
/// guard below turns into FM_ERR_INTERNAL, and behaves as before elsewhere.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_ENTRY_POINT.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

/// Records `msg` as this thread's last error detail.
pub(crate) fn set_last_error(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = c);
}

fn clear_last_error() {
    LAST_ERROR.with(|e| {
        let mut e = e.borrow_mut();
        if !e.as_bytes().is_empty() {
            *e = CString::default();
        }
    });
}

/// Converts an error into its status, keeping the message for fm_last_error.
pub(crate) fn fail(err: &Error) -> fm_status {
    set_last_error(&err.to_string());
    err.code()
}

/// The panic boundary around every status-returning entry point.
pub(crate) fn guard(f: impl FnOnce() -> crate::Result<()>) -> fm_status {
    clear_last_error();
    match boundary(f) {
        Ok(Ok(())) => OK,
        Ok(Err(e)) => fail(&e),
        Err(what) => {
            set_last_error(&format!("internal error: panic in flowmesh: {what}"));
            Status::FM_ERR_INTERNAL.code()
        }
    }
}

/// The panic boundary for entry points that return a value, not a status
/// (accessors, `*_free`): a panic gives `fallback`, with fm_last_error
/// saying why, and prints nothing. These calls cannot fail otherwise, so
/// they leave the last error alone: C code often frees its options or
/// result objects between a failed call and reading fm_last_error.
pub(crate) fn guard_value<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    match boundary(f) {
        Ok(v) => v,
        Err(what) => {
            set_last_error(&format!("internal error: panic in flowmesh: {what}"));
            fallback
        }
    }
}

/// The one panic boundary of both guards: marks the entry point (so the
/// panic hook stays quiet) and catches a panic, returning its message.
fn boundary<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    install_panic_hook();
    let outer = IN_ENTRY_POINT.with(|g| g.replace(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    IN_ENTRY_POINT.with(|g| g.set(outer));
    result.map_err(|panic| {
        panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into())
    })
}

/// The crate's version (Cargo.toml), the one every package carries.
static VERSION: &CStr = match CStr::from_bytes_with_nul(concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes()) {
    Ok(v) => v,
    Err(_) => panic!("CARGO_PKG_VERSION holds a NUL byte"),
};

/// The library version, "MAJOR.MINOR.PATCH". Static storage: never free it.
#[no_mangle]
pub extern "C" fn fm_version() -> *const c_char {
    VERSION.as_ptr()
}

/// The name of a status code ("FM_ERR_NOT_FOUND"), or "FM_ERR_UNKNOWN".
/// Static storage: never free it. Thread-safe.
#[no_mangle]
pub extern "C" fn fm_status_str(status: fm_status) -> *const c_char {
    static NAMES: OnceLock<Vec<CString>> = OnceLock::new();
    let names =
        NAMES.get_or_init(|| Status::all().iter().map(|s| CString::new(s.name()).unwrap_or_default()).collect());
    usize::try_from(status).ok().and_then(|i| names.get(i)).map_or(c"FM_ERR_UNKNOWN".as_ptr(), |s| s.as_ptr())
}

/// This thread's last error detail, "" if the last call succeeded. Owned by
/// the library; valid until this thread's next fm_ call. Inside a publish
/// callback with a failed status it describes that failure.
#[no_mangle]
pub extern "C" fn fm_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ptr())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_match_error_codes() {
        let errors = [
            Error::InvalidArgument(String::new()),
            Error::NotFound(String::new()),
            Error::Timeout(String::new()),
            Error::Disconnected(String::new()),
            Error::Unauthorized(String::new()),
            Error::Closed(String::new()),
            Error::AlreadyExists(String::new()),
            Error::Conflict(String::new()),
            Error::TooLarge(String::new()),
            Error::Unavailable(String::new()),
            Error::Internal(String::new()),
        ];
        for e in errors {
            let name = unsafe { CStr::from_ptr(fm_status_str(e.code())) }.to_str().unwrap();
            let variant = format!("{e:?}");
            let snake: String = variant
                .split('(')
                .next()
                .unwrap()
                .chars()
                .flat_map(|c| if c.is_uppercase() { vec!['_', c] } else { vec![c.to_ascii_uppercase()] })
                .collect();
            assert_eq!(name, format!("FM_ERR{snake}"));
        }
        assert_eq!(unsafe { CStr::from_ptr(fm_status_str(0)) }.to_str().unwrap(), "FM_OK");
        assert_eq!(unsafe { CStr::from_ptr(fm_status_str(-1)) }.to_str().unwrap(), "FM_ERR_UNKNOWN");
        assert_eq!(unsafe { CStr::from_ptr(fm_status_str(99)) }.to_str().unwrap(), "FM_ERR_UNKNOWN");
    }

    #[test]
    fn panics_in_value_entry_points_give_the_fallback_quietly() {
        set_last_error("detail of the failed call");
        assert_eq!(guard_value(7, || 1), 1);
        assert_eq!(unsafe { CStr::from_ptr(fm_last_error()) }.to_bytes(), b"detail of the failed call");
        assert_eq!(guard_value(7, || -> i32 { panic!("accessor") }), 7);
        let msg = unsafe { CStr::from_ptr(fm_last_error()) }.to_str().unwrap().to_owned();
        assert!(msg.contains("accessor"), "{msg}");
    }

    #[test]
    fn panics_become_internal() {
        let s = guard(|| panic!("boom"));
        assert_eq!(s, Status::FM_ERR_INTERNAL.code());
        let msg = unsafe { CStr::from_ptr(fm_last_error()) }.to_str().unwrap().to_owned();
        assert!(msg.contains("boom"), "{msg}");
    }
}
