package processor_test

import (
	"fmt"
	"testing"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/tests/testsvc"
)

// BenchmarkMultiplexedFunctions compares what looking a batch's methods up
// costs under a TMultiplexedProcessor: building its map of every service's
// functions, as its ProcessorMap does on each call, against a batch of one
// echo call served whole by a Processor that keeps that map.
//
//	go test -run XXX -bench MultiplexedFunctions ./processor
func BenchmarkMultiplexedFunctions(b *testing.B) {
	for _, services := range []int{1, 10} {
		mux := thrift.NewTMultiplexedProcessor()
		for i := range services {
			mux.RegisterProcessor(fmt.Sprint("Svc", i), testsvc.NewTestProcessor(echo{}))
		}
		b.Run(fmt.Sprintf("services=%d/ProcessorMap", services), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if len(mux.ProcessorMap()) == 0 {
					b.Fatal("no functions")
				}
			}
		})
		b.Run(fmt.Sprintf("services=%d/batch-of-one", services), func(b *testing.B) {
			p := newProcessor(b, mux)
			req := &batch.BatchRequest{Requests: []*batch.Request{arg(b, "Svc0:echo", &testsvc.TestEchoArgs{Text: "hi"})}}
			b.ReportAllocs()
			for b.Loop() {
				if res := sendBatch(b, p, req); res == nil || res.GetSuccess().Responses[0].Error != nil {
					b.Fatalf("batch: %v", res)
				}
			}
		})
	}
}
