package pool_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/thriftbatch/thriftbatch/internal/poll"
	"github.com/thriftbatch/thriftbatch/pool"
)

// statsBound is how long a stats test waits for something that should
// happen at once: generous for a loaded machine.
const statsBound = 10 * time.Second

// blocked is a batch whose calls block until release is called, run on a
// goroutine of its own.
type blocked struct {
	started chan int      // receives each call's index as it starts
	unblock chan struct{} // closed by release
	done    chan *pool.Results[int]
	closed  atomic.Bool
}

// runBlocked starts a batch of n calls on p (limit as for Run) whose calls
// block, ignoring ctx, until release. The test's cleanup releases it.
func runBlocked(t *testing.T, ctx context.Context, p *pool.Pool, n, limit int) *blocked {
	t.Helper()
	b := &blocked{started: make(chan int, n), unblock: make(chan struct{}), done: make(chan *pool.Results[int], 1)}
	go func() {
		res, err := pool.Run(ctx, p, n, limit, func(i int) int {
			b.started <- i
			<-b.unblock
			return i + 1
		})
		if err != nil {
			t.Errorf("the blocked batch: Run = %v", err)
		}
		b.done <- res
	}()
	t.Cleanup(b.release)
	return b
}

// waitStarted waits until k of the batch's calls have started.
func (b *blocked) waitStarted(t *testing.T, k int) {
	t.Helper()
	for range k {
		select {
		case <-b.started:
		case <-time.After(statsBound):
			t.Fatalf("a blocked call had not started after %v", statsBound)
		}
	}
}

func (b *blocked) release() {
	if b.closed.CompareAndSwap(false, true) {
		close(b.unblock)
	}
}

// wait releases the batch and returns its results once Run has returned.
func (b *blocked) wait(t *testing.T) *pool.Results[int] {
	t.Helper()
	b.release()
	select {
	case res := <-b.done:
		return res
	case <-time.After(statsBound):
		t.Fatalf("the released batch had not returned after %v", statsBound)
		return nil
	}
}

// waitStats polls p.Stats until cond holds, and fails the test with the
// last snapshot after statsBound.
func waitStats(t *testing.T, p *pool.Pool, what string, cond func(pool.Stats) bool) pool.Stats {
	t.Helper()
	var s pool.Stats
	if !poll.Until(statsBound, func() bool { s = p.Stats(); return cond(s) }) {
		t.Fatalf("%s: not after %v; Stats() = %+v", what, statsBound, s)
	}
	return s
}

// idle reports whether no call or batch is running on the pool.
func idle(s pool.Stats) bool {
	return s.Running == 0 && s.CallsInFlight == 0 && s.BatchesInFlight == 0 && s.WaitingBatches == 0
}

func TestStatsOfANewPool(t *testing.T) {
	p := newPool(t, pool.WithSize(16))
	want := pool.Stats{Capacity: 16, Free: 16}
	if s := p.Stats(); s != want {
		t.Errorf("Stats() = %+v, want %+v", s, want)
	}
}

func TestStatsCountBatchesAndCallsExactly(t *testing.T) {
	p := newPool(t, pool.WithSize(8))
	var batches, calls uint64
	for _, tc := range []struct{ n, limit int }{{0, 0}, {1, 0}, {7, 0}, {100, 1}, {1000, 0}, {1000, 3}, {33, 64}} {
		var ran atomic.Int64
		res, err := pool.Run(context.Background(), p, tc.n, tc.limit, func(i int) int { ran.Add(1); return i })
		if err != nil {
			t.Fatalf("Run(n=%d): %v", tc.n, err)
		}
		for i := range tc.n {
			if res.Status(i) != pool.StatusDone {
				t.Fatalf("Run(n=%d): Status(%d) = %v", tc.n, i, res.Status(i))
			}
		}
		batches++
		calls += uint64(tc.n)
		// Every call is counted by the time Run returns: a helper adds its
		// calls before it settles them, and Run waits for the last settle.
		s := p.Stats()
		if s.Batches != batches || s.Calls != calls || uint64(ran.Load()) != uint64(tc.n) {
			t.Fatalf("after a batch of %d calls: Batches = %d, Calls = %d; want %d, %d", tc.n, s.Batches, s.Calls, batches, calls)
		}
		if s.BatchesInFlight != 0 {
			t.Errorf("after Run returned: BatchesInFlight = %d", s.BatchesInFlight)
		}
		if s.Rejected != 0 || s.Abandoned != 0 {
			t.Errorf("Rejected = %d, Abandoned = %d with nothing refused or cut", s.Rejected, s.Abandoned)
		}
		if s.Inline > s.Calls {
			t.Errorf("Inline = %d exceeds Calls = %d", s.Inline, s.Calls)
		}
	}
	s := waitStats(t, p, "the helpers to park", idle)
	if s.Idle < 1 || s.Idle > s.Capacity {
		t.Errorf("Idle = %d after batches ran on workers that have not expired; want 1 to %d", s.Idle, s.Capacity)
	}
	if s.Free != s.Capacity {
		t.Errorf("Free = %d on an idle pool of %d", s.Free, s.Capacity)
	}
}

