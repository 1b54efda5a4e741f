'use strict';
// Publish and KV set/get through the flowmesh Node binding vs the `nats` npm
// client against NATS JetStream (file storage), in the same run, on loopback.
// Also flowmesh embedded (file://) for reference. Everything this starts
// (nats-server, flowmesh serve, temp dirs) is stopped/removed at the end, on
// error, on SIGINT/SIGTERM, and after the overall time limit.
//
//   node bench.js [--rounds 3] [--seq 1000] [--conc 10000] [--window 1000]
//                 [--out ../../results/bindings-node.md] [--limit-s 600]
//
// Per round and system, in this order: sequential publish (await each),
// concurrent publish (up to --window in flight), sequential KV set, concurrent
// KV set, concurrent KV get; 100-byte payloads, 100 distinct keys. Systems are
// alternated, and their order rotates every round. Each op stops after its
// count or 20 s, whichever comes first (ops/s is computed on what completed).

const fs = require('node:fs');
const os = require('node:os');
const net = require('node:net');
const path = require('node:path');
const { spawn, spawnSync } = require('node:child_process');

const ROOT = path.resolve(__dirname, '..', '..', '..');
const fm = require(path.join(ROOT, 'bindings', 'node'));
const nats = require('nats');

// ---- arguments -------------------------------------------------------------
function arg(name, dflt) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : dflt;
}
const ROUNDS = Number(arg('rounds', 3));
const N_SEQ = Number(arg('seq', 1000));
const N_CONC = Number(arg('conc', 10000));
const WINDOW = Number(arg('window', 1000));
const OUT = path.resolve(arg('out', path.join(ROOT, 'bench', 'results', 'bindings-node.md')));
const LIMIT_S = Number(arg('limit-s', 600));
const OP_LIMIT_MS = 20000;
const BIN = process.env.FLOWMESH_BIN || path.join(ROOT, 'target', 'release', 'flowmesh');
const NATS_BIN = process.env.NATS_SERVER || 'nats-server';

const PAYLOAD = Buffer.alloc(100, 120);
const KEYS = Array.from({ length: 100 }, (_, i) => `k${i}`);

// ---- processes and cleanup ---------------------------------------------------
const children = [];
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fm-bench-node-'));
let cleaned = false;
function cleanup() {
  if (cleaned) return;
  cleaned = true;
  for (const p of children) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  fs.rmSync(tmp, { recursive: true, force: true });
}
process.on('exit', cleanup);
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => { cleanup(); process.exit(130); });
setTimeout(() => {
  console.error(`bench: over the ${LIMIT_S} s limit, stopping`);
  cleanup();
  process.exit(2);
}, LIMIT_S * 1000).unref();

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function start(cmd, args) {
  const p = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  p.stderr.on('data', (d) => { err = (err + d).slice(-4000); });
  p.stderrText = () => err;
  children.push(p);
  return p;
}

async function stop(p) {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const done = new Promise((r) => p.once('exit', r));
  p.kill('SIGTERM');
  const t = setTimeout(() => p.kill('SIGKILL'), 3000);
  await done;
  clearTimeout(t);
}

async function until(what, fn, ms = 15000) {
  const end = Date.now() + ms;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > end) throw new Error(`${what}: ${err.message}`);
      await sleep(100);
    }
  }
}

