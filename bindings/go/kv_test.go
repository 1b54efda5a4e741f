package flowmesh

import (
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"
)

func TestKVSetGet(t *testing.T) {
	forEachEngine(t, func(t *testing.T, c *Client) {
		ctx := ctxT(t)
		b := uniq("cfg")
		r1 := must(c.Set(ctx, b, "k", []byte("v1"))).get(t)
		r2 := must(c.Set(ctx, b, "k", []byte("v2"))).get(t)
		if r2 <= r1 {
			t.Fatalf("revisions %d then %d", r1, r2)
		}
		if v := must(c.Get(ctx, b, "k")).get(t); string(v) != "v2" {
			t.Fatalf("Get %q", v)
		}
		e := must(c.GetEntry(ctx, b, "k")).get(t)
		if e.Revision != r2 || string(e.Value) != "v2" || e.Key != "k" {
			t.Fatalf("entry %+v", e)
		}
		must(c.Set(ctx, b, "empty", nil)).get(t)
		if v := must(c.Get(ctx, b, "empty")).get(t); v == nil || len(v) != 0 {
			t.Fatalf("empty value %v", v)
		}
		if ex := must(c.Exists(ctx, b, "k")).get(t); !ex {
			t.Fatal("Exists false")
		}
		ok(t, c.Delete(ctx, b, "k"))
		ok(t, c.Delete(ctx, b, "k")) // absent: fine
		if ex := must(c.Exists(ctx, b, "k")).get(t); ex {
			t.Fatal("Exists after delete")
		}
		if _, err := c.Get(ctx, b, "k"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get deleted: %v", err)
		}
		if _, err := c.GetEntry(ctx, b, "nope"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("GetEntry missing: %v", err)
		}
	})
}

func TestKVTTL(t *testing.T) {
	forEachEngine(t, func(t *testing.T, c *Client) {
		ctx := ctxT(t)
		b := uniq("ttl")
		must(c.Set(ctx, b, "short", []byte("x"), WithTTL(100*time.Millisecond))).get(t)
		must(c.Set(ctx, b, "long", []byte("y"), WithTTL(time.Hour))).get(t)
		if v := must(c.Get(ctx, b, "short")).get(t); string(v) != "x" {
			t.Fatalf("before expiry %q", v)
		}
		eventually(t, 5*time.Second, "expiry", func() bool {
			_, err := c.Get(ctx, b, "short")
			return errors.Is(err, ErrNotFound)
		})
		if ex := must(c.Exists(ctx, b, "short")).get(t); ex {
			t.Fatal("expired key exists")
		}
		if v := must(c.Get(ctx, b, "long")).get(t); string(v) != "y" {
			t.Fatal("long TTL key gone")
		}
	})
}

func TestKVListKeys(t *testing.T) {
	forEachEngine(t, func(t *testing.T, c *Client) {
		ctx := ctxT(t)
		b := uniq("list")
		for _, k := range []string{"user.3", "user.1", "order.1", "user.2"} {
			must(c.Set(ctx, b, k, []byte(k))).get(t)
		}
		if got := must(c.ListKeys(ctx, b, "user.")).get(t); !reflect.DeepEqual(got, []string{"user.1", "user.2", "user.3"}) {
			t.Fatalf("ListKeys user.: %v", got)
		}
		if got := must(c.ListKeys(ctx, b, "")).get(t); len(got) != 4 || got[0] != "order.1" {
			t.Fatalf("ListKeys all: %v", got)
		}
		if got := must(c.ListKeys(ctx, b, "zzz")).get(t); len(got) != 0 {
			t.Fatalf("ListKeys none: %v", got)
		}
	})
}

