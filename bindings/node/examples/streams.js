// Streams: publish, read back, and subscribe with a consumer group.
// Run: node examples/streams.js [url]   (default mem://, no server needed)
'use strict';
const { connect } = require('..');

async function main() {
  const fm = await connect(process.argv[2] || 'mem://');

  await fm.createStream('orders', { partitions: 1 });
  const pos = await fm.publish('orders', JSON.stringify({ id: 1, item: 'book' }), {
    key: 'customer-7',
    headers: { 'content-type': 'application/json' },
  });
  console.log('published at', pos);
  await fm.publishBatch('orders', [
    JSON.stringify({ id: 2, item: 'pen' }),
    { payload: JSON.stringify({ id: 3, item: 'ink' }), headers: { priority: 'high' } },
  ]);

  for (const m of await fm.read('orders', { offset: 0 })) {
    console.log('read', m.offset, m.payload.toString(), m.headers);
  }

  // A group subscription starts at its committed offset (earliest the first
  // time) and commits each message once the loop moves past it.
  const sub = await fm.subscribe('orders', { group: 'billing' });
  let seen = 0;
  for await (const m of sub) {
    console.log('billing got', m.offset, JSON.parse(m.payload).item);
    if (++seen === 3) break; // leaving the loop closes the subscription
  }
  console.log('committed offset', await fm.getOffset('orders', 'billing'));

  await fm.close(); // nothing keeps the process alive after this
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
