package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/thrift/lib/go/thrift"
	"github.com/thriftbatch/thriftbatch/dispatcher"
	"github.com/thriftbatch/thriftbatch/example_server/catalog"
	"github.com/thriftbatch/thriftbatch/example_server/store"
	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/internal/checkinterval"
	"github.com/thriftbatch/thriftbatch/internal/cputime"
	"github.com/thriftbatch/thriftbatch/internal/wire"
	"github.com/thriftbatch/thriftbatch/pool"
	"go.uber.org/goleak"
)

// Every scenario stops its servers and closes its connections. IgnoreCurrent
// leaves out the goroutines of the default pool ants starts when it is
// imported, which no test owns.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m, goleak.IgnoreCurrent()) }

// twiceKeys are JSON keys every run must have, under both settings of the
// connectivity check (the key, and the key with _check0): the issue's, and
// those docs/BENCHMARKS.md quotes beside them. onceKeys are those measured
// at one setting only: no server involved, or the default check only.
var (
	twiceKeys = []string{
		"batch_vs_sequential_100", "bulk_vs_sequential_100", "batch_vs_bulk_100", "batch_vs_parallel_conns_100",
		"autobatch_vs_sequential_100", "autobatch_maxwait0_vs_sequential_100",
		"fanout_efficiency_256x5ms", "batch_256_no_latency_ms", "bulk_fanout_efficiency_256x5ms",
		"pool_256x5ms_ms", "goroutines_256x5ms_ms",
		"fanout_efficiency_256x5ms_go_timers", "goroutines_256x5ms_go_timers_ms",
		"throughput_calls_per_s", "unbatched_calls_per_s", "throughput_vs_unbatched",
		"per_call_cost_10k_vs_100",
		"allocs_per_call_batch_100", "allocs_per_call_sequential_100", "allocs_per_call_bulk_100",
	}
	onceKeys = []string{
		"bulk_calls_per_s",
		"zstd_speed_vs_stdlib_zlib", "zstd_size_vs_stdlib_zlib", "s2_speed_vs_stdlib_zlib",
		"zstd_level3_speed_vs_stdlib_zlib", "zstd_level3_size_vs_stdlib_zlib",
		"zstd_better_speed_vs_stdlib_zlib", "zstd_better_size_vs_stdlib_zlib",
		"link_100mbit_batch_1000_none_ms", "link_100mbit_batch_1000_zstd_ms",
		"link_100mbit_batch_1000_s2_ms", "link_100mbit_batch_1000_tzlib_ms",
		"loopback_batch_1000_none_ms", "loopback_batch_1000_zstd_ms",
		"loopback_batch_1000_s2_ms", "loopback_batch_1000_tzlib_ms",
	}
)

// TestRunReportsEveryFigure runs every scenario at toy sizes, once, and
// checks the output, not the speed: the JSON has every key, under both
// connectivity check settings where the scenario involves a server, each
// with a positive finite value; the table names every key; the chart is an
// SVG.
//
// It is the binary's first test, and must stay so: it lowers
// thrift.ServerConnectivityCheckInterval to 0, and under -race that write
// is reported as racing with every watcher goroutine the generated code
// started before it, finished or not (nothing orders a finished goroutine's
// reads before a later write). With -count above 1 its second run is
// reported for that reason.
func TestRunReportsEveryFigure(t *testing.T) {
	ctx := context.Background()
	res, err := measureAll(ctx, &options{plan: testPlan()})
	if err != nil {
		t.Fatal(err)
	}
	b, err := res.JSON()
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]float64
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("the JSON does not decode: %v\n%s", err, b)
	}
	want := slices.Clone(onceKeys)
	for _, key := range twiceKeys {
		want = append(want, key, key+"_check0")
	}
	for _, k := range want {
		if _, ok := got[k]; !ok {
			t.Errorf("the JSON has no key %s", k)
		}
	}
	if len(got) != len(want) {
		t.Errorf("the JSON has %d keys, want %d: a key no list here names", len(got), len(want))
	}
	for k, v := range got {
		if v <= 0 || math.IsInf(v, 0) || math.IsNaN(v) {
			t.Errorf("%s = %v, want a positive finite number", k, v)
		}
	}

	var table bytes.Buffer
	if err := res.writeTable(&table); err != nil {
		t.Fatal(err)
	}
	for k := range got {
		if !strings.Contains(table.String(), k) {
			t.Errorf("the table does not show %s", k)
		}
	}

	chart := filepath.Join(t.TempDir(), "chart.svg")
	if err := writeChart(chart, "test", res.sweep); err != nil {
		t.Fatal(err)
	}
	svg, err := os.ReadFile(chart)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(svg, []byte("<svg")) {
		t.Errorf("the chart is not an SVG: %.100s", svg)
	}
}

