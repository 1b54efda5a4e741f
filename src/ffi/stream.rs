//! Streams: publish, read, subscribe, consumer-group offsets.

use std::ffi::{c_char, c_void, CString};
use std::time::Duration;

use super::args::*;
use super::call::{call, call_new, call_opt, call_out, new_out, open_handle, run, with_client};
use super::client::fm_client;
use super::handles::Handles;
use super::options::{fm_options, options_or_default};
use super::{fm_status, guard, guard_value, set_last_error, OK};
use crate::blocking::Subscription;
use crate::engine::{Message, Position};
use crate::error::{Error, Result};

/// Where a message was stored.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct fm_position {
    /// The partition that stored it.
    pub partition: u32,
    /// Its offset in that partition.
    pub offset: u64,
}

/// An incoming message. All pointers are borrowed: from the fm_messages
/// that holds it, or for the duration of the callback that receives it.
#[repr(C)]
pub struct fm_message {
    /// Fully qualified stream name ("tenant/namespace/name").
    pub stream: *const c_char,
    /// The partition that stores it.
    pub partition: u32,
    /// Its offset (FM_OFFSET_NONE for a memory-tier message).
    pub offset: u64,
    /// Milliseconds since the Unix epoch, set by the engine on append.
    pub timestamp_ms: i64,
    /// NULL when the message has no key.
    pub key: *const u8,
    /// Bytes at `key`.
    pub key_len: usize,
    /// The message body.
    pub payload: *const u8,
    /// Bytes at `payload`.
    pub payload_len: usize,
    /// Headers, `headers_len` of them.
    pub headers: *const fm_header,
    /// Number of headers at `headers`.
    pub headers_len: usize,
}

/// Called once per fm_publish_async, on a library thread, with the outcome.
pub type fm_publish_cb = Option<unsafe extern "C" fn(user_data: *mut c_void, status: fm_status, pos: fm_position)>;

/// Called for each message of a subscription, in order, one at a time, on a
/// library thread. `msg` is valid only during the call.
pub type fm_message_cb = Option<unsafe extern "C" fn(user_data: *mut c_void, msg: *const fm_message)>;

/// Messages returned by fm_read. Free with fm_messages_free.
pub struct fm_messages {
    items: Vec<OwnedMessage>,
}

impl fm_messages {
    fn new(msgs: Vec<Message>) -> fm_messages {
        fm_messages { items: msgs.into_iter().map(OwnedMessage::new).collect() }
    }
}

/// A running subscription (stream or KV watch). End it with fm_unsubscribe.
/// The handle is an id, never dereferenced and never reused.
pub struct fm_subscription {
    _private: u8,
}

/// Live stream subscriptions and KV watches (see [`super::handles`]).
pub(crate) static SUBSCRIPTIONS: Handles<Subscription> = Handles::new("subscription");

/// A message plus the C view of it. Heap buffers do not move when this
/// struct moves, so `raw` stays valid.
struct OwnedMessage {
    _msg: Message,
    _stream: CString,
    _headers: OwnedHeaders,
    raw: fm_message,
}

impl OwnedMessage {
    fn new(msg: Message) -> OwnedMessage {
        let stream = c_string(&msg.stream);
        let headers = OwnedHeaders::new(&msg.headers);
        let raw = fm_message {
            stream: stream.as_ptr(),
            partition: msg.partition,
            offset: msg.offset,
            timestamp_ms: msg.timestamp_ms,
            key: msg.key.as_ref().map_or(std::ptr::null(), |k| k.as_ptr()),
            key_len: msg.key.as_ref().map_or(0, |k| k.len()),
            payload: msg.payload.as_ptr(),
            payload_len: msg.payload.len(),
            headers: if headers.array.is_empty() { std::ptr::null() } else { headers.array.as_ptr() },
            headers_len: headers.array.len(),
        };
        OwnedMessage { _msg: msg, _stream: stream, _headers: headers, raw }
    }
}

fn c_position(p: Position) -> fm_position {
    fm_position { partition: p.partition, offset: p.offset }
}

