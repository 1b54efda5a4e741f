//! fm_publish_with_async: fm_publish_with that returns at once and reports
//! through a callback, like fm_publish_async.

use std::ffi::{c_char, c_void};

use super::args::*;
use super::call::with_client;
use super::client::fm_client;
use super::fm_status;
use super::options::fm_options;
use super::stream::{completion, fm_publish_cb};
use super::tiers::publish_args;

/// Starts one publish to `subject` in the tier `opts` chooses (the keys and
/// the subject rule of fm_publish_with) and returns at once; `msg` and
/// `opts` are copied. `cb` (may be NULL) runs exactly once on a library
/// thread with the status and the position fm_publish_with would have
/// returned ({0, FM_OFFSET_NONE} for the memory tier); with a failed
/// status, fm_last_error() inside the callback says why. Many may be in
/// flight at once (no thread each); their callbacks do not keep issue
/// order. fm_flush and fm_client_close wait for them like for
/// fm_publish_async. Errors returned directly (then `cb` is not called):
/// INVALID_ARGUMENT (NULL, bad subject, unknown option or value),
/// TOO_LARGE, CLOSED.
#[no_mangle]
pub unsafe extern "C" fn fm_publish_with_async(
    client: *mut fm_client,
    subject: *const c_char,
    msg: *const fm_msg,
    opts: *const fm_options,
    cb: fm_publish_cb,
    user_data: *mut c_void,
) -> fm_status {
    with_client(client, |c| {
        let subject = str_arg(subject, "subject")?;
        let (record, opts) = publish_args(msg, opts)?;
        c.publish_with_async(subject, record, opts, completion(cb, user_data))
    })
}
