package flowmesh

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestQueueEnqueueReserveAck(t *testing.T) {
	forEachEngine(t, func(t *testing.T, c *Client) {
		ctx := ctxT(t)
		q := uniq("jobs")
		id1 := must(c.Enqueue(ctx, q, []byte("a"), WithHeader("tag", "x"))).get(t)
		id2 := must(c.Enqueue(ctx, q, []byte("b"))).get(t)
		if id1 == 0 || id2 <= id1 {
			t.Fatalf("ids %d %d", id1, id2)
		}
		st := must(c.Stats(ctx, q)).get(t)
		if st.Pending != 2 || st.InFlight != 0 {
			t.Fatalf("stats %+v", st)
		}
		j := must(c.Reserve(ctx, q, time.Minute, 0)).get(t)
		if j.ID != id1 || string(j.Payload) != "a" || j.Attempt != 1 || j.Headers["tag"] != "x" || j.Queue != q {
			t.Fatalf("job %+v", j)
		}
		if st := must(c.Stats(ctx, q)).get(t); st.Pending != 1 || st.InFlight != 1 {
			t.Fatalf("stats after reserve %+v", st)
		}
		ok(t, j.Ack(ctx))
		j2 := must(c.Reserve(ctx, q, time.Minute, 0)).get(t)
		ok(t, c.Ack(ctx, q, j2.ID))
		if st := must(c.Stats(ctx, q)).get(t); st != (QueueStats{}) {
			t.Fatalf("stats after acks %+v", st)
		}
		if _, err := c.Reserve(ctx, q, time.Minute, 0); !errors.Is(err, ErrTimeout) {
			t.Fatalf("empty queue: %v", err)
		}
		if err := c.Ack(ctx, q, 9999); !errors.Is(err, ErrNotFound) {
			t.Fatalf("ack unknown job: %v", err)
		}
	})
}

func TestQueuePriorityDelay(t *testing.T) {
	forEachEngine(t, func(t *testing.T, c *Client) {
		ctx := ctxT(t)
		q := uniq("prio")
		must(c.Enqueue(ctx, q, []byte("low"), WithPriority(1))).get(t)
		must(c.Enqueue(ctx, q, []byte("high"), WithPriority(10))).get(t)
		must(c.Enqueue(ctx, q, []byte("later"), WithPriority(100), WithDelay(300*time.Millisecond))).get(t)
		if st := must(c.Stats(ctx, q)).get(t); st.Delayed != 1 || st.Pending != 2 {
			t.Fatalf("stats %+v", st)
		}
		for _, want := range []string{"high", "low"} {
			j := must(c.Reserve(ctx, q, time.Minute, 0)).get(t)
			if string(j.Payload) != want {
				t.Fatalf("got %q, want %q", j.Payload, want)
			}
			if want == "high" && j.Priority != 10 {
				t.Fatalf("priority %d", j.Priority)
			}
			ok(t, j.Ack(ctx))
		}
		start := time.Now()
		j := must(c.Reserve(ctx, q, time.Minute, 5*time.Second)).get(t) // long poll
		if string(j.Payload) != "later" {
			t.Fatalf("got %q", j.Payload)
		}
		if waited := time.Since(start); waited < 100*time.Millisecond {
			t.Fatalf("delayed job ready after %v", waited)
		}
		if _, err := c.Enqueue(ctx, q, nil, WithKey([]byte("k"))); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("WithKey on Enqueue: %v", err)
		}
	})
}

func TestQueueVisibilityNack(t *testing.T) {
	forEachEngine(t, func(t *testing.T, c *Client) {
		ctx := ctxT(t)
		q := uniq("vis")
		id := must(c.Enqueue(ctx, q, []byte("x"))).get(t)
		j := must(c.Reserve(ctx, q, 100*time.Millisecond, 0)).get(t)
		// Not acked: visible again once the visibility timeout ends.
		j2 := must(c.Reserve(ctx, q, time.Minute, 5*time.Second)).get(t)
		if j2.ID != id || j2.Attempt != j.Attempt+1 {
			t.Fatalf("redelivery %+v after %+v", j2, j)
		}
		ok(t, j2.Nack(ctx, 200*time.Millisecond))
		if st := must(c.Stats(ctx, q)).get(t); st.InFlight != 0 || st.Delayed+st.Pending != 1 {
			t.Fatalf("stats after nack %+v", st)
		}
		j3 := must(c.Reserve(ctx, q, time.Minute, 5*time.Second)).get(t)
		if j3.ID != id || j3.Attempt != 3 {
			t.Fatalf("after nack %+v", j3)
		}
		ok(t, c.Ack(ctx, q, j3.ID))
	})
}

