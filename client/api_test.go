package client_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/thriftbatch/thriftbatch/client"
	"github.com/thriftbatch/thriftbatch/compress"
	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/internal/wire"
	"github.com/thriftbatch/thriftbatch/processor"
	"github.com/thriftbatch/thriftbatch/tests/testsvc"
)

// TestSequentialRunsTheCallsOneAtATimeInOrder: a batch marked Sequential
// runs its calls one after the other, in the order they were added; the
// same calls without it overlap.
func TestSequentialRunsTheCallsOneAtATimeInOrder(t *testing.T) {
	h := &svc{}
	c := mustDial(t, start(t, h))
	run := func(b *client.Batch) (most int64, tags []int64) {
		t.Helper()
		h.mostAsleep.Store(0)
		h.mu.Lock()
		h.tags = nil
		h.mu.Unlock()
		calls := make([]*client.Call[*testsvc.TestSleepyResult], 5)
		for i := range calls {
			calls[i] = client.Add(b, "sleepy", &testsvc.TestSleepyArgs{Millis: 20, Tag: int64(i)}, &testsvc.TestSleepyResult{})
		}
		if err := b.Execute(context.Background()); err != nil {
			t.Fatal(err)
		}
		for i, call := range calls {
			if call.Err() != nil || call.Result.GetSuccess() != int64(i) {
				t.Errorf("call %d = %d, %v", i, call.Result.GetSuccess(), call.Err())
			}
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.mostAsleep.Load(), slices.Clone(h.tags)
	}
	if most, tags := run(c.NewBatch().Sequential()); most != 1 || !slices.Equal(tags, []int64{0, 1, 2, 3, 4}) {
		t.Errorf("Sequential: at most %d calls at once, started in the order %v; want 1 and [0 1 2 3 4]", most, tags)
	}
	if most, _ := run(c.NewBatch()); most < 2 {
		t.Errorf("without Sequential: at most %d call at once, want the calls to overlap", most)
	}
}

// TestServerDeadlineReachesTheCallAsCallError: a call the server cuts off at
// the batch deadline (here the server's ceiling, WithMaxTimeout, as the
// client sends none) fails alone, with a CallError that reads as
// context.DeadlineExceeded, names the call and carries the code.
func TestServerDeadlineReachesTheCallAsCallError(t *testing.T) {
	c := mustDial(t, start(t, &svc{}, processor.WithMaxTimeout(50*time.Millisecond)))
	b := c.NewBatch()
	slow := client.Add(b, "sleepy", &testsvc.TestSleepyArgs{Millis: 10_000, Tag: 1}, &testsvc.TestSleepyResult{})
	quick := client.Add(b, "echo", &testsvc.TestEchoArgs{Text: "quick"}, &testsvc.TestEchoResult{})
	if err := b.Execute(context.Background()); err != nil {
		t.Fatal(err)
	}
	if quick.Err() != nil || quick.Result.GetSuccess() != "quick" {
		t.Errorf("the quick call = %q, %v", quick.Result.GetSuccess(), quick.Err())
	}
	err := slow.Err()
	var ce *client.CallError
	if !errors.As(err, &ce) || ce.Code != batch.CALL_DEADLINE_EXCEEDED || ce.Method != "sleepy" {
		t.Fatalf("the slow call's error = %#v, want a CallError of sleepy with code CALL_DEADLINE_EXCEEDED", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("errors.Is(%v, context.DeadlineExceeded) = false", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "sleepy") || !strings.Contains(msg, ce.Message) || !strings.Contains(msg, fmt.Sprintf("(code %d)", ce.Code)) {
		t.Errorf("Error() = %q, want the method, the server's message and the code", msg)
	}
}

// TestCallErrorIsOnlyTheContextErrorOfItsCode: CALL_CANCELED reads as
// context.Canceled, CALL_DEADLINE_EXCEEDED as context.DeadlineExceeded, and
// every other code as neither; TypeId is the code.
func TestCallErrorIsOnlyTheContextErrorOfItsCode(t *testing.T) {
	for _, tc := range []struct {
		code               int32
		deadline, canceled bool
	}{
		{batch.CALL_DEADLINE_EXCEEDED, true, false},
		{batch.CALL_CANCELED, false, true},
		{batch.CALL_OVERLOADED, false, false},
		{batch.CALL_NOT_ALLOWED, false, false},
		{thrift.UNKNOWN_METHOD, false, false},
		{thrift.INTERNAL_ERROR, false, false},
	} {
		var err error = &client.CallError{Method: "m", Code: tc.code, Message: "why"}
		if got := errors.Is(err, context.DeadlineExceeded); got != tc.deadline {
			t.Errorf("code %d: errors.Is(err, context.DeadlineExceeded) = %v", tc.code, got)
		}
		if got := errors.Is(err, context.Canceled); got != tc.canceled {
			t.Errorf("code %d: errors.Is(err, context.Canceled) = %v", tc.code, got)
		}
		if got := err.(interface{ TypeId() int32 }).TypeId(); got != tc.code {
			t.Errorf("code %d: TypeId() = %d", tc.code, got)
		}
	}
}

// TestWithTClientSendsBatchesThroughIt: with WithTClient the batch goes
// through the given client (here one wrapped in middleware, which sees
// executeBatch once per batch), and its calls are settled as without it.
func TestWithTClientSendsBatchesThroughIt(t *testing.T) {
	_, addr := startAt(t, &svc{})
	proto, err := dialProto(addr)
	if err != nil {
		t.Fatal(err)
	}
	var seen atomic.Int64
	count := func(next thrift.TClient) thrift.TClient {
		return thrift.WrappedTClient{Wrapped: func(ctx context.Context, method string, args, result thrift.TStruct) (thrift.ResponseMeta, error) {
			if method == "executeBatch" {
				seen.Add(1)
			}
			return next.Call(ctx, method, args, result)
		}}
	}
	c, err := client.New(proto, client.WithTClient(thrift.WrapClient(thrift.NewTStandardClient(proto, proto), count)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for round := range 2 {
		b := c.NewBatch()
		echo := client.Add(b, "echo", &testsvc.TestEchoArgs{Text: "through"}, &testsvc.TestEchoResult{})
		div := client.Add(b, "divide", &testsvc.TestDivideArgs{A: 1, B: 0}, &testsvc.TestDivideResult{})
		if err := b.Execute(context.Background()); err != nil {
			t.Fatal(err)
		}
		if echo.Err() != nil || echo.Result.GetSuccess() != "through" {
			t.Errorf("round %d: echo = %q, %v", round, echo.Result.GetSuccess(), echo.Err())
		}
		if !errors.As(div.Err(), new(*testsvc.DivideByZero)) {
			t.Errorf("round %d: divide by zero = %v, want the declared exception", round, div.Err())
		}
	}
	if n := seen.Load(); n != 2 {
		t.Errorf("the middleware saw %d executeBatch calls, want 2", n)
	}
}

// TestAutoAnswersCallsItCannotSend: when a connection breaks, the calls of
// its batch get the error; when no new connection can be dialed, the calls
// waiting for one get the dial's error; once dialing works again, the Auto
// serves again.
func TestAutoAnswersCallsItCannotSend(t *testing.T) {
	dial := start(t, &svc{})
	errNoRoute := errors.New("no route")
	var (
		refuse atomic.Bool
		first  atomic.Pointer[client.Client]
	)
	tc := testsvc.NewTestClient(mustAuto(t, func(ctx context.Context) (*client.Client, error) {
		if refuse.Load() {
			return nil, errNoRoute
		}
		c, err := dial(ctx)
		if err == nil {
			first.CompareAndSwap(nil, c)
		}
		return c, err
	}, client.WithMaxInFlight(1)))
	// A bound, so that a call nobody answers fails the test instead of
	// hanging it.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if got, err := tc.Echo(ctx, "one"); err != nil || got != "one" {
		t.Fatalf("echo = %q, %v", got, err)
	}

	first.Load().Close() // the connection breaks under the Auto
	refuse.Store(true)
	if _, err := tc.Echo(ctx, "two"); err == nil {
		t.Fatal("a call on a closed connection succeeded")
	}
	if _, err := tc.Echo(ctx, "three"); !errors.Is(err, errNoRoute) {
		t.Fatalf("a call with no connection to be had = %v, want the dial's error", err)
	}

	refuse.Store(false)
	if got, err := tc.Echo(ctx, "four"); err != nil || got != "four" {
		t.Fatalf("echo once dialing works again = %q, %v", got, err)
	}
}

// TestResponsesInACodecNotAcceptedFailTheBatch: a server that compresses its
// responses with a codec the client did not list is out of contract; the
// batch fails with an error naming the codec rather than being decoded.
func TestResponsesInACodecNotAcceptedFailTheBatch(t *testing.T) {
	codecs, err := compress.New()
	if err != nil {
		t.Fatal(err)
	}
	defer codecs.Close()
	plain, err := wire.Encode(context.Background(), wire.Compact, nil, &batch.BatchResponse{
		Responses: []*batch.Response{{Reply: []byte{0}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	packed, err := codecs.Encode(batch.Codec_ZSTD, nil, plain)
	if err != nil {
		t.Fatal(err)
	}
	server := thrift.WrappedTClient{Wrapped: func(_ context.Context, _ string, _, result thrift.TStruct) (thrift.ResponseMeta, error) {
		result.(*batch.BatchServiceExecuteBatchResult).Success = &batch.BatchResponse{
			Codec: batch.CodecPtr(batch.Codec_ZSTD), CompressedResponses: packed,
		}
		return thrift.ResponseMeta{}, nil
	}}
	proto := thrift.NewTCompactProtocolConf(thrift.NewTMemoryBuffer(), nil)
	for _, accept := range [][]batch.Codec{{batch.Codec_GZIP}, {}} {
		c, err := client.New(proto, client.WithTClient(server), client.WithAcceptCodecs(accept...))
		if err != nil {
			t.Fatal(err)
		}
		b := c.NewBatch()
		client.Add(b, "echo", &testsvc.TestEchoArgs{Text: "x"}, &testsvc.TestEchoResult{})
		if err := b.Execute(context.Background()); err == nil || !strings.Contains(err.Error(), "ZSTD") {
			t.Errorf("accepting %v, a ZSTD response = %v; want an error naming ZSTD", accept, err)
		}
	}

	// The reply was read whole: an Auto keeps the connection rather than
	// dial again for every batch.
	var dials atomic.Int64
	auto := mustAuto(t, func(context.Context) (*client.Client, error) {
		dials.Add(1)
		return client.New(proto, client.WithTClient(server), client.WithAcceptCodecs(batch.Codec_GZIP))
	}, client.WithMaxInFlight(1))
	for range 3 {
		if _, err := testsvc.NewTestClient(auto).Echo(context.Background(), "x"); err == nil || !strings.Contains(err.Error(), "ZSTD") {
			t.Errorf("through an Auto, a ZSTD response = %v; want an error naming ZSTD", err)
		}
	}
	if n := dials.Load(); n != 1 {
		t.Errorf("the Auto dialed %d times for 3 batches answered in a codec it refused, want once", n)
	}
}
