package tests

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/thriftbatch/thriftbatch/internal/bombs"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/internal/wire"
	"github.com/thriftbatch/thriftbatch/processor"
	"github.com/thriftbatch/thriftbatch/tests/testsvc"
)

// The hostile tests send bytes no client library would write, over a real
// loopback socket, to a server with the default limits. After each case the
// server must be alive and answer a normal batch on a fresh connection, and
// while the case ran the heap must not have grown by more than maxHeapGrowth
// nor the process allocated more than maxAllocated.

const (
	mib = 1 << 20
	gib = 1 << 30

	// maxHeapGrowth bounds the peak of HeapInuse above its level before a
	// case: 8 times the default decompression limit of 64 MiB, half of
	// what the bombs expand to. Decoding up to the limit legitimately holds
	// it up to about twice (the last buffer while it is copied into one
	// that stops at the limit: 96 to 113 MiB measured), and the race
	// detector's builds allocate more temporaries.
	maxHeapGrowth = 512 * mib
	// maxAllocated bounds the bytes allocated while a case runs, garbage
	// included: 16 times the default decompression limit. Above it, a
	// small request costs the server CPU out of proportion to the limit.
	maxAllocated = 1 * gib
)

// hostileStack is a stack the hostile tests speak, and whether it frames
// messages (TFramedTransport) or not (TBufferedTransport).
type hostileStack struct {
	stack
	framed bool
}

var hostileStacks = []hostileStack{{compactFramed, true}, {binaryBuffered, false}}

// frame returns msg as it travels on h: behind a 4-byte length when framed.
func (h hostileStack) frame(msg []byte) []byte {
	if !h.framed {
		return msg
	}
	return append(binary.BigEndian.AppendUint32(nil, uint32(len(msg))), msg...)
}

// msgWriter builds a message with h's protocol, and lets a case put raw bytes
// (lying lengths) where the protocol would not.
type msgWriter struct {
	ctx  context.Context
	kind wire.Kind
	buf  *thrift.TMemoryBuffer
	p    thrift.TProtocol
}

func (h hostileStack) writer() *msgWriter {
	buf := thrift.NewTMemoryBuffer()
	return &msgWriter{ctx: context.Background(), kind: h.kind, buf: buf, p: h.protocol.GetProtocol(buf)}
}

// raw appends bytes as they are.
func (w *msgWriter) raw(b ...byte) *msgWriter {
	w.p.Flush(w.ctx)
	w.buf.Write(b)
	return w
}

// length appends a length or element count as the protocol encodes one: a
// big-endian i32 in binary, a varint in compact.
func (w *msgWriter) length(n uint32) *msgWriter {
	if w.kind == wire.Compact {
		return w.raw(binary.AppendUvarint(nil, uint64(n))...)
	}
	return w.raw(binary.BigEndian.AppendUint32(nil, n)...)
}

// field appends a field header.
func (w *msgWriter) field(typ thrift.TType, id int16) *msgWriter {
	w.p.WriteFieldBegin(w.ctx, "", typ, id)
	return w
}

// begin starts a struct: the value of a STRUCT field, or an element.
func (w *msgWriter) begin() *msgWriter {
	w.p.WriteStructBegin(w.ctx, "")
	return w
}

// end ends a struct with its stop.
func (w *msgWriter) end() *msgWriter {
	w.p.WriteFieldStop(w.ctx)
	w.p.WriteStructEnd(w.ctx)
	return w
}

// header appends a message header of executeBatch or any name.
func (w *msgWriter) header(name string, typ thrift.TMessageType, seq int32) *msgWriter {
	w.p.WriteMessageBegin(w.ctx, name, typ, seq)
	return w
}

func (w *msgWriter) bytes() []byte {
	w.p.Flush(w.ctx)
	return bytes.Clone(w.buf.Bytes())
}

// batchMsg returns a whole executeBatch message of type typ carrying r.
func (h hostileStack) batchMsg(t testing.TB, typ thrift.TMessageType, seq int32, r *batch.BatchRequest) []byte {
	t.Helper()
	w := h.writer().header("executeBatch", typ, seq)
	if err := (&batch.BatchServiceExecuteBatchArgs{Request: r}).Write(w.ctx, w.p); err != nil {
		t.Fatal(err)
	}
	w.p.WriteMessageEnd(w.ctx)
	return w.bytes()
}

