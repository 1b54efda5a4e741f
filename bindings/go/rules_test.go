package flowmesh

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestRulesAndProcedures(t *testing.T) {
	forEachEngineNS(t, func(t *testing.T, c *Client, _ string) {
		ctx := ctxT(t)
		r := c.Rules()
		e := must(r.Emit(ctx, "order.created", map[string]any{"id": "o1"}, "corr-1", "")).get(t)
		if e.Topic != "order.created" || e.CorrelationID != "corr-1" || e.ID == "" || e.Timestamp == 0 {
			t.Fatalf("emitted %+v", e)
		}
		must(r.SetFact(ctx, "user:1:status", "active")).get(t)
		if v := must(r.GetFact(ctx, "user:1:status")).get(t); v != "active" {
			t.Fatalf("GetFact %v", v)
		}
		if fs := must(r.QueryFacts(ctx, "user:*")).get(t); len(fs) != 1 || fs[0].Key != "user:1:status" {
			t.Fatalf("QueryFacts %v", fs)
		}
		if ok := must(r.DeleteFact(ctx, "user:1:status")).get(t); !ok {
			t.Fatal("DeleteFact of a set fact reported false")
		}
		_, err := r.RegisterRule(ctx, map[string]any{"id": "bad", "when": map[string]any{}, "then": []any{}})
		var se *StoreError
		if !errors.Is(err, ErrInvalidArgument) || !errors.As(err, &se) || se.Code != "VALIDATION_ERROR" {
			t.Fatalf("malformed rule: %v", err)
		}
		if valid, errs, err := r.ValidateRule(ctx, map[string]any{"id": "x"}); err != nil || valid || len(errs) == 0 {
			t.Fatalf("ValidateRule %v %v %v", valid, errs, err)
		}
		must(r.RegisterRule(ctx, map[string]any{"id": "mark", "when": map[string]any{"topic": "order.*"},
			"then": map[string]any{"type": "setFact", "key": "seen:${data.id}", "value": "${event.id}"}})).get(t)
		must(r.Emit(ctx, "order.paid", map[string]any{"id": "o2"}, "", "")).get(t)
		deadline := time.Now().Add(20 * time.Second)
		for {
			if v, _ := r.GetFact(ctx, "seen:o2"); v != nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the rule did not fire")
			}
			time.Sleep(20 * time.Millisecond)
		}
		if st := must(r.Stats(ctx)).get(t); st.RulesCount != 1 {
			t.Fatalf("Stats %+v", st)
		}
		if err := r.UnregisterRule(ctx, "ghost"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unregister missing: %v", err)
		}

		p := c.Procedures()
		if err := p.Register(ctx, map[string]any{"name": "close", "steps": []any{
			map[string]any{"op": "insert", "bucket": "orders", "data": map[string]any{"id": "${params.id}"}},
			map[string]any{"op": "setFact", "key": "closed:${params.id}", "value": true},
		}}); err != nil {
			t.Fatal(err)
		}
		res := must(p.Call(ctx, "close", map[string]any{"id": "o9"})).get(t)
		if len(res) != 2 {
			t.Fatalf("Call results %s", res)
		}
		if v := must(r.GetFact(ctx, "closed:o9")).get(t); v != true {
			t.Fatalf("fact after call %v", v)
		}
		if _, err := p.Call(ctx, "ghost", nil); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unknown procedure: %v", err)
		}
		if ps := must(p.List(ctx)).get(t); len(ps) != 1 {
			t.Fatalf("List %v", ps)
		}
		if err := p.Unregister(ctx, "close"); err != nil {
			t.Fatal(err)
		}
	})
}

// nextWithin takes the next event of sub, failing the test after d.
func nextWithin(t *testing.T, sub *RulesSubscription, d time.Duration) TopicEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	ev, err := sub.Next(ctx)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return ev
}

func TestRulesSubscribe(t *testing.T) {
	forEachEngineNS(t, func(t *testing.T, c *Client, _ string) {
		ctx := ctxT(t)
		r := c.Rules()
		one := must(r.Subscribe(ctx, "orders.*")).get(t)
		defer one.Close()
		all := must(r.Subscribe(ctx, "orders.>")).get(t)
		defer all.Close()

		for _, e := range []struct{ topic, id string }{
			{"orders.created", "o1"}, {"users.created", "u1"}, {"orders.eu.paid", "o2"}, {"orders.done", "o3"},
		} {
			must(r.Emit(ctx, e.topic, map[string]any{"id": e.id}, "", "")).get(t)
		}
		// In log order; users.created matches neither, orders.eu.paid only ">".
		for _, w := range []struct {
			sub   *RulesSubscription
			topic string
			id    string
		}{
			{one, "orders.created", "o1"}, {one, "orders.done", "o3"},
			{all, "orders.created", "o1"}, {all, "orders.eu.paid", "o2"}, {all, "orders.done", "o3"},
		} {
			ev := nextWithin(t, w.sub, 20*time.Second)
			if ev.Topic != w.topic || ev.Event.Topic != w.topic || ev.Event.Data["id"] != w.id || ev.Event.ID == "" {
				t.Fatalf("got %+v, want topic %s id %s", ev, w.topic, w.id)
			}
		}

		// An event a rule emits is delivered too, caused by its trigger.
		must(r.RegisterRule(ctx, map[string]any{"id": "ship", "when": map[string]any{"topic": "payments.received"},
			"then": map[string]any{"type": "emit", "topic": "orders.shipped", "data": map[string]any{"id": "${data.order}"}}})).get(t)
		trigger := must(r.Emit(ctx, "payments.received", map[string]any{"order": "o4"}, "", "")).get(t)
		ev := nextWithin(t, one, 20*time.Second)
		if ev.Topic != "orders.shipped" || ev.Event.Data["id"] != "o4" || ev.Event.CausationID != trigger.ID {
			t.Fatalf("rule-emitted event %+v (trigger %s)", ev, trigger.ID)
		}

		for _, bad := range []string{"", "orders..x", "orders.>.x", "ord*"} {
			if _, err := r.Subscribe(ctx, bad); !errors.Is(err, ErrInvalidArgument) {
				t.Fatalf("Subscribe(%q): %v, want ErrInvalidArgument", bad, err)
			}
		}
	})
}

