package client

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// Spreading the decoding of a batch's replies: the replies of one batch are
// independent byte slices, so a large batch decodes on every processor instead
// of one. The first spreadProbe replies are decoded on the caller to learn
// their cost; helpers are started only when what is left would keep the caller
// and each of them busy for spreadMinWork. That pays for the helper's late
// start: on the 2-vCPU machine of docs/BENCHMARKS.md a helper started while its
// caller stays busy ran 100 to 103 µs later after an idle pause and 74 to 75 µs
// later without one (medians; go test -bench HelperStart -benchtime 200x -count
// 3 ./client; why, in docs/BENCHMARKS.md under fanout_efficiency_256x5ms). The
// threshold also keeps batches of a few hundred quick replies on their caller:
// when the other processors are busy anyway, a helper adds only a hand-off (16
// clients sending batches of 100 getProduct calls, go run ./bench -run
// throughput, three interleaved pairs of runs: 6 to 14% more calls/s with no
// helpers than with spreadMinWork at 100 µs, which started one whenever load
// made the probe slow).
const (
	spreadProbe   = 8
	spreadChunk   = 8
	spreadMinWork = 250 * time.Microsecond
)

// spreadEach calls, for every i in [0, n), fn(i) with an fn of the calling
// goroutine's own and, when the work is long enough, on up to
// GOMAXPROCS-1 goroutines more: every goroutine that takes part calls
// worker once, runs the fn it returns for its indices, and then, unless fn
// panicked, the done it returns. It returns when every call has returned.
// A panic in fn reaches the caller once every goroutine has stopped: as it
// is when fn ran on the caller, and as a *helperPanic holding the value and
// the helper's stack otherwise.
//
// Cost: nothing over the loop for batches of fewer than 16 calls or of
// calls too quick to share; otherwise a goroutine per helper, a shared
// increment per 8 calls and one WaitGroup.
func spreadEach(n int, worker func() (fn func(i int), done func())) {
	fn, done := worker()
	probe := min(n, spreadProbe)
	start := time.Now()
	for i := range probe {
		fn(i)
	}
	helpers := 0
	if rest := n - probe; rest > 0 {
		helpers = helpersFor(rest, time.Since(start)/time.Duration(probe))
	}
	if helpers <= 0 {
		for i := probe; i < n; i++ {
			fn(i)
		}
		done()
		return
	}

	var next atomic.Int64
	next.Store(int64(probe))
	work := func(fn func(i int)) {
		for {
			lo := int(next.Add(spreadChunk)) - spreadChunk
			if lo >= n {
				return
			}
			for i := lo; i < min(lo+spreadChunk, n); i++ {
				fn(i)
			}
		}
	}
	var (
		wg        sync.WaitGroup
		recovered atomic.Pointer[helperPanic]
	)
	for range helpers {
		wg.Go(func() {
			// A helper's panic would otherwise end the process: hand
			// it to the caller, whose fn it was, with the stack that
			// says where it happened.
			defer func() {
				if v := recover(); v != nil {
					recovered.CompareAndSwap(nil, &helperPanic{value: v, stack: debug.Stack()})
					next.Store(int64(n)) // stop the others early
				}
			}()
			fn, done := worker()
			work(fn)
			done()
		})
	}
	func() {
		defer wg.Wait()
		work(fn)
	}()
	if p := recovered.Load(); p != nil {
		panic(p)
	}
	done()
}

// helpersFor returns how many helpers spreadEach starts for rest calls that
// take per each: as many as keep the caller and each helper busy for
// spreadMinWork, with a chunk each at least, and one fewer than GOMAXPROCS
// at most.
func helpersFor(rest int, per time.Duration) int {
	return max(0, min(runtime.GOMAXPROCS(0)-1, int(time.Duration(rest)*per/spreadMinWork)-1, rest/spreadChunk))
}

// helperPanic is what spreadEach panics with when fn panicked on a helper,
// and what an Auto's Call raises when a struct's code panicked on its
// batch's goroutine (caught).
type helperPanic struct {
	value any
	stack []byte
}

func (p *helperPanic) Error() string {
	return fmt.Sprintf("%v\n\ngoroutine that panicked:\n%s", p.value, p.stack)
}

// Unwrap returns the value fn panicked with, when it is an error.
func (p *helperPanic) Unwrap() error {
	err, _ := p.value.(error)
	return err
}
