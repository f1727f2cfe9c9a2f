package processor_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/thriftbatch/thriftbatch/dispatcher"
	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/internal/poll"
	"github.com/thriftbatch/thriftbatch/internal/wire"
	"github.com/thriftbatch/thriftbatch/pool"
	"github.com/thriftbatch/thriftbatch/processor"
	"github.com/thriftbatch/thriftbatch/tests/testsvc"
)

// statsBound is how long a test waits for something that should happen at
// once: generous for a loaded machine.
const statsBound = 10 * time.Second

// gated implements echo and a sleepy that reports its tag when it starts
// and then waits for a token on release (or its context).
type gated struct {
	testsvc.Test
	started chan int64
	release chan struct{}
}

func newGated() *gated {
	return &gated{started: make(chan int64, 64), release: make(chan struct{}, 64)}
}

func (*gated) Echo(_ context.Context, s string) (string, error) { return s, nil }

func (g *gated) Sleepy(ctx context.Context, _ int32, tag int64) (int64, error) {
	g.started <- tag
	select {
	case <-g.release:
		return tag, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// waitStarted returns the tag of the next sleepy call to start.
func (g *gated) waitStarted(t *testing.T) int64 {
	t.Helper()
	select {
	case tag := <-g.started:
		return tag
	case <-time.After(statsBound):
		t.Fatalf("no sleepy call started within %v", statsBound)
		return 0
	}
}

// startedSoon reports whether a sleepy call starts within a short while: a
// check that can miss a call starting late on a slow machine, never fail
// a right test.
func (g *gated) startedSoon() bool {
	select {
	case <-g.started:
		return true
	case <-time.After(20 * time.Millisecond):
		return false
	}
}

// open makes a processor and closes it when the test ends.
func open(t *testing.T, inner thrift.TProcessor, opts ...processor.Option) *processor.Processor {
	t.Helper()
	p, err := processor.New(inner, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), statsBound)
		defer cancel()
		p.Close(ctx)
	})
	return p
}

// arg encodes a call's arguments with the binary protocol sendBatch uses.
func arg(t testing.TB, method string, args thrift.TStruct) *batch.Request {
	t.Helper()
	b, err := wire.Encode(context.Background(), wire.Binary, nil, args)
	if err != nil {
		t.Fatal(err)
	}
	return &batch.Request{Method: method, Arguments: b}
}

// sendBatch passes req through p.Process in memory, as a server would, and
// returns the decoded result: a BatchResponse or a BatchError.
func sendBatch(t testing.TB, p *processor.Processor, req *batch.BatchRequest) *batch.BatchServiceExecuteBatchResult {
	t.Helper()
	ctx := context.Background()
	in, out := thrift.NewTMemoryBuffer(), thrift.NewTMemoryBuffer()
	w := thrift.NewTBinaryProtocolConf(in, nil)
	const seq = 7
	w.WriteMessageBegin(ctx, "executeBatch", thrift.CALL, seq)
	(&batch.BatchServiceExecuteBatchArgs{Request: req}).Write(ctx, w)
	w.WriteMessageEnd(ctx)
	if ok, err := p.Process(ctx, thrift.NewTBinaryProtocolConf(in, nil), thrift.NewTBinaryProtocolConf(out, nil)); !ok {
		t.Errorf("Process = %v, %v: the connection would be closed", ok, err)
		return nil
	}
	r := thrift.NewTBinaryProtocolConf(out, nil)
	if _, typ, gotSeq, err := r.ReadMessageBegin(ctx); err != nil || typ != thrift.REPLY || gotSeq != seq {
		t.Errorf("answer header: type %v, seqid %d, %v; want a REPLY with seqid %d", typ, gotSeq, err, seq)
		return nil
	}
	var res batch.BatchServiceExecuteBatchResult
	if err := res.Read(ctx, r); err != nil {
		t.Errorf("answer: %v", err)
		return nil
	}
	return &res
}

