// The broker's web console: polls the inventory and metrics operations of
// the JSON protocol through the browser client, draws plain canvas charts.
import { connect, text } from '/flowmesh.js';

const $ = (id) => document.getElementById(id);
const POLL_MS = 1000;
const HISTORY = 120;

let client = null;
let token = sessionStorage.getItem('flowmesh-token');
const history = []; // {t, connections, requests, errors}
const lastLatest = new Map(); // stream -> {t, total}
const rates = new Map(); // stream -> msg/s
let inventory = { streams: [], queues: [], buckets: [] };
let dlqQueue = null;
let bucket = null;
let watch = null;

function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  const { dataset, ...rest } = props;
  Object.assign(e, rest);
  Object.assign(e.dataset, dataset || {});
  for (const c of children) e.append(c instanceof Node ? c : String(c));
  return e;
}

function showError(e) {
  $('error').textContent = e ? `${e.code || ''} ${e.message || e}` : '';
}

function page() {
  const p = (location.hash || '#overview').slice(1);
  return ['overview', 'streams', 'queues', 'kv'].includes(p) ? p : 'overview';
}

function route() {
  const p = page();
  for (const s of document.querySelectorAll('.page')) s.hidden = s.id !== `page-${p}`;
  for (const a of document.querySelectorAll('header nav a')) a.classList.toggle('active', a.id === `nav-${p}`);
  render();
}

