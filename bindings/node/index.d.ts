// TypeScript declarations for the flowmesh Node binding.
/// <reference types="node" />

import { EventEmitter } from 'node:events';

/** Bytes in: strings are UTF-8 encoded. */
export type Bytes = string | Buffer | Uint8Array | ArrayBuffer | ArrayBufferView;
/** Non-negative integer; bigint is accepted for 64-bit values. */
export type UInt = number | bigint;
export type Headers = Record<string, string | number> | Map<string, string> | Array<[string, string]>;

/**
 * Native option keys (see docs/ABI.md), as strings, numbers or booleans.
 * camelCase keys are converted to the native snake_case (maxPayloadBytes ->
 * max_payload_bytes). Unknown keys reject with InvalidArgumentError.
 */
export interface ConnectOptions {
  tenant?: string;
  namespace?: string;
  token?: string;
  /** PEM file of the CA that signed a grpcs:// broker's certificate (default: system roots). */
  tls_ca_file?: string;
  /** Name to check the broker's certificate against (default: the URL's host). */
  tls_server_name?: string;
  max_payload_bytes?: UInt;
  fsync?: 'batch' | 'interval' | 'none';
  fsync_interval_ms?: UInt;
  worker_threads?: UInt;
  connect_timeout_ms?: UInt;
  request_timeout_ms?: UInt;
  reconnect_initial_ms?: UInt;
  reconnect_max_ms?: UInt;
  reconnect_multiplier?: number | string;
  reconnect_jitter_ms?: UInt;
  /** Give up (state 'disconnected') after this many attempts; 0 (default) = never. */
  max_reconnect_attempts?: UInt;
  /** Probe the link this often (default 5000); an unanswered probe starts reconnecting. 0 = off. */
  heartbeat_ms?: UInt;
  /** Retries of idempotent calls once the link is back (default 3). */
  max_retries?: UInt;
  /** Consecutive failures that open the circuit breaker (default 10); 0 = off. */
  breaker_threshold?: UInt;
  /** How long the breaker stays open (default 30000). */
  breaker_timeout_ms?: UInt;
  /** Async publishes pending at once (default 16384). */
  max_in_flight?: UInt;
  /** An async publish beyond max_in_flight fails with UnavailableError instead of waiting. */
  nonblocking?: boolean | 'true' | 'false';
  [key: string]: string | number | bigint | boolean | undefined;
}

/** The state of a client's link to its engine (fm_conn_state). */
export type ConnState = 'connecting' | 'connected' | 'reconnecting' | 'disconnected' | 'closed';
export declare const ConnState: {
  readonly CONNECTING: 'connecting';
  readonly CONNECTED: 'connected';
  readonly RECONNECTING: 'reconnecting';
  readonly DISCONNECTED: 'disconnected';
  readonly CLOSED: 'closed';
};

/** `error` is the error that caused the change (e.g. DisconnectedError), or null. */
export type StateListener = (state: ConnState, error: FlowMeshError | null) => void;

export interface StreamOptions {
  partitions?: UInt;
  max_age_ms?: UInt;
  max_bytes?: UInt;
  max_messages?: UInt;
  /** 'durable' (default) or 'memory': in memory only, bounded, oldest dropped. */
  tier?: 'durable' | 'memory';
  [key: string]: string | number | bigint | boolean | undefined;
}

export interface PublishOptions {
  /** Partition key; messages with the same key go to the same partition. */
  key?: Bytes;
  headers?: Headers;
  /**
   * Delivery tier of this publish (`publish` only). "memory": handed to live
   * subscribers, stored nowhere, the position's offset is OFFSET_NONE;
   * "persistent" (default): stored; "replicated": stored on a quorum of 3+
   * servers, UnavailableError on an engine that keeps one copy.
   */
  tier?: TierName;
  /** Memory tier: wait until the engine's server took the message (`publish` only). */
  requireAck?: boolean;
  /** Deadline of the whole publish, in the library (TimeoutError beyond; `publish` only). */
  timeoutMs?: UInt;
}

