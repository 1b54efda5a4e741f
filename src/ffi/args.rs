//! Every raw-pointer conversion of the C ABI, in one place.

use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use once_cell::sync::Lazy;

use crate::blocking::BlockingClient;
use crate::error::{Error, Result};

/// A borrowed C string as UTF-8; NULL or invalid UTF-8 is InvalidArgument.
pub unsafe fn str_arg<'a>(ptr: *const c_char, what: &str) -> Result<&'a str> {
    if ptr.is_null() {
        return Err(Error::invalid(format!("{what} is NULL")));
    }
    CStr::from_ptr(ptr).to_str().map_err(|_| Error::invalid(format!("{what} is not valid UTF-8")))
}

/// Like `str_arg`, but NULL is `None`.
pub unsafe fn opt_str_arg<'a>(ptr: *const c_char, what: &str) -> Result<Option<&'a str>> {
    if ptr.is_null() {
        Ok(None)
    } else {
        str_arg(ptr, what).map(Some)
    }
}

/// A borrowed byte range; NULL is allowed only with length 0.
pub unsafe fn bytes_arg<'a>(ptr: *const u8, len: usize, what: &str) -> Result<&'a [u8]> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(Error::invalid(format!("{what} is NULL but its length is {len}")));
    }
    if len > isize::MAX as usize {
        return Err(Error::invalid(format!("{what} length {len} is too large")));
    }
    Ok(std::slice::from_raw_parts(ptr, len))
}

pub unsafe fn copy_bytes(ptr: *const u8, len: usize, what: &str) -> Result<Bytes> {
    bytes_arg(ptr, len, what).map(Bytes::copy_from_slice)
}

/// A borrowed struct pointer that must not be NULL.
pub unsafe fn ref_arg<'a, T>(ptr: *const T, what: &str) -> Result<&'a T> {
    ptr.as_ref().ok_or_else(|| Error::invalid(format!("{what} is NULL")))
}

/// An out-parameter that must not be NULL.
pub unsafe fn out_arg<'a, T>(ptr: *mut T, what: &str) -> Result<&'a mut T> {
    ptr.as_mut().ok_or_else(|| Error::invalid(format!("{what} (out-parameter) is NULL")))
}

/// Writes through a nullable out-parameter.
pub unsafe fn write_opt<T>(ptr: *mut T, value: T) {
    if let Some(p) = ptr.as_mut() {
        *p = value;
    }
}

/// Hands an owned value to C.
pub fn to_c<T>(value: T) -> *mut T {
    Box::into_raw(Box::new(value))
}

/// Takes back a value handed out by `to_c`; NULL gives `None`.
pub unsafe fn from_c<T>(ptr: *mut T) -> Option<Box<T>> {
    (!ptr.is_null()).then(|| Box::from_raw(ptr))
}

/// C user data, moved to the library threads that call back with it.
#[derive(Clone, Copy)]
pub struct UserData(pub *mut c_void);

// SAFETY: the C caller promises that user_data may be used from the library
// threads named in the header; we only pass it back.
unsafe impl Send for UserData {}
unsafe impl Sync for UserData {}

/// Live clients by handle address. A handle is only a key: it is never
/// dereferenced, so a call on a closed handle is FM_ERR_CLOSED, not a
/// use-after-free, and a call racing with close keeps its client alive.
static CLIENTS: Lazy<RwLock<HashMap<usize, Arc<BlockingClient>>>> = Lazy::new(Default::default);

pub fn register_client<T>(handle: *mut T, client: Arc<BlockingClient>) {
    CLIENTS.write().unwrap().insert(handle as usize, client);
}

pub fn unregister_client<T>(handle: *mut T) -> Option<Arc<BlockingClient>> {
    CLIENTS.write().unwrap().remove(&(handle as usize))
}

pub fn client_arg<T>(handle: *const T) -> Result<Arc<BlockingClient>> {
    if handle.is_null() {
        return Err(Error::invalid("client is NULL"));
    }
    CLIENTS
        .read()
        .unwrap()
        .get(&(handle as usize))
        .cloned()
        .ok_or_else(|| Error::Closed("client is closed (or not a client handle)".into()))
}
