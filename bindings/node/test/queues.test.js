'use strict';
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { flowmesh, uniq, sleep, forEachEngine, T } = require('./helpers');

forEachEngine(describe, before, after, (env) => {
  it('enqueue, reserve, ack; stats follow', T, async () => {
    const c = env.client;
    const q = uniq('q');
    const id = await c.enqueue(q, 'job-1', { headers: { trace: 'abc' } });
    assert.equal(typeof id, 'number');
    assert.deepEqual(await c.stats(q), { pending: 1, inFlight: 0, delayed: 0, dead: 0 });
    const job = await c.reserve(q, { visibilityMs: 5000 });
    assert.equal(job.id, id);
    assert.equal(job.attempt, 1);
    assert.ok(Buffer.isBuffer(job.payload));
    assert.equal(job.payload.toString(), 'job-1');
    assert.deepEqual(job.headers, { trace: 'abc' });
    assert.equal((await c.stats(q)).inFlight, 1);
    await c.ack(q, job.id);
    assert.deepEqual(await c.stats(q), { pending: 0, inFlight: 0, delayed: 0, dead: 0 });
    assert.equal(await c.reserve(q), null, 'empty queue, no wait: null');
  });

  it('priority: the higher priority job is reserved first', T, async () => {
    const c = env.client;
    const q = uniq('q');
    await c.enqueue(q, 'low', { priority: 1 });
    await c.enqueue(q, 'high', { priority: 10 });
    const first = await c.reserve(q);
    assert.equal(first.payload.toString(), 'high');
    assert.equal(first.priority, 10);
    assert.equal((await c.reserve(q)).payload.toString(), 'low');
  });

  it('delay: a delayed job is invisible until due, reserve waits for it', T, async () => {
    const c = env.client;
    const q = uniq('q');
    const t0 = Date.now();
    await c.enqueue(q, 'later', { delayMs: 300 });
    assert.equal((await c.stats(q)).delayed, 1);
    assert.equal(await c.reserve(q), null);
    const job = await c.reserve(q, { waitMs: 3000 });
    assert.ok(job, 'job arrives within the wait');
    assert.equal(job.payload.toString(), 'later');
    assert.ok(Date.now() - t0 >= 250, 'not before its delay');
  });

  it('reserve with a wait returns null after the wait on an empty queue', T, async () => {
    const t0 = Date.now();
    assert.equal(await env.client.reserve(uniq('q'), { waitMs: 200 }), null);
    assert.ok(Date.now() - t0 >= 150);
  });

  it('visibility timeout: an unacked job comes back with attempt 2', T, async () => {
    const c = env.client;
    const q = uniq('q');
    const id = await c.enqueue(q, 'x');
    const j1 = await c.reserve(q, { visibilityMs: 200 });
    assert.equal(j1.id, id);
    const j2 = await c.reserve(q, { visibilityMs: 5000, waitMs: 3000 });
    assert.equal(j2.id, id);
    assert.equal(j2.attempt, 2);
    await c.ack(q, id);
  });

  it('receive returns a batch', T, async () => {
    const c = env.client;
    const q = uniq('q');
    for (let i = 0; i < 5; i++) await c.enqueue(q, `m${i}`);
    const jobs = await c.receive(q, { max: 3 });
    assert.equal(jobs.length, 3);
    assert.equal(new Set(jobs.map((j) => j.id)).size, 3);
    const rest = await c.receive(q, { max: 10, waitMs: 100 });
    assert.equal(rest.length, 2);
    assert.deepEqual(await c.receive(q, { max: 10 }), []);
  });

  it('nack redelivers; retry policy round-trips; exhausted jobs go to the DLQ; replay', T, async () => {
    const c = env.client;
    const q = uniq('q');
    const policy = { maxAttempts: 2, initialBackoffMs: 0, maxBackoffMs: 0, multiplier: 1.5 };
    await c.setRetryPolicy(q, policy);
    assert.deepEqual(await c.getRetryPolicy(q), policy);
    // One job at a time: a nacked job goes behind the others.
    const ids = [];
    for (const [payload, tenant] of [['poison', 'a'], ['poison-b', 'b']]) {
      const jobId = await c.enqueue(q, payload, { headers: { tenant } });
      ids.push(jobId);
      for (let attempt = 1; attempt <= 2; attempt++) {
        const j = await c.reserve(q, { waitMs: 2000 });
        assert.ok(j, `attempt ${attempt} delivered`);
        assert.equal(j.id, jobId);
        assert.equal(j.attempt, attempt);
        await c.nack(q, j.id);
      }
    }
    const [id, other] = ids;
    const stats = await c.stats(q);
    assert.equal(stats.dead, 2);
    assert.equal(stats.pending, 0);
    const dead = await c.dlqList(q);
    assert.deepEqual(dead.map((j) => j.id).sort(), [id, other].sort());
    assert.equal(dead.find((j) => j.id === id).payload.toString(), 'poison');

    await c.dlqReplay(q, id);
    assert.equal((await c.stats(q)).dead, 1);
    const again = await c.reserve(q, { waitMs: 2000 });
    assert.equal(again.id, id);
    await c.ack(q, id);

    assert.equal(await c.dlqReplayAll(q, { headerKey: 'tenant', headerValue: 'zzz' }), 0);
    assert.equal(await c.dlqReplayAll(q, { headerKey: 'tenant', headerValue: 'b' }), 1);
    assert.equal((await c.stats(q)).dead, 0);
    assert.equal(await c.dlqReplayAll(q), 0);
  });

  it('nack with a delay makes the job delayed', T, async () => {
    const c = env.client;
    const q = uniq('q');
    await c.enqueue(q, 'x');
    const j = await c.reserve(q);
    await c.nack(q, j.id, { delayMs: 300 });
    assert.equal(await c.reserve(q), null);
    const back = await c.reserve(q, { waitMs: 3000 });
    assert.equal(back.id, j.id);
  });

  it('concurrent reserves never get the same job', T, async () => {
    const c = env.client;
    const q = uniq('q');
    await Promise.all(Array.from({ length: 20 }, (_, i) => c.enqueue(q, `j${i}`)));
    const jobs = await Promise.all(Array.from({ length: 25 }, () => c.reserve(q, { waitMs: 200 })));
    const got = jobs.filter(Boolean);
    assert.equal(got.length, 20);
    assert.equal(new Set(got.map((j) => j.id)).size, 20);
  });

  it('a long reserve does not block the event loop', T, async () => {
    const c = env.client;
    const q = uniq('q');
    let ticks = 0;
    const timer = setInterval(() => { ticks++; }, 10);
    const waiting = c.reserve(q, { waitMs: 500 });
    await sleep(100);
    await c.enqueue(q, 'go'); // served by another worker while reserve waits
    const job = await waiting;
    clearInterval(timer);
    assert.ok(job, 'the waiting reserve gets the job');
    assert.ok(ticks >= 5, `event loop kept running (${ticks} ticks)`);
  });

  it('quick calls are not stuck behind many long polls', T, async () => {
    const c = env.client;
    const polls = Array.from({ length: 12 }, () => c.reserve(uniq('q'), { waitMs: 800 }));
    await sleep(50);
    await c.health(); // may start the pool's free worker: keep that out of the timing
    const t0 = Date.now();
    await c.publish(uniq('s'), 'quick');
    await c.set(uniq('b'), 'k', 'v');
    const ms = Date.now() - t0;
    assert.ok(ms < 150, `quick calls took ${ms} ms while 12 long polls waited`);
    assert.deepEqual(await Promise.all(polls), Array(12).fill(null));
  });

  it('ack of an unknown job is NotFoundError', T, async () => {
    const q = uniq('q');
    await env.client.enqueue(q, 'x');
    await assert.rejects(env.client.ack(q, 999999), flowmesh.NotFoundError);
  });
});
