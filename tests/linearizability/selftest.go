package main

import (
	"fmt"

	"github.com/anishathalye/porcupine"
)

// selfTest proves the models can fail: illegal histories (a stale read, a
// CAS that ignored a newer revision, a job acknowledged twice, a job lost)
// must be rejected, and a legal one with a lost answer accepted.
func selfTest() error {
	op := func(id int, in, out interface{}, call, ret int64) porcupine.Operation {
		return porcupine.Operation{ClientId: id, Input: in, Output: out, Call: call, Return: ret}
	}
	cases := []struct {
		what  string
		model porcupine.Model
		h     []porcupine.Operation
		want  porcupine.CheckResult
	}{
		{"stale read", kvModel.ToModel(), []porcupine.Operation{
			op(0, kvIn{Op: "set", Key: "k", Val: "a"}, kvOut{Ok: true, Rev: 1}, 0, 1),
			op(0, kvIn{Op: "set", Key: "k", Val: "b"}, kvOut{Ok: true, Rev: 2}, 2, 3),
			op(1, kvIn{Op: "get", Key: "k"}, kvOut{Ok: true, Val: "a", Rev: 1}, 4, 5),
		}, porcupine.Illegal},
		{"cas over a newer revision", kvModel.ToModel(), []porcupine.Operation{
			op(0, kvIn{Op: "set", Key: "k", Val: "a"}, kvOut{Ok: true, Rev: 1}, 0, 1),
			op(0, kvIn{Op: "set", Key: "k", Val: "b"}, kvOut{Ok: true, Rev: 2}, 2, 3),
			op(1, kvIn{Op: "cas", Key: "k", Val: "c", Expected: 1}, kvOut{Ok: true, Rev: 3}, 4, 5),
		}, porcupine.Illegal},
		{"a lost set seen later", kvModel.ToModel(), []porcupine.Operation{
			op(0, kvIn{Op: "set", Key: "k", Val: "a"}, kvOut{Unknown: true}, 0, never),
			op(1, kvIn{Op: "get", Key: "k"}, kvOut{}, 1, 2),
			op(1, kvIn{Op: "get", Key: "k"}, kvOut{Ok: true, Val: "a", Rev: 7}, 3, 4),
			op(1, kvIn{Op: "cas", Key: "k", Val: "b", Expected: 7}, kvOut{Ok: true, Rev: 8}, 5, 6),
		}, porcupine.Ok},
		{"acknowledged twice", queueModel.ToModel(), []porcupine.Operation{
			op(0, qIn{Op: "enqueue", Job: "j"}, qOut{Ok: true}, 0, 1),
			op(1, qIn{Op: "reserve"}, qOut{Ok: true, Job: "j"}, 2, 3),
			op(2, qIn{Op: "reserve"}, qOut{Ok: true, Job: "j"}, 4, 5),
			op(1, qIn{Op: "ack", Job: "j"}, qOut{Ok: true}, 6, 7),
			op(2, qIn{Op: "ack", Job: "j"}, qOut{Ok: true}, 8, 9),
		}, porcupine.Illegal},
		{"reserved after its ack", queueModel.ToModel(), []porcupine.Operation{
			op(0, qIn{Op: "enqueue", Job: "j"}, qOut{Ok: true}, 0, 1),
			op(0, qIn{Op: "ack", Job: "j"}, qOut{Ok: true}, 2, 3),
			op(1, qIn{Op: "reserve"}, qOut{Ok: true, Job: "j"}, 4, 5),
		}, porcupine.Illegal},
	}
	for _, c := range cases {
		if got := porcupine.CheckOperations(c.model, c.h); (got && c.want != porcupine.Ok) || (!got && c.want == porcupine.Ok) {
			return fmt.Errorf("self-test %q: the checker said linearizable=%v", c.what, got)
		}
	}
	if _, _, p := exactlyOnce([]porcupine.Operation{op(0, qIn{Op: "enqueue", Job: "j"}, qOut{Ok: true}, 0, 1)}); len(p) != 1 {
		return fmt.Errorf("self-test: a job enqueued and never acknowledged was not reported lost")
	}
	return nil
}
