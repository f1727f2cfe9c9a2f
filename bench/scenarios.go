package main

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/thriftbatch/thriftbatch/client"
	"github.com/thriftbatch/thriftbatch/example_server/store"
	"github.com/thriftbatch/thriftbatch/internal/latency"
	"github.com/thriftbatch/thriftbatch/pool"
	"github.com/thriftbatch/thriftbatch/processor"
)

// settings says under which thrift.ServerConnectivityCheckInterval settings
// a scenario runs.
type settings int

const (
	bothChecks   settings = iota // the library default, then 0
	defaultCheck                 // the library default only
	serverless                   // no server involved: once, with the default
)

// scenario is one comparison of the run.
type scenario struct {
	name   string // short, for -run
	title  string
	checks settings
	run    func(ctx context.Context, e *env) ([]figure, error)
	notes  []string // printed under its table
}

// scenarios is the run, in the order of the report. Those under both
// settings run first with the check off, then with the library default.
var scenarios = []scenario{
	{
		name:  "sequential",
		title: "100 getProduct calls: one by one (generated client) vs one explicit batch, one connection each",
		run:   batchVsSequential,
	},
	{
		name:  "bulk",
		title: "one batch of 100 getProduct vs the hand-written getProducts of the same 100 ids",
		run:   batchVsBulk,
	},
	{
		name:  "parallel",
		title: "100 goroutines on 100 open connections, one call each, vs one batch of 100",
		run:   batchVsParallelConns,
	},
	{
		name:  "auto",
		title: "100 calls one by one vs 100 goroutines through client.NewAuto (defaults: 128 calls, 50 µs, 4 connections)",
		run:   autobatchVsSequential,
	},
	{
		name:  "fanout",
		title: "one batch of 256 calls with 5 ms of simulated latency each (a second server, processor defaults), without, as one getProducts that overlaps the waits (a third server), and with each wait on a Go timer (a fourth)",
		run:   fanout,
	},
	{
		name:  "throughput",
		title: "16 goroutines, a connection each: batches of 100 vs calls one by one, in alternating windows",
		run:   throughput,
	},
	{
		name:  "percall",
		title: "time per call: one batch of 10,000 vs 100 batches of 100 in a row (same 10,000 calls)",
		run:   perCallCost,
	},
	{
		name:  "allocs",
		title: "heap allocations per call (runtime.MemStats.Mallocs), client and server together",
		run:   allocations,
	},
	{
		name:   "codecs",
		title:  "compressing a BatchResponse of 1,000 getProduct replies (compact protocol, internal/wire.Encode)",
		checks: serverless,
		run:    codecs,
		notes: []string{
			"zstd and s2: compress.New().Encode (zstd SpeedFastest, the package default); zstd level 3 and better:",
			"WithZstdLevel(zstd.SpeedDefault) and WithZstdLevel(zstd.SpeedBetterCompression), to show what the other levels trade.",
			"zlib: the standard library's compress/zlib at its default level (6), what TZlibTransport and THeader's zlib",
			"use, with its writer reused (Reset). MB/s are input bytes (10^6) per second.",
		},
	},
	{
		name:   "link",
		title:  "one batch of 1,000 getProduct over a simulated 100 Mbit/s link (12.5 MB/s each way, client side), and over plain loopback",
		checks: defaultCheck,
		run:    slowLink,
		notes: []string{
			"zstd and s2 compress both ways (accepted for responses; requests over 4 KiB); TZlibTransport: zlib default level over framed on both ends,",
			"no thriftbatch codec. The link adds no propagation delay. Bytes are the mean per batch on the wire, both ways.",
		},
	},
}

// env is what the scenarios of one phase share: the catalog server, the
// setting they run under, and what the running scenario has opened.
type env struct {
	plan  plan
	check time.Duration
	srv   *server
	open  closers
}

// runScenario runs s and closes what it opened.
func (e *env) runScenario(ctx context.Context, s scenario) ([]figure, error) {
	figs, err := s.run(ctx, e)
	err = errors.Join(err, e.open.Close())
	e.open = nil
	if err != nil {
		return nil, fmt.Errorf("%s: %w", s.title, err)
	}
	return figs, nil
}

