'use strict';
// TLS + token against a broker this suite starts: `flowmesh serve`
// with a certificate and an access file from tests/security/fixture.sh
// (openssl); the client connects with grpcs://, tlsCaFile and token.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { spawn, spawnSync } = require('node:child_process');
const { flowmesh, T, brokerSkipReason, freePort, sleep, ROOT, BIN } = require('./helpers');

const hasOpenssl = spawnSync('openssl', ['version']).status === 0;
const skip = brokerSkipReason() || (hasOpenssl ? null : 'the openssl CLI is needed to make test certificates');

describe('TLS and tokens', { skip: skip || false }, () => {
  let dir;
  let proc;
  let url;
  const opts = (extra = {}) => ({ tlsCaFile: path.join(dir, 'ca.pem'), tenant: 'acme', namespace: 'secure',
    connectTimeoutMs: 3000, ...extra });

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'flowmesh-node-tls-'));
    const fx = spawnSync(path.join(ROOT, 'tests', 'security', 'fixture.sh'), [BIN, dir], { encoding: 'utf8', timeout: 120000 });
    assert.equal(fx.status, 0, fx.stderr);
    const port = await freePort();
    proc = spawn(BIN, ['serve', '--listen', `127.0.0.1:${port}`, '--data', 'mem://',
      '--tls-cert', path.join(dir, 'server.pem'), '--tls-key', path.join(dir, 'server.key'),
      '--access-file', path.join(dir, 'access.json')], { stdio: 'ignore' });
    const reap = () => proc.kill('SIGKILL');
    process.once('exit', reap);
    url = `grpcs://localhost:${port}`;
    const end = Date.now() + 15000;
    for (;;) {
      try {
        const c = await flowmesh.connect(url, opts({ connectTimeoutMs: 500 }));
        await c.close();
        break;
      } catch (err) {
        if (Date.now() > end) throw err;
        await sleep(100);
      }
    }
  });

  after(async () => {
    if (proc && proc.exitCode === null) {
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      setTimeout(() => proc.kill('SIGKILL'), 3000).unref();
      await exited;
    }
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('round trip over TLS with a token; read-only and foreign tenants refused', T, async () => {
    const full = await flowmesh.connect(url, opts({ token: 'test-full-token' }));
    try {
      await full.set('cfg', 'k', 'over tls');
      assert.equal((await full.get('cfg', 'k')).toString(), 'over tls');
      await assert.rejects(full.get('globex/secure/cfg', 'k'), flowmesh.UnauthorizedError);
    } finally {
      await full.close();
    }
    const reader = await flowmesh.connect(url, opts({ token: 'test-read-token' }));
    try {
      assert.equal((await reader.get('cfg', 'k')).toString(), 'over tls');
      await assert.rejects(reader.set('cfg', 'k', 'x'), /no kv_write grant/);
    } finally {
      await reader.close();
    }
  });

  it('missing and wrong tokens are unauthorized', T, async () => {
    for (const extra of [{}, { token: 'wrong-token' }]) {
      const c = await flowmesh.connect(url, opts(extra));
      try {
        await assert.rejects(c.get('cfg', 'k'), flowmesh.UnauthorizedError);
      } finally {
        await c.close();
      }
    }
  });

  it('plaintext and wrong-CA connects fail fast', T, async () => {
    const started = Date.now();
    const plain = url.replace('grpcs://localhost', 'grpc://127.0.0.1');
    await assert.rejects(flowmesh.connect(plain, { connectTimeoutMs: 3000 }),
      (err) => err instanceof flowmesh.UnavailableError && /grpcs:\/\//.test(err.message));
    await assert.rejects(flowmesh.connect(url, opts({ tlsCaFile: path.join(dir, 'other-ca.pem') })),
      (err) => err instanceof flowmesh.UnavailableError && /certificate/.test(err.message));
    assert.ok(Date.now() - started < 10000);
  });
});
