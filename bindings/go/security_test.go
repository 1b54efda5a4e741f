package flowmesh

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startTLSBroker runs `flowmesh serve` with a certificate and an access file
// made by tests/security/fixture.sh (openssl); it returns the grpcs:// URL
// (by host name) and the fixture directory.
func startTLSBroker(t *testing.T) (string, string) {
	t.Helper()
	bin := brokerBinary()
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("no broker binary at %s", bin)
	}
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("the openssl CLI is needed to make test certificates")
	}
	dir := t.TempDir()
	fixture, _ := filepath.Abs("../../tests/security/fixture.sh")
	if out, err := exec.Command(fixture, bin, dir).CombinedOutput(); err != nil {
		t.Fatalf("fixture.sh: %v: %s", err, out)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cmd := exec.Command(bin, "serve", "--listen", addr, "--data", "mem://",
		"--tls-cert", filepath.Join(dir, "server.pem"), "--tls-key", filepath.Join(dir, "server.key"),
		"--access-file", filepath.Join(dir, "access.json"))
	logf, err := os.Create(filepath.Join(dir, "broker.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	killWithParent(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logf.Close()
	})
	deadline := time.Now().Add(15 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("TLS broker did not listen on %s", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	_, port, _ := net.SplitHostPort(addr)
	return "grpcs://localhost:" + port, dir
}

func TestTLSAndToken(t *testing.T) {
	url, dir := startTLSBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	connect := func(opts ...Option) (*Client, error) {
		base := []Option{WithTLSCAFile(filepath.Join(dir, "ca.pem")), WithTenant("acme"),
			WithNamespace("secure"), WithConnectTimeout(3 * time.Second)}
		return Connect(ctx, url, append(base, opts...)...)
	}

	full, err := connect(WithToken("test-full-token"))
	if err != nil {
		t.Fatalf("TLS connect: %v", err)
	}
	defer full.Close()
	if _, err := full.Set(ctx, "cfg", "k", []byte("over tls")); err != nil {
		t.Fatalf("set: %v", err)
	}
	if v, err := full.Get(ctx, "cfg", "k"); err != nil || string(v) != "over tls" {
		t.Fatalf("get = %q, %v", v, err)
	}
	if _, err := full.Get(ctx, "globex/secure/cfg", "k"); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("other tenant: want ErrUnauthorized, got %v", err)
	}

	reader, err := connect(WithToken("test-read-token"))
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	if _, err := reader.Get(ctx, "cfg", "k"); err != nil {
		t.Fatalf("read-only get: %v", err)
	}
	if _, err := reader.Set(ctx, "cfg", "k", []byte("x")); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("read-only set: want ErrUnauthorized, got %v", err)
	}

	for _, opts := range [][]Option{nil, {WithToken("wrong-token")}} {
		c, err := connect(opts...)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Get(ctx, "cfg", "k"); !errors.Is(err, ErrUnauthorized) {
			t.Errorf("token %v: want ErrUnauthorized, got %v", opts, err)
		}
		c.Close()
	}
}

func TestTLSMismatchFailsFast(t *testing.T) {
	url, dir := startTLSBroker(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	plain := strings.Replace(url, "grpcs://localhost", "grpc://127.0.0.1", 1)
	_, err := Connect(ctx, plain, WithConnectTimeout(3*time.Second), WithToken("test-full-token"))
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "grpcs://") {
		t.Errorf("plaintext against TLS: want ErrUnavailable naming grpcs://, got %v", err)
	}
	_, err = Connect(ctx, url, WithTLSCAFile(filepath.Join(dir, "other-ca.pem")), WithConnectTimeout(3*time.Second))
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("wrong CA: want ErrUnavailable about the certificate, got %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("mismatches took %v", d)
	}
}
