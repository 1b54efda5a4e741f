'use strict';
// A small pool of worker threads that run the blocking native calls, so the
// event loop never waits on the library. Why not koffi's `fn.async`: see
// README.md ("Why worker threads"): fm_last_error() is per thread, long polls
// would starve libuv's threadpool, and koffi caps queued async calls.
//
// Dispatch: an idle worker first; else a new worker while under `max`; else the
// least-loaded worker that is not inside a possibly long call (reserve/receive
// with a wait). Long calls hold at most max-1 workers; past that they wait
// here, so quick calls are never stuck behind long polls. A worker keeps the
// process alive only while it has work.

const path = require('node:path');
const os = require('node:os');
const { Worker } = require('node:worker_threads');

const WORKER_FILE = path.join(__dirname, 'worker.js');
const PIPELINE = 32; // requests queued on one busy worker before we grow the pool

function defaultMax() {
  const env = Number(process.env.FLOWMESH_NODE_THREADS);
  if (Number.isInteger(env) && env > 0) return env;
  return Math.min(16, Math.max(4, os.availableParallelism ? os.availableParallelism() : os.cpus().length));
}

class Pool {
  constructor(max = defaultMax()) {
    this.max = max;
    this.workers = [];
    this.waiting = []; // requests that found no worker (see pick)
    this.nextId = 1;
  }

  // Runs ops[op](...args) in a worker. `long` marks calls that may block for a
  // while (nothing gets queued behind them). Settles with the worker's reply.
  run(op, args, long = false) {
    return new Promise((resolve, reject) => {
      const req = { id: this.nextId++, op, args, long, resolve, reject };
      const w = this.pick(req);
      if (w) this.send(w, req);
      else this.waiting.push(req);
    });
  }

  // Long calls may hold at most max-1 workers, so a quick call always finds a
  // worker that is not stuck in a long poll.
  pick(req) {
    if (req.long) {
      let held = 0;
      for (const w of this.workers) if (w.longCalls > 0) held++;
      if (held >= Math.max(1, this.max - 1)) return null;
    }
    let best = null;
    for (const w of this.workers) {
      if (w.pending.size === 0) return w;
      if (w.longCalls === 0 && (!best || w.pending.size < best.pending.size)) best = w;
    }
    if (this.workers.length < this.max && (!best || best.pending.size >= PIPELINE)) return this.spawn();
    return best;
  }

  // Places every waiting request that fits, in order; the rest keep waiting.
  drain() {
    let i = 0;
    while (i < this.waiting.length) {
      const w = this.pick(this.waiting[i]);
      if (w) this.send(w, this.waiting.splice(i, 1)[0]);
      else i++;
    }
  }

  spawn() {
    const worker = new Worker(WORKER_FILE);
    worker.unref();
    const w = { worker, pending: new Map(), longCalls: 0, outbox: [] };
    worker.on('message', (replies) => this.settle(w, replies));
    worker.on('error', (err) => this.fail(w, err));
    worker.on('exit', (code) => this.fail(w, new Error(`flowmesh worker exited with code ${code}`)));
    this.workers.push(w);
    return w;
  }

  // Requests made in the same tick travel to a worker as one message: under
  // load the per-message cost of postMessage dominates a native call.
  send(w, req) {
    if (w.pending.size === 0) w.worker.ref();
    w.pending.set(req.id, req);
    if (req.long) w.longCalls++;
    w.outbox.push({ id: req.id, op: req.op, args: req.args, long: req.long });
    if (w.outbox.length === 1) {
      queueMicrotask(() => {
        const batch = w.outbox;
        w.outbox = [];
        w.worker.postMessage(batch);
      });
    }
  }

  settle(w, replies) {
    for (const reply of replies) {
      const req = w.pending.get(reply.id);
      if (!req) continue;
      w.pending.delete(reply.id);
      if (req.long) w.longCalls--;
      req.resolve(reply);
    }
    if (w.pending.size === 0) w.worker.unref();
    this.drain();
  }

  // A worker died (a crash in native code usually takes the process with it,
  // so this is mostly a failed load): fail its requests, forget it.
  fail(w, err) {
    const i = this.workers.indexOf(w);
    if (i < 0) return;
    this.workers.splice(i, 1);
    for (const req of w.pending.values()) req.reject(err);
    w.pending.clear();
    this.drain();
  }
}

let shared = null;
function pool() {
  if (!shared) shared = new Pool();
  return shared;
}

module.exports = { Pool, pool };
