//! Queues: enqueue, reserve, ack/nack, retry policy, dead-letter queue.

use std::ffi::{c_char, CString};

use super::args::*;
use super::args::{c_string, fm_header, fm_msg, record_arg, OwnedHeaders};
use super::call::{call, call_new, call_opt, call_out, new_out, run};
use super::client::fm_client;
use super::{fm_status, guard, guard_value};
use crate::engine::{Job, RetryPolicy};
use crate::error::Error;

/// A reserved (or dead-lettered) job. Owned by the caller when returned by
/// fm_queue_reserve (free with fm_job_free); borrowed when taken from an
/// fm_jobs list.
pub struct fm_job {
    job: Job,
    headers: OwnedHeaders,
    /// Header values as C strings, looked up by fm_job_header.
    header_values: Vec<(String, CString)>,
}

impl fm_job {
    fn new(job: Job) -> fm_job {
        let headers = OwnedHeaders::new(&job.headers);
        let header_values = job.headers.iter().map(|(k, v)| (k.clone(), c_string(v))).collect();
        fm_job { job, headers, header_values }
    }
}

/// A list of jobs. Free with fm_jobs_free (which frees the jobs in it).
pub struct fm_jobs {
    items: Vec<fm_job>,
}

impl fm_jobs {
    fn new(jobs: Vec<Job>) -> fm_jobs {
        fm_jobs { items: jobs.into_iter().map(fm_job::new).collect() }
    }
}

/// Queue counters.
#[repr(C)]
#[derive(Default)]
pub struct fm_queue_stats {
    /// Ready to be reserved now.
    pub pending: u64,
    /// Reserved and not yet acked, nacked or expired.
    pub in_flight: u64,
    /// Waiting for a delay or a retry backoff.
    pub delayed: u64,
    /// In the dead-letter queue.
    pub dead: u64,
}

/// What happens to failed jobs (nack or visibility timeout).
#[repr(C)]
#[derive(Default)]
pub struct fm_retry_policy {
    /// Deliveries before a job is dead-lettered; 0 = unlimited.
    pub max_attempts: u32,
    /// Backoff after the first failure; 0 = redeliver at once.
    pub initial_backoff_ms: u64,
    /// Upper bound of the backoff; 0 = none.
    pub max_backoff_ms: u64,
    /// Growth of the backoff per failed delivery.
    pub multiplier: f64,
}

/// Enqueues a job (queue created on first use). `delay_ms` 0 = ready now;
/// higher `priority` is reserved first, FIFO within a priority. The key of
/// `msg` is ignored. `job_id_out` may be NULL. Errors: INVALID_ARGUMENT,
/// TOO_LARGE, CLOSED, broker errors.
#[no_mangle]
pub unsafe extern "C" fn fm_queue_enqueue(
    client: *mut fm_client,
    queue: *const c_char,
    msg: *const fm_msg,
    delay_ms: u64,
    priority: i32,
    job_id_out: *mut u64,
) -> fm_status {
    call_opt(client, job_id_out, async |c| {
        let queue = str_arg(queue, "queue")?;
        let record = record_arg(msg)?;
        c.client().enqueue(queue, record, delay_ms, priority).await
    })
}

/// Reserves one job for `visibility_ms` (0 = 30000): unless acked in time it
/// is delivered again with attempt+1. Waits up to `wait_ms` for a job (no
/// busy polling). FM_OK with `*out == NULL` when none arrived; otherwise
/// `*out` is owned by the caller (fm_job_free).
#[no_mangle]
pub unsafe extern "C" fn fm_queue_reserve(
    client: *mut fm_client,
    queue: *const c_char,
    visibility_ms: u64,
    wait_ms: u64,
    out: *mut *mut fm_job,
) -> fm_status {
    guard(|| {
        let out = new_out(out, "out")?;
        let job = run(client, async |c| c.client().reserve(str_arg(queue, "queue")?, visibility_ms, wait_ms).await)?;
        if let Some(job) = job {
            *out = to_c(fm_job::new(job));
        }
        Ok(())
    })
}

