// Package pull measures stream delivery through the C ABI's pull mode
// (fm_subscribe_pull + fm_subscription_next: one cgo call per batch) against
// the Go binding's SubscribeChan (one callback per message), on a shared
// in-process mem:// engine. The binding itself delivers by callback; this
// package is the comparison that keeps the choice honest:
//
//	go test -run XXX -bench . ./pull
package pull

/*
#cgo CFLAGS: -I${SRCDIR}/../../../../include
#cgo LDFLAGS: -L${SRCDIR}/../../../../target/release -lflowmesh -Wl,-rpath,${SRCDIR}/../../../../target/release
#include <stdlib.h>
#include "flowmesh.h"
*/
import "C"

import (
	"fmt"
	"unsafe"
)

func check(what string, st C.fm_status) error {
	if st == C.FM_OK {
		return nil
	}
	return fmt.Errorf("%s: %s: %s", what, C.GoString(C.fm_status_str(st)), C.GoString(C.fm_last_error()))
}

// drain connects to url, subscribes to stream (partition 0, from the
// earliest offset) in pull mode and takes n messages in batches of up to
// batch, touching each payload once.
func drain(url, stream string, batch, n int) error {
	curl, cstream := C.CString(url), C.CString(stream)
	defer C.free(unsafe.Pointer(curl))
	defer C.free(unsafe.Pointer(cstream))
	var client *C.fm_client
	if err := check("connect", C.fm_client_connect(curl, nil, &client)); err != nil {
		return err
	}
	defer C.fm_client_close(client)
	opts := C.fm_options_new()
	defer C.fm_options_free(opts)
	for k, v := range map[string]string{"partition": "0", "start": "earliest"} {
		ck, cv := C.CString(k), C.CString(v)
		st := C.fm_options_set(opts, ck, cv)
		C.free(unsafe.Pointer(ck))
		C.free(unsafe.Pointer(cv))
		if err := check("options", st); err != nil {
			return err
		}
	}
	var sub *C.fm_subscription
	if err := check("subscribe", C.fm_subscribe_pull(client, cstream, opts, &sub)); err != nil {
		return err
	}
	defer C.fm_unsubscribe(sub)
	var sum byte
	for got := 0; got < n; {
		var msgs *C.fm_messages
		if err := check("next", C.fm_subscription_next(sub, C.size_t(batch), 1000, &msgs)); err != nil {
			return err
		}
		count := int(C.fm_messages_len(msgs))
		for i := 0; i < count; i++ {
			m := C.fm_messages_get(msgs, C.size_t(i))
			if m.payload_len > 0 {
				sum += *(*byte)(unsafe.Pointer(m.payload))
			}
		}
		C.fm_messages_free(msgs)
		if count == 0 {
			return fmt.Errorf("no message within 1 s after %d of %d", got, n)
		}
		got += count
	}
	_ = sum
	return nil
}
