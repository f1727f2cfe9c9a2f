package latency_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/thriftbatch/thriftbatch/internal/latency"
)

// Every wait ends by itself, and the line's goroutine returns once none is
// pending.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// waitFuncs are the two ways of waiting, tested alike.
var waitFuncs = []struct {
	name string
	wait func(context.Context, time.Duration) error
}{
	{"Wait", latency.Wait},
	{"TimerWait", latency.TimerWait},
}

func TestWaitLastsAtLeastItsDuration(t *testing.T) {
	for _, f := range waitFuncs {
		for _, d := range []time.Duration{time.Microsecond, time.Millisecond, 3 * time.Millisecond} {
			t.Run(fmt.Sprintf("%s of %v", f.name, d), func(t *testing.T) {
				start := time.Now()
				if err := f.wait(context.Background(), d); err != nil {
					t.Fatal(err)
				}
				if got := time.Since(start); got < d {
					t.Errorf("returned after %v, want %v at least", got, d)
				}
			})
		}
	}
}

func TestWaitOfNothingReturnsAtOnce(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, f := range waitFuncs {
		for _, d := range []time.Duration{0, -time.Second} {
			if err := f.wait(ctx, d); err != nil {
				t.Errorf("%s(ended ctx, %v) = %v, want nil: nothing to wait for", f.name, d, err)
			}
		}
	}
}

// Waits of different lengths started together each end after their own
// length, whatever the order they were queued in: a short wait queued after
// long ones re-arms the line for itself instead of waiting for theirs.
func TestWaitsEndEachAtTheirOwnTime(t *testing.T) {
	for _, f := range waitFuncs {
		t.Run(f.name, func(t *testing.T) {
			lengths := []time.Duration{500 * time.Millisecond, 40 * time.Millisecond, 5 * time.Millisecond, 20 * time.Millisecond, time.Millisecond}
			took := make([]time.Duration, len(lengths))
			var wg sync.WaitGroup
			for i, d := range lengths {
				start := time.Now()
				wg.Go(func() {
					if err := f.wait(context.Background(), d); err != nil {
						t.Error(err)
					}
					took[i] = time.Since(start)
				})
				time.Sleep(time.Millisecond) // queue them in this order
			}
			wg.Wait()
			for i, d := range lengths {
				if took[i] < d {
					t.Errorf("the wait of %v returned after %v", d, took[i])
				}
				// Only the 500 ms wait may take that long.
				if d < 500*time.Millisecond && took[i] >= 400*time.Millisecond {
					t.Errorf("the wait of %v returned after %v: held up by a longer wait", d, took[i])
				}
			}
		})
	}
}

// A context that ends returns its error from the waits under it, at once,
// and leaves the waits under other contexts to end at their time.
func TestAContextThatEndsEndsItsWaitsOnly(t *testing.T) {
	for _, f := range waitFuncs {
		t.Run(f.name, func(t *testing.T) {
			ctx, cancel := context.WithCancelCause(context.Background())
			other, cancelOther := context.WithCancel(context.Background())
			defer cancelOther()
			const d = 300 * time.Millisecond
			errs := make(chan error, 3)
			start := time.Now()
			for range 2 {
				go func() { errs <- f.wait(ctx, time.Hour) }()
			}
			otherDone := make(chan time.Duration, 1)
			go func() {
				if err := f.wait(other, d); err != nil {
					t.Error(err)
				}
				otherDone <- time.Since(start)
			}()
			time.Sleep(10 * time.Millisecond)
			cause := errors.New("the batch's deadline")
			cancel(cause)
			for range 2 {
				select {
				case err := <-errs:
					if !errors.Is(err, context.Canceled) {
						t.Errorf("got %v, want context.Canceled (ctx.Err())", err)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("a wait under an ended context did not return")
				}
			}
			if took := <-otherDone; took < d {
				t.Errorf("the wait under another context returned after %v, want %v", took, d)
			}
		})
	}
}

func TestAnEndedContextIsNotWaitedOn(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel()
	<-ctx.Done()
	for _, f := range waitFuncs {
		start := time.Now()
		if err := f.wait(ctx, time.Hour); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s = %v, want context.DeadlineExceeded", f.name, err)
		}
		if took := time.Since(start); took > 10*time.Second {
			t.Errorf("%s took %v", f.name, took)
		}
	}
}

// Many waits at once, under one context and under several, each ends and
// returns nil; run with -race.
func TestManyConcurrentWaits(t *testing.T) {
	ctxs := []context.Context{context.Background()}
	for range 3 {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		ctxs = append(ctxs, ctx)
	}
	var wg sync.WaitGroup
	for i := range 500 {
		wg.Go(func() {
			d := time.Duration(i%7) * 300 * time.Microsecond
			start := time.Now()
			if err := latency.Wait(ctxs[i%len(ctxs)], d); err != nil {
				t.Error(err)
			}
			if took := time.Since(start); took < d {
				t.Errorf("a wait of %v returned after %v", d, took)
			}
		})
	}
	wg.Wait()
}

// BenchmarkOverlappingWaits times n goroutines each waiting 5 ms, started
// together after an idle pause of 6 ms (the fan-out scenario's), with Wait
// and with TimerWait. It reports the median over b.N rounds of the time
// until every wait has returned (all-ms) and until the first has
// (first-ms).
//
//	go test -run XXX -bench OverlappingWaits -benchtime 200x ./internal/latency
func BenchmarkOverlappingWaits(b *testing.B) {
	const d = 5 * time.Millisecond
	for _, n := range []int{1, 256} {
		for _, f := range waitFuncs {
			b.Run(fmt.Sprintf("%s/%d", f.name, n), func(b *testing.B) {
				ctx := context.Background()
				all := make([]time.Duration, 0, b.N)
				first := make([]time.Duration, 0, b.N)
				for range b.N {
					b.StopTimer()
					time.Sleep(6 * time.Millisecond)
					b.StartTimer()
					start := time.Now()
					var (
						mu       sync.Mutex
						earliest = time.Hour
						wg       sync.WaitGroup
					)
					for range n {
						wg.Go(func() {
							_ = f.wait(ctx, d) // nil: ctx never ends
							took := time.Since(start)
							mu.Lock()
							earliest = min(earliest, took)
							mu.Unlock()
						})
					}
					wg.Wait()
					all = append(all, time.Since(start))
					first = append(first, earliest)
				}
				b.ReportMetric(medianMs(all), "all-ms")
				b.ReportMetric(medianMs(first), "first-ms")
			})
		}
	}
}

func medianMs(x []time.Duration) float64 {
	slices.Sort(x)
	return float64(x[len(x)/2]) / 1e6
}
