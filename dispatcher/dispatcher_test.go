package dispatcher_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/thrift/lib/go/thrift"
	"github.com/rs/zerolog"

	"github.com/thriftbatch/thriftbatch/dispatcher"
	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/internal/wire"
	"github.com/thriftbatch/thriftbatch/pool"
	"github.com/thriftbatch/thriftbatch/tests/testsvc"
)

// proto is one protocol a batch can arrive on. The dispatcher only looks at
// its kind.
type proto struct {
	name string
	new  func(thrift.TTransport) thrift.TProtocol
}

var protos = []proto{
	{"binary", func(t thrift.TTransport) thrift.TProtocol { return thrift.NewTBinaryProtocolConf(t, nil) }},
	{"compact", func(t thrift.TTransport) thrift.TProtocol { return thrift.NewTCompactProtocolConf(t, nil) }},
	{"json", func(t thrift.TTransport) thrift.TProtocol { return thrift.NewTJSONProtocol(t) }},
}

// batchProtocol is the Batch.Protocol of a batch arriving on p.
func (p proto) batchProtocol() thrift.TProtocol { return p.new(thrift.NewTMemoryBuffer()) }

// encode serializes s as a bare struct with the library's own protocol.
func (p proto) encode(t testing.TB, s thrift.TStruct) []byte {
	t.Helper()
	buf := thrift.NewTMemoryBuffer()
	pr := p.new(buf)
	if err := s.Write(context.Background(), pr); err != nil {
		t.Fatal(err)
	}
	if err := pr.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	return bytes.Clone(buf.Bytes())
}

// decode reads a bare struct with the library's own protocol.
func (p proto) decode(t testing.TB, b []byte, s thrift.TStruct) {
	t.Helper()
	buf := thrift.NewTMemoryBuffer()
	buf.Write(b)
	if err := s.Read(context.Background(), p.new(buf)); err != nil {
		t.Fatalf("%s decode of %q: %v", p.name, b, err)
	}
}

func (p proto) req(t testing.TB, method string, args thrift.TStruct, id int32) *batch.Request {
	return &batch.Request{Method: method, Arguments: p.encode(t, args), ID: &id}
}

var binary = protos[0]

type fixture struct {
	pool *pool.Pool
	d    *dispatcher.Dispatcher
	h    *handler
	fns  map[string]thrift.TProcessorFunction
	log  *syncBuffer
}

func setup(t *testing.T, poolOpts []pool.Option, opts ...dispatcher.Option) *fixture {
	t.Helper()
	p, err := pool.New(poolOpts...)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{pool: p, log: &syncBuffer{}}
	// Cleanups run last-in first-out: the handler's block channel is closed
	// (newHandler) before the pool is closed, so abandoned calls can return.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.Close(ctx); err != nil {
			t.Errorf("pool Close: %v", err)
		}
	})
	f.h = newHandler(t)
	f.fns = testsvc.NewTestProcessor(f.h).ProcessorMap()
	opts = append([]dispatcher.Option{dispatcher.WithLogger(zerolog.New(f.log))}, opts...)
	f.d, err = dispatcher.New(p, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) run(t *testing.T, ctx context.Context, pr proto, reqs []*batch.Request, sequential bool) []*batch.Response {
	t.Helper()
	out, err := f.d.Run(ctx, dispatcher.Batch{Requests: reqs, Functions: f.fns, Protocol: pr.batchProtocol(), Sequential: sequential})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if len(out) != len(reqs) {
		t.Fatalf("%d responses for %d requests", len(out), len(reqs))
	}
	return out
}

// wantError checks that resp carries a CallError of type code.
func wantError(t *testing.T, i int, resp *batch.Response, code int32) *batch.CallError {
	t.Helper()
	if resp.Error == nil {
		t.Fatalf("response %d: reply %q, want CallError type %d", i, resp.Reply, code)
	}
	if resp.Reply != nil {
		t.Errorf("response %d has both a reply and an error", i)
	}
	if resp.Error.Type != code {
		t.Fatalf("response %d: CallError type %d (%q), want %d", i, resp.Error.Type, resp.Error.Message, code)
	}
	return resp.Error
}

func wantID(t *testing.T, i int, resp *batch.Response, id int32) {
	t.Helper()
	if resp.ID == nil || *resp.ID != id {
		t.Errorf("response %d: ID %v, want %d", i, resp.ID, id)
	}
}

