'use strict';
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const os = require('node:os');
const path = require('node:path');
const fs = require('node:fs');
const { flowmesh, uniq, forEachEngine, T } = require('./helpers');

const lines = (text) => new Set(text.split('\n'));

forEachEngine(describe, before, after, (env) => {
  it('metrics(): exact counts after a known workload', T, async () => {
    const c = env.client;
    const before = await c.metrics();
    const count = (text, line) => {
      const m = text.split('\n').find((l) => l.startsWith(line + ' '));
      return m ? Number(m.slice(line.length + 1)) : 0;
    };
    const s = uniq('metered');
    for (let i = 0; i < 3; i++) await c.publish(s, 'abcd');
    await c.set(uniq('mb'), 'k', 'v');
    assert.equal(await c.get(uniq('mb'), 'absent'), null);
    const text = await c.metrics();
    // The shared client may have run other tests first: compare deltas.
    const delta = (line) => count(text, line) - count(before, line);
    assert.equal(delta('flowmesh_client_operations_total{op="publish",status="ok"}'), 3);
    assert.equal(delta('flowmesh_client_operations_total{op="kv_set",status="ok"}'), 1);
    assert.equal(delta('flowmesh_client_operations_total{op="kv_get",status="not_found"}'), 1);
    assert.equal(delta('flowmesh_client_messages_published_total'), 3);
    assert.equal(delta('flowmesh_client_published_bytes_total'), 12);
    assert.equal(delta('flowmesh_client_operation_duration_seconds_count{op="publish"}'), 3);
    assert.ok(lines(text).has('# TYPE flowmesh_client_operation_duration_seconds histogram'));
    assert.ok(lines(text).has('flowmesh_client_in_flight 0'));
  });
});

describe('metrics on a closed client and the memory tier', () => {
  it('rejects with ClosedError after close', T, async () => {
    const c = await flowmesh.connect('mem://');
    await c.close();
    await assert.rejects(c.metrics(), flowmesh.ClosedError);
  });

  it('tier=memory writes no files and stays bounded', T, async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fm-tier-'));
    const c = await flowmesh.connect(`file://${dir}`);
    try {
      await c.createStream('hotstream', { tier: 'memory', max_messages: 10 });
      for (let i = 0; i < 25; i++) await c.publish('hotstream', `m${i}`);
      const msgs = await c.read('hotstream', { max: 100 });
      assert.deepEqual(msgs.map((m) => m.offset), Array.from({ length: 10 }, (_, i) => 15 + i));
      const all = fs.readdirSync(dir, { recursive: true }).map(String);
      assert.deepEqual(all.filter((p) => p.includes('hotstream')), []);
    } finally {
      await c.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
