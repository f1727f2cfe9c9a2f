package tests

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/apache/thrift/lib/go/thrift"
	"go.uber.org/goleak"

	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/internal/poll"
	"github.com/thriftbatch/thriftbatch/pool"
	"github.com/thriftbatch/thriftbatch/processor"
	"github.com/thriftbatch/thriftbatch/tests/testsvc"
)

// The fault tests break things around a running server: clients that go
// away or stop reading, handlers that never return, a shutdown with batches
// in flight. Each checks that no goroutine outlives it (TestMain checks the
// package as a whole as well).

// cancelBound is how soon a handler must see its context canceled once its
// client has gone: generous, since the checks run every 5 ms.
const cancelBound = 2 * time.Second

// verifyNoLeaks fails t if goroutines that did not exist when it was called
// are still running once every cleanup of t has run. Call it first in a
// test, so that its cleanup runs last.
func verifyNoLeaks(t *testing.T) {
	t.Helper()
	current := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, current) })
}

// endedCall is how a call's context ended.
type endedCall struct {
	tag        int64
	err, cause error
	at         time.Time
}

// watchingHandler is the tests' handler whose sleepy calls ignore millis:
// they announce their start and then wait for their context to end, and
// report how it ended.
type watchingHandler struct {
	*handler
	begun chan int64
	ended chan endedCall
}

func newWatchingHandler() *watchingHandler {
	return &watchingHandler{handler: &handler{}, begun: make(chan int64, 64), ended: make(chan endedCall, 64)}
}

func (h *watchingHandler) Sleepy(ctx context.Context, _ int32, tag int64) (int64, error) {
	h.begun <- tag
	<-ctx.Done()
	h.ended <- endedCall{tag: tag, err: ctx.Err(), cause: context.Cause(ctx), at: time.Now()}
	return 0, ctx.Err()
}

// waitBegun waits until n calls have begun.
func waitBegun(t *testing.T, begun <-chan int64, n int) {
	t.Helper()
	deadline := time.After(waitBound)
	for range n {
		select {
		case <-begun:
		case <-deadline:
			t.Fatalf("fewer than %d calls began", n)
		}
	}
}

// sendAsync sends r on c in a goroutine and returns a channel that yields
// the result once the call returns.
func sendAsync(c *conn, r *batch.BatchRequest) <-chan error {
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*waitBound)
		defer cancel()
		_, err := c.batch.ExecuteBatch(ctx, r)
		done <- err
	}()
	return done
}

// childEnv names the test a child process of the test binary runs.
const childEnv = "THRIFTBATCH_CHILD_TEST"

// runInChild runs the test named name in a child process of the test
// binary, and fails t if it fails. The child's own leak check and, under
// -race, its race detector apply.
func runInChild(t *testing.T, name string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+name+"$", "-test.count=1", "-test.v", "-test.timeout=5m")
	cmd.Env = append(os.Environ(), childEnv+"="+name)
	out, err := cmd.CombinedOutput()
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if err != nil || strings.Contains(line, "_test.go:") {
			t.Log("child: " + strings.TrimSpace(line))
		}
	}
	if err != nil {
		t.Fatalf("%s in a child process: %v", name, err)
	}
	// A child that skipped also exits 0: only its PASS line says it ran.
	if !strings.Contains(string(out), "--- PASS: "+name+" ") {
		t.Fatalf("%s did not pass in the child process:\n%s", name, out)
	}
}

// clientGone checks over each of two stacks that a client that disconnects
// mid-batch has its calls' context canceled within cancelBound, with cause.
func clientGone(t *testing.T, cause error) {
	for _, st := range []stack{binaryBuffered, compactFramed} {
		t.Run("over "+st.name+" a client that disconnects cancels its calls' context promptly", func(t *testing.T) {
			h := newWatchingHandler()
			addr, proc := serve(t, testsvc.NewTestProcessor(h), st)
			c, err := dialConn(addr, st)
			if err != nil {
				t.Fatal(err)
			}
			const calls = 4
			var reqs []*batch.Request
			for i := range calls {
				reqs = append(reqs, c.req(t, "sleepy", &testsvc.TestSleepyArgs{Millis: 60_000, Tag: int64(i)}))
			}
			reqs = append(reqs, c.req(t, "echo", &testsvc.TestEchoArgs{Text: "done before the client leaves"}))
			done := sendAsync(c, &batch.BatchRequest{Requests: reqs})
			waitBegun(t, h.begun, calls)

			gone := time.Now()
			c.trans.Close()
			var slowest time.Duration
			for range calls {
				select {
				case e := <-h.ended:
					slowest = max(slowest, e.at.Sub(gone))
					if !errors.Is(e.err, context.Canceled) {
						t.Errorf("call %d ended with %v, want context.Canceled", e.tag, e.err)
					}
					if !errors.Is(e.cause, cause) {
						t.Errorf("call %d: context.Cause = %v, want %v", e.tag, e.cause, cause)
					}
				case <-time.After(cancelBound):
					t.Fatalf("a call's context was not canceled within %v of the client leaving", cancelBound)
				}
			}
			t.Logf("every call's context was canceled within %v of the client leaving (cause: %v)", slowest, cause)
			if err := <-done; err == nil {
				t.Error("the client that left got an answer")
			}
			waitIdle(t, proc)
			checkAlive(t, addr, st)
		})
	}
}

