// Command soak runs mixed traffic against a broker it starts and kills
// every few minutes: publishes (2 producers), subscriptions (2 readers from
// the start), a queue (producer and worker), KV compare-and-set counters
// and a watch. It samples the broker's and its own RSS and descriptors
// every second (CSV), and at the end reports loss and duplicates: every
// acknowledged publish stored once and seen once by each reader, every
// enqueued job acknowledged once. Exit status 1 if anything was lost or
// duplicated.
package main

import (
	"context"
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	fm "github.com/flowmesh/flowmesh/bindings/go"
)

type counters struct {
	published, consumed, enqueued, acked, kvSets, watched, kills atomic.Int64
}

type brokerProc struct {
	bin, addr, data string
	cmd             *exec.Cmd
	mu              sync.Mutex
}

func (b *brokerProc) start() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cmd = exec.Command(b.bin, "serve", "--listen", b.addr, "--data", b.data, "--fsync", "batch")
	b.cmd.Env = append(os.Environ(), "RUST_LOG=error")
	b.cmd.Stderr = os.Stderr
	if err := b.cmd.Start(); err != nil {
		return err
	}
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", b.addr); err == nil {
			c.Close()
			return nil
		}
	}
	return fmt.Errorf("broker did not listen on %s", b.addr)
}

func (b *brokerProc) kill() {
	b.mu.Lock()
	defer b.mu.Unlock()
	_ = b.cmd.Process.Kill()
	_, _ = b.cmd.Process.Wait()
}

func (b *brokerProc) pid() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cmd.Process.Pid
}

func procStat(pid string) (rssKiB int64, fds int) {
	if status, err := os.ReadFile("/proc/" + pid + "/status"); err == nil {
		for _, l := range strings.Split(string(status), "\n") {
			if strings.HasPrefix(l, "VmRSS:") {
				rssKiB, _ = strconv.ParseInt(strings.Fields(l)[1], 10, 64)
			}
		}
	}
	if es, err := os.ReadDir("/proc/" + pid + "/fd"); err == nil {
		fds = len(es)
	}
	return
}

