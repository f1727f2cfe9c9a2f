package pool_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/panjf2000/ants/v2"

	"github.com/thriftbatch/thriftbatch/pool"
)

// task is a trivial call: about 200 ns of CPU (see BenchmarkTask), no
// allocation, no blocking: what a cache lookup costs.
//
//go:noinline
func task(i int) uint64 {
	x := uint64(i) | 1
	for range 64 {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
	}
	return x
}

// BenchmarkTask measures one task alone, the unit of the batch benchmarks.
func BenchmarkTask(b *testing.B) {
	var sink uint64
	i := 0
	for b.Loop() {
		sink += task(i)
		i++
	}
	_ = sink
}

// BenchmarkBatchOfTrivialTasks runs a batch of n trivial tasks four ways:
//
//   - serial: a plain loop, the floor;
//   - pool.Run: helpers that claim indices, one hand-off per helper (and
//     with limit 1: a single helper);
//   - ants.Submit: one hand-off per task and a WaitGroup, the naive design;
//   - goroutines: one goroutine per task and a WaitGroup.
//
// The point: calls that cost well under a microsecond must not each pay a
// goroutine hand-off, so pool.Run should sit near serial and well below the
// last two.
func BenchmarkBatchOfTrivialTasks(b *testing.B) {
	ctx := context.Background()
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("n=%d", n), func(b *testing.B) {
			b.Run("serial", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					out := make([]uint64, n)
					for i := range n {
						out[i] = task(i)
					}
				}
			})
			b.Run("pool.Run", func(b *testing.B) {
				p, err := pool.New()
				if err != nil {
					b.Fatal(err)
				}
				defer p.Close(ctx)
				b.ReportAllocs()
				for b.Loop() {
					res, err := pool.Run(ctx, p, n, 0, task)
					if err != nil || res.Status(n-1) != pool.StatusDone {
						b.Fatalf("Run: %v", err)
					}
				}
			})
			// One helper: the per-call bookkeeping without two cores
			// contending for the batch's counters and neighbouring slots.
			b.Run("pool.Run/limit=1", func(b *testing.B) {
				p, err := pool.New()
				if err != nil {
					b.Fatal(err)
				}
				defer p.Close(ctx)
				b.ReportAllocs()
				for b.Loop() {
					res, err := pool.Run(ctx, p, n, 1, task)
					if err != nil || res.Status(n-1) != pool.StatusDone {
						b.Fatalf("Run: %v", err)
					}
				}
			})
			b.Run("ants.Submit", func(b *testing.B) {
				p, err := ants.NewPool(pool.DefaultSize)
				if err != nil {
					b.Fatal(err)
				}
				defer p.ReleaseTimeout(10 * time.Second)
				b.ReportAllocs()
				for b.Loop() {
					out := make([]uint64, n)
					var wg sync.WaitGroup
					wg.Add(n)
					for i := range n {
						if err := p.Submit(func() {
							out[i] = task(i)
							wg.Done()
						}); err != nil {
							b.Fatal(err)
						}
					}
					wg.Wait()
				}
			})
			b.Run("goroutines", func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					out := make([]uint64, n)
					var wg sync.WaitGroup
					for i := range n {
						wg.Go(func() { out[i] = task(i) })
					}
					wg.Wait()
				}
			})
		})
	}
}
