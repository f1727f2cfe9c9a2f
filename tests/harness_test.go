package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/internal/wire"
	"github.com/thriftbatch/thriftbatch/processor"
	"github.com/thriftbatch/thriftbatch/tests/testsvc"
)

// stack is one protocol and transport combination, used on both ends.
type stack struct {
	name      string
	kind      wire.Kind
	protocol  thrift.TProtocolFactory
	transport thrift.TTransportFactory
}

func headerConf(id thrift.THeaderProtocolID) *thrift.TConfiguration {
	return &thrift.TConfiguration{THeaderProtocolID: &id}
}

var (
	binaryBuffered = stack{"binary/buffered", wire.Binary, thrift.NewTBinaryProtocolFactoryConf(nil), thrift.NewTBufferedTransportFactory(8192)}
	compactFramed  = stack{"compact/framed", wire.Compact, thrift.NewTCompactProtocolFactoryConf(nil), thrift.NewTFramedTransportFactoryConf(thrift.NewTTransportFactory(), nil)}
	jsonFramed     = stack{"json/framed", wire.JSON, thrift.NewTJSONProtocolFactory(), thrift.NewTFramedTransportFactoryConf(thrift.NewTTransportFactory(), nil)}
	headerBinary   = stack{"theader/binary", wire.Binary,
		thrift.NewTHeaderProtocolFactoryConf(headerConf(thrift.THeaderProtocolBinary)),
		thrift.NewTHeaderTransportFactoryConf(thrift.NewTTransportFactory(), headerConf(thrift.THeaderProtocolBinary))}
	headerCompact = stack{"theader/compact", wire.Compact,
		thrift.NewTHeaderProtocolFactoryConf(headerConf(thrift.THeaderProtocolCompact)),
		thrift.NewTHeaderTransportFactoryConf(thrift.NewTTransportFactory(), headerConf(thrift.THeaderProtocolCompact))}

	// plainStacks are the three protocols the nested payloads can use.
	plainStacks = []stack{binaryBuffered, compactFramed, jsonFramed}
	// allStacks adds THeader with either protocol inside.
	allStacks = []stack{binaryBuffered, compactFramed, jsonFramed, headerBinary, headerCompact}
)

// serve starts a TSimpleServer on loopback serving inner wrapped by a
// Processor, and stops both when the test ends.
func serve(t testing.TB, inner thrift.TProcessor, st stack, opts ...processor.Option) (string, *processor.Processor) {
	t.Helper()
	proc, err := processor.New(inner, opts...)
	if err != nil {
		t.Fatalf("processor.New: %v", err)
	}
	return serveProcessor(t, proc, st), proc
}

// serveProcessor serves proc (or anything wrapping it) on loopback and, when
// the test ends, stops the server and closes proc.
func serveProcessor(t testing.TB, proc *processor.Processor, st stack) string {
	t.Helper()
	return serveWith(t, proc, st, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := proc.Close(ctx); err != nil {
			t.Errorf("processor.Close: %v", err)
		}
	})
}

// serveWith serves p on loopback and runs after once the server has stopped.
func serveWith(t testing.TB, p thrift.TProcessor, st stack, after func()) string {
	t.Helper()
	sock, err := thrift.NewTServerSocket("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := sock.Listen(); err != nil {
		t.Fatal(err)
	}
	srv := thrift.NewTSimpleServer4(p, sock, st.transport, st.protocol)
	done := make(chan error, 1)
	go func() { done <- srv.Serve() }()
	t.Cleanup(func() {
		srv.Stop()
		<-done
		after()
	})
	return sock.Addr().String()
}

// conn is a client connection speaking st.
type conn struct {
	st    stack
	trans thrift.TTransport
	proto thrift.TProtocol
	std   *thrift.TStandardClient
	batch *batch.BatchServiceClient
	test  *testsvc.TestClient
}

