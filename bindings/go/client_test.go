package flowmesh

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestVersion(t *testing.T) {
	if v := Version(); !regexp.MustCompile(`^\d+\.\d+\.\d+`).MatchString(v) {
		t.Fatalf("Version() = %q", v)
	}
}

func TestConnectErrors(t *testing.T) {
	ctx := ctxT(t)
	if _, err := Connect(ctx, "bogus://x"); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("bad scheme: %v", err)
	}
	_, err := Connect(ctx, "mem://", WithOption("no_such_option", "1"))
	if !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("unknown option: %v", err)
	}
	var fe *Error
	if !errors.As(err, &fe) || fe.Code != 1 || fe.Status == "" || fe.Op != "connect" {
		t.Fatalf("error fields %+v", fe)
	}
	if _, err := Connect(ctx, "mem\x00://"); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("NUL in URL: %v", err)
	}
	cctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Connect(cctx, "mem://"); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled ctx: %v", err)
	}
}

// Every status code maps to its own sentinel and native name.
func TestStatusMapping(t *testing.T) {
	all := []error{ErrInvalidArgument, ErrNotFound, ErrTimeout, ErrDisconnected, ErrUnauthorized,
		ErrClosed, ErrAlreadyExists, ErrConflict, ErrTooLarge, ErrUnavailable, ErrInternal}
	names := map[string]bool{}
	for i, s := range all {
		err := codeError("op", i+1, "detail")
		if !errors.Is(err, s) {
			t.Fatalf("code %d does not match %v", i+1, s)
		}
		for j, o := range all {
			if j != i && errors.Is(err, o) {
				t.Fatalf("code %d also matches %v", i+1, o)
			}
		}
		fe := err.(*Error)
		if fe.Status == "" || names[fe.Status] || !strings.Contains(err.Error(), "detail") {
			t.Fatalf("code %d: %+v %q", i+1, fe, err)
		}
		names[fe.Status] = true
	}
	if codeError("op", 0, "") != nil {
		t.Fatal("FM_OK is an error")
	}
	if err := codeError("op", 999, ""); !errors.Is(err, ErrInternal) {
		t.Fatalf("unknown code: %v", err)
	}
}

func TestTenantNamespace(t *testing.T) {
	forEachEngine(t, func(t *testing.T, c *Client) {
		ctx := ctxT(t)
		s := uniq("tn")
		// A fully qualified name reaches the same stream as a bare one on a
		// client whose defaults match.
		must(c.Publish(ctx, "acme/billing/"+s, []byte("x"))).get(t)
		if _, err := c.Read(ctx, s, 0, 0, 10); !errors.Is(err, ErrNotFound) {
			t.Fatalf("default tenant sees acme's stream: %v", err)
		}
	})
	ctx := ctxT(t)
	c := connect(t, "mem://", WithTenant("acme"), WithNamespace("billing"))
	must(c.Publish(ctx, "inv", []byte("x"))).get(t)
	if msgs := must(c.Read(ctx, "acme/billing/inv", 0, 0, 10)).get(t); len(msgs) != 1 {
		t.Fatalf("qualified read: %d", len(msgs))
	}
}

