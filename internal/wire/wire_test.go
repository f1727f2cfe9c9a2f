package wire_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/internal/wire"
	"github.com/thriftbatch/thriftbatch/tests/testsvc"
)

var kinds = []wire.Kind{wire.Binary, wire.Compact, wire.JSON}

// libProtocol returns the library's own protocol of kind k over buf: the
// reference the package is checked against.
func libProtocol(k wire.Kind, buf thrift.TTransport) thrift.TProtocol {
	switch k {
	case wire.Binary:
		return thrift.NewTBinaryProtocolConf(buf, nil)
	case wire.Compact:
		return thrift.NewTCompactProtocolConf(buf, nil)
	case wire.JSON:
		return thrift.NewTJSONProtocol(buf)
	}
	panic(k)
}

// serialize encodes s as a bare struct with the library's own protocol.
func serialize(t testing.TB, k wire.Kind, s thrift.TStruct) []byte {
	t.Helper()
	buf := thrift.NewTMemoryBuffer()
	p := libProtocol(k, buf)
	if err := s.Write(context.Background(), p); err != nil {
		t.Fatalf("%s Write: %v", k, err)
	}
	if err := p.Flush(context.Background()); err != nil {
		t.Fatalf("%s Flush: %v", k, err)
	}
	return bytes.Clone(buf.Bytes())
}

// deserialize decodes a bare struct with the library's own protocol.
func deserialize(t testing.TB, k wire.Kind, b []byte, s thrift.TStruct) {
	t.Helper()
	buf := thrift.NewTMemoryBuffer()
	buf.Write(b)
	if err := s.Read(context.Background(), libProtocol(k, buf)); err != nil {
		t.Fatalf("%s Read of %q: %v", k, b, err)
	}
}

func headerConf(id thrift.THeaderProtocolID) *thrift.TConfiguration {
	return &thrift.TConfiguration{THeaderProtocolID: &id}
}

// wrapper is a middleware-style protocol that embeds the one it wraps.
type wrapper struct {
	thrift.TProtocol
	calls int
}

// notFirst embeds a TProtocol, but not as its first field.
type notFirst struct {
	calls int
	thrift.TProtocol
}

// namedField holds a TProtocol in a named field.
type namedField struct {
	P thrift.TProtocol
	*thrift.TBinaryProtocol
}

