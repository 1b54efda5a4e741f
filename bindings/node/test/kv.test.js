'use strict';
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { flowmesh, uniq, sleep, eventually, forEachEngine, T } = require('./helpers');

forEachEngine(describe, before, after, (env) => {
  it('set / get / getEntry / exists / delete', T, async () => {
    const c = env.client;
    const b = uniq('b');
    const r1 = await c.set(b, 'k', 'v1');
    const r2 = await c.set(b, 'k', Buffer.from([1, 2, 3]));
    assert.ok(r2 > r1, 'revision grows');
    const v = await c.get(b, 'k');
    assert.ok(Buffer.isBuffer(v));
    assert.deepEqual([...v], [1, 2, 3]);
    assert.deepEqual(await c.getEntry(b, 'k'), { value: Buffer.from([1, 2, 3]), revision: r2 });
    assert.equal(await c.exists(b, 'k'), true);
    await c.delete(b, 'k');
    await c.delete(b, 'k'); // absent: still fine
    assert.equal(await c.exists(b, 'k'), false);
    assert.equal(await c.get(b, 'k'), null);
    assert.equal(await c.getEntry(b, 'k'), null);
  });

  it('empty values round-trip', T, async () => {
    const b = uniq('b');
    await env.client.set(b, 'empty', '');
    const v = await env.client.get(b, 'empty');
    assert.equal(v.length, 0);
  });

  it('set with TTL expires', T, async () => {
    const c = env.client;
    const b = uniq('b');
    await c.set(b, 'temp', 'x', { ttlMs: 150 });
    assert.equal((await c.get(b, 'temp')).toString(), 'x');
    await eventually(async () => (await c.get(b, 'temp')) === null, 3000);
    assert.equal(await c.exists(b, 'temp'), false);
  });

  it('listKeys by prefix, sorted', T, async () => {
    const c = env.client;
    const b = uniq('b');
    for (const k of ['user.2', 'user.1', 'order.1', 'user.10']) await c.set(b, k, '1');
    assert.deepEqual(await c.listKeys(b, 'user.'), ['user.1', 'user.10', 'user.2']);
    assert.deepEqual(await c.listKeys(b), ['order.1', 'user.1', 'user.10', 'user.2']);
    assert.deepEqual(await c.listKeys(b, 'nope'), []);
  });

  it('cas: 0 creates, the right revision updates, a wrong one is ConflictError', T, async () => {
    const c = env.client;
    const b = uniq('b');
    const r1 = await c.cas(b, 'lock', 'a', 0);
    await assert.rejects(c.cas(b, 'lock', 'b', 0), (e) => e instanceof flowmesh.ConflictError
      && e.code === 'FM_ERR_CONFLICT' && e instanceof flowmesh.FlowMeshError);
    const r2 = await c.cas(b, 'lock', 'b', r1);
    assert.ok(r2 > r1);
    await assert.rejects(c.cas(b, 'lock', 'c', r1), flowmesh.ConflictError);
    assert.equal((await c.get(b, 'lock')).toString(), 'b');
  });

  it('watch delivers puts and deletes under the prefix, in order (iterator)', T, async () => {
    const c = env.client;
    const b = uniq('b');
    const w = await c.watch(b, 'cfg.');
    const r1 = await c.set(b, 'cfg.a', '1');
    await c.set(b, 'other', 'ignored');
    const r2 = await c.set(b, 'cfg.a', '2');
    await c.delete(b, 'cfg.a');
    const events = [];
    for await (const e of w) {
      events.push(e);
      if (events.length === 3) break;
    }
    assert.deepEqual(events.slice(0, 2).map((e) => [e.op, e.key, e.value.toString(), e.revision]),
      [['put', 'cfg.a', '1', r1], ['put', 'cfg.a', '2', r2]]);
    assert.equal(events[2].op, 'delete');
    assert.equal(events[2].key, 'cfg.a');
    assert.equal(events[2].value, null);
  });

  it('watch with a handler', T, async () => {
    const c = env.client;
    const b = uniq('b');
    const seen = [];
    const w = await c.watch(b, (e) => { seen.push(`${e.op}:${e.key}`); });
    await c.set(b, 'x', '1');
    await c.set(b, 'y', '2');
    await eventually(() => seen.length === 2);
    await w.close();
    await c.set(b, 'z', '3');
    await sleep(50);
    assert.deepEqual(seen, ['put:x', 'put:y']);
  });
});
