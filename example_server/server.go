package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/apache/thrift/lib/go/thrift"
	"github.com/rs/zerolog"

	"github.com/thriftbatch/thriftbatch/example_server/catalog"
	"github.com/thriftbatch/thriftbatch/example_server/store"
	"github.com/thriftbatch/thriftbatch/processor"
)

// drainTimeout bounds each step of shutdown: closing the connections, then
// waiting for the batches in flight.
const drainTimeout = 5 * time.Second

// Settings of the transports.
const (
	bufferSize = 8192
	// zlibLevel is zlib's default level. (Python's TZlibTransport
	// defaults to 9; either end reads what the other writes.)
	zlibLevel = 6
)

// serve serves the catalog on cfg.addr until ctx ends or serving fails,
// logging one line when it starts and one when it has stopped.
func serve(ctx context.Context, cfg *config, log zerolog.Logger) error {
	s, err := startServer(cfg, cfg.addr, store.New(cfg.products, cfg.latency), log)
	if err != nil {
		return err
	}
	log.Info().Str("addr", s.addr.String()).Str("protocol", cfg.protocol).Str("transport", cfg.transport).
		Int("products", cfg.products).Msg("example_server: serving the catalog")
	select {
	case <-ctx.Done():
	case <-s.done:
	}
	err = s.stop()
	log.Info().Msg("example_server: stopped")
	return err
}

// newLogger returns the logger of the server and its processor: JSON lines
// on w from level up.
func newLogger(w io.Writer, level zerolog.Level) zerolog.Logger {
	return zerolog.New(w).Level(level).With().Timestamp().Logger()
}

// stack is a protocol and a transport, built alike for the server and its
// clients.
type stack struct {
	protocol  thrift.TProtocolFactory
	transport thrift.TTransportFactory // nil for HTTP, which net/http serves
	conf      *thrift.TConfiguration
}

// newStack builds the factories of protocol and transport, names that
// config accepts, whose sockets time out after socketTimeout (0: never).
func newStack(protocol, transport string, socketTimeout time.Duration) (stack, error) {
	conf := &thrift.TConfiguration{SocketTimeout: socketTimeout}
	st := stack{conf: conf}
	switch protocol {
	case "binary":
		st.protocol = thrift.NewTBinaryProtocolFactoryConf(conf)
	case "compact":
		st.protocol = thrift.NewTCompactProtocolFactoryConf(conf)
	case "json":
		st.protocol = thrift.NewTJSONProtocolFactory()
	default:
		return stack{}, fmt.Errorf("unknown protocol %q", protocol)
	}
	framed := thrift.NewTFramedTransportFactoryConf(thrift.NewTTransportFactory(), conf)
	switch transport {
	case "buffered":
		st.transport = thrift.NewTBufferedTransportFactory(bufferSize)
	case "framed":
		st.transport = framed
	case "zlib":
		st.transport = thrift.NewTZlibTransportFactoryConf(zlibLevel, framed, conf)
	case "header":
		// THeader frames the messages itself and names the protocol
		// inside each frame; the server answers in the client's.
		id, ok := headerProtocols[protocol]
		if !ok {
			return stack{}, fmt.Errorf("THeader carries binary or compact, not %s", protocol)
		}
		conf.THeaderProtocolID = &id
		st.transport = thrift.NewTHeaderTransportFactoryConf(nil, conf)
		st.protocol = thrift.NewTHeaderProtocolFactoryConf(conf)
	case "http":
	default:
		return stack{}, fmt.Errorf("unknown transport %q", transport)
	}
	return st, nil
}

// headerProtocols are the protocols THeader carries, by the names config
// accepts.
var headerProtocols = map[string]thrift.THeaderProtocolID{
	"binary":  thrift.THeaderProtocolBinary,
	"compact": thrift.THeaderProtocolCompact,
}

// server serves the catalog behind a Processor on one listener, from a
// goroutine of its own.
type server struct {
	addr net.Addr
	proc *processor.Processor
	// halt stops taking connections and ends those open, within ctx.
	halt func(ctx context.Context) error
	done chan struct{} // closed when the serving goroutine has returned
	err  error         // what it returned; read after done
	// stopStats stops the periodic stats line (-stats-interval); nil when
	// there is none.
	stopStats func()
}

