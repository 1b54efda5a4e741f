//go:build !flowmesh_pkgconfig

package flowmesh

// By default the binding links the library built in this repository
// (target/release), so `go test` works from a checkout without installing
// anything; the rpath lets the test binary find libflowmesh.so at run time.
// Build with -tags flowmesh_pkgconfig to use an installed library instead.

/*
#cgo CFLAGS: -I${SRCDIR}/../../include
#cgo LDFLAGS: -L${SRCDIR}/../../target/release -lflowmesh -Wl,-rpath,${SRCDIR}/../../target/release
*/
import "C"
