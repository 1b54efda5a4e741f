package main

import (
	"context"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// broker is a `flowmesh serve` child on loopback, reached through a proxy
// that can cut every connection.
type broker struct {
	bin, data, addr string
	cmd             *exec.Cmd
	proxy           *proxy
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func startBroker(bin, data string) (*broker, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	b := &broker{bin: bin, data: data, addr: addr}
	if err := b.start(); err != nil {
		return nil, err
	}
	if b.proxy, err = startProxy(addr); err != nil {
		b.stop()
		return nil, err
	}
	return b, nil
}

func (b *broker) start() error {
	b.cmd = exec.Command(b.bin, "serve", "--listen", b.addr, "--data", b.data, "--fsync", "batch")
	b.cmd.Env = append(os.Environ(), "RUST_LOG=error")
	b.cmd.Stderr = os.Stderr
	if err := b.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", b.bin, err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", b.addr); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("broker did not listen on %s within 60 s", b.addr)
}

func (b *broker) kill() {
	_ = b.cmd.Process.Kill()
	_, _ = b.cmd.Process.Wait()
}

func (b *broker) stop() {
	if b.proxy != nil {
		b.proxy.close()
	}
	_ = b.cmd.Process.Signal(syscall.SIGCONT)
	b.kill()
}

// inject runs one fault every 0.5-1.5 s until ctx ends; returns the counts.
func (b *broker) inject(ctx context.Context, kinds []string) map[string]int {
	counts := map[string]int{}
	rnd := rand.New(rand.NewSource(time.Now().UnixNano()))
	for {
		select {
		case <-ctx.Done():
			return counts
		case <-time.After(time.Duration(500+rnd.Intn(1000)) * time.Millisecond):
		}
		kind := kinds[rnd.Intn(len(kinds))]
		hold := time.Duration(100+rnd.Intn(700)) * time.Millisecond
		switch kind {
		case "kill":
			b.kill()
			time.Sleep(hold / 4)
			if err := b.start(); err != nil {
				fmt.Fprintln(os.Stderr, "restart:", err)
				return counts
			}
		case "stop":
			_ = b.cmd.Process.Signal(syscall.SIGSTOP)
			time.Sleep(hold)
			_ = b.cmd.Process.Signal(syscall.SIGCONT)
		case "cut":
			b.proxy.cut(hold)
		default:
			continue
		}
		counts[kind]++
	}
}

// heal ends every fault: the broker runs, the proxy passes.
func (b *broker) heal() {
	_ = b.cmd.Process.Signal(syscall.SIGCONT)
}

type proxy struct {
	addr     string
	upstream string
	l        net.Listener
	mu       sync.Mutex
	conns    map[net.Conn]bool
	refuse   time.Time
}

func startProxy(upstream string) (*proxy, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &proxy{addr: l.Addr().String(), upstream: upstream, l: l, conns: map[net.Conn]bool{}}
	go p.accept()
	return p, nil
}

func (p *proxy) accept() {
	for {
		down, err := p.l.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		refusing := time.Now().Before(p.refuse)
		p.mu.Unlock()
		if refusing {
			down.Close()
			continue
		}
		up, err := net.Dial("tcp", p.upstream)
		if err != nil {
			down.Close()
			continue
		}
		p.mu.Lock()
		p.conns[down], p.conns[up] = true, true
		p.mu.Unlock()
		pipe := func(a, b net.Conn) {
			_, _ = io.Copy(a, b)
			a.Close()
			b.Close()
			p.mu.Lock()
			delete(p.conns, a)
			delete(p.conns, b)
			p.mu.Unlock()
		}
		go pipe(down, up)
		go pipe(up, down)
	}
}

// cut closes every connection and refuses new ones for d.
func (p *proxy) cut(d time.Duration) {
	p.mu.Lock()
	p.refuse = time.Now().Add(d)
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	time.Sleep(d)
}

func (p *proxy) close() {
	p.l.Close()
	p.cut(0)
}
