package drain_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/thriftbatch/thriftbatch/internal/drain"
	"github.com/thriftbatch/thriftbatch/internal/poll"
)

// bound is how long a test waits for something that should happen at once:
// generous, so that a loaded machine cannot fail a test that is right.
const bound = 10 * time.Second

// closeAsync runs g.Close(ctx, onDrain...) on a goroutine of its own and
// returns a channel that delivers its error.
func closeAsync(g *drain.Gate, ctx context.Context, onDrain ...func()) <-chan error {
	done := make(chan error, 1)
	go func() { done <- g.Close(ctx, onDrain...) }()
	return done
}

// await returns what ch delivers, failing the test after bound.
func await[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(bound):
		t.Fatalf("%s: nothing after %v", what, bound)
		var zero T
		return zero
	}
}

// notYet fails the test if ch delivers within a short while. It can only
// miss a wrong early delivery on a slow machine, never fail a right test.
func notYet[T any](t *testing.T, ch <-chan T, what string) {
	t.Helper()
	select {
	case v := <-ch:
		t.Fatalf("%s already: %v", what, v)
	case <-time.After(20 * time.Millisecond):
	}
}

// waitFor polls cond until it holds, failing the test after bound.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	if !poll.Until(bound, cond) {
		t.Fatalf("%s: not after %v", what, bound)
	}
}

// counter returns an onDrain callback and the number of times it ran.
func counter() (func(), *atomic.Int32) {
	var n atomic.Int32
	return func() { n.Add(1) }, &n
}

func TestEnterIsRefusedAfterClose(t *testing.T) {
	var g drain.Gate
	if !g.Enter() {
		t.Fatal("a zero Gate refused Enter")
	}
	g.Exit()
	if err := g.Close(context.Background()); err != nil {
		t.Fatalf("Close = %v", err)
	}
	for range 3 {
		if g.Enter() {
			t.Fatal("Enter admitted work after Close")
		}
	}
	if n := g.InFlight(); n != 0 {
		t.Errorf("InFlight() = %d after refused Enters, want 0", n)
	}
}

func TestEnterIsRefusedWhileCloseWaits(t *testing.T) {
	var g drain.Gate
	g.Enter()
	closed := closeAsync(&g, context.Background())
	waitFor(t, "Enter refused once Close has begun", func() bool {
		if g.Enter() {
			g.Exit()
			return false
		}
		return true
	})
	if n := g.InFlight(); n != 1 {
		t.Errorf("InFlight() = %d, want 1", n)
	}
	g.Exit()
	if err := await(t, closed, "Close after the last Exit"); err != nil {
		t.Errorf("Close = %v, want nil", err)
	}
}

func TestInFlightCountsEnteredWork(t *testing.T) {
	var g drain.Gate
	for i := 1; i <= 5; i++ {
		g.Enter()
		if n := g.InFlight(); n != i {
			t.Fatalf("after %d Enters: InFlight() = %d", i, n)
		}
	}
	for i := 4; i >= 0; i-- {
		g.Exit()
		if n := g.InFlight(); n != i {
			t.Fatalf("after an Exit: InFlight() = %d, want %d", n, i)
		}
	}
}

func TestCloseWaitsForWorkInFlight(t *testing.T) {
	var g drain.Gate
	g.Enter()
	g.Enter()
	onDrain, ran := counter()
	closed := closeAsync(&g, context.Background(), onDrain)
	notYet(t, closed, "Close returned with two pieces of work in flight")
	g.Exit()
	notYet(t, closed, "Close returned with one piece of work in flight")
	if n := ran.Load(); n != 0 {
		t.Fatalf("onDrain ran %d times with work in flight", n)
	}
	g.Exit()
	if err := await(t, closed, "Close after the last Exit"); err != nil {
		t.Fatalf("Close = %v, want nil", err)
	}
	waitFor(t, "onDrain after the last Exit", func() bool { return ran.Load() == 1 })
}

