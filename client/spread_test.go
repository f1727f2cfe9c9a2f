package client

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/thriftbatch/thriftbatch/example_server/catalog"
	"github.com/thriftbatch/thriftbatch/example_server/store"
	"github.com/thriftbatch/thriftbatch/internal/wire"
)

// spread is spreadEach with one fn for every goroutine.
func spread(n int, fn func(i int)) {
	spreadEach(n, func() (func(i int), func()) { return fn, func() {} })
}

// busy keeps the processor for d, long enough per call that spread starts
// helpers.
func busy(d time.Duration) {
	for start := time.Now(); time.Since(start) < d; {
	}
}

func TestSpreadCallsEveryIndexOnce(t *testing.T) {
	// Helpers need a second processor.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(max(2, runtime.GOMAXPROCS(0))))
	for _, tc := range []struct {
		name   string
		n      int
		per    time.Duration
		shared bool // whether the calls must run on more than the caller
	}{
		{"no calls", 0, 0, false},
		{"fewer calls than the probe", spreadProbe - 1, 30 * time.Microsecond, false},
		// Whether they stay on the caller depends on the probe's timing:
		// TestHelpersFor checks that decision.
		{"quick calls", 100, 0, false},
		{"slow calls are shared", 200, 30 * time.Microsecond, true},
		{"a count that is not a multiple of the chunk", 8*spreadChunk + 3, 30 * time.Microsecond, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			caller := goroutineID()
			seen := make([]atomic.Int32, tc.n)
			on := make([]string, tc.n)
			helperRan := make(chan struct{})
			var once sync.Once
			var waited atomic.Bool
			spread(tc.n, func(i int) {
				if tc.per > 0 {
					busy(tc.per)
				}
				seen[i].Add(1)
				// Past the probe, which decides, so that reading the
				// goroutine's identity does not make quick calls slow.
				if i < spreadProbe && tc.per == 0 {
					return
				}
				g := goroutineID()
				on[i] = g
				switch {
				case g != caller:
					once.Do(func() { close(helperRan) })
				case tc.shared && i >= spreadProbe && !waited.Swap(true):
					// A helper that spread started may not have been
					// scheduled yet on a busy machine: wait for it, so
					// that the test checks what spread decided, not
					// what the scheduler did meanwhile.
					select {
					case <-helperRan:
					case <-time.After(10 * time.Second):
					}
				}
			})
			goroutines := map[string]bool{}
			for i := range seen {
				if got := seen[i].Load(); got != 1 {
					t.Errorf("index %d called %d times, want once", i, got)
				}
				if on[i] != "" {
					goroutines[on[i]] = true
				}
			}
			switch {
			case tc.shared && len(goroutines) < 2:
				t.Errorf("the calls ran on %d goroutine(s), want the caller and a helper", len(goroutines))
			case tc.n < spreadProbe && (len(goroutines) > 1 || len(goroutines) == 1 && !goroutines[caller]):
				t.Errorf("the calls ran on goroutines %v, want the caller's (%s) only", goroutines, caller)
			}
		})
	}
}

func TestHelpersFor(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
	for _, tc := range []struct {
		rest int
		per  time.Duration
		want int
	}{
		{92, time.Microsecond, 0},                // 92 µs of work: the caller alone
		{490, time.Microsecond, 0},               // under two goroutines' worth
		{750, time.Microsecond, 2},               // 750 µs: three goroutines of 250 µs
		{2000, time.Microsecond, 3},              // GOMAXPROCS-1 at most
		{992, 0, 0},                              // calls too quick to time
		{spreadChunk - 1, time.Millisecond, 0},   // less than a chunk to share
		{2*spreadChunk + 1, time.Millisecond, 2}, // a chunk each at least
	} {
		if got := helpersFor(tc.rest, tc.per); got != tc.want {
			t.Errorf("helpersFor(%d, %v) = %d at GOMAXPROCS 4, want %d", tc.rest, tc.per, got, tc.want)
		}
	}
	runtime.GOMAXPROCS(1)
	if got := helpersFor(1000, time.Millisecond); got != 0 {
		t.Errorf("helpersFor(1000, 1ms) = %d at GOMAXPROCS 1, want 0", got)
	}
}

func TestSpreadHandsAHelpersPanicToTheCaller(t *testing.T) {
	// Helpers need a second processor; with one, spread runs everything
	// on the caller and there is no helper to panic.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(max(2, runtime.GOMAXPROCS(0))))
	caller := goroutineID()
	const n = 400
	var onHelper atomic.Int32
	got := func() (v any) {
		defer func() { v = recover() }()
		spread(n, func(i int) {
			busy(30 * time.Microsecond)
			if goroutineID() != caller {
				onHelper.Add(1)
				panic(fmt.Errorf("call %d: %w", i, errBoom))
			}
		})
		return nil
	}()
	if onHelper.Load() == 0 {
		t.Fatal("no call ran on a helper")
	}
	p, ok := got.(*helperPanic)
	if !ok {
		t.Fatalf("spread panicked with %T %v, want a *helperPanic", got, got)
	}
	if !errors.Is(p, errBoom) {
		t.Errorf("the panic does not wrap the value fn panicked with: %v", p.value)
	}
	if !strings.Contains(p.Error(), "TestSpreadHandsAHelpersPanicToTheCaller") {
		t.Errorf("the panic does not carry the helper's stack:\n%s", p.Error())
	}
}

var errBoom = errors.New("boom")