func TestStatsShowABlockedBatchAndDropAfterIt(t *testing.T) {
	p := newPool(t, pool.WithSize(4))
	b := runBlocked(t, context.Background(), p, 1, 0)
	b.waitStarted(t, 1)
	s := waitStats(t, p, "one worker running the blocked call", func(s pool.Stats) bool {
		return s.Running == 1 && s.CallsInFlight == 1
	})
	if s.BatchesInFlight != 1 || s.Free != 3 || s.Capacity != 4 || s.Batches != 1 || s.Calls != 0 {
		t.Errorf("with one call blocked: Stats() = %+v; want BatchesInFlight 1, Free 3, Capacity 4, Batches 1, Calls 0", s)
	}
	if s.Idle < 0 || s.Running+s.Idle > s.Capacity {
		t.Errorf("Idle = %d, Running = %d on a pool of %d", s.Idle, s.Running, s.Capacity)
	}
	res := b.wait(t)
	if res.Status(0) != pool.StatusDone || res.Values[0] != 1 {
		t.Fatalf("the released call: %v %d", res.Status(0), res.Values[0])
	}
	s = waitStats(t, p, "nothing running once the batch returned", idle)
	if s.Calls != 1 || s.Free != 4 {
		t.Errorf("after the batch: Calls = %d, Free = %d; want 1, 4", s.Calls, s.Free)
	}
}

func TestStatsCountEachWorkerOfABatch(t *testing.T) {
	p := newPool(t, pool.WithSize(8))
	b := runBlocked(t, context.Background(), p, 3, 0)
	// The batch ramps up to one helper per blocked call.
	b.waitStarted(t, 3)
	s := waitStats(t, p, "three workers running", func(s pool.Stats) bool { return s.Running == 3 && s.CallsInFlight == 3 })
	if s.BatchesInFlight != 1 || s.Free != 5 {
		t.Errorf("Stats() = %+v; want BatchesInFlight 1, Free 5", s)
	}
	b.wait(t)
	s = waitStats(t, p, "nothing running", idle)
	if s.Calls != 3 {
		t.Errorf("Calls = %d, want 3", s.Calls)
	}
}

