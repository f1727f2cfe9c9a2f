package processor_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/thriftbatch/thriftbatch/compress"
	"github.com/thriftbatch/thriftbatch/dispatcher"
	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/internal/seedcorpus"
	"github.com/thriftbatch/thriftbatch/internal/wire"
	"github.com/thriftbatch/thriftbatch/processor"
	"github.com/thriftbatch/thriftbatch/tests/testsvc"
)

// fuzzHandler implements testsvc.Test without sleeping, allocating by the
// client's numbers or panicking outside a batch, so that whatever goes
// wrong under the fuzzer is the processor's doing. Inside a batch, boom
// panics, as the dispatcher must survive.
type fuzzHandler struct{}

var _ testsvc.Test = fuzzHandler{}

func (fuzzHandler) Echo(_ context.Context, text string) (string, error) { return text, nil }

func (fuzzHandler) Divide(_ context.Context, a, b int32) (int32, error) {
	if b == 0 {
		return 0, &testsvc.DivideByZero{Why: "division by zero"}
	}
	if a == -1<<31 && b == -1 {
		return a, nil
	}
	return a / b, nil
}

func (fuzzHandler) Sleepy(_ context.Context, _ int32, tag int64) (int64, error) { return tag, nil }

func (fuzzHandler) Boom(ctx context.Context) error {
	if _, batched := dispatcher.CallFromContext(ctx); batched {
		panic("boom under the fuzzer")
	}
	return errors.New("boom outside a batch")
}

func (fuzzHandler) Failing(context.Context) error      { return errors.New("failing on purpose") }
func (fuzzHandler) Note(context.Context, string) error { return nil }

func (fuzzHandler) WhereAmI(ctx context.Context) (int32, error) {
	c, ok := dispatcher.CallFromContext(ctx)
	if !ok {
		return -1, nil
	}
	return int32(c.Index), nil
}

func (fuzzHandler) Items(_ context.Context, count int32) ([]*testsvc.Item, error) {
	items := make([]*testsvc.Item, max(0, min(count, 50)))
	for i := range items {
		items[i] = &testsvc.Item{Key: int64(i), Label: "item", Tags: []string{"t"}}
	}
	return items, nil
}

func (fuzzHandler) Nested(context.Context, string, int32) (int32, error) { return 0, nil }
func (fuzzHandler) Secret(context.Context) (string, error)               { return "secret", nil }

// fuzzProtocols are the protocols FuzzProcess reads its input with.
var fuzzProtocols = []struct {
	kind wire.Kind
	new  func(thrift.TTransport) thrift.TProtocol
}{
	{wire.Binary, func(t thrift.TTransport) thrift.TProtocol { return thrift.NewTBinaryProtocolConf(t, nil) }},
	{wire.Compact, func(t thrift.TTransport) thrift.TProtocol { return thrift.NewTCompactProtocolConf(t, nil) }},
}

// batchMessage encodes a CALL of executeBatch with the protocol of kind k.
func batchMessage(t testing.TB, k int, seq int32, r *batch.BatchRequest) []byte {
	t.Helper()
	ctx := context.Background()
	buf := thrift.NewTMemoryBuffer()
	p := fuzzProtocols[k].new(buf)
	if err := p.WriteMessageBegin(ctx, "executeBatch", thrift.CALL, seq); err != nil {
		t.Fatal(err)
	}
	if err := (&batch.BatchServiceExecuteBatchArgs{Request: r}).Write(ctx, p); err != nil {
		t.Fatal(err)
	}
	p.WriteMessageEnd(ctx)
	p.Flush(ctx)
	return bytes.Clone(buf.Bytes())
}

