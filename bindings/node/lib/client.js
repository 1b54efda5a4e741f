'use strict';
// The Promise API. Every method converts its arguments, runs one op in the
// worker pool (lib/ops.js) and converts the result: Uint8Array -> Buffer,
// native failures -> FlowMeshError subclasses.

const { koffi, load, copyBytes } = require('./native');
const errors = require('./errors');
const { pool } = require('./pool');
const { Subscription } = require('./subscription');
const { Store } = require('./store');
const { Rules, Procedures } = require('./rules');

// ---- library state on the main thread (status names, version) -----------

let mainLib = null;
function lib() {
  if (mainLib) return mainLib;
  mainLib = load();
  const { fn } = mainLib;
  const byName = new Map();
  for (let s = 0; s < 64; s++) {
    const name = fn.fm_status_str(s);
    if (name && !byName.has(name)) byName.set(name, s);
  }
  errors.bindStatusNames((s) => fn.fm_status_str(s) || `FM_STATUS_${s}`, (name) => byName.get(name));
  return mainLib;
}

/** The native library's semantic version, e.g. "0.1.0". */
function version() {
  return lib().fn.fm_version();
}

// ---- argument conversion ---------------------------------------------------

function toBuffer(u8) {
  return Buffer.from(u8.buffer, u8.byteOffset, u8.byteLength);
}

function bytes(value, what = 'payload') {
  if (typeof value === 'string') return Buffer.from(value, 'utf8');
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  throw new TypeError(`${what} must be a string, Buffer, Uint8Array or ArrayBuffer`);
}

function headerPairs(headers) {
  if (headers == null) return [];
  const entries = headers instanceof Map || Array.isArray(headers) ? [...headers] : Object.entries(headers);
  return entries.map(([k, v]) => [String(k), String(v)]);
}

// payload or { payload, key, headers } -> the plain shape ops.cMsg expects.
function outgoing(payload, opts = {}) {
  return {
    payload: bytes(payload),
    key: opts.key == null ? null : bytes(opts.key, 'key'),
    headers: headerPairs(opts.headers),
  };
}

// Per-publish options of fm_publish_with: tier, requireAck, timeoutMs.
function publishPairs(opts = {}) {
  const pairs = [];
  if (opts.tier != null) pairs.push(['tier', String(opts.tier)]);
  const ack = opts.requireAck ?? opts.require_ack;
  if (ack != null) pairs.push(['require_ack', ack ? 'true' : 'false']);
  const timeout = opts.timeoutMs ?? opts.timeout_ms;
  if (timeout != null) pairs.push(['timeout_ms', String(uint(timeout, 'timeoutMs'))]);
  return pairs;
}

function batchItem(item) {
  const isMsg = item !== null && typeof item === 'object' && 'payload' in item
    && !(item instanceof Uint8Array) && !(item instanceof ArrayBuffer);
  return isMsg ? outgoing(item.payload, item) : outgoing(item);
}

// Non-negative integer (number or bigint) for u32/u64 arguments.
function uint(value, name, fallback) {
  if (value === undefined || value === null) {
    if (fallback === undefined) throw new TypeError(`${name} is required`);
    return fallback;
  }
  if (typeof value === 'bigint' && value >= 0n) return value;
  if (Number.isSafeInteger(value) && value >= 0) return value;
  throw new TypeError(`${name} must be a non-negative integer`);
}

function int32(value, name, fallback) {
  if (value === undefined || value === null) return fallback;
  if (Number.isInteger(value) && value >= -0x80000000 && value <= 0x7fffffff) return value;
  throw new TypeError(`${name} must be a 32-bit integer`);
}

