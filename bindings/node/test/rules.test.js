'use strict';
// The rules engine and procedures: events, facts, rules that fire, bad
// input and atomic procedures, on every engine.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { uniq, forEachEngine, T } = require('./helpers');

async function eventually(probe, what, ms = 20000) {
  const end = Date.now() + ms;
  for (;;) {
    const got = await probe();
    if (got) return got;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

forEachEngine(describe, before, after, (env) => {
  // A namespace of the test's own: rules and facts are per namespace.
  const scoped = () => env.connect({ tenant: 'acme', namespace: uniq('ru') });

  it('events, facts and a rule that fires', T, async () => {
    const c = await scoped();
    const e = await c.rules.emit('user.created', { userId: '123' }, 'corr-1');
    assert.equal(e.topic, 'user.created');
    assert.equal(e.correlationId, 'corr-1');
    await c.rules.setFact('user:1:status', 'active');
    assert.equal(await c.rules.getFact('user:1:status'), 'active');
    assert.deepEqual((await c.rules.queryFacts('user:*:status')).map((f) => f.key), ['user:1:status']);
    assert.equal(await c.rules.deleteFact('user:1:status'), true);
    assert.equal(await c.rules.getFact('user:1:status'), null);

    const rule = await c.rules.registerRule({
      id: 'greet', when: { topic: 'user.*' },
      then: [{ type: 'setFact', key: 'greeted:${data.userId}', value: '${event.id}' }],
    });
    assert.equal(rule.version, 1);
    const later = await c.rules.emit('user.updated', { userId: '9' });
    assert.equal(await eventually(() => c.rules.getFact('greeted:9'), 'the rule to fire'), later.id);
    const v = await c.rules.validateRule({ id: 'x', when: { topic: 'a..b' }, then: { type: 'nope' } });
    assert.equal(v.valid, false);
    assert.equal(v.errors.length, 2);
    await assert.rejects(c.rules.registerRule({ id: 'bad', when: {}, then: [] }),
      (err) => err.storeCode === 'VALIDATION_ERROR');
    await assert.rejects(c.rules.unregisterRule('ghost'), (err) => err.storeCode === 'NOT_FOUND');
    assert.equal((await c.rules.stats()).rulesCount, 1);
    await c.close();
  });

  it('procedures run atomically; an unknown one is NOT_FOUND', T, async () => {
    const c = await scoped();
    await c.store.bucket('orders').insert({ id: 'o1', total: 42 });
    await c.procedures.register({ name: 'close', steps: [
      { op: 'get', bucket: 'orders', key: '${params.id}', as: 'order' },
      { op: 'update', bucket: 'orders', key: '${params.id}', data: { closed: true } },
      { op: 'setFact', key: 'total:${params.id}', value: '${order.total}' },
    ] });
    const out = await c.procedures.call('close', { id: 'o1' });
    assert.equal(out.results.length, 3);
    assert.equal(out.results[1].closed, true);
    assert.equal(await c.rules.getFact('total:o1'), 42);
    await assert.rejects(c.procedures.call('close', { id: 'nope' }), (err) => err.storeCode === 'NOT_FOUND');
    assert.equal(await c.rules.getFact('total:nope'), null);
    await assert.rejects(c.procedures.call('ghost'), (err) => err.storeCode === 'NOT_FOUND');
    assert.equal((await c.procedures.list()).length, 1);
    await c.procedures.unregister('close');
    assert.equal(await c.procedures.get('close'), null);
    await c.close();
  });
});