func TestRunAnswersEveryCallInOrder(t *testing.T) {
	for _, pr := range protos {
		t.Run("a mixed batch over "+pr.name+" answers in request order with ids echoed", func(t *testing.T) {
			f := setup(t, nil)
			const echoes = 40
			var reqs []*batch.Request
			for i := range echoes {
				reqs = append(reqs, pr.req(t, "echo", &testsvc.TestEchoArgs{Text: fmt.Sprint("text ", i)}, int32(1000+i)))
			}
			reqs = append(reqs,
				pr.req(t, "divide", &testsvc.TestDivideArgs{A: 7, B: 2}, 1),
				pr.req(t, "divide", &testsvc.TestDivideArgs{A: 7, B: 0}, 2),
				pr.req(t, "failing", &testsvc.TestFailingArgs{}, 3),
				pr.req(t, "note", &testsvc.TestNoteArgs{Text: "remember"}, 4),
				&batch.Request{Method: "echo", Arguments: pr.encode(t, &testsvc.TestEchoArgs{Text: "no id"})},
			)
			out := f.run(t, context.Background(), pr, reqs, false)
			for i := range echoes {
				wantID(t, i, out[i], int32(1000+i))
				var res testsvc.TestEchoResult
				pr.decode(t, out[i].Reply, &res)
				if want := fmt.Sprint("text ", i); res.GetSuccess() != want {
					t.Errorf("response %d: %q, want %q", i, res.GetSuccess(), want)
				}
			}
			rest := out[echoes:]
			var q testsvc.TestDivideResult
			pr.decode(t, rest[0].Reply, &q)
			if q.GetSuccess() != 3 {
				t.Errorf("7 / 2 = %v", q)
			}
			// A declared exception is a reply, not an error.
			var oops testsvc.TestDivideResult
			pr.decode(t, rest[1].Reply, &oops)
			if !oops.IsSetOops() || oops.GetOops().Why != "7 / 0" {
				t.Errorf("7 / 0 = %v, want the DivideByZero in the reply", oops)
			}
			e := wantError(t, echoes+2, rest[2], thrift.INTERNAL_ERROR)
			if e.Message != "Internal error processing failing: failing on purpose" {
				t.Errorf("failing: message %q, want the one the server sends unbatched", e.Message)
			}
			// A oneway method answers with an empty struct.
			if !bytes.Equal(rest[3].Reply, wire.EmptyStruct(mustKind(t, pr))) || rest[3].Error != nil {
				t.Errorf("note: reply %q error %v, want the empty struct", rest[3].Reply, rest[3].Error)
			}
			if rest[4].ID != nil {
				t.Errorf("a request without id got response id %d", *rest[4].ID)
			}
			for i, id := range []int32{1, 2, 3, 4} {
				wantID(t, echoes+i, rest[i], id)
			}
			if f.h.called("note") != 1 || f.h.called("echo") != echoes+1 {
				t.Errorf("handler calls: note %d, echo %d", f.h.called("note"), f.h.called("echo"))
			}
		})
	}
}