func TestStatsUnderEachPolicyWithASaturatedPool(t *testing.T) {
	t.Run("Reject counts every call it refuses as Rejected and none as Calls", func(t *testing.T) {
		p := newPool(t, pool.WithSize(1), pool.WithPolicy(pool.Reject))
		b := runBlocked(t, context.Background(), p, 1, 0)
		b.waitStarted(t, 1)
		waitStats(t, p, "the only worker busy", func(s pool.Stats) bool { return s.Free == 0 })
		for range 3 {
			res, err := pool.Run(context.Background(), p, 5, 0, func(i int) int { return i })
			if err != nil || res.Status(4) != pool.StatusOverloaded {
				t.Fatalf("Run on a saturated Reject pool: %v, Status(4) = %v", err, res.Status(4))
			}
		}
		s := p.Stats()
		if s.Rejected != 15 || s.Batches != 4 || s.Calls != 0 || s.Inline != 0 {
			t.Errorf("Stats() = %+v; want Rejected 15, Batches 4, Calls 0, Inline 0", s)
		}
		b.wait(t)
		s = waitStats(t, p, "nothing running", idle)
		if s.Rejected != 15 || s.Calls != 1 {
			t.Errorf("after the release: Rejected = %d, Calls = %d; want 15, 1", s.Rejected, s.Calls)
		}
	})
	t.Run("CallerRuns counts the calls it runs on the caller as Inline and as Calls", func(t *testing.T) {
		p := newPool(t, pool.WithSize(1), pool.WithPolicy(pool.CallerRuns))
		b := runBlocked(t, context.Background(), p, 1, 0)
		b.waitStarted(t, 1)
		waitStats(t, p, "the only worker busy", func(s pool.Stats) bool { return s.Free == 0 })
		res, err := pool.Run(context.Background(), p, 100, 0, func(i int) int { return i })
		if err != nil || res.Status(99) != pool.StatusDone {
			t.Fatalf("Run on a saturated CallerRuns pool: %v, Status(99) = %v", err, res.Status(99))
		}
		s := p.Stats()
		if s.Inline != 100 || s.Calls != 100 || s.Rejected != 0 || s.Batches != 2 {
			t.Errorf("Stats() = %+v; want Inline 100, Calls 100, Rejected 0, Batches 2", s)
		}
		b.wait(t)
		if s := waitStats(t, p, "nothing running", idle); s.Calls != 101 || s.Inline != 100 {
			t.Errorf("after the release: Calls = %d, Inline = %d; want 101, 100", s.Calls, s.Inline)
		}
	})
	t.Run("CallerRuns counts a call blocked on the caller in CallsInFlight, not Running", func(t *testing.T) {
		p := newPool(t, pool.WithSize(1), pool.WithPolicy(pool.CallerRuns))
		onWorker := runBlocked(t, context.Background(), p, 1, 0)
		onWorker.waitStarted(t, 1)
		waitStats(t, p, "the only worker busy", func(s pool.Stats) bool { return s.Free == 0 })
		onCaller := runBlocked(t, context.Background(), p, 1, 0)
		onCaller.waitStarted(t, 1)
		s := p.Stats()
		if s.Running != 1 || s.CallsInFlight != 2 || s.BatchesInFlight != 2 {
			t.Errorf("Stats() = %+v; want Running 1, CallsInFlight 2, BatchesInFlight 2", s)
		}
		onCaller.wait(t)
		if s := p.Stats(); s.CallsInFlight != 1 || s.Inline != 1 {
			t.Errorf("after the caller's call: CallsInFlight = %d, Inline = %d; want 1, 1", s.CallsInFlight, s.Inline)
		}
		onWorker.wait(t)
		waitStats(t, p, "nothing running", idle)
	})
	t.Run("Wait counts a waiting batch in WaitingBatches and its wait in QueueWait", func(t *testing.T) {
		p := newPool(t, pool.WithSize(1), pool.WithPolicy(pool.Wait))
		b := runBlocked(t, context.Background(), p, 1, 0)
		b.waitStarted(t, 1)
		before := waitStats(t, p, "the only worker busy", func(s pool.Stats) bool { return s.Free == 0 })
		waiter := runBlocked(t, context.Background(), p, 1, 0)
		s := waitStats(t, p, "a waiting batch", func(s pool.Stats) bool { return s.WaitingBatches == 1 })
		if s.BatchesInFlight != 2 || s.Running != 1 || s.CallsInFlight != 1 {
			t.Errorf("with a batch waiting: Stats() = %+v; want BatchesInFlight 2, Running 1, CallsInFlight 1", s)
		}
		// The waiter entered Run before it counted as waiting: from here on
		// its queue wait is at least as long as the worker stays busy.
		const held = 20 * time.Millisecond
		time.Sleep(held)
		b.wait(t)
		waiter.waitStarted(t, 1)
		s = waitStats(t, p, "the waiter running", func(s pool.Stats) bool { return s.WaitingBatches == 0 && s.Running == 1 })
		if grew := s.QueueWait - before.QueueWait; grew < held {
			t.Errorf("QueueWait grew by %v for a batch that waited at least %v", grew, held)
		}
		waiter.wait(t)
		s = waitStats(t, p, "nothing running", idle)
		if s.Calls != 2 || s.Batches != 2 || s.Rejected != 0 || s.Inline != 0 {
			t.Errorf("Stats() = %+v; want Calls 2, Batches 2, Rejected 0, Inline 0", s)
		}
	})
	t.Run("Wait does not count a batch that gave up waiting as waiting", func(t *testing.T) {
		p := newPool(t, pool.WithSize(1), pool.WithPolicy(pool.Wait))
		b := runBlocked(t, context.Background(), p, 1, 0)
		b.waitStarted(t, 1)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			pool.Run(ctx, p, 3, 0, func(i int) int { return i })
		}()
		waitStats(t, p, "a waiting batch", func(s pool.Stats) bool { return s.WaitingBatches == 1 })
		cancel()
		select {
		case <-done:
		case <-time.After(statsBound):
			t.Fatal("the canceled waiter had not returned")
		}
		if s := p.Stats(); s.WaitingBatches != 0 || s.BatchesInFlight != 1 || s.Calls != 0 {
			t.Errorf("Stats() = %+v; want WaitingBatches 0, BatchesInFlight 1, Calls 0", s)
		}
		b.wait(t)
	})
}

