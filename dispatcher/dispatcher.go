// Package dispatcher runs one batch: it checks every call's method, fans the
// calls out on a pool.Pool against the processor functions of the wrapped
// server, and collects one Response per Request in request order.
//
// Each call runs in memory through the method's thrift.TProcessorFunction,
// exactly as the server would run it for a message of its own: the arguments
// are read from the Request's bytes and the reply is what the function writes
// after the message header. Middleware installed on those functions (by
// thrift.WrapProcessor or AddToProcessorMap) therefore sees every batched
// call as it sees the same call sent alone.
package dispatcher

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/apache/thrift/lib/go/thrift"
	"github.com/rs/zerolog"

	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/internal/wire"
	"github.com/thriftbatch/thriftbatch/pool"
)

// DefaultMaxConcurrency is the most calls of one batch that run at once
// unless WithMaxConcurrency says otherwise.
const DefaultMaxConcurrency = 256

// MethodName is the name of the batch method in the wire contract.
const MethodName = "executeBatch"

// Dispatcher runs batches on a pool. It is safe for concurrent use.
type Dispatcher struct {
	pool           *pool.Pool
	log            zerolog.Logger
	hook           Hook
	maxConcurrency atomic.Int64
}

type config struct {
	log            zerolog.Logger
	hook           Hook
	maxConcurrency int
}

// Hook sees each call of a batch before any call of the batch runs, in
// request order, on the goroutine that runs the batch. An error rejects that
// call: it answers CALL_NOT_ALLOWED with the error's text and does not run;
// the other calls go on. Use it to count batched calls one by one against
// per-call rate limits and quotas, or to refuse methods in batches. It must
// be safe for concurrent use (batches of different connections call it at
// once) and quick: a batch waits for it call by call.
type Hook func(ctx context.Context, call Call) error

// WithHook sets the hook that sees every call before it runs. The default is
// none.
func WithHook(h Hook) Option { return func(c *config) { c.hook = h } }

// Option configures a Dispatcher.
type Option func(*config)

// WithLogger sets where handler panics are logged, at error level with the
// stack. The default is zerolog.Nop(): nothing is logged.
func WithLogger(l zerolog.Logger) Option { return func(c *config) { c.log = l } }

// WithMaxConcurrency caps how many calls of one batch run at once, so that one
// large batch cannot take every worker of the pool. The default is
// DefaultMaxConcurrency (256); 0 means no cap below the pool's size. It must
// not be negative.
func WithMaxConcurrency(n int) Option { return func(c *config) { c.maxConcurrency = n } }

// New returns a Dispatcher that runs calls on p. It returns an error for an
// invalid option.
func New(p *pool.Pool, opts ...Option) (*Dispatcher, error) {
	if p == nil {
		return nil, errors.New("dispatcher: nil pool")
	}
	cfg := config{log: zerolog.Nop(), maxConcurrency: DefaultMaxConcurrency}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.maxConcurrency < 0 {
		return nil, fmt.Errorf("dispatcher: max concurrency must not be negative, got %d", cfg.maxConcurrency)
	}
	d := &Dispatcher{pool: p, log: cfg.log, hook: cfg.hook}
	d.maxConcurrency.Store(int64(cfg.maxConcurrency))
	return d, nil
}

// MaxConcurrency returns the current cap on the calls of one batch running at
// once; 0 means no cap below the pool's size.
func (d *Dispatcher) MaxConcurrency() int { return int(d.maxConcurrency.Load()) }

// SetMaxConcurrency changes the cap on a running Dispatcher: batches that
// start afterwards use it, batches in flight keep theirs. 0 means no cap
// below the pool's size. It returns an error for a negative n.
func (d *Dispatcher) SetMaxConcurrency(n int) error {
	if n < 0 {
		return fmt.Errorf("dispatcher: max concurrency must not be negative, got %d", n)
	}
	d.maxConcurrency.Store(int64(n))
	return nil
}