export type TierName = 'memory' | 'persistent' | 'replicated';
export declare const Tier: { readonly MEMORY: 'memory'; readonly PERSISTENT: 'persistent'; readonly REPLICATED: 'replicated' };
/** The offset of a memory-tier message or publish: it has none (-1). */
export declare const OFFSET_NONE: -1;
/** The header holding a message's dotted subject. */
export declare const SUBJECT_HEADER: 'fm-subject';

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
  /** The subject it was published to ("orders.created"), else the stream's short name. */
  subject: string;
  partition: number;
  /** OFFSET_NONE (-1) for a memory-tier message. */
  offset: number;
  /** A memory-tier message: never stored, never committed. */
  live: boolean;
  /** Milliseconds since the Unix epoch, set on append. */
  timestamp: number;
  key: Buffer | null;
  payload: Buffer;
  headers: Record<string, string>;
}

export interface ReadOptions {
  /** Default 0. */
  partition?: UInt;
  /** Default 0. */
  offset?: UInt;
  /** Default 100. */
  max?: UInt;
}

export interface SubscribeOptions {
  /** Consumer group: offsets are committed and resumed. */
  group?: string;
  /** Only this partition (default: all). */
  partition?: UInt;
  /** 'earliest' | 'latest' | 'committed' | an offset. Default: committed with a group, else latest. */
  start?: 'earliest' | 'latest' | 'committed' | UInt | string;
  /**
   * With a group (default true): commit each message once processed, that is
   * when its handler resolved or the for-await loop asked for the next one.
   */
  autoCommit?: boolean;
}

export interface Job {
  id: number;
  /** 1 on the first delivery. */
  attempt: number;
  priority: number;
  payload: Buffer;
  headers: Record<string, string>;
}

export interface EnqueueOptions extends PublishOptions {
  /** Invisible until this many ms have passed. Default 0. */
  delayMs?: UInt;
  /** Higher is reserved first. Default 0. */
  priority?: number;
}

export interface ReserveOptions {
  /** How long the job stays invisible before redelivery. Default 30000. */
  visibilityMs?: UInt;
  /** Long poll: wait up to this many ms for a job. Default 0. */
  waitMs?: UInt;
}

export interface ReceiveOptions extends ReserveOptions {
  /** Default 10. */
  max?: UInt;
}

export interface QueueStats {
  pending: number;
  inFlight: number;
  delayed: number;
  dead: number;
}

export interface RetryPolicy {
  /** Deliveries before a job is dead-lettered; 0 = unlimited. */
  maxAttempts: number;
  initialBackoffMs: number;
  maxBackoffMs: number;
  multiplier: number;
}

export interface KvEntry {
  value: Buffer;
  revision: number;
}

export interface KvEvent {
  op: 'put' | 'delete' | 'expire';
  key: string;
  /** The new value for 'put', else null. */
  value: Buffer | null;
  revision: number;
}

/**
 * A live subscription or KV watch. Iterate it with for-await (breaking out
 * closes it) or pass a handler to subscribe()/watch(). While it is open it
 * keeps the process alive. When its feed ends with an error (e.g. the broker
 * is gone after max_reconnect_attempts) the loop throws that FlowMeshError
 * after the events before it; a handler subscription emits it as 'error'.
 * Events: 'error' (feed error, handler threw, or a commit failed), 'close'.
 * Without an 'error' listener a handler-mode error is thrown (uncaught).
 */
export declare class Subscription<T = Message> extends EventEmitter implements AsyncIterable<T> {
  /** True once close() started (by the user, the client, or an error). */
  readonly closed: boolean;
  /** The error that ended the feed, or null. */
  readonly error: FlowMeshError | null;
  /** Events waiting in JS for the consumer (at most 512 for a stream subscription). */
  readonly buffered: number;
  /** Settles once the native subscription is freed (at most ~200 ms after close()). */
  readonly released: Promise<void>;
  /** Stops delivery and commits what was processed. Idempotent. */
  close(): Promise<void>;
  [Symbol.asyncIterator](): AsyncIterator<T>;
  [Symbol.asyncDispose](): Promise<void>;
}

export type Handler<T> = (event: T) => void | Promise<void>;

export declare class Client {
  readonly url: string;
  /** True once close() was called. */
  readonly closed: boolean;
  /** The current connection state ('closed' once close() was called). */
  readonly state: ConnState;
  /**
   * Calls `listener` with the current state, then every change in order, and
   * last with 'closed' before close() resolves. Runs on the main thread. At
   * most 16 listeners per client (InvalidArgumentError); ClosedError after
   * close(). Returns the client.
   */
  onState(listener: StateListener): this;

