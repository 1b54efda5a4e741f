//! Rules engine and procedures: JSON requests, topic subscriptions.
//!
//! The rules of docs/RULES.md and the procedures of docs/PROCEDURES.md as
//! JSON strings, in the shape of fm_store_call: one request in, one result
//! out, errors as JSON in fm_last_error(). The first rules or procedures
//! call of a client starts its rules evaluator (on the client's runtime;
//! fm_client_close stops it).

use std::collections::HashMap;
use std::ffi::c_char;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::json;

use super::args::*;
use super::call::new_out;
use super::client::fm_client;
use super::fm_status;
use super::handles::Handles;
use super::pull::{pull_end, pull_next, Pull};
use super::store::{json_call, run_store, store_guard, store_of};
use crate::blocking::BlockingClient;
use crate::procedures::Procedures;
use crate::rules::{Evaluator, Rules, Subscription};

/// A topic subscription of the rules engine (pull mode). End it with
/// fm_rules_unsubscribe. The handle is an id, never dereferenced and never reused.
pub struct fm_rules_subscription {
    _private: u8,
}

struct Engine {
    rules: Rules,
    procedures: Procedures,
    _evaluator: Evaluator,
}

/// One rules engine (and evaluator) per client; dropped by fm_client_close.
fn engines() -> &'static Mutex<HashMap<usize, Arc<Engine>>> {
    static ENGINES: OnceLock<Mutex<HashMap<usize, Arc<Engine>>>> = OnceLock::new();
    ENGINES.get_or_init(Default::default)
}

/// The client's engine; call on the client's runtime (it may start the evaluator).
fn engine_of(handle: *mut fm_client, client: &BlockingClient) -> Arc<Engine> {
    let mut engines = engines().lock().unwrap();
    let engine = engines
        .entry(handle as usize)
        .or_insert_with(|| {
            let rules = Rules::new(store_of(handle, client));
            let evaluator = rules.start_evaluator();
            Arc::new(Engine { procedures: Procedures::new(rules.clone()), rules, _evaluator: evaluator })
        })
        .clone();
    // A call racing fm_client_close must not leave an evaluator behind it.
    if client_arg(handle).is_err() {
        engines.remove(&(handle as usize));
    }
    engine
}

/// Stops the evaluator of a client being closed.
pub(crate) fn forget_client(handle: *mut fm_client) {
    let gone = engines().lock().unwrap().remove(&(handle as usize));
    drop(gone);
}

static SUBS: Handles<Pull<Subscription>> = Handles::new("rules subscription");

/// Runs one rules request, a JSON object such as
/// `{"type": "rules.emit", "topic": "user.created", "data": {"id": 1}}`
/// (every type and its fields: docs/RULES.md), on the client's tenant and
/// namespace. On FM_OK `*response_out` is the result as JSON (`null` for
/// requests without one), owned by the caller (fm_string_free). On error it
/// is NULL and fm_last_error() is a JSON object `{"code", "message",
/// "details"?}`: FM_ERR_INVALID_ARGUMENT for NULL, invalid UTF-8 or JSON,
/// an unknown type, missing fields (INVALID_ARGUMENT) and a malformed rule
/// (VALIDATION_ERROR, one `{field, message}` per problem in details);
/// FM_ERR_NOT_FOUND (a rule that is not registered); FM_ERR_ALREADY_EXISTS
/// (a rule id taken); FM_ERR_CLOSED after fm_client_close; broker errors
/// as elsewhere.
#[no_mangle]
pub unsafe extern "C" fn fm_rules_call(
    client: *mut fm_client,
    request_json: *const c_char,
    response_out: *mut *mut c_char,
) -> fm_status {
    json_call(client, request_json, response_out, async |c, req| engine_of(client, c).rules.call(&req).await)
}

/// Runs one procedures request, a JSON object such as
/// `{"type": "procedures.call", "name": "checkout", "params": {"id": "o1"}}`
/// (types: register, call, get, list, update, unregister; docs/PROCEDURES.md).
/// Results and errors as fm_rules_call; a call of an unknown procedure is
/// FM_ERR_NOT_FOUND (NOT_FOUND); a failing step fails the whole call with
/// its error and nothing is written.
#[no_mangle]
pub unsafe extern "C" fn fm_procedures_call(
    client: *mut fm_client,
    request_json: *const c_char,
    response_out: *mut *mut c_char,
) -> fm_status {
    json_call(client, request_json, response_out, async |c, req| engine_of(client, c).procedures.request(&req).await)
}

/// Subscribes to the events appended from now on whose topic matches
/// `pattern` (`*` one dot-separated segment, `>` every remaining one; e.g.
/// `user.*`), emitted by clients or by rules. Take them in order with
/// fm_rules_subscription_next. On FM_OK `*out` is owned by the caller
/// (fm_rules_unsubscribe). FM_ERR_INVALID_ARGUMENT for a malformed
/// pattern; other errors as fm_rules_call.
#[no_mangle]
pub unsafe extern "C" fn fm_rules_subscribe(
    client: *mut fm_client,
    pattern: *const c_char,
    out: *mut *mut fm_rules_subscription,
) -> fm_status {
    store_guard(|| {
        let out = new_out(out, "out")?;
        let sub = run_store(client, async |c| {
            let pattern = str_arg(pattern, "pattern")?;
            engine_of(client, c).rules.subscribe(pattern).await
        })?;
        *out = SUBS.insert(Pull::new(client, sub));
        Ok(())
    })
}

/// The next matching event, waiting up to `timeout_ms`. On FM_OK
/// `*event_out` is `{"topic": ..., "event": {id, topic, data, timestamp,
/// correlationId?, causationId?}}` (fm_string_free), or NULL when none came
/// within the timeout. FM_ERR_CLOSED after fm_rules_unsubscribe (also when
/// it ends a waiting call from another thread) or fm_client_close. Call it
/// from one thread at a time per subscription.
#[no_mangle]
pub unsafe extern "C" fn fm_rules_subscription_next(
    sub: *mut fm_rules_subscription,
    timeout_ms: u64,
    event_out: *mut *mut c_char,
) -> fm_status {
    pull_next(&SUBS, sub, timeout_ms, event_out, "event_out", |(topic, event)| {
        json!({"topic": topic, "event": event}).to_string()
    })
}

/// Ends a topic subscription and frees it; a call waiting in
/// fm_rules_subscription_next on another thread returns FM_ERR_CLOSED
/// first. NULL is a no-op; FM_ERR_CLOSED if it was ended already.
#[no_mangle]
pub unsafe extern "C" fn fm_rules_unsubscribe(sub: *mut fm_rules_subscription) -> fm_status {
    pull_end(&SUBS, sub)
}