func main() {
	bin := flag.String("flowmesh", "../../target/release/flowmesh", "the flowmesh binary")
	minutes := flag.Float64("minutes", 30, "how long the traffic runs")
	killEvery := flag.Duration("kill-every", 3*time.Minute, "SIGKILL and restart the broker this often")
	out := flag.String("csv", "soak.csv", "samples (one a second)")
	flag.Parse()
	if err := run(*bin, time.Duration(*minutes*float64(time.Minute)), *killEvery, *out); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

func run(bin string, dur, killEvery time.Duration, csvPath string) error {
	dir, err := os.MkdirTemp("", "fm-soak-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	addr := l.Addr().String()
	l.Close()
	b := &brokerProc{bin: bin, addr: addr, data: "file://" + dir}
	if err := b.start(); err != nil {
		return err
	}
	defer b.kill()
	url := "grpc://" + addr
	opts := []fm.Option{
		fm.WithRequestTimeout(30 * time.Second), fm.WithMaxRetries(10), fm.WithHeartbeat(time.Second),
		fm.WithOption("reconnect_initial_ms", "50"), fm.WithOption("reconnect_max_ms", "1000"),
	}
	connect := func() (*fm.Client, error) { return fm.Connect(context.Background(), url, opts...) }
	setup, err := connect()
	if err != nil {
		return err
	}
	defer setup.Close()
	bg := context.Background()
	if err := setup.CreateStream(bg, "soak", fm.WithPartitions(2)); err != nil {
		return err
	}
	var c counters
	ctx, stop := context.WithTimeout(bg, dur)
	defer stop()
	var wg sync.WaitGroup
	var mu sync.Mutex
	acked := map[string]bool{}    // publishes the broker acknowledged
	maybe := map[string]bool{}    // publishes whose answer was lost
	jobsOK := map[string]bool{}   // jobs enqueued with an answer
	jobAcks := map[string]int{}   // successful acks per job
	jobMaybe := map[string]bool{} // jobs whose enqueue or ack answer was lost
	lostAnswer := func(err error) bool {
		return errors.Is(err, fm.ErrDisconnected) || errors.Is(err, fm.ErrTimeout) || errors.Is(err, fm.ErrUnavailable)
	}
	var problems []string
	fail := func(format string, a ...any) {
		mu.Lock()
		problems = append(problems, fmt.Sprintf(format, a...))
		mu.Unlock()
	}

	// Readers: every stored message once, in order per partition.
	type reader struct {
		seen map[string]int
		mu   sync.Mutex
	}
	readers := []*reader{{seen: map[string]int{}}, {seen: map[string]int{}}}
	for _, r := range readers {
		cl, err := connect()
		if err != nil {
			return err
		}
		defer cl.Close()
		r := r
		sub, err := cl.Subscribe(bg, "soak", func(m *fm.Message) {
			r.mu.Lock()
			r.seen[string(m.Payload)]++
			r.mu.Unlock()
			c.consumed.Add(1)
		}, fm.StartEarliest())
		if err != nil {
			return err
		}
		defer sub.Unsubscribe()
	}
	// Producers.
	for p := 0; p < 2; p++ {
		cl, err := connect()
		if err != nil {
			return err
		}
		defer cl.Close()
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			for n := 0; ctx.Err() == nil; n++ {
				id := fmt.Sprintf("p%d-%d", p, n)
				_, err := cl.Publish(bg, "soak", []byte(id))
				mu.Lock()
				switch {
				case err == nil:
					acked[id] = true
					c.published.Add(1)
				case lostAnswer(err):
					maybe[id] = true
				default:
					problems = append(problems, fmt.Sprintf("publish %s: %v", id, err))
				}
				mu.Unlock()
			}
		}(p)
	}
	// Queue: a producer and a worker.
	qc, err := connect()
	if err != nil {
		return err
	}
	defer qc.Close()
	wg.Add(2)
	go func() {
		defer wg.Done()
		for n := 0; ctx.Err() == nil; n++ {
			job := fmt.Sprintf("j%d", n)
			_, err := qc.Enqueue(bg, "soak", []byte(job))
			mu.Lock()
			if err == nil {
				jobsOK[job] = true
				c.enqueued.Add(1)
			} else if lostAnswer(err) {
				jobMaybe[job] = true
			} else {
				problems = append(problems, fmt.Sprintf("enqueue %s: %v", job, err))
			}
			mu.Unlock()
			time.Sleep(2 * time.Millisecond)
		}
	}()
	work := func(until func() bool) {
		for !until() {
			j, err := qc.Reserve(bg, "soak", 10*time.Second, 500*time.Millisecond)
			if err != nil {
				continue // nothing ready, or the broker restarting
			}
			err = qc.Ack(bg, "soak", j.ID)
			mu.Lock()
			if err == nil {
				jobAcks[string(j.Payload)]++
				c.acked.Add(1)
			} else if lostAnswer(err) {
				jobMaybe[string(j.Payload)] = true
			}
			mu.Unlock()
		}
	}
	go func() { defer wg.Done(); work(func() bool { return ctx.Err() != nil }) }()
	// KV: a CAS counter and a watch.
	kc, err := connect()
	if err != nil {
		return err
	}
	defer kc.Close()
	watch, err := kc.Watch(bg, "soak", "", func(fm.KVEvent) { c.watched.Add(1) })
	if err == nil {
		defer watch.Unsubscribe()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			e, err := kc.GetEntry(bg, "soak", "counter")
			var n int
			if err == nil {
				n, _ = strconv.Atoi(string(e.Value))
			} else if !errors.Is(err, fm.ErrNotFound) {
				continue
			}
			if _, err := kc.CAS(bg, "soak", "counter", []byte(strconv.Itoa(n+1)), e.Revision); err == nil {
				c.kvSets.Add(1)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	// Kills.
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(killEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				b.kill()
				time.Sleep(200 * time.Millisecond)
				if err := b.start(); err != nil {
					fail("restart: %v", err)
					return
				}
				c.kills.Add(1)
			}
		}
	}()
	// Samples.
	f, err := os.Create(csvPath)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	_ = w.Write([]string{"seconds", "broker_rss_kib", "broker_fds", "client_rss_kib", "client_fds", "published", "consumed", "jobs_acked", "kv_sets", "watch_events", "kills"})
	start := time.Now()
	sampleDone := make(chan struct{})
	go func() {
		defer close(sampleDone)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			brss, bfds := procStat(strconv.Itoa(b.pid()))
			crss, cfds := procStat("self")
			_ = w.Write([]string{fmt.Sprintf("%.0f", time.Since(start).Seconds()), fmt.Sprint(brss), fmt.Sprint(bfds), fmt.Sprint(crss), fmt.Sprint(cfds),
				fmt.Sprint(c.published.Load()), fmt.Sprint(c.consumed.Load()), fmt.Sprint(c.acked.Load()), fmt.Sprint(c.kvSets.Load()), fmt.Sprint(c.watched.Load()), fmt.Sprint(c.kills.Load())})
			w.Flush()
		}
	}()
	wg.Wait()
	<-sampleDone
	f.Close()

	// Drain the queue: jobs reserved when the traffic stopped come back after their visibility.
	quiet := time.Now()
	work(func() bool {
		mu.Lock()
		defer mu.Unlock()
		for j := range jobsOK {
			if jobAcks[j] == 0 && !jobMaybe[j] {
				return time.Since(quiet) > 60*time.Second
			}
		}
		return true
	})
	// Everything stored, once.
	stored := map[string]int{}
	parts, err := setup.Partitions(bg, "soak")
	if err != nil {
		return err
	}
	for p := uint32(0); p < parts; p++ {
		for off := uint64(0); ; {
			ms, err := setup.Read(bg, "soak", p, off, 10000)
			if err != nil {
				return fmt.Errorf("read back: %w", err)
			}
			if len(ms) == 0 {
				break
			}
			for _, m := range ms {
				stored[string(m.Payload)]++
				off = m.Offset + 1
			}
		}
	}
	loss, dups := 0, 0
	for id := range acked {
		if stored[id] == 0 {
			loss++
		}
	}
	for _, n := range stored {
		if n > 1 {
			dups += n - 1
		}
	}
	// Readers catch up (bounded), then each saw each stored message once.
	readerLoss, readerDups := 0, 0
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if c.consumed.Load() >= int64(len(stored)*len(readers)) {
			break
		}
	}
	for _, r := range readers {
		r.mu.Lock()
		for id := range stored {
			switch n := r.seen[id]; {
			case n == 0:
				readerLoss++
			case n > 1:
				readerDups += n - 1
			}
		}
		r.mu.Unlock()
	}
	jobLoss, jobDups := 0, 0
	for j := range jobsOK {
		if jobAcks[j] == 0 && !jobMaybe[j] {
			jobLoss++
		}
	}
	for _, n := range jobAcks {
		if n > 1 {
			jobDups += n - 1
		}
	}
	fmt.Printf("soak: %v, %d broker kills; %d publishes acknowledged (%d with a lost answer), %d stored, loss %d, stored duplicates %d; "+
		"readers: loss %d, duplicates %d; jobs: %d enqueued, %d acked, loss %d, acked twice %d; %d KV CAS, %d watch events\n",
		dur, c.kills.Load(), len(acked), len(maybe), len(stored), loss, dups, readerLoss, readerDups,
		len(jobsOK), c.acked.Load(), jobLoss, jobDups, c.kvSets.Load(), c.watched.Load())
	for _, p := range problems[:min(len(problems), 10)] {
		fmt.Println("  problem:", p)
	}
	if loss+dups+readerLoss+readerDups+jobLoss+jobDups > 0 || len(problems) > 0 {
		return errors.New("loss or duplicates")
	}
	return nil
}
