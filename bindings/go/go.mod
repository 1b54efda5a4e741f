module github.com/flowmesh/flowmesh/bindings/go

go 1.22
