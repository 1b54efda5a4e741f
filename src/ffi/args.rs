//! Every raw-pointer conversion of the C ABI, in one place: C strings and
//! byte ranges in, headers, messages and recipient lists in, owned buffers
//! and C strings out, user data, and the client handle lookup. The C types
//! used by several areas (fm_header, fm_msg, fm_buf) live here too.

use std::ffi::{c_char, c_void, CStr, CString};
use std::sync::Arc;

use bytes::Bytes;

use super::guard_value;
use super::handles::Handles;
use crate::blocking::BlockingClient;
use crate::engine::Record;
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

/// Copies a byte range (NULL only with length 0) into owned bytes.
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

/// A header: two borrowed, NUL-terminated UTF-8 strings.
#[repr(C)]
pub struct fm_header {
    /// Header name.
    pub key: *const c_char,
    /// Header value.
    pub value: *const c_char,
}

/// An outgoing message. Everything is borrowed for the duration of the call
/// (fm_publish_async copies before returning).
#[repr(C)]
pub struct fm_msg {
    /// The message body.
    pub payload: *const u8,
    /// Bytes at `payload`.
    pub payload_len: usize,
    /// Partition key; NULL = none (round robin).
    pub key: *const u8,
    /// Bytes at `key`.
    pub key_len: usize,
    /// Headers, `headers_len` of them; NULL = none.
    pub headers: *const fm_header,
    /// Number of headers at `headers`.
    pub headers_len: usize,
}

/// An owned byte buffer returned by the library. Free with fm_buf_free.
pub struct fm_buf {
    pub(crate) data: Bytes,
}

/// The bytes of `buf`, borrowed from it; length to `*len_out` (may be NULL).
#[no_mangle]
pub unsafe extern "C" fn fm_buf_data(buf: *const fm_buf, len_out: *mut usize) -> *const u8 {
    guard_value(std::ptr::null(), || match buf.as_ref() {
        Some(b) => {
            write_opt(len_out, b.data.len());
            b.data.as_ptr()
        }
        None => {
            write_opt(len_out, 0);
            std::ptr::null()
        }
    })
}

/// Frees a buffer. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn fm_buf_free(buf: *mut fm_buf) {
    guard_value((), || drop(from_c(buf)));
}

pub(crate) unsafe fn headers_arg(ptr: *const fm_header, len: usize) -> Result<Vec<(String, String)>> {
    if len == 0 {
        return Ok(Vec::new());
    }
    if ptr.is_null() {
        return Err(Error::invalid("headers is NULL but headers_len is not 0"));
    }
    std::slice::from_raw_parts(ptr, len)
        .iter()
        .map(|h| Ok((str_arg(h.key, "header key")?.to_owned(), str_arg(h.value, "header value")?.to_owned())))
        .collect()
}

pub(crate) unsafe fn record_arg(msg: *const fm_msg) -> Result<Record> {
    let m = ref_arg(msg, "msg")?;
    Ok(Record {
        payload: copy_bytes(m.payload, m.payload_len, "payload")?,
        key: if m.key.is_null() { None } else { Some(copy_bytes(m.key, m.key_len, "key")?) },
        headers: headers_arg(m.headers, m.headers_len)?,
        msg_id: None,
    })
}

/// C strings for a header list, and the fm_header array pointing into them.
pub(crate) struct OwnedHeaders {
    _strings: Vec<(CString, CString)>,
    pub array: Vec<fm_header>,
}

pub(crate) fn c_string(s: &str) -> CString {
    CString::new(s.replace('\0', "")).unwrap_or_default()
}

impl OwnedHeaders {
    pub fn new(headers: &[(String, String)]) -> OwnedHeaders {
        let strings: Vec<(CString, CString)> = headers.iter().map(|(k, v)| (c_string(k), c_string(v))).collect();
        let array = strings.iter().map(|(k, v)| fm_header { key: k.as_ptr(), value: v.as_ptr() }).collect();
        OwnedHeaders { _strings: strings, array }
    }
}

/// An array of `n` >= 1 recipient app ids.
pub(crate) unsafe fn recipients_arg<'a>(recipients: *const *const c_char, n: usize) -> Result<Vec<&'a str>> {
    if n == 0 {
        return Err(Error::invalid("an event needs at least one recipient (n is 0)"));
    }
    if recipients.is_null() {
        return Err(Error::invalid("recipients is NULL but n is not 0"));
    }
    std::slice::from_raw_parts(recipients, n).iter().map(|r| str_arg(*r, "recipient")).collect()
}

/// C user data, moved to the library threads that call back with it.
#[derive(Clone, Copy)]
pub struct UserData(pub *mut c_void);

// SAFETY: the C caller promises that user_data may be used from the library
// threads named in the header; we only pass it back.
unsafe impl Send for UserData {}
unsafe impl Sync for UserData {}

/// Live clients (see [`super::handles`]).
static CLIENTS: Handles<BlockingClient> = Handles::new("client");

/// Registers a new client; returns its handle.
pub fn register_client<H>(client: BlockingClient) -> *mut H {
    CLIENTS.insert(client)
}

/// Takes a client out of the table; later calls with `handle` get FM_ERR_CLOSED.
pub fn unregister_client<H>(handle: *mut H) -> Option<Arc<BlockingClient>> {
    CLIENTS.remove(handle)
}

/// The client behind a handle: FM_ERR_INVALID_ARGUMENT for NULL,
/// FM_ERR_CLOSED after fm_client_close.
pub fn client_arg<H>(handle: *const H) -> Result<Arc<BlockingClient>> {
    CLIENTS.get(handle)
}