func TestRulesSubscriptionCloseAndCancel(t *testing.T) {
	forEachEngineNS(t, func(t *testing.T, c *Client, _ string) {
		ctx := ctxT(t)
		r := c.Rules()
		sub := must(r.Subscribe(ctx, "orders.*")).get(t)

		// A cancelled wait loses nothing: the event waits for the next call.
		short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		start := time.Now()
		_, err := sub.Next(short)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
			t.Fatalf("Next past its deadline: %v after %v", err, time.Since(start))
		}
		must(r.Emit(ctx, "orders.created", map[string]any{"id": "o1"}, "", "")).get(t)
		if ev := nextWithin(t, sub, 20*time.Second); ev.Event.Data["id"] != "o1" {
			t.Fatalf("after a cancelled Next: %+v", ev)
		}

		// Close wakes a waiting Next.
		got := make(chan error, 1)
		go func() {
			_, err := sub.Next(context.Background())
			got <- err
		}()
		time.Sleep(200 * time.Millisecond) // let it wait
		closed := time.Now()
		ok(t, sub.Close())
		select {
		case err := <-got:
			if !errors.Is(err, ErrClosed) {
				t.Fatalf("waiting Next after Close: %v", err)
			}
			if d := time.Since(closed); d > 2*time.Second {
				t.Fatalf("waiting Next returned %v after Close", d)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Close did not wake a waiting Next")
		}
		if _, err := sub.Next(ctx); !errors.Is(err, ErrClosed) {
			t.Fatalf("Next after Close: %v", err)
		}
		ok(t, sub.Close()) // idempotent

		// The client's Close ends its subscriptions.
		other := must(r.Subscribe(ctx, "orders.>")).get(t)
		go func() {
			_, err := other.Next(context.Background())
			got <- err
		}()
		time.Sleep(100 * time.Millisecond)
		ok(t, c.Close())
		select {
		case err := <-got:
			if !errors.Is(err, ErrClosed) {
				t.Fatalf("waiting Next after the client's Close: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the client's Close did not end a waiting Next")
		}
		if _, err := r.Subscribe(ctx, "orders.*"); !errors.Is(err, ErrClosed) {
			t.Fatalf("Subscribe on a closed client: %v", err)
		}
		ok(t, other.Close())
	})
}

func TestRulesSubscribeChan(t *testing.T) {
	forEachEngineNS(t, func(t *testing.T, c *Client, _ string) {
		ctx := ctxT(t)
		r := c.Rules()
		if _, _, err := r.SubscribeChan(ctx, "orders.*", WithGroup("g")); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("SubscribeChan with a group: %v", err)
		}
		if _, _, err := r.SubscribeChan(ctx, "orders..x"); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("SubscribeChan with a malformed pattern: %v", err)
		}
		sub, ch, err := r.SubscribeChan(ctx, "orders.*", WithBuffer(1))
		ok(t, err)
		if _, err := sub.Next(ctx); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("Next on a channel subscription: %v", err)
		}
		for _, topic := range []string{"users.created", "orders.created", "orders.paid", "orders.done"} {
			must(r.Emit(ctx, topic, map[string]any{}, "", "")).get(t)
		}
		for _, want := range []string{"orders.created", "orders.paid", "orders.done"} {
			select {
			case ev := <-ch:
				if ev.Topic != want || ev.Event.Topic != want {
					t.Fatalf("got %+v, want %s", ev, want)
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("no %s on the channel", want)
			}
		}
		// Close with a send pending (buffer full) returns and closes the channel.
		must(r.Emit(ctx, "orders.late", map[string]any{}, "", "")).get(t)
		must(r.Emit(ctx, "orders.later", map[string]any{}, "", "")).get(t)
		eventually(t, 20*time.Second, "the buffer to fill", func() bool { return len(ch) == 1 })
		ok(t, sub.Close())
		if ev, open := <-ch; !open || ev.Topic != "orders.late" {
			t.Fatalf("buffered before Close: %+v (open %v)", ev, open)
		}
		select {
		case ev, open := <-ch:
			if open {
				t.Fatalf("delivered after Close: %+v", ev)
			}
		default:
			t.Fatal("the channel is still open after Close returned")
		}
		if err := sub.Err(); err != nil {
			t.Fatalf("Err after Close: %v", err)
		}
	})
}
