'use strict';
// A live stream subscription or KV watch. Native callbacks (relayed by koffi to
// the main thread) only copy the event into `buffer` and return at once; the
// user's handler or for-await loop drains it. So a slow handler never holds a
// library dispatcher thread, and closing from inside a handler cannot deadlock.
//
// Consumer groups: the binding commits offsets itself (native auto_commit off),
// after the handler resolved or the loop asked for the next message, so a
// message is committed only once the application is done with it
// (at-least-once). Commits are coalesced to the newest offset per partition.

const { EventEmitter } = require('node:events');
const { koffi } = require('./native');
const keepalive = require('./keepalive');

// FIFO with O(1) shift (Array#shift is O(n) on long backlogs).
class Fifo {
  constructor() {
    this.items = [];
    this.head = 0;
  }

  get length() {
    return this.items.length - this.head;
  }

  push(x) {
    this.items.push(x);
  }

  shift() {
    const x = this.items[this.head];
    this.items[this.head++] = undefined;
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return x;
  }
}

class Subscription extends EventEmitter {
  // commit: null, or (partition, offset) => Promise for auto-commit.
  constructor(client, commit) {
    super();
    this._client = client;
    this._commit = commit;
    this._handle = null;
    this._cb = null;
    this._buffer = new Fifo();
    this._waiter = null;
    this._closing = null;
    this._handler = null;
    this._iterating = false;
    this._toCommit = new Map();
    this._committing = null;
    this._opening = Promise.resolve();
    keepalive.acquire();
  }

  /** True once close() started (explicitly, by the client, or a handler error). */
  get closed() {
    return this._closing !== null;
  }

  // Called from the native callback, on the main thread.
  _push(event) {
    if (this._closing) return;
    if (this._waiter) {
      const w = this._waiter;
      this._waiter = null;
      w(event);
    } else {
      this._buffer.push(event);
    }
  }

  _next() {
    if (this._buffer.length > 0) return Promise.resolve(this._buffer.shift());
    if (this._closing) return Promise.resolve(null);
    return new Promise((resolve) => { this._waiter = resolve; });
  }

  // cb: the koffi-registered callback; opening: Promise of the native handle.
  async _open(cb, opening, handler) {
    this._cb = cb;
    this._opening = opening.then((handle) => { this._handle = handle; });
    try {
      await this._opening;
    } catch (err) {
      await this.close();
      throw err;
    }
    if (handler) {
      this._handler = handler;
      this._runHandler();
    }
  }

  async _runHandler() {
    for (;;) {
      const event = await this._next();
      if (event === null) return;
      try {
        await this._handler(event);
      } catch (err) {
        this.close().catch(() => {});
        // Like an EventEmitter: without an 'error' listener the error is thrown.
        if (this.listenerCount('error') > 0) this.emit('error', err);
        else process.nextTick(() => { throw err; });
        return;
      }
      this._processed(event);
    }
  }

  _processed(event) {
    if (!this._commit || this._closing) return;
    this._toCommit.set(event.partition, event.offset);
    if (!this._committing) this._committing = this._commitLoop();
  }

  async _commitLoop() {
    while (this._toCommit.size > 0) {
      const batch = [...this._toCommit];
      this._toCommit.clear();
      await Promise.all(batch.map(([p, o]) => this._commit(p, o).catch((err) => {
        // A failed commit means redelivery later, never loss; report if asked.
        if (this.listenerCount('error') > 0) this.emit('error', err);
      })));
    }
    this._committing = null;
  }

  [Symbol.asyncIterator]() {
    if (this._handler) throw new TypeError('this subscription already has a handler');
    if (this._iterating) throw new TypeError('a subscription can be iterated only once');
    this._iterating = true;
    let last = null;
    const done = { value: undefined, done: true };
    return {
      next: async () => {
        if (last) this._processed(last);
        last = null;
        const event = await this._next();
        if (event === null) return done;
        last = event;
        return { value: event, done: false };
      },
      // break/return out of for-await: the current message counts as processed.
      return: async () => {
        if (last) this._processed(last);
        last = null;
        await this.close();
        return done;
      },
      [Symbol.asyncIterator]() { return this; },
    };
  }

  /** Stops delivery, commits what was processed, frees the native subscription. */
  close() {
    if (!this._closing) this._closing = this._shutdown();
    return this._closing;
  }

  async _shutdown() {
    // Wake a waiting consumer; undelivered events are dropped (uncommitted, so
    // a group gets them again).
    this._buffer = new Fifo();
    if (this._waiter) {
      const w = this._waiter;
      this._waiter = null;
      w(null);
    }
    try {
      await this._opening.catch(() => {});
      if (this._committing) await this._committing;
      // fm_unsubscribe waits for a running callback; that callback is parked
      // until the main thread runs it, which it can since we only await here.
      if (this._handle !== null) await this._client._internal('unsubscribe', [this._handle]);
    } finally {
      if (this._cb !== null) koffi.unregister(this._cb);
      this._cb = null;
      this._handle = null;
      this._client._forget(this);
      keepalive.release();
      this.emit('close');
    }
  }
}

// `await using x = ...` (explicit resource management) where the runtime has it.
if (Symbol.asyncDispose) {
  Subscription.prototype[Symbol.asyncDispose] = function dispose() { return this.close(); };
}

module.exports = { Subscription };
