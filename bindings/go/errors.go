package flowmesh

/*
#include "shim.h"
*/
import "C"

import (
	"errors"
	"runtime"
	"strings"
)

// Sentinel errors, one per native status code. Every error returned by this
// package that comes from the library wraps exactly one of them, so callers
// test with errors.Is(err, flowmesh.ErrNotFound) and still see the native
// detail message in err.Error().
var (
	ErrInvalidArgument = errors.New("flowmesh: invalid argument")
	ErrNotFound        = errors.New("flowmesh: not found")
	ErrTimeout         = errors.New("flowmesh: timeout")
	ErrDisconnected    = errors.New("flowmesh: disconnected")
	ErrUnauthorized    = errors.New("flowmesh: unauthorized")
	ErrClosed          = errors.New("flowmesh: closed")
	ErrAlreadyExists   = errors.New("flowmesh: already exists")
	ErrConflict        = errors.New("flowmesh: conflict")
	ErrTooLarge        = errors.New("flowmesh: too large")
	ErrUnavailable     = errors.New("flowmesh: unavailable")
	ErrInternal        = errors.New("flowmesh: internal error")
)

// Native status codes, as the library's header defines them.
const (
	statusOK              = C.FM_OK
	statusInvalidArgument = C.FM_ERR_INVALID_ARGUMENT
	statusNotFound        = C.FM_ERR_NOT_FOUND
	statusTimeout         = C.FM_ERR_TIMEOUT
	statusDisconnected    = C.FM_ERR_DISCONNECTED
	statusUnauthorized    = C.FM_ERR_UNAUTHORIZED
	statusClosed          = C.FM_ERR_CLOSED
	statusAlreadyExists   = C.FM_ERR_ALREADY_EXISTS
	statusConflict        = C.FM_ERR_CONFLICT
	statusTooLarge        = C.FM_ERR_TOO_LARGE
	statusUnavailable     = C.FM_ERR_UNAVAILABLE
	statusInternal        = C.FM_ERR_INTERNAL
)

var sentinels = [...]error{
	statusInvalidArgument: ErrInvalidArgument,
	statusNotFound:        ErrNotFound,
	statusTimeout:         ErrTimeout,
	statusDisconnected:    ErrDisconnected,
	statusUnauthorized:    ErrUnauthorized,
	statusClosed:          ErrClosed,
	statusAlreadyExists:   ErrAlreadyExists,
	statusConflict:        ErrConflict,
	statusTooLarge:        ErrTooLarge,
	statusUnavailable:     ErrUnavailable,
	statusInternal:        ErrInternal,
}

// Error is a failed operation. It unwraps to one of the sentinel errors.
type Error struct {
	Op     string // binding operation, e.g. "publish"
	Code   int    // native fm_status value
	Status string // native status name from fm_status_str, e.g. "FM_ERR_NOT_FOUND"
	Detail string // fm_last_error() text of the failing call; may be empty
	err    error
}

func (e *Error) Error() string {
	kind := strings.TrimPrefix(e.err.Error(), "flowmesh: ")
	s := "flowmesh: " + kind
	if e.Op != "" {
		s = "flowmesh: " + e.Op + ": " + kind
	}
	if e.Detail != "" {
		// The native detail often repeats the kind; say it once.
		s += ": " + strings.TrimPrefix(e.Detail, kind+": ")
	}
	return s
}

// Unwrap returns the sentinel error for Code.
func (e *Error) Unwrap() error { return e.err }

// statusError turns a native status into an error; nil for FM_OK.
func statusError(op string, st C.fm_status, detail string) error {
	return codeError(op, int(st), detail)
}

func codeError(op string, code int, detail string) error {
	if code == statusOK {
		return nil
	}
	sentinel := ErrInternal // an unknown code from a newer library
	if code > 0 && code < len(sentinels) {
		sentinel = sentinels[code]
	}
	return &Error{Op: op, Code: code, Status: C.GoString(C.fm_status_str(C.fm_status(code))), Detail: detail, err: sentinel}
}

// goError builds an Error for a failure detected on the Go side, before any
// native call (e.g. a bad option), so it still matches a sentinel.
func goError(op string, sentinel error, detail string) error {
	code := statusInternal
	for i, s := range sentinels {
		if s == sentinel {
			code = i
		}
	}
	return codeError(op, code, detail)
}

// call runs f, which makes native calls, and converts its status. The OS
// thread is locked because fm_last_error is per thread: without the lock the
// goroutine could move to another thread between f and fm_last_error and
// report some other call's message.
func call(op string, f func() C.fm_status) error {
	runtime.LockOSThread()
	st := f()
	var detail string
	if st != statusOK {
		detail = C.GoString(C.fm_last_error())
	}
	runtime.UnlockOSThread()
	return statusError(op, st, detail)
}