// args encodes a bare args struct with h's protocol.
func (h hostileStack) args(t testing.TB, s thrift.TStruct) []byte {
	t.Helper()
	b, err := wire.Encode(context.Background(), h.kind, nil, s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rawConn is a client that writes raw bytes and reads the server's answers
// with h's own transport and protocol.
type rawConn struct {
	h     hostileStack
	conn  *net.TCPConn
	proto thrift.TProtocol
}

func dialRaw(t testing.TB, addr string, h hostileStack) *rawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	// Generous: a slow answer is measured by the case, not cut short.
	sock := thrift.NewTSocketFromConnConf(c, &thrift.TConfiguration{SocketTimeout: 2 * time.Minute})
	trans, err := h.transport.GetTransport(sock)
	if err != nil {
		t.Fatal(err)
	}
	return &rawConn{h: h, conn: c.(*net.TCPConn), proto: h.protocol.GetProtocol(trans)}
}

// send writes b in one piece.
func (r *rawConn) send(t testing.TB, b []byte) {
	t.Helper()
	if _, err := r.conn.Write(b); err != nil {
		t.Fatalf("send %d bytes: %v", len(b), err)
	}
}

// hangUp closes the client's sending side: the server reads EOF, and the
// client can still read what the server answers.
func (r *rawConn) hangUp(t testing.TB) {
	t.Helper()
	if err := r.conn.CloseWrite(); err != nil {
		t.Fatal(err)
	}
}

// message reads one message: the result of a REPLY or the exception of an
// EXCEPTION.
func (r *rawConn) message(t testing.TB) (seq int32, res *batch.BatchServiceExecuteBatchResult, ex thrift.TApplicationException) {
	t.Helper()
	ctx := context.Background()
	name, typ, seq, err := r.proto.ReadMessageBegin(ctx)
	if err != nil {
		t.Fatalf("no answer from the server: %v", err)
	}
	switch typ {
	case thrift.REPLY:
		res = &batch.BatchServiceExecuteBatchResult{}
		if err := res.Read(ctx, r.proto); err != nil {
			t.Fatalf("REPLY %q does not decode: %v", name, err)
		}
	case thrift.EXCEPTION:
		ex = thrift.NewTApplicationException(thrift.UNKNOWN_APPLICATION_EXCEPTION, "")
		if err := ex.Read(ctx, r.proto); err != nil {
			t.Fatalf("EXCEPTION %q does not decode: %v", name, err)
		}
	default:
		t.Fatalf("answer %q of message type %v", name, typ)
	}
	if err := r.proto.ReadMessageEnd(ctx); err != nil {
		t.Fatal(err)
	}
	return seq, res, ex
}

// reply reads a REPLY to seq that holds a BatchResponse.
func (r *rawConn) reply(t testing.TB, seq int32) *batch.BatchResponse {
	t.Helper()
	got, res, ex := r.message(t)
	switch {
	case ex != nil:
		t.Fatalf("want a reply, got exception %d: %s", ex.TypeId(), ex.Error())
	case got != seq:
		t.Fatalf("reply to sequence id %d, want %d", got, seq)
	case res.Error != nil:
		t.Fatalf("want a reply, got BatchError %v: %s", res.Error.Code, res.Error.Message)
	case !res.IsSetSuccess():
		t.Fatal("reply without success or error")
	}
	return res.Success
}

// batchError reads a REPLY to seq holding a BatchError of code whose message
// holds every string of contains.
func (r *rawConn) batchError(t testing.TB, seq int32, code batch.BatchErrorCode, contains ...string) {
	t.Helper()
	got, res, ex := r.message(t)
	switch {
	case ex != nil:
		t.Fatalf("want BatchError %v, got exception %d: %s", code, ex.TypeId(), ex.Error())
	case got != seq:
		t.Fatalf("reply to sequence id %d, want %d", got, seq)
	case res.Error == nil:
		t.Fatalf("want BatchError %v, got %d responses", code, len(res.GetSuccess().GetResponses()))
	case res.Error.Code != code:
		t.Fatalf("want BatchError %v, got %v: %s", code, res.Error.Code, res.Error.Message)
	}
	for _, s := range contains {
		if !strings.Contains(res.Error.Message, s) {
			t.Errorf("BatchError message %q does not contain %q", res.Error.Message, s)
		}
	}
	t.Logf("BatchError %v: %s", res.Error.Code, res.Error.Message)
}

// exception reads an EXCEPTION holding a TApplicationException of type code
// whose message holds every string of contains (compared in lower case).
func (r *rawConn) exception(t testing.TB, code int32, contains ...string) {
	t.Helper()
	_, res, ex := r.message(t)
	if ex == nil {
		t.Fatalf("want exception %d, got a reply: %+v", code, res)
	}
	if ex.TypeId() != code {
		t.Fatalf("want exception %d, got %d: %s", code, ex.TypeId(), ex.Error())
	}
	for _, s := range contains {
		if !strings.Contains(strings.ToLower(ex.Error()), strings.ToLower(s)) {
			t.Errorf("exception message %q does not contain %q", ex.Error(), s)
		}
	}
	t.Logf("exception %d: %s", ex.TypeId(), ex.Error())
}

// closed checks that the server closes the connection with nothing more to
// say, within waitBound: the read ends in EOF or a reset, not a timeout.
func (r *rawConn) closed(t testing.TB) {
	t.Helper()
	var buf [1]byte
	// What the transport already buffered comes first.
	if _, _, _, err := r.proto.ReadMessageBegin(context.Background()); err == nil {
		t.Fatal("the server answered another message; want the connection closed")
	} else if !isClosed(err) {
		t.Fatalf("want the connection closed, got %v", err)
	}
	if n, err := r.conn.Read(buf[:]); n > 0 || !isClosed(err) {
		t.Fatalf("want the connection closed, read %d bytes, %v", n, err)
	}
}

func isClosed(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return false
	}
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, net.ErrClosed)
}

