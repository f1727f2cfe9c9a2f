package client

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/thriftbatch/thriftbatch/example_server/catalog"
	"github.com/thriftbatch/thriftbatch/example_server/store"
	"github.com/thriftbatch/thriftbatch/internal/wire"
)

// busy keeps the processor for d, long enough per call that spread starts
// helpers.
func busy(d time.Duration) {
	for start := time.Now(); time.Since(start) < d; {
	}
}

func TestSpreadCallsEveryIndexOnce(t *testing.T) {
	for _, tc := range []struct {
		name string
		n    int
		per  time.Duration
	}{
		{"no calls", 0, 0},
		{"fewer calls than the probe", spreadProbe - 1, 0},
		{"quick calls stay on the caller", 1000, 0},
		{"slow calls are shared", 200, 30 * time.Microsecond},
		{"a count that is not a multiple of the chunk", 8*spreadChunk + 3, 30 * time.Microsecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seen := make([]atomic.Int32, tc.n)
			spread(tc.n, func(i int) {
				busy(tc.per)
				seen[i].Add(1)
			})
			for i := range seen {
				if got := seen[i].Load(); got != 1 {
					t.Errorf("index %d called %d times, want once", i, got)
				}
			}
		})
	}
}

func TestSpreadHandsAHelpersPanicToTheCaller(t *testing.T) {
	const n = 200
	var started atomic.Int32
	got := func() (v any) {
		defer func() { v = recover() }()
		spread(n, func(i int) {
			started.Add(1)
			busy(30 * time.Microsecond)
			if i >= spreadProbe && i%spreadChunk == 0 {
				panic(fmt.Sprintf("call %d", i))
			}
		})
		return nil
	}()
	if s, ok := got.(string); !ok || len(s) < len("call ") || s[:5] != "call " {
		t.Fatalf("spread returned with %v, want the panic of a call", got)
	}
	if s := started.Load(); s >= n {
		t.Errorf("%d of %d calls started after a panic, want the rest given up", s, n)
	}
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
