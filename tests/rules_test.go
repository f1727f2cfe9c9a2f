package tests

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/apache/thrift/lib/go/thrift"
	"github.com/rs/zerolog"

	"github.com/thriftbatch/thriftbatch/dispatcher"
	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/processor"
	"github.com/thriftbatch/thriftbatch/tests/testsvc"
)

// The rules tests check that a batch is no way around the server's rules:
// the allow and deny lists, a per-call hook, and middleware apply to every
// call of a batch, however the batch is sent.
//
// Covered elsewhere and not repeated here: an authorization middleware
// wrapped around the inner processor refuses a method alone and inside a
// batch (TestMiddleware in mux_test.go); a handler's panic reaches the
// client without its value or stack and the log with both (TestCallOutcomes
// in calls_test.go); executeBatch inside a batch answers NESTED_BATCH
// (TestBatchErrors in batcherror_test.go); a batch sent as ONEWAY runs
// nothing (TestCallOutcomes).

// senders send one batch in each of the ways a client can: plain, with its
// calls compressed, and under a multiplexed name.
var senders = []struct {
	name string
	send func(t *testing.T, c *conn, reqs []*batch.Request) []*batch.Response
}{
	{"plain", func(t *testing.T, c *conn, reqs []*batch.Request) []*batch.Response {
		return c.run(t, reqs...)
	}},
	{"compressed", func(t *testing.T, c *conn, reqs []*batch.Request) []*batch.Response {
		packed := c.compressRequests(t, clientCodecs(t), batch.Codec_ZSTD, reqs)
		resp, err := c.execute(t, &batch.BatchRequest{RequestCodec: batch.CodecPtr(batch.Codec_ZSTD), CompressedRequests: packed})
		if err != nil {
			t.Fatalf("refused: %v", err)
		}
		return resp.Responses
	}},
	{"as Batch:executeBatch", func(t *testing.T, c *conn, reqs []*batch.Request) []*batch.Response {
		mux, _ := c.multiplexed("Batch")
		resp, err := mux.ExecuteBatch(callCtx(t), &batch.BatchRequest{Requests: reqs})
		if err != nil {
			t.Fatalf("Batch:executeBatch: %v", err)
		}
		return resp.Responses
	}},
}

