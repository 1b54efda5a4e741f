package flowmesh

/*
#include "shim.h"
*/
import "C"

import (
	"context"
	"runtime/cgo"
	"strconv"
	"time"
	"unsafe"
)

// Entry is a key with its value and revision.
type Entry struct {
	Key      string
	Value    []byte
	Revision uint64
}

// KVOp is the kind of change a watch reports.
type KVOp int

// Watch event kinds (values of the native fm_kv_op).
const (
	KVPut    KVOp = 1
	KVDelete KVOp = 2
	KVExpire KVOp = 3
)

func (o KVOp) String() string {
	switch o {
	case KVPut:
		return "put"
	case KVDelete:
		return "delete"
	case KVExpire:
		return "expire"
	}
	return "KVOp(" + strconv.Itoa(int(o)) + ")"
}

// KVEvent is one change seen by Watch.
type KVEvent struct {
	Op       KVOp
	Key      string
	Value    []byte // nil for delete and expire
	Revision uint64
}

// SetOption configures Set.
type SetOption func(*setConfig)

type setConfig struct{ ttl time.Duration }

// WithTTL expires the key after d (rounded up to a millisecond).
func WithTTL(d time.Duration) SetOption { return func(c *setConfig) { c.ttl = d } }

// kvArgs copies bucket, key and value to one arena before the call starts.
func kvArgs(bucket, key string, value []byte) (a *arena, cb, ck *C.char, cv *C.uint8_t) {
	var s sizer
	s.str(bucket)
	s.str(key)
	s.bytes(value)
	a = newArena(uintptr(s))
	cb, ck = a.str(bucket), a.str(key)
	if value == nil {
		value = []byte{} // never NULL: an empty value is still a value
	}
	cv = a.bytes(value)
	return
}

func checkKV(op, bucket, key string) error {
	return firstErr(checkString(op, "bucket", bucket), checkString(op, "key", key))
}

// Set stores value under key and returns the key's new revision.
func (c *Client) Set(ctx context.Context, bucket, key string, value []byte, opts ...SetOption) (uint64, error) {
	const op = "kv_set"
	var cfg setConfig
	for _, o := range opts {
		o(&cfg)
	}
	ttl := cfg.ttl
	if ttl < 0 {
		return 0, goError(op, ErrInvalidArgument, "negative TTL")
	}
	if err := checkKV(op, bucket, key); err != nil {
		return 0, err
	}
	var rev uint64
	a, cb, ck, cv := kvArgs(bucket, key, value)
	err := c.doOwned(ctx, op, a.free, func(p *C.fm_client) error {
		var out C.uint64_t
		err := call(op, func() C.fm_status {
			return C.fm_kv_set(p, cb, ck, cv, C.uintptr_t(len(value)), millis(ttl), &out)
		})
		rev = uint64(out)
		return err
	})
	if err != nil {
		return 0, err
	}
	return rev, nil
}

// CAS stores value only if the key's revision is expected (0: the key must
// not exist) and returns the new revision; ErrConflict otherwise.
func (c *Client) CAS(ctx context.Context, bucket, key string, value []byte, expected uint64) (uint64, error) {
	const op = "kv_cas"
	if err := checkKV(op, bucket, key); err != nil {
		return 0, err
	}
	var rev uint64
	a, cb, ck, cv := kvArgs(bucket, key, value)
	err := c.doOwned(ctx, op, a.free, func(p *C.fm_client) error {
		var out C.uint64_t
		err := call(op, func() C.fm_status {
			return C.fm_kv_cas(p, cb, ck, cv, C.uintptr_t(len(value)), C.uint64_t(expected), &out)
		})
		rev = uint64(out)
		return err
	})
	if err != nil {
		return 0, err
	}
	return rev, nil
}

// Get returns the value of key; ErrNotFound if absent or expired.
func (c *Client) Get(ctx context.Context, bucket, key string) ([]byte, error) {
	e, err := c.getEntry(ctx, "kv_get", bucket, key)
	if err != nil {
		return nil, err
	}
	return e.Value, nil
}

// GetEntry is Get that also returns the key's revision.
func (c *Client) GetEntry(ctx context.Context, bucket, key string) (Entry, error) {
	return c.getEntry(ctx, "kv_get_entry", bucket, key)
}

