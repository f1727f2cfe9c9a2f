package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/apache/thrift/lib/go/thrift"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"github.com/thriftbatch/thriftbatch/client"
	"github.com/thriftbatch/thriftbatch/example_server/catalog"
	"github.com/thriftbatch/thriftbatch/example_server/store"
	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/internal/latency"
	"github.com/thriftbatch/thriftbatch/pool"
	"github.com/thriftbatch/thriftbatch/processor"
)

// The tuning sweep (-sweep) serves the catalog with three handler profiles
// behind processor.New at every pool size and per-batch cap of the plan,
// with several clients each sending batches of getProduct on a connection of
// its own, and reports the calls per second, the batch latency and the
// processor's statistics of each cell: the figures behind docs/TUNING.md.

// Slow tail of the mixed profile: every slowEvery-th product id waits
// slowDelay, the rest are trivial, so 5% of the calls of a batch of
// consecutive ids take 20 ms.
const (
	slowEvery = 20
	slowDelay = 20 * time.Millisecond
)

// profile is a handler of the catalog the sweep serves.
type profile struct {
	name  string // short, for the table and the JSON
	desc  string
	label string // for the chart's legend
	new   func() catalog.Catalog
}

// profiles are the sweep's handlers: CPU only, simulated I/O, and trivial
// calls with a slow tail.
var profiles = []profile{
	{name: "cpu", desc: "store.New(10000, 0): trivial, CPU only", label: "cpu: trivial calls", new: func() catalog.Catalog { return store.New(products, 0) }},
	{name: "io5ms", desc: "store.New(10000, 5ms): 5 ms of simulated I/O per call", label: "io5ms: 5 ms of I/O a call", new: func() catalog.Catalog { return store.New(products, defaultLatency) }},
	{
		name: "mixed", desc: fmt.Sprintf("store.New(10000, 0), getProduct of ids divisible by %d waits %v: 5%% slow tail", slowEvery, slowDelay),
		label: fmt.Sprintf("mixed: 1 call in %d waits %v", slowEvery, slowDelay),
		new:   func() catalog.Catalog { return slowTail{store.New(products, 0)} },
	},
}

// slowTail is the store whose getProduct waits slowDelay for ids divisible
// by slowEvery.
type slowTail struct{ *store.Handler }

// GetProduct waits for the ids of the tail, with latency.Wait as the
// store's simulated latency waits, then asks the store.
func (s slowTail) GetProduct(ctx context.Context, id int64) (*catalog.Product, error) {
	if id%slowEvery == 0 {
		if err := latency.Wait(ctx, slowDelay); err != nil {
			return nil, err
		}
	}
	return s.Handler.GetProduct(ctx, id)
}

// cell is one measurement of the sweep: a profile under one setting.
type cell struct {
	Profile        string  `json:"profile"`
	Policy         string  `json:"policy"`
	PoolSize       int     `json:"pool_size"`
	MaxConcurrency int     `json:"max_concurrency"`
	CallsPerSec    float64 `json:"calls_per_s"` // calls answered with a product
	Batches        int     `json:"batches"`     // batches the clients completed in the window
	P50Millis      float64 `json:"p50_batch_ms"`
	P99Millis      float64 `json:"p99_batch_ms"`

	// The processor's statistics over the window (counters: the difference
	// of two snapshots; gauges: the mean of samples every tuneSample).
	Calls          uint64  `json:"calls"`
	Inline         uint64  `json:"inline"`
	Rejected       uint64  `json:"rejected"`
	Abandoned      uint64  `json:"abandoned"`
	QueueWaitMicro float64 `json:"queue_wait_mean_us"` // QueueWait / Batches
	RunningMean    float64 `json:"running_mean"`
	RunningMax     int     `json:"running_max"`
	IdleMean       float64 `json:"idle_mean"`
}

// tuneSample is how often a cell samples the pool's gauges.
const tuneSample = 10 * time.Millisecond

