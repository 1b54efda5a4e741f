'use strict';
// The rules engine (docs/RULES.md) and procedures (docs/PROCEDURES.md) over
// fm_rules_call and fm_procedures_call: one JSON request per call, errors
// with the engine's code in `storeCode` (e.g. 'VALIDATION_ERROR'). The
// client's first rules or procedures call starts its rules evaluator.
// Topic subscriptions (fm_rules_subscribe) are pull subscriptions: events
// wait in the library until next() takes one on a pool worker.

const { EventEmitter } = require('node:events');
const errors = require('./errors');
const keepalive = require('./keepalive');
const { storeError } = require('./store');

// Bounds one native wait, so subscriptions take turns on the pool's workers
// for long calls. close() does not wait for it: unsubscribing wakes it.
const NEXT_TIMEOUT_MS = 200;

const closedError = () => errors.byName('FM_ERR_CLOSED', 'rules subscription is closed');

async function jsonCall(client, op, request) {
  const text = JSON.stringify(request);
  if (typeof text !== 'string') throw new TypeError('a request is a JSON object');
  try {
    return JSON.parse(await client._call(op, [text]));
  } catch (err) {
    throw storeError(err);
  }
}

class Rules {
  constructor(client) { this._client = client; }

  /** Runs one request {type: 'rules.<op>', ...}; resolves with its result. */
  async call(request) { return await jsonCall(this._client, 'rulesCall', request); }

  async emit(topic, data = {}, correlationId, causationId) {
    const req = { type: 'rules.emit', topic, data };
    if (correlationId !== undefined) req.correlationId = correlationId;
    if (causationId !== undefined) req.causationId = causationId;
    return await this.call(req);
  }

  async setFact(key, value) { return await this.call({ type: 'rules.setFact', key, value }); }
  async getFact(key) { return await this.call({ type: 'rules.getFact', key }); }
  async deleteFact(key) { return await this.call({ type: 'rules.deleteFact', key }); }
  async queryFacts(pattern) { return await this.call({ type: 'rules.queryFacts', pattern }); }
  async getAllFacts() { return await this.call({ type: 'rules.getAllFacts' }); }

  async registerRule(rule) { return await this.call({ type: 'rules.registerRule', rule }); }
  async enableRule(id) { return await this.call({ type: 'rules.enableRule', id }); }
  async disableRule(id) { return await this.call({ type: 'rules.disableRule', id }); }
  async getRule(id) { return await this.call({ type: 'rules.getRule', id }); }
  async getRules() { return await this.call({ type: 'rules.getRules' }); }
  async updateRule(id, updates) { return await this.call({ type: 'rules.updateRule', id, updates }); }
  async validateRule(rule) { return await this.call({ type: 'rules.validateRule', rule }); }
  async unregisterRule(id) { await this.call({ type: 'rules.unregisterRule', id }); }
  async stats() { return await this.call({ type: 'rules.stats' }); }

  /**
   * Subscribes to the events appended from now on whose topic matches
   * `pattern` ('orders.*': one segment, 'orders.>': all the rest), emitted by
   * clients or by rules. With `handler`, it is called as handler(event,
   * topic) for each, one at a time; without, take { topic, event } with
   * for await or next(). A malformed pattern is an InvalidArgumentError.
   */
  async subscribe(pattern, handler) {
    if (typeof pattern !== 'string') throw new TypeError('pattern must be a string');
    if (handler !== undefined && typeof handler !== 'function') throw new TypeError('handler must be a function');
    const sub = new TopicSubscription(this._client, pattern);
    // Registered first, so a client.close() during setup waits for it and ends it.
    this._client._subs.add(sub);
    try {
      await sub._open(this._client._call('rulesSubscribe', [pattern]));
    } catch (err) {
      await sub.close();
      throw storeError(err);
    }
    if (sub.closed) throw errors.byName('FM_ERR_CLOSED', 'client closed while subscribing');
    if (handler) sub._runHandler(handler);
    return sub;
  }
}

