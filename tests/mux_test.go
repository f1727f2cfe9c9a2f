package tests

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/processor"
	"github.com/thriftbatch/thriftbatch/tests/testsvc"
)

// upperEcho is a processor function for echo that answers its text in upper
// case, as one installed with AddToProcessorMap at run time.
func upperEcho(reply string) thrift.TProcessorFunction {
	return thrift.WrappedTProcessorFunction{Wrapped: func(ctx context.Context, seqID int32, in, out thrift.TProtocol) (bool, thrift.TException) {
		var args testsvc.TestEchoArgs
		if err := args.Read(ctx, in); err != nil {
			return false, thrift.WrapTException(err)
		}
		if err := in.ReadMessageEnd(ctx); err != nil {
			return false, thrift.WrapTException(err)
		}
		res := testsvc.TestEchoResult{Success: thrift.StringPtr(strings.ToUpper(args.Text))}
		if err := out.WriteMessageBegin(ctx, reply, thrift.REPLY, seqID); err != nil {
			return false, thrift.WrapTException(err)
		}
		if err := res.Write(ctx, out); err != nil {
			return false, thrift.WrapTException(err)
		}
		if err := out.WriteMessageEnd(ctx); err != nil {
			return false, thrift.WrapTException(err)
		}
		return true, thrift.WrapTException(out.Flush(ctx))
	}}
}

func TestMultiplexedProcessor(t *testing.T) {
	for _, st := range []stack{binaryBuffered, compactFramed} {
		t.Run("over "+st.name, func(t *testing.T) {
			h := &handler{}
			mux := thrift.NewTMultiplexedProcessor()
			mux.RegisterProcessor("Test", testsvc.NewTestProcessor(h))
			addr, proc := serve(t, mux, st)
			c := dial(t, addr, st)
			muxBatch, _ := c.multiplexed("Batch")
			_, testClient := c.multiplexed("Test")

			calls := func(t *testing.T) []*batch.Request {
				return []*batch.Request{
					c.reqID(t, 1, "Test:echo", &testsvc.TestEchoArgs{Text: "hello"}),
					c.reqID(t, 2, "Test:divide", &testsvc.TestDivideArgs{A: 8, B: 4}),
					c.reqID(t, 3, "echo", &testsvc.TestEchoArgs{Text: "no service name"}),
					c.reqID(t, 4, "Other:echo", &testsvc.TestEchoArgs{Text: "no such service"}),
				}
			}
			check := func(t *testing.T, out []*batch.Response) {
				t.Helper()
				if len(out) != 4 {
					t.Fatalf("%d responses", len(out))
				}
				if got := c.echoed(t, out[0]); got != "hello" {
					t.Errorf("Test:echo = %q", got)
				}
				var div testsvc.TestDivideResult
				if c.decode(t, out[1], &div); div.GetSuccess() != 2 {
					t.Errorf("Test:divide = %d", div.GetSuccess())
				}
				// Without a default processor, unprefixed and unknown
				// service names reach nothing.
				wantCallError(t, out[2], thrift.UNKNOWN_METHOD, `"echo"`)
				wantCallError(t, out[3], thrift.UNKNOWN_METHOD, `"Other:echo"`)
			}

			t.Run("executeBatch answers under its plain name", func(t *testing.T) {
				check(t, c.run(t, calls(t)...))
			})

			t.Run("executeBatch answers a multiplexed client as Batch:executeBatch", func(t *testing.T) {
				ctx := callCtx(t)
				resp, err := muxBatch.ExecuteBatch(ctx, &batch.BatchRequest{Requests: calls(t)})
				if err != nil {
					t.Fatalf("Batch:executeBatch: %v", err)
				}
				check(t, resp.Responses)
			})

			t.Run("plain multiplexed calls still reach the service", func(t *testing.T) {
				if got, err := testClient.Echo(callCtx(t), "plain"); err != nil || got != "plain" {
					t.Errorf("Test:echo = %q, %v", got, err)
				}
			})

			t.Run("a method replaced with AddToProcessorMap on the wrapper serves the next batch", func(t *testing.T) {
				proc.AddToProcessorMap("Test:echo", upperEcho("echo"))
				out := c.run(t, c.req(t, "Test:echo", &testsvc.TestEchoArgs{Text: "shout"}))
				if got := c.echoed(t, out[0]); got != "SHOUT" {
					t.Errorf("replaced Test:echo = %q, want SHOUT", got)
				}
				if got, err := testClient.Echo(callCtx(t), "plain too"); err != nil || got != "PLAIN TOO" {
					t.Errorf("plain Test:echo after the replacement = %q, %v", got, err)
				}
			})

			t.Run("a method added with AddToProcessorMap on the wrapper serves the next batch", func(t *testing.T) {
				out := c.run(t, c.req(t, "Test:shout", &testsvc.TestEchoArgs{Text: "new"}))
				wantCallError(t, out[0], thrift.UNKNOWN_METHOD, `"Test:shout"`)
				proc.AddToProcessorMap("Test:shout", upperEcho("shout"))
				out = c.run(t, c.req(t, "Test:shout", &testsvc.TestEchoArgs{Text: "new"}))
				if got := c.echoed(t, out[0]); got != "NEW" {
					t.Errorf("Test:shout = %q, want NEW", got)
				}
			})
		})
	}
}