// tuning runs the sweep of p for each profile and returns its cells: every
// pool size with every cap under the default policy, then each other policy
// at the plan's pool size and cap.
func tuning(ctx context.Context, p tunePlan, profs []profile) ([]cell, error) {
	var out []cell
	for _, pr := range profs {
		h := pr.new()
		type setting struct {
			policy    pool.Policy
			size, cap int
		}
		var settings []setting
		for _, size := range p.pools {
			for _, c := range p.caps {
				settings = append(settings, setting{pool.CallerRuns, size, c})
			}
		}
		for _, name := range p.policies {
			pol, err := pool.ParsePolicy(name)
			if err != nil {
				return nil, err
			}
			settings = append(settings, setting{pol, p.policyPool, p.policyCap})
		}
		for _, s := range settings {
			c, err := measureCell(ctx, p, h, s.policy, s.size, s.cap)
			if err != nil {
				return nil, fmt.Errorf("%s, %v, pool %d, cap %d: %w", pr.name, s.policy, s.size, s.cap, err)
			}
			c.Profile = pr.name
			out = append(out, c)
		}
	}
	return out, nil
}

// measureCell serves h behind a processor with the given policy, pool size
// and cap, runs p.clients clients for p.warmup and then p.window, and
// returns what the clients and the processor's statistics saw in the
// window.
func measureCell(ctx context.Context, p tunePlan, h catalog.Catalog, policy pool.Policy, size, maxConc int) (_ cell, err error) {
	srv, err := serveCatalog(h, framed, processor.WithPoolSize(size), processor.WithMaxConcurrency(maxConc), processor.WithOverloadPolicy(policy))
	if err != nil {
		return cell{}, err
	}
	defer func() { err = errors.Join(err, srv.stop()) }()
	cs, clients, err := srv.batchClients(ctx, p.clients)
	if err != nil {
		return cell{}, err
	}
	defer func() { err = errors.Join(err, cs.Close()) }()

	if _, err := load(ctx, p, clients, p.warmup); err != nil {
		return cell{}, err
	}
	before := srv.proc.Stats()
	stopSampling := sample(srv.proc)
	w, err := load(ctx, p, clients, p.window)
	g := stopSampling()
	after := srv.proc.Stats()
	if err != nil {
		return cell{}, err
	}

	a, b := after.Pool, before.Pool
	c := cell{
		Policy: policy.String(), PoolSize: size, MaxConcurrency: maxConc,
		CallsPerSec: float64(w.ok) / w.elapsed.Seconds(), Batches: len(w.latencies),
		P50Millis: quantile(w.latencies, 0.50), P99Millis: quantile(w.latencies, 0.99),
		Calls: a.Calls - b.Calls, Inline: a.Inline - b.Inline, Rejected: a.Rejected - b.Rejected,
		Abandoned:   a.Abandoned - b.Abandoned,
		RunningMean: g.runningMean, RunningMax: g.runningMax, IdleMean: g.idleMean,
	}
	if n := a.Batches - b.Batches; n > 0 {
		c.QueueWaitMicro = float64(a.QueueWait-b.QueueWait) / float64(n) / 1e3
	}
	if w.overloaded != int(c.Rejected) {
		return cell{}, fmt.Errorf("the clients saw %d calls CALL_OVERLOADED, Stats %d", w.overloaded, c.Rejected)
	}
	return c, nil
}

// gauges are the means (and the peak) of the pool's gauges over a window.
type gauges struct {
	runningMean, idleMean float64
	runningMax            int
}

// sample reads proc's statistics every tuneSample until stop is called,
// which returns the gauges' means once the sampling goroutine has returned.
func sample(proc *processor.Processor) (stop func() gauges) {
	quit, finished := make(chan struct{}), make(chan struct{})
	var g gauges
	var n int
	go func() {
		defer close(finished)
		t := time.NewTicker(tuneSample)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				s := proc.Stats().Pool
				g.runningMean += float64(s.Running)
				g.idleMean += float64(s.Idle)
				g.runningMax = max(g.runningMax, s.Running)
				n++
			}
		}
	}()
	return func() gauges {
		close(quit)
		<-finished
		if n > 0 {
			g.runningMean /= float64(n)
			g.idleMean /= float64(n)
		}
		return g
	}
}

// loaded is what the clients of one window did.
type loaded struct {
	ok, overloaded int
	latencies      []time.Duration // one per batch
	elapsed        time.Duration   // until the last client stopped
}

