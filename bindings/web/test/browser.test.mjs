// The browser client and the broker's console in a real headless Chromium
// (Debian's /usr/bin/chromium, driven by playwright-core), against real
// brokers started here on free loopback ports.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, openSync, closeSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { createServer, connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
// Screenshots go to a temp dir, so a test run leaves the tree clean; with
// FLOWMESH_UPDATE_SCREENSHOTS=1 they refresh the ones docs/console/ keeps.
const SHOTS = process.env.FLOWMESH_UPDATE_SCREENSHOTS === '1'
  ? join(here, '..', '..', '..', 'docs', 'console')
  : join(tmpdir(), `flowmesh-console-shots-${process.pid}`);
const BIN = process.env.FLOWMESH_BIN;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
// Every wait is bounded; generous because the suite runs beside CPU hogs.
const WAIT = 20000;
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

function portOpen(port) {
  return new Promise((resolve) => {
    const c = tcpConnect({ port, host: '127.0.0.1' });
    c.once('connect', () => { c.destroy(); resolve(true); });
    c.once('error', () => resolve(false));
  });
}

class Broker {
  constructor(data, ports, extra) { this.data = data; this.ports = ports; this.extra = extra; this.proc = null; }

  static async start(data = 'mem://', extra = []) {
    const b = new Broker(data, { grpc: await freePort(), ws: await freePort() }, extra);
    await b.run();
    return b;
  }

  async run() {
    const log = process.env.FLOWMESH_BROKER_LOG ? openSync(process.env.FLOWMESH_BROKER_LOG, 'a') : 'ignore';
    this.proc = spawn(BIN, ['serve', '--data', this.data, '--listen', `127.0.0.1:${this.ports.grpc}`,
      '--ws', `127.0.0.1:${this.ports.ws}`, ...this.extra], { stdio: ['ignore', log, log] });
    if (typeof log === 'number') closeSync(log);
    const exited = new Promise((resolve) => this.proc.once('exit', resolve));
    this.exited = exited;
    const deadline = Date.now() + WAIT;
    while (Date.now() < deadline) {
      if (this.proc.exitCode !== null) throw new Error(`flowmesh serve exited with ${this.proc.exitCode}`);
      if (await portOpen(this.ports.ws) && await portOpen(this.ports.grpc)) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    await this.stop();
    throw new Error(`the broker did not listen within ${WAIT} ms`);
  }

  get origin() { return `http://127.0.0.1:${this.ports.ws}`; }

  async stop() {
    if (!this.proc || this.proc.exitCode !== null) return;
    this.proc.kill('SIGTERM');
    const killer = setTimeout(() => this.proc.kill('SIGKILL'), 15000);
    await this.exited;
    clearTimeout(killer);
  }
}

let browser;
let broker;

before(async () => {
  assert.ok(BIN, 'FLOWMESH_BIN must name the flowmesh binary');
  broker = await Broker.start();
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS, timeout: WAIT });
});

after(async () => {
  await browser?.close();
  await broker?.stop();
});

/** A page on the broker's origin with the client module loaded as window.fm. */
async function clientPage(b = broker) {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  // /healthz is plain text: the browser's favicon request is not the client's business.
  await page.route('**/favicon.ico', (r) => r.fulfill({ status: 204 }));
  await page.goto(`${b.origin}/healthz`);
  await page.evaluate(async () => { window.fm = await import('/flowmesh.js'); });
  page.errors = errors;
  return page;
}

