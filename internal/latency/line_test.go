//go:build linux

package latency

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/thriftbatch/thriftbatch/internal/poll"
)

func TestWaitIsPreciseOnLinux(t *testing.T) {
	if !Precise() {
		t.Fatal("Precise() = false: the timerfd line is not in use")
	}
}

// Wait queues on the line and starts its goroutine, rather than fall back
// to a timer.
func TestWaitTakesTheLine(t *testing.T) {
	l := getLine()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Wait(ctx, time.Hour) }()
	queued := poll.Until(10*time.Second, func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.waits) == 1 && l.running
	})
	if !queued {
		t.Fatal("the wait is not on the line")
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Wait = %v, want context.Canceled", err)
	}
	waitStopped(t, l)
}

// ownDone is a context whose Done channel is its own, not a cancelCtx's:
// context.AfterFunc watches it with a goroutine until stopped.
type ownDone struct {
	context.Context
	done chan struct{}
}

func (c ownDone) Done() <-chan struct{} { return c.done }

func (c ownDone) Err() error {
	select {
	case <-c.done:
		return context.Canceled
	default:
		return nil
	}
}

// The line stops watching a context once no wait is pending under it: the
// context's watcher goroutine does not outlive the waits.
func TestTheLineStopsWatchingAContextItsWaitsOutlived(t *testing.T) {
	ctx := ownDone{Context: context.Background(), done: make(chan struct{})}
	defer close(ctx.done)
	// Before the close above, which would end a watcher left behind.
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for range 3 {
		if err := Wait(ctx, time.Millisecond); err != nil {
			t.Fatal(err)
		}
	}
	waitStopped(t, getLine())
}

// Waits whose context's deadline falls about when they come due end either
// way, each once: on time with nil, or with the deadline's error; and the
// line is left watching nothing.
func TestDeadlinesRaceWaitsComingDue(t *testing.T) {
	const d = 2 * time.Millisecond
	var wg sync.WaitGroup
	for i := range 50 {
		ctx, cancel := context.WithTimeout(context.Background(), d+time.Duration(i%5-2)*100*time.Microsecond)
		defer cancel()
		for range 10 {
			wg.Go(func() {
				start := time.Now()
				err := Wait(ctx, d)
				switch {
				case err == nil:
					if took := time.Since(start); took < d {
						t.Errorf("a wait of %v returned nil after %v", d, took)
					}
				case !errors.Is(err, context.DeadlineExceeded):
					t.Errorf("Wait = %v, want nil or context.DeadlineExceeded", err)
				}
			})
		}
	}
	wg.Wait()
	l := getLine()
	l.mu.Lock()
	if len(l.groups) != 0 || len(l.waits) != 0 {
		t.Errorf("the line still holds %d groups and %d waits", len(l.groups), len(l.waits))
	}
	l.mu.Unlock()
	waitStopped(t, l)
}

// Once its waits have ended, the line watches no context (each group ends
// with its last wait, whether the waits ended on time or with their
// context), and its goroutine returns, not waiting for the time of the
// waits that ended early.
func TestTheLineForgetsContextsWhenTheirWaitsEnd(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			if err := Wait(ctx, time.Millisecond); err != nil {
				t.Error(err)
			}
		})
	}
	ended, end := context.WithCancel(context.Background())
	for range 10 {
		wg.Go(func() { _ = Wait(ended, time.Hour) })
	}
	time.Sleep(10 * time.Millisecond)
	end()
	wg.Wait()
	l := getLine()
	l.mu.Lock()
	if len(l.groups) != 0 {
		t.Errorf("the line still watches %d contexts", len(l.groups))
	}
	l.mu.Unlock()
	waitStopped(t, l)
}

// waitStopped fails t unless l's goroutine returns within 10 s.
func waitStopped(t *testing.T, l *line) {
	t.Helper()
	stopped := poll.Until(10*time.Second, func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return !l.running
	})
	if !stopped {
		t.Fatal("the line's goroutine still runs")
	}
}

