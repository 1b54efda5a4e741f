// Command linearizability records histories of concurrent KV set/get/CAS
// and queue enqueue/reserve/ack from several clients while faults hit the
// broker (SIGKILL and restart, SIGSTOP pauses, cut links through a proxy),
// and checks them with Porcupine. Queue jobs must never be acknowledged
// twice or lost: after the run the queue is drained and every job enqueued
// with an answer must have been acknowledged exactly once.
//
//	go run . -url broker            # starts ../../target/release/flowmesh itself
//	go run . -url file:///tmp/lin    # the embedded durable engine (no faults)
//	go run . -url grpc://host:port   # any running broker (no faults)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anishathalye/porcupine"
	fm "github.com/flowmesh/flowmesh/bindings/go"
)

type recorder struct {
	mu    sync.Mutex
	start time.Time
	kv    []porcupine.Operation
	queue []porcupine.Operation
}

func (r *recorder) now() int64 { return int64(time.Since(r.start)) }

// never is the return time of an operation whose answer was lost: it may
// take effect at any point after its call.
const never = int64(1) << 62

func (r *recorder) add(list *[]porcupine.Operation, op porcupine.Operation, unknown bool) {
	if unknown {
		op.Return = never
	}
	r.mu.Lock()
	*list = append(*list, op)
	r.mu.Unlock()
}

// lost: the call may or may not have happened.
func lost(err error) bool {
	return errors.Is(err, fm.ErrDisconnected) || errors.Is(err, fm.ErrTimeout) ||
		errors.Is(err, fm.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded)
}

type stats struct {
	ops, unknown, failed atomic.Int64
}

func worker(ctx context.Context, id int, c *fm.Client, rec *recorder, keys int, st *stats, jobs *atomic.Int64) {
	rnd := rand.New(rand.NewSource(int64(id)*7919 + time.Now().UnixNano()))
	lastRev := map[string]uint64{}
	var reserved []uint64
	var reservedJobs []string
	for ctx.Err() == nil {
		call := rec.now()
		octx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		key := fmt.Sprintf("k%d", rnd.Intn(keys))
		st.ops.Add(1)
		switch p := rnd.Intn(100); {
		case p < 20:
			val := fmt.Sprintf("c%d-%d", id, call)
			rev, err := c.Set(octx, "lin", key, []byte(val))
			out := kvOut{Ok: err == nil, Rev: rev, Unknown: err != nil && lost(err)}
			if err != nil && !out.Unknown {
				st.failed.Add(1)
				break
			}
			rec.add(&rec.kv, porcupine.Operation{ClientId: id, Input: kvIn{Op: "set", Key: key, Val: val}, Call: call, Output: out, Return: rec.now()}, out.Unknown)
		case p < 45:
			e, err := c.GetEntry(octx, "lin", key)
			out := kvOut{Ok: err == nil, Val: string(e.Value), Rev: e.Revision, Unknown: err != nil && lost(err)}
			if err != nil && !out.Unknown && !errors.Is(err, fm.ErrNotFound) {
				st.failed.Add(1)
				break
			}
			if err == nil {
				lastRev[key] = e.Revision
			}
			rec.add(&rec.kv, porcupine.Operation{ClientId: id, Input: kvIn{Op: "get", Key: key}, Call: call, Output: out, Return: rec.now()}, out.Unknown)
		case p < 60:
			val := fmt.Sprintf("c%d-%d", id, call)
			exp := lastRev[key]
			rev, err := c.CAS(octx, "lin", key, []byte(val), exp)
			out := kvOut{Ok: err == nil, Rev: rev, Conflict: errors.Is(err, fm.ErrConflict), Unknown: err != nil && lost(err)}
			if err != nil && !out.Unknown && !out.Conflict {
				st.failed.Add(1)
				break
			}
			if err == nil {
				lastRev[key] = rev
			}
			rec.add(&rec.kv, porcupine.Operation{ClientId: id, Input: kvIn{Op: "cas", Key: key, Val: val, Expected: exp}, Call: call, Output: out, Return: rec.now()}, out.Unknown)
		case p < 75:
			job := fmt.Sprintf("j%d-%d", id, call)
			_, err := c.Enqueue(octx, "lin", []byte(job))
			out := qOut{Ok: err == nil, Unknown: err != nil && lost(err)}
			if err != nil && !out.Unknown {
				st.failed.Add(1)
				break
			}
			jobs.Add(1)
			rec.add(&rec.queue, porcupine.Operation{ClientId: id, Input: qIn{Op: "enqueue", Job: job}, Call: call, Output: out, Return: rec.now()}, out.Unknown)
		case p < 88:
			j, err := c.Reserve(octx, "lin", 3*time.Second, 50*time.Millisecond)
			out := qOut{Ok: err == nil, Unknown: err != nil && lost(err) && !errors.Is(err, fm.ErrTimeout)}
			if err == nil {
				out.Job = string(j.Payload)
				reserved = append(reserved, j.ID)
				reservedJobs = append(reservedJobs, out.Job)
			} else if !errors.Is(err, fm.ErrTimeout) && !out.Unknown {
				st.failed.Add(1)
				break
			}
			rec.add(&rec.queue, porcupine.Operation{ClientId: id, Input: qIn{Op: "reserve"}, Call: call, Output: out, Return: rec.now()}, out.Unknown)
		default:
			if len(reserved) == 0 {
				break
			}
			i := rnd.Intn(len(reserved))
			jid, job := reserved[i], reservedJobs[i]
			reserved = append(reserved[:i], reserved[i+1:]...)
			reservedJobs = append(reservedJobs[:i], reservedJobs[i+1:]...)
			err := c.Ack(octx, "lin", jid)
			out := qOut{Ok: err == nil, NotFound: errors.Is(err, fm.ErrNotFound), Conflict: errors.Is(err, fm.ErrConflict), Unknown: err != nil && lost(err)}
			if err != nil && !out.Unknown && !out.NotFound && !out.Conflict {
				st.failed.Add(1)
				break
			}
			rec.add(&rec.queue, porcupine.Operation{ClientId: id, Input: qIn{Op: "ack", Job: job}, Call: call, Output: out, Return: rec.now()}, out.Unknown)
		}
		cancel()
	}
}

