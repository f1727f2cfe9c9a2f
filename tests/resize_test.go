package tests

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/internal/poll"
	"github.com/thriftbatch/thriftbatch/internal/wire"
	"github.com/thriftbatch/thriftbatch/pool"
	"github.com/thriftbatch/thriftbatch/processor"
	"github.com/thriftbatch/thriftbatch/tests/testsvc"
)

// resizeStep is one live change of the processor's tuning.
type resizeStep struct {
	poolSize, maxConcurrency int
}

// TestBatchesInFlightDuringAResizeAreAllAnswered: clients keep sending
// batches of quick echo calls and short sleepy ones while the pool and the
// per-batch cap are grown and shrunk under them. Every call of every batch
// must come back with its own answer, and the counters must add up.
func TestBatchesInFlightDuringAResizeAreAllAnswered(t *testing.T) {
	const (
		clients   = 8
		perClient = 8  // batches per client, at least
		perBatch  = 12 // calls per batch: every third a sleepy of 1 to 3 ms, the others echo
	)
	steps := []resizeStep{{64, 8}, {2, 0}, {16, 1}, {3, 8}, {16, 0}}
	for _, policy := range []pool.Policy{pool.CallerRuns, pool.Wait} {
		t.Run("under the "+policy.String()+" policy", func(t *testing.T) {
			h := &handler{}
			addr, proc := serve(t, testsvc.NewTestProcessor(h), compactFramed,
				processor.WithPoolSize(4), processor.WithMaxConcurrency(1), processor.WithOverloadPolicy(policy))
			conns := make([]*conn, clients)
			for i := range conns {
				conns[i] = dial(t, addr, compactFramed)
			}

			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			// The clients send at least perClient batches each, and go on
			// until the last resize is done, so that every resize meets
			// batches in flight.
			var resized atomic.Bool
			var answered, callsOK atomic.Int64
			var wg sync.WaitGroup
			for c, cn := range conns {
				wg.Go(func() {
					for b := 0; b < perClient || !resized.Load(); b++ {
						if ctx.Err() != nil {
							return
						}
						n, err := sendCheckedBatch(ctx, cn, c, b, perBatch)
						if err != nil {
							t.Errorf("client %d, batch %d: %v", c, b, err)
							return
						}
						callsOK.Add(int64(n))
						answered.Add(1)
					}
				})
			}
			clientsDone := make(chan struct{})
			go func() {
				wg.Wait()
				close(clientsDone)
			}()
			defer func() { // on a failure too: no client outlives the test
				cancel()
				<-clientsDone
			}()

			// Each step waits for a few more batches answered since the
			// last, so that every size sees traffic, and for a batch in
			// flight, then resizes under it.
			for _, step := range steps {
				seen := answered.Load()
				inFlight := 0
				for {
					if inFlight = proc.Stats().BatchesInFlight; inFlight > 0 && answered.Load() >= seen+4 {
						break
					}
					select {
					case <-clientsDone:
						t.Fatalf("the clients stopped before the resize to %+v", step)
					case <-ctx.Done():
						t.Fatalf("no batch in flight and answered since %d batches: %v", seen, ctx.Err())
					case <-time.After(100 * time.Microsecond):
					}
				}
				if err := proc.SetPoolSize(step.poolSize); err != nil {
					t.Fatalf("SetPoolSize(%d): %v", step.poolSize, err)
				}
				if err := proc.SetMaxConcurrency(step.maxConcurrency); err != nil {
					t.Fatalf("SetMaxConcurrency(%d): %v", step.maxConcurrency, err)
				}
				t.Logf("resized to %+v with %d batches in flight", step, inFlight)
			}
			resized.Store(true)
			select {
			case <-clientsDone:
			case <-ctx.Done():
				t.Fatalf("clients not done after 60 s: %d batches answered", answered.Load())
			}
			if t.Failed() {
				return
			}
			batches, calls := answered.Load(), callsOK.Load()
			if batches < clients*perClient || calls != batches*perBatch {
				t.Fatalf("%d calls in %d batches answered correctly; want %d per batch, at least %d batches", calls, batches, perBatch, clients*perClient)
			}

			last := steps[len(steps)-1]
			// A batch leaves the processor's count once its answer is
			// flushed, which may be a moment after its client has read it;
			// waitIdle fails the test if one stays in flight.
			s := waitIdle(t, proc)
			if s.Pool.Capacity != last.poolSize || s.MaxConcurrency != last.maxConcurrency {
				t.Errorf("Capacity = %d, MaxConcurrency = %d; want the last step's %d, %d", s.Pool.Capacity, s.MaxConcurrency, last.poolSize, last.maxConcurrency)
			}
			if s.Pool.WaitingBatches != 0 {
				t.Errorf("batches still waiting after every answer: %+v", s)
			}
			// Run counts every call before it returns: the counts are exact.
			if s.Pool.Batches != uint64(batches) || s.Pool.Calls != uint64(calls) {
				t.Errorf("Pool.Batches = %d, Pool.Calls = %d; want the %d batches and %d calls sent", s.Pool.Batches, s.Pool.Calls, batches, calls)
			}
			if s.Pool.Inline > s.Pool.Calls || s.Pool.Rejected != 0 || s.Pool.Abandoned != 0 || s.Refused != 0 {
				t.Errorf("Inline = %d of %d calls, Rejected = %d, Abandoned = %d, Refused = %d; want no call lost",
					s.Pool.Inline, s.Pool.Calls, s.Pool.Rejected, s.Pool.Abandoned, s.Refused)
			}
			if s.Pool.QueueWait <= 0 {
				t.Errorf("QueueWait = %v after %d batches", s.Pool.QueueWait, s.Pool.Batches)
			}
			if !poll.Until(10*time.Second, func() bool { s = proc.Stats(); return s.Pool.Running == 0 && s.Pool.CallsInFlight == 0 }) {
				t.Fatalf("workers still running 10 s after the last answer: %+v", s.Pool)
			}
			if s.Pool.Free != s.Pool.Capacity {
				t.Errorf("Free = %d on an idle pool of %d", s.Pool.Free, s.Pool.Capacity)
			}
		})
	}
}

