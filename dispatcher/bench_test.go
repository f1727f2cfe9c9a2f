package dispatcher_test

import (
	"context"
	"fmt"
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
