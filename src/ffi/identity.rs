//! Identity: users, sessions, roles, ACL, ownership, audit queries of a
//! broker started with --identity, as JSON requests; the session token the
//! client sends.

use std::ffi::c_char;

use super::args::*;
use super::call::{request_out, with_client};
use super::client::fm_client;
use super::{fm_status, guard};

/// Runs one identity request on a broker started with `--identity`: a JSON
/// object with a `type` and that request's fields, e.g.
/// `{"type": "identity.login", "username": "alice", "password": "..."}`
/// (every type and its fields: docs/SECURITY.md, "Identity"). On FM_OK
/// `*response_out` is the answer as JSON (`null` for requests without
/// one), owned by the caller (fm_string_free). A successful
/// `identity.login`, `identity.login_with_secret` or `auth.login` makes the
/// client send that session (or token) on every later call; a logout goes
/// back to the connect option `token`. Errors: FM_ERR_INVALID_ARGUMENT
/// (NULL, not UTF-8, not a JSON object, unknown type, missing or bad
/// fields), FM_ERR_UNAUTHORIZED (no session, wrong password or secret,
/// expired or revoked session, disabled user, missing permission; the
/// refusal is audited), FM_ERR_NOT_FOUND, FM_ERR_ALREADY_EXISTS,
/// FM_ERR_UNAVAILABLE (an embedded engine, or a broker without
/// `--identity`), FM_ERR_CLOSED after fm_client_close.
#[no_mangle]
pub unsafe extern "C" fn fm_identity_call(
    client: *mut fm_client,
    request_json: *const c_char,
    response_out: *mut *mut c_char,
) -> fm_status {
    guard(|| request_out(client, request_json, response_out, async |c, request| c.client().identity_raw(request).await))
}

/// Sends `token` (a session token from a login answer, or an access-file
/// token) as the bearer token of every later call of `client`; NULL goes
/// back to the connect option `token`. FM_ERR_INVALID_ARGUMENT for an empty
/// or non-ASCII token; FM_ERR_UNAVAILABLE on an embedded engine.
#[no_mangle]
pub unsafe extern "C" fn fm_client_set_token(client: *mut fm_client, token: *const c_char) -> fm_status {
    with_client(client, |c| {
        let token = opt_str_arg(token, "token")?;
        c.client().set_token(token)
    })
}
