package flowmesh

// Events to named recipients (docs/EVENTS.md): an application (connect
// option WithAppID) publishes named events to other applications; each
// recipient acks, defers, discards, replays, pauses and resumes delivery.
// Payloads are sealed end to end when every recipient has a public key
// (WithAppSecretKey, GenerateEventKey).

/*
#include "shim.h"
*/
import "C"

import (
	"context"
	"runtime/cgo"
	"strconv"
	"sync"
	"time"
	"unsafe"
)

// WithAppID sets this application's id for events (recipients are app ids).
func WithAppID(id string) Option { return WithOption("app_id", id) }

// WithAppSecretKey sets this application's X25519 secret key (base64, see
// GenerateEventKey): events to it can then be sealed end to end.
func WithAppSecretKey(secret string) Option { return WithOption("app_secret_key", secret) }

// AppEvent is an event delivered to this application.
type AppEvent struct {
	ID            uint64 // unique within the tenant/namespace
	Name          string
	Sender        string // the publisher's app id
	Timestamp     time.Time
	Payload       []byte // plaintext (opened if it was sealed)
	Metadata      string // JSON object, "" if none
	DeliveryCount uint32 // 1 on first delivery
	Encrypted     bool
	ReplyTo       uint64 // the event this one answers, when IsReply
	IsReply       bool
}

// GenerateEventKey makes a new X25519 key pair, both base64: pass secret
// to WithAppSecretKey; the library registers the public key itself.
func GenerateEventKey() (secret, public string, err error) {
	const op = "event_keygen"
	var s, p *C.fm_buf
	if err := call(op, func() C.fm_status { return C.fm_event_keygen(&s, &p) }); err != nil {
		return "", "", err
	}
	defer C.fm_buf_free(s)
	defer C.fm_buf_free(p)
	return bufString(s), bufString(p), nil
}

func bufString(b *C.fm_buf) string {
	var n C.size_t
	d := C.fm_buf_data(b, &n)
	return string(C.GoBytes(unsafe.Pointer(d), C.int(n)))
}

func goEvent(ev *C.fm_event) *AppEvent {
	var n C.size_t
	p := C.fm_event_payload(ev, &n)
	out := &AppEvent{
		ID:            uint64(C.fm_event_id(ev)),
		Name:          C.GoString(C.fm_event_name(ev)),
		Sender:        C.GoString(C.fm_event_sender(ev)),
		Timestamp:     time.UnixMilli(int64(C.fm_event_timestamp_ms(ev))),
		Payload:       C.GoBytes(unsafe.Pointer(p), C.int(n)),
		DeliveryCount: uint32(C.fm_event_delivery_count(ev)),
		Encrypted:     bool(C.fm_event_encrypted(ev)),
	}
	if m := C.fm_event_metadata(ev); m != nil {
		out.Metadata = C.GoString(m)
	}
	var has C.bool
	out.ReplyTo = uint64(C.fm_event_reply_to(ev, &has))
	out.IsReply = bool(has)
	return out
}

// PublishEvent sends payload as event name to the recipients' app ids and
// returns the event id. metadataJSON is "" or a JSON object (never
// encrypted). Needs WithAppID.
func (c *Client) PublishEvent(ctx context.Context, name string, recipients []string, payload []byte, metadataJSON string) (uint64, error) {
	const op = "event_publish"
	if err := checkString(op, "event name", name+metadataJSON); err != nil {
		return 0, err
	}
	for _, r := range recipients {
		if err := checkString(op, "recipient", r); err != nil {
			return 0, err
		}
	}
	cname := C.CString(name)
	var cmeta *C.char
	if metadataJSON != "" {
		cmeta = C.CString(metadataJSON)
	}
	crcpt := make([]*C.char, len(recipients))
	for i, r := range recipients {
		crcpt[i] = C.CString(r)
	}
	// The recipient array lives in C memory: cgo forbids Go memory holding
	// pointers to be passed.
	arr := (**C.char)(C.malloc(C.size_t(len(recipients)+1) * C.size_t(unsafe.Sizeof(uintptr(0)))))
	slots := unsafe.Slice(arr, len(recipients)+1)
	copy(slots, crcpt)
	cpay := C.CBytes(payload)
	free := func() {
		C.free(unsafe.Pointer(cname))
		C.free(unsafe.Pointer(cmeta))
		for _, p := range crcpt {
			C.free(unsafe.Pointer(p))
		}
		C.free(unsafe.Pointer(arr))
		C.free(cpay)
	}
	var id C.uint64_t
	err := c.doOwned(ctx, op, free, func(p *C.fm_client) error {
		return call(op, func() C.fm_status {
			return C.fm_event_publish(p, cname, arr, C.size_t(len(recipients)), (*C.uint8_t)(cpay),
				C.size_t(len(payload)), cmeta, &id)
		})
	})
	return uint64(id), err
}

