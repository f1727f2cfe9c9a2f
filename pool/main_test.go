package pool_test

import (
	"testing"

	"go.uber.org/goleak"
)

// Every test closes its pools: ants starts two housekeeping goroutines per
// pool and keeps idle workers until Close. IgnoreCurrent leaves out the
// goroutines of the default pool ants builds when it is imported, which no
// test owns.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m, goleak.IgnoreCurrent()) }