/// Batch reserve: up to `max_jobs` (>= 1), waiting up to `wait_ms` for the
/// first. On FM_OK `*out` is owned by the caller (fm_jobs_free) and may hold
/// 0 jobs.
#[no_mangle]
pub unsafe extern "C" fn fm_queue_receive(
    client: *mut fm_client,
    queue: *const c_char,
    max_jobs: usize,
    visibility_ms: u64,
    wait_ms: u64,
    out: *mut *mut fm_jobs,
) -> fm_status {
    call_new(client, out, async |c| {
        let jobs = c.client().receive(str_arg(queue, "queue")?, max_jobs, visibility_ms, wait_ms).await?;
        Ok(fm_jobs::new(jobs))
    })
}

/// The job id (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn fm_job_id(job: *const fm_job) -> u64 {
    guard_value(0, || job.as_ref().map_or(0, |j| j.job.id))
}

/// Deliveries so far including this one: 1 on first delivery (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn fm_job_attempt(job: *const fm_job) -> u32 {
    guard_value(0, || job.as_ref().map_or(0, |j| j.job.attempt))
}

/// The job priority (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn fm_job_priority(job: *const fm_job) -> i32 {
    guard_value(0, || job.as_ref().map_or(0, |j| j.job.priority))
}

/// The payload, borrowed from `job`; its length goes to `*len_out` (may be
/// NULL). Returns NULL (length 0) for a NULL job.
#[no_mangle]
pub unsafe extern "C" fn fm_job_payload(job: *const fm_job, len_out: *mut usize) -> *const u8 {
    guard_value(std::ptr::null(), || match job.as_ref() {
        Some(j) => {
            write_opt(len_out, j.job.payload.len());
            j.job.payload.as_ptr()
        }
        None => {
            write_opt(len_out, 0);
            std::ptr::null()
        }
    })
}

/// The value of header `key`, borrowed from `job`; NULL if absent.
#[no_mangle]
pub unsafe extern "C" fn fm_job_header(job: *const fm_job, key: *const c_char) -> *const c_char {
    guard_value(std::ptr::null(), || {
        let (Some(j), Ok(key)) = (job.as_ref(), str_arg(key, "key")) else {
            return std::ptr::null();
        };
        j.header_values.iter().find(|(k, _)| k == key).map_or(std::ptr::null(), |(_, v)| v.as_ptr())
    })
}

/// Number of headers of `job` (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn fm_job_headers_len(job: *const fm_job) -> usize {
    guard_value(0, || job.as_ref().map_or(0, |j| j.headers.array.len()))
}

/// The headers of `job` (fm_job_headers_len entries), borrowed from `job`.
#[no_mangle]
pub unsafe extern "C" fn fm_job_headers(job: *const fm_job) -> *const fm_header {
    guard_value(std::ptr::null(), || job.as_ref().map_or(std::ptr::null(), |j| j.headers.array.as_ptr()))
}

/// Frees a job returned by fm_queue_reserve. NULL is a no-op. Never pass a
/// job borrowed from an fm_jobs list.
#[no_mangle]
pub unsafe extern "C" fn fm_job_free(job: *mut fm_job) {
    guard_value((), || drop(from_c(job)));
}

/// Acknowledges a job: it is done and removed. FM_ERR_NOT_FOUND if the job
/// is unknown, already acked or dead-lettered.
#[no_mangle]
pub unsafe extern "C" fn fm_queue_ack(client: *mut fm_client, queue: *const c_char, job_id: u64) -> fm_status {
    call(client, async |c| c.client().ack(str_arg(queue, "queue")?, job_id).await)
}

/// Gives a reserved job back: redelivered after `delay_ms` (0 = the retry
/// policy's backoff), or dead-lettered once max_attempts is reached.
/// FM_ERR_NOT_FOUND for an unknown job; FM_ERR_CONFLICT if it is not reserved.
#[no_mangle]
pub unsafe extern "C" fn fm_queue_nack(
    client: *mut fm_client,
    queue: *const c_char,
    job_id: u64,
    delay_ms: u64,
) -> fm_status {
    call(client, async |c| c.client().nack(str_arg(queue, "queue")?, job_id, delay_ms).await)
}

/// Fills `*out` with the queue's counters.
#[no_mangle]
pub unsafe extern "C" fn fm_queue_get_stats(
    client: *mut fm_client,
    queue: *const c_char,
    out: *mut fm_queue_stats,
) -> fm_status {
    call_out(client, out, async |c| {
        let s = c.client().queue_stats(str_arg(queue, "queue")?).await?;
        Ok(fm_queue_stats { pending: s.pending, in_flight: s.in_flight, delayed: s.delayed, dead: s.dead })
    })
}

