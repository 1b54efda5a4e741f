package flowmesh

// Connection state reporting (fm_client_on_state / fm_client_state).

/*
#include "shim.h"
*/
import "C"

import (
	"runtime/cgo"
	"strconv"
	"time"
)

// ConnState is the state of a client's link to its engine. Embedded engines
// (mem://, file://) are StateConnected until closed.
type ConnState int

// The values of the native fm_conn_state.
const (
	// StateConnecting: opening the first connection (Connect has not returned).
	StateConnecting ConnState = 1
	// StateConnected: the engine answers.
	StateConnected ConnState = 2
	// StateReconnecting: the link was lost (a call failed or a heartbeat went
	// unanswered); reconnecting with backoff. Calls in flight failed with
	// ErrDisconnected; idempotent ones are retried once it is back.
	StateReconnecting ConnState = 3
	// StateDisconnected: gave up after max_reconnect_attempts. Every call now
	// fails with ErrDisconnected; close the client and connect again.
	StateDisconnected ConnState = 4
	// StateClosed: Close was called. The last state a listener sees.
	StateClosed ConnState = 5
)

// String returns the state's name, e.g. "connected".
func (s ConnState) String() string {
	switch s {
	case StateConnecting:
		return "connecting"
	case StateConnected:
		return "connected"
	case StateReconnecting:
		return "reconnecting"
	case StateDisconnected:
		return "disconnected"
	case StateClosed:
		return "closed"
	}
	return "ConnState(" + strconv.Itoa(int(s)) + ")"
}

// StateChange is one report of a state listener.
type StateChange struct {
	State ConnState
	// Err is the error that caused the change (it wraps a sentinel, usually
	// ErrDisconnected), or nil.
	Err error
}

// stateListener is what a listener's cgo.Handle refers to.
type stateListener struct {
	fn func(StateChange)
}

// OnState adds a listener of connection state changes. fn is called first
// with the current state, then with every change in order, and last with
// StateClosed from Close (which returns after that call). It runs on a
// library thread, one call at a time per listener; like a Subscribe handler
// it may call any client method except Close, and while it runs the next
// change waits. At most 16 listeners per client (ErrInvalidArgument
// beyond); they cannot be removed. ErrClosed after Close.
func (c *Client) OnState(fn func(StateChange)) error {
	const op = "on_state"
	if fn == nil {
		return goError(op, ErrInvalidArgument, "fn must not be nil")
	}
	p, err := c.acquire(op)
	if err != nil {
		return err
	}
	defer c.release()
	h := cgo.NewHandle(&stateListener{fn: fn})
	if err := call(op, func() C.fm_status { return C.fmgo_on_state(p, C.uintptr_t(h)) }); err != nil {
		h.Delete() // refused: the library will never call it
		return err
	}
	c.mu.Lock()
	c.listeners = append(c.listeners, h) // deleted by Close, after fm_client_close
	c.mu.Unlock()
	return nil
}

// State returns the client's current connection state; StateClosed once
// Close has begun.
func (c *Client) State() ConnState {
	p, err := c.acquire("state")
	if err != nil {
		return StateClosed
	}
	defer c.release()
	var out C.enum_fm_conn_state
	if err := call("state", func() C.fm_status { return C.fm_client_state(p, &out) }); err != nil {
		return StateClosed
	}
	return ConnState(out)
}

//export fmgoOnState
func fmgoOnState(h C.uintptr_t, state C.int, cause C.fm_status, detail *C.char) {
	l := cgo.Handle(h).Value().(*stateListener)
	var err error
	if cause != statusOK {
		var d string
		if detail != nil {
			d = C.GoString(detail)
		}
		err = statusError("connection", cause, d)
	}
	l.fn(StateChange{State: ConnState(state), Err: err})
}

// WithHeartbeat sets how often an idle remote link is probed (default 5 s);
// an unanswered probe starts reconnecting. 0 turns heartbeats off.
func WithHeartbeat(d time.Duration) Option {
	return WithOption("heartbeat_ms", strconv.FormatInt(d.Milliseconds(), 10))
}

// WithMaxRetries sets how often an idempotent call is retried after the
// link comes back (default 3).
func WithMaxRetries(n int) Option { return WithOption("max_retries", strconv.Itoa(n)) }

// WithCircuitBreaker opens the circuit after threshold consecutive failures
// (default 10; 0 turns the breaker off): calls then fail fast until timeout
// (default 30 s) has passed.
func WithCircuitBreaker(threshold int, timeout time.Duration) Option {
	return func(c *connectConfig) {
		c.set("breaker_threshold", strconv.Itoa(threshold))
		c.set("breaker_timeout_ms", strconv.FormatInt(timeout.Milliseconds(), 10))
	}
}

// WithMaxInFlight bounds the PublishAsync pipeline (default 16384 pending
// publishes): beyond it PublishAsync waits, or fails with ErrUnavailable
// under WithNonBlocking.
func WithMaxInFlight(n int) Option { return WithOption("max_in_flight", strconv.Itoa(n)) }

// WithNonBlocking makes PublishAsync fail at once with ErrUnavailable
// (instead of waiting) when max_in_flight publishes are pending.
func WithNonBlocking(on bool) Option { return WithOption("nonblocking", strconv.FormatBool(on)) }
