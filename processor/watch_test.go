package processor

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/thriftbatch/thriftbatch/internal/poll"
)

// switchable is a transport whose IsOpen the test decides, counting the
// checks.
type switchable struct {
	thrift.TTransport
	open   atomic.Bool
	checks atomic.Int32
	// hold, when not nil, is received from before each check answers.
	hold chan struct{}
}

func (s *switchable) IsOpen() bool {
	s.checks.Add(1)
	if s.hold != nil {
		<-s.hold
	}
	return s.open.Load()
}

func newSwitchable() *switchable {
	s := &switchable{TTransport: thrift.NewTMemoryBuffer()}
	s.open.Store(true)
	return s
}

func TestWatchChecksEveryIntervalWhileTheClientStays(t *testing.T) {
	trans := newSwitchable()
	ctx, w := watch(context.Background(), trans, time.Millisecond)
	if !poll.Until(5*time.Second, func() bool { return trans.checks.Load() >= 3 }) {
		t.Fatalf("%d checks in 5 s at an interval of 1 ms, want 3 at least", trans.checks.Load())
	}
	if err := ctx.Err(); err != nil {
		t.Fatalf("context ended while the client was connected: %v (cause %v)", err, context.Cause(ctx))
	}
	w.stop()
	if !errors.Is(context.Cause(ctx), context.Canceled) || errors.Is(context.Cause(ctx), ErrClientGone) {
		t.Errorf("cause after stop = %v, want context.Canceled", context.Cause(ctx))
	}
	// No check is scheduled once stop has returned: at most one that was
	// already running finishes.
	after := trans.checks.Load()
	time.Sleep(20 * time.Millisecond)
	if n := trans.checks.Load(); n > after+1 {
		t.Errorf("%d checks after stop, want 1 at most", n-after)
	}
}

func TestWatchCancelsWithErrClientGoneWhenTheClientLeaves(t *testing.T) {
	trans := newSwitchable()
	ctx, w := watch(context.Background(), trans, time.Millisecond)
	defer w.stop()
	// Some checks pass first, so that the one that fails is a re-armed
	// timer's and not the first.
	if !poll.Until(5*time.Second, func() bool { return trans.checks.Load() >= 2 }) {
		t.Fatalf("%d checks in 5 s at an interval of 1 ms, want 2 at least", trans.checks.Load())
	}
	trans.open.Store(false)
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("context not canceled 5 s after the client left")
	}
	if !errors.Is(context.Cause(ctx), ErrClientGone) {
		t.Errorf("cause = %v, want ErrClientGone", context.Cause(ctx))
	}
	checks := trans.checks.Load()
	time.Sleep(20 * time.Millisecond)
	if n := trans.checks.Load(); n != checks {
		t.Errorf("%d checks after the client left and the batch was canceled, want none", n-checks)
	}
}

func TestWatchStoppedDuringACheckChecksNoMore(t *testing.T) {
	trans := newSwitchable()
	trans.hold = make(chan struct{})
	_, w := watch(context.Background(), trans, time.Millisecond)
	if !poll.Until(5*time.Second, func() bool { return trans.checks.Load() == 1 }) {
		t.Fatal("no check began within 5 s at an interval of 1 ms")
	}
	w.stop() // while the first check is in IsOpen
	close(trans.hold)
	time.Sleep(20 * time.Millisecond)
	if n := trans.checks.Load(); n != 1 {
		t.Errorf("%d checks after stop, want none after the one in flight", n-1)
	}
}

// BenchmarkWatch times what the disconnect watch costs a batch that ends
// within one interval, as most do: watch, then stop.
//
//	go test -run XXX -bench Watch -benchmem ./processor
func BenchmarkWatch(b *testing.B) {
	trans := newSwitchable()
	ctx := context.Background()
	for b.Loop() {
		_, w := watch(ctx, trans, DefaultDisconnectCheck)
		w.stop()
	}
}
