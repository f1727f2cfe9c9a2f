package main

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/thriftbatch/thriftbatch/example_server/catalog"
	"github.com/thriftbatch/thriftbatch/example_server/store"
	"github.com/thriftbatch/thriftbatch/internal/checkinterval"
	"github.com/thriftbatch/thriftbatch/internal/latency"
	"github.com/thriftbatch/thriftbatch/processor"
)

// BenchmarkFanoutPhases splits the time of the fan-out scenario's batch (256
// getProduct calls, each first waiting 5 ms with latency.Wait, as the
// store's simulated latency does) into phases, from stamps its handler takes
// at the start and end of each wait and at each return. It reports the
// medians over b.N batches, in µs:
//
//   - start-us: from the client beginning the batch to the first wait
//     starting (the client builds, encodes and sends the calls; the server
//     reads and decodes them and starts the first);
//   - spread-us: from the first wait starting to the last;
//   - late-us: the earliest end of a wait, less 5 ms after the earliest
//     start (the stamp is taken when the waiting goroutine runs again);
//   - wakes-us: from the first wait ending to the last;
//   - tail-us: from the last call returning to the client holding every
//     product (the server encodes and writes the replies; the client reads
//     and decodes them);
//   - batch-us: the whole batch, as fanout_efficiency_256x5ms times it.
//
// It runs with thrift.ServerConnectivityCheckInterval 0, once with the
// processor's disconnect check at its default and once without
// (WithDisconnectCheck(0)); each batch follows the fan-out scenario's pause.
//
//	go test -run XXX -bench FanoutPhases -benchtime 300x ./bench
func BenchmarkFanoutPhases(b *testing.B) {
	checkinterval.SetForTest(b, 0)
	const calls, wait = 256, 5 * time.Millisecond
	for _, check := range []time.Duration{processor.DefaultDisconnectCheck, 0} {
		b.Run(fmt.Sprintf("disconnect-check=%v", check), func(b *testing.B) {
			h := &stampedCatalog{Handler: store.New(products, 0), latency: wait, epoch: time.Now()}
			s, err := serveCatalog(h, framed, processor.WithDisconnectCheck(check))
			if err != nil {
				b.Fatal(err)
			}
			defer func() {
				if err := s.stop(); err != nil {
					b.Error(err)
				}
			}()
			ctx := context.Background()
			c, err := s.batchClient(ctx, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			ids := ids(calls, 1)
			if err := inBatch(ctx, c, ids); err != nil { // warm-up, untimed
				b.Fatal(err)
			}
			phases := map[string][]int64{}
			add := func(name string, d int64) { phases[name] = append(phases[name], d) }
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				time.Sleep(fanoutSettle)
				h.reset()
				b.StartTimer()
				begin := h.now()
				if err := inBatch(ctx, c, ids); err != nil {
					b.Fatal(err)
				}
				end := h.now()
				add("start-us", h.firstStart.Load()-begin)
				add("spread-us", h.lastStart.Load()-h.firstStart.Load())
				add("late-us", h.firstWake.Load()-h.firstStart.Load()-int64(wait))
				add("wakes-us", h.lastWake.Load()-h.firstWake.Load())
				add("tail-us", end-h.lastReturn.Load())
				add("batch-us", end-begin)
			}
			b.StopTimer()
			for name, ds := range phases {
				b.ReportMetric(float64(median(ds))/1e3, name)
			}
		})
	}
}

// stampedCatalog serves the store's products, each getProduct first waiting
// latency with latency.Wait as store.Handler does, and records in
// nanoseconds since epoch when the first and the last wait started and ended
// and when the last call returned.
type stampedCatalog struct {
	*store.Handler // without latency of its own
	latency        time.Duration
	epoch          time.Time

	firstStart, lastStart, firstWake, lastWake, lastReturn atomic.Int64
}

// now returns the nanoseconds since h.epoch.
func (h *stampedCatalog) now() int64 { return int64(time.Since(h.epoch)) }

// reset forgets the stamps of the last batch.
func (h *stampedCatalog) reset() {
	for _, a := range []*atomic.Int64{&h.firstStart, &h.firstWake} {
		a.Store(1<<63 - 1)
	}
	for _, a := range []*atomic.Int64{&h.lastStart, &h.lastWake, &h.lastReturn} {
		a.Store(0)
	}
}

// GetProduct waits h.latency, or until ctx ends, then returns product id,
// stamping the wait's start and end and the return.
func (h *stampedCatalog) GetProduct(ctx context.Context, id int64) (*catalog.Product, error) {
	start := h.now()
	lower(&h.firstStart, start)
	raise(&h.lastStart, start)
	if err := latency.Wait(ctx, h.latency); err != nil {
		return nil, err
	}
	woke := h.now()
	lower(&h.firstWake, woke)
	raise(&h.lastWake, woke)
	p, err := h.Handler.GetProduct(ctx, id)
	raise(&h.lastReturn, h.now())
	return p, err
}

// lower sets a to v if v is below it.
func lower(a *atomic.Int64, v int64) {
	for old := a.Load(); v < old && !a.CompareAndSwap(old, v); old = a.Load() {
	}
}

// raise sets a to v if v is above it.
func raise(a *atomic.Int64, v int64) {
	for old := a.Load(); v > old && !a.CompareAndSwap(old, v); old = a.Load() {
	}
}
