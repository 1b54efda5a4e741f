package flowmesh

/*
#include "shim.h"
*/
import "C"

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"
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

// TopicEvent is one event delivered to a topic subscription, with the topic
// it was appended under.
type TopicEvent struct {
	Topic string `json:"topic"`
	Event Event  `json:"event"`
}

// RulesSubscription is a topic subscription: the events appended after
// Subscribe whose topic matches its pattern, emitted by clients or by
// rules, in log order. They wait in the library until taken, with Next or
// from the channel of SubscribeChan. End it with Close; the client's Close
// ends it too.
type RulesSubscription struct {
	c    *Client
	ptr  *C.fm_rules_subscription // set before Subscribe returns, never changed
	take sync.Mutex               // one native next at a time, as the ABI asks
	ch   chan TopicEvent          // SubscribeChan only

	mu     sync.Mutex
	closed bool
	done   chan struct{} // closed by Close: releases a blocked channel send
	pumped chan struct{} // closed when SubscribeChan's goroutine has ended
	err    error
}

// Subscribe subscribes to the events appended from now on whose topic
// matches pattern: "*" matches one dot-separated segment ("orders.*"), ">"
// every remaining one ("orders.>"). A malformed pattern is
// ErrInvalidArgument. ctx bounds only the setup.
func (r *Rules) Subscribe(ctx context.Context, pattern string) (*RulesSubscription, error) {
	return r.subscribe(ctx, pattern, nil)
}

// SubscribeChan is Subscribe delivering into a channel of capacity
// WithBuffer (default 64; no other SubOption applies). While the channel is
// full the events wait in the library. The channel is closed when Close
// returns, or earlier when delivery failed (Err says why).
func (r *Rules) SubscribeChan(ctx context.Context, pattern string, opts ...SubOption) (*RulesSubscription, <-chan TopicEvent, error) {
	const op = "rules_subscribe"
	sc := buildSub(opts)
	if len(sc.options()) > 0 {
		return nil, nil, goError(op, ErrInvalidArgument, "only WithBuffer applies to rules subscriptions")
	}
	if sc.buffer < 0 {
		return nil, nil, goError(op, ErrInvalidArgument, "negative buffer")
	}
	ch := make(chan TopicEvent, sc.buffer)
	s, err := r.subscribe(ctx, pattern, ch)
	if err != nil {
		return nil, nil, err
	}
	return s, ch, nil
}

func (r *Rules) subscribe(ctx context.Context, pattern string, ch chan TopicEvent) (*RulesSubscription, error) {
	const op = "rules_subscribe"
	if err := checkString(op, "pattern", pattern); err != nil {
		return nil, err
	}
	s := &RulesSubscription{c: r.c, ch: ch, done: make(chan struct{})}
	err := r.c.do(ctx, op, func(p *C.fm_client) error {
		cp := C.CString(pattern)
		defer C.free(unsafe.Pointer(cp))
		var out *C.fm_rules_subscription
		if err := call(op, func() C.fm_status { return C.fm_rules_subscribe(p, cp, &out) }); err != nil {
			return storeErr(err)
		}
		return s.attach(op, out)
	})
	if err != nil {
		if ctx.Err() != nil {
			_ = s.Close() // abandoned: a setup that finishes later is undone
		}
		return nil, err
	}
	return s, nil
}

// attach keeps the native subscription, unless Close (by an abandoned
// caller) or the client's Close came first.
func (s *RulesSubscription) attach(op string, ptr *C.fm_rules_subscription) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		C.fm_rules_unsubscribe(ptr)
		return goError(op, ErrClosed, "subscription closed while subscribing")
	}
	if !s.c.addRulesSub(s) {
		C.fm_rules_unsubscribe(ptr)
		s.closed = true
		close(s.done)
		return goError(op, ErrClosed, "client closed while subscribing")
	}
	s.ptr = ptr
	if s.ch != nil {
		s.pumped = make(chan struct{})
		go s.pump()
	}
	return nil
}

