package main

import "time"

// plan is how big and how long each scenario runs. The scenario names in the
// JSON keys (…_100, …_256x5ms, …_10k_vs_100) are the full plans' sizes; the
// test plan shrinks them.
type plan struct {
	name string // "quick", "full" or "test", printed in the header

	calls    int // calls of the batch-of-100 scenarios
	bigBatch int // calls of the large batch of per_call_cost_10k_vs_100

	fanoutCalls   int           // calls of the fan-out batch
	fanoutLatency time.Duration // simulated latency of each of them

	clients int           // goroutines of the throughput scenario
	window  time.Duration // one throughput window
	windows int           // windows per side, interleaved

	linkCalls    int     // calls of the batch sent over the slow link
	linkRate     float64 // the slow link's bytes per second, each way
	codecReplies int     // getProduct replies in the compressed response

	rounds       int   // rounds of the batch-of-100 comparisons
	bigRounds    int   // rounds of per_call_cost_10k_vs_100
	fanoutRounds int   // rounds of the fan-out batch
	allocRounds  int   // batches counted for allocations per call
	codecRounds  int   // rounds of the codec comparison
	linkRounds   int   // rounds over the slow link
	sweepRounds  int   // rounds of each batch size of the sweep
	sweepSizes   []int // batch sizes of the calls/s sweep (the chart)

	tune tunePlan // the tuning sweep of -sweep
}

// tunePlan is the size of the tuning sweep (-sweep): every profile at every
// pool size and per-batch cap, then each overload policy at one pool size.
type tunePlan struct {
	clients               int           // client goroutines, a connection each
	batch                 int           // getProduct calls per batch
	warmup                time.Duration // an unmeasured window before each cell's
	window                time.Duration // each cell's measured window
	pools                 []int         // pool sizes (WithPoolSize)
	caps                  []int         // per-batch caps (WithMaxConcurrency)
	policies              []string      // overload policies beside caller-runs, at policyPool and policyCap
	policyPool, policyCap int
}

// Sizes named in the figures' keys.
const (
	products       = 10_000               // catalog size of both servers
	linkMbit       = 100                  // the slow link, in Mbit/s
	linkBytesPerS  = linkMbit * 1e6 / 8   // 12.5 MB/s
	defaultLatency = 5 * time.Millisecond // fan-out latency per call
	defaultWindow  = 500 * time.Millisecond
)

// quickPlan finishes in about 30 s on two cores.
func quickPlan() plan {
	return plan{
		name: "quick", calls: 100, bigBatch: 10_000,
		fanoutCalls: 256, fanoutLatency: defaultLatency,
		clients: 16, window: defaultWindow, windows: 5,
		linkCalls: 1000, linkRate: linkBytesPerS, codecReplies: 1000,
		rounds: 61, bigRounds: 9, fanoutRounds: 31, allocRounds: 50,
		codecRounds: 41, linkRounds: 7, sweepRounds: 9,
		sweepSizes: []int{1, 10, 100, 1000},
		tune: tunePlan{
			clients: 8, batch: 100, warmup: 100 * time.Millisecond, window: 300 * time.Millisecond,
			pools: []int{2, 8, 64, 256, 1024}, caps: []int{1, 8, 64, 256},
			policies: []string{"wait", "reject"}, policyPool: 8, policyCap: 64,
		},
	}
}

// fullPlan is quickPlan with about four times the rounds: the run behind
// docs/BENCHMARKS.md.
func fullPlan() plan {
	p := quickPlan()
	p.name = "full"
	p.window, p.windows = time.Second, 10
	p.rounds, p.bigRounds, p.fanoutRounds, p.allocRounds = 201, 25, 61, 200
	p.codecRounds, p.linkRounds, p.sweepRounds = 101, 15, 21
	p.tune.warmup, p.tune.window = 200*time.Millisecond, time.Second
	return p
}

// testPlan runs every scenario at toy sizes, for the test: the figures are
// meaningless, the code paths are the real ones.
func testPlan() plan {
	return plan{
		name: "test", calls: 10, bigBatch: 100,
		fanoutCalls: 8, fanoutLatency: time.Millisecond,
		clients: 2, window: 20 * time.Millisecond, windows: 1,
		linkCalls: 50, linkRate: linkBytesPerS, codecReplies: 50,
		rounds: 3, bigRounds: 1, fanoutRounds: 1, allocRounds: 2,
		codecRounds: 1, linkRounds: 1, sweepRounds: 1,
		sweepSizes: []int{1, 4},
		tune: tunePlan{
			clients: 2, batch: 20, warmup: 5 * time.Millisecond, window: 20 * time.Millisecond,
			pools: []int{4}, caps: []int{8}, policies: []string{"reject"}, policyPool: 4, policyCap: 8,
		},
	}
}