// A line whose timerfd fails hands its pending waits to timers: they still
// end at their time, or with their context; later waits are refused, and
// Wait takes them on a timer.
func TestABrokenLineKeepsItsWaits(t *testing.T) {
	l, err := newLine()
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		l.mu.Lock()
		l.fail() // closes the timerfd, if the test ended before it failed
		l.mu.Unlock()
	}()
	ctx, cancel := context.WithCancel(context.Background())
	const d = 20 * time.Millisecond
	start := time.Now()
	onTime := &wait{due: start.Add(d), done: make(chan struct{})}
	early := &wait{due: start.Add(time.Hour), done: make(chan struct{})}
	if !l.add(context.Background(), nil, onTime) || !l.add(ctx, ctx.Done(), early) {
		t.Fatal("a working line refused a wait")
	}
	l.mu.Lock()
	l.fail()
	l.mu.Unlock()
	if l.add(context.Background(), nil, &wait{due: start, done: make(chan struct{})}) {
		t.Error("a broken line took a wait")
	}
	select {
	case <-onTime.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the wait handed to a timer did not end")
	}
	if took := time.Since(start); took < d || onTime.canceled {
		t.Errorf("the wait of %v ended after %v, canceled %v", d, took, onTime.canceled)
	}
	cancel()
	select {
	case <-early.done:
		if !early.canceled {
			t.Error("the wait whose context ended is not marked canceled")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the wait whose context ended did not end")
	}
	// The line's goroutine, blocked on the timerfd, returns: fail closed
	// it.
	waitStopped(t, l)
}

// A line that fails with only a far wait pending stops reading the timerfd
// at once, rather than at that wait's time.
func TestABrokenLineStopsReading(t *testing.T) {
	l, err := newLine()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	far := &wait{due: time.Now().Add(time.Hour), done: make(chan struct{})}
	if !l.add(ctx, ctx.Done(), far) {
		t.Fatal("a working line refused a wait")
	}
	l.mu.Lock()
	l.fail()
	l.mu.Unlock()
	waitStopped(t, l)
	cancel() // ends the wait, and stops the timer fail handed it to
	select {
	case <-far.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the wait whose context ended did not end")
	}
	if far.timer.Stop() {
		t.Error("the wait's timer is still armed after the wait ended")
	}
}

// Waits that each have a context of their own, as calls of a generated
// processor have while thrift.ServerConnectivityCheckInterval is above 0:
// ending every other context ends exactly those waits, taken off the heap
// by index while the others stay, each to end at its own time; then the
// line holds nothing.
func TestContextsOfTheirOwnEndTheirWaitsOnly(t *testing.T) {
	const n = 300
	start := time.Now()
	type result struct {
		i    int
		err  error
		took time.Duration
	}
	results := make(chan result, n)
	cancels := make([]context.CancelFunc, n)
	due := func(i int) time.Duration { return 100*time.Millisecond + time.Duration(i%7)*20*time.Millisecond }
	for i := range n {
		ctx, cancel := context.WithCancel(context.Background())
		cancels[i] = cancel
		go func() {
			err := Wait(ctx, due(i))
			results <- result{i, err, time.Since(start)}
		}()
	}
	l := getLine()
	if !poll.Until(10*time.Second, func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.waits) == n
	}) {
		t.Fatal("the waits are not on the line")
	}
	for i := 0; i < n; i += 2 {
		cancels[i]()
	}
	for range n {
		r := <-results
		switch {
		case r.i%2 == 0 && !errors.Is(r.err, context.Canceled):
			t.Errorf("wait %d, whose context ended: %v, want context.Canceled", r.i, r.err)
		case r.i%2 == 1 && (r.err != nil || r.took < due(r.i)):
			t.Errorf("wait %d: %v after %v, want nil after %v", r.i, r.err, r.took, due(r.i))
		}
	}
	for _, cancel := range cancels {
		cancel()
	}
	if !poll.Until(10*time.Second, func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.groups) == 0 && len(l.waits) == 0
	}) {
		t.Error("the line still holds groups or waits")
	}
}

// BenchmarkEndingContextsOfTheirOwn times the end of n waits, each under a
// context of its own, when a parent of all of them ends: each context's end
// takes its wait off the heap by index.
//
//	go test -run XXX -bench EndingContextsOfTheirOwn -benchtime 20x ./internal/latency
func BenchmarkEndingContextsOfTheirOwn(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("waits=%d", n), func(b *testing.B) {
			l := getLine()
			for b.Loop() {
				b.StopTimer()
				parent, cancel := context.WithCancel(context.Background())
				var wg sync.WaitGroup
				children := make([]context.CancelFunc, n)
				for i := range n {
					ctx, cancel := context.WithCancel(parent) // ended by parent
					children[i] = cancel
					wg.Go(func() { _ = Wait(ctx, time.Hour) })
				}
				poll.Until(time.Minute, func() bool {
					l.mu.Lock()
					defer l.mu.Unlock()
					return len(l.waits) == n
				})
				b.StartTimer()
				cancel()
				wg.Wait()
				b.StopTimer()
				for _, cancel := range children {
					cancel()
				}
				b.StartTimer()
			}
		})
	}
}