// Batch is one batch to run.
type Batch struct {
	// Requests are the calls, answered in this order.
	Requests []*batch.Request
	// Functions maps each method name to the function that serves it,
	// usually the wrapped processor's ProcessorMap().
	Functions map[string]thrift.TProcessorFunction
	// Protocol is the protocol the batch arrived on. Arguments and replies
	// are encoded with its kind: binary, compact or JSON.
	Protocol thrift.TProtocol
	// Sequential runs the calls one at a time in request order.
	Sequential bool
}

// IsBatchMethod reports whether a message or call name names executeBatch,
// alone or under a service name of a TMultiplexedProcessor.
func IsBatchMethod(name string) bool {
	return name == MethodName || strings.HasSuffix(name, thrift.MULTIPLEXED_SEPARATOR+MethodName)
}

// Run runs the batch and returns one Response per Request, in order. Every
// method name is checked before any call runs: an unknown method answers its
// call with UNKNOWN_METHOD and runs nothing, and a call of executeBatch
// itself fails the whole batch with a *batch.BatchError (NESTED_BATCH). Run
// also returns a *batch.BatchError (SHUTTING_DOWN) once the pool is closing,
// and an error when the batch's protocol is not binary, compact or JSON.
//
// Calls still running when ctx is done answer with the CALL_DEADLINE_EXCEEDED
// or CALL_CANCELED error, their handlers see ctx done, and their late
// results are discarded. Run then returns at once, unless the pool is
// running the batch's calls on Run's own goroutine (its CallerRuns policy,
// when no worker was free): then it returns once the call in hand does. A
// handler panic answers its call with INTERNAL_ERROR, and its value and
// stack go to the log only.
//
// It is RunHeld with each reply copied out, all of a batch's replies into
// one buffer, so that the responses are the caller's to keep. Cost beyond
// the processor functions' own: go test -bench BatchOfEchoes ./dispatcher.
func (d *Dispatcher) Run(ctx context.Context, b Batch) ([]*batch.Response, error) {
	held, release, err := d.RunHeld(ctx, b)
	if err != nil {
		return nil, err
	}
	defer release()
	size := 0
	for _, r := range held {
		size += len(r.Reply)
	}
	replies := make([]byte, 0, size)
	kept := make([]batch.Response, len(held))
	out := make([]*batch.Response, len(held))
	for i, r := range held {
		kept[i] = *r
		if r.Reply != nil {
			start := len(replies)
			replies = append(replies, r.Reply...)
			kept[i].Reply = replies[start:len(replies):len(replies)]
		}
		out[i] = &kept[i]
	}
	return out, nil
}

// RunHeld is Run without the copy of each reply: a reply is the buffer the
// call's reply was written into, held until release is called, which
// returns those buffers for other calls to use, and with them the memory
// of the batch's responses. Use the responses only before calling release,
// and call it once. It saves a copy of every reply and, between batches, the
// memory of their responses (go test -bench HundredGetProduct ./bench).
//
// release reports whether every call of the batch had returned when
// RunHeld did: then nothing of the batch reads its Requests any more, and the
// caller may reuse their memory too. It is false when a call was abandoned
// at the deadline and may still be reading its arguments, and on any call
// of release after the first, which does nothing.
func (d *Dispatcher) RunHeld(ctx context.Context, b Batch) (responses []*batch.Response, release func() (returned bool), err error) {
	responses, s, err := d.run(ctx, b)
	if err != nil {
		return nil, func() bool { return true }, err
	}
	use := s.use
	return responses, func() bool { return s.release(use) }, nil
}

