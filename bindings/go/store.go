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
	"sync/atomic"
	"unsafe"
)

// The document store (docs/STORE.md): buckets of JSON records with
// generated ids and metadata, filters, pagination, aggregates, schemas,
// named live queries and atomic transactions, over fm_store_call.

// Record is one stored record: its fields plus id, _version, _createdAt and
// _updatedAt.
type Record map[string]any

// Filter selects records: {"role": "admin"}, {"age": {"$gt": 18}}, ...
// (docs/STORE.md lists the operators). nil matches every record.
type Filter map[string]any

// StoreError is a failed store request. Code is the store's code
// ("VALIDATION_ERROR", "CONFLICT", "BUCKET_NOT_DEFINED", ...), Details the
// failed fields of a validation error. It unwraps to the matching sentinel
// (ErrInvalidArgument, ErrConflict, ErrNotFound, ...).
type StoreError struct {
	Code    string
	Message string
	Details []FieldError
	err     *Error
}

// FieldError is one failed field of a VALIDATION_ERROR.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

func (e *StoreError) Error() string {
	return "flowmesh: " + e.err.Op + ": " + e.Code + ": " + e.Message
}

// Unwrap returns the status error (which unwraps to its sentinel).
func (e *StoreError) Unwrap() error { return e.err }

// storeErr turns a failed call's error, whose detail is the store's JSON
// error, into a StoreError.
func storeErr(err error) error {
	var fe *Error
	if !errors.As(err, &fe) {
		return err
	}
	var body struct {
		Code    string       `json:"code"`
		Message string       `json:"message"`
		Details []FieldError `json:"details"`
	}
	if json.Unmarshal([]byte(fe.Detail), &body) != nil || body.Code == "" {
		return err
	}
	return &StoreError{Code: body.Code, Message: body.Message, Details: body.Details, err: fe}
}

// Store runs store requests on the client's tenant and namespace.
type Store struct{ c *Client }

// Store returns the client's document store.
func (c *Client) Store() *Store { return &Store{c: c} }

// Call runs one request {"type": "store.<op>", ...} and returns its result
// as JSON; the typed methods below are built on it.
func (s *Store) Call(ctx context.Context, req map[string]any) (json.RawMessage, error) {
	const op = "store_call"
	body, err := json.Marshal(req)
	if err != nil {
		return nil, goError(op, ErrInvalidArgument, "request: "+err.Error())
	}
	var out json.RawMessage
	err = s.c.do(ctx, op, func(p *C.fm_client) error {
		cr := C.CString(string(body))
		defer C.free(unsafe.Pointer(cr))
		var resp *C.char
		err := call(op, func() C.fm_status { return C.fm_store_call(p, cr, &resp) })
		if err != nil {
			return storeErr(err)
		}
		defer C.fm_string_free(resp)
		out = json.RawMessage(C.GoString(resp))
		return nil
	})
	return out, err
}

// call runs req and decodes its result into v (nil: ignore it).
func (s *Store) call(ctx context.Context, req map[string]any, v any) error {
	raw, err := s.Call(ctx, req)
	if err != nil || v == nil {
		return err
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return goError("store_call", ErrInternal, "result: "+err.Error())
	}
	return nil
}

// Bucket returns the API of one record bucket (created on first insert).
func (s *Store) Bucket(name string) *Bucket { return &Bucket{s: s, name: name} }

// DefineBucket defines a bucket: {"key"?, "schema"?, "indexes"?}
// (ErrAlreadyExists when defined).
func (s *Store) DefineBucket(ctx context.Context, name string, config map[string]any) error {
	if config == nil {
		config = map[string]any{} // no schema, key "id"
	}
	return s.call(ctx, map[string]any{"type": "store.defineBucket", "name": name, "config": config}, nil)
}

// UpdateBucket adds or replaces schema fields and adds indexes.
func (s *Store) UpdateBucket(ctx context.Context, name string, updates map[string]any) error {
	return s.call(ctx, map[string]any{"type": "store.updateBucket", "name": name, "updates": updates}, nil)
}

// BucketSchema returns a bucket's definition (ErrNotFound, code
// BUCKET_NOT_DEFINED, when there is none).
func (s *Store) BucketSchema(ctx context.Context, name string) (map[string]any, error) {
	var def map[string]any
	err := s.call(ctx, map[string]any{"type": "store.getBucketSchema", "name": name}, &def)
	return def, err
}

// DropBucket removes a bucket's definition and every record.
func (s *Store) DropBucket(ctx context.Context, name string) error {
	return s.call(ctx, map[string]any{"type": "store.dropBucket", "name": name}, nil)
}

// Buckets returns the names of the defined buckets.
func (s *Store) Buckets(ctx context.Context) ([]string, error) {
	var names []string
	err := s.call(ctx, map[string]any{"type": "store.buckets"}, &names)
	return names, err
}

