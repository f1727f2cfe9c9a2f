package client

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/internal/wire"
)

// Defaults of the Auto options.
const (
	// DefaultMaxBatch is the most calls in one batch (WithMaxBatch).
	DefaultMaxBatch = 128
	// DefaultMaxWait is how long a batch waits for more calls after its
	// first (WithMaxWait).
	DefaultMaxWait = 50 * time.Microsecond
	// DefaultMaxInFlight is the most batches in flight, and connections
	// (WithMaxInFlight).
	DefaultMaxInFlight = 4
)

// ErrClosed is returned by an Auto's calls after Close.
var ErrClosed = errors.New("thriftbatch: automatic batching client closed")

// Auto is a thrift.TClient that coalesces the calls made concurrently from
// many goroutines into executeBatch calls. Give it to a generated client
// constructor (NewCatalogClient(auto)) and call methods as usual. The Auto is
// safe for concurrent use; a generated client is not (it records the last
// response's metadata in a field), so give each goroutine its own generated
// client over the shared Auto: it costs one small allocation.
//
// A batch is sent when it holds MaxBatch calls or MaxWait after its first
// call, whichever comes first, on one of at most MaxInFlight connections;
// while they are all busy, calls gather for the next batch. Each caller gets
// its own result; a caller whose ctx ends first returns ctx's error at once
// and its result is discarded. A lone call therefore waits up to MaxWait
// before it is sent, and pays for the batch's envelope (with the defaults,
// 92 µs against 23 µs for the same call sent alone: the chart's one-call
// point in docs/BENCHMARKS.md), and 100 concurrent calls cost one round trip
// instead of 100.
type Auto struct {
	dial     func(context.Context) (*Client, error)
	kind     wire.Kind
	maxBatch int
	maxWait  time.Duration

	mu     sync.RWMutex // held for reading while enqueueing, for writing to close
	closed bool
	queue  chan *pending
	stop   chan struct{}
	idle   chan *Client  // connections not carrying a batch
	tokens chan struct{} // connections that may still be dialed
	wg     sync.WaitGroup
}

var _ thrift.TClient = (*Auto)(nil)

type autoConfig struct {
	maxBatch    int
	maxWait     time.Duration
	maxInFlight int
}

// AutoOption configures an Auto.
type AutoOption func(*autoConfig)

// WithMaxBatch sets the most calls in one batch. The default is
// DefaultMaxBatch (128); it must be positive.
func WithMaxBatch(n int) AutoOption { return func(c *autoConfig) { c.maxBatch = n } }

// WithMaxWait sets how long a batch waits for more calls after its first.
// The default is DefaultMaxWait (50 µs); 0 sends what has gathered as soon
// as a connection is free; a negative wait makes NewAuto return an error. A
// wait under a millisecond is spent yielding the processor, so it costs up
// to that much of one goroutine's time per batch.
func WithMaxWait(d time.Duration) AutoOption { return func(c *autoConfig) { c.maxWait = d } }

// WithMaxInFlight sets the most batches in flight at once, which is also the
// most connections the Auto dials. The default is DefaultMaxInFlight (4); it
// must be positive.
func WithMaxInFlight(n int) AutoOption { return func(c *autoConfig) { c.maxInFlight = n } }