// startServer listens on addr and serves h there behind a Processor with
// cfg's options, protocol and transport, until stop.
func startServer(cfg *config, addr string, h catalog.Catalog, log zerolog.Logger) (*server, error) {
	st, err := newStack(cfg.protocol, cfg.transport, 0)
	if err != nil {
		return nil, err
	}
	proc, err := processor.New(catalog.NewCatalogProcessor(h), processorOptions(cfg, log)...)
	if err != nil {
		return nil, err
	}
	s := &server{proc: proc, done: make(chan struct{})}
	if st.transport == nil {
		err = s.listenHTTP(addr, st.protocol)
	} else {
		err = s.listenThrift(addr, st)
	}
	if err != nil {
		return nil, errors.Join(fmt.Errorf("start the server: %w", err), proc.Close(context.Background()))
	}
	if cfg.statsInterval > 0 {
		s.stopStats = logStats(proc.Stats, cfg.statsInterval, log)
	}
	return s, nil
}

// processorOptions returns the options of the Processor that cfg asks for.
func processorOptions(cfg *config, log zerolog.Logger) []processor.Option {
	return []processor.Option{
		processor.WithLogger(log),
		processor.WithPoolSize(cfg.poolSize),
		processor.WithPoolPreAlloc(cfg.poolPrealloc),
		processor.WithWorkerExpiry(cfg.workerExpiry),
		processor.WithMaxConcurrency(cfg.maxConcurrency),
		processor.WithOverloadPolicy(cfg.policy),
		processor.WithMaxCalls(cfg.maxCalls),
		processor.WithMaxTimeout(cfg.maxTimeout),
		processor.WithCompressThreshold(cfg.compressThreshold),
	}
}

// listenThrift serves with a TSimpleServer: one goroutine per connection.
func (s *server) listenThrift(addr string, st stack) error {
	sock, err := thrift.NewTServerSocket(addr)
	if err != nil {
		return err
	}
	if err := sock.Listen(); err != nil {
		return err
	}
	s.addr = sock.Addr()
	srv := thrift.NewTSimpleServer4(s.proc, sock, st.transport, st.protocol)
	// AcceptLoop, not Serve: Serve listens again, so after a Stop that
	// came before it, it would open a new socket and wait on it.
	srv.SetLogContext(context.Background())
	go s.run(srv.AcceptLoop)
	s.halt = func(context.Context) error { return srv.Stop() }
	return nil
}

// listenHTTP serves Thrift over HTTP: one POST to / per message.
func (s *server) listenHTTP(addr string, protocol thrift.TProtocolFactory) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	s.addr = ln.Addr()
	mux := http.NewServeMux()
	mux.HandleFunc("POST /", thrift.NewThriftHandlerFunc(s.proc, protocol, protocol))
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go s.run(func() error {
		if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	s.halt = func(ctx context.Context) error {
		if err := hs.Shutdown(ctx); err != nil {
			return errors.Join(err, hs.Close())
		}
		return nil
	}
	return nil
}

// run runs the serving loop and records how it ended.
func (s *server) run(loop func() error) {
	defer close(s.done)
	s.err = loop()
}

// stop stops taking connections, ends those open (waiting up to
// drainTimeout for them to finish), then closes the processor, waiting up
// to drainTimeout for the batches in flight. The stats line stops first.
func (s *server) stop() error {
	if s.stopStats != nil {
		s.stopStats()
	}
	ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	haltErr := s.halt(ctx)
	<-s.done
	ctx, cancel = context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	closeErr := s.proc.Close(ctx)
	switch {
	case haltErr != nil:
		haltErr = fmt.Errorf("stop serving: %w", haltErr)
	case s.err != nil:
		haltErr = fmt.Errorf("serve: %w", s.err)
	}
	if closeErr != nil {
		closeErr = fmt.Errorf("close the processor: %w", closeErr)
	}
	return errors.Join(haltErr, closeErr)
}
