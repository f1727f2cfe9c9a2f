package processor

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/apache/thrift/lib/go/thrift"
	"github.com/rs/zerolog"

	"github.com/thriftbatch/thriftbatch/dispatcher"
	"github.com/thriftbatch/thriftbatch/pool"
)

// Defaults of the options. Each option's doc says what zero means.
const (
	// DefaultMaxCalls is the most calls in one batch (WithMaxCalls).
	DefaultMaxCalls = 10_000
	// DefaultMaxRequestBytes is the most bytes of a batch's method names
	// and arguments, or of its compressedRequests (WithMaxRequestBytes).
	DefaultMaxRequestBytes = 64 << 20
	// DefaultMaxDecompressedBytes is the most bytes compressedRequests may
	// decompress to (WithMaxDecompressedBytes).
	DefaultMaxDecompressedBytes = 64 << 20
	// DefaultMaxResponseBytes stays under TFramedTransport's default frame
	// limit of 16,384,000 bytes, which since Thrift 0.25 refuses to send
	// larger frames too, with room for the message header.
	DefaultMaxResponseBytes = 16_000_000
	// DefaultCompressThreshold is the encoded size from which responses
	// are compressed (WithCompressThreshold).
	DefaultCompressThreshold = 1024
	// DefaultMaxTimeout is the ceiling of a batch's deadline
	// (WithMaxTimeout).
	DefaultMaxTimeout = 60 * time.Second
	// DefaultDisconnectCheck is how often a batch checks its client is
	// still there (WithDisconnectCheck).
	DefaultDisconnectCheck = 5 * time.Millisecond
	// MinDisconnectCheck is the shortest interval WithDisconnectCheck
	// accepts, 0 (off) aside: a check every few nanoseconds would keep a
	// core busy for every batch in flight.
	MinDisconnectCheck = time.Millisecond
)

type config struct {
	log zerolog.Logger

	pool     *pool.Pool
	poolSet  bool          // WithPool given, even with nil
	poolOpts []pool.Option // of the processor's own pool, which pool.New checks

	maxConcurrency int

	maxCalls             int
	maxRequestBytes      int
	maxDecompressedBytes int
	maxResponseBytes     int
	compressThreshold    int
	maxTimeout           time.Duration
	disconnectCheck      time.Duration
	tconf                *thrift.TConfiguration

	allow map[string]bool // nil: every method
	deny  map[string]bool
	hook  dispatcher.Hook
}

func newConfig(opts []Option) (*config, error) {
	c := &config{
		log:                  zerolog.Nop(),
		maxConcurrency:       dispatcher.DefaultMaxConcurrency,
		maxCalls:             DefaultMaxCalls,
		maxRequestBytes:      DefaultMaxRequestBytes,
		maxDecompressedBytes: DefaultMaxDecompressedBytes,
		maxResponseBytes:     DefaultMaxResponseBytes,
		compressThreshold:    DefaultCompressThreshold,
		maxTimeout:           DefaultMaxTimeout,
		disconnectCheck:      DefaultDisconnectCheck,
	}
	for _, o := range opts {
		o(c)
	}
	switch {
	case c.poolSet && c.pool == nil:
		return nil, errors.New("processor: WithPool: nil pool; leave the option out for a pool of the processor's own")
	case c.allow != nil && len(c.allow) == 0:
		return nil, errors.New("processor: WithAllowMethods: no method names; leave the option out to allow every method")
	case c.poolSet && len(c.poolOpts) > 0:
		return nil, errors.New("processor: WithPool cannot be combined with WithPoolSize, WithPoolPreAlloc, WithWorkerExpiry or WithOverloadPolicy, which configure a pool of the processor's own")
	case c.poolSet && c.pool.IsClosed():
		return nil, errors.New("processor: WithPool: the pool is closed")
	case c.maxConcurrency < 0:
		return nil, fmt.Errorf("processor: WithMaxConcurrency: must not be negative, got %d", c.maxConcurrency)
	case c.maxCalls < 0:
		return nil, fmt.Errorf("processor: WithMaxCalls: must not be negative, got %d", c.maxCalls)
	case c.maxRequestBytes < 0:
		return nil, fmt.Errorf("processor: WithMaxRequestBytes: must not be negative, got %d", c.maxRequestBytes)
	case c.maxDecompressedBytes <= 0:
		return nil, fmt.Errorf("processor: WithMaxDecompressedBytes: must be positive, got %d", c.maxDecompressedBytes)
	case c.maxResponseBytes < 0:
		return nil, fmt.Errorf("processor: WithMaxResponseBytes: must not be negative, got %d", c.maxResponseBytes)
	case c.compressThreshold < 0:
		return nil, fmt.Errorf("processor: WithCompressThreshold: must not be negative, got %d", c.compressThreshold)
	case c.maxTimeout < 0:
		return nil, fmt.Errorf("processor: WithMaxTimeout: must not be negative, got %v", c.maxTimeout)
	case c.disconnectCheck < 0 || c.disconnectCheck > 0 && c.disconnectCheck < MinDisconnectCheck:
		return nil, fmt.Errorf("processor: WithDisconnectCheck: interval must be 0 (off) or at least %v, got %v", MinDisconnectCheck, c.disconnectCheck)
	}
	return c, nil
}