func encodeArgs(t testing.TB, k int, s thrift.TStruct) []byte {
	t.Helper()
	b, err := wire.Encode(context.Background(), fuzzProtocols[k].kind, nil, s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// process feeds in to p as a server's connection loop would: message after
// message until the input ends or Process says the connection is done. It
// returns what p wrote.
func process(p *processor.Processor, k int, in []byte) []byte {
	inBuf, outBuf := thrift.NewTMemoryBuffer(), thrift.NewTMemoryBuffer()
	inBuf.Write(in)
	ip, op := fuzzProtocols[k].new(inBuf), fuzzProtocols[k].new(outBuf)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for range 64 {
		if inBuf.Len() == 0 {
			break
		}
		ok, err := p.Process(ctx, ip, op)
		if err != nil || !ok {
			break
		}
	}
	return outBuf.Bytes()
}

// FuzzProcess feeds arbitrary bytes to Processor.Process through the binary
// and the compact protocol over a memory buffer, as a server reads them off a
// connection. Process must not panic nor hang, must leave no batch in
// flight, and must still answer a valid batch afterwards.
func FuzzProcess(f *testing.F) {
	p, err := processor.New(testsvc.NewTestProcessor(fuzzHandler{}),
		processor.WithMaxTimeout(2*time.Second),
		processor.WithMaxDecompressedBytes(1<<20),
		processor.WithMaxCalls(1000),
		processor.WithPoolSize(16))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.Close(ctx); err != nil {
			f.Errorf("Close: %v", err)
		}
	})
	var probes [2][]byte
	for k := range fuzzProtocols {
		probes[k] = batchMessage(f, k, 77, &batch.BatchRequest{Requests: []*batch.Request{
			{Method: "echo", Arguments: encodeArgs(f, k, &testsvc.TestEchoArgs{Text: "still here"}), ID: thrift.Int32Ptr(5)},
		}})
	}
	f.Fuzz(func(t *testing.T, kindB uint8, data []byte) {
		k := int(kindB) % len(fuzzProtocols)
		done := make(chan struct{})
		go func() {
			defer close(done)
			process(p, k, data)
		}()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Fatalf("Process did not return within 30 s for %q", data)
		}
		if s := p.Stats(); s.BatchesInFlight != 0 || s.Pool.BatchesInFlight != 0 {
			t.Fatalf("after Process returned: %d batches in flight, %d in the pool", s.BatchesInFlight, s.Pool.BatchesInFlight)
		}
		checkProbe(t, k, process(p, k, probes[k]))
	})
}

// checkProbe checks the answer to the probe batch of FuzzProcess.
func checkProbe(t *testing.T, k int, out []byte) {
	t.Helper()
	ctx := context.Background()
	buf := thrift.NewTMemoryBuffer()
	buf.Write(out)
	r := fuzzProtocols[k].new(buf)
	name, typ, seq, err := r.ReadMessageBegin(ctx)
	if err != nil || name != "executeBatch" || typ != thrift.REPLY || seq != 77 {
		t.Fatalf("probe answered %q %v %d (%v), want executeBatch REPLY 77", name, typ, seq, err)
	}
	var res batch.BatchServiceExecuteBatchResult
	if err := res.Read(ctx, r); err != nil {
		t.Fatalf("probe reply does not decode: %v", err)
	}
	if !res.IsSetSuccess() || len(res.Success.Responses) != 1 {
		t.Fatalf("probe answered %+v", res)
	}
	resp := res.Success.Responses[0]
	var echo testsvc.TestEchoResult
	if resp.GetID() != 5 || resp.Error != nil || wire.Decode(ctx, fuzzProtocols[k].kind, resp.Reply, &echo) != nil || echo.GetSuccess() != "still here" {
		t.Fatalf("probe call answered %+v", resp)
	}
}

