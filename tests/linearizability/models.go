package main

import (
	"fmt"
	"sort"
	"strings"

	"github.com/anishathalye/porcupine"
)

// KV: one register per key (revisions are the bucket's, so they only grow),
// with set, get and compare-and-set. An operation whose answer was lost
// (DISCONNECTED, TIMEOUT) may or may not have taken effect, and if it did,
// its revision is unknown until a later read shows it.

type kvIn struct {
	Op       string // set, get, cas
	Key      string
	Val      string
	Expected uint64
}

type kvOut struct {
	Unknown  bool
	Ok       bool // set/cas stored; get found the key
	Conflict bool // cas refused
	Val      string
	Rev      uint64
}

type kvState struct {
	Val string
	Rev uint64 // 0 = absent
	// The value was written by an operation whose revision is unknown: it is
	// above Rev, and a read fixes it.
	RevUnknown bool
}

func (s kvState) revMatches(r uint64) bool {
	if s.RevUnknown {
		return r > s.Rev
	}
	return r == s.Rev
}

var kvModel = porcupine.NondeterministicModel{
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range h {
			k := op.Input.(kvIn).Key
			if _, ok := by[k]; !ok {
				keys = append(keys, k)
			}
			by[k] = append(by[k], op)
		}
		sort.Strings(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, by[k])
		}
		return out
	},
	Init: func() []interface{} { return []interface{}{kvState{}} },
	Step: func(state, input, output interface{}) []interface{} {
		s, in, out := state.(kvState), input.(kvIn), output.(kvOut)
		written := kvState{Val: in.Val, Rev: s.Rev, RevUnknown: true}
		switch in.Op {
		case "set":
			if out.Unknown {
				return []interface{}{s, written}
			}
			if out.Rev > s.Rev {
				return []interface{}{kvState{Val: in.Val, Rev: out.Rev}}
			}
		case "get":
			if out.Unknown {
				return []interface{}{s}
			}
			if !out.Ok && s.Rev == 0 && !s.RevUnknown {
				return []interface{}{s}
			}
			if out.Ok && (s.Rev > 0 || s.RevUnknown) && out.Val == s.Val && s.revMatches(out.Rev) {
				return []interface{}{kvState{Val: s.Val, Rev: out.Rev}}
			}
		case "cas":
			// Succeeds iff the current revision (0 when absent) is the
			// expected one; an unknown revision is above s.Rev.
			could := in.Expected == s.Rev
			if s.RevUnknown {
				could = in.Expected > s.Rev
			}
			switch {
			case out.Unknown:
				if could {
					return []interface{}{s, written}
				}
				return []interface{}{s}
			case out.Ok:
				if could && out.Rev > in.Expected {
					return []interface{}{kvState{Val: in.Val, Rev: out.Rev}}
				}
			case out.Conflict:
				if s.RevUnknown || in.Expected != s.Rev {
					return []interface{}{s}
				}
			}
		}
		return nil
	},
	Equal: func(a, b interface{}) bool { return a.(kvState) == b.(kvState) },
	DescribeOperation: func(input, output interface{}) string {
		in, out := input.(kvIn), output.(kvOut)
		res := fmt.Sprintf("ok=%v conflict=%v %q@%d", out.Ok, out.Conflict, out.Val, out.Rev)
		if out.Unknown {
			res = "unknown"
		}
		return fmt.Sprintf("%s(%s %q exp=%d) -> %s", in.Op, in.Key, in.Val, in.Expected, res)
	},
}

// Queue: the set of live jobs (enqueued, not yet acked). A reserve returns
// a live job (a visibility timeout may hand a reserved one out again, so
// reserving does not remove it); an ack removes a live job, and acking one
// that is gone is NOT_FOUND: a job acked twice, or one that vanished, makes
// the history illegal. An ack after the reservation ran out may be refused
// (CONFLICT: nats://) or may take (the embedded engines); both are legal.

type qIn struct {
	Op  string // enqueue, reserve, ack
	Job string // payload (unique per enqueue)
}

type qOut struct {
	Unknown  bool
	Ok       bool // enqueued; reserved a job; acked
	NotFound bool // ack of a job that is not there
	Conflict bool // ack refused: the job is there but no longer reserved by this client
	Job      string
}

type qState string // sorted, comma-separated live jobs

func (s qState) has(j string) bool {
	for _, x := range strings.Split(string(s), ",") {
		if x == j {
			return true
		}
	}
	return false
}

func (s qState) with(j string) qState {
	xs := []string{j}
	if s != "" {
		xs = append(xs, strings.Split(string(s), ",")...)
	}
	sort.Strings(xs)
	return qState(strings.Join(xs, ","))
}

func (s qState) without(j string) qState {
	var xs []string
	for _, x := range strings.Split(string(s), ",") {
		if x != j && x != "" {
			xs = append(xs, x)
		}
	}
	return qState(strings.Join(xs, ","))
}

var queueModel = porcupine.NondeterministicModel{
	// Jobs are independent: each one's enqueue, reserves and acks form a
	// partition (a reserve that returned nothing says nothing and is left out).
	Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
		by := map[string][]porcupine.Operation{}
		var jobs []string
		for _, op := range h {
			j := op.Input.(qIn).Job
			if j == "" {
				j = op.Output.(qOut).Job
			}
			if j == "" {
				continue
			}
			if _, ok := by[j]; !ok {
				jobs = append(jobs, j)
			}
			by[j] = append(by[j], op)
		}
		sort.Strings(jobs)
		out := make([][]porcupine.Operation, 0, len(jobs))
		for _, j := range jobs {
			out = append(out, by[j])
		}
		return out
	},
	Init: func() []interface{} { return []interface{}{qState("")} },
	Step: func(state, input, output interface{}) []interface{} {
		s, in, out := state.(qState), input.(qIn), output.(qOut)
		switch in.Op {
		case "enqueue":
			if out.Unknown {
				return []interface{}{s, s.with(in.Job)}
			}
			if out.Ok && !s.has(in.Job) {
				return []interface{}{s.with(in.Job)}
			}
		case "reserve":
			// Nothing reserved is always possible (live jobs may be in flight).
			if out.Unknown || !out.Ok || s.has(out.Job) {
				return []interface{}{s}
			}
		case "ack":
			switch {
			case out.Unknown:
				if s.has(in.Job) {
					return []interface{}{s, s.without(in.Job)}
				}
				return []interface{}{s}
			case out.Ok && s.has(in.Job):
				return []interface{}{s.without(in.Job)}
			case out.NotFound && !s.has(in.Job):
				return []interface{}{s}
			case out.Conflict && s.has(in.Job):
				// Its visibility ran out: the ack did nothing, the job is delivered again.
				return []interface{}{s}
			}
		}
		return nil
	},
	Equal: func(a, b interface{}) bool { return a.(qState) == b.(qState) },
	DescribeOperation: func(input, output interface{}) string {
		in, out := input.(qIn), output.(qOut)
		return fmt.Sprintf("%s(%s) -> %+v", in.Op, in.Job, out)
	},
}