func mustKind(t *testing.T, pr proto) wire.Kind {
	k, err := wire.KindOf(pr.batchProtocol())
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestRunEmptyBatch(t *testing.T) {
	f := setup(t, nil)
	out, err := f.d.Run(context.Background(), dispatcher.Batch{Functions: f.fns, Protocol: binary.batchProtocol()})
	if err != nil || len(out) != 0 {
		t.Errorf("empty batch: %v, %v; want no responses and no error", out, err)
	}
}

func TestUnknownMethods(t *testing.T) {
	f := setup(t, nil)
	reqs := []*batch.Request{
		binary.req(t, "echo", &testsvc.TestEchoArgs{Text: "a"}, 0),
		binary.req(t, "nope", &testsvc.TestEchoArgs{Text: "a"}, 1),
		binary.req(t, "", &testsvc.TestEchoArgs{Text: "a"}, 2),
		nil,
		binary.req(t, "Test:echo", &testsvc.TestEchoArgs{Text: "a"}, 4),
		binary.req(t, "echo", &testsvc.TestEchoArgs{Text: "b"}, 5),
	}
	out := f.run(t, context.Background(), binary, reqs, false)
	for _, i := range []int{1, 2, 3, 4} {
		e := wantError(t, i, out[i], thrift.UNKNOWN_METHOD)
		if i == 1 && !strings.Contains(e.Message, `"nope"`) {
			t.Errorf("message %q does not name the method", e.Message)
		}
	}
	if out[3].ID != nil {
		t.Errorf("a nil request got an id")
	}
	for _, i := range []int{0, 5} {
		if out[i].Error != nil {
			t.Errorf("response %d: %v; the known methods run normally", i, out[i].Error)
		}
	}
	if n := f.h.called("echo"); n != 2 {
		t.Errorf("echo ran %d times, want 2", n)
	}
}

func TestNestedBatchIsRefused(t *testing.T) {
	for _, name := range []string{"executeBatch", "Test:executeBatch", "a:b:executeBatch", ":executeBatch"} {
		t.Run(fmt.Sprintf("a call of %q fails the batch with NESTED_BATCH and runs nothing", name), func(t *testing.T) {
			f := setup(t, nil)
			reqs := []*batch.Request{
				binary.req(t, "echo", &testsvc.TestEchoArgs{Text: "a"}, 0),
				binary.req(t, name, &batch.BatchServiceExecuteBatchArgs{Request: &batch.BatchRequest{}}, 1),
			}
			out, err := f.d.Run(context.Background(), dispatcher.Batch{Requests: reqs, Functions: f.fns, Protocol: binary.batchProtocol()})
			var be *batch.BatchError
			if !errors.As(err, &be) || be.Code != batch.BatchErrorCode_NESTED_BATCH {
				t.Fatalf("Run = %v, %v; want a BatchError NESTED_BATCH", out, err)
			}
			if out != nil {
				t.Errorf("responses along with the BatchError: %v", out)
			}
			if n := f.h.called("echo"); n != 0 {
				t.Errorf("echo ran %d times before the batch was refused", n)
			}
		})
	}
}

func TestHandlerPanic(t *testing.T) {
	f := setup(t, nil)
	reqs := []*batch.Request{
		binary.req(t, "echo", &testsvc.TestEchoArgs{Text: "before"}, 0),
		binary.req(t, "boom", &testsvc.TestBoomArgs{}, 1),
		binary.req(t, "echo", &testsvc.TestEchoArgs{Text: "after"}, 2),
	}
	out := f.run(t, context.Background(), binary, reqs, false)
	e := wantError(t, 1, out[1], thrift.INTERNAL_ERROR)
	wantID(t, 1, out[1], 1)
	if strings.Contains(e.Message, "secret") || strings.Contains(e.Message, "goroutine") {
		t.Errorf("the client sees the panic: %q", e.Message)
	}
	if !strings.Contains(e.Message, "boom") {
		t.Errorf("message %q does not name the method", e.Message)
	}
	for _, i := range []int{0, 2} {
		if out[i].Error != nil {
			t.Errorf("response %d: %v; the other calls complete", i, out[i].Error)
		}
	}
	log := f.log.String()
	for _, want := range []string{`"level":"error"`, `"method":"boom"`, `"index":1`, "boom: secret internal detail", `"stack":`, "Boom"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %s:\n%s", want, log)
		}
	}
}

// seen is a middleware-like processor function that records the batch call
// each invocation belongs to.
type seen struct {
	inner thrift.TProcessorFunction
	mu    sync.Mutex
	calls []dispatcher.Call
}

func (s *seen) Process(ctx context.Context, seq int32, in, out thrift.TProtocol) (bool, thrift.TException) {
	c, ok := dispatcher.CallFromContext(ctx)
	if ok {
		s.mu.Lock()
		s.calls = append(s.calls, c)
		s.mu.Unlock()
	}
	return s.inner.Process(ctx, seq, in, out)
}

func TestCallFromContext(t *testing.T) {
	if _, ok := dispatcher.CallFromContext(context.Background()); ok {
		t.Error("CallFromContext(Background) reported a call")
	}
	for _, sequential := range []bool{false, true} {
		t.Run(fmt.Sprintf("each call sees its own index (sequential %v)", sequential), func(t *testing.T) {
			f := setup(t, nil)
			const n = 64
			var reqs []*batch.Request
			for i := range n {
				reqs = append(reqs, binary.req(t, "whereAmI", &testsvc.TestWhereAmIArgs{}, int32(i)))
			}
			out := f.run(t, context.Background(), binary, reqs, sequential)
			for i := range n {
				var res testsvc.TestWhereAmIResult
				binary.decode(t, out[i].Reply, &res)
				if res.GetSuccess() != int32(i) {
					t.Errorf("call %d saw index %d", i, res.GetSuccess())
				}
			}
		})
	}
	t.Run("middleware sees the index and the method name as sent", func(t *testing.T) {
		f := setup(t, nil)
		s := &seen{inner: f.fns["echo"]}
		f.fns["Test:echo"] = s
		reqs := []*batch.Request{
			binary.req(t, "whereAmI", &testsvc.TestWhereAmIArgs{}, 0),
			binary.req(t, "Test:echo", &testsvc.TestEchoArgs{Text: "x"}, 1),
		}
		out := f.run(t, context.Background(), binary, reqs, false)
		if out[1].Error != nil {
			t.Fatalf("Test:echo: %v", out[1].Error)
		}
		if len(s.calls) != 1 || s.calls[0] != (dispatcher.Call{Index: 1, Method: "Test:echo"}) {
			t.Errorf("middleware saw %+v, want [{1 Test:echo}]", s.calls)
		}
	})
}