// EventOption configures SubscribeEvents.
type EventOption func(*[][2]string)

// WithManualAck turns auto-ack off: settle each event with Ack, Defer or
// Discard, or it is delivered again after the ack wait.
func WithManualAck() EventOption {
	return func(kv *[][2]string) { *kv = append(*kv, [2]string{"auto_ack", "false"}) }
}

// WithAckWait sets how long a delivered event may stay unsettled before it
// is delivered again (default 30 s).
func WithAckWait(d time.Duration) EventOption {
	return func(kv *[][2]string) {
		*kv = append(*kv, [2]string{"ack_wait_ms", strconv.FormatInt(d.Milliseconds(), 10)})
	}
}

// EventSubscription delivers one event name to this application.
type EventSubscription struct {
	c       *Client
	handler func(*AppEvent)
	h       cgo.Handle
	mu      sync.Mutex
	ptr     *C.fm_event_subscription
	ending  bool // Unsubscribe was called (maybe before setup finished)
}

// eventSubs is the client's registry of event subscriptions, so Close ends them.
type eventSubs struct {
	mu  sync.Mutex
	set map[*EventSubscription]struct{}
}

func (r *eventSubs) add(s *EventSubscription) {
	r.mu.Lock()
	if r.set == nil {
		r.set = make(map[*EventSubscription]struct{})
	}
	r.set[s] = struct{}{}
	r.mu.Unlock()
}

func (r *eventSubs) remove(s *EventSubscription) {
	r.mu.Lock()
	delete(r.set, s)
	r.mu.Unlock()
}

func (r *eventSubs) unsubscribeAll() {
	r.mu.Lock()
	subs := make([]*EventSubscription, 0, len(r.set))
	for s := range r.set {
		subs = append(subs, s)
	}
	r.mu.Unlock()
	for _, s := range subs {
		_ = s.Unsubscribe()
	}
}

// SubscribeEvents calls handler for each event name sent to this app, one
// at a time, on a library thread; with auto-ack (the default) an event is
// acked when handler returns. handler may call any method, including
// Unsubscribe. Needs WithAppID.
func (c *Client) SubscribeEvents(ctx context.Context, name string, handler func(*AppEvent), options ...EventOption) (*EventSubscription, error) {
	const op = "event_subscribe"
	if handler == nil {
		return nil, goError(op, ErrInvalidArgument, "handler is nil")
	}
	if err := checkString(op, "event name", name); err != nil {
		return nil, err
	}
	var kv [][2]string
	for _, o := range options {
		o(&kv)
	}
	s := &EventSubscription{c: c, handler: handler}
	err := c.do(ctx, op, func(p *C.fm_client) error {
		opts, err := newOptions(op, kv)
		if err != nil {
			return err
		}
		defer C.fm_options_free(opts)
		cname := C.CString(name)
		defer C.free(unsafe.Pointer(cname))
		s.h = cgo.NewHandle(s)
		var out *C.fm_event_subscription
		if err := call(op, func() C.fm_status { return C.fmgo_event_subscribe(p, cname, opts, C.uintptr_t(s.h), &out) }); err != nil {
			s.h.Delete()
			return err
		}
		s.mu.Lock()
		ending := s.ending
		if !ending {
			s.ptr = out
		}
		s.mu.Unlock()
		if ending { // an abandoned caller unsubscribed before setup finished
			C.fm_event_unsubscribe(out)
			s.h.Delete()
		}
		return nil
	})
	if err != nil {
		if ctx.Err() != nil {
			_ = s.Unsubscribe()
		}
		return nil, err
	}
	c.events.add(s)
	return s, nil
}

