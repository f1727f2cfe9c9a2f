package tests

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/internal/wire"
	"github.com/thriftbatch/thriftbatch/pool"
	"github.com/thriftbatch/thriftbatch/processor"
	"github.com/thriftbatch/thriftbatch/tests/testsvc"
)

// generous bounds for things that take milliseconds when all is well; they
// only decide how long a broken server takes to fail a test.
const (
	answerBound = 3 * time.Second  // a batch whose slow calls the deadline cuts short
	waitBound   = 10 * time.Second // anything the test waits for
)

// checkDeadlineBatch sends sleepy calls of 5 s mixed with echo calls in r
// and checks that the slow calls answer CALL_DEADLINE_EXCEEDED, the fast
// ones their replies, well before the sleeps would end, and that every
// handler's context carried a deadline no later than limit.
func checkDeadlineBatch(t *testing.T, c *conn, h *handler, r *batch.BatchRequest, limit time.Duration) {
	t.Helper()
	for i := range 10 {
		if i%2 == 0 {
			r.Requests = append(r.Requests, c.reqID(t, int32(i), "sleepy", &testsvc.TestSleepyArgs{Millis: 5000, Tag: int64(i)}))
		} else {
			r.Requests = append(r.Requests, c.reqID(t, int32(i), "echo", &testsvc.TestEchoArgs{Text: "fast " + strconv.Itoa(i)}))
		}
	}
	start := time.Now()
	out := c.runBatch(t, r)
	if d := time.Since(start); d > answerBound {
		t.Errorf("the batch answered after %v, want well under the 5 s its slow calls sleep", d)
	}
	for i, resp := range out {
		if resp.GetID() != int32(i) {
			t.Errorf("response %d: id %d", i, resp.GetID())
		}
		if i%2 == 0 {
			wantCallError(t, resp, batch.CALL_DEADLINE_EXCEEDED, "deadline")
		} else if got := c.echoed(t, resp); got != "fast "+strconv.Itoa(i) {
			t.Errorf("response %d: echo %q", i, got)
		}
	}
	// Each slow call started before the deadline, unless the machine
	// is very slow: then it never ran, and answered the same.
	left := h.sleepDeadlines()
	if len(left) == 0 || len(left) > 5 {
		t.Fatalf("%d sleepy calls started, want 1 to 5", len(left))
	}
	for _, d := range left {
		if d > limit {
			t.Errorf("a handler's context had %v left at its start, want a deadline within %v", d, limit)
		}
	}
	c.checkNormalBatch(t)
}

func TestDeadlines(t *testing.T) {
	t.Run("calls running at timeoutMillis answer CALL_DEADLINE_EXCEEDED and fast calls their replies", func(t *testing.T) {
		h := &handler{}
		addr, _ := serve(t, testsvc.NewTestProcessor(h), binaryBuffered)
		c := dial(t, addr, binaryBuffered)
		checkDeadlineBatch(t, c, h, &batch.BatchRequest{TimeoutMillis: thrift.Int32Ptr(100)}, 100*time.Millisecond)
	})

	t.Run("WithMaxTimeout caps a longer timeoutMillis", func(t *testing.T) {
		h := &handler{}
		addr, _ := serve(t, testsvc.NewTestProcessor(h), compactFramed, processor.WithMaxTimeout(150*time.Millisecond))
		c := dial(t, addr, compactFramed)
		checkDeadlineBatch(t, c, h, &batch.BatchRequest{TimeoutMillis: thrift.Int32Ptr(60_000)}, 150*time.Millisecond)
	})

	t.Run("WithMaxTimeout is the deadline of a batch without timeoutMillis", func(t *testing.T) {
		h := &handler{}
		addr, _ := serve(t, testsvc.NewTestProcessor(h), jsonFramed, processor.WithMaxTimeout(150*time.Millisecond))
		c := dial(t, addr, jsonFramed)
		checkDeadlineBatch(t, c, h, &batch.BatchRequest{}, 150*time.Millisecond)
	})

	t.Run("a timeoutMillis shorter than WithMaxTimeout wins", func(t *testing.T) {
		h := &handler{}
		addr, _ := serve(t, testsvc.NewTestProcessor(h), binaryBuffered, processor.WithMaxTimeout(time.Minute))
		c := dial(t, addr, binaryBuffered)
		checkDeadlineBatch(t, c, h, &batch.BatchRequest{TimeoutMillis: thrift.Int32Ptr(100)}, 100*time.Millisecond)
	})

	t.Run("without a ceiling or timeoutMillis a handler's context has no deadline", func(t *testing.T) {
		h := &handler{}
		addr, _ := serve(t, testsvc.NewTestProcessor(h), binaryBuffered, processor.WithMaxTimeout(0))
		c := dial(t, addr, binaryBuffered)
		out := c.run(t, c.req(t, "sleepy", &testsvc.TestSleepyArgs{Millis: 1, Tag: 3}))
		if got := c.slept(t, out[0]); got != 3 {
			t.Errorf("sleepy = %d", got)
		}
		if left := h.sleepDeadlines(); len(left) != 1 || left[0] != noDeadline {
			t.Errorf("handler deadlines %v, want none", left)
		}
	})
}

