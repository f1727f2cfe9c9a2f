package pool_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/thriftbatch/thriftbatch/internal/poll"
	"github.com/thriftbatch/thriftbatch/pool"
)

// newPool starts a pool and closes it when the test ends.
func newPool(t testing.TB, opts ...pool.Option) *pool.Pool {
	t.Helper()
	p, err := pool.New(opts...)
	if err != nil {
		t.Fatalf("pool.New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return p
}

// gauge records the most calls running at once.
type gauge struct {
	cur, max atomic.Int64
}

func (g *gauge) enter() {
	n := g.cur.Add(1)
	for {
		m := g.max.Load()
		if n <= m || g.max.CompareAndSwap(m, n) {
			return
		}
	}
}

func (g *gauge) exit() { g.cur.Add(-1) }

// goid returns the current goroutine's id, from its stack header.
func goid() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	id, _ := strconv.ParseUint(string(b[:bytes.IndexByte(b, ' ')]), 10, 64)
	return id
}

// saturate takes the only worker of a size-1 pool with a call blocked until
// the returned function is called; that function waits for the blocking batch
// to end.
func saturate(t *testing.T, p *pool.Pool) (release func()) {
	t.Helper()
	started, unblock, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		res, err := pool.Run(context.Background(), p, 1, 1, func(int) int {
			close(started)
			<-unblock
			return 1
		})
		if err != nil || res.Status(0) != pool.StatusDone {
			t.Errorf("the saturating batch: err %v, status %v", err, res.Status(0))
		}
	}()
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("the saturating call never started")
	}
	if p.Free() != 0 {
		t.Fatalf("pool has %d free workers after saturation", p.Free())
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			close(unblock)
			<-done
		})
	}
	t.Cleanup(release)
	return release
}

// within fails the test if f has not returned after d: the symptom of a
// deadlock, with a bound generous enough for a loaded machine.
func within(t *testing.T, d time.Duration, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("still running after %v: deadlock?", d)
	}
}

func TestRunReturnsValuesInIndexOrder(t *testing.T) {
	p := newPool(t)
	for _, n := range []int{0, 1, 2, 1000} {
		for _, limit := range []int{0, 1, 3, n} {
			t.Run(fmt.Sprintf("%d calls with limit %d come back in index order", n, limit), func(t *testing.T) {
				res, err := pool.Run(context.Background(), p, n, limit, func(i int) string { return strconv.Itoa(i * i) })
				if err != nil {
					t.Fatalf("Run: %v", err)
				}
				if len(res.Values) != n {
					t.Fatalf("len(Values) = %d, want %d", len(res.Values), n)
				}
				for i, v := range res.Values {
					if s := res.Status(i); s != pool.StatusDone {
						t.Fatalf("Status(%d) = %v, want StatusDone", i, s)
					}
					if want := strconv.Itoa(i * i); v != want {
						t.Fatalf("Values[%d] = %q, want %q", i, v, want)
					}
				}
			})
		}
	}
}

