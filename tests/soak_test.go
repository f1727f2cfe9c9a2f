package tests

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/thriftbatch/thriftbatch/compress"
	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/internal/poll"
	"github.com/thriftbatch/thriftbatch/internal/wire"
	"github.com/thriftbatch/thriftbatch/processor"
	"github.com/thriftbatch/thriftbatch/tests/testsvc"
)

// soakEnv names the environment variable that sets how long TestSoak runs,
// as a Go duration ("2m"). The default is defaultSoak.
const soakEnv = "THRIFTBATCH_SOAK"

const (
	defaultSoak = 5 * time.Second
	soakClients = 64
	soakMaxSize = 2000
)

// soakHandler is the test service without the recording of handler, whose
// slices would grow for the whole soak and hide whether the server's own
// heap comes back.
type soakHandler struct{ *handler }

func (soakHandler) Echo(_ context.Context, text string) (string, error) { return text, nil }

func (soakHandler) Boom(context.Context) error { panic("boom: secret internal detail") }

func (soakHandler) Sleepy(ctx context.Context, millis int32, tag int64) (int64, error) {
	timer := time.NewTimer(time.Duration(millis) * time.Millisecond)
	defer timer.Stop()
	select {
	case <-timer.C:
		return tag, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// soakKind is what one call of a soak batch does.
type soakKind uint8

const (
	soakEcho soakKind = iota
	soakDivide
	soakDivideByZero
	soakFailing
	soakBoom
	soakSleepy
)

// soakCall is one call and the answer it must get.
type soakCall struct {
	kind soakKind
	text string // echo
	a, b int32  // divide
	tag  int64  // sleepy
}

// latencyHist is a histogram of batch latencies in buckets 1% wide, from
// 1 µs to about 10 minutes: fixed size, so that a long soak does not grow
// the heap it measures.
type latencyHist [2048]uint64

const histBase = 1.01

func (h *latencyHist) add(d time.Duration) {
	us := max(float64(d)/float64(time.Microsecond), 1)
	i := min(int(math.Log(us)/math.Log(histBase)), len(h)-1)
	h[i]++
}

// quantile returns the upper bound of the bucket that holds quantile q.
func (h *latencyHist) quantile(q float64) time.Duration {
	var total uint64
	for _, n := range h {
		total += n
	}
	if total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(total)))
	var seen uint64
	for i, n := range h {
		seen += n
		if seen >= rank {
			return time.Duration(math.Pow(histBase, float64(i+1)) * float64(time.Microsecond))
		}
	}
	return 0
}

// soakStats is what one client counted; the clients' are summed at the end.
type soakStats struct {
	batches, calls      uint64
	compressedRequests  uint64
	compressedResponses uint64
	largest             int
	declared            uint64 // DivideByZero replies
	callErrors          map[int32]uint64
	batchErrors         uint64
	lat                 latencyHist
}

func (s *soakStats) merge(o *soakStats) {
	s.batches += o.batches
	s.calls += o.calls
	s.compressedRequests += o.compressedRequests
	s.compressedResponses += o.compressedResponses
	s.largest = max(s.largest, o.largest)
	s.declared += o.declared
	for k, v := range o.callErrors {
		s.callErrors[k] += v
	}
	s.batchErrors += o.batchErrors
	for i, n := range o.lat {
		s.lat[i] += n
	}
}

// soakDuration reads soakEnv.
func soakDuration(t *testing.T) time.Duration {
	v := os.Getenv(soakEnv)
	if v == "" {
		return defaultSoak
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("%s=%q is not a positive Go duration", soakEnv, v)
	}
	return d
}

// batchSize draws a batch size from 1 to soakMaxSize: most batches small,
// some medium, a few large, so that 64 clients keep a 2-core machine busy
// without the in-flight work (at most 64 batches, one per client) growing
// past a few tens of MiB.
func batchSize(r *rand.Rand) int {
	switch p := r.IntN(100); {
	case p < 85:
		return 1 + r.IntN(50)
	case p < 97:
		return 1 + r.IntN(500)
	default:
		return 1 + r.IntN(soakMaxSize)
	}
}