func TestQueueReceiveBatch(t *testing.T) {
	forEachEngine(t, func(t *testing.T, c *Client) {
		ctx := ctxT(t)
		q := uniq("batchq")
		for i := 0; i < 5; i++ {
			must(c.Enqueue(ctx, q, []byte(fmt.Sprint(i)))).get(t)
		}
		jobs := must(c.Receive(ctx, q, 3, time.Minute, time.Second)).get(t)
		if len(jobs) != 3 {
			t.Fatalf("received %d", len(jobs))
		}
		rest := must(c.Receive(ctx, q, 10, time.Minute, time.Second)).get(t)
		if len(rest) != 2 {
			t.Fatalf("received %d", len(rest))
		}
		for _, j := range append(jobs, rest...) {
			ok(t, j.Ack(ctx))
		}
		none := must(c.Receive(ctx, q, 10, time.Minute, 50*time.Millisecond)).get(t)
		if len(none) != 0 {
			t.Fatalf("empty queue gave %d", len(none))
		}
		if _, err := c.Receive(ctx, q, 0, time.Minute, 0); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("max 0: %v", err)
		}
	})
}

func TestQueueRetryPolicyDLQ(t *testing.T) {
	forEachEngine(t, func(t *testing.T, c *Client) {
		ctx := ctxT(t)
		q := uniq("dlq")
		rp := RetryPolicy{MaxAttempts: 2, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 40 * time.Millisecond, Multiplier: 2}
		ok(t, c.SetRetryPolicy(ctx, q, rp))
		if got := must(c.RetryPolicy(ctx, q)).get(t); got != rp {
			t.Fatalf("policy %+v, want %+v", got, rp)
		}
		for i, tag := range []string{"a", "b", "a"} {
			must(c.Enqueue(ctx, q, []byte(fmt.Sprint(i)), WithHeader("tag", tag))).get(t)
		}
		// Fail every job twice: the second failure dead-letters it.
		for failures := 0; failures < 6; failures++ {
			j := must(c.Reserve(ctx, q, time.Minute, 5*time.Second)).get(t)
			ok(t, j.Nack(ctx, 0))
		}
		eventually(t, 5*time.Second, "3 dead jobs", func() bool {
			st, err := c.Stats(ctx, q)
			return err == nil && st.Dead == 3
		})
		dead := must(c.DLQList(ctx, q, 10)).get(t)
		if len(dead) != 3 {
			t.Fatalf("DLQ has %d", len(dead))
		}
		if one := must(c.DLQList(ctx, q, 1)).get(t); len(one) != 1 {
			t.Fatalf("DLQList max 1 gave %d", len(one))
		}
		ok(t, c.DLQReplay(ctx, q, dead[0].ID))
		if err := c.DLQReplay(ctx, q, dead[0].ID); !errors.Is(err, ErrNotFound) {
			t.Fatalf("replaying twice: %v", err)
		}
		left := dead[1:]
		wantA := uint64(0)
		for _, j := range left {
			if j.Headers["tag"] == "a" {
				wantA++
			}
		}
		if n := must(c.DLQReplayWhere(ctx, q, "tag", "a")).get(t); n != wantA {
			t.Fatalf("replayed %d tagged a, want %d", n, wantA)
		}
		if n := must(c.DLQReplayAll(ctx, q)).get(t); n != uint64(len(left))-wantA {
			t.Fatalf("replayed %d", n)
		}
		if st := must(c.Stats(ctx, q)).get(t); st.Dead != 0 || st.Pending+st.Delayed != 3 {
			t.Fatalf("stats after replay %+v", st)
		}
	})
}

// Several workers drain a queue concurrently: each job is acked exactly once.
func TestQueueConcurrentWorkers(t *testing.T) {
	forEachEngine(t, func(t *testing.T, c *Client) {
		ctx := ctxT(t)
		q := uniq("work")
		const n = 300
		var pwg sync.WaitGroup
		for p := 0; p < 4; p++ {
			pwg.Add(1)
			go func(p int) {
				defer pwg.Done()
				for i := 0; i < n/4; i++ {
					if _, err := c.Enqueue(ctx, q, []byte(fmt.Sprintf("%d/%d", p, i))); err != nil {
						t.Error(err)
						return
					}
				}
			}(p)
		}
		var mu sync.Mutex
		done := map[string]int{}
		var wg sync.WaitGroup
		for w := 0; w < 6; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					mu.Lock()
					finished := len(done) == n
					mu.Unlock()
					if finished {
						return
					}
					j, err := c.Reserve(ctx, q, time.Minute, 100*time.Millisecond)
					if errors.Is(err, ErrTimeout) {
						continue
					}
					if err != nil {
						t.Error(err)
						return
					}
					if err := j.Ack(ctx); err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					done[string(j.Payload)]++
					mu.Unlock()
				}
			}()
		}
		pwg.Wait()
		wg.Wait()
		for k, v := range done {
			if v != 1 {
				t.Fatalf("job %s processed %d times", k, v)
			}
		}
		if len(done) != n {
			t.Fatalf("processed %d of %d", len(done), n)
		}
	})
}
