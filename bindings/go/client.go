// Package flowmesh is the Go binding of flowmesh, a messaging core with
// streams, work queues and a key-value store. It is a thin cgo wrapper over
// the C ABI of libflowmesh: the protocol and every semantic live in the
// native library, which the C, Python and Node bindings share.
//
// Connect picks the engine from the URL: "mem://" (in process, in memory),
// "file:///abs/dir" (in process, durable), "grpc://host:port" or
// "grpcs://host:port" (a remote `flowmesh serve` broker).
//
// Every call that can block takes a context.Context and returns ctx.Err()
// when it ends first. Errors wrap the sentinel values (ErrNotFound,
// ErrConflict, ...) so errors.Is works, and carry the native detail text.
//
// A Client is safe for concurrent use by many goroutines.
package flowmesh

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

// Version returns the semantic version of the linked native library.
func Version() string { return C.GoString(C.fm_version()) }

// Client is a connection to one flowmesh engine.
type Client struct {
	mu       sync.Mutex
	ptr      *C.fm_client
	closed   bool
	inflight int           // native calls currently using ptr
	idle     chan struct{} // closed when inflight drops to 0 after Close began
	closing  chan struct{} // closed when Close begins; ends long polls early
	shut     chan struct{} // closed when Close has finished
	subs     map[*Subscription]struct{}
	watching bool          // the feed monitor goroutine runs
	watchEnd chan struct{} // closed when that goroutine exits
	// State listeners' handles, deleted once fm_client_close has joined
	// their threads.
	listeners []cgo.Handle
	events    eventSubs // event subscriptions (events.go), ended by Close
	// Topic subscriptions of the rules engine (rules.go), ended by Close.
	rulesSubs map[*RulesSubscription]struct{}
}

// Option configures Connect. Options map onto the native string options, so
// WithOption can pass keys this package does not wrap yet.
type Option func(*connectConfig)

type connectConfig struct {
	kv [][2]string
}

func (c *connectConfig) set(k, v string) { c.kv = append(c.kv, [2]string{k, v}) }

// WithOption sets a native connect option by name (see docs/ABI.md);
// an unknown key makes Connect fail with ErrInvalidArgument.
func WithOption(key, value string) Option { return func(c *connectConfig) { c.set(key, value) } }

// WithTenant sets the default tenant for bare resource names.
func WithTenant(tenant string) Option { return WithOption("tenant", tenant) }

// WithNamespace sets the default namespace for bare resource names.
func WithNamespace(ns string) Option { return WithOption("namespace", ns) }

// WithToken sets the bearer token sent to a remote broker.
func WithToken(token string) Option { return WithOption("token", token) }

// WithTLSCAFile trusts the CA in this PEM file (instead of the system roots)
// for a grpcs:// broker.
func WithTLSCAFile(path string) Option { return WithOption("tls_ca_file", path) }

// WithTLSServerName verifies a grpcs:// broker's certificate against this
// name instead of the URL's host.
func WithTLSServerName(name string) Option { return WithOption("tls_server_name", name) }

// WithMaxPayload sets the largest accepted payload; larger ones fail with ErrTooLarge.
func WithMaxPayload(bytes int) Option { return WithOption("max_payload_bytes", strconv.Itoa(bytes)) }

// WithFsync sets the durability mode of file:// engines: "batch", "interval" or "none".
func WithFsync(mode string) Option { return WithOption("fsync", mode) }

// WithWorkerThreads sets the size of the library's runtime thread pool.
func WithWorkerThreads(n int) Option { return WithOption("worker_threads", strconv.Itoa(n)) }

// WithConnectTimeout bounds connecting to a remote broker.
func WithConnectTimeout(d time.Duration) Option {
	return WithOption("connect_timeout_ms", strconv.FormatInt(d.Milliseconds(), 10))
}

// WithRequestTimeout bounds each request to a remote broker.
func WithRequestTimeout(d time.Duration) Option {
	return WithOption("request_timeout_ms", strconv.FormatInt(d.Milliseconds(), 10))
}

