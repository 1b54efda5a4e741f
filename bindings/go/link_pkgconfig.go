//go:build flowmesh_pkgconfig

package flowmesh

// With -tags flowmesh_pkgconfig the compiler and linker flags come from the
// installed flowmesh.pc (PKG_CONFIG_PATH selects a non-standard prefix).

/*
#cgo pkg-config: flowmesh
*/
import "C"
