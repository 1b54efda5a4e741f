package flowmesh

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// stateLog collects the changes a listener reports.
type stateLog struct {
	mu      sync.Mutex
	changes []StateChange
}

func (l *stateLog) add(ch StateChange) {
	l.mu.Lock()
	l.changes = append(l.changes, ch)
	l.mu.Unlock()
}

func (l *stateLog) states() []ConnState {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]ConnState, len(l.changes))
	for i, ch := range l.changes {
		out[i] = ch.State
	}
	return out
}

func (l *stateLog) count(s ConnState) int {
	n := 0
	for _, x := range l.states() {
		if x == s {
			n++
		}
	}
	return n
}

// waitCount waits up to d until state s was reported at least n times.
func (l *stateLog) waitCount(t *testing.T, s ConnState, n int, d time.Duration) {
	t.Helper()
	end := time.Now().Add(d)
	for l.count(s) < n {
		if time.Now().After(end) {
			t.Fatalf("waited %v for %v #%d; saw %v", d, s, n, l.states())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestConnStateString(t *testing.T) {
	want := map[ConnState]string{StateConnecting: "connecting", StateConnected: "connected",
		StateReconnecting: "reconnecting", StateDisconnected: "disconnected", StateClosed: "closed",
		ConnState(9): "ConnState(9)"}
	for s, name := range want {
		if s.String() != name {
			t.Errorf("%d.String() = %q, want %q", int(s), s.String(), name)
		}
	}
	if StateConnecting != 1 || StateClosed != 5 {
		t.Fatal("ConnState values differ from fm_conn_state")
	}
}

// An embedded client is connected at once and reports closed from Close.
func TestStateEmbedded(t *testing.T) {
	c, err := Connect(ctxT(t), "mem://")
	ok(t, err)
	if s := c.State(); s != StateConnected {
		t.Fatalf("State() = %v", s)
	}
	var log stateLog
	ok(t, c.OnState(log.add))
	log.waitCount(t, StateConnected, 1, 5*time.Second)
	if err := c.OnState(nil); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("OnState(nil): %v", err)
	}
	ok(t, c.Close())
	// Close returns after the listener's last call.
	got := log.states()
	if len(got) != 2 || got[0] != StateConnected || got[1] != StateClosed {
		t.Fatalf("states %v, want [connected closed]", got)
	}
	for _, ch := range log.changes {
		if ch.Err != nil {
			t.Fatalf("unexpected cause: %v", ch.Err)
		}
	}
	if s := c.State(); s != StateClosed {
		t.Fatalf("State() after Close = %v", s)
	}
	if err := c.OnState(log.add); !errors.Is(err, ErrClosed) {
		t.Fatalf("OnState after Close: %v", err)
	}
}

// A listener may use the client; at most 16 listeners per client.
func TestStateListenerLimit(t *testing.T) {
	c := connect(t, "mem://")
	seen := make(chan ConnState, 1)
	ok(t, c.OnState(func(ch StateChange) {
		if ch.State == StateConnected {
			seen <- c.State() // a client call from inside the listener
		}
	}))
	if s := <-seen; s != StateConnected {
		t.Fatalf("State() inside listener = %v", s)
	}
	for i := 1; i < 16; i++ {
		ok(t, c.OnState(func(StateChange) {}))
	}
	if err := c.OnState(func(StateChange) {}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("17th listener: %v", err)
	}
}

func TestStateOptions(t *testing.T) {
	ctx := ctxT(t)
	if _, err := Connect(ctx, "mem://", WithOption("heartbeat_msec", "1")); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("unknown option: %v", err)
	}
	c := connect(t, "mem://", WithHeartbeat(0), WithMaxRetries(5), WithCircuitBreaker(0, time.Second),
		WithMaxInFlight(8), WithNonBlocking(true))
	must(c.Publish(ctx, "s", []byte("x"))).get(t)
	c2 := connect(t, "mem://", WithOption("heartbeat_ms", "250"), WithOption("max_retries", "0"),
		WithOption("breaker_threshold", "3"), WithOption("breaker_timeout_ms", "100"),
		WithOption("max_in_flight", "1"), WithOption("nonblocking", "false"))
	if s := c2.State(); s != StateConnected {
		t.Fatalf("State() = %v", s)
	}
	if _, err := Connect(ctx, "mem://", WithOption("nonblocking", "maybe")); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("bad nonblocking value: %v", err)
	}
}

