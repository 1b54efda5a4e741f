//! Events to named recipients: publish, reply, callback
//! subscriptions with ack/defer/discard/replay/pause/resume, key generation.
//! Converts and forwards to `crate::events`.

use std::ffi::{c_char, c_void, CString};

use bytes::Bytes;

use super::args::*;
use super::call::{call_opt, open_handle};
use super::client::fm_client;
use super::handles::Handles;
use super::options::{fm_options, options_or_default};
use super::{fm_status, guard, guard_value};
use crate::blocking::events::CallbackSubscription;
use crate::error::Error;
use crate::events::Event;

/// An event: passed (borrowed) to an fm_event_cb, or returned (owned) by
/// fm_event_replay. Read it with the fm_event_* accessors.
pub struct fm_event {
    event: Event,
    name: CString,
    sender: CString,
    metadata: Option<CString>,
}

impl fm_event {
    fn new(event: Event) -> fm_event {
        fm_event {
            name: c_string(&event.name),
            sender: c_string(&event.sender),
            metadata: event.metadata.as_deref().map(c_string),
            event,
        }
    }
}

/// A running event subscription. End it with fm_event_unsubscribe. The
/// handle is an id, never dereferenced and never reused.
pub struct fm_event_subscription {
    _private: u8,
}

/// Live event subscriptions (see [`super::handles`]).
static EVENT_SUBSCRIPTIONS: Handles<CallbackSubscription> = Handles::new("event subscription");

/// Called for each event delivered to a subscription, one at a time, on a
/// library thread. `ev` is valid only during the call. With auto_ack the
/// event is acknowledged when the callback returns (unless it was already
/// acked, deferred or discarded in the callback).
pub type fm_event_cb = Option<unsafe extern "C" fn(user_data: *mut c_void, ev: *const fm_event)>;

/// Makes a new X25519 key pair for the connect option `app_secret_key`. On
/// FM_OK `*secret_out` and `*public_out` are owned by the caller
/// (fm_buf_free): 44 bytes of standard base64 each (no NUL). Keep the secret
/// private; the public key is registered by the library when a client with
/// the secret first uses events. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn fm_event_keygen(secret_out: *mut *mut fm_buf, public_out: *mut *mut fm_buf) -> fm_status {
    guard(|| {
        let secret_out = out_arg(secret_out, "secret_out")?;
        let public_out = out_arg(public_out, "public_out")?;
        let (secret, public) = crate::events::generate_key();
        *secret_out = to_c(fm_buf { data: Bytes::from(secret) });
        *public_out = to_c(fm_buf { data: Bytes::from(public) });
        Ok(())
    })
}

/// Publishes event `event_name` (1-96 bytes of UTF-8, e.g.
/// "orders/status/updated") from this client's app (connect option app_id)
/// to `n` >= 1 recipient app ids. `payload` (may be NULL when `len` is 0)
/// and `metadata_json` (NULL or a JSON object; stored and delivered as is,
/// never encrypted) are copied. If every recipient has a registered public
/// key the payload is sealed for each and stored only as ciphertext; if
/// none has, it is stored in clear; a mix is FM_ERR_INVALID_ARGUMENT. The
/// event id goes to `*event_id_out` (may be NULL). Errors:
/// INVALID_ARGUMENT (NULL, no app_id, bad name/recipient/metadata),
/// TOO_LARGE, CLOSED, broker errors. If it fails after the event was
/// logged, some recipients may have it: a retry can duplicate for them.
#[no_mangle]
pub unsafe extern "C" fn fm_event_publish(
    client: *mut fm_client,
    event_name: *const c_char,
    recipients: *const *const c_char,
    n: usize,
    payload: *const u8,
    len: usize,
    metadata_json: *const c_char,
    event_id_out: *mut u64,
) -> fm_status {
    call_opt(client, event_id_out, async |c| {
        let name = str_arg(event_name, "event_name")?;
        let recipients = recipients_arg(recipients, n)?;
        let payload = copy_bytes(payload, len, "payload")?;
        let metadata = opt_str_arg(metadata_json, "metadata_json")?;
        c.events()?.publish(name, &recipients, payload, metadata).await
    })
}

/// Publishes a reply to the sender of `ev` (an event received in a
/// callback or returned by fm_event_replay), under the same event name,
/// sealed when the sender has a public key. Otherwise as fm_event_publish.
#[no_mangle]
pub unsafe extern "C" fn fm_event_reply(
    client: *mut fm_client,
    ev: *const fm_event,
    payload: *const u8,
    len: usize,
    metadata_json: *const c_char,
    event_id_out: *mut u64,
) -> fm_status {
    call_opt(client, event_id_out, async |c| {
        let ev = ref_arg(ev, "ev")?;
        let payload = copy_bytes(payload, len, "payload")?;
        let metadata = opt_str_arg(metadata_json, "metadata_json")?;
        c.events()?.reply(&ev.event, payload, metadata).await
    })
}

