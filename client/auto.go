package client

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"slices"
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

// dialTimeout bounds each dial an Auto makes after NewAuto's.
const dialTimeout = 10 * time.Second

// ErrClosed is returned by an Auto's calls once Close has begun: new calls,
// and calls queued, waiting for room in the queue, or waiting for a
// connection or a dial that Close ended.
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
// and its result is discarded: a call whose ctx ended before its batch was
// sent is left out of it, one sent already may still run on the server. A
// lone call therefore waits up to MaxWait before it is sent, and pays for the
// batch's envelope (with the defaults, 102 µs against 27 µs for the same call
// sent alone: the chart's one-call point in docs/BENCHMARKS.md), and 100
// concurrent calls cost one round trip instead of 100. A call's result comes
// with its batch's reply: a quick call batched with a slow one returns when
// the slow one does, or at its own deadline.
//
// The batch's goroutine encodes the arguments of its calls when it sends
// them and decodes their replies, so the structs' Write and Read run there:
// arguments that do not encode fail their call when its batch leaves, not
// when Call is made; a caller whose ctx ends while its arguments are being
// encoded returns once they are; and a Write or Read that blocks holds up
// its batch and the batch's connection.
//
// A batch the server refuses as too many calls or bytes (no call of it ran)
// is sent again as two halves, and a refusal for too many calls also lowers
// MaxBatch to half the refused batch's size for the batches after it (so it
// may end up as low as half the server's limit; it is not raised again). An
// Auto therefore never reports TOO_MANY_CALLS or TOO_MANY_BYTES for a batch of
// two calls or more. Any other failure of a batch as a whole
// (a *batch.BatchError, such as one reply making the response too large,
// or a broken connection) fails every call in it.
type Auto struct {
	dial     func(context.Context) (*Client, error)
	kind     wire.Kind
	maxBatch atomic.Int64 // lowered when the server refuses a batch as too many calls
	maxWait  time.Duration

	mu          sync.RWMutex // held for reading while a call enters the queue, for writing by Close
	closeOnce   sync.Once
	queue       chan *pending
	closing     context.Context    // ended by Close; a dial in progress runs under it
	stopClosing context.CancelFunc // ends closing
	stop        <-chan struct{}    // closing's Done: closed once Close has begun
	idle        chan *Client       // connections not carrying a batch
	tokens      chan struct{}      // connections that may still be dialed
	dials       chan dialResult    // the outcome of the dial in progress
	dialing     bool               // a dial is in progress: touched by collect only
	died        chan struct{}      // a connection was closed after a failed batch
	wg          sync.WaitGroup
}

// dialResult is what a dial made for an Auto returned.
type dialResult struct {
	c   *Client
	err error
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
// DefaultMaxBatch (128); it must be positive. Keep it at or below the
// server's limit (processor.WithMaxCalls, 10,000 by default): a batch the
// server refuses as too many calls is sent again in halves, at the cost of
// a round trip each time.
func WithMaxBatch(n int) AutoOption { return func(c *autoConfig) { c.maxBatch = n } }

// WithMaxWait sets how long a batch waits for more calls after its first.
// The default is DefaultMaxWait (50 µs); 0 sends what has gathered as soon
// as a connection is free; a negative wait makes NewAuto return an error. A
// wait under a millisecond is spent yielding the processor, so it costs up
// to that much of one goroutine's time per batch.
func WithMaxWait(d time.Duration) AutoOption { return func(c *autoConfig) { c.maxWait = d } }

// WithMaxInFlight sets the most batches in flight at once, which is also the
// most connections the Auto has open at once (a broken one is replaced). The
// default is DefaultMaxInFlight (4); it must be positive.
func WithMaxInFlight(n int) AutoOption { return func(c *autoConfig) { c.maxInFlight = n } }

// NewAuto dials one connection with dial, to learn the protocol and fail
// early, and returns an Auto that dials up to MaxInFlight connections as the
// load needs them, each dial given a ctx that ends after 10 s or at Close.
// dial must return a new Client on a new connection each time, over the
// protocol of the first, and return once its ctx is done: Close waits for a
// dial in progress. A batch waiting for a connection takes whichever comes first, a
// dialed one or one that a batch has freed; a dial's error fails it only when
// no other connection is open or being dialed. Close the Auto to close its
// connections and stop its goroutines.
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
	if err := dialed(first, err); err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	a := &Auto{
		dial: dial, kind: first.kind, maxWait: cfg.maxWait,
		queue:  make(chan *pending, cfg.maxBatch),
		idle:   make(chan *Client, cfg.maxInFlight),
		tokens: make(chan struct{}, cfg.maxInFlight),
		dials:  make(chan dialResult, 1),
		died:   make(chan struct{}, 1),
	}
	a.maxBatch.Store(int64(cfg.maxBatch))
	a.closing, a.stopClosing = context.WithCancel(context.Background())
	a.stop = a.closing.Done()
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
	args   thrift.TStruct // read by the batch's goroutine under argsMu, unless abandoned
	argsMu sync.Mutex
	req    batch.Request // the call on the wire, allocated with the pending
	result thrift.TStruct
	state  atomic.Uint32 // waiting, delivering or abandoned
	// Set before done is closed: the call's outcome; a *helperPanic when
	// its structs' code panicked on the batch's goroutine, for Call to
	// raise again.
	err  error
	done chan struct{}
}

