//! Document store: JSON requests, live-query subscriptions.
//!
//! The store of docs/STORE.md as JSON strings: one request in, one result
//! out ([`Store::call`]), and pull subscriptions to live queries.
//!
//! Errors of these calls leave a JSON object in fm_last_error():
//! `{"code": "VALIDATION_ERROR", "message": ..., "details": [...]}`, so the
//! store's own codes and validation details survive the status mapping.

use std::collections::HashMap;
use std::ffi::{c_char, CString};
use std::sync::{Mutex, OnceLock};

use serde_json::{json, Value};

use super::args::*;
use super::call::{new_out, request_out, run_as};
use super::client::fm_client;
use super::handles::Handles;
use super::pull::{pull_end, pull_next, Pull};
use super::{fm_status, guard, guard_value, set_last_error, OK};
use crate::blocking::BlockingClient;
use crate::store::{Store, StoreError, StoreResult, Subscription};

/// A live query subscription (pull mode). End it with fm_store_unsubscribe.
/// The handle is an id, never dereferenced and never reused.
pub struct fm_store_subscription {
    _private: u8,
}

/// One store per client, so subscribers of the same query share one
/// evaluation; dropped by fm_client_close ([`forget_client`]).
fn stores() -> &'static Mutex<HashMap<usize, Store>> {
    static STORES: OnceLock<Mutex<HashMap<usize, Store>>> = OnceLock::new();
    STORES.get_or_init(Default::default)
}

pub(super) fn store_of(handle: *mut fm_client, client: &BlockingClient) -> Store {
    let mut stores = stores().lock().unwrap();
    let store = stores.entry(handle as usize).or_insert_with(|| Store::new(client.client().clone())).clone();
    // A call racing fm_client_close must not leave a store behind it.
    if client_arg(handle).is_err() {
        stores.remove(&(handle as usize));
    }
    store
}

/// Drops the store of a client being closed (it holds the engine open).
pub(crate) fn forget_client(handle: *mut fm_client) {
    let gone = stores().lock().unwrap().remove(&(handle as usize));
    drop(gone);
}

static LIVE: Handles<Pull<Subscription>> = Handles::new("store subscription");

/// Runs `f` at the panic boundary; a failure leaves its error as JSON in
/// fm_last_error().
pub(super) fn store_guard(f: impl FnOnce() -> StoreResult<()>) -> fm_status {
    let mut failure: Option<Value> = None;
    let status = guard(|| {
        f().map_err(|e| {
            let err = e.to_error();
            failure = Some(e.to_json());
            err
        })
    });
    if status != OK {
        let detail = failure.unwrap_or_else(|| {
            // A panic: guard left its message as plain text.
            let msg = unsafe { std::ffi::CStr::from_ptr(super::fm_last_error()) }.to_string_lossy().into_owned();
            json!({ "code": "INTERNAL", "message": msg })
        });
        set_last_error(&detail.to_string());
    }
    status
}

pub(super) unsafe fn json_arg(ptr: *const c_char, what: &str) -> StoreResult<Value> {
    parse_json(str_arg(ptr, what)?, what)
}

fn parse_json(text: &str, what: &str) -> StoreResult<Value> {
    serde_json::from_str(text).map_err(|e| StoreError::invalid(format!("{what} is not valid JSON: {e}")))
}

/// Runs `op` on the client (the shared prologue: the handle first, so a
/// closed client is FM_ERR_CLOSED whatever else is wrong); a store error
/// comes back whole, not just as its status.
pub(super) unsafe fn run_store<T>(
    client: *mut fm_client,
    op: impl AsyncFnOnce(&BlockingClient) -> StoreResult<T>,
) -> StoreResult<T> {
    run_as(client, op)
}

/// The JSON-call entry points (store, rules, procedures): `request_json`
/// parsed inside the call, `op`'s result as JSON in `*response_out`, errors
/// as JSON in fm_last_error().
pub(super) unsafe fn json_call(
    client: *mut fm_client,
    request_json: *const c_char,
    response_out: *mut *mut c_char,
    op: impl AsyncFnOnce(&BlockingClient, Value) -> StoreResult<Value>,
) -> fm_status {
    store_guard(|| {
        request_out(client, request_json, response_out, async |c, text| {
            let req = parse_json(text, "request_json")?;
            Ok(op(c, req).await?.to_string())
        })
    })
}