// TestSoak runs 64 clients against one server for THRIFTBATCH_SOAK (default
// 5 s), each sending mixed batches on its own connection and checking every
// reply against its own request; then it checks that goroutines and the
// heap come back to where they were.
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("soak test skipped under -short; set " + soakEnv + " (a Go duration) to choose its length")
	}
	verifyNoLeaks(t)
	duration := soakDuration(t)
	st := compactFramed

	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	baseHeap := ms.HeapInuse
	baseGoroutines := runtime.NumGoroutine()

	// Peak heap, sampled every 50 ms from before the server starts until
	// everything has closed.
	var peakHeap atomic.Uint64
	peakHeap.Store(baseHeap)
	stopSampler := make(chan struct{})
	samplerDone := make(chan struct{})
	go func() {
		defer close(samplerDone)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		var m runtime.MemStats
		for {
			select {
			case <-stopSampler:
				return
			case <-tick.C:
				runtime.ReadMemStats(&m)
				if m.HeapInuse > peakHeap.Load() {
					peakHeap.Store(m.HeapInuse)
				}
			}
		}
	}()
	defer func() {
		select {
		case <-stopSampler:
		default:
			close(stopSampler)
		}
		<-samplerDone
	}()

	// The server, set up by hand rather than with serve so that it stops
	// before the goroutine and heap checks.
	proc, err := processor.New(testsvc.NewTestProcessor(soakHandler{&handler{}}))
	if err != nil {
		t.Fatal(err)
	}
	sock, err := thrift.NewTServerSocket("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := sock.Listen(); err != nil {
		t.Fatal(err)
	}
	srv := thrift.NewTSimpleServer4(proc, sock, st.transport, st.protocol)
	served := make(chan error, 1)
	go func() { served <- srv.Serve() }()
	addr := sock.Addr().String()
	var stopOnce sync.Once
	stopServer := func() {
		stopOnce.Do(func() {
			srv.Stop()
			<-served
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := proc.Close(ctx); err != nil {
				t.Errorf("processor.Close: %v", err)
			}
		})
	}
	defer stopServer()

	codecs, err := compress.New()
	if err != nil {
		t.Fatal(err)
	}

	conns := make([]*conn, soakClients)
	for i := range conns {
		if conns[i], err = dialConn(addr, st); err != nil {
			for _, c := range conns[:i] {
				c.trans.Close()
			}
			t.Fatal(err)
		}
	}

	start := time.Now()
	end := start.Add(duration)
	stats := make([]*soakStats, soakClients)
	var wg sync.WaitGroup
	var failed atomic.Bool
	for i := range soakClients {
		stats[i] = &soakStats{callErrors: map[int32]uint64{}}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := soakClient(conns[i], codecs, i, end, stats[i], &failed); err != nil {
				failed.Store(true)
				t.Errorf("client %d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)

	// A batch leaves the processor's count once its answer is flushed, a
	// moment after its client may have read it; waitIdle fails the test
	// if one stays in flight.
	after := waitIdle(t, proc)
	if after.Refused != 0 {
		t.Errorf("the server refused %d batches", after.Refused)
	}

	for _, c := range conns {
		c.trans.Close()
	}
	conns = nil
	stopServer()
	codecs.Close()
	codecs = nil

	total := &soakStats{callErrors: map[int32]uint64{}}
	for _, s := range stats {
		total.merge(s)
	}
	stats = nil
	if after.Pool.Calls != total.calls {
		t.Errorf("the pool counted %d calls, the clients %d", after.Pool.Calls, total.calls)
	}

	close(stopSampler)
	<-samplerDone

	// Goroutines back to where they were, within a margin for the runtime's
	// own, polled for a bounded time.
	var goroutines int
	if !poll.Until(10*time.Second, func() bool { goroutines = runtime.NumGoroutine(); return goroutines <= baseGoroutines+2 }) {
		t.Errorf("%d goroutines after the soak, %d before", goroutines, baseGoroutines)
	}

	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	endHeap, endAlloc := ms.HeapInuse, ms.HeapAlloc
	if limit := 2*baseHeap + 16<<20; endHeap > limit {
		t.Errorf("heap in use %.1f MiB after the soak and GC, %.1f MiB before: more than 2x + 16 MiB", inMiB(endHeap), inMiB(baseHeap))
	}

	var errs []string
	for _, k := range sortedKeys(total.callErrors) {
		errs = append(errs, fmt.Sprintf("CallError %d: %d", k, total.callErrors[k]))
	}
	t.Logf("soak %v (ran %v), %d clients: %d calls in %d batches (%.0f calls/s, largest %d, %d compressed requests, %d compressed responses); "+
		"declared DivideByZero %d, %s, BatchError %d; batch latency p50 %v p99 %v; peak heap %.1f MiB (baseline %.1f, after GC %.1f in use, %.1f allocated); goroutines %d before, %d after",
		duration, elapsed.Round(time.Millisecond), soakClients, total.calls, total.batches, float64(total.calls)/elapsed.Seconds(), total.largest,
		total.compressedRequests, total.compressedResponses,
		total.declared, strings.Join(errs, ", "), total.batchErrors,
		total.lat.quantile(0.50).Round(10*time.Microsecond), total.lat.quantile(0.99).Round(10*time.Microsecond),
		inMiB(peakHeap.Load()), inMiB(baseHeap), inMiB(endHeap), inMiB(endAlloc), baseGoroutines, goroutines)
	if total.calls == 0 {
		t.Error("no call was served")
	}
}

func inMiB(b uint64) float64 { return float64(b) / (1 << 20) }

func sortedKeys(m map[int32]uint64) []int32 {
	keys := make([]int32, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i] < keys[j] })
	return keys
}