// nestedEchoes is the nest function of the handler: it sends a batch of n
// echo calls to addr over a new connection and counts the right answers.
func nestedEchoes(st stack) func(ctx context.Context, addr string, n int) (int, error) {
	return func(ctx context.Context, addr string, n int) (int, error) {
		c, err := dialConn(addr, st)
		if err != nil {
			return 0, err
		}
		defer c.trans.Close()
		reqs := make([]*batch.Request, n)
		for i := range reqs {
			args, err := wire.Encode(ctx, st.kind, nil, &testsvc.TestEchoArgs{Text: "nested " + strconv.Itoa(i)})
			if err != nil {
				return 0, err
			}
			reqs[i] = &batch.Request{Method: "echo", Arguments: args}
		}
		resp, err := c.batch.ExecuteBatch(ctx, &batch.BatchRequest{Requests: reqs})
		if err != nil {
			return 0, err
		}
		ok := 0
		for i, r := range resp.Responses {
			var res testsvc.TestEchoResult
			if r.Error == nil && wire.Decode(ctx, st.kind, r.Reply, &res) == nil && res.GetSuccess() == "nested "+strconv.Itoa(i) {
				ok++
			}
		}
		return ok, nil
	}
}

// blockOne starts a batch of one sleepy call (tag 7) on its own connection
// that holds a worker until release is called, and waits until the call
// runs. wait returns the batch's responses.
func blockOne(t *testing.T, addr string, st stack, h *handler) (release func(), wait func() []*batch.Response) {
	t.Helper()
	var once sync.Once
	release = func() { once.Do(func() { close(h.gate) }) }
	t.Cleanup(release) // before the server stops, so that it can
	a := dial(t, addr, st)
	req := a.reqID(t, 70, "sleepy", &testsvc.TestSleepyArgs{Millis: 0, Tag: 7})
	type result struct {
		resp *batch.BatchResponse
		err  error
	}
	done := make(chan result, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		resp, err := a.batch.ExecuteBatch(ctx, &batch.BatchRequest{Requests: []*batch.Request{req}})
		done <- result{resp, err}
	}()
	t.Cleanup(func() { release(); <-done })
	select {
	case tag := <-h.started:
		if tag != 7 {
			t.Fatalf("started tag %d", tag)
		}
	case <-time.After(waitBound):
		t.Fatal("the blocking call did not start")
	}
	wait = func() []*batch.Response {
		t.Helper()
		select {
		case r := <-done:
			done <- r // for the cleanup
			if r.err != nil {
				t.Fatalf("blocked batch: %v", r.err)
			}
			if len(r.resp.Responses) != 1 {
				t.Fatalf("blocked batch: %d responses", len(r.resp.Responses))
			}
			return r.resp.Responses
		case <-time.After(waitBound):
			t.Fatal("the blocked batch did not answer after its call was released")
		}
		return nil
	}
	return release, wait
}

func gatedHandler() *handler {
	return &handler{gate: make(chan struct{}), started: make(chan int64, 16)}
}

