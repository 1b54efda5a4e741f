//! Key-value: set/get/delete/exists, list keys, compare-and-set, watch.

use std::ffi::{c_char, c_void, CString};

use super::args::*;
use super::call::{call, call_new, call_opt, call_out, new_out, open_handle, run};
use super::client::fm_client;
use super::stream::{fm_subscription, SUBSCRIPTIONS};
use super::{fm_status, guard, guard_value};
use crate::engine::KvEvent;
use crate::error::Error;

/// A list of strings returned by the library. Free with fm_strings_free.
pub struct fm_strings {
    items: Vec<CString>,
}

impl fm_strings {
    pub(crate) fn new(items: &[String]) -> fm_strings {
        fm_strings { items: items.iter().map(|k| c_string(k)).collect() }
    }
}

/// Kind of a KV change.
#[repr(C)]
#[derive(Clone, Copy)]
pub enum fm_kv_op {
    /// The key was set.
    FM_KV_PUT = 1,
    /// The key was deleted.
    FM_KV_DELETE = 2,
    /// The key's time to live ran out.
    FM_KV_EXPIRE = 3,
}

/// Called for each change under a watched prefix, in the order the changes
/// happened, on a library thread. `revision` is the new revision for PUT and
/// DELETE, and the revision of the value that expired for EXPIRE. `key` and
/// `value` are valid only during the call; value is empty (len 0) for
/// deletes and expiries.
pub type fm_kv_watch_cb = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        op: fm_kv_op,
        key: *const c_char,
        value: *const u8,
        len: usize,
        revision: u64,
    ),
>;

/// Sets `key` (1-1024 bytes of UTF-8) in `bucket` (created on first use) to
/// `len` bytes at `value` (copied; NULL allowed when len is 0). `ttl_ms` 0 =
/// never expires. The new revision goes to `*revision_out` (may be NULL).
/// Errors: INVALID_ARGUMENT, TOO_LARGE, CLOSED, broker errors.
#[no_mangle]
pub unsafe extern "C" fn fm_kv_set(
    client: *mut fm_client,
    bucket: *const c_char,
    key: *const c_char,
    value: *const u8,
    len: usize,
    ttl_ms: u64,
    revision_out: *mut u64,
) -> fm_status {
    call_opt(client, revision_out, async |c| {
        let (bucket, key) = (str_arg(bucket, "bucket")?, str_arg(key, "key")?);
        let value = copy_bytes(value, len, "value")?;
        c.client().kv_set(bucket, key, value, ttl_ms).await
    })
}

/// Compare-and-set: writes only if the key's revision is
/// `expected_revision` (0 = the key must not exist), else FM_ERR_CONFLICT.
#[no_mangle]
pub unsafe extern "C" fn fm_kv_cas(
    client: *mut fm_client,
    bucket: *const c_char,
    key: *const c_char,
    value: *const u8,
    len: usize,
    expected_revision: u64,
    revision_out: *mut u64,
) -> fm_status {
    call_opt(client, revision_out, async |c| {
        let (bucket, key) = (str_arg(bucket, "bucket")?, str_arg(key, "key")?);
        let value = copy_bytes(value, len, "value")?;
        c.client().kv_cas(bucket, key, value, expected_revision).await
    })
}

/// Gets a value. On FM_OK `*out` is owned by the caller (fm_buf_free).
/// FM_ERR_NOT_FOUND if absent or expired.
#[no_mangle]
pub unsafe extern "C" fn fm_kv_get(
    client: *mut fm_client,
    bucket: *const c_char,
    key: *const c_char,
    out: *mut *mut fm_buf,
) -> fm_status {
    fm_kv_get_entry(client, bucket, key, out, std::ptr::null_mut())
}