// permissionDenied is what the authorization middleware answers for secret.
const permissionDenied = "permission denied: secret needs a token"

// authMiddleware refuses secret as a real authorization middleware would:
// it reads the call, writes an EXCEPTION message holding a
// TApplicationException, and keeps the connection.
func authMiddleware(name string, next thrift.TProcessorFunction) thrift.TProcessorFunction {
	if name != "secret" {
		return next
	}
	return thrift.WrappedTProcessorFunction{Wrapped: func(ctx context.Context, seqID int32, in, out thrift.TProtocol) (bool, thrift.TException) {
		if err := in.Skip(ctx, thrift.STRUCT); err != nil {
			return false, thrift.WrapTException(err)
		}
		if err := in.ReadMessageEnd(ctx); err != nil {
			return false, thrift.WrapTException(err)
		}
		x := thrift.NewTApplicationException(thrift.UNKNOWN_APPLICATION_EXCEPTION, permissionDenied)
		if err := out.WriteMessageBegin(ctx, name, thrift.EXCEPTION, seqID); err != nil {
			return false, thrift.WrapTException(err)
		}
		if err := x.Write(ctx, out); err != nil {
			return false, thrift.WrapTException(err)
		}
		if err := out.WriteMessageEnd(ctx); err != nil {
			return false, thrift.WrapTException(err)
		}
		if err := out.Flush(ctx); err != nil {
			return false, thrift.WrapTException(err)
		}
		return true, x
	}}
}

// silentAuthMiddleware refuses secret by returning an error without writing
// anything.
func silentAuthMiddleware(name string, next thrift.TProcessorFunction) thrift.TProcessorFunction {
	if name != "secret" {
		return next
	}
	return thrift.WrappedTProcessorFunction{Wrapped: func(ctx context.Context, seqID int32, in, out thrift.TProtocol) (bool, thrift.TException) {
		return false, thrift.WrapTException(errors.New(permissionDenied))
	}}
}

// countingMiddleware counts the calls each function serves.
type countingMiddleware struct {
	mu    sync.Mutex
	calls map[string]int
}

func (m *countingMiddleware) wrap(name string, next thrift.TProcessorFunction) thrift.TProcessorFunction {
	return thrift.WrappedTProcessorFunction{Wrapped: func(ctx context.Context, seqID int32, in, out thrift.TProtocol) (bool, thrift.TException) {
		m.mu.Lock()
		m.calls[name]++
		m.mu.Unlock()
		return next.Process(ctx, seqID, in, out)
	}}
}

func (m *countingMiddleware) count(name string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.calls[name]
}