// sendAsync runs sendBatch on a goroutine of its own.
func sendAsync(t *testing.T, p *processor.Processor, req *batch.BatchRequest) <-chan *batch.BatchServiceExecuteBatchResult {
	done := make(chan *batch.BatchServiceExecuteBatchResult, 1)
	go func() { done <- sendBatch(t, p, req) }()
	return done
}

func await(t *testing.T, done <-chan *batch.BatchServiceExecuteBatchResult) *batch.BatchServiceExecuteBatchResult {
	t.Helper()
	select {
	case res := <-done:
		return res
	case <-time.After(statsBound):
		t.Fatalf("the batch was not answered within %v", statsBound)
		return nil
	}
}

// waitStats polls p.Stats until cond holds, failing the test with the last
// snapshot after statsBound.
func waitStats(t *testing.T, p *processor.Processor, what string, cond func(processor.Stats) bool) processor.Stats {
	t.Helper()
	var s processor.Stats
	if !poll.Until(statsBound, func() bool { s = p.Stats(); return cond(s) }) {
		t.Fatalf("%s: not after %v; Stats() = %+v", what, statsBound, s)
	}
	return s
}

func TestStatsRefusedCountsBatchErrors(t *testing.T) {
	p := open(t, testsvc.NewTestProcessor(newGated()), processor.WithMaxCalls(2))
	echo := func(s string) *batch.Request { return arg(t, "echo", &testsvc.TestEchoArgs{Text: s}) }
	var want uint64
	for _, tc := range []struct {
		name string
		req  *batch.BatchRequest
		code batch.BatchErrorCode // 0 (UNKNOWN): answered, not refused
	}{
		{"a batch within the limits is answered, not refused", &batch.BatchRequest{Requests: []*batch.Request{echo("a"), echo("b")}}, 0},
		{"a batch with an unknown method is answered call by call, not refused", &batch.BatchRequest{Requests: []*batch.Request{{Method: "nope"}}}, 0},
		{"an empty batch is answered", &batch.BatchRequest{}, 0},
		{"a batch over the call limit is refused", &batch.BatchRequest{Requests: []*batch.Request{echo("a"), echo("b"), echo("c")}}, batch.BatchErrorCode_TOO_MANY_CALLS},
		{"a nested batch is refused", &batch.BatchRequest{Requests: []*batch.Request{{Method: "executeBatch"}}}, batch.BatchErrorCode_NESTED_BATCH},
		{"a negative timeout is refused", &batch.BatchRequest{TimeoutMillis: thrift.Int32Ptr(-1)}, batch.BatchErrorCode_INVALID_REQUEST},
		{"compressed requests without a codec are refused", &batch.BatchRequest{CompressedRequests: []byte{1}}, batch.BatchErrorCode_INVALID_REQUEST},
		{"compressed requests that do not decompress are refused", &batch.BatchRequest{CompressedRequests: []byte("not zstd"), RequestCodec: batch.CodecPtr(batch.Codec_ZSTD)}, batch.BatchErrorCode_CORRUPT_PAYLOAD},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := sendBatch(t, p, tc.req)
			if res == nil {
				t.FailNow()
			}
			if tc.code == 0 {
				if res.Error != nil || res.Success == nil {
					t.Fatalf("refused with %v: %s", res.Error.GetCode(), res.Error.GetMessage())
				}
			} else {
				if res.Error == nil || res.Error.Code != tc.code {
					t.Fatalf("answer %+v, want BatchError %v", res, tc.code)
				}
				want++
			}
			if got := p.Stats().Refused; got != want {
				t.Errorf("Refused = %d, want %d", got, want)
			}
		})
	}
	if err := p.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	res := sendBatch(t, p, &batch.BatchRequest{Requests: []*batch.Request{echo("late")}})
	if res == nil || res.Error == nil || res.Error.Code != batch.BatchErrorCode_SHUTTING_DOWN {
		t.Fatalf("a batch after Close: %+v, want SHUTTING_DOWN", res)
	}
	if got := p.Stats().Refused; got != want+1 {
		t.Errorf("Refused = %d after a batch refused as SHUTTING_DOWN, want %d", got, want+1)
	}
}