// closerFunc adapts a function to closer.
type closerFunc func() error

// Close calls f.
func (f closerFunc) Close() error { return f() }

// keep registers c, unless err says it was not opened, to be closed when
// the running scenario ends, and returns err.
func (e *env) keep(c closer, err error) error {
	if err == nil {
		e.open = append(e.open, c)
	}
	return err
}

// server starts a catalog server for the running scenario.
func (e *env) server(latency time.Duration, stack transport) (*server, error) {
	return e.serve(startServer(latency, stack))
}

// serve registers s, unless err says it did not start, to be stopped when
// the running scenario ends, and returns it.
func (e *env) serve(s *server, err error) (*server, error) {
	if err != nil {
		return nil, err
	}
	e.open = append(e.open, closerFunc(s.stop))
	return s, nil
}

// shop opens a generated client on srv for the running scenario.
func (e *env) shop(ctx context.Context, srv *server) (*shop, error) {
	s, err := srv.shop(ctx)
	return s, e.keep(s, err)
}

// batchClient opens a plain batch client on srv for the running scenario.
func (e *env) batchClient(ctx context.Context, srv *server) (*client.Client, error) {
	c, err := srv.batchClient(ctx, nil)
	return c, e.keep(c, err)
}

// auto opens an automatic batching client on srv for the running scenario.
func (e *env) auto(ctx context.Context, srv *server, opts ...client.AutoOption) (*client.Auto, error) {
	a, err := srv.auto(ctx, opts...)
	return a, e.keep(a, err)
}

// shops opens n generated clients on srv, a connection each.
func (e *env) shops(ctx context.Context, srv *server, n int) ([]*shop, error) {
	cs, shops, err := srv.shops(ctx, n)
	return shops, e.keep(cs, err)
}

// shopAndBatchClient opens a generated client and a plain batch client on
// the scenario's server, a connection each.
func (e *env) shopAndBatchClient(ctx context.Context) (*shop, *client.Client, error) {
	sh, err := e.shop(ctx, e.srv)
	if err != nil {
		return nil, nil, err
	}
	c, err := e.batchClient(ctx, e.srv)
	return sh, c, err
}

// batchClients opens n plain batch clients on srv, a connection each.
func (e *env) batchClients(ctx context.Context, srv *server, n int) ([]*client.Client, error) {
	cs, clients, err := srv.batchClients(ctx, n)
	return clients, e.keep(cs, err)
}

// batchVsSequential: the calls one by one on one connection ÷ the same
// calls in one batch on another; and, for scale, ÷ the hand-written bulk
// method, the most that one round trip carrying these products reaches.
func batchVsSequential(ctx context.Context, e *env) ([]figure, error) {
	sh, c, err := e.shopAndBatchClient(ctx)
	if err != nil {
		return nil, err
	}
	ids := ids(e.plan.calls, 1)
	t, err := interleave(ctx, e.plan.rounds, sequential(sh, ids), explicitBatch(c, ids), bulk(sh, ids))
	if err != nil {
		return nil, err
	}
	return []figure{ratio("batch_vs_sequential_100", t[0], t[1]), ratio("bulk_vs_sequential_100", t[0], t[2])}, nil
}

// batchVsBulk: one batch ÷ the hand-written bulk method for the same ids.
func batchVsBulk(ctx context.Context, e *env) ([]figure, error) {
	return e.versusBatch(ctx, "batch_vs_bulk_100", 1, func(shops []*shop, ids []int64, batch way) (way, way) {
		return batch, bulk(shops[0], ids)
	})
}

// batchVsParallelConns: one call per goroutine, each on a connection of its
// own opened beforehand ÷ one batch of the same calls.
func batchVsParallelConns(ctx context.Context, e *env) ([]figure, error) {
	return e.versusBatch(ctx, "batch_vs_parallel_conns_100", e.plan.calls, func(shops []*shop, ids []int64, batch way) (way, way) {
		return parallelConns(shops, ids), batch
	})
}

