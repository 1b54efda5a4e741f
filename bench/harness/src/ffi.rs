//! Workload 5: the embedded engine through the C ABI, no network. The
//! `fm_*` functions are the library's `pub unsafe extern "C" fn`s, called
//! directly: exactly the code a C, Go, Python or Node caller runs.

use std::ffi::{c_char, CStr, CString};
use std::ptr::{null, null_mut};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flowmesh::blocking::BlockingClient;
use flowmesh::ffi::client::{fm_client, fm_client_close, fm_client_connect};
use flowmesh::ffi::kv::{fm_kv_exists, fm_kv_set};
use flowmesh::ffi::options::{fm_options_free, fm_options_new, fm_options_set};
use flowmesh::ffi::queue::{
    fm_job, fm_job_free, fm_job_id, fm_jobs, fm_jobs_free, fm_jobs_get, fm_jobs_len,
    fm_queue_ack, fm_queue_enqueue, fm_queue_receive, fm_queue_reserve,
};
use flowmesh::ffi::args::fm_msg;
use flowmesh::ffi::stream::{fm_position, fm_publish, fm_publish_batch};
use flowmesh::error::Status;
use flowmesh::ffi::{fm_last_error, fm_status};
use flowmesh::{Options, Record};

use crate::stats::Outcome;

const FM_OK: fm_status = Status::FM_OK.code();
use crate::R;

fn check(s: fm_status, what: &str) -> R<()> {
    if s == FM_OK {
        return Ok(());
    }
    let msg = unsafe { CStr::from_ptr(fm_last_error()) }.to_string_lossy().into_owned();
    Err(format!("{what}: status {s}: {msg}").into())
}

pub struct CClient(*mut fm_client);

impl CClient {
    pub fn connect(url: &str, opts: &[(&str, &str)]) -> R<CClient> {
        let url = CString::new(url)?;
        unsafe {
            let o = fm_options_new();
            for (k, v) in opts {
                let (k, v) = (CString::new(*k)?, CString::new(*v)?);
                let s = fm_options_set(o, k.as_ptr(), v.as_ptr());
                if s != FM_OK {
                    fm_options_free(o);
                    check(s, "fm_options_set")?;
                }
            }
            let mut c = null_mut();
            let s = fm_client_connect(url.as_ptr(), o, &mut c);
            fm_options_free(o);
            check(s, "fm_client_connect")?;
            Ok(CClient(c))
        }
    }
}

impl Drop for CClient {
    fn drop(&mut self) {
        unsafe { fm_client_close(self.0) }
    }
}

fn msg(p: &[u8]) -> fm_msg {
    fm_msg {
        payload: p.as_ptr(),
        payload_len: p.len(),
        key: null(),
        key_len: 0,
        headers: null(),
        headers_len: 0,
    }
}

/// fm_publish_batch of `batch` messages per call, for `dur` (or `max` messages).
pub fn append_batch(url: &str, opts: &[(&str, &str)], size: usize, batch: usize, dur: Duration, max: u64) -> R<Outcome> {
    let c = CClient::connect(url, opts)?;
    let payload = vec![b'x'; size];
    let msgs: Vec<fm_msg> = (0..batch).map(|_| msg(&payload)).collect();
    let mut pos = vec![fm_position::default(); batch];
    let stream = CString::new("capi-append")?;
    let mut n = 0u64;
    unsafe {
        check(fm_publish_batch(c.0, stream.as_ptr(), msgs.as_ptr(), batch, pos.as_mut_ptr()), "warm-up")?;
        let start = Instant::now();
        while n < max && start.elapsed() < dur {
            check(fm_publish_batch(c.0, stream.as_ptr(), msgs.as_ptr(), batch, pos.as_mut_ptr()), "fm_publish_batch")?;
            n += batch as u64;
        }
        let el = start.elapsed();
        drop(c);
        Ok(Outcome::new(n, el).with_bytes(n * size as u64))
    }
}

/// Jobs through a mem:// queue via the C ABI: enqueue `chunk` jobs one call
/// each, then fm_queue_receive up to `chunk` and fm_queue_ack each.
/// `chunk` 1 uses fm_queue_reserve: the strict one-job round trip.
pub fn queue_cycle(url: &str, size: usize, chunk: usize, dur: Duration) -> R<Outcome> {
    let c = CClient::connect(url, &[])?;
    let payload = vec![b'x'; size];
    let m = msg(&payload);
    let q = CString::new("capi-jobs")?;
    let mut done = 0u64;
    let start = Instant::now();
    unsafe {
        while start.elapsed() < dur {
            for _ in 0..chunk {
                let mut id = 0u64;
                check(fm_queue_enqueue(c.0, q.as_ptr(), &m, 0, 0, &mut id), "fm_queue_enqueue")?;
            }
            if chunk == 1 {
                let mut job: *mut fm_job = null_mut();
                check(fm_queue_reserve(c.0, q.as_ptr(), 30_000, 0, &mut job), "fm_queue_reserve")?;
                if job.is_null() {
                    return Err("reserve gave no job".into());
                }
                check(fm_queue_ack(c.0, q.as_ptr(), fm_job_id(job)), "fm_queue_ack")?;
                fm_job_free(job);
                done += 1;
            } else {
                let mut left = chunk;
                while left > 0 {
                    let mut jobs: *mut fm_jobs = null_mut();
                    check(fm_queue_receive(c.0, q.as_ptr(), left, 30_000, 0, &mut jobs), "fm_queue_receive")?;
                    let n = fm_jobs_len(jobs);
                    for i in 0..n {
                        check(fm_queue_ack(c.0, q.as_ptr(), fm_job_id(fm_jobs_get(jobs, i))), "fm_queue_ack")?;
                    }
                    fm_jobs_free(jobs);
                    if n == 0 {
                        return Err("receive gave no jobs".into());
                    }
                    left -= n;
                    done += n as u64;
                }
            }
        }
    }
    Ok(Outcome::new(done, start.elapsed()))
}

