//! The prologue every client entry point shares: the panic boundary, the
//! client handle lookup, the out-parameter checks and running the operation
//! to completion on the caller's thread.
//!
//! Arguments are converted inside the operation, after the handle lookup,
//! so a call on a closed client reports FM_ERR_CLOSED whatever else is wrong
//! with it; a required out-parameter is checked (and an object
//! out-parameter cleared to NULL) before anything else.

use std::ffi::{c_char, CString};
use std::sync::Arc;

use super::args::{client_arg, out_arg, str_arg, to_c, write_opt};
use super::handles::Handles;
use super::{fm_status, guard};
use crate::blocking::BlockingClient;
use crate::error::{Error, Result};

/// Runs `op` on the client behind `handle`, blocking until it completes.
/// The building block of the entry points below, for bodies that need more.
pub(crate) fn run<H, T>(handle: *const H, op: impl AsyncFnOnce(&BlockingClient) -> Result<T>) -> Result<T> {
    let c = client_arg(handle)?;
    c.block_on(op(&c))
}

/// Like [`run`], for operations with their own error type (the store's
/// errors keep their codes and details for fm_last_error()).
pub(crate) fn run_as<H, T, E: From<Error>>(
    handle: *const H,
    op: impl AsyncFnOnce(&BlockingClient) -> std::result::Result<T, E>,
) -> std::result::Result<T, E> {
    let c = client_arg(handle)?;
    c.block_on(async { Ok(op(&c).await) })?
}

/// The body of an entry point that sends one request string and hands the
/// answer to the caller as a string (fm_string_free) through the required
/// `response_out`; `request_json` is read after the handle lookup.
pub(crate) unsafe fn request_out<H, E: From<Error>>(
    handle: *const H,
    request_json: *const c_char,
    response_out: *mut *mut c_char,
    op: impl AsyncFnOnce(&BlockingClient, &str) -> std::result::Result<String, E>,
) -> std::result::Result<(), E> {
    let out = new_out(response_out, "response_out")?;
    let answer = run_as(handle, async |c| op(c, str_arg(request_json, "request_json")?).await)?;
    *out = text_out(answer);
    Ok(())
}

/// An owned C string for the caller (fm_string_free). Callers pass JSON,
/// whose escaping leaves no NUL byte; NULL if one slipped in.
pub(crate) fn text_out(text: String) -> *mut c_char {
    CString::new(text).map_or(std::ptr::null_mut(), CString::into_raw)
}

/// An entry point on a client that does not block (registers a callback,
/// reads local state): the boundary and the handle lookup.
pub(crate) fn with_client<H>(handle: *const H, f: impl FnOnce(&BlockingClient) -> Result<()>) -> fm_status {
    guard(|| f(&*client_arg(handle)?))
}

/// An entry point that runs one operation and returns only its status.
pub(crate) fn call<H>(handle: *const H, op: impl AsyncFnOnce(&BlockingClient) -> Result<()>) -> fm_status {
    guard(|| run(handle, op))
}

/// An entry point whose result goes to a nullable out-parameter.
pub(crate) unsafe fn call_opt<H, T>(
    handle: *const H,
    out: *mut T,
    op: impl AsyncFnOnce(&BlockingClient) -> Result<T>,
) -> fm_status {
    guard(|| {
        write_opt(out, run(handle, op)?);
        Ok(())
    })
}

/// An entry point whose result goes to the required out-parameter `out`.
pub(crate) unsafe fn call_out<H, T>(
    handle: *const H,
    out: *mut T,
    op: impl AsyncFnOnce(&BlockingClient) -> Result<T>,
) -> fm_status {
    guard(|| {
        let out = out_arg(out, "out")?;
        *out = run(handle, op)?;
        Ok(())
    })
}

/// An entry point that hands a new object to the caller through the
/// required `out`: `*out` is NULL unless it succeeds.
pub(crate) unsafe fn call_new<H, T>(
    handle: *const H,
    out: *mut *mut T,
    op: impl AsyncFnOnce(&BlockingClient) -> Result<T>,
) -> fm_status {
    guard(|| {
        let out = new_out(out, "out")?;
        *out = to_c(run(handle, op)?);
        Ok(())
    })
}

/// An entry point that opens a long-lived object (a subscription) and
/// hands its handle from `table` to the caller through the required `out`.
pub(crate) unsafe fn open_handle<H, S, T>(
    handle: *const H,
    out: *mut *mut S,
    table: &Handles<T>,
    open: impl FnOnce(&Arc<BlockingClient>) -> Result<T>,
) -> fm_status {
    guard(|| {
        let out = new_out(out, "out")?;
        let c = client_arg(handle)?;
        *out = table.insert(open(&c)?);
        Ok(())
    })
}

/// A required object out-parameter, cleared to NULL so that it never
/// holds a stale pointer after a failed call.
pub(crate) unsafe fn new_out<'a, T>(out: *mut *mut T, what: &str) -> Result<&'a mut *mut T> {
    let out = out_arg(out, what)?;
    *out = std::ptr::null_mut();
    Ok(out)
}