// versusBatch compares one explicit batch of the plan's calls with another
// way of making them, over conns plain connections: pair returns the
// numerator and the denominator of the figure named key.
func (e *env) versusBatch(ctx context.Context, key string, conns int, pair func(shops []*shop, ids []int64, batch way) (way, way)) ([]figure, error) {
	shops, err := e.shops(ctx, e.srv, conns)
	if err != nil {
		return nil, err
	}
	c, err := e.batchClient(ctx, e.srv)
	if err != nil {
		return nil, err
	}
	ids := ids(e.plan.calls, 1)
	a, b := pair(shops, ids, explicitBatch(c, ids))
	t, err := interleave(ctx, e.plan.rounds, a, b)
	if err != nil {
		return nil, err
	}
	return []figure{ratio(key, t[0], t[1])}, nil
}

// autobatchVsSequential: the calls one by one ÷ the same calls made
// concurrently through an Auto.
func autobatchVsSequential(ctx context.Context, e *env) ([]figure, error) {
	sh, err := e.shop(ctx, e.srv)
	if err != nil {
		return nil, err
	}
	a, err := e.auto(ctx, e.srv)
	if err != nil {
		return nil, err
	}
	now, err := e.auto(ctx, e.srv, client.WithMaxWait(0))
	if err != nil {
		return nil, err
	}
	ids := ids(e.plan.calls, 1)
	noWait := automatic(now, ids)
	noWait.name += " (MaxWait 0)"
	t, err := interleave(ctx, e.plan.rounds, sequential(sh, ids), automatic(a, ids), noWait)
	if err != nil {
		return nil, err
	}
	return []figure{
		ratio("autobatch_vs_sequential_100", t[0], t[1]),
		ratio("autobatch_maxwait0_vs_sequential_100", t[0], t[2]),
	}, nil
}

// fanout: the simulated latency of one call ÷ the time of a batch of many
// such calls, which the processor runs concurrently: 1 is perfect overlap.
// The latency is latency.Wait's, woken by the poller as a backend's reply
// would be. Beside it: the same batch without latency; the same waits in a
// hand-written getProducts that overlaps them (fanningCatalog); the waits
// alone on the pool and on goroutines of their own; and the batch and the
// goroutines again with each wait on a Go timer (latency.TimerWait), which
// fires up to a millisecond late in an idle process.
func fanout(ctx context.Context, e *env) ([]figure, error) {
	d := e.plan.fanoutLatency
	slow, err := e.server(d, framed)
	if err != nil {
		return nil, err
	}
	c, err := e.batchClient(ctx, slow)
	if err != nil {
		return nil, err
	}
	fast, err := e.batchClient(ctx, e.srv)
	if err != nil {
		return nil, err
	}
	fanning, err := e.serve(serveCatalog(&fanningCatalog{Handler: store.New(products, 0), latency: d}, framed))
	if err != nil {
		return nil, err
	}
	sh, err := e.shop(ctx, fanning)
	if err != nil {
		return nil, err
	}
	timers, err := e.serve(serveCatalog(&timerCatalog{Handler: store.New(products, 0), latency: d}, framed))
	if err != nil {
		return nil, err
	}
	ct, err := e.batchClient(ctx, timers)
	if err != nil {
		return nil, err
	}
	p, err := pool.New()
	if err != nil {
		return nil, err
	}
	e.open = append(e.open, closerFunc(func() error { return p.Close(ctx) }))

	ids := ids(e.plan.fanoutCalls, 1)
	quick := explicitBatch(fast, ids)
	quick.name += " without latency"
	fanningBulk := bulk(sh, ids)
	fanningBulk.name += " waiting for each id on a goroutine of its own"
	onTimers := explicitBatch(ct, ids)
	onTimers.name += " waiting on Go timers"
	onPool := func(n int, wait func()) error {
		_, err := pool.Run(ctx, p, n, 0, func(int) struct{} { wait(); return struct{}{} })
		return err
	}
	onGoroutines := func(n int, wait func()) error {
		var wg sync.WaitGroup
		for range n {
			wg.Go(wait)
		}
		wg.Wait()
		return nil
	}
	efficiency := func(key, per, why string) func(timed) figure {
		return func(t timed) figure {
			return figure{key: key, value: d.Seconds() / t.median.Seconds(), unit: "×",
				detail: fmt.Sprintf("%s%s ÷ %s%s", duration(d), per, describe(t), why)}
		}
	}
	ms := func(key, why string) func(timed) figure {
		return func(t timed) figure {
			return figure{key: key, value: float64(t.median) / 1e6, unit: "ms", detail: describe(t) + why}
		}
	}
	// Each way with the figure it gives, so that the two cannot come
	// apart.
	measured := []struct {
		way    way
		figure func(timed) figure
	}{
		{explicitBatch(c, ids), efficiency("fanout_efficiency_256x5ms", " of latency per call", imprecise())},
		{quick, ms("batch_256_no_latency_ms", ": what the batch costs beyond the latency")},
		{fanningBulk, efficiency("bulk_fanout_efficiency_256x5ms", "", ": the same waits in a bulk method written to overlap them, without batching")},
		{waits("pool.Run alone", len(ids), d, latency.Wait, onPool),
			ms("pool_256x5ms_ms", ": the same waits run by the pool, with no Thrift at all")},
		{waits("a goroutine per wait", len(ids), d, latency.Wait, onGoroutines),
			ms("goroutines_256x5ms_ms", ": the machine's floor for 256 overlapping waits")},
		{onTimers, efficiency("fanout_efficiency_256x5ms_go_timers", "", ": each call's latency a Go timer, up to 1 ms late in an idle process")},
		{waits("a goroutine per wait on a Go timer", len(ids), d, latency.TimerWait, onGoroutines),
			ms("goroutines_256x5ms_go_timers_ms", ": the floor for 256 overlapping waits on Go timers")},
	}
	ways := make([]way, len(measured))
	for i, m := range measured {
		ways[i] = m.way
		ways[i].settle = fanoutSettle
	}
	t, err := interleave(ctx, e.plan.fanoutRounds, ways...)
	if err != nil {
		return nil, err
	}
	figures := make([]figure, len(measured))
	for i, m := range measured {
		figures[i] = m.figure(t[i])
	}
	return figures, nil
}

