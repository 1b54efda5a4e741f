'use strict';
// A live stream subscription or KV watch, drained by the user's handler or
// for-await loop from `buffer`.
//
// Stream subscriptions use the library's pull mode: a pump (below) takes
// batches with fm_subscription_next on a pool worker, and only while fewer
// than BATCH events wait in JS. So a slow consumer back-pressures the library
// (which buffers at most 1024 messages ahead, then stops reading the feed)
// instead of growing memory. An error that ends the feed (broker gone after
// max_reconnect_attempts) is delivered after the buffered messages: the loop
// throws it, a handler subscription emits 'error'.
//
// KV watches are callback-based (the library has no pull mode for them):
// callbacks, relayed by koffi to the main thread, only copy the event into
// `buffer`. A watch whose feed died calls nothing more, so while it is idle
// we ask fm_subscription_status every WATCH_CHECK_MS and end it with that error.
//
// Consumer groups: the binding commits offsets itself (native auto_commit off,
// because pull mode's auto_commit would commit what the pump prefetched, not
// what the application finished), after the handler resolved or the loop
// asked for the next message, so a message is committed only once the
// application is done with it (at-least-once). Commits are coalesced to the
// newest offset per partition.

const { EventEmitter } = require('node:events');
const { koffi } = require('./native');
const keepalive = require('./keepalive');

const { pool } = require('./pool');
const errors = require('./errors');

const BATCH = 256; // messages per fm_subscription_next; also the JS buffer's refill mark
const NEXT_TIMEOUT_MS = 200; // bounds how long close() waits for a pull in flight
const POLL_MAX_MS = 20; // poll mode: longest pause between empty pulls
const WATCH_CHECK_MS = 1000;

// Pull subscriptions that block in fm_subscription_next. Such a pull holds a
// pool worker for up to NEXT_TIMEOUT_MS, and the pool lets long calls hold at
// most max-1 workers: with more subscriptions than that they would wait for
// each other (measured: 20 idle subscriptions, p50 delivery latency 437 ms).
// So only the first max-2 subscriptions (one worker kept for queue long polls)
// pull on their own; the others share the Poller, which polls all of them in
// one worker call (ops.pollMany). Measured: ~1% CPU per idle blocking
// subscription, ~8% for 100 idle polled ones; a poll costs ~1.1 ms per idle
// subscription in the library today (fm_subscription_next with timeout 0
// still arms a 1 ms timer), so polled delivery latency grows with their
// number (p50 ~20 ms with 20, ~140 ms with 100).
let blocking = 0;
const POLL_WAIT_MS = 50; // one pollMany round at most; bounds close() and joins

class Poller {
  constructor() {
    this.subs = new Set();
    this.running = null;
    this.kick = null;
  }

  add(sub) {
    this.subs.add(sub);
    this.wake();
    if (!this.running) this.running = this.loop();
  }

  wake() {
    const k = this.kick;
    this.kick = null;
    if (k) k();
  }

  async loop() {
    while (this.subs.size > 0) {
      const round = [...this.subs].filter((s) => !s._closing && s._buffer.length < BATCH);
      if (round.length === 0) {
        await new Promise((resolve) => { this.kick = resolve; });
        continue;
      }
      const reply = pool().run('pollMany', [null, round.map((s) => s._handle), BATCH, POLL_WAIT_MS], true);
      const done = reply.then(() => {}, () => {});
      for (const s of round) s._pumping = done;
      let results;
      try {
        const r = await reply;
        if (r.status !== undefined || r.jsError) throw new Error(r.message || r.jsError.message);
        results = r.result;
      } catch (err) {
        results = round.map(() => ({ error: err }));
      }
      round.forEach((s, i) => {
        const x = results[i];
        if (x.msgs) {
          for (const m of x.msgs) s._push(s._decode(m));
        } else {
          this.subs.delete(s);
          s._fail(x.error || errors.fromStatus(x.status, x.message));
        }
      });
    }
    this.running = null;
  }
}