// ---- systems: { name, open() -> { publish(p), set(k, v), get(k), close() } } --
async function startNats() {
  const port = await freePort();
  const dir = path.join(tmp, 'nats');
  const proc = start(NATS_BIN, ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', dir]);
  const nc = await until('nats-server', () => nats.connect({ servers: `127.0.0.1:${port}`, timeout: 1000 }));
  const jsm = await nc.jetstreamManager();
  await jsm.streams.add({ name: 'BENCH', subjects: ['bench.>'], storage: nats.StorageType.File });
  const js = nc.jetstream();
  const kv = await js.views.kv('bench', { storage: nats.StorageType.File, history: 1 });
  return {
    name: 'NATS JetStream (nats npm client)',
    proc,
    publish: (p) => js.publish('bench.x', p),
    set: (k, v) => kv.put(k, v),
    get: (k) => kv.get(k),
    close: async () => { await nc.drain(); await stop(proc); },
  };
}

async function startFlowmeshBroker(fsync) {
  const port = await freePort();
  const dir = path.join(tmp, `fm-broker-${fsync}`);
  const proc = start(BIN, ['serve', '--listen', `127.0.0.1:${port}`, '--data', `file://${dir}`, '--fsync', fsync]);
  const c = await until('flowmesh serve', async () => {
    if (proc.exitCode !== null) throw new Error(`exited: ${proc.stderrText()}`);
    const x = await fm.connect(`grpc://127.0.0.1:${port}`, { connect_timeout_ms: 1000 });
    try {
      await x.health();
    } catch (e) {
      await x.close();
      throw e;
    }
    return x;
  });
  return flowmeshClient(`flowmesh broker (file://, --fsync ${fsync})`, c, proc);
}

async function startFlowmeshEmbedded(fsync) {
  const c = await fm.connect(`file://${path.join(tmp, `fm-embedded-${fsync}`)}`, { fsync });
  return flowmeshClient(`flowmesh embedded (file://, fsync ${fsync})`, c, null);
}

function flowmeshClient(name, c, proc) {
  return {
    name,
    proc,
    publish: (p) => c.publish('bench', p),
    set: (k, v) => c.set('bench', k, v),
    get: (k) => c.get('bench', k),
    close: async () => { await c.close(); if (proc) await stop(proc); },
  };
}

// ---- ops -----------------------------------------------------------------------
async function sequential(n, fn) {
  const end = Date.now() + OP_LIMIT_MS;
  let done = 0;
  const t0 = process.hrtime.bigint();
  for (; done < n && Date.now() < end; done++) await fn(done);
  return done / (Number(process.hrtime.bigint() - t0) / 1e9);
}

// n calls with at most `window` in flight.
async function concurrent(n, window, fn) {
  const end = Date.now() + OP_LIMIT_MS;
  let issued = 0;
  let done = 0;
  const t0 = process.hrtime.bigint();
  await new Promise((resolve, reject) => {
    const launch = () => {
      while (issued < n && issued - done < window && Date.now() < end) {
        fn(issued++).then(() => {
          done++;
          if (done === issued && (issued === n || Date.now() >= end)) resolve();
          else launch();
        }, reject);
      }
    };
    launch();
  });
  return done / (Number(process.hrtime.bigint() - t0) / 1e9);
}

const OPS = [
  ['publish, sequential', (s) => sequential(N_SEQ, () => s.publish(PAYLOAD))],
  [`publish, ${WINDOW} in flight`, (s) => concurrent(N_CONC, WINDOW, () => s.publish(PAYLOAD))],
  ['KV set, sequential', (s) => sequential(N_SEQ, (i) => s.set(KEYS[i % 100], PAYLOAD))],
  [`KV set, ${WINDOW} in flight`, (s) => concurrent(N_CONC, WINDOW, (i) => s.set(KEYS[i % 100], PAYLOAD))],
  [`KV get, ${WINDOW} in flight`, (s) => concurrent(N_CONC, WINDOW, (i) => s.get(KEYS[i % 100]))],
];

// ---- report ---------------------------------------------------------------------
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const fmt = (x) => (x >= 10000 ? `${(x / 1000).toFixed(0)}k` : x >= 1000 ? `${(x / 1000).toFixed(1)}k` : x.toFixed(0));

function version(cmd, args) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 10000 });
  return `${r.stdout || ''}${r.stderr || ''}`.trim().split('\n')[0];
}

