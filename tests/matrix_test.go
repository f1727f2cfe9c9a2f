package tests

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/internal/wire"
	"github.com/thriftbatch/thriftbatch/processor"
	"github.com/thriftbatch/thriftbatch/tests/testsvc"
)

// protocols are the three encodings a batch can arrive in.
var protocols = []struct {
	name    string
	kind    wire.Kind
	factory thrift.TProtocolFactory
	header  thrift.THeaderProtocolID // THeader's id for it; JSON has none
}{
	{"binary", wire.Binary, thrift.NewTBinaryProtocolFactoryConf(nil), thrift.THeaderProtocolBinary},
	{"compact", wire.Compact, thrift.NewTCompactProtocolFactoryConf(nil), thrift.THeaderProtocolCompact},
	{"json", wire.JSON, thrift.NewTJSONProtocolFactory(), -1},
}

// TestEveryProtocolOverEveryTransport runs the same batch over each protocol
// and each transport a Thrift server offers: buffered, framed, zlib over
// framed, THeader without and with its zlib transform, and HTTP through
// thrift.NewThriftHandlerFunc. THeader carries only binary and compact, so
// JSON has no THeader rows.
func TestEveryProtocolOverEveryTransport(t *testing.T) {
	framed := thrift.NewTFramedTransportFactoryConf(thrift.NewTTransportFactory(), nil)
	for _, p := range protocols {
		transports := []struct {
			name    string
			factory thrift.TTransportFactory
			proto   thrift.TProtocolFactory
		}{
			{"buffered", thrift.NewTBufferedTransportFactory(8192), p.factory},
			{"framed", framed, p.factory},
			{"zlib over framed", thrift.NewTZlibTransportFactoryWithFactory(6, framed), p.factory},
		}
		if p.header >= 0 {
			plain := &thrift.TConfiguration{THeaderProtocolID: &p.header}
			zlib := &thrift.TConfiguration{THeaderProtocolID: &p.header, THeaderTransforms: []thrift.THeaderTransformID{thrift.TransformZlib}}
			transports = append(transports,
				struct {
					name    string
					factory thrift.TTransportFactory
					proto   thrift.TProtocolFactory
				}{"THeader", thrift.NewTHeaderTransportFactoryConf(thrift.NewTTransportFactory(), plain), thrift.NewTHeaderProtocolFactoryConf(plain)},
				struct {
					name    string
					factory thrift.TTransportFactory
					proto   thrift.TProtocolFactory
				}{"THeader with zlib", thrift.NewTHeaderTransportFactoryConf(thrift.NewTTransportFactory(), zlib), thrift.NewTHeaderProtocolFactoryConf(zlib)})
		}
		for _, tr := range transports {
			t.Run(p.name+" over "+tr.name, func(t *testing.T) {
				st := stack{p.name + "/" + tr.name, p.kind, tr.proto, tr.factory}
				addr, _ := serve(t, testsvc.NewTestProcessor(&handler{}), st)
				exerciseStack(t, dial(t, addr, st))
			})
		}
		t.Run(p.name+" over HTTP", func(t *testing.T) {
			st := stack{p.name + "/http", p.kind, p.factory, nil}
			exerciseStack(t, serveHTTP(t, st))
		})
	}
}

