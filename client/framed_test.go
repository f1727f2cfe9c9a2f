package client

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/internal/wire"
	"github.com/thriftbatch/thriftbatch/tests/testsvc"
)

// reply returns one compact frame: a message of name, typeID and seqID
// carrying s (nil: an empty struct).
func reply(t *testing.T, name string, typeID thrift.TMessageType, seqID int32, s thrift.TStruct) []byte {
	t.Helper()
	ctx := context.Background()
	buf := thrift.NewTMemoryBuffer()
	p := thrift.NewTCompactProtocolConf(thrift.NewTFramedTransportConf(buf, nil), nil)
	if s == nil {
		s = &batch.BatchServiceExecuteBatchResult{}
	}
	if err := errors.Join(p.WriteMessageBegin(ctx, name, typeID, seqID), s.Write(ctx, p), p.WriteMessageEnd(ctx), p.Flush(ctx)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestFramedCallAnswersAsTheGeneratedClient reads the same server replies
// with framed.call and with the generated client over a
// thrift.TStandardClient, and compares what they return: the response, or
// an error of the same type and code.
func TestFramedCallAnswersAsTheGeneratedClient(t *testing.T) {
	ok := &batch.BatchServiceExecuteBatchResult{Success: &batch.BatchResponse{Responses: []*batch.Response{
		{ID: thrift.Int32Ptr(1), Reply: []byte{0}}, {Error: &batch.CallError{Type: 1, Message: "nope"}},
	}}}
	refused := &batch.BatchServiceExecuteBatchResult{Error: &batch.BatchError{Code: batch.BatchErrorCode_TOO_MANY_CALLS, Message: "too many"}}
	for _, tc := range []struct {
		name  string
		frame func(t *testing.T) []byte
	}{
		{"a reply", func(t *testing.T) []byte { return reply(t, "executeBatch", thrift.REPLY, 1, ok) }},
		{"a BatchError", func(t *testing.T) []byte { return reply(t, "executeBatch", thrift.REPLY, 1, refused) }},
		{"no result", func(t *testing.T) []byte { return reply(t, "executeBatch", thrift.REPLY, 1, nil) }},
		{"an exception", func(t *testing.T) []byte {
			return reply(t, "executeBatch", thrift.EXCEPTION, 1, thrift.NewTApplicationException(thrift.PROTOCOL_ERROR, "bad"))
		}},
		{"another method's reply", func(t *testing.T) []byte { return reply(t, "echo", thrift.REPLY, 1, ok) }},
		{"another call's reply", func(t *testing.T) []byte { return reply(t, "executeBatch", thrift.REPLY, 2, ok) }},
		{"a oneway message", func(t *testing.T) []byte { return reply(t, "executeBatch", thrift.ONEWAY, 1, ok) }},
		{"a reply cut short", func(t *testing.T) []byte {
			b := reply(t, "executeBatch", thrift.REPLY, 1, ok)
			b = b[:len(b)-3]
			return append(append([]byte{}, 0, 0, 0, byte(len(b)-4)), b[4:]...)
		}},
		{"nothing", func(*testing.T) []byte { return nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			frame := tc.frame(t)
			proto := func() thrift.TProtocol {
				tr := thrift.NewStreamTransport(bytes.NewReader(frame), io.Discard)
				return thrift.NewTCompactProtocolConf(thrift.NewTFramedTransportConf(tr, nil), nil)
			}
			ctx := context.Background()
			req := &batch.BatchRequest{Requests: []*batch.Request{{Method: "echo", Arguments: []byte{0}}}}
			got, gotErr := newFramed(proto(), nil).call(ctx, req, false)
			gp := proto()
			want, wantErr := batch.NewBatchServiceClient(thrift.NewTStandardClient(gp, gp)).ExecuteBatch(ctx, req)
			if (gotErr == nil) != (wantErr == nil) {
				t.Fatalf("ours: %v, the generated client: %v", gotErr, wantErr)
			}
			if gotErr != nil {
				if sameKind(gotErr, wantErr) {
					return
				}
				t.Fatalf("ours: %v (%T), the generated client: %v (%T)", gotErr, gotErr, wantErr, wantErr)
			}
			if !got.Equals(want) {
				t.Fatalf("ours: %v, the generated client: %v", got, want)
			}
		})
	}
}

// sameKind reports whether two errors are the same BatchError, or Thrift
// exceptions of the same type and code.
func sameKind(a, b error) bool {
	var ba, bb *batch.BatchError
	if errors.As(a, &ba) || errors.As(b, &bb) {
		return errors.As(a, &ba) && errors.As(b, &bb) && ba.Equals(bb)
	}
	var ea, eb thrift.TException
	if !errors.As(a, &ea) || !errors.As(b, &eb) || ea.TExceptionType() != eb.TExceptionType() {
		return false
	}
	type typed interface{ TypeId() int32 }
	ta, okA := ea.(typed)
	tb, okB := eb.(typed)
	return okA == okB && (!okA || ta.TypeId() == tb.TypeId())
}

// TestWithTConfigurationBoundsReplies: the client reads a reply's frame
// itself, so WithTConfiguration's container limit must reach that read.
func TestWithTConfigurationBoundsReplies(t *testing.T) {
	ok := &batch.BatchServiceExecuteBatchResult{Success: &batch.BatchResponse{Responses: []*batch.Response{
		{Reply: []byte{0}}, {Reply: []byte{0}},
	}}}
	for _, tc := range []struct {
		limit int32
		fails bool
	}{{2, false}, {1, true}} {
		frame := reply(t, "executeBatch", thrift.REPLY, 1, ok)
		proto := thrift.NewTCompactProtocolConf(thrift.NewTFramedTransportConf(thrift.NewStreamTransport(bytes.NewReader(frame), io.Discard), nil), nil)
		c, err := New(proto, WithAcceptCodecs(), WithTConfiguration(&thrift.TConfiguration{MaxContainerSize: tc.limit}))
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.execute(context.Background(), []*batch.Request{{Method: "echo"}, {Method: "echo"}}, false, true)
		var pe thrift.TProtocolException
		if tc.fails != (errors.As(err, &pe) && pe.TypeId() == thrift.SIZE_LIMIT) || (!tc.fails && err != nil) {
			t.Errorf("MaxContainerSize %d: %v", tc.limit, err)
		}
		c.codecs.Close()
	}
}

// TestExecuteKeepsNoLargeReplyAfterward: once Execute returns, the Client
// keeps the frame of a small reply for its next batch and nothing of a reply
// over 1 MiB, which would otherwise stay reachable while the Client idles.
func TestExecuteKeepsNoLargeReplyAfterward(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		size int
		kept bool
	}{{1000, true}, {2 << 20, false}} {
		text := strings.Repeat("x", tc.size)
		body, err := wire.Encode(ctx, wire.Compact, nil, &testsvc.TestEchoResult{Success: &text})
		if err != nil {
			t.Fatal(err)
		}
		frame := reply(t, "executeBatch", thrift.REPLY, 1, &batch.BatchServiceExecuteBatchResult{
			Success: &batch.BatchResponse{Responses: []*batch.Response{{Reply: body}}},
		})
		proto := thrift.NewTCompactProtocolConf(thrift.NewTFramedTransportConf(thrift.NewStreamTransport(bytes.NewReader(frame), io.Discard), nil), nil)
		c, err := New(proto, WithAcceptCodecs(), WithRequestCompression(batch.Codec_NONE, 0))
		if err != nil {
			t.Fatal(err)
		}
		b := c.NewBatch()
		echo := Add(b, "echo", &testsvc.TestEchoArgs{}, &testsvc.TestEchoResult{})
		if err := b.Execute(ctx); err != nil || echo.Err() != nil || echo.Result.GetSuccess() != text {
			t.Fatalf("a reply of %d bytes: %v, %v, %d bytes back", tc.size, err, echo.Err(), len(echo.Result.GetSuccess()))
		}
		if kept := c.framed.mem.Kept(); (kept > 0) != tc.kept {
			t.Errorf("a reply of %d bytes: the Client keeps a frame of %d bytes after Execute, want one: %v", tc.size, kept, tc.kept)
		}
		c.codecs.Close()
	}
}