// TestCloseReturnsOnceOnDrainHasRun is the contract Processor.Close leans
// on: a nil from Close means the work is over and what onDrain releases
// (the processor's codecs) is released, as it is when nothing was in flight.
func TestCloseReturnsOnceOnDrainHasRun(t *testing.T) {
	var g drain.Gate
	g.Enter()
	entered, release := make(chan struct{}), make(chan struct{})
	closed := closeAsync(&g, context.Background(), func() {
		close(entered)
		<-release
	})
	notYet(t, closed, "Close returned with work in flight")
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		g.Exit()
	}()
	await(t, entered, "onDrain after the last Exit")
	select {
	case err := <-closed:
		close(release)
		<-exited
		t.Fatalf("Close returned %v while onDrain was still running", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	await(t, exited, "Exit once onDrain has returned")
	if err := await(t, closed, "Close once onDrain has returned"); err != nil {
		t.Errorf("Close = %v, want nil", err)
	}
}

func TestOnDrainRunsAtOnceWhenNothingIsInFlight(t *testing.T) {
	var g drain.Gate
	g.Enter()
	g.Exit()
	var order []string
	err := g.Close(context.Background(),
		func() { order = append(order, "first") },
		func() { order = append(order, "second") })
	if err != nil {
		t.Fatalf("Close = %v", err)
	}
	// Run on Close's own goroutine before it returns: no wait, no race.
	if len(order) != 2 || order[0] != "first" || order[1] != "second" {
		t.Errorf("onDrain callbacks ran as %q, want [first second] before Close returned", order)
	}
}

// TestCloseWithAnExpiredContextAndNothingInFlightReturnsNil: with nothing
// to wait for there is nothing for ctx to cut short (Processor.Close: "It
// returns ctx's error when batches were still running then").
func TestCloseWithAnExpiredContextAndNothingInFlightReturnsNil(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	failures := 0
	for range 100 {
		var g drain.Gate
		onDrain, ran := counter()
		if err := g.Close(ctx, onDrain); err != nil {
			failures++
		}
		if ran.Load() != 1 {
			t.Fatalf("onDrain ran %d times, want once", ran.Load())
		}
	}
	if failures > 0 {
		t.Errorf("Close(canceled ctx) on a gate with nothing in flight returned ctx.Err() %d times in 100, want never", failures)
	}
}

func TestCloseWithAnExpiredContext(t *testing.T) {
	for _, tc := range []struct {
		name string
		ctx  func() (context.Context, context.CancelFunc)
		want error
	}{
		{"a canceled context returns context.Canceled", func() (context.Context, context.CancelFunc) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx, cancel
		}, context.Canceled},
		{"a passed deadline returns context.DeadlineExceeded", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), time.Millisecond)
		}, context.DeadlineExceeded},
	} {
		t.Run(tc.name+" and onDrain still runs once, at the last Exit", func(t *testing.T) {
			var g drain.Gate
			g.Enter()
			g.Enter()
			onDrain, ran := counter()
			ctx, cancel := tc.ctx()
			defer cancel()
			if err := g.Close(ctx, onDrain); !errors.Is(err, tc.want) {
				t.Fatalf("Close = %v, want %v", err, tc.want)
			}
			if g.Enter() {
				t.Fatal("Enter admitted work after a Close that timed out")
			}
			g.Exit()
			if n := ran.Load(); n != 0 {
				t.Fatalf("onDrain ran %d times with work in flight", n)
			}
			g.Exit()
			// Exit runs onDrain on its own goroutine, before it returns.
			if n := ran.Load(); n != 1 {
				t.Fatalf("onDrain ran %d times after the last Exit, want 1", n)
			}
			if err := g.Close(context.Background()); err != nil {
				t.Errorf("a second Close once drained = %v, want nil", err)
			}
			if n := ran.Load(); n != 1 {
				t.Errorf("onDrain ran %d times after a second Close, want 1", n)
			}
		})
	}
}

