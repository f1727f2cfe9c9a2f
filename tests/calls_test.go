package tests

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/apache/thrift/lib/go/thrift"
	"github.com/rs/zerolog"

	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/internal/wire"
	"github.com/thriftbatch/thriftbatch/processor"
	"github.com/thriftbatch/thriftbatch/tests/testsvc"
)

// TestResponsesAnswerTheirRequestsInOrder mixes slow calls that finish out of
// order with fast ones and checks that responses[i] answers requests[i], with
// its id, on every protocol.
func TestResponsesAnswerTheirRequestsInOrder(t *testing.T) {
	for _, st := range plainStacks {
		t.Run("over "+st.name, func(t *testing.T) {
			addr, _ := serve(t, testsvc.NewTestProcessor(&handler{}), st)
			c := dial(t, addr, st)
			const n = 50
			reqs := make([]*batch.Request, n)
			for i := range reqs {
				var r *batch.Request
				if i%2 == 0 {
					// 1..30 ms, earlier calls mostly slower than later ones.
					millis := int32(30 - (i*7)%30)
					r = c.req(t, "sleepy", &testsvc.TestSleepyArgs{Millis: millis, Tag: int64(1000 + i)})
				} else {
					r = c.req(t, "echo", &testsvc.TestEchoArgs{Text: "echo #" + strconv.Itoa(i)})
				}
				if i%3 != 0 {
					r.ID = thrift.Int32Ptr(int32(7000 + i))
				}
				reqs[i] = r
			}
			out := c.run(t, reqs...)
			for i, r := range out {
				if i%3 != 0 {
					if !r.IsSetID() || r.GetID() != int32(7000+i) {
						t.Errorf("response %d: id %v, want %d", i, r.ID, 7000+i)
					}
				} else if r.IsSetID() {
					t.Errorf("response %d: id %d set, but its request had none", i, r.GetID())
				}
				if i%2 == 0 {
					if got := c.slept(t, r); got != int64(1000+i) {
						t.Errorf("response %d: sleepy tag %d, want %d", i, got, 1000+i)
					}
				} else if got := c.echoed(t, r); got != "echo #"+strconv.Itoa(i) {
					t.Errorf("response %d: echo %q, want %q", i, got, "echo #"+strconv.Itoa(i))
				}
			}
		})
	}
}

func TestSequentialAndConcurrentBatches(t *testing.T) {
	t.Run("a sequential batch runs its calls one at a time in request order", func(t *testing.T) {
		h := &handler{}
		addr, _ := serve(t, testsvc.NewTestProcessor(h), binaryBuffered)
		c := dial(t, addr, binaryBuffered)
		const n = 8
		var reqs []*batch.Request
		var want []string
		for i := range n {
			reqs = append(reqs, c.req(t, "sleepy", &testsvc.TestSleepyArgs{Millis: 2, Tag: int64(i)}))
			want = append(want, fmt.Sprintf("start %d", i), fmt.Sprintf("end %d", i))
		}
		out := c.runBatch(t, &batch.BatchRequest{Requests: reqs, Sequential: thrift.BoolPtr(true)})
		for i, r := range out {
			if got := c.slept(t, r); got != int64(i) {
				t.Errorf("response %d: tag %d", i, got)
			}
		}
		_, _, events := h.snapshot()
		if !slices.Equal(events, want) {
			t.Errorf("calls ran as\n%v\nwant\n%v", events, want)
		}
		if _, _, maxActive := h.counts(); maxActive != 1 {
			t.Errorf("%d calls ran at once, want 1", maxActive)
		}
	})

	t.Run("a batch that is not sequential runs its calls at the same time", func(t *testing.T) {
		// Every call waits until all four are running: the batch can only
		// answer if they run concurrently. Otherwise they end at the
		// batch deadline with CALL_DEADLINE_EXCEEDED.
		h := &handler{barrier: newBarrier(4)}
		addr, _ := serve(t, testsvc.NewTestProcessor(h), binaryBuffered)
		c := dial(t, addr, binaryBuffered)
		var reqs []*batch.Request
		for i := range 4 {
			reqs = append(reqs, c.req(t, "sleepy", &testsvc.TestSleepyArgs{Millis: 0, Tag: int64(i)}))
		}
		out := c.runBatch(t, &batch.BatchRequest{Requests: reqs, TimeoutMillis: thrift.Int32Ptr(10_000)})
		for i, r := range out {
			if got := c.slept(t, r); got != int64(i) {
				t.Errorf("response %d: tag %d", i, got)
			}
		}
		if _, _, maxActive := h.counts(); maxActive != 4 {
			t.Errorf("%d calls ran at once, want 4", maxActive)
		}
	})

	t.Run("WithMaxConcurrency caps the calls of one batch that run at once", func(t *testing.T) {
		h := &handler{}
		addr, _ := serve(t, testsvc.NewTestProcessor(h), binaryBuffered, processor.WithMaxConcurrency(2))
		c := dial(t, addr, binaryBuffered)
		var reqs []*batch.Request
		for i := range 8 {
			reqs = append(reqs, c.req(t, "sleepy", &testsvc.TestSleepyArgs{Millis: 5, Tag: int64(i)}))
		}
		out := c.run(t, reqs...)
		for i, r := range out {
			if got := c.slept(t, r); got != int64(i) {
				t.Errorf("response %d: tag %d", i, got)
			}
		}
		if _, _, maxActive := h.counts(); maxActive > 2 || maxActive < 1 {
			t.Errorf("%d calls ran at once, want at most 2", maxActive)
		}
	})
}