//export fmgoOnEvent
func fmgoOnEvent(h C.uintptr_t, ev *C.fm_event) {
	s := cgo.Handle(h).Value().(*EventSubscription)
	s.handler(goEvent(ev))
}

func (s *EventSubscription) native(op string) (*C.fm_event_subscription, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ptr == nil {
		return nil, goError(op, ErrClosed, "event subscription is closed")
	}
	return s.ptr, nil
}

func (s *EventSubscription) run(ctx context.Context, op string, f func(p *C.fm_event_subscription) C.fm_status) error {
	p, err := s.native(op)
	if err != nil {
		return err
	}
	return s.c.do(ctx, op, func(*C.fm_client) error { return call(op, func() C.fm_status { return f(p) }) })
}

// Ack acknowledges event id: it is never delivered again.
func (s *EventSubscription) Ack(ctx context.Context, id uint64) error {
	return s.run(ctx, "event_ack", func(p *C.fm_event_subscription) C.fm_status {
		return C.fm_event_ack(p, C.uint64_t(id))
	})
}

// Defer delivers event id again after delay (not before).
func (s *EventSubscription) Defer(ctx context.Context, id uint64, delay time.Duration, reason string) error {
	cr := C.CString(reason)
	defer C.free(unsafe.Pointer(cr))
	return s.run(ctx, "event_defer", func(p *C.fm_event_subscription) C.fm_status {
		return C.fm_event_defer(p, C.uint64_t(id), C.uint64_t(delay.Milliseconds()), cr)
	})
}

// Discard drops event id for good, recording reason in the discard log.
func (s *EventSubscription) Discard(ctx context.Context, id uint64, reason string) error {
	cr := C.CString(reason)
	defer C.free(unsafe.Pointer(cr))
	return s.run(ctx, "event_discard", func(p *C.fm_event_subscription) C.fm_status {
		return C.fm_event_discard(p, C.uint64_t(id), cr)
	})
}

// Replay delivers past event id to this app once more and returns it.
func (s *EventSubscription) Replay(ctx context.Context, id uint64) (*AppEvent, error) {
	var out *C.fm_event
	err := s.run(ctx, "event_replay", func(p *C.fm_event_subscription) C.fm_status {
		return C.fm_event_replay(p, C.uint64_t(id), &out)
	})
	if err != nil {
		return nil, err
	}
	defer C.fm_event_free(out)
	return goEvent(out), nil
}

// Pause stops delivery until Resume; events keep arriving and wait.
func (s *EventSubscription) Pause(reason string) error {
	cr := C.CString(reason)
	defer C.free(unsafe.Pointer(cr))
	return s.run(context.Background(), "event_pause", func(p *C.fm_event_subscription) C.fm_status {
		return C.fm_event_pause(p, cr)
	})
}

// Resume delivers everything held since Pause.
func (s *EventSubscription) Resume() error {
	return s.run(context.Background(), "event_resume", func(p *C.fm_event_subscription) C.fm_status {
		return C.fm_event_resume(p)
	})
}

// Status returns how many deliveries were rejected (tampered ciphertexts,
// never passed to the handler) and the error that ended delivery or the
// last rejection (ErrUnauthorized), or nil.
func (s *EventSubscription) Status() (uint64, error) {
	const op = "event_subscription_status"
	p, err := s.native(op)
	if err != nil {
		return 0, err
	}
	var n C.uint64_t
	err = call(op, func() C.fm_status { return C.fm_event_subscription_status(p, &n) })
	return uint64(n), err
}

// Unsubscribe stops delivery (waiting for a running handler unless called
// from it) and hands unsettled events back for redelivery. Idempotent.
func (s *EventSubscription) Unsubscribe() error {
	s.mu.Lock()
	p := s.ptr
	s.ptr = nil
	s.ending = true
	s.mu.Unlock()
	if p == nil {
		return nil
	}
	C.fm_event_unsubscribe(p) // after it returns no new callback starts
	s.h.Delete()
	s.c.events.remove(s)
	return nil
}
