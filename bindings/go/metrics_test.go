package flowmesh

import (
	"errors"
	"strings"
	"testing"
)

// hasLine reports whether text has exactly this line.
func hasLine(text, line string) bool {
	for _, l := range strings.Split(text, "\n") {
		if l == line {
			return true
		}
	}
	return false
}

func TestMetricsExactCounts(t *testing.T) {
	forEachEngine(t, func(t *testing.T, c *Client) {
		ctx := ctxT(t)
		stream, bucket := uniq("metered"), uniq("mb")
		for i := 0; i < 4; i++ {
			must(c.Publish(ctx, stream, []byte("12345"))).get(t)
		}
		if _, err := c.Set(ctx, bucket, "k", []byte("v")); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Get(ctx, bucket, "absent"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("Get absent: %v", err)
		}
		text, err := c.Metrics()
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{
			`flowmesh_client_operations_total{op="publish",status="ok"} 4`,
			`flowmesh_client_operations_total{op="kv_set",status="ok"} 1`,
			`flowmesh_client_operations_total{op="kv_get",status="not_found"} 1`,
			`flowmesh_client_messages_published_total 4`,
			`flowmesh_client_published_bytes_total 20`,
			`flowmesh_client_in_flight 0`,
			`# TYPE flowmesh_client_operation_duration_seconds histogram`,
			`flowmesh_client_operation_duration_seconds_count{op="publish"} 4`,
		} {
			if !hasLine(text, want) {
				t.Errorf("missing line %q in:\n%s", want, text)
			}
		}
	})
}

func TestMetricsClosed(t *testing.T) {
	c := connect(t, "mem://")
	c.Close()
	if _, err := c.Metrics(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Metrics after Close: %v", err)
	}
}

func TestMemoryTier(t *testing.T) {
	c := connect(t, "file://"+t.TempDir())
	ctx := ctxT(t)
	if err := c.CreateStream(ctx, "hot", WithTier("memory"), WithMaxMessages(10)); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 25; i++ {
		must(c.Publish(ctx, "hot", []byte("x"))).get(t)
	}
	if err := c.CreateStream(ctx, "bad", WithTier("fast")); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("bad tier: %v", err)
	}
	if err := c.CreateStream(ctx, "hot"); !errors.Is(err, ErrAlreadyExists) {
		t.Fatalf("other tier: %v", err)
	}
}
