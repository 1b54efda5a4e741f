package flowmesh

/*
#include "shim.h"
*/
import "C"

import (
	"context"
	"encoding/json"
	"unsafe"
)

// The rules engine (docs/RULES.md) and procedures (docs/PROCEDURES.md)
// over fm_rules_call and fm_procedures_call: JSON requests, errors as
// *StoreError with the engine's code. The client's first rules or
// procedures call starts its rules evaluator; Close stops it.

// Rules runs rules requests on the client's tenant and namespace.
type Rules struct{ c *Client }

// Rules returns the client's rules engine.
func (c *Client) Rules() *Rules { return &Rules{c: c} }

// Procedures runs procedures requests on the client's tenant and namespace.
type Procedures struct{ c *Client }

// Procedures returns the client's procedures.
func (c *Client) Procedures() *Procedures { return &Procedures{c: c} }

// jsonCall sends one JSON request through fn and returns the result.
func (c *Client) jsonCall(ctx context.Context, op string, req map[string]any,
	fn func(*C.fm_client, *C.char, **C.char) C.fm_status) (json.RawMessage, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, goError(op, ErrInvalidArgument, "request: "+err.Error())
	}
	var out json.RawMessage
	err = c.do(ctx, op, func(p *C.fm_client) error {
		cr := C.CString(string(body))
		defer C.free(unsafe.Pointer(cr))
		var resp *C.char
		if err := call(op, func() C.fm_status { return fn(p, cr, &resp) }); err != nil {
			return storeErr(err)
		}
		defer C.fm_string_free(resp)
		out = json.RawMessage(C.GoString(resp))
		return nil
	})
	return out, err
}

func decode(op string, raw json.RawMessage, err error, v any) error {
	if err != nil || v == nil {
		return err
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return goError(op, ErrInternal, "result: "+err.Error())
	}
	return nil
}

// Call runs one request {"type": "rules.<op>", ...} and returns its result as JSON.
func (r *Rules) Call(ctx context.Context, req map[string]any) (json.RawMessage, error) {
	return r.c.jsonCall(ctx, "rules_call", req, func(p *C.fm_client, q *C.char, out **C.char) C.fm_status {
		return C.fm_rules_call(p, q, out)
	})
}

func (r *Rules) call(ctx context.Context, req map[string]any, v any) error {
	raw, err := r.Call(ctx, req)
	return decode("rules_call", raw, err, v)
}

// Event is an event of the log.
type Event struct {
	ID            string         `json:"id"`
	Topic         string         `json:"topic"`
	Data          map[string]any `json:"data"`
	Timestamp     int64          `json:"timestamp"`
	CorrelationID string         `json:"correlationId,omitempty"`
	CausationID   string         `json:"causationId,omitempty"`
}

// Fact is one fact as queries return it.
type Fact struct {
	Key       string `json:"key"`
	Value     any    `json:"value"`
	UpdatedAt int64  `json:"updatedAt"`
	Version   uint64 `json:"version"`
}

// RulesStats counts rules, facts and the work of every evaluator.
type RulesStats struct {
	RulesCount      uint64 `json:"rulesCount"`
	FactsCount      uint64 `json:"factsCount"`
	EventsProcessed uint64 `json:"eventsProcessed"`
	RulesFired      uint64 `json:"rulesFired"`
}

// Emit appends an event; correlationID and causationID may be empty.
func (r *Rules) Emit(ctx context.Context, topic string, data map[string]any, correlationID, causationID string) (Event, error) {
	if data == nil {
		data = map[string]any{}
	}
	req := map[string]any{"type": "rules.emit", "topic": topic, "data": data}
	if correlationID != "" {
		req["correlationId"] = correlationID
	}
	if causationID != "" {
		req["causationId"] = causationID
	}
	var e Event
	return e, r.call(ctx, req, &e)
}

// SetFact sets a fact.
func (r *Rules) SetFact(ctx context.Context, key string, value any) (Fact, error) {
	var f Fact
	return f, r.call(ctx, map[string]any{"type": "rules.setFact", "key": key, "value": value}, &f)
}

// GetFact returns a fact's value, nil when it is not set.
func (r *Rules) GetFact(ctx context.Context, key string) (any, error) {
	var v any
	return v, r.call(ctx, map[string]any{"type": "rules.getFact", "key": key}, &v)
}

// DeleteFact removes a fact; it reports whether it was set.
func (r *Rules) DeleteFact(ctx context.Context, key string) (bool, error) {
	var v bool
	return v, r.call(ctx, map[string]any{"type": "rules.deleteFact", "key": key}, &v)
}

// QueryFacts returns the facts whose key matches pattern (* = any characters).
func (r *Rules) QueryFacts(ctx context.Context, pattern string) ([]Fact, error) {
	var fs []Fact
	return fs, r.call(ctx, map[string]any{"type": "rules.queryFacts", "pattern": pattern}, &fs)
}

