// Package processor wraps an existing thrift.TProcessor so that it also
// serves executeBatch, the batch method of the thriftbatch wire contract
// (idl/batch.thrift, docs/SPEC.md), on the same port, protocol and transport.
//
//	p, err := processor.New(catalog.NewCatalogProcessor(handler))
//	if err != nil { ... }
//	defer func() {
//		// A client that never reads its answer would hold up a Close
//		// without a deadline.
//		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
//		defer cancel()
//		p.Close(ctx)
//	}()
//	server := thrift.NewTSimpleServer4(p, transport, transportFactory, protocolFactory)
//
// Every other message goes to the wrapped processor unchanged. A batch's calls
// run in memory through the wrapped processor's own functions, middleware
// included, on a worker pool (package pool), and come back in request order.
package processor

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apache/thrift/lib/go/thrift"
	"github.com/rs/zerolog"

	"github.com/thriftbatch/thriftbatch/compress"
	"github.com/thriftbatch/thriftbatch/dispatcher"
	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/internal/drain"
	"github.com/thriftbatch/thriftbatch/internal/wire"
	"github.com/thriftbatch/thriftbatch/pool"
)

// Processor is a thrift.TProcessor that serves executeBatch and passes every
// other message to the processor it wraps. It is safe for concurrent use.
type Processor struct {
	inner    thrift.TProcessor
	batchFn  atomic.Pointer[thrift.TProcessorFunction] // serves executeBatch; replaced by AddToProcessorMap
	dispatch *dispatcher.Dispatcher
	pool     *pool.Pool
	ownPool  bool
	codecs   *compress.Codecs
	cfg      *config
	log      zerolog.Logger
	gate     drain.Gate // batches from enter until their answer is written; closed by Close
	refused  atomic.Uint64

	// mux is inner when it is a TMultiplexedProcessor, whose ProcessorMap
	// builds a new map of every service's functions on each call; muxFns
	// keeps the last one built, with the generation it was built in, and is
	// used only in that generation; AddToProcessorMap starts a new one. See
	// functions.
	mux    *thrift.TMultiplexedProcessor
	muxFns atomic.Pointer[muxFunctions]
	muxGen atomic.Uint64
}

// muxFunctions is a TMultiplexedProcessor's function map as built in
// generation gen.
type muxFunctions struct {
	fns map[string]thrift.TProcessorFunction
	gen uint64
}

var _ thrift.TProcessor = (*Processor)(nil)

// New wraps inner. It returns an error for an invalid option. Unless WithPool
// is given, it starts a worker pool of its own (ants, with two goroutines of
// its own that purge idle workers and keep its clock), which Close releases.
// Its codecs (compress.New, which says what they keep) start with one zstd
// encoder and decoder, whose buffers grow with the largest payload they
// handle, and add encoders, up to GOMAXPROCS, as concurrent batches
// compress.
func New(inner thrift.TProcessor, opts ...Option) (*Processor, error) {
	if inner == nil {
		return nil, errors.New("processor: nil inner processor")
	}
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, err
	}
	codecs, err := compress.New(compress.WithMaxDecodedSize(cfg.maxDecompressedBytes))
	if err != nil {
		return nil, fmt.Errorf("processor: %w", err)
	}
	p := &Processor{inner: inner, codecs: codecs, cfg: cfg, log: cfg.log, pool: cfg.pool}
	p.mux, _ = inner.(*thrift.TMultiplexedProcessor)
	if p.pool == nil {
		if p.pool, err = pool.New(cfg.poolOpts...); err != nil {
			codecs.Close()
			return nil, fmt.Errorf("processor: %w", err)
		}
		p.ownPool = true
	}
	p.dispatch, err = dispatcher.New(p.pool, dispatcher.WithLogger(cfg.log), dispatcher.WithMaxConcurrency(cfg.maxConcurrency), dispatcher.WithHook(cfg.callHook()))
	if err != nil {
		p.Close(context.Background())
		return nil, fmt.Errorf("processor: %w", err)
	}
	var fn thrift.TProcessorFunction = batchFunction{p}
	p.batchFn.Store(&fn)
	return p, nil
}

