package flowmesh

import (
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
