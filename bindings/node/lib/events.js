'use strict';
// Events to named recipients (docs/EVENTS.md), on the same pool and client
// as the rest of the API: Client#publishEvent, Client#subscribeEvents,
// generateEventKey. Connect with { appId } (and { appSecretKey } for
// end-to-end sealing).
//
// Handlers run on the main thread. The subscription is native with
// async_handler: once every handler's promise settled the binding reports the
// outcome with fm_event_done, and the core's auto-ack rule (autoAck, the
// default) acks an event whose handlers all succeeded; one whose handler
// failed comes back after ackWaitMs. One event is handled at a time.

const { koffi, load } = require('./native');
const errors = require('./errors');
const { pool } = require('./pool');
const { Client } = require('./client');
const { decodeEvent } = require('./event-ops');

function payloadBytes(value) {
  if (typeof value === 'string') return Buffer.from(value, 'utf8');
  if (value instanceof Uint8Array) return value;
  if (value instanceof ArrayBuffer) return new Uint8Array(value);
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  throw new TypeError('payload must be a string, Buffer, Uint8Array or ArrayBuffer');
}

function eventId(id) {
  if (Number.isSafeInteger(id) && id >= 0) return id;
  if (typeof id === 'bigint' && id >= 0n) return id;
  if (typeof id === 'string' && /^\d+$/.test(id)) return Number(id);
  throw new TypeError('event id must be a non-negative integer');
}

function toEvent(e) {
  const payload = Buffer.from(e.payload.buffer, e.payload.byteOffset, e.payload.byteLength);
  return { ...e, payload, metadata: e.metadata ? JSON.parse(e.metadata) : null };
}

function settle(reply) {
  if (reply.status !== undefined) throw errors.fromStatus(reply.status, reply.message);
  if (reply.jsError) throw new (reply.jsError.name === 'TypeError' ? TypeError : Error)(reply.jsError.message);
  return reply.result;
}

/** A new X25519 key pair { secretKey, publicKey } (base64) for { appSecretKey }. */
async function generateEventKey() {
  load();
  const [secretKey, publicKey] = settle(await pool().run('eventKeygen', []));
  return { secretKey, publicKey };
}

class EventSubscription {
  constructor(client, name) {
    this._client = client;
    this.eventName = name;
    this._ptr = null;
    this._cb = null;
    this._handlers = [];
    this._early = []; // events that came before the first handler
    this._closing = null;
    this._released = undefined;
  }

  _deliver(ev) {
    if (this._closing) return;
    if (this._handlers.length === 0) {
      this._early.push(ev);
      return;
    }
    Promise.all(this._handlers.map((h) => Promise.resolve().then(() => h(ev))))
      .then(() => 0, (err) => {
        process.emitWarning(`flowmesh: event handler for ${this.eventName} failed: ${err && err.message}`);
        return errors.byName('FM_ERR_INTERNAL', 'handler failed').status;
      })
      .then((status) => this._op('eventDone', [eventId(ev.id), status]))
      .catch((err) => {
        // Unsubscribed meanwhile: the event went back to the inbox.
        if (err instanceof errors.ClosedError) return;
        process.emitWarning(`flowmesh: ending the handling of event ${ev.id} failed: ${err && err.message}`);
      });
  }

  /** Calls handler(event) for every event (sync or async). */
  on(handler) {
    if (typeof handler !== 'function') throw new TypeError('handler must be a function');
    this._handlers.push(handler);
    const early = this._early;
    this._early = [];
    for (const ev of early) this._deliver(ev);
    return this;
  }

  _op(op, args) {
    if (this._ptr === null || this._closing) {
      return Promise.reject(errors.byName('FM_ERR_CLOSED', 'event subscription is closed'));
    }
    return this._client._call(op, [this._ptr, ...args]);
  }

  /** Acknowledges event id: never delivered again. */
  async ack(id) { await this._op('eventAck', [eventId(id)]); }

  /** Delivers event id again after delayMs (not before). */
  async defer(id, delayMs = 0, reason = '') { await this._op('eventDefer', [eventId(id), eventId(delayMs), String(reason)]); }

  /** Drops event id for good, recording reason. */
  async discard(id, reason = '') { await this._op('eventDiscard', [eventId(id), String(reason)]); }

  /** Delivers past event id once more; resolves to it. */
  async replay(id) { return toEvent(await this._op('eventReplay', [eventId(id)])); }

  /** No delivery until resume(); nothing is lost. */
  async pause(reason = '') { await this._op('eventPause', [String(reason)]); }

  async resume() { await this._op('eventResume', []); }

  /** { rejected, error }: tampered deliveries so far, and the error that ended
   * delivery or the last rejection (null when healthy). */
  async status() {
    const s = await this._op('eventStatus', []);
    return { rejected: s.rejected, error: s.status === 0 ? null : errors.fromStatus(s.status, s.message) };
  }

  /** Stops delivery; unsettled events go back to the inbox. Idempotent. */
  close() {
    if (!this._closing) this._closing = this._shutdown();
    return this._closing;
  }

  unsubscribe() { return this.close(); }

  async _shutdown() {
    const ptr = this._ptr;
    try {
      if (ptr !== null) await this._client._internal('eventUnsubscribe', [ptr]);
    } finally {
      this._ptr = null;
      if (this._cb !== null) koffi.unregister(this._cb);
      this._cb = null;
      this._client._subs.delete(this);
    }
  }
}

/** Publishes payload as eventName to the recipients' app ids; resolves to the event id. */
Client.prototype.publishEvent = async function publishEvent(eventName, recipients, payload, options = {}) {
  if (typeof eventName !== 'string') throw new TypeError('eventName must be a string');
  if (!Array.isArray(recipients) || !recipients.every((r) => typeof r === 'string')) {
    throw new TypeError('recipients must be an array of app ids');
  }
  const meta = options.metadata == null ? null
    : (typeof options.metadata === 'string' ? options.metadata : JSON.stringify(options.metadata));
  return await this._call('eventPublish', [eventName, recipients, payloadBytes(payload), meta]);
};

/** Subscribes this app to eventName. options: { autoAck = true, ackWaitMs = 30000 }. */
Client.prototype.subscribeEvents = async function subscribeEvents(eventName, options, handler) {
  if (typeof options === 'function') [options, handler] = [undefined, options];
  const opts = options || {};
  if (typeof eventName !== 'string') throw new TypeError('eventName must be a string');
  if (handler !== undefined && typeof handler !== 'function') throw new TypeError('handler must be a function');
  if (this._state !== 'open') throw errors.byName('FM_ERR_CLOSED', 'client is closed');
  const { types } = load();
  const sub = new EventSubscription(this, eventName);
  const pairs = [['auto_ack', opts.autoAck === false ? 'false' : 'true'], ['async_handler', 'true']];
  if (opts.ackWaitMs != null) pairs.push(['ack_wait_ms', String(eventId(opts.ackWaitMs))]);
  sub._cb = koffi.register((_ud, ev) => {
    sub._deliver(toEvent(decodeEvent(ev)));
  }, koffi.pointer(types.eventCb));
  this._subs.add(sub);
  try {
    sub._ptr = await this._call('eventSubscribe', [eventName, pairs, sub._cb]);
  } catch (err) {
    koffi.unregister(sub._cb);
    sub._cb = null;
    this._subs.delete(sub);
    throw err;
  }
  if (handler) sub.on(handler);
  return sub;
};

module.exports = { EventSubscription, generateEventKey };
