//! Sequences of C ABI calls on one mem:// client: each input is a program of
//! publishes, reads, KV writes and compare-and-sets, queue round trips, pull
//! subscriptions with fuzzed options, listings, purges and calls through
//! made-up handles. Every call must return a defined status, never crash,
//! and what a call acknowledged must read back (a publish at its position,
//! a KV write with its revision).
#![no_main]

use std::ffi::{c_char, CStr, CString};
use std::ptr::{null, null_mut};
use std::sync::OnceLock;

use flowmesh::ffi::args::{fm_buf, fm_buf_data, fm_buf_free, fm_msg};
use flowmesh::ffi::client::{fm_client, fm_client_connect, fm_client_health};
use flowmesh::ffi::kv::*;
use flowmesh::ffi::options::{fm_options, fm_options_free, fm_options_new, fm_options_set};
use flowmesh::ffi::queue::*;
use flowmesh::ffi::resources::*;
use flowmesh::ffi::stream::*;
use flowmesh::ffi::{fm_status, fm_status_str};
use libfuzzer_sys::fuzz_target;

const OK: fm_status = 0;
const INVALID: fm_status = 1;
const CLOSED: fm_status = 6;

/// The client every input runs on (a handle is an id: stored as usize).
fn client() -> *mut fm_client {
    static CLIENT: OnceLock<usize> = OnceLock::new();
    *CLIENT.get_or_init(|| {
        let mut c = null_mut();
        let st = unsafe { fm_client_connect(c"mem://".as_ptr(), null(), &mut c) };
        assert_eq!(st, OK, "connect to mem://");
        c as usize
    }) as *mut fm_client
}

/// A status the header defines.
fn defined(st: fm_status) -> fm_status {
    let name = unsafe { CStr::from_ptr(fm_status_str(st)) };
    assert_ne!(name.to_bytes(), b"FM_ERR_UNKNOWN", "undefined status {st}");
    st
}

/// Reads the program: bytes, small numbers and strings, 0 once exhausted.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let Some((&b, rest)) = self.0.split_first() else { return 0 };
        self.0 = rest;
        b
    }
    fn u64(&mut self) -> u64 {
        (0..8).fold(0, |v, _| v << 8 | u64::from(self.byte()))
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = (self.byte() as usize % (max + 1)).min(self.0.len());
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        b.to_vec()
    }
    /// A C string: mostly one of a few valid names, sometimes raw bytes.
    fn name(&mut self) -> CString {
        const NAMES: [&str; 6] = ["s1", "s2", "q1", "t/ns/b1", "a.b-c_d", "x"];
        let b = self.byte();
        if b < 200 {
            return CString::new(NAMES[b as usize % NAMES.len()]).unwrap();
        }
        let raw: Vec<u8> = self.bytes(24).into_iter().map(|c| c.max(1)).collect();
        CString::new(raw).unwrap()
    }
}

unsafe fn buf_bytes(buf: *const fm_buf) -> Vec<u8> {
    let mut len = 0;
    let p = fm_buf_data(buf, &mut len);
    if p.is_null() {
        Vec::new()
    } else {
        std::slice::from_raw_parts(p, len).to_vec()
    }
}

fn msg(payload: &[u8]) -> fm_msg {
    fm_msg {
        payload: payload.as_ptr(),
        payload_len: payload.len(),
        key: null(),
        key_len: 0,
        headers: null(),
        headers_len: 0,
    }
}

unsafe fn options(input: &mut Input<'_>) -> *mut fm_options {
    const KEYS: [&str; 8] = ["group", "partition", "start", "auto_commit", "partitions", "max_messages", "tier", "nope"];
    let opts = fm_options_new();
    for _ in 0..input.byte() % 4 {
        let key = CString::new(KEYS[input.byte() as usize % KEYS.len()]).unwrap();
        let value: Vec<u8> = input.bytes(12).into_iter().map(|c| c.max(1)).collect();
        let value = CString::new(value).unwrap();
        defined(fm_options_set(opts, key.as_ptr(), value.as_ptr()));
    }
    opts
}