// Option configures a Processor.
type Option func(*config)

// WithLogger sets the logger: one line per batch at debug level (calls,
// failed calls, duration, bytes in and out, codec), handler panics at error
// level with their stack, refused batches at warn level. The default is
// zerolog.Nop(): nothing is logged.
func WithLogger(l zerolog.Logger) Option { return func(c *config) { c.log = l } }

// WithPool runs the calls on p, a pool shared with other processors, instead
// of a pool of the processor's own. Close then leaves p open: its owner
// closes it. p must not be nil nor closed already (pool.IsClosed); a pool
// closed later makes the processor's batches answer SHUTTING_DOWN. It cannot
// be combined with WithPoolSize, WithPoolPreAlloc, WithWorkerExpiry or
// WithOverloadPolicy. The default is a pool of the processor's own.
func WithPool(p *pool.Pool) Option {
	return func(c *config) { c.pool, c.poolSet = p, true }
}

// WithPoolSize sets the size of the processor's pool: the most calls that run
// at once across all batches. The default is pool.DefaultSize (1024); it
// must be positive, and at most pool.MaxPreAllocSize (1,048,576) with
// WithPoolPreAlloc(true).
func WithPoolSize(n int) Option { return poolOption(pool.WithSize(n)) }

// WithPoolPreAlloc allocates the pool's worker queue up front (16 bytes a
// worker on a 64-bit platform). The default is false. A pre-allocated pool
// cannot be resized at run time, and holds at most pool.MaxPreAllocSize
// (1,048,576) workers: a larger WithPoolSize makes New return an error.
func WithPoolPreAlloc(b bool) Option { return poolOption(pool.WithPreAlloc(b)) }

// WithWorkerExpiry sets how long an idle worker lives. The default is
// pool.DefaultExpiry (10 s); it must be positive.
func WithWorkerExpiry(d time.Duration) Option { return poolOption(pool.WithExpiry(d)) }

// WithOverloadPolicy sets what a batch does when every worker is busy:
// pool.CallerRuns (the default) runs its calls on the connection's own
// goroutine, pool.Wait waits for a worker within the batch deadline, and
// pool.Reject answers the calls it cannot start with CALL_OVERLOADED. Any
// other value makes New return an error.
func WithOverloadPolicy(p pool.Policy) Option { return poolOption(pool.WithPolicy(p)) }

// poolOption is an option of the processor's own pool. pool.New checks its
// value: New's error then names the pool's option (pool: WithSize, for
// WithPoolSize).
func poolOption(o pool.Option) Option {
	return func(c *config) { c.poolOpts = append(c.poolOpts, o) }
}

// WithMaxConcurrency caps how many calls of one batch run at once, so that one
// large batch cannot starve the batches of other connections. The default is
// dispatcher.DefaultMaxConcurrency (256); 0 means no cap below the pool size.
func WithMaxConcurrency(n int) Option { return func(c *config) { c.maxConcurrency = n } }

// WithMaxCalls sets the most calls one batch may carry; a larger batch fails
// with BatchError TOO_MANY_CALLS before any call runs. The default is
// DefaultMaxCalls (10,000); 0 means no limit.
func WithMaxCalls(n int) Option { return func(c *config) { c.maxCalls = n } }

// WithMaxRequestBytes sets the most bytes of method names and arguments one
// batch may carry, counted after decompression, and the most bytes of
// compressedRequests; a larger batch fails with BatchError TOO_MANY_BYTES.
// The default is DefaultMaxRequestBytes (64 MiB); 0 means no limit. The
// transport's own limits (TConfiguration's MaxMessageSize and MaxFrameSize)
// apply before this one.
func WithMaxRequestBytes(n int) Option { return func(c *config) { c.maxRequestBytes = n } }

// WithTConfiguration gives the processor the thrift.TConfiguration of the
// server's protocols, whose MaxMessageSize (the longest string or binary)
// and MaxContainerSize (the longest list) then bound an executeBatch
// message that the processor reads in memory, as the library's protocol
// bounds it when reading it field by field: over the compact protocol on a
// framed transport, the processor reads the message's frame itself, and
// the protocol's own configuration, which Thrift does not expose, is not
// seen. The default is nil: the library's defaults (100 MB strings, lists
// of any length the frame can hold).
func WithTConfiguration(conf *thrift.TConfiguration) Option {
	return func(c *config) { c.tconf = conf }
}