const (
	waiting uint32 = iota
	delivering
	abandoned
)

// Call implements thrift.TClient: it queues the call for the next batch and
// waits for its result. The batch's goroutine encodes args and decodes the
// reply into result, not the caller's: on a goroutine started for the call,
// that work would first grow its stack, which cost more than the call's
// share of the round trip ("Automatic batching" in docs/BENCHMARKS.md). A
// panic of args' Write or result's Read there is raised again by Call,
// with an error whose message holds the value and the stack where it
// happened, and which unwraps to the value when that is an error.
// The caller may reuse args once Call returns.
func (a *Auto) Call(ctx context.Context, method string, args, result thrift.TStruct) (thrift.ResponseMeta, error) {
	var meta thrift.ResponseMeta
	p := &pending{ctx: ctx, args: args, req: batch.Request{Method: method}, result: result, done: make(chan struct{})}
	if err := a.enqueue(ctx, p); err != nil {
		return meta, err
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		if p.state.CompareAndSwap(waiting, abandoned) {
			// Once the lock is free, the batch's goroutine is not
			// encoding args, and will not: it checks the state under it.
			p.argsMu.Lock()
			p.argsMu.Unlock()
			return meta, ctx.Err()
		}
		<-p.done // being delivered: a moment
	}
	return meta, p.outcome()
}

// outcome returns the call's error once done is closed, or raises again
// the panic its structs' code raised on the batch's goroutine.
func (p *pending) outcome() error {
	if hp, ok := p.err.(*helperPanic); ok {
		panic(hp)
	}
	if p.err != nil && p.ctx.Err() != nil && byDeadline(p.err) {
		// The caller's own deadline passed too: say so as an unbatched
		// call would.
		return p.ctx.Err()
	}
	return p.err
}

// encode appends the call's arguments, encoded with d under the caller's
// ctx, to buf, unless its caller has gone, and reports whether the call is
// still to be sent. An encoding error or panic ends the call and leaves buf
// as it was.
func (p *pending) encode(d *coder, buf []byte) (out []byte, ok bool) {
	p.argsMu.Lock()
	defer p.argsMu.Unlock()
	if p.state.Load() == abandoned {
		return buf, false
	}
	out = buf // what a panic returns, with ok false
	defer func() {
		if v := recover(); v != nil {
			p.deliver(caught(v))
		}
	}()
	out, err := d.encode(p.ctx, buf, p.args)
	if err != nil {
		p.deliver(thrift.NewTProtocolException(err))
		return buf, false
	}
	p.req.Arguments = out[len(buf):len(out):len(out)]
	return out, true
}

// settle decodes the call's response with d and ends the call with its
// outcome, unless its caller has gone.
func (p *pending) settle(d *coder, r *batch.Response, batchErr error) {
	if !p.state.CompareAndSwap(waiting, delivering) {
		return // its caller has gone
	}
	defer close(p.done)
	defer func() {
		if v := recover(); v != nil {
			p.err = caught(v)
		}
	}()
	p.err = settle(d, p.req.Method, r, batchErr, p.result)
}

// caught is what a panic of a call's structs' code on the batch's goroutine
// becomes, for the call's caller to raise again; the batch goes on, since
// the coder that ran the struct has dropped its wire.Call (coder.take).
func caught(v any) *helperPanic { return &helperPanic{value: v, stack: debug.Stack()} }

// byDeadline reports whether err may be the work of a deadline: a call the
// server stopped at the batch's deadline or canceled, a failure of the
// transport, or a context's error. The server's other answers (a declared
// exception, another CallError, a *batch.BatchError, a
// TApplicationException) and a reply that does not decode are the call's
// own and stand.
func byDeadline(err error) bool {
	// A CallError of the deadline or a cancellation Is the context's error
	// (CallError.Is); other CallErrors are neither, nor transport errors.
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return true
	}
	var ex thrift.TException
	return errors.As(err, &ex) && ex.TExceptionType() == thrift.TExceptionTypeTransport
}

