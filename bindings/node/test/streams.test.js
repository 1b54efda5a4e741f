'use strict';
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { flowmesh, uniq, eventually, forEachEngine, T } = require('./helpers');

forEachEngine(describe, before, after, (env) => {
  it('publishes and reads back payload, key and headers', T, async () => {
    const c = env.client;
    const s = uniq('s');
    const p0 = await c.publish(s, 'hello', { headers: { kind: 'greeting' } });
    const p1 = await c.publish(s, Buffer.from([0, 1, 2, 255]), { key: 'k1' });
    assert.equal(p0.partition, 0);
    assert.equal(p1.offset, p0.offset + 1);
    const msgs = await c.read(s, { offset: p0.offset });
    assert.equal(msgs.length, 2);
    assert.ok(Buffer.isBuffer(msgs[0].payload));
    assert.equal(msgs[0].payload.toString(), 'hello');
    assert.deepEqual(msgs[0].headers, { kind: 'greeting' });
    assert.equal(msgs[0].stream.endsWith(s), true);
    assert.ok(msgs[0].timestamp > 1.6e12, 'timestamp is epoch milliseconds');
    assert.deepEqual([...msgs[1].payload], [0, 1, 2, 255]);
    assert.equal(msgs[1].key.toString(), 'k1');
    assert.equal(msgs[1].offset, p1.offset);
  });

  it('publishes an empty payload', T, async () => {
    const s = uniq('s');
    const p = await env.client.publish(s, '');
    const [m] = await env.client.read(s, { offset: p.offset, max: 1 });
    assert.equal(m.payload.length, 0);
  });

  it('publishBatch returns one position per message, in order', T, async () => {
    const s = uniq('s');
    const pos = await env.client.publishBatch(s, ['a', Buffer.from('b'), { payload: 'c', headers: [['h', 'v']] }]);
    assert.equal(pos.length, 3);
    assert.deepEqual(pos.map((p) => p.offset - pos[0].offset), [0, 1, 2]);
    const msgs = await env.client.read(s, { offset: pos[0].offset, max: 10 });
    assert.deepEqual(msgs.map((m) => m.payload.toString()), ['a', 'b', 'c']);
    assert.deepEqual(msgs[2].headers, { h: 'v' });
    assert.deepEqual(await env.client.publishBatch(s, []), []);
  });

  it('read honours offset and max', T, async () => {
    const s = uniq('s');
    await env.client.publishBatch(s, ['0', '1', '2', '3', '4']);
    const msgs = await env.client.read(s, { offset: 2, max: 2 });
    assert.deepEqual(msgs.map((m) => m.payload.toString()), ['2', '3']);
    assert.deepEqual(await env.client.read(s, { offset: 5 }), []);
  });

  it('createStream, partitions and latestOffset', T, async () => {
    const c = env.client;
    const s = uniq('s');
    await c.createStream(s, { partitions: 3 });
    await c.createStream(s, { partitions: 3 }); // same shape: fine
    assert.equal(await c.partitions(s), 3);
    await assert.rejects(c.createStream(s, { partitions: 2 }), (e) => e instanceof flowmesh.AlreadyExistsError
      && e.code === 'FM_ERR_ALREADY_EXISTS');
    assert.equal(await c.latestOffset(s, 1), 0);
    const positions = await c.publishBatch(s, Array.from({ length: 30 }, (_, i) => ({ payload: `m${i}`, key: `key-${i}` })));
    const perPartition = [0, 0, 0];
    for (const p of positions) perPartition[p.partition]++;
    assert.ok(perPartition.filter((n) => n > 0).length > 1, 'keys spread over partitions');
    for (let p = 0; p < 3; p++) assert.equal(await c.latestOffset(s, p), perPartition[p]);
  });

  it('commitOffset and getOffset (null when nothing committed)', T, async () => {
    const c = env.client;
    const s = uniq('s');
    await c.publishBatch(s, ['a', 'b', 'c']);
    assert.equal(await c.getOffset(s, 'g1'), null);
    await c.commitOffset(s, 'g1', 0, 1);
    assert.equal(await c.getOffset(s, 'g1', 0), 1);
    await c.commitOffset(s, 'g1', 0, 2);
    assert.equal(await c.getOffset(s, 'g1'), 2);
  });

  it('a subscription receives messages published after subscribing (async iterator)', T, async () => {
    const c = env.client;
    const s = uniq('s');
    await c.publish(s, 'before');
    const sub = await c.subscribe(s); // default start: latest
    const sent = ['x', 'y', 'z'];
    // Awaited one by one: publishes left in flight together may run on
    // different workers, so their order is not defined.
    setTimeout(async () => { for (const p of sent) await c.publish(s, p); }, 20);
    const got = [];
    for await (const m of sub) {
      got.push(m.payload.toString());
      if (got.length === sent.length) break;
    }
    assert.deepEqual(got, sent);
    assert.equal(sub.closed, true, 'break closes the subscription');
  });

  it('a subscription with a handler, start=earliest, in order', T, async () => {
    const c = env.client;
    const s = uniq('s');
    await c.publishBatch(s, ['1', '2', '3']);
    const got = [];
    let done;
    const finished = new Promise((r) => { done = r; });
    const sub = await c.subscribe(s, { start: 'earliest' }, async (m) => {
      got.push(Number(m.payload.toString()));
      if (got.length === 5) done();
    });
    await c.publishBatch(s, ['4', '5']);
    await finished;
    await sub.close();
    assert.deepEqual(got, [1, 2, 3, 4, 5]);
  });

  it('a group commits processed messages and resumes after the committed offset', T, async () => {
    const c = env.client;
    const s = uniq('s');
    await c.publishBatch(s, ['a', 'b', 'c', 'd']);
    const first = [];
    const sub = await c.subscribe(s, { group: 'workers', start: 'earliest' });
    for await (const m of sub) {
      first.push(m.payload.toString());
      if (first.length === 2) break;
    }
    assert.deepEqual(first, ['a', 'b']);
    assert.equal(await c.getOffset(s, 'workers'), 1, 'offset of the last processed message');
    const rest = [];
    const sub2 = await c.subscribe(s, { group: 'workers' }); // start defaults to committed
    for await (const m of sub2) {
      rest.push(m.payload.toString());
      if (rest.length === 2) break;
    }
    assert.deepEqual(rest, ['c', 'd']);
    await eventually(async () => (await c.getOffset(s, 'workers')) === 3);
  });

  it('a group on a partitioned stream commits per partition', T, async () => {
    const c = env.client;
    const s = uniq('s');
    await c.createStream(s, { partitions: 2 });
    const positions = await c.publishBatch(s, Array.from({ length: 20 }, (_, i) => ({ payload: `${i}`, key: `k${i}` })));
    const last = [-1, -1];
    for (const p of positions) last[p.partition] = Math.max(last[p.partition], p.offset);
    assert.ok(last[0] >= 0 && last[1] >= 0, 'both partitions used');
    const sub = await c.subscribe(s, { group: 'g', start: 'earliest' });
    let n = 0;
    for await (const m of sub) {
      assert.ok(m.partition === 0 || m.partition === 1);
      if (++n === positions.length) break;
    }
    await eventually(async () => (await c.getOffset(s, 'g', 0)) === last[0]
      && (await c.getOffset(s, 'g', 1)) === last[1]);
  });

  it('subscribe to one partition only', T, async () => {
    const c = env.client;
    const s = uniq('s');
    await c.createStream(s, { partitions: 2 });
    const positions = await c.publishBatch(s, Array.from({ length: 10 }, (_, i) => ({ payload: `${i}`, key: `k${i}` })));
    const want = positions.filter((p) => p.partition === 1).map((p) => p.offset);
    const got = [];
    for await (const m of await c.subscribe(s, { partition: 1, start: 'earliest' })) {
      assert.equal(m.partition, 1);
      got.push(m.offset);
      if (got.length === want.length) break;
    }
    assert.deepEqual(got, want);
  });

  it('handler errors close the subscription and reach the error listener', T, async () => {
    const c = env.client;
    const s = uniq('s');
    const sub = await c.subscribe(s, () => { throw new Error('boom'); });
    const err = new Promise((resolve) => sub.once('error', resolve));
    await c.publish(s, 'x');
    assert.equal((await err).message, 'boom');
    await eventually(() => sub.closed);
  });
});
