package flowmesh

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// brokerURL is grpc://127.0.0.1:PORT of the broker TestMain started, or ""
// with brokerSkip saying why there is none.
var (
	brokerURL  string
	brokerSkip string
)

// natsURL is nats://127.0.0.1:PORT of the nats-server TestMain started, or
// "" with natsSkip saying why there is none (the nats tests then fail).
var (
	natsURL  string
	natsSkip string
)

func TestMain(m *testing.M) {
	stop := startBroker()
	stopNats := startNats()
	code := m.Run()
	stopNats()
	stop()
	os.Exit(code)
}

// startNats runs one nats-server with JetStream (scripts/nats-cluster.sh,
// loopback, free ports, in a temp dir wiped after) so the core tests also
// run on the nats:// engine.
func startNats() (stop func()) {
	dir, err := os.MkdirTemp("", "flowmesh-go-nats-*")
	if err != nil {
		natsSkip = err.Error()
		return func() {}
	}
	script := filepath.Join("..", "..", "scripts", "nats-cluster.sh")
	env := append(os.Environ(), "NATS_CLUSTER_DIR="+filepath.Join(dir, "cluster"), "NATS_NODES=1")
	cmd := exec.Command(script, "start")
	cmd.Env = env
	out, err := cmd.Output()
	stop = func() {
		wipe := exec.Command(script, "wipe")
		wipe.Env = env
		_ = wipe.Run()
		os.RemoveAll(dir)
	}
	lines := strings.Fields(strings.TrimSpace(string(out)))
	if err != nil || len(lines) == 0 || !strings.HasPrefix(lines[len(lines)-1], "nats://") {
		natsSkip = fmt.Sprintf("no nats-server (scripts/nats-cluster.sh start: %v)", err)
		return stop
	}
	natsURL = lines[len(lines)-1]
	return stop
}

// startBroker runs `flowmesh serve` from the repository build on a free
// loopback port so the suite also exercises the remote engine.
func startBroker() (stop func()) {
	url, stop, err := spawnBroker("", "mem://")
	if err != nil {
		brokerSkip = err.Error()
		return func() {}
	}
	brokerURL = url
	return stop
}

// spawnBroker starts a broker on addr (a free port when "") storing in
// data, and waits until it is healthy.
func spawnBroker(addr, data string) (url string, stop func(), err error) {
	bin := brokerBinary()
	if _, err := os.Stat(bin); err != nil {
		return "", nil, fmt.Errorf("no broker binary at %s", bin)
	}
	help, _ := exec.Command(bin, "serve", "--help").CombinedOutput()
	if !strings.Contains(string(help), "--listen") {
		return "", nil, errors.New("the flowmesh binary has no `serve --listen` command yet")
	}
	if addr == "" {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", nil, fmt.Errorf("no free loopback port: %v", err)
		}
		addr = l.Addr().String()
		l.Close()
	}
	cmd := exec.Command(bin, "serve", "--listen", addr, "--data", data)
	// The broker's log goes to a file so it does not mix with test output.
	logf, err := os.CreateTemp("", "flowmesh-go-broker-*.log")
	if err != nil {
		return "", nil, err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	killWithParent(cmd) // no orphan broker if the test binary dies
	if err := cmd.Start(); err != nil {
		return "", nil, fmt.Errorf("cannot start broker: %v", err)
	}
	stop = func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logf.Close()
		os.Remove(logf.Name())
	}
	url = "grpc://" + addr
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := Connect(ctx, url)
		if err == nil {
			err = c.Health(ctx)
			c.Close()
		}
		cancel()
		if err == nil {
			return url, stop, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	return "", nil, fmt.Errorf("broker did not become healthy at %s (log: %s)", url, logf.Name())
}

type engine struct {
	name string
	url  func(t *testing.T) string
}

func engines() []engine {
	return []engine{
		{"mem", func(*testing.T) string { return "mem://" }},
		{"file", func(t *testing.T) string { return "file://" + t.TempDir() }},
		{"grpc", func(t *testing.T) string {
			if brokerURL == "" {
				t.Skip("remote engine: " + brokerSkip)
			}
			return brokerURL
		}},
		{"nats", func(t *testing.T) string {
			if natsURL == "" {
				t.Fatal("nats:// engine: " + natsSkip)
			}
			return natsURL
		}},
	}
}

// forEachEngine runs f once per engine with a fresh connected client.
func forEachEngine(t *testing.T, f func(t *testing.T, c *Client)) {
	t.Helper()
	for _, e := range engines() {
		t.Run(e.name, func(t *testing.T) {
			c := connect(t, e.url(t))
			f(t, c)
		})
	}
}

func connect(t *testing.T, url string, opts ...Option) *Client {
	t.Helper()
	c, err := Connect(ctxT(t), url, opts...)
	if err != nil {
		t.Fatalf("Connect(%q): %v", url, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// ctxT bounds one test's calls so a hang fails instead of stalling the suite.
func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var seq atomic.Int64

// uniq gives a resource name unique across tests, since the broker is
// shared by every test of the run.
func uniq(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), seq.Add(1))
}

// must(f()).get(t) fails the test when f returned an error.
func must[T any](v T, err error) result[T] { return result[T]{v, err} }

type result[T any] struct {
	v   T
	err error
}

func (r result[T]) get(t *testing.T) T {
	t.Helper()
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r.v
}

func ok(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// eventually polls cond for up to d.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// settleGoroutines waits until the goroutine count drops to at most n.
func settleGoroutines(n int, d time.Duration) int {
	end := time.Now().Add(d)
	for {
		g := runtime.NumGoroutine()
		if g <= n || time.Now().After(end) {
			return g
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// brokerBinary is the flowmesh binary the broker tests run: $FLOWMESH_BIN
// (test.sh sets it from cargo's target directory), else the repository's
// target/release/flowmesh.
func brokerBinary() string {
	if bin := os.Getenv("FLOWMESH_BIN"); bin != "" {
		return bin
	}
	bin, _ := filepath.Abs("../../target/release/flowmesh")
	return bin
}
