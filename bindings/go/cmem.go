package flowmesh

/*
#include "shim.h"
*/
import "C"

import (
	"unsafe"
)

// arena is one C allocation holding every argument of a native call
// (strings, payloads, fm_msg and fm_header arrays). Arguments are copied to C
// memory rather than pinned Go memory because a call abandoned on context
// cancellation keeps running in the background: the caller may already reuse
// its buffers, and the call must not read them.
type arena struct {
	base unsafe.Pointer
	size uintptr
	used uintptr
}

const arenaAlign = 8

func alignUp(n uintptr) uintptr { return (n + arenaAlign - 1) &^ (arenaAlign - 1) }

// newArena allocates size bytes; size should come from a sizer so that no
// later alloc overflows.
func newArena(size uintptr) *arena {
	if size == 0 {
		size = arenaAlign
	}
	p := C.malloc(C.uintptr_t(size))
	if p == nil {
		panic("flowmesh: out of C memory")
	}
	return &arena{base: p, size: size}
}

func (a *arena) free() {
	if a != nil && a.base != nil {
		C.free(a.base)
		a.base = nil
	}
}

func (a *arena) alloc(n uintptr) unsafe.Pointer {
	n = alignUp(n)
	if a.used+n > a.size {
		panic("flowmesh: arena overflow (sizer and writer disagree)")
	}
	p := unsafe.Add(a.base, a.used)
	a.used += n
	return p
}

// str copies s as a NUL-terminated C string. Strings with an embedded NUL
// are cut there by C; the native side then rejects or misreads them, so
// callers validate with checkString first.
func (a *arena) str(s string) *C.char {
	p := a.alloc(uintptr(len(s)) + 1)
	b := unsafe.Slice((*byte)(p), len(s)+1)
	copy(b, s)
	b[len(s)] = 0
	return (*C.char)(p)
}

// bytes copies b; nil stays NULL so "no key" is distinguishable from "".
func (a *arena) bytes(b []byte) *C.uint8_t {
	if b == nil {
		return nil
	}
	p := a.alloc(uintptr(len(b)))
	copy(unsafe.Slice((*byte)(p), len(b)), b)
	return (*C.uint8_t)(p)
}

// sizer adds up what an arena will need.
type sizer uintptr

func (s *sizer) str(v string)   { *s += sizer(alignUp(uintptr(len(v)) + 1)) }
func (s *sizer) bytes(b []byte) { *s += sizer(alignUp(uintptr(len(b)))) }
func (s *sizer) raw(n uintptr)  { *s += sizer(alignUp(n)) }

func (s *sizer) msg(m *Message) {
	s.bytes(m.Payload)
	s.bytes(m.Key)
	s.raw(uintptr(len(m.Headers)) * unsafe.Sizeof(C.fm_header{}))
	for k, v := range m.Headers {
		s.str(k)
		s.str(v)
	}
}

// msg fills dst from m with copies in the arena.
func (a *arena) msg(dst *C.fm_msg, m *Message) {
	*dst = C.fm_msg{}
	// Never NULL, even when empty: NULL is an invalid argument to the ABI.
	payload := m.Payload
	if payload == nil {
		payload = []byte{}
	}
	dst.payload = a.bytes(payload)
	dst.payload_len = C.uintptr_t(len(m.Payload))
	if m.Key != nil {
		dst.key = a.bytes(m.Key)
		dst.key_len = C.uintptr_t(len(m.Key))
	}
	if n := len(m.Headers); n > 0 {
		hs := unsafe.Slice((*C.fm_header)(a.alloc(uintptr(n)*unsafe.Sizeof(C.fm_header{}))), n)
		i := 0
		for k, v := range m.Headers {
			hs[i].key = a.str(k)
			hs[i].value = a.str(v)
			i++
		}
		dst.headers = &hs[0]
		dst.headers_len = C.uintptr_t(n)
	}
}

// goHeaders copies a borrowed native header array.
func goHeaders(h *C.fm_header, n C.uintptr_t) map[string]string {
	if h == nil || n == 0 {
		return nil
	}
	m := make(map[string]string, int(n))
	for _, x := range unsafe.Slice(h, int(n)) {
		m[C.GoString(x.key)] = C.GoString(x.value)
	}
	return m
}

// goBytes copies a borrowed buffer; NULL gives nil, empty gives []byte{}.
func goBytes(p *C.uint8_t, n C.uintptr_t) []byte {
	if p == nil {
		return nil
	}
	return C.GoBytes(unsafe.Pointer(p), C.int(n))
}

// checkString rejects strings C cannot carry.
func checkString(op, what, s string) error {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 {
			return goError(op, ErrInvalidArgument, what+" contains a NUL byte")
		}
	}
	return nil
}