// scratch is the memory of one batch that RunHeld's release hands to a
// later batch, so that a server running batch after batch allocates it once:
// each call's function, Response and response pointer, and the Call each
// call runs in, whose buffer holds its reply until release. A call's context
// is not in it: a handler may keep its context past its return, and a
// context must never change. The memory of a batch with a call abandoned at
// the deadline is never reused, since that call may still be using its Call
// (its late Response is dropped by the pool, see pool.RunInto).
type scratch struct {
	fns   []thrift.TProcessorFunction
	resps []batch.Response
	out   []*batch.Response
	// calls[i] is the Call that call i runs in, kept for the same index
	// of the next batch; nil when it cannot be reused.
	calls     []*wire.Call
	abandoned bool   // a call was still running when the batch ended
	use       uint64 // counts the releases, so that a second one of a use is told from the first
}

// scratches holds the scratch of finished batches of up to maxScratchCalls
// calls; a larger batch's memory is left to the collector.
var scratches sync.Pool

const maxScratchCalls = 1024

// getScratch returns a scratch for a batch of n calls, zeroed but for the
// Calls of earlier batches, which are ready for another Run.
func getScratch(n int) *scratch {
	s, _ := scratches.Get().(*scratch)
	if s == nil {
		s = new(scratch)
	}
	if cap(s.resps) < n {
		s.fns = make([]thrift.TProcessorFunction, n)
		s.resps = make([]batch.Response, n)
		s.out = make([]*batch.Response, n)
	}
	if len(s.calls) < n {
		s.calls = append(s.calls, make([]*wire.Call, n-len(s.calls))...)
	}
	// Calls beyond this batch go back to wire's pool rather than wait,
	// with their buffers, for a batch as large as the one that made them.
	for i, c := range s.calls[n:] {
		if c != nil {
			wire.Put(c)
			s.calls[n+i] = nil
		}
	}
	s.calls = s.calls[:n]
	s.fns, s.resps, s.out = s.fns[:n], s.resps[:n], s.out[:n]
	return s
}

// release ends use, the use of s that started when s.use held it: it
// makes the batch's Calls ready for the next batch's calls and, unless a
// call was abandoned, returns s to scratches, cleared so that it keeps
// nothing of this batch reachable. It reports whether no call was
// abandoned; for a use already ended, it does nothing and reports false.
func (s *scratch) release(use uint64) bool {
	if s.use != use {
		return false
	}
	s.use++
	if s.abandoned {
		return false
	}
	if cap(s.resps) > maxScratchCalls {
		// Too large to keep whole: its Calls go back to wire's pool.
		for _, c := range s.calls[:len(s.out)] {
			if c != nil {
				wire.Put(c)
			}
		}
		return true
	}
	for i, c := range s.calls[:len(s.out)] {
		if c != nil && !c.Reset() {
			s.calls[i] = nil
		}
	}
	clear(s.fns)
	clear(s.resps)
	clear(s.out)
	scratches.Put(s)
	return true
}

