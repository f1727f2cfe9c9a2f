// Package pool runs the calls of a batch on a shared worker pool
// (github.com/panjf2000/ants/v2), like errgroup.Group with a limit, but with
// three things a batch needs: results in slot order without locks, a deadline
// that frees the caller even when a call never returns, and no goroutine
// hand-off per call.
//
// Run does not submit one task per call. It submits helpers, and every helper
// claims the next unclaimed index from a shared counter until none is left, so
// a batch of a thousand 200 ns calls costs one or two hand-offs, not a
// thousand. The caller's goroutine coordinates: it watches the context, and
// while calls remain unclaimed it doubles the number of helpers every ramp-up
// interval (default 20 µs), up to the batch's limit, or gives every
// unclaimed call a helper at once when no helper has come back for a second
// call. Slow calls (I/O) so get one helper each after one interval, and
// trivial calls finish on the first one or two helpers.
//
// The coordinator never waits on the pool while holding a worker, so Run
// cannot deadlock: not with a saturated pool, not with a pool of one worker,
// not when a call itself sends a batch to the same server.
package pool

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/panjf2000/ants/v2"

	"github.com/thriftbatch/thriftbatch/internal/drain"
)

// Defaults for the options of New.
const (
	// DefaultSize is the most workers (WithSize).
	DefaultSize = 1024
	// DefaultExpiry is how long an idle worker lives (WithExpiry).
	DefaultExpiry = 10 * time.Second
	// DefaultRampUp is the step at which a batch adds helpers (WithRampUp).
	DefaultRampUp = 20 * time.Microsecond
	// MaxPreAllocSize is the largest size of a pre-allocated pool
	// (WithPreAlloc), whose worker queue New allocates whole: 16 bytes a
	// worker on a 64-bit platform, 16 MiB at this size. A pool that is not
	// pre-allocated has no such limit: its queue grows with the workers
	// started.
	MaxPreAllocSize = 1 << 20

	minWaitInterval = 50 * time.Microsecond // the first retry of a Wait batch's hand-off
	maxWaitInterval = time.Millisecond      // and the longest pause between retries
)

// ErrClosed is returned by Run after Close has begun.
var ErrClosed = errors.New("pool: closed")

// Policy says what a batch does when the pool has no free worker for it.
type Policy int

const (
	// CallerRuns runs the batch's calls on the caller's goroutine when no
	// worker is free. Nothing is refused and nothing waits, but the
	// caller cannot leave a call that never returns: the batch's deadline
	// is then honoured between calls only. This is the default.
	CallerRuns Policy = iota
	// Wait waits for a free worker until the context is done; calls not
	// started by then end with StatusCanceled. Concurrency never exceeds
	// the pool size. A call that sends a batch to its own server can wait
	// for its batch's deadline when every worker is taken.
	Wait
	// Reject ends the batch's calls with StatusOverloaded when no worker
	// is free to start them.
	Reject
)

// String returns the policy's name as the flags of the example server spell
// it: "caller-runs", "wait" or "reject".
func (p Policy) String() string {
	switch p {
	case CallerRuns:
		return "caller-runs"
	case Wait:
		return "wait"
	case Reject:
		return "reject"
	}
	return fmt.Sprintf("Policy(%d)", int(p))
}

// Valid reports whether p is one of the policies above.
func (p Policy) Valid() bool { return p >= CallerRuns && p <= Reject }

// ParsePolicy parses the names String returns.
func ParsePolicy(s string) (Policy, error) {
	for _, p := range []Policy{CallerRuns, Wait, Reject} {
		if p.String() == s {
			return p, nil
		}
	}
	return 0, fmt.Errorf("pool: unknown overload policy %q (want caller-runs, wait or reject)", s)
}

// Pool is a worker pool shared by every batch of a server. It is safe for
// concurrent use.
type Pool struct {
	workers  *ants.Pool
	preAlloc bool
	policy   Policy
	rampUp   time.Duration

	gate     drain.Gate
	counters counters
}