func TestAllowAndDenyLists(t *testing.T) {
	for _, st := range plainStacks {
		t.Run("over "+st.name, func(t *testing.T) {
			t.Run("WithDenyMethods: denied calls answer CALL_NOT_ALLOWED and do not run, the others run, and the methods stay callable one by one", func(t *testing.T) {
				h := &handler{}
				addr, _ := serve(t, testsvc.NewTestProcessor(h), st, processor.WithDenyMethods("secret", "note"))
				c := dial(t, addr, st)
				for _, s := range senders {
					t.Run("sent "+s.name, func(t *testing.T) {
						out := s.send(t, c, []*batch.Request{
							c.reqID(t, 1, "echo", &testsvc.TestEchoArgs{Text: "a"}),
							c.reqID(t, 2, "secret", &testsvc.TestSecretArgs{}),
							c.reqID(t, 3, "note", &testsvc.TestNoteArgs{Text: "denied"}),
							c.reqID(t, 4, "echo", &testsvc.TestEchoArgs{Text: "b"}),
							// Other spellings are other methods: unknown, not a way in.
							c.reqID(t, 5, "Secret", &testsvc.TestSecretArgs{}),
							c.reqID(t, 6, "secret ", &testsvc.TestSecretArgs{}),
						})
						if got := c.echoed(t, out[0]) + c.echoed(t, out[3]); got != "ab" {
							t.Errorf("echoes = %q", got)
						}
						wantCallError(t, out[1], batch.CALL_NOT_ALLOWED, "secret", "does not allow")
						wantCallError(t, out[2], batch.CALL_NOT_ALLOWED, "note", "does not allow")
						wantCallError(t, out[4], thrift.UNKNOWN_METHOD)
						wantCallError(t, out[5], thrift.UNKNOWN_METHOD)
						for i, r := range out {
							if r.GetID() != int32(i+1) {
								t.Errorf("response %d: id %d", i, r.GetID())
							}
						}
						if secrets, _, _ := h.counts(); secrets != 0 {
							t.Errorf("secret ran %d times in batches", secrets)
						}
						if notes, _, _ := h.snapshot(); len(notes) != 0 {
							t.Errorf("note ran in a batch: %q", notes)
						}
					})
				}
				if got, err := c.test.Secret(callCtx(t)); err != nil || got != "the secret" {
					t.Errorf("plain secret = %q, %v", got, err)
				}
				if err := c.test.Note(callCtx(t), "plain"); err != nil {
					t.Errorf("plain note: %v", err)
				}
				c.checkNormalBatch(t) // waits for the oneway note
				if notes, _, _ := h.snapshot(); !slices.Equal(notes, []string{"plain"}) {
					t.Errorf("notes %q, want the plain one only", notes)
				}
			})

			t.Run("WithAllowMethods: only the named methods run, unknown methods still answer UNKNOWN_METHOD, and the rest stay callable one by one", func(t *testing.T) {
				h := &handler{}
				// Given twice, the option adds names.
				addr, _ := serve(t, testsvc.NewTestProcessor(h), st, processor.WithAllowMethods("echo"), processor.WithAllowMethods("divide"))
				c := dial(t, addr, st)
				for _, s := range senders {
					t.Run("sent "+s.name, func(t *testing.T) {
						out := s.send(t, c, []*batch.Request{
							c.req(t, "echo", &testsvc.TestEchoArgs{Text: "allowed"}),
							c.req(t, "divide", &testsvc.TestDivideArgs{A: 6, B: 3}),
							c.req(t, "secret", &testsvc.TestSecretArgs{}),
							c.req(t, "note", &testsvc.TestNoteArgs{Text: "not allowed"}),
							c.req(t, "nope", &testsvc.TestEchoArgs{}),
						})
						if got := c.echoed(t, out[0]); got != "allowed" {
							t.Errorf("echo = %q", got)
						}
						var div testsvc.TestDivideResult
						if c.decode(t, out[1], &div); div.GetSuccess() != 2 {
							t.Errorf("divide = %d", div.GetSuccess())
						}
						wantCallError(t, out[2], batch.CALL_NOT_ALLOWED, "secret", "not among")
						wantCallError(t, out[3], batch.CALL_NOT_ALLOWED, "note", "not among")
						wantCallError(t, out[4], thrift.UNKNOWN_METHOD, `"nope"`)
						if secrets, _, _ := h.counts(); secrets != 0 {
							t.Errorf("secret ran %d times in batches", secrets)
						}
					})
				}
				if got, err := c.test.Secret(callCtx(t)); err != nil || got != "the secret" {
					t.Errorf("plain secret = %q, %v", got, err)
				}
			})

			t.Run("deny wins over allow", func(t *testing.T) {
				h := &handler{}
				addr, _ := serve(t, testsvc.NewTestProcessor(h), st,
					processor.WithAllowMethods("echo", "secret"), processor.WithDenyMethods("secret"))
				c := dial(t, addr, st)
				out := c.run(t, c.req(t, "secret", &testsvc.TestSecretArgs{}), c.req(t, "echo", &testsvc.TestEchoArgs{Text: "x"}))
				wantCallError(t, out[0], batch.CALL_NOT_ALLOWED, "secret")
				if got := c.echoed(t, out[1]); got != "x" {
					t.Errorf("echo = %q", got)
				}
				if secrets, _, _ := h.counts(); secrets != 0 {
					t.Errorf("secret ran %d times", secrets)
				}
			})
		})
	}

	t.Run("under a TMultiplexedProcessor the lists hold the names the processor knows: Service:method", func(t *testing.T) {
		h := &handler{}
		mux := thrift.NewTMultiplexedProcessor()
		mux.RegisterProcessor("Test", testsvc.NewTestProcessor(h))
		addr, _ := serve(t, mux, binaryBuffered, processor.WithDenyMethods("Test:secret"))
		c := dial(t, addr, binaryBuffered)
		out := c.run(t,
			c.req(t, "Test:secret", &testsvc.TestSecretArgs{}),
			c.req(t, "Test:echo", &testsvc.TestEchoArgs{Text: "x"}),
			c.req(t, "secret", &testsvc.TestSecretArgs{}))
		wantCallError(t, out[0], batch.CALL_NOT_ALLOWED, "Test:secret")
		if got := c.echoed(t, out[1]); got != "x" {
			t.Errorf("Test:echo = %q", got)
		}
		wantCallError(t, out[2], thrift.UNKNOWN_METHOD) // no default processor
		if secrets, _, _ := h.counts(); secrets != 0 {
			t.Errorf("secret ran %d times", secrets)
		}

		// The flip side, for whoever writes the lists: a bare name does
		// not match the multiplexed one.
		bare := &handler{}
		mux2 := thrift.NewTMultiplexedProcessor()
		mux2.RegisterProcessor("Test", testsvc.NewTestProcessor(bare))
		addr2, _ := serve(t, mux2, binaryBuffered, processor.WithDenyMethods("secret"))
		c2 := dial(t, addr2, binaryBuffered)
		if out := c2.run(t, c2.req(t, "Test:secret", &testsvc.TestSecretArgs{})); out[0].Error != nil {
			t.Errorf("WithDenyMethods(\"secret\") refused Test:secret: %+v", out[0].Error)
		}
	})
}

