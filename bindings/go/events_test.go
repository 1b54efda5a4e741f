package flowmesh

import (
	"bytes"
	"errors"
	"sync"
	"testing"
	"time"
)

// eventEngines: URLs where several clients share data (mem://name, a
// directory, the broker with a namespace of its own).
func eventEngines(t *testing.T, f func(t *testing.T, url string, opts ...Option)) {
	for _, e := range engines() {
		t.Run(e.name, func(t *testing.T) {
			url := e.url(t)
			if url == "mem://" {
				url = "mem://" + uniq("ev")
			}
			f(t, url, WithNamespace(uniq("ns")))
		})
	}
}

type inbox struct {
	mu  sync.Mutex
	evs []*AppEvent
}

func (b *inbox) add(ev *AppEvent) { b.mu.Lock(); b.evs = append(b.evs, ev); b.mu.Unlock() }
func (b *inbox) len() int         { b.mu.Lock(); defer b.mu.Unlock(); return len(b.evs) }
func (b *inbox) at(i int) *AppEvent {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.evs[i]
}

func TestEventsPublishSubscribeControl(t *testing.T) {
	eventEngines(t, func(t *testing.T, url string, ns ...Option) {
		ctx := ctxT(t)
		alice := connect(t, url, append(ns, WithAppID("alice"))...)
		bob := connect(t, url, append(ns, WithAppID("bob"))...)
		var got inbox
		sub := must(bob.SubscribeEvents(ctx, "orders/created", got.add, WithManualAck(), WithAckWait(time.Minute))).get(t)
		id := must(alice.PublishEvent(ctx, "orders/created", []string{"bob"}, []byte("o-1"), `{"k":"v"}`)).get(t)
		eventually(t, 10*time.Second, "first delivery", func() bool { return got.len() == 1 })
		ev := got.at(0)
		if ev.ID != id || ev.Sender != "alice" || ev.Name != "orders/created" || !bytes.Equal(ev.Payload, []byte("o-1")) ||
			ev.Metadata != `{"k":"v"}` || ev.DeliveryCount != 1 || ev.Encrypted || ev.Timestamp.Year() < 2020 {
			t.Fatalf("unexpected event %+v", ev)
		}
		ok(t, sub.Ack(ctx, id))
		if err := sub.Ack(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Fatalf("second ack: %v", err)
		}
		// Defer: back after the delay, not before.
		id2 := must(alice.PublishEvent(ctx, "orders/created", []string{"bob"}, []byte("o-2"), "")).get(t)
		eventually(t, 10*time.Second, "second delivery", func() bool { return got.len() == 2 })
		start := time.Now()
		ok(t, sub.Defer(ctx, id2, 300*time.Millisecond, "busy"))
		eventually(t, 10*time.Second, "deferred delivery", func() bool { return got.len() == 3 })
		if waited := time.Since(start); waited < 280*time.Millisecond || got.at(2).ID != id2 || got.at(2).DeliveryCount != 2 {
			t.Fatalf("deferred event after %v: %+v", waited, got.at(2))
		}
		ok(t, sub.Discard(ctx, id2, "invalid"))
		// Replay: returned, and delivered once more.
		rep := must(sub.Replay(ctx, id)).get(t)
		if rep.ID != id || string(rep.Payload) != "o-1" {
			t.Fatalf("replayed %+v", rep)
		}
		eventually(t, 10*time.Second, "replayed delivery", func() bool { return got.len() == 4 })
		ok(t, sub.Ack(ctx, id))
		// Pause holds, resume releases.
		ok(t, sub.Pause("maintenance"))
		for i := 0; i < 3; i++ {
			must(alice.PublishEvent(ctx, "orders/created", []string{"bob"}, []byte("held"), "")).get(t)
		}
		time.Sleep(500 * time.Millisecond)
		if got.len() != 4 {
			t.Fatalf("delivered while paused: %d", got.len())
		}
		ok(t, sub.Resume())
		eventually(t, 10*time.Second, "released deliveries", func() bool { return got.len() == 7 })
		time.Sleep(200 * time.Millisecond)
		if got.len() != 7 {
			t.Fatalf("discarded event came back: %d deliveries", got.len())
		}
		ok(t, sub.Unsubscribe())
		ok(t, sub.Unsubscribe())
		if err := sub.Ack(ctx, 1); !errors.Is(err, ErrClosed) {
			t.Fatalf("ack after unsubscribe: %v", err)
		}
	})
}

func TestEventsEncryptedAndErrors(t *testing.T) {
	eventEngines(t, func(t *testing.T, url string, ns ...Option) {
		ctx := ctxT(t)
		as, _ := eventKeys(GenerateEventKey())
		bs, _ := eventKeys(GenerateEventKey())
		alice := connect(t, url, append(ns, WithAppID("alice"), WithAppSecretKey(as))...)
		bob := connect(t, url, append(ns, WithAppID("bob"), WithAppSecretKey(bs))...)
		var got inbox
		sub := must(bob.SubscribeEvents(ctx, "secrets", got.add)).get(t) // auto-ack
		id := must(alice.PublishEvent(ctx, "secrets", []string{"bob"}, []byte("TOP-SECRET-GO"), "")).get(t)
		eventually(t, 10*time.Second, "sealed delivery", func() bool { return got.len() == 1 })
		if ev := got.at(0); ev.ID != id || !ev.Encrypted || string(ev.Payload) != "TOP-SECRET-GO" {
			t.Fatalf("unexpected %+v", ev)
		}
		if n, err := sub.Status(); n != 0 || err != nil {
			t.Fatalf("status %d %v", n, err)
		}
		// Unsubscribe from inside the handler.
		var once inbox
		var self *EventSubscription
		var selfMu sync.Mutex
		s2 := must(bob.SubscribeEvents(ctx, "once", func(ev *AppEvent) {
			once.add(ev)
			selfMu.Lock()
			s := self
			selfMu.Unlock()
			if s != nil {
				_ = s.Unsubscribe()
			}
		})).get(t)
		selfMu.Lock()
		self = s2
		selfMu.Unlock()
		for i := 0; i < 2; i++ {
			must(alice.PublishEvent(ctx, "once", []string{"bob"}, []byte("x"), "")).get(t)
		}
		eventually(t, 10*time.Second, "first of once", func() bool { return once.len() >= 1 })
		time.Sleep(300 * time.Millisecond)
		if once.len() != 1 {
			t.Fatalf("delivered after unsubscribing in the handler: %d", once.len())
		}
		// Bad input.
		noID := connect(t, url, ns...)
		if _, err := noID.PublishEvent(ctx, "e", []string{"bob"}, nil, ""); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("publish without app id: %v", err)
		}
		if _, err := alice.PublishEvent(ctx, "e", nil, nil, ""); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("publish without recipients: %v", err)
		}
		if _, err := alice.PublishEvent(ctx, "e", []string{"bob"}, nil, "[1]"); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("publish with bad metadata: %v", err)
		}
		if _, err := bob.SubscribeEvents(ctx, "e", nil); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("nil handler: %v", err)
		}
		if _, err := Connect(ctx, url, WithAppSecretKey("nope")); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("bad key: %v", err)
		}
		// Close ends live event subscriptions.
		ok(t, bob.Close())
		if err := sub.Ack(ctx, id); !errors.Is(err, ErrClosed) {
			t.Fatalf("ack after close: %v", err)
		}
	})
}

func eventKeys(a, b string, err error) (string, string) {
	if err != nil {
		panic(err)
	}
	return a, b
}
