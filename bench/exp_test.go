package main

import (
	"context"
	"sync"
	"syscall"
	"sync/atomic"
	"testing"

	"github.com/thriftbatch/thriftbatch/internal/checkinterval"
)

func BenchmarkExpThroughput(b *testing.B) {
	checkinterval.Set(0)
	s, err := startServer(0, framed)
	if err != nil {
		b.Fatal(err)
	}
	defer s.stop()
	ctx := context.Background()
	cs, clients, err := s.batchClients(ctx, 16)
	if err != nil {
		b.Fatal(err)
	}
	defer cs.Close()
	var left atomic.Int64
	left.Store(int64(b.N))
	b.ResetTimer()
	c0 := cpuNow()
	var wg sync.WaitGroup
	for i := range 16 {
		ids := ids(100, 1+i*100)
		wg.Go(func() {
			for left.Add(-1) >= 0 {
				if err := inBatch(ctx, clients[i], ids); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)*100/b.Elapsed().Seconds(), "calls/s")
	b.ReportMetric(float64(cpuNow()-c0)/float64(b.N*100), "cpu-ns/call")
}

func cpuNow() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}
