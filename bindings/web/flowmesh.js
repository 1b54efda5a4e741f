// flowmesh browser client: the JSON WebSocket protocol of `flowmesh serve
// --ws` (docs/WEBSOCKET.md) as an ES module, with no dependencies. Types in
// flowmesh.d.ts; usage and reconnect semantics in README.md.

const STATUS = {
  FM_ERR_INVALID_ARGUMENT: 1, FM_ERR_NOT_FOUND: 2, FM_ERR_TIMEOUT: 3, FM_ERR_DISCONNECTED: 4,
  FM_ERR_UNAUTHORIZED: 5, FM_ERR_CLOSED: 6, FM_ERR_ALREADY_EXISTS: 7, FM_ERR_CONFLICT: 8,
  FM_ERR_TOO_LARGE: 9, FM_ERR_UNAVAILABLE: 10, FM_ERR_INTERNAL: 11,
};

export class FlowMeshError extends Error {
  constructor(message, code = 'FM_ERR_INTERNAL', status = STATUS[code]) {
    super(message);
    this.name = new.target.name;
    this.code = code;
    this.status = status;
  }
}
export class InvalidArgumentError extends FlowMeshError {}
export class NotFoundError extends FlowMeshError {}
export class TimeoutError extends FlowMeshError {}
export class DisconnectedError extends FlowMeshError {}
export class UnauthorizedError extends FlowMeshError {}
export class ClosedError extends FlowMeshError {}
export class AlreadyExistsError extends FlowMeshError {}
export class ConflictError extends FlowMeshError {}
export class TooLargeError extends FlowMeshError {}
export class UnavailableError extends FlowMeshError {}
export class InternalError extends FlowMeshError {}

const CLASSES = {
  FM_ERR_INVALID_ARGUMENT: InvalidArgumentError, FM_ERR_NOT_FOUND: NotFoundError, FM_ERR_TIMEOUT: TimeoutError,
  FM_ERR_DISCONNECTED: DisconnectedError, FM_ERR_UNAUTHORIZED: UnauthorizedError, FM_ERR_CLOSED: ClosedError,
  FM_ERR_ALREADY_EXISTS: AlreadyExistsError, FM_ERR_CONFLICT: ConflictError, FM_ERR_TOO_LARGE: TooLargeError,
  FM_ERR_UNAVAILABLE: UnavailableError, FM_ERR_INTERNAL: InternalError,
};

/** The error of a code ("FM_ERR_NOT_FOUND"), as its subclass. */
export function makeError(code, message, status) {
  const Cls = CLASSES[code] || FlowMeshError;
  return new Cls(message, code, status ?? STATUS[code]);
}

function fromWire(e) {
  if (!e) return new InternalError('the broker answered with an error but no error object', 'FM_ERR_INTERNAL');
  return makeError(e.code, e.message, e.status);
}

export const ConnState = Object.freeze({
  CONNECTING: 'connecting', CONNECTED: 'connected', RECONNECTING: 'reconnecting',
  DISCONNECTED: 'disconnected', CLOSED: 'closed',
});

// ---- bytes ----------------------------------------------------------------

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder();

function toBytes(v, what = 'payload') {
  if (typeof v === 'string') return utf8.encode(v);
  if (v instanceof Uint8Array) return v;
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  throw new InvalidArgumentError(`${what} must be a string, Uint8Array, ArrayBuffer or ArrayBufferView`, 'FM_ERR_INVALID_ARGUMENT');
}