func TestRunWithLimitOneRunsInIndexOrderOneAtATime(t *testing.T) {
	p := newPool(t, pool.WithSize(8))
	const n = 300
	var next atomic.Int64
	var g gauge
	var outOfOrder atomic.Int64
	res, err := pool.Run(context.Background(), p, n, 1, func(i int) int {
		g.enter()
		defer g.exit()
		if seq := next.Add(1) - 1; seq != int64(i) {
			outOfOrder.Add(1)
		}
		if i%50 == 0 {
			time.Sleep(time.Millisecond) // long enough for the ramp-up to try more helpers
		}
		return i
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if m := g.max.Load(); m != 1 {
		t.Errorf("%d calls ran at once with limit 1", m)
	}
	if k := outOfOrder.Load(); k != 0 {
		t.Errorf("%d calls started out of index order", k)
	}
	for i := range n {
		if res.Status(i) != pool.StatusDone || res.Values[i] != i {
			t.Fatalf("index %d: status %v value %d", i, res.Status(i), res.Values[i])
		}
	}
}

func TestRunNeverExceedsItsLimit(t *testing.T) {
	p := newPool(t, pool.WithSize(64))
	for _, limit := range []int{1, 2, 3, 8, 32} {
		t.Run(fmt.Sprintf("a batch with limit %d runs at most %d calls at once", limit, limit), func(t *testing.T) {
			// Two batches at once: each counts its own concurrency.
			var wg sync.WaitGroup
			for b := range 2 {
				wg.Go(func() {
					var g gauge
					res, err := pool.Run(context.Background(), p, 200, limit, func(i int) int {
						g.enter()
						defer g.exit()
						time.Sleep(100 * time.Microsecond)
						return i
					})
					if err != nil {
						t.Errorf("batch %d: Run: %v", b, err)
						return
					}
					if m := g.max.Load(); m > int64(limit) {
						t.Errorf("batch %d: %d calls ran at once, limit %d", b, m, limit)
					}
					for i := range 200 {
						if res.Status(i) != pool.StatusDone {
							t.Errorf("batch %d: Status(%d) = %v", b, i, res.Status(i))
							return
						}
					}
				})
			}
			wg.Wait()
		})
	}
}

func TestRunSlowCallsConcurrently(t *testing.T) {
	p := newPool(t)
	const n, sleep = 64, 20 * time.Millisecond
	var g gauge
	start := time.Now()
	res, err := pool.Run(context.Background(), p, n, n, func(i int) int {
		g.enter()
		defer g.exit()
		time.Sleep(sleep)
		return i
	})
	elapsed := time.Since(start)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	for i := range n {
		if res.Status(i) != pool.StatusDone {
			t.Fatalf("Status(%d) = %v", i, res.Status(i))
		}
	}
	// One after the other they take 1.28 s; the ramp-up reaches 64 helpers
	// within microseconds.
	if elapsed > 600*time.Millisecond {
		t.Errorf("64 calls of 20 ms took %v with limit 64; want far less than 64 x 20 ms", elapsed)
	}
	t.Logf("64 x 20 ms in %v, at most %d at once", elapsed, g.max.Load())
}

func TestRunAtTheDeadline(t *testing.T) {
	p, err := pool.New()
	if err != nil {
		t.Fatal(err)
	}
	const n = 16
	block := make(chan struct{})
	var started [n]atomic.Bool
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	begin := time.Now()
	res, err := pool.Run(ctx, p, n, 4, func(i int) int {
		started[i].Store(true)
		if i%2 == 0 {
			<-block // returns only once the test is over with Run
		}
		return i + 1
	})
	elapsed := time.Since(begin)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if elapsed > 5*time.Second {
		t.Errorf("Run returned %v after a 50 ms deadline", elapsed)
	}
	statuses := make([]pool.Status, n)
	values := append([]int(nil), res.Values...)
	for i := range n {
		statuses[i] = res.Status(i)
	}
	// Let the abandoned calls return; Close waits for every worker to exit,
	// so no helper touches the results after it.
	close(block)
	if err := p.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	abandoned := 0
	for i := range n {
		switch s := statuses[i]; s {
		case pool.StatusDone:
			if i%2 == 0 || values[i] != i+1 {
				t.Errorf("index %d: StatusDone with value %d", i, values[i])
			}
		case pool.StatusAbandoned:
			abandoned++
			if !started[i].Load() {
				t.Errorf("index %d: StatusAbandoned but its call never started", i)
			}
			if values[i] != 0 {
				t.Errorf("index %d: StatusAbandoned with value %d, want the zero value", i, values[i])
			}
		case pool.StatusCanceled:
			if started[i].Load() {
				t.Errorf("index %d: StatusCanceled but its call started", i)
			}
			if values[i] != 0 {
				t.Errorf("index %d: StatusCanceled with value %d", i, values[i])
			}
		default:
			t.Errorf("index %d: status %v", i, s)
		}
	}
	if abandoned == 0 {
		t.Error("no call was abandoned: the blocked calls should be")
	}
	// Statuses are final: the late returns changed nothing.
	for i := range n {
		if res.Status(i) != statuses[i] || res.Values[i] != values[i] {
			t.Errorf("index %d changed after Run returned: %v %d -> %v %d", i, statuses[i], values[i], res.Status(i), res.Values[i])
		}
	}
}

// TestRunIntoWritesOnlyWhatIsDone: RunInto's values are dst itself (Run's
// are a slice of its own), and only an index whose call returned in time
// has its element written: a panicked call's and an abandoned call's keep
// what they held, the latter also after it returns late.
func TestRunIntoWritesOnlyWhatIsDone(t *testing.T) {
	p, err := pool.New(pool.WithSize(2))
	if err != nil {
		t.Fatal(err)
	}
	started, release, returned := make(chan struct{}), make(chan struct{}), make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-started
		cancel()
	}()
	dst := []int{-1, -1, -1}
	// Limit 1: the calls run in index order, so 0 and 1 are over when 2
	// starts and the context ends.
	res, err := pool.RunInto(ctx, p, dst, 1, func(i int) int {
		switch i {
		case 1:
			panic("call 1")
		case 2:
			close(started)
			<-release
			defer close(returned)
		}
		return 10 + i
	})
	if err != nil {
		t.Fatalf("RunInto: %v", err)
	}
	want := []pool.Status{pool.StatusDone, pool.StatusPanicked, pool.StatusAbandoned}
	for i, w := range want {
		if s := res.Status(i); s != w {
			t.Errorf("Status(%d) = %v, want %v", i, s, w)
		}
	}
	close(release)
	<-returned
	if err := p.Close(context.Background()); err != nil { // the helper is done with the slot
		t.Fatalf("Close: %v", err)
	}
	if &res.Values[0] != &dst[0] || !slices.Equal(dst, []int{10, -1, -1}) {
		t.Errorf("after the late return: dst = %v, Values is dst: %v; want [10 -1 -1], true", dst, &res.Values[0] == &dst[0])
	}
}

func TestRunWithCanceledContextRunsNothing(t *testing.T) {
	p := newPool(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var calls atomic.Int64
	res, err := pool.Run(ctx, p, 10, 0, func(i int) int { calls.Add(1); return i })
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if calls.Load() != 0 {
		t.Errorf("%d calls ran with a canceled context", calls.Load())
	}
	for i := range 10 {
		if s := res.Status(i); s != pool.StatusCanceled {
			t.Errorf("Status(%d) = %v, want StatusCanceled", i, s)
		}
	}
}

func TestPanicInOneCall(t *testing.T) {
	p := newPool(t)
	for _, tc := range []struct {
		name  string
		panic func()
	}{
		{"a panic with a value", func() { panic("boom") }},
		{"a panic with an error", func() { panic(errors.New("boom")) }},
		{"a panic with nil", func() { panic(nil) }},
	} {
		t.Run(tc.name+" marks its index StatusPanicked and the others complete", func(t *testing.T) {
			const n = 50
			res, err := pool.Run(context.Background(), p, n, 4, func(i int) int {
				if i%10 == 3 {
					tc.panic()
				}
				return i + 1
			})
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			for i := range n {
				want, wantV := pool.StatusDone, i+1
				if i%10 == 3 {
					want, wantV = pool.StatusPanicked, 0
				}
				if s := res.Status(i); s != want || res.Values[i] != wantV {
					t.Errorf("index %d: %v %d, want %v %d", i, s, res.Values[i], want, wantV)
				}
			}
		})
	}
}

func TestPoliciesWithASaturatedPool(t *testing.T) {
	t.Run("CallerRuns runs every call on the caller's goroutine, in order", func(t *testing.T) {
		p := newPool(t, pool.WithSize(1), pool.WithPolicy(pool.CallerRuns))
		saturate(t, p)
		caller := goid()
		var next atomic.Int64
		var elsewhere, outOfOrder atomic.Int64
		res, err := pool.Run(context.Background(), p, 100, 0, func(i int) int {
			if goid() != caller {
				elsewhere.Add(1)
			}
			if next.Add(1)-1 != int64(i) {
				outOfOrder.Add(1)
			}
			return i
		})
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		for i := range 100 {
			if res.Status(i) != pool.StatusDone || res.Values[i] != i {
				t.Fatalf("index %d: %v %d", i, res.Status(i), res.Values[i])
			}
		}
		if elsewhere.Load() != 0 || outOfOrder.Load() != 0 {
			t.Errorf("%d calls ran off the caller's goroutine, %d out of order", elsewhere.Load(), outOfOrder.Load())
		}
	})
	t.Run("CallerRuns checks the context between calls", func(t *testing.T) {
		p := newPool(t, pool.WithSize(1), pool.WithPolicy(pool.CallerRuns))
		saturate(t, p)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		res, err := pool.Run(ctx, p, 10, 0, func(i int) int {
			if i == 2 {
				cancel()
			}
			return i + 1
		})
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		for i := range 10 {
			want := pool.StatusCanceled
			if i <= 2 {
				want = pool.StatusDone
			}
			if s := res.Status(i); s != want {
				t.Errorf("Status(%d) = %v, want %v", i, s, want)
			}
		}
	})
	t.Run("Reject gives every call StatusOverloaded and runs none", func(t *testing.T) {
		p := newPool(t, pool.WithSize(1), pool.WithPolicy(pool.Reject))
		saturate(t, p)
		var calls atomic.Int64
		res, err := pool.Run(context.Background(), p, 5, 0, func(i int) int { calls.Add(1); return i })
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		for i := range 5 {
			if s := res.Status(i); s != pool.StatusOverloaded {
				t.Errorf("Status(%d) = %v, want StatusOverloaded", i, s)
			}
		}
		if calls.Load() != 0 {
			t.Errorf("%d calls ran", calls.Load())
		}
	})
	t.Run("Wait waits until the worker frees up", func(t *testing.T) {
		p := newPool(t, pool.WithSize(1), pool.WithPolicy(pool.Wait))
		release := saturate(t, p)
		var calls atomic.Int64
		type outcome struct {
			res *pool.Results[int]
			err error
		}
		done := make(chan outcome, 1)
		go func() {
			res, err := pool.Run(context.Background(), p, 5, 0, func(i int) int { calls.Add(1); return i * 2 })
			done <- outcome{res, err}
		}()
		// The only worker is blocked: nothing can run yet.
		select {
		case o := <-done:
			t.Fatalf("Run returned while the pool was saturated: %v", o.err)
		case <-time.After(30 * time.Millisecond):
		}
		if calls.Load() != 0 {
			t.Fatalf("%d calls ran while the pool was saturated", calls.Load())
		}
		release()
		var o outcome
		select {
		case o = <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("Run still waiting 10 s after the worker freed up")
		}
		if o.err != nil {
			t.Fatalf("Run: %v", o.err)
		}
		for i := range 5 {
			if o.res.Status(i) != pool.StatusDone || o.res.Values[i] != i*2 {
				t.Errorf("index %d: %v %d", i, o.res.Status(i), o.res.Values[i])
			}
		}
	})
	t.Run("Wait gives StatusCanceled when the context ends first", func(t *testing.T) {
		p := newPool(t, pool.WithSize(1), pool.WithPolicy(pool.Wait))
		saturate(t, p)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		defer cancel()
		var calls atomic.Int64
		begin := time.Now()
		res, err := pool.Run(ctx, p, 5, 0, func(i int) int { calls.Add(1); return i })
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		if d := time.Since(begin); d > 5*time.Second {
			t.Errorf("Run returned %v after a 30 ms deadline", d)
		}
		for i := range 5 {
			if s := res.Status(i); s != pool.StatusCanceled {
				t.Errorf("Status(%d) = %v, want StatusCanceled", i, s)
			}
		}
		if calls.Load() != 0 {
			t.Errorf("%d calls ran", calls.Load())
		}
	})
}

func TestNestedRunOnAPoolOfOne(t *testing.T) {
	p := newPool(t, pool.WithSize(1), pool.WithPolicy(pool.CallerRuns))
	var res *pool.Results[int]
	within(t, 10*time.Second, func() {
		var err error
		res, err = pool.Run(context.Background(), p, 8, 0, func(i int) int {
			// A call that sends a batch to its own server.
			inner, err := pool.Run(context.Background(), p, 3, 0, func(j int) int { return 10*i + j })
			if err != nil {
				return -1
			}
			sum := 0
			for j := range 3 {
				if inner.Status(j) != pool.StatusDone {
					return -1
				}
				sum += inner.Values[j]
			}
			return sum
		})
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	for i := range 8 {
		if want := 30*i + 3; res.Status(i) != pool.StatusDone || res.Values[i] != want {
			t.Errorf("index %d: %v %d, want StatusDone %d", i, res.Status(i), res.Values[i], want)
		}
	}
}

func TestClose(t *testing.T) {
	t.Run("Close waits for the batches in flight", func(t *testing.T) {
		p, err := pool.New()
		if err != nil {
			t.Fatal(err)
		}
		started, release := make(chan struct{}), make(chan struct{})
		ran := make(chan *pool.Results[int], 1)
		go func() {
			res, err := pool.Run(context.Background(), p, 2, 0, func(i int) int {
				if i == 0 {
					close(started)
					<-release
				}
				return i + 1
			})
			if err != nil {
				t.Errorf("Run: %v", err)
			}
			ran <- res
		}()
		<-started
		closed := make(chan error, 1)
		go func() { closed <- p.Close(context.Background()) }()
		select {
		case err := <-closed:
			t.Fatalf("Close returned %v with a batch in flight", err)
		case <-time.After(30 * time.Millisecond):
		}
		// Close has begun: new batches are refused while it waits.
		if _, err := pool.Run(context.Background(), p, 1, 0, func(int) int { return 0 }); !errors.Is(err, pool.ErrClosed) {
			t.Errorf("Run during Close: err = %v, want ErrClosed", err)
		}
		close(release)
		if err := <-closed; err != nil {
			t.Errorf("Close: %v", err)
		}
		res := <-ran
		for i := range 2 {
			if res.Status(i) != pool.StatusDone || res.Values[i] != i+1 {
				t.Errorf("in-flight batch index %d: %v %d", i, res.Status(i), res.Values[i])
			}
		}
		if err := p.Close(context.Background()); err != nil {
			t.Errorf("second Close: %v", err)
		}
	})
	for _, n := range []int{0, 1, 3} {
		t.Run(fmt.Sprintf("Run of %d calls after Close returns ErrClosed and runs nothing", n), func(t *testing.T) {
			p, err := pool.New()
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Close(context.Background()); err != nil {
				t.Fatalf("Close: %v", err)
			}
			var calls atomic.Int64
			_, err = pool.Run(context.Background(), p, n, 0, func(i int) int { calls.Add(1); return i })
			if !errors.Is(err, pool.ErrClosed) {
				t.Errorf("Run after Close: err = %v, want ErrClosed", err)
			}
			if calls.Load() != 0 {
				t.Errorf("%d calls ran after Close", calls.Load())
			}
		})
	}
	t.Run("Close with an expired context returns the context's error", func(t *testing.T) {
		p, err := pool.New()
		if err != nil {
			t.Fatal(err)
		}
		started, release := make(chan struct{}), make(chan struct{})
		ran := make(chan struct{})
		go func() {
			defer close(ran)
			pool.Run(context.Background(), p, 1, 0, func(int) int {
				close(started)
				<-release
				return 0
			})
		}()
		<-started
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		begin := time.Now()
		if err := p.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Close with a batch stuck: err = %v, want context.DeadlineExceeded", err)
		}
		if d := time.Since(begin); d > 5*time.Second {
			t.Errorf("Close returned %v after a 20 ms deadline", d)
		}
		close(release)
		<-ran
	})
	t.Run("Close of an idle pool with a done context returns nil", func(t *testing.T) {
		// Several times: the release once chose at random between the
		// done context and the workers' exit.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		for i := range 8 {
			p, err := pool.New()
			if err != nil {
				t.Fatal(err)
			}
			if i%2 == 1 { // with workers started, idle again
				if _, err := pool.Run(context.Background(), p, 4, 0, func(i int) int { return i }); err != nil {
					t.Fatal(err)
				}
			}
			if err := p.Close(ctx); err != nil {
				t.Errorf("Close #%d with a canceled context and nothing in flight = %v, want nil", i+1, err)
			}
			if !p.IsClosed() {
				t.Error("IsClosed() = false after Close")
			}
		}
	})
	t.Run("Close with a done context and a call abandoned at its deadline returns the context's error", func(t *testing.T) {
		p, err := pool.New()
		if err != nil {
			t.Fatal(err)
		}
		release, returned := make(chan struct{}), make(chan struct{})
		runCtx, cancelRun := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancelRun()
		res, err := pool.Run(runCtx, p, 1, 0, func(int) int {
			defer close(returned)
			<-release
			return 0
		})
		if err != nil || res.Status(0) != pool.StatusAbandoned {
			t.Fatalf("Run = %v, %v; want the call abandoned", res.Status(0), err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := p.Close(ctx); !errors.Is(err, context.Canceled) || !strings.HasPrefix(err.Error(), "pool: ") {
			t.Errorf("Close with a worker held by an abandoned call = %v, want pool: ... context canceled", err)
		}
		close(release)
		<-returned
	})
	for _, panics := range []bool{false, true} {
		t.Run(fmt.Sprintf("a call abandoned at its deadline that has since returned (panics: %v) does not hold up Close", panics), func(t *testing.T) {
			p, err := pool.New()
			if err != nil {
				t.Fatal(err)
			}
			release := make(chan struct{})
			runCtx, cancelRun := context.WithTimeout(context.Background(), 20*time.Millisecond)
			defer cancelRun()
			res, err := pool.Run(runCtx, p, 1, 0, func(int) int {
				<-release
				if panics {
					panic("late")
				}
				return 0
			})
			if err != nil || res.Status(0) != pool.StatusAbandoned {
				t.Fatalf("Run = %v, %v; want the call abandoned", res.Status(0), err)
			}
			close(release)
			if !poll.Until(10*time.Second, func() bool { return p.Running() == 0 }) {
				t.Fatal("the abandoned call's worker never came back")
			}
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if err := p.Close(ctx); err != nil {
				t.Errorf("Close with a done context once the abandoned call returned = %v, want nil", err)
			}
		})
	}
	t.Run("IsClosed reports whether Close has begun", func(t *testing.T) {
		p, err := pool.New()
		if err != nil {
			t.Fatal(err)
		}
		if p.IsClosed() {
			t.Error("IsClosed() = true on a new pool")
		}
		if err := p.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		if !p.IsClosed() {
			t.Error("IsClosed() = false after Close")
		}
	})
	t.Run("Close again returns nil", func(t *testing.T) {
		p, err := pool.New()
		if err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			if err := p.Close(context.Background()); err != nil {
				t.Errorf("Close #%d: %v", i+1, err)
			}
		}
	})
}

func TestTuneChangesCap(t *testing.T) {
	p := newPool(t, pool.WithSize(4))
	if got := p.Cap(); got != 4 {
		t.Fatalf("Cap() = %d, want 4", got)
	}
	for _, tc := range []struct {
		name string
		size int
		want int
	}{
		{"growing to 8 gives 8", 8, 8},
		{"shrinking to 2 gives 2", 2, 2},
		{"zero is ignored", 0, 2},
		{"a negative size is ignored", -5, 2},
		{"growing back to 16 gives 16", 16, 16},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p.Tune(tc.size)
			if got := p.Cap(); got != tc.want {
				t.Errorf("after Tune(%d): Cap() = %d, want %d", tc.size, got, tc.want)
			}
		})
	}
	t.Run("a pre-allocated pool ignores Tune", func(t *testing.T) {
		pre := newPool(t, pool.WithSize(4), pool.WithPreAlloc(true))
		pre.Tune(8)
		if got := pre.Cap(); got != 4 {
			t.Errorf("Cap() = %d after Tune(8) on a pre-allocated pool, want 4", got)
		}
	})
	t.Run("a shrunk pool still runs batches", func(t *testing.T) {
		p.Tune(1)
		res, err := pool.Run(context.Background(), p, 100, 0, func(i int) int { return i })
		if err != nil {
			t.Fatal(err)
		}
		for i := range 100 {
			if res.Status(i) != pool.StatusDone {
				t.Fatalf("Status(%d) = %v", i, res.Status(i))
			}
		}
	})
}

// TestRunningCountsBusyWorkers checks the documented meaning of Running ("the
// number of workers running a helper now") and Free ("the number of workers
// that could start now") once a batch has finished.
func TestRunningCountsBusyWorkers(t *testing.T) {
	p := newPool(t, pool.WithSize(4))
	if r, f := p.Running(), p.Free(); r != 0 || f != 4 {
		t.Fatalf("new pool: Running() = %d, Free() = %d; want 0, 4", r, f)
	}
	if _, err := pool.Run(context.Background(), p, 10, 0, func(i int) int { return i }); err != nil {
		t.Fatal(err)
	}
	// The helpers have returned; give ants a moment to park its workers.
	poll.Until(time.Second, func() bool { return p.Running() == 0 && p.Free() == 4 })
	if r, f := p.Running(), p.Free(); r != 0 || f != 4 {
		t.Errorf("idle pool after a batch: Running() = %d, Free() = %d; want 0, 4 (no helper is running)", r, f)
	}
}

func TestNewRefusesInvalidOptions(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opt    pool.Option
		option string // the option the error names
	}{
		{"a zero size", pool.WithSize(0), "WithSize"},
		{"a negative size", pool.WithSize(-1), "WithSize"},
		{"a zero expiry", pool.WithExpiry(0), "WithExpiry"},
		{"a negative expiry", pool.WithExpiry(-time.Second), "WithExpiry"},
		{"a zero ramp-up", pool.WithRampUp(0), "WithRampUp"},
		{"a negative ramp-up", pool.WithRampUp(-time.Microsecond), "WithRampUp"},
		{"an unknown policy", pool.WithPolicy(pool.Policy(3)), "WithPolicy"},
		{"a negative policy", pool.WithPolicy(pool.Policy(-1)), "WithPolicy"},
	} {
		t.Run("New refuses "+tc.name, func(t *testing.T) {
			p, err := pool.New(tc.opt)
			if err == nil {
				p.Close(context.Background())
				t.Fatal("New returned no error")
			}
			if p != nil {
				t.Errorf("New returned a Pool along with %v", err)
			}
			if want := "pool: " + tc.option + ": "; !strings.HasPrefix(err.Error(), want) {
				t.Errorf("New: %q, want it to start %q", err, want)
			}
		})
	}
	for _, size := range []int{pool.MaxPreAllocSize + 1, 1 << 60} {
		t.Run(fmt.Sprintf("New refuses a pre-allocated pool of %d workers", size), func(t *testing.T) {
			p, err := pool.New(pool.WithSize(size), pool.WithPreAlloc(true))
			if err == nil {
				p.Close(context.Background())
				t.Fatal("New returned no error")
			}
			if want := "pool: WithPreAlloc: "; !strings.HasPrefix(err.Error(), want) {
				t.Errorf("New: %q, want it to start %q", err, want)
			}
		})
	}
	t.Run("New accepts a pre-allocated pool of MaxPreAllocSize workers, and a larger one not pre-allocated", func(t *testing.T) {
		newPool(t, pool.WithSize(pool.MaxPreAllocSize), pool.WithPreAlloc(true))
		newPool(t, pool.WithSize(1<<60))
	})
	t.Run("New accepts every valid option", func(t *testing.T) {
		p := newPool(t, pool.WithSize(3), pool.WithPreAlloc(true), pool.WithExpiry(time.Second),
			pool.WithPolicy(pool.Reject), pool.WithRampUp(time.Millisecond))
		if p.Cap() != 3 {
			t.Errorf("Cap() = %d, want 3", p.Cap())
		}
	})
	t.Run("the default size is DefaultSize", func(t *testing.T) {
		if p := newPool(t); p.Cap() != pool.DefaultSize {
			t.Errorf("Cap() = %d, want %d", p.Cap(), pool.DefaultSize)
		}
	})
}