// newOptions builds a native fm_options from key/value pairs; the caller
// frees it with fm_options_free.
func newOptions(op string, kv [][2]string) (*C.fm_options, error) {
	opts := C.fm_options_new()
	if opts == nil {
		return nil, goError(op, ErrInternal, "fm_options_new returned NULL")
	}
	for _, p := range kv {
		if err := checkString(op, "option", p[0]+p[1]); err != nil {
			C.fm_options_free(opts)
			return nil, err
		}
		k, v := C.CString(p[0]), C.CString(p[1])
		err := call(op, func() C.fm_status { return C.fm_options_set(opts, k, v) })
		C.free(unsafe.Pointer(k))
		C.free(unsafe.Pointer(v))
		if err != nil {
			C.fm_options_free(opts)
			return nil, err
		}
	}
	return opts, nil
}

// Connect opens a client for url. If ctx ends first Connect returns
// ctx.Err() and a connection that completes later is closed in the background.
func Connect(ctx context.Context, url string, options ...Option) (*Client, error) {
	const op = "connect"
	var cfg connectConfig
	for _, o := range options {
		o(&cfg)
	}
	if err := checkString(op, "url", url); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	type result struct {
		ptr *C.fm_client
		err error
	}
	connect := func() result {
		opts, err := newOptions(op, cfg.kv)
		if err != nil {
			return result{err: err}
		}
		defer C.fm_options_free(opts)
		curl := C.CString(url)
		defer C.free(unsafe.Pointer(curl))
		var ptr *C.fm_client
		err = call(op, func() C.fm_status { return C.fm_client_connect(curl, opts, &ptr) })
		return result{ptr, err}
	}
	var r result
	if ctx.Done() == nil {
		r = connect()
	} else {
		ch := make(chan result, 1)
		abandoned := make(chan struct{})
		go func() {
			r := connect()
			select {
			case ch <- r:
			case <-abandoned:
				C.fm_client_close(r.ptr) // NULL is a no-op
			}
		}()
		select {
		case r = <-ch:
		case <-ctx.Done():
			select {
			case r = <-ch: // finished at the same moment: keep it
			default:
				close(abandoned)
				return nil, ctx.Err()
			}
		}
	}
	if r.err != nil {
		return nil, r.err
	}
	return &Client{
		ptr:     r.ptr,
		idle:    make(chan struct{}),
		closing: make(chan struct{}),
		shut:    make(chan struct{}),
		subs:    make(map[*Subscription]struct{}),
	}, nil
}

// acquire pins the native client for one call; Close waits for release.
func (c *Client) acquire(op string) (*C.fm_client, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, goError(op, ErrClosed, "client is closed")
	}
	c.inflight++
	return c.ptr, nil
}

func (c *Client) release() {
	c.mu.Lock()
	c.inflight--
	if c.inflight == 0 && c.closed {
		close(c.idle)
	}
	c.mu.Unlock()
}

// do runs fn, which makes the native calls of one operation and converts
// its results to Go values, honouring ctx. When ctx has no Done channel fn
// runs inline. Otherwise it runs in a goroutine: if ctx ends first, do
// returns ctx.Err() at once while fn finishes in the background and frees
// its own native memory; the caller must not read fn's results then.
func (c *Client) do(ctx context.Context, op string, fn func(p *C.fm_client) error) error {
	return c.doOwned(ctx, op, func() {}, fn)
}

// doOwned is do for an operation whose arguments were already copied to
// native memory: free releases them once, after fn ran or when it never runs.
func (c *Client) doOwned(ctx context.Context, op string, free func(), fn func(p *C.fm_client) error) error {
	if err := ctx.Err(); err != nil {
		free()
		return err
	}
	p, err := c.acquire(op)
	if err != nil {
		free()
		return err
	}
	if ctx.Done() == nil {
		defer c.release()
		defer free()
		return fn(p)
	}
	done := make(chan error, 1)
	go func() {
		defer c.release()
		defer free()
		done <- fn(p)
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		select {
		case err := <-done:
			return err
		default:
			return ctx.Err()
		}
	}
}

// Health reports whether the engine is alive (nil) or why not.
func (c *Client) Health(ctx context.Context) error {
	return c.do(ctx, "health", func(p *C.fm_client) error {
		return call("health", func() C.fm_status { return C.fm_client_health(p) })
	})
}

