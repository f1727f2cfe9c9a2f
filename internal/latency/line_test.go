//go:build linux

package latency

import (
	"context"
	"sync"
	"testing"
	"time"
)

func TestWaitIsPreciseOnLinux(t *testing.T) {
	if !Precise() {
		t.Fatal("Precise() = false: the timerfd line is not in use")
	}
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
	deadline := time.Now().Add(10 * time.Second)
	for {
		l.mu.Lock()
		running := l.running
		l.mu.Unlock()
		if !running {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the line's goroutine still runs")
		}
		time.Sleep(time.Millisecond)
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
	<-onTime.done
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