// processSeeds returns the seed corpus of FuzzProcess, for each protocol:
// batches of every kind of call, compressed batches, refused batches,
// plain calls, a oneway batch, and inputs cut short or lying.
func processSeeds(t testing.TB) map[string][2][]byte {
	codecs, err := compress.New()
	if err != nil {
		t.Fatal(err)
	}
	defer codecs.Close()
	seeds := map[string][2][]byte{}
	add := func(name string, build func(k int) []byte) {
		var s [2][]byte
		for k := range fuzzProtocols {
			s[k] = build(k)
		}
		seeds[name] = s
	}
	calls := func(k int) []*batch.Request {
		return []*batch.Request{
			{Method: "echo", Arguments: encodeArgs(t, k, &testsvc.TestEchoArgs{Text: "hi"}), ID: thrift.Int32Ptr(1)},
			{Method: "divide", Arguments: encodeArgs(t, k, &testsvc.TestDivideArgs{A: 1, B: 0})},
			{Method: "boom", Arguments: encodeArgs(t, k, &testsvc.TestBoomArgs{})},
			{Method: "failing", Arguments: encodeArgs(t, k, &testsvc.TestFailingArgs{})},
			{Method: "note", Arguments: encodeArgs(t, k, &testsvc.TestNoteArgs{Text: "n"})},
			{Method: "whereAmI", Arguments: encodeArgs(t, k, &testsvc.TestWhereAmIArgs{})},
			{Method: "items", Arguments: encodeArgs(t, k, &testsvc.TestItemsArgs{Count: 3})},
			{Method: "sleepy", Arguments: encodeArgs(t, k, &testsvc.TestSleepyArgs{Millis: 1, Tag: 9})},
			{Method: "nope", Arguments: []byte{0}},
			{Method: "echo", Arguments: []byte{0xff, 0xff, 0xff}},
		}
	}
	add("batch-of-every-call", func(k int) []byte {
		return batchMessage(t, k, 1, &batch.BatchRequest{Requests: calls(k), AcceptCodecs: []batch.Codec{batch.Codec_ZSTD}, Sequential: thrift.BoolPtr(true)})
	})
	for _, codec := range compress.Supported {
		add("compressed-"+codec.String(), func(k int) []byte {
			raw := encodeArgs(t, k, &batch.BatchRequest{Requests: calls(k)})
			packed, err := codecs.Encode(codec, nil, raw)
			if err != nil {
				t.Fatal(err)
			}
			return batchMessage(t, k, 2, &batch.BatchRequest{RequestCodec: batch.CodecPtr(codec), CompressedRequests: packed, AcceptCodecs: []batch.Codec{codec}, TimeoutMillis: thrift.Int32Ptr(500)})
		})
	}
	add("nested-batch", func(k int) []byte {
		return batchMessage(t, k, 3, &batch.BatchRequest{Requests: []*batch.Request{{Method: "Svc:executeBatch"}}})
	})
	add("unsupported-codec", func(k int) []byte {
		return batchMessage(t, k, 4, &batch.BatchRequest{RequestCodec: batch.CodecPtr(batch.Codec(-1)), CompressedRequests: []byte("x")})
	})
	add("negative-timeout", func(k int) []byte {
		return batchMessage(t, k, 5, &batch.BatchRequest{Requests: calls(k)[:1], TimeoutMillis: thrift.Int32Ptr(-1)})
	})
	add("two-batches-then-a-plain-call", func(k int) []byte {
		out := batchMessage(t, k, 6, &batch.BatchRequest{Requests: calls(k)[:2]})
		out = append(out, batchMessage(t, k, 7, &batch.BatchRequest{})...)
		buf := thrift.NewTMemoryBuffer()
		p := fuzzProtocols[k].new(buf)
		ctx := context.Background()
		p.WriteMessageBegin(ctx, "echo", thrift.CALL, 8)
		(&testsvc.TestEchoArgs{Text: "plain"}).Write(ctx, p)
		p.WriteMessageEnd(ctx)
		return append(out, buf.Bytes()...)
	})
	add("oneway-batch", func(k int) []byte {
		buf := thrift.NewTMemoryBuffer()
		p := fuzzProtocols[k].new(buf)
		ctx := context.Background()
		p.WriteMessageBegin(ctx, "executeBatch", thrift.ONEWAY, 9)
		(&batch.BatchServiceExecuteBatchArgs{Request: &batch.BatchRequest{Requests: calls(k)}}).Write(ctx, p)
		p.WriteMessageEnd(ctx)
		return bytes.Clone(buf.Bytes())
	})
	add("truncated-batch", func(k int) []byte {
		b := batchMessage(t, k, 10, &batch.BatchRequest{Requests: calls(k)})
		return b[:len(b)/2]
	})
	add("list-claims-2^31-1-requests", func(k int) []byte {
		b := batchMessage(t, k, 11, &batch.BatchRequest{Requests: calls(k)[:1]})
		// Cut at the list header (binary: after the 24-byte message header
		// and two 3-byte field headers; compact: after 16 and two 1-byte
		// ones) and put a lying count there.
		if k == 0 {
			return append(b[:30:30], byte(thrift.STRUCT), 0x7f, 0xff, 0xff, 0xff, 0)
		}
		return append(b[:18:18], 0xfc, 0xff, 0xff, 0xff, 0xff, 0x07, 0)
	})
	add("garbage", func(k int) []byte { return []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n") })
	return seeds
}

// TestFuzzSeedCorpus checks that testdata/fuzz/FuzzProcess holds the seeds
// above, which go test runs as regular tests; -update-seeds rewrites them.
// Entries the fuzzer added (crashers) are left alone.
func TestFuzzSeedCorpus(t *testing.T) {
	for name, s := range processSeeds(t) {
		for k, data := range s {
			want := []byte(fmt.Sprintf("go test fuzz v1\nbyte(%q)\n[]byte(%q)\n", uint8(k), data))
			seedcorpus.Check(t, "FuzzProcess", fmt.Sprintf("%s-%s", fuzzProtocols[k].kind, name), want)
		}
	}
}