func TestStatsShowABatchInFlight(t *testing.T) {
	h := newGated()
	p := open(t, testsvc.NewTestProcessor(h), processor.WithPoolSize(4))
	if s := p.Stats(); s.BatchesInFlight != 0 || s.Pool.Capacity != 4 || s.Pool.Batches != 0 {
		t.Fatalf("new processor: Stats() = %+v", s)
	}
	done := sendAsync(t, p, &batch.BatchRequest{Requests: []*batch.Request{
		arg(t, "echo", &testsvc.TestEchoArgs{Text: "quick"}),
		arg(t, "sleepy", &testsvc.TestSleepyArgs{Tag: 7}),
	}})
	if tag := h.waitStarted(t); tag != 7 {
		t.Fatalf("sleepy started with tag %d", tag)
	}
	s := waitStats(t, p, "the batch in flight", func(s processor.Stats) bool {
		return s.BatchesInFlight == 1 && s.Pool.BatchesInFlight == 1 && s.Pool.CallsInFlight == 1
	})
	if s.Refused != 0 || s.Pool.Batches != 1 {
		t.Errorf("with the batch in flight: Stats() = %+v; want Refused 0, Pool.Batches 1", s)
	}
	h.release <- struct{}{}
	res := await(t, done)
	if res == nil || res.Success == nil || len(res.Success.Responses) != 2 || res.Success.Responses[1].Error != nil {
		t.Fatalf("answer: %+v", res)
	}
	// The batch is out of the processor and the pool once it is answered.
	s = p.Stats()
	if s.BatchesInFlight != 0 || s.Pool.BatchesInFlight != 0 || s.Pool.Batches != 1 || s.Pool.Calls != 2 {
		t.Errorf("after the answer: Stats() = %+v; want no batch in flight, Pool.Batches 1, Pool.Calls 2", s)
	}
	waitStats(t, p, "no call in flight", func(s processor.Stats) bool { return s.Pool.CallsInFlight == 0 && s.Pool.Running == 0 })
}

func TestStatsMaxConcurrencyFollowsSetMaxConcurrency(t *testing.T) {
	p := open(t, testsvc.NewTestProcessor(newGated()))
	if got := p.Stats().MaxConcurrency; got != dispatcher.DefaultMaxConcurrency {
		t.Errorf("default MaxConcurrency = %d, want %d", got, dispatcher.DefaultMaxConcurrency)
	}
	p = open(t, testsvc.NewTestProcessor(newGated()), processor.WithMaxConcurrency(5))
	if got := p.Stats().MaxConcurrency; got != 5 {
		t.Errorf("MaxConcurrency = %d after WithMaxConcurrency(5)", got)
	}
	for _, n := range []int{8, 1, 0, 300} {
		if err := p.SetMaxConcurrency(n); err != nil {
			t.Fatalf("SetMaxConcurrency(%d) = %v", n, err)
		}
		if got := p.Stats().MaxConcurrency; got != n {
			t.Errorf("MaxConcurrency = %d after SetMaxConcurrency(%d)", got, n)
		}
	}
	if err := p.SetMaxConcurrency(-1); err == nil {
		t.Error("SetMaxConcurrency(-1) = nil, want an error")
	}
	if got := p.Stats().MaxConcurrency; got != 300 {
		t.Errorf("MaxConcurrency = %d after a refused SetMaxConcurrency(-1), want 300", got)
	}
}

func TestSetMaxConcurrencyAppliesToTheNextBatch(t *testing.T) {
	h := newGated()
	p := open(t, testsvc.NewTestProcessor(h), processor.WithPoolSize(8))
	if err := p.SetMaxConcurrency(1); err != nil {
		t.Fatal(err)
	}
	var reqs []*batch.Request
	for i := range 3 {
		reqs = append(reqs, arg(t, "sleepy", &testsvc.TestSleepyArgs{Tag: int64(i)}))
	}
	done := sendAsync(t, p, &batch.BatchRequest{Requests: reqs})
	// Capped at one, the calls start one at a time in request order.
	for i := range 3 {
		if tag := h.waitStarted(t); tag != int64(i) {
			t.Fatalf("call %d started as the %d-th", tag, i)
		}
		if h.startedSoon() {
			t.Fatalf("a second call started while call %d ran under a cap of 1", i)
		}
		if n := p.Stats().Pool.CallsInFlight; n != 1 {
			t.Errorf("CallsInFlight = %d under a cap of 1", n)
		}
		h.release <- struct{}{}
	}
	if res := await(t, done); res == nil || res.Success == nil || len(res.Success.Responses) != 3 {
		t.Fatalf("answer: %+v", res)
	}
}

