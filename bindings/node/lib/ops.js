'use strict';
// The native calls, run synchronously inside a pool worker (lib/worker.js).
// Each op makes its fm_ calls on one thread, so a failing call's fm_last_error()
// is read on the same thread, right after the call. Results are plain data:
// numbers, strings, Uint8Arrays (pushed to `transfer` so they move, not copy).

const { load, copyBytes, decodeHeaders, decodeMessage, offsetOf, koffi } = require('./native');

const { fn, types } = load();

class NativeFailure {
  constructor(status, message) {
    this.status = status;
    this.message = message;
  }
}

function check(status) {
  if (status !== 0) throw new NativeFailure(status, fn.fm_last_error() || '');
}

let transfer = [];
function takeTransfer() {
  const t = transfer;
  transfer = [];
  return t;
}
function out(bytes) {
  if (bytes.byteLength > 0) transfer.push(bytes.buffer);
  return bytes;
}

// [[key, value], ...] -> fm_options*, or null when there are none.
function withOptions(pairs, body) {
  if (!pairs || pairs.length === 0) return body(null);
  const opts = fn.fm_options_new();
  try {
    for (const [k, v] of pairs) check(fn.fm_options_set(opts, k, v));
    return body(opts);
  } finally {
    fn.fm_options_free(opts);
  }
}

// A zero-length payload still gets a valid (non-NULL) pointer: the ABI treats
// NULL as an invalid argument.
const EMPTY = new Uint8Array(1);
function cMsg(m) {
  const headers = m.headers || [];
  return {
    payload: m.payload.length ? m.payload : EMPTY, payload_len: m.payload.length,
    key: m.key ? m.key : null, key_len: m.key ? m.key.length : 0,
    headers: headers.length ? headers.map(([key, value]) => ({ key, value })) : null,
    headers_len: headers.length,
  };
}

// fm_strings* -> string[], freeing it.
function takeStrings(list) {
  try {
    const n = Number(fn.fm_strings_len(list));
    const items = [];
    for (let i = 0; i < n; i++) items.push(fn.fm_strings_get(list, i));
    return items;
  } finally {
    fn.fm_strings_free(list);
  }
}

// An owned C string -> JS string, freeing it.
function takeString(ptr) {
  try {
    return koffi.decode(ptr, 'char', -1);
  } finally {
    fn.fm_string_free(ptr);
  }
}

function listNames(f, c, prefix) {
  const s = [null];
  check(f(c, prefix, s));
  return takeStrings(s[0]);
}

function purged(f, c, name) {
  const n = [0];
  check(f(c, name, n));
  return Number(n[0]);
}

function decodeJob(job) {
  const len = [0];
  const data = fn.fm_job_payload(job, len);
  return {
    id: Number(fn.fm_job_id(job)),
    attempt: fn.fm_job_attempt(job),
    priority: fn.fm_job_priority(job),
    payload: out(copyBytes(data, len[0])),
    headers: decodeHeaders(fn.fm_job_headers(job), fn.fm_job_headers_len(job)),
  };
}

function decodeJobs(jobs) {
  try {
    const n = Number(fn.fm_jobs_len(jobs));
    const list = [];
    for (let i = 0; i < n; i++) list.push(decodeJob(fn.fm_jobs_get(jobs, i)));
    return list;
  } finally {
    fn.fm_jobs_free(jobs);
  }
}

function bufBytes(buf) {
  try {
    const len = [0];
    const data = fn.fm_buf_data(buf, len);
    return out(copyBytes(data, len[0]));
  } finally {
    fn.fm_buf_free(buf);
  }
}

// Copies every message out of an fm_messages list and frees it.
function decodeMessages(list) {
  try {
    const n = Number(fn.fm_messages_len(list));
    const msgs = [];
    for (let i = 0; i < n; i++) {
      const msg = decodeMessage(fn.fm_messages_get(list, i));
      out(msg.payload);
      if (msg.key) out(msg.key);
      msgs.push(msg);
    }
    return msgs;
  } finally {
    fn.fm_messages_free(list);
  }
}

const SLEEP = new Int32Array(new SharedArrayBuffer(4));
const POSITION_SIZE = koffi.sizeof(types.position);

