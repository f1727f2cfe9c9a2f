package main

import (
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/thriftbatch/thriftbatch/processor"
)

// statsMessage is the message of the periodic stats line.
const statsMessage = "example_server: stats"

// statsFields adds s to e, one snake_case field per figure (the pool's and
// the processor's), and returns e. mean_queue_wait_ms, QueueWait/Batches in
// milliseconds, is left out until a batch has run.
func statsFields(e *zerolog.Event, s processor.Stats) *zerolog.Event {
	p := s.Pool
	e = e.Int("pool_capacity", p.Capacity).
		Int("running", p.Running).
		Int("idle", p.Idle).
		Int("free", p.Free).
		Int("waiting_batches", p.WaitingBatches).
		Int("batches_in_flight", s.BatchesInFlight).
		Int("calls_in_flight", p.CallsInFlight).
		Uint64("batches", p.Batches).
		Uint64("calls", p.Calls).
		Uint64("rejected", p.Rejected).
		Uint64("inline", p.Inline).
		Uint64("abandoned", p.Abandoned)
	if p.Batches > 0 {
		mean := p.QueueWait / time.Duration(p.Batches)
		e = e.Float64("mean_queue_wait_ms", float64(mean)/float64(time.Millisecond))
	}
	return e.Int("max_concurrency", s.MaxConcurrency).
		Uint64("refused", s.Refused)
}

// logStats logs one info line of stats() every interval from a goroutine of
// its own, until the stop it returns is called; stop waits for that
// goroutine to return and may be called more than once.
func logStats(stats func() processor.Stats, interval time.Duration, log zerolog.Logger) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-quit:
				return
			case <-tick.C:
				statsFields(log.Info(), stats()).Msg(statsMessage)
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(quit) })
		<-done
	}
}