// Close stops taking batches (new ones fail with BatchError SHUTTING_DOWN),
// waits until ctx is done for the batches in flight (those counted by
// Stats().BatchesInFlight: read, and not yet answered, their answer written
// and flushed), and releases the pool unless it came from WithPool. Messages
// other than executeBatch are not affected. It returns ctx's error, prefixed
// "processor: ", when batches were still in flight then, or when calls of
// its own pool abandoned at their deadline were still running (see
// pool.Close); what they hold is released when the last of them ends. With
// nothing in flight it returns nil, whatever ctx says.
func (p *Processor) Close(ctx context.Context) error {
	err := p.gate.Close(ctx, p.codecs.Close)
	if p.ownPool {
		if perr := p.pool.Close(ctx); err == nil {
			err = perr
		}
	}
	if err != nil {
		return fmt.Errorf("processor: %w", err)
	}
	return nil
}

// Pool returns the pool the processor's calls run on.
func (p *Processor) Pool() *pool.Pool { return p.pool }

// Stats is a snapshot of a Processor's state and counters, for a metrics
// scrape or a log line. docs/TUNING.md says which figures mean the pool is too
// small or too big.
type Stats struct {
	// Pool is the state and counters of the pool the calls run on (shared
	// with other processors when it came from WithPool).
	Pool pool.Stats
	// MaxConcurrency is the cap on the calls of one batch running at once.
	MaxConcurrency int
	// BatchesInFlight is the number of this processor's batches in flight:
	// each counts from when its request has been read off the connection
	// (not while it is being received) until its answer, a reply or an
	// exception, has been written and flushed. Close waits for them.
	BatchesInFlight int
	// Refused is the number of batches answered with a BatchError since
	// the start.
	Refused uint64
}

// Stats returns a snapshot of the processor's state and counters. It costs
// two mutexes and a dozen atomic loads: cheap enough for every scrape.
func (p *Processor) Stats() Stats {
	return Stats{
		Pool:            p.pool.Stats(),
		MaxConcurrency:  p.dispatch.MaxConcurrency(),
		BatchesInFlight: p.gate.InFlight(),
		Refused:         p.refused.Load(),
	}
}

// SetPoolSize resizes the pool on a running server without dropping work:
// calls in flight finish, and new ones start while the pool has room under
// the new size. It returns an error for a size below 1 and for a
// pre-allocated pool. Resizing a pool from WithPool resizes it for every
// processor that shares it.
func (p *Processor) SetPoolSize(n int) error {
	if err := p.pool.Tune(n); err != nil {
		return fmt.Errorf("processor: %w", err)
	}
	return nil
}

// SetMaxConcurrency changes the cap on the calls of one batch running at once
// on a running server: batches that start afterwards use it, batches in
// flight keep theirs. 0 means no cap below the pool's size. It returns an
// error for a negative n.
func (p *Processor) SetMaxConcurrency(n int) error {
	if err := p.dispatch.SetMaxConcurrency(n); err != nil {
		return fmt.Errorf("processor: %w", err)
	}
	return nil
}

// Process serves one message: executeBatch (alone, or as "Service:executeBatch"
// under a multiplexed client) itself, anything else through the wrapped
// processor unchanged. Telling the two apart costs a comparison of the name
// with executeBatch and a look at its end (dispatcher.IsBatchMethod).
func (p *Processor) Process(ctx context.Context, in, out thrift.TProtocol) (bool, thrift.TException) {
	name, typeID, seqID, err := in.ReadMessageBegin(ctx)
	if err != nil {
		return false, thrift.WrapTException(err)
	}
	if !dispatcher.IsBatchMethod(name) {
		return p.inner.Process(ctx, thrift.NewStoredMessageProtocol(in, name, typeID, seqID), out)
	}
	if typeID != thrift.CALL {
		// A oneway batch has nowhere to send its responses: refuse it
		// whole, and say so in the log, since the client hears nothing.
		p.log.Warn().Str("method", name).Int32("type", int32(typeID)).Msg("thriftbatch: refused a batch not sent as a CALL; no call ran")
		if err := in.Skip(ctx, thrift.STRUCT); err != nil {
			return false, thrift.WrapTException(err)
		}
		if err := in.ReadMessageEnd(ctx); err != nil {
			return false, thrift.WrapTException(err)
		}
		return true, nil
	}
	fn := *p.batchFn.Load()
	return fn.Process(context.WithValue(ctx, protocolKey{}, in), seqID, in, out)
}

