'use strict';
// Connection state: client.state and client.onState, embedded and against a
// broker that is killed (SIGKILL) and restarted on the same port.
const { describe, it } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { execFile } = require('node:child_process');
const { flowmesh, eventually, brokerSkipReason, startBroker, T } = require('./helpers');

const FAST = {
  heartbeat_ms: 100,
  reconnect_initial_ms: 50,
  reconnect_max_ms: 200,
  reconnect_jitter_ms: 0,
  connect_timeout_ms: 500,
  request_timeout_ms: 1000,
};

function recorder() {
  const seen = [];
  const listener = (state, error) => { seen.push({ state, error }); };
  const states = () => seen.map((x) => x.state);
  const count = (s) => states().filter((x) => x === s).length;
  return { seen, listener, states, count };
}

describe('connection state', () => {
  it('ConnState names', () => {
    assert.deepEqual(Object.values(flowmesh.ConnState),
      ['connecting', 'connected', 'reconnecting', 'disconnected', 'closed']);
    assert.ok(Object.isFrozen(flowmesh.ConnState));
  });

  it('an embedded client reports connected first and closed on close', T, async () => {
    const c = await flowmesh.connect('mem://');
    assert.equal(c.state, 'connected');
    const r = recorder();
    assert.equal(c.onState(r.listener), c);
    await eventually(() => r.count('connected') === 1, 5000, 5);
    await c.close();
    // close() resolves after the listener's last call.
    assert.deepEqual(r.states(), ['connected', 'closed']);
    assert.ok(r.seen.every((x) => x.error === null));
    assert.equal(c.state, 'closed');
    assert.throws(() => c.onState(r.listener), flowmesh.ClosedError);
  });

  it('a throwing listener becomes an uncaught exception, not a crash in the library', T, async () => {
    // In a child process: the test runner treats uncaught exceptions as failures.
    const code = `const fm = require(${JSON.stringify(path.resolve(__dirname, '..'))});
      fm.connect('mem://').then((c) => {
        process.on('uncaughtException', (e) => {
          console.log('uncaught', e.message, c.state);
          c.close().then(() => { console.log('closed'); process.exit(0); });
        });
        c.onState((s) => { if (s === 'connected') throw new Error('boom'); });
        setTimeout(() => {}, 3000);
      });`;
    const out = await new Promise((resolve, reject) => {
      execFile(process.execPath, ['-e', code], { timeout: 10000 }, (err, stdout, stderr) => {
        if (err) reject(new Error(`${err.message}\n${stderr}`));
        else resolve(stdout);
      });
    });
    assert.equal(out, 'uncaught boom connected\nclosed\n');
  });

  it('bad listener, at most 16 listeners', T, async () => {
    const c = await flowmesh.connect('mem://');
    try {
      assert.throws(() => c.onState('nope'), TypeError);
      for (let i = 0; i < 16; i++) c.onState(() => {});
      assert.throws(() => c.onState(() => {}), flowmesh.InvalidArgumentError);
      await c.health(); // the client is fine
    } finally {
      await c.close();
    }
  });

  it('unknown options are still rejected; the new ones are accepted', T, async () => {
    await assert.rejects(flowmesh.connect('mem://', { heartbeat_msec: 100 }), flowmesh.InvalidArgumentError);
    await assert.rejects(flowmesh.connect('mem://', { nonblocking: 'maybe' }), flowmesh.InvalidArgumentError);
    const c = await flowmesh.connect('mem://', {
      heartbeat_ms: 0, max_retries: 5, breaker_threshold: 0, breaker_timeout_ms: 1000,
      max_in_flight: 8, nonblocking: true,
    });
    const d = await flowmesh.connect('mem://', { heartbeatMs: 250, maxInFlight: 1, nonblocking: false });
    try {
      assert.equal(c.state, 'connected');
      assert.equal(d.state, 'connected');
      await c.publish('s', 'x');
    } finally {
      await c.close();
      await d.close();
    }
  });

  const skip = brokerSkipReason() || false;

  it('broker killed: reconnecting; restarted on the same port: connected, in order', { ...T, skip }, async () => {
    let broker = await startBroker();
    const r = recorder();
    let c;
    try {
      c = await flowmesh.connect(broker.url, FAST);
      c.onState(r.listener);
      await eventually(() => r.count('connected') === 1, 5000, 5);
      await broker.kill(); // SIGKILL
      await eventually(() => r.count('reconnecting') >= 1, 5000, 5);
      assert.ok(['reconnecting', 'connecting'].includes(c.state), c.state);
      const cause = r.seen.find((x) => x.state === 'reconnecting').error;
      assert.ok(cause === null || cause instanceof flowmesh.FlowMeshError, String(cause));
      broker = await startBroker({ port: broker.port });
      await eventually(() => r.count('connected') >= 2, 5000, 5);
      assert.equal(c.state, 'connected');
      await c.health();
      await c.close();
      const states = r.states();
      assert.equal(states[0], 'connected');
      assert.equal(states[states.length - 1], 'closed');
      const i = states.indexOf('reconnecting');
      assert.ok(states.slice(i).includes('connected'), states.join(','));
      assert.ok(!states.includes('disconnected'), states.join(','));
      for (let k = 1; k < states.length; k++) assert.notEqual(states[k], states[k - 1], states.join(','));
    } finally {
      if (c) await c.close();
      await broker.stop();
    }
  });

  it('broker gone for good: disconnected after max_reconnect_attempts', { ...T, skip }, async () => {
    const broker = await startBroker();
    const r = recorder();
    let c;
    try {
      c = await flowmesh.connect(broker.url, { ...FAST, max_reconnect_attempts: 1 });
      c.onState(r.listener);
      await eventually(() => r.count('connected') === 1, 5000, 5);
      await broker.kill();
      await eventually(() => r.count('disconnected') === 1, 10000, 5);
      const cause = r.seen.find((x) => x.state === 'disconnected').error;
      assert.ok(cause instanceof flowmesh.DisconnectedError, String(cause));
      assert.equal(c.state, 'disconnected');
      await assert.rejects(c.get('b', 'k'), flowmesh.DisconnectedError);
    } finally {
      if (c) await c.close();
      await broker.stop();
    }
    assert.equal(r.states().at(-1), 'closed');
  });
});
