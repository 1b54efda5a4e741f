'use strict';
// Pull-mode subscriptions: back-pressure on a slow consumer, a subscription
// whose broker dies (ends with DisconnectedError), and one that survives a
// broker restart (same port, same file:// directory).
const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { flowmesh, uniq, sleep, eventually, brokerSkipReason, startBroker, freePort } = require('./helpers');

const T = { timeout: 30000 };
const BOUND = 512; // 2 pull batches: what the binding may hold in JS

describe('back-pressure (mem://)', () => {
  it('a slow consumer does not buffer the backlog in JS', T, async () => {
    const c = await flowmesh.connect('mem://');
    try {
      const s = uniq('s');
      const N = 20000;
      const payload = Buffer.alloc(1024, 7); // 20 MiB of backlog
      for (let i = 0; i < N; i += 1000) await c.publishBatch(s, Array(1000).fill(payload));
      global.gc?.();
      const ab0 = process.memoryUsage().arrayBuffers;
      const sub = await c.subscribe(s, { start: 'earliest' });
      let n = 0;
      let peak = 0;
      let peakAb = 0;
      for await (const m of sub) {
        assert.equal(m.offset, n, 'in order, nothing lost');
        n++;
        peak = Math.max(peak, sub.buffered);
        if (n <= 40) {
          await sleep(20); // slow phase: ~1 s, enough for an unbounded buffer to fill
          peakAb = Math.max(peakAb, process.memoryUsage().arrayBuffers - ab0);
        }
        if (n === N) break;
      }
      assert.equal(n, N);
      assert.ok(peak <= BOUND, `JS buffer peaked at ${peak} events`);
      assert.ok(peakAb < 4 * 1048576, `ArrayBuffers grew by ${peakAb} bytes while the consumer was slow`);
    } finally {
      await c.close();
    }
  });

  it('a slow handler is back-pressured too, and commits only what it finished', T, async () => {
    const c = await flowmesh.connect('mem://');
    try {
      const s = uniq('s');
      await c.publishBatch(s, Array.from({ length: 3000 }, (_, i) => String(i)));
      let n = 0;
      let peak = 0;
      let sub;
      const stopped = new Promise((resolve) => {
        c.subscribe(s, { group: 'g', start: 'earliest' }, async () => {
          if (n === 100) {
            resolve();
            return new Promise(() => {}); // offset 100 is never finished
          }
          n++;
          peak = Math.max(peak, sub ? sub.buffered : 0);
          await sleep(1);
        }).then((x) => { sub = x; });
      });
      await stopped;
      await sub.close();
      assert.ok(peak <= BOUND, `JS buffer peaked at ${peak} events`);
      // 100 handled (offsets 0..99): the last commit is 99, not what was prefetched.
      assert.equal(await c.getOffset(s, 'g'), 99);
    } finally {
      await c.close();
    }
  });
});

describe('many subscriptions (mem://)', () => {
  it('more subscriptions than pool workers all get their messages promptly', T, async () => {
    const c = await flowmesh.connect('mem://');
    try {
      const streams = Array.from({ length: 12 }, () => uniq('s'));
      const got = new Map(streams.map((s) => [s, []]));
      const subs = [];
      for (const s of streams) subs.push(await c.subscribe(s, (m) => { got.get(s).push(m.payload.toString()); }));
      for (let round = 0; round < 3; round++) {
        for (const s of streams) await c.publish(s, `${s}-${round}`);
      }
      await eventually(() => streams.every((s) => got.get(s).length === 3), 10000);
      for (const s of streams) assert.deepEqual(got.get(s), [0, 1, 2].map((r) => `${s}-${r}`));
      // close half of them, the rest keep receiving
      for (const sub of subs.slice(0, 6)) await sub.close();
      for (const s of streams.slice(6)) await c.publish(s, 'late');
      await eventually(() => streams.slice(6).every((s) => got.get(s).length === 4), 10000);
    } finally {
      await c.close();
    }
  });
});

const skip = brokerSkipReason() || false;

describe('broker failures (grpc://)', { skip }, () => {
  const fast = { reconnect_initial_ms: 50, reconnect_max_ms: 200, reconnect_jitter_ms: 0, connect_timeout_ms: 500 };

  it('a subscription whose broker dies ends with DisconnectedError (max_reconnect_attempts=1)', T, async () => {
    const b = await startBroker();
    const c = await flowmesh.connect(b.url, { ...fast, max_reconnect_attempts: 1 });
    try {
      const s = uniq('s');
      const it = await c.subscribe(s);
      const errors = [];
      const handled = await c.subscribe(uniq('h'), () => {});
      handled.on('error', (e) => errors.push(e));
      const w = await c.watch(uniq('b'));
      await c.publish(s, 'before');
      const got = [];
      const loop = (async () => {
        for await (const m of it) got.push(m.payload.toString());
      })();
      const watchLoop = (async () => {
        for await (const e of w) void e;
      })();
      await eventually(() => got.length === 1);
      await b.kill();
      const err = await loop.then(() => null, (e) => e);
      assert.ok(err instanceof flowmesh.DisconnectedError, `got ${err && err.stack}`);
      assert.equal(err.code, 'FM_ERR_DISCONNECTED');
      assert.ok(err.message.length > 0);
      assert.deepEqual(got, ['before']);
      assert.equal(it.closed, true);
      assert.equal(it.error, err);
      // Handler form: 'error' is emitted and the subscription closes.
      await eventually(() => errors.length === 1, 10000);
      assert.ok(errors[0] instanceof flowmesh.DisconnectedError);
      assert.equal(handled.closed, true);
      // A KV watch (callback-based) ends with the error that ended its feed.
      const werr = await watchLoop.then(() => null, (e) => e);
      assert.ok(werr instanceof flowmesh.FlowMeshError, `watch ended with ${werr}`);
      assert.equal(w.closed, true);
    } finally {
      await c.close();
      await b.stop();
    }
  });

  it('a subscription survives a broker restart: later messages arrive, no duplicates', T, async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'flowmesh-node-restart-'));
    const port = await freePort();
    let b = await startBroker({ port, data: `file://${dir}` });
    const c = await flowmesh.connect(b.url, fast);
    try {
      const s = uniq('s');
      await c.createStream(s);
      const sub = await c.subscribe(s);
      const got = [];
      const loop = (async () => {
        for await (const m of sub) got.push([m.offset, m.payload.toString()]);
      })();
      await c.publishBatch(s, ['a0', 'a1', 'a2']);
      await eventually(() => got.length === 3);
      await b.kill();
      b = await startBroker({ port, data: `file://${dir}` });
      // Publish with a fresh client: a retried publish could itself duplicate.
      const p = await flowmesh.connect(b.url);
      try {
        await p.publishBatch(s, ['b0', 'b1', 'b2']);
      } finally {
        await p.close();
      }
      await eventually(() => got.length >= 6, 15000);
      await sleep(300); // a duplicate would show up here
      assert.deepEqual(got.map(([, v]) => v), ['a0', 'a1', 'a2', 'b0', 'b1', 'b2']);
      assert.deepEqual(got.map(([o]) => o), [0, 1, 2, 3, 4, 5]);
      // The same client works again for calls too.
      await eventually(() => c.publish(s, 'c0').then(() => true, () => false), 10000);
      await eventually(() => got.length === 7);
      await sub.close();
      await loop;
    } finally {
      await c.close();
      await b.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