// Next waits for the next matching event. It returns ctx.Err() when ctx
// ends first (the event then waits for the next call), and ErrClosed once
// the subscription or its client is closed, also when Close is called
// during the wait. A SubscribeChan subscription delivers only into its
// channel, so Next is ErrInvalidArgument there.
func (s *RulesSubscription) Next(ctx context.Context) (TopicEvent, error) {
	if s.ch != nil {
		return TopicEvent{}, goError("rules_subscription_next", ErrInvalidArgument, "this subscription delivers into its channel")
	}
	return s.next(ctx)
}

func (s *RulesSubscription) next(ctx context.Context) (TopicEvent, error) {
	const op = "rules_subscription_next"
	s.take.Lock()
	defer s.take.Unlock()
	for {
		if err := ctx.Err(); err != nil {
			return TopicEvent{}, err
		}
		if s.isClosed() {
			return TopicEvent{}, goError(op, ErrClosed, "rules subscription is closed")
		}
		// Waits are sliced so that ctx is noticed promptly; Close wakes a
		// waiting slice at once.
		d, over := sliceWait(ctx, time.Now().Add(waitSlice))
		if over {
			return TopicEvent{}, context.DeadlineExceeded // ctx's timer may lag its deadline
		}
		var out *C.char
		err := call(op, func() C.fm_status { return C.fm_rules_subscription_next(s.ptr, millis(d), &out) })
		if errors.Is(err, ErrClosed) {
			return TopicEvent{}, goError(op, ErrClosed, "rules subscription is closed")
		}
		if err != nil {
			return TopicEvent{}, storeErr(err)
		}
		if out == nil {
			continue // nothing within this slice
		}
		text := C.GoString(out)
		C.fm_string_free(out)
		var ev TopicEvent
		if err := json.Unmarshal([]byte(text), &ev); err != nil {
			return TopicEvent{}, goError(op, ErrInternal, "event: "+err.Error())
		}
		return ev, nil
	}
}

// pump moves events into the channel of a SubscribeChan subscription.
func (s *RulesSubscription) pump() {
	defer close(s.pumped)
	defer close(s.ch)
	for {
		ev, err := s.next(context.Background())
		if err != nil {
			s.mu.Lock()
			if !s.closed {
				s.err = err // delivery failed on its own, not by Close
			}
			s.mu.Unlock()
			_ = s.end()
			return
		}
		select {
		case s.ch <- ev: // waits while the channel is full: the rest wait in the library
		case <-s.done:
			return
		}
	}
}

func (s *RulesSubscription) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Err returns the error that ended a SubscribeChan delivery before Close
// (such as ErrDisconnected); check it once the channel is closed. It is nil
// while delivery runs and after Close.
func (s *RulesSubscription) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close ends the subscription and frees it: a Next waiting on another
// goroutine returns ErrClosed at once, and so does every later Next. The
// channel of SubscribeChan is closed when Close returns. Idempotent.
func (s *RulesSubscription) Close() error {
	err := s.end()
	s.mu.Lock()
	pumped := s.pumped
	s.mu.Unlock()
	if pumped != nil {
		<-pumped
	}
	return err
}

// end unsubscribes once; it does not wait for the channel goroutine, which
// calls it too.
func (s *RulesSubscription) end() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	ptr := s.ptr
	s.mu.Unlock()
	if ptr == nil {
		return nil // setup still running: attach undoes it
	}
	// Wakes a next waiting on another thread with FM_ERR_CLOSED.
	err := call("rules_unsubscribe", func() C.fm_status { return C.fm_rules_unsubscribe(ptr) })
	s.c.removeRulesSub(s)
	return err
}

// addRulesSub registers s so that the client's Close ends it; false once
// Close has begun.
func (c *Client) addRulesSub(s *RulesSubscription) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	if c.rulesSubs == nil {
		c.rulesSubs = make(map[*RulesSubscription]struct{})
	}
	c.rulesSubs[s] = struct{}{}
	return true
}

func (c *Client) removeRulesSub(s *RulesSubscription) {
	c.mu.Lock()
	delete(c.rulesSubs, s)
	c.mu.Unlock()
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
