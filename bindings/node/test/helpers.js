'use strict';
// Shared test setup: which engines to run against, unique names, a broker.
// Every suite runs once per engine: mem://, file:// (temp dir), when the
// `flowmesh` binary can `serve`, grpc:// to a broker started on a free port,
// and nats:// to a nats-server started for the suite.

const fs = require('node:fs');
const os = require('node:os');
const net = require('node:net');
const path = require('node:path');
const { spawn, spawnSync } = require('node:child_process');
const { randomBytes } = require('node:crypto');
const flowmesh = require('..');

const ROOT = path.resolve(__dirname, '..', '..', '..');
const BIN = process.env.FLOWMESH_BIN || path.join(ROOT, 'target', 'release', 'flowmesh');

function uniq(prefix = 'n') {
  return `${prefix}-${randomBytes(4).toString('hex')}`;
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Polls `fn` until it returns a truthy value or `ms` pass.
async function eventually(fn, ms = 5000, step = 20) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`condition not met within ${ms} ms`);
    await sleep(step);
  }
}

// Why the broker tests cannot run, or null when they can.
function brokerSkipReason() {
  if (!fs.existsSync(BIN)) return `no broker binary at ${BIN}`;
  const r = spawnSync(BIN, ['serve', '--help'], { encoding: 'utf8', timeout: 10000 });
  if (r.status !== 0 || !/--listen/.test(`${r.stdout}${r.stderr}`)) {
    return `${BIN} has no 'serve --listen' subcommand yet`;
  }
  return null;
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// Starts `flowmesh serve` on a free loopback port (or `port`) with `data`
// (default mem://); resolves once a client can reach it. Returns { url, port,
// stop, kill } (kill: SIGKILL, resolves once it exited).
async function startBroker({ port, data = 'mem://' } = {}) {
  if (!port) port = await freePort();
  const proc = spawn(BIN, ['serve', '--listen', `127.0.0.1:${port}`, '--data', data],
    { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr.on('data', (d) => { stderr += d; });
  // Never leave a broker behind, even if the test process dies early.
  const reap = () => proc.kill('SIGKILL');
  process.once('exit', reap);
  proc.once('exit', () => process.removeListener('exit', reap));
  const url = `grpc://127.0.0.1:${port}`;
  const stop = () => new Promise((resolve) => {
    if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
    proc.once('exit', () => resolve());
    proc.kill('SIGTERM');
    setTimeout(() => proc.kill('SIGKILL'), 3000).unref();
  });
  const kill = () => new Promise((resolve) => {
    if (proc.exitCode !== null || proc.signalCode !== null) return resolve();
    proc.once('exit', () => resolve());
    proc.kill('SIGKILL');
  });
  const end = Date.now() + 15000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`broker exited early (${proc.exitCode}): ${stderr}`);
    try {
      const c = await flowmesh.connect(url, { connect_timeout_ms: 500 });
      try {
        await c.health();
      } finally {
        await c.close();
      }
      return { url, port, stop, kill };
    } catch (err) {
      if (Date.now() > end) {
        await stop();
        throw new Error(`broker not reachable at ${url}: ${err.message}; stderr: ${stderr}`);
      }
      await sleep(100);
    }
  }
}

// The engines every suite runs on. `setup()` returns { url, teardown }.
function engines() {
  const list = [
    { name: 'mem://', setup: async () => ({ url: 'mem://', teardown: async () => {} }) },
    {
      name: 'file://',
      setup: async () => {
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'flowmesh-node-'));
        return { url: `file://${dir}`, dir, teardown: async () => fs.rmSync(dir, { recursive: true, force: true }) };
      },
    },
  ];
  const reason = brokerSkipReason();
  list.push({
    name: 'grpc:// broker',
    skip: reason || false,
    setup: async () => {
      const b = await startBroker();
      return { url: b.url, teardown: b.stop };
    },
  });
  list.push({
    name: 'nats:// server',
    skip: false,
    setup: async () => {
      const n = startNats();
      return { url: n.url, teardown: n.stop };
    },
  });
  return list;
}

// Starts one nats-server with JetStream (scripts/nats-cluster.sh: loopback,
// free ports, a temp dir wiped by stop()). Returns { url, stop }.
function startNats() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'flowmesh-node-nats-'));
  const env = { ...process.env, NATS_CLUSTER_DIR: path.join(dir, 'cluster'), NATS_NODES: '1' };
  const script = path.join(ROOT, 'scripts', 'nats-cluster.sh');
  const stop = async () => {
    spawnSync(script, ['wipe'], { env, timeout: 60000 });
    fs.rmSync(dir, { recursive: true, force: true });
  };
  const r = spawnSync(script, ['start'], { env, encoding: 'utf8', timeout: 300000 });
  const url = (r.stdout || '').trim().split('\n').pop();
  if (r.status !== 0 || !url.startsWith('nats://')) {
    spawnSync(script, ['wipe'], { env, timeout: 60000 });
    throw new Error(`cannot start a nats-server (scripts/nats-cluster.sh start): ${r.stderr}`);
  }
  // Never leave a server behind, even if the test process dies early.
  process.once('exit', () => spawnSync(script, ['wipe'], { env, timeout: 60000 }));
  return { url, stop };
}

// describe() one block per engine; `body(env)` gets env.client (connected in
// before(), closed in after()), env.url and env.connect(options).
function forEachEngine(describe, before, after, body) {
  for (const engine of engines()) {
    describe(engine.name, { skip: engine.skip }, () => {
      const env = { engine: engine.name };
      const extra = [];
      before(async () => {
        const s = await engine.setup();
        Object.assign(env, s);
        env.connect = async (options) => {
          const c = await flowmesh.connect(env.url, options);
          extra.push(c);
          return c;
        };
        env.client = await env.connect();
      });
      after(async () => {
        for (const c of extra) await c.close();
        if (env.teardown) await env.teardown();
      });
      body(env);
    });
  }
}

// Per-test timeout: a hang becomes a failure, not a stuck run.
const T = { timeout: 15000 };

module.exports = { T, flowmesh, uniq, sleep, eventually, forEachEngine, brokerSkipReason, startBroker, freePort, ROOT, BIN };
