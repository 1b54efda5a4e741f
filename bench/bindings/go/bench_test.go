// Package bench compares the flowmesh Go binding (over a `flowmesh serve`
// broker) with nats.go over NATS JetStream, both on loopback and started by
// TestMain in the same run. See run.sh and ../../results/bindings-go.md.
package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	flowmesh "github.com/flowmesh/flowmesh/bindings/go"
	"github.com/nats-io/nats.go"
)

const payloadSize = 128

var (
	fmURL    string // grpc://127.0.0.1:PORT of the flowmesh broker
	natsURL  string // nats://127.0.0.1:PORT of nats-server -js, "" if absent
	natsSkip string // why there is no nats-server
	fsync    = envOr("FM_BENCH_FSYNC", "interval")
)

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fm-bench-go-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var stops []func()
	stopAll := func() {
		for _, s := range stops {
			s()
		}
		os.RemoveAll(dir)
	}
	bin, _ := filepath.Abs("../../../target/release/flowmesh")
	fmAddr := freeAddr()
	stop, err := start(filepath.Join(dir, "flowmesh.log"), bin, "serve", "--listen", fmAddr,
		"--data", "file://"+filepath.Join(dir, "flowmesh"), "--fsync", fsync)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cannot start flowmesh serve:", err)
		stopAll()
		os.Exit(1)
	}
	stops = append(stops, stop)
	fmURL = "grpc://" + fmAddr
	if err := waitFlowmesh(fmURL); err != nil {
		fmt.Fprintln(os.Stderr, err)
		stopAll()
		os.Exit(1)
	}

	if ns, err := exec.LookPath("nats-server"); err != nil {
		natsSkip = "nats-server not found in PATH (apt-get install -y nats-server); NATS benchmarks skipped"
		fmt.Fprintln(os.Stderr, "NOTE:", natsSkip)
	} else {
		host, port, _ := net.SplitHostPort(freeAddr())
		stop, err := start(filepath.Join(dir, "nats.log"), ns, "-js", "-sd", filepath.Join(dir, "nats"),
			"-a", host, "-p", port)
		if err != nil {
			fmt.Fprintln(os.Stderr, "cannot start nats-server:", err)
			stopAll()
			os.Exit(1)
		}
		stops = append(stops, stop)
		natsURL = "nats://" + net.JoinHostPort(host, port)
		if err := waitNATS(natsURL); err != nil {
			fmt.Fprintln(os.Stderr, err)
			stopAll()
			os.Exit(1)
		}
	}
	code := m.Run()
	stopAll()
	os.Exit(code)
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// start runs a server process that dies with the benchmark process.
func start(logPath, bin string, args ...string) (func(), error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	return func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		logf.Close()
	}, nil
}

func waitFlowmesh(url string) error {
	for end := time.Now().Add(15 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		c, err := flowmesh.Connect(ctx, url)
		if err == nil {
			err = c.Health(ctx)
			c.Close()
		}
		cancel()
		if err == nil {
			return nil
		}
	}
	return fmt.Errorf("flowmesh broker at %s not healthy", url)
}

func waitNATS(url string) error {
	for end := time.Now().Add(15 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		nc, err := nats.Connect(url)
		if err != nil {
			continue
		}
		js, err := nc.JetStream()
		if err == nil {
			_, err = js.AccountInfo()
		}
		nc.Close()
		if err == nil {
			return nil
		}
	}
	return fmt.Errorf("nats-server at %s has no JetStream", url)
}

var seq int

func uniq(p string) string {
	seq++
	return fmt.Sprintf("%s%d", p, seq)
}

func fmClient(b *testing.B) *flowmesh.Client {
	b.Helper()
	c, err := flowmesh.Connect(context.Background(), fmURL)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

func natsJS(b *testing.B) nats.JetStreamContext {
	b.Helper()
	if natsURL == "" {
		b.Skip(natsSkip)
	}
	nc, err := nats.Connect(natsURL)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, err := nc.JetStream(nats.PublishAsyncMaxPending(16384))
	if err != nil {
		b.Fatal(err)
	}
	return js
}

func natsStream(b *testing.B, js nats.JetStreamContext) string {
	b.Helper()
	name := uniq("BENCH")
	subj := strings.ToLower(name)
	if _, err := js.AddStream(&nats.StreamConfig{Name: name, Subjects: []string{subj}, Storage: nats.FileStorage}); err != nil {
		b.Fatal(err)
	}
	return subj
}

func natsKV(b *testing.B, js nats.JetStreamContext) nats.KeyValue {
	b.Helper()
	kv, err := js.CreateKeyValue(&nats.KeyValueConfig{Bucket: uniq("bench"), Storage: nats.FileStorage})
	if err != nil {
		b.Fatal(err)
	}
	return kv
}

// Publish: one message at a time, waiting for the stored position (ack).
func BenchmarkPublish(b *testing.B) {
	payload := make([]byte, payloadSize)
	b.Run("impl=flowmesh", func(b *testing.B) {
		c := fmClient(b)
		ctx, s := context.Background(), uniq("bench")
		b.SetBytes(payloadSize)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := c.Publish(ctx, s, payload); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("impl=nats", func(b *testing.B) {
		js := natsJS(b)
		subj := natsStream(b, js)
		b.SetBytes(payloadSize)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := js.Publish(subj, payload); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// PublishAsync: b.N publishes in flight, then wait for every ack.
func BenchmarkPublishAsync(b *testing.B) {
	payload := make([]byte, payloadSize)
	b.Run("impl=flowmesh", func(b *testing.B) {
		c := fmClient(b)
		ctx, s := context.Background(), uniq("bench")
		b.SetBytes(payloadSize)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := c.PublishAsync(ctx, s, payload); err != nil {
				b.Fatal(err)
			}
		}
		if err := c.Flush(ctx); err != nil {
			b.Fatal(err)
		}
	})
	b.Run("impl=nats", func(b *testing.B) {
		js := natsJS(b)
		subj := natsStream(b, js)
		b.SetBytes(payloadSize)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := js.PublishAsync(subj, payload); err != nil {
				b.Fatal(err)
			}
		}
		select {
		case <-js.PublishAsyncComplete():
		case <-time.After(time.Minute):
			b.Fatal("async publishes not acknowledged within a minute")
		}
	})
}

func BenchmarkKVSet(b *testing.B) {
	value := make([]byte, payloadSize)
	b.Run("impl=flowmesh", func(b *testing.B) {
		c := fmClient(b)
		ctx, bucket := context.Background(), uniq("bench")
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := c.Set(ctx, bucket, "key", value); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("impl=nats", func(b *testing.B) {
		kv := natsKV(b, natsJS(b))
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := kv.Put("key", value); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkKVGet(b *testing.B) {
	value := make([]byte, payloadSize)
	b.Run("impl=flowmesh", func(b *testing.B) {
		c := fmClient(b)
		ctx, bucket := context.Background(), uniq("bench")
		if _, err := c.Set(ctx, bucket, "key", value); err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := c.Get(ctx, bucket, "key"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("impl=nats", func(b *testing.B) {
		kv := natsKV(b, natsJS(b))
		if _, err := kv.Put("key", value); err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := kv.Get("key"); err != nil {
				b.Fatal(err)
			}
		}
	})
}
