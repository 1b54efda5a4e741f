'use strict';
// Pool worker: runs ops one at a time, synchronously, and posts the outcomes.
// Requests: [{ id, op, args, long }]. Replies: [{ id, result } | { id, status,
// message } (native failure) | { id, jsError: { name, message } }].

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

// A batch of requests arrives as one message; replies go back batched too,
// but are flushed before a long call so quick ones are not held behind it.
parentPort.on('message', (batch) => {
  let replies = [];
  let transfer = [];
  const flush = () => {
    if (replies.length === 0) return;
    parentPort.postMessage(replies, transfer);
    replies = [];
    transfer = [];
  };
  for (const req of batch) {
    if (req.long) flush();
    replies.push(run(req));
    if (takeTransfer) transfer.push(...takeTransfer());
  }
  flush();
});

function run({ id, op, args }) {
  if (loadError) return { id, jsError: { name: 'Error', message: loadError.message } };
  try {
    return { id, result: ops[op](...args) };
  } catch (err) {
    return err instanceof NativeFailure
      ? { id, status: err.status, message: err.message }
      : { id, jsError: { name: err.name, message: err.message } };
  }
}