// counters are the pool's statistics that are not read off ants.
type counters struct {
	busy         atomic.Int64 // workers running a helper
	inlineActive atomic.Int64 // callers running their batch's calls
	batches      atomic.Uint64
	calls        atomic.Uint64
	waiting      atomic.Int64
	queueWait    atomic.Int64 // nanoseconds, summed over batches
	rejected     atomic.Uint64
	inline       atomic.Uint64
	abandoned    atomic.Uint64
	stuck        atomic.Int64 // calls abandoned and not yet returned; may read -1 for a moment
}

// Stats is a snapshot of a pool's state and counters. Counters count from
// the pool's start; subtract two snapshots for rates. Reading one costs a
// mutex and a dozen atomic loads: cheap enough for every scrape.
type Stats struct {
	// Capacity is the pool's size (WithSize, or the last Tune).
	Capacity int
	// Running is the number of workers running a batch's calls now.
	// Running at Capacity for long says the pool is too small for the load.
	Running int
	// Idle is the number of worker goroutines alive but waiting for work;
	// they exit after the worker expiry.
	Idle int
	// Free is Capacity less Running: how many workers could start now.
	Free int
	// WaitingBatches is the number of batches waiting for their first
	// worker under the Wait policy.
	WaitingBatches int
	// BatchesInFlight is the number of batches between the start and the end
	// of Run.
	BatchesInFlight int
	// CallsInFlight is the number of calls running now: one per busy
	// worker and per caller running its own batch's calls.
	CallsInFlight int
	// Batches is the number of batches run.
	Batches uint64
	// Calls is the number of calls run. A goroutine adds its calls when it
	// has finished with a batch.
	Calls uint64
	// QueueWait is the time batches spent, summed, between entering Run and
	// their first call starting. QueueWait/Batches is the mean wait (a
	// little low when some batches were empty or rejected, which add no
	// wait); a mean well above the ramp-up interval says the pool is too
	// small.
	QueueWait time.Duration
	// Rejected is the number of calls answered StatusOverloaded (policy
	// Reject).
	Rejected uint64
	// Inline is the number of calls run on a caller's goroutine because no
	// worker was free (policy CallerRuns).
	Inline uint64
	// Abandoned is the number of calls still running when their batch's
	// context ended.
	Abandoned uint64
}

// Stats returns a snapshot of the pool's state and counters.
func (p *Pool) Stats() Stats {
	inflight := p.gate.InFlight()
	c := &p.counters
	capacity, busy := p.workers.Cap(), int(c.busy.Load())
	return Stats{
		Capacity:        capacity,
		Running:         busy,
		Idle:            max(p.workers.Running()-busy, 0),
		Free:            capacity - busy,
		WaitingBatches:  int(c.waiting.Load()),
		BatchesInFlight: inflight,
		CallsInFlight:   busy + int(c.inlineActive.Load()),
		Batches:         c.batches.Load(),
		Calls:           c.calls.Load(),
		QueueWait:       time.Duration(c.queueWait.Load()),
		Rejected:        c.rejected.Load(),
		Inline:          c.inline.Load(),
		Abandoned:       c.abandoned.Load(),
	}
}

type config struct {
	size     int
	preAlloc bool
	expiry   time.Duration
	policy   Policy
	rampUp   time.Duration
}

// Option configures a Pool.
type Option func(*config)

// WithSize sets the number of workers, the most calls the pool runs at once
// across all batches. The default is DefaultSize (1024). It must be
// positive. Idle workers cost nothing but the goroutine's stack until they
// expire (WithExpiry).
func WithSize(n int) Option { return func(c *config) { c.size = n } }