func TestClientGoneMidBatch(t *testing.T) {
	verifyNoLeaks(t)
	t.Run("with the library's connectivity check the processor watches the connection at its interval", func(t *testing.T) {
		if thrift.ServerConnectivityCheckInterval <= 0 {
			t.Fatalf("thrift.ServerConnectivityCheckInterval = %v, want the library default", thrift.ServerConnectivityCheckInterval)
		}
		clientGone(t, processor.ErrClientGone)
	})
	t.Run("with ServerConnectivityCheckInterval 0 the processor watches the connection", func(t *testing.T) {
		// Writing the variable races, for the race detector, with every
		// goroutine of the generated code that ever read it, even long
		// finished: so the test runs in a process of its own, which sets
		// it before any server starts.
		runInChild(t, "TestClientGoneWithoutConnectivityCheck")
	})
}

// TestClientGoneWithoutConnectivityCheck is TestClientGoneMidBatch's case
// for ServerConnectivityCheckInterval 0. It runs only in the child process
// that TestClientGoneMidBatch starts.
func TestClientGoneWithoutConnectivityCheck(t *testing.T) {
	if os.Getenv(childEnv) != t.Name() {
		t.Skip("runs in a child process of TestClientGoneMidBatch")
	}
	saved := thrift.ServerConnectivityCheckInterval
	thrift.ServerConnectivityCheckInterval = 0
	// Registered first, so run last: after every server has stopped.
	t.Cleanup(func() { thrift.ServerConnectivityCheckInterval = saved })
	verifyNoLeaks(t)
	clientGone(t, processor.ErrClientGone)
}

// waitIdle waits until proc has no batch and no call in flight.
func waitIdle(t *testing.T, proc *processor.Processor) processor.Stats {
	t.Helper()
	var s processor.Stats
	if !poll.Until(waitBound, func() bool {
		s = proc.Stats()
		return s.BatchesInFlight == 0 && s.Pool.BatchesInFlight == 0 && s.Pool.CallsInFlight == 0
	}) {
		t.Fatalf("the processor is not idle: %+v", s)
	}
	return s
}

// hangingHandler is the tests' handler whose sleepy calls ignore their
// context and return only when release is closed.
type hangingHandler struct {
	*handler
	begun   chan int64
	release chan struct{}
}

func (h *hangingHandler) Sleepy(_ context.Context, _ int32, tag int64) (int64, error) {
	h.begun <- tag
	<-h.release
	return tag, nil
}

