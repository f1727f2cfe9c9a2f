package main

import (
	"compress/zlib"
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/thriftbatch/thriftbatch/client"
	"github.com/thriftbatch/thriftbatch/example_server/catalog"
	"github.com/thriftbatch/thriftbatch/example_server/store"
	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/internal/latency"
	"github.com/thriftbatch/thriftbatch/processor"
)

// ioTimeout bounds every read and write of the benchmark's connections, so
// that a server that stops answering fails the run instead of hanging it.
const ioTimeout = 30 * time.Second

// stopTimeout bounds the wait for the server's connections and batches at
// stop.
const stopTimeout = 10 * time.Second

// transport is the stack between the protocol and the socket.
type transport int

const (
	// framed is TFramedTransport: the stack of every scenario but one.
	framed transport = iota
	// zlibFramed is TZlibTransport (compress/zlib, default level) over
	// TFramedTransport, on both ends: Thrift's own answer to a slow link.
	zlibFramed
)

// server is the catalog behind processor.New, served by a TSimpleServer on a
// loopback port of its own, with the compact protocol.
type server struct {
	addr  string
	stack transport
	proc  *processor.Processor
	srv   *thrift.TSimpleServer
	done  chan struct{} // closed when the accept loop has returned
}

// startServer serves store.New(products, latency) on 127.0.0.1:0 behind a
// Processor with its default options.
func startServer(latency time.Duration, stack transport) (*server, error) {
	return serveCatalog(store.New(products, latency), stack)
}

// serveCatalog serves h on 127.0.0.1:0 over stack and the compact protocol,
// behind processor.New(opts...).
func serveCatalog(h catalog.Catalog, stack transport, opts ...processor.Option) (*server, error) {
	proc, err := processor.New(catalog.NewCatalogProcessor(h), opts...)
	if err != nil {
		return nil, err
	}
	sock, err := thrift.NewTServerSocket("127.0.0.1:0")
	if err == nil {
		err = sock.Listen()
	}
	if err != nil {
		return nil, errors.Join(fmt.Errorf("listen: %w", err), proc.Close(context.Background()))
	}
	conf := &thrift.TConfiguration{}
	var tf thrift.TTransportFactory = thrift.NewTFramedTransportFactoryConf(thrift.NewTTransportFactory(), conf)
	if stack == zlibFramed {
		tf = thrift.NewTZlibTransportFactoryConf(zlib.DefaultCompression, tf, conf)
	}
	s := &server{
		addr: sock.Addr().String(), stack: stack, proc: proc, done: make(chan struct{}),
		srv: thrift.NewTSimpleServer4(proc, sock, tf, thrift.NewTCompactProtocolFactoryConf(conf)),
	}
	s.srv.SetLogContext(context.Background())
	go func() {
		defer close(s.done)
		_ = s.srv.AcceptLoop() // it returns nil after Stop; a failure shows as failed calls
	}()
	return s, nil
}

// fanningCatalog is what a service without batching offers a client that
// needs many slow lookups in one round trip: a bulk method written to
// overlap them. Its getProducts waits latency for each id on a goroutine of
// its own, with latency.Wait as the store's simulated latency waits, and
// answers once every wait has; its other methods are the store's.
type fanningCatalog struct {
	*store.Handler // without latency of its own
	latency        time.Duration
}