// RegisterRule stores a rule (ErrInvalidArgument with code VALIDATION_ERROR
// when malformed, ErrAlreadyExists when the id is taken).
func (r *Rules) RegisterRule(ctx context.Context, rule map[string]any) (map[string]any, error) {
	var v map[string]any
	return v, r.call(ctx, map[string]any{"type": "rules.registerRule", "rule": rule}, &v)
}

// ValidateRule reports every reason a rule is malformed.
func (r *Rules) ValidateRule(ctx context.Context, rule map[string]any) (valid bool, errs []string, err error) {
	var v struct {
		Valid  bool     `json:"valid"`
		Errors []string `json:"errors"`
	}
	err = r.call(ctx, map[string]any{"type": "rules.validateRule", "rule": rule}, &v)
	return v.Valid, v.Errors, err
}

// GetRule returns a rule, nil when there is none.
func (r *Rules) GetRule(ctx context.Context, id string) (map[string]any, error) {
	var v map[string]any
	return v, r.call(ctx, map[string]any{"type": "rules.getRule", "id": id}, &v)
}

// GetRules returns every rule by id.
func (r *Rules) GetRules(ctx context.Context) ([]map[string]any, error) {
	var v []map[string]any
	return v, r.call(ctx, map[string]any{"type": "rules.getRules"}, &v)
}

// UpdateRule merges updates into a rule (ErrNotFound when there is none).
func (r *Rules) UpdateRule(ctx context.Context, id string, updates map[string]any) (map[string]any, error) {
	var v map[string]any
	return v, r.call(ctx, map[string]any{"type": "rules.updateRule", "id": id, "updates": updates}, &v)
}

// EnableRule and DisableRule switch a rule on and off.
func (r *Rules) EnableRule(ctx context.Context, id string) error {
	return r.call(ctx, map[string]any{"type": "rules.enableRule", "id": id}, nil)
}

func (r *Rules) DisableRule(ctx context.Context, id string) error {
	return r.call(ctx, map[string]any{"type": "rules.disableRule", "id": id}, nil)
}

// UnregisterRule removes a rule (ErrNotFound when there is none).
func (r *Rules) UnregisterRule(ctx context.Context, id string) error {
	return r.call(ctx, map[string]any{"type": "rules.unregisterRule", "id": id}, nil)
}

// Stats counts rules, facts and evaluated events of the tenant.
func (r *Rules) Stats(ctx context.Context) (RulesStats, error) {
	var s RulesStats
	return s, r.call(ctx, map[string]any{"type": "rules.stats"}, &s)
}

// Request runs one request {"type": "procedures.<op>", ...} and returns its result as JSON.
func (p *Procedures) Request(ctx context.Context, req map[string]any) (json.RawMessage, error) {
	return p.c.jsonCall(ctx, "procedures_call", req, func(h *C.fm_client, q *C.char, out **C.char) C.fm_status {
		return C.fm_procedures_call(h, q, out)
	})
}

func (p *Procedures) call(ctx context.Context, req map[string]any, v any) error {
	raw, err := p.Request(ctx, req)
	return decode("procedures_call", raw, err, v)
}

// Register stores a procedure {"name", "steps": [...]}.
func (p *Procedures) Register(ctx context.Context, procedure map[string]any) error {
	return p.call(ctx, map[string]any{"type": "procedures.register", "procedure": procedure}, nil)
}

// Call runs a procedure atomically and returns each step's result
// (ErrNotFound for an unknown procedure).
func (p *Procedures) Call(ctx context.Context, name string, params map[string]any) ([]json.RawMessage, error) {
	if params == nil {
		params = map[string]any{}
	}
	var v struct {
		Results []json.RawMessage `json:"results"`
	}
	err := p.call(ctx, map[string]any{"type": "procedures.call", "name": name, "params": params}, &v)
	return v.Results, err
}

// Get returns a procedure, nil when there is none.
func (p *Procedures) Get(ctx context.Context, name string) (map[string]any, error) {
	var v map[string]any
	return v, p.call(ctx, map[string]any{"type": "procedures.get", "name": name}, &v)
}

// List returns every procedure by name.
func (p *Procedures) List(ctx context.Context) ([]map[string]any, error) {
	var v []map[string]any
	return v, p.call(ctx, map[string]any{"type": "procedures.list"}, &v)
}

// Update replaces a procedure's steps or description.
func (p *Procedures) Update(ctx context.Context, name string, updates map[string]any) error {
	return p.call(ctx, map[string]any{"type": "procedures.update", "name": name, "updates": updates}, nil)
}

// Unregister removes a procedure (ErrNotFound when there is none).
func (p *Procedures) Unregister(ctx context.Context, name string) error {
	return p.call(ctx, map[string]any{"type": "procedures.unregister", "name": name}, nil)
}