func TestSequentialRunsOneAtATimeInOrder(t *testing.T) {
	f := setup(t, nil)
	const n = 20
	var reqs []*batch.Request
	for i := range n {
		reqs = append(reqs, binary.req(t, "sleepy", &testsvc.TestSleepyArgs{Millis: 2, Tag: int64(i)}, int32(i)))
	}
	out := f.run(t, context.Background(), binary, reqs, true)
	for i := range n {
		var res testsvc.TestSleepyResult
		binary.decode(t, out[i].Reply, &res)
		if res.GetSuccess() != int64(i) {
			t.Errorf("call %d returned tag %d", i, res.GetSuccess())
		}
	}
	if m := f.h.maxRun.Load(); m != 1 {
		t.Errorf("%d calls ran at once in a sequential batch", m)
	}
	for i, tag := range f.h.order {
		if tag != int64(i) {
			t.Fatalf("calls started in order %v", f.h.order)
		}
	}
}

func TestMaxConcurrencyCapsOneBatch(t *testing.T) {
	f := setup(t, nil, dispatcher.WithMaxConcurrency(3))
	var reqs []*batch.Request
	for i := range 30 {
		reqs = append(reqs, binary.req(t, "sleepy", &testsvc.TestSleepyArgs{Millis: 2, Tag: int64(i)}, int32(i)))
	}
	out := f.run(t, context.Background(), binary, reqs, false)
	for i, r := range out {
		if r.Error != nil {
			t.Errorf("call %d: %v", i, r.Error)
		}
	}
	if m := f.h.maxRun.Load(); m > 3 {
		t.Errorf("%d calls ran at once with WithMaxConcurrency(3)", m)
	}
}