func TestASecondCloseDoesNotRunOnDrainAgain(t *testing.T) {
	t.Run("after a drain with nothing in flight", func(t *testing.T) {
		var g drain.Gate
		first, firstRan := counter()
		second, secondRan := counter()
		if err := g.Close(context.Background(), first); err != nil {
			t.Fatal(err)
		}
		if err := g.Close(context.Background(), second, first); err != nil {
			t.Fatalf("second Close = %v", err)
		}
		if firstRan.Load() != 1 || secondRan.Load() != 0 {
			t.Errorf("first onDrain ran %d times, second %d; want 1 and 0", firstRan.Load(), secondRan.Load())
		}
	})
	t.Run("while the first Close still waits, and both return at the last Exit", func(t *testing.T) {
		var g drain.Gate
		g.Enter()
		first, firstRan := counter()
		second, secondRan := counter()
		closed1 := closeAsync(&g, context.Background(), first)
		waitFor(t, "the first Close has begun", func() bool {
			if g.Enter() {
				g.Exit()
				return false
			}
			return true
		})
		closed2 := closeAsync(&g, context.Background(), second)
		notYet(t, closed2, "the second Close returned with work in flight")
		g.Exit()
		if err := await(t, closed1, "the first Close"); err != nil {
			t.Errorf("first Close = %v", err)
		}
		if err := await(t, closed2, "the second Close"); err != nil {
			t.Errorf("second Close = %v", err)
		}
		if firstRan.Load() != 1 || secondRan.Load() != 0 {
			t.Errorf("first onDrain ran %d times, second %d; want 1 and 0", firstRan.Load(), secondRan.Load())
		}
	})
	t.Run("with an expired context, it returns ctx.Err() while work is in flight", func(t *testing.T) {
		var g drain.Gate
		g.Enter()
		first, firstRan := counter()
		closed := closeAsync(&g, context.Background(), first)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		waitFor(t, "the first Close has begun", func() bool {
			if g.Enter() {
				g.Exit()
				return false
			}
			return true
		})
		if err := g.Close(ctx, first); !errors.Is(err, context.Canceled) {
			t.Errorf("second Close with a canceled ctx = %v, want context.Canceled", err)
		}
		g.Exit()
		if err := await(t, closed, "the first Close"); err != nil {
			t.Errorf("first Close = %v", err)
		}
		if n := firstRan.Load(); n != 1 {
			t.Errorf("onDrain ran %d times, want 1", n)
		}
	})
}

// TestConcurrentEnterExitClose is for -race: workers enter and exit while
// two Closes race them. Every admitted piece of work exits, onDrain runs
// exactly once, after the last Exit, and nothing is admitted after it.
func TestConcurrentEnterExitClose(t *testing.T) {
	var g drain.Gate
	var admitted, active atomic.Int64
	var drainedWith atomic.Int64
	drainedWith.Store(-1)
	var ran atomic.Int32
	onDrain := func() {
		ran.Add(1)
		drainedWith.Store(active.Load())
	}
	start := make(chan struct{})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			<-start
			for range 2000 {
				if !g.Enter() {
					return
				}
				active.Add(1)
				admitted.Add(1)
				_ = g.InFlight()
				active.Add(-1)
				g.Exit()
			}
		})
	}
	close(start)
	waitFor(t, "some work admitted", func() bool { return admitted.Load() > 0 })
	closed := make(chan error, 2)
	for range 2 {
		go func() { closed <- g.Close(context.Background(), onDrain) }()
	}
	for range 2 {
		if err := await(t, closed, "Close"); err != nil {
			t.Errorf("Close = %v", err)
		}
	}
	wg.Wait()
	waitFor(t, "onDrain", func() bool { return ran.Load() >= 1 })
	if n := ran.Load(); n != 1 {
		t.Errorf("onDrain ran %d times, want 1", n)
	}
	if n := drainedWith.Load(); n != 0 {
		t.Errorf("onDrain ran with %d pieces of work still active", n)
	}
	if n := g.InFlight(); n != 0 {
		t.Errorf("InFlight() = %d after everything exited", n)
	}
	if g.Enter() {
		t.Error("Enter admitted work after Close")
	}
}
