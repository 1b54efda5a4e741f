//! `fm_options`: string key/value settings for connect, subscribe and stream
//! creation. Unknown keys and malformed values are refused when set.

use std::ffi::c_char;

use super::args::{from_c, out_arg, str_arg, to_c};
use super::{fm_status, guard, guard_value};
use crate::options::Options;

/// An options set. Create with fm_options_new, free with fm_options_free.
/// Not thread-safe: use one set from one thread at a time.
pub struct fm_options {
    pub(crate) inner: Options,
}

/// Borrows the options behind a nullable pointer (NULL = defaults).
pub(crate) unsafe fn options_or_default(opts: *const fm_options) -> Options {
    opts.as_ref().map(|o| o.inner.clone()).unwrap_or_default()
}

/// A new, empty options set. The caller owns it and frees it with
/// fm_options_free. Returns NULL only if memory is exhausted.
#[no_mangle]
pub extern "C" fn fm_options_new() -> *mut fm_options {
    guard_value(std::ptr::null_mut(), || to_c(fm_options { inner: Options::new() }))
}

/// Sets `key` to `value` (both borrowed, copied). Keys: see docs/ABI.md
/// and the README. Returns FM_OK, or FM_ERR_INVALID_ARGUMENT for a NULL
/// argument, invalid UTF-8, an unknown key or a value that does not parse.
#[no_mangle]
pub unsafe extern "C" fn fm_options_set(opts: *mut fm_options, key: *const c_char, value: *const c_char) -> fm_status {
    guard(|| {
        let opts = out_arg(opts, "opts")?;
        opts.inner.set(str_arg(key, "key")?, str_arg(value, "value")?)
    })
}

/// Frees an options set. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn fm_options_free(opts: *mut fm_options) {
    guard_value((), || drop(from_c(opts)));
}