func TestDeadline(t *testing.T) {
	for _, pr := range protos {
		t.Run("over "+pr.name+" a call still running at the deadline gets CALL_DEADLINE_EXCEEDED and Run returns", func(t *testing.T) {
			f := setup(t, nil)
			reqs := []*batch.Request{
				pr.req(t, "echo", &testsvc.TestEchoArgs{Text: "quick"}, 10),
				pr.req(t, "sleepy", &testsvc.TestSleepyArgs{Millis: -1}, 11), // never returns
				pr.req(t, "echo", &testsvc.TestEchoArgs{Text: "quick too"}, 12),
			}
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			begin := time.Now()
			out := f.run(t, ctx, pr, reqs, false)
			if d := time.Since(begin); d > 5*time.Second {
				t.Errorf("Run returned %v after a 50 ms deadline", d)
			}
			e := wantError(t, 1, out[1], batch.CALL_DEADLINE_EXCEEDED)
			wantID(t, 1, out[1], 11)
			if !strings.Contains(e.Message, "deadline") {
				t.Errorf("message %q", e.Message)
			}
			for _, i := range []int{0, 2} {
				if out[i].Error != nil {
					t.Errorf("response %d: %v", i, out[i].Error)
				}
				wantID(t, i, out[i], int32(10+i))
			}
		})
	}
	t.Run("calls not started at the deadline get CALL_DEADLINE_EXCEEDED", func(t *testing.T) {
		f := setup(t, nil)
		var reqs []*batch.Request
		for i := range 5 {
			reqs = append(reqs, binary.req(t, "sleepy", &testsvc.TestSleepyArgs{Millis: -1, Tag: int64(i)}, int32(i)))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		out := f.run(t, ctx, binary, reqs, true)
		for i := range out {
			wantError(t, i, out[i], batch.CALL_DEADLINE_EXCEEDED)
			wantID(t, i, out[i], int32(i))
		}
		if n := f.h.called("sleepy"); n != 1 {
			t.Errorf("%d calls started in a sequential batch stuck on its first", n)
		}
	})
}

// TestDeadlineWithAHandlerThatHonoursIt: the documented contract is that a
// call not finished when the deadline passes answers CALL_DEADLINE_EXCEEDED,
// and handlers are told to honour ctx. A handler that does returns
// ctx.Err(); the generated code turns that into an INTERNAL_ERROR
// exception ("Internal error processing sleepy: context deadline
// exceeded"), and Run passes it on whenever the call returns before the
// coordinator marks it abandoned: always when the call runs on the caller's
// goroutine (CallerRuns on a saturated pool), and in most batches on a free
// pool, where the handler and the coordinator wake on the same ctx.Done.
func TestDeadlineWithAHandlerThatHonoursIt(t *testing.T) {
	sleepy := func(t *testing.T) []*batch.Request {
		return []*batch.Request{binary.req(t, "sleepy", &testsvc.TestSleepyArgs{Millis: 10_000, Tag: 1}, 1)}
	}
	t.Run("on a free pool every batch answers CALL_DEADLINE_EXCEEDED", func(t *testing.T) {
		f := setup(t, nil)
		got := map[int32]int{}
		for range 20 {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
			out := f.run(t, ctx, binary, sleepy(t), false)
			cancel()
			if out[0].Error == nil {
				t.Fatalf("reply %q from a call that sleeps 10 s", out[0].Reply)
			}
			got[out[0].Error.Type]++
		}
		if got[batch.CALL_DEADLINE_EXCEEDED] != 20 {
			t.Errorf("CallError types of 20 batches: %v; want all %d", got, batch.CALL_DEADLINE_EXCEEDED)
		}
	})
	t.Run("on a saturated pool under CallerRuns the call answers CALL_DEADLINE_EXCEEDED", func(t *testing.T) {
		f := setup(t, []pool.Option{pool.WithSize(1), pool.WithPolicy(pool.CallerRuns)})
		// Take the only worker, so the call runs on the caller's goroutine.
		started, release := make(chan struct{}), make(chan struct{})
		saturated := make(chan struct{})
		go func() {
			defer close(saturated)
			pool.Run(context.Background(), f.pool, 1, 1, func(int) int { close(started); <-release; return 0 })
		}()
		<-started
		defer func() { close(release); <-saturated }()
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		out := f.run(t, ctx, binary, sleepy(t), false)
		wantError(t, 0, out[0], batch.CALL_DEADLINE_EXCEEDED)
	})
}

func TestCanceled(t *testing.T) {
	t.Run("a batch whose context is already canceled runs nothing and answers CALL_CANCELED", func(t *testing.T) {
		f := setup(t, nil)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		reqs := []*batch.Request{
			binary.req(t, "echo", &testsvc.TestEchoArgs{Text: "a"}, 0),
			binary.req(t, "echo", &testsvc.TestEchoArgs{Text: "b"}, 1),
		}
		out := f.run(t, ctx, binary, reqs, false)
		for i := range out {
			wantError(t, i, out[i], batch.CALL_CANCELED)
			wantID(t, i, out[i], int32(i))
		}
		if n := f.h.called("echo"); n != 0 {
			t.Errorf("echo ran %d times", n)
		}
	})
	t.Run("a call running when the batch is canceled answers CALL_CANCELED", func(t *testing.T) {
		f := setup(t, nil)
		ctx, cancel := context.WithCancelCause(context.Background())
		defer cancel(nil)
		reqs := []*batch.Request{
			binary.req(t, "echo", &testsvc.TestEchoArgs{Text: "a"}, 0),
			binary.req(t, "sleepy", &testsvc.TestSleepyArgs{Millis: -1}, 1),
		}
		go func() {
			for f.h.called("sleepy") == 0 {
				time.Sleep(time.Millisecond)
			}
			cancel(errors.New("client went away"))
		}()
		// Sequential, so that the echo has returned when the sleepy call
		// starts: run concurrently, the sleepy call may start first and
		// the cancel catch the echo before it ran.
		out := f.run(t, ctx, binary, reqs, true)
		if out[0].Error != nil {
			t.Errorf("echo: %v", out[0].Error)
		}
		e := wantError(t, 1, out[1], batch.CALL_CANCELED)
		if !strings.Contains(e.Message, "client went away") {
			t.Errorf("message %q does not carry the cause", e.Message)
		}
	})
}

func TestOverloaded(t *testing.T) {
	f := setup(t, []pool.Option{pool.WithSize(1), pool.WithPolicy(pool.Reject)})
	started, release, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		pool.Run(context.Background(), f.pool, 1, 1, func(int) int { close(started); <-release; return 0 })
	}()
	<-started
	defer func() { close(release); <-done }()
	out := f.run(t, context.Background(), binary, []*batch.Request{binary.req(t, "echo", &testsvc.TestEchoArgs{Text: "a"}, 7)}, false)
	wantError(t, 0, out[0], batch.CALL_OVERLOADED)
	wantID(t, 0, out[0], 7)
}