// dialConn opens a connection without a testing.TB, for handlers that call
// the server themselves. The caller closes it.
func dialConn(addr string, st stack) (*conn, error) {
	sock := thrift.NewTSocketConf(addr, &thrift.TConfiguration{ConnectTimeout: 5 * time.Second, SocketTimeout: 30 * time.Second})
	trans, err := st.transport.GetTransport(sock)
	if err != nil {
		return nil, err
	}
	if err := trans.Open(); err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	proto := st.protocol.GetProtocol(trans)
	std := thrift.NewTStandardClient(proto, proto)
	return &conn{st: st, trans: trans, proto: proto, std: std, batch: batch.NewBatchServiceClient(std), test: testsvc.NewTestClient(std)}, nil
}

func dial(t testing.TB, addr string, st stack) *conn {
	t.Helper()
	c, err := dialConn(addr, st)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.trans.Close() })
	return c
}

// multiplexed returns clients on c's connection that name their messages
// "<service>:<method>", as a TMultiplexedProtocol client does.
func (c *conn) multiplexed(service string) (*batch.BatchServiceClient, *testsvc.TestClient) {
	mp := thrift.NewTMultiplexedProtocol(c.proto, service)
	std := thrift.NewTStandardClient(mp, mp)
	return batch.NewBatchServiceClient(std), testsvc.NewTestClient(std)
}

// encode encodes a bare struct with the connection's protocol.
func (c *conn) encode(t testing.TB, s thrift.TStruct) []byte {
	t.Helper()
	b, err := wire.Encode(context.Background(), c.st.kind, nil, s)
	if err != nil {
		t.Fatalf("encode %T: %v", s, err)
	}
	return b
}

// req encodes one call of a batch.
func (c *conn) req(t testing.TB, method string, args thrift.TStruct) *batch.Request {
	t.Helper()
	return &batch.Request{Method: method, Arguments: c.encode(t, args)}
}

// reqID is req with a Request.id.
func (c *conn) reqID(t testing.TB, id int32, method string, args thrift.TStruct) *batch.Request {
	t.Helper()
	r := c.req(t, method, args)
	r.ID = thrift.Int32Ptr(id)
	return r
}

// execute sends r as one batch and fails the test on a transport error. A
// BatchError comes back as the error.
func (c *conn) execute(t testing.TB, r *batch.BatchRequest) (*batch.BatchResponse, error) {
	t.Helper()
	return c.executeCtx(t, context.Background(), r)
}

func (c *conn) executeCtx(t testing.TB, ctx context.Context, r *batch.BatchRequest) (*batch.BatchResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := c.batch.ExecuteBatch(ctx, r)
	if err != nil {
		var be *batch.BatchError
		if errors.As(err, &be) {
			return nil, be
		}
		t.Fatalf("executeBatch: %v", err)
	}
	return resp, nil
}

// run sends reqs as one batch, fails the test unless it ran, and checks that
// there is one response per request.
func (c *conn) run(t testing.TB, reqs ...*batch.Request) []*batch.Response {
	t.Helper()
	return c.runBatch(t, &batch.BatchRequest{Requests: reqs})
}

func (c *conn) runBatch(t testing.TB, r *batch.BatchRequest) []*batch.Response {
	t.Helper()
	resp, err := c.execute(t, r)
	if err != nil {
		t.Fatalf("executeBatch refused the batch: %v", err)
	}
	if resp.IsSetCodec() && resp.GetCodec() != batch.Codec_NONE {
		t.Fatalf("unexpected compressed answer with codec %v", resp.GetCodec())
	}
	if len(resp.Responses) != len(r.Requests) {
		t.Fatalf("got %d responses to %d requests", len(resp.Responses), len(r.Requests))
	}
	return resp.Responses
}