// protocolKey carries the protocol a batch arrived on to batchFunction,
// past any middleware wrapping it.
type protocolKey struct{}

// ErrClientGone is the cause of a batch context canceled because its client
// disconnected (context.Cause tells it).
var ErrClientGone = errors.New("thriftbatch: the client disconnected")

// watch returns a context canceled with ErrClientGone once trans reports it
// is no longer open, checked every interval, and the watch, which its stop
// method ends. The checks run on a timer (time.AfterFunc), each on a goroutine
// that lives for the check only: a batch that ends within one interval, as
// most do, costs a timer started and stopped, and no goroutine or ticker.
func watch(ctx context.Context, trans thrift.TTransport, interval time.Duration) (context.Context, *watcher) {
	ctx, cancel := context.WithCancelCause(ctx)
	w := &watcher{trans: trans, interval: interval, cancel: cancel}
	w.mu.Lock()
	w.timer = time.AfterFunc(interval, w.check)
	w.mu.Unlock()
	return ctx, w
}

// watcher is the state of one watch.
type watcher struct {
	trans    thrift.TTransport
	interval time.Duration
	cancel   context.CancelCauseFunc

	mu      sync.Mutex // guards timer and stopped against a check in flight
	timer   *time.Timer
	stopped bool
}

// check cancels the batch if its client has gone, and otherwise looks again
// after another interval, unless the watch has stopped meanwhile.
func (w *watcher) check() {
	if !w.trans.IsOpen() {
		w.cancel(ErrClientGone)
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopped {
		w.timer.Reset(w.interval)
	}
}

// stop ends the watch and releases the batch's context. A check already
// running may still finish, but its cancel has no effect by then.
func (w *watcher) stop() {
	w.mu.Lock()
	w.stopped = true
	w.timer.Stop()
	w.mu.Unlock()
	w.cancel(nil)
}

// watchInterval returns how often a batch's connection is checked: every
// thrift.ServerConnectivityCheckInterval while that is above zero, as the
// generated code checks each call sent alone, otherwise every
// WithDisconnectCheck interval; 0 means not at all.
func (p *Processor) watchInterval() time.Duration {
	if d := thrift.ServerConnectivityCheckInterval; d > 0 {
		return d
	}
	return p.cfg.disconnectCheck
}

// ProcessorMap returns the wrapped processor's functions and executeBatch's,
// in a new map. thrift.WrapProcessor uses it to wrap them all, executeBatch
// included; the calls of a batch then pass through the middleware twice:
// once as the batch, once each as themselves.
func (p *Processor) ProcessorMap() map[string]thrift.TProcessorFunction {
	m := maps.Clone(p.inner.ProcessorMap())
	if m == nil {
		m = make(map[string]thrift.TProcessorFunction, 1)
	}
	m[dispatcher.MethodName] = *p.batchFn.Load()
	return m
}

// AddToProcessorMap sets the function serving name: executeBatch's here,
// anything else on the wrapped processor, where batches find it too.
func (p *Processor) AddToProcessorMap(name string, fn thrift.TProcessorFunction) {
	if dispatcher.IsBatchMethod(name) {
		p.batchFn.Store(&fn)
		return
	}
	p.inner.AddToProcessorMap(name, fn)
	p.muxGen.Add(1)
}

// functions returns the functions of the inner processor that a batch of
// requests looks its methods up in. For most processors that is their
// ProcessorMap, which the generated ones return as it is, so a function
// changed on them is seen by the next batch. A TMultiplexedProcessor builds
// its map anew on each call (go test -bench MultiplexedFunctions
// ./processor, two runs at c04aa5b: 2.0 to 2.1 µs and 15 allocations for
// one service of 10 methods, 23 to 48 µs and 111 for ten), so its map is
// kept between batches and built again
// when a batch names a method the map lacks, or after AddToProcessorMap on
// this Processor. Changes made to the multiplexer or its services directly
// after the first batch (RegisterProcessor under a name in use,
// AddToProcessorMap on them, thrift.WrapProcessor of the multiplexer) are
// not seen by batches until then: make them before serving, as Thrift
// requires anyway (its maps are not safe to change while it serves), or
// through this Processor.
func (p *Processor) functions(requests []*batch.Request) map[string]thrift.TProcessorFunction {
	if p.mux == nil {
		return p.inner.ProcessorMap()
	}
	gen := p.muxGen.Load()
	if m := p.muxFns.Load(); m != nil && m.gen == gen && holds(m.fns, requests) {
		return m.fns
	}
	// A map built before a concurrent AddToProcessorMap carries the older
	// generation, so the next batch builds another instead of using it.
	m := &muxFunctions{fns: p.mux.ProcessorMap(), gen: gen}
	p.muxFns.Store(m)
	return m.fns
}

// holds reports whether fns has a function for every request's method.
func holds(fns map[string]thrift.TProcessorFunction, requests []*batch.Request) bool {
	for _, r := range requests {
		if r != nil && fns[r.Method] == nil && !dispatcher.IsBatchMethod(r.Method) {
			return false
		}
	}
	return true
}

// enter counts a batch whose request has been read as in flight (Stats,
// Close), or refuses it with SHUTTING_DOWN once Close has begun. A nil
// error must be matched by one p.gate.Exit once the batch's answer has
// been written and flushed, whatever the answer.
func (p *Processor) enter() error {
	if !p.gate.Enter() {
		return p.refuse(batchError(batch.BatchErrorCode_SHUTTING_DOWN, "the server is shutting down and takes no new batches"))
	}
	return nil
}

// execute runs the batch req, which arrived on proto, of kind, and has entered (see
// enter). skipped, when above 0, is how many requests were read past
// instead of into req.Requests, for exceeding WithMaxCalls. The response's
// replies may be held in the buffers the calls wrote them into
// (dispatcher.RunHeld): call release once the response has been written,
// and not before. release reports whether every call had returned (see
// dispatcher.RunHeld): then the memory req was read into may be reused.
func (p *Processor) execute(ctx context.Context, kind wire.Kind, proto thrift.TProtocol, req *batch.BatchRequest, skipped int) (resp *batch.BatchResponse, release func() (returned bool), err error) {
	start := time.Now()
	if req == nil {
		req = batch.NewBatchRequest()
	}
	requests, bytesIn, err := p.requests(ctx, kind, req, skipped)
	if err != nil {
		return nil, noRelease, p.refuse(err)
	}
	// The request has been read: from here on the connection is quiet
	// until the response, and a watcher may poll it.
	if d := p.watchInterval(); d > 0 {
		var w *watcher
		ctx, w = watch(ctx, proto.Transport(), d)
		defer w.stop()
	}
	if d := p.timeout(req); d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	responses, release, err := p.dispatch.RunHeld(ctx, dispatcher.Batch{
		Requests:   requests,
		Functions:  p.functions(requests),
		Protocol:   proto,
		Sequential: req.GetSequential(),
	})
	if err != nil {
		return nil, noRelease, p.refuse(err)
	}
	resp, bytesOut, err := p.respond(ctx, kind, req.AcceptCodecs, responses)
	if err != nil {
		return nil, release, p.refuse(err)
	}
	if e := p.log.Debug(); e.Enabled() {
		failed := 0
		for _, r := range responses {
			if r.Error != nil {
				failed++
			}
		}
		e.Int("calls", len(responses)).Int("failed", failed).Dur("duration", time.Since(start)).
			Int("bytes_in", bytesIn).Int("bytes_out", bytesOut).Str("codec", resp.GetCodec().String()).
			Msg("thriftbatch: batch")
	}
	return resp, release, nil
}

// noRelease is the release of a batch that holds nothing and ran no call.
func noRelease() bool { return true }

// refuse logs a refused batch and returns its error.
func (p *Processor) refuse(err error) error {
	var be *batch.BatchError
	if errors.As(err, &be) {
		p.refused.Add(1)
		p.log.Warn().Str("code", be.Code.String()).Str("reason", be.Message).Msg("thriftbatch: batch refused")
		return be
	}
	p.log.Error().Err(err).Msg("thriftbatch: batch failed")
	return err
}

func batchError(code batch.BatchErrorCode, format string, args ...any) *batch.BatchError {
	return &batch.BatchError{Code: code, Message: fmt.Sprintf(format, args...)}
}

// requests returns the batch's calls, decompressed and checked against the
// limits, and the bytes they took on the wire.
func (p *Processor) requests(ctx context.Context, kind wire.Kind, req *batch.BatchRequest, skipped int) ([]*batch.Request, int, error) {
	requests := req.Requests
	calls := len(requests)
	if skipped > 0 {
		calls = skipped
	}
	wireBytes := 0
	if req.IsSetCompressedRequests() {
		codec := req.GetRequestCodec()
		switch {
		case calls > 0:
			return nil, 0, batchError(batch.BatchErrorCode_INVALID_REQUEST, "both requests (%d calls) and compressedRequests are set; send one", calls)
		case codec == batch.Codec_NONE:
			return nil, 0, batchError(batch.BatchErrorCode_INVALID_REQUEST, "compressedRequests is set but requestCodec is NONE")
		case !compress.IsSupported(codec):
			return nil, 0, batchError(batch.BatchErrorCode_UNSUPPORTED_CODEC, "requestCodec %s is not supported; supported: %v", compress.Name(codec), compress.Supported)
		case p.cfg.maxRequestBytes > 0 && len(req.CompressedRequests) > p.cfg.maxRequestBytes:
			return nil, 0, batchError(batch.BatchErrorCode_TOO_MANY_BYTES, "compressedRequests is %d bytes, the limit is %d", len(req.CompressedRequests), p.cfg.maxRequestBytes)
		}
		wireBytes = len(req.CompressedRequests)
		raw, err := p.codecs.Decode(codec, nil, req.CompressedRequests)
		switch {
		case errors.Is(err, compress.ErrWindowTooLarge):
			return nil, 0, batchError(batch.BatchErrorCode_TOO_MANY_BYTES, "compressedRequests (%v, %d bytes) refused under the limit of %d bytes: %v", codec, len(req.CompressedRequests), p.cfg.maxDecompressedBytes, err)
		case errors.Is(err, compress.ErrTooLarge):
			return nil, 0, batchError(batch.BatchErrorCode_TOO_MANY_BYTES, "compressedRequests (%v, %d bytes) decompresses to more than the limit of %d bytes", codec, len(req.CompressedRequests), p.cfg.maxDecompressedBytes)
		case err != nil:
			return nil, 0, batchError(batch.BatchErrorCode_CORRUPT_PAYLOAD, "compressedRequests does not decompress as %v: %v", codec, err)
		}
		var inner batch.BatchRequest
		var tooMany *wire.TooManyCallsError
		switch err := p.decodeRequests(ctx, kind, raw, &inner); {
		case errors.As(err, &tooMany):
			calls = tooMany.Calls // refused below, as the same calls sent plain are
		case err != nil:
			return nil, 0, batchError(batch.BatchErrorCode_CORRUPT_PAYLOAD, "compressedRequests decompressed (%d bytes) but is not a %v-encoded BatchRequest: %v", len(raw), kind, err)
		default:
			// The calls' arguments may be slices of raw, which can be
			// far larger than they are (unknown fields): keep only them.
			detach(&inner, len(raw))
			requests, calls = inner.Requests, len(inner.Requests)
		}
	}
	if p.cfg.maxCalls > 0 && calls > p.cfg.maxCalls {
		return nil, 0, batchError(batch.BatchErrorCode_TOO_MANY_CALLS, "batch has %d calls, the limit is %d", calls, p.cfg.maxCalls)
	}
	size := 0
	for _, r := range requests {
		if r != nil {
			size += len(r.Method) + len(r.Arguments)
		}
	}
	if p.cfg.maxRequestBytes > 0 && size > p.cfg.maxRequestBytes {
		return nil, 0, batchError(batch.BatchErrorCode_TOO_MANY_BYTES, "batch carries %d bytes of method names and arguments, the limit is %d", size, p.cfg.maxRequestBytes)
	}
	if t := req.TimeoutMillis; t != nil && *t < 0 {
		return nil, 0, batchError(batch.BatchErrorCode_INVALID_REQUEST, "timeoutMillis is %d; it must not be negative", *t)
	}
	if wireBytes == 0 {
		wireBytes = size
	}
	return requests, wireBytes, nil
}

// decodeRequests decodes raw, the decompressed compressedRequests, into r:
// the compact protocol by hand (wire.DecodeBatchRequest: a few allocations
// per batch, more than WithMaxCalls calls read past without keeping them),
// the others through the generated code.
func (p *Processor) decodeRequests(ctx context.Context, kind wire.Kind, raw []byte, r *batch.BatchRequest) error {
	if kind == wire.Compact {
		return wire.DecodeBatchRequest(raw, r, p.cfg.tconf, p.cfg.maxCalls)
	}
	return wire.Decode(ctx, kind, raw, r)
}

// timeout returns the batch's deadline: its timeoutMillis capped by the
// ceiling, or the ceiling when it has none. 0 means no deadline.
func (p *Processor) timeout(req *batch.BatchRequest) time.Duration {
	d := time.Duration(req.GetTimeoutMillis()) * time.Millisecond
	switch ceiling := p.cfg.maxTimeout; {
	case d <= 0:
		return ceiling
	case ceiling > 0:
		return min(d, ceiling)
	}
	return d
}

// respond builds the BatchResponse, compressed when the client accepts a
// codec and the responses are worth it, and checks it against the response
// limit. It returns the response and its encoded size (an estimate when
// the responses were not encoded here).
func (p *Processor) respond(ctx context.Context, kind wire.Kind, accept []batch.Codec, responses []*batch.Response) (*batch.BatchResponse, int, error) {
	plain := &batch.BatchResponse{Responses: responses}
	estimate := estimateSize(kind, responses)
	codec := compress.Choose(accept)
	limit := p.cfg.maxResponseBytes
	compressing := codec != batch.Codec_NONE && estimate >= p.cfg.compressThreshold && estimate > 0
	// The estimate is close, not exact: encode to measure when it matters.
	if !compressing && (limit == 0 || estimate <= limit/2) {
		return plain, estimate, nil
	}
	raw, err := wire.Encode(ctx, kind, nil, plain)
	if err != nil {
		return nil, 0, fmt.Errorf("encode responses: %w", err)
	}
	if compressing {
		packed, err := p.codecs.Encode(codec, nil, raw)
		if err != nil {
			return nil, 0, fmt.Errorf("compress responses with %v: %w", codec, err)
		}
		if len(packed) < len(raw) {
			if limit > 0 && len(packed) > limit {
				return nil, 0, batchError(batch.BatchErrorCode_RESPONSE_TOO_LARGE, "responses of %d calls take %d bytes compressed with %v, the limit is %d", len(responses), len(packed), codec, limit)
			}
			c := codec
			return &batch.BatchResponse{Codec: &c, CompressedResponses: packed}, len(packed), nil
		}
	}
	if limit > 0 && len(raw) > limit {
		return nil, 0, batchError(batch.BatchErrorCode_RESPONSE_TOO_LARGE, "responses of %d calls take %d bytes, the limit is %d; accept a codec or send smaller batches", len(responses), len(raw), limit)
	}
	return plain, len(raw), nil
}

// estimateSize returns at least how many bytes the responses take encoded
// with kind, and not much more: close enough to choose whether to compress.
// JSON carries a reply in base64 (4/3 of its size) and may escape each byte
// of a message as \u00XX (6 bytes).
func estimateSize(kind wire.Kind, responses []*batch.Response) int {
	n := 8
	for _, r := range responses {
		reply, msg := len(r.Reply), 0
		if r.Error != nil {
			msg = len(r.Error.Message) + 16
		}
		if kind == wire.JSON {
			reply, msg = reply*4/3+8, msg*6+32
		}
		n += reply + msg + 24
	}
	return n
}