func TestSetPoolSize(t *testing.T) {
	t.Run("resizes the pool and refuses a size below 1", func(t *testing.T) {
		p := open(t, testsvc.NewTestProcessor(newGated()), processor.WithPoolSize(4))
		for _, n := range []int{0, -3} {
			if err := p.SetPoolSize(n); err == nil {
				t.Errorf("SetPoolSize(%d) = nil, want an error", n)
			}
			if c := p.Stats().Pool.Capacity; c != 4 {
				t.Errorf("Capacity = %d after a refused SetPoolSize(%d), want 4", c, n)
			}
		}
		for _, n := range []int{64, 2, 16} {
			if err := p.SetPoolSize(n); err != nil {
				t.Fatalf("SetPoolSize(%d) = %v", n, err)
			}
			if c := p.Stats().Pool.Capacity; c != n {
				t.Errorf("Capacity = %d after SetPoolSize(%d)", c, n)
			}
		}
	})
	t.Run("refuses to resize a pre-allocated pool", func(t *testing.T) {
		p := open(t, testsvc.NewTestProcessor(newGated()), processor.WithPoolSize(4), processor.WithPoolPreAlloc(true))
		if err := p.SetPoolSize(8); err == nil {
			t.Error("SetPoolSize(8) on a pre-allocated pool = nil, want an error")
		}
		if c := p.Stats().Pool.Capacity; c != 4 {
			t.Errorf("Capacity = %d, want 4", c)
		}
	})
	t.Run("resizes a shared pool for every processor on it", func(t *testing.T) {
		shared, err := pool.New(pool.WithSize(4))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { shared.Close(context.Background()) })
		a := open(t, testsvc.NewTestProcessor(newGated()), processor.WithPool(shared))
		b := open(t, testsvc.NewTestProcessor(newGated()), processor.WithPool(shared))
		if err := a.SetPoolSize(12); err != nil {
			t.Fatal(err)
		}
		if shared.Cap() != 12 || b.Stats().Pool.Capacity != 12 {
			t.Errorf("shared pool Cap() = %d, other processor's Capacity = %d; want 12", shared.Cap(), b.Stats().Pool.Capacity)
		}
	})
}

// TestStatsWhileResizing is for -race: Stats, SetPoolSize and
// SetMaxConcurrency from one goroutine while batches run on others.
func TestStatsWhileResizing(t *testing.T) {
	p := open(t, testsvc.NewTestProcessor(newGated()), processor.WithPoolSize(4))
	var answered atomic.Int64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			res := sendBatch(t, p, &batch.BatchRequest{Requests: []*batch.Request{
				arg(t, "echo", &testsvc.TestEchoArgs{Text: "x"}), arg(t, "echo", &testsvc.TestEchoArgs{Text: "y"}),
			}})
			if res == nil || res.Success == nil {
				t.Errorf("batch %d: %+v", i, res)
				return
			}
			answered.Add(1)
		}
	}()
	for i := range 50 {
		if err := p.SetPoolSize(1 + i%7); err != nil {
			t.Fatal(err)
		}
		if err := p.SetMaxConcurrency(i % 3); err != nil {
			t.Fatal(err)
		}
		_ = p.Stats()
	}
	waitStats(t, p, "a few batches answered", func(processor.Stats) bool { return answered.Load() >= 5 })
	close(stop)
	<-done
	if s := p.Stats(); s.Pool.Batches < uint64(answered.Load()) || s.Pool.Calls < 2*uint64(answered.Load()) {
		t.Errorf("Stats() = %+v after %d batches of 2 calls", s, answered.Load())
	}
}

