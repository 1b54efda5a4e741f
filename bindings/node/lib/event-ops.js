'use strict';
// Event ops (docs/EVENTS.md), run in pool workers like lib/ops.js. The first
// argument is always the client handle (added by Client#_run).

const { load, copyBytes } = require('./native');

// A borrowed or owned fm_event -> plain data (payload copied).
function decodeEvent(ev) {
  const { fn } = load();
  const len = [0];
  const data = fn.fm_event_payload(ev, len);
  return {
    id: Number(fn.fm_event_id(ev)),
    name: fn.fm_event_name(ev),
    sender: fn.fm_event_sender(ev),
    timestamp: Number(fn.fm_event_timestamp_ms(ev)),
    payload: copyBytes(data, len[0]),
    metadata: fn.fm_event_metadata(ev) || null,
    deliveryCount: fn.fm_event_delivery_count(ev),
    encrypted: Boolean(fn.fm_event_encrypted(ev)),
  };
}

function eventOps(fn, check, out) {
  const EMPTY = new Uint8Array(1); // a valid pointer for an empty payload
  return {
    eventKeygen() {
      const s = [null];
      const p = [null];
      check(fn.fm_event_keygen(s, p));
      try {
        const text = (b) => {
          const n = [0];
          const d = fn.fm_buf_data(b, n);
          return Buffer.from(copyBytes(d, n[0])).toString('utf8');
        };
        return [text(s[0]), text(p[0])];
      } finally {
        fn.fm_buf_free(s[0]);
        fn.fm_buf_free(p[0]);
      }
    },
    eventPublish(c, name, recipients, payload, metadata) {
      const id = [0];
      check(fn.fm_event_publish(c, name, recipients, recipients.length,
        payload.length ? payload : EMPTY, payload.length, metadata, id));
      return Number(id[0]);
    },
    eventSubscribe(c, name, pairs, cb) {
      const opts = fn.fm_options_new();
      try {
        for (const [k, v] of pairs) check(fn.fm_options_set(opts, k, v));
        const sub = [null];
        check(fn.fm_event_subscribe(c, name, opts, cb, null, sub));
        return sub[0];
      } finally {
        fn.fm_options_free(opts);
      }
    },
    eventAck(_c, sub, id) { check(fn.fm_event_ack(sub, id)); },
    eventDefer(_c, sub, id, delayMs, reason) { check(fn.fm_event_defer(sub, id, delayMs, reason)); },
    eventDiscard(_c, sub, id, reason) { check(fn.fm_event_discard(sub, id, reason)); },
    eventReplay(_c, sub, id) {
      const ev = [null];
      check(fn.fm_event_replay(sub, id, ev));
      try {
        const e = decodeEvent(ev[0]);
        out(e.payload);
        return e;
      } finally {
        fn.fm_event_free(ev[0]);
      }
    },
    eventPause(_c, sub, reason) { check(fn.fm_event_pause(sub, reason)); },
    eventResume(_c, sub) { check(fn.fm_event_resume(sub)); },
    eventDone(_c, sub, id, status) { check(fn.fm_event_done(sub, id, status)); },
    eventStatus(_c, sub) {
      const n = [0];
      const st = fn.fm_event_subscription_status(sub, n);
      return { status: st, message: st === 0 ? '' : fn.fm_last_error() || '', rejected: Number(n[0]) };
    },
    eventUnsubscribe(_c, sub) { check(fn.fm_event_unsubscribe(sub)); },
  };
}

module.exports = { eventOps, decodeEvent };