// TestSlowConnPassesEveryByte sends data both ways through a slow
// connection and checks it arrives whole and is counted.
func TestSlowConnPassesEveryByte(t *testing.T) {
	a, b := net.Pipe()
	line := newSlowLine(1e9)
	slow := line.wrap(a)
	want := bytes.Repeat([]byte("thriftbatch "), 3*linkChunk/12)
	errs := make(chan error, 1)
	go func() {
		_, err := slow.Write(want)
		errs <- err
	}()
	got := make([]byte, len(want))
	if _, err := io.ReadFull(b, got); err != nil {
		t.Fatal(err)
	}
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	go func() {
		_, err := b.Write(want)
		errs <- err
	}()
	if _, err := io.ReadFull(slow, got); err != nil {
		t.Fatal(err)
	}
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Error("the bytes read differ from those written")
	}
	if n := line.bytes(); n != int64(2*len(want)) {
		t.Errorf("the line counted %d bytes, want %d", n, 2*len(want))
	}
	if err := errors.Join(slow.Close(), b.Close()); err != nil {
		t.Error(err)
	}
}

// TestMedianOfOddAndEvenCounts checks the median the ratios are built on.
func TestMedianOfOddAndEvenCounts(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{7}, 7},
		{nil, 0},
	} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// benchServer serves the catalog, with no simulated latency and the
// connectivity check at check, until b ends.
func benchServer(b *testing.B, check time.Duration) *server {
	b.Helper()
	checkinterval.SetForTest(b, check)
	s, err := startServer(0, framed)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { // before SetForTest's: the server stops first
		if err := s.stop(); err != nil {
			b.Error(err)
		}
	})
	return s
}

