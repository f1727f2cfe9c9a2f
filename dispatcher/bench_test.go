package dispatcher_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/thriftbatch/thriftbatch/dispatcher"
	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/internal/wire"
	"github.com/thriftbatch/thriftbatch/pool"
	"github.com/thriftbatch/thriftbatch/tests/testsvc"
)

// BenchmarkBatchOfEchoes runs a batch of 1,000 trivial calls (echo) through
// Dispatcher.Run, against the "direct" baseline: the same processor function
// run in a loop over an in-memory protocol (wire.Get(kind).Run), which is
// what the calls would cost with no dispatcher at all.
func BenchmarkBatchOfEchoes(b *testing.B) {
	// With its default of 5 ms, thrift.ServerConnectivityCheckInterval makes
	// the generated code start a goroutine and a ticker for every call, which
	// dominates the cost of a trivial call and hides what is measured here.
	// The last sub-benchmark keeps the default, for comparison.
	saved := thrift.ServerConnectivityCheckInterval
	setConnectivityCheck(0)
	defer setConnectivityCheck(saved)

	ctx := context.Background()
	const n = 1000
	fns := testsvc.NewTestProcessor(echoHandler{}).ProcessorMap()
	reqs := make([]*batch.Request, n)
	for i := range reqs {
		reqs[i] = binary.req(b, "echo", &testsvc.TestEchoArgs{Text: fmt.Sprint("text ", i)}, int32(i))
	}

	b.Run("direct", func(b *testing.B) {
		b.ReportAllocs()
		fn := fns["echo"]
		for b.Loop() {
			out := make([][]byte, n)
			for i, r := range reqs {
				c := wire.Get(wire.Binary)
				res, err := c.Run(ctx, fn, r.Method, r.Arguments)
				if err != nil || res.Type != thrift.REPLY {
					b.Fatalf("call %d: %v", i, err)
				}
				out[i] = append([]byte(nil), res.Body...)
				wire.Put(c)
			}
		}
	})
	for _, tc := range []struct {
		size     int
		interval time.Duration
	}{{1, 0}, {2, 0}, {2, saved}} {
		name := fmt.Sprintf("Dispatcher.Run/pool=%d", tc.size)
		if tc.interval != 0 {
			name += fmt.Sprintf("/connectivity-check=%v", tc.interval)
		}
		size := tc.size
		b.Run(name, func(b *testing.B) {
			setConnectivityCheck(tc.interval)
			p, err := pool.New(pool.WithSize(size))
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close(ctx)
			d, err := dispatcher.New(p)
			if err != nil {
				b.Fatal(err)
			}
			batch := dispatcher.Batch{Requests: reqs, Functions: fns, Protocol: binary.batchProtocol()}
			b.ReportAllocs()
			for b.Loop() {
				out, err := d.Run(ctx, batch)
				if err != nil || out[n-1].Error != nil {
					b.Fatalf("Run: %v", err)
				}
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
	saved := thrift.ServerConnectivityCheckInterval
	setConnectivityCheck(0)
	defer setConnectivityCheck(saved)

	ctx := context.Background()
	const n, reps = 1000, 20
	fns := testsvc.NewTestProcessor(echoHandler{}).ProcessorMap()
	reqs := make([]*batch.Request, n)
	for i := range reqs {
		reqs[i] = binary.req(b, "echo", &testsvc.TestEchoArgs{Text: fmt.Sprint("text ", i)}, int32(i))
	}
	direct := func() {
		fn := fns["echo"]
		out := make([][]byte, n)
		for i, r := range reqs {
			c := wire.Get(wire.Binary)
			res, err := c.Run(ctx, fn, r.Method, r.Arguments)
			if err != nil || res.Type != thrift.REPLY {
				b.Fatalf("call %d: %v", i, err)
			}
			out[i] = append([]byte(nil), res.Body...)
			wire.Put(c)
		}
	}
	dispatch := func(size int) func() {
		p, err := pool.New(pool.WithSize(size))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { p.Close(ctx) })
		d, err := dispatcher.New(p)
		if err != nil {
			b.Fatal(err)
		}
		batch := dispatcher.Batch{Requests: reqs, Functions: fns, Protocol: binary.batchProtocol()}
		return func() {
			if out, err := d.Run(ctx, batch); err != nil || out[n-1].Error != nil {
				b.Fatalf("Run: %v", err)
			}
		}
	}
	ways := []func(){direct, direct, dispatch(1), dispatch(2)}
	order := []int{0, 1, 2, 3}
	rng := rand.New(rand.NewPCG(1, 2))
	var control, cpu1, wall2 []float64
	for b.Loop() {
		var wall, cpu [4]time.Duration
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, k := range order {
			runtime.GC()
			c0, w0 := cpuTime(b), time.Now()
			for range reps {
				ways[k]()
			}
			wall[k], cpu[k] = time.Since(w0), cpuTime(b)-c0
		}
		control = append(control, float64(wall[1])/float64(wall[0]))
		cpu1 = append(cpu1, float64(cpu[2])/float64(cpu[0]))
		wall2 = append(wall2, float64(wall[3])/float64(wall[0]))
	}
	b.ReportMetric(median(control), "direct/direct")
	b.ReportMetric(median(cpu1), "cpu-pool1/direct")
	b.ReportMetric(median(wall2), "wall-pool2/direct")
}

// cpuTime returns the CPU time the process has used, user and system.
func cpuTime(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// setConnectivityCheck sets thrift.ServerConnectivityCheckInterval. The
// generated code reads the variable a second time in the goroutine it starts,
// and time.NewTicker panics on 0: lowering it to 0 while such goroutines have
// yet to run would crash them, so it lets them run first.
func setConnectivityCheck(d time.Duration) {
	if d == 0 && thrift.ServerConnectivityCheckInterval != 0 {
		time.Sleep(20 * time.Millisecond)
	}
	thrift.ServerConnectivityCheckInterval = d
}