test('publish and subscribe round trip, read, errors as codes', async () => {
  const page = await clientPage();
  const r = await page.evaluate(async (url) => {
    const { connect, text, NotFoundError, FlowMeshError } = window.fm;
    const c = await connect(url);
    await c.createStream('orders', { partitions: 2 });
    const got = [];
    const sub = await c.subscribe('orders', { start: 'earliest' }, (m) => { got.push(text(m.payload)); });
    const positions = [];
    for (let i = 0; i < 20; i++) positions.push(await c.publish('orders', `o${i}`, { key: `k${i % 4}`, headers: { n: String(i) } }));
    const deadline = Date.now() + 15000;
    while (got.length < 20 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 20));
    const read = await c.read('orders', { partition: positions[0].partition, max: 100 });
    let err = null;
    try { await c.read('never-created'); } catch (e) { err = { code: e.code, status: e.status, nf: e instanceof NotFoundError, base: e instanceof FlowMeshError }; }
    let bad = null;
    try { await c.publish('bad name!', 'x'); } catch (e) { bad = e.code; }
    await sub.close();
    await c.close();
    return { got, positions, read: read.map((m) => ({ p: text(m.payload), h: m.headers.n, key: text(m.key) })), err, bad, state: c.state };
  }, broker.origin);
  assert.equal(r.got.length, 20);
  assert.deepEqual([...r.got].sort(), Array.from({ length: 20 }, (_, i) => `o${i}`).sort());
  // Per partition the order is the publish order.
  assert.ok(r.read.length > 0);
  for (let i = 1; i < r.read.length; i++) assert.ok(Number(r.read[i].h) > Number(r.read[i - 1].h));
  assert.deepEqual(r.err, { code: 'FM_ERR_NOT_FOUND', status: 2, nf: true, base: true });
  assert.equal(r.bad, 'FM_ERR_INVALID_ARGUMENT');
  assert.equal(r.state, 'closed');
  assert.deepEqual(page.errors, []);
  await page.close();
});

test('consumer group: commits, lag, resume where the group stopped', async () => {
  const page = await clientPage();
  const r = await page.evaluate(async (url) => {
    const { connect, text } = window.fm;
    const c = await connect(url);
    for (let i = 0; i < 5; i++) await c.publish('grouped', `g${i}`);
    const first = [];
    const sub = await c.subscribe('grouped', { group: 'workers', start: 'earliest' }, (m) => { first.push(text(m.payload)); });
    let deadline = Date.now() + 15000;
    while (first.length < 5 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 20));
    await sub.close(); // commits what was processed
    const committed = await c.getOffset('grouped', 'workers');
    for (let i = 5; i < 8; i++) await c.publish('grouped', `g${i}`);
    const lag = (await c.groupState('grouped', 'workers')).partitions[0].lag;
    const second = [];
    const again = await c.subscribe('grouped', { group: 'workers' });
    for await (const m of again) { second.push(text(m.payload)); if (second.length === 3) break; }
    await c.close();
    return { first, committed, lag, second };
  }, broker.origin);
  assert.deepEqual(r.first, ['g0', 'g1', 'g2', 'g3', 'g4']);
  assert.equal(r.committed, 4);
  assert.equal(r.lag, 3);
  assert.deepEqual(r.second, ['g5', 'g6', 'g7']);
  await page.close();
});

test('queue round trip: enqueue, reserve, nack, ack, stats, dead letters and replay', async () => {
  const page = await clientPage();
  const r = await page.evaluate(async (url) => {
    const { connect, text, ConflictError } = window.fm;
    const c = await connect(url);
    const id = await c.enqueue('jobs', 'work-1', { headers: { kind: 'a' } });
    const j1 = await c.reserve('jobs', { visibilityMs: 30000 });
    await c.nack('jobs', j1.id);
    const j2 = await c.reserve('jobs', { waitMs: 2000 });
    await c.ack('jobs', j2.id);
    let conflict = null;
    try { await c.ack('jobs', j2.id); } catch (e) { conflict = e.code; }
    const afterAck = await c.stats('jobs');
    await c.setRetryPolicy('jobs', { maxAttempts: 1 });
    const dead = await c.enqueue('jobs', 'doomed');
    const j3 = await c.reserve('jobs');
    await c.nack('jobs', j3.id);
    const dlq = await c.dlqList('jobs');
    const deadStats = await c.stats('jobs');
    await c.dlqReplay('jobs', dead);
    const replayed = await c.stats('jobs');
    const policy = await c.getRetryPolicy('jobs');
    await c.close();
    return { id, j1: { id: j1.id, a: j1.attempt, p: text(j1.payload), h: j1.headers.kind }, j2: { id: j2.id, a: j2.attempt },
      conflict, afterAck, dlq: dlq.map((j) => ({ id: j.id, p: text(j.payload) })), dead, deadStats, replayed, policy,
      isConflict: ConflictError.name };
  }, broker.origin);
  assert.deepEqual(r.j1, { id: r.id, a: 1, p: 'work-1', h: 'a' });
  assert.deepEqual(r.j2, { id: r.id, a: 2 });
  assert.ok(['FM_ERR_CONFLICT', 'FM_ERR_NOT_FOUND'].includes(r.conflict), r.conflict);
  assert.deepEqual(r.afterAck, { pending: 0, inFlight: 0, delayed: 0, dead: 0 });
  assert.deepEqual(r.dlq, [{ id: r.dead, p: 'doomed' }]);
  assert.equal(r.deadStats.dead, 1);
  assert.equal(r.replayed.dead, 0);
  assert.equal(r.replayed.pending, 1);
  assert.equal(r.policy.maxAttempts, 1);
  await page.close();
});