// stalledFlush is an output transport whose Flush waits for release: an
// answer the client is slow to take.
type stalledFlush struct {
	*thrift.TMemoryBuffer
	flushing chan struct{} // closed when Flush is first called
	release  chan struct{}
	once     sync.Once
}

func (s *stalledFlush) Flush(ctx context.Context) error {
	s.once.Do(func() { close(s.flushing) })
	<-s.release
	return s.TMemoryBuffer.Flush(ctx)
}

// TestABatchIsInFlightUntilItsAnswerIsFlushed: a batch counts in
// BatchesInFlight, and Close waits for it, until its answer has been
// written and flushed, not only until its calls have run.
func TestABatchIsInFlightUntilItsAnswerIsFlushed(t *testing.T) {
	for _, refused := range []bool{false, true} {
		name := "an answered batch"
		if refused {
			name = "a batch refused with a BatchError"
		}
		t.Run(name, func(t *testing.T) {
			p := open(t, testsvc.NewTestProcessor(echo{}), processor.WithMaxCalls(1))
			req := &batch.BatchRequest{Requests: []*batch.Request{arg(t, "echo", &testsvc.TestEchoArgs{Text: "x"})}}
			if refused {
				req.Requests = append(req.Requests, req.Requests[0]) // over WithMaxCalls
			}
			ctx := context.Background()
			in := thrift.NewTMemoryBuffer()
			w := thrift.NewTBinaryProtocolConf(in, nil)
			w.WriteMessageBegin(ctx, "executeBatch", thrift.CALL, 1)
			(&batch.BatchServiceExecuteBatchArgs{Request: req}).Write(ctx, w)
			w.WriteMessageEnd(ctx)
			out := &stalledFlush{TMemoryBuffer: thrift.NewTMemoryBuffer(), flushing: make(chan struct{}), release: make(chan struct{})}
			var releaseOnce sync.Once
			let := func() { releaseOnce.Do(func() { close(out.release) }) }
			t.Cleanup(let) // whatever fails below, Process is let go

			processed := make(chan bool, 1)
			go func() {
				ok, _ := p.Process(ctx, thrift.NewTBinaryProtocolConf(in, nil), thrift.NewTBinaryProtocolConf(out, nil))
				processed <- ok
			}()
			select {
			case <-out.flushing:
			case <-time.After(statsBound):
				t.Fatalf("no answer flushed within %v", statsBound)
			}
			if n := p.Stats().BatchesInFlight; n != 1 {
				t.Errorf("BatchesInFlight = %d while the answer is being flushed, want 1", n)
			}
			short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
			defer cancel()
			if err := p.Close(short); !errors.Is(err, context.DeadlineExceeded) || !strings.HasPrefix(err.Error(), "processor: ") {
				t.Errorf("Close past its context while the answer is being flushed = %v, want processor: context deadline exceeded", err)
			}
			closed := make(chan error, 1)
			go func() { closed <- p.Close(ctx) }()
			select {
			case err := <-closed:
				closed <- err // for the wait below
				t.Errorf("Close returned %v while the answer was being flushed", err)
			case ok := <-processed:
				t.Fatalf("Process returned %v with Flush blocked", ok)
			case <-time.After(30 * time.Millisecond):
			}
			let()
			select {
			case ok := <-processed:
				if !ok {
					t.Error("Process = false, want true")
				}
			case <-time.After(statsBound):
				t.Fatalf("Process did not return within %v of the flush", statsBound)
			}
			select {
			case err := <-closed:
				if err != nil {
					t.Errorf("Close: %v", err)
				}
			case <-time.After(statsBound):
				t.Fatalf("Close did not return within %v of the answer", statsBound)
			}
			if n := p.Stats().BatchesInFlight; n != 0 {
				t.Errorf("BatchesInFlight = %d once answered, want 0", n)
			}
			if out.Len() == 0 {
				t.Error("no answer written")
			}
		})
	}
}
