package main

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"
)

// way is one way of making a number of calls, timed as a unit.
type way struct {
	name  string
	calls int                             // calls one run makes
	run   func(ctx context.Context) error // makes them and checks the answers
	// settle is an untimed pause before each run, for ways timed against
	// Go timers: a timer stopped before it fired (the processor's
	// disconnect watch of a batch that ended early) stays in the runtime's
	// heap until its time and wakes the idle runtime then, which delays
	// the timers due soon after by up to the millisecond the runtime
	// sleeps in. A pause as long as the processor's check interval lets
	// the previous way's stopped timers pass.
	settle time.Duration
}

// timed is a way's median time over the rounds of one comparison.
type timed struct {
	name   string
	calls  int
	median time.Duration
}

// callsPerSec is the calls divided by the median time.
func (t timed) callsPerSec() float64 { return float64(t.calls) / t.median.Seconds() }

// interleave runs every way once to warm up, then rounds rounds of every way
// in turn (A, B, A, B, ...), so that a busy moment of the machine slows all
// of them alike, and returns each way's median time.
func interleave(ctx context.Context, rounds int, ways ...way) ([]timed, error) {
	samples := make([][]time.Duration, len(ways))
	for r := range rounds + 1 {
		for i, w := range ways {
			time.Sleep(w.settle)
			start := time.Now()
			if err := w.run(ctx); err != nil {
				return nil, fmt.Errorf("%s: %w", w.name, err)
			}
			if r > 0 {
				samples[i] = append(samples[i], time.Since(start))
			}
		}
	}
	out := make([]timed, len(ways))
	for i, w := range ways {
		out[i] = timed{name: w.name, calls: w.calls, median: median(samples[i])}
	}
	return out, nil
}

// median returns the median of ds (the mean of the middle two for an even
// count), or 0 for none.
func median[T ~int64 | ~float64](ds []T) T {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// worker makes calls in a loop for the throughput scenario: op makes some
// and returns how many.
type worker func(ctx context.Context) (int, error)

// window runs every worker on a goroutine of its own, all starting at once,
// until d has passed, and returns the calls per second they made together:
// the calls that returned divided by the time until the last worker stopped.
func window(ctx context.Context, d time.Duration, workers []worker) (float64, error) {
	counts, errs := make([]int, len(workers)), make([]error, len(workers))
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for i, w := range workers {
		wg.Go(func() {
			for time.Now().Before(deadline) && errs[i] == nil {
				var n int
				n, errs[i] = w(ctx)
				counts[i] += n
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return 0, err
	}
	total := 0
	for _, n := range counts {
		total += n
	}
	return float64(total) / elapsed.Seconds(), nil
}

// allocsPerCall runs w rounds times and returns the heap allocations of the
// whole process (client and server: both are in it) per call.
func allocsPerCall(ctx context.Context, rounds int, w way) (float64, error) {
	if err := w.run(ctx); err != nil { // warm up pools and buffers
		return 0, err
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range rounds {
		if err := w.run(ctx); err != nil {
			return 0, fmt.Errorf("%s: %w", w.name, err)
		}
	}
	runtime.ReadMemStats(&after)
	return float64(after.Mallocs-before.Mallocs) / float64(rounds*w.calls), nil
}