// rateLimit is a per-call hook that lets limit calls through, then refuses.
type rateLimit struct {
	limit int64
	used  atomic.Int64
}

func (r *rateLimit) hook(context.Context, dispatcher.Call) error {
	if r.used.Add(1) > r.limit {
		return fmt.Errorf("rate limit of %d calls reached", r.limit)
	}
	return nil
}

func TestCallHook(t *testing.T) {
	t.Run("a rate limit of 10 calls lets exactly 10 calls of a batch of 25 run: batched calls count one by one", func(t *testing.T) {
		for _, s := range senders {
			t.Run("sent "+s.name, func(t *testing.T) {
				h := &handler{}
				limit := &rateLimit{limit: 10}
				addr, _ := serve(t, testsvc.NewTestProcessor(h), binaryBuffered, processor.WithCallHook(limit.hook))
				c := dial(t, addr, binaryBuffered)
				var reqs []*batch.Request
				for i := range 25 {
					reqs = append(reqs, c.reqID(t, int32(i), "echo", &testsvc.TestEchoArgs{Text: fmt.Sprint("call ", i)}))
				}
				out := s.send(t, c, reqs)
				ran, refused := 0, 0
				for i, r := range out {
					if r.Error == nil {
						ran++
						// The hook sees calls in request order: the first ten pass.
						if got := c.echoed(t, r); i >= 10 || got != fmt.Sprint("call ", i) {
							t.Errorf("call %d answered %q", i, got)
						}
						continue
					}
					refused++
					wantCallError(t, r, batch.CALL_NOT_ALLOWED, "echo", "rate limit of 10 calls reached")
					if r.GetID() != int32(i) {
						t.Errorf("response %d: id %d", i, r.GetID())
					}
				}
				if ran != 10 || refused != 15 {
					t.Errorf("%d calls ran and %d were refused, want 10 and 15", ran, refused)
				}
				if _, echoes, _ := h.snapshot(); len(echoes) != 10 {
					t.Errorf("the handler ran %d echoes, want 10", len(echoes))
				}
				// The budget is spent: the next batch runs nothing.
				for _, r := range c.run(t, c.req(t, "echo", &testsvc.TestEchoArgs{Text: "over"}), c.req(t, "note", &testsvc.TestNoteArgs{Text: "over"})) {
					wantCallError(t, r, batch.CALL_NOT_ALLOWED, "rate limit")
				}
				// Unknown methods are not counted: they answer UNKNOWN_METHOD
				// before the hook.
				before := limit.used.Load()
				wantCallError(t, c.run(t, c.req(t, "nope", &testsvc.TestEchoArgs{}))[0], thrift.UNKNOWN_METHOD)
				if limit.used.Load() != before {
					t.Error("the hook counted a call of an unknown method")
				}
			})
		}
	})

	t.Run("the hook sees each call's method and index, the context middleware set up, and runs before any call", func(t *testing.T) {
		type seen struct {
			call     dispatcher.Call
			user     any
			deadline bool
			ranYet   int
		}
		h := &handler{}
		var mu sync.Mutex
		var calls []seen
		hook := func(ctx context.Context, call dispatcher.Call) error {
			_, echoes, _ := h.snapshot()
			_, hasDeadline := ctx.Deadline()
			mu.Lock()
			calls = append(calls, seen{call, ctx.Value(userKey{}), hasDeadline, len(echoes)})
			mu.Unlock()
			if call.Method == "secret" && ctx.Value(userKey{}) != "admin" {
				return errors.New("secret is for admins")
			}
			return nil
		}
		proc, err := processor.New(testsvc.NewTestProcessor(h), processor.WithCallHook(hook))
		if err != nil {
			t.Fatal(err)
		}
		thrift.WrapProcessor(proc, userMiddleware("alice"))
		addr := serveProcessor(t, proc, binaryBuffered)
		c := dial(t, addr, binaryBuffered)

		out := c.runBatch(t, &batch.BatchRequest{
			Requests: []*batch.Request{
				c.req(t, "echo", &testsvc.TestEchoArgs{Text: "one"}),
				c.req(t, "divide", &testsvc.TestDivideArgs{A: 4, B: 2}),
				c.req(t, "nope", &testsvc.TestEchoArgs{}),
				c.req(t, "secret", &testsvc.TestSecretArgs{}),
				c.req(t, "echo", &testsvc.TestEchoArgs{Text: "two"}),
			},
			TimeoutMillis: thrift.Int32Ptr(5000),
		})
		if got := c.echoed(t, out[0]) + " " + c.echoed(t, out[4]); got != "one two" {
			t.Errorf("echoes = %q", got)
		}
		wantCallError(t, out[2], thrift.UNKNOWN_METHOD)
		wantCallError(t, out[3], batch.CALL_NOT_ALLOWED, "secret is for admins")
		if secrets, _, _ := h.counts(); secrets != 0 {
			t.Errorf("secret ran %d times", secrets)
		}

		mu.Lock()
		defer mu.Unlock()
		want := []dispatcher.Call{{Index: 0, Method: "echo"}, {Index: 1, Method: "divide"}, {Index: 3, Method: "secret"}, {Index: 4, Method: "echo"}}
		if len(calls) != len(want) {
			t.Fatalf("the hook saw %d calls, want %d (every known method, not nope): %+v", len(calls), len(want), calls)
		}
		for i, s := range calls {
			if s.call != want[i] {
				t.Errorf("hook call %d saw %+v, want %+v", i, s.call, want[i])
			}
			if s.user != "alice" {
				t.Errorf("hook call %d saw user %v, want the middleware's alice", i, s.user)
			}
			if !s.deadline {
				t.Errorf("hook call %d: the context has no deadline, want the batch's", i)
			}
			if s.ranYet != 0 {
				t.Errorf("hook call %d: %d calls had run already, want the hook to see them all first", i, s.ranYet)
			}
		}
	})
}