// Killing the broker (SIGKILL) reports reconnecting; restarting it on the
// same address reports connected again; the order is kept.
func TestStateBrokerKillRestart(t *testing.T) {
	if brokerURL == "" {
		t.Skip("remote engine: " + brokerSkip)
	}
	url, stop, err := spawnBroker("", "mem://")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { stop() }() // stop is replaced by the restarted broker's
	c := connect(t, url, WithHeartbeat(100*time.Millisecond),
		WithOption("reconnect_initial_ms", "50"), WithOption("reconnect_max_ms", "200"),
		WithOption("reconnect_jitter_ms", "0"), WithConnectTimeout(500*time.Millisecond),
		WithRequestTimeout(time.Second))
	var log stateLog
	ok(t, c.OnState(log.add))
	log.waitCount(t, StateConnected, 1, 5*time.Second)

	stop() // Process.Kill: SIGKILL
	log.waitCount(t, StateReconnecting, 1, 5*time.Second)
	if s := c.State(); s != StateReconnecting && s != StateConnecting {
		t.Fatalf("State() with the broker down = %v", s)
	}
	_, stop2, err := spawnBroker(strings.TrimPrefix(url, "grpc://"), "mem://")
	if err != nil {
		t.Fatal(err)
	}
	stop = stop2
	log.waitCount(t, StateConnected, 2, 5*time.Second)
	if s := c.State(); s != StateConnected {
		t.Fatalf("State() after restart = %v", s)
	}
	ok(t, c.Health(ctxT(t)))
	ok(t, c.Close())

	got := log.states()
	if got[0] != StateConnected || got[len(got)-1] != StateClosed {
		t.Fatalf("states %v: want connected first, closed last", got)
	}
	r := -1
	for i, s := range got {
		if s == StateReconnecting && r < 0 {
			r = i
		}
		if i > 0 && got[i-1] == s {
			t.Fatalf("state %v reported twice in a row: %v", s, got)
		}
		if s == StateDisconnected {
			t.Fatalf("gave up: %v", got)
		}
	}
	if r < 0 || !containsState(got[r:], StateConnected) {
		t.Fatalf("no connected after reconnecting: %v", got)
	}
	for _, ch := range log.changes {
		if ch.State == StateReconnecting && ch.Err != nil && !errors.Is(ch.Err, ErrDisconnected) &&
			!errors.Is(ch.Err, ErrUnavailable) && !errors.Is(ch.Err, ErrTimeout) {
			t.Fatalf("reconnecting cause: %v", ch.Err)
		}
	}
}

// Giving up after max_reconnect_attempts reports disconnected with its cause.
func TestStateBrokerGone(t *testing.T) {
	if brokerURL == "" {
		t.Skip("remote engine: " + brokerSkip)
	}
	url, stop, err := spawnBroker("", "mem://")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	c := connect(t, url, WithHeartbeat(100*time.Millisecond),
		WithOption("reconnect_initial_ms", "50"), WithOption("reconnect_max_ms", "200"),
		WithOption("reconnect_jitter_ms", "0"), WithOption("max_reconnect_attempts", "1"),
		WithConnectTimeout(500*time.Millisecond))
	var log stateLog
	ok(t, c.OnState(log.add))
	log.waitCount(t, StateConnected, 1, 5*time.Second)
	stop()
	log.waitCount(t, StateDisconnected, 1, 10*time.Second)
	log.mu.Lock()
	last := log.changes[len(log.changes)-1]
	log.mu.Unlock()
	if !errors.Is(last.Err, ErrDisconnected) {
		t.Fatalf("disconnected cause: %v", last.Err)
	}
	if s := c.State(); s != StateDisconnected {
		t.Fatalf("State() = %v", s)
	}
	if _, err := c.Get(ctxT(t), "b", "k"); !errors.Is(err, ErrDisconnected) {
		t.Fatalf("call after giving up: %v", err)
	}
}

func containsState(list []ConnState, s ConnState) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// With nonblocking, PublishAsync beyond max_in_flight fails at once with
// ErrUnavailable (its future is never resolved, its handle freed); the
// accepted publishes all complete.
func TestNonBlockingPublishAsync(t *testing.T) {
	ctx := ctxT(t)
	c := connect(t, "mem://", WithMaxInFlight(1), WithNonBlocking(true))
	var accepted []*PublishFuture
	refused := 0
	for i := 0; i < 2000; i++ {
		f, err := c.PublishAsync(ctx, "nb", []byte("x"))
		switch {
		case err == nil:
			accepted = append(accepted, f)
		case errors.Is(err, ErrUnavailable):
			refused++
		default:
			t.Fatalf("PublishAsync: %v", err)
		}
	}
	ok(t, c.Flush(ctx))
	for _, f := range accepted {
		must(f.Wait(ctx)).get(t)
	}
	t.Logf("%d accepted, %d refused", len(accepted), refused)
	if len(accepted) == 0 {
		t.Fatal("nothing accepted")
	}
}
