// The API from TypeScript (checked by `tsc --noEmit` in the test suite).
import {
  connect, ConnState, Message, KvEvent, NotFoundError, FlowMeshError, Bucket, StoreRecord, Page, LiveQuery, Json,
  TopicSubscription, TopicEvent, RulesEvent,
} from 'flowmesh';

async function main(): Promise<void> {
  const fm = await connect('mem://', { tenant: 'acme', namespace: 'dev', heartbeat_ms: 1000, nonblocking: true });
  fm.onState((state: ConnState, error: FlowMeshError | null) => {
    if (state === ConnState.RECONNECTING) console.log('link lost:', error?.code);
  });
  const now: ConnState = fm.state;
  console.log(now === 'connected');
  const pos = await fm.publish('events', Buffer.from('hi'), { headers: { a: '1' } });
  const offset: number = pos.offset;
  const msgs: Message[] = await fm.read('events', { offset });
  const sub = await fm.subscribe('events', { group: 'g', start: 'earliest' });
  for await (const m of sub) {
    const body: string = m.payload.toString();
    console.log(body, m.headers['a']);
    break;
  }
  const id: number = await fm.enqueue('jobs', 'x', { delayMs: 10, priority: 2 });
  const job = await fm.reserve('jobs', { visibilityMs: 1000, waitMs: 100 });
  if (job) await fm.ack('jobs', job.id);
  await fm.nack('jobs', id, { delayMs: 5 }).catch((e: FlowMeshError) => console.log(e.code));
  const value: Buffer | null = await fm.get('b', 'k');
  const w = await fm.watch('b', 'k', (e: KvEvent) => console.log(e.op, e.value?.length));
  await w.close();
  const streams: string[] = await fm.listStreams('ev');
  const purged: number = await fm.purgeStream('events');
  await fm.updateStream('events', { max_messages: 1000 });
  if (job) await fm.extend('jobs', job.id, 5000).catch((e: FlowMeshError) => console.log(e.code));
  await fm.deleteQueue('jobs');
  console.log(streams.length, purged);
  const users: Bucket = fm.store.bucket('users');
  const rec: StoreRecord = await users.insert({ name: 'Ann', age: 31 });
  const page: Page = await users.paginate({ limit: 10, after: rec.id });
  const admins: StoreRecord[] = await users.where({ role: 'admin', age: { $gte: 18 } });
  await fm.store.defineQuery('all-users', { type: 'all', bucket: 'users' });
  const live: LiveQuery = await fm.store.subscribe('all-users', (result: Json) => console.log(result));
  await live.close();
  const results: Json[] = await fm.store.transaction([{ op: 'get', bucket: 'users', key: rec.id }]);
  console.log(page.hasMore, admins.length, results.length);
  const orders: TopicSubscription = await fm.rules.subscribe('orders.*');
  for await (const { topic, event } of orders) {
    console.log(topic, event.data);
    break;
  }
  const shipped = await fm.rules.subscribe('orders.>', (event: RulesEvent, topic: string) => console.log(topic, event.id));
  const first: TopicEvent = await (await fm.rules.subscribe('users.*')).next();
  console.log(first.event.causationId);
  await shipped.close();
  try {
    await users.insert({ age: -1 });
  } catch (err) {
    if (err instanceof FlowMeshError && err.storeCode === 'VALIDATION_ERROR') console.log(err.details);
  }
  try {
    await fm.read('missing');
  } catch (err) {
    if (err instanceof NotFoundError) console.log(err.code, msgs.length, value);
  }
  await fm.close();
}

main();
