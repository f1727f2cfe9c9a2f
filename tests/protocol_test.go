package tests

import (
	"bytes"
	"context"
	"testing"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/internal/wire"
	"github.com/thriftbatch/thriftbatch/tests/testsvc"
)

// TestEveryProtocolStack runs a representative batch, plain and compressed,
// over every protocol and transport: binary/buffered, compact/framed,
// JSON/framed, and THeader with binary or compact inside.
func TestEveryProtocolStack(t *testing.T) {
	for _, st := range allStacks {
		t.Run("over "+st.name, func(t *testing.T) {
			h := &handler{}
			addr, _ := serve(t, testsvc.NewTestProcessor(h), st)
			c := dial(t, addr, st)
			codecs := clientCodecs(t)

			reqs := func() []*batch.Request {
				return []*batch.Request{
					c.reqID(t, 0, "echo", &testsvc.TestEchoArgs{Text: "hello " + st.name}),
					c.reqID(t, 1, "divide", &testsvc.TestDivideArgs{A: 1, B: 0}),
					c.reqID(t, 2, "nope", &testsvc.TestEchoArgs{}),
					c.reqID(t, 3, "boom", &testsvc.TestBoomArgs{}),
					c.reqID(t, 4, "whereAmI", &testsvc.TestWhereAmIArgs{}),
					c.reqID(t, 5, "note", &testsvc.TestNoteArgs{Text: "noted"}),
					c.reqID(t, 6, "failing", &testsvc.TestFailingArgs{}),
					c.reqID(t, 7, "items", &testsvc.TestItemsArgs{Count: 100}),
				}
			}
			check := func(t *testing.T, out []*batch.Response) {
				t.Helper()
				if len(out) != 8 {
					t.Fatalf("%d responses, want 8", len(out))
				}
				for i, r := range out {
					if r.GetID() != int32(i) {
						t.Errorf("response %d: id %d", i, r.GetID())
					}
				}
				if got := c.echoed(t, out[0]); got != "hello "+st.name {
					t.Errorf("echo = %q", got)
				}
				var div testsvc.TestDivideResult
				if c.decode(t, out[1], &div); div.Oops == nil || div.Oops.Why != "1 / 0" {
					t.Errorf("divide by zero = %+v", div)
				}
				wantCallError(t, out[2], thrift.UNKNOWN_METHOD)
				wantCallError(t, out[3], thrift.INTERNAL_ERROR)
				var where testsvc.TestWhereAmIResult
				if c.decode(t, out[4], &where); where.GetSuccess() != 4 {
					t.Errorf("whereAmI = %d", where.GetSuccess())
				}
				if !bytes.Equal(out[5].Reply, wire.EmptyStruct(st.kind)) || out[5].Error != nil {
					t.Errorf("note answered %+v", out[5])
				}
				wantCallError(t, out[6], thrift.INTERNAL_ERROR, "failing on purpose")
				var items testsvc.TestItemsResult
				if c.decode(t, out[7], &items); len(items.Success) != 100 || !items.Success[99].Equals(makeItems(100)[99]) {
					t.Errorf("items came back with %d items", len(items.Success))
				}
			}

			t.Run("a plain batch answers every kind of call", func(t *testing.T) {
				check(t, c.run(t, reqs()...))
			})

			t.Run("a compressed batch with compressed responses answers the same", func(t *testing.T) {
				resp, err := c.execute(t, &batch.BatchRequest{
					RequestCodec:       batch.CodecPtr(batch.Codec_ZSTD),
					CompressedRequests: c.compressRequests(t, codecs, batch.Codec_ZSTD, reqs()),
					AcceptCodecs:       []batch.Codec{batch.Codec_ZSTD},
				})
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				check(t, c.decompressResponses(t, codecs, batch.Codec_ZSTD, resp))
			})

			t.Run("the connection then serves plain calls and another batch", func(t *testing.T) {
				if got, err := c.test.Echo(callCtx(t), "plain"); err != nil || got != "plain" {
					t.Errorf("plain echo = %q, %v", got, err)
				}
				c.checkNormalBatch(t)
				if notes, _, _ := h.snapshot(); len(notes) != 2 || notes[0] != "noted" || notes[1] != "noted" {
					t.Errorf("notes %q, want the two batches' notes", notes)
				}
			})
		})
	}
}

// TestTHeaderHeaders checks that the THeader headers a client sends with a
// batch reach the handlers of its calls through their contexts, as they
// reach the handler of a call sent alone.
func TestTHeaderHeaders(t *testing.T) {
	for _, st := range []stack{headerBinary, headerCompact} {
		t.Run("over "+st.name, func(t *testing.T) {
			addr, _ := serve(t, testsvc.NewTestProcessor(&handler{}), st)
			c := dial(t, addr, st)
			withHeader := func(t *testing.T, value string) context.Context {
				ctx := thrift.SetHeader(callCtx(t), "tenant", value)
				return thrift.SetWriteHeaderList(ctx, []string{"tenant"})
			}

			t.Run("a call sent alone sees the header", func(t *testing.T) {
				got, err := c.test.Echo(withHeader(t, "plain-"+st.name), headerPrefix+"tenant")
				if err != nil || got != "tenant=plain-"+st.name+" listed=true" {
					t.Errorf("echo = %q, %v", got, err)
				}
			})

			t.Run("every call of a batch sees the header sent with the batch", func(t *testing.T) {
				resp, err := c.executeCtx(t, withHeader(t, "batched-"+st.name), &batch.BatchRequest{Requests: []*batch.Request{
					c.req(t, "echo", &testsvc.TestEchoArgs{Text: headerPrefix + "tenant"}),
					c.req(t, "echo", &testsvc.TestEchoArgs{Text: headerPrefix + "other"}),
					c.req(t, "echo", &testsvc.TestEchoArgs{Text: headerPrefix + "tenant"}),
				}})
				if err != nil {
					t.Fatal(err)
				}
				want := "tenant=batched-" + st.name + " listed=true"
				if got := c.echoed(t, resp.Responses[0]); got != want {
					t.Errorf("call 0 = %q, want %q", got, want)
				}
				if got := c.echoed(t, resp.Responses[1]); got != "other=<absent> listed=false" {
					t.Errorf("call 1 = %q", got)
				}
				if got := c.echoed(t, resp.Responses[2]); got != want {
					t.Errorf("call 2 = %q, want %q", got, want)
				}
			})

			t.Run("a batch sent without the header does not see the previous one", func(t *testing.T) {
				out := c.run(t, c.req(t, "echo", &testsvc.TestEchoArgs{Text: headerPrefix + "tenant"}))
				if got := c.echoed(t, out[0]); got != "tenant=<absent> listed=false" {
					t.Errorf("echo = %q", got)
				}
			})
		})
	}
}