// WithPreAlloc allocates the worker queue for the full size up front. The
// default is false. A pre-allocated pool cannot be resized with Tune, and
// its size must be at most MaxPreAllocSize (1,048,576).
func WithPreAlloc(b bool) Option { return func(c *config) { c.preAlloc = b } }

// WithExpiry sets how long an idle worker lives before its goroutine exits.
// The default is DefaultExpiry (10 s). It must be positive.
func WithExpiry(d time.Duration) Option { return func(c *config) { c.expiry = d } }

// WithPolicy sets what a batch does when no worker is free. The default is
// CallerRuns.
func WithPolicy(p Policy) Option { return func(c *config) { c.policy = p } }

// WithRampUp sets how long a batch's calls run on the helpers they have
// before the batch adds helpers, while calls remain unclaimed. The default is
// DefaultRampUp (20 µs): about ten hand-offs' worth, so trivial calls rarely
// pay for helpers they do not need, and a batch of slow calls has a helper
// per call after one step. While it ramps up, the batch's own goroutine
// yields the processor in a loop rather than sleep (sub-millisecond timers
// fire a millisecond late), so a batch costs up to a few steps of that
// goroutine's time. It must be positive.
func WithRampUp(d time.Duration) Option { return func(c *config) { c.rampUp = d } }

// New starts a pool. It returns an error for an invalid option. The pool
// starts ants' two housekeeping goroutines; release them with Close.
func New(opts ...Option) (*Pool, error) {
	cfg := config{size: DefaultSize, expiry: DefaultExpiry, policy: CallerRuns, rampUp: DefaultRampUp}
	for _, o := range opts {
		o(&cfg)
	}
	switch {
	case cfg.size <= 0:
		return nil, fmt.Errorf("pool: WithSize: size must be positive, got %d", cfg.size)
	case cfg.preAlloc && cfg.size > MaxPreAllocSize:
		return nil, fmt.Errorf("pool: WithPreAlloc: a pre-allocated pool holds at most MaxPreAllocSize (%d) workers, WithSize gave %d", MaxPreAllocSize, cfg.size)
	case cfg.expiry <= 0:
		return nil, fmt.Errorf("pool: WithExpiry: expiry must be positive, got %v", cfg.expiry)
	case cfg.rampUp <= 0:
		return nil, fmt.Errorf("pool: WithRampUp: ramp-up interval must be positive, got %v", cfg.rampUp)
	case !cfg.policy.Valid():
		return nil, fmt.Errorf("pool: WithPolicy: unknown overload policy %v", cfg.policy)
	}
	workers, err := ants.NewPool(cfg.size,
		ants.WithNonblocking(true), // the policies decide what happens when the pool is full
		ants.WithPreAlloc(cfg.preAlloc),
		ants.WithExpiryDuration(cfg.expiry),
		ants.WithLogger(discard{}),
	)
	if err != nil {
		return nil, fmt.Errorf("pool: %w", err)
	}
	return &Pool{workers: workers, policy: cfg.policy, rampUp: cfg.rampUp, preAlloc: cfg.preAlloc}, nil
}

// discard keeps ants from printing on the standard logger: a helper never
// panics (Run recovers), so ants has nothing worth saying.
type discard struct{}

func (discard) Printf(string, ...any) {}

// Cap returns the pool's size.
func (p *Pool) Cap() int { return p.workers.Cap() }

// Running returns the number of workers running a batch's calls now.
func (p *Pool) Running() int { return int(p.counters.busy.Load()) }

// Free returns the number of workers that could start a batch's calls now:
// the capacity less the busy workers. It can be negative for a moment after
// Tune shrinks the pool.
func (p *Pool) Free() int { return p.workers.Cap() - p.Running() }

// Tune changes the pool's size on a running pool without dropping work:
// helpers already running finish, and new ones start while the pool has room
// under the new size. It returns an error for a size below 1 and for a
// pre-allocated pool, whose size is fixed.
func (p *Pool) Tune(size int) error {
	switch {
	case size < 1:
		return fmt.Errorf("pool: size must be positive, got %d", size)
	case p.preAlloc:
		return errors.New("pool: a pre-allocated pool cannot be resized")
	}
	p.workers.Tune(size)
	return nil
}

