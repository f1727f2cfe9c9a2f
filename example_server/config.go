package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/thriftbatch/thriftbatch/dispatcher"
	"github.com/thriftbatch/thriftbatch/pool"
	"github.com/thriftbatch/thriftbatch/processor"
)

// The values the choice flags accept.
var (
	protocols  = []string{"binary", "compact", "json"}
	transports = []string{"buffered", "framed", "zlib", "header", "http"}
	overloads  = []string{pool.CallerRuns.String(), pool.Wait.String(), pool.Reject.String()}
	logLevels  = []string{
		zerolog.TraceLevel.String(), zerolog.DebugLevel.String(), zerolog.InfoLevel.String(),
		zerolog.WarnLevel.String(), zerolog.ErrorLevel.String(), zerolog.FatalLevel.String(),
		zerolog.PanicLevel.String(), zerolog.Disabled.String(),
	}
)

// maxProducts bounds -products: the catalog is built in memory at start,
// about 400 bytes and 2.5 µs a product (4 GB and 25 s at this bound).
const maxProducts = 10_000_000

// config is the command line, checked. policy and level are set by
// validate from overload and logLevel.
type config struct {
	addr      string
	addrSet   bool // -addr was given: the demo listens there, not on a free port
	protocol  string
	transport string
	products  int
	latency   time.Duration

	poolSize          int
	poolPrealloc      bool
	workerExpiry      time.Duration
	maxConcurrency    int
	overload          string
	policy            pool.Policy
	maxCalls          int
	maxTimeout        time.Duration
	compressThreshold int
	statsInterval     time.Duration
	// drain bounds each step of shutdown: drainTimeout, which no flag
	// sets; tests shorten it.
	drain time.Duration

	logLevel string
	level    zerolog.Level

	demo      bool
	demoCalls int
	demoBatch int
}

// parseConfig parses the command line. Errors and usage go to stderr; the
// error returned is flag.ErrHelp for -h, and otherwise means exit status 2.
func parseConfig(args []string, stderr io.Writer) (*config, error) {
	c := &config{
		addr:              "127.0.0.1:9090",
		protocol:          "compact",
		transport:         "framed",
		products:          10_000,
		poolSize:          pool.DefaultSize,
		workerExpiry:      pool.DefaultExpiry,
		maxConcurrency:    dispatcher.DefaultMaxConcurrency,
		overload:          pool.CallerRuns.String(),
		maxCalls:          processor.DefaultMaxCalls,
		maxTimeout:        processor.DefaultMaxTimeout,
		compressThreshold: processor.DefaultCompressThreshold,
		drain:             drainTimeout,
		logLevel:          zerolog.InfoLevel.String(),
		demoCalls:         100,
		demoBatch:         1000,
	}
	fs := c.flagSet(stderr)
	if err := fs.Parse(args); err != nil {
		return nil, err // the flag package has reported it
	}
	err := c.validate()
	if err == nil && fs.NArg() > 0 {
		err = fmt.Errorf("unexpected argument %q: example_server takes flags only", fs.Arg(0))
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		fs.Usage()
		return nil, err
	}
	fs.Visit(func(f *flag.Flag) { c.addrSet = c.addrSet || f.Name == "addr" })
	return c, nil
}

// flagSet returns the flags, bound to c's fields, whose values are the
// defaults.
func (c *config) flagSet(output io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("example_server", flag.ContinueOnError)
	fs.SetOutput(output)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), `Usage: example_server [flags]

Serves the product catalog (example_server/catalog.thrift) behind thriftbatch
until interrupted. With -demo, starts it in-process instead and compares
one-by-one calls, an explicit batch, automatic batching and the bulk method.

On Ctrl-C or SIGTERM the server stops taking connections and gives the
requests in flight up to %[1]v to finish, then closes the connections left
(over the Thrift transports a client that stays connected, even idle, makes
stopping take up to %[1]v), and gives batches still running up to %[1]v more:
stopping takes %[2]v at most. Requests cut off are counted in a warn line; the
exit status is 0 all the same. A second Ctrl-C ends the process at once.
Invalid flag values exit with status 2, other failures with status 1
(printed whatever -log-level says).

Flags:
`, drainTimeout, 2*drainTimeout)
		fs.PrintDefaults()
	}
	fs.StringVar(&c.addr, "addr", c.addr, "`address` to listen on; with -demo, a free loopback port unless given")
	fs.StringVar(&c.protocol, "protocol", c.protocol, "Thrift protocol: "+oneOf(protocols))
	fs.StringVar(&c.transport, "transport", c.transport, "transport: "+oneOf(transports)+
		"\n(zlib: zlib level 6 over framed; header: THeader with -protocol inside; http: POST to /)")
	fs.IntVar(&c.products, "products", c.products, "products in the catalog at start, ids 1 to `n`, at most "+thousands(maxProducts)+
		"\n(built in memory at start, about 400 bytes and 2.5 µs each)")
	fs.DurationVar(&c.latency, "latency", c.latency, "simulated backend latency of every handler call, e.g. 1ms")
	fs.IntVar(&c.poolSize, "pool-size", c.poolSize, "most batched calls running at once across all batches; at most "+thousands(pool.MaxPreAllocSize)+" with -pool-prealloc")
	fs.BoolVar(&c.poolPrealloc, "pool-prealloc", c.poolPrealloc, "allocate the pool's worker queue for -pool-size up front; the pool cannot be resized then")
	fs.DurationVar(&c.workerExpiry, "worker-expiry", c.workerExpiry, "how long an idle worker lives before its goroutine exits")
	fs.IntVar(&c.maxConcurrency, "max-concurrency", c.maxConcurrency, "most calls of one batch running at once; 0: no cap below -pool-size")
	fs.StringVar(&c.overload, "overload", c.overload, "when every worker is busy: "+oneOf(overloads))
	fs.IntVar(&c.maxCalls, "max-calls", c.maxCalls, "most calls in one batch; 0: no limit")
	fs.DurationVar(&c.maxTimeout, "max-timeout", c.maxTimeout, "ceiling of a batch's deadline; 0: none")
	fs.IntVar(&c.compressThreshold, "compress-threshold", c.compressThreshold, "compress batch responses from this many `bytes`, when the client accepts a codec")
	fs.DurationVar(&c.statsInterval, "stats-interval", c.statsInterval, "log the pool's and the batches' figures at info level every `interval`, e.g. 10s; 0: never")
	fs.StringVar(&c.logLevel, "log-level", c.logLevel, "log level of the JSON lines on stderr, the Thrift library's own included: "+oneOf(logLevels))
	fs.BoolVar(&c.demo, "demo", c.demo, "start the server in-process, run the demo client against it and print what it measured")
	fs.IntVar(&c.demoCalls, "demo-calls", c.demoCalls, "`n` getProduct calls in each row of the demo's timings")
	fs.IntVar(&c.demoBatch, "demo-batch", c.demoBatch, "`n` getProduct calls in the batch whose bytes the demo counts")
	return fs
}

