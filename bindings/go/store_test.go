package flowmesh

import (
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"
)

func TestStoreCRUDAndQueries(t *testing.T) {
	forEachEngineNS(t, func(t *testing.T, c *Client, _ string) {
		ctx := ctxT(t)
		users := c.Store().Bucket("users")
		ann := must(users.Insert(ctx, map[string]any{"id": "u1", "name": "Ann", "role": "admin", "age": 31})).get(t)
		if ann["id"] != "u1" || ann["_version"] != float64(1) || ann["_createdAt"] == nil {
			t.Fatalf("inserted %v", ann)
		}
		bob := must(users.Insert(ctx, map[string]any{"name": "Bob", "role": "user", "age": 25})).get(t)
		bobID, _ := bob["id"].(string)
		if bobID == "" {
			t.Fatalf("no generated id: %v", bob)
		}
		if got := must(users.Get(ctx, bobID)).get(t); got["name"] != "Bob" {
			t.Fatalf("Get %v", got)
		}
		if got := must(users.Get(ctx, "nobody")).get(t); got != nil {
			t.Fatalf("Get missing %v", got)
		}
		up := must(users.Update(ctx, "u1", map[string]any{"age": 32}, 1)).get(t)
		if up["_version"] != float64(2) || up["age"] != float64(32) || up["name"] != "Ann" {
			t.Fatalf("updated %v", up)
		}
		_, err := users.Update(ctx, "u1", map[string]any{"age": 33}, 1)
		var se *StoreError
		if !errors.Is(err, ErrConflict) || !errors.As(err, &se) || se.Code != "CONFLICT" {
			t.Fatalf("stale update: %v", err)
		}
		if rs := must(users.Where(ctx, Filter{"age": map[string]any{"$gt": 30}})).get(t); len(rs) != 1 || rs[0]["id"] != "u1" {
			t.Fatalf("Where %v", rs)
		}
		if r := must(users.FindOne(ctx, Filter{"role": "user"})).get(t); r["name"] != "Bob" {
			t.Fatalf("FindOne %v", r)
		}
		if n := must(users.Count(ctx, nil)).get(t); n != 2 {
			t.Fatalf("Count %d", n)
		}
		if s := must(users.Sum(ctx, "age", nil)).get(t); s != 57 {
			t.Fatalf("Sum %v", s)
		}
		if m := must(users.Max(ctx, "age", nil)).get(t); m == nil || *m != 32 {
			t.Fatalf("Max %v", m)
		}
		if m := must(users.Min(ctx, "age", Filter{"role": "none"})).get(t); m != nil {
			t.Fatalf("Min of nothing %v", *m)
		}
		p := must(users.Paginate(ctx, 1, "")).get(t)
		if len(p.Records) != 1 || !p.HasMore || p.NextCursor == nil {
			t.Fatalf("page 1 %+v", p)
		}
		p2 := must(users.Paginate(ctx, 1, *p.NextCursor)).get(t)
		if len(p2.Records) != 1 || p2.HasMore || p2.Records[0]["id"] == p.Records[0]["id"] {
			t.Fatalf("page 2 %+v", p2)
		}
		if rs := must(users.Last(ctx, 1)).get(t); len(rs) != 1 {
			t.Fatalf("Last %v", rs)
		}
		ok(t, users.Delete(ctx, bobID))
		ok(t, users.Delete(ctx, bobID)) // absent: fine
		if n := must(users.Clear(ctx)).get(t); n != 1 {
			t.Fatalf("Clear removed %d", n)
		}
	})
}

func TestStoreSchemaAndErrors(t *testing.T) {
	forEachEngineNS(t, func(t *testing.T, c *Client, _ string) {
		ctx := ctxT(t)
		st := c.Store()
		ok(t, st.DefineBucket(ctx, "people", map[string]any{
			"schema":  map[string]any{"name": map[string]any{"type": "string", "required": true}, "age": map[string]any{"type": "integer", "min": 0}},
			"indexes": []string{"name"},
		}))
		if err := st.DefineBucket(ctx, "people", nil); !errors.Is(err, ErrAlreadyExists) {
			t.Fatalf("define twice: %v", err)
		}
		_, err := st.Bucket("people").Insert(ctx, map[string]any{"age": -1})
		var se *StoreError
		if !errors.As(err, &se) || se.Code != "VALIDATION_ERROR" || !errors.Is(err, ErrInvalidArgument) || len(se.Details) != 2 {
			t.Fatalf("invalid insert: %v (%+v)", err, se)
		}
		if n := must(st.Bucket("people").Count(ctx, nil)).get(t); n != 0 {
			t.Fatalf("a failed insert wrote %d records", n)
		}
		def := must(st.BucketSchema(ctx, "people")).get(t)
		if _, has := def["schema"]; !has {
			t.Fatalf("schema %v", def)
		}
		if names := must(st.Buckets(ctx)).get(t); len(names) != 1 || names[0] != "people" {
			t.Fatalf("Buckets %v", names)
		}
		_, err = st.BucketSchema(ctx, "nothing")
		if !errors.As(err, &se) || se.Code != "BUCKET_NOT_DEFINED" || !errors.Is(err, ErrNotFound) {
			t.Fatalf("schema of nothing: %v", err)
		}
		ok(t, st.DropBucket(ctx, "people"))
		if _, err := st.Call(ctx, map[string]any{"type": "store.frobnicate"}); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("unknown type: %v", err)
		}
		if _, err := st.Call(ctx, map[string]any{"type": "store.insert", "bucket": "b", "data": func() {}}); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("unencodable request: %v", err)
		}
	})
}

