//go:build unix

// Package cputime reads the CPU time the process has used, for the
// benchmarks that report CPU per operation beside wall time: on a shared
// machine it moves less than the wall time with the load of others.
package cputime

import (
	"syscall"
	"time"
)

// Supported reports whether Process measures anything on this system: on
// Unix systems it does, from getrusage.
const Supported = true

// Process returns the user and system CPU time the process has used so
// far, every goroutine's, from one getrusage(RUSAGE_SELF) system call.
// getrusage fails only for an invalid argument, which this call cannot
// pass; Process panics if it does.
func Process() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic("cputime: getrusage: " + err.Error())
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
