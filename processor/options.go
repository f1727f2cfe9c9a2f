package processor

import (
	"fmt"
	"time"

	"github.com/rs/zerolog"

	"github.com/thriftbatch/thriftbatch/dispatcher"
	"github.com/thriftbatch/thriftbatch/pool"
)

// Defaults of the options. Each option's doc says what zero means.
const (
	DefaultMaxCalls             = 10_000
	DefaultMaxRequestBytes      = 64 << 20
	DefaultMaxDecompressedBytes = 64 << 20
	// DefaultMaxResponseBytes stays under TFramedTransport's default frame
	// limit of 16,384,000 bytes, which since Thrift 0.25 refuses to send
	// larger frames too, with room for the message header.
	DefaultMaxResponseBytes  = 16_000_000
	DefaultCompressThreshold = 1024
	DefaultMaxTimeout        = 60 * time.Second
)

type config struct {
	log zerolog.Logger

	pool       *pool.Pool
	poolOpts   []pool.Option
	ownPoolSet bool

	maxConcurrency int

	maxCalls             int
	maxRequestBytes      int
	maxDecompressedBytes int
	maxResponseBytes     int
	compressThreshold    int
	maxTimeout           time.Duration
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
	}
	for _, o := range opts {
		o(c)
	}
	switch {
	case c.pool != nil && c.ownPoolSet:
		return nil, fmt.Errorf("processor: WithPool cannot be combined with the options that configure a pool of the processor's own")
	case c.maxConcurrency < 0:
		return nil, fmt.Errorf("processor: max concurrency must not be negative, got %d", c.maxConcurrency)
	case c.maxCalls < 0:
		return nil, fmt.Errorf("processor: max calls must not be negative, got %d", c.maxCalls)
	case c.maxRequestBytes < 0:
		return nil, fmt.Errorf("processor: max request bytes must not be negative, got %d", c.maxRequestBytes)
	case c.maxDecompressedBytes <= 0:
		return nil, fmt.Errorf("processor: max decompressed bytes must be positive, got %d", c.maxDecompressedBytes)
	case c.maxResponseBytes < 0:
		return nil, fmt.Errorf("processor: max response bytes must not be negative, got %d", c.maxResponseBytes)
	case c.compressThreshold < 0:
		return nil, fmt.Errorf("processor: compress threshold must not be negative, got %d", c.compressThreshold)
	case c.maxTimeout < 0:
		return nil, fmt.Errorf("processor: max timeout must not be negative, got %v", c.maxTimeout)
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
// closes it. It cannot be combined with WithPoolSize, WithPoolPreAlloc,
// WithWorkerExpiry or WithOverloadPolicy. The default is a pool of the
// processor's own.
func WithPool(p *pool.Pool) Option { return func(c *config) { c.pool = p } }

// WithPoolSize sets the size of the processor's pool: the most calls that run
// at once across all batches. The default is pool.DefaultSize (1024); it
// must be positive.
func WithPoolSize(n int) Option { return poolOption(pool.WithSize(n)) }

// WithPoolPreAlloc allocates the pool's worker queue up front. The default is
// false. A pre-allocated pool cannot be resized at run time.
func WithPoolPreAlloc(b bool) Option { return poolOption(pool.WithPreAlloc(b)) }

// WithWorkerExpiry sets how long an idle worker lives. The default is
// pool.DefaultExpiry (10 s); it must be positive.
func WithWorkerExpiry(d time.Duration) Option { return poolOption(pool.WithExpiry(d)) }

// WithOverloadPolicy sets what a batch does when every worker is busy:
// pool.CallerRuns (the default) runs its calls on the connection's own
// goroutine, pool.Wait waits for a worker within the batch deadline, and
// pool.Reject answers the calls it cannot start with CALL_OVERLOADED.
func WithOverloadPolicy(p pool.Policy) Option { return poolOption(pool.WithPolicy(p)) }

func poolOption(o pool.Option) Option {
	return func(c *config) {
		c.poolOpts = append(c.poolOpts, o)
		c.ownPoolSet = true
	}
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

// WithMaxDecompressedBytes sets the most bytes compressedRequests may
// decompress to; decompression stops there and the batch fails with
// BatchError TOO_MANY_BYTES. The default is DefaultMaxDecompressedBytes
// (64 MiB); it must be positive.
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
