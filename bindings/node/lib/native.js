'use strict';
// koffi declarations of the flowmesh C ABI (docs/ABI.md).
// Loaded on the main thread (types, fm_status_str, callback decoding) and in
// every pool worker (the actual calls). Handles are BigInt addresses (koffi 3),
// which is what lets us pass them between threads.

const path = require('node:path');
const koffi = require('koffi');

const fs = require('node:fs');

const LIB = 'libflowmesh.so';
const PKG = path.resolve(__dirname, '..');

// Where the library may be, in order: the prebuilt one the npm package ships
// for this platform, the one its install step built from source, and the
// repository's own build (a checkout: bindings/node -> target/release).
function candidates() {
  return [
    path.join(PKG, 'prebuilds', `${process.platform}-${process.arch}`, LIB),
    path.join(PKG, 'build', LIB),
    path.resolve(PKG, '..', '..', 'target', 'release', LIB),
  ];
}

// $FLOWMESH_LIB wins; else the first candidate that exists. With none, the
// error names every place looked at.
function libraryPath() {
  if (process.env.FLOWMESH_LIB) return process.env.FLOWMESH_LIB;
  const places = candidates();
  const found = places.find((p) => fs.existsSync(p));
  if (found) return found;
  throw new Error(`flowmesh: ${LIB} not found (looked in ${places.join(', ')}): set FLOWMESH_LIB, ` +
    'or reinstall the package where a prebuilt library fits or cargo can build one');
}

// Types are registered once per thread: koffi keeps a per-instance type table.
let types = null;
function declareTypes() {
  if (types) return types;
  for (const name of ['fm_options', 'fm_client', 'fm_subscription', 'fm_messages',
    'fm_job', 'fm_jobs', 'fm_buf', 'fm_strings', 'fm_store_subscription', 'fm_rules_subscription']) {
    koffi.opaque(name);
  }
  const header = koffi.struct('fm_header', { key: 'const char *', value: 'const char *' });
  const msg = koffi.struct('fm_msg', {
    payload: 'const uint8_t *', payload_len: 'size_t',
    key: 'const uint8_t *', key_len: 'size_t',
    headers: 'const fm_header *', headers_len: 'size_t',
  });
  const position = koffi.struct('fm_position', { partition: 'uint32_t', offset: 'uint64_t' });
  // Incoming message: pointer members stay raw (void *) so we copy the exact byte
  // ranges ourselves instead of letting koffi guess lengths.
  const message = koffi.struct('fm_message', {
    stream: 'const char *', partition: 'uint32_t', offset: 'uint64_t', timestamp_ms: 'int64_t',
    key: 'void *', key_len: 'size_t',
    payload: 'void *', payload_len: 'size_t',
    headers: 'void *', headers_len: 'size_t',
  });
  const stats = koffi.struct('fm_queue_stats', {
    pending: 'uint64_t', in_flight: 'uint64_t', delayed: 'uint64_t', dead: 'uint64_t',
  });
  const retry = koffi.struct('fm_retry_policy', {
    max_attempts: 'uint32_t', initial_backoff_ms: 'uint64_t',
    max_backoff_ms: 'uint64_t', multiplier: 'double',
  });
  const messageCb = koffi.proto('void fm_message_cb(void *user_data, void *msg)');
  // key is taken as void * so a NULL key cannot crash the string decoder.
  const kvWatchCb = koffi.proto('void fm_kv_watch_cb(void *user_data, int op, void *key, void *value, size_t len, uint64_t revision)');
  // detail is void * too: it is NULL when the change has no cause.
  const stateCb = koffi.proto('void fm_state_cb(void *user_data, int state, int32_t cause, void *detail)');
  // ---- events (lib/events.js) ----
  koffi.opaque('fm_event');
  koffi.opaque('fm_event_subscription');
  const eventCb = koffi.proto('void fm_event_cb(void *user_data, void *ev)');
  types = { header, msg, position, message, stats, retry, messageCb, kvWatchCb, stateCb, eventCb };
  return types;
}

