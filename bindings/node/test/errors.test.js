'use strict';
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { flowmesh, uniq, forEachEngine, T } = require('./helpers');

// The error for `promise`, which must reject.
async function failure(promise) {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection');
}

describe('errors without a connection', () => {
  it('an unknown option key is InvalidArgumentError with the native detail', T, async () => {
    const err = await failure(flowmesh.connect('mem://', { no_such_option: 'x' }));
    assert.ok(err instanceof flowmesh.InvalidArgumentError);
    assert.ok(err instanceof flowmesh.FlowMeshError);
    assert.equal(err.code, 'FM_ERR_INVALID_ARGUMENT');
    assert.equal(typeof err.status, 'number');
    assert.equal(err.name, 'InvalidArgumentError');
    // fm_last_error() is read on the thread that made the failing call: its
    // text names the offending key, which fm_status_str alone could not.
    assert.match(err.message, /no_such_option/);
  });

  it('an unsupported URL is rejected', T, async () => {
    const err = await failure(flowmesh.connect('bogus://x'));
    assert.ok(err instanceof flowmesh.FlowMeshError);
    assert.notEqual(err.message, '');
  });

  it('JS type errors are TypeError, not native errors', T, async () => {
    await assert.rejects(flowmesh.connect(42), TypeError);
  });

  it('a missing native library is a clear error', T, async () => {
    const { execFile } = require('node:child_process');
    const path = require('node:path');
    const code = `require(${JSON.stringify(path.resolve(__dirname, '..'))}).connect('mem://')
      .then(() => console.log('connected'), (e) => console.log(e.message))`;
    const out = await new Promise((resolve) => execFile(process.execPath, ['-e', code],
      { env: { ...process.env, FLOWMESH_LIB: '/nonexistent/libflowmesh.so' }, timeout: 10000 },
      (err, stdout) => resolve(stdout)));
    assert.match(out, /cannot load the native library \/nonexistent\/libflowmesh\.so/);
  });

  it('version() is semver', () => {
    assert.match(flowmesh.version(), /^\d+\.\d+\.\d+/);
  });

  it('every subclass is a FlowMeshError', () => {
    for (const name of ['InvalidArgumentError', 'NotFoundError', 'TimeoutError', 'DisconnectedError',
      'UnauthorizedError', 'ClosedError', 'AlreadyExistsError', 'ConflictError', 'TooLargeError',
      'UnavailableError', 'InternalError']) {
      assert.ok(new flowmesh[name]('m') instanceof flowmesh.FlowMeshError, name);
    }
  });
});

forEachEngine(describe, before, after, (env) => {
  it('NotFoundError for a stream that never existed', T, async () => {
    const s = uniq('missing');
    for (const p of [env.client.read(s), env.client.latestOffset(s), env.client.partitions(s)]) {
      const err = await failure(p);
      assert.ok(err instanceof flowmesh.NotFoundError, `${err}`);
      assert.equal(err.code, 'FM_ERR_NOT_FOUND');
    }
  });

  it('InvalidArgumentError for a bad resource name and a bad subscribe option', T, async () => {
    const c = env.client;
    const bad = await failure(c.publish('no spaces allowed', 'x'));
    assert.ok(bad instanceof flowmesh.InvalidArgumentError, `${bad}`);
    const opt = await failure(c.subscribe(uniq('s'), { tenant: 'x' }));
    assert.ok(opt instanceof flowmesh.InvalidArgumentError, `${opt}`);
  });

  it('TooLargeError above max_payload_bytes', T, async () => {
    const c = await env.connect({ max_payload_bytes: 1024 });
    const err = await failure(c.publish(uniq('s'), Buffer.alloc(4096)));
    assert.ok(err instanceof flowmesh.TooLargeError, `${err}`);
    assert.equal(err.code, 'FM_ERR_TOO_LARGE');
    // camelCase option keys and number values are converted for the library.
    const c2 = await env.connect({ maxPayloadBytes: 2048 });
    await c2.publish(uniq('s'), Buffer.alloc(2000));
    await assert.rejects(c2.publish(uniq('s'), Buffer.alloc(4096)), flowmesh.TooLargeError);
    await assert.rejects(c2.set(uniq('b'), 'k', Buffer.alloc(4096)), flowmesh.TooLargeError);
  });

  it('TypeError for payloads of the wrong type', T, async () => {
    await assert.rejects(env.client.publish(uniq('s'), 42), TypeError);
    await assert.rejects(env.client.enqueue(uniq('q'), 'x', { priority: 1.5 }), TypeError);
    await assert.rejects(env.client.read(uniq('s'), { offset: -1 }), TypeError);
  });
});
