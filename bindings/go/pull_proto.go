package flowmesh

/*
#include "shim.h"
*/
import "C"

import (
	"context"
	"unsafe"
)

// pullChan is a prototype of SubscribeChan over fm_subscribe_pull (one cgo
// call per batch instead of one callback per message), kept only so that
// BenchmarkDeliverChan can compare the two; SubscribeChan does not use it
// (README "Pull mode"). It has no Err, no group commit and stops within
// one 50 ms slice: fm_unsubscribe must not run during fm_subscription_next.
func (c *Client) pullChan(ctx context.Context, stream string, batch int, opts ...SubOption) (stop func(), _ <-chan *Message, _ error) {
	sc := buildSub(opts)
	ch := make(chan *Message, sc.buffer)
	var ptr *C.fm_subscription
	err := c.do(ctx, "subscribe", func(p *C.fm_client) error {
		copts, err := newOptions("subscribe", sc.options())
		if err != nil {
			return err
		}
		defer C.fm_options_free(copts)
		cs := C.CString(stream)
		defer C.free(unsafe.Pointer(cs))
		return call("subscribe", func() C.fm_status { return C.fm_subscribe_pull(p, cs, copts, &ptr) })
	})
	if err != nil {
		return nil, nil, err
	}
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		defer close(ch)
		defer C.fm_unsubscribe(ptr)
		for {
			select {
			case <-quit:
				return
			default:
			}
			var ms *C.fm_messages
			if call("subscription_next", func() C.fm_status {
				return C.fm_subscription_next(ptr, C.uintptr_t(batch), 50, &ms)
			}) != nil {
				return
			}
			n := int(C.fm_messages_len(ms))
			for i := 0; i < n; i++ {
				m := goMessage(C.fm_messages_get(ms, C.uintptr_t(i)))
				select {
				case ch <- m:
				case <-quit:
					C.fm_messages_free(ms)
					return
				}
			}
			C.fm_messages_free(ms)
		}
	}()
	return func() { close(quit); <-done }, ch, nil
}