// heapProbe samples the heap while a case runs. It lowers GOGC to 10 for
// the while, so that HeapInuse follows the live heap closely: under the
// default of 100 the collector lets garbage grow as large as the live heap
// before reclaiming it, which would double the figures and make them depend
// on when it ran.
type heapProbe struct {
	base, total uint64
	peak        uint64
	gcPercent   int
	stop        chan struct{}
	done        chan struct{}
}

func startHeapProbe() *heapProbe {
	gcPercent := debug.SetGCPercent(10)
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	p := &heapProbe{base: m.HeapInuse, total: m.TotalAlloc, peak: m.HeapInuse, gcPercent: gcPercent, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			p.peak = max(p.peak, m.HeapInuse)
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return p
}

// end stops the probe and returns the peak growth of HeapInuse and the bytes
// allocated meanwhile.
func (p *heapProbe) end() (growth, allocated uint64) {
	close(p.stop)
	<-p.done
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	debug.SetGCPercent(p.gcPercent)
	p.peak = max(p.peak, m.HeapInuse)
	return p.peak - p.base, m.TotalAlloc - p.total
}

// hostileCase sends something hostile on a fresh raw connection and checks
// the server's answer.
type hostileCase struct {
	name   string
	framed *bool // nil: both stacks; else only the stack that frames or not
	run    func(t *testing.T, h hostileStack, r *rawConn)
}

// framed and unframed restrict a case to the stacks that frame messages or
// to those that do not.
var framed, unframed = true, false

func TestHostileInput(t *testing.T) {
	bombs := hostileBombs(t)
	for _, h := range hostileStacks {
		t.Run("over "+h.name, func(t *testing.T) {
			hd := &handler{}
			addr, proc := serve(t, testsvc.NewTestProcessor(hd), h.stack)
			for _, group := range [][]hostileCase{framingCases(), lyingCases(), nestingCases(), compressionCases(bombs), callCases(hd)} {
				for _, tc := range group {
					if tc.framed != nil && *tc.framed != h.framed {
						continue
					}
					t.Run(tc.name, func(t *testing.T) {
						probe := startHeapProbe()
						start := time.Now()
						r := dialRaw(t, addr, h)
						// Deferred, so that it runs after a failed check too:
						// the next case starts only once the server has
						// finished with this one.
						defer func() {
							r.conn.Close()
							waitIdle(t, proc)
							growth, allocated := probe.end()
							t.Logf("%s over %s: peak heap growth %.1f MiB, allocated %.1f MiB, %v",
								tc.name, h.name, float64(growth)/mib, float64(allocated)/mib, time.Since(start).Round(time.Millisecond))
							if growth > maxHeapGrowth {
								t.Errorf("the heap grew by %d MiB while the case ran, above the bound of %d MiB", growth/mib, maxHeapGrowth/mib)
							}
							if allocated > maxAllocated {
								t.Errorf("the case allocated %d MiB, above the bound of %d MiB", allocated/mib, maxAllocated/mib)
							}
							checkAlive(t, addr, h.stack)
						}()
						tc.run(t, h, r)
					})
				}
			}
		})
	}
}

// checkAlive runs a normal batch on a fresh connection.
func checkAlive(t *testing.T, addr string, st stack) {
	t.Helper()
	c, err := dialConn(addr, st)
	if err != nil {
		t.Fatalf("the server is gone: %v", err)
	}
	defer c.trans.Close()
	c.checkNormalBatch(t)
}

// echoBatch is a batch of two echo calls, answered by wantEchoes.
func (h hostileStack) echoBatch(t testing.TB) *batch.BatchRequest {
	return &batch.BatchRequest{Requests: []*batch.Request{
		{Method: "echo", Arguments: h.args(t, &testsvc.TestEchoArgs{Text: "first"}), ID: thrift.Int32Ptr(1)},
		{Method: "echo", Arguments: h.args(t, &testsvc.TestEchoArgs{Text: "second"}), ID: thrift.Int32Ptr(2)},
	}}
}

func (h hostileStack) wantEchoes(t testing.TB, resp *batch.BatchResponse) {
	t.Helper()
	if len(resp.Responses) != 2 {
		t.Fatalf("%d responses, want 2", len(resp.Responses))
	}
	for i, want := range []string{"first", "second"} {
		var res testsvc.TestEchoResult
		r := resp.Responses[i]
		if r.Error != nil || wire.Decode(context.Background(), h.kind, r.Reply, &res) != nil || res.GetSuccess() != want {
			t.Errorf("response %d = %+v, want echo %q", i, r, want)
		}
	}
}

// framingCases cut messages and frames short or make them lie.
func framingCases() []hostileCase {
	return []hostileCase{
		{"a frame claiming 1000 bytes followed by 10, then a hang-up, is dropped", &framed, func(t *testing.T, h hostileStack, r *rawConn) {
			r.send(t, append(binary.BigEndian.AppendUint32(nil, 1000), make([]byte, 10)...))
			r.hangUp(t)
			r.closed(t)
		}},
		{"a frame claiming 16,000,000 bytes followed by 64 KiB, then a hang-up, is dropped without reserving the frame", &framed, func(t *testing.T, h hostileStack, r *rawConn) {
			r.send(t, append(binary.BigEndian.AppendUint32(nil, 16_000_000), make([]byte, 64<<10)...))
			r.hangUp(t)
			r.closed(t)
		}},
		{"a frame claiming 2^31-1 bytes closes the connection at once", &framed, func(t *testing.T, h hostileStack, r *rawConn) {
			r.send(t, append(binary.BigEndian.AppendUint32(nil, math.MaxInt32), h.batchMsg(t, thrift.CALL, 1, h.echoBatch(t))...))
			r.closed(t)
		}},
		{"a frame claiming 2^32-1 bytes closes the connection at once", &framed, func(t *testing.T, h hostileStack, r *rawConn) {
			r.send(t, append(binary.BigEndian.AppendUint32(nil, math.MaxUint32), 0, 0, 0, 0))
			r.closed(t)
		}},
		{"empty frames before a batch are skipped and the batch is answered", &framed, func(t *testing.T, h hostileStack, r *rawConn) {
			r.send(t, append(make([]byte, 4*100), h.frame(h.batchMsg(t, thrift.CALL, 7, h.echoBatch(t)))...))
			h.wantEchoes(t, r.reply(t, 7))
		}},
		{"a frame holding two batch messages answers PROTOCOL_ERROR and closes, losing neither silently", &framed, func(t *testing.T, h hostileStack, r *rawConn) {
			two := append(h.batchMsg(t, thrift.CALL, 1, h.echoBatch(t)), h.batchMsg(t, thrift.CALL, 2, h.echoBatch(t))...)
			r.send(t, h.frame(two))
			r.exception(t, thrift.PROTOCOL_ERROR, "frame")
			r.closed(t)
		}},
		{"an empty frame and a hang-up close the connection", &framed, func(t *testing.T, h hostileStack, r *rawConn) {
			r.send(t, make([]byte, 4))
			r.hangUp(t)
			r.closed(t)
		}},
		{"a connection that sends nothing and hangs up is closed", &unframed, func(t *testing.T, h hostileStack, r *rawConn) {
			r.hangUp(t)
			r.closed(t)
		}},
		{"a message cut inside its header, then a hang-up, is dropped", nil, func(t *testing.T, h hostileStack, r *rawConn) {
			msg := h.batchMsg(t, thrift.CALL, 1, h.echoBatch(t))
			r.send(t, h.frame(msg[:7]))
			r.hangUp(t)
			r.closed(t)
		}},
		{"a batch cut mid-struct, then a hang-up, answers PROTOCOL_ERROR and closes", nil, func(t *testing.T, h hostileStack, r *rawConn) {
			msg := h.batchMsg(t, thrift.CALL, 1, h.echoBatch(t))
			r.send(t, h.frame(msg[:len(msg)-12]))
			r.hangUp(t)
			r.exception(t, thrift.PROTOCOL_ERROR, "eof")
			r.closed(t)
		}},
		{"bytes that are not Thrift at all close the connection", nil, func(t *testing.T, h hostileStack, r *rawConn) {
			r.send(t, h.frame([]byte("GET / HTTP/1.1\r\nHost: thriftbatch\r\n\r\n")))
			r.hangUp(t)
			r.closed(t)
		}},
	}
}

// lyingCases carry lengths far beyond what follows. The server must refuse
// them from the length alone, without waiting for the bytes (the client
// does not hang up) or reserving memory for them.
func lyingCases() []hostileCase {
	// batchPrefix starts an executeBatch CALL up to the list of requests.
	batchPrefix := func(h hostileStack, seq int32) *msgWriter {
		return h.writer().header("executeBatch", thrift.CALL, seq).begin().field(thrift.STRUCT, 1).begin().field(thrift.LIST, 1)
	}
	// oneRequest starts a list of one Request.
	oneRequest := func(w *msgWriter) *msgWriter {
		w.p.WriteListBegin(w.ctx, thrift.STRUCT, 1)
		return w.begin()
	}
	return []hostileCase{
		{"a list claiming 2^31-1 requests answers PROTOCOL_ERROR and closes", nil, func(t *testing.T, h hostileStack, r *rawConn) {
			w := batchPrefix(h, 1)
			w.p.WriteListBegin(w.ctx, thrift.STRUCT, math.MaxInt32)
			r.send(t, h.frame(w.raw(make([]byte, 32)...).bytes()))
			r.exception(t, thrift.PROTOCOL_ERROR, "list begin", "2147483647")
			r.closed(t)
		}},
		{"arguments claiming 2^31-1 bytes (2 GiB) answer PROTOCOL_ERROR and close", nil, func(t *testing.T, h hostileStack, r *rawConn) {
			w := oneRequest(batchPrefix(h, 1)).field(thrift.STRING, 1)
			w.p.WriteString(w.ctx, "echo")
			w.field(thrift.STRING, 2).length(math.MaxInt32).raw([]byte("only this")...)
			r.send(t, h.frame(w.bytes()))
			r.exception(t, thrift.PROTOCOL_ERROR, "size", "2147483647")
			r.closed(t)
		}},
		{"a method name claiming 1 GiB answers PROTOCOL_ERROR and closes", nil, func(t *testing.T, h hostileStack, r *rawConn) {
			w := oneRequest(batchPrefix(h, 1)).field(thrift.STRING, 1).length(gib).raw([]byte("echo")...)
			r.send(t, h.frame(w.bytes()))
			r.exception(t, thrift.PROTOCOL_ERROR, "size", "1073741824")
			r.closed(t)
		}},
		{"a message name claiming 1 GiB closes the connection", nil, func(t *testing.T, h hostileStack, r *rawConn) {
			w := h.writer()
			if h.kind == wire.Compact {
				w.raw(0x82, 0x21, 0x01) // protocol id, version 1 and CALL, sequence id 1
			} else {
				w.raw(0x80, 0x01, 0x00, byte(thrift.CALL))
			}
			w.length(gib).raw([]byte("executeBatch")...)
			r.send(t, h.frame(w.bytes()))
			r.closed(t)
		}},
		{"a list claiming 2^31-1 codecs in acceptCodecs answers PROTOCOL_ERROR and closes", nil, func(t *testing.T, h hostileStack, r *rawConn) {
			w := h.writer().header("executeBatch", thrift.CALL, 1).begin().field(thrift.STRUCT, 1).begin().field(thrift.LIST, 4)
			w.p.WriteListBegin(w.ctx, thrift.I32, math.MaxInt32)
			r.send(t, h.frame(w.raw(1, 2, 3).bytes()))
			r.exception(t, thrift.PROTOCOL_ERROR, "list begin")
			r.closed(t)
		}},
		{"compressedRequests claiming 90 MB, below Thrift's message limit, are read as they come, then a hang-up answers PROTOCOL_ERROR", nil, func(t *testing.T, h hostileStack, r *rawConn) {
			w := h.writer().header("executeBatch", thrift.CALL, 1).begin().field(thrift.STRUCT, 1).begin().field(thrift.STRING, 3).length(90_000_000)
			r.send(t, h.frame(w.raw(make([]byte, 256<<10)...).bytes()))
			r.hangUp(t)
			r.exception(t, thrift.PROTOCOL_ERROR)
			r.closed(t)
		}},
		{"10,001 calls, over the default limit, answer TOO_MANY_CALLS", nil, func(t *testing.T, h hostileStack, r *rawConn) {
			reqs := make([]*batch.Request, processor.DefaultMaxCalls+1)
			for i := range reqs {
				reqs[i] = &batch.Request{Method: "note", Arguments: []byte{0}}
			}
			r.send(t, h.frame(h.batchMsg(t, thrift.CALL, 3, &batch.BatchRequest{Requests: reqs})))
			r.batchError(t, 3, batch.BatchErrorCode_TOO_MANY_CALLS, "10001 calls", "limit is 10000")
		}},
	}
}

// nested returns the encoding, with h's protocol, of a struct holding
// field id of type STRUCT or LIST nested depth levels deep.
func (h hostileStack) nested(typ thrift.TType, id int16, depth int) []byte {
	w := h.writer().begin().field(typ, id)
	for range depth - 1 {
		if typ == thrift.STRUCT {
			w.begin().field(thrift.STRUCT, 1)
		} else {
			w.p.WriteListBegin(w.ctx, thrift.LIST, 1)
		}
	}
	if typ == thrift.STRUCT {
		w.begin().end()
		for range depth - 1 {
			w.end()
		}
	} else {
		w.p.WriteListBegin(w.ctx, thrift.I32, 0)
	}
	return w.end().bytes()
}

// nestingCases nest structs and lists 10,000 deep; the library's recursion
// limit (64) must refuse them without exhausting the stack.
func nestingCases() []hostileCase {
	const depth = 10_000
	var cases []hostileCase
	for _, typ := range []thrift.TType{thrift.STRUCT, thrift.LIST} {
		kind := map[thrift.TType]string{thrift.STRUCT: "structs", thrift.LIST: "lists"}[typ]
		cases = append(cases,
			hostileCase{fmt.Sprintf("echo arguments of %d nested %s where a string is expected answer PROTOCOL_ERROR for that call only", depth, kind), nil, func(t *testing.T, h hostileStack, r *rawConn) {
				req := h.echoBatch(t)
				req.Requests = append(req.Requests, &batch.Request{Method: "echo", Arguments: h.nested(typ, 1, depth), ID: thrift.Int32Ptr(3)})
				r.send(t, h.frame(h.batchMsg(t, thrift.CALL, 4, req)))
				resp := r.reply(t, 4)
				if len(resp.Responses) != 3 {
					t.Fatalf("%d responses, want 3", len(resp.Responses))
				}
				wantCallError(t, resp.Responses[2], thrift.PROTOCOL_ERROR)
				if !strings.Contains(strings.ToLower(resp.Responses[2].Error.Message), "depth") {
					t.Errorf("CallError %q does not name the depth limit", resp.Responses[2].Error.Message)
				}
				resp.Responses = resp.Responses[:2]
				h.wantEchoes(t, resp)
			}},
			hostileCase{fmt.Sprintf("a Request with an unknown field of %d nested %s answers PROTOCOL_ERROR and closes", depth, kind), nil, func(t *testing.T, h hostileStack, r *rawConn) {
				w := h.writer().header("executeBatch", thrift.CALL, 5).begin().field(thrift.STRUCT, 1).begin().field(thrift.LIST, 1)
				w.p.WriteListBegin(w.ctx, thrift.STRUCT, 1)
				w.raw(h.nested(typ, 15, depth)...) // a Request with an unknown field 15
				w.end().end()                      // BatchRequest, args
				w.p.WriteMessageEnd(w.ctx)
				r.send(t, h.frame(w.bytes()))
				r.exception(t, thrift.PROTOCOL_ERROR, "depth")
				r.closed(t)
			}},
		)
	}
	return cases
}

// bomb is a compressed payload that expands far beyond the limit.
type bomb struct {
	name    string
	codec   batch.Codec
	payload []byte
	expands string // what the payload expands to (or claims to)
}

// hostileBombs returns a payload per codec that expands to (or claims) about
// 1 GiB of zeros, in at most about 1 MB, without ever holding the gigabyte.
func hostileBombs(t testing.TB) []bomb {
	t.Helper()
	copies := gib / 258
	gz, gzn := bombs.Gzip(copies)
	zl, zln := bombs.Zlib(copies)
	var frames []byte
	for range gib / mib {
		frames = append(frames, bombs.Zstd(mib, true, false)...)
	}
	return []bomb{
		{"zstd RLE blocks without a declared size", batch.Codec_ZSTD, bombs.Zstd(gib, false, false), "1 GiB"},
		{"zstd single-segment frame declaring its size", batch.Codec_ZSTD, bombs.Zstd(gib, true, true), "1 GiB"},
		{"zstd stream of 1024 frames of 1 MiB", batch.Codec_ZSTD, frames, "1 GiB"},
		{"snappy block claiming 1 GiB", batch.Codec_SNAPPY, bombs.SnappyClaim(gib), "1 GiB (claimed)"},
		{"s2 block of repeat codes", batch.Codec_S2, bombs.S2(gib), "1 GiB"},
		{"gzip member at the DEFLATE ratio limit", batch.Codec_GZIP, gz, fmt.Sprintf("%d bytes", gzn)},
		{"zlib stream at the DEFLATE ratio limit", batch.Codec_ZLIB, zl, fmt.Sprintf("%d bytes", zln)},
	}
}

func compressionCases(list []bomb) []hostileCase {
	var cases []hostileCase
	for _, b := range list {
		cases = append(cases, hostileCase{fmt.Sprintf("a %s bomb of %d bytes expanding to %s answers TOO_MANY_BYTES", b.name, len(b.payload), b.expands), nil, func(t *testing.T, h hostileStack, r *rawConn) {
			r.send(t, h.frame(h.batchMsg(t, thrift.CALL, 9, &batch.BatchRequest{RequestCodec: batch.CodecPtr(b.codec), CompressedRequests: b.payload})))
			r.batchError(t, 9, batch.BatchErrorCode_TOO_MANY_BYTES, b.codec.String(), fmt.Sprint(len(b.payload)), fmt.Sprint(processor.DefaultMaxDecompressedBytes))
		}})
	}
	cases = append(cases, hostileCase{"a zstd stream of 256 frames of 64 KiB of zeros (16 MiB, within the limit) in 4.6 KB is an empty batch, decoded at a cost in proportion", nil, func(t *testing.T, h hostileStack, r *rawConn) {
		var frames []byte
		for range 256 {
			frames = append(frames, bombs.Zstd(64<<10, true, false)...)
		}
		// Zeros decode as a BatchRequest without fields: no calls.
		r.send(t, h.frame(h.batchMsg(t, thrift.CALL, 9, &batch.BatchRequest{RequestCodec: batch.CodecPtr(batch.Codec_ZSTD), CompressedRequests: frames})))
		if resp := r.reply(t, 9); len(resp.Responses) != 0 {
			t.Errorf("%d responses, want none", len(resp.Responses))
		}
	}})
	wide := bombs.ZstdWindow(24, []byte("tiny")) // a 16 MiB window
	cases = append(cases, hostileCase{fmt.Sprintf("a %d-byte zstd frame declaring a 16 MiB window answers TOO_MANY_BYTES naming the window", len(wide)), nil, func(t *testing.T, h hostileStack, r *rawConn) {
		r.send(t, h.frame(h.batchMsg(t, thrift.CALL, 9, &batch.BatchRequest{RequestCodec: batch.CodecPtr(batch.Codec_ZSTD), CompressedRequests: wide})))
		r.batchError(t, 9, batch.BatchErrorCode_TOO_MANY_BYTES, "ZSTD", "window", fmt.Sprint(8<<20))
	}})
	cases = append(cases, hostileCase{"a snappy block claiming exactly the limit with 4 bytes of body answers CORRUPT_PAYLOAD", nil, func(t *testing.T, h hostileStack, r *rawConn) {
		r.send(t, h.frame(h.batchMsg(t, thrift.CALL, 9, &batch.BatchRequest{RequestCodec: batch.CodecPtr(batch.Codec_SNAPPY), CompressedRequests: bombs.SnappyClaim(processor.DefaultMaxDecompressedBytes)[:8]})))
		r.batchError(t, 9, batch.BatchErrorCode_CORRUPT_PAYLOAD, "SNAPPY")
	}})
	for _, v := range []int32{99, -1, math.MaxInt32, math.MinInt32, 6} {
		cases = append(cases, hostileCase{fmt.Sprintf("requestCodec %d answers UNSUPPORTED_CODEC naming it", v), nil, func(t *testing.T, h hostileStack, r *rawConn) {
			r.send(t, h.frame(h.batchMsg(t, thrift.CALL, 10, &batch.BatchRequest{RequestCodec: batch.CodecPtr(batch.Codec(v)), CompressedRequests: []byte("anything")})))
			r.batchError(t, 10, batch.BatchErrorCode_UNSUPPORTED_CODEC, fmt.Sprintf("Codec(%d)", v))
		}})
	}
	cases = append(cases, hostileCase{"acceptCodecs of only unknown values get a plain answer", nil, func(t *testing.T, h hostileStack, r *rawConn) {
		req := h.echoBatch(t)
		req.AcceptCodecs = []batch.Codec{99, -1, math.MaxInt32, batch.Codec_NONE}
		r.send(t, h.frame(h.batchMsg(t, thrift.CALL, 11, req)))
		resp := r.reply(t, 11)
		if resp.GetCodec() != batch.Codec_NONE || resp.CompressedResponses != nil {
			t.Errorf("answered with codec %v and %d compressed bytes", resp.GetCodec(), len(resp.CompressedResponses))
		}
		h.wantEchoes(t, resp)
	}})
	noise := make([]byte, 4096)
	rand.NewChaCha8([32]byte{7}).Read(noise)
	for _, codec := range allCodecs {
		cases = append(cases,
			hostileCase{fmt.Sprintf("4 KiB of random bytes as %v compressedRequests answer CORRUPT_PAYLOAD", codec), nil, func(t *testing.T, h hostileStack, r *rawConn) {
				r.send(t, h.frame(h.batchMsg(t, thrift.CALL, 12, &batch.BatchRequest{RequestCodec: batch.CodecPtr(codec), CompressedRequests: noise})))
				r.batchError(t, 12, batch.BatchErrorCode_CORRUPT_PAYLOAD, codec.String())
			}},
			hostileCase{fmt.Sprintf("empty %v compressedRequests answer CORRUPT_PAYLOAD", codec), nil, func(t *testing.T, h hostileStack, r *rawConn) {
				r.send(t, h.frame(h.batchMsg(t, thrift.CALL, 13, &batch.BatchRequest{RequestCodec: batch.CodecPtr(codec), CompressedRequests: []byte{}})))
				r.batchError(t, 13, batch.BatchErrorCode_CORRUPT_PAYLOAD)
			}},
		)
	}
	cases = append(cases, hostileCase{"compressedRequests that hold compressedRequests are decompressed once: the inner ones are ignored", nil, func(t *testing.T, h hostileStack, r *rawConn) {
		codecs := clientCodecs(t)
		inner, err := codecs.Encode(batch.Codec_ZSTD, nil, h.args(t, &batch.BatchRequest{Requests: h.echoBatch(t).Requests}))
		if err != nil {
			t.Fatal(err)
		}
		outer, err := codecs.Encode(batch.Codec_ZSTD, nil, h.args(t, &batch.BatchRequest{RequestCodec: batch.CodecPtr(batch.Codec_ZSTD), CompressedRequests: inner}))
		if err != nil {
			t.Fatal(err)
		}
		r.send(t, h.frame(h.batchMsg(t, thrift.CALL, 14, &batch.BatchRequest{RequestCodec: batch.CodecPtr(batch.Codec_ZSTD), CompressedRequests: outer})))
		if resp := r.reply(t, 14); len(resp.Responses) != 0 {
			t.Errorf("%d responses, want none: the inner payload must not be decompressed", len(resp.Responses))
		}
	}})
	return cases
}

// callCases are batches whose calls, names or message types are hostile.
func callCases(hd *handler) []hostileCase {
	return []hostileCase{
		{"a whole batch as the arguments of a call of executeBatch answers NESTED_BATCH", nil, func(t *testing.T, h hostileStack, r *rawConn) {
			inner := h.args(t, &batch.BatchServiceExecuteBatchArgs{Request: h.echoBatch(t)})
			req := h.echoBatch(t)
			req.Requests = append(req.Requests, &batch.Request{Method: "Any:executeBatch", Arguments: inner})
			r.send(t, h.frame(h.batchMsg(t, thrift.CALL, 20, req)))
			r.batchError(t, 20, batch.BatchErrorCode_NESTED_BATCH, "request 2", "Any:executeBatch")
		}},
		{"method names of invalid UTF-8 answer UNKNOWN_METHOD with a readable message", nil, func(t *testing.T, h hostileStack, r *rawConn) {
			req := h.echoBatch(t)
			for _, name := range []string{"\xff\xfe\xfd", "ech\xc0", "echo\x00", "\xed\xa0\x80"} {
				req.Requests = append(req.Requests, &batch.Request{Method: name, Arguments: h.args(t, &testsvc.TestEchoArgs{Text: "never"})})
			}
			r.send(t, h.frame(h.batchMsg(t, thrift.CALL, 21, req)))
			resp := r.reply(t, 21)
			if len(resp.Responses) != 6 {
				t.Fatalf("%d responses, want 6", len(resp.Responses))
			}
			for _, got := range resp.Responses[2:] {
				wantCallError(t, got, thrift.UNKNOWN_METHOD, "unknown method")
				if !utf8.ValidString(got.Error.Message) {
					t.Errorf("CallError message %q is not valid UTF-8", got.Error.Message)
				}
			}
			resp.Responses = resp.Responses[:2]
			h.wantEchoes(t, resp)
			if _, echoes, _ := hd.snapshot(); strings.Contains(strings.Join(echoes, " "), "never") {
				t.Error("a call with an invalid method name ran")
			}
		}},
		{"a plain call named in invalid UTF-8 answers UNKNOWN_METHOD and the connection goes on", nil, func(t *testing.T, h hostileStack, r *rawConn) {
			w := h.writer().header("\xff\xfe", thrift.CALL, 30)
			(&testsvc.TestEchoArgs{Text: "x"}).Write(w.ctx, w.p)
			w.p.WriteMessageEnd(w.ctx)
			r.send(t, append(h.frame(w.bytes()), h.frame(h.batchMsg(t, thrift.CALL, 31, h.echoBatch(t)))...))
			r.exception(t, thrift.UNKNOWN_METHOD)
			h.wantEchoes(t, r.reply(t, 31))
		}},
		{"a batch named with an invalid UTF-8 service prefix is served as a batch", nil, func(t *testing.T, h hostileStack, r *rawConn) {
			w := h.writer().header("\xff\xfe:executeBatch", thrift.CALL, 32)
			(&batch.BatchServiceExecuteBatchArgs{Request: h.echoBatch(t)}).Write(w.ctx, w.p)
			w.p.WriteMessageEnd(w.ctx)
			r.send(t, h.frame(w.bytes()))
			h.wantEchoes(t, r.reply(t, 32))
		}},
		{"batches sent as ONEWAY, REPLY, EXCEPTION or an invalid message type run nothing and answer nothing, and the connection goes on", nil, func(t *testing.T, h hostileStack, r *rawConn) {
			before, _, _ := hd.snapshot()
			note := &batch.BatchRequest{Requests: []*batch.Request{{Method: "note", Arguments: h.args(t, &testsvc.TestNoteArgs{Text: "must not run"})}}}
			var msgs []byte
			for i, typ := range []thrift.TMessageType{thrift.ONEWAY, thrift.REPLY, thrift.EXCEPTION, 7} {
				msgs = append(msgs, h.frame(h.batchMsg(t, typ, int32(40+i), note))...)
			}
			msgs = append(msgs, h.frame(h.batchMsg(t, thrift.CALL, 49, h.echoBatch(t)))...)
			r.send(t, msgs)
			h.wantEchoes(t, r.reply(t, 49)) // the first answer is the CALL's
			if after, _, _ := hd.snapshot(); len(after) != len(before) {
				t.Errorf("a batch not sent as a CALL ran: %q", after[len(before):])
			}
		}},
		{"a batch sent as ONEWAY with arguments that do not decode closes the connection", nil, func(t *testing.T, h hostileStack, r *rawConn) {
			w := h.writer().header("executeBatch", thrift.ONEWAY, 50).raw(0xff, 0xff, 0xff, 0xff)
			r.send(t, h.frame(w.bytes()))
			r.hangUp(t)
			r.closed(t)
		}},
	}
}

// TestTConfigurationBoundsBatchesReadInMemory: over the compact protocol on
// a framed transport the processor reads a batch's frame itself, so the
// container limit of the server's configuration reaches it through
// processor.WithTConfiguration, as it reaches the library's protocol.
func TestTConfigurationBoundsBatchesReadInMemory(t *testing.T) {
	for _, tc := range []struct {
		limit int32
		ok    bool
	}{{3, true}, {2, false}} {
		t.Run(fmt.Sprintf("MaxContainerSize %d", tc.limit), func(t *testing.T) {
			addr, _ := serve(t, testsvc.NewTestProcessor(&handler{}), compactFramed,
				processor.WithTConfiguration(&thrift.TConfiguration{MaxContainerSize: tc.limit}))
			c := dial(t, addr, compactFramed)
			echo := func(s string) *batch.Request { return c.req(t, "echo", &testsvc.TestEchoArgs{Text: s}) }
			_, err := c.batch.ExecuteBatch(context.Background(), &batch.BatchRequest{Requests: []*batch.Request{echo("a"), echo("b"), echo("c")}})
			var ex thrift.TApplicationException
			switch {
			case tc.ok && err != nil:
				t.Fatalf("a batch of 3 calls: %v", err)
			case !tc.ok && (!errors.As(err, &ex) || ex.TypeId() != thrift.PROTOCOL_ERROR || !strings.Contains(ex.Error(), "exceeds the limit of 2")):
				t.Fatalf("a batch of 3 calls: %v, want PROTOCOL_ERROR naming the limit", err)
			}
		})
	}
}
