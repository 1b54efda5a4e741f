package flowmesh

import (
	"os/exec"
	"syscall"
)

// killWithParent makes the kernel kill the broker when the test process ends.
func killWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