func TestErrorSentinels(t *testing.T) {
	forEachEngine(t, func(t *testing.T, c *Client) {
		ctx := ctxT(t)
		check := func(what string, err, want error) {
			t.Helper()
			if !errors.Is(err, want) {
				t.Fatalf("%s: got %v, want %v", what, err, want)
			}
			var fe *Error
			if !errors.As(err, &fe) {
				t.Fatalf("%s: %T is not *Error", what, err)
			}
		}
		_, err := c.Publish(ctx, "bad name!", []byte("x"))
		check("invalid stream name", err, ErrInvalidArgument)
		_, err = c.Publish(ctx, "a/b", []byte("x"))
		check("two-segment name", err, ErrInvalidArgument)
		_, err = c.Set(ctx, "..", "k", []byte("x"))
		check("bucket ..", err, ErrInvalidArgument)
		_, err = c.Publish(ctx, uniq("s"), []byte("x"), WithHeader("k\x00", "v"))
		check("NUL header", err, ErrInvalidArgument)
		_, err = c.Publish(ctx, uniq("s"), []byte("x"), WithDelay(time.Second))
		check("delay on publish", err, ErrInvalidArgument)
		_, err = c.Read(ctx, uniq("never"), 0, 0, 10)
		check("read missing stream", err, ErrNotFound)
		_, err = c.LatestOffset(ctx, uniq("never"), 0)
		check("latest of missing stream", err, ErrNotFound)
		_, err = c.Get(ctx, uniq("b"), "missing")
		check("missing key", err, ErrNotFound)
		b := uniq("b")
		must(c.Set(ctx, b, "k", []byte("1"))).get(t)
		_, err = c.CAS(ctx, b, "k", []byte("2"), 0)
		check("cas conflict", err, ErrConflict)
		var fe *Error
		errors.As(err, &fe)
		if fe.Detail == "" {
			t.Logf("note: no native detail for conflict (%v)", err)
		}
	})
}

func TestTooLarge(t *testing.T) {
	for _, e := range engines() {
		t.Run(e.name, func(t *testing.T) {
			ctx := ctxT(t)
			c := connect(t, e.url(t), WithMaxPayload(1024))
			must(c.Publish(ctx, uniq("s"), make([]byte, 1024))).get(t)
			_, err := c.Publish(ctx, uniq("s"), make([]byte, 1025))
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("publish 1025 bytes: %v", err)
			}
			_, err = c.Enqueue(ctx, uniq("q"), make([]byte, 4096))
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("enqueue 4096 bytes: %v", err)
			}
			if !strings.Contains(err.Error(), "too large") {
				t.Fatalf("message %q", err)
			}
		})
	}
}

func TestClosed(t *testing.T) {
	forEachEngine(t, func(t *testing.T, c *Client) {
		ctx := ctxT(t)
		ok(t, c.Close())
		ok(t, c.Close()) // idempotent
		calls := map[string]error{}
		_, calls["publish"] = c.Publish(ctx, "s", nil)
		_, calls["publish_async"] = c.PublishAsync(ctx, "s", nil)
		_, calls["batch"] = c.PublishBatch(ctx, "s", []Message{{}})
		calls["flush"] = c.Flush(ctx)
		_, calls["read"] = c.Read(ctx, "s", 0, 0, 1)
		_, calls["subscribe"] = c.Subscribe(ctx, "s", func(*Message) {})
		_, _, calls["subscribe_chan"] = c.SubscribeChan(ctx, "s")
		_, calls["enqueue"] = c.Enqueue(ctx, "q", nil)
		_, calls["reserve"] = c.Reserve(ctx, "q", time.Second, time.Second)
		_, calls["stats"] = c.Stats(ctx, "q")
		_, calls["get"] = c.Get(ctx, "b", "k")
		_, calls["watch"] = c.Watch(ctx, "b", "", func(KVEvent) {})
		calls["health"] = c.Health(ctx)
		for name, err := range calls {
			if !errors.Is(err, ErrClosed) {
				t.Errorf("%s after Close: %v", name, err)
			}
		}
	})
}