// Close stops new batches (Run returns ErrClosed), waits until the batches in
// flight have returned or ctx is done, then releases the workers, waiting for
// them to exit within what is left of ctx (not at all once ctx is done). It
// returns ctx's error when ctx ended while a batch was still in Run, or while
// a worker was still running a call abandoned at its batch's deadline; such
// workers are left behind and exit when their calls return. With nothing in
// flight it returns nil, whatever ctx says. Calling Close again returns nil
// once the first call has finished.
func (p *Pool) Close(ctx context.Context) error {
	err := p.gate.Close(ctx)
	if p.workers.IsClosed() {
		return err
	}
	if err != nil {
		p.workers.Release()
		return err
	}
	rerr := p.workers.ReleaseContext(ctx)
	// Idle workers, and helpers that came too late to find a call, exit
	// at once on release: only a call abandoned at its deadline and still
	// running is worth ctx's error.
	if n := p.counters.stuck.Load(); rerr != nil && !errors.Is(rerr, ants.ErrPoolClosed) && n > 0 {
		return fmt.Errorf("pool: calls abandoned at their deadline still running (%d): %w", n, rerr)
	}
	return nil
}

// IsClosed reports whether Close has begun: Run then returns ErrClosed. It
// costs a lock.
func (p *Pool) IsClosed() bool { return p.gate.Closed() }

// Status is what became of one index of a Run.
type Status uint32

const (
	statusPending Status = iota
	statusRunning
	statusWriting
	// StatusDone means fn returned and its value is in Results.Values.
	StatusDone
	// StatusCanceled means fn never started: the context was done first.
	StatusCanceled
	// StatusOverloaded means fn never started: no worker was free and the
	// policy is Reject.
	StatusOverloaded
	// StatusAbandoned means fn had started but not returned when the
	// context was done. Its value, if it ever returns, is discarded.
	StatusAbandoned
	// StatusPanicked means fn panicked. Callers that want the panic value
	// and stack recover inside fn; this is the pool's safety net.
	StatusPanicked
)

// Results holds the outcome of a Run: Values[i] is fn(i)'s value where
// Status(i) is StatusDone, and the zero value elsewhere.
type Results[T any] struct {
	Values []T
	state  []atomic.Uint32
}

// Status returns what became of index i.
func (r *Results[T]) Status(i int) Status { return Status(r.state[i].Load()) }

// run is the shared state of one Run.
type run[T any] struct {
	fn      func(i int) T
	n       int64
	res     *Results[T]
	next    atomic.Int64  // the next index to claim
	stealAt atomic.Int64  // one above the next index thieves look at, from n down
	scan    int           // indices below it have started: touched by the coordinator only
	left    atomic.Int64  // indices not yet claimed and settled
	stop    atomic.Uint32 // a Status that unclaimed indices get, or 0 to run them
	done    chan struct{} // closed when left reaches 0
	work    func()        // the helper, allocated once per Run
	helpers int           // touched by the coordinator only
	c       *counters
	start   time.Time
	started atomic.Bool // the first call has started: the queue wait is counted
}