// imprecise says, where latency.Wait falls back to Go timers (no timerfd),
// that the figures with and without Go timers measure the same waits.
func imprecise() string {
	if latency.Precise() {
		return ""
	}
	return " (latency.Wait is on Go timers here: no timerfd)"
}

// fanoutSettle is the pause before each way of the fan-out scenario (see
// way.settle): the processor's default disconnect check interval, and a
// millisecond for the runtime's sleep.
const fanoutSettle = processor.DefaultDisconnectCheck + time.Millisecond

// waits is n waits of d, each by wait (latency.Wait or latency.TimerWait),
// run by fanOut.
func waits(name string, n int, d time.Duration, wait func(context.Context, time.Duration) error, fanOut func(n int, wait func()) error) way {
	return way{name: name, calls: n, run: func(context.Context) error {
		return fanOut(n, func() { _ = wait(context.Background(), d) }) // nil: nothing ends it early
	}}
}

// throughput: calls per second of many clients sending batches, and the
// same clients calling one by one, in alternating windows.
func throughput(ctx context.Context, e *env) ([]figure, error) {
	n := e.plan.clients
	clients, err := e.batchClients(ctx, e.srv, n)
	if err != nil {
		return nil, err
	}
	shops, err := e.shops(ctx, e.srv, n)
	if err != nil {
		return nil, err
	}
	batched, unbatched := make([]worker, n), make([]worker, n)
	for i := range n {
		batchIDs, next := ids(e.plan.calls, 1+i*e.plan.calls), int64(i*1000)
		batched[i] = func(ctx context.Context) (int, error) { return len(batchIDs), inBatch(ctx, clients[i], batchIDs) }
		unbatched[i] = func(ctx context.Context) (int, error) {
			next = next%products + 1
			p, err := shops[i].GetProduct(ctx, next)
			if err == nil {
				err = checkProduct(next, p)
			}
			return 1, err
		}
	}
	sides := [][]worker{batched, unbatched}
	if e.check == libraryCheck {
		sides = append(sides, bulkWorkers(shops, e.plan.calls))
	}
	r, err := alternate(ctx, e.plan, sides...)
	if err != nil {
		return nil, err
	}
	b, u := r[0], r[1]
	how := fmt.Sprintf("median of %d windows of %v, %d goroutines", e.plan.windows, e.plan.window, n)
	figs := []figure{
		{key: "throughput_calls_per_s", value: b, unit: "calls/s", detail: fmt.Sprintf("batches of %d, %s", e.plan.calls, how)},
		{key: "unbatched_calls_per_s", value: u, unit: "calls/s", detail: "one by one, " + how},
		{key: "throughput_vs_unbatched", value: b / u, unit: "×", detail: fmt.Sprintf("%s calls/s batched ÷ %s calls/s one by one", thousands(int64(b)), thousands(int64(u)))},
	}
	if len(r) > 2 {
		figs = append(figs, figure{key: "bulk_calls_per_s", value: r[2], unit: "calls/s", detail: fmt.Sprintf("getProducts of %d ids, %s: the ceiling", e.plan.calls, how)})
	}
	return figs, nil
}