test('KV round trip: set, get, cas, keys, delete, txn, watch', async () => {
  const page = await clientPage();
  const r = await page.evaluate(async (url) => {
    const { connect, text, ConflictError } = window.fm;
    const c = await connect(url);
    const events = [];
    const w = await c.watch('config', 'app.', (e) => { events.push(`${e.op}:${e.key}:${text(e.value)}`); });
    const r1 = await c.set('config', 'app.color', 'blue');
    const r2 = await c.cas('config', 'app.color', 'green', r1);
    let cas = null;
    try { await c.cas('config', 'app.color', 'red', r1); } catch (e) { cas = { code: e.code, cls: e instanceof ConflictError }; }
    await c.set('config', 'app.size', '3');
    await c.set('config', 'other', 'x');
    const keys = await c.listKeys('config', 'app.');
    const entry = await c.getEntry('config', 'app.color');
    const deleted = await c.delete('config', 'app.size');
    const missing = await c.get('config', 'app.size');
    const txn = await c.txn([
      { op: 'check', bucket: 'config', key: 'app.color', revision: r2 },
      { op: 'put', bucket: 'config', key: 'app.shape', value: 'round' },
      { op: 'get', bucket: 'config', key: 'app.color' },
      { op: 'list', bucket: 'config', prefix: 'app.' },
    ]);
    let txnConflict = null;
    try { await c.txn([{ op: 'check', bucket: 'config', key: 'app.color', revision: 1 }, { op: 'delete', bucket: 'config', key: 'app.color' }]); } catch (e) { txnConflict = e.code; }
    const deadline = Date.now() + 15000;
    while (events.length < 5 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 20));
    await w.close();
    await c.close();
    return { r1, r2, cas, keys, entry: { v: text(entry.value), rev: entry.revision }, deleted, missing, events,
      txn: txn.map((t) => t.op === 'get' ? text(t.entry.value) : t.op === 'list' ? t.entries.map((e) => e.key) : t.op), txnConflict };
  }, broker.origin);
  assert.ok(r.r2 > r.r1);
  assert.deepEqual(r.cas, { code: 'FM_ERR_CONFLICT', cls: true });
  assert.deepEqual(r.keys, ['app.color', 'app.size']);
  assert.deepEqual(r.entry, { v: 'green', rev: r.r2 });
  assert.equal(r.deleted, true);
  assert.equal(r.missing, null);
  assert.deepEqual(r.txn, ['check', 'put', 'green', ['app.color', 'app.shape']]);
  assert.equal(r.txnConflict, 'FM_ERR_CONFLICT');
  assert.deepEqual(r.events.slice(0, 5), ['put:app.color:blue', 'put:app.color:green', 'put:app.size:3', 'delete:app.size:null', 'put:app.shape:round']);
  await page.close();
});

