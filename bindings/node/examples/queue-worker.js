// Queues: a producer, a worker that acks or nacks, retries and the dead-letter queue.
// Run: node examples/queue-worker.js [url]
'use strict';
const { connect } = require('..');

async function main() {
  const fm = await connect(process.argv[2] || 'mem://');
  const q = 'emails';
  await fm.setRetryPolicy(q, { maxAttempts: 2, initialBackoffMs: 10, maxBackoffMs: 100, multiplier: 2 });

  await fm.enqueue(q, 'welcome alice@example.com', { priority: 5 });
  await fm.enqueue(q, 'bounce: not-an-address', { headers: { kind: 'bad' } });
  await fm.enqueue(q, 'reminder bob@example.com', { delayMs: 50 });
  console.log('stats', await fm.stats(q));

  // The worker: long-poll without blocking the event loop; stop when idle.
  for (;;) {
    const job = await fm.reserve(q, { visibilityMs: 5000, waitMs: 300 });
    if (!job) break;
    const text = job.payload.toString();
    if (text.startsWith('bounce')) {
      console.log(`job ${job.id} failed (attempt ${job.attempt})`);
      await fm.nack(q, job.id);
    } else {
      console.log(`job ${job.id} sent: ${text}`);
      await fm.ack(q, job.id);
    }
  }

  const dead = await fm.dlqList(q);
  console.log('dead letters', dead.map((j) => `${j.id}:${j.payload}`));
  console.log('replayed', await fm.dlqReplayAll(q, { headerKey: 'kind', headerValue: 'bad' }));
  console.log('stats', await fm.stats(q));
  await fm.close();
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