func TestClosedPool(t *testing.T) {
	f := setup(t, nil)
	if err := f.pool.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	out, err := f.d.Run(context.Background(), dispatcher.Batch{
		Requests:  []*batch.Request{binary.req(t, "echo", &testsvc.TestEchoArgs{Text: "a"}, 0)},
		Functions: f.fns, Protocol: binary.batchProtocol(),
	})
	var be *batch.BatchError
	if !errors.As(err, &be) || be.Code != batch.BatchErrorCode_SHUTTING_DOWN {
		t.Fatalf("Run on a closed pool = %v, %v; want a BatchError SHUTTING_DOWN", out, err)
	}
	if f.h.called("echo") != 0 {
		t.Error("echo ran on a closed pool")
	}
}

func TestBadArguments(t *testing.T) {
	for _, pr := range protos {
		t.Run("over "+pr.name+" arguments that do not decode give PROTOCOL_ERROR", func(t *testing.T) {
			f := setup(t, nil)
			reqs := []*batch.Request{
				{Method: "echo", Arguments: []byte{0xff, 0xfe, 0xfd}},
				pr.req(t, "echo", &testsvc.TestEchoArgs{Text: "fine"}, 1),
			}
			out := f.run(t, context.Background(), pr, reqs, false)
			wantError(t, 0, out[0], thrift.PROTOCOL_ERROR)
			if out[1].Error != nil {
				t.Errorf("the next call: %v", out[1].Error)
			}
		})
	}
}

func TestProtocolKinds(t *testing.T) {
	mem := thrift.NewTMemoryBuffer
	for _, tc := range []struct {
		name  string
		proto thrift.TProtocol
		enc   proto
	}{
		{"a call forwarded by TMultiplexedProcessor over compact uses compact",
			thrift.NewStoredMessageProtocol(thrift.NewTCompactProtocolConf(mem(), nil), "Test:executeBatch", thrift.CALL, 1), protos[1]},
		{"THeader with compact inside uses compact",
			thrift.NewTHeaderProtocolConf(mem(), func() *thrift.TConfiguration {
				id := thrift.THeaderProtocolCompact
				return &thrift.TConfiguration{THeaderProtocolID: &id}
			}()), protos[1]},
		{"THeader by default uses binary", thrift.NewTHeaderProtocolConf(mem(), nil), binary},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := setup(t, nil)
			reqs := []*batch.Request{tc.enc.req(t, "echo", &testsvc.TestEchoArgs{Text: "kind"}, 0)}
			out, err := f.d.Run(context.Background(), dispatcher.Batch{Requests: reqs, Functions: f.fns, Protocol: tc.proto})
			if err != nil {
				t.Fatal(err)
			}
			var res testsvc.TestEchoResult
			tc.enc.decode(t, out[0].Reply, &res)
			if res.GetSuccess() != "kind" {
				t.Errorf("reply %q", out[0].Reply)
			}
		})
	}
	for _, tc := range []struct {
		name  string
		proto thrift.TProtocol
	}{
		{"nil", nil},
		{"TSimpleJSONProtocol", thrift.NewTSimpleJSONProtocol(mem())},
	} {
		t.Run("a batch over "+tc.name+" is refused with ErrUnknownProtocol", func(t *testing.T) {
			f := setup(t, nil)
			out, err := f.d.Run(context.Background(), dispatcher.Batch{
				Requests: []*batch.Request{binary.req(t, "echo", &testsvc.TestEchoArgs{Text: "a"}, 0)}, Functions: f.fns, Protocol: tc.proto,
			})
			if !errors.Is(err, wire.ErrUnknownProtocol) || out != nil {
				t.Errorf("Run = %v, %v; want ErrUnknownProtocol", out, err)
			}
			if f.h.called("echo") != 0 {
				t.Error("echo ran")
			}
		})
	}
}

