'use strict';
// FlowMeshError and one subclass per native status. `code` is always the name
// the library gives (fm_status_str), so it never drifts from the C header.

class FlowMeshError extends Error {
  constructor(message, code, status) {
    super(message || code || 'flowmesh error');
    this.name = this.constructor.name;
    this.code = code;
    this.status = status;
  }
}

// Status name suffix -> class. The numbers are looked up from the library.
const CLASSES = {};
function define(suffix, name) {
  const cls = { [name]: class extends FlowMeshError {} }[name];
  CLASSES[`FM_ERR_${suffix}`] = cls;
  return cls;
}

const InvalidArgumentError = define('INVALID_ARGUMENT', 'InvalidArgumentError');
const NotFoundError = define('NOT_FOUND', 'NotFoundError');
const TimeoutError = define('TIMEOUT', 'TimeoutError');
const DisconnectedError = define('DISCONNECTED', 'DisconnectedError');
const UnauthorizedError = define('UNAUTHORIZED', 'UnauthorizedError');
const ClosedError = define('CLOSED', 'ClosedError');
const AlreadyExistsError = define('ALREADY_EXISTS', 'AlreadyExistsError');
const ConflictError = define('CONFLICT', 'ConflictError');
const TooLargeError = define('TOO_LARGE', 'TooLargeError');
const UnavailableError = define('UNAVAILABLE', 'UnavailableError');
const InternalError = define('INTERNAL', 'InternalError');

// Set by the client once the library is loaded (main thread only).
let statusName = (status) => `FM_STATUS_${status}`;
let statusByName = () => undefined;
function bindStatusNames(nameOf, codeOf) {
  statusName = nameOf;
  statusByName = codeOf;
}

// Builds the error for a failed native call. `message` is the fm_last_error()
// text read on the thread that made the call; fall back to the code name.
function fromStatus(status, message) {
  const code = statusName(status);
  const Cls = CLASSES[code] || FlowMeshError;
  return new Cls(message || code, code, status);
}

// An error the binding raises itself with a native code name (e.g. a call on a
// closed client), still carrying the library's status number.
function byName(code, message) {
  const Cls = CLASSES[code] || FlowMeshError;
  return new Cls(message, code, statusByName(code));
}

module.exports = {
  FlowMeshError,
  InvalidArgumentError,
  NotFoundError,
  TimeoutError,
  DisconnectedError,
  UnauthorizedError,
  ClosedError,
  AlreadyExistsError,
  ConflictError,
  TooLargeError,
  UnavailableError,
  InternalError,
  fromStatus,
  byName,
  bindStatusNames,
};
