package dispatcher_test

import (
	"bytes"
	"context"
	"fmt"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/thriftbatch/thriftbatch/dispatcher"
	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/pool"
	"github.com/thriftbatch/thriftbatch/tests/testsvc"
)

// echoHandler serves echo; the other methods are not called here.
type echoHandler struct{ testsvc.Test }

func (echoHandler) Echo(_ context.Context, text string) (string, error) { return text, nil }

// A batch runs its calls through the wrapped server's processor functions and
// answers them in request order: a reply, or a CallError for a call that
// produced none.
func Example() {
	ctx := context.Background()
	p, err := pool.New()
	if err != nil {
		panic(err)
	}
	defer p.Close(ctx)
	d, err := dispatcher.New(p)
	if err != nil {
		panic(err)
	}

	// Arguments are the method's args struct in the batch's protocol,
	// without a message header.
	args := func(text string) []byte {
		buf := thrift.NewTMemoryBuffer()
		(&testsvc.TestEchoArgs{Text: text}).Write(ctx, thrift.NewTBinaryProtocolConf(buf, nil))
		return bytes.Clone(buf.Bytes())
	}
	id := func(i int32) *int32 { return &i }
	responses, err := d.Run(ctx, dispatcher.Batch{
		Requests: []*batch.Request{
			{Method: "echo", Arguments: args("hello"), ID: id(1)},
			{Method: "missing", ID: id(2)},
			{Method: "echo", Arguments: args("world"), ID: id(3)},
		},
		Functions: testsvc.NewTestProcessor(echoHandler{}).ProcessorMap(),
		Protocol:  thrift.NewTBinaryProtocolConf(thrift.NewTMemoryBuffer(), nil),
	})
	if err != nil {
		panic(err)
	}
	for _, r := range responses {
		if r.Error != nil {
			fmt.Printf("%d: error %d: %s\n", *r.ID, r.Error.Type, r.Error.Message)
			continue
		}
		// A reply is the method's result struct, as a REPLY message carries it.
		var res testsvc.TestEchoResult
		buf := thrift.NewTMemoryBuffer()
		buf.Write(r.Reply)
		res.Read(ctx, thrift.NewTBinaryProtocolConf(buf, nil))
		fmt.Printf("%d: %s\n", *r.ID, res.GetSuccess())
	}
	// Output:
	// 1: hello
	// 2: error 1: unknown method "missing"
	// 3: world
}