// Run calls fn(i) for every i in [0, n) and returns their values in index
// order. At most limit calls of this batch run at once (limit < 1 means n);
// limit 1 runs them one at a time in index order.
//
// Run returns when every call has returned or ctx is done, whichever comes
// first; calls that had not started get StatusCanceled, calls still running
// get StatusAbandoned and keep their worker until they return. fn should
// honour ctx. A panic in fn gives that index StatusPanicked; the other calls
// go on. fn must return or panic: a call that ends its goroutine with
// runtime.Goexit is never settled, so its batch ends only when ctx is done,
// and its worker stays counted as busy.
//
// Cost: 6 or 7 allocations per batch (go test -bench BatchOfTrivialTasks
// ./pool), one of them Values (see RunInto), one helper hand-off for a batch
// whose calls finish within the ramp-up interval, one shared increment per
// chunk of calls, per call two compare-and-swaps and a store on the call's own
// status, and, once every call is claimed, one more look at each status: by the
// helpers looking for calls to steal, and by the coordinator looking for calls
// held up. It returns ErrClosed, running nothing, after Close has begun.
func Run[T any](ctx context.Context, p *Pool, n, limit int, fn func(i int) T) (*Results[T], error) {
	return RunInto(ctx, p, make([]T, n), limit, fn)
}

// RunInto is Run for len(dst) calls, writing their values into dst, which
// becomes Results.Values, instead of a slice of its own: a caller that runs
// batch after batch may keep dst. Only an index that ends StatusDone has
// its element written; the others keep what they held, and a call
// abandoned at the deadline never writes its element, whenever it returns.
func RunInto[T any](ctx context.Context, p *Pool, dst []T, limit int, fn func(i int) T) (*Results[T], error) {
	if !p.gate.Enter() {
		return nil, ErrClosed
	}
	defer p.gate.Exit()
	p.counters.batches.Add(1)
	n := len(dst)
	res := &Results[T]{Values: dst, state: make([]atomic.Uint32, n)}
	if n == 0 {
		return res, nil
	}
	if limit < 1 || limit > n {
		limit = n
	}
	r := &run[T]{fn: fn, n: int64(n), res: res, done: make(chan struct{}), c: &p.counters, start: time.Now()}
	r.left.Store(int64(n))
	r.stealAt.Store(int64(n))
	r.work = r.loop

	if err := ctx.Err(); err != nil {
		r.settle(StatusCanceled)
		return res, nil
	}
	if !r.spawn(p) {
		switch p.policy {
		case CallerRuns:
			r.loopUntil(ctx, p, limit)
			if r.helpers > 0 { // recruited while the caller ran calls
				select {
				case <-r.done:
				case <-ctx.Done():
					r.abandon()
				}
			}
			return res, nil
		case Reject:
			r.settle(StatusOverloaded)
			return res, nil
		case Wait:
			if !r.waitSpawn(ctx, p) {
				r.settle(StatusCanceled)
				return res, nil
			}
		}
	}
	r.coordinate(ctx, p, limit)
	return res, nil
}

// coordinate waits for the batch, adding helpers every ramp-up interval while
// calls remain unclaimed, and gives up the unfinished calls when ctx is done.
// When no helper has come back for a second call, the calls are slow, and
// every unclaimed call gets a helper of its own at once; otherwise the
// helpers double.
func (r *run[T]) coordinate(ctx context.Context, p *Pool, limit int) {
	ctxDone := ctx.Done()
	full := false
	stuck := -1 // the first call not started at the last step, once all are claimed
	for r.helpers < limit {
		// While the pool is full, look again every millisecond (a timer
		// is precise enough at that scale) instead of yielding: workers
		// free up as other batches' calls return.
		if full && !r.sleep(time.Millisecond, ctxDone) || !full && !r.pause(p.rampUp, ctxDone) {
			break
		}
		claimed := r.next.Load()
		unclaimed := int(r.n - claimed)
		if unclaimed <= 0 {
			// Every call is claimed. One that has not started for a
			// whole step sits in a chunk behind a call still running:
			// one more helper steals it, and any others, rather than
			// let it wait. A chunk of quick calls moves on within a
			// step, and gets no helper.
			i := r.firstPending()
			switch {
			case i < 0:
			case i != stuck:
				stuck = i
				continue
			default:
				stuck = -1
				full = !r.spawn(p)
				continue
			}
			break
		}
		want := min(r.helpers, limit-r.helpers, unclaimed)
		if claimed <= int64(r.helpers) {
			want = min(limit-r.helpers, unclaimed)
		}
		full = false
		for range want {
			if !r.spawn(p) {
				full = true
				break
			}
		}
	}
	select {
	case <-r.done:
	case <-ctxDone:
		r.abandon()
	}
}

