package main

import (
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/apache/thrift/lib/go/thrift"
	"github.com/rs/zerolog"

	"github.com/thriftbatch/thriftbatch/example_server/catalog"
	"github.com/thriftbatch/thriftbatch/example_server/store"
	"github.com/thriftbatch/thriftbatch/processor"
)

// drainTimeout bounds each step of shutdown: waiting for the requests in
// flight before closing the connections left, then waiting for the batches
// those connections were running.
const drainTimeout = 5 * time.Second

// Settings of the transports.
const (
	bufferSize = 8192
	// zlibLevel is zlib's default level. (Python's TZlibTransport
	// defaults to 9; either end reads what the other writes.)
	zlibLevel = 6
)

// serve serves the catalog on cfg.addr until ctx ends or serving fails,
// logging one line when it starts and one when it has stopped: at info
// level when nothing was cut off, else at warn level saying what was.
// Requests cut off by the end of the drain are not an error.
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
	cut, err := s.stop()
	logStopped(log, cut, cfg.drain)
	return err
}

// logStopped logs the stop line: at info level when the drain cut nothing
// off, else at warn level saying what it cut off.
func logStopped(log zerolog.Logger, cut cutOff, drain time.Duration) {
	if cut.none() {
		log.Info().Msg("example_server: stopped")
		return
	}
	log.Warn().Int("batches_cut_off", cut.batches).Int("single_calls_cut_off", cut.calls).
		Stringer("drain", drain).AnErr("processor", cut.closeErr).
		Msg("example_server: stopped, cutting off the requests still in flight at the end of the drain")
}

// cutOff is what shutdown cut off.
type cutOff struct {
	// batches and calls are the executeBatch requests and the one-by-one
	// calls in flight when the drain ended and the connections left were
	// closed.
	batches, calls int
	// closeErr is the processor's Close error: batches, or calls their
	// deadline abandoned, still running a drain after that.
	closeErr error
}

func (c cutOff) none() bool { return c.batches == 0 && c.calls == 0 && c.closeErr == nil }

