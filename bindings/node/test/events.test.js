'use strict';
// Events to named recipients (docs/EVENTS.md) on every engine.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { flowmesh, uniq, sleep, eventually, forEachEngine, T } = require('./helpers');

forEachEngine(describe, before, after, (env) => {
  // Clients of one test share data: a named mem:// engine, else the same URL,
  // in a namespace of their own.
  async function apps(...specs) {
    const url = env.url === 'mem://' ? `mem://${uniq('ev')}` : env.url;
    const namespace = uniq('ns');
    const clients = [];
    for (const s of specs) clients.push(await flowmesh.connect(url, { namespace, ...s }));
    return clients;
  }

  it('publish, manual ack, defer, discard, replay, pause/resume', T, async () => {
    const [alice, bob] = await apps({ appId: 'alice' }, { appId: 'bob' });
    try {
      const got = [];
      const sub = await bob.subscribeEvents('orders/created', { autoAck: false, ackWaitMs: 60000 }, (ev) => { got.push(ev); });
      const id = await alice.publishEvent('orders/created', ['bob'], 'o-1', { metadata: { k: 'v' } });
      await eventually(() => got.length === 1);
      const ev = got[0];
      assert.equal(ev.id, id);
      assert.equal(ev.sender, 'alice');
      assert.equal(ev.name, 'orders/created');
      assert.equal(ev.payload.toString(), 'o-1');
      assert.deepEqual(ev.metadata, { k: 'v' });
      assert.equal(ev.deliveryCount, 1);
      assert.equal(ev.encrypted, false);
      await sub.ack(id);
      await assert.rejects(sub.ack(id), flowmesh.NotFoundError);

      const id2 = await alice.publishEvent('orders/created', ['bob'], Buffer.from('o-2'));
      await eventually(() => got.length === 2);
      const start = Date.now();
      await sub.defer(id2, 300, 'busy');
      await eventually(() => got.length === 3);
      assert.ok(Date.now() - start >= 280, `deferred event came back after ${Date.now() - start} ms`);
      assert.equal(got[2].id, id2);
      assert.equal(got[2].deliveryCount, 2);
      await sub.discard(id2, 'invalid');

      const replayed = await sub.replay(id);
      assert.equal(replayed.payload.toString(), 'o-1');
      await eventually(() => got.length === 4);
      assert.equal(got[3].id, id);
      await sub.ack(id);

      await sub.pause('maintenance');
      for (let i = 0; i < 3; i++) await alice.publishEvent('orders/created', ['bob'], `p${i}`);
      await sleep(500);
      assert.equal(got.length, 4, 'nothing delivered while paused');
      await sub.resume();
      await eventually(() => got.length === 7);
      assert.deepEqual(got.slice(4).map((e) => e.payload.toString()), ['p0', 'p1', 'p2']);
      for (const e of got.slice(4)) await sub.ack(e.id);
      await sleep(200);
      assert.equal(got.length, 7, 'discarded event never came back');
      assert.deepEqual(await sub.status(), { rejected: 0, error: null });
      await sub.unsubscribe();
      await sub.unsubscribe();
      await assert.rejects(sub.ack(1), flowmesh.ClosedError);
    } finally {
      await alice.close();
      await bob.close();
    }
  });

  it('auto-ack after async handlers, end-to-end encryption, bad input, close', T, async () => {
    const a = await flowmesh.generateEventKey();
    const b = await flowmesh.generateEventKey();
    assert.equal(a.secretKey.length, 44);
    const [alice, bob, anon] = await apps(
      { appId: 'alice', appSecretKey: a.secretKey }, { appId: 'bob', appSecretKey: b.secretKey }, {});
    try {
      const got = [];
      const sub = await bob.subscribeEvents('secrets', { ackWaitMs: 300 });
      // A handler registered after events arrived still sees them.
      const id = await alice.publishEvent('secrets', ['bob'], 'TOP-SECRET-NODE');
      await sleep(100);
      sub.on(async (ev) => { await sleep(20); got.push(ev); });
      await eventually(() => got.length === 1);
      assert.equal(got[0].id, id);
      assert.equal(got[0].encrypted, true);
      assert.equal(got[0].payload.toString(), 'TOP-SECRET-NODE');
      await sleep(700); // over twice ack_wait: acked after the handler, not redelivered
      assert.equal(got.length, 1);

      await assert.rejects(anon.publishEvent('e', ['bob'], 'x'), flowmesh.InvalidArgumentError);
      await assert.rejects(alice.publishEvent('e', [], 'x'), flowmesh.InvalidArgumentError);
      await assert.rejects(alice.publishEvent('e', ['bob'], 'x', { metadata: '[1]' }), flowmesh.InvalidArgumentError);
      await assert.rejects(alice.publishEvent('e', 'bob', 'x'), TypeError);
      await assert.rejects(flowmesh.connect('mem://', { appSecretKey: 'nope' }), flowmesh.InvalidArgumentError);
      await bob.close(); // ends the live event subscription
      await assert.rejects(sub.ack(id), flowmesh.ClosedError);
    } finally {
      await alice.close();
      await bob.close();
      await anon.close();
    }
  });
});
