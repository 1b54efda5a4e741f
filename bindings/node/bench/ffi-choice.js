'use strict';
// Why the binding runs native calls in its own worker threads instead of
// koffi's fn.async: measures both on the same library (mem://), plus plain
// synchronous koffi calls on the main thread as the floor. Not a NATS
// comparison. Run: node bench/ffi-choice.js
const koffi = require('koffi');
const fm = require('..');
const { load } = require('../lib/native');

const N = 20000;
const SEQ = 3000;

async function time(label, n, fn) {
  const t0 = process.hrtime.bigint();
  await fn();
  const us = Number(process.hrtime.bigint() - t0) / 1e3 / n;
  console.log(`${label.padEnd(48)} ${us.toFixed(1).padStart(7)} us/op ${Math.round(1e6 / us).toString().padStart(8)} ops/s`);
}

(async () => {
  const { fn, types } = load();
  const payload = Buffer.from('x'.repeat(100));
  const msg = { payload, payload_len: payload.length, key: null, key_len: 0, headers: null, headers_len: 0 };

  // 1. The binding: worker pool.
  const c = await fm.connect('mem://');
  await c.publish('warm', payload);
  await time('binding (worker pool), sequential publish', SEQ, async () => {
    for (let i = 0; i < SEQ; i++) await c.publish('seq', payload);
  });
  await time('binding (worker pool), 20k concurrent publish', N, () =>
    Promise.all(Array.from({ length: N }, () => c.publish('conc', payload))));
  await time('binding (worker pool), 20k concurrent kv set', N, () =>
    Promise.all(Array.from({ length: N }, (_, i) => c.set('b', `k${i % 100}`, payload))));
  // Delivery: one koffi relay (library thread -> main loop) per message.
  for (let i = 0; i < N; i += 1000) await c.publishBatch('deliver', Array(1000).fill(payload));
  await time('binding, subscription delivery (for await)', N, async () => {
    let n = 0;
    for await (const m of await c.subscribe('deliver', { start: 'earliest' })) if (++n === N) break;
  });
  await c.close();

  // 2. koffi fn.async on libuv's threadpool (capped at 256 queued calls, so a
  //    semaphore of 64 in front).
  const h = [null];
  fn.fm_client_connect('mem://', null, h);
  const client = h[0];
  let inflight = 0;
  const waiting = [];
  const call = (f, ...args) => new Promise((resolve) => {
    const go = () => {
      inflight++;
      f.async(...args, (err, st) => {
        inflight--;
        if (waiting.length) waiting.shift()();
        resolve(st);
      });
    };
    if (inflight < 64) go(); else waiting.push(go);
  });
  await time('koffi fn.async, sequential publish', SEQ, async () => {
    for (let i = 0; i < SEQ; i++) await call(fn.fm_publish, client, 'seq', msg, {});
  });
  await time('koffi fn.async, 20k concurrent publish', N, () =>
    Promise.all(Array.from({ length: N }, () => call(fn.fm_publish, client, 'conc', msg, {}))));

  // 3. Synchronous on the main thread (blocks the event loop: the floor).
  await time('koffi sync on main thread, publish (blocks loop)', N, async () => {
    for (let i = 0; i < N; i++) fn.fm_publish(client, 'sync', msg, {});
  });
  fn.fm_client_close(client);
  void types;
  void koffi;
})();