// String says what was cut off, and the processor's Close error if any.
func (c cutOff) String() string {
	var parts []string
	if c.batches != 0 || c.calls != 0 || c.closeErr == nil {
		parts = append(parts, fmt.Sprintf("%d batches and %d one-by-one calls cut off at the end of the drain", c.batches, c.calls))
	}
	if c.closeErr != nil {
		parts = append(parts, "processor: "+c.closeErr.Error())
	}
	return strings.Join(parts, "; ")
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
	addr  net.Addr
	proc  *processor.Processor
	calls *callCounter // the one-by-one calls in flight
	drain time.Duration
	// halt stops taking connections and waits until ctx ends for those
	// open to finish their requests, then closes those left. cut is what
	// was in flight then; err is nil when ctx ending was all that went
	// wrong.
	halt func(ctx context.Context) (cut cutOff, err error)
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
	calls := &callCounter{TProcessor: catalog.NewCatalogProcessor(h)}
	proc, err := processor.New(calls, processorOptions(cfg, log)...)
	if err != nil {
		return nil, err
	}
	s := &server{proc: proc, calls: calls, drain: cfg.drain, done: make(chan struct{})}
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

// inFlight returns what is in flight now.
func (s *server) inFlight() cutOff {
	return cutOff{batches: s.proc.Stats().BatchesInFlight, calls: int(s.calls.inFlight.Load())}
}

// listenThrift serves with a TSimpleServer: one goroutine per connection.
func (s *server) listenThrift(addr string, st stack) error {
	tcpAddr, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		return err
	}
	conns := &connSet{conns: map[*trackedConn]struct{}{}}
	sock := thrift.NewTServerSocketFromFactoryTimeout(func(a net.Addr) (net.Listener, error) {
		ln, err := net.Listen(a.Network(), a.String())
		if err != nil {
			return nil, err
		}
		return &trackingListener{Listener: ln, conns: conns}, nil
	}, tcpAddr, 0)
	if err := sock.Listen(); err != nil {
		return err
	}
	s.addr = sock.Addr()
	srv := thrift.NewTSimpleServer4(s.proc, sock, st.transport, st.protocol)
	// AcceptLoop, not Serve: Serve listens again, so after a Stop that
	// came before it, it would open a new socket and wait on it.
	srv.SetLogContext(context.Background())
	go s.run(srv.AcceptLoop)
	s.halt = func(ctx context.Context) (cutOff, error) {
		// With thrift.ServerStopTimeout at 0 (the library's default,
		// which this program does not change, and on which the usage's
		// bound on stopping rests), Stop waits for every connection to end: each ends after its request in flight,
		// and those left are closed here once ctx ends.
		stopped := make(chan error, 1)
		go func() { stopped <- srv.Stop() }()
		select {
		case err := <-stopped:
			// Stop may leave a connection accepted as it began open.
			conns.closeAll()
			return cutOff{}, err
		case <-ctx.Done():
		}
		cut := s.inFlight()
		conns.closeAll()
		return cut, <-stopped
	}
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
	mux.Handle("POST /", newHTTPHandler(s.proc, protocol))
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go s.run(func() error {
		if err := hs.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	s.halt = func(ctx context.Context) (cutOff, error) {
		err := hs.Shutdown(ctx)
		if err == nil {
			return cutOff{}, nil
		}
		var cut cutOff
		if errors.Is(err, ctx.Err()) {
			cut, err = s.inFlight(), nil
		}
		return cut, errors.Join(err, hs.Close())
	}
	return nil
}

// run runs the serving loop and records how it ended.
func (s *server) run(loop func() error) {
	defer close(s.done)
	s.err = loop()
}

// stop stops taking connections, waits up to s.drain for the requests in
// flight to finish and closes the connections left, then closes the
// processor, waiting up to s.drain more for the batches still running. The
// stats line stops first. It returns what the drain cut off, and an error
// only for a failure other than the drain's end.
func (s *server) stop() (cutOff, error) {
	if s.stopStats != nil {
		s.stopStats()
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.drain)
	defer cancel()
	cut, haltErr := s.halt(ctx)
	<-s.done
	ctx, cancel = context.WithTimeout(context.Background(), s.drain)
	defer cancel()
	if err := s.proc.Close(ctx); err != nil {
		cut.closeErr = err
	}
	switch {
	case haltErr != nil:
		return cut, fmt.Errorf("stop serving: %w", haltErr)
	case s.err != nil:
		return cut, fmt.Errorf("serve: %w", s.err)
	}
	return cut, nil
}

// callCounter is the catalog's processor, counting the one-by-one calls
// in flight (the calls of a batch do not pass through its Process).
type callCounter struct {
	thrift.TProcessor
	inFlight atomic.Int64
}

func (c *callCounter) Process(ctx context.Context, in, out thrift.TProtocol) (bool, thrift.TException) {
	c.inFlight.Add(1)
	defer c.inFlight.Add(-1)
	return c.TProcessor.Process(ctx, in, out)
}

// trackingListener is a net.Listener that adds the connections it accepts
// to conns.
type trackingListener struct {
	net.Listener
	conns *connSet
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.conns.add(c), nil
}

// connSet is the open connections of a trackingListener.
type connSet struct {
	mu     sync.Mutex
	conns  map[*trackedConn]struct{}
	closed bool // closeAll has run: a connection added later is closed at once
}

func (s *connSet) add(c net.Conn) *trackedConn {
	tc := &trackedConn{Conn: c, set: s}
	s.mu.Lock()
	closed := s.closed
	if !closed {
		s.conns[tc] = struct{}{}
	}
	s.mu.Unlock()
	if closed {
		// Accepted as the server stopped: the accept loop drops it
		// without closing it.
		c.Close()
	}
	return tc
}

// closeAll closes every connection open, and those added afterwards.
func (s *connSet) closeAll() {
	s.mu.Lock()
	s.closed = true
	conns := slices.Collect(maps.Keys(s.conns))
	s.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// trackedConn is a connection of a connSet, which leaves it when closed.
type trackedConn struct {
	net.Conn
	set *connSet
}

func (c *trackedConn) Close() error {
	c.set.mu.Lock()
	delete(c.set.conns, c)
	c.set.mu.Unlock()
	return c.Conn.Close()
}

// SyscallConn gives Thrift's connectivity check, which peeks at the
// socket, and the processor's disconnect check through it, the socket.
func (c *trackedConn) SyscallConn() (syscall.RawConn, error) {
	sc, ok := c.Conn.(syscall.Conn)
	if !ok {
		return nil, errors.ErrUnsupported
	}
	return sc.SyscallConn()
}

// newHTTPHandler serves Thrift over HTTP as thrift.NewThriftHandlerFunc
// does, one message a POST, its reply gzipped when the client accepts gzip,
// except that a body the processor fails on before it writes a reply (not a
// Thrift message, say) gets 400 Bad Request and a line of text saying why,
// instead of 200 and an empty body.
func newHTTPHandler(proc thrift.TProcessor, protocol thrift.TProtocolFactory) http.Handler {
	serve := thrift.NewThriftHandlerFunc(errRecorder{proc}, protocol, protocol)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gzipped := strings.Contains(r.Header.Get("Accept-Encoding"), "gzip")
		// The reply is gzipped here, on its first byte, so that a request
		// without one can still be answered 400.
		r = r.WithContext(context.WithValue(r.Context(), processErrKey{}, new(error)))
		r.Header.Del("Accept-Encoding")
		rw := &replyWriter{ResponseWriter: w, gzip: gzipped}
		serve(rw, r)
		if err := rw.close(); err != nil {
			return // the connection failed; the client hears nothing more
		}
		if err := *r.Context().Value(processErrKey{}).(*error); err != nil && !rw.wrote {
			w.Header().Del("Content-Type")
			http.Error(w, "example_server: not a Thrift request the server can read: "+err.Error(), http.StatusBadRequest)
		}
	})
}

// processErrKey keys the *error where errRecorder puts Process's error.
type processErrKey struct{}

// errRecorder is a processor that puts the error of Process where the
// context's processErrKey points.
type errRecorder struct{ thrift.TProcessor }

func (p errRecorder) Process(ctx context.Context, in, out thrift.TProtocol) (bool, thrift.TException) {
	ok, err := p.TProcessor.Process(ctx, in, out)
	// ok is false for a message the server could not read or answer; a
	// handler's own failure, which a oneway call reports with ok true and
	// no reply, is not the client's fault.
	if slot, _ := ctx.Value(processErrKey{}).(*error); slot != nil && err != nil && !ok {
		*slot = err
	}
	return ok, err
}

// gzipWriters holds the gzip writers of replies that have been sent: a new
// writer allocates about 800 KB, a Reset one nothing.
var gzipWriters = sync.Pool{New: func() any { return gzip.NewWriter(nil) }}

// replyWriter passes a reply on to its ResponseWriter, gzipped if gzip is
// set, and notes whether one was written.
type replyWriter struct {
	http.ResponseWriter
	gzip  bool
	gz    *gzip.Writer
	wrote bool
}

func (w *replyWriter) Write(p []byte) (int, error) {
	if !w.wrote {
		w.wrote = true
		if w.gzip {
			w.Header().Set("Content-Encoding", "gzip")
			w.gz = gzipWriters.Get().(*gzip.Writer)
			w.gz.Reset(w.ResponseWriter)
		}
	}
	if w.gz != nil {
		return w.gz.Write(p)
	}
	return w.ResponseWriter.Write(p)
}

// close ends the gzip stream, if one began, and hands its writer back.
func (w *replyWriter) close() error {
	if w.gz == nil {
		return nil
	}
	err := w.gz.Close()
	w.gz.Reset(nil) // keeps nothing of the connection
	gzipWriters.Put(w.gz)
	w.gz = nil
	return err
}