type userKey struct{}

// userMiddleware puts the user a real middleware would authenticate into
// the context of executeBatch, and of every other call.
func userMiddleware(user string) thrift.ProcessorMiddleware {
	return func(name string, next thrift.TProcessorFunction) thrift.TProcessorFunction {
		return thrift.WrappedTProcessorFunction{Wrapped: func(ctx context.Context, seqID int32, in, out thrift.TProtocol) (bool, thrift.TException) {
			return next.Process(context.WithValue(ctx, userKey{}, user), seqID, in, out)
		}}
	}
}

func TestMiddlewareOnTheProcessor(t *testing.T) {
	t.Run("an authorization middleware wrapped around the Processor refuses secret in every kind of batch", func(t *testing.T) {
		h := &handler{}
		proc, err := processor.New(testsvc.NewTestProcessor(h))
		if err != nil {
			t.Fatal(err)
		}
		// Wrapping the Processor wraps executeBatch and, through
		// AddToProcessorMap, every inner function the batches call.
		thrift.WrapProcessor(proc, authMiddleware)
		addr := serveProcessor(t, proc, compactFramed)
		c := dial(t, addr, compactFramed)
		for _, s := range senders {
			t.Run("sent "+s.name, func(t *testing.T) {
				out := s.send(t, c, []*batch.Request{
					c.req(t, "secret", &testsvc.TestSecretArgs{}),
					c.req(t, "echo", &testsvc.TestEchoArgs{Text: "allowed"}),
				})
				wantCallError(t, out[0], thrift.UNKNOWN_APPLICATION_EXCEPTION, permissionDenied)
				if got := c.echoed(t, out[1]); got != "allowed" {
					t.Errorf("echo = %q", got)
				}
			})
		}
		if _, err := c.test.Secret(callCtx(t)); err == nil || !strings.Contains(err.Error(), permissionDenied) {
			t.Errorf("plain secret: %v, want the middleware's refusal", err)
		}
		if secrets, _, _ := h.counts(); secrets != 0 {
			t.Errorf("secret ran %d times", secrets)
		}
	})

	t.Run("a middleware that panics inside a batch fails only its call, without the panic's text, and the log has value and stack", func(t *testing.T) {
		h := &handler{}
		logs := &syncBuffer{}
		inner := thrift.WrapProcessor(testsvc.NewTestProcessor(h), panickingMiddleware)
		addr, _ := serve(t, inner, binaryBuffered, processor.WithLogger(zerolog.New(logs)))
		c := dial(t, addr, binaryBuffered)
		out := c.run(t,
			c.reqID(t, 1, "secret", &testsvc.TestSecretArgs{}),
			c.reqID(t, 2, "echo", &testsvc.TestEchoArgs{Text: "fine"}))
		wantCallError(t, out[0], thrift.INTERNAL_ERROR, "secret")
		for _, leak := range []string{"hunter2", "goroutine", "panickingMiddleware", ".go:"} {
			if strings.Contains(out[0].Error.Message, leak) {
				t.Errorf("CallError %q carries %q", out[0].Error.Message, leak)
			}
		}
		if got := c.echoed(t, out[1]); got != "fine" {
			t.Errorf("echo = %q", got)
		}
		lines := logs.find(t, "thriftbatch: handler panicked")
		if len(lines) != 1 {
			t.Fatalf("%d panic log lines, want 1", len(lines))
		}
		if p, _ := lines[0]["panic"].(string); !strings.Contains(p, "hunter2") {
			t.Errorf("the log has panic %q, want the value", p)
		}
		if stack, _ := lines[0]["stack"].(string); !strings.Contains(stack, "panickingMiddleware") {
			t.Errorf("the log's stack does not go through the middleware: %q", stack)
		}
		c.checkNormalBatch(t)
	})
}

