// Compiled by `tsc --noEmit` in test.sh: the declarations are coherent and
// describe the API as the tests and the README use it.
import {
  connect, text, ConflictError, FlowMeshError, type Client, type Message, type KvEvent, type TxnResult,
} from '../flowmesh.js';

export async function usage(url: string): Promise<void> {
  const c: Client = await connect(url, { token: 'secret', reconnectMaxMs: 2000 });
  c.onState((state, error) => console.log(state, error?.code));
  const pos = await c.publish('orders', 'hello', { key: 'k', headers: { a: '1' } });
  const n: number = pos.offset + pos.partition;
  const sub = await c.subscribe('orders', { group: 'g', start: 'earliest' }, async (m: Message) => {
    console.log(m.offset, text(m.payload), m.headers['a']);
  });
  await sub.close();
  for await (const m of await c.subscribe('orders', { start: 3 })) {
    console.log(m.partition, n);
    break;
  }
  const job = await c.reserve('jobs', { waitMs: 1000 });
  if (job) await c.ack('jobs', job.id);
  const stats = await c.stats('jobs');
  console.log(stats.inFlight + stats.dead);
  try {
    await c.cas('config', 'color', 'blue', 0);
  } catch (e) {
    if (e instanceof ConflictError) console.log(e.code, e.status);
    else if (e instanceof FlowMeshError) throw e;
  }
  const w = await c.watch('config', 'app.', (e: KvEvent) => console.log(e.op, e.key, e.cursor?.seq));
  await w.close();
  const results: TxnResult[] = await c.txn([{ op: 'get', bucket: 'config', key: 'color' }]);
  const first = results[0];
  if (first.op === 'get') console.log(first.entry?.revision);
  const inv = await c.inventory('');
  console.log(inv.streams.map((s) => s.groups.map((g) => g.partitions[0].lag)));
  const m = await c.brokerMetrics();
  console.log(m.connections, m.requests);
  const events = await c.subscribeEvents('orders/created', { autoAck: true }, (ev) => console.log(ev.sender));
  await events.unsubscribe();
  await c.close();
}
