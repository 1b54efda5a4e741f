'use strict';
// flowmesh for Node.js: a Promise API over the native libflowmesh C ABI.
// Library path: $FLOWMESH_LIB, else ../../target/release/libflowmesh.so.

const { connect, Client, ConnState, version } = require('./lib/client');
const { Subscription } = require('./lib/subscription');
const { Store, Bucket, LiveQuery } = require('./lib/store');
const { Rules, Procedures, TopicSubscription } = require('./lib/rules');
const errors = require('./lib/errors');
const { OFFSET_NONE, SUBJECT_HEADER } = require('./lib/native');

/** Delivery tiers of `publish` (option `tier`). */
const Tier = Object.freeze({ MEMORY: 'memory', PERSISTENT: 'persistent', REPLICATED: 'replicated' });
const { EventSubscription, generateEventKey } = require('./lib/events'); // adds Client#publishEvent, #subscribeEvents

module.exports = {
  connect,
  version,
  Client,
  ConnState,
  Tier,
  OFFSET_NONE,
  SUBJECT_HEADER,
  Subscription,
  Store,
  Bucket,
  LiveQuery,
  Rules,
  Procedures,
  TopicSubscription,
  EventSubscription,
  generateEventKey,
  FlowMeshError: errors.FlowMeshError,
  InvalidArgumentError: errors.InvalidArgumentError,
  NotFoundError: errors.NotFoundError,
  TimeoutError: errors.TimeoutError,
  DisconnectedError: errors.DisconnectedError,
  UnauthorizedError: errors.UnauthorizedError,
  ClosedError: errors.ClosedError,
  AlreadyExistsError: errors.AlreadyExistsError,
  ConflictError: errors.ConflictError,
  TooLargeError: errors.TooLargeError,
  UnavailableError: errors.UnavailableError,
  InternalError: errors.InternalError,
};
