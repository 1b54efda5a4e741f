'use strict';
// The rules engine and procedures: events, facts, rules that fire, bad
// input, atomic procedures and topic subscriptions, on every engine.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { uniq, forEachEngine, T, flowmesh, sleep } = require('./helpers');

// Settles like `promise`, or rejects after ms naming `what`.
async function within(promise, ms, what) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

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

  it('topic subscriptions deliver matching events in log order, also those rules emit', T, async () => {
    const c = await scoped();
    const one = await c.rules.subscribe('orders.*');
    const all = await c.rules.subscribe('orders.>');
    for (const [topic, id] of [['orders.created', 'o1'], ['users.created', 'u1'],
      ['orders.eu.paid', 'o2'], ['orders.done', 'o3']]) {
      await c.rules.emit(topic, { id });
    }
    // users.created matches neither pattern, orders.eu.paid only '>'.
    for (const [sub, topic, id] of [[one, 'orders.created', 'o1'], [one, 'orders.done', 'o3'],
      [all, 'orders.created', 'o1'], [all, 'orders.eu.paid', 'o2'], [all, 'orders.done', 'o3']]) {
      const got = await within(sub.next(), 10000, topic);
      assert.equal(got.topic, topic);
      assert.equal(got.event.topic, topic);
      assert.deepEqual(got.event.data, { id });
      assert.ok(got.event.id);
    }

    await c.rules.registerRule({
      id: 'ship', when: { topic: 'payments.received' },
      then: { type: 'emit', topic: 'orders.shipped', data: { id: '${data.order}' } },
    });
    const trigger = await c.rules.emit('payments.received', { order: 'o4' });
    const shipped = await within(one.next(), 10000, 'the rule-emitted event');
    assert.equal(shipped.topic, 'orders.shipped');
    assert.deepEqual(shipped.event.data, { id: 'o4' });
    assert.equal(shipped.event.causationId, trigger.id);

    for (const bad of ['', 'orders..x', 'orders.>.x', 'ord*']) {
      await assert.rejects(c.rules.subscribe(bad), flowmesh.InvalidArgumentError, `pattern ${JSON.stringify(bad)}`);
    }
    await assert.rejects(c.rules.subscribe(42), TypeError);
    await one.close();
    await all.close();
    await c.close();
  });

  it('for await and a handler get each event with its topic', T, async () => {
    const c = await scoped();
    const seen = [];
    let handled;
    const allHandled = new Promise((resolve) => { handled = resolve; });
    const withHandler = await c.rules.subscribe('orders.*', (event, topic) => {
      seen.push([topic, event.data.n]);
      if (seen.length === 2) handled();
    });
    const iterated = await c.rules.subscribe('orders.*');
    await c.rules.emit('users.created', { n: 0 });
    await c.rules.emit('orders.created', { n: 1 });
    await c.rules.emit('orders.paid', { n: 2 });
    const got = [];
    await within((async () => {
      for await (const { topic, event } of iterated) {
        got.push([topic, event.data.n]);
        if (got.length === 2) break; // ends the subscription
      }
    })(), 10000, 'two events by for await');
    assert.deepEqual(got, [['orders.created', 1], ['orders.paid', 2]]);
    assert.equal(iterated.closed, true);
    await within(allHandled, 10000, 'two events by the handler');
    assert.deepEqual(seen, [['orders.created', 1], ['orders.paid', 2]]);
    assert.throws(() => withHandler[Symbol.asyncIterator](), TypeError);

    // A handler that throws ends delivery with an 'error' event.
    const failing = await c.rules.subscribe('fail.*', () => { throw new Error('boom'); });
    const failed = new Promise((resolve) => failing.once('error', resolve));
    await c.rules.emit('fail.now', {});
    assert.equal((await within(failed, 10000, 'the handler error')).message, 'boom');
    assert.equal(failing.closed, true);
    await withHandler.close();
    await c.close();
  });

  it('close() ends a waiting next() at once; later calls fail with ClosedError', T, async () => {
    const c = await scoped();
    const sub = await c.rules.subscribe('orders.*');
    const waiting = sub.next();
    await sleep(300); // let it wait in the library
    const started = Date.now();
    await within(sub.close(), 2000, 'close()');
    await within(assert.rejects(waiting, flowmesh.ClosedError), 2000, 'the waiting next()');
    assert.ok(Date.now() - started < 2000, `took ${Date.now() - started} ms`);
    await assert.rejects(sub.next(), flowmesh.ClosedError);
    await sub.close(); // idempotent

    // A loop over a subscription that gets closed just ends.
    const looped = await c.rules.subscribe('orders.>');
    const loop = (async () => {
      for await (const x of looped) assert.fail(`delivered ${JSON.stringify(x)}`);
    })();
    await sleep(100);
    await looped.close();
    await within(loop, 2000, 'the loop to end');

    // client.close() ends the subscriptions it still has.
    const left = await c.rules.subscribe('orders.*');
    const pending = left.next();
    await sleep(100);
    await within(c.close(), 5000, 'client.close()');
    await within(assert.rejects(pending, flowmesh.ClosedError), 2000, 'next() cut by client.close()');
    assert.equal(left.closed, true);
    await assert.rejects(c.rules.subscribe('orders.*'), flowmesh.ClosedError);
  });
});