let poller = null;
// Marks the error that ends a feed, queued behind the events before it.
class Failure {
  constructor(error) {
    this.error = error;
  }
}

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
  // commit: null, or (partition, offset) => Promise for auto-commit;
  // decode: worker message -> event (pull mode).
  constructor(client, commit, decode = null) {
    super();
    this._client = client;
    this._commit = commit;
    this._decode = decode;
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
    this._pumping = null; // the pull loop, or the poller's round in flight
    this._polled = false; // pulled by the Poller (see above)
    this._space = null; // wakes the pump once the buffer has room
    this._checking = null; // a status check in flight (watches)
    this._timer = null;
    this._lastEvent = 0;
    this.error = null;
    keepalive.acquire();
  }

  /** Events waiting in JS for the consumer (at most 2 * BATCH in pull mode). */
  get buffered() {
    return this._buffer.length;
  }

  /** True once close() started (explicitly, by the client, or a handler error). */
  get closed() {
    return this._closing !== null;
  }

  // Called from the native callback, on the main thread.
  _push(event) {
    if (this._closing) return;
    this._lastEvent = Date.now();
    if (this._waiter) {
      const w = this._waiter;
      this._waiter = null;
      w(event);
    } else {
      this._buffer.push(event);
    }
  }

  // The next event, null once closed; rejects with the error that ended the feed.
  async _next() {
    let event;
    if (this._buffer.length > 0) {
      event = this._buffer.shift();
      if (this._buffer.length === BATCH - 1) this._wake();
    } else if (this._closing) {
      return null;
    } else {
      event = await new Promise((resolve) => { this._waiter = resolve; });
    }
    if (event instanceof Failure) {
      this.close().catch(() => {});
      throw event.error;
    }
    return event;
  }

  // There is room in the buffer again, or close() started.
  _wake() {
    const s = this._space;
    this._space = null;
    if (s) s();
    if (this._polled) poller.wake();
  }

  // The feed ended with `err`: deliver it after what is buffered.
  _fail(err) {
    if (this._closing || this.error) return;
    this.error = err;
    this._push(new Failure(err));
  }

  // cb: the koffi-registered callback (null in pull mode); opening: Promise of
  // the native handle.
  async _open(cb, opening, handler, pull = false) {
    this._cb = cb;
    this._opening = opening.then((handle) => { this._handle = handle; });
    try {
      await this._opening;
    } catch (err) {
      await this.close();
      throw err;
    }
    if (pull && blocking < Math.max(1, pool().max - 2)) {
      blocking++;
      this._pumping = this._pump();
    } else if (pull) {
      this._polled = true;
      if (!poller) poller = new Poller();
      poller.add(this);
    } else {
      this._lastEvent = Date.now();
      this._timer = setInterval(() => this._check(), WATCH_CHECK_MS);
      this._timer.unref();
    }
    if (handler) {
      this._handler = handler;
      this._runHandler();
    }
  }

  // Pull loop: one fm_subscription_next at a time (the ABI wants one thread
  // per subscription at a time; unsubscribe waits for it), only while the
  // buffer is below BATCH.
  async _pump() {
    try {
      while (!this._closing) {
        if (this._buffer.length >= BATCH) {
          await new Promise((resolve) => { this._space = resolve; });
          continue;
        }
        let batch;
        try {
          batch = await this._client._internal('next', [this._handle, BATCH, NEXT_TIMEOUT_MS], true);
        } catch (err) {
          this._fail(err);
          return;
        }
        for (const m of batch) this._push(this._decode(m));
      }
    } finally {
      blocking--;
    }
  }

  // Idle watch: did its feed die? (Runs only between events; unsubscribe waits.)
  _check() {
    if (this._closing || this._checking || this.error || this._handle === null) return;
    if (Date.now() - this._lastEvent < WATCH_CHECK_MS) return;
    this._checking = this._client._internal('status', [this._handle])
      .catch((err) => this._fail(err))
      .finally(() => { this._checking = null; });
  }

  async _runHandler() {
    for (;;) {
      let event;
      try {
        event = await this._next();
        if (event === null) return;
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
    // Memory-tier messages (live) have no offset to commit.
    if (!this._commit || this._closing || event.live) return;
    this._stream = event.stream;
    this._toCommit.set(event.partition, event.offset);
    if (!this._committing) this._committing = this._commitLoop();
  }

  async _commitLoop() {
    while (this._toCommit.size > 0) {
      const batch = [...this._toCommit];
      this._toCommit.clear();
      await Promise.all(batch.map(([p, o]) => this._commit(p, o, this._stream).catch((err) => {
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

  /**
   * Stops delivery and commits what was processed. The native subscription is
   * freed once a pull in flight returns (at most NEXT_TIMEOUT_MS later):
   * `released` settles then, and client.close() waits for it.
   */
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
    if (this._polled) poller.subs.delete(this);
    this._wake();
    if (this._timer) clearInterval(this._timer);
    this._timer = null;
    this._released = this._release();
    this._released.catch(() => {});
    await this._opening.catch(() => {});
    if (this._committing) await this._committing;
    // A watch has no pull in flight: its release is prompt, wait for it.
    if (!this._pumping) await this._released;
  }

  async _release() {
    try {
      await this._opening.catch(() => {});
      // A pull or status check in flight must return before the handle is freed.
      if (this._pumping) await this._pumping;
      if (this._checking) await this._checking;
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

  /** Settles once the native subscription is freed (after close()). */
  get released() {
    return this._closing ? this._closing.then(() => this._released) : Promise.resolve();
  }
}

// `await using x = ...` (explicit resource management) where the runtime has it.
if (Symbol.asyncDispose) {
  Subscription.prototype[Symbol.asyncDispose] = function dispose() { return this.close(); };
}

module.exports = { Subscription };