func TestHandlerThatNeverReturns(t *testing.T) {
	verifyNoLeaks(t)
	for _, size := range []int{pool.DefaultSize, 1} {
		name := "with the default pool"
		if size == 1 {
			name = "with a pool of one worker, which the hung call keeps"
		}
		t.Run(name, func(t *testing.T) {
			h := &hangingHandler{handler: &handler{}, begun: make(chan int64, 8), release: make(chan struct{})}
			addr, proc := serve(t, testsvc.NewTestProcessor(h), binaryBuffered, processor.WithPoolSize(size))
			// Release the hung calls when the test ends, before the
			// server and the pool are closed.
			t.Cleanup(func() { close(h.release) })
			c := dial(t, addr, binaryBuffered)

			hang := func(t *testing.T, n uint64) {
				t.Helper()
				reqs := []*batch.Request{c.reqID(t, 1, "sleepy", &testsvc.TestSleepyArgs{Millis: 0, Tag: int64(n)})}
				if size > 1 {
					// With the only worker hung, the rest of the batch
					// would wait for it: the batch's one helper runs its
					// calls, and the pool has no room for another.
					reqs = append(reqs, c.reqID(t, 2, "echo", &testsvc.TestEchoArgs{Text: "beside the hung call"}))
				}
				start := time.Now()
				out := c.runBatch(t, &batch.BatchRequest{Requests: reqs, TimeoutMillis: thrift.Int32Ptr(200)})
				if d := time.Since(start); d > answerBound {
					t.Errorf("the batch answered after %v, want about its 200 ms deadline", d)
				}
				wantCallError(t, out[0], batch.CALL_DEADLINE_EXCEEDED, "deadline")
				if len(out) > 1 {
					if got := c.echoed(t, out[1]); got != "beside the hung call" {
						t.Errorf("echo = %q", got)
					}
				}
				<-h.begun
				// The batch leaves the processor's count once its answer
				// is flushed, a moment after the client may have read it.
				var s processor.Stats
				poll.Until(waitBound, func() bool { s = proc.Stats(); return s.BatchesInFlight == 0 })
				if s.Pool.Abandoned != n {
					t.Errorf("Stats().Pool.Abandoned = %d, want %d", s.Pool.Abandoned, n)
				}
				if s.BatchesInFlight != 0 || s.Pool.BatchesInFlight != 0 {
					t.Errorf("%d batches in flight (%d in the pool) after the batch answered, want 0", s.BatchesInFlight, s.Pool.BatchesInFlight)
				}
				// The hung calls keep their workers until they return.
				for i := 0; proc.Stats().Pool.Running != int(n); i++ {
					if i == 1000 {
						t.Fatalf("Stats().Pool.Running = %d, want %d (one per hung call)", proc.Stats().Pool.Running, n)
					}
					time.Sleep(5 * time.Millisecond)
				}
				t.Logf("after %d hung batches: %+v", n, proc.Stats().Pool)
			}

			t.Run("the batch deadline answers the hung call CALL_DEADLINE_EXCEEDED and counts it abandoned", func(t *testing.T) {
				hang(t, 1)
			})
			t.Run("later batches still run", func(t *testing.T) {
				before := proc.Stats().Pool.Inline
				for range 3 {
					c.checkNormalBatch(t)
					dial(t, addr, binaryBuffered).checkNormalBatch(t)
				}
				if after := proc.Stats().Pool.Inline; size == 1 && after == before {
					t.Errorf("with the only worker hung, calls ran inline %d times; want them on the callers' goroutines", after-before)
				}
			})
			if size > 1 {
				t.Run("a second hung batch is counted too", func(t *testing.T) {
					hang(t, 2)
					c.checkNormalBatch(t)
				})
			}
		})
	}
}

func TestClientThatStopsReading(t *testing.T) {
	verifyNoLeaks(t)
	for _, h := range hostileStacks {
		t.Run("over "+h.name+" a client that never reads its answers does not slow the others", func(t *testing.T) {
			addr, proc := serve(t, testsvc.NewTestProcessor(&handler{}), h.stack)

			// The stuck client pipelines batches of about 1.4 MB of
			// answer each and never reads: the socket buffers fill, and
			// the server's goroutine for it blocks writing.
			const batches = 40
			stuck := dialRaw(t, addr, h)
			big := &batch.BatchRequest{Requests: []*batch.Request{{Method: "items", Arguments: h.args(t, &testsvc.TestItemsArgs{Count: 20_000})}}}
			var msgs []byte
			for i := range batches {
				msgs = append(msgs, h.frame(h.batchMsg(t, thrift.CALL, int32(i), big))...)
			}
			stuck.send(t, msgs)
			served := waitStalled(t, proc)
			if served >= batches {
				t.Fatalf("the server answered all %d batches: the socket buffers did not fill", batches)
			}
			t.Logf("the server answered %d of %d batches, then blocked writing to the stuck client", served, batches)

			// Everyone else is served as usual, on new connections.
			c := dial(t, addr, h.stack)
			var slowest time.Duration
			for i := range 5 {
				start := time.Now()
				c.checkNormalBatch(t)
				out := c.run(t, c.itemsBatch(t, 2000)...)
				c.checkItemsBatch(t, out, 2000)
				d := time.Since(start)
				if d > answerBound {
					t.Errorf("round %d took %v with a stuck client on the server", i, d)
				}
				slowest = max(slowest, d)
			}
			t.Logf("another client's slowest round (a batch of echoes and one of 2,000 items) took %v", slowest)
			if got, err := c.test.Echo(callCtx(t), "plain"); err != nil || got != "plain" {
				t.Errorf("plain echo = %q, %v", got, err)
			}
			// Hanging up releases the server's goroutine for the stuck
			// client; the cleanup's server Stop waits for it.
			stuck.conn.Close()
		})
	}
}