// NewAuto dials one connection with dial, to learn the protocol and fail
// early, and returns an Auto that dials up to MaxInFlight connections as the
// load needs them. dial must return a new Client on a new connection each
// time. Close the Auto to close its connections and stop its goroutine.
func NewAuto(ctx context.Context, dial func(context.Context) (*Client, error), opts ...AutoOption) (*Auto, error) {
	cfg := autoConfig{maxBatch: DefaultMaxBatch, maxWait: DefaultMaxWait, maxInFlight: DefaultMaxInFlight}
	for _, o := range opts {
		o(&cfg)
	}
	switch {
	case cfg.maxBatch <= 0:
		return nil, fmt.Errorf("client: max batch must be positive, got %d", cfg.maxBatch)
	case cfg.maxWait < 0:
		return nil, fmt.Errorf("client: max wait must not be negative, got %v", cfg.maxWait)
	case cfg.maxInFlight <= 0:
		return nil, fmt.Errorf("client: max in flight must be positive, got %d", cfg.maxInFlight)
	}
	first, err := dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("client: dial: %w", err)
	}
	a := &Auto{
		dial: dial, kind: first.kind, maxBatch: cfg.maxBatch, maxWait: cfg.maxWait,
		queue:  make(chan *pending, cfg.maxBatch),
		stop:   make(chan struct{}),
		idle:   make(chan *Client, cfg.maxInFlight),
		tokens: make(chan struct{}, cfg.maxInFlight),
	}
	a.idle <- first
	for range cfg.maxInFlight - 1 {
		a.tokens <- struct{}{}
	}
	a.wg.Add(1)
	go a.collect()
	return a, nil
}

// pending is one call waiting for its batch.
type pending struct {
	ctx    context.Context
	req    batch.Request // the call on the wire, allocated with the pending
	result thrift.TStruct
	state  atomic.Uint32 // waiting, delivering or abandoned
	// Set before done is closed: the batch's answer for this call
	// (answered, with resp or a batch error in err), or the error that
	// kept it from being sent (err).
	answered bool
	resp     *batch.Response
	err      error
	done     chan struct{}
}

const (
	waiting uint32 = iota
	delivering
	abandoned
)

// Call implements thrift.TClient: it queues the call for the next batch and
// waits for its result. args are encoded before Call queues them, so the
// caller may reuse them once Call returns.
func (a *Auto) Call(ctx context.Context, method string, args, result thrift.TStruct) (thrift.ResponseMeta, error) {
	var meta thrift.ResponseMeta
	encoded, err := wire.Encode(ctx, a.kind, nil, args)
	if err != nil {
		return meta, thrift.NewTProtocolException(err)
	}
	p := &pending{ctx: ctx, req: batch.Request{Method: method, Arguments: encoded}, result: result, done: make(chan struct{})}
	if err := a.enqueue(ctx, p); err != nil {
		return meta, err
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		if p.state.CompareAndSwap(waiting, abandoned) {
			return meta, ctx.Err()
		}
		<-p.done // being delivered: a moment
	}
	return meta, p.finish(a.kind)
}

// finish returns the call's error after done, decoding its reply into its
// result first. It runs on the caller's goroutine, so the replies of a
// batch decode in parallel on their callers while the connection carries
// the next batch.
func (p *pending) finish(kind wire.Kind) error {
	if !p.answered {
		return p.err
	}
	d := coder{kind: kind}
	err := settle(&d, p.req.Method, p.resp, p.err, p.result)
	d.release()
	if err != nil && p.ctx.Err() != nil {
		// The caller's own deadline passed too: say so as an
		// unbatched call would.
		err = p.ctx.Err()
	}
	return err
}

func (a *Auto) enqueue(ctx context.Context, p *pending) error {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.closed {
		return ErrClosed
	}
	select {
	case a.queue <- p:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops taking calls, waits for the batches in flight, answers calls
// still queued with ErrClosed, and closes the connections.
func (a *Auto) Close() error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	a.mu.Unlock()
	close(a.stop)
	a.wg.Wait()
	var errs []error
	for {
		select {
		case c := <-a.idle:
			errs = append(errs, c.Close())
		default:
			return errors.Join(errs...)
		}
	}
}

// collect gathers calls into batches and hands each to a sender.
func (a *Auto) collect() {
	defer a.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		var calls []*pending
		select {
		case p := <-a.queue:
			calls = append(make([]*pending, 0, a.maxBatch), p)
		case <-a.stop:
			a.drain()
			return
		}
		calls = a.gather(calls, timer)
		c, err := a.acquire()
		if err == nil {
			// Calls that came while waiting for a connection ride along.
			calls = a.takeQueued(calls)
			a.wg.Add(1)
			go a.send(c, calls)
			continue
		}
		for _, p := range calls {
			p.deliver(err)
		}
	}
}