// drain reserves and acks what is left, recording it like the workers do.
func drain(c *fm.Client, rec *recorder) error {
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		call := rec.now()
		// Longer than the workers' visibility: their reservations come back.
		j, err := c.Reserve(ctx, "lin", 30*time.Second, 4*time.Second)
		if errors.Is(err, fm.ErrTimeout) {
			cancel()
			return nil
		}
		if err != nil {
			cancel()
			if lost(err) {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			return err
		}
		rec.add(&rec.queue, porcupine.Operation{ClientId: -1, Input: qIn{Op: "reserve"}, Call: call, Output: qOut{Ok: true, Job: string(j.Payload)}, Return: rec.now()}, false)
		call = rec.now()
		err = c.Ack(ctx, "lin", j.ID)
		cancel()
		out := qOut{Ok: err == nil, NotFound: errors.Is(err, fm.ErrNotFound), Unknown: err != nil && lost(err)}
		if err != nil && !out.Unknown && !out.NotFound {
			return err
		}
		rec.add(&rec.queue, porcupine.Operation{ClientId: -1, Input: qIn{Op: "ack", Job: string(j.Payload)}, Call: call, Output: out, Return: rec.now()}, out.Unknown)
	}
	return errors.New("the queue did not drain within 60 s")
}

// exactlyOnce: every job enqueued with an answer was acked once (or by an
// ack whose answer was lost); none twice.
func exactlyOnce(h []porcupine.Operation) (acked, enqueued int, problems []string) {
	acks := map[string]int{}
	known := map[string]bool{}
	maybe := map[string]bool{}
	// An ack whose answer was lost may have removed the job.
	maybeAcked := map[string]bool{}
	for _, op := range h {
		in, out := op.Input.(qIn), op.Output.(qOut)
		switch {
		case in.Op == "enqueue" && out.Ok:
			known[in.Job] = true
		case in.Op == "enqueue" && out.Unknown:
			maybe[in.Job] = true
		case in.Op == "ack" && out.Ok:
			acks[in.Job]++
		case in.Op == "ack" && out.Unknown:
			maybeAcked[in.Job] = true
		}
	}
	for j, n := range acks {
		if n > 1 {
			problems = append(problems, fmt.Sprintf("job %s acknowledged %d times", j, n))
		}
		if !known[j] && !maybe[j] {
			problems = append(problems, fmt.Sprintf("job %s acknowledged but never enqueued", j))
		}
		acked += n
	}
	for j := range known {
		if acks[j] == 0 && !maybeAcked[j] {
			problems = append(problems, fmt.Sprintf("job %s enqueued and acknowledged by the queue, then lost", j))
		}
	}
	return acked, len(known), problems
}