// { tenant: 'a', maxAgeMs: 5 } -> [['tenant','a'], ['max_age_ms','5']]. Keys are
// the native option names; camelCase is accepted for convenience.
function optionPairs(options, skip = []) {
  if (options == null) return [];
  if (typeof options !== 'object') throw new TypeError('options must be an object');
  const pairs = [];
  for (const [k, v] of Object.entries(options)) {
    if (v === undefined || v === null || skip.includes(k)) continue;
    pairs.push([k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`), String(v)]);
  }
  return pairs;
}

const KV_OPS = { 1: 'put', 2: 'delete', 3: 'expire' };

/** Connection states (fm_conn_state), by name. */
const ConnState = Object.freeze({
  CONNECTING: 'connecting',
  CONNECTED: 'connected',
  RECONNECTING: 'reconnecting',
  DISCONNECTED: 'disconnected',
  CLOSED: 'closed',
});
const STATES = [null, 'connecting', 'connected', 'reconnecting', 'disconnected', 'closed'];
const stateName = (n) => STATES[n] || `state-${n}`;
const POLL_SLICE_MS = 200;

function message(m) {
  m.payload = toBuffer(m.payload);
  if (m.key) m.key = toBuffer(m.key);
  return m;
}

function job(j) {
  j.payload = toBuffer(j.payload);
  return j;
}

// ---- the client --------------------------------------------------------------

class Client {
  constructor(handle, url) {
    this._handle = handle;
    this.url = url;
    this._state = 'open'; // open -> closing -> closed
    this._inflight = 0;
    this._drained = null;
    this._subs = new Set();
    this._closing = null;
    this._stateCbs = []; // koffi-registered state callbacks, unregistered after close
  }

  /**
   * The connection state: 'connecting' | 'connected' | 'reconnecting' |
   * 'disconnected' | 'closed' ('closed' once close() was called).
   */
  get state() {
    if (this._state !== 'open') return ConnState.CLOSED;
    // A quick native read on the main thread: the handle is alive until
    // _shutdown hands it to fm_client_close, after _state left 'open'.
    const { fn } = lib();
    const out = [0];
    const st = fn.fm_client_state(this._handle, out);
    if (st !== 0) throw errors.fromStatus(st, fn.fm_last_error());
    return stateName(out[0]);
  }

  /**
   * Adds a connection state listener: listener(state, error) is called with
   * the current state, then with every change in order, last with 'closed'
   * before close() resolves. `error` is the FlowMeshError that caused the
   * change, or null. Runs on the main thread (koffi relays the library's
   * listener thread, which waits meanwhile). At most 16 per client.
   */
  onState(listener) {
    if (typeof listener !== 'function') throw new TypeError('listener must be a function');
    if (this._state !== 'open') throw errors.byName('FM_ERR_CLOSED', 'client is closed');
    const { fn, types } = lib();
    const relay = (ud, state, cause, detailPtr) => {
      let error = null;
      if (cause !== 0) {
        error = errors.fromStatus(cause, detailPtr ? koffi.decode(detailPtr, 'char', -1) : '');
      }
      try {
        listener(stateName(state), error);
      } catch (err) {
        // Like a throwing EventEmitter listener: an uncaught exception, but
        // never thrown into the library's thread.
        process.nextTick(() => { throw err; });
      }
    };
    const cb = koffi.register(relay, koffi.pointer(types.stateCb));
    const st = fn.fm_client_on_state(this._handle, cb, null);
    if (st !== 0) {
      const err = errors.fromStatus(st, fn.fm_last_error());
      koffi.unregister(cb);
      throw err;
    }
    this._stateCbs.push(cb);
    return this;
  }

  /** True once close() was called. */
  get closed() {
    return this._state !== 'open';
  }

  // Runs an op for the user: refused once close() started.
  _call(op, args, long = false) {
    if (this._state !== 'open') return Promise.reject(errors.byName('FM_ERR_CLOSED', 'client is closed'));
    return this._run(op, args, long);
  }

  // Runs an op for the binding itself (commits, pulls, unsubscribes during close).
  _internal(op, args, long = false) {
    if (this._state === 'closed') return Promise.reject(errors.byName('FM_ERR_CLOSED', 'client is closed'));
    return this._run(op, args, long);
  }

  // An async function with no other reaction on its promise, so errors carry
  // the caller's async stack trace. Counts calls in flight for close().
  async _run(op, args, long) {
    this._inflight++;
    try {
      const reply = await pool().run(op, [this._handle, ...args], long);
      return settle(reply);
    } finally {
      if (--this._inflight === 0 && this._drained) this._drained();
    }
  }

  _forget(sub) {
    this._subs.delete(sub);
  }

  async health() { await this._call('health', []); }
  async readiness() { await this._call('readiness', []); }

  /** This client's metrics in the Prometheus text format (see README: Metrics). */
  async metrics() {
    return Buffer.from(await this._call('metrics', [])).toString('utf8');
  }

  // ---- streams

  async createStream(stream, options) {
    await this._call('createStream', [stream, optionPairs(options)]);
  }

  async partitions(stream) {
    return await this._call('partitions', [stream]);
  }

  async publish(subject, payload, options) {
    return await this._call('publish', [subject, outgoing(payload, options), publishPairs(options)]);
  }

  async publishBatch(stream, items) {
    if (!Array.isArray(items)) throw new TypeError('items must be an array');
    return await this._call('publishBatch', [stream, items.map(batchItem)]);
  }

  async read(stream, options = {}) {
    const list = await this._call('read', [stream,
      uint(options.partition, 'partition', 0), uint(options.offset, 'offset', 0),
      uint(options.max, 'max', 100)]);
    return list.map(message);
  }

  async subscribe(stream, options, handler) {
    if (typeof options === 'function') [options, handler] = [undefined, options];
    const opts = { ...(options || {}) };
    const autoCommit = opts.autoCommit ?? opts.auto_commit;
    const group = opts.group;
    const ours = group != null && autoCommit !== false && autoCommit !== 'false';
    if (group != null) {
      // With a group the binding commits after processing (see subscription.js).
      delete opts.autoCommit;
      opts.auto_commit = false;
    }
    const commit = ours
      // The stream each message names: `stream` may be a subject pattern.
      ? (p, o, s) => this._internal('commitOffset', [s, String(group), p, o])
      : null;
    if (handler !== undefined && typeof handler !== 'function') throw new TypeError('handler must be a function');
    if (this._state !== 'open') throw errors.byName('FM_ERR_CLOSED', 'client is closed');
    // Pull mode: no callback; the subscription's pump takes batches (subscription.js).
    const sub = new Subscription(this, commit, message);
    this._subs.add(sub);
    await sub._open(null, this._call('subscribePull', [stream, optionPairs(opts)]), handler, true);
    return sub;
  }

  async _subscribe(makeCallback, op, args, commit, handler) {
    if (handler !== undefined && typeof handler !== 'function') throw new TypeError('handler must be a function');
    if (this._state !== 'open') throw errors.byName('FM_ERR_CLOSED', 'client is closed');
    const { types } = lib();
    const sub = new Subscription(this, commit);
    this._subs.add(sub);
    const cb = koffi.register(makeCallback(sub), koffi.pointer(types.kvWatchCb));
    await sub._open(cb, this._call(op, [...args, cb]), handler);
    return sub;
  }

  async commitOffset(stream, group, partition, offset) {
    return await this._call('commitOffset', [stream, group, uint(partition, 'partition'), uint(offset, 'offset')]);
  }

  /** The group's committed offset, or null when it has none. */
  async getOffset(stream, group, partition = 0) {
    try {
      return await this._call('getOffset', [stream, group, uint(partition, 'partition')]);
    } catch (err) {
      if (err instanceof errors.NotFoundError) return null;
      throw err;
    }
  }

  async latestOffset(stream, partition = 0) {
    return await this._call('latestOffset', [stream, uint(partition, 'partition')]);
  }

  // ---- queues

  async enqueue(queue, payload, options = {}) {
    return await this._call('enqueue', [queue, outgoing(payload, options),
      uint(options.delayMs, 'delayMs', 0), int32(options.priority, 'priority', 0)]);
  }

  async reserve(queue, options = {}) {
    const visibility = uint(options.visibilityMs, 'visibilityMs', 30000);
    const j = await this._longPoll(uint(options.waitMs, 'waitMs', 0),
      (wait) => this._call('reserve', [queue, visibility, wait], wait > 0), (r) => r !== null);
    return j && job(j);
  }

  async receive(queue, options = {}) {
    const max = uint(options.max, 'max', 10);
    const visibility = uint(options.visibilityMs, 'visibilityMs', 30000);
    const jobs = await this._longPoll(uint(options.waitMs, 'waitMs', 0),
      (wait) => this._call('receive', [queue, max, visibility, wait], wait > 0), (r) => r.length > 0);
    return jobs.map(job);
  }

  // Long polls run as native waits of at most POLL_SLICE_MS, so close() is
  // never stuck behind one: the next slice after close() started rejects with
  // ClosedError. (The library cannot interrupt a blocked call; see NOTES.)
  async _longPoll(waitMs, call, got) {
    const deadline = Date.now() + Number(waitMs);
    for (;;) {
      const left = Math.max(0, deadline - Date.now());
      const result = await call(Math.min(left, POLL_SLICE_MS));
      if (got(result) || left <= POLL_SLICE_MS) return result;
    }
  }

  async ack(queue, jobId) { await this._call('ack', [queue, uint(jobId, 'jobId')]); }

  async nack(queue, jobId, options = {}) {
    await this._call('nack', [queue, uint(jobId, 'jobId'), uint(options.delayMs, 'delayMs', 0)]);
  }

  async stats(queue) {
    return await this._call('stats', [queue]);
  }

  async setRetryPolicy(queue, policy = {}) {
    const multiplier = policy.multiplier ?? 2;
    if (typeof multiplier !== 'number') throw new TypeError('multiplier must be a number');
    await this._call('setRetryPolicy', [queue, uint(policy.maxAttempts, 'maxAttempts'),
      uint(policy.initialBackoffMs, 'initialBackoffMs', 0), uint(policy.maxBackoffMs, 'maxBackoffMs', 0),
      multiplier]);
  }

  async getRetryPolicy(queue) {
    return await this._call('getRetryPolicy', [queue]);
  }

  async dlqList(queue, options = {}) {
    const jobs = await this._call('dlqList', [queue, uint(options.max, 'max', 100)]);
    return jobs.map(job);
  }

  async dlqReplay(queue, jobId) { await this._call('dlqReplay', [queue, uint(jobId, 'jobId')]); }

  /** Replays every dead job, or only those whose header `key` equals `value`. */
  async dlqReplayAll(queue, filter = {}) {
    const hasKey = filter.headerKey != null;
    return await this._call('dlqReplayAll', [queue, hasKey ? String(filter.headerKey) : null,
      hasKey ? String(filter.headerValue ?? '') : null]);
  }

  // ---- key-value

  async set(bucket, key, value, options = {}) {
    return await this._call('kvSet', [bucket, key, bytes(value, 'value'), uint(options.ttlMs, 'ttlMs', 0)]);
  }

  /** expectedRevision 0 means "the key must not exist". */
  async cas(bucket, key, value, expectedRevision) {
    return await this._call('kvCas', [bucket, key, bytes(value, 'value'), uint(expectedRevision, 'expectedRevision')]);
  }

  /** The value as a Buffer, or null when the key is absent. */
  async get(bucket, key) {
    try {
      return toBuffer(await this._call('kvGet', [bucket, key]));
    } catch (err) {
      if (err instanceof errors.NotFoundError) return null;
      throw err;
    }
  }

  /** { value, revision }, or null when the key is absent. */
  async getEntry(bucket, key) {
    try {
      const e = await this._call('kvGetEntry', [bucket, key]);
      return { value: toBuffer(e.value), revision: e.revision };
    } catch (err) {
      if (err instanceof errors.NotFoundError) return null;
      throw err;
    }
  }

  async delete(bucket, key) { await this._call('kvDelete', [bucket, key]); }

  async exists(bucket, key) {
    return await this._call('kvExists', [bucket, key]);
  }

  async listKeys(bucket, prefix = '') {
    return await this._call('kvListKeys', [bucket, prefix]);
  }

  // ---- document store

  /** The document store of this client's tenant and namespace. */
  get store() {
    if (!this._store) this._store = new Store(this);
    return this._store;
  }

  /** The rules engine of this client's tenant and namespace (docs/RULES.md). */
  get rules() { return (this._rules ??= new Rules(this)); }

  /** The procedures of this client's tenant and namespace (docs/PROCEDURES.md). */
  get procedures() { return (this._procedures ??= new Procedures(this)); }

  // ---- resource lifecycle

  async listStreams(prefix = '') { return await this._call('listStreams', [prefix]); }

  async listQueues(prefix = '') { return await this._call('listQueues', [prefix]); }

  async listBuckets(prefix = '') { return await this._call('listBuckets', [prefix]); }

  async deleteStream(stream) { await this._call('deleteStream', [stream]); }

  async deleteQueue(queue) { await this._call('deleteQueue', [queue]); }

  async deleteBucket(bucket) { await this._call('deleteBucket', [bucket]); }

  async purgeStream(stream) { return await this._call('purgeStream', [stream]); }

  async purgeQueue(queue) { return await this._call('purgeQueue', [queue]); }

  async extend(queue, jobId, visibilityMs) {
    const ms = uint(visibilityMs, 'visibilityMs');
    if (Number(ms) < 1) throw new RangeError('visibilityMs must be at least 1');
    await this._call('extend', [queue, uint(jobId, 'jobId'), ms]);
  }

  async updateStream(stream, options) {
    const pairs = optionPairs(options);
    if (pairs.length === 0) throw new TypeError('updateStream needs at least one setting to change');
    await this._call('updateStream', [stream, pairs]);
  }

  async watch(bucket, prefix, handler) {
    if (typeof prefix === 'function') [prefix, handler] = ['', prefix];
    const onEvent = (sub) => (ud, op, keyPtr, valuePtr, len, revision) => {
      sub._push({
        op: KV_OPS[op] || String(op),
        key: keyPtr ? koffi.decode(keyPtr, 'char', -1) : '',
        value: op === 1 ? toBuffer(copyBytes(valuePtr, len)) : null,
        revision: Number(revision),
      });
    };
    return await this._subscribe(onEvent, 'kvWatch', [bucket, prefix ?? ''], null, handler);
  }

  // ---- lifecycle

  /**
   * Closes subscriptions (committing what was processed), waits for calls in
   * flight, then closes the native client. Idempotent. Safe inside a handler.
   */
  close() {
    if (!this._closing) this._closing = this._shutdown();
    return this._closing;
  }

  async _shutdown() {
    this._state = 'closing';
    // A failing unsubscribe must not keep the native client open.
    await Promise.allSettled([...this._subs].map((s) => s.close().then(() => s._released)));
    // Calls in flight finish first: fm_client_close racing a blocked call is
    // not clean in the library yet.
    while (this._inflight > 0) await new Promise((resolve) => { this._drained = resolve; });
    this._drained = null;
    this._state = 'closed';
    try {
      // Joins the state listener threads: each gets 'closed' first, relayed
      // to this (free) main thread while the worker waits.
      await pool().run('close', [this._handle], true).then(settle);
    } finally {
      for (const cb of this._stateCbs) koffi.unregister(cb);
      this._stateCbs = [];
    }
  }
}

// `await using x = ...` (explicit resource management) where the runtime has it.
if (Symbol.asyncDispose) {
  Client.prototype[Symbol.asyncDispose] = function dispose() { return this.close(); };
}

// Worker reply -> result, or the matching error.
function settle(reply) {
  if (reply.status !== undefined) throw errors.fromStatus(reply.status, reply.message);
  if (reply.jsError) {
    const Cls = reply.jsError.name === 'TypeError' ? TypeError : Error;
    throw new Cls(reply.jsError.message);
  }
  return reply.result;
}

/** Connects to `url` (mem://, file:///dir, grpc://host:port, grpcs://...). */
async function connect(url, options) {
  if (typeof url !== 'string') throw new TypeError('url must be a string');
  lib();
  const handle = settle(await pool().run('connect', [url, optionPairs(options)]));
  return new Client(handle, url);
}

module.exports = { connect, Client, ConnState, version };
