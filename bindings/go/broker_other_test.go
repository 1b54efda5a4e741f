//go:build !linux

package flowmesh

import "os/exec"

// killWithParent: only Linux has a parent-death signal; TestMain still
// kills the broker on a normal exit.
func killWithParent(*exec.Cmd) {}