// sleep waits d on a timer, and reports false early when the batch is done
// or ctx is done.
func (r *run[T]) sleep(d time.Duration, ctxDone <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-r.done:
		return false
	case <-ctxDone:
		return false
	}
}

// pause yields the processor until d has passed, and reports false early
// when the batch is done or ctx is done. It yields instead of sleeping: a Go
// timer shorter than a millisecond often fires about a millisecond late when
// the process is otherwise idle (a 20 µs timer, 101 samples each in two runs
// at c04aa5b: medians 64 µs and 1.08 ms, 90th percentiles 1.07 and 1.10 ms),
// which would stretch a ramp-up step up to fifty-fold.
func (r *run[T]) pause(d time.Duration, ctxDone <-chan struct{}) bool {
	start := time.Now()
	for time.Since(start) < d {
		select {
		case <-r.done:
			return false
		case <-ctxDone:
			return false
		default:
		}
		runtime.Gosched()
	}
	return true
}

// spawn hands the batch to one more worker, if the pool has room for it.
func (r *run[T]) spawn(p *Pool) bool {
	if !p.reserve() {
		return false
	}
	// The reservation says a worker is free. ants may still refuse for a
	// moment: a worker whose helper has just returned is counted free here
	// before ants has put it back in its idle queue. Such a refusal passes
	// once that worker's goroutine runs again, which takes a few yields,
	// or, when the machine takes the processor away from it, up to a time
	// slice of the operating system's: the retries are bounded in time,
	// not in count, for that case; the bound guards against the unforeseen.
	var deadline time.Time // set at the first refusal
	for {
		err := p.workers.Submit(r.work)
		if err == nil {
			r.helpers++
			return true
		}
		if !errors.Is(err, ants.ErrPoolOverload) {
			break
		}
		if deadline.IsZero() {
			deadline = time.Now().Add(maxSubmitWait)
		} else if time.Now().After(deadline) {
			break
		}
		runtime.Gosched()
	}
	p.counters.busy.Add(-1)
	return false
}

// maxSubmitWait bounds how long spawn retries a refused hand-off.
const maxSubmitWait = 20 * time.Millisecond

// waitSpawn retries the first hand-off with a growing pause until it succeeds
// or ctx is done. ants cannot wait on a context, hence the polling.
func (r *run[T]) waitSpawn(ctx context.Context, p *Pool) bool {
	r.c.waiting.Add(1)
	defer r.c.waiting.Add(-1)
	pause := minWaitInterval
	t := time.NewTimer(pause)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
		}
		if r.spawn(p) {
			return true
		}
		pause = min(2*pause, maxWaitInterval)
		t.Reset(pause)
	}
}

// loop is a helper: it claims and runs calls until none is left.
func (r *run[T]) loop() {
	r.begin()
	settled, ran := r.drain(nil, nil)
	r.c.busy.Add(-1)
	r.c.calls.Add(ran)
	r.settled(settled)
}

// begin counts the batch's queue wait when the first of its calls starts.
func (r *run[T]) begin() {
	if !r.started.Load() && r.started.CompareAndSwap(false, true) {
		r.c.queueWait.Add(int64(time.Since(r.start)))
	}
}

// loopUntil runs the calls on the caller's goroutine, checking ctx between
// calls, and hands calls to helpers as workers free up: a batch that started
// while the pool was full does not stay serial once it is not.
func (r *run[T]) loopUntil(ctx context.Context, p *Pool, limit int) {
	r.c.inlineActive.Add(1)
	r.begin()
	recruit := func() {
		// The caller counts as one of the batch's limit.
		if r.helpers < limit-1 && r.next.Load() < r.n {
			r.spawn(p)
		}
	}
	settled, ran := r.drain(ctx.Done(), recruit)
	r.c.inlineActive.Add(-1)
	r.c.calls.Add(ran)
	r.c.inline.Add(ran)
	r.settled(settled)
}