unsafe fn step(c: *mut fm_client, input: &mut Input<'_>) {
    match input.byte() % 10 {
        0 => {
            let (stream, payload) = (input.name(), input.bytes(64));
            let mut pos = fm_position::default();
            if defined(fm_publish(c, stream.as_ptr(), &msg(&payload), &mut pos)) == OK {
                let mut out = null_mut();
                assert_eq!(fm_read(c, stream.as_ptr(), pos.partition, pos.offset, 1, &mut out), OK);
                assert_eq!(fm_messages_len(out), 1, "an acknowledged publish reads back");
                let m = &*fm_messages_get(out, 0);
                assert_eq!(std::slice::from_raw_parts(m.payload, m.payload_len), &payload[..]);
                fm_messages_free(out);
            }
        }
        1 => {
            let (bucket, key, value) = (input.name(), input.name(), input.bytes(32));
            let mut rev = 0;
            let st = fm_kv_set(c, bucket.as_ptr(), key.as_ptr(), value.as_ptr(), value.len(), 0, &mut rev);
            if defined(st) == OK {
                let (mut out, mut got) = (null_mut(), 0);
                assert_eq!(fm_kv_get_entry(c, bucket.as_ptr(), key.as_ptr(), &mut out, &mut got), OK);
                assert_eq!((buf_bytes(out), got), (value, rev), "a KV write reads back with its revision");
                fm_buf_free(out);
            }
        }
        2 => {
            let (bucket, key, value, expected) = (input.name(), input.name(), input.bytes(16), input.byte());
            let mut rev = 0;
            let st = fm_kv_cas(c, bucket.as_ptr(), key.as_ptr(), value.as_ptr(), value.len(), expected.into(), &mut rev);
            defined(st);
            if defined(fm_kv_delete(c, bucket.as_ptr(), key.as_ptr())) == OK {
                let mut exists = true;
                assert_eq!(fm_kv_exists(c, bucket.as_ptr(), key.as_ptr(), &mut exists), OK);
                assert!(!exists, "a deleted key does not exist");
            }
        }
        3 => {
            let (queue, payload) = (input.name(), input.bytes(32));
            let (delay, priority) = (u64::from(input.byte() % 2), i32::from(input.byte() as i8));
            let mut id = 0;
            defined(fm_queue_enqueue(c, queue.as_ptr(), &msg(&payload), delay, priority, &mut id));
            let mut job = null_mut();
            if defined(fm_queue_reserve(c, queue.as_ptr(), 0, 0, &mut job)) == OK && !job.is_null() {
                let jid = fm_job_id(job);
                fm_job_free(job);
                let st = if input.byte() % 2 == 0 {
                    fm_queue_ack(c, queue.as_ptr(), jid)
                } else {
                    fm_queue_nack(c, queue.as_ptr(), jid, 0)
                };
                assert_eq!(st, OK, "a reserved job can be settled");
            }
            let mut stats = fm_queue_stats::default();
            defined(fm_queue_get_stats(c, queue.as_ptr(), &mut stats));
        }
        4 => {
            let stream = input.name();
            let opts = options(input);
            let mut sub = null_mut();
            if defined(fm_subscribe_pull(c, stream.as_ptr(), opts, &mut sub)) == OK {
                let mut out = null_mut();
                let max = usize::from(input.byte() % 4);
                if defined(fm_subscription_next(sub, max, 0, &mut out)) == OK {
                    fm_messages_free(out);
                }
                assert_eq!(fm_unsubscribe(sub), OK);
                assert_eq!(fm_unsubscribe(sub), CLOSED, "a handle is closed once");
            }
            fm_options_free(opts);
        }
        5 => {
            let stream = input.name();
            let opts = options(input);
            defined(fm_stream_create(c, stream.as_ptr(), opts));
            let mut n = 0;
            defined(fm_stream_partitions(c, stream.as_ptr(), &mut n));
            defined(fm_stream_update(c, stream.as_ptr(), opts));
            fm_options_free(opts);
        }
        6 => {
            let prefix = input.name();
            type List = unsafe extern "C" fn(*mut fm_client, *const c_char, *mut *mut fm_strings) -> fm_status;
            unsafe extern "C" fn keys(c: *mut fm_client, p: *const c_char, o: *mut *mut fm_strings) -> fm_status {
                fm_kv_list_keys(c, c"t/ns/b1".as_ptr(), p, o)
            }
            let lists: [List; 4] = [fm_streams_list, fm_queues_list, fm_kv_buckets_list, keys];
            let mut out = null_mut();
            if defined(lists[input.byte() as usize % 4](c, prefix.as_ptr(), &mut out)) == OK {
                for i in 0..fm_strings_len(out) {
                    assert!(!fm_strings_get(out, i).is_null());
                }
                fm_strings_free(out);
            }
        }
        7 => {
            let name = input.name();
            let mut removed = 0;
            defined(match input.byte() % 5 {
                0 => fm_stream_purge(c, name.as_ptr(), &mut removed),
                1 => fm_queue_purge(c, name.as_ptr(), &mut removed),
                2 => fm_stream_delete(c, name.as_ptr()),
                3 => fm_queue_delete(c, name.as_ptr()),
                _ => fm_kv_bucket_delete(c, name.as_ptr()),
            });
        }
        8 => {
            // A made-up handle: never a crash; CLOSED for any non-NULL id
            // that is not a live client.
            let fake = input.u64() as usize;
            if fake != c as usize {
                let st = fm_client_health(fake as *mut fm_client);
                assert_eq!(st, if fake == 0 { INVALID } else { CLOSED }, "handle {fake:#x}");
                let mut out = null_mut();
                let st = fm_subscription_next(fake as *mut fm_subscription, 1, 0, &mut out);
                assert!(st == INVALID || st == CLOSED, "subscription handle {fake:#x}: {st}");
            }
        }
        _ => {
            // NULL where a pointer is required.
            assert_eq!(fm_publish(c, null(), &msg(b"x"), null_mut()), INVALID);
            assert_eq!(fm_kv_get(c, c"b".as_ptr(), c"k".as_ptr(), null_mut()), INVALID);
            assert_eq!(fm_read(c, c"s1".as_ptr(), 0, 0, 1, null_mut()), INVALID);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let c = client();
    let mut input = Input(data);
    // At most 32 calls per input keeps one execution short.
    for _ in 0..32 {
        if input.0.is_empty() {
            break;
        }
        unsafe { step(c, &mut input) };
    }
    // Bound the engine's memory over millions of runs: drop everything now and then.
    if RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 4096 == 4095 {
        for name in [c"s1", c"s2", c"q1", c"t/ns/b1", c"a.b-c_d", c"x"] {
            unsafe {
                fm_stream_delete(c, name.as_ptr());
                fm_queue_delete(c, name.as_ptr());
                fm_kv_bucket_delete(c, name.as_ptr());
            }
        }
    }
});