// panickingMiddleware panics, with a value holding a credential, when it
// serves secret.
func panickingMiddleware(name string, next thrift.TProcessorFunction) thrift.TProcessorFunction {
	if name != "secret" {
		return next
	}
	return thrift.WrappedTProcessorFunction{Wrapped: func(context.Context, int32, thrift.TProtocol, thrift.TProtocol) (bool, thrift.TException) {
		panic("middleware failed with token=hunter2")
	}}
}

// TestAPanickingCallHookRejectsItsCall checks that a hook's panic rejects the
// call it was asked about, logs the panic, and leaves the other calls and the
// server running.
func TestAPanickingCallHookRejectsItsCall(t *testing.T) {
	logs := &syncBuffer{}
	hook := func(_ context.Context, call dispatcher.Call) error {
		if call.Index == 1 {
			panic("hook bug: secret detail")
		}
		return nil
	}
	addr, _ := serve(t, testsvc.NewTestProcessor(&handler{}), compactFramed, processor.WithCallHook(hook), processor.WithLogger(zerolog.New(logs)))
	c := dial(t, addr, compactFramed)
	for range 2 {
		out := c.run(t,
			c.req(t, "echo", &testsvc.TestEchoArgs{Text: "a"}),
			c.req(t, "echo", &testsvc.TestEchoArgs{Text: "b"}),
			c.req(t, "echo", &testsvc.TestEchoArgs{Text: "c"}))
		if e := out[1].Error; e == nil || e.Type != batch.CALL_NOT_ALLOWED || strings.Contains(e.Message, "secret") {
			t.Fatalf("the call whose hook panicked answered %v", out[1])
		}
		for _, i := range []int{0, 2} {
			var echo testsvc.TestEchoResult
			c.decode(t, out[i], &echo)
			if want := string(rune('a' + i)); echo.GetSuccess() != want {
				t.Errorf("call %d = %q, want %q", i, echo.GetSuccess(), want)
			}
		}
	}
	if lines := logs.find(t, "thriftbatch: call hook panicked"); len(lines) != 2 || !strings.Contains(fmt.Sprint(lines[0]["panic"]), "secret detail") {
		t.Errorf("hook panic log lines: %v", lines)
	}
}
