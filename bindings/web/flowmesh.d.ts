// TypeScript declarations of the flowmesh browser client (flowmesh.js).

/** Bytes in: strings are UTF-8 encoded. */
export type Bytes = string | Uint8Array | ArrayBuffer | ArrayBufferView;
export type Headers = Record<string, string | number> | Map<string, string> | Array<[string, string]>;

export interface ConnectOptions {
  /** Token of a broker with an access file; sent as ?token= on the upgrade. */
  token?: string | null;
  /** Tenant and namespace of unqualified names (default "default"). */
  tenant?: string;
  namespace?: string;
  /** This application's id, for events. */
  appId?: string;
  /** First reconnect delay (default 100 ms); then times reconnectMultiplier (2) up to reconnectMaxMs (5000). */
  reconnectInitialMs?: number;
  reconnectMaxMs?: number;
  reconnectMultiplier?: number;
  /** Each delay is shortened by up to this fraction at random (default 0.5). */
  reconnectJitter?: number;
  /** Give up (state 'disconnected') after this many failed attempts; 0 (default) = never. */
  maxReconnectAttempts?: number;
  /** A request without an answer fails with TimeoutError after this (default 30000, plus a long poll's wait). */
  requestTimeoutMs?: number;
  connectTimeoutMs?: number;
  /** A ping request on a link quiet this long; silent for twice this = lost, reconnect (default 15000; 0 = off). */
  heartbeatMs?: number;
  /** A WebSocket constructor other than globalThis.WebSocket. */
  WebSocket?: unknown;
}

export type ConnState = 'connecting' | 'connected' | 'reconnecting' | 'disconnected' | 'closed';
export declare const ConnState: {
  readonly CONNECTING: 'connecting';
  readonly CONNECTED: 'connected';
  readonly RECONNECTING: 'reconnecting';
  readonly DISCONNECTED: 'disconnected';
  readonly CLOSED: 'closed';
};
export type StateListener = (state: ConnState, error: FlowMeshError | null) => void;

export interface StreamOptions {
  partitions?: number;
  max_age_ms?: number;
  max_bytes?: number;
  max_messages?: number;
  tier?: 'durable' | 'memory';
}

export interface PublishOptions {
  /** Partition key: the same key goes to the same partition. */
  key?: Bytes;
  headers?: Headers;
  /** Deduplication id. */
  msgId?: string;
}
export interface OutgoingMessage extends PublishOptions {
  payload: Bytes;
}
export interface Position {
  partition: number;
  offset: number;
}
export interface Message {
  /** Fully qualified: "tenant/namespace/name". */
  stream: string;
  partition: number;
  offset: number;
  /** Milliseconds since the Unix epoch, set on append. */
  timestamp: number;
  key: Uint8Array | null;
  payload: Uint8Array;
  headers: Record<string, string>;
}
export interface ReadOptions {
  partition?: number;
  offset?: number;
  max?: number;
}
export interface PartitionInfo {
  partition: number;
  earliest: number;
  /** The offset the next message gets. */
  latest: number;
}
export interface StreamInfo {
  config: Required<StreamOptions>;
  partitions: PartitionInfo[];
}
export interface SubscribeOptions {
  /** Consumer group: offsets are committed and a resume starts at the committed ones. */
  group?: string;
  /** Only this partition (default: all). */
  partition?: number;
  /** Default: 'committed' with a group, else 'latest'. */
  start?: 'earliest' | 'latest' | 'committed' | number;
  /** With a group (default true): commit each message once its handler resolved (or the loop asked for the next). */
  autoCommit?: boolean;
}
export interface GroupPartitionState {
  partition: number;
  /** Last processed offset, null when nothing was committed. */
  committed: number | null;
  latest: number;
  lag: number;
}
export interface GroupState {
  group: string;
  partitions: GroupPartitionState[];
}

export interface Job {
  id: number;
  /** 1 on the first delivery. */
  attempt: number;
  priority: number;
  payload: Uint8Array;
  headers: Record<string, string>;
  enqueuedMs: number;
}
export interface EnqueueOptions {
  headers?: Headers;
  msgId?: string;
  delayMs?: number;
  priority?: number;
}
export interface ReserveOptions {
  /** Invisible to others for this long (default 30000). */
  visibilityMs?: number;
  /** Long poll for the first job (default 0). */
  waitMs?: number;
}
export interface ReceiveOptions extends ReserveOptions {
  /** Default 10. */
  max?: number;
}
export interface QueueStats {
  pending: number;
  inFlight: number;
  delayed: number;
  dead: number;
}
export interface RetryPolicy {
  maxAttempts: number;
  initialBackoffMs: number;
  maxBackoffMs: number;
  multiplier: number;
}

