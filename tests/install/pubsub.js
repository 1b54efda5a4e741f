'use strict';
// Publish/subscribe through the installed npm package on mem://: require()
// resolves node_modules/flowmesh and its prebuilt library.
const { connect, version } = require('flowmesh');

async function main() {
  const fm = await connect('mem://');
  await fm.createStream('orders', { partitions: 1 });
  const got = [];
  const done = new Promise((resolve) => {
    fm.subscribe('orders', { start: 'earliest' }, (m) => {
      got.push(m.payload.toString());
      if (got.length === 3) resolve();
    });
  });
  for (const p of ['a', 'b', 'c']) await fm.publish('orders', p);
  const timer = setTimeout(() => { console.error('timed out; got', got); process.exit(1); }, 20000);
  await done;
  clearTimeout(timer);
  if (got.join(',') !== 'a,b,c') throw new Error(`got ${got}`);
  await fm.close();
  console.log(`node pubsub OK: flowmesh ${typeof version === 'function' ? version() : version}`);
}

main().catch((e) => { console.error(e); process.exit(1); });
