package flowmesh

/*
#include "shim.h"
*/
import "C"

import (
	"context"
	"time"
	"unsafe"
)

// Resource lifecycle: list, delete and purge streams, queues and buckets;
// change a stream's configuration; give a reserved job more time.

// listFunc is the shape of fm_streams_list, fm_queues_list and fm_kv_buckets_list.
type listFunc func(p *C.fm_client, prefix *C.char, out **C.fm_strings) C.fm_status

func (c *Client) listNames(ctx context.Context, op, prefix string, f listFunc) ([]string, error) {
	if err := checkString(op, "prefix", prefix); err != nil {
		return nil, err
	}
	var names []string
	err := c.do(ctx, op, func(p *C.fm_client) error {
		cp := C.CString(prefix)
		defer C.free(unsafe.Pointer(cp))
		var ss *C.fm_strings
		err := call(op, func() C.fm_status { return f(p, cp, &ss) })
		defer C.fm_strings_free(ss)
		if err != nil {
			return err
		}
		names = make([]string, int(C.fm_strings_len(ss)))
		for i := range names {
			names[i] = C.GoString(C.fm_strings_get(ss, C.uintptr_t(i)))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return names, nil
}

// nameCall is the shape shared by calls that take one resource name.
func (c *Client) nameCall(ctx context.Context, op, what, name string, f func(p *C.fm_client, cn *C.char) C.fm_status) error {
	if err := checkString(op, what, name); err != nil {
		return err
	}
	return c.do(ctx, op, func(p *C.fm_client) error {
		cn := C.CString(name)
		defer C.free(unsafe.Pointer(cn))
		return call(op, func() C.fm_status { return f(p, cn) })
	})
}

// ListStreams returns the streams whose name starts with prefix ("" for
// all) in the client's tenant and namespace, fully qualified
// ("tenant/namespace/name") and sorted. A prefix containing '/' is the start
// of a qualified name instead ("acme/" = every namespace of tenant acme).
func (c *Client) ListStreams(ctx context.Context, prefix string) ([]string, error) {
	return c.listNames(ctx, "streams_list", prefix, func(p *C.fm_client, cp *C.char, out **C.fm_strings) C.fm_status {
		return C.fm_streams_list(p, cp, out)
	})
}

// ListQueues lists queues as ListStreams lists streams.
func (c *Client) ListQueues(ctx context.Context, prefix string) ([]string, error) {
	return c.listNames(ctx, "queues_list", prefix, func(p *C.fm_client, cp *C.char, out **C.fm_strings) C.fm_status {
		return C.fm_queues_list(p, cp, out)
	})
}

// ListBuckets lists KV buckets as ListStreams lists streams.
func (c *Client) ListBuckets(ctx context.Context, prefix string) ([]string, error) {
	return c.listNames(ctx, "kv_buckets_list", prefix, func(p *C.fm_client, cp *C.char, out **C.fm_strings) C.fm_status {
		return C.fm_kv_buckets_list(p, cp, out)
	})
}

// DeleteStream removes a stream with its messages and consumer-group
// offsets; ErrNotFound if there is none. Subscriptions on it end (Err gives
// ErrNotFound); a later publish creates it again, empty.
func (c *Client) DeleteStream(ctx context.Context, stream string) error {
	return c.nameCall(ctx, "stream_delete", "stream", stream, func(p *C.fm_client, cn *C.char) C.fm_status {
		return C.fm_stream_delete(p, cn)
	})
}

// DeleteQueue removes a queue with every job (pending, delayed, in flight
// and dead); ErrNotFound if there is none.
func (c *Client) DeleteQueue(ctx context.Context, queue string) error {
	return c.nameCall(ctx, "queue_delete", "queue", queue, func(p *C.fm_client, cn *C.char) C.fm_status {
		return C.fm_queue_delete(p, cn)
	})
}

// DeleteBucket removes a KV bucket with every key; its watches end with
// ErrNotFound. ErrNotFound if there is none.
func (c *Client) DeleteBucket(ctx context.Context, bucket string) error {
	return c.nameCall(ctx, "kv_bucket_delete", "bucket", bucket, func(p *C.fm_client, cn *C.char) C.fm_status {
		return C.fm_kv_bucket_delete(p, cn)
	})
}

// PurgeStream removes every message of a stream and keeps it; offsets
// continue from where they were. Returns how many messages went.
func (c *Client) PurgeStream(ctx context.Context, stream string) (uint64, error) {
	var removed C.uint64_t
	err := c.nameCall(ctx, "stream_purge", "stream", stream, func(p *C.fm_client, cn *C.char) C.fm_status {
		return C.fm_stream_purge(p, cn, &removed)
	})
	return uint64(removed), err
}

// PurgeQueue removes a queue's pending and delayed jobs and returns how many
// went. Jobs in flight are left to their workers; dead jobs stay.
func (c *Client) PurgeQueue(ctx context.Context, queue string) (uint64, error) {
	var removed C.uint64_t
	err := c.nameCall(ctx, "queue_purge", "queue", queue, func(p *C.fm_client, cn *C.char) C.fm_status {
		return C.fm_queue_purge(p, cn, &removed)
	})
	return uint64(removed), err
}

// Extend gives a reserved job visibility (at least a millisecond) from now
// before it is redelivered. ErrConflict if the job is no longer reserved by
// anyone (its visibility ran out, it was nacked); ErrNotFound if the queue
// has no such job.
func (c *Client) Extend(ctx context.Context, queue string, jobID uint64, visibility time.Duration) error {
	if visibility < time.Millisecond {
		return goError("queue_extend", ErrInvalidArgument, "visibility must be at least 1ms")
	}
	return c.nameCall(ctx, "queue_extend", "queue", queue, func(p *C.fm_client, cn *C.char) C.fm_status {
		return C.fm_queue_extend(p, cn, C.uint64_t(jobID), millis(visibility))
	})
}

// Extend gives this job visibility more time (see Client.Extend).
func (j *Job) Extend(ctx context.Context, visibility time.Duration) error {
	return j.c.Extend(ctx, j.Queue, j.ID, visibility)
}

// UpdateStream changes an existing stream's retention (WithMaxAge,
// WithMaxBytes, WithMaxMessages; 0 = unlimited) or grows its partition
// count (WithPartitions; fewer is ErrInvalidArgument). Settings not given
// keep their value. ErrNotFound if the stream does not exist.
func (c *Client) UpdateStream(ctx context.Context, stream string, opts ...StreamOption) error {
	const op = "stream_update"
	if err := checkString(op, "stream", stream); err != nil {
		return err
	}
	var cfg streamConfig
	for _, o := range opts {
		o(&cfg)
	}
	if len(cfg.kv) == 0 {
		return goError(op, ErrInvalidArgument, "nothing to change")
	}
	return c.streamCall(ctx, op, stream, cfg.kv,
		func(p *C.fm_client, cs *C.char, o *C.fm_options) C.fm_status { return C.fm_stream_update(p, cs, o) })
}
