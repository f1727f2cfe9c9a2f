package processor

import (
	"bytes"
	"context"
	"encoding/binary"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/apache/thrift/lib/go/thrift"
	"github.com/rs/zerolog"

	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/internal/poll"
	"github.com/thriftbatch/thriftbatch/internal/wire"
	"github.com/thriftbatch/thriftbatch/tests/testsvc"
)

// within reports whether b lies inside frame.
func within(frame, b []byte) bool {
	if len(b) == 0 {
		return false
	}
	start := uintptr(unsafe.Pointer(unsafe.SliceData(frame)))
	at := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	return at >= start && at < start+uintptr(len(frame))
}

func TestDetachCopiesArgumentsOutOfALargelyUnusedFrame(t *testing.T) {
	for _, tc := range []struct {
		name     string
		frame    int // bytes in the frame
		detached bool
	}{
		{"arguments are most of the frame", 300, false},
		{"the unused rest is small", 40 << 10, false},
		{"the unused rest is over 64 KiB but arguments are most of the frame", 1 << 20, false},
		{"the unused rest is over 64 KiB and most of the frame", 1 << 20, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			frame := bytes.Repeat([]byte{0xee}, tc.frame)
			copy(frame, "aaaabbbbbbcc")
			req := &batch.BatchRequest{
				Requests: []*batch.Request{
					{Method: "x", Arguments: frame[0:4:4]},
					{Method: "y", Arguments: frame[4:10:10]},
					{Method: "z", Arguments: frame[10:10:10]}, // empty, not nil
					{Method: "w"}, // nil
				},
				CompressedRequests: frame[10:12:12],
			}
			switch tc.name {
			case "arguments are most of the frame":
				req.Requests[1].Arguments = frame[4:200:200]
			case "the unused rest is over 64 KiB but arguments are most of the frame":
				req.Requests[1].Arguments = frame[4 : 600<<10 : 600<<10]
			}
			want := [][]byte{bytes.Clone(req.Requests[0].Arguments), bytes.Clone(req.Requests[1].Arguments)}
			detach(req, len(frame))
			for i, w := range want {
				got := req.Requests[i].Arguments
				if !bytes.Equal(got, w) || cap(got) != len(got) {
					t.Errorf("request %d: arguments %q (cap %d), want %q", i, got, cap(got), w)
				}
				if within(frame, got) == tc.detached {
					t.Errorf("request %d: arguments in the frame: %v, want %v", i, within(frame, got), !tc.detached)
				}
			}
			if a := req.Requests[2].Arguments; a == nil || len(a) != 0 {
				t.Errorf("empty arguments became %#v", a)
			}
			if a := req.Requests[3].Arguments; a != nil {
				t.Errorf("nil arguments became %#v", a)
			}
			if got := req.CompressedRequests; string(got) != "cc" || within(frame, got) == tc.detached {
				t.Errorf("compressedRequests %q, in the frame: %v", got, within(frame, got))
			}
		})
	}
}

// handlerFunc adapts execute to the generated BatchService, so that the
// generated executeBatch function can serve as the reference for
// batchFunction.
type handlerFunc func(ctx context.Context, req *batch.BatchRequest) (*batch.BatchResponse, error)

func (f handlerFunc) ExecuteBatch(ctx context.Context, req *batch.BatchRequest) (*batch.BatchResponse, error) {
	return f(ctx, req)
}

type echoHandler struct{ testsvc.Test }

func (echoHandler) Echo(_ context.Context, s string) (string, error) { return s, nil }

