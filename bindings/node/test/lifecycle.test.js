'use strict';
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { spawn } = require('node:child_process');
const { flowmesh, uniq, sleep, forEachEngine, T } = require('./helpers');

const PKG = path.resolve(__dirname, '..');

// Runs `code` in a child node process (with `fm` = the package); resolves with
// { code, ms, stdout } when it exits or { code: null } after `limit` ms (killed).
// Runs `code` in a child process, killed after `limit` ms; with `aliveMs`,
// killed that long after its first output instead (so a slow connect does
// not eat the time a test means to watch it run).
function runChild(code, limit = 10000, url = 'mem://', aliveMs = 0) {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const child = spawn(process.execPath, ['-e', `const fm = require(${JSON.stringify(PKG)}); const URL = ${JSON.stringify(url)};\n${code}`],
      { stdio: ['ignore', 'pipe', 'inherit'], env: process.env });
    let stdout = '';
    const kill = () => { child.kill('SIGKILL'); resolve({ code: null, ms: Date.now() - t0, stdout }); };
    let timer = setTimeout(kill, limit);
    child.stdout.on('data', (d) => {
      if (aliveMs && !stdout) { clearTimeout(timer); timer = setTimeout(kill, aliveMs); }
      stdout += d;
    });
    child.on('exit', (code) => { clearTimeout(timer); resolve({ code, ms: Date.now() - t0, stdout }); });
  });
}