func TestContextCancelDeadline(t *testing.T) {
	forEachEngine(t, func(t *testing.T, c *Client) {
		q := uniq("ctxq")
		// Deadline shorter than the wait: the deadline wins, promptly.
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		start := time.Now()
		_, err := c.Reserve(ctx, q, time.Minute, 10*time.Second)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Reserve past deadline: %v", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("deadline noticed after %v", d)
		}
		// Cancel during a long poll.
		ctx, cancel = context.WithCancel(context.Background())
		go func() { time.Sleep(100 * time.Millisecond); cancel() }()
		start = time.Now()
		_, err = c.Receive(ctx, q, 5, time.Minute, 10*time.Second)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Receive cancelled: %v", err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("cancel noticed after %v", d)
		}
		// No job was reserved and lost by the cancelled polls.
		must(c.Enqueue(ctxT(t), q, []byte("x"))).get(t)
		if st := must(c.Stats(ctxT(t), q)).get(t); st.InFlight != 0 || st.Pending != 1 {
			t.Fatalf("stats %+v", st)
		}
		// An already cancelled context fails every call before it starts.
		if _, err := c.Publish(ctx, q, nil); !errors.Is(err, context.Canceled) {
			t.Fatalf("Publish: %v", err)
		}
		if _, err := c.Get(ctx, "b", "k"); !errors.Is(err, context.Canceled) {
			t.Fatalf("Get: %v", err)
		}
		if err := c.Flush(ctx); !errors.Is(err, context.Canceled) {
			t.Fatalf("Flush: %v", err)
		}
		// A live deadline lets calls through.
		dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer dcancel()
		must(c.Publish(dctx, uniq("s"), []byte("x"))).get(t)
		must(c.Set(dctx, uniq("b"), "k", []byte("x"))).get(t)
		ok(t, c.Flush(dctx))
		ok(t, c.Health(dctx))
	})
}

// Close ends subscriptions, watches and waits; no goroutine stays behind.
func TestCloseLeavesNoGoroutines(t *testing.T) {
	for _, e := range engines() {
		t.Run(e.name, func(t *testing.T) {
			url := e.url(t)
			before := settleGoroutines(0, 100*time.Millisecond)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := Connect(ctx, url)
			ok(t, err)
			s := uniq("leak")
			must(c.Subscribe(ctx, s, func(*Message) { time.Sleep(time.Millisecond) }, StartEarliest())).get(t)
			sub, ch := must2(t)(c.SubscribeChan(ctx, s, StartEarliest(), WithBuffer(1)))
			wsub, wch, err := c.WatchChan(ctx, uniq("b"), "", 1)
			ok(t, err)
			var futures []*PublishFuture
			for i := 0; i < 20; i++ {
				futures = append(futures, must(c.PublishAsync(ctx, s, []byte("x"))).get(t))
				must(c.Publish(ctx, s, []byte("y"))).get(t)
			}
			// A long poll in progress when Close starts returns ErrClosed.
			pollErr := make(chan error, 1)
			go func() {
				_, err := c.Reserve(ctx, uniq("q"), time.Minute, 8*time.Second)
				pollErr <- err
			}()
			time.Sleep(50 * time.Millisecond)
			ok(t, c.Close()) // the channel reader is blocked: Close must still return
			if err := <-pollErr; !errors.Is(err, ErrClosed) {
				t.Fatalf("long poll during Close: %v", err)
			}
			for range ch {
			}
			for range wch {
			}
			<-sub.Done()
			<-wsub.Done()
			for i, f := range futures {
				select {
				case <-f.Done():
				default:
					t.Fatalf("future %d unresolved after Close", i)
				}
			}
			if g := settleGoroutines(before, 2*time.Second); g > before {
				t.Fatalf("%d goroutines after Close, %d before", g, before)
			}
		})
	}
}

// Calls abandoned by a cancelled context finish in the background without
// touching the caller's (reused) buffers, and Close waits for them.
func TestCancelRacingCalls(t *testing.T) {
	forEachEngine(t, func(t *testing.T, c *Client) {
		s := uniq("race")
		buf := []byte("payload")
		succeeded := 0
		for i := 0; i < 200; i++ {
			ctx, cancel := context.WithCancel(context.Background())
			if i%2 == 0 {
				cancel()
			} else {
				go cancel()
			}
			_, err := c.Publish(ctx, s, buf)
			switch {
			case err == nil:
				succeeded++
			case !errors.Is(err, context.Canceled):
				t.Fatalf("publish: %v", err)
			}
			copy(buf, "PAYLOAD") // reuse the buffer at once
			copy(buf, "payload")
			cancel()
		}
		ok(t, c.Flush(ctxT(t)))
		if succeeded > 0 {
			msgs := must(c.Read(ctxT(t), s, 0, 0, 1000)).get(t)
			if len(msgs) < succeeded {
				t.Fatalf("%d stored, %d acknowledged", len(msgs), succeeded)
			}
			for _, m := range msgs {
				if string(m.Payload) != "payload" {
					t.Fatalf("stored %q", m.Payload)
				}
			}
		}
		ok(t, c.Close())
	})
}

