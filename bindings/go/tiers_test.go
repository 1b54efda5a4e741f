package flowmesh

import (
	"errors"
	"sort"
	"strings"
	"testing"
	"time"
)

// next takes one message from ch within the test's patience.
func next(t *testing.T, ch <-chan *Message) *Message {
	t.Helper()
	select {
	case m, ok := <-ch:
		if !ok {
			t.Fatal("subscription channel closed")
		}
		return m
	case <-time.After(20 * time.Second):
		t.Fatal("no message within 20s")
	}
	return nil
}

func TestTiersAndSubjects(t *testing.T) {
	forEachEngine(t, func(t *testing.T, c *Client) {
		ctx := ctxT(t)
		s := strings.ReplaceAll(uniq("ev"), "-", "_")
		_, all, err := c.SubscribeChan(ctx, s+".>")
		ok(t, err)
		_, one, err := c.SubscribeChan(ctx, s+".*")
		ok(t, err)
		pos := must(c.Publish(ctx, s+".user.login", []byte("live"), WithTier(TierMemory), WithHeader("h", "v"))).get(t)
		if pos.Offset != OffsetNone {
			t.Fatalf("memory-tier position %+v", pos)
		}
		m := next(t, all)
		if !m.Live() || m.Subject() != s+".user.login" || string(m.Payload) != "live" || m.Headers["h"] != "v" {
			t.Fatalf("live message %+v (subject %q)", m, m.Subject())
		}
		stored := must(c.Publish(ctx, s+".click", []byte("kept"))).get(t)
		acked := must(c.Publish(ctx, s+".view", []byte("acked"), WithTier(TierMemory), WithRequireAck())).get(t)
		if acked.Offset != OffsetNone {
			t.Fatalf("acked memory-tier position %+v", acked)
		}
		var got []string
		for i := 0; i < 2; i++ {
			m := next(t, all)
			got = append(got, m.Subject())
			if m.Subject() == s+".click" && (m.Live() || m.Offset != stored.Offset) {
				t.Fatalf("stored message %+v", m)
			}
		}
		sort.Strings(got)
		if strings.Join(got, ",") != s+".click,"+s+".view" {
			t.Fatalf("events.> got %v", got)
		}
		// s.* saw the two one-token subjects, not user.login.
		seen := []string{next(t, one).Subject(), next(t, one).Subject()}
		sort.Strings(seen)
		if strings.Join(seen, ",") != s+".click,"+s+".view" {
			t.Fatalf("%s.* got %v", s, seen)
		}
		msgs := must(c.Read(ctx, s, 0, 0, 10)).get(t)
		if len(msgs) != 1 || msgs[0].Subject() != s+".click" {
			t.Fatalf("read back %+v: only the stored message", msgs)
		}
		if _, err := c.Publish(ctx, s+".pay", []byte("p"), WithTier(TierReplicated)); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("replicated on a single copy: %v", err)
		}
		if _, _, err := c.SubscribeChan(ctx, "*.x"); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("wildcard first token: %v", err)
		}
		if _, err := c.Enqueue(ctx, s, []byte("j"), WithTier(TierMemory)); !errors.Is(err, ErrInvalidArgument) {
			t.Fatalf("tier on enqueue: %v", err)
		}
	})
}