function fmtBytes(n) {
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(1) : n} ${u[i]}`;
}

function fmtUptime(ms) {
  const s = Math.floor(ms / 1000);
  return s < 120 ? `${s} s` : s < 7200 ? `${Math.floor(s / 60)} min` : `${Math.floor(s / 3600)} h`;
}

// ---- charts

function chart(canvas, points, color) {
  const ctx = canvas.getContext('2d');
  const w = canvas.width, h = canvas.height, pad = 28;
  ctx.clearRect(0, 0, w, h);
  const max = Math.max(1, ...points.map((p) => p.v));
  ctx.strokeStyle = '#e3e6ec';
  ctx.fillStyle = '#667';
  ctx.font = '11px system-ui, sans-serif';
  for (let i = 0; i <= 4; i++) {
    const y = pad / 2 + ((h - pad) * i) / 4;
    ctx.beginPath(); ctx.moveTo(pad, y); ctx.lineTo(w - 4, y); ctx.stroke();
    ctx.fillText(String(Math.round((max * (4 - i)) / 4 * 10) / 10), 2, y + 4);
  }
  if (points.length < 2) return;
  ctx.strokeStyle = color;
  ctx.lineWidth = 2;
  ctx.beginPath();
  points.forEach((p, i) => {
    // Few points yet: spread them over a minimum span instead of squeezing them left.
    const x = pad + ((w - pad - 4) * i) / (Math.max(points.length, 30) - 1);
    const y = pad / 2 + (h - pad) * (1 - p.v / max);
    i ? ctx.lineTo(x, y) : ctx.moveTo(x, y);
  });
  ctx.stroke();
}

function renderOverview() {
  const last = history[history.length - 1];
  if (!last) return;
  $('m-connections').textContent = last.connections;
  $('m-rate').textContent = last.rate.toFixed(1);
  $('m-errors').textContent = last.errorRate.toFixed(1);
  $('m-uptime').textContent = fmtUptime(last.uptime);
  $('m-counts').textContent = `${inventory.streams.length} / ${inventory.queues.length} / ${inventory.buckets.length}`;
  chart($('chart-connections'), history.map((p) => ({ v: p.connections })), '#2f6fd6');
  chart($('chart-requests'), history.map((p) => ({ v: p.rate })), '#1f7a3f');
}

function renderStreams() {
  const body = $('streams-table').tBodies[0];
  body.replaceChildren(...inventory.streams.map((s) => el('tr', { dataset: { name: s.name } },
    el('td', {}, s.name), el('td', {}, s.tier), el('td', {}, s.partitions.length), el('td', {}, s.messages),
    el('td', {}, fmtBytes(s.bytes)), el('td', { className: 'rate' }, (rates.get(s.name) ?? 0).toFixed(1)),
    el('td', {}, ...s.groups.map((g) => el('span', { className: 'lag' },
      `${g.group}: ${g.partitions.reduce((a, p) => a + p.lag, 0)}`))))));
  $('streams-empty').hidden = inventory.streams.length > 0;
}

function renderQueues() {
  const body = $('queues-table').tBodies[0];
  body.replaceChildren(...inventory.queues.map((q) => {
    const b = el('button', { type: 'button', className: 'dlq-open', textContent: 'Dead letters' });
    b.onclick = () => { dlqQueue = q.name; refreshDlq(); };
    return el('tr', { dataset: { name: q.name } }, el('td', {}, q.name), el('td', { className: 'pending' }, q.pending),
      el('td', {}, q.in_flight), el('td', {}, q.delayed), el('td', { className: 'dead' }, q.dead), el('td', {}, b));
  }));
  $('queues-empty').hidden = inventory.queues.length > 0;
}

async function refreshDlq() {
  if (!dlqQueue) return;
  $('dlq').hidden = false;
  $('dlq-name').textContent = dlqQueue;
  try {
    const jobs = await client.dlqList(dlqQueue, { max: 100 });
    $('dlq-table').tBodies[0].replaceChildren(...jobs.map((j) => {
      const b = el('button', { type: 'button', className: 'replay', textContent: 'Replay' });
      b.onclick = async () => {
        b.disabled = true;
        try { await client.dlqReplay(dlqQueue, j.id); showError(null); } catch (e) { showError(e); }
        await poll();
        await refreshDlq();
      };
      return el('tr', { dataset: { job: j.id } }, el('td', {}, j.id), el('td', {}, j.attempt),
        el('td', { className: 'value' }, text(j.payload)),
        el('td', {}, Object.entries(j.headers).map(([k, v]) => `${k}=${v}`).join(' ')), el('td', {}, b));
    }));
    $('dlq-empty').hidden = jobs.length > 0;
  } catch (e) {
    showError(e);
  }
}

function renderKv() {
  $('buckets').replaceChildren(...inventory.buckets.map((b) => {
    const li = el('li', { className: b.name === bucket ? 'active' : '', textContent: `${b.name} (${b.keys})` });
    li.dataset.name = b.name;
    li.onclick = () => openBucket(b.name);
    return li;
  }));
  $('buckets-empty').hidden = inventory.buckets.length > 0;
}

async function loadKeys() {
  if (!bucket) return;
  try {
    const keys = await client.listKeys(bucket, $('key-prefix').value);
    const rows = [];
    for (const k of keys.slice(0, 200)) {
      const e = await client.getEntry(bucket, k);
      if (e) rows.push(el('tr', { dataset: { key: k } }, el('td', {}, k), el('td', {}, e.revision), el('td', { className: 'value' }, text(e.value))));
    }
    $('keys-table').tBodies[0].replaceChildren(...rows);
  } catch (e) {
    showError(e);
  }
}

async function openBucket(name) {
  bucket = name;
  $('bucket-name').textContent = name;
  $('watch-log').replaceChildren();
  renderKv();
  if (watch) { const w = watch; watch = null; await w.close(); }
  await loadKeys();
  try {
    const w = await client.watch(name, '', (ev) => {
      if (watch !== w) return;
      const v = ev.value ? ` = ${text(ev.value)}` : '';
      $('watch-log').prepend(el('li', {}, `${new Date().toLocaleTimeString()} ${ev.op} ${ev.key}${v} (rev ${ev.revision})`));
      while ($('watch-log').children.length > 100) $('watch-log').lastChild.remove();
      loadKeys();
    });
    w.on('error', (e) => showError(e));
    watch = w;
  } catch (e) {
    showError(e);
  }
}

function render() {
  switch (page()) {
    case 'overview': return renderOverview();
    case 'streams': return renderStreams();
    case 'queues': return renderQueues();
    case 'kv': return renderKv();
  }
}

// ---- polling

async function poll() {
  if (!client) return;
  try {
    const [inv, m] = await Promise.all([client.inventory(''), client.brokerMetrics()]);
    inventory = inv;
    const now = performance.now();
    const prev = history[history.length - 1];
    const dt = prev ? (now - prev.t) / 1000 : 0;
    // The metrics and inventory requests of this console count too.
    const rate = prev && dt > 0 ? Math.max(0, m.requests - prev.requests) / dt : 0;
    const errorRate = prev && dt > 0 ? Math.max(0, m.request_errors - prev.errors) / dt : 0;
    history.push({ t: now, connections: m.connections, requests: m.requests, errors: m.request_errors, rate, errorRate, uptime: m.uptime_ms });
    while (history.length > HISTORY) history.shift();
    for (const s of inv.streams) {
      const total = s.partitions.reduce((a, p) => a + p.latest, 0);
      const before = lastLatest.get(s.name);
      if (before && now > before.t) rates.set(s.name, Math.max(0, total - before.total) / ((now - before.t) / 1000));
      lastLatest.set(s.name, { t: now, total });
    }
    showError(null);
    render();
  } catch (e) {
    if (e.code === 'FM_ERR_UNAUTHORIZED') askToken(e.message);
    else showError(e);
  }
}

function askToken(why) {
  $('token-form').hidden = false;
  $('token-error').textContent = why || '';
  $('token-input').focus();
}

async function start() {
  window.addEventListener('hashchange', route);
  $('token-button').onclick = () => askToken('');
  $('key-prefix').oninput = () => loadKeys();
  $('dlq-replay-all').onclick = async () => {
    try { await client.dlqReplayAll(dlqQueue); } catch (e) { showError(e); }
    await poll();
    await refreshDlq();
  };
  $('token-form').onsubmit = async (ev) => {
    ev.preventDefault();
    token = $('token-input').value || null;
    if (token) sessionStorage.setItem('flowmesh-token', token); else sessionStorage.removeItem('flowmesh-token');
    try {
      await client.auth(token);
      $('token-form').hidden = true;
      await poll();
    } catch (e) {
      $('token-error').textContent = e.message;
    }
  };
  route();
  try {
    client = await connect(location.origin, { token });
  } catch (e) {
    showError(e);
    return;
  }
  window.flowmeshConsole = { client };
  client.onState((s) => {
    $('state').textContent = s;
    $('state').classList.toggle('connected', s === 'connected');
  });
  await poll();
  setInterval(poll, POLL_MS);
}

start();