func TestConnectOptionsHealth(t *testing.T) {
	forEachEngine(t, func(t *testing.T, c *Client) {
		ctx := ctxT(t)
		ok(t, c.Health(ctx))
		ok(t, c.Readiness(ctx))
	})
	ctx := ctxT(t)
	c := connect(t, "file://"+t.TempDir(), WithFsync("batch"), WithWorkerThreads(2),
		WithConnectTimeout(time.Second), WithRequestTimeout(5*time.Second), WithMaxPayload(1<<20))
	must(c.Publish(ctx, "s", []byte("x"))).get(t)
	if _, err := Connect(ctx, "mem://", WithFsync("sometimes")); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("bad fsync value: %v", err)
	}
	// A named mem:// store is shared by the clients of this process.
	name := "mem://" + uniq("shared")
	a, b := connect(t, name), connect(t, name)
	must(a.Set(ctx, "b", "k", []byte("v"))).get(t)
	if v := must(b.Get(ctx, "b", "k")).get(t); string(v) != "v" {
		t.Fatalf("shared mem store: %q", v)
	}
}

// Losing the broker turns calls into ErrDisconnected/ErrUnavailable/
// ErrTimeout (never a hang), and Close still cleans up everything.
func TestBrokerLoss(t *testing.T) {
	if brokerURL == "" {
		t.Skip("remote engine: " + brokerSkip)
	}
	url, stop, err := spawnBroker("", "mem://")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	before := settleGoroutines(0, 100*time.Millisecond)
	ctx := ctxT(t)
	c, err := Connect(ctx, url, WithRequestTimeout(2*time.Second), WithConnectTimeout(time.Second))
	ok(t, err)
	s := uniq("loss")
	sub, ch := must2(t)(c.SubscribeChan(ctx, s, StartEarliest()))
	must(c.Publish(ctx, s, []byte("before"))).get(t)
	if m := recv(t, ch); string(m.Payload) != "before" {
		t.Fatalf("got %q", m.Payload)
	}
	stop()
	start := time.Now()
	_, err = c.Publish(ctx, s, []byte("after"))
	if !errors.Is(err, ErrDisconnected) && !errors.Is(err, ErrUnavailable) && !errors.Is(err, ErrTimeout) {
		t.Fatalf("publish to a dead broker: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("failure took %v", d)
	}
	if err := c.Health(ctx); err == nil {
		t.Fatal("Health OK with the broker gone")
	}
	ok(t, c.Close())
	<-sub.Done()
	if g := settleGoroutines(before, 2*time.Second); g > before {
		t.Fatalf("%d goroutines after Close, %d before", g, before)
	}
}

// A client outlives a broker restart: calls fail while it is down and work
// again once it is back on the same address.
func TestBrokerRestart(t *testing.T) {
	if brokerURL == "" {
		t.Skip("remote engine: " + brokerSkip)
	}
	url, stop, err := spawnBroker("", "mem://")
	if err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t)
	c := connect(t, url, WithRequestTimeout(2*time.Second), WithConnectTimeout(time.Second))
	must(c.Set(ctx, "b", "k", []byte("1"))).get(t)
	stop()
	if _, err := c.Get(ctx, "b", "k"); err == nil {
		t.Fatal("Get succeeded with the broker down")
	}
	_, stop2, err := spawnBroker(strings.TrimPrefix(url, "grpc://"), "mem://")
	if err != nil {
		t.Fatal(err)
	}
	defer stop2()
	eventually(t, 10*time.Second, "reconnect", func() bool {
		_, err := c.Set(ctx, "b", "k", []byte("2"))
		return err == nil
	})
	if v := must(c.Get(ctx, "b", "k")).get(t); string(v) != "2" {
		t.Fatalf("after restart: %q", v)
	}
}
