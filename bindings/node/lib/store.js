'use strict';
// The document store (docs/STORE.md) over fm_store_call: buckets of JSON
// records, queries, schemas, transactions and live queries. Every request is
// one JSON object; errors keep the store's code (`storeCode`, e.g.
// 'VALIDATION_ERROR') and validation `details` next to the status class.

const { EventEmitter } = require('node:events');
const errors = require('./errors');

// Bounds one wait for a live result, so close() never waits longer.
const NEXT_TIMEOUT_MS = 200;

// The native detail of a failed store call is the store's error as JSON.
function storeError(err) {
  if (!(err instanceof errors.FlowMeshError)) return err;
  let body;
  try {
    body = JSON.parse(err.message);
  } catch {
    return err;
  }
  if (!body || typeof body.code !== 'string') return err;
  err.storeCode = body.code;
  err.details = body.details ?? null;
  err.message = `${body.code}: ${body.message}`;
  return err;
}

class Store {
  constructor(client) {
    this._client = client;
  }

  /** Runs one request {type: 'store.<op>', ...}; resolves with its result. */
  async call(request) {
    const text = JSON.stringify(request);
    if (typeof text !== 'string') throw new TypeError('a store request is a JSON object');
    try {
      return JSON.parse(await this._client._call('storeCall', [text]));
    } catch (err) {
      throw storeError(err);
    }
  }

  bucket(name) { return new Bucket(this, name); }

  async defineBucket(name, config = {}) { await this.call({ type: 'store.defineBucket', name, config }); }
  async updateBucket(name, updates) { await this.call({ type: 'store.updateBucket', name, updates }); }
  async getBucketSchema(name) { return await this.call({ type: 'store.getBucketSchema', name }); }
  async dropBucket(name) { await this.call({ type: 'store.dropBucket', name }); }
  async buckets() { return await this.call({ type: 'store.buckets' }); }
  async stats() { return await this.call({ type: 'store.stats' }); }

  async defineQuery(name, definition) { await this.call({ type: 'store.defineQuery', name, definition }); }
  async undefineQuery(name) { await this.call({ type: 'store.undefineQuery', name }); }
  async listQueries() { return await this.call({ type: 'store.listQueries' }); }
  async runQuery(query, params = {}) { return await this.call({ type: 'store.runQuery', query, params }); }

  /** Runs the operations atomically; resolves with one result per operation. */
  async transaction(operations) {
    return (await this.call({ type: 'store.transaction', operations })).results;
  }

  /**
   * Subscribes to a named query: the current result first, then a fresh one
   * after every change that alters it. With `handler`, it is called with each
   * result; without, iterate the subscription with for await.
   */
  async subscribe(query, params, handler) {
    if (typeof params === 'function') [params, handler] = [{}, params];
    if (typeof query !== 'string') throw new TypeError('query must be a string');
    let handle;
    try {
      handle = await this._client._call('storeSubscribe', [query, JSON.stringify(params ?? {})]);
    } catch (err) {
      throw storeError(err);
    }
    const sub = new LiveQuery(this._client, handle, handler);
    this._client._subs.add(sub);
    return sub;
  }
}

class Bucket {
  constructor(store, name) {
    this._store = store;
    this.name = name;
  }

  _call(type, fields = {}) { return this._store.call({ type: `store.${type}`, bucket: this.name, ...fields }); }

  insert(data) { return this._call('insert', { data }); }
  get(key) { return this._call('get', { key }); }
  update(key, data, options = {}) {
    const fields = { key, data };
    if (options.expectedVersion != null) fields.expectedVersion = options.expectedVersion;
    return this._call('update', fields);
  }
  async delete(key) { await this._call('delete', { key }); }
  all() { return this._call('all'); }
  where(filter) { return this._call('where', { filter }); }
  findOne(filter) { return this._call('findOne', { filter }); }
  count(filter) { return this._call('count', filter ? { filter } : {}); }
  first(n) { return this._call('first', { n }); }
  last(n) { return this._call('last', { n }); }
  paginate(options = {}) {
    const fields = { limit: options.limit ?? 10 };
    if (options.after != null) fields.after = options.after;
    return this._call('paginate', fields);
  }
  sum(field, filter) { return this._call('sum', { field, ...(filter ? { filter } : {}) }); }
  avg(field, filter) { return this._call('avg', { field, ...(filter ? { filter } : {}) }); }
  min(field, filter) { return this._call('min', { field, ...(filter ? { filter } : {}) }); }
  max(field, filter) { return this._call('max', { field, ...(filter ? { filter } : {}) }); }
  clear() { return this._call('clear'); }
}

// A live query. A pump takes results on a pool worker (a bounded wait each)
// and hands them to the handler, or queues them for the async iterator.
class LiveQuery extends EventEmitter {
  constructor(client, handle, handler) {
    super();
    this._client = client;
    this._handle = handle;
    this._handler = handler || null;
    this._queue = [];
    this._waiter = null;
    this._closing = false;
    this._inHandler = false;
    this._released = this._pump();
  }

  get closed() { return this._closing; }

  async _pump() {
    while (!this._closing) {
      let text;
      try {
        text = await this._client._internal('storeNext', [this._handle, NEXT_TIMEOUT_MS], true);
      } catch (err) {
        const e = storeError(err);
        if (e instanceof errors.ClosedError) break;
        // An evaluation failed (broker unreachable): reported, delivery goes on.
        if (this.listenerCount('error') > 0) this.emit('error', e);
        continue;
      }
      if (text === null) continue;
      await this._deliver(JSON.parse(text));
    }
    this._closing = true;
    this._wake();
    await this._client._internal('storeUnsubscribe', [this._handle]).catch(() => {});
    this._client._forget(this);
  }

  async _deliver(result) {
    if (this._handler) {
      this._inHandler = true;
      try {
        await this._handler(result);
      } catch (err) {
        if (this.listenerCount('error') > 0) this.emit('error', err);
      } finally {
        this._inHandler = false;
      }
      return;
    }
    this._queue.push(result);
    this._wake();
  }

  _wake() {
    const w = this._waiter;
    this._waiter = null;
    if (w) w();
  }

  async* [Symbol.asyncIterator]() {
    for (;;) {
      if (this._queue.length > 0) {
        yield this._queue.shift();
        continue;
      }
      if (this._closing) return;
      await new Promise((resolve) => { this._waiter = resolve; });
    }
  }

  /**
   * Stops delivery and frees the native subscription. Idempotent. Inside the
   * handler it resolves at once (the pump ends once the handler returned).
   */
  async close() {
    this._closing = true;
    this._wake();
    if (!this._inHandler) await this._released;
  }
}

if (Symbol.asyncDispose) {
  LiveQuery.prototype[Symbol.asyncDispose] = function dispose() { return this.close(); };
}

module.exports = { Store, Bucket, LiveQuery, storeError };