forEachEngine(describe, before, after, (env) => {
  it('many concurrent Promises: 1000 publishes get distinct, contiguous offsets', T, async () => {
    const c = env.client;
    const s = uniq('s');
    const positions = await Promise.all(Array.from({ length: 1000 }, (_, i) => c.publish(s, `m${i}`)));
    const offsets = positions.map((p) => p.offset).sort((a, b) => a - b);
    assert.deepEqual(offsets, Array.from({ length: 1000 }, (_, i) => offsets[0] + i));
    const b = uniq('b');
    const revisions = await Promise.all(Array.from({ length: 300 }, (_, i) => c.set(b, `k${i}`, `${i}`)));
    assert.equal(new Set(revisions).size, 300, 'every set got its own revision');
    const values = await Promise.all(Array.from({ length: 300 }, (_, i) => c.get(b, `k${i}`)));
    assert.deepEqual(values.map((v) => v.toString()), Array.from({ length: 300 }, (_, i) => `${i}`));
  });

  it('health, readiness and async dispose', T, async () => {
    const c = await env.connect();
    await c.health();
    await c.readiness();
    const sub = await c.subscribe(uniq('s'));
    await sub[Symbol.asyncDispose]();
    assert.equal(sub.closed, true);
    await c[Symbol.asyncDispose]();
    assert.equal(c.closed, true);
    await assert.rejects(c.health(), flowmesh.ClosedError);
  });

  it('two clients on one store: a subscription and a watch see the other client\'s writes', T, async () => {
    const url = env.url === 'mem://' ? `mem://${uniq('shared')}` : env.url; // mem://name is shared in-process
    const a = await flowmesh.connect(url);
    const b = await flowmesh.connect(url);
    try {
      const s = uniq('s');
      const bucket = uniq('b');
      const sub = await a.subscribe(s);
      const watch = await a.watch(bucket, '');
      await b.publish(s, 'from b');
      await b.set(bucket, 'k', 'v');
      for await (const m of sub) {
        assert.equal(m.payload.toString(), 'from b');
        break;
      }
      for await (const e of watch) {
        assert.deepEqual([e.op, e.key, e.value.toString()], ['put', 'k', 'v']);
        break;
      }
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('subscriptions give their callback slots back (close, and client close)', T, async () => {
    const koffi = require('koffi');
    const base = koffi.stats().callbacks;
    const c = await env.connect();
    for (let i = 0; i < 50; i++) {
      const sub = await c.subscribe(uniq('s'));
      const w = await c.watch(uniq('b'));
      await sub.close();
      await w.close();
    }
    assert.equal(koffi.stats().callbacks, base);
    await c.subscribe(uniq('s'));
    await c.watch(uniq('b'), () => {});
    // Stream subscriptions are pull-mode (no callback); a watch takes one slot.
    assert.equal(koffi.stats().callbacks, base + 1);
    await c.close();
    assert.equal(koffi.stats().callbacks, base);
  });

  it('closing the client inside a handler', T, async () => {
    const c = await env.connect();
    const s = uniq('s');
    const seen = [];
    let closed;
    const done = new Promise((r) => { closed = r; });
    const sub = await c.subscribe(s, async (m) => {
      seen.push(m.payload.toString());
      await c.close(); // must not deadlock on the callback that is running
      closed();
    });
    await c.publishBatch(s, ['a', 'b', 'c']);
    await done;
    assert.equal(c.closed, true);
    assert.equal(sub.closed, true);
    assert.deepEqual(seen, ['a'], 'nothing delivered after close');
    const err = await c.publish(s, 'x').catch((e) => e);
    assert.ok(err instanceof flowmesh.ClosedError);
    assert.equal(err.code, 'FM_ERR_CLOSED');
    await c.close(); // idempotent
  });

  it('unsubscribing inside a handler', T, async () => {
    const c = env.client;
    const s = uniq('s');
    let n = 0;
    let resolve;
    const stopped = new Promise((r) => { resolve = r; });
    const sub = await c.subscribe(s, async () => {
      n++;
      await sub.close();
      resolve();
    });
    await c.publishBatch(s, ['1', '2', '3']);
    await stopped;
    await sleep(50);
    assert.equal(n, 1);
  });

  it('close() is not held up by a long poll, which then rejects with ClosedError', T, async () => {
    const c = await env.connect();
    const q = uniq('q');
    const waiting = c.reserve(q, { waitMs: 10000 }).catch((e) => e);
    await sleep(50);
    const t0 = Date.now();
    await c.close();
    assert.ok(Date.now() - t0 < 2000, `close took ${Date.now() - t0} ms`);
    assert.ok((await waiting) instanceof flowmesh.ClosedError);
    await assert.rejects(c.enqueue(q, 'x'), flowmesh.ClosedError);
    await assert.rejects(c.subscribe(q), flowmesh.ClosedError);
  });

  it('close() lets quick calls in flight finish', T, async () => {
    const c = await env.connect();
    const s = uniq('s');
    const pending = Array.from({ length: 50 }, (_, i) => c.publish(s, `${i}`));
    await c.close();
    const positions = await Promise.all(pending);
    assert.equal(positions.length, 50);
  });

  // Process lifetime, in child processes (file://: a directory of their own,
  // the parent's store stays with the parent).
  const childUrl = () => (env.dir ? `file://${path.join(env.dir, uniq('child'))}` : env.url);
  it('an active subscription keeps the process alive', T, async () => {
    const r = await runChild(`(async () => {
      const c = await fm.connect(URL);
      await c.subscribe('s', () => {});
      console.log('subscribed');
    })();`, 20000, childUrl(), 1500);
    assert.match(r.stdout, /subscribed/);
    assert.equal(r.code, null, 'still running 1.5 s after subscribing (then killed)');
  });

  it('the process exits by itself after close()', T, async () => {
    const r = await runChild(`(async () => {
      const c = await fm.connect(URL);
      await c.reserve('q', { waitMs: 50 });
      await c.set('b', 'k', 'v');
      let got = 0;
      await c.subscribe('s', async () => {
        if (++got === 2) { await c.close(); console.log('closed'); }
      });
      await c.publishBatch('s', ['a', 'b']);
    })();`, 10000, childUrl());
    assert.match(r.stdout, /closed/);
    assert.equal(r.code, 0, `exited with 0 (took ${r.ms} ms)`);
  });

  it('the process exits by itself with an unclosed idle client', T, async () => {
    const r = await runChild(`(async () => {
      const c = await fm.connect(URL);
      await c.publish('s', 'x');
      console.log('done');
    })();`, 10000, childUrl());
    assert.match(r.stdout, /done/);
    assert.equal(r.code, 0);
  });
});

describe('file:// durability', () => {
  it('data survives a reconnect to the same directory', T, async () => {
    const fs = require('node:fs');
    const os = require('node:os');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'flowmesh-node-dur-'));
    try {
      const a = await flowmesh.connect(`file://${dir}`);
      await a.publishBatch('log', ['one', 'two']);
      await a.set('cfg', 'k', 'v');
      await a.close();
      const b = await flowmesh.connect(`file://${dir}`);
      const msgs = await b.read('log');
      assert.deepEqual(msgs.map((m) => m.payload.toString()), ['one', 'two']);
      assert.equal((await b.get('cfg', 'k')).toString(), 'v');
      await b.close();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