  health(): Promise<void>;
  readiness(): Promise<void>;
  /** This client's metrics in the Prometheus text exposition format (0.0.4). */
  metrics(): Promise<string>;

  // ---- streams
  /** Resolves if created or it exists with the same partition count; AlreadyExistsError otherwise. */
  createStream(stream: string, options?: StreamOptions): Promise<void>;
  partitions(stream: string): Promise<number>;
  /**
   * Publishes to a stream name or a dotted subject whose first token names
   * the stream ("orders.created" goes to stream "orders"), in `options.tier`.
   */
  publish(subject: string, payload: Bytes, options?: PublishOptions): Promise<Position>;
  publishBatch(stream: string, items: Array<Bytes | OutgoingMessage>): Promise<Position[]>;
  /** NotFoundError if the stream never existed. */
  read(stream: string, options?: ReadOptions): Promise<Message[]>;
  /** Resolves once the subscription is live: later publishes are delivered. */
  /**
   * Subscribes to a stream, or to the subjects of one matching a NATS-style
   * pattern ("orders.created", "events.*", "events.>"); memory-tier messages
   * arrive too (`live`). A wildcard in the first token is InvalidArgumentError.
   */
  subscribe(stream: string, options?: SubscribeOptions, handler?: Handler<Message>): Promise<Subscription<Message>>;
  subscribe(stream: string, handler: Handler<Message>): Promise<Subscription<Message>>;
  /** `offset` is the last message the group processed. */
  commitOffset(stream: string, group: string, partition: UInt, offset: UInt): Promise<void>;
  /** The group's committed offset, or null when it has none. */
  getOffset(stream: string, group: string, partition?: UInt): Promise<number | null>;
  /** The offset the next message of the partition will get (0 when empty). */
  latestOffset(stream: string, partition?: UInt): Promise<number>;

  // ---- queues
  /** Resolves with the job id. */
  enqueue(queue: string, payload: Bytes, options?: EnqueueOptions): Promise<number>;
  /** A job, or null when none arrived within waitMs. */
  reserve(queue: string, options?: ReserveOptions): Promise<Job | null>;
  /** Up to `max` jobs, waiting up to waitMs for the first; may be empty. */
  receive(queue: string, options?: ReceiveOptions): Promise<Job[]>;
  ack(queue: string, jobId: UInt): Promise<void>;
  nack(queue: string, jobId: UInt, options?: { delayMs?: UInt }): Promise<void>;
  stats(queue: string): Promise<QueueStats>;
  /** multiplier defaults to 2, backoffs to 0. */
  setRetryPolicy(queue: string, policy: Partial<RetryPolicy> & { maxAttempts: number }): Promise<void>;
  getRetryPolicy(queue: string): Promise<RetryPolicy>;
  dlqList(queue: string, options?: { max?: UInt }): Promise<Job[]>;
  dlqReplay(queue: string, jobId: UInt): Promise<void>;
  /** Replays every dead job (only those whose header headerKey == headerValue, if given); resolves with the count. */
  dlqReplayAll(queue: string, filter?: { headerKey?: string; headerValue?: string }): Promise<number>;

  // ---- key-value
  /** Resolves with the new revision. ttlMs 0 = no expiry. */
  set(bucket: string, key: string, value: Bytes, options?: { ttlMs?: UInt }): Promise<number>;
  /** expectedRevision 0 = the key must not exist. ConflictError on mismatch. */
  cas(bucket: string, key: string, value: Bytes, expectedRevision: UInt): Promise<number>;
  /** The value, or null when the key is absent. */
  get(bucket: string, key: string): Promise<Buffer | null>;
  getEntry(bucket: string, key: string): Promise<KvEntry | null>;
  /** Resolves also when the key was absent. */
  delete(bucket: string, key: string): Promise<void>;
  exists(bucket: string, key: string): Promise<boolean>;
  /** Sorted. */
  listKeys(bucket: string, prefix?: string): Promise<string[]>;
  watch(bucket: string, prefix?: string, handler?: Handler<KvEvent>): Promise<Subscription<KvEvent>>;
  watch(bucket: string, handler: Handler<KvEvent>): Promise<Subscription<KvEvent>>;