func TestKVCAS(t *testing.T) {
	forEachEngine(t, func(t *testing.T, c *Client) {
		ctx := ctxT(t)
		b := uniq("cas")
		r1 := must(c.CAS(ctx, b, "lock", []byte("a"), 0)).get(t)
		if _, err := c.CAS(ctx, b, "lock", []byte("b"), 0); !errors.Is(err, ErrConflict) {
			t.Fatalf("create twice: %v", err)
		}
		if _, err := c.CAS(ctx, b, "lock", []byte("b"), r1+100); !errors.Is(err, ErrConflict) {
			t.Fatalf("wrong revision: %v", err)
		}
		r2 := must(c.CAS(ctx, b, "lock", []byte("b"), r1)).get(t)
		if r2 <= r1 {
			t.Fatalf("revision %d after %d", r2, r1)
		}
		if e := must(c.GetEntry(ctx, b, "lock")).get(t); string(e.Value) != "b" || e.Revision != r2 {
			t.Fatalf("entry %+v", e)
		}
		// Racing CAS increments: exactly one winner per revision, none lost.
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins := 0
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 10; {
					e, err := c.GetEntry(ctx, b, "lock")
					if err != nil {
						t.Error(err)
						return
					}
					_, err = c.CAS(ctx, b, "lock", []byte("x"), e.Revision)
					if errors.Is(err, ErrConflict) {
						continue
					}
					if err != nil {
						t.Error(err)
						return
					}
					i++
					mu.Lock()
					wins++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		e := must(c.GetEntry(ctx, b, "lock")).get(t)
		if wins != 80 || e.Revision <= r2 {
			t.Fatalf("%d wins, revision %d", wins, e.Revision)
		}
	})
}

func TestKVWatch(t *testing.T) {
	forEachEngine(t, func(t *testing.T, c *Client) {
		ctx := ctxT(t)
		b := uniq("watch")
		sub, ch, err := c.WatchChan(ctx, b, "app.", 0)
		ok(t, err)
		r1 := must(c.Set(ctx, b, "app.x", []byte("1"))).get(t)
		must(c.Set(ctx, b, "other", []byte("ignored"))).get(t)
		ok(t, c.Delete(ctx, b, "app.x"))
		must(c.Set(ctx, b, "app.ttl", []byte("t"), WithTTL(50*time.Millisecond))).get(t)
		want := []KVEvent{
			{KVPut, "app.x", []byte("1"), r1},
			{Op: KVDelete, Key: "app.x"},
			{Op: KVPut, Key: "app.ttl", Value: []byte("t")},
			{Op: KVExpire, Key: "app.ttl"},
		}
		for i, w := range want {
			var ev KVEvent
			select {
			case ev = <-ch:
			case <-time.After(10 * time.Second):
				t.Fatalf("event %d (%v) missing", i, w.Op)
			}
			if ev.Op != w.Op || ev.Key != w.Key || (w.Value != nil && string(ev.Value) != string(w.Value)) ||
				(w.Revision != 0 && ev.Revision != w.Revision) {
				t.Fatalf("event %d: %+v, want %+v", i, ev, w)
			}
		}
		ok(t, sub.Unsubscribe())
		if _, open := <-ch; open {
			t.Fatal("watch channel open after Unsubscribe")
		}

		// Handler watch that stops itself after the second event.
		var mu sync.Mutex
		var keys []string
		var hw *Subscription
		ready := make(chan struct{})
		hw = must(c.Watch(ctx, b, "", func(ev KVEvent) {
			<-ready
			mu.Lock()
			keys = append(keys, ev.Key)
			n := len(keys)
			mu.Unlock()
			if n == 2 {
				_ = hw.Unsubscribe()
			}
		})).get(t)
		close(ready)
		for _, k := range []string{"a", "b", "c", "d"} {
			must(c.Set(ctx, b, k, []byte(k))).get(t)
		}
		select {
		case <-hw.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("watch did not end")
		}
		time.Sleep(30 * time.Millisecond)
		mu.Lock()
		defer mu.Unlock()
		if !reflect.DeepEqual(keys, []string{"a", "b"}) {
			t.Fatalf("watch saw %v", keys)
		}
	})
}
