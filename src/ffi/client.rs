//! `fm_client`: connect, health, close.

use std::ffi::c_char;
use std::sync::Arc;

use super::args::{client_arg, out_arg, register_client, str_arg, unregister_client};
use super::options::{fm_options, options_or_default};
use super::{fm_status, guard, guard_value};
use crate::blocking::BlockingClient;

/// A connection to one engine (embedded or a broker). Thread-safe: every
/// function taking a client may be called from any thread at once.
pub struct fm_client {
    _private: u8,
}

/// Connects to `url`: "mem://", "mem://name" (shared in this process),
/// "file:///abs/dir" (durable), "grpc://host:port", "grpcs://host:port".
/// `opts` may be NULL; it is copied, the caller still frees it. On FM_OK
/// `*out` is a new client owned by the caller (free with fm_client_close).
/// Returns FM_ERR_INVALID_ARGUMENT (NULL, bad URL, option not for connect),
/// FM_ERR_UNAVAILABLE (directory locked by another process, broker
/// unreachable), FM_ERR_TIMEOUT, FM_ERR_UNAUTHORIZED, FM_ERR_INTERNAL.
#[no_mangle]
pub unsafe extern "C" fn fm_client_connect(
    url: *const c_char,
    opts: *const fm_options,
    out: *mut *mut fm_client,
) -> fm_status {
    guard(|| {
        let out = out_arg(out, "out")?;
        *out = std::ptr::null_mut();
        let url = str_arg(url, "url")?;
        let client = BlockingClient::connect(url, &options_or_default(opts))?;
        let handle = Box::into_raw(Box::new(fm_client { _private: 0 }));
        register_client(handle, Arc::new(client));
        *out = handle;
        Ok(())
    })
}

/// FM_OK if the engine answers; FM_ERR_UNAVAILABLE / FM_ERR_DISCONNECTED if
/// not; FM_ERR_CLOSED after close.
#[no_mangle]
pub unsafe extern "C" fn fm_client_health(client: *mut fm_client) -> fm_status {
    guard(|| client_arg(client)?.health())
}

/// FM_OK if the engine is ready to serve (a broker finished recovery).
#[no_mangle]
pub unsafe extern "C" fn fm_client_readiness(client: *mut fm_client) -> fm_status {
    guard(|| client_arg(client)?.ready())
}

/// Stops delivery, waits for running callbacks, finishes queued async
/// publishes (their callbacks run), joins every library thread and frees the
/// client. NULL is a no-op. After it returns no callback of this client
/// runs; calls with the stale handle return FM_ERR_CLOSED. Subscription
/// handles stay valid until fm_unsubscribe, which then just frees them.
#[no_mangle]
pub unsafe extern "C" fn fm_client_close(client: *mut fm_client) {
    guard_value((), || {
        if let Some(c) = unregister_client(client) {
            c.close();
            drop(Box::from_raw(client));
        }
    });
}