func TestConcurrentBatches(t *testing.T) {
	f := setup(t, []pool.Option{pool.WithSize(8)})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			pr := protos[g%len(protos)]
			var reqs []*batch.Request
			for i := range 50 {
				reqs = append(reqs, pr.req(t, "echo", &testsvc.TestEchoArgs{Text: fmt.Sprint(g, "/", i)}, int32(i)))
			}
			out, err := f.d.Run(context.Background(), dispatcher.Batch{Requests: reqs, Functions: f.fns, Protocol: pr.batchProtocol()})
			if err != nil {
				t.Errorf("Run: %v", err)
				return
			}
			for i, r := range out {
				var res testsvc.TestEchoResult
				pr.decode(t, r.Reply, &res)
				if want := fmt.Sprint(g, "/", i); res.GetSuccess() != want || *r.ID != int32(i) {
					t.Errorf("batch %d call %d: %q id %d", g, i, res.GetSuccess(), *r.ID)
				}
			}
		})
	}
	wg.Wait()
}

func TestNew(t *testing.T) {
	if _, err := dispatcher.New(nil); err == nil {
		t.Error("New(nil) returned no error")
	}
	p, err := pool.New()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	if _, err := dispatcher.New(p, dispatcher.WithMaxConcurrency(-1)); err == nil {
		t.Error("New with a negative max concurrency returned no error")
	}
	for _, n := range []int{0, 1, dispatcher.DefaultMaxConcurrency} {
		if _, err := dispatcher.New(p, dispatcher.WithMaxConcurrency(n)); err != nil {
			t.Errorf("WithMaxConcurrency(%d): %v", n, err)
		}
	}
}

func TestIsBatchMethod(t *testing.T) {
	for _, tc := range []struct {
		name string
		want bool
	}{
		{"executeBatch", true},
		{"Catalog:executeBatch", true},
		{"a:b:executeBatch", true},
		{":executeBatch", true},
		{"executebatch", false},
		{"ExecuteBatch", false},
		{"executeBatch2", false},
		{"myexecuteBatch", false},
		{"Catalog.executeBatch", false},
		{"executeBatch:", false},
		{"Catalog:getProduct", false},
		{"", false},
	} {
		t.Run(fmt.Sprintf("%q is the batch method: %v", tc.name, tc.want), func(t *testing.T) {
			if got := dispatcher.IsBatchMethod(tc.name); got != tc.want {
				t.Errorf("IsBatchMethod(%q) = %v", tc.name, got)
			}
		})
	}
	if dispatcher.MethodName != "executeBatch" {
		t.Errorf("MethodName = %q", dispatcher.MethodName)
	}
}

// gated runs next only once gate is closed, whatever its context says,
// and closes done when next has returned.
type gated struct {
	gate, done chan struct{}
	next       thrift.TProcessorFunction
}

func newGated(next thrift.TProcessorFunction) gated {
	return gated{gate: make(chan struct{}), done: make(chan struct{}), next: next}
}

func (g gated) Process(ctx context.Context, seqID int32, in, out thrift.TProtocol) (bool, thrift.TException) {
	<-g.gate
	defer close(g.done)
	return g.next.Process(ctx, seqID, in, out)
}