func TestKindOf(t *testing.T) {
	mem := func() *thrift.TMemoryBuffer { return thrift.NewTMemoryBuffer() }
	binary := thrift.NewTBinaryProtocolConf(mem(), nil)
	compact := thrift.NewTCompactProtocolConf(mem(), nil)
	json := thrift.NewTJSONProtocol(mem())
	for _, tc := range []struct {
		name  string
		proto thrift.TProtocol
		want  wire.Kind
	}{
		{"TBinaryProtocol is binary", binary, wire.Binary},
		{"TBinaryProtocol in strict-write mode is binary", thrift.NewTBinaryProtocol(mem(), false, true), wire.Binary},
		{"TCompactProtocol is compact", compact, wire.Compact},
		{"TJSONProtocol is JSON", json, wire.JSON},
		{"THeaderProtocol set to binary is binary",
			thrift.NewTHeaderProtocolConf(thrift.NewTHeaderTransportConf(mem(), headerConf(thrift.THeaderProtocolBinary)), headerConf(thrift.THeaderProtocolBinary)), wire.Binary},
		{"THeaderProtocol set to compact is compact",
			thrift.NewTHeaderProtocolConf(thrift.NewTHeaderTransportConf(mem(), headerConf(thrift.THeaderProtocolCompact)), headerConf(thrift.THeaderProtocolCompact)), wire.Compact},
		{"THeaderProtocol with the default protocol id is binary", thrift.NewTHeaderProtocolConf(mem(), nil), wire.Binary},
		{"a stored message protocol (TMultiplexedProcessor) over compact is compact",
			thrift.NewStoredMessageProtocol(compact, "Svc:echo", thrift.CALL, 1), wire.Compact},
		{"a stored message protocol over THeader compact is compact",
			thrift.NewStoredMessageProtocol(thrift.NewTHeaderProtocolConf(mem(), headerConf(thrift.THeaderProtocolCompact)), "echo", thrift.CALL, 1), wire.Compact},
		{"a wrapper embedding TProtocol first is seen through", &wrapper{TProtocol: json}, wire.JSON},
		{"a wrapper passed by value is seen through", wrapper{TProtocol: compact}, wire.Compact},
		{"three wrappers deep is seen through",
			&wrapper{TProtocol: thrift.NewStoredMessageProtocol(&wrapper{TProtocol: binary}, "echo", thrift.CALL, 1)}, wire.Binary},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := wire.KindOf(tc.proto)
			if err != nil || got != tc.want {
				t.Errorf("KindOf(%T) = %v, %v; want %v", tc.proto, got, err, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		name  string
		proto thrift.TProtocol
	}{
		{"nil", nil},
		{"TSimpleJSONProtocol", thrift.NewTSimpleJSONProtocol(mem())},
		{"TDebugProtocol, which wraps in a named field", &thrift.TDebugProtocol{Delegate: binary}},
		{"a wrapper embedding TProtocol as its second field", &notFirst{TProtocol: binary}},
		{"a wrapper holding TProtocol in a named field", &namedField{P: binary}},
		{"a wrapper around nothing", &wrapper{}},
		{"a typed nil wrapper", (*wrapper)(nil)},
	} {
		t.Run(tc.name+" is an unknown protocol", func(t *testing.T) {
			got, err := wire.KindOf(tc.proto)
			if !errors.Is(err, wire.ErrUnknownProtocol) {
				t.Errorf("KindOf = %v, %v; want ErrUnknownProtocol", got, err)
			}
		})
	}
}

// TestKindOfTHeaderFollowsTheFrame: a THeader server learns the protocol of
// each message from its frame, so KindOf changes once a frame is read.
func TestKindOfTHeaderFollowsTheFrame(t *testing.T) {
	ctx := context.Background()
	args := &testsvc.TestEchoArgs{Text: "hi"}
	for _, tc := range []struct {
		name   string
		server thrift.THeaderProtocolID
		write  func(buf *thrift.TMemoryBuffer)
		want   wire.Kind
	}{
		{"a binary server reading a THeader compact frame becomes compact", thrift.THeaderProtocolBinary, func(buf *thrift.TMemoryBuffer) {
			writeMessage(t, thrift.NewTHeaderProtocolConf(buf, headerConf(thrift.THeaderProtocolCompact)), args)
		}, wire.Compact},
		{"a compact server reading a THeader binary frame becomes binary", thrift.THeaderProtocolCompact, func(buf *thrift.TMemoryBuffer) {
			writeMessage(t, thrift.NewTHeaderProtocolConf(buf, headerConf(thrift.THeaderProtocolBinary)), args)
		}, wire.Binary},
		{"a compact server reading an unframed binary message becomes binary", thrift.THeaderProtocolCompact, func(buf *thrift.TMemoryBuffer) {
			writeMessage(t, thrift.NewTBinaryProtocolConf(buf, nil), args)
		}, wire.Binary},
		{"a binary server reading a framed compact message becomes compact", thrift.THeaderProtocolBinary, func(buf *thrift.TMemoryBuffer) {
			writeMessage(t, thrift.NewTCompactProtocolConf(thrift.NewTFramedTransportConf(buf, nil), nil), args)
		}, wire.Compact},
	} {
		t.Run(tc.name, func(t *testing.T) {
			buf := thrift.NewTMemoryBuffer()
			tc.write(buf)
			server := thrift.NewTHeaderProtocolConf(buf, headerConf(tc.server))
			before, err := wire.KindOf(server)
			if err != nil || before == tc.want {
				t.Fatalf("before the frame: KindOf = %v, %v; want the configured kind", before, err)
			}
			name, typ, _, err := server.ReadMessageBegin(ctx)
			if err != nil || name != "echo" || typ != thrift.CALL {
				t.Fatalf("ReadMessageBegin = %q, %v, %v", name, typ, err)
			}
			after, err := wire.KindOf(server)
			if err != nil || after != tc.want {
				t.Fatalf("after the frame: KindOf = %v, %v; want %v", after, err, tc.want)
			}
			// The kind is right: the arguments decode with it.
			var got testsvc.TestEchoArgs
			if err := got.Read(ctx, server); err != nil || got.Text != "hi" {
				t.Fatalf("args: %+v, %v", got, err)
			}
		})
	}
}

func writeMessage(t *testing.T, p thrift.TProtocol, s thrift.TStruct) {
	t.Helper()
	ctx := context.Background()
	if err := p.WriteMessageBegin(ctx, "echo", thrift.CALL, 1); err != nil {
		t.Fatal(err)
	}
	if err := s.Write(ctx, p); err != nil {
		t.Fatal(err)
	}
	if err := p.WriteMessageEnd(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestKindStringAndNewProtocol(t *testing.T) {
	for _, tc := range []struct {
		kind wire.Kind
		name string
	}{{wire.Binary, "binary"}, {wire.Compact, "compact"}, {wire.JSON, "json"}} {
		t.Run(tc.name+" names itself and builds its own protocol", func(t *testing.T) {
			if got := tc.kind.String(); got != tc.name {
				t.Errorf("String() = %q", got)
			}
			p := tc.kind.NewProtocol(thrift.NewTMemoryBuffer(), &thrift.TConfiguration{})
			if got, err := wire.KindOf(p); err != nil || got != tc.kind {
				t.Errorf("KindOf(NewProtocol) = %v, %v", got, err)
			}
		})
	}
	if got := wire.Kind(9).String(); got != "Kind(9)" {
		t.Errorf("Kind(9).String() = %q", got)
	}
}

func sampleStructs() []thrift.TStruct {
	id := int32(-7)
	codec := batch.Codec_ZSTD
	return []thrift.TStruct{
		&testsvc.Item{Key: 1 << 40, Label: "héllo \"wörld\"\n\x00", Tags: []string{"", "a", strings.Repeat("t", 300)}},
		&batch.Request{Method: "Svc:echo", Arguments: []byte{0, 1, 2, 0xff, 0x80}, ID: &id},
		&batch.BatchRequest{
			Requests:     []*batch.Request{{Method: "a"}, {Method: "b", Arguments: bytes.Repeat([]byte{7}, 1000)}},
			AcceptCodecs: []batch.Codec{batch.Codec_GZIP, batch.Codec_ZSTD},
			RequestCodec: &codec,
		},
		&testsvc.TestItemsResult{Success: []*testsvc.Item{{Key: 1}, {Key: 2, Tags: []string{}}}},
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	ctx := context.Background()
	for _, k := range kinds {
		for _, s := range sampleStructs() {
			t.Run(fmt.Sprintf("%s round-trips %T", k, s), func(t *testing.T) {
				enc, err := wire.Encode(ctx, k, nil, s)
				if err != nil {
					t.Fatalf("Encode: %v", err)
				}
				// A bare struct, byte for byte what the library writes.
				if want := serialize(t, k, s); !bytes.Equal(enc, want) {
					t.Fatalf("Encode = %q\nlibrary writes %q", enc, want)
				}
				got := newLike(s)
				if err := wire.Decode(ctx, k, enc, got); err != nil {
					t.Fatalf("Decode: %v", err)
				}
				if !equal(got, s) {
					t.Fatalf("Decode(Encode(x)) = %v, want %v", got, s)
				}
				if again := serialize(t, k, got); !bytes.Equal(again, enc) {
					t.Fatalf("Decode(Encode(x)) encodes as %q, want %q", again, enc)
				}
				// Encode appends.
				withPrefix, err := wire.Encode(ctx, k, []byte("prefix"), s)
				if err != nil || !bytes.Equal(withPrefix, append([]byte("prefix"), enc...)) {
					t.Fatalf("Encode after a prefix = %q, %v", withPrefix, err)
				}
			})
		}
	}
}

func newLike(s thrift.TStruct) thrift.TStruct {
	switch s.(type) {
	case *testsvc.Item:
		return &testsvc.Item{}
	case *batch.Request:
		return &batch.Request{}
	case *batch.BatchRequest:
		return &batch.BatchRequest{}
	case *testsvc.TestItemsResult:
		return &testsvc.TestItemsResult{}
	}
	panic(fmt.Sprintf("%T", s))
}

// equal compares with the generated Equals methods.
func equal(a, b thrift.TStruct) bool {
	switch a := a.(type) {
	case *testsvc.Item:
		return a.Equals(b.(*testsvc.Item))
	case *batch.Request:
		return a.Equals(b.(*batch.Request))
	case *batch.BatchRequest:
		return a.Equals(b.(*batch.BatchRequest))
	case *testsvc.TestItemsResult:
		b := b.(*testsvc.TestItemsResult)
		if len(a.Success) != len(b.Success) {
			return false
		}
		for i := range a.Success {
			if a.Success[i].Key != b.Success[i].Key || a.Success[i].Label != b.Success[i].Label || len(a.Success[i].Tags) != len(b.Success[i].Tags) {
				return false
			}
		}
		return true
	}
	panic(fmt.Sprintf("%T", a))
}

func TestEncodeDecodeConcurrently(t *testing.T) {
	ctx := context.Background()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				k := kinds[(g+i)%len(kinds)]
				in := &testsvc.Item{Key: int64(g*1000 + i), Label: fmt.Sprint("label ", g, i), Tags: []string{"x"}}
				enc, err := wire.Encode(ctx, k, nil, in)
				if err != nil {
					t.Errorf("Encode: %v", err)
					return
				}
				var out testsvc.Item
				if err := wire.Decode(ctx, k, enc, &out); err != nil || out.Key != in.Key || out.Label != in.Label {
					t.Errorf("%s round trip: %+v, %v", k, out, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestDecodeRefusesInvalidInput(t *testing.T) {
	ctx := context.Background()
	for _, k := range kinds {
		valid, err := wire.Encode(ctx, k, nil, &testsvc.Item{Key: 5, Label: "label", Tags: []string{"a", "b"}})
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name string
			in   []byte
		}{
			{"nothing", nil},
			{"a truncated struct", valid[:len(valid)-2]},
		} {
			t.Run(fmt.Sprintf("%s refuses %s", k, tc.name), func(t *testing.T) {
				var out testsvc.Item
				if err := wire.Decode(ctx, k, tc.in, &out); err == nil {
					t.Errorf("Decode of %q returned no error: %+v", tc.in, out)
				}
			})
		}
		// A failed Decode leaves no state behind for the next one.
		var out testsvc.Item
		if err := wire.Decode(ctx, k, valid, &out); err != nil || out.Label != "label" {
			t.Errorf("%s: Decode after failures = %+v, %v", k, out, err)
		}
	}
}

// TestDecodeRefusesLyingLengths feeds headers claiming far more elements or
// bytes than the input holds. The generated code sizes its slices from the
// claim (make([]T, 0, size)), so the protocol must refuse it first.
func TestDecodeRefusesLyingLengths(t *testing.T) {
	ctx := context.Background()
	const maxAlloc = 8 << 20
	for _, tc := range []struct {
		name string
		kind wire.Kind
		in   []byte
		into func() thrift.TStruct
	}{
		{"a binary list claiming 2^31-1 items", wire.Binary,
			[]byte{byte(thrift.LIST), 0, 0, byte(thrift.STRUCT), 0x7f, 0xff, 0xff, 0xff, 0},
			func() thrift.TStruct { return &testsvc.TestItemsResult{} }},
		{"a binary list claiming 20 million strings (80 MB, under the message size limit)", wire.Binary,
			[]byte{byte(thrift.LIST), 0, 3, byte(thrift.STRING), 0x01, 0x31, 0x2d, 0x00, 0, 0, 0, 1, 'a', 0},
			func() thrift.TStruct { return &testsvc.Item{} }},
		{"a binary string claiming 2 GiB", wire.Binary,
			[]byte{byte(thrift.STRING), 0, 2, 0x7f, 0xff, 0xff, 0xff, 'a', 'b', 0},
			func() thrift.TStruct { return &testsvc.Item{} }},
		{"a binary string claiming 90 MB (under the message size limit)", wire.Binary,
			[]byte{byte(thrift.STRING), 0, 2, 0x05, 0x5d, 0x4a, 0x80, 'a', 'b', 0},
			func() thrift.TStruct { return &testsvc.Item{} }},
		{"a binary binary field claiming 2 GiB", wire.Binary,
			[]byte{byte(thrift.STRING), 0, 2, 0x7f, 0xff, 0xff, 0xff, 'a', 'b', 0},
			func() thrift.TStruct { return &batch.Request{} }},
		{"a binary binary field claiming 90 MB", wire.Binary,
			[]byte{byte(thrift.STRING), 0, 2, 0x05, 0x5d, 0x4a, 0x80, 'a', 'b', 0},
			func() thrift.TStruct { return &batch.Request{} }},
		{"a compact list claiming 2^31-1 items", wire.Compact,
			// field 0 in long form: type LIST (9), zigzag id 0; size 15 = varint follows
			[]byte{0x09, 0x00, 0xfc, 0xff, 0xff, 0xff, 0xff, 0x07, 0},
			func() thrift.TStruct { return &testsvc.TestItemsResult{} }},
		{"a compact list claiming 20 million strings", wire.Compact,
			// field 3 (delta 3, LIST): elem BINARY (8), size varint 20,000,000
			[]byte{0x39, 0xf8, 0x80, 0xda, 0xc4, 0x09, 0x01, 'a', 0},
			func() thrift.TStruct { return &testsvc.Item{} }},
		{"a compact string claiming 2 GiB", wire.Compact,
			[]byte{0x28, 0xff, 0xff, 0xff, 0xff, 0x07, 'a', 0},
			func() thrift.TStruct { return &testsvc.Item{} }},
		{"a compact string claiming 90 MB", wire.Compact,
			[]byte{0x28, 0x80, 0x95, 0xf5, 0x2a, 'a', 0},
			func() thrift.TStruct { return &testsvc.Item{} }},
		{"a JSON list claiming 2^31-1 items", wire.JSON,
			[]byte(`{"0":{"lst":["rec",2147483647,{}]}}`),
			func() thrift.TStruct { return &testsvc.TestItemsResult{} }},
		{"a JSON list claiming 20 million strings", wire.JSON,
			[]byte(`{"3":{"lst":["str",20000000,"a"]}}`),
			func() thrift.TStruct { return &testsvc.Item{} }},
	} {
		t.Run(tc.name+" fails without allocating it", func(t *testing.T) {
			// Warm the Call pool and the protocol's buffers first.
			wire.Decode(ctx, tc.kind, serialize(t, tc.kind, &testsvc.Item{Label: "x"}), &testsvc.Item{})
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			err := wire.Decode(ctx, tc.kind, tc.in, tc.into())
			runtime.ReadMemStats(&after)
			if err == nil {
				t.Fatal("Decode returned no error")
			}
			if allocated := after.TotalAlloc - before.TotalAlloc; allocated > maxAlloc {
				t.Errorf("Decode allocated %d MiB before failing", allocated>>20)
			}
			t.Logf("%v", err)
		})
	}
}

func TestCallRunWritesTheBareReply(t *testing.T) {
	ctx := context.Background()
	fns := testsvc.NewTestProcessor(handler{}).ProcessorMap()
	for _, k := range kinds {
		t.Run(k.String()+": a reply is the result struct without a message header", func(t *testing.T) {
			args := serialize(t, k, &testsvc.TestEchoArgs{Text: "hello"})
			c := wire.Get(k)
			out, err := c.Run(ctx, fns["echo"], "echo", args)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if out.Type != thrift.REPLY {
				t.Fatalf("Type = %v, want REPLY", out.Type)
			}
			s := "hello"
			if want := serialize(t, k, &testsvc.TestEchoResult{Success: &s}); !bytes.Equal(out.Body, want) {
				t.Fatalf("Body = %q\nwant   %q", out.Body, want)
			}
			var res testsvc.TestEchoResult
			deserialize(t, k, out.Body, &res)
			if res.GetSuccess() != "hello" {
				t.Fatalf("decoded result %v", res)
			}
			wire.Put(c)
		})
		t.Run(k.String()+": a declared exception is a reply", func(t *testing.T) {
			c := wire.Get(k)
			out, err := c.Run(ctx, fns["divide"], "divide", serialize(t, k, &testsvc.TestDivideArgs{A: 7, B: 0}))
			var oops *testsvc.DivideByZero
			if out.Type != thrift.REPLY || !errors.As(err, &oops) {
				t.Fatalf("Run = %v, %v; want REPLY and the declared exception as the error", out.Type, err)
			}
			var res testsvc.TestDivideResult
			deserialize(t, k, out.Body, &res)
			if !res.IsSetOops() || res.GetOops().Why != "7 / 0" {
				t.Fatalf("result %v, want Oops", res)
			}
			wire.Put(c)
		})
		t.Run(k.String()+": an undeclared error is an EXCEPTION that DecodeException reads", func(t *testing.T) {
			c := wire.Get(k)
			out, err := c.Run(ctx, fns["failing"], "failing", serialize(t, k, &testsvc.TestFailingArgs{}))
			if err == nil || out.Type != thrift.EXCEPTION {
				t.Fatalf("Run = %v, %v; want EXCEPTION and the error", out.Type, err)
			}
			ex, derr := c.DecodeException(ctx, bytes.Clone(out.Body))
			if derr != nil {
				t.Fatalf("DecodeException: %v", derr)
			}
			if ex.TypeId() != thrift.INTERNAL_ERROR || ex.Error() != "Internal error processing failing: failing on purpose" {
				t.Fatalf("exception %d %q", ex.TypeId(), ex.Error())
			}
			wire.Put(c)
		})
		t.Run(k.String()+": arguments that do not decode give PROTOCOL_ERROR", func(t *testing.T) {
			c := wire.Get(k)
			bad := []byte{0xff, 0xff, 0xff}
			out, err := c.Run(ctx, fns["echo"], "echo", bad)
			if err == nil || out.Type != thrift.EXCEPTION {
				t.Fatalf("Run = %v, %v; want EXCEPTION and the error", out.Type, err)
			}
			ex, derr := c.DecodeException(ctx, bytes.Clone(out.Body))
			if derr != nil || ex.TypeId() != thrift.PROTOCOL_ERROR {
				t.Fatalf("DecodeException = %v, %v; want PROTOCOL_ERROR", ex, derr)
			}
			// Not returned to the pool: its protocol may be mid-struct.
		})
		t.Run(k.String()+": a oneway method writes nothing", func(t *testing.T) {
			c := wire.Get(k)
			out, err := c.Run(ctx, fns["note"], "note", serialize(t, k, &testsvc.TestNoteArgs{Text: "x"}))
			if err != nil || out.Type != 0 || len(out.Body) != 0 {
				t.Fatalf("Run = %+v, %v; want nothing written", out, err)
			}
			wire.Put(c)
		})
	}
	for _, k := range []wire.Kind{wire.Binary, wire.Compact} {
		t.Run(k.String()+": a pooled Call serves one call after another", func(t *testing.T) {
			for i := range 50 {
				c := wire.Get(k)
				text := strings.Repeat("x", i*37)
				out, err := c.Run(ctx, fns["echo"], "echo", serialize(t, k, &testsvc.TestEchoArgs{Text: text}))
				if err != nil {
					t.Fatal(err)
				}
				var res testsvc.TestEchoResult
				deserialize(t, k, out.Body, &res)
				if res.GetSuccess() != text {
					t.Fatalf("call %d: got %d bytes, want %d", i, len(res.GetSuccess()), len(text))
				}
				wire.Put(c)
			}
		})
	}
}

func TestEmptyStruct(t *testing.T) {
	ctx := context.Background()
	want := map[wire.Kind]string{wire.Binary: "\x00", wire.Compact: "\x00", wire.JSON: "{}"}
	for _, k := range kinds {
		t.Run(k.String()+" empty struct decodes as a struct with no field set", func(t *testing.T) {
			b := wire.EmptyStruct(k)
			if string(b) != want[k] {
				t.Errorf("EmptyStruct(%s) = %q, want %q", k, b, want[k])
			}
			var resp batch.Response
			if err := wire.Decode(ctx, k, b, &resp); err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if resp.ID != nil || resp.Reply != nil || resp.Error != nil {
				t.Errorf("decoded %v, want no field set", resp)
			}
			var resp2 batch.Response
			deserialize(t, k, b, &resp2)
			if resp2.ID != nil || resp2.Reply != nil || resp2.Error != nil {
				t.Errorf("the library decoded %v", resp2)
			}
			// It is what the library writes for an empty struct.
			if enc := serialize(t, k, &testsvc.TestBoomResult{}); !bytes.Equal(enc, b) {
				t.Errorf("library writes %q for an empty struct", enc)
			}
		})
	}
}

func TestBuffer(t *testing.T) {
	var b wire.Buffer
	t.Run("reads consume the input of Reset", func(t *testing.T) {
		b.Reset([]byte("hello"))
		if got := b.RemainingBytes(); got != 5 {
			t.Errorf("RemainingBytes() = %d", got)
		}
		p := make([]byte, 3)
		if n, err := b.Read(p); n != 3 || err != nil || string(p) != "hel" {
			t.Errorf("Read = %d, %v, %q", n, err, p)
		}
		if c, err := b.ReadByte(); c != 'l' || err != nil {
			t.Errorf("ReadByte = %q, %v", c, err)
		}
		if got := b.RemainingBytes(); got != 1 {
			t.Errorf("RemainingBytes() = %d", got)
		}
		if n, err := b.Read(p); n != 1 || err != nil || p[0] != 'o' {
			t.Errorf("short Read = %d, %v, %q", n, err, p[:n])
		}
	})
	t.Run("reads at the end return io.EOF as a TTransportException, except empty ones", func(t *testing.T) {
		if n, err := b.Read(make([]byte, 1)); n != 0 || !isEOF(err) {
			t.Errorf("Read at end = %d, %v", n, err)
		}
		if _, err := b.ReadByte(); !isEOF(err) {
			t.Errorf("ReadByte at end: %v", err)
		}
		if n, err := b.Read(nil); n != 0 || err != nil {
			t.Errorf("empty Read at end = %d, %v", n, err)
		}
		if got := b.RemainingBytes(); got != 0 {
			t.Errorf("RemainingBytes() = %d", got)
		}
	})
	t.Run("writes append to Out", func(t *testing.T) {
		b.Write([]byte("ab"))
		b.WriteByte('c')
		b.WriteString("de")
		if string(b.Out) != "abcde" {
			t.Errorf("Out = %q", b.Out)
		}
	})
	t.Run("Reset empties Out and keeps its capacity", func(t *testing.T) {
		c := cap(b.Out)
		b.Reset([]byte("x"))
		if len(b.Out) != 0 || cap(b.Out) != c {
			t.Errorf("after Reset: len %d cap %d, want 0 %d", len(b.Out), cap(b.Out), c)
		}
		if got, _ := io.ReadAll(&b); string(got) != "x" {
			t.Errorf("ReadAll after Reset = %q", got)
		}
	})
	t.Run("the transport methods do nothing and report open", func(t *testing.T) {
		if err := b.Open(); err != nil {
			t.Error(err)
		}
		if !b.IsOpen() {
			t.Error("IsOpen() = false")
		}
		if err := b.Flush(context.Background()); err != nil {
			t.Error(err)
		}
		if err := b.Close(); err != nil {
			t.Error(err)
		}
		if !b.IsOpen() {
			t.Error("IsOpen() = false after Close")
		}
	})
	t.Run("a protocol over a Buffer reads what another wrote", func(t *testing.T) {
		var w wire.Buffer
		p := wire.Compact.NewProtocol(&w, &thrift.TConfiguration{})
		in := &testsvc.Item{Key: 9, Label: "nine"}
		if err := in.Write(context.Background(), p); err != nil {
			t.Fatal(err)
		}
		var r wire.Buffer
		r.Reset(w.Out)
		var out testsvc.Item
		if err := out.Read(context.Background(), wire.Compact.NewProtocol(&r, &thrift.TConfiguration{})); err != nil || out.Label != "nine" {
			t.Errorf("Read = %+v, %v", out, err)
		}
	})
}

// isEOF reports whether err is io.EOF carried as a TTransportException of
// type END_OF_FILE, which keeps its type through thrift.PrependError.
func isEOF(err error) bool {
	var te thrift.TTransportException
	return errors.Is(err, io.EOF) && errors.As(err, &te) && te.TypeId() == thrift.END_OF_FILE
}