// One topic subscription. Nothing is pulled while nobody asks: next() takes
// one event (for await and the handler loop call it), so unread events wait
// in the library, not in memory here.
class TopicSubscription extends EventEmitter {
  constructor(client, pattern) {
    super();
    this._client = client;
    this.pattern = pattern;
    this._handle = null;
    this._opening = Promise.resolve();
    this._taking = Promise.resolve(); // the ABI wants one next at a time per subscription
    this._closing = null;
    this._handler = null;
    this._iterating = false;
    keepalive.acquire();
  }

  /** True once close() started (explicitly, by the client, or a failure). */
  get closed() {
    return this._closing !== null;
  }

  _open(opening) {
    this._opening = opening.then((handle) => { this._handle = handle; });
    return this._opening;
  }

  /**
   * The next matching event as { topic, event }. Rejects with ClosedError
   * once the subscription is closed, also when close() ends the wait.
   */
  next() {
    const took = this._taking.then(() => this._take());
    this._taking = took.catch(() => {});
    return took;
  }

  async _take() {
    for (;;) {
      if (this._closing) throw closedError();
      let text;
      try {
        text = await this._client._internal('rulesNext', [this._handle, NEXT_TIMEOUT_MS], true);
      } catch (err) {
        if (err instanceof errors.ClosedError) throw closedError();
        throw storeError(err);
      }
      if (text !== null) return JSON.parse(text);
    }
  }

  // A failure ends delivery; like an EventEmitter without an 'error'
  // listener, it is thrown then (as the stream subscriptions do).
  _fail(err) {
    this.close().catch(() => {});
    if (this.listenerCount('error') > 0) this.emit('error', err);
    else process.nextTick(() => { throw err; });
  }

  async _runHandler(handler) {
    this._handler = handler;
    for (;;) {
      let item;
      try {
        item = await this.next();
        await handler(item.event, item.topic);
      } catch (err) {
        if (!this._closing) this._fail(err);
        return;
      }
    }
  }

  [Symbol.asyncIterator]() {
    if (this._handler) throw new TypeError('this subscription already has a handler');
    if (this._iterating) throw new TypeError('a subscription can be iterated only once');
    this._iterating = true;
    const done = { value: undefined, done: true };
    return {
      next: async () => {
        try {
          return { value: await this.next(), done: false };
        } catch (err) {
          if (this._closing) return done; // closed: the loop ends
          this.close().catch(() => {});
          throw err;
        }
      },
      return: async () => {
        await this.close();
        return done;
      },
      [Symbol.asyncIterator]() { return this; },
    };
  }

  /**
   * Ends the subscription and frees it; a next() waiting meanwhile rejects
   * with ClosedError at once, and so does every later one. Idempotent.
   */
  close() {
    if (!this._closing) this._closing = this._shutdown();
    return this._closing;
  }

  async _shutdown() {
    try {
      await this._opening.catch(() => {});
      // Wakes a native next waiting on another worker (FM_ERR_CLOSED).
      if (this._handle !== null) await this._client._internal('rulesUnsubscribe', [this._handle]);
    } catch (err) {
      if (!(err instanceof errors.ClosedError)) throw err;
    } finally {
      this._client._forget(this);
      keepalive.release();
    }
    await this._taking;
  }
}

// `await using x = ...` (explicit resource management) where the runtime has it.
if (Symbol.asyncDispose) {
  TopicSubscription.prototype[Symbol.asyncDispose] = function dispose() { return this.close(); };
}

class Procedures {
  constructor(client) { this._client = client; }

  /** Runs one request {type: 'procedures.<op>', ...}; resolves with its result. */
  async request(request) { return await jsonCall(this._client, 'proceduresCall', request); }

  async register(procedure) { return await this.request({ type: 'procedures.register', procedure }); }
  /** Runs the steps atomically; resolves with {results: [...]}. */
  async call(name, params = {}) { return await this.request({ type: 'procedures.call', name, params }); }
  async get(name) { return await this.request({ type: 'procedures.get', name }); }
  async list() { return await this.request({ type: 'procedures.list' }); }
  async update(name, updates) { return await this.request({ type: 'procedures.update', name, updates }); }
  async unregister(name) { await this.request({ type: 'procedures.unregister', name }); }
}

module.exports = { Rules, Procedures, TopicSubscription };