// soakClient sends batches on c until end, checking each answer, and
// returns the first wrong one. It stops early once another client failed.
func soakClient(c *conn, codecs *compress.Codecs, id int, end time.Time, s *soakStats, failed *atomic.Bool) error {
	r := rand.New(rand.NewPCG(uint64(id), 0x50a4))
	ctx := context.Background()
	var seq int64
	for b := 0; time.Now().Before(end) && !failed.Load(); b++ {
		n := batchSize(r)
		s.largest = max(s.largest, n)
		want := make([]soakCall, n)
		reqs := make([]*batch.Request, n)
		for i := range n {
			seq++
			var w soakCall
			var args thrift.TStruct
			var method string
			switch p := r.IntN(100); {
			case p < 55:
				w = soakCall{kind: soakEcho, text: fmt.Sprintf("client %d batch %d call %d: %x", id, b, i, r.Uint64())}
				method, args = "echo", &testsvc.TestEchoArgs{Text: w.text}
			case p < 75:
				w = soakCall{kind: soakDivide, a: r.Int32N(1_000_000) - 500_000, b: 1 + r.Int32N(1000)}
				if r.IntN(2) == 0 {
					w.b = -w.b
				}
				method, args = "divide", &testsvc.TestDivideArgs{A: w.a, B: w.b}
			case p < 82:
				w = soakCall{kind: soakDivideByZero, a: r.Int32N(1_000_000)}
				method, args = "divide", &testsvc.TestDivideArgs{A: w.a, B: 0}
			case p < 88:
				w = soakCall{kind: soakFailing}
				method, args = "failing", &testsvc.TestFailingArgs{}
			case p < 94:
				w = soakCall{kind: soakBoom}
				method, args = "boom", &testsvc.TestBoomArgs{}
			default:
				w = soakCall{kind: soakSleepy, tag: int64(id)<<40 | seq}
				method, args = "sleepy", &testsvc.TestSleepyArgs{Millis: 1 + r.Int32N(5), Tag: w.tag}
			}
			enc, err := wire.Encode(ctx, c.st.kind, nil, args)
			if err != nil {
				return fmt.Errorf("encode %s: %w", method, err)
			}
			want[i] = w
			reqs[i] = &batch.Request{Method: method, Arguments: enc, ID: thrift.Int32Ptr(int32(i))}
		}

		req := &batch.BatchRequest{Requests: reqs}
		var codec batch.Codec
		if p := r.IntN(100); p < 25 {
			codec = batch.Codec_ZSTD
			if p%2 == 1 {
				codec = batch.Codec_S2
			}
			raw, err := wire.Encode(ctx, c.st.kind, nil, &batch.BatchRequest{Requests: reqs})
			if err != nil {
				return fmt.Errorf("encode batch: %w", err)
			}
			packed, err := codecs.Encode(codec, nil, raw)
			if err != nil {
				return fmt.Errorf("compress with %v: %w", codec, err)
			}
			req = &batch.BatchRequest{RequestCodec: batch.CodecPtr(codec), CompressedRequests: packed, AcceptCodecs: []batch.Codec{codec}}
			s.compressedRequests++
		}

		callCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
		t0 := time.Now()
		resp, err := c.batch.ExecuteBatch(callCtx, req)
		lat := time.Since(t0)
		cancel()
		if err != nil {
			var be *batch.BatchError
			if errors.As(err, &be) {
				s.batchErrors++
				return fmt.Errorf("batch %d (%d calls, codec %v) refused: %v %s", b, n, codec, be.Code, be.Message)
			}
			return fmt.Errorf("batch %d (%d calls, codec %v): %w", b, n, codec, err)
		}
		s.lat.add(lat)
		s.batches++

		out := resp.Responses
		if resp.IsSetCodec() && resp.GetCodec() != batch.Codec_NONE {
			if resp.GetCodec() != codec {
				return fmt.Errorf("batch %d: answer compressed with %v, only %v accepted", b, resp.GetCodec(), codec)
			}
			if len(resp.Responses) != 0 {
				return fmt.Errorf("batch %d: compressed answer also carries %d plain responses", b, len(resp.Responses))
			}
			raw, err := codecs.Decode(codec, nil, resp.CompressedResponses)
			if err != nil {
				return fmt.Errorf("batch %d: decompress %v responses: %w", b, codec, err)
			}
			var inner batch.BatchResponse
			if err := wire.Decode(ctx, c.st.kind, raw, &inner); err != nil {
				return fmt.Errorf("batch %d: decompressed responses do not decode: %w", b, err)
			}
			out = inner.Responses
			s.compressedResponses++
		}
		if len(out) != n {
			return fmt.Errorf("batch %d: %d responses to %d requests", b, len(out), n)
		}
		for i, got := range out {
			if err := checkSoakReply(ctx, c.st.kind, i, got, want[i], s); err != nil {
				return fmt.Errorf("batch %d (%d calls, codec %v) call %d: %w", b, n, codec, i, err)
			}
		}
		s.calls += uint64(n)
	}
	return nil
}