// gather adds the calls that come within MaxWait of the first, up to
// MaxBatch. A wait under a millisecond yields the processor in a loop: a Go
// timer that short fires about a millisecond late when the process is
// otherwise idle, which would make every lone call a millisecond slower.
// Longer waits sleep on timer.
func (a *Auto) gather(calls []*pending, timer *time.Timer) []*pending {
	if a.maxWait <= 0 {
		return calls
	}
	if a.maxWait < time.Millisecond {
		start := time.Now()
		for len(calls) < a.maxBatch && time.Since(start) < a.maxWait {
			if calls = a.takeQueued(calls); len(calls) < a.maxBatch {
				runtime.Gosched()
			}
		}
		return calls
	}
	timer.Reset(a.maxWait)
	defer timer.Stop()
	for len(calls) < a.maxBatch {
		select {
		case p := <-a.queue:
			calls = append(calls, p)
		case <-timer.C:
			return calls
		case <-a.stop:
			return calls
		}
	}
	return calls
}

func (a *Auto) takeQueued(calls []*pending) []*pending {
	for len(calls) < a.maxBatch {
		select {
		case p := <-a.queue:
			calls = append(calls, p)
		default:
			return calls
		}
	}
	return calls
}

// drain answers the calls still queued at Close.
func (a *Auto) drain() {
	for {
		select {
		case p := <-a.queue:
			p.deliver(ErrClosed)
		default:
			return
		}
	}
}

// acquire returns an idle connection, or dials one while fewer than
// MaxInFlight exist, or waits for one to come back.
func (a *Auto) acquire() (*Client, error) {
	select {
	case c := <-a.idle:
		return c, nil
	default:
	}
	select {
	case c := <-a.idle:
		return c, nil
	case <-a.tokens:
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := a.dial(ctx)
		if err != nil {
			a.tokens <- struct{}{}
			return nil, fmt.Errorf("thriftbatch: dial: %w", err)
		}
		return c, nil
	case <-a.stop:
		return nil, ErrClosed
	}
}

// send executes one batch and hands each call its response.
func (a *Auto) send(c *Client, calls []*pending) {
	defer a.wg.Done()
	requests := make([]*batch.Request, len(calls))
	ctx, cancel := batchContext(calls)
	defer cancel()
	for i, p := range calls {
		requests[i] = &p.req
	}
	// Each caller decodes its own reply later: the responses must outlive
	// this call.
	responses, err := c.execute(ctx, requests, false, false)
	for i, p := range calls {
		if !p.state.CompareAndSwap(waiting, delivering) {
			continue // its caller has gone
		}
		p.answered, p.err = true, err
		if err == nil {
			p.resp = responses[i]
		}
		close(p.done)
	}
	var be *batch.BatchError
	if err != nil && !errors.As(err, &be) {
		// The connection may be out of step with the server: replace it.
		c.Close()
		a.tokens <- struct{}{}
		return
	}
	a.idle <- c
}

// deliver ends a call with err, unless its caller has gone.
func (p *pending) deliver(err error) {
	if p.state.CompareAndSwap(waiting, delivering) {
		p.err = err
		close(p.done)
	}
}

// batchContext returns a context whose deadline is the latest of the calls'
// deadlines, or none when any call has none: each caller enforces its own.
func batchContext(calls []*pending) (context.Context, context.CancelFunc) {
	var latest time.Time
	for _, p := range calls {
		dl, ok := p.ctx.Deadline()
		if !ok {
			return context.WithCancel(context.Background())
		}
		if dl.After(latest) {
			latest = dl
		}
	}
	return context.WithDeadline(context.Background(), latest)
}