function b64(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

function unb64(text) {
  if (text == null) return null;
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

/** UTF-8 text of bytes (a payload, a value). */
export function text(bytes) {
  return bytes == null ? null : fromUtf8.decode(bytes);
}

function headersOut(h) {
  if (h == null) return undefined;
  const pairs = h instanceof Map ? [...h.entries()] : Array.isArray(h) ? h : Object.entries(h);
  return pairs.map(([k, v]) => [String(k), String(v)]);
}

function headersIn(list) {
  const out = {};
  for (const [k, v] of list || []) out[k] = v;
  return out;
}

function message(m) {
  return {
    stream: m.stream, partition: m.partition, offset: m.offset, timestamp: m.timestamp_ms,
    key: unb64(m.key), payload: unb64(m.payload), headers: headersIn(m.headers),
  };
}

function job(j) {
  return {
    id: j.id, attempt: j.attempt, priority: j.priority, payload: unb64(j.payload),
    headers: headersIn(j.headers), enqueuedMs: j.enqueued_ms,
  };
}

function kvEvent(e) {
  return { op: e.op, key: e.key, value: e.op === 'put' ? unb64(e.value) : null, revision: e.revision, cursor: e.cursor };
}

function invalid(msg) {
  return new InvalidArgumentError(msg, 'FM_ERR_INVALID_ARGUMENT');
}

const SEGMENT = /^[A-Za-z0-9._-]{1,128}$/;

// ---- a tiny event emitter (browsers have EventTarget, but Node-style is the binding's style)

class Emitter {
  constructor() { this._listeners = new Map(); }
  on(name, fn) {
    if (!this._listeners.has(name)) this._listeners.set(name, new Set());
    this._listeners.get(name).add(fn);
    return this;
  }
  off(name, fn) { this._listeners.get(name)?.delete(fn); return this; }
  once(name, fn) {
    const w = (...a) => { this.off(name, w); fn(...a); };
    return this.on(name, w);
  }
  emit(name, ...args) {
    const set = this._listeners.get(name);
    if (!set || set.size === 0) return false;
    for (const fn of [...set]) {
      try { fn(...args); } catch (e) { setTimeout(() => { throw e; }); }
    }
    return true;
  }
}

/** A queue of events for for-await, bounded by the credit the client grants. */
class Feed {
  constructor() { this.items = []; this.waiters = []; this.done = false; this.error = null; }
  push(item) {
    const w = this.waiters.shift();
    if (w) w.resolve({ value: item, done: false });
    else this.items.push(item);
  }
  end(error) {
    if (this.done) return;
    this.done = true;
    this.error = error || null;
    for (const w of this.waiters.splice(0)) error ? w.reject(error) : w.resolve({ value: undefined, done: true });
  }
  next() {
    if (this.items.length) return Promise.resolve({ value: this.items.shift(), done: false });
    if (this.done) {
      if (this.error) { const e = this.error; this.error = null; return Promise.reject(e); }
      return Promise.resolve({ value: undefined, done: true });
    }
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }
}

// ---- subscriptions ----------------------------------------------------------

const WINDOW = 256;

/**
 * A live stream subscription or KV watch: iterate it with for-await or pass
 * a handler. It survives reconnects (see README.md, "Reconnect").
 */
export class Subscription extends Emitter {
  constructor(client, kind, handler) {
    super();
    this._client = client;
    this._kind = kind; // 'stream' | 'watch'
    this._handler = handler || null;
    this._feed = new Feed();
    this._subs = new Map(); // protocol sub id -> {unacked}
    this._chain = Promise.resolve();
    this.closed = false;
    this.error = null;
    this._closing = null;
  }

  get buffered() { return this._feed.items.length; }

  [Symbol.asyncIterator]() {
    if (this._handler) throw invalid('a subscription with a handler cannot be iterated');
    return {
      next: async () => {
        this._processedPrevious();
        const r = await this._feed.next();
        if (!r.done) this._pending = r.value;
        return r;
      },
      return: async () => { await this.close(); return { value: undefined, done: true }; },
    };
  }

  // An iterator asking for the next item has processed the previous one.
  _processedPrevious() {
    if (this._pending) { const item = this._pending; this._pending = null; this._processed(item); }
  }

  _deliver(item) {
    if (this.closed) return;
    if (!this._handler) return this._feed.push(item);
    this._chain = this._chain.then(async () => {
      if (this.closed) return;
      try {
        await this._handler(item);
        this._processed(item);
      } catch (e) {
        if (!this.emit('error', e)) setTimeout(() => { throw e; });
        this._processed(item, false);
      }
    });
  }

  _grant(sub) {
    const s = this._subs.get(sub);
    if (!s) return;
    s.unacked += 1;
    if (s.unacked >= WINDOW / 2) {
      const n = s.unacked;
      s.unacked = 0;
      this._client._send({ op: 'credit', sub, n }).catch(() => {});
    }
  }

  /** Opens the feed again where it stopped (after a reconnect, or the broker ended it on its way down). */
  _resume() {
    if (this.closed) return;
    if (this._resuming) { this._again = true; return; }
    this._resuming = true;
    (async () => {
      let tries = 0;
      do {
        this._again = false;
        this._dropSubs();
        if (!this._client._ws) break; // the reconnect resumes it
        try {
          await this._open(true);
        } catch (e) {
          if (!transient(e) || ++tries > 20) { this._fail(e); break; }
          await sleep(Math.min(2000, 100 * tries));
          this._again = true;
        }
      } while (this._again && !this.closed);
      this._resuming = false;
    })();
  }

  _dropSubs() {
    for (const sub of this._subs.keys()) {
      if (this._client._routes.delete(sub)) this._client._send({ op: 'unsubscribe', sub }).catch(() => {});
    }
    this._subs.clear();
  }

  _ended(sub, error) {
    this._client._routes.delete(sub);
    this._subs.delete(sub);
    if (error && !transient(error)) return this._fail(error);
    // Ended cleanly or for a passing reason (the broker stopping, a lost
    // internal link): resume shortly, unless the socket closes first.
    setTimeout(() => this._resume(), 250);
  }

  _fail(error) {
    if (this.closed) return;
    this.error = error;
    this._finish(error);
    if (this._handler && !this.emit('error', error)) setTimeout(() => { throw error; });
  }

  _finish(error) {
    if (this.closed) return;
    this.closed = true;
    this._client._subscriptions.delete(this);
    this._dropSubs();
    this._feed.end(error);
    this.emit('close');
  }

  /** Stops delivery (a group subscription first commits what was processed). Idempotent. */
  close() {
    if (!this._closing) {
      this._closing = (async () => {
        this._processedPrevious();
        await this._chain.catch(() => {});
        await this._beforeClose().catch(() => {});
        this._finish(null);
      })();
    }
    return this._closing;
  }

  async _beforeClose() {}
  [Symbol.asyncDispose]() { return this.close(); }
}

class StreamSubscription extends Subscription {
  constructor(client, stream, opts, handler) {
    super(client, 'stream', handler);
    this.stream = stream;
    this.group = opts.group ?? null;
    this.partition = opts.partition ?? null;
    this.autoCommit = this.group != null && opts.autoCommit !== false;
    this._start = opts.start ?? (this.group != null ? 'committed' : 'latest');
    this._seen = new Map(); // partition -> highest offset delivered
    this._next = new Map(); // partition -> offset to resume at (no group)
    this._commits = Promise.resolve();
  }

  async _open(resuming) {
    const c = this._client;
    if (this.group != null) {
      // The group's committed offsets say where to go on; what was delivered
      // but not processed comes again and is handed out once (by offset).
      await this._commits.catch(() => {});
      const start = resuming ? 'committed' : this._start;
      const req = { op: 'subscribe', stream: this.stream, group: this.group, window: WINDOW, ...startFields(start) };
      if (this.partition != null) req.partition = this.partition;
      await this._add(req);
      return;
    }
    if (!resuming) {
      // Explicit offsets per partition, so a resume knows exactly where this began.
      const info = await c._call({ op: 'stream_info', stream: this.stream }).catch((e) => {
        if (e.code === 'FM_ERR_NOT_FOUND') return null;
        throw e;
      });
      if (info == null) {
        // Not created yet: the broker creates it on subscribe.
        const req = { op: 'subscribe', stream: this.stream, window: WINDOW, ...startFields(this._start) };
        if (this.partition != null) req.partition = this.partition;
        await this._add(req);
        this._implicit = true;
        return;
      }
      for (const p of info.partitions) {
        if (this.partition != null && p.partition !== this.partition) continue;
        let at;
        if (this._start === 'earliest') at = p.earliest;
        else if (this._start === 'latest') at = p.latest;
        else at = Number(this._start);
        this._next.set(p.partition, at);
      }
    } else if (this._implicit) {
      const info = await c._call({ op: 'stream_info', stream: this.stream });
      for (const p of info.partitions) {
        if (this.partition != null && p.partition !== this.partition) continue;
        if (!this._next.has(p.partition)) this._next.set(p.partition, this._start === 'latest' ? p.latest : p.earliest);
      }
    }
    for (const [partition, offset] of this._next) {
      await this._add({ op: 'subscribe', stream: this.stream, partition, start: 'offset', offset, window: WINDOW });
    }
  }

  async _add(req) {
    const c = this._client;
    const id = c._nextId++;
    req.id = id;
    c._routes.set(id, this);
    this._subs.set(id, { unacked: 0 });
    try {
      await c._request(req);
    } catch (e) {
      c._routes.delete(id);
      this._subs.delete(id);
      throw e;
    }
  }

  _push(sub, msg) {
    for (const raw of msg.messages) {
      const m = message(raw);
      const seen = this._seen.get(m.partition);
      if (seen !== undefined && m.offset <= seen) { this._grant(sub); continue; }
      this._seen.set(m.partition, m.offset);
      if (this.group == null) this._next.set(m.partition, m.offset + 1);
      m._sub = sub;
      this._deliver(m);
    }
  }

  _processed(m, ok = true) {
    const sub = m._sub;
    delete m._sub;
    this._grant(sub);
    if (ok && this.autoCommit) this.commit(m).catch((e) => this.emit('error', e));
  }

  /** Commits `message` (and everything before it in its partition) for the group. */
  commit(m) {
    if (this.group == null) return Promise.reject(invalid('commit needs a consumer group'));
    const p = this._commits.then(() =>
      this._client._call({ op: 'commit', stream: this.stream, group: this.group, partition: m.partition, offset: m.offset }));
    this._commits = p.catch(() => {});
    return p.then(() => undefined);
  }

  async _beforeClose() { await this._commits; }
}

function startFields(start) {
  if (start === 'earliest' || start === 'latest' || start === 'committed') return { start };
  const n = Number(start);
  if (!Number.isInteger(n) || n < 0) throw invalid(`start ${start}: expected earliest, latest, committed or an offset`);
  return { start: 'offset', offset: n };
}

class Watch extends Subscription {
  constructor(client, bucket, prefix, handler) {
    super(client, 'watch', handler);
    this.bucket = bucket;
    this.prefix = prefix;
    this.cursor = null;
  }

  async _open(resuming) {
    const c = this._client;
    const id = c._nextId++;
    const req = { id, op: 'watch', bucket: this.bucket, prefix: this.prefix, window: WINDOW };
    if (resuming && this.cursor) req.resume_after = this.cursor;
    c._routes.set(id, this);
    this._subs.set(id, { unacked: 0 });
    try {
      const r = await c._request(req);
      if (!resuming || !this.cursor) this.cursor = r.cursor;
    } catch (e) {
      c._routes.delete(id);
      this._subs.delete(id);
      throw e;
    }
  }

  _push(sub, msg) {
    for (const raw of msg.events) {
      if (raw.cursor) this.cursor = raw.cursor;
      const e = kvEvent(raw);
      e._sub = sub;
      this._deliver(e);
    }
  }

  _processed(e) {
    const sub = e._sub;
    delete e._sub;
    this._grant(sub);
  }
}

// ---- the client -------------------------------------------------------------

function wsUrl(url, token) {
  const u = new URL(url, typeof location !== 'undefined' ? location.href : undefined);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  if (u.protocol === 'https:') u.protocol = 'wss:';
  if (u.protocol !== 'ws:' && u.protocol !== 'wss:') throw invalid(`url ${url}: expected ws://, wss://, http:// or https://`);
  if (u.pathname === '' || u.pathname === '/') u.pathname = '/ws';
  if (token) u.searchParams.set('token', token);
  return u.toString();
}

const DEFAULTS = {
  tenant: 'default', namespace: 'default', token: null,
  reconnectInitialMs: 100, reconnectMaxMs: 5000, reconnectMultiplier: 2, reconnectJitter: 0.5,
  maxReconnectAttempts: 0, requestTimeoutMs: 30000, connectTimeoutMs: 10000, heartbeatMs: 15000,
};

export class Client extends Emitter {
  constructor(url, options) {
    super();
    const o = { ...DEFAULTS, ...options };
    for (const k of Object.keys(options || {})) {
      if (!(k in DEFAULTS) && k !== 'WebSocket' && k !== 'appId') throw invalid(`unknown option ${JSON.stringify(k)}`);
    }
    if (!SEGMENT.test(o.tenant) || !SEGMENT.test(o.namespace)) throw invalid('tenant and namespace: 1-128 characters of [A-Za-z0-9._-]');
    this.url = url;
    this.tenant = o.tenant;
    this.namespace = o.namespace;
    this.appId = options?.appId ?? null;
    this._o = o;
    this._WS = o.WebSocket || globalThis.WebSocket;
    if (!this._WS) throw invalid('no WebSocket implementation: pass options.WebSocket');
    this._token = o.token;
    this._ws = null;
    this._nextId = 1;
    this._pending = new Map(); // id -> {resolve, reject, timer}
    this._routes = new Map(); // protocol sub id -> Subscription
    this._subscriptions = new Set();
    this._waiting = []; // requests held while reconnecting
    this.state = ConnState.CONNECTING;
    this.closed = false;
    this.reconnects = 0;
    this._attempt = 0;
    this._timer = null;
  }

  /** Calls `listener(state, error)` now and on every change. */
  onState(listener) {
    listener(this.state, null);
    return this.on('state', listener);
  }

  _setState(state, error = null) {
    if (this.state === state) return;
    this.state = state;
    this.emit('state', state, error);
  }

  _open() {
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new this._WS(wsUrl(this.url, this._token));
      } catch (e) {
        return reject(e instanceof FlowMeshError ? e : invalid(String(e.message || e)));
      }
      let opened = false;
      const timer = setTimeout(() => {
        ws.close();
        reject(new TimeoutError(`no WebSocket connection to ${this.url} within ${this._o.connectTimeoutMs} ms`, 'FM_ERR_TIMEOUT'));
      }, this._o.connectTimeoutMs);
      ws.onopen = () => {
        opened = true;
        clearTimeout(timer);
        this._ws = ws;
        this._heartbeat(ws);
        resolve();
      };
      ws.onmessage = (ev) => { this._lastSeen = Date.now(); this._onMessage(ev.data); };
      ws.onerror = () => {};
      ws.onclose = (ev) => {
        clearTimeout(timer);
        if (!opened) {
          reject(new DisconnectedError(`cannot connect to ${this.url} (WebSocket closed with ${ev.code})`, 'FM_ERR_DISCONNECTED'));
          return;
        }
        if (this._ws === ws) this._onClose(ev);
      };
    });
  }

  // Browsers cannot send WebSocket pings: a ping request on a quiet link,
  // and a link silent for two periods counts as lost (a half-open TCP
  // connection would otherwise never close).
  _heartbeat(ws) {
    const ms = this._o.heartbeatMs;
    if (!ms) return;
    this._lastSeen = Date.now();
    const timer = setInterval(() => {
      if (this._ws !== ws) return clearInterval(timer);
      const quiet = Date.now() - this._lastSeen;
      if (quiet > 2 * ms) {
        clearInterval(timer);
        ws.onclose = null;
        ws.close();
        this._onClose({ code: 4000, reason: `nothing from the broker for ${quiet} ms` });
      } else if (quiet >= ms) {
        this._call({ op: 'ping' }).catch(() => {});
      }
    }, Math.max(50, ms / 2));
  }

  async _connect() {
    await this._open();
    this._attempt = 0;
    this._setState(ConnState.CONNECTED);
    await this._call({ op: 'health' });
  }

  _onMessage(data) {
    let msg;
    // A watch cursor's epoch is a 64-bit number, beyond what a JS number
    // holds exactly: it is kept as a string (and sent back as a number).
    if (data.includes('"epoch":')) data = data.replace(/"epoch":(\d+)/g, '"epoch":"$1"');
    try { msg = JSON.parse(data); } catch { return; }
    if (msg.push !== undefined) {
      const sub = this._routes.get(msg.sub);
      if (!sub) return;
      if (msg.push === 'end') {
        sub._ended(msg.sub, msg.error ? fromWire(msg.error) : null);
      } else {
        sub._push(msg.sub, msg);
      }
      return;
    }
    const p = this._pending.get(msg.id);
    if (!p) return;
    this._pending.delete(msg.id);
    clearTimeout(p.timer);
    if (msg.ok) p.resolve(msg);
    else p.reject(fromWire(msg.error));
  }

  _onClose(ev) {
    this._ws = null;
    const err = new DisconnectedError(`the WebSocket to ${this.url} closed (${ev.code}${ev.reason ? ': ' + ev.reason : ''})`, 'FM_ERR_DISCONNECTED');
    for (const [, p] of this._pending) { clearTimeout(p.timer); p.reject(err); }
    this._pending.clear();
    this._routes.clear();
    for (const s of this._subscriptions) s._subs.clear();
    if (this.closed) return;
    this._setState(ConnState.RECONNECTING, err);
    this._scheduleReconnect(err);
  }

  /** Exponential backoff with jitter: initial * multiplier^n, capped, times 1 - jitter*random. */
  _delay() {
    const { reconnectInitialMs: i, reconnectMaxMs: max, reconnectMultiplier: m, reconnectJitter: j } = this._o;
    const base = Math.min(max, i * Math.pow(m, this._attempt));
    return Math.round(base * (1 - j * Math.random()));
  }

  _scheduleReconnect(err) {
    const limit = this._o.maxReconnectAttempts;
    if (limit > 0 && this._attempt >= limit) {
      this._setState(ConnState.DISCONNECTED, err);
      for (const w of this._waiting.splice(0)) w.reject(err);
      for (const s of [...this._subscriptions]) s._fail(err);
      return;
    }
    const delay = this._delay();
    this._attempt += 1;
    this._timer = setTimeout(async () => {
      this._timer = null;
      if (this.closed) return;
      try {
        await this._open();
      } catch (e) {
        return this._scheduleReconnect(e);
      }
      this._attempt = 0;
      this.reconnects += 1;
      this._setState(ConnState.CONNECTED);
      for (const w of this._waiting.splice(0)) w.resolve();
      for (const s of [...this._subscriptions]) s._resume();
    }, delay);
  }

  /** Sends a request with an id chosen here and resolves with the reply. */
  _call(req) {
    return this._request({ ...req, id: this._nextId++ });
  }

  async _request(req) {
    if (this.closed) throw new ClosedError('the client is closed', 'FM_ERR_CLOSED');
    if (!this._ws) {
      // Reconnecting: wait for the link (bounded by the request timeout).
      await new Promise((resolve, reject) => {
        const w = { resolve, reject };
        const timer = setTimeout(() => {
          this._waiting = this._waiting.filter((x) => x !== w);
          reject(new DisconnectedError(`not connected to ${this.url} within ${this._o.requestTimeoutMs} ms`, 'FM_ERR_DISCONNECTED'));
        }, this._o.requestTimeoutMs);
        w.resolve = () => { clearTimeout(timer); resolve(); };
        w.reject = (e) => { clearTimeout(timer); reject(e); };
        this._waiting.push(w);
      });
    }
    const ws = this._ws;
    if (!ws) throw new DisconnectedError('the link dropped again', 'FM_ERR_DISCONNECTED');
    return new Promise((resolve, reject) => {
      const timeoutMs = this._o.requestTimeoutMs + (req.wait_ms || 0);
      const timer = setTimeout(() => {
        this._pending.delete(req.id);
        reject(new TimeoutError(`no answer to ${req.op} within ${timeoutMs} ms`, 'FM_ERR_TIMEOUT'));
      }, timeoutMs);
      this._pending.set(req.id, { resolve, reject, timer });
      let text = JSON.stringify(req);
      if (req.resume_after) text = text.replace(/"epoch":"(\d+)"/g, '"epoch":$1');
      ws.send(text);
    });
  }

  _send(req) { return this._call(req); }

  /** A name as the broker wants it: "name" gets the client's tenant and namespace. */
  qualify(name) {
    if (typeof name !== 'string') throw invalid('a name must be a string');
    const parts = name.split('/');
    if (parts.length === 1) {
      if (!SEGMENT.test(name)) throw invalid(`invalid name ${JSON.stringify(name)}: use 1-128 characters of [A-Za-z0-9._-]`);
      return `${this.tenant}/${this.namespace}/${name}`;
    }
    if (parts.length !== 3 || !parts.every((p) => SEGMENT.test(p))) {
      throw invalid(`invalid name ${JSON.stringify(name)}: expected "name" or "tenant/namespace/name"`);
    }
    return name;
  }

  _prefix(prefix = '') {
    return prefix.includes('/') ? prefix : `${this.tenant}/${this.namespace}/${prefix}`;
  }

  /** Uses another token from now on (the next requests carry it). */
  async auth(token) {
    this._token = token || null;
    await this._call({ op: 'auth', token: this._token });
  }

  async health() { await this._call({ op: 'health' }); }
  async ping() { await this._call({ op: 'ping' }); }

  // ---- streams
  async createStream(stream, options = {}) {
    const req = { op: 'create_stream', stream: this.qualify(stream) };
    for (const k of ['partitions', 'max_age_ms', 'max_bytes', 'max_messages', 'tier']) if (options[k] != null) req[k] = options[k];
    await this._call(req);
  }

  async publish(stream, payload, options = {}) {
    return (await this.publishBatch(stream, [{ payload, ...options }]))[0];
  }

  async publishBatch(stream, items) {
    if (!Array.isArray(items) || items.length === 0) throw invalid('publishBatch needs a non-empty list');
    const records = items.map((it) => {
      const o = (typeof it === 'object' && it !== null && !ArrayBuffer.isView(it) && !(it instanceof ArrayBuffer)) ? it : { payload: it };
      const r = { payload: b64(toBytes(o.payload)) };
      if (o.key != null) r.key = b64(toBytes(o.key, 'key'));
      if (o.headers != null) r.headers = headersOut(o.headers);
      if (o.msgId != null) r.msg_id = String(o.msgId);
      return r;
    });
    const r = await this._call({ op: 'publish', stream: this.qualify(stream), records });
    return r.positions;
  }

  async read(stream, options = {}) {
    const r = await this._call({ op: 'read', stream: this.qualify(stream), partition: options.partition ?? 0,
      offset: options.offset ?? 0, max: options.max ?? 100 });
    return r.messages.map(message);
  }

  async streamInfo(stream) {
    const r = await this._call({ op: 'stream_info', stream: this.qualify(stream) });
    return { config: r.config, partitions: r.partitions };
  }

  async partitions(stream) { return (await this.streamInfo(stream)).config.partitions; }

  async latestOffset(stream, partition = 0) {
    const p = (await this.streamInfo(stream)).partitions.find((x) => x.partition === partition);
    if (!p) throw new NotFoundError(`stream ${stream} has no partition ${partition}`, 'FM_ERR_NOT_FOUND');
    return p.latest;
  }

  /** Resolves once the subscription is live. */
  async subscribe(stream, options, handler) {
    if (typeof options === 'function') { handler = options; options = {}; }
    const sub = new StreamSubscription(this, this.qualify(stream), options || {}, handler);
    if (sub._start !== undefined) startFields(sub._start);
    await sub._open(false);
    this._subscriptions.add(sub);
    return sub;
  }

  async commitOffset(stream, group, partition, offset) {
    await this._call({ op: 'commit', stream: this.qualify(stream), group, partition, offset });
  }

  async getOffset(stream, group, partition = 0) {
    try {
      return (await this._call({ op: 'get_offset', stream: this.qualify(stream), group, partition })).offset;
    } catch (e) {
      if (e.code === 'FM_ERR_NOT_FOUND') return null;
      throw e;
    }
  }

  async groupState(stream, group) {
    const r = await this._call({ op: 'group_state', stream: this.qualify(stream), group });
    return { group: r.group, partitions: r.partitions };
  }

  // ---- queues
  async enqueue(queue, payload, options = {}) {
    const req = { op: 'enqueue', queue: this.qualify(queue), payload: b64(toBytes(payload)),
      delay_ms: options.delayMs ?? 0, priority: options.priority ?? 0 };
    if (options.headers != null) req.headers = headersOut(options.headers);
    if (options.msgId != null) req.msg_id = String(options.msgId);
    return (await this._call(req)).job_id;
  }

  async reserve(queue, options = {}) {
    const jobs = await this.receive(queue, { ...options, max: 1 });
    return jobs[0] ?? null;
  }

  async receive(queue, options = {}) {
    const r = await this._call({ op: 'reserve', queue: this.qualify(queue), max: options.max ?? 10,
      visibility_ms: options.visibilityMs ?? 30000, wait_ms: options.waitMs ?? 0 });
    return r.jobs.map(job);
  }

  async ack(queue, jobId) { await this._call({ op: 'ack', queue: this.qualify(queue), job_id: jobId }); }
  async nack(queue, jobId, options = {}) {
    await this._call({ op: 'nack', queue: this.qualify(queue), job_id: jobId, delay_ms: options.delayMs ?? 0 });
  }
  async extend(queue, jobId, visibilityMs) {
    await this._call({ op: 'extend', queue: this.qualify(queue), job_id: jobId, visibility_ms: visibilityMs });
  }

  async stats(queue) {
    const r = await this._call({ op: 'queue_stats', queue: this.qualify(queue) });
    return { pending: r.pending, inFlight: r.in_flight, delayed: r.delayed, dead: r.dead };
  }

  async setRetryPolicy(queue, policy) {
    await this._call({ op: 'set_retry_policy', queue: this.qualify(queue), max_attempts: policy.maxAttempts,
      initial_backoff_ms: policy.initialBackoffMs ?? 0, max_backoff_ms: policy.maxBackoffMs ?? 0,
      multiplier: policy.multiplier ?? 2 });
  }

  async getRetryPolicy(queue) {
    const r = await this._call({ op: 'get_retry_policy', queue: this.qualify(queue) });
    return { maxAttempts: r.max_attempts, initialBackoffMs: r.initial_backoff_ms, maxBackoffMs: r.max_backoff_ms,
      multiplier: r.multiplier };
  }

  async dlqList(queue, options = {}) {
    return (await this._call({ op: 'dlq_list', queue: this.qualify(queue), max: options.max ?? 0 })).jobs.map(job);
  }
  async dlqReplay(queue, jobId) { await this._call({ op: 'dlq_replay', queue: this.qualify(queue), job_id: jobId }); }
  async dlqReplayAll(queue, filter = {}) {
    const req = { op: 'dlq_replay_all', queue: this.qualify(queue) };
    if (filter.headerKey != null) { req.header = filter.headerKey; req.value = filter.headerValue ?? ''; }
    return (await this._call(req)).replayed;
  }

  // ---- key-value
  async set(bucket, key, value, options = {}) {
    return (await this._call({ op: 'kv_set', bucket: this.qualify(bucket), key, value: b64(toBytes(value, 'value')),
      ttl_ms: options.ttlMs ?? 0 })).revision;
  }

  async cas(bucket, key, value, expectedRevision, options = {}) {
    return (await this._call({ op: 'kv_set', bucket: this.qualify(bucket), key, value: b64(toBytes(value, 'value')),
      ttl_ms: options.ttlMs ?? 0, expected_revision: expectedRevision })).revision;
  }

  async getEntry(bucket, key) {
    try {
      const r = await this._call({ op: 'kv_get', bucket: this.qualify(bucket), key });
      return { value: unb64(r.value), revision: r.revision };
    } catch (e) {
      if (e.code === 'FM_ERR_NOT_FOUND') return null;
      throw e;
    }
  }

  async get(bucket, key) { return (await this.getEntry(bucket, key))?.value ?? null; }
  async delete(bucket, key) { return (await this._call({ op: 'kv_delete', bucket: this.qualify(bucket), key })).deleted; }
  async exists(bucket, key) { return (await this._call({ op: 'kv_exists', bucket: this.qualify(bucket), key })).exists; }
  async listKeys(bucket, prefix = '') { return (await this._call({ op: 'kv_keys', bucket: this.qualify(bucket), prefix })).keys; }

  /** Changes of keys starting with `prefix`, from now on (resumed by cursor after a reconnect). */
  async watch(bucket, prefix, handler) {
    if (typeof prefix === 'function') { handler = prefix; prefix = ''; }
    const w = new Watch(this, this.qualify(bucket), prefix || '', handler);
    await w._open(false);
    this._subscriptions.add(w);
    return w;
  }

  /** One atomic transaction: ops {op: 'get'|'list'|'put'|'delete'|'check', bucket, key, ...}. */
  async txn(ops) {
    const wire = ops.map((o) => {
      const w = { op: o.op, bucket: this.qualify(o.bucket) };
      if (o.key != null) w.key = o.key;
      if (o.prefix != null) w.prefix = o.prefix;
      if (o.value != null) w.value = b64(toBytes(o.value, 'value'));
      if (o.ttlMs != null) w.ttl_ms = o.ttlMs;
      if (o.revision != null) w.revision = o.revision;
      return w;
    });
    const r = await this._call({ op: 'kv_txn', ops: wire });
    const entry = (e) => e && { key: e.key, value: unb64(e.value), revision: e.revision };
    return r.results.map((x) => {
      switch (x.op) {
        case 'get': return { op: 'get', entry: entry(x.entry) };
        case 'list': return { op: 'list', entries: x.entries.map(entry) };
        default: return x;
      }
    });
  }

  // ---- resources and the console's view
  async listStreams(prefix) { return (await this._call({ op: 'list', kind: 'stream', prefix: this._prefix(prefix) })).names; }
  async listQueues(prefix) { return (await this._call({ op: 'list', kind: 'queue', prefix: this._prefix(prefix) })).names; }
  async listBuckets(prefix) { return (await this._call({ op: 'list', kind: 'bucket', prefix: this._prefix(prefix) })).names; }
  async deleteStream(name) { await this._call({ op: 'delete', kind: 'stream', name: this.qualify(name) }); }
  async deleteQueue(name) { await this._call({ op: 'delete', kind: 'queue', name: this.qualify(name) }); }
  async deleteBucket(name) { await this._call({ op: 'delete', kind: 'bucket', name: this.qualify(name) }); }
  async purgeStream(name) { return (await this._call({ op: 'purge', kind: 'stream', name: this.qualify(name) })).removed; }
  async purgeQueue(name) { return (await this._call({ op: 'purge', kind: 'queue', name: this.qualify(name) })).removed; }

  async updateStream(stream, options = {}) {
    const req = { op: 'update_stream', stream: this.qualify(stream) };
    for (const k of ['partitions', 'max_age_ms', 'max_bytes', 'max_messages']) if (options[k] != null) req[k] = options[k];
    return (await this._call(req)).config;
  }

  /** Streams (partitions, groups with lag), queues and buckets under a qualified prefix ("" = all the token may see). */
  async inventory(prefix = '') {
    const r = await this._call({ op: 'inventory', prefix });
    return { streams: r.streams, queues: r.queues, buckets: r.buckets };
  }

  /** The broker's connection and request counters. */
  async brokerMetrics() {
    const { id, ok, ...m } = await this._call({ op: 'metrics' });
    return m;
  }

  // ---- events to named recipients (docs/EVENTS.md): unsealed events only

  async publishEvent(eventName, recipients, payload, options = {}) {
    const me = this._appId();
    if (!Array.isArray(recipients) || recipients.length === 0) throw invalid('an event needs at least one recipient');
    const unique = [...new Set(recipients)];
    const queues = unique.map((r) => inboxQueue(r, eventName));
    let metadata = options.metadata;
    if (metadata != null && typeof metadata !== 'string') metadata = JSON.stringify(metadata);
    if (metadata != null) {
      let ok = false;
      try { const v = JSON.parse(metadata); ok = v !== null && typeof v === 'object' && !Array.isArray(v); } catch { ok = false; }
      if (!ok) throw invalid('metadata must be a JSON object');
    }
    for (const r of unique) {
      if (await this.exists(KEY_BUCKET, r)) {
        throw invalid(`recipient ${r} has a public key: its events are sealed, which this client does not do (use a native binding)`);
      }
    }
    const bytes = toBytes(payload);
    const common = [['event', eventName], ['sender', me], ['ts', String(Date.now())], ['enc', 'none']];
    if (metadata != null) common.push(['metadata', metadata]);
    const [pos] = await this.publishBatch(EVENT_LOG, [{ payload: bytes, headers: [...common, ['recipients', unique.join(',')]] }]);
    for (const q of queues) await this.enqueue(q, bytes, { headers: [...common, ['event_id', String(pos.offset)]] });
    return pos.offset;
  }

  async subscribeEvents(eventName, options, handler) {
    if (typeof options === 'function') { handler = options; options = {}; }
    const s = new EventSubscription(this, eventName, inboxQueue(this._appId(), eventName), options || {}, handler);
    s._run();
    return s;
  }

  _appId() {
    if (!this.appId || !SEGMENT.test(this.appId)) throw invalid('events need the connect option appId ([A-Za-z0-9._-], 1-128)');
    return this.appId;
  }

  /** Ends subscriptions, fails what waits, closes the socket. Idempotent. */
  async close() {
    if (this.closed) return;
    await Promise.all([...this._subscriptions].map((s) => s.close().catch(() => {})));
    this.closed = true;
    if (this._timer) clearTimeout(this._timer);
    const err = new ClosedError('the client is closed', 'FM_ERR_CLOSED');
    for (const w of this._waiting.splice(0)) w.reject(err);
    for (const [, p] of this._pending) { clearTimeout(p.timer); p.reject(err); }
    this._pending.clear();
    if (this._ws) { const ws = this._ws; this._ws = null; ws.close(1000); }
    this._setState(ConnState.CLOSED);
  }

  [Symbol.asyncDispose]() { return this.close(); }
}