test('events between applications', async () => {
  const page = await clientPage();
  const r = await page.evaluate(async (url) => {
    const { connect, text } = window.fm;
    const alice = await connect(url, { appId: 'alice' });
    const bob = await connect(url, { appId: 'bob' });
    const got = [];
    const sub = await bob.subscribeEvents('orders/created', (ev) => { got.push({ id: ev.id, s: ev.sender, p: text(ev.payload), m: ev.metadata }); });
    const id = await alice.publishEvent('orders/created', ['bob'], 'hello', { metadata: { k: 'v' } });
    const deadline = Date.now() + 15000;
    while (got.length < 1 && Date.now() < deadline) await new Promise((res) => setTimeout(res, 20));
    await sub.unsubscribe();
    const inbox = await bob.stats(bob.qualify('_inbox.bob.orders_2fcreated'));
    await alice.close();
    await bob.close();
    return { id, got, inbox };
  }, broker.origin);
  assert.deepEqual(r.got, [{ id: r.id, s: 'alice', p: 'hello', m: { k: 'v' } }]);
  assert.equal(r.inbox.pending + r.inbox.inFlight, 0);
  await page.close();
});

test('reconnect after a broker restart resumes subscriptions without loss or duplicates', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'flowmesh-web-'));
  const b = await Broker.start(`file://${dir}`);
  try {
    const page = await clientPage(b);
    await page.evaluate(async (url) => {
      const { connect, text } = window.fm;
      const c = await connect(url, { reconnectInitialMs: 50, reconnectMaxMs: 500 });
      window.c = c;
      window.states = [];
      c.on('state', (s) => window.states.push(s));
      window.plain = [];
      window.grouped = [];
      await c.createStream('events', { partitions: 2 });
      await c.subscribe('events', { start: 'earliest' }, (m) => { window.plain.push(`${m.partition}:${m.offset}:${text(m.payload)}`); });
      await c.subscribe('events', { group: 'g', start: 'earliest' }, (m) => { window.grouped.push(`${m.partition}:${m.offset}:${text(m.payload)}`); });
      for (let i = 0; i < 10; i++) await c.publish('events', `before-${i}`, { key: `k${i}` });
    }, b.origin);
    await page.waitForFunction(() => window.plain.length === 10 && window.grouped.length === 10, null, { timeout: WAIT });
    await b.stop();
    await page.waitForFunction(() => window.c.state === 'reconnecting', null, { timeout: WAIT });
    await b.run();
    await page.waitForFunction(() => window.c.state === 'connected', null, { timeout: WAIT });
    await page.evaluate(async () => {
      for (let i = 0; i < 10; i++) await window.c.publish('events', `after-${i}`, { key: `k${i}` });
    });
    await page.waitForFunction(() => window.plain.length >= 20 && window.grouped.length >= 20, null, { timeout: WAIT });
    // Nothing more arrives: no duplicates after a moment either.
    await page.waitForTimeout(500);
    const r = await page.evaluate(() => ({ plain: window.plain, grouped: window.grouped, states: window.states, reconnects: window.c.reconnects }));
    const payloads = (list) => list.map((s) => s.split(':')[2]).sort();
    const expected = [...Array.from({ length: 10 }, (_, i) => `before-${i}`), ...Array.from({ length: 10 }, (_, i) => `after-${i}`)].sort();
    assert.deepEqual(payloads(r.plain), expected);
    assert.deepEqual(payloads(r.grouped), expected);
    assert.equal(new Set(r.plain).size, 20);
    assert.ok(r.reconnects >= 1);
    assert.ok(r.states.includes('reconnecting') && r.states.at(-1) === 'connected', r.states.join(','));
    await page.evaluate(() => window.c.close());
    await page.close();
  } finally {
    await b.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('console pages load without errors, DLQ replay through the UI, screenshots', async () => {
  // Something to show on every page.
  const setup = await clientPage();
  await setup.evaluate(async (url) => {
    const { connect } = window.fm;
    const c = await connect(url);
    await c.createStream('payments', { partitions: 3 });
    for (let i = 0; i < 30; i++) await c.publish('payments', `p${i}`, { key: `acct-${i % 7}` });
    await c.commitOffset('payments', 'ledger', 0, 2);
    await c.setRetryPolicy('mail', { maxAttempts: 1 });
    for (let i = 0; i < 3; i++) await c.enqueue('mail', `mail-${i}`);
    const j = await c.reserve('mail');
    await c.nack('mail', j.id);
    window.deadJob = j.id;
    await c.enqueue('mail', 'later', { delayMs: 600000 });
    await c.reserve('mail', { visibilityMs: 600000 });
    for (const [k, v] of [['feature.dark-mode', 'on'], ['feature.beta', 'off'], ['limits.rps', '200']]) await c.set('settings', k, v);
    await c.close();
  }, broker.origin);
  const deadJob = await setup.evaluate(() => window.deadJob);

  const page = await browser.newPage({ viewport: { width: 1100, height: 700 } });
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  mkdirSync(SHOTS, { recursive: true });

  await page.goto(`${broker.origin}/#overview`);
  await page.waitForFunction(() => document.getElementById('state').textContent === 'connected', null, { timeout: WAIT });
  // Two polls give a rate; wait for the cards to fill.
  await page.waitForFunction(() => document.getElementById('m-rate').textContent !== '-', null, { timeout: WAIT });

  await page.click('#nav-streams');
  await page.waitForSelector('#streams-table tr[data-name="default/default/payments"]', { timeout: WAIT });
  const lag = await page.textContent('#streams-table tr[data-name="default/default/payments"]');
  assert.match(lag, /ledger: \d+/);
  // Traffic while the picture is taken, for a message rate on it.
  const traffic = setup.evaluate(async (url) => {
    const c = await window.fm.connect(url);
    const until = Date.now() + 3000;
    for (let i = 0; Date.now() < until; i++) { await c.publish('payments', `live-${i}`); await new Promise((r) => setTimeout(r, 20)); }
    await c.close();
  }, broker.origin);
  await page.waitForFunction(() => Number(document.querySelector('#streams-table tr[data-name="default/default/payments"] td.rate')?.textContent) > 0, null, { timeout: WAIT });
  await page.screenshot({ path: join(SHOTS, 'streams.png') });
  await traffic;

  await page.click('#nav-queues');
  const row = '#queues-table tr[data-name="default/default/mail"]';
  await page.waitForSelector(row, { timeout: WAIT });
  await page.waitForFunction((sel) => document.querySelector(`${sel} td.dead`)?.textContent === '1', row, { timeout: WAIT });
  await page.click(`${row} button.dlq-open`);
  await page.waitForSelector(`#dlq-table tr[data-job="${deadJob}"]`, { timeout: WAIT });
  await page.screenshot({ path: join(SHOTS, 'queues.png') });
  await page.click(`#dlq-table tr[data-job="${deadJob}"] button.replay`);
  await page.waitForFunction(() => !document.getElementById('dlq-empty').hidden, null, { timeout: WAIT });
  // The job moved: checked through the client, not the page.
  const moved = await setup.evaluate(async (url) => {
    const c = await window.fm.connect(url);
    const r = { stats: await c.stats('mail'), dlq: (await c.dlqList('mail')).length };
    await c.close();
    return r;
  }, broker.origin);
  assert.equal(moved.dlq, 0);
  assert.equal(moved.stats.dead, 0);
  assert.equal(moved.stats.pending, 2); // the one never reserved + the replayed one
  await page.waitForFunction((sel) => document.querySelector(`${sel} td.dead`)?.textContent === '0', row, { timeout: WAIT });

  await page.click('#nav-kv');
  await page.waitForSelector('#buckets li[data-name="default/default/settings"]', { timeout: WAIT });
  await page.click('#buckets li[data-name="default/default/settings"]');
  await page.waitForSelector('#keys-table tr[data-key="limits.rps"]', { timeout: WAIT });
  await page.waitForTimeout(300); // the watch is open once the keys are shown and the click resolved
  await setup.evaluate(async (url) => {
    const c = await window.fm.connect(url);
    await c.set('settings', 'limits.rps', '250');
    await c.close();
  }, broker.origin);
  await page.waitForFunction(() => document.getElementById('watch-log').textContent.includes('put limits.rps = 250'), null, { timeout: WAIT });
  await page.waitForFunction(() => document.querySelector('#keys-table tr[data-key="limits.rps"]')?.textContent.includes('250'), null, { timeout: WAIT });
  await page.screenshot({ path: join(SHOTS, 'kv.png') });

  await page.click('#nav-overview');
  await page.waitForFunction(() => document.getElementById('m-rate').textContent !== '-', null, { timeout: WAIT });
  await page.screenshot({ path: join(SHOTS, 'overview.png') });

  assert.deepEqual(errors, []);
  assert.deepEqual(setup.errors, []);
  await page.close();
  await setup.close();
});

test('the console asks for a token when the broker needs one', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'flowmesh-web-access-'));
  const token = 'console-admin-token';
  const access = join(dir, 'access.json');
  writeFileSync(access, JSON.stringify({ tokens: [{ id: 'admin', tenant: 'acme', grants: [{ namespace: '*', ops: ['*'] }],
    sha256: createHash('sha256').update(token).digest('hex') }] }));
  const b = await Broker.start('mem://', ['--access-file', access]);
  try {
    const page = await browser.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
    await page.goto(`${b.origin}/#streams`);
    await page.waitForSelector('#token-form:not([hidden])', { timeout: WAIT });
    const refused = await page.evaluate(async (url) => {
      const c = await (await import('/flowmesh.js')).connect(url);
      try { await c.createStream('acme/app/secret'); return null; } catch (e) { return e.code; } finally { await c.close(); }
    }, b.origin);
    assert.equal(refused, 'FM_ERR_UNAUTHORIZED');
    await page.fill('#token-input', token);
    await page.click('#token-form button[type=submit]');
    await page.waitForFunction(() => document.getElementById('token-form').hidden, null, { timeout: WAIT });
    await page.evaluate(async ([url, t]) => {
      const c = await (await import('/flowmesh.js')).connect(url, { token: t });
      await c.createStream('acme/app/visible');
      await c.close();
    }, [b.origin, token]);
    await page.waitForSelector('#streams-table tr[data-name="acme/app/visible"]', { timeout: WAIT });
    assert.deepEqual(errors, []);
    await page.close();
  } finally {
    await b.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a dropped link resumes a watch by its cursor and a subscription by offset', async () => {
  const page = await clientPage();
  const r = await page.evaluate(async (url) => {
    const { connect, text } = window.fm;
    const c = await connect(url, { reconnectInitialMs: 50, reconnectMaxMs: 200 });
    const other = await connect(url);
    const states = [];
    c.on('state', (s) => states.push(s));
    const events = [];
    const messages = [];
    await c.watch('drops', (e) => { events.push(`${e.op}:${e.key}:${text(e.value)}`); });
    await c.subscribe('dropped', { start: 'earliest' }, (m) => { messages.push(text(m.payload)); });
    await other.set('drops', 'a', '1');
    await other.publish('dropped', 'm0');
    const wait = async (cond) => {
      const deadline = Date.now() + 15000;
      while (!cond() && Date.now() < deadline) await new Promise((res) => setTimeout(res, 20));
    };
    await wait(() => events.length === 1 && messages.length === 1);
    c._ws.close(); // the link drops; the broker keeps running
    await other.set('drops', 'b', '2');
    await other.publish('dropped', 'm1');
    await wait(() => c.reconnects >= 1 && events.length >= 2 && messages.length >= 2);
    await other.set('drops', 'c', '3');
    await other.publish('dropped', 'm2');
    await wait(() => events.length >= 3 && messages.length >= 3);
    await new Promise((res) => setTimeout(res, 300));
    await c.close();
    await other.close();
    return { events, messages, states, reconnects: c.reconnects };
  }, broker.origin);
  assert.deepEqual(r.events, ['put:a:1', 'put:b:2', 'put:c:3']);
  assert.deepEqual(r.messages, ['m0', 'm1', 'm2']);
  assert.equal(r.reconnects, 1);
  assert.ok(r.states.includes('reconnecting'), r.states.join(','));
  assert.deepEqual(page.errors, []);
  await page.close();
});