// load runs every client on a goroutine of its own, each sending batches of
// p.batch getProduct calls back to back until d has passed, and returns the
// calls answered, the calls overloaded and each batch's latency.
func load(ctx context.Context, p tunePlan, clients []*client.Client, d time.Duration) (loaded, error) {
	res := make([]loaded, len(clients))
	errs := make([]error, len(clients))
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for i, c := range clients {
		wg.Go(func() {
			r := &res[i]
			for k := 0; time.Now().Before(deadline); k++ {
				ids := ids(p.batch, 1+(k*len(clients)+i)*p.batch%products)
				t := time.Now()
				ok, over, err := tunedBatch(ctx, c, ids)
				if err != nil {
					errs[i] = err
					return
				}
				r.latencies = append(r.latencies, time.Since(t))
				r.ok += ok
				r.overloaded += over
			}
		})
	}
	wg.Wait()
	out := loaded{elapsed: time.Since(start)}
	if err := errors.Join(errs...); err != nil {
		return out, err
	}
	for _, r := range res {
		out.ok += r.ok
		out.overloaded += r.overloaded
		out.latencies = append(out.latencies, r.latencies...)
	}
	return out, nil
}

// tunedBatch sends a getProduct call for each id as one batch on c and
// returns how many were answered with their product and how many with
// CALL_OVERLOADED; any other outcome is an error.
func tunedBatch(ctx context.Context, c *client.Client, ids []int64) (ok, overloaded int, err error) {
	b := c.NewBatch()
	b.Grow(len(ids))
	calls := make([]*client.Call[*catalog.CatalogGetProductResult], len(ids))
	for i, id := range ids {
		calls[i] = client.Add(b, "getProduct", &catalog.CatalogGetProductArgs{ID: id}, &catalog.CatalogGetProductResult{})
	}
	if err := b.Execute(ctx); err != nil {
		return 0, 0, err
	}
	for i, call := range calls {
		var ce *client.CallError
		switch err := call.Err(); {
		case errors.As(err, &ce) && ce.Code == batch.CALL_OVERLOADED:
			overloaded++
		case err != nil:
			return 0, 0, err
		default:
			if err := checkProduct(ids[i], call.Result.Success); err != nil {
				return 0, 0, err
			}
			ok++
		}
	}
	return ok, overloaded, nil
}

// quantile returns the q-quantile of ds (nearest rank) in milliseconds, or 0
// for none.
func quantile(ds []time.Duration, q float64) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return float64(s[max(i, 0)]) / 1e6
}

// runTuning runs the tuning sweep of o's plan and writes its table (or
// {"sweep": cells} with -json) to out, and the chart to o.sweepChart unless
// it is empty.
func runTuning(ctx context.Context, o options, out io.Writer) error {
	m := thisMachine()
	start := time.Now()
	cells, err := tuning(ctx, o.plan.tune, profiles)
	if err != nil {
		return fmt.Errorf("tuning sweep: %w", err)
	}
	if o.sweepChart != "" {
		sub := fmt.Sprintf("%d clients × batches of %d, %v windows", o.plan.tune.clients, o.plan.tune.batch, o.plan.tune.window)
		if err := writeTuningChart(o.sweepChart, sub, cells, chartCap(o.plan.tune)); err != nil {
			return fmt.Errorf("chart: %w", err)
		}
	}
	if o.json {
		b, err := json.MarshalIndent(map[string][]cell{"sweep": cells}, "", "  ")
		if err != nil {
			return err
		}
		_, err = out.Write(append(b, '\n'))
		return err
	}
	return writeTuningTable(out, o.plan, m, cells, time.Since(start))
}

// chartCap is the per-batch cap the chart draws: the processor's default
// when the plan has it, else the plan's largest.
func chartCap(p tunePlan) int {
	const defaultCap = 256 // dispatcher.DefaultMaxConcurrency
	if slices.Contains(p.caps, defaultCap) {
		return defaultCap
	}
	return slices.Max(p.caps)
}

