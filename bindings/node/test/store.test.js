'use strict';
// The document store: CRUD, queries, schemas and validation errors,
// transactions and live queries, on every engine.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { flowmesh, uniq, forEachEngine, T } = require('./helpers');

// Resolves with the next `n` results a live query hands to `push`.
function collector() {
  const got = [];
  let waiting = null;
  return {
    got,
    push(r) {
      got.push(r);
      if (waiting && got.length >= waiting.n) { waiting.resolve(); waiting = null; }
    },
    until(n, ms = 20000) {
      if (got.length >= n) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`only ${got.length} live results: ${JSON.stringify(got)}`)), ms);
        waiting = { n, resolve: () => { clearTimeout(timer); resolve(); } };
      });
    },
  };
}

forEachEngine(describe, before, after, (env) => {
  // A namespace of the test's own: the broker is shared by the suite.
  const scoped = () => env.connect({ tenant: 'acme', namespace: uniq('st') });

  it('records: insert, get, update with version, where, aggregates, paginate, delete', T, async () => {
    const c = await scoped();
    const users = c.store.bucket('users');
    const ann = await users.insert({ id: 'u1', name: 'Ann', role: 'admin', age: 31 });
    assert.equal(ann.id, 'u1');
    assert.equal(ann._version, 1);
    assert.equal(typeof ann._createdAt, 'number');
    const bob = await users.insert({ name: 'Bob', role: 'user', age: 25 });
    assert.ok(bob.id);
    assert.equal((await users.get(bob.id)).name, 'Bob');
    assert.equal(await users.get('nobody'), null);
    const up = await users.update('u1', { age: 32 }, { expectedVersion: 1 });
    assert.equal(up._version, 2);
    assert.equal(up.name, 'Ann');
    await assert.rejects(users.update('u1', { age: 33 }, { expectedVersion: 1 }),
      (e) => e instanceof flowmesh.ConflictError && e.storeCode === 'CONFLICT');
    assert.deepEqual((await users.where({ age: { $gt: 30 } })).map((r) => r.id), ['u1']);
    assert.equal((await users.findOne({ role: 'user' })).name, 'Bob');
    assert.equal(await users.count(), 2);
    assert.equal(await users.count({ role: 'admin' }), 1);
    assert.equal(await users.sum('age'), 57);
    assert.equal(await users.max('age'), 32);
    assert.equal(await users.min('age', { role: 'none' }), null);
    const p1 = await users.paginate({ limit: 1 });
    assert.equal(p1.records.length, 1);
    assert.equal(p1.hasMore, true);
    const p2 = await users.paginate({ limit: 1, after: p1.nextCursor });
    assert.equal(p2.hasMore, false);
    assert.notEqual(p2.records[0].id, p1.records[0].id);
    await users.delete(bob.id);
    await users.delete(bob.id);
    assert.equal(await users.clear(), 1);
  });

  it('schemas: validation errors carry details and write nothing', T, async () => {
    const c = await scoped();
    await c.store.defineBucket('people', {
      schema: { name: { type: 'string', required: true }, age: { type: 'integer', min: 0 } },
      indexes: ['name'],
    });
    await assert.rejects(c.store.defineBucket('people'), flowmesh.AlreadyExistsError);
    await assert.rejects(c.store.bucket('people').insert({ age: -1 }), (e) => {
      assert.ok(e instanceof flowmesh.InvalidArgumentError);
      assert.equal(e.storeCode, 'VALIDATION_ERROR');
      assert.deepEqual(e.details.map((d) => d.field).sort(), ['age', 'name']);
      return true;
    });
    assert.equal(await c.store.bucket('people').count(), 0);
    assert.deepEqual((await c.store.getBucketSchema('people')).indexes, ['name']);
    assert.deepEqual(await c.store.buckets(), ['people']);
    await assert.rejects(c.store.getBucketSchema('nothing'),
      (e) => e instanceof flowmesh.NotFoundError && e.storeCode === 'BUCKET_NOT_DEFINED');
    await c.store.dropBucket('people');
    await assert.rejects(c.store.call({ type: 'store.frobnicate' }),
      (e) => e instanceof flowmesh.InvalidArgumentError && e.storeCode === 'INVALID_ARGUMENT');
    await assert.rejects(c.store.call(undefined), TypeError);
  });

  it('transactions: results per op, all or nothing', T, async () => {
    const c = await scoped();
    await c.store.bucket('accounts').insert({ id: 'a', credits: 100 });
    const results = await c.store.transaction([
      { op: 'get', bucket: 'accounts', key: 'a' },
      { op: 'update', bucket: 'accounts', key: 'a', data: { credits: 400 } },
      { op: 'insert', bucket: 'logs', data: { action: 'credit' } },
      { op: 'count', bucket: 'logs', filter: { action: 'credit' } },
    ]);
    assert.equal(results.length, 4);
    assert.equal(results[0].credits, 100);
    assert.equal(results[1].credits, 400);
    assert.equal(results[3], 1);
    await assert.rejects(c.store.transaction([
      { op: 'insert', bucket: 'logs', data: { action: 'lost' } },
      { op: 'update', bucket: 'accounts', key: 'a', data: {}, expectedVersion: 1 },
    ]), flowmesh.ConflictError);
    assert.equal(await c.store.bucket('logs').count(), 1);
  });

  it('live queries: current result, then one per change; errors for bad subscriptions', T, async () => {
    const c = await scoped();
    await c.store.defineQuery('by-role', { type: 'count', bucket: 'staff', filter: { role: { $param: 'role' } } });
    assert.deepEqual((await c.store.listQueries()).map((q) => q.name), ['by-role']);
    const col = collector();
    const sub = await c.store.subscribe('by-role', { role: 'admin' }, (r) => col.push(r));
    await col.until(1);
    await c.store.bucket('staff').insert({ role: 'admin' });
    await col.until(2);
    await c.store.bucket('staff').insert({ role: 'user' }); // does not change the result
    await c.store.bucket('staff').insert({ role: 'admin' });
    await col.until(3);
    assert.deepEqual(col.got, [0, 1, 2]);
    await sub.close();
    await sub.close();
    assert.equal(await c.store.runQuery('by-role', { role: 'admin' }), 2);

    await assert.rejects(c.store.subscribe('nope'),
      (e) => e instanceof flowmesh.NotFoundError && e.storeCode === 'QUERY_NOT_DEFINED');
    await assert.rejects(c.store.subscribe('by-role', {}),
      (e) => e instanceof flowmesh.InvalidArgumentError && e.storeCode === 'VALIDATION_ERROR');
  });

  it('live queries: async iteration and the client closing them', T, async () => {
    const c = await scoped();
    await c.store.defineQuery('everyone', { type: 'all', bucket: 'crew' });
    const sub = await c.store.subscribe('everyone');
    const it = sub[Symbol.asyncIterator]();
    assert.deepEqual((await it.next()).value, []);
    await c.store.bucket('crew').insert({ id: 'x' });
    assert.deepEqual((await it.next()).value.map((r) => r.id), ['x']);
    await c.close();
    assert.equal(sub.closed, true);
    assert.equal((await it.next()).done, true);
  });
});