// Readiness reports whether the engine is ready to serve requests.
func (c *Client) Readiness(ctx context.Context) error {
	return c.do(ctx, "readiness", func(p *C.fm_client) error {
		return call("readiness", func() C.fm_status { return C.fm_client_readiness(p) })
	})
}

// Close ends every subscription and watch, waits for running handlers and
// in-flight calls, settles pending PublishAsync futures, and frees the
// native client. Later calls return ErrClosed. Close is idempotent. Do not
// call Close from inside a handler of the same client.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		<-c.shut // a concurrent Close returns only when the work is done
		return nil
	}
	c.closed = true
	close(c.closing)
	subs := make([]*Subscription, 0, len(c.subs))
	for s := range c.subs {
		subs = append(subs, s)
	}
	rulesSubs := make([]*RulesSubscription, 0, len(c.rulesSubs))
	for s := range c.rulesSubs {
		rulesSubs = append(rulesSubs, s)
	}
	wait := c.inflight > 0
	var monitor chan struct{}
	if c.watching {
		monitor = c.watchEnd
	}
	c.mu.Unlock()
	if monitor != nil {
		<-monitor // it may be tearing down a failed feed; let it finish
	}

	// Unsubscribe first, while the client is alive, so handlers blocked on a
	// full channel are released and every handle is freed by the library.
	for _, s := range subs {
		_ = s.Unsubscribe()
	}
	c.events.unsubscribeAll()
	for _, s := range rulesSubs {
		_ = s.Close()
	}
	if wait {
		<-c.idle
	}
	c.mu.Lock()
	p := c.ptr
	c.ptr = nil
	c.mu.Unlock()
	C.fm_client_close(p) // state listeners got StateClosed; their threads are joined
	c.mu.Lock()
	listeners := c.listeners
	c.listeners = nil
	c.mu.Unlock()
	for _, h := range listeners {
		h.Delete()
	}
	close(c.shut)
	return nil
}

// addSub registers s for Close and for the feed monitor; false if Close
// has already begun.
func (c *Client) addSub(s *Subscription) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return false
	}
	c.subs[s] = struct{}{}
	if !c.watching {
		c.watching = true
		c.watchEnd = make(chan struct{})
		go c.monitorFeeds(c.watchEnd)
	}
	return true
}

// feedPoll is how often the feed monitor asks the library whether each
// subscription's feed is still alive (fm_subscription_status: a lock and a
// load, no I/O). The library has no end-of-feed callback, so a failed feed
// is noticed within this time.
var feedPoll = 50 * time.Millisecond

// monitorFeeds runs while the client has subscriptions: it polls their
// status and ends those whose feed failed, so that their channels close
// and Err says why. It exits when the last subscription has gone or Close
// begins (Close waits for it).
func (c *Client) monitorFeeds(end chan struct{}) {
	defer close(end)
	t := time.NewTicker(feedPoll)
	defer t.Stop()
	var subs []*Subscription
	for {
		select {
		case <-c.closing:
			c.mu.Lock()
			c.watching = false
			c.mu.Unlock()
			return
		case <-t.C:
		}
		c.mu.Lock()
		if len(c.subs) == 0 || c.closed {
			c.watching = false
			c.mu.Unlock()
			return
		}
		subs = subs[:0]
		for s := range c.subs {
			subs = append(subs, s)
		}
		c.mu.Unlock()
		for _, s := range subs {
			s.checkFeed()
		}
		clear(subs)
	}
}

func (c *Client) removeSub(s *Subscription) {
	c.mu.Lock()
	delete(c.subs, s)
	c.mu.Unlock()
}

// waitSlice is how long one native long-poll slice may block, so that
// cancellation and Close are noticed within this time without abandoning a
// call that might still reserve a job nobody will see.
const waitSlice = 50 * time.Millisecond

// sliceWait returns how long the next native wait may last given the total
// wait left and ctx's deadline, and whether waiting is over.
func sliceWait(ctx context.Context, until time.Time) (time.Duration, bool) {
	now := time.Now()
	end := until
	if d, ok := ctx.Deadline(); ok && d.Before(end) {
		end = d
	}
	left := end.Sub(now)
	if left <= 0 {
		return 0, true
	}
	if left > waitSlice {
		left = waitSlice
	}
	return left, false
}
