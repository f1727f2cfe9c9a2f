package dispatcher_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/thriftbatch/thriftbatch/dispatcher"
	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/internal/checkinterval"
	"github.com/thriftbatch/thriftbatch/internal/cputime"
	"github.com/thriftbatch/thriftbatch/internal/wire"
	"github.com/thriftbatch/thriftbatch/pool"
	"github.com/thriftbatch/thriftbatch/tests/testsvc"
)

// echoes is the workload of this file's benchmarks: n echo calls, run either
// by the same processor function in a loop over an in-memory protocol
// (direct: what the calls cost with no dispatcher at all) or as one batch
// through Dispatcher.Run on a pool of a given size.
type echoes struct {
	b    *testing.B
	reqs []*batch.Request
	fns  map[string]thrift.TProcessorFunction
}

// newEchoes builds n echo calls, encoded with the binary protocol.
func newEchoes(b *testing.B, n int) *echoes {
	e := &echoes{b: b, reqs: make([]*batch.Request, n), fns: testsvc.NewTestProcessor(echoHandler{}).ProcessorMap()}
	for i := range e.reqs {
		e.reqs[i] = binary.req(b, "echo", &testsvc.TestEchoArgs{Text: fmt.Sprint("text ", i)}, int32(i))
	}
	return e
}

// direct runs the calls one after the other and keeps a copy of each reply,
// as the dispatcher does.
func (e *echoes) direct() {
	ctx, fn := context.Background(), e.fns["echo"]
	out := make([][]byte, len(e.reqs))
	for i, r := range e.reqs {
		c := wire.Get(wire.Binary)
		res, err := c.Run(ctx, fn, r.Method, r.Arguments)
		if err != nil || res.Type != thrift.REPLY {
			e.b.Fatalf("call %d: %v", i, err)
		}
		out[i] = append([]byte(nil), res.Body...)
		wire.Put(c)
	}
}

// dispatch returns a function that runs the calls as one batch on a pool of
// size workers, closed when the benchmark ends.
func (e *echoes) dispatch(size int) func() {
	ctx := context.Background()
	p, err := pool.New(pool.WithSize(size))
	if err != nil {
		e.b.Fatal(err)
	}
	e.b.Cleanup(func() { p.Close(ctx) })
	d, err := dispatcher.New(p)
	if err != nil {
		e.b.Fatal(err)
	}
	batch := dispatcher.Batch{Requests: e.reqs, Functions: e.fns, Protocol: binary.batchProtocol()}
	return func() {
		if out, err := d.Run(ctx, batch); err != nil || out[len(out)-1].Error != nil {
			e.b.Fatalf("Run: %v", err)
		}
	}
}

// BenchmarkBatchOfEchoes runs a batch of 1,000 trivial calls (echo) through
// Dispatcher.Run, against the direct loop, with
// thrift.ServerConnectivityCheckInterval at 0: at its default of 5 ms the
// generated code starts a goroutine and a ticker for every call, which
// dominates the cost of a trivial call and hides what is measured here. The
// last sub-benchmark keeps the library's check, for comparison.
func BenchmarkBatchOfEchoes(b *testing.B) {
	check := thrift.ServerConnectivityCheckInterval
	checkinterval.SetForTest(b, 0)
	e := newEchoes(b, 1000)
	b.Run("direct", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			e.direct()
		}
	})
	for _, tc := range []struct {
		size     int
		interval time.Duration
	}{{1, 0}, {2, 0}, {2, check}} {
		name := fmt.Sprintf("Dispatcher.Run/pool=%d", tc.size)
		if tc.interval != 0 {
			name += fmt.Sprintf("/connectivity-check=%v", tc.interval)
		}
		b.Run(name, func(b *testing.B) {
			checkinterval.SetForTest(b, tc.interval)
			run := e.dispatch(tc.size)
			b.ReportAllocs()
			for b.Loop() {
				run()
			}
		})
	}
}

// BenchmarkDispatcherAgainstDirect measures the two figures the dispatcher is
// held to, as ratios of interleaved rounds so that the machine's load moves
// both sides alike: the CPU time of a batch of 1,000 echo calls on a pool of
// one worker over that of the direct loop (process CPU time from getrusage,
// garbage collection included), and the wall time of the batch on a pool of
// two over the direct loop's. Each round runs each way 20 times, in an order
// shuffled per round, after a collection outside the timed window; the
// metrics are the medians of the rounds' ratios. direct/direct times the
// loop twice in each round: how far apart two identical ways come out,
// which is the noise the other two ratios carry.
//
//	go test -run XXX -bench DispatcherAgainstDirect -benchtime 40x ./dispatcher
func BenchmarkDispatcherAgainstDirect(b *testing.B) {
	if !cputime.Supported {
		b.Skip("the process's CPU time is not read on this system")
	}
	checkinterval.SetForTest(b, 0)
	const reps = 20
	e := newEchoes(b, 1000)
	ways := []func(){e.direct, e.direct, e.dispatch(1), e.dispatch(2)}
	order := []int{0, 1, 2, 3}
	rng := rand.New(rand.NewPCG(1, 2))
	var control, cpu1, wall2 []float64
	for b.Loop() {
		var wall, cpu [4]time.Duration
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, k := range order {
			runtime.GC()
			c0, w0 := cputime.Process(), time.Now()
			for range reps {
				ways[k]()
			}
			wall[k], cpu[k] = time.Since(w0), cputime.Process()-c0
		}
		control = append(control, float64(wall[1])/float64(wall[0]))
		cpu1 = append(cpu1, float64(cpu[2])/float64(cpu[0]))
		wall2 = append(wall2, float64(wall[3])/float64(wall[0]))
	}
	b.ReportMetric(median(control), "direct/direct")
	b.ReportMetric(median(cpu1), "cpu-pool1/direct")
	b.ReportMetric(median(wall2), "wall-pool2/direct")
}

// median returns the middle of xs, or the mean of the two middle values.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(xs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
