// Key-value: set with TTL, get, compare-and-set, and a watch with a handler.
// Run: node examples/kv.js [url]
'use strict';
const { connect, ConflictError } = require('..');

async function main() {
  const fm = await connect(process.argv[2] || 'mem://');

  const events = [];
  const watch = await fm.watch('config', 'feature.', (e) => {
    events.push(e);
    console.log('watch:', e.op, e.key, e.value && e.value.toString(), `rev ${e.revision}`);
  });

  const rev = await fm.set('config', 'feature.search', 'on');
  await fm.set('config', 'session.abc', 'user-1', { ttlMs: 100 });
  console.log('get', (await fm.get('config', 'feature.search')).toString());
  console.log('missing key ->', await fm.get('config', 'nope'));

  // Optimistic update: only succeeds against the revision we read.
  await fm.cas('config', 'feature.search', 'off', rev);
  try {
    await fm.cas('config', 'feature.search', 'on', rev);
  } catch (err) {
    if (!(err instanceof ConflictError)) throw err;
    console.log('stale write rejected:', err.code);
  }
  await fm.delete('config', 'feature.search');
  console.log('keys', await fm.listKeys('config'));

  await new Promise((r) => setTimeout(r, 200));
  console.log('session expired:', !(await fm.exists('config', 'session.abc')));
  await watch.close();
  await fm.close();
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
