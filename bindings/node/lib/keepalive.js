'use strict';
// Keeps the event loop alive while subscriptions are open. koffi relays
// callbacks from library threads through an unref'd handle, so without this a
// process whose only work is "wait for messages" would simply exit.

let count = 0;
let timer = null;

function acquire() {
  if (count++ === 0) timer = setInterval(() => {}, 0x7fffffff);
}

function release() {
  if (count > 0 && --count === 0) {
    clearInterval(timer);
    timer = null;
  }
}

module.exports = { acquire, release };
