module github.com/flowmesh/flowmesh/tests/linearizability

go 1.22

require github.com/flowmesh/flowmesh/bindings/go v0.0.0

require github.com/anishathalye/porcupine v1.3.1

replace github.com/flowmesh/flowmesh/bindings/go => ../../bindings/go
