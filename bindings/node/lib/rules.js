'use strict';
// The rules engine (docs/RULES.md) and procedures (docs/PROCEDURES.md) over
// fm_rules_call and fm_procedures_call: one JSON request per call, errors
// with the engine's code in `storeCode` (e.g. 'VALIDATION_ERROR'). The
// client's first rules or procedures call starts its rules evaluator.

const { storeError } = require('./store');

async function jsonCall(client, op, request) {
  const text = JSON.stringify(request);
  if (typeof text !== 'string') throw new TypeError('a request is a JSON object');
  try {
    return JSON.parse(await client._call(op, [text]));
  } catch (err) {
    throw storeError(err);
  }
}

class Rules {
  constructor(client) { this._client = client; }

  /** Runs one request {type: 'rules.<op>', ...}; resolves with its result. */
  async call(request) { return await jsonCall(this._client, 'rulesCall', request); }

  async emit(topic, data = {}, correlationId, causationId) {
    const req = { type: 'rules.emit', topic, data };
    if (correlationId !== undefined) req.correlationId = correlationId;
    if (causationId !== undefined) req.causationId = causationId;
    return await this.call(req);
  }

  async setFact(key, value) { return await this.call({ type: 'rules.setFact', key, value }); }
  async getFact(key) { return await this.call({ type: 'rules.getFact', key }); }
  async deleteFact(key) { return await this.call({ type: 'rules.deleteFact', key }); }
  async queryFacts(pattern) { return await this.call({ type: 'rules.queryFacts', pattern }); }
  async getAllFacts() { return await this.call({ type: 'rules.getAllFacts' }); }

  async registerRule(rule) { return await this.call({ type: 'rules.registerRule', rule }); }
  async enableRule(id) { return await this.call({ type: 'rules.enableRule', id }); }
  async disableRule(id) { return await this.call({ type: 'rules.disableRule', id }); }
  async getRule(id) { return await this.call({ type: 'rules.getRule', id }); }
  async getRules() { return await this.call({ type: 'rules.getRules' }); }
  async updateRule(id, updates) { return await this.call({ type: 'rules.updateRule', id, updates }); }
  async validateRule(rule) { return await this.call({ type: 'rules.validateRule', rule }); }
  async unregisterRule(id) { await this.call({ type: 'rules.unregisterRule', id }); }
  async stats() { return await this.call({ type: 'rules.stats' }); }
}

class Procedures {
  constructor(client) { this._client = client; }

  /** Runs one request {type: 'procedures.<op>', ...}; resolves with its result. */
  async request(request) { return await jsonCall(this._client, 'proceduresCall', request); }

  async register(procedure) { return await this.request({ type: 'procedures.register', procedure }); }
  /** Runs the steps atomically; resolves with {results: [...]}. */
  async call(name, params = {}) { return await this.request({ type: 'procedures.call', name, params }); }
  async get(name) { return await this.request({ type: 'procedures.get', name }); }
  async list() { return await this.request({ type: 'procedures.list' }); }
  async update(name, updates) { return await this.request({ type: 'procedures.update', name, updates }); }
  async unregister(name) { await this.request({ type: 'procedures.unregister', name }); }
}

module.exports = { Rules, Procedures };