// exerciseStack sends a representative batch plain and with compressed
// requests and responses, then a plain call, and checks every answer.
func exerciseStack(t *testing.T, c *conn) {
	t.Helper()
	codecs := clientCodecs(t)
	reqs := []*batch.Request{
		c.req(t, "echo", &testsvc.TestEchoArgs{Text: "héllo, wörld"}),
		c.req(t, "divide", &testsvc.TestDivideArgs{A: 7, B: 0}),
		c.req(t, "nosuch", &testsvc.TestEchoArgs{}),
		c.req(t, "items", &testsvc.TestItemsArgs{Count: 200}),
	}
	check := func(t *testing.T, resps []*batch.Response) {
		t.Helper()
		if len(resps) != len(reqs) {
			t.Fatalf("%d responses for %d requests", len(resps), len(reqs))
		}
		var echo testsvc.TestEchoResult
		if c.decode(t, resps[0], &echo); echo.GetSuccess() != "héllo, wörld" {
			t.Errorf("echo = %q", echo.GetSuccess())
		}
		var div testsvc.TestDivideResult
		if c.decode(t, resps[1], &div); div.Oops == nil {
			t.Errorf("divide by zero raised no DivideByZero: %v", div)
		}
		if e := resps[2].Error; e == nil || e.Type != thrift.UNKNOWN_METHOD {
			t.Errorf("unknown method answered %v", resps[2])
		}
		var items testsvc.TestItemsResult
		if c.decode(t, resps[3], &items); len(items.GetSuccess()) != 200 || items.GetSuccess()[199].Key != 199 {
			t.Errorf("items: %d", len(items.GetSuccess()))
		}
	}
	t.Run("a plain batch", func(t *testing.T) {
		resp, err := c.execute(t, &batch.BatchRequest{Requests: reqs})
		if err != nil {
			t.Fatal(err)
		}
		check(t, resp.Responses)
	})
	t.Run("a batch compressed both ways with zstd", func(t *testing.T) {
		packed := c.compressRequests(t, codecs, batch.Codec_ZSTD, reqs)
		resp, err := c.execute(t, &batch.BatchRequest{RequestCodec: batch.CodecPtr(batch.Codec_ZSTD), CompressedRequests: packed, AcceptCodecs: []batch.Codec{batch.Codec_ZSTD}})
		if err != nil {
			t.Fatal(err)
		}
		check(t, c.decompressResponses(t, codecs, batch.Codec_ZSTD, resp))
	})
	t.Run("a plain call on the same connection", func(t *testing.T) {
		got, err := c.test.Echo(context.Background(), "plain")
		if err != nil || got != "plain" {
			t.Fatalf("echo = %q, %v", got, err)
		}
	})
}

// serveHTTP serves the wrapped test service over HTTP on loopback through
// thrift.NewThriftHandlerFunc, and returns a client connection to it.
func serveHTTP(t *testing.T, st stack) *conn {
	t.Helper()
	proc, err := processor.New(testsvc.NewTestProcessor(&handler{}))
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(thrift.NewThriftHandlerFunc(proc, st.protocol, st.protocol)), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("http shutdown: %v", err)
		}
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("http serve: %v", err)
		}
		if err := proc.Close(ctx); err != nil {
			t.Errorf("processor.Close: %v", err)
		}
	})
	trans, err := thrift.NewTHttpClientWithOptions("http://"+l.Addr().String()+"/", thrift.THttpClientOptions{Client: &http.Client{Timeout: 30 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { trans.Close() })
	proto := st.protocol.GetProtocol(trans)
	std := thrift.NewTStandardClient(proto, proto)
	return &conn{st: st, trans: trans, proto: proto, std: std, batch: batch.NewBatchServiceClient(std), test: testsvc.NewTestClient(std)}
}

// TestAManyCallBatch sends one batch of 10,000 calls and checks every answer
// against its own request.
func TestAManyCallBatch(t *testing.T) {
	addr, _ := serve(t, testsvc.NewTestProcessor(&handler{}), compactFramed)
	c := dial(t, addr, compactFramed)
	const n = 10_000
	reqs := make([]*batch.Request, n)
	for i := range reqs {
		reqs[i] = c.req(t, "echo", &testsvc.TestEchoArgs{Text: "call " + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + strconv.Itoa(i)})
		reqs[i].ID = thrift.Int32Ptr(int32(i))
	}
	resp, err := c.execute(t, &batch.BatchRequest{Requests: reqs})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Responses) != n {
		t.Fatalf("%d responses for %d calls", len(resp.Responses), n)
	}
	for i, r := range resp.Responses {
		var echo testsvc.TestEchoResult
		c.decode(t, r, &echo)
		want := "call " + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + strconv.Itoa(i)
		if echo.GetSuccess() != want || r.GetID() != int32(i) {
			t.Fatalf("response %d: %q with id %d, want %q with id %d", i, echo.GetSuccess(), r.GetID(), want, i)
		}
	}
}
