package client_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/thrift/lib/go/thrift"
	"go.uber.org/goleak"

	"github.com/thriftbatch/thriftbatch/client"
	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/processor"
	"github.com/thriftbatch/thriftbatch/tests/testsvc"
)

// TestMain checks for leaked goroutines. IgnoreCurrent leaves out the two
// that ants starts at import for its default pool, which this project never
// uses; goroutines of our own pools are still caught.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m, goleak.IgnoreCurrent()) }

// svc implements testsvc.Test with what these tests need.
type svc struct {
	notes   atomic.Int64
	batches atomic.Int64 // executeBatch calls seen, counted by middleware
	refused atomic.Int64 // those answered with a BatchError

	// sleepy's calls: how many are running, the most that ran at once, and
	// their tags in the order they started.
	sleeping, mostAsleep atomic.Int64
	mu                   sync.Mutex
	tags                 []int64
}

func (*svc) Echo(_ context.Context, s string) (string, error) { return s, nil }
func (*svc) Divide(_ context.Context, a, b int32) (int32, error) {
	if b == 0 {
		return 0, &testsvc.DivideByZero{Why: "b is zero"}
	}
	return a / b, nil
}
func (s *svc) Sleepy(ctx context.Context, ms int32, tag int64) (int64, error) {
	n := s.sleeping.Add(1)
	defer s.sleeping.Add(-1)
	for most := s.mostAsleep.Load(); n > most && !s.mostAsleep.CompareAndSwap(most, n); most = s.mostAsleep.Load() {
	}
	s.mu.Lock()
	s.tags = append(s.tags, tag)
	s.mu.Unlock()
	select {
	case <-time.After(time.Duration(ms) * time.Millisecond):
		return tag, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}
func (*svc) Boom(context.Context) error                           { panic("boom") }
func (*svc) Failing(context.Context) error                        { return errors.New("failing") }
func (s *svc) Note(context.Context, string) error                 { s.notes.Add(1); return nil }
func (*svc) WhereAmI(context.Context) (int32, error)              { return 0, nil }
func (*svc) Nested(context.Context, string, int32) (int32, error) { return 0, nil }
func (*svc) Secret(context.Context) (string, error)               { return "", nil }
func (*svc) Items(_ context.Context, n int32) ([]*testsvc.Item, error) {
	items := make([]*testsvc.Item, n)
	for i := range items {
		items[i] = &testsvc.Item{Key: int64(i), Label: fmt.Sprintf("item %d of a list long enough to be worth compressing", i)}
	}
	return items, nil
}

// dialer dials a new connection and returns a Client on it.
type dialer func(ctx context.Context, opts ...client.Option) (*client.Client, error)

// auto adapts d to what NewAuto takes.
func (d dialer) auto(ctx context.Context) (*client.Client, error) { return d(ctx) }

// start serves h on loopback with the compact protocol over framed
// transport and returns a dialer for it.
func start(t testing.TB, h *svc, opts ...processor.Option) dialer {
	t.Helper()
	dial, _ := startAt(t, h, opts...)
	return dial
}

// startAt is start, and also returns the server's address.
func startAt(t testing.TB, h *svc, opts ...processor.Option) (dialer, string) {
	t.Helper()
	inner := thrift.WrapProcessor(testsvc.NewTestProcessor(h))
	p, err := processor.New(inner, opts...)
	if err != nil {
		t.Fatal(err)
	}
	thrift.WrapProcessor(p, func(name string, next thrift.TProcessorFunction) thrift.TProcessorFunction {
		if name != "executeBatch" {
			return next
		}
		return thrift.WrappedTProcessorFunction{Wrapped: func(ctx context.Context, seq int32, in, out thrift.TProtocol) (bool, thrift.TException) {
			h.batches.Add(1)
			ok, err := next.Process(ctx, seq, in, out)
			if errors.As(err, new(*batch.BatchError)) {
				h.refused.Add(1)
			}
			return ok, err
		}}
	})
	sock, err := thrift.NewTServerSocket("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := sock.Listen(); err != nil {
		t.Fatal(err)
	}
	tf := thrift.NewTFramedTransportFactoryConf(thrift.NewTTransportFactory(), nil)
	pf := thrift.NewTCompactProtocolFactoryConf(nil)
	srv := thrift.NewTSimpleServer4(p, sock, tf, pf)
	done := make(chan error, 1)
	go func() { done <- srv.Serve() }()
	var mu sync.Mutex
	var conns []*client.Client
	t.Cleanup(func() {
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		srv.Stop()
		<-done
		p.Close(context.Background())
	})
	addr := sock.Addr().String()
	return func(ctx context.Context, opts ...client.Option) (*client.Client, error) {
		proto, err := dialProto(addr)
		if err != nil {
			return nil, err
		}
		c, err := client.New(proto, opts...)
		if err != nil {
			return nil, err
		}
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
		return c, nil
	}, addr
}

// dialProto opens a connection to addr and returns the compact protocol
// over framed transport on it.
func dialProto(addr string) (thrift.TProtocol, error) {
	trans := thrift.NewTFramedTransportConf(thrift.NewTSocketConf(addr, &thrift.TConfiguration{ConnectTimeout: 5 * time.Second, SocketTimeout: 30 * time.Second}), nil)
	if err := trans.Open(); err != nil {
		return nil, err
	}
	return thrift.NewTCompactProtocolConf(trans, nil), nil
}

// mustAuto returns an Auto over dial's connections, closed when the test
// ends (before start's server stops).
func mustAuto(t testing.TB, dial func(context.Context) (*client.Client, error), opts ...client.AutoOption) *client.Auto {
	t.Helper()
	auto, err := client.NewAuto(context.Background(), dial, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { auto.Close() })
	return auto
}

func mustDial(t testing.TB, dial dialer, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := dial(context.Background(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestBatchSettlesEachCallWithItsOwnResult(t *testing.T) {
	h := &svc{}
	c := mustDial(t, start(t, h))
	b := c.NewBatch()
	echoes := make([]*client.Call[*testsvc.TestEchoResult], 50)
	for i := range echoes {
		echoes[i] = client.Add(b, "echo", &testsvc.TestEchoArgs{Text: fmt.Sprint("call ", i)}, &testsvc.TestEchoResult{})
	}
	div := client.Add(b, "divide", &testsvc.TestDivideArgs{A: 1, B: 0}, &testsvc.TestDivideResult{})
	unknown := client.Add(b, "nosuch", &testsvc.TestEchoArgs{}, &testsvc.TestEchoResult{})
	boom := client.Add(b, "boom", &testsvc.TestBoomArgs{}, &testsvc.TestBoomResult{})
	note := client.Add[thrift.TStruct](b, "note", &testsvc.TestNoteArgs{Text: "x"}, nil)
	if err := b.Execute(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i, e := range echoes {
		if e.Err() != nil || e.Result.GetSuccess() != fmt.Sprint("call ", i) {
			t.Errorf("echo %d = %q, %v", i, e.Result.GetSuccess(), e.Err())
		}
	}
	var dz *testsvc.DivideByZero
	if !errors.As(div.Err(), &dz) || dz.Why != "b is zero" {
		t.Errorf("divide by zero: err = %v, want the declared DivideByZero", div.Err())
	}
	var ce *client.CallError
	if !errors.As(unknown.Err(), &ce) || ce.Code != thrift.UNKNOWN_METHOD || ce.Method != "nosuch" {
		t.Errorf("unknown method: err = %v", unknown.Err())
	}
	if !errors.As(boom.Err(), &ce) || ce.Code != thrift.INTERNAL_ERROR {
		t.Errorf("panic: err = %v", boom.Err())
	}
	if note.Err() != nil || h.notes.Load() != 1 {
		t.Errorf("oneway note: err = %v, notes = %d", note.Err(), h.notes.Load())
	}
}

func TestBatchErrorReachesEveryCall(t *testing.T) {
	c := mustDial(t, start(t, &svc{}, processor.WithMaxCalls(2)))
	b := c.NewBatch()
	calls := []*client.Call[*testsvc.TestEchoResult]{
		client.Add(b, "echo", &testsvc.TestEchoArgs{Text: "a"}, &testsvc.TestEchoResult{}),
		client.Add(b, "echo", &testsvc.TestEchoArgs{Text: "b"}, &testsvc.TestEchoResult{}),
		client.Add(b, "echo", &testsvc.TestEchoArgs{Text: "c"}, &testsvc.TestEchoResult{}),
	}
	err := b.Execute(context.Background())
	var be *batch.BatchError
	if !errors.As(err, &be) || be.Code != batch.BatchErrorCode_TOO_MANY_CALLS {
		t.Fatalf("Execute = %v, want TOO_MANY_CALLS", err)
	}
	for i, call := range calls {
		if !errors.Is(call.Err(), err) {
			t.Errorf("call %d: err = %v, want the batch's error", i, call.Err())
		}
	}
	// The connection still carries batches.
	b = c.NewBatch()
	ok := client.Add(b, "echo", &testsvc.TestEchoArgs{Text: "after"}, &testsvc.TestEchoResult{})
	if err := b.Execute(context.Background()); err != nil || ok.Result.GetSuccess() != "after" {
		t.Fatalf("batch after a refused one: %v, %q", err, ok.Result.GetSuccess())
	}
}

func TestCompressionBothWays(t *testing.T) {
	for _, codec := range []batch.Codec{batch.Codec_ZSTD, batch.Codec_SNAPPY, batch.Codec_S2, batch.Codec_GZIP, batch.Codec_ZLIB} {
		t.Run(codec.String(), func(t *testing.T) {
			c := mustDial(t, start(t, &svc{}), client.WithAcceptCodecs(codec), client.WithRequestCompression(codec, 1))
			b := c.NewBatch()
			items := client.Add(b, "items", &testsvc.TestItemsArgs{Count: 300}, &testsvc.TestItemsResult{})
			long := strings.Repeat("compressible ", 200)
			echo := client.Add(b, "echo", &testsvc.TestEchoArgs{Text: long}, &testsvc.TestEchoResult{})
			if err := b.Execute(context.Background()); err != nil {
				t.Fatal(err)
			}
			if items.Err() != nil || len(items.Result.GetSuccess()) != 300 || items.Result.GetSuccess()[299].Key != 299 {
				t.Fatalf("items: %v, %d items", items.Err(), len(items.Result.GetSuccess()))
			}
			if echo.Err() != nil || echo.Result.GetSuccess() != long {
				t.Fatalf("echo of a long text: %v", echo.Err())
			}
		})
	}
}

func TestAutoCoalescesConcurrentCalls(t *testing.T) {
	h := &svc{}
	dial := start(t, h)
	auto := mustAuto(t, dial.auto, client.WithMaxWait(2*time.Millisecond), client.WithMaxInFlight(2))
	const callers = 200
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			// One generated client per goroutine: it records the last
			// response's metadata in a field. They all share the Auto.
			tc := testsvc.NewTestClient(auto)
			want := fmt.Sprint("caller ", i)
			got, err := tc.Echo(ctx, want)
			if err != nil || got != want {
				errs <- fmt.Errorf("caller %d: got %q, %v", i, got, err)
				return
			}
			if i%10 == 0 {
				if _, err := tc.Divide(ctx, 1, 0); !errors.As(err, new(*testsvc.DivideByZero)) {
					errs <- fmt.Errorf("caller %d: divide by zero = %v", i, err)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := h.batches.Load(); n >= callers {
		t.Errorf("%d calls took %d batches: not coalesced", callers, n)
	}
}

func TestAutoHonoursCallerContext(t *testing.T) {
	tc := testsvc.NewTestClient(mustAuto(t, start(t, &svc{}).auto))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := tc.Sleepy(ctx, 5000, 1)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Sleepy past its deadline = %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("the call returned after %v, long after its deadline", d)
	}
	// The Auto still serves.
	if got, err := tc.Echo(context.Background(), "still here"); err != nil || got != "still here" {
		t.Fatalf("echo after a canceled call: %q, %v", got, err)
	}
}

func TestAutoOnewayAndClose(t *testing.T) {
	h := &svc{}
	auto := mustAuto(t, start(t, h).auto)
	tc := testsvc.NewTestClient(auto)
	if err := tc.Note(context.Background(), "hello"); err != nil {
		t.Fatal(err)
	}
	if h.notes.Load() != 1 {
		t.Fatalf("notes = %d after a oneway call through Auto", h.notes.Load())
	}
	if err := auto.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := tc.Echo(context.Background(), "late"); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("call after Close = %v, want ErrClosed", err)
	}
}

func TestOptionsAreValidated(t *testing.T) {
	proto := thrift.NewTCompactProtocolConf(thrift.NewTMemoryBuffer(), nil)
	if _, err := client.New(proto, client.WithRequestCompression(batch.Codec(42), 1)); err == nil {
		t.Error("an unsupported request codec was accepted")
	}
	if _, err := client.New(proto, client.WithMaxDecompressedBytes(0)); err == nil {
		t.Error("a zero decompression bound was accepted")
	}
	for _, codec := range []batch.Codec{batch.Codec_NONE, batch.Codec(99)} {
		if _, err := client.New(proto, client.WithAcceptCodecs(batch.Codec_ZSTD, codec)); err == nil || !strings.Contains(err.Error(), "WithAcceptCodecs") {
			t.Errorf("accepting codec %v: %v, want an error naming WithAcceptCodecs", codec, err)
		}
	}
	if _, err := client.New(thrift.NewTSimpleJSONProtocolConf(thrift.NewTMemoryBuffer(), nil)); err == nil {
		t.Error("the write-only simple JSON protocol was accepted")
	}
	unused := func(context.Context) (*client.Client, error) { return nil, errors.New("unused") }
	for _, o := range []client.AutoOption{client.WithMaxBatch(0), client.WithMaxInFlight(0), client.WithMaxWait(-1)} {
		if _, err := client.NewAuto(context.Background(), unused, o); err == nil {
			t.Error("an invalid Auto option was accepted")
		}
	}
}

// TestABatchKeepsItsResultsAfterTheNextBatch: an explicit batch reads its
// reply into the buffer of the previous reply on the same Client, so
// nothing a finished batch handed out may point into that buffer. Two
// batches of different replies, of the same size so that the second lands
// in the first's buffer, then the first's results checked again.
func TestABatchKeepsItsResultsAfterTheNextBatch(t *testing.T) {
	c := mustDial(t, start(t, &svc{}))
	send := func(prefix string) (echoes []*client.Call[*testsvc.TestEchoResult], unknown *client.Call[*testsvc.TestEchoResult], dz *client.Call[*testsvc.TestDivideResult]) {
		b := c.NewBatch()
		for i := range 20 {
			echoes = append(echoes, client.Add(b, "echo", &testsvc.TestEchoArgs{Text: fmt.Sprintf("%s %02d", prefix, i)}, &testsvc.TestEchoResult{}))
		}
		unknown = client.Add(b, "nosuch"+prefix, &testsvc.TestEchoArgs{}, &testsvc.TestEchoResult{})
		dz = client.Add(b, "divide", &testsvc.TestDivideArgs{A: 1, B: 0}, &testsvc.TestDivideResult{})
		if err := b.Execute(context.Background()); err != nil {
			t.Fatal(err)
		}
		return echoes, unknown, dz
	}
	check := func(prefix string, echoes []*client.Call[*testsvc.TestEchoResult], unknown *client.Call[*testsvc.TestEchoResult], dz *client.Call[*testsvc.TestDivideResult]) {
		t.Helper()
		for i, e := range echoes {
			if want := fmt.Sprintf("%s %02d", prefix, i); e.Err() != nil || e.Result.GetSuccess() != want {
				t.Errorf("echo %d = %q, %v; want %q", i, e.Result.GetSuccess(), e.Err(), want)
			}
		}
		var ce *client.CallError
		if !errors.As(unknown.Err(), &ce) || !strings.Contains(ce.Message, "nosuch"+prefix) {
			t.Errorf("unknown method: %v, want it named", unknown.Err())
		}
		var oops *testsvc.DivideByZero
		if !errors.As(dz.Err(), &oops) || oops.Why != "b is zero" {
			t.Errorf("divide: %v", dz.Err())
		}
	}
	e1, u1, d1 := send("AAA")
	check("AAA", e1, u1, d1)
	e2, u2, d2 := send("BBB")
	check("BBB", e2, u2, d2)
	check("AAA", e1, u1, d1)
}