// writeTuningTable writes the cells as one table per profile.
func writeTuningTable(w io.Writer, pl plan, m machine, cells []cell, took time.Duration) error {
	p := pl.tune
	var b strings.Builder
	fmt.Fprintf(&b, "thriftbatch tuning sweep (%s plan): %d clients, a connection each, sending batches of %d getProduct back to back,\n", pl.name, p.clients, p.batch)
	fmt.Fprintf(&b, "for %v per cell after a %v warm-up; a fresh processor.New per cell; TSimpleServer on 127.0.0.1, framed, compact;\n", p.window, p.warmup)
	fmt.Fprintf(&b, "thrift.ServerConnectivityCheckInterval %v.\n%s\n", thrift.ServerConnectivityCheckInterval, m)
	b.WriteString("calls/s: calls answered with their product; p50/p99: batch latency seen by the clients. From processor.Stats over the window:\n")
	b.WriteString("inline%/rejected%: Inline/Calls, Rejected/(Calls+Rejected); wait: QueueWait/Batches; running: mean (max) Running; idle: mean Idle.\n")
	for _, pr := range profiles {
		rows := [][]string{{"policy", "pool", "cap", "calls/s", "p50 ms", "p99 ms", "batches", "inline%", "rejected%", "wait µs", "running", "idle", ""}}
		for _, c := range cells {
			if c.Profile != pr.name {
				continue
			}
			rows = append(rows, []string{
				c.Policy, fmt.Sprint(c.PoolSize), fmt.Sprint(c.MaxConcurrency), thousands(int64(c.CallsPerSec)),
				number(c.P50Millis), number(c.P99Millis), fmt.Sprint(c.Batches),
				percent(c.Inline, c.Calls), percent(c.Rejected, c.Calls+c.Rejected), number(c.QueueWaitMicro),
				fmt.Sprintf("%s (%d)", number(c.RunningMean), c.RunningMax), number(c.IdleMean), "",
			})
		}
		if len(rows) == 1 {
			continue
		}
		fmt.Fprintf(&b, "\n== %s: %s\n", pr.name, pr.desc)
		writeRows(&b, rows)
	}
	fmt.Fprintf(&b, "\nSweep took %s; %s.\n", took.Round(time.Second), loadNote())
	_, err := io.WriteString(w, b.String())
	return err
}

// percent formats part/whole as a percentage, "0" when part is 0.
func percent(part, whole uint64) string {
	if part == 0 || whole == 0 {
		return "0"
	}
	return number(100 * float64(part) / float64(whole))
}

// writeTuningChart renders calls/s against pool size, one line per profile,
// at per-batch cap maxConc under the default policy, both axes logarithmic.
func writeTuningChart(path, subtitle string, cells []cell, maxConc int) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("getProduct calls/s by pool size, cap %d, caller-runs\n%s", maxConc, subtitle)
	p.X.Label.Text = "pool size (WithPoolSize)"
	p.Y.Label.Text = "calls/s"
	p.X.Scale, p.Y.Scale = plot.LogScale{}, plot.LogScale{}
	p.X.Tick.Marker, p.Y.Tick.Marker = commaTicks{}, commaTicks{}
	p.Legend.Top, p.Legend.Left = false, false // bottom right, below the cpu line and above the others' start
	p.Legend.XOffs, p.Legend.YOffs = -vg.Points(48), vg.Points(12)
	p.Add(plotter.NewGrid())
	for i, pr := range profiles {
		var xys plotter.XYs
		for _, c := range cells {
			if c.Profile == pr.name && c.Policy == pool.CallerRuns.String() && c.MaxConcurrency == maxConc {
				xys = append(xys, plotter.XY{X: float64(c.PoolSize), Y: c.CallsPerSec})
			}
		}
		if len(xys) == 0 {
			continue
		}
		line, dots, err := plotter.NewLinePoints(xys)
		if err != nil {
			return err
		}
		c := palette[(i+1)%len(palette)]
		line.Color, line.Width = c, vg.Points(1.5)
		dots.Color, dots.Shape = c, draw.CircleGlyph{}
		p.Add(line, dots)
		p.Legend.Add(pr.label, line, dots)
	}
	return p.Save(7*vg.Inch, 4.5*vg.Inch, path)
}