func TestPolicyNames(t *testing.T) {
	for _, tc := range []struct {
		policy pool.Policy
		name   string
	}{
		{pool.CallerRuns, "caller-runs"},
		{pool.Wait, "wait"},
		{pool.Reject, "reject"},
	} {
		t.Run(tc.name+" round-trips through ParsePolicy", func(t *testing.T) {
			if got := tc.policy.String(); got != tc.name {
				t.Errorf("String() = %q, want %q", got, tc.name)
			}
			got, err := pool.ParsePolicy(tc.name)
			if err != nil || got != tc.policy {
				t.Errorf("ParsePolicy(%q) = %v, %v; want %v", tc.name, got, err, tc.policy)
			}
		})
	}
	for _, s := range []string{"", "Wait", "caller_runs", "block", "Policy(1)"} {
		t.Run(fmt.Sprintf("ParsePolicy refuses %q", s), func(t *testing.T) {
			if _, err := pool.ParsePolicy(s); err == nil {
				t.Errorf("ParsePolicy(%q) returned no error", s)
			}
		})
	}
	if got := pool.Policy(7).String(); got != "Policy(7)" {
		t.Errorf("Policy(7).String() = %q", got)
	}
	if pool.CallerRuns != 0 {
		t.Error("CallerRuns is not the zero Policy, yet it is the default")
	}
}