// refused sends r, expects a BatchError with code, and returns its message.
func (c *conn) refused(t testing.TB, r *batch.BatchRequest, code batch.BatchErrorCode) string {
	t.Helper()
	resp, err := c.execute(t, r)
	if err == nil {
		t.Fatalf("want BatchError %v, got %d responses (codec %v)", code, len(resp.Responses), resp.GetCodec())
	}
	be := err.(*batch.BatchError)
	if be.Code != code {
		t.Fatalf("want BatchError %v, got %v: %s", code, be.Code, be.Message)
	}
	return be.Message
}

// decode reads a reply into result and fails the test when the call
// answered with a CallError or the reply does not decode.
func (c *conn) decode(t testing.TB, r *batch.Response, result thrift.TStruct) {
	t.Helper()
	if r.Error != nil {
		t.Fatalf("call failed: type %d: %s", r.Error.Type, r.Error.Message)
	}
	if r.Reply == nil {
		t.Fatal("response has neither reply nor error")
	}
	if err := wire.Decode(context.Background(), c.st.kind, r.Reply, result); err != nil {
		t.Fatalf("decode reply: %v", err)
	}
}

// echoed decodes an echo reply.
func (c *conn) echoed(t testing.TB, r *batch.Response) string {
	t.Helper()
	var res testsvc.TestEchoResult
	c.decode(t, r, &res)
	if !res.IsSetSuccess() {
		t.Fatalf("echo reply without success: %+v", res)
	}
	return res.GetSuccess()
}

// slept decodes a sleepy reply.
func (c *conn) slept(t testing.TB, r *batch.Response) int64 {
	t.Helper()
	var res testsvc.TestSleepyResult
	c.decode(t, r, &res)
	if !res.IsSetSuccess() {
		t.Fatalf("sleepy reply without success: %+v", res)
	}
	return res.GetSuccess()
}

// checkNormalBatch sends an ordinary batch of two echo calls and checks it
// answers: the connection survived whatever came before.
func (c *conn) checkNormalBatch(t testing.TB) {
	t.Helper()
	out := c.run(t,
		c.reqID(t, 1, "echo", &testsvc.TestEchoArgs{Text: "still"}),
		c.reqID(t, 2, "echo", &testsvc.TestEchoArgs{Text: "serving"}))
	if got := c.echoed(t, out[0]) + " " + c.echoed(t, out[1]); got != "still serving" {
		t.Fatalf("follow-up batch answered %q", got)
	}
	if out[0].GetID() != 1 || out[1].GetID() != 2 {
		t.Fatalf("follow-up batch ids %d, %d", out[0].GetID(), out[1].GetID())
	}
}

// wantCallError checks that r is a CallError of type code whose message
// holds every string of contains.
func wantCallError(t testing.TB, r *batch.Response, code int32, contains ...string) {
	t.Helper()
	if r.Error == nil {
		t.Fatalf("want CallError type %d, got a reply of %d bytes", code, len(r.Reply))
	}
	if r.Reply != nil {
		t.Errorf("response has both a reply and an error")
	}
	if r.Error.Type != code {
		t.Fatalf("want CallError type %d, got %d: %s", code, r.Error.Type, r.Error.Message)
	}
	for _, s := range contains {
		if !strings.Contains(r.Error.Message, s) {
			t.Errorf("CallError message %q does not contain %q", r.Error.Message, s)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a logger.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// lines returns the JSON log lines written so far.
func (b *syncBuffer) lines(t testing.TB) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, l := range bytes.Split(bytes.TrimSpace(b.buf.Bytes()), []byte("\n")) {
		if len(l) == 0 {
			continue
		}
		m := map[string]any{}
		if err := json.Unmarshal(l, &m); err != nil {
			t.Fatalf("log line %q is not JSON: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

// find returns the log lines whose message is msg.
func (b *syncBuffer) find(t testing.TB, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range b.lines(t) {
		if l["message"] == msg {
			out = append(out, l)
		}
	}
	return out
}

// callCtx returns a context for one plain client call, bounded so that no
// test can hang on it.
func callCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}