func main() {
	url := flag.String("url", "broker", "engine URL; \"broker\" starts flowmesh serve and injects faults")
	bin := flag.String("flowmesh", "../../target/release/flowmesh", "the flowmesh binary (for -url broker)")
	clients := flag.Int("clients", 4, "concurrent clients")
	seconds := flag.Float64("seconds", 8, "how long the workload runs")
	keys := flag.Int("keys", 3, "KV keys (one register each)")
	faultList := flag.String("faults", "kill,stop,cut", "faults to inject with -url broker")
	flag.Parse()
	if err := selfTest(); err != nil {
		fmt.Fprintln(os.Stderr, "linearizability:", err)
		os.Exit(1)
	}
	if err := run(*url, *bin, *clients, time.Duration(*seconds*float64(time.Second)), *keys, *faultList); err != nil {
		fmt.Fprintln(os.Stderr, "linearizability:", err)
		os.Exit(1)
	}
}

func run(url, bin string, clients int, dur time.Duration, keys int, faultList string) error {
	var b *broker
	target := url
	if url == "broker" {
		dir, err := os.MkdirTemp("", "fm-lin-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		b, err = startBroker(bin, "file://"+dir)
		if err != nil {
			return err
		}
		defer b.stop()
		target = "grpc://" + b.proxy.addr
	}
	opts := []fm.Option{
		fm.WithRequestTimeout(5 * time.Second),
		fm.WithHeartbeat(500 * time.Millisecond),
		fm.WithMaxRetries(5),
		fm.WithOption("reconnect_initial_ms", "50"),
		fm.WithOption("reconnect_max_ms", "500"),
		fm.WithOption("reconnect_jitter_ms", "20"),
	}
	cs := make([]*fm.Client, clients)
	for i := range cs {
		c, err := fm.Connect(context.Background(), target, opts...)
		if err != nil {
			return fmt.Errorf("connect %s: %w", target, err)
		}
		defer c.Close()
		cs[i] = c
	}
	rec := &recorder{start: time.Now()}
	var st stats
	var jobs atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), dur)
	defer cancel()
	var wg sync.WaitGroup
	for i, c := range cs {
		wg.Add(1)
		go func() { defer wg.Done(); worker(ctx, i, c, rec, keys, &st, &jobs) }()
	}
	faults := map[string]int{}
	if b != nil {
		wg.Add(1)
		go func() { defer wg.Done(); faults = b.inject(ctx, strings.Split(faultList, ",")) }()
	}
	wg.Wait()
	if b != nil {
		b.heal()
	}
	if err := drain(cs[0], rec); err != nil {
		return fmt.Errorf("drain: %w", err)
	}
	fmt.Printf("%s: %d clients, %v, faults %v: %d operations (%d with a lost answer, %d refused), %d KV and %d queue in the history\n",
		url, clients, dur, faults, st.ops.Load(), st.unknown.Load()+countUnknown(rec), st.failed.Load(), len(rec.kv), len(rec.queue))
	if st.failed.Load() > 0 {
		return fmt.Errorf("%d operations failed with an error that is neither an answer nor a lost link", st.failed.Load())
	}
	for _, m := range []struct {
		name  string
		model porcupine.Model
		h     []porcupine.Operation
	}{{"kv", kvModel.ToModel(), rec.kv}, {"queue", queueModel.ToModel(), rec.queue}} {
		t := time.Now()
		res, info := porcupine.CheckOperationsVerbose(m.model, m.h, 120*time.Second)
		fmt.Printf("  %s: %d operations, porcupine: %s in %v\n", m.name, len(m.h), res, time.Since(t).Round(time.Millisecond))
		if res != porcupine.Ok {
			file := fmt.Sprintf("%s/linearizability-%s.html", os.TempDir(), m.name)
			if f, err := os.Create(file); err == nil {
				_ = porcupine.Visualize(m.model, info, f)
				f.Close()
			}
			return fmt.Errorf("%s history is %s (see %s)", m.name, res, file)
		}
	}
	acked, enqueued, problems := exactlyOnce(rec.queue)
	fmt.Printf("  queue: %d jobs enqueued with an answer, %d acknowledgements, %d problems\n", enqueued, acked, len(problems))
	if len(problems) > 0 {
		return fmt.Errorf("queue: %s", strings.Join(problems[:min(len(problems), 10)], "; "))
	}
	return nil
}

func countUnknown(rec *recorder) int64 {
	var n int64
	for _, h := range [][]porcupine.Operation{rec.kv, rec.queue} {
		for _, op := range h {
			if op.Return == never {
				n++
			}
		}
	}
	return n
}