/// Subscribes this client's app to `event_name`: `cb` receives each event
/// sent to the app under that name, one at a time, on a library thread; it
/// may call any fm_ function, including fm_event_unsubscribe of this
/// subscription. Each app has one durable inbox per event name, shared by
/// all its subscriptions (competing consumers). `opts` (may be NULL,
/// copied): "auto_ack" (default true: acked when the callback returns) and
/// "ack_wait_ms" (default 30000: an event not acked, deferred or discarded
/// within it is delivered again, with a higher delivery count). Registers
/// the app's public key when the client has app_secret_key. On FM_OK `*out`
/// is owned by the caller (fm_event_unsubscribe). Errors: INVALID_ARGUMENT
/// (NULL, no app_id, bad name, bad option), CLOSED, broker errors.
#[no_mangle]
pub unsafe extern "C" fn fm_event_subscribe(
    client: *mut fm_client,
    event_name: *const c_char,
    opts: *const fm_options,
    cb: fm_event_cb,
    user_data: *mut c_void,
    out: *mut *mut fm_event_subscription,
) -> fm_status {
    open_handle(client, out, &EVENT_SUBSCRIPTIONS, |c| {
        let name = str_arg(event_name, "event_name")?;
        let cb = cb.ok_or_else(|| Error::invalid("callback is NULL"))?;
        let ud = UserData(user_data);
        let opts = options_or_default(opts);
        let events = c.events()?.clone();
        CallbackSubscription::start(c, &events, name, &opts, move |ev: &Event| {
            let ud = ud;
            let view = fm_event::new(ev.clone());
            cb(ud.0, &view);
        })
    })
}

/// Acknowledges event `id` delivered to this subscription: it is never
/// delivered again. FM_ERR_NOT_FOUND if it is not awaiting
/// acknowledgement here (already settled, or never delivered).
#[no_mangle]
pub unsafe extern "C" fn fm_event_ack(sub: *mut fm_event_subscription, id: u64) -> fm_status {
    guard(|| {
        let s = EVENT_SUBSCRIPTIONS.get(sub)?;
        s.run(s.subscription().ack(id))
    })
}

/// Delivers event `id` again after `delay_ms` (not before), with a higher
/// delivery count. `reason` (may be NULL) is logged. NOT_FOUND as fm_event_ack.
#[no_mangle]
pub unsafe extern "C" fn fm_event_defer(
    sub: *mut fm_event_subscription,
    id: u64,
    delay_ms: u64,
    reason: *const c_char,
) -> fm_status {
    guard(|| {
        let s = EVENT_SUBSCRIPTIONS.get(sub)?;
        let reason = opt_str_arg(reason, "reason")?.unwrap_or("");
        s.run(s.subscription().defer(id, delay_ms, reason))
    })
}

/// Drops event `id` for good (never delivered again) and records it, with
/// `reason` (may be NULL), in the discard log. NOT_FOUND as fm_event_ack.
#[no_mangle]
pub unsafe extern "C" fn fm_event_discard(
    sub: *mut fm_event_subscription,
    id: u64,
    reason: *const c_char,
) -> fm_status {
    guard(|| {
        let s = EVENT_SUBSCRIPTIONS.get(sub)?;
        let reason = opt_str_arg(reason, "reason")?.unwrap_or("");
        s.run(s.subscription().discard(id, reason))
    })
}

/// Delivers past event `id` (of this subscription's name, sent to this
/// app) to this app once more, whatever happened to it before. If `out` is
/// not NULL, on FM_OK `*out` is the event, owned by the caller
/// (fm_event_free). FM_ERR_NOT_FOUND if no such event was sent to this app
/// under this name; FM_ERR_UNAUTHORIZED if it cannot be decrypted.
#[no_mangle]
pub unsafe extern "C" fn fm_event_replay(
    sub: *mut fm_event_subscription,
    id: u64,
    out: *mut *mut fm_event,
) -> fm_status {
    guard(|| {
        write_opt(out, std::ptr::null_mut());
        let s = EVENT_SUBSCRIPTIONS.get(sub)?;
        let ev = s.run(s.subscription().replay(id))?;
        if !out.is_null() {
            *out = to_c(fm_event::new(ev));
        }
        Ok(())
    })
}

/// Stops delivery to this subscription until fm_event_resume; events keep
/// arriving in the app's inbox and nothing is lost. A callback already
/// running finishes. `reason` (may be NULL) is logged. Idempotent.
#[no_mangle]
pub unsafe extern "C" fn fm_event_pause(sub: *mut fm_event_subscription, reason: *const c_char) -> fm_status {
    guard(|| {
        let s = EVENT_SUBSCRIPTIONS.get(sub)?;
        s.subscription().pause(opt_str_arg(reason, "reason")?.unwrap_or(""));
        Ok(())
    })
}

/// Resumes delivery after fm_event_pause: everything held is delivered.
#[no_mangle]
pub unsafe extern "C" fn fm_event_resume(sub: *mut fm_event_subscription) -> fm_status {
    guard(|| {
        EVENT_SUBSCRIPTIONS.get(sub)?.subscription().resume();
        Ok(())
    })
}