// TestQuickCallsAreNotHeldBehindASlowOne: a helper claims quick calls in
// chunks, so a call that turns slow has quick calls claimed after it in the
// same chunk. They must still run while it is blocked, on another helper,
// whatever the chunk sizes and however many helpers the batch has.
func TestQuickCallsAreNotHeldBehindASlowOne(t *testing.T) {
	for _, tc := range []struct {
		name         string
		n, slow, lim int
	}{
		{"the slow call early in a batch of 40", 40, 3, 0},
		{"the slow call in the middle of 1,000", 1000, 500, 0},
		{"two helpers at most", 200, 20, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newPool(t)
			release := make(chan struct{})
			var quick atomic.Int64
			done := make(chan error, 1)
			go func() {
				res, err := pool.Run(context.Background(), p, tc.n, tc.lim, func(i int) int {
					if i == tc.slow {
						select {
						case <-release:
						case <-time.After(10 * time.Second):
						}
						return i
					}
					quick.Add(1)
					return i
				})
				if err == nil {
					for i := range tc.n {
						if res.Status(i) != pool.StatusDone || res.Values[i] != i {
							err = fmt.Errorf("index %d: status %v, value %d", i, res.Status(i), res.Values[i])
							break
						}
					}
				}
				done <- err
			}()
			if !poll.Until(5*time.Second, func() bool { return quick.Load() == int64(tc.n-1) }) {
				t.Errorf("only %d of %d quick calls ran while the slow call was blocked", quick.Load(), tc.n-1)
			}
			close(release)
			if err := <-done; err != nil {
				t.Error(err)
			}
		})
	}
}

