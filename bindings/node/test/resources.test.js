'use strict';
// Resource lifecycle: list, delete and purge streams, queues and buckets;
// extend a reserved job; update a stream's configuration.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { flowmesh, uniq, sleep, forEachEngine, T } = require('./helpers');

forEachEngine(describe, before, after, (env) => {
  // A namespace of the test's own: listings see only what it created (the
  // broker is shared by the suite).
  async function scoped() {
    const ns = uniq('lc');
    const c = await env.connect({ tenant: 'acme', namespace: ns });
    return { c, q: `acme/${ns}/` };
  }

  it('streams: list by prefix, purge, delete', T, async () => {
    const { c, q } = await scoped();
    assert.deepEqual(await c.listStreams(), []);
    for (const s of ['orders', 'orders-eu', 'users']) {
      for (let i = 0; i < 3; i++) await c.publish(s, 'x');
    }
    assert.deepEqual(await c.listStreams(), [`${q}orders`, `${q}orders-eu`, `${q}users`]);
    assert.deepEqual(await c.listStreams('orders'), [`${q}orders`, `${q}orders-eu`]);
    assert.equal(await c.purgeStream('orders'), 3);
    assert.equal((await c.publish('orders', 'y')).offset, 3, 'offsets continue after a purge');
    await c.deleteStream('orders-eu');
    assert.deepEqual(await c.listStreams(), [`${q}orders`, `${q}users`]);
    await assert.rejects(c.deleteStream('orders-eu'), flowmesh.NotFoundError);
    await assert.rejects(c.purgeStream('missing'), (e) => e instanceof flowmesh.NotFoundError && e.code === 'FM_ERR_NOT_FOUND');
    await assert.rejects(c.listStreams('bad prefix'), flowmesh.InvalidArgumentError);
  });

  it('deleting a stream ends its subscription with NotFoundError', T, async () => {
    const { c } = await scoped();
    await c.publish('s', 'a');
    const sub = await c.subscribe('s', { start: 'earliest' });
    const it = sub[Symbol.asyncIterator]();
    assert.equal((await it.next()).value.payload.toString(), 'a');
    await c.deleteStream('s');
    await assert.rejects(it.next(), flowmesh.NotFoundError);
    await sub.close();
  });

  it('updateStream grows partitions and changes retention', T, async () => {
    const { c } = await scoped();
    await c.createStream('s', { partitions: 1 });
    await c.updateStream('s', { partitions: 3, max_messages: 100 });
    assert.equal(await c.partitions('s'), 3);
    await assert.rejects(c.updateStream('s', { partitions: 2 }), flowmesh.InvalidArgumentError);
    await assert.rejects(c.updateStream('s', {}), TypeError);
    await assert.rejects(c.updateStream('missing', { max_age_ms: 1000 }), flowmesh.NotFoundError);
  });

  it('queues: list, purge keeps in-flight jobs, delete', T, async () => {
    const { c, q } = await scoped();
    for (let i = 0; i < 4; i++) await c.enqueue('jobs', `j${i}`);
    await c.enqueue('jobs', 'later', { delayMs: 3600000 });
    await c.enqueue('other', 'x');
    assert.deepEqual(await c.listQueues(), [`${q}jobs`, `${q}other`]);
    assert.deepEqual(await c.listQueues('j'), [`${q}jobs`]);
    const held = await c.reserve('jobs');
    assert.ok(held);
    assert.equal(await c.purgeQueue('jobs'), 4);
    await c.ack('jobs', held.id);
    assert.equal(await c.reserve('jobs'), null);
    await c.deleteQueue('other');
    await assert.rejects(c.deleteQueue('other'), flowmesh.NotFoundError);
    await assert.rejects(c.purgeQueue('other'), flowmesh.NotFoundError);
  });

  it('extend: more time for a reserved job, ConflictError once it expired', T, async () => {
    const { c } = await scoped();
    await c.enqueue('q', 'long job');
    const job = await c.reserve('q', { visibilityMs: 300 });
    await c.extend('q', job.id, 120000);
    await sleep(600); // past the first visibility: still ours
    assert.equal(await c.reserve('q'), null);
    await c.extend('q', job.id, 200);
    await sleep(600);
    await assert.rejects(c.extend('q', job.id, 10000), (e) => e instanceof flowmesh.ConflictError && e.code === 'FM_ERR_CONFLICT');
    const again = await c.reserve('q', { waitMs: 10000 });
    assert.equal(again.id, job.id);
    await c.ack('q', again.id);
    await assert.rejects(c.extend('q', job.id, 10000), flowmesh.NotFoundError);
    await assert.rejects(c.extend('q', job.id, 0), RangeError);
  });

  it('buckets: list and delete', T, async () => {
    const { c, q } = await scoped();
    await c.set('config', 'a', '1');
    await c.set('cache', 'b', '2');
    assert.deepEqual(await c.listBuckets(), [`${q}cache`, `${q}config`]);
    assert.deepEqual(await c.listBuckets('con'), [`${q}config`]);
    await c.deleteBucket('cache');
    await assert.rejects(c.deleteBucket('cache'), flowmesh.NotFoundError);
    assert.equal(await c.get('cache', 'b'), null, 'its keys went with it');
  });
});
