package flowmesh

import (
	"errors"
	"reflect"
	"testing"
	"time"
)

// forEachEngineNS runs f once per engine with a client whose namespace is
// the test's own, so listings see only what the test created (the broker
// is shared by the whole run). It returns the qualified-name prefix.
func forEachEngineNS(t *testing.T, f func(t *testing.T, c *Client, qual string)) {
	t.Helper()
	for _, e := range engines() {
		t.Run(e.name, func(t *testing.T) {
			ns := uniq("lc")
			c := connect(t, e.url(t), WithTenant("acme"), WithNamespace(ns))
			f(t, c, "acme/"+ns+"/")
		})
	}
}

func TestLifecycleStreams(t *testing.T) {
	forEachEngineNS(t, func(t *testing.T, c *Client, q string) {
		ctx := ctxT(t)
		if got := must(c.ListStreams(ctx, "")).get(t); len(got) != 0 {
			t.Fatalf("fresh namespace lists %v", got)
		}
		for _, s := range []string{"orders", "orders-eu", "users"} {
			for i := 0; i < 3; i++ {
				must(c.Publish(ctx, s, []byte("x"))).get(t)
			}
		}
		want := []string{q + "orders", q + "orders-eu", q + "users"}
		if got := must(c.ListStreams(ctx, "")).get(t); !reflect.DeepEqual(got, want) {
			t.Fatalf("ListStreams = %v, want %v", got, want)
		}
		if got := must(c.ListStreams(ctx, "orders")).get(t); !reflect.DeepEqual(got, want[:2]) {
			t.Fatalf("ListStreams(orders) = %v", got)
		}
		if n := must(c.PurgeStream(ctx, "orders")).get(t); n != 3 {
			t.Fatalf("PurgeStream removed %d, want 3", n)
		}
		// Offsets continue after a purge.
		if pos := must(c.Publish(ctx, "orders", []byte("y"))).get(t); pos.Offset != 3 {
			t.Fatalf("offset after purge %d, want 3", pos.Offset)
		}
		ok(t, c.DeleteStream(ctx, "orders-eu"))
		if err := c.DeleteStream(ctx, "orders-eu"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("second DeleteStream: %v", err)
		}
		if _, err := c.PurgeStream(ctx, "missing"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("PurgeStream missing: %v", err)
		}
		if got := must(c.ListStreams(ctx, "")).get(t); !reflect.DeepEqual(got, []string{q + "orders", q + "users"}) {
			t.Fatalf("after delete: %v", got)
		}
		if _, err := c.ListStreams(ctx, "bad prefix"); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("bad prefix: %v", err)
		}
	})
}

func TestLifecycleDeleteEndsSubscription(t *testing.T) {
	forEachEngineNS(t, func(t *testing.T, c *Client, _ string) {
		ctx := ctxT(t)
		must(c.Publish(ctx, "s", []byte("a"))).get(t)
		got := make(chan struct{}, 16)
		sub := must(c.Subscribe(ctx, "s", func(*Message) { got <- struct{}{} }, StartEarliest())).get(t)
		defer sub.Unsubscribe()
		select {
		case <-got:
		case <-time.After(10 * time.Second):
			t.Fatal("no message before the delete")
		}
		ok(t, c.DeleteStream(ctx, "s"))
		select {
		case <-sub.Done():
		case <-time.After(30 * time.Second):
			t.Fatal("subscription did not end after the delete")
		}
		if err := sub.Err(); !errors.Is(err, ErrNotFound) {
			t.Fatalf("subscription ended with %v, want ErrNotFound", err)
		}
	})
}

func TestLifecycleUpdateStream(t *testing.T) {
	forEachEngineNS(t, func(t *testing.T, c *Client, _ string) {
		ctx := ctxT(t)
		ok(t, c.CreateStream(ctx, "s", WithPartitions(1)))
		ok(t, c.UpdateStream(ctx, "s", WithPartitions(3), WithMaxMessages(100)))
		if n := must(c.Partitions(ctx, "s")).get(t); n != 3 {
			t.Fatalf("partitions %d after update", n)
		}
		if err := c.UpdateStream(ctx, "s", WithPartitions(2)); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("shrinking: %v", err)
		}
		if err := c.UpdateStream(ctx, "s"); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("nothing to change: %v", err)
		}
		if err := c.UpdateStream(ctx, "missing", WithMaxAge(time.Minute)); !errors.Is(err, ErrNotFound) {
			t.Fatalf("missing stream: %v", err)
		}
	})
}