const PROTOTYPES = [
  'const char *fm_version(void)',
  'const char *fm_status_str(int32_t status)',
  'const char *fm_last_error(void)',

  'fm_options *fm_options_new(void)',
  'int32_t fm_options_set(fm_options *opts, const char *key, const char *value)',
  'void fm_options_free(fm_options *opts)',

  'int32_t fm_client_connect(const char *url, const fm_options *opts, _Out_ fm_client **out)',
  'int32_t fm_client_health(fm_client *c)',
  'int32_t fm_client_readiness(fm_client *c)',
  'void fm_client_close(fm_client *c)',
  'int32_t fm_client_on_state(fm_client *c, fm_state_cb *cb, void *user_data)',
  'int32_t fm_client_state(fm_client *c, _Out_ int *out)',

  'int32_t fm_stream_create(fm_client *c, const char *stream, const fm_options *opts)',
  'int32_t fm_stream_partitions(fm_client *c, const char *stream, _Out_ uint32_t *out)',
  'int32_t fm_publish(fm_client *c, const char *stream, const fm_msg *msg, _Out_ fm_position *out)',
  'int32_t fm_publish_with(fm_client *c, const char *subject, const fm_msg *msg, const fm_options *opts, _Out_ fm_position *out)',
  // out is a caller-sized byte buffer of n fm_position structs.
  'int32_t fm_publish_batch(fm_client *c, const char *stream, const fm_msg *msgs, size_t n, void *out)',
  'int32_t fm_read(fm_client *c, const char *stream, uint32_t partition, uint64_t offset, size_t max, _Out_ fm_messages **out)',
  'size_t fm_messages_len(const fm_messages *m)',
  'const fm_message *fm_messages_get(const fm_messages *m, size_t i)',
  'void fm_messages_free(fm_messages *m)',
  'int32_t fm_subscribe(fm_client *c, const char *stream, const fm_options *opts, fm_message_cb *cb, void *user_data, _Out_ fm_subscription **out)',
  'int32_t fm_subscribe_pull(fm_client *c, const char *stream, const fm_options *opts, _Out_ fm_subscription **out)',
  'int32_t fm_subscription_next(fm_subscription *sub, size_t max_messages, uint64_t timeout_ms, _Out_ fm_messages **out)',
  'int32_t fm_subscription_status(const fm_subscription *sub)',
  'int32_t fm_unsubscribe(fm_subscription *sub)',
  'int32_t fm_commit_offset(fm_client *c, const char *stream, const char *group, uint32_t partition, uint64_t offset)',
  'int32_t fm_get_offset(fm_client *c, const char *stream, const char *group, uint32_t partition, _Out_ uint64_t *out)',
  'int32_t fm_get_latest_offset(fm_client *c, const char *stream, uint32_t partition, _Out_ uint64_t *out)',

  'int32_t fm_queue_enqueue(fm_client *c, const char *queue, const fm_msg *msg, uint64_t delay_ms, int32_t priority, _Out_ uint64_t *job_id_out)',
  'int32_t fm_queue_reserve(fm_client *c, const char *queue, uint64_t visibility_ms, uint64_t wait_ms, _Out_ fm_job **out)',
  'int32_t fm_queue_receive(fm_client *c, const char *queue, size_t max_jobs, uint64_t visibility_ms, uint64_t wait_ms, _Out_ fm_jobs **out)',
  'uint64_t fm_job_id(const fm_job *job)',
  'uint32_t fm_job_attempt(const fm_job *job)',
  'int32_t fm_job_priority(const fm_job *job)',
  'void *fm_job_payload(const fm_job *job, _Out_ size_t *len_out)',
  'size_t fm_job_headers_len(const fm_job *job)',
  'void *fm_job_headers(const fm_job *job)',
  'void fm_job_free(fm_job *job)',
  'int32_t fm_queue_ack(fm_client *c, const char *queue, uint64_t job_id)',
  'int32_t fm_queue_nack(fm_client *c, const char *queue, uint64_t job_id, uint64_t delay_ms)',
  'int32_t fm_queue_get_stats(fm_client *c, const char *queue, _Out_ fm_queue_stats *out)',
  'int32_t fm_queue_set_retry_policy(fm_client *c, const char *queue, uint32_t max_attempts, uint64_t initial_backoff_ms, uint64_t max_backoff_ms, double multiplier)',
  'int32_t fm_queue_get_retry_policy(fm_client *c, const char *queue, _Out_ fm_retry_policy *out)',
  'int32_t fm_queue_dlq_list(fm_client *c, const char *queue, size_t max, _Out_ fm_jobs **out)',
  'size_t fm_jobs_len(const fm_jobs *jobs)',
  'const fm_job *fm_jobs_get(const fm_jobs *jobs, size_t i)',
  'void fm_jobs_free(fm_jobs *jobs)',
  'int32_t fm_queue_dlq_replay(fm_client *c, const char *queue, uint64_t job_id)',
  'int32_t fm_queue_dlq_replay_all(fm_client *c, const char *queue, const char *header_key, const char *header_value, _Out_ uint64_t *replayed_out)',

  'void *fm_buf_data(const fm_buf *buf, _Out_ size_t *len_out)',
  'void fm_buf_free(fm_buf *buf)',
  'int32_t fm_client_metrics(fm_client *c, _Out_ fm_buf **out)',
  'int32_t fm_kv_set(fm_client *c, const char *bucket, const char *key, const uint8_t *value, size_t len, uint64_t ttl_ms, _Out_ uint64_t *revision_out)',
  'int32_t fm_kv_cas(fm_client *c, const char *bucket, const char *key, const uint8_t *value, size_t len, uint64_t expected_revision, _Out_ uint64_t *revision_out)',
  'int32_t fm_kv_get(fm_client *c, const char *bucket, const char *key, _Out_ fm_buf **out)',
  'int32_t fm_kv_get_entry(fm_client *c, const char *bucket, const char *key, _Out_ fm_buf **value_out, _Out_ uint64_t *revision_out)',
  'int32_t fm_kv_delete(fm_client *c, const char *bucket, const char *key)',
  'int32_t fm_kv_exists(fm_client *c, const char *bucket, const char *key, _Out_ bool *out)',
  'int32_t fm_kv_list_keys(fm_client *c, const char *bucket, const char *prefix, _Out_ fm_strings **out)',
  'size_t fm_strings_len(const fm_strings *s)',
  'const char *fm_strings_get(const fm_strings *s, size_t i)',
  'void fm_strings_free(fm_strings *s)',

  // resource lifecycle
  'int32_t fm_streams_list(fm_client *c, const char *prefix, _Out_ fm_strings **out)',
  'int32_t fm_queues_list(fm_client *c, const char *prefix, _Out_ fm_strings **out)',
  'int32_t fm_kv_buckets_list(fm_client *c, const char *prefix, _Out_ fm_strings **out)',
  'int32_t fm_stream_delete(fm_client *c, const char *stream)',
  'int32_t fm_queue_delete(fm_client *c, const char *queue)',
  'int32_t fm_kv_bucket_delete(fm_client *c, const char *bucket)',
  'int32_t fm_stream_purge(fm_client *c, const char *stream, _Out_ uint64_t *removed_out)',
  'int32_t fm_queue_purge(fm_client *c, const char *queue, _Out_ uint64_t *removed_out)',
  'int32_t fm_queue_extend(fm_client *c, const char *queue, uint64_t job_id, uint64_t visibility_ms)',
  'int32_t fm_stream_update(fm_client *c, const char *stream, const fm_options *opts)',

  // document store: JSON strings out are owned (void *: decoded, then fm_string_free)
  'int32_t fm_store_call(fm_client *c, const char *request_json, _Out_ void **response_out)',
  'void fm_string_free(void *s)',
  'int32_t fm_store_subscribe(fm_client *c, const char *query, const char *params_json, _Out_ fm_store_subscription **out)',
  'int32_t fm_store_subscription_next(fm_store_subscription *sub, uint64_t timeout_ms, _Out_ void **result_out)',
  'int32_t fm_store_unsubscribe(fm_store_subscription *sub)',
  'int32_t fm_rules_call(fm_client *c, const char *request_json, _Out_ void **response_out)',
  'int32_t fm_procedures_call(fm_client *c, const char *request_json, _Out_ void **response_out)',
  'int32_t fm_rules_subscribe(fm_client *c, const char *pattern, _Out_ fm_rules_subscription **out)',
  'int32_t fm_rules_subscription_next(fm_rules_subscription *sub, uint64_t timeout_ms, _Out_ void **event_out)',
  'int32_t fm_rules_unsubscribe(fm_rules_subscription *sub)',
  'int32_t fm_kv_watch(fm_client *c, const char *bucket, const char *prefix, fm_kv_watch_cb *cb, void *user_data, _Out_ fm_subscription **out)',

  // ---- events (lib/events.js, docs/EVENTS.md) ----
  'int32_t fm_event_keygen(_Out_ fm_buf **secret_out, _Out_ fm_buf **public_out)',
  'int32_t fm_event_publish(fm_client *c, const char *event_name, const char **recipients, size_t n, const uint8_t *payload, size_t len, const char *metadata_json, _Out_ uint64_t *event_id_out)',
  'int32_t fm_event_subscribe(fm_client *c, const char *event_name, const fm_options *opts, fm_event_cb *cb, void *user_data, _Out_ fm_event_subscription **out)',
  'int32_t fm_event_ack(fm_event_subscription *sub, uint64_t id)',
  'int32_t fm_event_defer(fm_event_subscription *sub, uint64_t id, uint64_t delay_ms, const char *reason)',
  'int32_t fm_event_discard(fm_event_subscription *sub, uint64_t id, const char *reason)',
  'int32_t fm_event_replay(fm_event_subscription *sub, uint64_t id, _Out_ fm_event **out)',
  'int32_t fm_event_pause(fm_event_subscription *sub, const char *reason)',
  'int32_t fm_event_resume(fm_event_subscription *sub)',
  'int32_t fm_event_done(fm_event_subscription *sub, uint64_t id, int32_t status)',
  'int32_t fm_event_subscription_status(const fm_event_subscription *sub, _Out_ uint64_t *rejected_out)',
  'int32_t fm_event_unsubscribe(fm_event_subscription *sub)',
  'void fm_event_free(fm_event *ev)',
  'uint64_t fm_event_id(const fm_event *ev)',
  'const char *fm_event_name(const fm_event *ev)',
  'const char *fm_event_sender(const fm_event *ev)',
  'int64_t fm_event_timestamp_ms(const fm_event *ev)',
  'void *fm_event_payload(const fm_event *ev, _Out_ size_t *len_out)',
  'const char *fm_event_metadata(const fm_event *ev)',
  'uint32_t fm_event_delivery_count(const fm_event *ev)',
  'bool fm_event_encrypted(const fm_event *ev)',
];

