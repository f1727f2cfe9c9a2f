package processor_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/apache/thrift/lib/go/thrift"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/internal/wire"
	"github.com/thriftbatch/thriftbatch/pool"
	"github.com/thriftbatch/thriftbatch/processor"
	"github.com/thriftbatch/thriftbatch/tests/testsvc"
)

// TestMain checks for leaked goroutines; IgnoreCurrent leaves out the two
// that ants starts at import for its default pool, which is never used here.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m, goleak.IgnoreCurrent()) }

type echo struct{ testsvc.Test }

func (echo) Echo(_ context.Context, s string) (string, error) { return s, nil }
func (echo) Note(context.Context, string) error               { return nil }

func newProcessor(t testing.TB, inner thrift.TProcessor, opts ...processor.Option) *processor.Processor {
	t.Helper()
	p, err := processor.New(inner, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close(context.Background()) })
	return p
}

// roundTrip sends one message through p in memory and returns what p wrote.
func roundTrip(t testing.TB, p thrift.TProcessor, write func(thrift.TProtocol)) (*thrift.TMemoryBuffer, bool, thrift.TException) {
	t.Helper()
	in, out := thrift.NewTMemoryBuffer(), thrift.NewTMemoryBuffer()
	write(thrift.NewTBinaryProtocolConf(in, nil))
	ok, err := p.Process(context.Background(), thrift.NewTBinaryProtocolConf(in, nil), thrift.NewTBinaryProtocolConf(out, nil))
	return out, ok, err
}

// TestNewRefusesInvalidOptions: New returns an error, naming the option,
// for every value an option's doc calls invalid, and panics for none.
func TestNewRefusesInvalidOptions(t *testing.T) {
	shared, err := pool.New()
	if err != nil {
		t.Fatal(err)
	}
	defer shared.Close(context.Background())
	closed, err := pool.New()
	if err != nil {
		t.Fatal(err)
	}
	if err := closed.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		opts []processor.Option
		want string // what the error must say: the option, at least
	}{
		{"a pool size of zero", []processor.Option{processor.WithPoolSize(0)}, "processor: pool: WithSize: size must be positive, got 0"},
		{"a negative pool size", []processor.Option{processor.WithPoolSize(-1)}, "processor: pool: WithSize:"},
		{"a pre-allocated pool of 2^60 workers", []processor.Option{processor.WithPoolSize(1 << 60), processor.WithPoolPreAlloc(true)}, "processor: pool: WithPreAlloc:"},
		{"a pre-allocated pool one over the maximum", []processor.Option{processor.WithPoolPreAlloc(true), processor.WithPoolSize(pool.MaxPreAllocSize + 1)}, "processor: pool: WithPreAlloc:"},
		{"a zero worker expiry", []processor.Option{processor.WithWorkerExpiry(0)}, "processor: pool: WithExpiry:"},
		{"an unknown overload policy", []processor.Option{processor.WithOverloadPolicy(pool.Policy(9))}, "processor: pool: WithPolicy:"},
		{"a nil shared pool", []processor.Option{processor.WithPool(nil)}, "processor: WithPool:"},
		{"a nil shared pool with a size", []processor.Option{processor.WithPool(nil), processor.WithPoolSize(8)}, "processor: WithPool"},
		{"a closed shared pool", []processor.Option{processor.WithPool(closed)}, "processor: WithPool: the pool is closed"},
		{"a shared pool with a size as well", []processor.Option{processor.WithPool(shared), processor.WithPoolSize(8)}, "processor: WithPool cannot be combined with WithPoolSize"},
		{"a negative max concurrency", []processor.Option{processor.WithMaxConcurrency(-1)}, "processor: WithMaxConcurrency:"},
		{"negative max calls", []processor.Option{processor.WithMaxCalls(-1)}, "processor: WithMaxCalls:"},
		{"negative max request bytes", []processor.Option{processor.WithMaxRequestBytes(-1)}, "processor: WithMaxRequestBytes:"},
		{"zero max decompressed bytes", []processor.Option{processor.WithMaxDecompressedBytes(0)}, "processor: WithMaxDecompressedBytes:"},
		{"negative max response bytes", []processor.Option{processor.WithMaxResponseBytes(-1)}, "processor: WithMaxResponseBytes:"},
		{"a negative compress threshold", []processor.Option{processor.WithCompressThreshold(-1)}, "processor: WithCompressThreshold:"},
		{"a negative max timeout", []processor.Option{processor.WithMaxTimeout(-time.Second)}, "processor: WithMaxTimeout:"},
		{"a negative disconnect check", []processor.Option{processor.WithDisconnectCheck(-time.Millisecond)}, "processor: WithDisconnectCheck:"},
		{"a disconnect check of 1 ns", []processor.Option{processor.WithDisconnectCheck(time.Nanosecond)}, "processor: WithDisconnectCheck: interval must be 0 (off) or at least 1ms, got 1ns"},
		{"a disconnect check just under the minimum", []processor.Option{processor.WithDisconnectCheck(processor.MinDisconnectCheck - 1)}, "processor: WithDisconnectCheck:"},
		{"an allow list of no names", []processor.Option{processor.WithAllowMethods()}, "processor: WithAllowMethods:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := processor.New(testsvc.NewTestProcessor(echo{}), tc.opts...)
			if err == nil {
				p.Close(context.Background())
				t.Fatal("New accepted it")
			}
			if p != nil {
				t.Errorf("New returned a Processor along with %v", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: %q, want it to say %q", err, tc.want)
			}
		})
	}
	if _, err := processor.New(nil); err == nil {
		t.Error("New accepted a nil inner processor")
	}
}