// ---- events ----------------------------------------------------------------

const EVENT_LOG = '_events';
const DISCARD_LOG = '_events.discarded';
const KEY_BUCKET = '_keys';

function encodeSegment(s) {
  let out = '';
  for (const b of utf8.encode(s)) {
    const c = String.fromCharCode(b);
    out += /[A-Za-z0-9-]/.test(c) ? c : '_' + b.toString(16).padStart(2, '0');
  }
  return out;
}

function inboxQueue(appId, eventName) {
  if (!SEGMENT.test(appId)) throw invalid(`invalid app id ${JSON.stringify(appId)}`);
  if (typeof eventName !== 'string' || eventName.length === 0 || utf8.encode(eventName).length > 96 || /[\u0000-\u001f\u007f]/.test(eventName)) {
    throw invalid(`invalid event name ${JSON.stringify(eventName)}: 1-96 bytes without control characters`);
  }
  const q = `_inbox.${encodeSegment(appId)}.${encodeSegment(eventName)}`;
  if (q.length > 128) throw invalid(`event name ${JSON.stringify(eventName)} with app id ${appId} is too long`);
  return q;
}

/** One app's subscription to one event name: delivery from its inbox queue. */
export class EventSubscription extends Emitter {
  constructor(client, eventName, queue, options, handler) {
    super();
    this._c = client;
    this.eventName = eventName;
    this.queue = queue;
    this.autoAck = options.autoAck !== false;
    this.ackWaitMs = options.ackWaitMs ?? 30000;
    this._handler = handler || null;
    this._inflight = new Map(); // event id -> job id
    this._paused = null;
    this.closed = false;
    this.rejected = 0;
    this._loop = null;
  }

