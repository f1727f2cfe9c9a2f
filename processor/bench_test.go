package processor_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/internal/wire"
	"github.com/thriftbatch/thriftbatch/tests/testsvc"
)

// BenchmarkMultiplexedFunctions compares what looking a batch's methods up
// costs under a TMultiplexedProcessor: building its map of every service's
// functions, as its ProcessorMap does on each call, against a batch of one
// echo call served whole by a Processor that keeps that map.
//
//	go test -run XXX -bench MultiplexedFunctions ./processor
func BenchmarkMultiplexedFunctions(b *testing.B) {
	ctx := context.Background()
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
			args, err := wire.Encode(ctx, wire.Binary, nil, &testsvc.TestEchoArgs{Text: "hi"})
			if err != nil {
				b.Fatal(err)
			}
			call := &batch.BatchServiceExecuteBatchArgs{Request: &batch.BatchRequest{Requests: []*batch.Request{{Method: "Svc0:echo", Arguments: args}}}}
			b.ReportAllocs()
			for b.Loop() {
				out, ok, err := roundTrip(b, p, func(w thrift.TProtocol) {
					w.WriteMessageBegin(ctx, "executeBatch", thrift.CALL, 1)
					call.Write(ctx, w)
					w.WriteMessageEnd(ctx)
				})
				if !ok || err != nil || out.Len() == 0 {
					b.Fatalf("Process = %v, %v", ok, err)
				}
			}
		})
	}
}