// GetProducts returns the products among ids that exist, in the order of
// ids, each after a wait of h.latency, the waits overlapping; or ctx's error
// if it ends first. Each id costs a goroutine and a latency.Wait.
func (h *fanningCatalog) GetProducts(ctx context.Context, ids []int64) ([]*catalog.Product, error) {
	found := make([]*catalog.Product, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Go(func() {
			if latency.Wait(ctx, h.latency) == nil {
				found[i], _ = h.Lookup(id)
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return slices.DeleteFunc(found, func(p *catalog.Product) bool { return p == nil }), nil
}

// timerCatalog is the store with its getProduct's simulated latency on a Go
// timer (latency.TimerWait) instead of latency.Wait's poller: a wait up to a
// millisecond longer while the process is idle. Its other methods are the
// store's.
type timerCatalog struct {
	*store.Handler // without latency of its own
	latency        time.Duration
}

// GetProduct waits h.latency on a Go timer, or until ctx ends, then returns
// product id.
func (h *timerCatalog) GetProduct(ctx context.Context, id int64) (*catalog.Product, error) {
	if err := latency.TimerWait(ctx, h.latency); err != nil {
		return nil, err
	}
	return h.Handler.GetProduct(ctx, id)
}

// stop stops the server once every client connection is closed (TSimpleServer
// waits for them), then closes the processor and its pool.
func (s *server) stop() error {
	stopped := make(chan error, 1)
	go func() { stopped <- s.srv.Stop() }()
	var err error
	select {
	case err = <-stopped:
	case <-time.After(stopTimeout):
		return errors.New("server: connections still open after " + stopTimeout.String())
	}
	<-s.done
	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	return errors.Join(err, s.proc.Close(ctx))
}

// dial opens a connection to the server with its stack and returns the
// client's protocol. wrap, when not nil, wraps the socket (to slow it down).
func (s *server) dial(ctx context.Context, wrap func(net.Conn) net.Conn) (thrift.TProtocol, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", s.addr)
	if err != nil {
		return nil, err
	}
	if wrap != nil {
		nc = wrap(nc)
	}
	conf := &thrift.TConfiguration{ConnectTimeout: ioTimeout, SocketTimeout: ioTimeout}
	var t thrift.TTransport = thrift.NewTFramedTransportConf(thrift.NewTSocketFromConnConf(nc, conf), conf)
	if s.stack == zlibFramed {
		if t, err = thrift.NewTZlibTransportConf(t, zlib.DefaultCompression, conf); err != nil {
			return nil, errors.Join(err, nc.Close())
		}
	}
	return thrift.NewTCompactProtocolConf(t, conf), nil
}

// shop is a generated catalog client on a connection of its own.
type shop struct {
	*catalog.CatalogClient
	proto thrift.TProtocol
}

// Close closes the connection.
func (s *shop) Close() error { return s.proto.Transport().Close() }

// shop opens a connection and returns a generated client on it.
func (s *server) shop(ctx context.Context) (*shop, error) {
	proto, err := s.dial(ctx, nil)
	if err != nil {
		return nil, err
	}
	return &shop{catalog.NewCatalogClient(thrift.NewTStandardClient(proto, proto)), proto}, nil
}

// shops opens n connections, a generated client on each.
func (s *server) shops(ctx context.Context, n int) (closers, []*shop, error) {
	var cs closers
	out := make([]*shop, n)
	for i := range out {
		sh, err := s.shop(ctx)
		if err != nil {
			return nil, nil, errors.Join(err, cs.Close())
		}
		cs = append(cs, sh)
		out[i] = sh
	}
	return cs, out, nil
}

// plain is the batch clients' options in the timing scenarios: no codec
// accepted, no request compressed, so that they measure batching alone.
var plain = []client.Option{client.WithAcceptCodecs(), client.WithRequestCompression(batch.Codec_NONE, 0)}

// batchClient opens a connection and returns a batch client on it, with
// opts (plain when none are given).
func (s *server) batchClient(ctx context.Context, wrap func(net.Conn) net.Conn, opts ...client.Option) (*client.Client, error) {
	proto, err := s.dial(ctx, wrap)
	if err != nil {
		return nil, err
	}
	if len(opts) == 0 {
		opts = plain
	}
	c, err := client.New(proto, opts...)
	if err != nil {
		return nil, errors.Join(err, proto.Transport().Close())
	}
	return c, nil
}

// batchClients opens n connections, a plain batch client on each.
func (s *server) batchClients(ctx context.Context, n int) (closers, []*client.Client, error) {
	var cs closers
	out := make([]*client.Client, n)
	for i := range out {
		c, err := s.batchClient(ctx, nil)
		if err != nil {
			return nil, nil, errors.Join(err, cs.Close())
		}
		cs = append(cs, c)
		out[i] = c
	}
	return cs, out, nil
}

// auto returns an automatic batching client with opts (the defaults when
// none are given), whose connections are plain batch clients.
func (s *server) auto(ctx context.Context, opts ...client.AutoOption) (*client.Auto, error) {
	return client.NewAuto(ctx, func(ctx context.Context) (*client.Client, error) { return s.batchClient(ctx, nil) }, opts...)
}

// closer is anything a scenario opens and closes.
type closer interface{ Close() error }

// closers closes what it holds, last opened first.
type closers []closer

// Close closes every element and joins their errors.
func (cs closers) Close() error {
	var errs []error
	for i := len(cs) - 1; i >= 0; i-- {
		errs = append(errs, cs[i].Close())
	}
	return errors.Join(errs...)
}