/// FM_OK while healthy. Otherwise the error that ended delivery (e.g.
/// FM_ERR_UNAUTHORIZED: an event is sealed for this app but the client has
/// no app_secret_key; the event stays queued), or else FM_ERR_UNAUTHORIZED
/// for the last rejected delivery (a tampered ciphertext: never passed to
/// the callback, recorded in the discard log), with fm_last_error() saying
/// which. `rejected_out` (may be NULL) gets the number of rejected deliveries.
#[no_mangle]
pub unsafe extern "C" fn fm_event_subscription_status(
    sub: *const fm_event_subscription,
    rejected_out: *mut u64,
) -> fm_status {
    guard(|| {
        write_opt(rejected_out, 0);
        let s = EVENT_SUBSCRIPTIONS.get(sub)?;
        write_opt(rejected_out, s.subscription().rejected().0);
        s.status()
    })
}

/// Stops the subscription and frees it. Waits for a running callback unless
/// called from inside it. Delivered events not yet settled (manual ack)
/// go back to the inbox at once for redelivery. NULL is a no-op; a handle
/// already unsubscribed gives FM_ERR_CLOSED.
#[no_mangle]
pub unsafe extern "C" fn fm_event_unsubscribe(sub: *mut fm_event_subscription) -> fm_status {
    guard(|| {
        if sub.is_null() {
            return Ok(());
        }
        let sub = EVENT_SUBSCRIPTIONS.remove(sub);
        sub.ok_or_else(|| Error::Closed("event subscription is already unsubscribed".into()))?.unsubscribe();
        Ok(())
    })
}

/// Frees an event returned by fm_event_replay. NULL is a no-op. Never free
/// the event passed to a callback.
#[no_mangle]
pub unsafe extern "C" fn fm_event_free(ev: *mut fm_event) {
    guard_value((), || drop(from_c(ev)));
}

/// The event id (unique within the tenant/namespace); 0 for NULL.
#[no_mangle]
pub unsafe extern "C" fn fm_event_id(ev: *const fm_event) -> u64 {
    guard_value(0, || ev.as_ref().map_or(0, |e| e.event.id))
}

/// The event name, borrowed from `ev`; NULL for NULL.
#[no_mangle]
pub unsafe extern "C" fn fm_event_name(ev: *const fm_event) -> *const c_char {
    guard_value(std::ptr::null(), || ev.as_ref().map_or(std::ptr::null(), |e| e.name.as_ptr()))
}

/// The sender's app id, borrowed from `ev`; NULL for NULL.
#[no_mangle]
pub unsafe extern "C" fn fm_event_sender(ev: *const fm_event) -> *const c_char {
    guard_value(std::ptr::null(), || ev.as_ref().map_or(std::ptr::null(), |e| e.sender.as_ptr()))
}

/// Publish time, milliseconds since the Unix epoch (sender's clock); 0 for NULL.
#[no_mangle]
pub unsafe extern "C" fn fm_event_timestamp_ms(ev: *const fm_event) -> i64 {
    guard_value(0, || ev.as_ref().map_or(0, |e| e.event.timestamp_ms))
}

/// The plaintext payload (decrypted if it was sealed), borrowed from `ev`;
/// its length to `*len_out` (may be NULL). NULL with length 0 for NULL.
#[no_mangle]
pub unsafe extern "C" fn fm_event_payload(ev: *const fm_event, len_out: *mut usize) -> *const u8 {
    guard_value(std::ptr::null(), || match ev.as_ref() {
        Some(e) => {
            write_opt(len_out, e.event.payload.len());
            e.event.payload.as_ptr()
        }
        None => {
            write_opt(len_out, 0);
            std::ptr::null()
        }
    })
}

/// The metadata JSON object, borrowed from `ev`; NULL if the event has none.
#[no_mangle]
pub unsafe extern "C" fn fm_event_metadata(ev: *const fm_event) -> *const c_char {
    guard_value(std::ptr::null(), || {
        ev.as_ref().and_then(|e| e.metadata.as_ref()).map_or(std::ptr::null(), |m| m.as_ptr())
    })
}

/// Deliveries of this event to the app so far, including this one (1 on
/// first delivery; 0 for an event returned by fm_event_replay or NULL).
#[no_mangle]
pub unsafe extern "C" fn fm_event_delivery_count(ev: *const fm_event) -> u32 {
    guard_value(0, || ev.as_ref().map_or(0, |e| e.event.delivery_count))
}

/// Whether the payload was sealed end to end (false for NULL).
#[no_mangle]
pub unsafe extern "C" fn fm_event_encrypted(ev: *const fm_event) -> bool {
    guard_value(false, || ev.as_ref().is_some_and(|e| e.event.encrypted))
}

/// The id of the event this one replies to, or 0 (with `*has_out` false)
/// when it is not a reply. `has_out` may be NULL.
#[no_mangle]
pub unsafe extern "C" fn fm_event_reply_to(ev: *const fm_event, has_out: *mut bool) -> u64 {
    guard_value(0, || {
        let r = ev.as_ref().and_then(|e| e.event.reply_to);
        write_opt(has_out, r.is_some());
        r.unwrap_or(0)
    })
}
