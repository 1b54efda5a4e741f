//! Resource lifecycle: list, delete and purge streams, queues and buckets;
//! change a stream's retention; give a reserved job more time.
//!
//! A delete removes the resource with everything in it. Subscriptions and
//! KV watches open on it end (fm_subscription_status gives
//! FM_ERR_NOT_FOUND), a waiting fm_queue_reserve returns FM_ERR_NOT_FOUND,
//! and a later use (publish, subscribe, enqueue, kv set, ...) creates it
//! again, empty, as any first use does.

use std::ffi::c_char;

use super::args::*;
use super::call::{call, call_new, run};
use super::client::fm_client;
use super::kv::fm_strings;
use super::options::{fm_options, options_or_default};
use super::{fm_status, guard};
use crate::client::Client;
use crate::error::Result;

/// The shared body of the three listings.
unsafe fn list(
    client: *mut fm_client,
    prefix: *const c_char,
    out: *mut *mut fm_strings,
    names: impl AsyncFnOnce(&Client, &str) -> Result<Vec<String>>,
) -> fm_status {
    call_new(client, out, async |c| {
        let prefix = opt_str_arg(prefix, "prefix")?.unwrap_or("");
        Ok(fm_strings::new(&names(c.client(), prefix).await?))
    })
}

/// Streams whose name starts with `prefix` ("" or NULL = all) in the
/// client's tenant and namespace; a prefix containing '/' is the start of a
/// qualified name instead (e.g. "acme/" = every namespace of tenant acme).
/// Names are fully qualified ("tenant/namespace/name") and sorted; memory
/// tier streams are included. On a broker with an access file only streams
/// the token may use are listed, and a prefix naming another tenant is
/// FM_ERR_UNAUTHORIZED. On FM_OK `*out` is owned by the caller
/// (fm_strings_free); on error it is NULL. FM_ERR_INVALID_ARGUMENT for a
/// NULL `client`/`out`, invalid UTF-8 or a prefix with characters outside
/// [A-Za-z0-9._-/]; FM_ERR_CLOSED after fm_client_close.
#[no_mangle]
pub unsafe extern "C" fn fm_streams_list(
    client: *mut fm_client,
    prefix: *const c_char,
    out: *mut *mut fm_strings,
) -> fm_status {
    list(client, prefix, out, async |c, p| c.list_streams(p).await)
}

/// Queues, as fm_streams_list lists streams.
#[no_mangle]
pub unsafe extern "C" fn fm_queues_list(
    client: *mut fm_client,
    prefix: *const c_char,
    out: *mut *mut fm_strings,
) -> fm_status {
    list(client, prefix, out, async |c, p| c.list_queues(p).await)
}

/// KV buckets, as fm_streams_list lists streams.
#[no_mangle]
pub unsafe extern "C" fn fm_kv_buckets_list(
    client: *mut fm_client,
    prefix: *const c_char,
    out: *mut *mut fm_strings,
) -> fm_status {
    list(client, prefix, out, async |c, p| c.list_buckets(p).await)
}

/// Deletes a stream with its messages and consumer-group offsets; on
/// file:// the files are gone when it returns (a crash during the delete
/// leaves the stream whole or gone). Subscriptions on it end with
/// FM_ERR_NOT_FOUND; a publish racing the delete lands in the stream the
/// next use creates (offsets from 0). FM_ERR_NOT_FOUND if it does not
/// exist; FM_ERR_UNAUTHORIZED on a broker without an admin grant.
#[no_mangle]
pub unsafe extern "C" fn fm_stream_delete(client: *mut fm_client, stream: *const c_char) -> fm_status {
    call(client, async |c| c.client().delete_stream(str_arg(stream, "stream")?).await)
}

/// Deletes a queue with every job: pending, delayed, in flight and dead.
/// A waiting fm_queue_reserve returns FM_ERR_NOT_FOUND; acks of jobs
/// reserved before answer FM_ERR_NOT_FOUND. Errors as fm_stream_delete.
#[no_mangle]
pub unsafe extern "C" fn fm_queue_delete(client: *mut fm_client, queue: *const c_char) -> fm_status {
    call(client, async |c| c.client().delete_queue(str_arg(queue, "queue")?).await)
}