// waitStalled waits until proc's count of batches stops growing for a
// while, and returns it.
func waitStalled(t *testing.T, proc *processor.Processor) uint64 {
	t.Helper()
	deadline := time.Now().Add(2 * waitBound)
	last, since := proc.Stats().Pool.Batches, time.Now()
	for time.Since(since) < 500*time.Millisecond {
		if time.Now().After(deadline) {
			t.Fatal("the server kept answering")
		}
		time.Sleep(20 * time.Millisecond)
		if n := proc.Stats().Pool.Batches; n != last {
			last, since = n, time.Now()
		}
	}
	return last
}

func TestShutdownWithBatchesInFlight(t *testing.T) {
	verifyNoLeaks(t)

	t.Run("Close waits for every batch in flight, which all answer, then refuses new ones", func(t *testing.T) {
		h := &handler{started: make(chan int64, 64)}
		addr, proc := serve(t, testsvc.NewTestProcessor(h), binaryBuffered)
		const clients, calls = 4, 3
		type answer struct {
			resp *batch.BatchResponse
			err  error
		}
		answers := make(chan answer, clients)
		var wg sync.WaitGroup
		for i := range clients {
			c := dial(t, addr, binaryBuffered)
			var reqs []*batch.Request
			for j := range calls {
				reqs = append(reqs, c.req(t, "sleepy", &testsvc.TestSleepyArgs{Millis: 300, Tag: int64(10*i + j)}))
			}
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 2*waitBound)
				defer cancel()
				resp, err := c.batch.ExecuteBatch(ctx, &batch.BatchRequest{Requests: reqs})
				answers <- answer{resp, err}
			})
		}
		t.Cleanup(wg.Wait)
		waitBegun(t, h.started, clients*calls)

		err := <-closeAsync(proc, waitBound)
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
		// Close returned: every call has ended, none was cut short.
		_, _, events := h.snapshot()
		ends := 0
		for _, e := range events {
			if len(e) > 4 && e[:4] == "end " {
				ends++
			}
		}
		if ends != clients*calls {
			t.Errorf("Close returned with %d of %d calls ended", ends, clients*calls)
		}
		if s := proc.Stats(); s.BatchesInFlight != 0 {
			t.Errorf("%d batches in flight after Close", s.BatchesInFlight)
		}
		for range clients {
			a := <-answers
			if a.err != nil {
				t.Fatalf("a batch in flight failed: %v", a.err)
			}
			for _, r := range a.resp.Responses {
				if r.Error != nil {
					t.Errorf("a call of a batch in flight answered %d: %s", r.Error.Type, r.Error.Message)
				}
			}
		}
		c := dial(t, addr, binaryBuffered)
		c.refused(t, &batch.BatchRequest{Requests: []*batch.Request{c.req(t, "echo", &testsvc.TestEchoArgs{Text: "late"})}}, batch.BatchErrorCode_SHUTTING_DOWN)
	})

	t.Run("Close past its drain timeout returns, and everything is released once the last call returns", func(t *testing.T) {
		h := &hangingHandler{handler: &handler{}, begun: make(chan int64, 8), release: make(chan struct{})}
		addr, proc := serve(t, testsvc.NewTestProcessor(h), compactFramed)
		var once sync.Once
		release := func() { once.Do(func() { close(h.release) }) }
		t.Cleanup(release)
		c := dial(t, addr, compactFramed)
		done := sendAsync(c, &batch.BatchRequest{
			Requests: []*batch.Request{
				c.req(t, "sleepy", &testsvc.TestSleepyArgs{Tag: 1}),
				c.req(t, "echo", &testsvc.TestEchoArgs{Text: "x"}),
			},
			AcceptCodecs:  []batch.Codec{batch.Codec_ZSTD},
			TimeoutMillis: thrift.Int32Ptr(1000),
		})
		waitBegun(t, h.begun, 1)
		start := time.Now()
		if err := <-closeAsync(proc, 200*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Close past its drain timeout = %v, want context.DeadlineExceeded", err)
		}
		if d := time.Since(start); d > answerBound {
			t.Errorf("Close took %v with a drain timeout of 200 ms", d)
		}
		// The batch still answers, at its own deadline.
		if err := <-done; err != nil {
			t.Errorf("the batch in flight: %v", err)
		}
		c.refused(t, &batch.BatchRequest{Requests: []*batch.Request{c.req(t, "echo", &testsvc.TestEchoArgs{Text: "late"})}}, batch.BatchErrorCode_SHUTTING_DOWN)
		release()
		// verifyNoLeaks checks, after the server has stopped, that the
		// worker of the hung call, the pool and the codecs are gone.
	})
}