// goroutineID returns the calling goroutine's number, as the first line of
// its stack trace gives it.
func goroutineID() string {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	id, _, _ := strings.Cut(strings.TrimPrefix(string(buf), "goroutine "), " ")
	return id
}

// BenchmarkSpreadDecode decodes the replies of a batch of getProduct calls on
// one goroutine and with spread.
//
//	go test -run XXX -bench SpreadDecode ./client
func BenchmarkSpreadDecode(b *testing.B) {
	ctx := context.Background()
	h := store.New(1000, 0)
	for _, n := range []int{10, 100, 1000} {
		replies := make([][]byte, n)
		for i := range replies {
			p, err := h.GetProduct(ctx, int64(i%1000+1))
			if err != nil {
				b.Fatal(err)
			}
			if replies[i], err = wire.Encode(ctx, wire.Compact, nil, &catalog.CatalogGetProductResult{Success: p}); err != nil {
				b.Fatal(err)
			}
		}
		decode := func(i int) {
			var res catalog.CatalogGetProductResult
			if err := wire.Decode(ctx, wire.Compact, replies[i], &res); err != nil {
				panic(err)
			}
		}
		b.Run(fmt.Sprintf("calls=%d/loop", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				for i := range n {
					decode(i)
				}
			}
		})
		b.Run(fmt.Sprintf("calls=%d/spread", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				spread(n, decode)
			}
		})
	}
}

// BenchmarkHelperStart measures what a helper of spreadEach waits before it
// runs: the time from go to the goroutine's first instruction while the
// starting goroutine stays busy for 500 µs, so that the helper needs
// another processor. Three ways:
//
//   - idle: after a 6 ms pause, as a client's process is idle while its
//     batch is on the server, and the helper alone, as spreadEach starts
//     one: it waits in the starting processor's next-to-run slot, which
//     another processor takes only after a pause of its own (the
//     runtime's 3 µs usleep, which the kernel's timer slack stretches);
//   - idle, pushed: the same, but a second goroutine started right after
//     the helper pushes it into the run queue, which another processor
//     takes without that pause;
//   - warm: the helper alone, with no pause since the last sample.
//
// Each reports the median and 90th percentile of the waits, and how many
// helpers never ran elsewhere (their wait is the whole 500 µs).
//
//	go test -run XXX -bench HelperStart -benchtime 200x ./client
func BenchmarkHelperStart(b *testing.B) {
	if runtime.GOMAXPROCS(0) < 2 {
		b.Skip("needs two processors")
	}
	const work = 500 * time.Microsecond
	for _, w := range []struct {
		name         string
		pause        time.Duration
		pushedBehind bool
	}{
		{"idle", 6 * time.Millisecond, false},
		{"idle_pushed", 6 * time.Millisecond, true},
		{"warm", 0, false},
	} {
		b.Run(w.name, func(b *testing.B) {
			var waits []time.Duration
			late := 0
			for b.Loop() {
				time.Sleep(w.pause)
				start := time.Now()
				began := make(chan time.Time, 1)
				go func() { began <- time.Now() }()
				if w.pushedBehind {
					go func() {}()
				}
				busy(work)
				wait := (<-began).Sub(start)
				if wait >= work {
					late++
				}
				waits = append(waits, wait)
			}
			slices.Sort(waits)
			b.ReportMetric(float64(waits[len(waits)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(waits[len(waits)*9/10].Microseconds()), "p90-µs")
			b.ReportMetric(float64(late), "never-moved")
		})
	}
}

// TestSpreadEachGivesEveryGoroutineItsOwnState: each goroutine that takes
// part gets its state from worker once, uses only that state, and calls its
// done once after its last index.
func TestSpreadEachGivesEveryGoroutineItsOwnState(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(max(2, runtime.GOMAXPROCS(0))))
	type state struct {
		owner string
		ran   int
		done  bool
	}
	const n = 400
	var (
		mu        sync.Mutex
		states    []*state
		seen      [n]atomic.Int32
		caller    = goroutineID()
		helperRan = make(chan struct{})
		once      sync.Once
		waited    atomic.Bool
	)
	spreadEach(n, func() (func(i int), func()) {
		s := &state{owner: goroutineID()}
		mu.Lock()
		states = append(states, s)
		mu.Unlock()
		return func(i int) {
			busy(30 * time.Microsecond)
			if g := goroutineID(); g != s.owner {
				t.Errorf("index %d ran on goroutine %s with the state of %s", i, g, s.owner)
			}
			if s.done {
				t.Errorf("index %d ran after its goroutine's done", i)
			}
			s.ran++
			seen[i].Add(1)
			// As in TestSpreadCallsEveryIndexOnce: past the probe, the
			// caller waits once for a started helper to run a call.
			switch {
			case s.owner != caller:
				once.Do(func() { close(helperRan) })
			case i >= spreadProbe && !waited.Swap(true):
				select {
				case <-helperRan:
				case <-time.After(10 * time.Second):
				}
			}
		}, func() { s.done = true }
	})
	total, working := 0, 0
	for _, s := range states {
		if !s.done {
			t.Errorf("goroutine %s: done not called", s.owner)
		}
		total += s.ran
		if s.ran > 0 {
			working++
		}
	}
	if total != n || working < 2 {
		t.Errorf("%d goroutines ran %d calls, want 2 or more running %d", working, total, n)
	}
	for i := range seen {
		if got := seen[i].Load(); got != 1 {
			t.Errorf("index %d called %d times, want once", i, got)
		}
	}
}