// validate checks the values the flag package cannot, and sets policy and
// level. It returns a *flagError naming the first bad flag.
func (c *config) validate() error {
	policy, policyErr := pool.ParsePolicy(c.overload)
	level, levelErr := parseLevel(c.logLevel)
	checks := []struct {
		flag   string
		value  any
		ok     bool
		reason string
	}{
		{"protocol", c.protocol, slices.Contains(protocols, c.protocol), "want " + oneOf(protocols)},
		{"transport", c.transport, slices.Contains(transports, c.transport), "want " + oneOf(transports)},
		{"products", c.products, c.products >= 1 && c.products <= maxProducts, "want 1 to " + thousands(maxProducts)},
		{"latency", c.latency, c.latency >= 0, "want 0 or more"},
		{"pool-size", c.poolSize, c.poolSize >= 1, "want at least 1"},
		{"pool-size", c.poolSize, !c.poolPrealloc || c.poolSize <= pool.MaxPreAllocSize,
			"want at most " + thousands(pool.MaxPreAllocSize) + " (pool.MaxPreAllocSize) with -pool-prealloc"},
		{"worker-expiry", c.workerExpiry, c.workerExpiry > 0, "want more than 0"},
		{"max-concurrency", c.maxConcurrency, c.maxConcurrency >= 0, "want 0 (no cap) or more"},
		{"overload", c.overload, policyErr == nil, "want " + oneOf(overloads)},
		{"max-calls", c.maxCalls, c.maxCalls >= 0, "want 0 (no limit) or more"},
		{"max-timeout", c.maxTimeout, c.maxTimeout >= 0, "want 0 (none) or more"},
		{"compress-threshold", c.compressThreshold, c.compressThreshold >= 0, "want 0 or more"},
		{"stats-interval", c.statsInterval, c.statsInterval >= 0, "want 0 (never) or more"},
		{"log-level", c.logLevel, levelErr == nil, "want " + oneOf(logLevels)},
		{"demo-calls", c.demoCalls, c.demoCalls >= 1, "want at least 1"},
		{"demo-batch", c.demoBatch, c.demoBatch >= 1, "want at least 1"},
		{"protocol", c.protocol, c.transport != "header" || c.protocol != "json", "THeader (-transport header) carries binary or compact only"},
	}
	for _, ch := range checks {
		if !ch.ok {
			return &flagError{Flag: ch.flag, Value: fmt.Sprint(ch.value), Reason: ch.reason}
		}
	}
	c.policy, c.level = policy, level
	return nil
}

// parseLevel returns the zerolog level named s, one of logLevels.
func parseLevel(s string) (zerolog.Level, error) {
	if !slices.Contains(logLevels, s) {
		return zerolog.NoLevel, errors.New("unknown log level " + s)
	}
	return zerolog.ParseLevel(s)
}

// flagError reports a flag value that parses but is not allowed. Its message
// reads like the flag package's own.
type flagError struct {
	Flag   string // the flag's name, without the dash
	Value  string
	Reason string // what the flag accepts
}

func (e *flagError) Error() string {
	return fmt.Sprintf("invalid value %q for flag -%s: %s", e.Value, e.Flag, e.Reason)
}

// oneOf lists names as "a, b or c".
func oneOf(names []string) string {
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}
