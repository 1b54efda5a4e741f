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

// Job is a reserved queue job or a dead-lettered one.
type Job struct {
	Queue    string
	ID       uint64
	Attempt  uint32 // 1 on first delivery
	Priority int32
	Payload  []byte
	Headers  map[string]string

	c *Client
}

// Ack completes the job (see Client.Ack).
func (j *Job) Ack(ctx context.Context) error { return j.c.Ack(ctx, j.Queue, j.ID) }

// Nack returns the job to the queue after delay (see Client.Nack).
func (j *Job) Nack(ctx context.Context, delay time.Duration) error {
	return j.c.Nack(ctx, j.Queue, j.ID, delay)
}

func (c *Client) goJob(queue string, j *C.fm_job) *Job {
	var n C.uintptr_t
	p := C.fm_job_payload(j, &n)
	return &Job{
		Queue:    queue,
		ID:       uint64(C.fm_job_id(j)),
		Attempt:  uint32(C.fm_job_attempt(j)),
		Priority: int32(C.fm_job_priority(j)),
		Payload:  goBytesNonNil(p, n),
		Headers:  goHeaders(C.fm_job_headers(j), C.fm_job_headers_len(j)),
		c:        c,
	}
}

func (c *Client) goJobs(queue string, js *C.fm_jobs) []*Job {
	n := int(C.fm_jobs_len(js))
	out := make([]*Job, n)
	for i := range out {
		out[i] = c.goJob(queue, C.fm_jobs_get(js, C.uintptr_t(i)))
	}
	return out
}

func millis(d time.Duration) C.uint64_t {
	if d <= 0 {
		return 0
	}
	ms := d.Milliseconds()
	if ms == 0 {
		ms = 1 // round sub-millisecond durations up, never to "none"
	}
	return C.uint64_t(ms)
}

// Enqueue adds a job and returns its id. WithDelay and WithPriority apply;
// WithKey does not.
func (c *Client) Enqueue(ctx context.Context, queue string, payload []byte, opts ...MsgOption) (uint64, error) {
	const op = "enqueue"
	cfg := buildMsg(payload, opts)
	if cfg.msg.Key != nil || len(cfg.publish) > 0 {
		return 0, goError(op, ErrInvalidArgument, "WithKey, WithTier, WithRequireAck and WithPublishTimeout apply to Publish only")
	}
	if cfg.delay < 0 {
		return 0, goError(op, ErrInvalidArgument, "negative delay")
	}
	if err := firstErr(checkString(op, "queue", queue), checkMsg(op, &cfg.msg)); err != nil {
		return 0, err
	}
	var id uint64
	a, cname, cm := oneMsg(queue, &cfg.msg)
	err := c.doOwned(ctx, op, a.free, func(p *C.fm_client) error {
		var out C.uint64_t
		err := call(op, func() C.fm_status {
			return C.fm_queue_enqueue(p, cname, cm, millis(cfg.delay), C.int32_t(cfg.priority), &out)
		})
		id = uint64(out)
		return err
	})
	if err != nil {
		return 0, err
	}
	return id, nil
}

// poll runs a native long-poll in slices of at most waitSlice, so ctx and
// Close are honoured promptly without abandoning a call that could reserve
// jobs nobody would see. try gets the slice length and reports whether it
// produced a result.
func (c *Client) poll(ctx context.Context, op string, wait time.Duration, try func(p *C.fm_client, ms C.uint64_t) (bool, error)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p, err := c.acquire(op)
	if err != nil {
		return err
	}
	defer c.release()
	until := time.Now().Add(wait)
	for first := true; ; first = false {
		if !first {
			if err := ctx.Err(); err != nil {
				return err
			}
			select {
			case <-c.closing:
				return goError(op, ErrClosed, "client closed while waiting")
			default:
			}
		}
		// The first try always happens, so wait 0 means "try once".
		d, over := sliceWait(ctx, until)
		if over && !first {
			if d, ok := ctx.Deadline(); ok && !d.After(until) {
				// ctx's deadline bounded the wait; its timer may not have
				// fired yet, so report the deadline rather than ErrTimeout.
				return context.DeadlineExceeded
			}
			return goError(op, ErrTimeout, "nothing arrived within the wait")
		}
		ok, err := try(p, millis(d))
		if ok || err != nil {
			return err
		}
	}
}