  on(name, fn) {
    if (typeof name === 'function') { this._handler = name; return this; }
    return super.on(name, fn);
  }

  _run() {
    this._loop = (async () => {
      while (!this.closed) {
        if (this._paused != null || !this._handler) { await sleep(100); continue; }
        let j;
        try {
          j = await this._c.reserve(this.queue, { visibilityMs: this.ackWaitMs, waitMs: 1000 });
        } catch (e) {
          if (this.closed) return;
          if (e.code === 'FM_ERR_DISCONNECTED' || e.code === 'FM_ERR_TIMEOUT') { await sleep(200); continue; }
          this.emit('error', e);
          await sleep(500);
          continue;
        }
        if (!j || this.closed) { if (j) await this._c.nack(this.queue, j.id).catch(() => {}); continue; }
        if (this._paused != null) { await this._c.nack(this.queue, j.id).catch(() => {}); continue; }
        const h = j.headers;
        if (h.enc === 'sealed') {
          await this._c.nack(this.queue, j.id).catch(() => {});
          this.emit('error', new UnauthorizedError(`event ${h.event_id} is sealed: this client cannot open it`, 'FM_ERR_UNAUTHORIZED'));
          this.closed = true;
          return;
        }
        const ev = {
          id: Number(h.event_id), name: h.event, sender: h.sender, timestamp: Number(h.ts) || 0, payload: j.payload,
          metadata: h.metadata ? JSON.parse(h.metadata) : null, deliveryCount: j.attempt, encrypted: false,
        };
        this._inflight.set(ev.id, j.id);
        let ok = true;
        try { await this._handler(ev); } catch (e) { ok = false; this.emit('error', e); }
        if (ok && this.autoAck && this._inflight.has(ev.id)) await this.ack(ev.id).catch((e) => this.emit('error', e));
      }
    })();
  }