/// Like fm_kv_get, and also returns the key's revision (`revision_out` may
/// be NULL).
#[no_mangle]
pub unsafe extern "C" fn fm_kv_get_entry(
    client: *mut fm_client,
    bucket: *const c_char,
    key: *const c_char,
    value_out: *mut *mut fm_buf,
    revision_out: *mut u64,
) -> fm_status {
    guard(|| {
        let out = new_out(value_out, "value_out")?;
        let entry = run(client, async |c| c.client().kv_get(str_arg(bucket, "bucket")?, str_arg(key, "key")?).await)?;
        write_opt(revision_out, entry.revision);
        *out = to_c(fm_buf { data: entry.value });
        Ok(())
    })
}

/// Deletes a key. FM_OK also when it was absent.
#[no_mangle]
pub unsafe extern "C" fn fm_kv_delete(client: *mut fm_client, bucket: *const c_char, key: *const c_char) -> fm_status {
    call(client, async |c| c.client().kv_delete(str_arg(bucket, "bucket")?, str_arg(key, "key")?).await.map(|_| ()))
}

/// Whether a live (unexpired) key exists, into `*out`.
#[no_mangle]
pub unsafe extern "C" fn fm_kv_exists(
    client: *mut fm_client,
    bucket: *const c_char,
    key: *const c_char,
    out: *mut bool,
) -> fm_status {
    call_out(client, out, async |c| c.client().kv_exists(str_arg(bucket, "bucket")?, str_arg(key, "key")?).await)
}

/// Live keys starting with `prefix` ("" or NULL = all), sorted. On FM_OK
/// `*out` is owned by the caller (fm_strings_free).
#[no_mangle]
pub unsafe extern "C" fn fm_kv_list_keys(
    client: *mut fm_client,
    bucket: *const c_char,
    prefix: *const c_char,
    out: *mut *mut fm_strings,
) -> fm_status {
    call_new(client, out, async |c| {
        let bucket = str_arg(bucket, "bucket")?;
        let prefix = opt_str_arg(prefix, "prefix")?.unwrap_or("");
        Ok(fm_strings::new(&c.client().kv_keys(bucket, prefix).await?))
    })
}

/// Number of strings (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn fm_strings_len(s: *const fm_strings) -> usize {
    guard_value(0, || s.as_ref().map_or(0, |s| s.items.len()))
}

/// String `i`, borrowed from `s`; NULL if out of range.
#[no_mangle]
pub unsafe extern "C" fn fm_strings_get(s: *const fm_strings, i: usize) -> *const c_char {
    guard_value(std::ptr::null(), || s.as_ref().and_then(|s| s.items.get(i)).map_or(std::ptr::null(), |c| c.as_ptr()))
}

/// Frees a string list. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn fm_strings_free(s: *mut fm_strings) {
    guard_value((), || drop(from_c(s)));
}

/// Watches changes to keys starting with `prefix` ("" or NULL = all) from
/// now on. `cb` runs on a library thread, in revision order, one call at a
/// time. A watcher more than 16384 changes behind is stopped (logged). On
/// FM_OK `*out` is owned by the caller: end it with fm_unsubscribe.
#[no_mangle]
pub unsafe extern "C" fn fm_kv_watch(
    client: *mut fm_client,
    bucket: *const c_char,
    prefix: *const c_char,
    cb: fm_kv_watch_cb,
    user_data: *mut c_void,
    out: *mut *mut fm_subscription,
) -> fm_status {
    open_handle(client, out, &SUBSCRIPTIONS, |c| {
        let bucket = str_arg(bucket, "bucket")?;
        let prefix = opt_str_arg(prefix, "prefix")?.unwrap_or("");
        let cb = cb.ok_or_else(|| Error::invalid("callback is NULL"))?;
        let ud = UserData(user_data);
        c.kv_watch(bucket, prefix, move |ev: &KvEvent| {
            let ud = ud;
            let key = c_string(&ev.key);
            let op = match ev.op {
                crate::engine::KvOp::Put => fm_kv_op::FM_KV_PUT,
                crate::engine::KvOp::Delete => fm_kv_op::FM_KV_DELETE,
                crate::engine::KvOp::Expire => fm_kv_op::FM_KV_EXPIRE,
            };
            cb(ud.0, op, key.as_ptr(), ev.value.as_ptr(), ev.value.len(), ev.revision);
        })
    })
}