const ops = {
  connect(url, pairs) {
    return withOptions(pairs, (opts) => {
      const c = [null];
      check(fn.fm_client_connect(url, opts, c));
      return c[0];
    });
  },
  close(c) { fn.fm_client_close(c); },
  health(c) { check(fn.fm_client_health(c)); },
  metrics(c) {
    const b = [null];
    check(fn.fm_client_metrics(c, b));
    return bufBytes(b[0]);
  },
  readiness(c) { check(fn.fm_client_readiness(c)); },

  // ---- streams
  createStream(c, stream, pairs) {
    withOptions(pairs, (opts) => check(fn.fm_stream_create(c, stream, opts)));
  },
  partitions(c, stream) {
    const n = [0];
    check(fn.fm_stream_partitions(c, stream, n));
    return n[0];
  },
  // A subject (the first token names the stream) in the tier `pairs` choose.
  publish(c, subject, msg, pairs) {
    return withOptions(pairs, (opts) => {
      const pos = {};
      check(fn.fm_publish_with(c, subject, cMsg(msg), opts, pos));
      return { partition: pos.partition, offset: offsetOf(pos.offset) };
    });
  },
  publishBatch(c, stream, msgs) {
    if (msgs.length === 0) return [];
    const buf = Buffer.alloc(POSITION_SIZE * msgs.length);
    check(fn.fm_publish_batch(c, stream, msgs.map(cMsg), msgs.length, buf));
    return koffi.decode(buf, types.position, msgs.length)
      .map((p) => ({ partition: p.partition, offset: Number(p.offset) }));
  },
  read(c, stream, partition, offset, max) {
    const m = [null];
    check(fn.fm_read(c, stream, partition, offset, max, m));
    return decodeMessages(m[0]);
  },
  // Pull mode: the library buffers at most 1024 messages ahead, then
  // back-pressures the feed; we take batches with `next` (lib/subscription.js).
  subscribePull(c, stream, pairs) {
    return withOptions(pairs, (opts) => {
      const sub = [null];
      check(fn.fm_subscribe_pull(c, stream, opts, sub));
      return sub[0];
    });
  },
  // Up to `max` messages, waiting up to timeoutMs for the first ([] on timeout).
  next(_c, sub, max, timeoutMs) {
    const m = [null];
    check(fn.fm_subscription_next(sub, max, timeoutMs, m));
    return decodeMessages(m[0]);
  },
  // Many pull subscriptions at once, without blocking on any one: polls each
  // (timeout 0), pausing 1..5 ms between empty rounds, until one has
  // messages or an error, or waitMs passed. One result per handle:
  // { msgs } or { status, message }.
  pollMany(_c, subs, max, waitMs) {
    const deadline = Date.now() + waitMs;
    let pause = 0;
    for (;;) {
      let any = false;
      const results = subs.map((sub) => {
        try {
          const msgs = ops.next(null, sub, max, 0);
          if (msgs.length > 0) any = true;
          return { msgs };
        } catch (err) {
          if (!(err instanceof NativeFailure)) throw err;
          any = true;
          return { status: err.status, message: err.message };
        }
      });
      if (any || Date.now() >= deadline) return results;
      pause = Math.min(5, pause + 1);
      Atomics.wait(SLEEP, 0, 0, pause);
    }
  },
  // Throws the error that ended a watch's (or subscription's) feed, if any.
  status(_c, sub) { check(fn.fm_subscription_status(sub)); },
  unsubscribe(_c, sub) { check(fn.fm_unsubscribe(sub)); },
  commitOffset(c, stream, group, partition, offset) {
    check(fn.fm_commit_offset(c, stream, group, partition, offset));
  },
  getOffset(c, stream, group, partition) {
    const o = [0];
    check(fn.fm_get_offset(c, stream, group, partition, o));
    return Number(o[0]);
  },
  latestOffset(c, stream, partition) {
    const o = [0];
    check(fn.fm_get_latest_offset(c, stream, partition, o));
    return Number(o[0]);
  },

  // ---- queues
  enqueue(c, queue, msg, delayMs, priority) {
    const id = [0];
    check(fn.fm_queue_enqueue(c, queue, cMsg(msg), delayMs, priority, id));
    return Number(id[0]);
  },
  reserve(c, queue, visibilityMs, waitMs) {
    const j = [null];
    check(fn.fm_queue_reserve(c, queue, visibilityMs, waitMs, j));
    if (!j[0]) return null;
    try {
      return decodeJob(j[0]);
    } finally {
      fn.fm_job_free(j[0]);
    }
  },
  receive(c, queue, max, visibilityMs, waitMs) {
    const j = [null];
    check(fn.fm_queue_receive(c, queue, max, visibilityMs, waitMs, j));
    return decodeJobs(j[0]);
  },
  ack(c, queue, id) { check(fn.fm_queue_ack(c, queue, id)); },
  nack(c, queue, id, delayMs) { check(fn.fm_queue_nack(c, queue, id, delayMs)); },
  stats(c, queue) {
    const s = {};
    check(fn.fm_queue_get_stats(c, queue, s));
    return {
      pending: Number(s.pending), inFlight: Number(s.in_flight),
      delayed: Number(s.delayed), dead: Number(s.dead),
    };
  },
  setRetryPolicy(c, queue, maxAttempts, initialBackoffMs, maxBackoffMs, multiplier) {
    check(fn.fm_queue_set_retry_policy(c, queue, maxAttempts, initialBackoffMs, maxBackoffMs, multiplier));
  },
  getRetryPolicy(c, queue) {
    const p = {};
    check(fn.fm_queue_get_retry_policy(c, queue, p));
    return {
      maxAttempts: p.max_attempts, initialBackoffMs: Number(p.initial_backoff_ms),
      maxBackoffMs: Number(p.max_backoff_ms), multiplier: p.multiplier,
    };
  },
  dlqList(c, queue, max) {
    const j = [null];
    check(fn.fm_queue_dlq_list(c, queue, max, j));
    return decodeJobs(j[0]);
  },
  dlqReplay(c, queue, id) { check(fn.fm_queue_dlq_replay(c, queue, id)); },
  dlqReplayAll(c, queue, headerKey, headerValue) {
    const n = [0];
    check(fn.fm_queue_dlq_replay_all(c, queue, headerKey, headerValue, n));
    return Number(n[0]);
  },

  // ---- key-value
  kvSet(c, bucket, key, value, ttlMs) {
    const rev = [0];
    check(fn.fm_kv_set(c, bucket, key, value.length ? value : EMPTY, value.length, ttlMs, rev));
    return Number(rev[0]);
  },
  kvCas(c, bucket, key, value, expected) {
    const rev = [0];
    check(fn.fm_kv_cas(c, bucket, key, value.length ? value : EMPTY, value.length, expected, rev));
    return Number(rev[0]);
  },
  kvGet(c, bucket, key) {
    const b = [null];
    check(fn.fm_kv_get(c, bucket, key, b));
    return bufBytes(b[0]);
  },
  kvGetEntry(c, bucket, key) {
    const b = [null];
    const rev = [0];
    check(fn.fm_kv_get_entry(c, bucket, key, b, rev));
    return { value: bufBytes(b[0]), revision: Number(rev[0]) };
  },
  kvDelete(c, bucket, key) { check(fn.fm_kv_delete(c, bucket, key)); },
  kvExists(c, bucket, key) {
    const e = [false];
    check(fn.fm_kv_exists(c, bucket, key, e));
    return Boolean(e[0]);
  },
  kvListKeys(c, bucket, prefix) {
    const s = [null];
    check(fn.fm_kv_list_keys(c, bucket, prefix, s));
    return takeStrings(s[0]);
  },
  // ---- resource lifecycle
  listStreams(c, prefix) { return listNames(fn.fm_streams_list, c, prefix); },
  listQueues(c, prefix) { return listNames(fn.fm_queues_list, c, prefix); },
  listBuckets(c, prefix) { return listNames(fn.fm_kv_buckets_list, c, prefix); },
  deleteStream(c, stream) { check(fn.fm_stream_delete(c, stream)); },
  deleteQueue(c, queue) { check(fn.fm_queue_delete(c, queue)); },
  deleteBucket(c, bucket) { check(fn.fm_kv_bucket_delete(c, bucket)); },
  purgeStream(c, stream) { return purged(fn.fm_stream_purge, c, stream); },
  purgeQueue(c, queue) { return purged(fn.fm_queue_purge, c, queue); },
  extend(c, queue, id, visibilityMs) { check(fn.fm_queue_extend(c, queue, id, visibilityMs)); },
  updateStream(c, stream, pairs) {
    withOptions(pairs, (opts) => check(fn.fm_stream_update(c, stream, opts)));
  },

  // ---- document store: JSON text in and out
  storeCall(c, request) {
    const out = [null];
    check(fn.fm_store_call(c, request, out));
    return takeString(out[0]);
  },
  storeSubscribe(c, query, params) {
    const sub = [null];
    check(fn.fm_store_subscribe(c, query, params, sub));
    return sub[0];
  },
  // The next result (JSON text), or null when none came within timeoutMs.
  storeNext(_c, sub, timeoutMs) {
    const out = [null];
    check(fn.fm_store_subscription_next(sub, timeoutMs, out));
    return out[0] ? takeString(out[0]) : null;
  },
  storeUnsubscribe(_c, sub) { check(fn.fm_store_unsubscribe(sub)); },
  rulesCall(c, request) {
    const out = [null];
    check(fn.fm_rules_call(c, request, out));
    return takeString(out[0]);
  },
  proceduresCall(c, request) {
    const out = [null];
    check(fn.fm_procedures_call(c, request, out));
    return takeString(out[0]);
  },
  rulesSubscribe(c, pattern) {
    const sub = [null];
    check(fn.fm_rules_subscribe(c, pattern, sub));
    return sub[0];
  },
  // The next event ({"topic", "event"} as JSON text), or null when none came
  // within timeoutMs.
  rulesNext(_c, sub, timeoutMs) {
    const out = [null];
    check(fn.fm_rules_subscription_next(sub, timeoutMs, out));
    return out[0] ? takeString(out[0]) : null;
  },
  rulesUnsubscribe(_c, sub) { check(fn.fm_rules_unsubscribe(sub)); },

  kvWatch(c, bucket, prefix, cb) {
    const sub = [null];
    check(fn.fm_kv_watch(c, bucket, prefix, cb, null, sub));
    return sub[0];
  },
};

// Events (lib/event-ops.js).
Object.assign(ops, require('./event-ops').eventOps(fn, check, out));

module.exports = { ops, NativeFailure, takeTransfer };