export interface KvEntry {
  value: Uint8Array;
  revision: number;
}
export interface WatchCursor {
  /** A 64-bit number, kept exactly as a decimal string. */
  epoch: string;
  seq: number;
}
export interface KvEvent {
  op: 'put' | 'delete' | 'expire';
  key: string;
  /** The new value of a put, else null. */
  value: Uint8Array | null;
  revision: number;
  cursor: WatchCursor | null;
}
export type TxnOp =
  | { op: 'get'; bucket: string; key: string }
  | { op: 'list'; bucket: string; prefix?: string }
  | { op: 'put'; bucket: string; key: string; value: Bytes; ttlMs?: number }
  | { op: 'delete'; bucket: string; key: string }
  | { op: 'check'; bucket: string; key: string; revision: number };
export interface TxnEntry {
  key: string;
  value: Uint8Array;
  revision: number;
}
export type TxnResult =
  | { op: 'get'; entry: TxnEntry | null }
  | { op: 'list'; entries: TxnEntry[] }
  | { op: 'put'; revision: number }
  | { op: 'delete'; deleted: boolean }
  | { op: 'check' };

export interface StreamSummary {
  name: string;
  tier: string;
  messages: number;
  bytes: number;
  partitions: PartitionInfo[];
  groups: GroupState[];
}
export interface QueueSummary {
  name: string;
  pending: number;
  in_flight: number;
  delayed: number;
  dead: number;
}
export interface Inventory {
  streams: StreamSummary[];
  queues: QueueSummary[];
  buckets: Array<{ name: string; keys: number }>;
}
export interface BrokerMetrics {
  connections: number;
  connections_accepted: number;
  requests: number;
  request_errors: number;
  requests_in_flight: number;
  uptime_ms: number;
}

export type Handler<T> = (event: T) => void | Promise<void>;

declare class Emitter {
  on(name: 'error', fn: (e: Error) => void): this;
  on(name: 'close', fn: () => void): this;
  on(name: string, fn: (...args: any[]) => void): this;
  off(name: string, fn: (...args: any[]) => void): this;
  once(name: string, fn: (...args: any[]) => void): this;
}

/**
 * A live stream subscription or KV watch, resumed after reconnects. Iterate
 * it with for-await (breaking out closes it) or pass a handler.
 * Events: 'error', 'close'.
 */
export declare class Subscription<T> extends Emitter implements AsyncIterable<T> {
  readonly closed: boolean;
  /** The error that ended it, or null. */
  readonly error: FlowMeshError | null;
  /** Delivered to this object, not yet taken by the loop. */
  readonly buffered: number;
  close(): Promise<void>;
  [Symbol.asyncIterator](): AsyncIterator<T>;
}
export declare class StreamSubscription extends Subscription<Message> {
  readonly stream: string;
  readonly group: string | null;
  /** Commits this message (and those before it in its partition) for the group. */
  commit(message: Message): Promise<void>;
}
export declare class Watch extends Subscription<KvEvent> {
  readonly bucket: string;
  readonly prefix: string;
  /** Where the watch is: the cursor of the last event (or of its start). */
  readonly cursor: WatchCursor | null;
}

export interface AppEvent {
  id: number;
  name: string;
  sender: string;
  timestamp: number;
  payload: Uint8Array;
  metadata: Record<string, unknown> | null;
  /** 1 on the first delivery. */
  deliveryCount: number;
  encrypted: false;
}
export interface EventSubscribeOptions {
  /** Ack once the handler resolved (default true). */
  autoAck?: boolean;
  /** Redelivery of an unsettled event after this (default 30000). */
  ackWaitMs?: number;
}
export declare class EventSubscription extends Emitter {
  readonly eventName: string;
  readonly rejected: number;
  on(handler: Handler<AppEvent>): this;
  on(name: string, fn: (...args: any[]) => void): this;
  ack(id: number): Promise<void>;
  defer(id: number, delayMs?: number): Promise<void>;
  discard(id: number, reason?: string): Promise<void>;
  replay(id: number): Promise<AppEvent>;
  pause(reason?: string): Promise<void>;
  resume(): Promise<void>;
  unsubscribe(): Promise<void>;
  close(): Promise<void>;
}

export declare class Client extends Emitter {
  readonly url: string;
  readonly tenant: string;
  readonly namespace: string;
  readonly appId: string | null;
  readonly state: ConnState;
  readonly closed: boolean;
  /** Successful reconnects so far. */
  readonly reconnects: number;
  onState(listener: StateListener): this;
  /** "name" -> "tenant/namespace/name"; a qualified name is checked and kept. */
  qualify(name: string): string;
  /** Uses another token for the following requests. */
  auth(token: string | null): Promise<void>;
  health(): Promise<void>;
  ping(): Promise<void>;

  createStream(stream: string, options?: StreamOptions): Promise<void>;
  publish(stream: string, payload: Bytes, options?: PublishOptions): Promise<Position>;
  publishBatch(stream: string, items: Array<Bytes | OutgoingMessage>): Promise<Position[]>;
  read(stream: string, options?: ReadOptions): Promise<Message[]>;
  streamInfo(stream: string): Promise<StreamInfo>;
  partitions(stream: string): Promise<number>;
  latestOffset(stream: string, partition?: number): Promise<number>;
  subscribe(stream: string, options?: SubscribeOptions, handler?: Handler<Message>): Promise<StreamSubscription>;
  subscribe(stream: string, handler: Handler<Message>): Promise<StreamSubscription>;
  commitOffset(stream: string, group: string, partition: number, offset: number): Promise<void>;
  /** null when the group committed nothing. */
  getOffset(stream: string, group: string, partition?: number): Promise<number | null>;
  groupState(stream: string, group: string): Promise<GroupState>;

