package pool_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/thriftbatch/thriftbatch/pool"
)

// A batch that starts while every worker is busy runs on the caller's
// goroutine (CallerRuns), but takes workers as they free up instead of
// staying serial: its later calls run concurrently.
func TestABatchStartedOnAFullPoolTakesWorkersAsTheyFree(t *testing.T) {
	p := newPool(t, pool.WithSize(1), pool.WithPolicy(pool.CallerRuns))
	release := saturate(t, p)

	var running, peak atomic.Int64
	firstStarted, firstGo := make(chan struct{}), make(chan struct{})
	bothSeen := make(chan struct{})
	var seen atomic.Int64
	go func() {
		<-firstStarted
		release()
		close(firstGo)
	}()
	res, err := pool.Run(context.Background(), p, 3, 0, func(i int) int {
		n := running.Add(1)
		defer running.Add(-1)
		for {
			old := peak.Load()
			if n <= old || peak.CompareAndSwap(old, n) {
				break
			}
		}
		if i == 0 {
			// The first call runs on the caller while the pool is full;
			// the worker frees up meanwhile.
			close(firstStarted)
			<-firstGo
			return i
		}
		// Calls 1 and 2 each wait until both are running: they finish
		// only if they run at once, on the caller and a recruited worker.
		if seen.Add(1) == 2 {
			close(bothSeen)
		}
		select {
		case <-bothSeen:
		case <-time.After(5 * time.Second): // serial: the peak check fails
		}
		return i
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if res.Status(i) != pool.StatusDone || res.Values[i] != i {
			t.Errorf("call %d: status %v, value %d", i, res.Status(i), res.Values[i])
		}
	}
	if peak.Load() < 2 {
		t.Errorf("the batch's calls never ran concurrently (peak %d)", peak.Load())
	}
}