func TestStatsCountAbandonedCalls(t *testing.T) {
	p := newPool(t, pool.WithSize(4))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := runBlocked(t, ctx, p, 1, 0)
	b.waitStarted(t, 1)
	cancel() // the batch's deadline: the call ignores it and stays blocked
	var res *pool.Results[int]
	select {
	case res = <-b.done:
	case <-time.After(statsBound):
		t.Fatal("Run did not return when its context ended")
	}
	if st := res.Status(0); st != pool.StatusAbandoned {
		t.Fatalf("Status(0) = %v, want StatusAbandoned", st)
	}
	s := p.Stats()
	if s.Abandoned != 1 || s.BatchesInFlight != 0 {
		t.Errorf("after the context cut a blocked call: Abandoned = %d, BatchesInFlight = %d; want 1, 0", s.Abandoned, s.BatchesInFlight)
	}
	// The abandoned call keeps its worker until it returns.
	if s.Running != 1 || s.CallsInFlight != 1 {
		t.Errorf("with the abandoned call still blocked: Running = %d, CallsInFlight = %d; want 1, 1", s.Running, s.CallsInFlight)
	}
	b.release()
	s = waitStats(t, p, "the abandoned call's worker freed", idle)
	if s.Abandoned != 1 || s.Calls != 1 {
		t.Errorf("after it returned: Abandoned = %d, Calls = %d; want 1, 1", s.Abandoned, s.Calls)
	}
}

func TestStatsCountAbandonedCallsOfALargerBatch(t *testing.T) {
	p := newPool(t, pool.WithSize(8))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := runBlocked(t, ctx, p, 6, 4) // at most 4 start; 2 never do
	b.waitStarted(t, 4)
	cancel()
	var res *pool.Results[int]
	select {
	case res = <-b.done:
	case <-time.After(statsBound):
		t.Fatal("Run did not return when its context ended")
	}
	abandoned, canceled := 0, 0
	for i := range 6 {
		switch res.Status(i) {
		case pool.StatusAbandoned:
			abandoned++
		case pool.StatusCanceled:
			canceled++
		}
	}
	if abandoned != 4 || canceled != 2 {
		t.Fatalf("%d abandoned and %d canceled, want 4 and 2", abandoned, canceled)
	}
	if s := p.Stats(); s.Abandoned != 4 {
		t.Errorf("Abandoned = %d, want 4", s.Abandoned)
	}
	b.release()
	if s := waitStats(t, p, "the workers freed", idle); s.Calls != 4 || s.Abandoned != 4 {
		t.Errorf("Calls = %d, Abandoned = %d; want 4, 4", s.Calls, s.Abandoned)
	}
}

func TestStatsQueueWaitGrows(t *testing.T) {
	p := newPool(t, pool.WithSize(4))
	var last time.Duration
	for i := range 20 {
		if _, err := pool.Run(context.Background(), p, 10, 0, func(i int) int { return i }); err != nil {
			t.Fatal(err)
		}
		s := p.Stats()
		if s.QueueWait < last {
			t.Fatalf("after batch %d: QueueWait went down from %v to %v", i, last, s.QueueWait)
		}
		last = s.QueueWait
	}
	if last <= 0 {
		t.Errorf("QueueWait = %v after 20 batches, want more than 0", last)
	}
}