// enqueue puts p in the queue, waiting while it is full until ctx ends or
// the Auto closes.
func (a *Auto) enqueue(ctx context.Context, p *pending) error {
	a.mu.RLock()
	defer a.mu.RUnlock()
	if a.stopped() {
		return ErrClosed
	}
	select {
	case a.queue <- p:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-a.stop:
		return ErrClosed
	}
}

// Close stops taking calls (a call waiting for room in the queue returns
// ErrClosed), ends a dial in progress, waits for the batches in flight,
// answers the calls still queued with ErrClosed, and closes the connections.
// A batch in flight ends when the server answers it or when its connection's
// socket timeout passes (thrift.TConfiguration's SocketTimeout): without one,
// a server that never answers keeps Close waiting. No batch leaves once Close
// has begun. A Close after the first waits for the first to finish and
// returns nil.
func (a *Auto) Close() error {
	var err error
	a.closeOnce.Do(func() { err = a.close() })
	return err
}

func (a *Auto) close() error {
	a.stopClosing() // closes stop, and ends a dial in progress
	// Once the lock is free no call is entering the queue: later ones see
	// stop closed.
	a.mu.Lock()
	a.mu.Unlock()
	a.wg.Wait()
	a.drain()
	var errs []error
	for {
		select {
		case c := <-a.idle:
			errs = append(errs, c.Close())
		case r := <-a.dials:
			if r.c != nil {
				errs = append(errs, r.c.Close())
			}
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
			// The batch's capacity is MaxBatch as it stands now: gather
			// and takeQueued fill it up to that.
			calls = append(make([]*pending, 0, a.maxBatch.Load()), p)
		case <-a.stop:
			// Answer the queued calls now rather than once the batches in
			// flight end; close answers those that come later.
			a.drain()
			return
		}
		calls = a.gather(calls, timer)
		c, err := a.acquire()
		if err != nil {
			for _, p := range calls {
				p.deliver(err)
			}
			continue
		}
		// Calls that came while waiting for a connection ride along;
		// send leaves out those whose callers have gone.
		calls = a.takeQueued(calls)
		a.wg.Add(1)
		go a.send(c, calls)
	}
}

// stopped reports whether Close has begun.
func (a *Auto) stopped() bool {
	select {
	case <-a.stop:
		return true
	default:
		return false
	}
}