/// Deletes a KV bucket with every key; its watches end with
/// FM_ERR_NOT_FOUND (fm_subscription_status). Errors as fm_stream_delete.
#[no_mangle]
pub unsafe extern "C" fn fm_kv_bucket_delete(client: *mut fm_client, bucket: *const c_char) -> fm_status {
    call(client, async |c| c.client().delete_bucket(str_arg(bucket, "bucket")?).await)
}

/// Removes every retained message of a stream and keeps the stream: offsets
/// continue from where they were (earliest = latest afterwards), and a
/// consumer group whose committed offset lies in the removed range has it
/// moved to the last removed offset, so it resumes at the next new message.
/// `*removed_out` (may be NULL) gets the number of messages removed.
/// FM_ERR_NOT_FOUND if the stream does not exist; FM_ERR_UNAUTHORIZED on a
/// broker without an admin grant.
#[no_mangle]
pub unsafe extern "C" fn fm_stream_purge(
    client: *mut fm_client,
    stream: *const c_char,
    removed_out: *mut u64,
) -> fm_status {
    guard(|| {
        write_opt(removed_out, 0);
        write_opt(removed_out, run(client, async |c| c.client().purge_stream(str_arg(stream, "stream")?).await)?);
        Ok(())
    })
}

/// Removes the pending and delayed jobs of a queue. Jobs in flight are left
/// to their workers (ack, nack and the visibility timeout still apply, so a
/// job whose visibility runs out comes back); dead jobs stay in the
/// dead-letter queue. `*removed_out` (may be NULL) gets how many were
/// removed. Errors as fm_stream_purge.
#[no_mangle]
pub unsafe extern "C" fn fm_queue_purge(
    client: *mut fm_client,
    queue: *const c_char,
    removed_out: *mut u64,
) -> fm_status {
    guard(|| {
        write_opt(removed_out, 0);
        write_opt(removed_out, run(client, async |c| c.client().purge_queue(str_arg(queue, "queue")?).await)?);
        Ok(())
    })
}

/// Gives a reserved job `visibility_ms` (at least 1) from now before it is
/// redelivered, e.g. for a long-running job that is still being worked on.
/// FM_ERR_CONFLICT if the job is no longer reserved by anyone (its
/// visibility already ran out, it was nacked or dead-lettered);
/// FM_ERR_NOT_FOUND if the queue has no such job (e.g. already acked);
/// FM_ERR_INVALID_ARGUMENT for visibility_ms 0.
#[no_mangle]
pub unsafe extern "C" fn fm_queue_extend(
    client: *mut fm_client,
    queue: *const c_char,
    job_id: u64,
    visibility_ms: u64,
) -> fm_status {
    call(client, async |c| c.client().extend(str_arg(queue, "queue")?, job_id, visibility_ms).await)
}

/// Changes a stream's configuration with the option keys of
/// fm_stream_create: "max_age_ms", "max_bytes", "max_messages" (0 =
/// unlimited) and "partitions" (may only grow: FM_ERR_INVALID_ARGUMENT
/// otherwise; keys then map to other partitions). Keys not set keep their
/// value; "tier" can not change. Retention applies to the messages already
/// stored from the next enforcement on (within about a second).
/// FM_ERR_INVALID_ARGUMENT if `opts` is NULL or sets none of these keys;
/// FM_ERR_NOT_FOUND if the stream does not exist; FM_ERR_UNAUTHORIZED on a
/// broker without an admin grant.
#[no_mangle]
pub unsafe extern "C" fn fm_stream_update(
    client: *mut fm_client,
    stream: *const c_char,
    opts: *const fm_options,
) -> fm_status {
    call(client, async |c| {
        let stream = str_arg(stream, "stream")?;
        ref_arg(opts, "opts")?;
        let update = options_or_default(opts).stream_update()?;
        c.client().update_stream(stream, update).await.map(|_| ())
    })
}
