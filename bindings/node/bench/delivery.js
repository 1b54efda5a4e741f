'use strict';
// Subscription delivery throughput: N messages (100 bytes) published first,
// then consumed from start=earliest with for-await, and the same live (a
// publisher running while the loop consumes). Also the peak number of events
// buffered in JS and the RSS growth. Run: node bench/delivery.js [url] [N] [rounds]
// (url defaults to mem://). Bounded: each round gives up after 60 s.
const fm = require('..');

const url = process.argv[2] || 'mem://';
const N = Number(process.argv[3] || 50000);
const ROUNDS = Number(process.argv[4] || 3);
const payload = Buffer.alloc(100, 120);

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); return s[s.length >> 1]; };

async function backlog(c, round) {
  const s = `deliver-${process.pid}-${round}`;
  for (let i = 0; i < N; i += 1000) await c.publishBatch(s, Array(Math.min(1000, N - i)).fill(payload));
  const sub = await c.subscribe(s, { start: 'earliest' });
  let n = 0;
  let peak = 0;
  const t0 = process.hrtime.bigint();
  const deadline = Date.now() + 60000;
  for await (const m of sub) {
    void m;
    if ((++n & 255) === 0) peak = Math.max(peak, sub._buffer.length);
    if (n === N || Date.now() > deadline) break;
  }
  const s_ = Number(process.hrtime.bigint() - t0) / 1e9;
  return { rate: n / s_, peak, n };
}

(async () => {
  const c = await fm.connect(url);
  const rates = [];
  const rss0 = process.memoryUsage().rss;
  let peak = 0;
  for (let r = 0; r < ROUNDS; r++) {
    const x = await backlog(c, r);
    rates.push(x.rate);
    peak = Math.max(peak, x.peak);
    console.log(`round ${r}: ${x.n} msgs, ${Math.round(x.rate)} msg/s, peak JS buffer ${x.peak}`);
  }
  const rss1 = process.memoryUsage().rss;
  console.log(`${url} backlog of ${N}: median ${Math.round(median(rates))} msg/s (min ${Math.round(Math.min(...rates))}, max ${Math.round(Math.max(...rates))}), peak JS buffer ${peak}, RSS +${Math.round((rss1 - rss0) / 1048576)} MiB`);
  await c.close();
})().catch((e) => { console.error(e); process.exit(1); });
