package tests

import (
	"context"
	"net"
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

var (
	binaryBuffered = stack{"binary/buffered", wire.Binary, thrift.NewTBinaryProtocolFactoryConf(nil), thrift.NewTBufferedTransportFactory(8192)}
	compactFramed  = stack{"compact/framed", wire.Compact, thrift.NewTCompactProtocolFactoryConf(nil), thrift.NewTFramedTransportFactoryConf(thrift.NewTTransportFactory(), nil)}
	jsonFramed     = stack{"json/framed", wire.JSON, thrift.NewTJSONProtocolFactory(), thrift.NewTFramedTransportFactoryConf(thrift.NewTTransportFactory(), nil)}
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

func serveProcessor(t testing.TB, proc *processor.Processor, st stack) string {
	t.Helper()
	sock, err := thrift.NewTServerSocket("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := sock.Listen(); err != nil {
		t.Fatal(err)
	}
	srv := thrift.NewTSimpleServer4(proc, sock, st.transport, st.protocol)
	done := make(chan error, 1)
	go func() { done <- srv.Serve() }()
	t.Cleanup(func() {
		srv.Stop()
		<-done
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := proc.Close(ctx); err != nil {
			t.Errorf("processor.Close: %v", err)
		}
	})
	return sock.Addr().String()
}

// conn is a client connection speaking st.
type conn struct {
	st    stack
	trans thrift.TTransport
	std   *thrift.TStandardClient
	batch *batch.BatchServiceClient
	test  *testsvc.TestClient
}

func dial(t testing.TB, addr string, st stack) *conn {
	t.Helper()
	sock := thrift.NewTSocketConf(addr, &thrift.TConfiguration{ConnectTimeout: 5 * time.Second, SocketTimeout: 30 * time.Second})
	trans, err := st.transport.GetTransport(sock)
	if err != nil {
		t.Fatal(err)
	}
	if err := trans.Open(); err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { trans.Close() })
	proto := st.protocol.GetProtocol(trans)
	std := thrift.NewTStandardClient(proto, proto)
	return &conn{st: st, trans: trans, std: std, batch: batch.NewBatchServiceClient(std), test: testsvc.NewTestClient(std)}
}

// req encodes one call of a batch.
func (c *conn) req(t testing.TB, method string, args thrift.TStruct) *batch.Request {
	t.Helper()
	b, err := wire.Encode(context.Background(), c.st.kind, nil, args)
	if err != nil {
		t.Fatalf("encode %s args: %v", method, err)
	}
	return &batch.Request{Method: method, Arguments: b}
}

// execute sends reqs as one batch and fails the test on a transport error.
func (c *conn) execute(t testing.TB, r *batch.BatchRequest) (*batch.BatchResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := c.batch.ExecuteBatch(ctx, r)
	if err != nil {
		var be *batch.BatchError
		if asBatchError(err, &be) {
			return nil, be
		}
		t.Fatalf("executeBatch: %v", err)
	}
	return resp, nil
}

func asBatchError(err error, target **batch.BatchError) bool {
	be, ok := err.(*batch.BatchError)
	if ok {
		*target = be
	}
	return ok
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

func freePort(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