// DefineQuery stores a named query {"type": "where", "bucket": ..., "filter": ...}
// (redefining replaces it).
func (s *Store) DefineQuery(ctx context.Context, name string, definition map[string]any) error {
	return s.call(ctx, map[string]any{"type": "store.defineQuery", "name": name, "definition": definition}, nil)
}

// UndefineQuery removes a named query.
func (s *Store) UndefineQuery(ctx context.Context, name string) error {
	return s.call(ctx, map[string]any{"type": "store.undefineQuery", "name": name}, nil)
}

// QueryInfo is one named query.
type QueryInfo struct {
	Name       string         `json:"name"`
	Definition map[string]any `json:"definition"`
}

// ListQueries returns the named queries, by name.
func (s *Store) ListQueries(ctx context.Context) ([]QueryInfo, error) {
	var qs []QueryInfo
	err := s.call(ctx, map[string]any{"type": "store.listQueries"}, &qs)
	return qs, err
}

// RunQuery runs a named query once.
func (s *Store) RunQuery(ctx context.Context, name string, params map[string]any) (json.RawMessage, error) {
	return s.Call(ctx, map[string]any{"type": "store.runQuery", "query": name, "params": params})
}

// TxOp is one operation of a transaction: {"op": "get"|"insert"|"update"|
// "delete"|"where"|"findOne"|"count", "bucket": ..., ...}.
type TxOp map[string]any

// Transaction runs ops atomically (all land at once or none does) and
// returns one result per op, in order.
func (s *Store) Transaction(ctx context.Context, ops []TxOp) ([]json.RawMessage, error) {
	var out struct {
		Results []json.RawMessage `json:"results"`
	}
	err := s.call(ctx, map[string]any{"type": "store.transaction", "operations": ops}, &out)
	return out.Results, err
}

// Bucket is one record bucket.
type Bucket struct {
	s    *Store
	name string
}

func (b *Bucket) req(ty string, kv ...any) map[string]any {
	m := map[string]any{"type": "store." + ty, "bucket": b.name}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	return m
}

// Insert stores a record (its id from data["id"] or generated) and returns
// it with its metadata.
func (b *Bucket) Insert(ctx context.Context, data map[string]any) (Record, error) {
	var r Record
	err := b.s.call(ctx, b.req("insert", "data", data), &r)
	return r, err
}

// Get returns the record, or nil when there is none.
func (b *Bucket) Get(ctx context.Context, id string) (Record, error) {
	var r Record
	err := b.s.call(ctx, b.req("get", "key", id), &r)
	return r, err
}

// Update merges data into the record. With expectedVersion > 0 it fails
// with ErrConflict unless the record is at that _version.
func (b *Bucket) Update(ctx context.Context, id string, data map[string]any, expectedVersion uint64) (Record, error) {
	req := b.req("update", "key", id, "data", data)
	if expectedVersion > 0 {
		req["expectedVersion"] = expectedVersion
	}
	var r Record
	err := b.s.call(ctx, req, &r)
	return r, err
}

// Delete removes a record (fine when it is not there).
func (b *Bucket) Delete(ctx context.Context, id string) error {
	return b.s.call(ctx, b.req("delete", "key", id), nil)
}

// All returns every record, in id order.
func (b *Bucket) All(ctx context.Context) ([]Record, error) {
	var rs []Record
	err := b.s.call(ctx, b.req("all"), &rs)
	return rs, err
}

// Where returns the records matching filter, in id order.
func (b *Bucket) Where(ctx context.Context, filter Filter) ([]Record, error) {
	var rs []Record
	err := b.s.call(ctx, b.req("where", "filter", filter), &rs)
	return rs, err
}

// FindOne returns the first record matching filter, or nil.
func (b *Bucket) FindOne(ctx context.Context, filter Filter) (Record, error) {
	var r Record
	err := b.s.call(ctx, b.req("findOne", "filter", filter), &r)
	return r, err
}

// Count returns how many records match filter (nil: all).
func (b *Bucket) Count(ctx context.Context, filter Filter) (uint64, error) {
	var n uint64
	err := b.s.call(ctx, b.req("count", "filter", filter), &n)
	return n, err
}

// First returns the first n records in id order.
func (b *Bucket) First(ctx context.Context, n int) ([]Record, error) {
	var rs []Record
	err := b.s.call(ctx, b.req("first", "n", n), &rs)
	return rs, err
}

// Last returns the last n records in id order.
func (b *Bucket) Last(ctx context.Context, n int) ([]Record, error) {
	var rs []Record
	err := b.s.call(ctx, b.req("last", "n", n), &rs)
	return rs, err
}