/// Appends one message (creating the stream on first use) and waits for the
/// engine's acknowledgement (durable per the fsync policy). `out` may be
/// NULL. Errors: INVALID_ARGUMENT (NULL, bad name, bad UTF-8 in headers),
/// TOO_LARGE, CLOSED, DISCONNECTED/UNAVAILABLE/TIMEOUT (broker), INTERNAL.
#[no_mangle]
pub unsafe extern "C" fn fm_publish(
    client: *mut fm_client,
    stream: *const c_char,
    msg: *const fm_msg,
    out: *mut fm_position,
) -> fm_status {
    call_opt(client, out, async |c| {
        let stream = str_arg(stream, "stream")?;
        let record = record_arg(msg)?;
        c.client().publish(stream, record).await.map(c_position)
    })
}

/// Appends `n` messages in one call: all are stored, in order, or none is
/// acknowledged. `out` is NULL or an array of `n` positions. Errors as
/// fm_publish.
#[no_mangle]
pub unsafe extern "C" fn fm_publish_batch(
    client: *mut fm_client,
    stream: *const c_char,
    msgs: *const fm_msg,
    n: usize,
    out: *mut fm_position,
) -> fm_status {
    guard(|| {
        let positions = run(client, async |c| {
            let stream = str_arg(stream, "stream")?;
            if n > 0 && msgs.is_null() {
                return Err(Error::invalid("msgs is NULL but n is not 0"));
            }
            let records = (0..n).map(|i| record_arg(msgs.add(i))).collect::<Result<Vec<_>>>()?;
            c.client().publish_batch(stream, records).await
        })?;
        if !out.is_null() {
            for (i, p) in positions.into_iter().enumerate() {
                *out.add(i) = c_position(p);
            }
        }
        Ok(())
    })
}

/// Queues a publish and returns at once (blocking only while 16384 publishes
/// are already pending). `msg` is copied. `cb` (may be NULL) runs exactly
/// once on a library thread, in issue order, with the status and position;
/// with a failed status, fm_last_error() inside the callback says why.
/// Errors returned directly: INVALID_ARGUMENT, TOO_LARGE, CLOSED.
#[no_mangle]
pub unsafe extern "C" fn fm_publish_async(
    client: *mut fm_client,
    stream: *const c_char,
    msg: *const fm_msg,
    cb: fm_publish_cb,
    user_data: *mut c_void,
) -> fm_status {
    with_client(client, |c| {
        let stream = str_arg(stream, "stream")?;
        let record = record_arg(msg)?;
        c.publish_async(stream, record, completion(cb, user_data))
    })
}

/// The completion of an asynchronous publish: calls `cb` (if any) with the
/// status and position, fm_last_error set for a failure.
pub(super) fn completion(cb: fm_publish_cb, user_data: *mut c_void) -> crate::blocking::Completion {
    let ud = UserData(user_data);
    Box::new(move |result: Result<Position>| {
        let ud = ud;
        let Some(cb) = cb else { return };
        // SAFETY: the caller of the publish promised a callable `cb` and a
        // `user_data` valid until it runs.
        match result {
            Ok(p) => {
                set_last_error("");
                unsafe { cb(ud.0, OK, c_position(p)) }
            }
            Err(e) => unsafe { cb(ud.0, super::fail(&e), fm_position::default()) },
        }
    })
}

/// Blocks until every fm_publish_async issued before it has called back, or
/// `timeout_ms` passes (FM_ERR_TIMEOUT). Do not call it from a publish
/// callback of the same client (it would wait for itself).
#[no_mangle]
pub unsafe extern "C" fn fm_flush(client: *mut fm_client, timeout_ms: u64) -> fm_status {
    with_client(client, |c| c.flush(Duration::from_millis(timeout_ms)))
}

/// Reads up to `max_messages` from `partition` starting at `offset` (an
/// offset below the retained range starts at the earliest retained). On
/// FM_OK `*out` is owned by the caller (fm_messages_free); it may hold 0
/// messages at the end of the partition. FM_ERR_NOT_FOUND if the stream or
/// partition does not exist.
#[no_mangle]
pub unsafe extern "C" fn fm_read(
    client: *mut fm_client,
    stream: *const c_char,
    partition: u32,
    offset: u64,
    max_messages: usize,
    out: *mut *mut fm_messages,
) -> fm_status {
    call_new(client, out, async |c| {
        let stream = str_arg(stream, "stream")?;
        let msgs = c.client().read(stream, partition, offset, max_messages).await?;
        Ok(fm_messages::new(msgs))
    })
}