(async () => {
  const t0 = Date.now();
  const systems = [await startNats(), await startFlowmeshBroker('batch'),
    await startFlowmeshBroker('interval'), await startFlowmeshEmbedded('batch'),
    await startFlowmeshEmbedded('interval')];
  // warm-up: connections, streams/buckets, worker threads
  for (const s of systems) {
    await concurrent(500, 100, () => s.publish(PAYLOAD));
    await concurrent(500, 100, (i) => s.set(KEYS[i % 100], PAYLOAD));
  }
  const results = new Map(); // system -> op -> [ops/s]
  for (const s of systems) results.set(s.name, new Map(OPS.map(([op]) => [op, []])));
  for (let r = 0; r < ROUNDS; r++) {
    const order = systems.map((_, i) => systems[(i + r) % systems.length]);
    for (const s of order) {
      for (const [op, run] of OPS) {
        const rate = await run(s);
        results.get(s.name).get(op).push(rate);
        console.log(`round ${r + 1}/${ROUNDS}  ${s.name.padEnd(42)} ${op.padEnd(26)} ${fmt(rate).padStart(7)} ops/s`);
      }
    }
  }
  const load = os.loadavg().map((x) => x.toFixed(1)).join(' ');
  for (const s of systems) await s.close();

  // table
  const nat = systems[0].name;
  const lines = [];
  lines.push(`| operation | ${systems.map((s) => s.name).join(' | ')} | broker (batch) / NATS | broker (interval) / NATS |`);
  lines.push(`|---|${systems.map(() => '---:').join('|')}|---:|---:|`);
  for (const [op] of OPS) {
    const cells = systems.map((s) => {
      const xs = results.get(s.name).get(op);
      return `${fmt(median(xs))} (${fmt(Math.min(...xs))}–${fmt(Math.max(...xs))})`;
    });
    const n = median(results.get(nat).get(op));
    const ratio = (name) => `${(median(results.get(name).get(op)) / n).toFixed(2)}×`;
    lines.push(`| ${op} | ${cells.join(' | ')} | ${ratio(systems[1].name)} | ${ratio(systems[2].name)} |`);
  }
  const cpu = os.cpus();
  const natsPkg = require('nats/package.json').version;
  const cmd = `node bench.js ${process.argv.slice(2).join(' ')}`.trim();
  const md = `# Node binding vs NATS JetStream (nats npm client)

Generated by \`bench/bindings/node/bench.js\`; do not edit by hand, re-run it.

- Command: \`cd bench/bindings/node && npm ci && ${cmd}\`
- Date: ${new Date().toISOString()}
- Machine: ${os.type()} ${os.release()} ${os.arch()}, ${cpu.length} × ${cpu[0] ? cpu[0].model.trim() : '?'}, ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB; load average at the end: ${load} (shared VM, other jobs running)
- Versions: Node ${process.version}; flowmesh ${fm.version()} (${path.relative(ROOT, BIN)}, binding in bindings/node); nats npm ${natsPkg}; ${version(NATS_BIN, ['--version'])}
- Setup: all on loopback (127.0.0.1), one client connection per system, one process. nats-server \`-js -sd <tmp>\` (JetStream file storage, stream \`BENCH\` on \`bench.>\`, KV bucket \`bench\` with history 1, file storage; JetStream's default: acknowledged before fsync, synced every 2 min). \`flowmesh serve --data file://<tmp> --fsync batch\` (the default: fsync before acknowledging, batched) and \`--fsync interval\` (closer to JetStream's default). flowmesh embedded: \`connect('file://<tmp>', { fsync })\` in the same process (no network, no broker), for reference. Every binding call is a blocking native call on one of the binding's worker threads (${process.env.FLOWMESH_NODE_THREADS || 'max(4, cores) ≤ 16, here ' + Math.min(16, Math.max(4, os.cpus().length))}), so at most that many calls are in flight in the library at once: with fsync batch, one fsync is shared by at most that many calls.
- Workload: 100-byte payloads, 100 distinct keys. Sequential = await each call (${N_SEQ} calls); in flight = ${N_CONC} calls with at most ${WINDOW} outstanding. ${ROUNDS} rounds, systems alternated and their order rotated each round, after a warm-up. Each op stops after its count or ${OP_LIMIT_MS / 1000} s.
- Figures: operations per second, median of the ${ROUNDS} rounds, (min–max) in parentheses; ratio = flowmesh broker median / NATS median (> 1: flowmesh faster). Total run time ${((Date.now() - t0) / 1000).toFixed(0)} s.

${lines.join('\n')}
`;
  fs.mkdirSync(path.dirname(OUT), { recursive: true });
  fs.writeFileSync(OUT, md);
  console.log(`\n${lines.join('\n')}\n\nwritten to ${path.relative(process.cwd(), OUT)}`);
  cleanup();
  process.exit(0);
})().catch((err) => {
  console.error(err);
  cleanup();
  process.exit(1);
});