  enqueue(queue: string, payload: Bytes, options?: EnqueueOptions): Promise<number>;
  reserve(queue: string, options?: ReserveOptions): Promise<Job | null>;
  receive(queue: string, options?: ReceiveOptions): Promise<Job[]>;
  ack(queue: string, jobId: number): Promise<void>;
  nack(queue: string, jobId: number, options?: { delayMs?: number }): Promise<void>;
  extend(queue: string, jobId: number, visibilityMs: number): Promise<void>;
  stats(queue: string): Promise<QueueStats>;
  setRetryPolicy(queue: string, policy: Partial<RetryPolicy> & { maxAttempts: number }): Promise<void>;
  getRetryPolicy(queue: string): Promise<RetryPolicy>;
  dlqList(queue: string, options?: { max?: number }): Promise<Job[]>;
  dlqReplay(queue: string, jobId: number): Promise<void>;
  dlqReplayAll(queue: string, filter?: { headerKey?: string; headerValue?: string }): Promise<number>;

  set(bucket: string, key: string, value: Bytes, options?: { ttlMs?: number }): Promise<number>;
  /** expectedRevision 0 = the key must not exist; ConflictError otherwise. */
  cas(bucket: string, key: string, value: Bytes, expectedRevision: number, options?: { ttlMs?: number }): Promise<number>;
  get(bucket: string, key: string): Promise<Uint8Array | null>;
  getEntry(bucket: string, key: string): Promise<KvEntry | null>;
  /** Resolves with whether a key was removed. */
  delete(bucket: string, key: string): Promise<boolean>;
  exists(bucket: string, key: string): Promise<boolean>;
  listKeys(bucket: string, prefix?: string): Promise<string[]>;
  watch(bucket: string, prefix?: string, handler?: Handler<KvEvent>): Promise<Watch>;
  watch(bucket: string, handler: Handler<KvEvent>): Promise<Watch>;
  /** All or nothing; ConflictError names the first failed check. */
  txn(ops: TxnOp[]): Promise<TxnResult[]>;

  /** Unqualified prefix: in the client's tenant/namespace; one with '/' is the start of a qualified name. */
  listStreams(prefix?: string): Promise<string[]>;
  listQueues(prefix?: string): Promise<string[]>;
  listBuckets(prefix?: string): Promise<string[]>;
  deleteStream(stream: string): Promise<void>;
  deleteQueue(queue: string): Promise<void>;
  deleteBucket(bucket: string): Promise<void>;
  purgeStream(stream: string): Promise<number>;
  purgeQueue(queue: string): Promise<number>;
  updateStream(stream: string, options: Omit<StreamOptions, 'tier'>): Promise<Required<StreamOptions>>;
  /** What the token may see under a qualified prefix ("" = everything it may see). */
  inventory(prefix?: string): Promise<Inventory>;
  brokerMetrics(): Promise<BrokerMetrics>;

  /** Unsealed events only: a recipient with a registered public key is refused (InvalidArgumentError). */
  publishEvent(eventName: string, recipients: string[], payload: Bytes, options?: { metadata?: Record<string, unknown> | string }): Promise<number>;
  subscribeEvents(eventName: string, handler?: Handler<AppEvent>): Promise<EventSubscription>;
  subscribeEvents(eventName: string, options: EventSubscribeOptions, handler?: Handler<AppEvent>): Promise<EventSubscription>;

  close(): Promise<void>;
}

export declare function connect(url: string, options?: ConnectOptions): Promise<Client>;
/** UTF-8 text of bytes (null stays null). */
export declare function text(bytes: Uint8Array): string;
export declare function text(bytes: Uint8Array | null): string | null;
export declare function makeError(code: string, message: string, status?: number): FlowMeshError;

export declare class FlowMeshError extends Error {
  /** The status name, e.g. "FM_ERR_NOT_FOUND" (docs/WEBSOCKET.md). */
  readonly code: string;
  /** Its number (the C fm_status). */
  readonly status: number | undefined;
  constructor(message?: string, code?: string, status?: number);
}
export declare class InvalidArgumentError extends FlowMeshError {}
export declare class NotFoundError extends FlowMeshError {}
export declare class TimeoutError extends FlowMeshError {}
export declare class DisconnectedError extends FlowMeshError {}
export declare class UnauthorizedError extends FlowMeshError {}
export declare class ClosedError extends FlowMeshError {}
export declare class AlreadyExistsError extends FlowMeshError {}
export declare class ConflictError extends FlowMeshError {}
export declare class TooLargeError extends FlowMeshError {}
export declare class UnavailableError extends FlowMeshError {}
export declare class InternalError extends FlowMeshError {}
