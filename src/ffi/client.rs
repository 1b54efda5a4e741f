//! `fm_client`: connect, health, close.

use std::ffi::{c_char, c_void};

use super::args::{client_arg, out_arg, register_client, str_arg, unregister_client, UserData};
use super::call::{new_out, with_client};
use super::options::{fm_options, options_or_default};
use super::{fm_status, guard, guard_value};
use crate::blocking::BlockingClient;
use crate::engine::connection::ConnState;

/// A connection to one engine (embedded or a broker). Thread-safe: every
/// function taking a client may be called from any thread at once. The
/// handle is an id, never dereferenced and never reused.
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
        let out = new_out(out, "out")?;
        let url = str_arg(url, "url")?;
        let client = BlockingClient::connect(url, &options_or_default(opts))?;
        *out = register_client(client);
        Ok(())
    })
}

/// FM_OK if the engine answers; FM_ERR_UNAVAILABLE / FM_ERR_DISCONNECTED if
/// not; FM_ERR_CLOSED after close.
#[no_mangle]
pub unsafe extern "C" fn fm_client_health(client: *mut fm_client) -> fm_status {
    with_client(client, |c| c.health())
}

/// FM_OK if the engine is ready to serve (a broker finished recovery).
#[no_mangle]
pub unsafe extern "C" fn fm_client_readiness(client: *mut fm_client) -> fm_status {
    with_client(client, |c| c.ready())
}

/// Stops delivery, waits for running callbacks, finishes queued async
/// publishes (their callbacks run), joins every library thread and frees the
/// client. NULL is a no-op. After it returns no callback of this client
/// runs; calls with the stale handle return FM_ERR_CLOSED (handles are never
/// reused, so it never reaches a client connected later). Subscription
/// handles stay valid until fm_unsubscribe, which then just frees them.
#[no_mangle]
pub unsafe extern "C" fn fm_client_close(client: *mut fm_client) {
    guard_value((), || {
        if let Some(c) = unregister_client(client) {
            super::rules::forget_client(client);
            super::store::forget_client(client);
            c.close();
        }
    });
}

/// The state of a client's link to its engine. Embedded engines are
/// CONNECTED until closed.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum fm_conn_state {
    /// Opening the first connection (fm_client_connect has not returned yet).
    FM_STATE_CONNECTING = 1,
    /// The broker answers.
    FM_STATE_CONNECTED = 2,
    /// The link was lost (a call failed, or a heartbeat went unanswered);
    /// reconnecting with backoff. Calls in flight failed with
    /// FM_ERR_DISCONNECTED; idempotent ones were retried once it came back.
    FM_STATE_RECONNECTING = 3,
    /// Gave up after `max_reconnect_attempts`: every call now fails with
    /// FM_ERR_DISCONNECTED; close the client and connect again.
    FM_STATE_DISCONNECTED = 4,
    /// fm_client_close was called: the last state a listener sees.
    FM_STATE_CLOSED = 5,
}

impl From<ConnState> for fm_conn_state {
    fn from(s: ConnState) -> Self {
        match s {
            ConnState::Connecting => fm_conn_state::FM_STATE_CONNECTING,
            ConnState::Connected => fm_conn_state::FM_STATE_CONNECTED,
            ConnState::Reconnecting => fm_conn_state::FM_STATE_RECONNECTING,
            ConnState::Disconnected => fm_conn_state::FM_STATE_DISCONNECTED,
            ConnState::Closed => fm_conn_state::FM_STATE_CLOSED,
        }
    }
}

/// Called on a library thread (one per listener) with each state change, in
/// order. `cause` is the status of the error that caused the change (FM_OK
/// if none) and `detail` its message or NULL; it is valid only during the
/// call. The callback may call any function of this client, including
/// fm_client_close (the listener then ends after this call).
pub type fm_state_cb =
    Option<unsafe extern "C" fn(user_data: *mut c_void, state: fm_conn_state, cause: fm_status, detail: *const c_char)>;

/// Adds a listener of connection state changes. It is first called with the
/// current state, then with every change in order, last with
/// FM_STATE_CLOSED when the client closes (fm_client_close joins the
/// listener's thread, so no call follows it). At most 16 listeners per
/// client. Returns FM_ERR_INVALID_ARGUMENT (NULL cb, too many listeners),
/// FM_ERR_CLOSED.
#[no_mangle]
pub unsafe extern "C" fn fm_client_on_state(
    client: *mut fm_client,
    cb: fm_state_cb,
    user_data: *mut c_void,
) -> fm_status {
    with_client(client, |c| {
        let Some(cb) = cb else {
            return Err(crate::Error::invalid("cb must not be NULL"));
        };
        let ud = UserData(user_data);
        c.on_state(move |change| {
            let ud = &ud;
            let (cause, detail) = match &change.cause {
                Some(e) => (e.code(), Some(super::args::c_string(e.message()))),
                None => (super::OK, None),
            };
            let detail_ptr = detail.as_ref().map_or(std::ptr::null(), |d| d.as_ptr());
            cb(ud.0, change.state.into(), cause, detail_ptr);
        })
    })
}

/// The client's current connection state, to `*out`. Returns
/// FM_ERR_INVALID_ARGUMENT (NULL), FM_ERR_CLOSED.
#[no_mangle]
pub unsafe extern "C" fn fm_client_state(client: *mut fm_client, out: *mut fm_conn_state) -> fm_status {
    guard(|| {
        let out = out_arg(out, "out")?;
        *out = client_arg(client)?.state().into();
        Ok(())
    })
}