// gather adds the calls that come within MaxWait of the first, up to
// cap(calls). A wait under a millisecond yields the processor in a loop: a Go
// timer that short fires about a millisecond late when the process is
// otherwise idle, which would make every lone call a millisecond slower.
// Longer waits sleep on timer.
func (a *Auto) gather(calls []*pending, timer *time.Timer) []*pending {
	if a.maxWait <= 0 {
		return calls
	}
	if a.maxWait < time.Millisecond {
		start := time.Now()
		for len(calls) < cap(calls) && time.Since(start) < a.maxWait {
			if calls = a.takeQueued(calls); len(calls) < cap(calls) {
				runtime.Gosched()
			}
		}
		return calls
	}
	timer.Reset(a.maxWait)
	defer timer.Stop()
	for len(calls) < cap(calls) {
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

// takeQueued adds the calls queued now, up to cap(calls).
func (a *Auto) takeQueued(calls []*pending) []*pending {
	for len(calls) < cap(calls) {
		select {
		case p := <-a.queue:
			calls = append(calls, p)
		default:
			return calls
		}
	}
	return calls
}

// drain answers the calls still queued at Close, once nothing else takes
// from the queue.
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

// acquire returns a connection for a batch: an idle one, or, while fewer
// than MaxInFlight are open, one dialed on a goroutine of its own, or one
// that another batch frees first. A dial's error is the batch's only when no
// other connection is open or being dialed; otherwise the batch waits for one
// to come back, and dials again only once a connection has been closed.
func (a *Auto) acquire() (*Client, error) {
	var failed error // the last dial's, while other connections may come back
	for {
		if a.stopped() {
			return nil, ErrClosed
		}
		select {
		case c := <-a.idle:
			return a.unlessStopped(c)
		default:
		}
		tokens := a.tokens
		if a.dialing || failed != nil {
			tokens = nil
		}
		select {
		case c := <-a.idle:
			return a.unlessStopped(c)
		case <-tokens:
			select {
			case <-a.died: // old news: this dial is the retry
			default:
			}
			a.dialing = true
			a.wg.Add(1)
			go a.dialOne()
		case r := <-a.dials:
			a.dialing = false
			if r.err == nil {
				return a.unlessStopped(r.c)
			}
			if a.stopped() {
				return nil, ErrClosed // the dial was ended by Close
			}
			if len(a.tokens) == cap(a.tokens) {
				return nil, r.err // no connection to wait for
			}
			failed = r.err
		case <-a.died:
			failed = nil
		case <-a.stop:
			return nil, ErrClosed
		}
	}
}

// unlessStopped returns c, or, once Close has begun, puts c back for Close
// to close and returns ErrClosed: no batch leaves after Close has begun.
func (a *Auto) unlessStopped(c *Client) (*Client, error) {
	if a.stopped() {
		a.idle <- c
		return nil, ErrClosed
	}
	return c, nil
}

// dialOne dials a connection and hands the outcome to acquire through
// dials, giving the connection's token back first if it failed.
func (a *Auto) dialOne() {
	defer a.wg.Done()
	ctx, cancel := context.WithTimeout(a.closing, dialTimeout)
	defer cancel()
	c, err := a.dial(ctx)
	err = dialed(c, err)
	if err == nil && c.kind != a.kind {
		err = fmt.Errorf("dial returned a Client over the %v protocol, the Auto's first was over %v", c.kind, a.kind)
		c.Close()
	}
	if err != nil {
		c, err = nil, fmt.Errorf("thriftbatch: %w", err)
		a.tokens <- struct{}{}
	}
	a.dials <- dialResult{c, err}
}

// dialed returns what is wrong with what the Auto's dial returned: its
// error, or no Client and no error; nil when c is a Client.
func dialed(c *Client, err error) error {
	switch {
	case err != nil:
		return fmt.Errorf("dial: %w", err)
	case c == nil:
		return errors.New("dial returned neither a Client nor an error")
	}
	return nil
}

// send encodes the calls' arguments, executes them as one batch on c,
// hands each call its response, and gives c back, or closes it when it
// broke.
func (a *Auto) send(c *Client, calls []*pending) {
	defer a.wg.Done()
	d := coder{kind: a.kind}
	var args []byte
	sent := calls[:0]
	for _, p := range calls {
		var ok bool
		if args, ok = p.encode(&d, args); ok {
			sent = append(sent, p)
		}
	}
	d.release()
	if err := a.execute(c, sent); err != nil {
		// The connection may be out of step with the server: replace it.
		c.Close()
		a.tokens <- struct{}{}
		select {
		case a.died <- struct{}{}:
		default: // a batch waiting for a connection is told already
		}
		return
	}
	a.idle <- c
}

// execute sends calls on c as one batch, leaving out those whose callers have
// gone, and hands each call its response; once Close has begun it ends them
// with ErrClosed instead.
// When the server refuses the batch as too many calls or bytes, which it
// does before running any, it sends the calls again as two halves, one
// after the other, and after too many calls lowers MaxBatch to the half.
// It returns the error that may have left c out of step with the server, if
// one did.
func (a *Auto) execute(c *Client, calls []*pending) error {
	calls = slices.DeleteFunc(calls, func(p *pending) bool { return p.state.Load() == abandoned })
	if len(calls) == 0 {
		return nil
	}
	if a.stopped() {
		for _, p := range calls {
			p.deliver(ErrClosed)
		}
		return nil
	}
	requests := make([]*batch.Request, len(calls))
	for i, p := range calls {
		requests[i] = &p.req
	}
	ctx, cancel := batchContext(calls)
	// The replies are decoded before execute returns, as Batch.Execute
	// does: their memory serves c's next batch.
	responses, err := c.execute(ctx, requests, false, true)
	cancel()
	var be *batch.BatchError
	isBatchError := errors.As(err, &be)
	if isBatchError && len(calls) > 1 &&
		(be.Code == batch.BatchErrorCode_TOO_MANY_CALLS || be.Code == batch.BatchErrorCode_TOO_MANY_BYTES) {
		c.doneWithReplies()
		half := len(calls) / 2
		if be.Code == batch.BatchErrorCode_TOO_MANY_CALLS {
			a.lowerMaxBatch(half)
		}
		if err := a.execute(c, calls[:half]); err != nil {
			for _, p := range calls[half:] {
				p.deliver(fmt.Errorf("thriftbatch: connection broken by the first half of a batch sent in halves: %w", err))
			}
			return err
		}
		return a.execute(c, calls[half:])
	}
	settleEach(a.kind, calls, responses, err)
	c.doneWithReplies()
	if err != nil && !isBatchError && !errors.As(err, new(inStep)) {
		return err
	}
	return nil
}

// lowerMaxBatch lowers MaxBatch to n, unless it is at or below n already.
func (a *Auto) lowerMaxBatch(n int) {
	for {
		cur := a.maxBatch.Load()
		if int64(n) >= cur || a.maxBatch.CompareAndSwap(cur, int64(n)) {
			return
		}
	}
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