func TestStoreTransaction(t *testing.T) {
	forEachEngineNS(t, func(t *testing.T, c *Client, _ string) {
		ctx := ctxT(t)
		st := c.Store()
		must(st.Bucket("accounts").Insert(ctx, map[string]any{"id": "a", "credits": 100})).get(t)
		res := must(st.Transaction(ctx, []TxOp{
			{"op": "get", "bucket": "accounts", "key": "a"},
			{"op": "update", "bucket": "accounts", "key": "a", "data": map[string]any{"credits": 400}},
			{"op": "insert", "bucket": "logs", "data": map[string]any{"action": "credit"}},
			{"op": "count", "bucket": "logs", "filter": map[string]any{"action": "credit"}},
		})).get(t)
		if len(res) != 4 || string(res[3]) != "1" {
			t.Fatalf("results %s", res)
		}
		_, err := st.Transaction(ctx, []TxOp{
			{"op": "insert", "bucket": "logs", "data": map[string]any{"action": "lost"}},
			{"op": "update", "bucket": "accounts", "key": "a", "data": map[string]any{}, "expectedVersion": 1},
		})
		if !errors.Is(err, ErrConflict) {
			t.Fatalf("failing transaction: %v", err)
		}
		if n := must(st.Bucket("logs").Count(ctx, nil)).get(t); n != 1 {
			t.Fatalf("a failed transaction wrote: %d logs", n)
		}
	})
}

func TestStoreLiveQuery(t *testing.T) {
	forEachEngineNS(t, func(t *testing.T, c *Client, _ string) {
		ctx := ctxT(t)
		st := c.Store()
		ok(t, st.DefineQuery(ctx, "by-role", map[string]any{
			"type": "count", "bucket": "staff", "filter": map[string]any{"role": map[string]any{"$param": "role"}},
		}))
		if qs := must(st.ListQueries(ctx)).get(t); len(qs) != 1 || qs[0].Name != "by-role" {
			t.Fatalf("ListQueries %+v", qs)
		}
		var mu sync.Mutex
		var got []string
		results := make(chan struct{}, 64)
		lq := must(st.Subscribe(ctx, "by-role", map[string]any{"role": "admin"}, func(r json.RawMessage) {
			mu.Lock()
			got = append(got, string(r))
			mu.Unlock()
			results <- struct{}{}
		}, nil)).get(t)
		wait := func(n int) {
			t.Helper()
			for i := 0; i < n; i++ {
				select {
				case <-results:
				case <-time.After(20 * time.Second):
					t.Fatalf("no live result; got %v", got)
				}
			}
		}
		wait(1)
		must(st.Bucket("staff").Insert(ctx, map[string]any{"role": "admin"})).get(t)
		wait(1)
		must(st.Bucket("staff").Insert(ctx, map[string]any{"role": "admin"})).get(t)
		wait(1)
		mu.Lock()
		if len(got) != 3 || got[0] != "0" || got[1] != "1" || got[2] != "2" {
			t.Fatalf("live results %v", got)
		}
		mu.Unlock()
		lq.Unsubscribe()
		lq.Unsubscribe()
		select {
		case <-lq.Done():
		case <-time.After(10 * time.Second):
			t.Fatal("delivery did not end after Unsubscribe")
		}

		var se *StoreError
		if _, err := st.Subscribe(ctx, "nope", nil, func(json.RawMessage) {}, nil); !errors.As(err, &se) || se.Code != "QUERY_NOT_DEFINED" {
			t.Fatalf("undefined query: %v", err)
		}
		if _, err := st.Subscribe(ctx, "by-role", nil, func(json.RawMessage) {}, nil); !errors.As(err, &se) || se.Code != "VALIDATION_ERROR" {
			t.Fatalf("missing parameter: %v", err)
		}
		if out := must(st.RunQuery(ctx, "by-role", map[string]any{"role": "admin"})).get(t); string(out) != "2" {
			t.Fatalf("RunQuery %s", out)
		}
		ok(t, st.UndefineQuery(ctx, "by-role"))
		if err := st.UndefineQuery(ctx, "by-role"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("undefine twice: %v", err)
		}
	})
}

func TestStoreLiveQueryEndsWithClient(t *testing.T) {
	c, err := Connect(ctxT(t), "mem://")
	if err != nil {
		t.Fatal(err)
	}
	st := c.Store()
	ctx := ctxT(t)
	ok(t, st.DefineQuery(ctx, "all", map[string]any{"type": "all", "bucket": "b"}))
	lq := must(st.Subscribe(ctx, "all", nil, func(json.RawMessage) {}, nil)).get(t)
	c.Close()
	select {
	case <-lq.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("delivery did not end with the client")
	}
	lq.Unsubscribe()
}
