//go:build !linux

package interop

import "os/exec"

// dieWithTest does nothing here: only Linux has a parent-death signal. The
// tests' cleanups still stop every server they start.
func dieWithTest(*exec.Cmd) {}