// sendCheckedBatch sends batch b of client c, n calls: every third a sleepy
// call, the others echo, each carrying an id and an argument of its own, and checks
// that every response answers its own request. It returns how many calls
// were answered correctly. It is safe to call from any goroutine: it
// reports, never fails the test.
func sendCheckedBatch(ctx context.Context, cn *conn, c, b, n int) (int, error) {
	type want struct {
		text string // echo's answer, or "" for a sleepy call
		tag  int64  // sleepy's answer
	}
	var reqs []*batch.Request
	var wants []want
	for i := range n {
		id := int32(i + 1)
		var args []byte
		var err error
		if i%3 == 2 {
			tag := int64(c)<<32 | int64(b)<<16 | int64(i)
			args, err = wire.Encode(ctx, cn.st.kind, nil, &testsvc.TestSleepyArgs{Millis: int32(1 + (c+b+i)%3), Tag: tag})
			reqs = append(reqs, &batch.Request{ID: &id, Method: "sleepy", Arguments: args})
			wants = append(wants, want{tag: tag})
		} else {
			text := fmt.Sprintf("client %d batch %d call %d", c, b, i)
			args, err = wire.Encode(ctx, cn.st.kind, nil, &testsvc.TestEchoArgs{Text: text})
			reqs = append(reqs, &batch.Request{ID: &id, Method: "echo", Arguments: args})
			wants = append(wants, want{text: text})
		}
		if err != nil {
			return 0, err
		}
	}
	callCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	resp, err := cn.batch.ExecuteBatch(callCtx, &batch.BatchRequest{Requests: reqs})
	if err != nil {
		return 0, fmt.Errorf("executeBatch: %w", err)
	}
	if len(resp.Responses) != len(reqs) {
		return 0, fmt.Errorf("%d responses to %d requests", len(resp.Responses), len(reqs))
	}
	for i, r := range resp.Responses {
		if r.GetID() != int32(i+1) {
			return 0, fmt.Errorf("response %d has id %d, want %d", i, r.GetID(), i+1)
		}
		if r.Error != nil {
			return 0, fmt.Errorf("call %d (%s) failed: type %d: %s", i, reqs[i].Method, r.Error.Type, r.Error.Message)
		}
		if w := wants[i]; w.text != "" {
			var res testsvc.TestEchoResult
			if err := wire.Decode(ctx, cn.st.kind, r.Reply, &res); err != nil || res.GetSuccess() != w.text {
				return 0, fmt.Errorf("call %d answered %q, %v; want %q", i, res.GetSuccess(), err, w.text)
			}
		} else {
			var res testsvc.TestSleepyResult
			if err := wire.Decode(ctx, cn.st.kind, r.Reply, &res); err != nil || res.GetSuccess() != w.tag {
				return 0, fmt.Errorf("call %d answered tag %#x, %v; want %#x", i, res.GetSuccess(), err, w.tag)
			}
		}
	}
	return len(reqs), nil
}