// TestRunWaitsForStolenCalls: a call stolen from a chunk can still be
// running when the chunk's owner finishes the rest; Run must wait for it
// and return its value, not the zero value of a call still running.
func TestRunWaitsForStolenCalls(t *testing.T) {
	p := newPool(t)
	// Quick calls are claimed in chunks of 1, 2 and 4 by the first helper,
	// so index 3 is the slow head of the last chunk, with 4 to 6 behind it.
	const n, slow = 7, 3
	release := make(chan struct{})
	var once sync.Once
	res, err := pool.Run(context.Background(), p, n, 0, func(i int) int {
		switch {
		case i == slow:
			select {
			case <-release:
			case <-time.After(5 * time.Second):
				t.Error("no call behind the slow one ran while it was blocked")
			}
		case i > slow:
			// The first call to run behind the slow one (stolen, as
			// its owner is blocked) lets it return, then outlasts it
			// and the owner's quick calls left in the chunk.
			first := false
			once.Do(func() { close(release); first = true })
			if first {
				time.Sleep(50 * time.Millisecond)
			}
		}
		return i
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if res.Status(i) != pool.StatusDone || res.Values[i] != i {
			t.Errorf("index %d: status %v, value %d; want done, %d", i, res.Status(i), res.Values[i], i)
		}
	}
}