// BenchmarkHundredGetProduct times the ways of making 100 getProduct calls
// against one in-process server, for profiling with -cpuprofile and
// -benchmem; the ratios users read come from go run ./bench.
//
//	go test -run XXX -bench HundredGetProduct -benchmem ./bench
func BenchmarkHundredGetProduct(b *testing.B) {
	for _, check := range []time.Duration{thrift.ServerConnectivityCheckInterval, 0} {
		b.Run(fmt.Sprintf("check=%v", check), func(b *testing.B) {
			s := benchServer(b, check)
			ctx := context.Background()
			sh, err := s.shop(ctx)
			if err != nil {
				b.Fatal(err)
			}
			defer sh.Close()
			c, err := s.batchClient(ctx, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			a, err := s.auto(ctx)
			if err != nil {
				b.Fatal(err)
			}
			defer a.Close()
			hundred := ids(100, 1)
			for _, w := range []way{explicitBatch(c, hundred), automatic(a, hundred), bulk(sh, hundred), sequential(sh, hundred)} {
				b.Run(strings.ReplaceAll(w.name, " ", "_"), func(b *testing.B) {
					for b.Loop() {
						if err := w.run(ctx); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		})
	}
}

// BenchmarkManyClients is the batched side of the throughput scenario as a
// benchmark, for profiling and for comparing two builds: 16 goroutines, a
// connection each, send batches of 100 getProduct calls until b.N batches
// have been sent, with thrift.ServerConnectivityCheckInterval 0. Beside
// calls/s it reports the process's CPU time per call (user and system,
// getrusage), which moves less than calls/s with the load of a shared
// machine.
//
//	go test -run XXX -bench ManyClients -benchtime 10000x -benchmem ./bench
func BenchmarkManyClients(b *testing.B) {
	const clients, calls = 16, 100
	s := benchServer(b, 0)
	ctx := context.Background()
	open, cs, err := s.batchClients(ctx, clients)
	if err != nil {
		b.Fatal(err)
	}
	defer open.Close()
	var left atomic.Int64
	left.Store(int64(b.N))
	cpu := cputime.Process()
	b.ResetTimer()
	var wg sync.WaitGroup
	for i, c := range cs {
		ids := ids(calls, 1+i*calls)
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				if err := inBatch(ctx, c, ids); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	n := float64(b.N * calls)
	b.ReportMetric(n/b.Elapsed().Seconds(), "calls/s")
	if cputime.Supported {
		b.ReportMetric(float64(cputime.Process()-cpu)/n, "cpu-ns/call")
	}
}

// BenchmarkStagesOfABatch times, in memory and one at a time, the steps a
// batch of 100 getProduct calls goes through on the way out and back, beside
// the steps of getProducts for the same 100 ids, so that the cost of a
// batch over the bulk method can be read stage by stage. The batch is plain,
// as the bench's timing scenarios send it (no codec accepted). The server
// runs the calls on a pool of one worker, for their cost, and on the default
// pool, for the time they take; the bulk method runs on one goroutine. Each
// side's steps run the code its messages go through over the compact
// protocol on a framed transport: for the batch, package wire's; for the
// bulk method, the library's TCompactProtocol. The socket round trip, the
// framing and the goroutine hand-offs around it are not included.
//
//	go test -run XXX -bench StagesOfABatch -benchmem ./bench
func BenchmarkStagesOfABatch(b *testing.B) {
	checkinterval.SetForTest(b, 0)
	ctx := context.Background()
	const n = 100
	h := store.New(products, 0)
	hundred := ids(n, 1)
	must := func(err error) {
		if err != nil {
			b.Fatal(err)
		}
	}

	// The batch's request and response as they cross the wire.
	req := &batch.BatchRequest{Requests: make([]*batch.Request, n)}
	for i, id := range hundred {
		args, err := wire.Encode(ctx, wire.Compact, nil, &catalog.CatalogGetProductArgs{ID: id})
		must(err)
		req.Requests[i] = &batch.Request{Method: "getProduct", Arguments: args}
	}
	p, err := pool.New()
	must(err)
	defer p.Close(ctx)
	d, err := dispatcher.New(p)
	must(err)
	one, err := pool.New(pool.WithSize(1))
	must(err)
	defer one.Close(ctx)
	d1, err := dispatcher.New(one)
	must(err)
	run := dispatcher.Batch{
		Requests:  req.Requests,
		Functions: catalog.NewCatalogProcessor(h).ProcessorMap(),
		Protocol:  thrift.NewTCompactProtocolConf(thrift.NewTMemoryBuffer(), nil),
	}
	responses, err := d.Run(ctx, run)
	must(err)
	resp := &batch.BatchResponse{Responses: responses}
	argsFrame, err := wire.Encode(ctx, wire.Compact, nil, &batch.BatchServiceExecuteBatchArgs{Request: req})
	must(err)
	resultFrame, err := wire.Encode(ctx, wire.Compact, nil, &batch.BatchServiceExecuteBatchResult{Success: resp})
	must(err)

	// The bulk method's, through the library's compact protocol, which
	// carries it over the framed transport.
	lib := thrift.NewTMemoryBuffer()
	libProto := thrift.NewTCompactProtocolConf(lib, nil)
	libEncode := func(s thrift.TStruct) {
		lib.Reset()
		must(s.Write(ctx, libProto))
	}
	libDecode := func(in []byte, s thrift.TStruct) {
		lib.Reset()
		lib.Write(in)
		must(s.Read(ctx, libProto))
	}
	products, err := h.GetProducts(ctx, hundred)
	must(err)
	bulkArgs := &catalog.CatalogGetProductsArgs{Ids: hundred}
	libEncode(&catalog.CatalogGetProductsResult{Success: products})
	bulkResultBytes := bytes.Clone(lib.Bytes())

	// The batch's steps are the code the client and the processor run over
	// the compact protocol on a framed transport: package wire's compact
	// protocol, the hand-written envelope decoders, one wire.Call reused
	// for a batch's arguments and for its replies, the dispatcher's
	// RunHeld, which leaves each reply where its call wrote it, and, as a
	// server and a client reading batch after batch do, the lists of the
	// last batch's decode reused for the next (wire.Scratch).
	b.Run("batch/1-client-encodes-args-and-request", func(b *testing.B) {
		b.ReportAllocs()
		c := wire.Get(wire.Compact)
		var body []byte
		for b.Loop() {
			r := &batch.BatchRequest{Requests: make([]*batch.Request, n)}
			var args []byte
			for i, id := range hundred {
				start := len(args)
				args, err = c.Encode(ctx, args, &catalog.CatalogGetProductArgs{ID: id})
				r.Requests[i] = &batch.Request{Method: "getProduct", Arguments: args[start:]}
			}
			body, err = wire.Encode(ctx, wire.Compact, body[:0], &batch.BatchServiceExecuteBatchArgs{Request: r})
		}
	})
	b.Run("batch/2-server-decodes-request", func(b *testing.B) {
		b.ReportAllocs()
		var lists wire.Scratch
		for b.Loop() {
			lists.Reset()
			must(wire.DecodeBatchArgs(argsFrame, &batch.BatchServiceExecuteBatchArgs{}, nil, 0, &lists))
		}
	})
	b.Run("batch/3-server-runs-calls-on-one-worker", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, release, err := d1.RunHeld(ctx, run)
			must(err)
			release()
		}
	})
	b.Run("batch/3-server-runs-calls-on-the-default-pool", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, release, err := d.RunHeld(ctx, run)
			must(err)
			release()
		}
	})
	b.Run("batch/4-server-encodes-response", func(b *testing.B) {
		b.ReportAllocs()
		var out []byte
		for b.Loop() {
			out, err = wire.Encode(ctx, wire.Compact, out[:0], &batch.BatchServiceExecuteBatchResult{Success: resp})
			must(err)
		}
	})
	b.Run("batch/5-client-decodes-response", func(b *testing.B) {
		b.ReportAllocs()
		var lists wire.Scratch
		for b.Loop() {
			lists.Reset()
			must(wire.DecodeBatchResult(resultFrame, &batch.BatchServiceExecuteBatchResult{}, nil, &lists))
		}
	})
	b.Run("batch/6-client-decodes-replies", func(b *testing.B) {
		b.ReportAllocs()
		c := wire.Get(wire.Compact)
		for b.Loop() {
			for _, r := range responses {
				must(c.Decode(ctx, r.Reply, &catalog.CatalogGetProductResult{}))
			}
		}
	})
	b.Run("bulk/1-client-encodes-args", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			libEncode(bulkArgs)
		}
	})
	b.Run("bulk/2-server-runs-and-encodes", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ps, err := h.GetProducts(ctx, hundred)
			must(err)
			libEncode(&catalog.CatalogGetProductsResult{Success: ps})
		}
	})
	b.Run("bulk/3-client-decodes-result", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			libDecode(bulkResultBytes, &catalog.CatalogGetProductsResult{})
		}
	})
}