/// Sets the retry policy: backoff after failed delivery n is
/// min(initial * multiplier^(n-1), max). `multiplier` must be >= 1.
/// `max_attempts` 0 = retry forever.
#[no_mangle]
pub unsafe extern "C" fn fm_queue_set_retry_policy(
    client: *mut fm_client,
    queue: *const c_char,
    max_attempts: u32,
    initial_backoff_ms: u64,
    max_backoff_ms: u64,
    multiplier: f64,
) -> fm_status {
    call(client, async |c| {
        let policy = RetryPolicy { max_attempts, initial_backoff_ms, max_backoff_ms, multiplier };
        c.client().set_retry_policy(str_arg(queue, "queue")?, policy).await
    })
}

/// Reads the retry policy into `*out`.
#[no_mangle]
pub unsafe extern "C" fn fm_queue_get_retry_policy(
    client: *mut fm_client,
    queue: *const c_char,
    out: *mut fm_retry_policy,
) -> fm_status {
    call_out(client, out, async |c| {
        let p = c.client().get_retry_policy(str_arg(queue, "queue")?).await?;
        Ok(fm_retry_policy {
            max_attempts: p.max_attempts,
            initial_backoff_ms: p.initial_backoff_ms,
            max_backoff_ms: p.max_backoff_ms,
            multiplier: p.multiplier,
        })
    })
}

/// Up to `max` dead-lettered jobs (0 = all), oldest first. On FM_OK `*out`
/// is owned by the caller (fm_jobs_free).
#[no_mangle]
pub unsafe extern "C" fn fm_queue_dlq_list(
    client: *mut fm_client,
    queue: *const c_char,
    max: usize,
    out: *mut *mut fm_jobs,
) -> fm_status {
    call_new(client, out, async |c| Ok(fm_jobs::new(c.client().dlq_list(str_arg(queue, "queue")?, max).await?)))
}

/// Number of jobs in `jobs` (0 for NULL).
#[no_mangle]
pub unsafe extern "C" fn fm_jobs_len(jobs: *const fm_jobs) -> usize {
    guard_value(0, || jobs.as_ref().map_or(0, |j| j.items.len()))
}

/// Job `i`, borrowed from `jobs` (never fm_job_free it); NULL if out of range.
#[no_mangle]
pub unsafe extern "C" fn fm_jobs_get(jobs: *const fm_jobs, i: usize) -> *const fm_job {
    guard_value(std::ptr::null(), || {
        jobs.as_ref().and_then(|j| j.items.get(i)).map_or(std::ptr::null(), |j| j as *const fm_job)
    })
}

/// Frees a job list and its jobs. NULL is a no-op.
#[no_mangle]
pub unsafe extern "C" fn fm_jobs_free(jobs: *mut fm_jobs) {
    guard_value((), || drop(from_c(jobs)));
}

/// Moves a dead-lettered job back to the queue (attempts reset).
/// FM_ERR_NOT_FOUND if it is not in the dead-letter queue.
#[no_mangle]
pub unsafe extern "C" fn fm_queue_dlq_replay(client: *mut fm_client, queue: *const c_char, job_id: u64) -> fm_status {
    call(client, async |c| c.client().dlq_replay(str_arg(queue, "queue")?, job_id).await)
}

/// Replays every dead-lettered job, or only those whose header `header_key`
/// equals `header_value` when `header_key` is not NULL. The count goes to
/// `*replayed_out` (may be NULL).
#[no_mangle]
pub unsafe extern "C" fn fm_queue_dlq_replay_all(
    client: *mut fm_client,
    queue: *const c_char,
    header_key: *const c_char,
    header_value: *const c_char,
    replayed_out: *mut u64,
) -> fm_status {
    call_opt(client, replayed_out, async |c| {
        let queue = str_arg(queue, "queue")?;
        let filter = match opt_str_arg(header_key, "header_key")? {
            Some(k) => {
                let v = str_arg(header_value, "header_value")
                    .map_err(|_| Error::invalid("header_value must be a UTF-8 string when header_key is set"))?;
                Some((k.to_owned(), v.to_owned()))
            }
            None => None,
        };
        c.client().dlq_replay_all(queue, filter).await
    })
}