#[derive(Clone, Copy, Debug)]
pub enum Path {
    /// `fm_*` through the C ABI.
    CAbi,
    /// `BlockingClient::block_on(client.op())` per call: the code the C ABI
    /// forwards to, minus the ABI layer.
    RustBlocking,
    /// `client.op().await` in one async loop: the Rust API without any
    /// per-call thread hand-off.
    RustAsync,
}

impl Path {
    pub fn label(self) -> &'static str {
        match self {
            Path::CAbi => "C ABI (fm_*)",
            Path::RustBlocking => "Rust blocking (block_on per call)",
            Path::RustAsync => "Rust async API (await in loop)",
        }
    }
}

/// ns per call of `fm_kv_exists` (or `fm_publish` of 128 B when `publish`)
/// on one named mem:// engine, through each path. The paths are
/// interleaved in `chunks` slices of `calls / chunks` calls (C, blocking,
/// async, C, ...), so machine noise hits all three alike; each path's figure
/// is the median slice.
pub fn overhead(publish: bool, calls: u64, chunks: u64, cell: u64) -> R<Vec<(Path, Outcome)>> {
    let url = format!("mem://ffi-{cell}");
    let bucket = CString::new("ffi")?;
    let key = CString::new("present")?;
    let stream = CString::new("ffi-stream")?;
    let payload = vec![b'x'; 128];
    let pb = Bytes::from(payload.clone());
    let m = msg(&payload);
    // The C handle and the blocking client share one engine (named mem://).
    let c = CClient::connect(&url, &[])?;
    let bc = BlockingClient::connect(&url, &Options::new())?;
    unsafe {
        check(
            fm_kv_set(c.0, bucket.as_ptr(), key.as_ptr(), b"v".as_ptr(), 1, 0, null_mut()),
            "fm_kv_set",
        )?;
    }
    let run = |path: Path, n: u64| -> R<Duration> {
        let start = Instant::now();
        match path {
            Path::CAbi => unsafe {
                let (bp, kp, sp): (*const c_char, *const c_char, *const c_char) =
                    (bucket.as_ptr(), key.as_ptr(), stream.as_ptr());
                let mut out = false;
                let mut pos = fm_position::default();
                for _ in 0..n {
                    let s = if publish {
                        fm_publish(c.0, sp, &m, &mut pos)
                    } else {
                        fm_kv_exists(c.0, bp, kp, &mut out)
                    };
                    if s != FM_OK {
                        check(s, "call")?;
                    }
                }
                if !publish && !out {
                    return Err("key should exist".into());
                }
            },
            Path::RustBlocking => {
                let cl = bc.client();
                for _ in 0..n {
                    if publish {
                        bc.block_on(cl.publish("ffi-stream", Record::new(pb.clone())))?;
                    } else {
                        bc.block_on(cl.kv_exists("ffi", "present"))?;
                    }
                }
            }
            Path::RustAsync => {
                let cl = bc.client();
                bc.block_on(async {
                    for _ in 0..n {
                        if publish {
                            cl.publish("ffi-stream", Record::new(pb.clone())).await?;
                        } else {
                            cl.kv_exists("ffi", "present").await?;
                        }
                    }
                    Ok::<(), flowmesh::Error>(())
                })?;
            }
        }
        Ok(start.elapsed())
    };
    let paths = [Path::CAbi, Path::RustBlocking, Path::RustAsync];
    let per = (calls / chunks).max(1);
    for p in paths {
        run(p, per / 2)?; // warm-up
    }
    let mut slices: Vec<Vec<f64>> = vec![Vec::new(); paths.len()];
    let mut totals = [Duration::ZERO; 3];
    for i in 0..chunks as usize {
        for k in 0..paths.len() {
            let k = (k + i) % paths.len();
            let d = run(paths[k], per)?;
            totals[k] += d;
            slices[k].push(d.as_nanos() as f64 / per as f64);
        }
    }
    bc.close();
    drop(c);
    let mut out = Vec::new();
    for (k, p) in paths.into_iter().enumerate() {
        let mut v = slices[k].clone();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let median = v[v.len() / 2];
        let mut o = Outcome::new(per * chunks, totals[k]);
        o.extra.push(("ns_per_call", serde_json::json!((median * 10.0).round() / 10.0)));
        o.extra.push(("ns_per_call_min_slice", serde_json::json!((v[0] * 10.0).round() / 10.0)));
        out.push((p, o));
    }
    Ok(out)
}

/// `count` calls of fm_kv_exists (or fm_publish) through the C ABI, for a profiler.
pub fn overhead_profile(publish: bool, count: u64) -> R<f64> {
    let c = CClient::connect("mem://", &[])?;
    let bucket = CString::new("ffi")?;
    let key = CString::new("present")?;
    let stream = CString::new("ffi-stream")?;
    let payload = vec![b'x'; 128];
    let m = msg(&payload);
    let start = Instant::now();
    unsafe {
        check(fm_kv_set(c.0, bucket.as_ptr(), key.as_ptr(), b"v".as_ptr(), 1, 0, null_mut()), "fm_kv_set")?;
        let mut out = false;
        let mut pos = fm_position::default();
        for _ in 0..count {
            let s = if publish {
                fm_publish(c.0, stream.as_ptr(), &m, &mut pos)
            } else {
                fm_kv_exists(c.0, bucket.as_ptr(), key.as_ptr(), &mut out)
            };
            check(s, "call")?;
        }
    }
    Ok(start.elapsed().as_nanos() as f64 / count as f64)
}
