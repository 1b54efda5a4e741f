module github.com/flowmesh/flowmesh/bench/soak

go 1.22

require github.com/flowmesh/flowmesh/bindings/go v0.0.0

replace github.com/flowmesh/flowmesh/bindings/go => ../../bindings/go