// bulkWorkers returns a worker per generated client that calls getProducts
// for as many ids as a batch carries.
func bulkWorkers(shops []*shop, calls int) []worker {
	ws := make([]worker, len(shops))
	for i, sh := range shops {
		get := bulk(sh, ids(calls, 1+i*calls))
		ws[i] = func(ctx context.Context) (int, error) { return get.calls, get.run(ctx) }
	}
	return ws
}

// alternate runs a short warm-up window of each side, then the plan's
// windows of every side in turn, and returns the median calls per second of
// each side.
func alternate(ctx context.Context, p plan, sides ...[]worker) ([]float64, error) {
	rates := make([][]float64, len(sides))
	for w := range p.windows + 1 {
		d := p.window
		if w == 0 {
			d = p.window / 4 // warm-up, not counted
		}
		for i, side := range sides {
			r, err := window(ctx, d, side)
			if err != nil {
				return nil, err
			}
			if w > 0 {
				rates[i] = append(rates[i], r)
			}
		}
	}
	out := make([]float64, len(sides))
	for i, rs := range rates {
		out[i] = median(rs)
	}
	return out, nil
}

// perCallCost: the time per call of one large batch ÷ that of batches of
// 100 making the same calls.
func perCallCost(ctx context.Context, e *env) ([]figure, error) {
	c, err := e.batchClient(ctx, e.srv)
	if err != nil {
		return nil, err
	}
	ids := ids(e.plan.bigBatch, 1)
	t, err := interleave(ctx, e.plan.bigRounds, explicitBatch(c, ids), batches(c, ids, e.plan.calls))
	if err != nil {
		return nil, err
	}
	return []figure{ratio("per_call_cost_10k_vs_100", t[0], t[1])}, nil
}

// allocations counts the heap allocations of the process per call, in
// batches of 100 and, for context, one by one.
func allocations(ctx context.Context, e *env) ([]figure, error) {
	sh, c, err := e.shopAndBatchClient(ctx)
	if err != nil {
		return nil, err
	}
	ids := ids(e.plan.calls, 1)
	inBatches, err := allocsPerCall(ctx, e.plan.allocRounds, explicitBatch(c, ids))
	if err != nil {
		return nil, err
	}
	oneByOne, err := allocsPerCall(ctx, max(e.plan.allocRounds/10, 1), sequential(sh, ids))
	if err != nil {
		return nil, err
	}
	inBulk, err := allocsPerCall(ctx, e.plan.allocRounds, bulk(sh, ids))
	if err != nil {
		return nil, err
	}
	return []figure{
		{key: "allocs_per_call_batch_100", value: inBatches, unit: "allocs/call", detail: fmt.Sprintf("%d batches of %d", e.plan.allocRounds, e.plan.calls)},
		{key: "allocs_per_call_sequential_100", value: oneByOne, unit: "allocs/call", detail: fmt.Sprintf("%d calls one by one", max(e.plan.allocRounds/10, 1)*e.plan.calls)},
		{key: "allocs_per_call_bulk_100", value: inBulk, unit: "allocs/call", detail: fmt.Sprintf("%d getProducts of %d ids, per product", e.plan.allocRounds, e.plan.calls)},
	}, nil
}