  _take(id) {
    const n = Number(id);
    const jobId = this._inflight.get(n);
    if (jobId === undefined) throw new NotFoundError(`event ${id} is not awaiting acknowledgement on this subscription`, 'FM_ERR_NOT_FOUND');
    this._inflight.delete(n);
    return jobId;
  }

  async ack(id) { await this._c.ack(this.queue, this._take(id)); }
  async defer(id, delayMs = 0) { await this._c.nack(this.queue, this._take(id), { delayMs }); }

  async discard(id, reason = '') {
    const jobId = this._take(id);
    await this._c.publishBatch(DISCARD_LOG, [{ payload: new Uint8Array(0), headers: [['event_id', String(id)],
      ['app_id', this._c.appId], ['event', this.eventName], ['reason', reason], ['ts', String(Date.now())]] }]);
    await this._c.ack(this.queue, jobId);
  }

  /** Delivers a past event of this name to this app once more; resolves with it. */
  async replay(id) {
    const n = Number(id);
    const notFound = () => new NotFoundError(`event ${id} does not exist or was not sent to ${this._c.appId}`, 'FM_ERR_NOT_FOUND');
    const msgs = await this._c.read(EVENT_LOG, { offset: n, max: 1 }).catch((e) => { if (e.code === 'FM_ERR_NOT_FOUND') return []; throw e; });
    const m = msgs.find((x) => x.offset === n);
    if (!m || !(m.headers.recipients || '').split(',').includes(this._c.appId)) throw notFound();
    if (m.headers.event !== this.eventName) throw new NotFoundError(`event ${id} is a ${JSON.stringify(m.headers.event)} event`, 'FM_ERR_NOT_FOUND');
    if (m.headers.enc === 'sealed') throw new UnauthorizedError(`event ${id} is sealed: this client cannot open it`, 'FM_ERR_UNAUTHORIZED');
    const headers = Object.entries(m.headers).filter(([k]) => k !== 'recipients');
    headers.push(['event_id', String(n)]);
    await this._c.enqueue(this.queue, m.payload, { headers });
    return { id: n, name: m.headers.event, sender: m.headers.sender, timestamp: Number(m.headers.ts) || 0, payload: m.payload,
      metadata: m.headers.metadata ? JSON.parse(m.headers.metadata) : null, deliveryCount: 0, encrypted: false };
  }

  async pause(reason = '') { this._paused = reason; }
  async resume() { this._paused = null; }

  /** Stops delivery; events delivered and not settled go back to the inbox at once. */
  async unsubscribe() {
    if (this.closed && !this._loop) return;
    this.closed = true;
    await this._loop?.catch(() => {});
    this._loop = null;
    for (const jobId of this._inflight.values()) await this._c.nack(this.queue, jobId).catch(() => {});
    this._inflight.clear();
  }

  close() { return this.unsubscribe(); }
}

function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

// Errors after which a feed is opened again rather than ended.
function transient(e) {
  return ['FM_ERR_DISCONNECTED', 'FM_ERR_UNAVAILABLE', 'FM_ERR_TIMEOUT', 'FM_ERR_CLOSED'].includes(e.code);
}

/** Connects to a broker's WebSocket listener: "ws://host:port" (path /ws by default), "wss://…", or http(s):// of the console. */
export async function connect(url, options = {}) {
  const c = new Client(url, options);
  try {
    await c._connect();
  } catch (e) {
    c.closed = true;
    if (c._ws) c._ws.close();
    throw e;
  }
  return c;
}