func TestWorkerPool(t *testing.T) {
	t.Run("a call that sends a batch to its own server with a pool of one worker completes", func(t *testing.T) {
		for _, st := range plainStacks {
			t.Run("over "+st.name, func(t *testing.T) {
				h := &handler{nest: nestedEchoes(st)}
				addr, _ := serve(t, testsvc.NewTestProcessor(h), st, processor.WithPoolSize(1))
				c := dial(t, addr, st)
				start := time.Now()
				out := c.runBatch(t, &batch.BatchRequest{
					Requests: []*batch.Request{
						c.reqID(t, 1, "nested", &testsvc.TestNestedArgs{Addr: addr, Calls: 5}),
						c.reqID(t, 2, "echo", &testsvc.TestEchoArgs{Text: "outer"}),
						c.reqID(t, 3, "nested", &testsvc.TestNestedArgs{Addr: addr, Calls: 3}),
					},
					// A deadlock ends here instead of hanging the test.
					TimeoutMillis: thrift.Int32Ptr(int32(waitBound / time.Millisecond)),
				})
				if d := time.Since(start); d > waitBound/2 {
					t.Errorf("nested batches took %v", d)
				}
				for i, want := range map[int]int32{0: 5, 2: 3} {
					var res testsvc.TestNestedResult
					if c.decode(t, out[i], &res); res.GetSuccess() != want {
						t.Errorf("nested call %d: %d of %d inner calls answered", i, res.GetSuccess(), want)
					}
				}
				if got := c.echoed(t, out[1]); got != "outer" {
					t.Errorf("echo = %q", got)
				}
			})
		}
	})

	t.Run("with the caller-runs policy a batch runs on its connection while every worker is busy", func(t *testing.T) {
		h := gatedHandler()
		addr, proc := serve(t, testsvc.NewTestProcessor(h), binaryBuffered, processor.WithPoolSize(1))
		release, wait := blockOne(t, addr, binaryBuffered, h)
		if free := proc.Pool().Free(); free != 0 {
			t.Fatalf("%d workers free while the only one is blocked", free)
		}
		c := dial(t, addr, binaryBuffered)
		c.checkNormalBatch(t)
		release()
		if got := c.slept(t, wait()[0]); got != 7 {
			t.Errorf("blocked call answered %d", got)
		}
	})

	t.Run("with the reject policy calls that find no free worker answer CALL_OVERLOADED", func(t *testing.T) {
		h := gatedHandler()
		addr, proc := serve(t, testsvc.NewTestProcessor(h), binaryBuffered, processor.WithPoolSize(1), processor.WithOverloadPolicy(pool.Reject))
		release, wait := blockOne(t, addr, binaryBuffered, h)
		if free := proc.Pool().Free(); free != 0 {
			t.Fatalf("%d workers free while the only one is blocked", free)
		}
		c := dial(t, addr, binaryBuffered)
		out := c.run(t,
			c.reqID(t, 1, "echo", &testsvc.TestEchoArgs{Text: "x"}),
			c.reqID(t, 2, "note", &testsvc.TestNoteArgs{Text: "y"}),
			c.reqID(t, 3, "echo", &testsvc.TestEchoArgs{Text: "z"}))
		for i, r := range out {
			wantCallError(t, r, batch.CALL_OVERLOADED, "no worker was free")
			if r.GetID() != int32(i+1) {
				t.Errorf("response %d: id %d", i, r.GetID())
			}
		}
		if notes, echoes, _ := h.snapshot(); len(notes)+len(echoes) != 0 {
			t.Errorf("refused calls ran: notes %q, echoes %q", notes, echoes)
		}

		release()
		if got := c.slept(t, wait()[0]); got != 7 {
			t.Errorf("blocked call answered %d", got)
		}
		// The worker goes back to the pool just after its batch answers;
		// from then on batches run again.
		for i := 0; ; i++ {
			out = c.run(t, c.req(t, "echo", &testsvc.TestEchoArgs{Text: "again"}))
			if out[0].Error == nil || out[0].Error.Type != batch.CALL_OVERLOADED || i == 500 {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if got := c.echoed(t, out[0]); got != "again" {
			t.Errorf("echo after the worker was freed = %q", got)
		}
	})

	t.Run("with the wait policy calls wait for a worker until the batch deadline", func(t *testing.T) {
		h := gatedHandler()
		addr, _ := serve(t, testsvc.NewTestProcessor(h), binaryBuffered, processor.WithPoolSize(1), processor.WithOverloadPolicy(pool.Wait))
		release, wait := blockOne(t, addr, binaryBuffered, h)
		c := dial(t, addr, binaryBuffered)
		out := c.runBatch(t, &batch.BatchRequest{
			Requests:      []*batch.Request{c.req(t, "echo", &testsvc.TestEchoArgs{Text: "x"}), c.req(t, "echo", &testsvc.TestEchoArgs{Text: "y"})},
			TimeoutMillis: thrift.Int32Ptr(100),
		})
		for _, r := range out {
			wantCallError(t, r, batch.CALL_DEADLINE_EXCEEDED)
		}
		if _, echoes, _ := h.snapshot(); len(echoes) != 0 {
			t.Errorf("calls ran without a worker: %q", echoes)
		}
		release()
		if got := c.slept(t, wait()[0]); got != 7 {
			t.Errorf("blocked call answered %d", got)
		}
		c.checkNormalBatch(t)
	})
}
