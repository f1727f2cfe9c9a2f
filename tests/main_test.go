package tests

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine behind: a server,
// a connection, a worker pool or a handler that outlives its test.
//
// ants starts a default pool of its own at package init (ants.go: the
// purgeStaleWorkers and ticktock goroutines of defaultAntsPool), which
// thriftbatch never uses and nobody can release. IgnoreCurrent leaves out
// exactly the goroutines alive when TestMain starts, which are those two.
// goleak.IgnoreTopFunction on those function names would also hide the same
// goroutines of every pool a Processor failed to release, which is one of
// the leaks this check is for.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m, goleak.IgnoreCurrent()) }