// run runs the batch in a scratch, whose Calls hold the replies until its
// release.
func (d *Dispatcher) run(ctx context.Context, b Batch) ([]*batch.Response, *scratch, error) {
	kind, err := wire.KindOf(b.Protocol)
	if err != nil {
		return nil, nil, err
	}
	n := len(b.Requests)
	s := getScratch(n)
	r := &run{d: d, kind: kind, reqs: b.Requests, s: s, ctxs: make([]callCtx, n)}
	for i, req := range b.Requests {
		if req == nil {
			continue // answered as an unknown method ""
		}
		if IsBatchMethod(req.Method) {
			s.release(s.use)
			return nil, nil, &batch.BatchError{
				Code:    batch.BatchErrorCode_NESTED_BATCH,
				Message: fmt.Sprintf("request %d calls %s: executeBatch cannot be called inside a batch", i, req.Method),
			}
		}
		s.fns[i] = b.Functions[req.Method]
	}
	if d.hook != nil {
		for i, req := range b.Requests {
			if req == nil || s.fns[i] == nil {
				continue // unknown methods answer UNKNOWN_METHOD, unhooked
			}
			if reason, ok := d.runHook(ctx, i, req.Method); !ok {
				if r.rejected == nil {
					r.rejected = make(map[int]string)
				}
				r.rejected[i] = reason
			}
		}
	}
	limit := int(d.maxConcurrency.Load())
	if b.Sequential {
		limit = 1
	}
	// The pool writes a call's Response into the scratch only if the call
	// returned before the batch ended: an abandoned call's late reply is
	// dropped there.
	res, err := pool.RunInto(ctx, d.pool, s.resps, limit, func(i int) batch.Response { return r.answer(ctx, i) })
	if errors.Is(err, pool.ErrClosed) {
		s.release(s.use)
		return nil, nil, &batch.BatchError{Code: batch.BatchErrorCode_SHUTTING_DOWN, Message: "the server is shutting down and takes no new batches"}
	}
	for i := range s.out {
		v := &s.resps[i]
		switch st := res.Status(i); st {
		case pool.StatusAbandoned, pool.StatusCanceled:
			*v = failed(contextError(ctx, i))
			if st == pool.StatusAbandoned {
				// The call may still be using its Call: the batch's
				// memory is not reused.
				s.abandoned = true
			}
		case pool.StatusOverloaded:
			*v = failed(batch.CALL_OVERLOADED, fmt.Sprintf("call %d not run: no worker was free and the server refuses calls when overloaded", i))
		case pool.StatusPanicked:
			*v = failed(thrift.INTERNAL_ERROR, "internal error processing "+method(b.Requests[i]))
			s.calls[i] = nil // its Call may be mid-struct
		}
		if req := b.Requests[i]; req != nil {
			v.ID = req.ID
		}
		s.out[i] = v
	}
	return s.out, s, nil
}

// runHook asks the hook about call i and reports the reason it gave, and
// false, when it rejected the call. A panicking hook rejects the call: like a
// handler's panic, it must not take the server down, and its value and stack
// go to the log only.
func (d *Dispatcher) runHook(ctx context.Context, i int, method string) (reason string, ok bool) {
	defer func() {
		if v := recover(); v != nil {
			d.log.Error().Str("method", method).Int("index", i).
				Str("panic", fmt.Sprint(v)).Bytes("stack", debug.Stack()).
				Msg("thriftbatch: call hook panicked")
			reason, ok = "the server's call hook failed", false
		}
	}()
	if err := d.hook(ctx, Call{Index: i, Method: method}); err != nil {
		return err.Error(), false
	}
	return "", true
}

// Call describes the call of a batch a handler is serving.
type Call struct {
	// Index is the call's position in the batch, from 0.
	Index int
	// Method is the method name the call was made with.
	Method string
}

type callKey struct{}

// CallFromContext returns the batch call that ctx belongs to, and false when
// ctx is not a batched call's.
func CallFromContext(ctx context.Context) (Call, bool) {
	c, ok := ctx.Value(callKey{}).(*callCtx)
	if !ok {
		return Call{}, false
	}
	return Call{Index: c.index, Method: c.method}, true
}

// callCtx is the context of one call: the batch's context plus the call's
// place in it. The batch allocates them all at once, so a call costs no
// context allocation.
type callCtx struct {
	context.Context
	index  int
	method string
}

func (c *callCtx) Value(key any) any {
	if key == (callKey{}) {
		return c
	}
	return c.Context.Value(key)
}

// run is the state of one Run.
type run struct {
	d        *Dispatcher
	kind     wire.Kind
	reqs     []*batch.Request
	s        *scratch // call i runs s.fns[i] in s.calls[i], which keeps its reply
	ctxs     []callCtx
	rejected map[int]string // calls the hook refused, with its reason
}

