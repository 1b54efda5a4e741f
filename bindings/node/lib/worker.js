'use strict';
// Pool worker: runs one op at a time, synchronously, and posts the outcome.
// Requests: { id, op, args }. Replies: { id, result } | { id, status, message }
// (native failure) | { id, jsError: { name, message } } (bad argument types...).

const { parentPort } = require('node:worker_threads');

let ops;
let NativeFailure;
let takeTransfer;
let loadError = null;
try {
  ({ ops, NativeFailure, takeTransfer } = require('./ops'));
} catch (err) {
  loadError = err; // reported on every request: the main thread decides what to do
}

parentPort.on('message', ({ id, op, args }) => {
  if (loadError) {
    parentPort.postMessage({ id, jsError: { name: 'Error', message: loadError.message } });
    return;
  }
  let reply;
  try {
    const result = ops[op](...args);
    reply = { id, result };
  } catch (err) {
    reply = err instanceof NativeFailure
      ? { id, status: err.status, message: err.message }
      : { id, jsError: { name: err.name, message: err.message } };
  }
  const transfer = takeTransfer();
  parentPort.postMessage(reply, transfer);
});