func TestMiddleware(t *testing.T) {
	for _, st := range plainStacks {
		t.Run("over "+st.name, func(t *testing.T) {
			t.Run("an authorization middleware refuses secret alone and inside a batch, and lets the rest pass", func(t *testing.T) {
				h := &handler{}
				addr, _ := serve(t, thrift.WrapProcessor(testsvc.NewTestProcessor(h), authMiddleware), st)
				c := dial(t, addr, st)

				_, err := c.test.Secret(callCtx(t))
				var tae thrift.TApplicationException
				if !errors.As(err, &tae) || tae.Error() != permissionDenied {
					t.Fatalf("plain secret: %v, want the middleware's refusal", err)
				}

				out := c.run(t,
					c.reqID(t, 1, "echo", &testsvc.TestEchoArgs{Text: "allowed"}),
					c.reqID(t, 2, "secret", &testsvc.TestSecretArgs{}),
					c.reqID(t, 3, "divide", &testsvc.TestDivideArgs{A: 6, B: 3}))
				if got := c.echoed(t, out[0]); got != "allowed" {
					t.Errorf("echo = %q", got)
				}
				wantCallError(t, out[1], thrift.UNKNOWN_APPLICATION_EXCEPTION)
				if out[1].Error.Message != permissionDenied {
					t.Errorf("secret refused with %q, want %q", out[1].Error.Message, permissionDenied)
				}
				var div testsvc.TestDivideResult
				if c.decode(t, out[2], &div); div.GetSuccess() != 2 {
					t.Errorf("divide = %d", div.GetSuccess())
				}
				if secrets, _, _ := h.counts(); secrets != 0 {
					t.Errorf("the secret handler ran %d times", secrets)
				}
				c.checkNormalBatch(t)
			})

			t.Run("a middleware that refuses with an error and writes nothing fails the call with INTERNAL_ERROR", func(t *testing.T) {
				h := &handler{}
				addr, _ := serve(t, thrift.WrapProcessor(testsvc.NewTestProcessor(h), silentAuthMiddleware), st)
				c := dial(t, addr, st)
				out := c.run(t,
					c.reqID(t, 1, "secret", &testsvc.TestSecretArgs{}),
					c.reqID(t, 2, "echo", &testsvc.TestEchoArgs{Text: "allowed"}))
				wantCallError(t, out[0], thrift.INTERNAL_ERROR, "secret")
				if got := c.echoed(t, out[1]); got != "allowed" {
					t.Errorf("echo = %q", got)
				}
				if secrets, _, _ := h.counts(); secrets != 0 {
					t.Errorf("the secret handler ran %d times", secrets)
				}
				c.checkNormalBatch(t)
			})

			t.Run("a middleware wrapping the Processor itself sees the batch once and each call once", func(t *testing.T) {
				h := &handler{}
				proc, err := processor.New(testsvc.NewTestProcessor(h))
				if err != nil {
					t.Fatal(err)
				}
				m := &countingMiddleware{calls: map[string]int{}}
				if wrapped := thrift.WrapProcessor(proc, m.wrap); wrapped != thrift.TProcessor(proc) {
					t.Fatalf("WrapProcessor returned %T, not the processor", wrapped)
				}
				addr := serveProcessor(t, proc, st)
				c := dial(t, addr, st)

				out := c.run(t,
					c.req(t, "echo", &testsvc.TestEchoArgs{Text: "one"}),
					c.req(t, "echo", &testsvc.TestEchoArgs{Text: "two"}),
					c.req(t, "divide", &testsvc.TestDivideArgs{A: 1, B: 1}),
					c.req(t, "note", &testsvc.TestNoteArgs{Text: "n"}))
				if got := c.echoed(t, out[0]) + c.echoed(t, out[1]); got != "onetwo" {
					t.Errorf("echoes = %q", got)
				}
				for name, want := range map[string]int{"executeBatch": 1, "echo": 2, "divide": 1, "note": 1, "sleepy": 0} {
					if got := m.count(name); got != want {
						t.Errorf("middleware saw %s %d times, want %d", name, got, want)
					}
				}
				if got, err := c.test.Echo(callCtx(t), "three"); err != nil || got != "three" {
					t.Errorf("plain echo = %q, %v", got, err)
				}
				if got := m.count("echo"); got != 3 {
					t.Errorf("middleware saw echo %d times after a plain call, want 3", got)
				}
				if got := m.count("executeBatch"); got != 1 {
					t.Errorf("middleware saw executeBatch %d times, want 1", got)
				}
			})
		})
	}
}
