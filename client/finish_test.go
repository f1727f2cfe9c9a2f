package client

import (
	"context"
	"errors"
	"io"
	"testing"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/internal/wire"
	"github.com/thriftbatch/thriftbatch/tests/testsvc"
)

// TestOutcomeKeepsTheServersAnswerPastTheDeadline: when a caller's ctx has
// ended by the time its answer arrives, the answer stands if it is the
// call's own (a CallError other than the deadline's or a cancellation's, or
// the server's refusal of the batch), and becomes ctx's error if the
// deadline may have caused it.
func TestOutcomeKeepsTheServersAnswerPastTheDeadline(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	callError := func(code int32) *batch.Response {
		return &batch.Response{Error: &batch.CallError{Type: code, Message: "m"}}
	}
	refused := &batch.BatchError{Code: batch.BatchErrorCode_TOO_MANY_BYTES, Message: "m"}
	// The answers the deadline may have caused become ctx's error itself:
	// not merely an error that Is it, as a CALL_CANCELED CallError is.
	isCtxErr := func(err error) bool { return err == ctx.Err() }
	for _, tc := range []struct {
		name     string
		resp     *batch.Response
		batchErr error
		want     func(error) bool
	}{
		{"unknown method", callError(thrift.UNKNOWN_METHOD), nil, func(err error) bool {
			var ce *CallError
			return errors.As(err, &ce) && ce.Code == thrift.UNKNOWN_METHOD
		}},
		{"deadline", callError(batch.CALL_DEADLINE_EXCEEDED), nil, isCtxErr},
		{"canceled", callError(batch.CALL_CANCELED), nil, isCtxErr},
		{"refused batch", nil, refused, func(err error) bool { return errors.Is(err, refused) }},
		{"transport", nil, thrift.NewTTransportExceptionFromError(io.ErrUnexpectedEOF), isCtxErr},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &pending{ctx: ctx, req: batch.Request{Method: "echo"}, done: make(chan struct{})}
			p.settle(&coder{kind: wire.Compact}, tc.resp, tc.batchErr)
			select {
			case <-p.done:
			default:
				t.Fatal("settle did not end the call")
			}
			if err := p.outcome(); !tc.want(err) {
				t.Errorf("outcome = %v", err)
			}
		})
	}
}

// TestSettleEndsACallOnce: settle leaves a call whose caller has gone
// alone, and a panic of the result's Read ends the call with the panic,
// which outcome raises again on the caller's goroutine.
func TestSettleEndsACallOnce(t *testing.T) {
	d := &coder{kind: wire.Compact}
	defer d.release()
	reply, err := wire.Encode(context.Background(), wire.Compact, nil, &testsvc.TestEchoResult{Success: thrift.StringPtr("hi")})
	if err != nil {
		t.Fatal(err)
	}
	gone := &pending{ctx: context.Background(), result: testsvc.NewTestEchoResult(), done: make(chan struct{})}
	gone.state.Store(abandoned)
	gone.settle(d, &batch.Response{Reply: reply}, nil)
	select {
	case <-gone.done:
		t.Error("settle ended a call whose caller had gone")
	default:
	}
	if r := gone.result.(*testsvc.TestEchoResult); r.Success != nil {
		t.Errorf("settle decoded into the result of a caller that had gone: %q", *r.Success)
	}

	p := &pending{ctx: context.Background(), req: batch.Request{Method: "echo"}, result: &halfRead{}, done: make(chan struct{})}
	p.settle(d, &batch.Response{Reply: reply}, nil)
	<-p.done
	defer func() {
		v := recover()
		if hp, ok := v.(*helperPanic); !ok || hp.value != "read panics mid-struct" {
			t.Errorf("outcome panicked with %v, want the Read's panic", v)
		}
	}()
	err = p.outcome()
	t.Errorf("outcome returned %v, want the Read's panic raised again", err)
}

// TestNoBatchLeavesOnceCloseHasBegun: a batch whose sender runs after Close
// has begun (a send started just before it, or the halves of a refused
// batch) ends its calls with ErrClosed without touching the connection.
func TestNoBatchLeavesOnceCloseHasBegun(t *testing.T) {
	closing, stop := context.WithCancel(context.Background())
	stop()
	a := &Auto{stop: closing.Done()}
	p := &pending{ctx: context.Background(), req: batch.Request{Method: "echo"}, done: make(chan struct{})}
	if err := a.execute(nil, []*pending{p}); err != nil { // no connection: it must not be used
		t.Fatal(err)
	}
	<-p.done
	if !errors.Is(p.err, ErrClosed) {
		t.Errorf("the call = %v, want ErrClosed", p.err)
	}
}