  // ---- document store
  /** The document store of this client's tenant and namespace (docs/STORE.md). */
  readonly store: Store;
  /** The rules engine of this client's tenant and namespace (docs/RULES.md). */
  readonly rules: Rules;
  /** The procedures of this client's tenant and namespace (docs/PROCEDURES.md). */
  readonly procedures: Procedures;

  // ---- resource lifecycle
  /**
   * Streams whose name starts with `prefix` in the client's tenant and
   * namespace, fully qualified ("tenant/namespace/name") and sorted. A prefix
   * containing '/' is the start of a qualified name ("acme/" = every
   * namespace of tenant acme).
   */
  listStreams(prefix?: string): Promise<string[]>;
  listQueues(prefix?: string): Promise<string[]>;
  listBuckets(prefix?: string): Promise<string[]>;
  /** Removes it with everything in it; NotFoundError if it does not exist. Subscriptions on it end. */
  deleteStream(stream: string): Promise<void>;
  deleteQueue(queue: string): Promise<void>;
  deleteBucket(bucket: string): Promise<void>;
  /** Removes every message, keeps the stream (offsets continue); resolves with how many went. */
  purgeStream(stream: string): Promise<number>;
  /** Removes pending and delayed jobs (in-flight ones are left to their workers); resolves with how many went. */
  purgeQueue(queue: string): Promise<number>;
  /** More time for a reserved job, from now. ConflictError if it is no longer reserved by anyone. */
  extend(queue: string, jobId: UInt, visibilityMs: UInt): Promise<void>;
  /** Changes retention (0 = unlimited) or grows the partition count; unset keys keep their value. */
  updateStream(stream: string, options: Omit<StreamOptions, 'tier'>): Promise<void>;