// frameOf returns msg as one frame of the compact protocol: what the client
// writes for executeBatch's header and body built by write.
func frameOf(t *testing.T, typeID thrift.TMessageType, seqID int32, write func(thrift.TProtocol) error) []byte {
	t.Helper()
	buf := thrift.NewTMemoryBuffer()
	p := thrift.NewTCompactProtocolConf(thrift.NewTFramedTransportConf(buf, nil), nil)
	ctx := context.Background()
	if err := p.WriteMessageBegin(ctx, "executeBatch", typeID, seqID); err != nil {
		t.Fatal(err)
	}
	if err := write(p); err != nil {
		t.Fatal(err)
	}
	if err := p.WriteMessageEnd(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// answer is what a processor function wrote: a message read back.
type answer struct {
	typeID thrift.TMessageType
	seqID  int32
	result batch.BatchServiceExecuteBatchResult
	exType int32
	ok     bool
}

// serveFrame runs fn on one compact frame as a server would, and reads back
// what it wrote.
func serveFrame(t *testing.T, fn thrift.TProcessorFunction, frame []byte) answer {
	t.Helper()
	ctx := context.Background()
	in := thrift.NewTCompactProtocolConf(thrift.NewTFramedTransportConf(thrift.NewStreamTransportR(bytes.NewReader(frame)), nil), nil)
	outBuf := thrift.NewTMemoryBuffer()
	out := thrift.NewTCompactProtocolConf(thrift.NewTFramedTransportConf(outBuf, nil), nil)
	_, _, seqID, err := in.ReadMessageBegin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ok, _ := fn.Process(context.WithValue(ctx, protocolKey{}, in), seqID, in, out)
	back := thrift.NewTCompactProtocolConf(thrift.NewTFramedTransportConf(outBuf, nil), nil)
	a := answer{ok: ok}
	if _, a.typeID, a.seqID, err = back.ReadMessageBegin(ctx); err != nil {
		t.Fatalf("no message written: %v", err)
	}
	if a.typeID == thrift.EXCEPTION {
		ex := thrift.NewTApplicationException(0, "")
		if err := ex.Read(ctx, back); err != nil {
			t.Fatal(err)
		}
		a.exType = ex.TypeId()
		return a
	}
	if err := a.result.Read(ctx, back); err != nil {
		t.Fatal(err)
	}
	return a
}

// TestBatchFunctionAnswersAsTheGeneratedOne runs batchFunction and the
// function the Thrift compiler generates for executeBatch, over the same
// handler, on the same frames of the compact protocol on a framed transport
// (the path batchFunction reads and writes in memory), and compares what
// they write: message type and seqid, the reply, or the exception's code.
func TestBatchFunctionAnswersAsTheGeneratedOne(t *testing.T) {
	p, err := New(testsvc.NewTestProcessor(echoHandler{}), WithMaxCalls(3))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	ours := batchFunction{p}
	gen := batch.NewBatchServiceProcessor(handlerFunc(func(ctx context.Context, req *batch.BatchRequest) (*batch.BatchResponse, error) {
		if err := p.enter(); err != nil {
			return nil, err
		}
		defer p.gate.Exit()
		proto := ctx.Value(protocolKey{}).(thrift.TProtocol)
		kind, err := wire.KindOf(proto)
		if err != nil {
			return nil, err
		}
		resp, release, err := p.execute(ctx, kind, proto, req, 0)
		// The generated function writes the response after this returns:
		// hand it a copy of the responses, which outlives the release.
		if resp != nil {
			kept := *resp
			kept.Responses = make([]*batch.Response, len(resp.Responses))
			for i, r := range resp.Responses {
				c := *r
				c.Reply = bytes.Clone(r.Reply)
				kept.Responses[i] = &c
			}
			resp = &kept
		}
		release()
		return resp, err
	})).ProcessorMap()["executeBatch"]

	args := func(req *batch.BatchRequest) func(thrift.TProtocol) error {
		return func(p thrift.TProtocol) error {
			return (&batch.BatchServiceExecuteBatchArgs{Request: req}).Write(context.Background(), p)
		}
	}
	echo := func(s string) *batch.Request {
		b, err := wire.Encode(context.Background(), wire.Compact, nil, &testsvc.TestEchoArgs{Text: s})
		if err != nil {
			t.Fatal(err)
		}
		return &batch.Request{Method: "echo", Arguments: b, ID: thrift.Int32Ptr(7)}
	}
	raw := func(b ...byte) func(thrift.TProtocol) error {
		return func(p thrift.TProtocol) error { _, err := p.Transport().Write(b); return err }
	}
	for _, tc := range []struct {
		name  string
		write func(thrift.TProtocol) error
	}{
		{"a batch of echoes", args(&batch.BatchRequest{Requests: []*batch.Request{echo("a"), echo("b")}})},
		{"an unknown method and arguments that do not decode", args(&batch.BatchRequest{Requests: []*batch.Request{
			{Method: "nope", Arguments: []byte{0}}, {Method: "echo", Arguments: []byte{0x18, 0x09}}}})},
		{"more calls than WithMaxCalls", args(&batch.BatchRequest{Requests: []*batch.Request{echo("a"), echo("b"), echo("c"), echo("d")}})},
		{"more calls than WithMaxCalls and compressedRequests", args(&batch.BatchRequest{
			Requests: []*batch.Request{echo("a"), echo("b"), echo("c"), echo("d")}, RequestCodec: batch.CodecPtr(batch.Codec_ZSTD), CompressedRequests: []byte("x")})},
		{"more calls than WithMaxCalls, one of them garbled", raw(0x1c, 0x19, 0x4c, 0x1e, 0, 0, 0, 0, 0, 0)},
		{"a nested executeBatch", args(&batch.BatchRequest{Requests: []*batch.Request{{Method: "executeBatch", Arguments: []byte{0}}}})},
		{"compressedRequests that do not decompress", args(&batch.BatchRequest{RequestCodec: batch.CodecPtr(batch.Codec_ZSTD), CompressedRequests: []byte("no")})},
		{"no request at all", raw(0)},
		{"a list claiming 2^31-1 requests", raw(0x1c, 0x19, 0xfc, 0xff, 0xff, 0xff, 0xff, 0x07, 0)},
		{"arguments cut short", raw(0x1c, 0x19, 0x1c, 0x28, 0x05, 'a')},
		{"an unknown field type", raw(0x1e, 0, 0)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			frame := frameOf(t, thrift.CALL, 42, tc.write)
			got, want := serveFrame(t, ours, frame), serveFrame(t, gen, frame)
			if got.typeID != want.typeID || got.seqID != want.seqID || got.exType != want.exType || got.ok != want.ok {
				t.Fatalf("ours wrote type %v seqid %d exception %d (ok %v), the generated function type %v seqid %d exception %d (ok %v)",
					got.typeID, got.seqID, got.exType, got.ok, want.typeID, want.seqID, want.exType, want.ok)
			}
			if !got.result.Success.Equals(want.result.Success) || !got.result.Error.Equals(want.result.Error) {
				t.Fatalf("ours replied %v / %v, the generated function %v / %v", got.result.Success, got.result.Error, want.result.Success, want.result.Error)
			}
		})
	}

	tooMany := frameOf(t, thrift.CALL, 43, args(&batch.BatchRequest{Requests: []*batch.Request{echo("a"), echo("b"), echo("c"), echo("d")}}))
	t.Run("bytes after a message of too many calls", func(t *testing.T) {
		// The generated function reads the message and leaves the bytes
		// for the next; batchFunction refuses them, as for any batch.
		frame := append(bytes.Clone(tooMany), 1, 2, 3)
		binary.BigEndian.PutUint32(frame, uint32(len(frame)-4)) // the frame's length
		if got := serveFrame(t, ours, frame); got.typeID != thrift.EXCEPTION || got.exType != thrift.PROTOCOL_ERROR {
			t.Fatalf("type %v, exception %d; want a PROTOCOL_ERROR exception", got.typeID, got.exType)
		}
	})
	t.Run("more calls than WithMaxCalls while closing", func(t *testing.T) {
		if err := p.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		got, want := serveFrame(t, ours, tooMany), serveFrame(t, gen, tooMany)
		if !got.result.Error.Equals(want.result.Error) || want.result.Error.GetCode() != batch.BatchErrorCode_SHUTTING_DOWN {
			t.Fatalf("ours refused with %v, the generated function with %v; want SHUTTING_DOWN", got.result.Error, want.result.Error)
		}
	})
}

// lateBoom is echoHandler whose boom waits for gate, whatever its context
// says, and then panics.
type lateBoom struct {
	echoHandler
	gate chan struct{}
}

func (h lateBoom) Boom(context.Context) error {
	<-h.gate
	panic("boom after the batch ended")
}

// lockedLog is a log the handler's panic is written to from a helper while
// the test reads it.
type lockedLog struct {
	sync.Mutex
	b bytes.Buffer
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.Lock()
	defer l.Unlock()
	return l.b.Write(p)
}

func (l *lockedLog) String() string {
	l.Lock()
	defer l.Unlock()
	return l.b.String()
}

// TestAbandonedBatchKeepsItsRequestMemory: the memory a batch's request was
// read into goes to the next batch only once every call of the batch has
// returned, whether the batch was answered or refused after its calls ran
// (here for a response over WithMaxResponseBytes). A call abandoned at the
// deadline still reads its Request when it ends (here, the method name for
// the log of its panic): had the next batch's request been read into the
// same memory, the log would name another method, or none, and the race
// detector would see the two.
func TestAbandonedBatchKeepsItsRequestMemory(t *testing.T) {
	for _, refused := range []bool{false, true} {
		name := "answered"
		if refused {
			name = "refused for its response's size"
		}
		t.Run(name, func(t *testing.T) {
			// A few times: the pool memory goes back to may drop it
			// (it does at random under the race detector), and then
			// no batch could reuse it.
			for range 4 {
				abandonThenServe(t, refused)
			}
		})
	}
}

// abandonThenServe serves a batch whose call of boom is abandoned (with,
// when refused, an echo whose reply is over the response limit), then
// batches of echoes, then lets the abandoned call end, and checks its log.
func abandonThenServe(t *testing.T, refused bool) {
	var log lockedLog
	h := lateBoom{gate: make(chan struct{})}
	p, err := New(testsvc.NewTestProcessor(h), WithLogger(zerolog.New(&log)), WithMaxResponseBytes(500))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	ours := batchFunction{p}
	echo := func(text string) *batch.Request {
		args, err := wire.Encode(context.Background(), wire.Compact, nil, &testsvc.TestEchoArgs{Text: text})
		if err != nil {
			t.Fatal(err)
		}
		return &batch.Request{Method: "echo", Arguments: args}
	}
	boom := frameOf(t, thrift.CALL, 1, func(w thrift.TProtocol) error {
		req := &batch.BatchRequest{Requests: []*batch.Request{{Method: "boom", Arguments: []byte{0}}}, TimeoutMillis: thrift.Int32Ptr(20)}
		if refused {
			req.Requests = append(req.Requests, echo(strings.Repeat("x", 1000)))
		}
		return (&batch.BatchServiceExecuteBatchArgs{Request: req}).Write(context.Background(), w)
	})
	a := serveFrame(t, ours, boom)
	switch {
	case refused && a.result.Error.GetCode() != batch.BatchErrorCode_RESPONSE_TOO_LARGE:
		t.Fatalf("the batch of boom and a long echo answered %v, want RESPONSE_TOO_LARGE", a.result)
	case !refused && (a.result.Success == nil || a.result.Success.Responses[0].Error.GetType() != batch.CALL_DEADLINE_EXCEEDED):
		t.Fatalf("the batch of boom answered %v, want CALL_DEADLINE_EXCEEDED", a.result)
	}
	echoes := frameOf(t, thrift.CALL, 2, func(w thrift.TProtocol) error {
		req := &batch.BatchRequest{}
		for range 8 {
			req.Requests = append(req.Requests, echo("x"))
		}
		return (&batch.BatchServiceExecuteBatchArgs{Request: req}).Write(context.Background(), w)
	})
	for range 4 {
		if a := serveFrame(t, ours, echoes); a.result.Success == nil || len(a.result.Success.Responses) != 8 {
			t.Fatalf("a batch of echoes answered %v", a.result)
		}
	}
	close(h.gate)
	if !poll.Until(5*time.Second, func() bool { return strings.Contains(log.String(), "handler panicked") }) {
		t.Fatalf("no panic logged 5 s after the abandoned call was let go; log: %s", log.String())
	}
	if !strings.Contains(log.String(), `"method":"boom"`) {
		t.Errorf("the abandoned call's panic was logged as %s, want method boom", log.String())
	}
}

// TestProcessHandsItsRequestMemoryOn: once a batch whose calls all returned
// has been answered, the memory its request was read into goes back for the
// next batch: the frame, still holding the request's bytes in its array. The
// pool may drop what it is given (it does at random under the race
// detector), so the test asks for it in one of 16 batches, not in each.
func TestProcessHandsItsRequestMemoryOn(t *testing.T) {
	p, err := New(testsvc.NewTestProcessor(echoHandler{}))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	ours := batchFunction{p}
	const marker = "a request only this test sends"
	args, err := wire.Encode(context.Background(), wire.Compact, nil, &testsvc.TestEchoArgs{Text: marker})
	if err != nil {
		t.Fatal(err)
	}
	frame := frameOf(t, thrift.CALL, 1, func(w thrift.TProtocol) error {
		req := &batch.BatchRequest{Requests: []*batch.Request{{Method: "echo", Arguments: args}}}
		return (&batch.BatchServiceExecuteBatchArgs{Request: req}).Write(context.Background(), w)
	})
	for range 16 {
		if a := serveFrame(t, ours, frame); a.result.Success == nil || a.result.Success.Responses[0].Error != nil {
			t.Fatalf("the batch answered %v", a.result)
		}
		// An empty frame read into the memory leaves the array of the
		// last frame read into it, whose bytes are still there.
		m := getMemory()
		empty := m.ReadFrame(thrift.NewTFramedTransportConf(thrift.NewTMemoryBuffer(), nil))
		kept := bytes.Contains(empty[:cap(empty)], []byte(marker))
		putMemory(m)
		if kept {
			return
		}
	}
	t.Error("no batch of 16 handed the memory of its request on")
}

// opaque is a protocol the processor does not know: its embedded field is
// not a thrift.TProtocol, so wire.KindOf cannot see the binary protocol in it.
type opaque struct{ *thrift.TBinaryProtocol }

// TestAnUnknownProtocolIsAnsweredInvalidProtocol: a batch on a protocol the
// processor cannot encode calls for is answered with the INVALID_PROTOCOL
// TApplicationException execute builds, unchanged, not wrapped in an
// INTERNAL_ERROR.
func TestAnUnknownProtocolIsAnsweredInvalidProtocol(t *testing.T) {
	p, err := New(testsvc.NewTestProcessor(echoHandler{}))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	ctx := context.Background()
	in, out := thrift.NewTMemoryBuffer(), thrift.NewTMemoryBuffer()
	w := thrift.NewTBinaryProtocolConf(in, nil)
	if err := (&batch.BatchServiceExecuteBatchArgs{Request: &batch.BatchRequest{}}).Write(ctx, w); err != nil {
		t.Fatal(err)
	}
	proto := opaque{thrift.NewTBinaryProtocolConf(in, nil)}
	ok, terr := batchFunction{p}.Process(context.WithValue(ctx, protocolKey{}, proto), 5, proto, thrift.NewTBinaryProtocolConf(out, nil))
	if !ok || terr == nil {
		t.Errorf("Process = %v, %v; want true and the exception", ok, terr)
	}
	r := thrift.NewTBinaryProtocolConf(out, nil)
	_, typ, seq, err := r.ReadMessageBegin(ctx)
	if err != nil || typ != thrift.EXCEPTION || seq != 5 {
		t.Fatalf("answer header: type %v, seqid %d, %v; want an EXCEPTION with seqid 5", typ, seq, err)
	}
	ex := thrift.NewTApplicationException(0, "")
	if err := ex.Read(ctx, r); err != nil {
		t.Fatal(err)
	}
	if ex.TypeId() != thrift.INVALID_PROTOCOL || strings.Contains(ex.Error(), "Internal error") || !strings.Contains(ex.Error(), "opaque") {
		t.Errorf("exception %d %q, want INVALID_PROTOCOL (%d) naming the protocol's type", ex.TypeId(), ex.Error(), thrift.INVALID_PROTOCOL)
	}
	if s := p.Stats(); s.BatchesInFlight != 0 || s.Refused != 0 {
		t.Errorf("Stats() = %+v; want no batch in flight, none refused with a BatchError", s)
	}
}