let loaded = null;

// Loads the library once per thread. Throws a plain Error naming the path when
// the library is missing, so the cause is obvious.
function load() {
  if (loaded) return loaded;
  const file = libraryPath();
  let lib;
  try {
    lib = koffi.load(file);
  } catch (err) {
    throw new Error(`flowmesh: cannot load the native library ${file} (set FLOWMESH_LIB): ${err.message}`);
  }
  declareTypes();
  const fn = {};
  for (const proto of PROTOTYPES) {
    const f = lib.func(proto);
    fn[f.info.name] = f;
  }
  loaded = { file, fn, types };
  return loaded;
}

// Copies `len` bytes at a native address into a fresh, unshared Uint8Array
// (safe to transfer to another thread, and valid after the native memory dies).
function copyBytes(ptr, len) {
  const n = Number(len);
  const out = new Uint8Array(n);
  if (n > 0 && ptr) out.set(new Uint8Array(koffi.view(ptr, n)));
  return out;
}

function decodeHeaders(ptr, len) {
  const n = Number(len);
  const headers = {};
  if (n === 0 || !ptr) return headers;
  for (const h of koffi.decode(ptr, types.header, n)) headers[h.key] = h.value;
  return headers;
}

// Decodes a borrowed fm_message into plain JS data (payload/key copied).
// FM_OFFSET_NONE (UINT64_MAX, a memory-tier message or publish) as JS: -1.
const OFFSET_NONE = -1;
const SUBJECT_HEADER = 'fm-subject';
function offsetOf(raw) {
  return BigInt(raw) === 0xFFFFFFFFFFFFFFFFn ? OFFSET_NONE : Number(raw);
}

function decodeMessage(ptr) {
  const m = koffi.decode(ptr, types.message);
  const headers = decodeHeaders(m.headers, m.headers_len);
  const offset = offsetOf(m.offset);
  return {
    stream: m.stream,
    // The dotted subject it was published to, else the stream's short name.
    subject: headers[SUBJECT_HEADER] ?? m.stream.slice(m.stream.lastIndexOf('/') + 1),
    partition: m.partition,
    offset,
    live: offset === OFFSET_NONE,
    timestamp: Number(m.timestamp_ms),
    key: m.key && Number(m.key_len) > 0 ? copyBytes(m.key, m.key_len) : null,
    payload: copyBytes(m.payload, m.payload_len),
    headers,
  };
}

module.exports = { koffi, load, libraryPath, copyBytes, decodeHeaders, decodeMessage, offsetOf, OFFSET_NONE, SUBJECT_HEADER };