// Reserve takes the next ready job, hiding it from others for visibility
// (0: the library default of 30s).
// It waits up to wait (bounded by ctx's deadline) for one to arrive; when
// none does it returns ErrTimeout, or ctx.Err() if ctx ended first.
func (c *Client) Reserve(ctx context.Context, queue string, visibility, wait time.Duration) (*Job, error) {
	const op = "reserve"
	if err := checkString(op, "queue", queue); err != nil {
		return nil, err
	}
	cq := C.CString(queue)
	defer C.free(unsafe.Pointer(cq))
	var job *Job
	err := c.poll(ctx, op, wait, func(p *C.fm_client, ms C.uint64_t) (bool, error) {
		var j *C.fm_job
		err := call(op, func() C.fm_status { return C.fm_queue_reserve(p, cq, millis(visibility), ms, &j) })
		if err != nil || j == nil {
			return false, err
		}
		job = c.goJob(queue, j)
		C.fm_job_free(j)
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	return job, nil
}

// Receive reserves up to max jobs at once, waiting up to wait (bounded by
// ctx's deadline) for the first. It returns an empty slice when nothing
// arrived.
func (c *Client) Receive(ctx context.Context, queue string, max int, visibility, wait time.Duration) ([]*Job, error) {
	const op = "receive"
	if err := checkString(op, "queue", queue); err != nil {
		return nil, err
	}
	if max <= 0 {
		return nil, goError(op, ErrInvalidArgument, "max must be positive")
	}
	cq := C.CString(queue)
	defer C.free(unsafe.Pointer(cq))
	jobs := []*Job{}
	err := c.poll(ctx, op, wait, func(p *C.fm_client, ms C.uint64_t) (bool, error) {
		var js *C.fm_jobs
		err := call(op, func() C.fm_status {
			return C.fm_queue_receive(p, cq, C.uintptr_t(max), millis(visibility), ms, &js)
		})
		defer C.fm_jobs_free(js)
		if err != nil || js == nil || C.fm_jobs_len(js) == 0 {
			return false, err
		}
		jobs = c.goJobs(queue, js)
		return true, nil
	})
	if isStatus(err, statusTimeout) && ctx.Err() == nil {
		return jobs, nil // a batch call that found nothing is not an error
	}
	if err != nil {
		return nil, err
	}
	return jobs, nil
}

// Ack completes a reserved job.
func (c *Client) Ack(ctx context.Context, queue string, jobID uint64) error {
	return c.jobCall(ctx, "ack", queue, func(p *C.fm_client, cq *C.char) C.fm_status {
		return C.fm_queue_ack(p, cq, C.uint64_t(jobID))
	})
}

// Nack returns a reserved job to the queue, ready again after delay (0: the
// retry policy's backoff); once the policy's max attempts are used up the
// job moves to the dead-letter queue instead.
func (c *Client) Nack(ctx context.Context, queue string, jobID uint64, delay time.Duration) error {
	return c.jobCall(ctx, "nack", queue, func(p *C.fm_client, cq *C.char) C.fm_status {
		return C.fm_queue_nack(p, cq, C.uint64_t(jobID), millis(delay))
	})
}

// DLQReplay moves one dead-lettered job back to the queue.
func (c *Client) DLQReplay(ctx context.Context, queue string, jobID uint64) error {
	return c.jobCall(ctx, "dlq_replay", queue, func(p *C.fm_client, cq *C.char) C.fm_status {
		return C.fm_queue_dlq_replay(p, cq, C.uint64_t(jobID))
	})
}

// jobCall is the shape shared by calls that take only a queue name.
func (c *Client) jobCall(ctx context.Context, op, queue string, f func(p *C.fm_client, cq *C.char) C.fm_status) error {
	if err := checkString(op, "queue", queue); err != nil {
		return err
	}
	return c.do(ctx, op, func(p *C.fm_client) error {
		cq := C.CString(queue)
		defer C.free(unsafe.Pointer(cq))
		return call(op, func() C.fm_status { return f(p, cq) })
	})
}

// QueueStats counts a queue's jobs by state.
type QueueStats struct {
	Pending  uint64 // ready to reserve
	InFlight uint64 // reserved, not yet acked
	Delayed  uint64 // waiting for their delay or backoff
	Dead     uint64 // in the dead-letter queue
}

// Stats returns the queue's counters.
func (c *Client) Stats(ctx context.Context, queue string) (QueueStats, error) {
	var out C.fm_queue_stats
	var st QueueStats
	err := c.jobCall(ctx, "queue_stats", queue, func(p *C.fm_client, cq *C.char) C.fm_status {
		r := C.fm_queue_get_stats(p, cq, &out)
		st = QueueStats{uint64(out.pending), uint64(out.in_flight), uint64(out.delayed), uint64(out.dead)}
		return r
	})
	if err != nil {
		return QueueStats{}, err
	}
	return st, nil
}

// RetryPolicy says how often a nacked or expired job is retried and how
// long to back off before it moves to the dead-letter queue.
type RetryPolicy struct {
	MaxAttempts    uint32
	InitialBackoff time.Duration
	MaxBackoff     time.Duration
	Multiplier     float64
}

// SetRetryPolicy sets the queue's retry policy.
func (c *Client) SetRetryPolicy(ctx context.Context, queue string, rp RetryPolicy) error {
	if rp.InitialBackoff < 0 || rp.MaxBackoff < 0 {
		return goError("set_retry_policy", ErrInvalidArgument, "negative backoff")
	}
	return c.jobCall(ctx, "set_retry_policy", queue, func(p *C.fm_client, cq *C.char) C.fm_status {
		return C.fm_queue_set_retry_policy(p, cq, C.uint32_t(rp.MaxAttempts),
			C.uint64_t(rp.InitialBackoff.Milliseconds()), C.uint64_t(rp.MaxBackoff.Milliseconds()),
			C.double(rp.Multiplier))
	})
}

// RetryPolicy returns the queue's retry policy.
func (c *Client) RetryPolicy(ctx context.Context, queue string) (RetryPolicy, error) {
	var rp RetryPolicy
	err := c.jobCall(ctx, "get_retry_policy", queue, func(p *C.fm_client, cq *C.char) C.fm_status {
		var out C.fm_retry_policy
		r := C.fm_queue_get_retry_policy(p, cq, &out)
		rp = RetryPolicy{
			MaxAttempts:    uint32(out.max_attempts),
			InitialBackoff: time.Duration(out.initial_backoff_ms) * time.Millisecond,
			MaxBackoff:     time.Duration(out.max_backoff_ms) * time.Millisecond,
			Multiplier:     float64(out.multiplier),
		}
		return r
	})
	if err != nil {
		return RetryPolicy{}, err
	}
	return rp, nil
}

// DLQList returns up to max dead-lettered jobs (0: all), oldest first.
func (c *Client) DLQList(ctx context.Context, queue string, max int) ([]*Job, error) {
	if max < 0 {
		return nil, goError("dlq_list", ErrInvalidArgument, "max must not be negative")
	}
	var jobs []*Job
	err := c.jobCall(ctx, "dlq_list", queue, func(p *C.fm_client, cq *C.char) C.fm_status {
		var js *C.fm_jobs
		r := C.fm_queue_dlq_list(p, cq, C.uintptr_t(max), &js)
		if r == statusOK {
			jobs = c.goJobs(queue, js)
		}
		C.fm_jobs_free(js)
		return r
	})
	if err != nil {
		return nil, err
	}
	return jobs, nil
}

// DLQReplayAll moves every dead-lettered job back to the queue and returns
// how many moved.
func (c *Client) DLQReplayAll(ctx context.Context, queue string) (uint64, error) {
	return c.dlqReplayAll(ctx, queue, nil, nil)
}

// DLQReplayWhere replays the dead-lettered jobs whose header key equals value.
func (c *Client) DLQReplayWhere(ctx context.Context, queue, key, value string) (uint64, error) {
	if err := checkString("dlq_replay_all", "header", key+value); err != nil {
		return 0, err
	}
	return c.dlqReplayAll(ctx, queue, &key, &value)
}

func (c *Client) dlqReplayAll(ctx context.Context, queue string, key, value *string) (uint64, error) {
	var n uint64
	err := c.jobCall(ctx, "dlq_replay_all", queue, func(p *C.fm_client, cq *C.char) C.fm_status {
		var ck, cv *C.char
		if key != nil {
			ck, cv = C.CString(*key), C.CString(*value)
			defer C.free(unsafe.Pointer(ck))
			defer C.free(unsafe.Pointer(cv))
		}
		var out C.uint64_t
		r := C.fm_queue_dlq_replay_all(p, cq, ck, cv, &out)
		n = uint64(out)
		return r
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}
