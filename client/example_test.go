package client_test

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/thriftbatch/thriftbatch/client"
	"github.com/thriftbatch/thriftbatch/example_server/catalog"
	"github.com/thriftbatch/thriftbatch/processor"
)

// shop is a two-product catalog for the examples.
type shop struct{ catalog.Catalog }

func (shop) GetProduct(_ context.Context, id int64) (*catalog.Product, error) {
	names := map[int64]string{1: "kettle", 2: "teapot"}
	name, ok := names[id]
	if !ok {
		return nil, &catalog.NotFound{ID: id, Reason: "no such product"}
	}
	return &catalog.Product{ID: id, Name: name}, nil
}

// serveShop serves the shop behind the batch wrapper on a loopback port and
// returns its address and a function that stops it.
func serveShop() (string, func()) {
	p, err := processor.New(catalog.NewCatalogProcessor(shop{}))
	if err != nil {
		panic(err)
	}
	sock, err := thrift.NewTServerSocket("127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	if err := sock.Listen(); err != nil {
		panic(err)
	}
	srv := thrift.NewTSimpleServer4(p, sock,
		thrift.NewTFramedTransportFactoryConf(thrift.NewTTransportFactory(), nil),
		thrift.NewTCompactProtocolFactoryConf(nil))
	done := make(chan struct{})
	go func() { srv.Serve(); close(done) }()
	return sock.Addr().String(), func() { srv.Stop(); <-done; p.Close(context.Background()) }
}

// dialShop opens a framed compact connection and returns a Client on it.
func dialShop(ctx context.Context, addr string) (*client.Client, error) {
	trans := thrift.NewTFramedTransportConf(thrift.NewTSocketConf(addr, nil), nil)
	if err := trans.Open(); err != nil {
		return nil, err
	}
	return client.New(thrift.NewTCompactProtocolConf(trans, nil))
}

// An explicit batch: three calls, one round trip, each call with its own
// result or error.
func ExampleBatch() {
	addr, stop := serveShop()
	defer stop()
	c, err := dialShop(context.Background(), addr)
	if err != nil {
		panic(err)
	}
	defer c.Close()

	ids := []int64{1, 2, 3}
	b := c.NewBatch()
	b.Grow(len(ids)) // optional: room for the calls about to be added
	var calls []*client.Call[*catalog.CatalogGetProductResult]
	for _, id := range ids {
		calls = append(calls, client.Add(b, "getProduct", &catalog.CatalogGetProductArgs{ID: id}, &catalog.CatalogGetProductResult{}))
	}
	if err := b.Execute(context.Background()); err != nil {
		panic(err) // the batch as a whole failed
	}
	for _, call := range calls {
		var notFound *catalog.NotFound
		switch err := call.Err(); {
		case errors.As(err, &notFound):
			fmt.Printf("product %d: not found\n", notFound.ID)
		case err != nil:
			fmt.Println("error:", err)
		default:
			fmt.Printf("product %d: %s\n", call.Result.Success.ID, call.Result.Success.Name)
		}
	}
	// Output:
	// product 1: kettle
	// product 2: teapot
	// product 3: not found
}

// Automatic batching: goroutines call a generated client as usual, and the
// Auto below it sends their concurrent calls as batches.
func ExampleAuto() {
	addr, stop := serveShop()
	defer stop()
	auto, err := client.NewAuto(context.Background(), func(ctx context.Context) (*client.Client, error) {
		return dialShop(ctx, addr)
	})
	if err != nil {
		panic(err)
	}
	defer auto.Close()

	names := make([]string, 3)
	var wg sync.WaitGroup
	for i := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			shop := catalog.NewCatalogClient(auto) // one generated client per goroutine
			p, err := shop.GetProduct(context.Background(), int64(i+1))
			if err != nil {
				names[i] = err.Error()
				return
			}
			names[i] = p.Name
		}()
	}
	wg.Wait()
	fmt.Println(names)
	// Output:
	// [kettle teapot NotFound({ID:3 Reason:no such product})]
}
