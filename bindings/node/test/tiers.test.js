'use strict';
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { flowmesh, uniq, forEachEngine, T } = require('./helpers');

// The next `n` messages of a subscription's iterator, in arrival order.
async function take(it, n) {
  const got = [];
  while (got.length < n) {
    const { value, done } = await it.next();
    assert.ok(!done, 'subscription ended');
    got.push(value);
  }
  return got;
}

forEachEngine(describe, before, after, (env) => {
  it('memory-tier publishes reach live subscribers of matching subjects only', T, async () => {
    const c = env.client;
    const s = uniq('ev').replace('-', '_');
    const allSub = await c.subscribe(`${s}.>`);
    const oneSub = await c.subscribe(`${s}.*`);
    const all = allSub[Symbol.asyncIterator]();
    const one = oneSub[Symbol.asyncIterator]();
    const pos = await c.publish(`${s}.user.login`, 'live', { tier: flowmesh.Tier.MEMORY, headers: { h: 'v' } });
    assert.deepEqual(pos, { partition: 0, offset: flowmesh.OFFSET_NONE });
    const [m] = await take(all, 1);
    assert.equal(m.subject, `${s}.user.login`);
    assert.equal(m.live, true);
    assert.equal(m.offset, flowmesh.OFFSET_NONE);
    assert.equal(m.headers.h, 'v');
    assert.equal(m.payload.toString(), 'live');
    const stored = await c.publish(`${s}.click`, 'kept');
    await c.publish(`${s}.view`, 'acked', { tier: 'memory', requireAck: true });
    const rest = await take(all, 2);
    assert.deepEqual(rest.map((x) => x.subject).sort(), [`${s}.click`, `${s}.view`]);
    const kept = rest.find((x) => x.subject === `${s}.click`);
    assert.equal(kept.live, false);
    assert.equal(kept.offset, stored.offset);
    // `s.*` saw the one-token subjects only.
    assert.deepEqual((await take(one, 2)).map((x) => x.subject).sort(), [`${s}.click`, `${s}.view`]);
    const read = await c.read(s);
    assert.deepEqual(read.map((x) => x.subject), [`${s}.click`]);
    await allSub.close();
    await oneSub.close();
  });

  it('replicated is refused where there is one copy; bad tiers and patterns are invalid', T, async () => {
    const c = env.client;
    const s = uniq('pay').replace('-', '_');
    await assert.rejects(c.publish(`${s}.done`, 'p', { tier: 'replicated' }), (err) =>
      err instanceof flowmesh.UnavailableError && /replicated tier/.test(err.message));
    await assert.rejects(c.publish(s, 'p', { tier: 'fast' }), flowmesh.InvalidArgumentError);
    await assert.rejects(c.subscribe('*.x'), flowmesh.InvalidArgumentError);
    await assert.rejects(c.publish(`${s}.*`, 'p'), flowmesh.InvalidArgumentError);
  });
});