// Chunks of calls: a goroutine claims up to maxChunk indices at once, as many
// as take about chunkTarget at the pace of its last chunk. The target keeps the
// chunks of calls of about a microsecond wide enough that two helpers rarely
// write the same cache line of the batch's statuses and values. With 4 µs,
// chunks of 4 echo calls, a batch of 1,000 on a pool of two took 0.92 to 1.05
// times the direct loop's wall time; with 32 µs, 0.82 to 0.92, while two
// identical ways measured 1.00 to 1.03 apart (go test -bench
// DispatcherAgainstDirect ./dispatcher, four runs each, at 072f939, before
// helpers stole calls; at 7a8af57, 32 µs: 0.88 and 0.92 in two runs). A chunk
// is sized from the pace of the one before it, so a call that turns slow in the
// middle of a chunk would hold up the rest of it; other helpers steal those
// calls (see steal), and the coordinator adds a helper for them when none is
// left to, while the pool has a worker free.
const (
	chunkTarget = 32 * time.Microsecond
	maxChunk    = 64
)

// drain claims chunks of indices and settles them until none is left; once
// done (when not nil) is closed, the rest are settled as StatusCanceled.
// recruit, when not nil, runs before each chunk. It returns how many indices
// it settled and how many calls it ran.
//
// A chunk starts at one index and at most doubles while calls are quick, so
// trivial calls cost one shared increment per chunk and neighbouring slots
// are written by one goroutine (no cache line bouncing between cores), while
// slow calls are claimed one at a time and spread over all the helpers.
func (r *run[T]) drain(done <-chan struct{}, recruit func()) (settled, ran uint64) {
	chunk := int64(1)
	for {
		if recruit != nil {
			recruit()
		}
		lo := r.next.Add(chunk) - chunk
		if lo >= r.n {
			s, rn := r.steal(done)
			return settled + s, ran + rn
		}
		hi := min(lo+chunk, r.n)
		start := time.Now()
		for i := lo; i < hi; i++ {
			s, rn := r.one(int(i), done)
			settled, ran = settled+s, ran+rn
		}
		per := time.Since(start) / time.Duration(hi-lo)
		chunk = min(2*chunk, maxChunk, max(1, int64(chunkTarget/max(per, 1))))
	}
}

// steal runs the calls that other goroutines have claimed in their chunks
// but not started, so that a call that turns slow does not hold up the
// quick calls claimed after it in the same chunk until it returns (or
// until the deadline). Thieves share one pass over the statuses, from the
// last index down, so a batch's statuses are looked at once however many
// helpers finish. Each call still starts once: it runs on whichever
// goroutine moves its status from pending to running first, and is settled
// there. It returns how many calls it settled and how many it ran; once
// done (when not nil) is closed, the calls it finds pending are settled as
// StatusCanceled.
func (r *run[T]) steal(done <-chan struct{}) (settled, ran uint64) {
	for {
		i := r.stealAt.Add(-1)
		if i < 0 {
			return settled, ran
		}
		if Status(r.res.state[i].Load()) != statusPending {
			continue
		}
		s, rn := r.one(int(i), done)
		settled, ran = settled+s, ran+rn
	}
}

// firstPending returns the first index whose call has not started, or -1.
// A call never returns to pending, so the scan resumes where it stopped:
// over a batch, the coordinator looks at each status once.
func (r *run[T]) firstPending() int {
	for r.scan < len(r.res.state) && Status(r.res.state[r.scan].Load()) != statusPending {
		r.scan++
	}
	if r.scan == len(r.res.state) {
		return -1
	}
	return r.scan
}

