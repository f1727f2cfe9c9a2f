package poll_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/thriftbatch/thriftbatch/internal/poll"
)

func TestUntilReturnsOnceTheConditionHolds(t *testing.T) {
	var calls atomic.Int32
	if !poll.Until(10*time.Second, func() bool { return calls.Add(1) == 3 }) {
		t.Fatal("Until reported false for a condition that became true")
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("cond called %d times, want 3", n)
	}
}

func TestUntilGivesUpAfterTheBound(t *testing.T) {
	start := time.Now()
	if poll.Until(20*time.Millisecond, func() bool { return false }) {
		t.Fatal("Until reported true for a condition that never held")
	}
	if took := time.Since(start); took < 20*time.Millisecond {
		t.Errorf("Until gave up after %v, before the bound of 20ms", took)
	}
}

func TestUntilCallsTheConditionOnceWithoutWaiting(t *testing.T) {
	var calls atomic.Int32
	if !poll.Until(0, func() bool { calls.Add(1); return true }) || calls.Load() != 1 {
		t.Errorf("Until(0, true) called cond %d times", calls.Load())
	}
}