// Page is one page of Paginate.
type Page struct {
	Records    []Record `json:"records"`
	HasMore    bool     `json:"hasMore"`
	NextCursor *string  `json:"nextCursor"`
}

// Paginate returns up to limit records after the cursor after ("" = from
// the start); pass the page's NextCursor for the next one.
func (b *Bucket) Paginate(ctx context.Context, limit int, after string) (Page, error) {
	req := b.req("paginate", "limit", limit)
	if after != "" {
		req["after"] = after
	}
	var p Page
	err := b.s.call(ctx, req, &p)
	return p, err
}

// Sum of a numeric field over the records matching filter (nil: all).
func (b *Bucket) Sum(ctx context.Context, field string, filter Filter) (float64, error) {
	var v float64
	err := b.s.call(ctx, b.req("sum", "field", field, "filter", filter), &v)
	return v, err
}

// Avg of a numeric field (0 for no records).
func (b *Bucket) Avg(ctx context.Context, field string, filter Filter) (float64, error) {
	var v float64
	err := b.s.call(ctx, b.req("avg", "field", field, "filter", filter), &v)
	return v, err
}

// Min of a numeric field; nil when no record has one.
func (b *Bucket) Min(ctx context.Context, field string, filter Filter) (*float64, error) {
	var v *float64
	err := b.s.call(ctx, b.req("min", "field", field, "filter", filter), &v)
	return v, err
}

// Max of a numeric field; nil when no record has one.
func (b *Bucket) Max(ctx context.Context, field string, filter Filter) (*float64, error) {
	var v *float64
	err := b.s.call(ctx, b.req("max", "field", field, "filter", filter), &v)
	return v, err
}

// Clear removes every record and returns how many went.
func (b *Bucket) Clear(ctx context.Context) (uint64, error) {
	var n uint64
	err := b.s.call(ctx, b.req("clear"), &n)
	return n, err
}

// LiveQuery is a subscription to a named query.
type LiveQuery struct {
	sub     *C.fm_store_subscription
	done    chan struct{}
	once    sync.Once
	stopped atomic.Bool
}

// storePollMS bounds one wait of the delivery goroutine, so it notices
// Unsubscribe and a closed client promptly.
const storePollMS = 200

// Subscribe subscribes to the named query with params: handler gets the
// current result at once, then a fresh one after every change that alters
// it, in order, on one goroutine. An evaluation error (a broker
// unreachable) is reported to onError (may be nil) and delivery goes on.
func (s *Store) Subscribe(ctx context.Context, query string, params map[string]any,
	handler func(json.RawMessage), onError func(error)) (*LiveQuery, error) {
	const op = "store_subscribe"
	if handler == nil {
		return nil, goError(op, ErrInvalidArgument, "nil handler")
	}
	if err := checkString(op, "query", query); err != nil {
		return nil, err
	}
	body, err := json.Marshal(params)
	if err != nil {
		return nil, goError(op, ErrInvalidArgument, "params: "+err.Error())
	}
	lq := &LiveQuery{done: make(chan struct{})}
	err = s.c.do(ctx, op, func(p *C.fm_client) error {
		cq, cp := C.CString(query), C.CString(string(body))
		defer C.free(unsafe.Pointer(cq))
		defer C.free(unsafe.Pointer(cp))
		var sub *C.fm_store_subscription
		err := call(op, func() C.fm_status { return C.fm_store_subscribe(p, cq, cp, &sub) })
		lq.sub = sub
		return storeErr(err)
	})
	if err != nil {
		return nil, err
	}
	go lq.deliver(handler, onError)
	return lq, nil
}

func (lq *LiveQuery) deliver(handler func(json.RawMessage), onError func(error)) {
	const op = "store_subscription_next"
	defer close(lq.done)
	for {
		var r *C.char
		err := call(op, func() C.fm_status { return C.fm_store_subscription_next(lq.sub, storePollMS, &r) })
		switch {
		case err == nil && r == nil:
			continue // nothing new within the poll
		case err == nil:
			result := json.RawMessage(C.GoString(r))
			C.fm_string_free(r)
			if !lq.stopped.Load() {
				handler(result)
			}
		case errors.Is(err, ErrClosed):
			lq.free() // the client closed, or Unsubscribe
			return
		default:
			if onError != nil {
				onError(storeErr(err))
			}
		}
	}
}

func (lq *LiveQuery) free() { lq.once.Do(func() { C.fm_store_unsubscribe(lq.sub) }) }

// Unsubscribe stops delivery (a handler call running at that moment
// finishes; Done is closed after it). Idempotent and safe inside the handler.
func (lq *LiveQuery) Unsubscribe() {
	lq.stopped.Store(true)
	lq.free()
}

// Done is closed once delivery ended (Unsubscribe, or the client closed).
func (lq *LiveQuery) Done() <-chan struct{} { return lq.done }
