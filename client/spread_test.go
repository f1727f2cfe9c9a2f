package client

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
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
	// Helpers need a second processor; with one, spread runs everything
	// on the caller and there is no helper to panic.
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(max(2, runtime.GOMAXPROCS(0))))
	caller := goroutineID()
	const n = 400
	var onHelper atomic.Int32
	got := func() (v any) {
		defer func() { v = recover() }()
		spread(n, func(i int) {
			busy(30 * time.Microsecond)
			if goroutineID() != caller {
				onHelper.Add(1)
				panic(fmt.Errorf("call %d: %w", i, errBoom))
			}
		})
		return nil
	}()
	if onHelper.Load() == 0 {
		t.Fatal("no call ran on a helper")
	}
	p, ok := got.(*helperPanic)
	if !ok {
		t.Fatalf("spread panicked with %T %v, want a *helperPanic", got, got)
	}
	if !errors.Is(p, errBoom) {
		t.Errorf("the panic does not wrap the value fn panicked with: %v", p.value)
	}
	if !strings.Contains(p.Error(), "TestSpreadHandsAHelpersPanicToTheCaller") {
		t.Errorf("the panic does not carry the helper's stack:\n%s", p.Error())
	}
}

var errBoom = errors.New("boom")

// goroutineID returns the calling goroutine's number, as the first line of
// its stack trace gives it.
func goroutineID() string {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	id, _, _ := strings.Cut(strings.TrimPrefix(string(buf), "goroutine "), " ")
	return id
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