/// Number of messages in `m` (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn fm_messages_len(m: *const fm_messages) -> usize {
    guard_value(0, || m.as_ref().map_or(0, |m| m.items.len()))
}

/// Message `i` of `m`, borrowed from `m`; NULL if `m` is NULL or `i` is out
/// of range.
#[no_mangle]
pub unsafe extern "C" fn fm_messages_get(m: *const fm_messages, i: usize) -> *const fm_message {
    guard_value(std::ptr::null(), || {
        m.as_ref().and_then(|m| m.items.get(i)).map_or(std::ptr::null(), |o| &o.raw as *const fm_message)
    })
}

/// Frees messages returned by fm_read. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn fm_messages_free(m: *mut fm_messages) {
    guard_value((), || drop(from_c(m)));
}

/// Subscribes to a stream (created if absent). `opts` (may be NULL, copied):
/// "group", "partition" (default: all), "start" = earliest | latest |
/// committed | `<offset>` (default committed with a group, else latest),
/// "auto_commit" (default true with a group; commits delivered offsets after
/// callbacks return, in batches and whenever the subscription is idle).
/// `cb` runs on a library thread, in order per partition, one call at a
/// time; it may call any fm_ function, including fm_unsubscribe of this
/// subscription. On FM_OK `*out` is owned by the caller (fm_unsubscribe).
#[no_mangle]
pub unsafe extern "C" fn fm_subscribe(
    client: *mut fm_client,
    stream: *const c_char,
    opts: *const fm_options,
    cb: fm_message_cb,
    user_data: *mut c_void,
    out: *mut *mut fm_subscription,
) -> fm_status {
    open_handle(client, out, &SUBSCRIPTIONS, |c| {
        let stream = str_arg(stream, "stream")?;
        let cb = cb.ok_or_else(|| Error::invalid("callback is NULL"))?;
        let ud = UserData(user_data);
        c.subscribe(stream, &options_or_default(opts), move |msg: &Message| {
            let ud = ud;
            let owned = OwnedMessage::new(msg.clone());
            cb(ud.0, &owned.raw);
        })
    })
}

/// Subscribes in pull mode: no callback and no delivery thread; the
/// application takes batches with fm_subscription_next at its own pace (the
/// library buffers at most 1024 messages ahead, then back-pressures the
/// feed). Same `opts` as fm_subscribe; with auto_commit, a call to
/// fm_subscription_next commits what the previous call returned. On FM_OK
/// `*out` is owned by the caller (fm_unsubscribe).
#[no_mangle]
pub unsafe extern "C" fn fm_subscribe_pull(
    client: *mut fm_client,
    stream: *const c_char,
    opts: *const fm_options,
    out: *mut *mut fm_subscription,
) -> fm_status {
    open_handle(client, out, &SUBSCRIPTIONS, |c| {
        c.subscribe_pull(str_arg(stream, "stream")?, &options_or_default(opts))
    })
}

/// Takes up to `max_messages` (>= 1) from a pull subscription, waiting up
/// to `timeout_ms` for the first. FM_OK with an empty list on timeout; on
/// FM_OK `*out` is owned by the caller (fm_messages_free). Returns the
/// error that ended the feed (e.g. FM_ERR_DISCONNECTED once reconnecting
/// gave up), FM_ERR_CLOSED after the client closed, and
/// FM_ERR_INVALID_ARGUMENT for a callback subscription. Call it from one
/// thread at a time per subscription.
#[no_mangle]
pub unsafe extern "C" fn fm_subscription_next(
    sub: *mut fm_subscription,
    max_messages: usize,
    timeout_ms: u64,
    out: *mut *mut fm_messages,
) -> fm_status {
    guard(|| {
        let out = new_out(out, "out")?;
        let msgs = SUBSCRIPTIONS.get(sub)?.next(max_messages, Duration::from_millis(timeout_ms))?;
        *out = to_c(fm_messages::new(msgs));
        Ok(())
    })
}