// checkSoakReply checks response i against the call it answers.
func checkSoakReply(ctx context.Context, kind wire.Kind, i int, got *batch.Response, w soakCall, s *soakStats) error {
	if got == nil {
		return errors.New("nil response")
	}
	if !got.IsSetID() || got.GetID() != int32(i) {
		return fmt.Errorf("response carries id %v (set %v), want %d: lost, duplicated or misordered", got.GetID(), got.IsSetID(), i)
	}
	if got.Error != nil {
		s.callErrors[got.Error.Type]++
	}
	wantError := func(contains string) error {
		if got.Error == nil {
			return fmt.Errorf("want CallError INTERNAL_ERROR, got a reply of %d bytes", len(got.Reply))
		}
		if got.Reply != nil {
			return errors.New("response has both a reply and an error")
		}
		if got.Error.Type != thrift.INTERNAL_ERROR || !strings.Contains(got.Error.Message, contains) {
			return fmt.Errorf("want CallError %d containing %q, got %d: %s", thrift.INTERNAL_ERROR, contains, got.Error.Type, got.Error.Message)
		}
		return nil
	}
	decode := func(res thrift.TStruct) error {
		if got.Error != nil {
			return fmt.Errorf("unexpected CallError %d: %s", got.Error.Type, got.Error.Message)
		}
		if got.Reply == nil {
			return errors.New("response has neither reply nor error")
		}
		return wire.Decode(ctx, kind, got.Reply, res)
	}
	switch w.kind {
	case soakEcho:
		var res testsvc.TestEchoResult
		if err := decode(&res); err != nil {
			return fmt.Errorf("echo: %w", err)
		}
		if res.GetSuccess() != w.text {
			return fmt.Errorf("echo answered %q, want %q", res.GetSuccess(), w.text)
		}
	case soakDivide, soakDivideByZero:
		var res testsvc.TestDivideResult
		if err := decode(&res); err != nil {
			return fmt.Errorf("divide: %w", err)
		}
		if w.kind == soakDivide {
			if res.Oops != nil || !res.IsSetSuccess() || res.GetSuccess() != w.a/w.b {
				return fmt.Errorf("divide(%d, %d) answered %v / %v, want %d", w.a, w.b, res.Success, res.Oops, w.a/w.b)
			}
		} else {
			if res.IsSetSuccess() || res.Oops == nil || res.Oops.Why != fmt.Sprintf("%d / 0", w.a) {
				return fmt.Errorf("divide(%d, 0) answered %v / %v, want DivideByZero", w.a, res.Success, res.Oops)
			}
			s.declared++
		}
	case soakFailing:
		return wantError("failing on purpose")
	case soakBoom:
		if err := wantError("internal error processing boom"); err != nil {
			return err
		}
		if strings.Contains(got.Error.Message, "secret") {
			return fmt.Errorf("boom's CallError leaks the panic value: %s", got.Error.Message)
		}
	case soakSleepy:
		var res testsvc.TestSleepyResult
		if err := decode(&res); err != nil {
			return fmt.Errorf("sleepy: %w", err)
		}
		if res.GetSuccess() != w.tag {
			return fmt.Errorf("sleepy answered tag %d, want %d", res.GetSuccess(), w.tag)
		}
	}
	return nil
}