func TestTuneReportsWhatItCannotDo(t *testing.T) {
	p := newPool(t, pool.WithSize(4))
	for _, size := range []int{0, -1} {
		if err := p.Tune(size); err == nil {
			t.Errorf("Tune(%d) = nil, want an error", size)
		}
		if c := p.Stats().Capacity; c != 4 {
			t.Errorf("after Tune(%d): Capacity = %d, want 4 unchanged", size, c)
		}
	}
	for _, size := range []int{64, 2, 16, 16, 1} {
		if err := p.Tune(size); err != nil {
			t.Fatalf("Tune(%d) = %v", size, err)
		}
		if s := p.Stats(); s.Capacity != size || s.Free != size || p.Cap() != size {
			t.Errorf("after Tune(%d): Capacity = %d, Free = %d, Cap() = %d", size, s.Capacity, s.Free, p.Cap())
		}
	}
	pre := newPool(t, pool.WithSize(4), pool.WithPreAlloc(true))
	if err := pre.Tune(8); err == nil {
		t.Error("Tune(8) on a pre-allocated pool = nil, want an error")
	}
	if c := pre.Stats().Capacity; c != 4 {
		t.Errorf("pre-allocated pool after Tune(8): Capacity = %d, want 4", c)
	}
}

func TestTuneWhileABatchIsBlocked(t *testing.T) {
	p := newPool(t, pool.WithSize(4), pool.WithPolicy(pool.Reject))
	b := runBlocked(t, context.Background(), p, 2, 0)
	b.waitStarted(t, 2)
	waitStats(t, p, "two workers busy", func(s pool.Stats) bool { return s.Running == 2 })
	if err := p.Tune(1); err != nil {
		t.Fatal(err)
	}
	s := p.Stats()
	if s.Capacity != 1 || s.Free != -1 {
		t.Errorf("shrunk below the busy workers: Capacity = %d, Free = %d; want 1, -1", s.Capacity, s.Free)
	}
	res, err := pool.Run(context.Background(), p, 1, 0, func(i int) int { return i })
	if err != nil || res.Status(0) != pool.StatusOverloaded {
		t.Errorf("a batch on a pool shrunk below its busy workers: %v, %v; want StatusOverloaded", err, res.Status(0))
	}
	if err := p.Tune(8); err != nil {
		t.Fatal(err)
	}
	res, err = pool.Run(context.Background(), p, 3, 0, func(i int) int { return i })
	if err != nil || res.Status(2) != pool.StatusDone {
		t.Errorf("a batch on the regrown pool: %v, %v; want StatusDone", err, res.Status(2))
	}
	got := b.wait(t)
	if got.Status(0) != pool.StatusDone || got.Status(1) != pool.StatusDone {
		t.Errorf("the blocked batch: %v, %v; want both done", got.Status(0), got.Status(1))
	}
	if s := waitStats(t, p, "nothing running", idle); s.Calls != 5 || s.Rejected != 1 || s.Free != 8 {
		t.Errorf("Stats() = %+v; want Calls 5, Rejected 1, Free 8", s)
	}
}

// TestTuneShrinkCapsWorkersAlreadyIdle: after Tune shrinks the pool, no
// more calls than the new size run at once (WithSize: "the most calls the
// pool runs at once across all batches"), even while workers parked under
// the old size are still alive.
func TestTuneShrinkCapsWorkersAlreadyIdle(t *testing.T) {
	p := newPool(t, pool.WithSize(8))
	wide := runBlocked(t, context.Background(), p, 8, 0)
	wide.waitStarted(t, 8)
	wide.wait(t)
	waitStats(t, p, "eight workers parked", func(s pool.Stats) bool { return idle(s) && s.Idle == 8 })
	if err := p.Tune(2); err != nil {
		t.Fatal(err)
	}
	b := runBlocked(t, context.Background(), p, 8, 0)
	b.waitStarted(t, 2)
	// The batch ramps up within microseconds; give it ample time to
	// overshoot, and fail as soon as it does.
	deadline := time.Now().Add(200 * time.Millisecond)
	for time.Now().Before(deadline) {
		if s := p.Stats(); s.Running > 2 || s.CallsInFlight > 2 {
			t.Fatalf("after Tune(2): %d calls running at once on idle workers of the old size; Stats() = %+v", s.CallsInFlight, s)
		}
		time.Sleep(time.Millisecond)
	}
	if res := b.wait(t); res.Status(7) != pool.StatusDone {
		t.Errorf("Status(7) = %v", res.Status(7))
	}
}