// garbage never decodes as an args struct: an invalid field type in binary
// and compact, and not JSON at all.
var garbage = []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// TestCallOutcomes covers what each kind of call answers, each on every
// protocol, and that a failing call touches neither its neighbours nor the
// connection.
func TestCallOutcomes(t *testing.T) {
	for _, st := range plainStacks {
		t.Run("over "+st.name, func(t *testing.T) {
			h := &handler{}
			logs := &syncBuffer{}
			addr, _ := serve(t, testsvc.NewTestProcessor(h), st, processor.WithLogger(zerolog.New(logs)))
			c := dial(t, addr, st)

			t.Run("a declared exception comes back inside the reply, not as a CallError", func(t *testing.T) {
				out := c.run(t,
					c.reqID(t, 1, "divide", &testsvc.TestDivideArgs{A: 7, B: 0}),
					c.reqID(t, 2, "divide", &testsvc.TestDivideArgs{A: 7, B: 2}))
				var zero, ok testsvc.TestDivideResult
				c.decode(t, out[0], &zero)
				if zero.IsSetSuccess() || zero.Oops == nil || zero.Oops.Why != "7 / 0" {
					t.Errorf("divide by zero: %+v, want DivideByZero{Why: \"7 / 0\"}", zero)
				}
				c.decode(t, out[1], &ok)
				if ok.Oops != nil || ok.GetSuccess() != 3 {
					t.Errorf("7 / 2: %+v, want 3", ok)
				}
			})

			t.Run("a panicking handler fails only its own call, without the panic text, and the server keeps serving", func(t *testing.T) {
				out := c.run(t,
					c.reqID(t, 1, "echo", &testsvc.TestEchoArgs{Text: "before"}),
					c.reqID(t, 2, "boom", &testsvc.TestBoomArgs{}),
					c.reqID(t, 3, "echo", &testsvc.TestEchoArgs{Text: "after"}),
					c.reqID(t, 4, "divide", &testsvc.TestDivideArgs{A: 9, B: 3}))
				if got := c.echoed(t, out[0]); got != "before" {
					t.Errorf("echo before the panic = %q", got)
				}
				wantCallError(t, out[1], thrift.INTERNAL_ERROR, "boom")
				if msg := out[1].Error.Message; strings.Contains(msg, "secret internal detail") || strings.Contains(msg, "goroutine") {
					t.Errorf("CallError leaks the panic: %q", msg)
				}
				if out[1].GetID() != 2 {
					t.Errorf("panicked call id %d, want 2", out[1].GetID())
				}
				if got := c.echoed(t, out[2]); got != "after" {
					t.Errorf("echo after the panic = %q", got)
				}
				var div testsvc.TestDivideResult
				if c.decode(t, out[3], &div); div.GetSuccess() != 3 {
					t.Errorf("9 / 3 = %d", div.GetSuccess())
				}
				if _, booms, _ := h.counts(); booms != 1 {
					t.Errorf("boom ran %d times, want 1", booms)
				}

				// The panic is in the log, at error level, with its stack.
				lines := logs.find(t, "thriftbatch: handler panicked")
				if len(lines) != 1 {
					t.Fatalf("%d panic log lines, want 1; log:\n%s", len(lines), logs.buf.String())
				}
				l := lines[0]
				if l["level"] != "error" || l["method"] != "boom" || l["index"] != float64(1) {
					t.Errorf("panic log line %v: want level error, method boom, index 1", l)
				}
				if l["panic"] != "boom: secret internal detail" {
					t.Errorf("panic log line has panic %q", l["panic"])
				}
				if stack, _ := l["stack"].(string); !strings.Contains(stack, "(*handler).Boom") || !strings.Contains(stack, "handler_test.go") {
					t.Errorf("panic log line has no stack through the handler: %q", stack)
				}

				// The same connection serves a plain call and a batch.
				ctx := callCtx(t)
				if got, err := c.test.Echo(ctx, "plain"); err != nil || got != "plain" {
					t.Errorf("plain echo after the panic = %q, %v", got, err)
				}
				c.checkNormalBatch(t)
			})

			t.Run("an unknown method answers UNKNOWN_METHOD and runs nothing", func(t *testing.T) {
				_, before, _ := h.snapshot()
				out := c.run(t,
					c.reqID(t, 1, "nope", &testsvc.TestEchoArgs{Text: "should not run"}),
					c.reqID(t, 2, "", &testsvc.TestEchoArgs{Text: "should not run either"}),
					c.reqID(t, 3, "Echo", &testsvc.TestEchoArgs{Text: "wrong case"}),
					c.reqID(t, 4, "echo", &testsvc.TestEchoArgs{Text: "runs"}))
				wantCallError(t, out[0], thrift.UNKNOWN_METHOD, `"nope"`)
				wantCallError(t, out[1], thrift.UNKNOWN_METHOD)
				wantCallError(t, out[2], thrift.UNKNOWN_METHOD, `"Echo"`)
				if got := c.echoed(t, out[3]); got != "runs" {
					t.Errorf("echo = %q", got)
				}
				for i, r := range out {
					if r.GetID() != int32(i+1) {
						t.Errorf("response %d: id %d", i, r.GetID())
					}
				}
				_, after, _ := h.snapshot()
				if ran := after[len(before):]; !slices.Equal(ran, []string{"runs"}) {
					t.Errorf("echo ran with %q, want only \"runs\"", ran)
				}
			})

			t.Run("arguments that do not decode answer PROTOCOL_ERROR and the other calls run", func(t *testing.T) {
				out := c.run(t,
					&batch.Request{Method: "echo", Arguments: garbage, ID: thrift.Int32Ptr(1)},
					c.reqID(t, 2, "echo", &testsvc.TestEchoArgs{Text: "fine"}),
					&batch.Request{Method: "divide", Arguments: garbage[:2], ID: thrift.Int32Ptr(3)},
					&batch.Request{Method: "echo", Arguments: nil, ID: thrift.Int32Ptr(4)})
				wantCallError(t, out[0], thrift.PROTOCOL_ERROR)
				if got := c.echoed(t, out[1]); got != "fine" {
					t.Errorf("echo = %q", got)
				}
				wantCallError(t, out[2], thrift.PROTOCOL_ERROR)
				wantCallError(t, out[3], thrift.PROTOCOL_ERROR)
				c.checkNormalBatch(t)
			})

			t.Run("arguments of a oneway method that do not decode answer PROTOCOL_ERROR too", func(t *testing.T) {
				notes, _, _ := h.snapshot()
				out := c.run(t, &batch.Request{Method: "note", Arguments: garbage})
				wantCallError(t, out[0], thrift.PROTOCOL_ERROR)
				if after, _, _ := h.snapshot(); len(after) != len(notes) {
					t.Errorf("note ran: %q", after[len(notes):])
				}
			})

			t.Run("a oneway call runs and answers an empty struct", func(t *testing.T) {
				before, _, _ := h.snapshot()
				out := c.run(t,
					c.reqID(t, 5, "note", &testsvc.TestNoteArgs{Text: "remember " + st.name}),
					c.reqID(t, 6, "echo", &testsvc.TestEchoArgs{Text: "x"}))
				if out[0].Error != nil {
					t.Fatalf("note failed: %+v", out[0].Error)
				}
				if !bytes.Equal(out[0].Reply, wire.EmptyStruct(st.kind)) {
					t.Errorf("note reply %q, want the empty struct %q", out[0].Reply, wire.EmptyStruct(st.kind))
				}
				if out[0].GetID() != 5 {
					t.Errorf("note id %d", out[0].GetID())
				}
				after, _, _ := h.snapshot()
				if got := after[len(before):]; !slices.Equal(got, []string{"remember " + st.name}) {
					t.Errorf("handler saw notes %q", got)
				}
				if got := c.echoed(t, out[1]); got != "x" {
					t.Errorf("echo = %q", got)
				}
			})

			t.Run("an undeclared error answers INTERNAL_ERROR with the message an unbatched call gets", func(t *testing.T) {
				out := c.run(t, c.req(t, "failing", &testsvc.TestFailingArgs{}))
				wantCallError(t, out[0], thrift.INTERNAL_ERROR, "failing on purpose")

				ctx := callCtx(t)
				err := c.test.Failing(ctx)
				var tae thrift.TApplicationException
				if !errors.As(err, &tae) {
					t.Fatalf("unbatched failing returned %v, want a TApplicationException", err)
				}
				if tae.TypeId() != out[0].Error.Type || tae.Error() != out[0].Error.Message {
					t.Errorf("batched: %d %q; unbatched: %d %q", out[0].Error.Type, out[0].Error.Message, tae.TypeId(), tae.Error())
				}
			})

			t.Run("a handler learns its call index from its context", func(t *testing.T) {
				var reqs []*batch.Request
				for range 5 {
					reqs = append(reqs, c.req(t, "whereAmI", &testsvc.TestWhereAmIArgs{}))
				}
				for i, r := range c.run(t, reqs...) {
					var res testsvc.TestWhereAmIResult
					if c.decode(t, r, &res); res.GetSuccess() != int32(i) {
						t.Errorf("call %d thinks it is call %d", i, res.GetSuccess())
					}
				}
				ctx := callCtx(t)
				if got, err := c.test.WhereAmI(ctx); err != nil || got != -1 {
					t.Errorf("unbatched whereAmI = %d, %v; want -1", got, err)
				}
			})

			t.Run("a batch sent as ONEWAY runs nothing, is logged, and the connection goes on", func(t *testing.T) {
				before, _, _ := h.snapshot()
				ctx := callCtx(t)
				args := &batch.BatchServiceExecuteBatchArgs{Request: &batch.BatchRequest{Requests: []*batch.Request{c.noteReq(t, "oneway batch")}}}
				for _, err := range []error{
					c.proto.WriteMessageBegin(ctx, "executeBatch", thrift.ONEWAY, 99),
					args.Write(ctx, c.proto),
					c.proto.WriteMessageEnd(ctx),
					c.proto.Flush(ctx),
				} {
					if err != nil {
						t.Fatalf("send a oneway batch: %v", err)
					}
				}
				if got, err := c.test.Echo(ctx, "after the oneway batch"); err != nil || got != "after the oneway batch" {
					t.Fatalf("echo after a oneway batch = %q, %v", got, err)
				}
				if after, _, _ := h.snapshot(); len(after) != len(before) {
					t.Errorf("the oneway batch ran: %q", after[len(before):])
				}
				lines := logs.find(t, "thriftbatch: refused a batch not sent as a CALL; no call ran")
				if len(lines) != 1 || lines[0]["level"] != "warn" {
					t.Errorf("oneway batch log lines: %v", lines)
				}
				c.checkNormalBatch(t)
			})

			t.Run("an empty batch answers an empty list of responses", func(t *testing.T) {
				resp, err := c.execute(t, &batch.BatchRequest{Requests: []*batch.Request{}})
				if err != nil {
					t.Fatalf("empty batch refused: %v", err)
				}
				if len(resp.Responses) != 0 || resp.CompressedResponses != nil || resp.GetCodec() != batch.Codec_NONE {
					t.Errorf("empty batch answered %+v", resp)
				}
			})
		})
	}
}