// WithMaxDecompressedBytes sets the most bytes compressedRequests may
// decompress to; decompression stops there and the batch fails with
// BatchError TOO_MANY_BYTES. The default is DefaultMaxDecompressedBytes
// (64 MiB); it must be positive. A zstd frame declaring a window over 8 MiB,
// or over n when that is smaller, is refused whatever its content, the
// BatchError's message naming the window.
func WithMaxDecompressedBytes(n int) Option { return func(c *config) { c.maxDecompressedBytes = n } }

// WithMaxResponseBytes sets the most bytes of encoded responses (after
// compression) one batch may answer with; a larger answer is replaced by
// BatchError RESPONSE_TOO_LARGE, so the connection is never broken by a
// frame the transport refuses. The default is DefaultMaxResponseBytes
// (16,000,000); 0 means no limit. Keep it below the transport's frame limit.
func WithMaxResponseBytes(n int) Option { return func(c *config) { c.maxResponseBytes = n } }

// WithCompressThreshold sets the size of encoded responses from which the
// processor compresses them, when the client accepts a codec. The default is
// DefaultCompressThreshold (1024 bytes); 0 compresses every non-empty
// response. Compression is skipped when it would not make the payload
// smaller.
func WithCompressThreshold(n int) Option { return func(c *config) { c.compressThreshold = n } }

// WithMaxTimeout sets the ceiling of a batch's deadline: a batch runs for at
// most this long, or for its timeoutMillis when that is shorter, and calls
// not finished by then answer CALL_DEADLINE_EXCEEDED. The default is
// DefaultMaxTimeout (60 s); 0 means no ceiling, and then a batch without
// timeoutMillis has no deadline of its own.
func WithMaxTimeout(d time.Duration) Option { return func(c *config) { c.maxTimeout = d } }

// WithDisconnectCheck sets how often a batch checks that its client is still
// connected, so that its calls' context is canceled, with cause
// ErrClientGone, soon after the client goes away: one timer per batch,
// never per call, which runs a check (a non-blocking look at the socket)
// each interval the batch is still running. It applies while
// thrift.ServerConnectivityCheckInterval is 0; above 0, the batch is checked
// at that interval instead, as the generated code checks each call sent
// alone. (The generated code of each batched call then also starts its own
// watcher, at that cost, but it polls the in-memory transport the call runs
// on, which is always open: only this check sees the client go.) The
// default is DefaultDisconnectCheck (5 ms); 0 turns the check off while the
// library's is off too; any other value below MinDisconnectCheck (1 ms) makes
// New return an error. Turning it off saves that timer but need not make
// batches faster: docs/TUNING.md says by how much it made a fan-out of
// timer-bound calls slower, and why.
func WithDisconnectCheck(d time.Duration) Option { return func(c *config) { c.disconnectCheck = d } }

// WithAllowMethods lets only the named methods into batches (names as the
// wrapped processor knows them, "Catalog:getProduct" under a
// TMultiplexedProcessor); any other call of a batch answers CALL_NOT_ALLOWED
// and does not run. The methods stay callable one by one. The default is
// every method. Giving it more than once adds names. Giving it no names makes
// New return an error (an empty list would refuse every call): leave it out
// to allow every method.
func WithAllowMethods(names ...string) Option {
	return func(c *config) {
		if c.allow == nil {
			c.allow = make(map[string]bool, len(names))
		}
		for _, n := range names {
			c.allow[n] = true
		}
	}
}

// WithDenyMethods keeps the named methods out of batches: such a call answers
// CALL_NOT_ALLOWED and does not run, while the method stays callable one by
// one (for calls with side effects that must not be multiplied). The default
// is none; no names deny none. Deny wins over allow.
func WithDenyMethods(names ...string) Option {
	return func(c *config) {
		if c.deny == nil {
			c.deny = make(map[string]bool, len(names))
		}
		for _, n := range names {
			c.deny[n] = true
		}
	}
}

// WithCallHook sets a hook that sees every call of every batch before any
// of them runs (its method, its index and the batch's context) and may
// reject it: see dispatcher.Hook. Per-call rate limits and quotas belong
// here, so that a batch of 100 calls counts as 100. The allow and deny lists
// are checked first. The default is none.
func WithCallHook(h dispatcher.Hook) Option { return func(c *config) { c.hook = h } }

// callHook combines the allow and deny lists and the user's hook into the
// dispatcher's hook, or returns nil when there is nothing to check.
func (c *config) callHook() dispatcher.Hook {
	if c.allow == nil && c.deny == nil && c.hook == nil {
		return nil
	}
	allow, deny, user := c.allow, c.deny, c.hook
	return func(ctx context.Context, call dispatcher.Call) error {
		switch {
		case deny[call.Method]:
			return errDenied
		case allow != nil && !allow[call.Method]:
			return errNotAllowed
		case user != nil:
			return user(ctx, call)
		}
		return nil
	}
}

var (
	errDenied     = errors.New("the server does not allow this method in a batch")
	errNotAllowed = errors.New("the method is not among those the server allows in a batch")
)