// TestRunHeldDoesNotReuseAnAbandonedBatch: the memory of a batch with a
// call abandoned at the deadline is not handed to a later batch, since that
// call writes its outcome when it returns. Batch A's last call is abandoned;
// batch B, of as many calls, is held open by its first while its last has
// answered; then A's abandoned call returns. Had B been given A's memory,
// the late reply would be B's last. The two are tried a few times, since the
// pool a batch's memory goes back to may drop it (it does at random under
// the race detector).
func TestRunHeldDoesNotReuseAnAbandonedBatch(t *testing.T) {
	f := setup(t, nil)
	const n = 30
	for attempt := range 16 {
		late, first := newGated(f.fns["echo"]), newGated(f.fns["echo"])
		last := newGated(f.fns["echo"])
		close(last.gate) // it runs at once, and says when it has answered
		fns := maps.Clone(f.fns)
		fns["late"], fns["first"], fns["last"] = late, first, last
		echoes := func(prefix string) []*batch.Request {
			var rs []*batch.Request
			for i := range n {
				rs = append(rs, binary.req(t, "echo", &testsvc.TestEchoArgs{Text: fmt.Sprint(prefix, i)}, int32(i)))
			}
			return rs
		}
		a := echoes(fmt.Sprint("attempt ", attempt, " batch A call "))
		a[n-1].Method = "late"
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		got, release, err := f.d.RunHeld(ctx, dispatcher.Batch{Requests: a, Functions: fns, Protocol: binary.batchProtocol()})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		wantError(t, n-1, got[n-1], batch.CALL_DEADLINE_EXCEEDED)
		release()

		b := echoes(fmt.Sprint("attempt ", attempt, " batch B call "))
		want := f.run(t, context.Background(), binary, b, false)
		b[0].Method, b[n-1].Method = "first", "last"
		type result struct {
			got     []*batch.Response
			release func() bool
			err     error
		}
		done := make(chan result, 1)
		go func() {
			got, release, err := f.d.RunHeld(context.Background(), dispatcher.Batch{Requests: b, Functions: fns, Protocol: binary.batchProtocol()})
			done <- result{got, release, err}
		}()
		<-last.done // B's last call has answered
		close(late.gate)
		<-late.done // A's abandoned call has answered
		close(first.gate)
		r := <-done
		if r.err != nil {
			t.Fatal(r.err)
		}
		for i := range want {
			if !r.got[i].Equals(want[i]) {
				t.Errorf("attempt %d, call %d of the batch after an abandoned one: %v, want %v", attempt, i, r.got[i], want[i])
			}
		}
		r.release()
	}
}

// TestRunHeldAnswersAsRun: RunHeld's replies are Run's, for every protocol,
// until released, while other batches run; a call cut off by the deadline,
// whose handler is still running, answers CALL_DEADLINE_EXCEEDED, and
// release then reports that the batch's memory is not to be reused. (That
// its late reply is dropped: TestRunIntoWritesOnlyWhatIsDone, ./pool.)
func TestRunHeldAnswersAsRun(t *testing.T) {
	for _, pr := range protos {
		t.Run(pr.name, func(t *testing.T) {
			f := setup(t, nil)
			reqs := func() []*batch.Request {
				var rs []*batch.Request
				for i := range 20 {
					rs = append(rs, pr.req(t, "echo", &testsvc.TestEchoArgs{Text: fmt.Sprint("held ", i)}, int32(i)))
				}
				return append(rs, pr.req(t, "divide", &testsvc.TestDivideArgs{A: 1}, 20), pr.req(t, "nosuch", &testsvc.TestEchoArgs{}, 21))
			}
			want := f.run(t, context.Background(), pr, reqs(), false)
			b := dispatcher.Batch{Requests: reqs(), Functions: f.fns, Protocol: pr.batchProtocol()}
			got, release, err := f.d.RunHeld(context.Background(), b)
			if err != nil {
				t.Fatal(err)
			}
			// Another batch meanwhile takes Calls from the same pool:
			// had the first batch's gone back early, its replies would
			// now be this one's.
			var others []*batch.Request
			for i := range 40 {
				others = append(others, pr.req(t, "echo", &testsvc.TestEchoArgs{Text: fmt.Sprint("other reply ", i)}, int32(i)))
			}
			_, releaseOther, err := f.d.RunHeld(context.Background(), dispatcher.Batch{Requests: others, Functions: f.fns, Protocol: pr.batchProtocol()})
			if err != nil {
				t.Fatal(err)
			}
			defer releaseOther()
			for i := range want {
				if !got[i].Equals(want[i]) {
					t.Errorf("call %d: RunHeld %v, Run %v", i, got[i], want[i])
				}
			}
			release()

			// A call abandoned at the deadline keeps its Call; the
			// others are released.
			slow := append(reqs(), pr.req(t, "sleepy", &testsvc.TestSleepyArgs{Millis: -1, Tag: 9}, 22)) // returns at the test's end
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
			defer cancel()
			got, release, err = f.d.RunHeld(ctx, dispatcher.Batch{Requests: slow, Functions: f.fns, Protocol: pr.batchProtocol()})
			if err != nil {
				t.Fatal(err)
			}
			wantError(t, 22, got[22], batch.CALL_DEADLINE_EXCEEDED)
			for i := range want {
				if !got[i].Equals(want[i]) {
					t.Errorf("call %d beside an abandoned one: RunHeld %v, Run %v", i, got[i], want[i])
				}
			}
			if release() {
				t.Error("release of a batch with an abandoned call reported every call returned")
			}
		})
	}
}
