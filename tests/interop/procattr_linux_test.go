package interop

import (
	"os/exec"
	"syscall"
)

// dieWithTest has the kernel kill the server if the test process dies
// without running its cleanups (a panic, go test's -timeout), so that no
// example_server outlives the tests.
func dieWithTest(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
