package tests

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/pool"
	"github.com/thriftbatch/thriftbatch/processor"
	"github.com/thriftbatch/thriftbatch/tests/testsvc"
)

// closeAsync calls proc.Close with a generous context in a goroutine and
// returns the channel its result arrives on.
func closeAsync(proc *processor.Processor, timeout time.Duration) <-chan error {
	closed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		closed <- proc.Close(ctx)
	}()
	return closed
}

// checkClosesAfterInFlight checks that Close waits for the batch blockOne
// holds, and returns once it has answered.
func checkClosesAfterInFlight(t *testing.T, proc *processor.Processor, release func(), wait func() []*batch.Response, c *conn) {
	t.Helper()
	closed := closeAsync(proc, waitBound)
	// Close must not return while the batch runs. A broken Close returns
	// at once; a correct one never within this pause, so the check
	// cannot fail spuriously.
	select {
	case err := <-closed:
		release()
		t.Fatalf("Close returned (%v) while a batch was in flight", err)
	case <-time.After(100 * time.Millisecond):
	}
	release()
	if got := c.slept(t, wait()[0]); got != 7 {
		t.Errorf("the batch in flight answered %d, want 7", got)
	}
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(waitBound):
		t.Fatal("Close did not return after the batch in flight answered")
	}
}

// checkRefusesAfterClose checks that a closed processor refuses new batches,
// plain or compressed, with SHUTTING_DOWN and still serves plain calls.
func checkRefusesAfterClose(t *testing.T, c *conn, h *handler) {
	t.Helper()
	t.Run("a new batch answers SHUTTING_DOWN", func(t *testing.T) {
		msg := c.refused(t, &batch.BatchRequest{Requests: []*batch.Request{c.noteReq(t, "after close"), c.req(t, "echo", &testsvc.TestEchoArgs{Text: "x"})}},
			batch.BatchErrorCode_SHUTTING_DOWN)
		if msg == "" {
			t.Error("SHUTTING_DOWN without a message")
		}
		if notes, _, _ := h.snapshot(); len(notes) != 0 {
			t.Errorf("calls ran after Close: %q", notes)
		}
	})
	t.Run("a new compressed batch answers SHUTTING_DOWN", func(t *testing.T) {
		codecs := clientCodecs(t)
		packed := c.compressRequests(t, codecs, batch.Codec_ZSTD, []*batch.Request{c.noteReq(t, "after close")})
		c.refused(t, &batch.BatchRequest{RequestCodec: batch.CodecPtr(batch.Codec_ZSTD), CompressedRequests: packed}, batch.BatchErrorCode_SHUTTING_DOWN)
		if notes, _, _ := h.snapshot(); len(notes) != 0 {
			t.Errorf("calls ran after Close: %q", notes)
		}
	})
	t.Run("plain calls still work", func(t *testing.T) {
		if got, err := c.test.Echo(callCtx(t), "plain"); err != nil || got != "plain" {
			t.Errorf("plain echo after Close = %q, %v", got, err)
		}
		if err := c.test.Note(callCtx(t), "plain note"); err != nil {
			t.Errorf("plain note after Close: %v", err)
		}
	})
}

func TestClose(t *testing.T) {
	t.Run("with its own pool", func(t *testing.T) {
		h := gatedHandler()
		addr, proc := serve(t, testsvc.NewTestProcessor(h), binaryBuffered)
		release, wait := blockOne(t, addr, binaryBuffered, h)
		c := dial(t, addr, binaryBuffered)
		t.Run("Close waits for the batch in flight", func(t *testing.T) {
			checkClosesAfterInFlight(t, proc, release, wait, c)
		})
		checkRefusesAfterClose(t, c, h)
	})

	t.Run("with its own pool a batch in flight is answered by its deadline and Close returns", func(t *testing.T) {
		h := &handler{}
		addr, proc := serve(t, testsvc.NewTestProcessor(h), binaryBuffered)
		c := dial(t, addr, binaryBuffered)
		r := &batch.BatchRequest{
			Requests:      []*batch.Request{c.req(t, "sleepy", &testsvc.TestSleepyArgs{Millis: 5000, Tag: 1})},
			TimeoutMillis: thrift.Int32Ptr(300),
		}
		done := make(chan []*batch.Response, 1)
		go func() {
			defer close(done)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if resp, err := c.batch.ExecuteBatch(ctx, r); err == nil {
				done <- resp.Responses
			}
		}()
		// Wait until the call runs on a worker, as the pool shows.
		for i := 0; proc.Pool().Running() == 0; i++ {
			if i == 1000 {
				t.Fatal("the call did not start")
			}
			time.Sleep(time.Millisecond)
		}
		closed := closeAsync(proc, waitBound)
		out, ok := <-done
		if !ok || len(out) != 1 {
			t.Fatalf("the batch in flight got no answer")
		}
		if out[0].Error == nil || out[0].Error.Type != batch.CALL_DEADLINE_EXCEEDED {
			t.Errorf("the batch in flight answered %+v, want CALL_DEADLINE_EXCEEDED", out[0])
		}
		select {
		case err := <-closed:
			if err != nil {
				t.Errorf("Close: %v", err)
			}
		case <-time.After(waitBound):
			t.Fatal("Close did not return")
		}
	})

	t.Run("with its own pool Close gives up when its context ends first", func(t *testing.T) {
		h := gatedHandler()
		addr, proc := serve(t, testsvc.NewTestProcessor(h), binaryBuffered)
		release, wait := blockOne(t, addr, binaryBuffered, h)
		err := <-closeAsync(proc, 50*time.Millisecond)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Close with a batch in flight past its context returned %v, want context.DeadlineExceeded", err)
		}
		release()
		c := dial(t, addr, binaryBuffered)
		if got := c.slept(t, wait()[0]); got != 7 {
			t.Errorf("the batch in flight answered %d, want 7", got)
		}
		checkRefusesAfterClose(t, c, h)
	})

	t.Run("with a shared pool", func(t *testing.T) {
		shared, err := pool.New(pool.WithSize(8))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), waitBound)
			defer cancel()
			if err := shared.Close(ctx); err != nil {
				t.Errorf("shared pool Close: %v", err)
			}
		})
		h := gatedHandler()
		proc, err := processor.New(testsvc.NewTestProcessor(h), processor.WithPool(shared))
		if err != nil {
			t.Fatal(err)
		}
		addr := serveProcessor(t, proc, binaryBuffered)
		other := &handler{}
		otherAddr, _ := serve(t, testsvc.NewTestProcessor(other), binaryBuffered, processor.WithPool(shared))

		release, wait := blockOne(t, addr, binaryBuffered, h)
		c := dial(t, addr, binaryBuffered)
		t.Run("Close waits for the batch in flight", func(t *testing.T) {
			checkClosesAfterInFlight(t, proc, release, wait, c)
		})
		checkRefusesAfterClose(t, c, h)
		t.Run("the shared pool stays open for the other processors", func(t *testing.T) {
			dial(t, otherAddr, binaryBuffered).checkNormalBatch(t)
			if shared.Cap() != 8 {
				t.Errorf("shared pool cap %d", shared.Cap())
			}
		})
	})
}