// answer runs call i and returns its Response. The call runs in calls[i],
// a Call of an earlier batch when there is one, and its reply stays in that
// Call's buffer; a Call that must not run again (after a panic or a decode
// error, its protocol may be mid-struct) is dropped from calls.
func (r *run) answer(ctx context.Context, i int) (resp batch.Response) {
	req, fn := r.reqs[i], r.s.fns[i]
	if fn == nil {
		return failed(thrift.UNKNOWN_METHOD, fmt.Sprintf("unknown method %q", method(req)))
	}
	if reason, ok := r.rejected[i]; ok {
		return failed(batch.CALL_NOT_ALLOWED, fmt.Sprintf("%s not allowed: %s", req.Method, reason))
	}
	cctx := &r.ctxs[i]
	*cctx = callCtx{Context: ctx, index: i, method: req.Method}
	c, reusable := r.call(i), false
	defer func() {
		// A handler's panic must not take the server down, nor the other
		// calls of its batch: it becomes this call's error. The value and
		// stack may hold internal details, so they go to the log only.
		if v := recover(); v != nil {
			r.d.log.Error().Str("method", req.Method).Int("index", i).
				Str("panic", fmt.Sprint(v)).Bytes("stack", debug.Stack()).
				Msg("thriftbatch: handler panicked")
			resp = failed(thrift.INTERNAL_ERROR, "internal error processing "+req.Method)
		}
		if !reusable {
			r.s.calls[i] = nil
		}
	}()
	out, err := c.Run(cctx, fn, req.Method, req.Arguments)
	switch out.Type {
	case thrift.REPLY:
		// Declared exceptions come back here too, inside the result struct.
		reusable = true
		resp.Reply = out.Body[:len(out.Body):len(out.Body)]
	case thrift.EXCEPTION:
		if ctx.Err() != nil {
			// The handler gave up because the batch did: its exception
			// says only that, and the batch's error says it better.
			return failed(contextError(ctx, i))
		}
		ex, derr := c.DecodeException(ctx, out.Body)
		if derr != nil {
			return failed(thrift.INTERNAL_ERROR, fmt.Sprintf("%s wrote an exception that does not decode: %v", req.Method, derr))
		}
		reusable = ex.TypeId() != thrift.PROTOCOL_ERROR
		return failed(ex.TypeId(), ex.Error())
	default:
		// Nothing written: a oneway method, or a call that gave up.
		if err == nil {
			reusable = true
			resp.Reply = wire.EmptyStruct(r.kind)
			return resp
		}
		if ctx.Err() != nil {
			return failed(contextError(ctx, i))
		}
		if errors.As(err, new(thrift.TProtocolException)) || errors.As(err, new(thrift.TTransportException)) {
			// A oneway method's arguments that do not decode (in
			// memory, a transport error means input that ends too soon):
			// its generated code returns the error without writing one.
			return failed(thrift.PROTOCOL_ERROR, fmt.Sprintf("%s: arguments do not decode: %v", req.Method, err))
		}
		r.d.log.Error().Str("method", req.Method).Int("index", i).Err(err).Msg("thriftbatch: call failed without a reply")
		return failed(thrift.INTERNAL_ERROR, "internal error processing "+req.Method)
	}
	return resp
}

// call returns the Call that call i runs in: calls[i] when it is one of the
// batch's kind, otherwise one from wire's pool, kept as calls[i].
func (r *run) call(i int) *wire.Call {
	c := r.s.calls[i]
	if c != nil && c.Kind() == r.kind {
		return c
	}
	if c != nil {
		wire.Put(c) // an earlier batch's, of another kind
	}
	c = wire.Get(r.kind)
	r.s.calls[i] = c
	return c
}

func method(req *batch.Request) string {
	if req == nil {
		return ""
	}
	return req.Method
}

func failed(code int32, msg string) batch.Response {
	return batch.Response{Error: &batch.CallError{Type: code, Message: msg}}
}

// contextError maps the batch context's end to the CallError of call i.
func contextError(ctx context.Context, i int) (int32, string) {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return batch.CALL_DEADLINE_EXCEEDED, fmt.Sprintf("call %d did not finish before the batch deadline", i)
	}
	return batch.CALL_CANCELED, fmt.Sprintf("call %d canceled: %v", i, context.Cause(ctx))
}