// TestNewAcceptsTheLimitsOfItsOptions: the smallest values the options'
// docs allow are accepted.
func TestNewAcceptsTheLimitsOfItsOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []processor.Option
	}{
		{"a disconnect check of MinDisconnectCheck", []processor.Option{processor.WithDisconnectCheck(processor.MinDisconnectCheck)}},
		{"a disconnect check of 0 (off)", []processor.Option{processor.WithDisconnectCheck(0)}},
		{"a pool of one", []processor.Option{processor.WithPoolSize(1), processor.WithPoolPreAlloc(true)}},
		{"an allow list of one name", []processor.Option{processor.WithAllowMethods("echo")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := processor.New(testsvc.NewTestProcessor(echo{}), tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Close(context.Background()); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
}

// TestCloseWithADoneContextOnAnIdleProcessor: with no batch in flight, Close
// has nothing to wait for, and returns nil even when its context is done
// already, the processor's own pool included. (Several times: the pool's
// release once chose at random between the done context and its workers'
// exit.)
func TestCloseWithADoneContextOnAnIdleProcessor(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for i := range 8 {
		p, err := processor.New(testsvc.NewTestProcessor(echo{}))
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 1 { // with workers started, idle again
			if got, _ := echoInBatch(t, p, "echo", "x"); got != "x" {
				t.Fatalf("echo answered %q", got)
			}
		}
		if err := p.Close(ctx); err != nil {
			t.Errorf("Close #%d of an idle processor with a canceled context: %v, want nil", i+1, err)
		}
		if s := p.Stats(); s.BatchesInFlight != 0 {
			t.Errorf("Stats() = %+v after Close", s)
		}
	}
}

func TestOtherMessagesReachTheInnerProcessorUnchanged(t *testing.T) {
	p := newProcessor(t, testsvc.NewTestProcessor(echo{}))
	out, ok, err := roundTrip(t, p, func(w thrift.TProtocol) {
		ctx := context.Background()
		w.WriteMessageBegin(ctx, "echo", thrift.CALL, 42)
		(&testsvc.TestEchoArgs{Text: "plain"}).Write(ctx, w)
		w.WriteMessageEnd(ctx)
	})
	if !ok || err != nil {
		t.Fatalf("Process = %v, %v", ok, err)
	}
	r := thrift.NewTBinaryProtocolConf(out, nil)
	name, typ, seq, rerr := r.ReadMessageBegin(context.Background())
	if rerr != nil || name != "echo" || typ != thrift.REPLY || seq != 42 {
		t.Fatalf("reply header = %q %v %d %v, want echo REPLY 42", name, typ, seq, rerr)
	}
	var res testsvc.TestEchoResult
	if rerr := res.Read(context.Background(), r); rerr != nil || res.GetSuccess() != "plain" {
		t.Fatalf("reply = %q, %v", res.GetSuccess(), rerr)
	}
}

func TestABatchSentAsOnewayIsRefusedAndLogged(t *testing.T) {
	var log bytes.Buffer
	p := newProcessor(t, testsvc.NewTestProcessor(echo{}), processor.WithLogger(zerolog.New(&log)))
	out, ok, err := roundTrip(t, p, func(w thrift.TProtocol) {
		ctx := context.Background()
		w.WriteMessageBegin(ctx, "executeBatch", thrift.ONEWAY, 1)
		(&batch.BatchServiceExecuteBatchArgs{Request: &batch.BatchRequest{}}).Write(ctx, w)
		w.WriteMessageEnd(ctx)
	})
	if !ok || err != nil {
		t.Fatalf("Process = %v, %v; the connection should stay usable", ok, err)
	}
	if out.Len() != 0 {
		t.Errorf("a oneway batch got %d bytes of answer", out.Len())
	}
	if !strings.Contains(log.String(), "not sent as a CALL") {
		t.Errorf("the refusal was not logged: %q", log.String())
	}
}

func TestProcessorMapAddsExecuteBatchAndAddToProcessorMapReachesBatches(t *testing.T) {
	inner := testsvc.NewTestProcessor(echo{})
	p := newProcessor(t, inner)
	m := p.ProcessorMap()
	if m["executeBatch"] == nil || m["echo"] == nil {
		t.Fatalf("ProcessorMap lacks executeBatch or echo: %d entries", len(m))
	}
	if _, ok := inner.ProcessorMap()["executeBatch"]; ok {
		t.Fatal("ProcessorMap wrote executeBatch into the inner processor's map")
	}
	// A function added through the wrapper is what the next batch calls.
	p.AddToProcessorMap("shout", shout("shout"))
	if got, code := echoInBatch(t, p, "shout", "quiet"); got != "QUIET" {
		t.Fatalf("the added function answered %q (code %d), want QUIET", got, code)
	}
}

// shout is a processor function for echo that answers its text in upper
// case under the name reply, as one installed with AddToProcessorMap at run
// time would.
func shout(reply string) thrift.TProcessorFunction {
	return thrift.WrappedTProcessorFunction{Wrapped: func(ctx context.Context, seq int32, in, out thrift.TProtocol) (bool, thrift.TException) {
		var args testsvc.TestEchoArgs
		if err := args.Read(ctx, in); err != nil {
			return false, thrift.WrapTException(err)
		}
		in.ReadMessageEnd(ctx)
		out.WriteMessageBegin(ctx, reply, thrift.REPLY, seq)
		s := strings.ToUpper(args.Text)
		(&testsvc.TestEchoResult{Success: &s}).Write(ctx, out)
		out.WriteMessageEnd(ctx)
		return true, nil
	}}
}

// echoInBatch sends a batch of one echo of text, named method, through p and
// returns the text echoed, or the code of the call's error.
func echoInBatch(t *testing.T, p *processor.Processor, method, text string) (string, int32) {
	t.Helper()
	res := sendBatch(t, p, &batch.BatchRequest{Requests: []*batch.Request{arg(t, method, &testsvc.TestEchoArgs{Text: text})}})
	if res == nil || res.GetSuccess() == nil {
		t.Fatalf("batch of %s: no responses: %v", method, res)
	}
	resp := res.GetSuccess().Responses[0]
	if resp.Error != nil {
		return "", resp.Error.Type
	}
	var echoed testsvc.TestEchoResult
	if err := wire.Decode(context.Background(), wire.Binary, resp.Reply, &echoed); err != nil {
		t.Fatal(err)
	}
	return echoed.GetSuccess(), 0
}

// TestMultiplexedFunctionsFollowRegistrationAndReplacement: the functions a
// Processor keeps for a TMultiplexedProcessor find a service registered after
// batches have been served, and a function replaced through the Processor.
func TestMultiplexedFunctionsFollowRegistrationAndReplacement(t *testing.T) {
	mux := thrift.NewTMultiplexedProcessor()
	mux.RegisterProcessor("First", testsvc.NewTestProcessor(echo{}))
	p := newProcessor(t, mux)
	echoIn := func(method string) (string, int32) { t.Helper(); return echoInBatch(t, p, method, "quiet") }

	if got, code := echoIn("First:echo"); got != "quiet" {
		t.Fatalf("First:echo = %q (code %d), want quiet", got, code)
	}
	if _, code := echoIn("Second:echo"); code != thrift.UNKNOWN_METHOD {
		t.Fatalf("Second:echo before Second is registered: code %d, want UNKNOWN_METHOD", code)
	}
	mux.RegisterProcessor("Second", testsvc.NewTestProcessor(echo{}))
	if got, code := echoIn("Second:echo"); got != "quiet" {
		t.Errorf("Second:echo after Second is registered = %q (code %d), want quiet", got, code)
	}
	p.AddToProcessorMap("First:echo", shout("echo"))
	if got, code := echoIn("First:echo"); got != "QUIET" {
		t.Errorf("First:echo after AddToProcessorMap = %q (code %d), want QUIET", got, code)
	}
}

// TestASharedPoolClosedUnderTheProcessor: a pool from WithPool closed after
// New makes the processor's batches answer SHUTTING_DOWN.
func TestASharedPoolClosedUnderTheProcessor(t *testing.T) {
	shared, err := pool.New()
	if err != nil {
		t.Fatal(err)
	}
	p := newProcessor(t, testsvc.NewTestProcessor(echo{}), processor.WithPool(shared))
	if got, _ := echoInBatch(t, p, "echo", "x"); got != "x" {
		t.Fatalf("echo before the pool closed answered %q", got)
	}
	if err := shared.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	res := sendBatch(t, p, &batch.BatchRequest{Requests: []*batch.Request{arg(t, "echo", &testsvc.TestEchoArgs{Text: "x"})}})
	if res == nil || res.Error.GetCode() != batch.BatchErrorCode_SHUTTING_DOWN {
		t.Fatalf("a batch once the shared pool is closed: %+v, want SHUTTING_DOWN", res)
	}
	if s := p.Stats(); s.BatchesInFlight != 0 || s.Refused != 1 {
		t.Errorf("Stats() = %+v; want no batch in flight, 1 refused", s)
	}
}
