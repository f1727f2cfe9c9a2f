package client

import (
	"context"
	"errors"
	"io"
	"testing"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/internal/wire"
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
			if err := p.outcome(); !tc.want(err) {
				t.Errorf("outcome = %v", err)
			}
		})
	}
}
