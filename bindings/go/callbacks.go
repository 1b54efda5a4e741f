package flowmesh

// Native callbacks arrive here on the library's dispatcher threads. C only
// ever holds a runtime/cgo.Handle (an integer) as user_data, never a Go
// pointer; the handle is deleted once the library promises no further call.

/*
#include "shim.h"
*/
import "C"

import (
	"context"
	"runtime/cgo"
	"sync"
	"unsafe"
)

// Subscription is a live stream subscription or KV watch.
type Subscription struct {
	c     *Client
	cptr  *C.fm_client // for commits made inside the callback
	h     cgo.Handle
	stop  chan struct{} // closed when Unsubscribe begins: releases blocked sends
	ended chan struct{} // closed when teardown has finished

	// Exactly one delivery target is set.
	onMessage func(*Message)
	msgs      chan *Message
	onKV      func(KVEvent)
	kvs       chan KVEvent

	// SubscribeChan with a group: commit after a successful hand-off.
	commitGroup string

	op string // "subscribe" or "kv_watch", for errors

	mu     sync.Mutex
	ptr    *C.fm_subscription // nil until setup finished, and after teardown
	ending bool
	err    error // why the feed ended, when it was not Unsubscribe or Close
}

func newSubscription(c *Client) *Subscription {
	return &Subscription{c: c, stop: make(chan struct{}), ended: make(chan struct{})}
}

// start runs the native subscribe call fn with a fresh handle for s.
func (s *Subscription) start(ctx context.Context, op string, fn func(p *C.fm_client, h cgo.Handle, out **C.fm_subscription) error) error {
	s.op = op
	err := s.c.do(ctx, op, func(p *C.fm_client) error {
		// Everything the callback reads is written before NewHandle: the
		// handle table's synchronisation orders these writes before the
		// callback's Value(), also for the race detector.
		s.cptr = p
		s.h = cgo.NewHandle(s)
		var out *C.fm_subscription
		if err := fn(p, s.h, &out); err != nil {
			s.h.Delete() // no callback runs for a refused subscription
			return err
		}
		s.mu.Lock()
		s.ptr = out
		ending := s.ending
		s.mu.Unlock()
		if ending { // Unsubscribe (from a handler, or by an abandoned caller) came first
			return s.teardown(out)
		}
		if !s.c.addSub(s) { // Close began meanwhile; the client is still alive here
			_ = s.Unsubscribe()
			return goError(op, ErrClosed, "client closed while subscribing")
		}
		return nil
	})
	if err != nil && ctx.Err() != nil {
		// Abandoned: whether setup finished or not, make sure it is undone.
		_ = s.Unsubscribe()
	}
	return err
}

// Unsubscribe stops delivery and frees the subscription. Called from outside
// the handler it returns after any running handler has returned; called from
// inside its own handler it returns at once and no further message arrives.
// A channel subscription's channel is closed. Calling it again is a no-op.
func (s *Subscription) Unsubscribe() error {
	s.mu.Lock()
	if s.ending {
		s.mu.Unlock()
		return nil
	}
	s.ending = true
	close(s.stop)
	ptr := s.ptr
	s.mu.Unlock()
	if ptr == nil {
		return nil // setup is still running and tears down when it sees ending
	}
	return s.teardown(ptr)
}

// Done is closed once the subscription has been torn down: after
// Unsubscribe or Close, or when its feed ended with an error (see Err).
func (s *Subscription) Done() <-chan struct{} { return s.ended }

// Err returns the error that ended the subscription's feed, such as
// ErrDisconnected once a remote client gave up reconnecting
// (max_reconnect_attempts), or a KV watch that fell too far behind. It is
// nil while the subscription runs and after Unsubscribe or Close. As with
// bufio.Scanner, check it once the channel of SubscribeChan or WatchChan is
// closed, or once Done is closed for a handler subscription: every message
// delivered before the failure has reached the channel or handler by then.
func (s *Subscription) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// checkFeed asks the library whether the feed is still alive and tears the
// subscription down, recording why, if it is not. The library sets the
// status on its dispatcher thread after the last callback has returned, so
// nothing already received is dropped. It reports whether s is still live.
func (s *Subscription) checkFeed() bool {
	s.mu.Lock()
	if s.ending || s.ptr == nil {
		live := !s.ending
		s.mu.Unlock()
		return live
	}
	// Under s.mu: Unsubscribe cannot free ptr during the call.
	ptr := s.ptr
	err := call(s.op, func() C.fm_status { return C.fm_subscription_status(ptr) })
	if err == nil {
		s.mu.Unlock()
		return true
	}
	s.err = err
	s.ending = true
	close(s.stop)
	s.mu.Unlock()
	_ = s.teardown(ptr)
	return false
}

func (s *Subscription) teardown(ptr *C.fm_subscription) error {
	err := call("unsubscribe", func() C.fm_status { return C.fm_unsubscribe(ptr) })
	// fm_unsubscribe has waited for a running callback (or is inside it), and
	// none will follow, so the handle and channels can go.
	s.h.Delete()
	if s.msgs != nil {
		close(s.msgs)
	}
	if s.kvs != nil {
		close(s.kvs)
	}
	s.c.removeSub(s)
	close(s.ended)
	return err
}

//export fmgoOnMessage
func fmgoOnMessage(h C.uintptr_t, m *C.fm_message) {
	s := cgo.Handle(h).Value().(*Subscription)
	select {
	case <-s.stop:
		return // unsubscribing: drop, the message is not ours any more
	default:
	}
	msg := goMessage(m)
	if s.onMessage != nil {
		s.onMessage(msg) // runs here, so a slow handler slows the dispatcher
		return
	}
	select {
	case s.msgs <- msg: // blocks while the channel is full: backpressure
		// The message names its stream (a subscription may name a subject
		// pattern); memory-tier messages have no offset to commit.
		if s.commitGroup != "" && uint64(m.offset) != OffsetNone {
			cg := C.CString(s.commitGroup)
			C.fm_commit_offset(s.cptr, m.stream, cg, m.partition, m.offset)
			C.free(unsafe.Pointer(cg))
		}
	case <-s.stop:
	}
}

//export fmgoOnPublish
func fmgoOnPublish(h C.uintptr_t, st C.fm_status, partition C.uint32_t, offset C.uint64_t) {
	hd := cgo.Handle(h)
	f := hd.Value().(*PublishFuture)
	hd.Delete() // the library calls back exactly once
	var detail string
	if st != statusOK {
		detail = C.GoString(C.fm_last_error()) // set for this callback by the library
	}
	f.resolve(st, detail, Position{uint32(partition), uint64(offset)})
}

//export fmgoOnKV
func fmgoOnKV(h C.uintptr_t, op C.int, key *C.char, value *C.uint8_t, n C.uintptr_t, rev C.uint64_t) {
	s := cgo.Handle(h).Value().(*Subscription)
	select {
	case <-s.stop:
		return
	default:
	}
	ev := KVEvent{Op: KVOp(op), Key: C.GoString(key), Value: goBytes(value, n), Revision: uint64(rev)}
	if s.onKV != nil {
		s.onKV(ev)
		return
	}
	select {
	case s.kvs <- ev:
	case <-s.stop:
	}
}
