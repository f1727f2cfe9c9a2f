//go:build !unix

package cputime

import "time"

// Supported reports whether Process measures anything on this system: off
// Unix it does not, and the benchmarks leave out their CPU figures.
const Supported = false

// Process returns 0: the process's CPU time is not read on this system.
func Process() time.Duration { return 0 }