func (c *Client) getEntry(ctx context.Context, op, bucket, key string) (Entry, error) {
	if err := checkKV(op, bucket, key); err != nil {
		return Entry{}, err
	}
	var e Entry
	err := c.do(ctx, op, func(p *C.fm_client) error {
		cb, ck := C.CString(bucket), C.CString(key)
		defer C.free(unsafe.Pointer(cb))
		defer C.free(unsafe.Pointer(ck))
		var buf *C.fm_buf
		var rev C.uint64_t
		err := call(op, func() C.fm_status { return C.fm_kv_get_entry(p, cb, ck, &buf, &rev) })
		defer C.fm_buf_free(buf)
		if err != nil {
			return err
		}
		var n C.uintptr_t
		data := C.fm_buf_data(buf, &n)
		e = Entry{Key: key, Value: goBytesNonNil(data, n), Revision: uint64(rev)}
		return nil
	})
	if err != nil {
		return Entry{}, err
	}
	return e, nil
}

// Delete removes key; deleting an absent key is not an error.
func (c *Client) Delete(ctx context.Context, bucket, key string) error {
	const op = "kv_delete"
	if err := checkKV(op, bucket, key); err != nil {
		return err
	}
	return c.do(ctx, op, func(p *C.fm_client) error {
		cb, ck := C.CString(bucket), C.CString(key)
		defer C.free(unsafe.Pointer(cb))
		defer C.free(unsafe.Pointer(ck))
		return call(op, func() C.fm_status { return C.fm_kv_delete(p, cb, ck) })
	})
}

// Exists reports whether key is present.
func (c *Client) Exists(ctx context.Context, bucket, key string) (bool, error) {
	const op = "kv_exists"
	if err := checkKV(op, bucket, key); err != nil {
		return false, err
	}
	var ok bool
	err := c.do(ctx, op, func(p *C.fm_client) error {
		cb, ck := C.CString(bucket), C.CString(key)
		defer C.free(unsafe.Pointer(cb))
		defer C.free(unsafe.Pointer(ck))
		var out C.bool
		err := call(op, func() C.fm_status { return C.fm_kv_exists(p, cb, ck, &out) })
		ok = bool(out)
		return err
	})
	if err != nil {
		return false, err
	}
	return ok, nil
}

// ListKeys returns the keys under prefix ("" for all), sorted.
func (c *Client) ListKeys(ctx context.Context, bucket, prefix string) ([]string, error) {
	const op = "kv_list_keys"
	if err := checkKV(op, bucket, prefix); err != nil {
		return nil, err
	}
	var keys []string
	err := c.do(ctx, op, func(p *C.fm_client) error {
		cb, cp := C.CString(bucket), C.CString(prefix)
		defer C.free(unsafe.Pointer(cb))
		defer C.free(unsafe.Pointer(cp))
		var ss *C.fm_strings
		err := call(op, func() C.fm_status { return C.fm_kv_list_keys(p, cb, cp, &ss) })
		defer C.fm_strings_free(ss)
		if err != nil {
			return err
		}
		keys = make([]string, int(C.fm_strings_len(ss)))
		for i := range keys {
			keys[i] = C.GoString(C.fm_strings_get(ss, C.uintptr_t(i)))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return keys, nil
}

// Watch calls handler for every put, delete and expiry of keys under prefix
// in bucket, in order, on a library thread; a slow handler slows delivery.
// The handler may call Unsubscribe on the returned Subscription.
func (c *Client) Watch(ctx context.Context, bucket, prefix string, handler func(KVEvent)) (*Subscription, error) {
	if handler == nil {
		return nil, goError("kv_watch", ErrInvalidArgument, "nil handler")
	}
	s := newSubscription(c)
	s.onKV = handler
	if err := c.watch(ctx, bucket, prefix, s); err != nil {
		return nil, err
	}
	return s, nil
}

// WatchChan is Watch delivering into a channel of capacity buffer (64 if
// 0). The channel is closed after Unsubscribe or Close; a full channel makes
// the library wait.
func (c *Client) WatchChan(ctx context.Context, bucket, prefix string, buffer int) (*Subscription, <-chan KVEvent, error) {
	if buffer < 0 {
		return nil, nil, goError("kv_watch", ErrInvalidArgument, "negative buffer")
	}
	if buffer == 0 {
		buffer = 64
	}
	ch := make(chan KVEvent, buffer)
	s := newSubscription(c)
	s.kvs = ch
	if err := c.watch(ctx, bucket, prefix, s); err != nil {
		return nil, nil, err
	}
	return s, ch, nil
}

func (c *Client) watch(ctx context.Context, bucket, prefix string, s *Subscription) error {
	const op = "kv_watch"
	if err := checkKV(op, bucket, prefix); err != nil {
		return err
	}
	return s.start(ctx, op, func(p *C.fm_client, h cgo.Handle, out **C.fm_subscription) error {
		cb, cp := C.CString(bucket), C.CString(prefix)
		defer C.free(unsafe.Pointer(cb))
		defer C.free(unsafe.Pointer(cp))
		return call(op, func() C.fm_status { return C.fmgo_kv_watch(p, cb, cp, C.uintptr_t(h), out) })
	})
}