  /**
   * Closes the subscriptions (committing what was processed), waits for calls
   * in flight, closes the native client. Idempotent; safe inside a handler.
   * Afterwards every call rejects with ClosedError.
   */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Connects to "mem://", "file:///abs/dir", "grpc://host:port" or "grpcs://host:port". */
export declare function connect(url: string, options?: ConnectOptions): Promise<Client>;

/** The native library's version, "MAJOR.MINOR.PATCH". */
export declare function version(): string;

export declare class FlowMeshError extends Error {
  /** The native status name, e.g. "FM_ERR_NOT_FOUND" (fm_status_str). */
  readonly code: string;
  /** The native status number. */
  readonly status: number | undefined;
  /** For store calls: the store's code, e.g. "VALIDATION_ERROR", "BUCKET_NOT_DEFINED". */
  readonly storeCode?: string;
  /** For a store VALIDATION_ERROR: one entry per failed field. */
  readonly details?: Array<{ field: string; message: string }> | null;
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

// ---- events to named recipients (lib/events.js, docs/EVENTS.md) ----
// Connect with { appId } (and { appSecretKey } from generateEventKey() for
// end-to-end sealing).

/** An event delivered to this application. */
export interface AppEvent {
  /** Unique within the tenant/namespace. */
  id: number;
  name: string;
  /** The publisher's app id. */
  sender: string;
  /** Milliseconds since the Unix epoch (publisher's clock). */
  timestamp: number;
  /** Plaintext (opened if it was sealed). */
  payload: Buffer;
  /** The metadata object, or null. */
  metadata: Record<string, unknown> | null;
  /** 1 on first delivery. */
  deliveryCount: number;
  encrypted: boolean;
}

export interface EventSubscribeOptions {
  /** Ack when the handler's promise resolves (default true). */
  autoAck?: boolean;
  /** Redeliver an unsettled event after this (default 30000). */
  ackWaitMs?: UInt;
}

export declare class EventSubscription {
  readonly eventName: string;
  /** Calls handler for every event (events that came earlier are delivered now). */
  on(handler: (event: AppEvent) => void | Promise<void>): this;
  ack(id: UInt | string): Promise<void>;
  defer(id: UInt | string, delayMs?: UInt, reason?: string): Promise<void>;
  discard(id: UInt | string, reason?: string): Promise<void>;
  replay(id: UInt | string): Promise<AppEvent>;
  pause(reason?: string): Promise<void>;
  resume(): Promise<void>;
  /** Tampered deliveries rejected so far, and the error that ended delivery or the last rejection. */
  status(): Promise<{ rejected: number; error: FlowMeshError | null }>;
  unsubscribe(): Promise<void>;
  close(): Promise<void>;
}

export interface Client {
  /** Publishes payload to the recipients' app ids; resolves to the event id. */
  publishEvent(
    eventName: string,
    recipients: string[],
    payload: string | Uint8Array | ArrayBuffer | ArrayBufferView,
    options?: { metadata?: Record<string, unknown> | string },
  ): Promise<number>;
  subscribeEvents(eventName: string, handler?: (event: AppEvent) => void | Promise<void>): Promise<EventSubscription>;
  subscribeEvents(
    eventName: string,
    options: EventSubscribeOptions,
    handler?: (event: AppEvent) => void | Promise<void>,
  ): Promise<EventSubscription>;
}

/** A new X25519 key pair (base64) for the connect option appSecretKey. */
export declare function generateEventKey(): Promise<{ secretKey: string; publicKey: string }>;

// ---- document store (docs/STORE.md)

export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
/** A stored record: its fields plus id, _version, _createdAt, _updatedAt. */
export type StoreRecord = { id: string; _version: number; _createdAt: number; _updatedAt: number; [field: string]: Json };
/** {role: 'admin'}, {age: {$gt: 18}}, {$or: [...]}, ... */
export type Filter = { [key: string]: Json };
export interface Page { records: StoreRecord[]; hasMore: boolean; nextCursor: string | null }
export interface TransactionOp { op: 'get' | 'insert' | 'update' | 'delete' | 'where' | 'findOne' | 'count'; bucket: string; [key: string]: Json }

export declare class Store {
  /** One request {type: 'store.<op>', ...}; resolves with its result. */
  call(request: { type: string; [key: string]: Json }): Promise<Json>;
  bucket(name: string): Bucket;
  /** AlreadyExistsError when defined. */
  defineBucket(name: string, config?: { key?: string; schema?: { [field: string]: Json }; indexes?: string[] }): Promise<void>;
  updateBucket(name: string, updates: { schema?: { [field: string]: Json }; indexes?: string[] }): Promise<void>;
  /** NotFoundError (storeCode BUCKET_NOT_DEFINED) when not defined. */
  getBucketSchema(name: string): Promise<{ [key: string]: Json }>;
  dropBucket(name: string): Promise<void>;
  buckets(): Promise<string[]>;
  stats(): Promise<{ [key: string]: Json }>;
  defineQuery(name: string, definition: { type: string; bucket: string; [key: string]: Json }): Promise<void>;
  undefineQuery(name: string): Promise<void>;
  listQueries(): Promise<Array<{ name: string; definition: { [key: string]: Json } }>>;
  runQuery(query: string, params?: { [key: string]: Json }): Promise<Json>;
  /** All operations land atomically or none does; one result per operation. */
  transaction(operations: TransactionOp[]): Promise<Json[]>;
  /** The current result first, then one after every change that alters it. */
  subscribe(query: string, params?: { [key: string]: Json }, handler?: (result: Json) => void | Promise<void>): Promise<LiveQuery>;
  subscribe(query: string, handler: (result: Json) => void | Promise<void>): Promise<LiveQuery>;
}

export declare class Bucket {
  readonly name: string;
  insert(data: { [field: string]: Json }): Promise<StoreRecord>;
  /** null when there is no such record. */
  get(key: string): Promise<StoreRecord | null>;
  /** ConflictError when expectedVersion is given and differs. */
  update(key: string, data: { [field: string]: Json }, options?: { expectedVersion?: number }): Promise<StoreRecord>;
  delete(key: string): Promise<void>;
  all(): Promise<StoreRecord[]>;
  where(filter: Filter): Promise<StoreRecord[]>;
  findOne(filter: Filter): Promise<StoreRecord | null>;
  count(filter?: Filter): Promise<number>;
  first(n: number): Promise<StoreRecord[]>;
  last(n: number): Promise<StoreRecord[]>;
  paginate(options?: { limit?: number; after?: string }): Promise<Page>;
  sum(field: string, filter?: Filter): Promise<number>;
  avg(field: string, filter?: Filter): Promise<number>;
  min(field: string, filter?: Filter): Promise<number | null>;
  max(field: string, filter?: Filter): Promise<number | null>;
  /** Resolves with how many records went. */
  clear(): Promise<number>;
}

/** A live query. Emits 'error' for an evaluation that failed (delivery goes on). */
export declare class LiveQuery extends EventEmitter implements AsyncIterable<Json> {
  readonly closed: boolean;
  close(): Promise<void>;
  [Symbol.asyncIterator](): AsyncIterator<Json>;
  [Symbol.asyncDispose](): Promise<void>;
}

// ---- rules engine and procedures (docs/RULES.md, docs/PROCEDURES.md)

export interface RulesEvent { id: string; topic: string; data: Json; timestamp: number; correlationId?: string; causationId?: string }
export interface Fact { key: string; value: Json; updatedAt: number; version: number }
export interface RulesStats { rulesCount: number; factsCount: number; eventsProcessed: number; rulesFired: number }
/** A rule: {id, when: {topic, data?, facts?}, then: action | action[], priority?, enabled?, ...}. */
export type Rule = { id: string; when: { [key: string]: Json }; then: Json; [field: string]: Json };

export declare class Rules {
  /** One request {type: 'rules.<op>', ...}; resolves with its result. */
  call(request: { type: string; [field: string]: Json }): Promise<Json>;
  emit(topic: string, data?: Json, correlationId?: string, causationId?: string): Promise<RulesEvent>;
  setFact(key: string, value: Json): Promise<Fact>;
  /** null when the fact is not set. */
  getFact(key: string): Promise<Json>;
  deleteFact(key: string): Promise<boolean>;
  /** `*` matches any characters. */
  queryFacts(pattern: string): Promise<Fact[]>;
  getAllFacts(): Promise<Fact[]>;
  /** InvalidArgumentError (storeCode VALIDATION_ERROR) when malformed. */
  registerRule(rule: Rule): Promise<Rule>;
  enableRule(id: string): Promise<Rule>;
  disableRule(id: string): Promise<Rule>;
  getRule(id: string): Promise<Rule | null>;
  getRules(): Promise<Rule[]>;
  updateRule(id: string, updates: { [field: string]: Json }): Promise<Rule>;
  validateRule(rule: Json): Promise<{ valid: boolean; errors: string[] }>;
  /** NotFoundError when there is no such rule. */
  unregisterRule(id: string): Promise<void>;
  stats(): Promise<RulesStats>;
  /**
   * The events appended from now on whose topic matches pattern ('orders.*',
   * 'orders.>'). With handler, handler(event, topic) for each; without, for
   * await or next(). InvalidArgumentError for a malformed pattern.
   */
  subscribe(pattern: string, handler?: (event: RulesEvent, topic: string) => void | Promise<void>): Promise<TopicSubscription>;
}

/** One event of a topic subscription, with the topic it was appended under. */
export interface TopicEvent { topic: string; event: RulesEvent }

/** A topic subscription. Emits 'error' when delivery to a handler failed (it is closed then). */
export declare class TopicSubscription extends EventEmitter implements AsyncIterable<TopicEvent> {
  readonly pattern: string;
  readonly closed: boolean;
  /** The next matching event; rejects with ClosedError once closed, also when close() ends the wait. */
  next(): Promise<TopicEvent>;
  /** Ends the subscription (a waiting next() rejects at once). Idempotent. */
  close(): Promise<void>;
  [Symbol.asyncIterator](): AsyncIterator<TopicEvent>;
  [Symbol.asyncDispose](): Promise<void>;
}

export declare class Procedures {
  /** One request {type: 'procedures.<op>', ...}; resolves with its result. */
  request(request: { type: string; [field: string]: Json }): Promise<Json>;
  register(procedure: { name: string; steps: Json[]; description?: string }): Promise<Json>;
  /** Runs the steps atomically; NotFoundError for an unknown procedure. */
  call(name: string, params?: { [key: string]: Json }): Promise<{ results: Json[] }>;
  get(name: string): Promise<Json | null>;
  list(): Promise<Json[]>;
  update(name: string, updates: { steps?: Json[]; description?: string }): Promise<Json>;
  unregister(name: string): Promise<void>;
}