/// Runs one store request, a JSON object such as
/// `{"type": "store.insert", "bucket": "users", "data": {"name": "Ann"}}`
/// (every type and its fields: docs/STORE.md), on the client's tenant and
/// namespace. On FM_OK `*response_out` is the result as JSON (`null` for
/// requests without one), owned by the caller (fm_string_free). On error it
/// is NULL and fm_last_error() is a JSON object `{"code", "message",
/// "details"?}` with the store's code: FM_ERR_INVALID_ARGUMENT for NULL,
/// invalid UTF-8, invalid JSON, an unknown type or missing fields
/// (INVALID_ARGUMENT) and for a record breaking the bucket's schema
/// (VALIDATION_ERROR, with one `{field, message}` per failed field in
/// details); FM_ERR_NOT_FOUND (NOT_FOUND, BUCKET_NOT_DEFINED,
/// QUERY_NOT_DEFINED); FM_ERR_CONFLICT (a version check failed);
/// FM_ERR_ALREADY_EXISTS; FM_ERR_CLOSED after fm_client_close; broker
/// errors as elsewhere.
#[no_mangle]
pub unsafe extern "C" fn fm_store_call(
    client: *mut fm_client,
    request_json: *const c_char,
    response_out: *mut *mut c_char,
) -> fm_status {
    json_call(client, request_json, response_out, async |c, req| store_of(client, c).call(&req).await)
}

/// Frees a string returned by the store functions. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn fm_string_free(s: *mut c_char) {
    guard_value((), || {
        if !s.is_null() {
            drop(CString::from_raw(s));
        }
    })
}

/// Subscribes to the named query `query` (defined with a "defineQuery"
/// request) with `params_json` (a JSON object, NULL = none). The first
/// result is the query's current result; then one result after every change
/// that alters it, in order (results equal to the previous one are not
/// delivered; a reader that falls behind gets every result, none skipped).
/// Take them with fm_store_subscription_next. On FM_OK `*out` is owned by
/// the caller (fm_store_unsubscribe). Errors as fm_store_call, e.g.
/// FM_ERR_NOT_FOUND (QUERY_NOT_DEFINED), FM_ERR_INVALID_ARGUMENT
/// (VALIDATION_ERROR for a missing parameter).
#[no_mangle]
pub unsafe extern "C" fn fm_store_subscribe(
    client: *mut fm_client,
    query: *const c_char,
    params_json: *const c_char,
    out: *mut *mut fm_store_subscription,
) -> fm_status {
    store_guard(|| {
        let out = new_out(out, "out")?;
        let sub = run_store(client, async |c| {
            let query = str_arg(query, "query")?;
            let params = if params_json.is_null() { Value::Null } else { json_arg(params_json, "params_json")? };
            store_of(client, c).subscribe(query, params).await
        })?;
        *out = LIVE.insert(Pull::new(client, sub));
        Ok(())
    })
}

/// The next result of a live query, waiting up to `timeout_ms` for it. On
/// FM_OK `*result_out` is the result as JSON (fm_string_free), or NULL when
/// none came within the timeout. When an evaluation failed (e.g. the broker
/// was unreachable) its status is returned with fm_last_error() as JSON;
/// the subscription goes on and delivers fresh results once it can.
/// FM_ERR_CLOSED after fm_store_unsubscribe (also when it ends a waiting
/// call from another thread) or fm_client_close. Call it from one thread at
/// a time per subscription.
#[no_mangle]
pub unsafe extern "C" fn fm_store_subscription_next(
    sub: *mut fm_store_subscription,
    timeout_ms: u64,
    result_out: *mut *mut c_char,
) -> fm_status {
    pull_next(&LIVE, sub, timeout_ms, result_out, "result_out", |result| result.to_string())
}

/// Ends a live query subscription and frees it; a call waiting in
/// fm_store_subscription_next on another thread returns FM_ERR_CLOSED first.
/// NULL is a no-op; FM_ERR_CLOSED if it was ended already.
#[no_mangle]
pub unsafe extern "C" fn fm_store_unsubscribe(sub: *mut fm_store_subscription) -> fm_status {
    pull_end(&LIVE, sub)
}