/// FM_OK while a subscription or watch is healthy (or was stopped by
/// fm_unsubscribe); otherwise the status of the error that ended its feed,
/// with fm_last_error() describing it. A callback subscription whose feed
/// ended calls no more callbacks: poll this to learn why.
#[no_mangle]
pub unsafe extern "C" fn fm_subscription_status(sub: *const fm_subscription) -> fm_status {
    guard(|| SUBSCRIPTIONS.get(sub)?.status())
}

/// Stops a subscription or KV watch and frees it. Waits for a running
/// callback to return, unless called from inside that callback, and for a
/// running fm_subscription_next (which then returns FM_ERR_CLOSED). In pull
/// mode the last batch returned is not auto-committed (commit it with
/// fm_commit_offset once processed). NULL is a no-op returning FM_OK;
/// after fm_client_close it just frees. A handle already unsubscribed gives
/// FM_ERR_CLOSED.
#[no_mangle]
pub unsafe extern "C" fn fm_unsubscribe(sub: *mut fm_subscription) -> fm_status {
    guard(|| {
        if sub.is_null() {
            return Ok(());
        }
        SUBSCRIPTIONS.remove(sub).ok_or_else(|| Error::Closed("subscription is already unsubscribed".into()))?.stop();
        Ok(())
    })
}

/// Records that `group` has processed `stream`/`partition` up to and
/// including `offset`; a subscription with start=committed resumes after it.
/// FM_ERR_NOT_FOUND if the stream or partition does not exist.
#[no_mangle]
pub unsafe extern "C" fn fm_commit_offset(
    client: *mut fm_client,
    stream: *const c_char,
    group: *const c_char,
    partition: u32,
    offset: u64,
) -> fm_status {
    call(client, async |c| {
        let (stream, group) = (str_arg(stream, "stream")?, str_arg(group, "group")?);
        c.client().commit_offset(stream, group, partition, offset).await
    })
}

/// The offset `group` last committed on `partition`. FM_ERR_NOT_FOUND if the
/// group never committed there (or the stream does not exist).
#[no_mangle]
pub unsafe extern "C" fn fm_get_offset(
    client: *mut fm_client,
    stream: *const c_char,
    group: *const c_char,
    partition: u32,
    out: *mut u64,
) -> fm_status {
    call_out(client, out, async |c| {
        let (stream, group) = (str_arg(stream, "stream")?, str_arg(group, "group")?);
        c.client().get_offset(stream, group, partition).await
    })
}

/// The offset the next message of `partition` will get (0 when empty).
/// FM_ERR_NOT_FOUND if the stream or partition does not exist.
#[no_mangle]
pub unsafe extern "C" fn fm_get_latest_offset(
    client: *mut fm_client,
    stream: *const c_char,
    partition: u32,
    out: *mut u64,
) -> fm_status {
    call_out(client, out, async |c| c.client().latest_offset(str_arg(stream, "stream")?, partition).await)
}

/// Creates a stream. `opts` (may be NULL): "partitions" (default 1),
/// "max_age_ms", "max_bytes", "max_messages" (retention; 0 = unlimited).
/// FM_OK if it already exists with the same partition count;
/// FM_ERR_ALREADY_EXISTS if it exists with another.
#[no_mangle]
pub unsafe extern "C" fn fm_stream_create(
    client: *mut fm_client,
    stream: *const c_char,
    opts: *const fm_options,
) -> fm_status {
    call(client, async |c| {
        let stream = str_arg(stream, "stream")?;
        let config = options_or_default(opts).stream_config()?;
        c.client().create_stream(stream, config).await
    })
}

/// The partition count of a stream. FM_ERR_NOT_FOUND if it does not exist.
#[no_mangle]
pub unsafe extern "C" fn fm_stream_partitions(
    client: *mut fm_client,
    stream: *const c_char,
    out: *mut u32,
) -> fm_status {
    call_out(client, out, async |c| Ok(c.client().stream_info(str_arg(stream, "stream")?).await?.config.partitions))
}