// one runs index i unless the batch has stopped, or done (when not nil) is
// closed, which stops it, and reports whether this goroutine settled it (1
// or 0: another may have taken it first, as a thief or as the owner of its
// chunk, or abandon may have given it up) and whether it ran fn. An index is
// settled, for the count that ends the batch, only once its call has
// returned.
func (r *run[T]) one(i int, done <-chan struct{}) (settled, ran uint64) {
	if done != nil {
		select { // a receive that cannot block costs no lock
		case <-done:
			r.stop.CompareAndSwap(0, uint32(StatusCanceled))
		default:
		}
	}
	st := &r.res.state[i]
	if s := r.stop.Load(); s != 0 {
		if st.CompareAndSwap(uint32(statusPending), s) {
			return 1, 0
		}
		return 0, 0
	}
	if !st.CompareAndSwap(uint32(statusPending), uint32(statusRunning)) {
		return 0, 0 // taken by another goroutine, or abandoned before it started
	}
	v, ok := r.call(i)
	if !ok {
		if !st.CompareAndSwap(uint32(statusRunning), uint32(StatusPanicked)) {
			r.c.stuck.Add(-1) // abandoned while it ran
		}
		return 1, 1
	}
	// Only the goroutine that moves running to writing may write slot i;
	// abandon moves running to abandoned instead, and then the value is
	// dropped here.
	if st.CompareAndSwap(uint32(statusRunning), uint32(statusWriting)) {
		r.res.Values[i] = v
		st.Store(uint32(StatusDone))
	} else {
		r.c.stuck.Add(-1) // abandoned while it ran
	}
	return 1, 1
}

// call runs fn(i). The recover is a safety net, not error handling: a panic
// escaping a helper would kill ants' worker and leave the batch waiting for
// an index that never settles.
func (r *run[T]) call(i int) (v T, ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	return r.fn(i), true
}

// settled counts n indices as settled, and ends the batch with the last.
func (r *run[T]) settled(n uint64) {
	if n > 0 && r.left.Add(-int64(n)) == 0 {
		close(r.done)
	}
}

// settle gives every unclaimed index the status s, on the caller's goroutine.
func (r *run[T]) settle(s Status) {
	r.stop.Store(uint32(s))
	settled, _ := r.drain(nil, nil)
	if s == StatusOverloaded {
		r.c.rejected.Add(settled)
	}
	r.settled(settled)
}

func (r *run[T]) countAbandoned() bool {
	r.c.abandoned.Add(1)
	r.c.stuck.Add(1)
	return true
}

// abandon gives up the calls that are not done: those not started become
// StatusCanceled and those running StatusAbandoned. It returns once every
// index has its final status; a call being written is waited for, which takes
// a few nanoseconds. The calls it cancels are settled by no goroutine, so
// done is never closed afterwards: nothing waits for it once Run has
// abandoned the batch.
func (r *run[T]) abandon() {
	r.stop.Store(uint32(StatusCanceled))
	for i := range r.res.state {
		st := &r.res.state[i]
		for {
			s := Status(st.Load())
			if s == statusPending && st.CompareAndSwap(uint32(s), uint32(StatusCanceled)) ||
				s == statusRunning && st.CompareAndSwap(uint32(s), uint32(StatusAbandoned)) && r.countAbandoned() ||
				s > statusWriting {
				break
			}
			// statusWriting, or a race with a helper: look again.
			runtime.Gosched()
		}
	}
}

// reserve counts one more busy worker unless the pool is at its size. ants
// hands work to a parked worker even when Tune has shrunk the pool below
// the workers alive, so the size is enforced here.
func (p *Pool) reserve() bool {
	for {
		n := p.counters.busy.Load()
		if n >= int64(p.workers.Cap()) {
			return false
		}
		if p.counters.busy.CompareAndSwap(n, n+1) {
			return true
		}
	}
}