func TestLifecycleQueues(t *testing.T) {
	forEachEngineNS(t, func(t *testing.T, c *Client, q string) {
		ctx := ctxT(t)
		for i := 0; i < 4; i++ {
			must(c.Enqueue(ctx, "jobs", []byte("j"))).get(t)
		}
		must(c.Enqueue(ctx, "jobs", []byte("later"), WithDelay(time.Hour))).get(t)
		must(c.Enqueue(ctx, "other", []byte("x"))).get(t)
		if got := must(c.ListQueues(ctx, "")).get(t); !reflect.DeepEqual(got, []string{q + "jobs", q + "other"}) {
			t.Fatalf("ListQueues = %v", got)
		}
		held := must(c.Reserve(ctx, "jobs", time.Minute, 0)).get(t)
		if held == nil {
			t.Fatal("no job to reserve")
		}
		// Pending and delayed jobs go; the one in flight stays with its worker.
		if n := must(c.PurgeQueue(ctx, "jobs")).get(t); n != 4 {
			t.Fatalf("PurgeQueue removed %d, want 4", n)
		}
		ok(t, held.Ack(ctx))
		if j, err := c.Reserve(ctx, "jobs", time.Minute, 0); !errors.Is(err, ErrTimeout) {
			t.Fatalf("after purge: job %v, %v; want ErrTimeout (none left)", j, err)
		}
		ok(t, c.DeleteQueue(ctx, "other"))
		if err := c.DeleteQueue(ctx, "other"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("second DeleteQueue: %v", err)
		}
		if _, err := c.PurgeQueue(ctx, "other"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("PurgeQueue deleted: %v", err)
		}
	})
}

func TestLifecycleExtend(t *testing.T) {
	forEachEngineNS(t, func(t *testing.T, c *Client, _ string) {
		ctx := ctxT(t)
		must(c.Enqueue(ctx, "q", []byte("long job"))).get(t)
		job := must(c.Reserve(ctx, "q", 300*time.Millisecond, 0)).get(t)
		if job == nil {
			t.Fatal("no job")
		}
		ok(t, job.Extend(ctx, 2*time.Minute))
		time.Sleep(600 * time.Millisecond) // past the first visibility: still ours
		if j, err := c.Reserve(ctx, "q", time.Minute, 0); !errors.Is(err, ErrTimeout) {
			t.Fatalf("extended job: %v, %v; want ErrTimeout (not redelivered)", j, err)
		}
		ok(t, c.Extend(ctx, "q", job.ID, 200*time.Millisecond))
		time.Sleep(600 * time.Millisecond)
		if err := job.Extend(ctx, 10*time.Second); !errors.Is(err, ErrConflict) {
			t.Fatalf("extend after the visibility ran out: %v, want ErrConflict", err)
		}
		again := must(c.Reserve(ctx, "q", time.Minute, 10*time.Second)).get(t)
		if again == nil || again.ID != job.ID {
			t.Fatalf("redelivery %+v", again)
		}
		ok(t, again.Ack(ctx))
		if err := job.Extend(ctx, 10*time.Second); !errors.Is(err, ErrNotFound) {
			t.Fatalf("extend after ack: %v, want ErrNotFound", err)
		}
		if err := job.Extend(ctx, 0); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("extend by 0: %v", err)
		}
	})
}

func TestLifecycleBuckets(t *testing.T) {
	forEachEngineNS(t, func(t *testing.T, c *Client, q string) {
		ctx := ctxT(t)
		must(c.Set(ctx, "config", "a", []byte("1"))).get(t)
		must(c.Set(ctx, "cache", "b", []byte("2"))).get(t)
		if got := must(c.ListBuckets(ctx, "")).get(t); !reflect.DeepEqual(got, []string{q + "cache", q + "config"}) {
			t.Fatalf("ListBuckets = %v", got)
		}
		if got := must(c.ListBuckets(ctx, "con")).get(t); !reflect.DeepEqual(got, []string{q + "config"}) {
			t.Fatalf("ListBuckets(con) = %v", got)
		}
		ok(t, c.DeleteBucket(ctx, "cache"))
		if err := c.DeleteBucket(ctx, "cache"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("second DeleteBucket: %v", err)
		}
		if _, err := c.Get(ctx, "cache", "b"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("key after bucket delete: %v", err)
		}
	})
}
