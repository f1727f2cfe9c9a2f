// Command bench measures what thriftbatch buys over the ways of calling a
// Thrift server it replaces: calls one by one, a connection per call, a
// hand-written bulk method, and Thrift's own zlib transport on a slow link.
//
// It serves the example catalog (store.New(10000, 0)) behind processor.New
// with a TSimpleServer on a loopback port, in this process, over the framed
// transport and the compact protocol, and prints a table of figures, each a
// ratio of medians of interleaved rounds with the absolute times beside it.
//
//	go run ./bench            # the full run behind docs/BENCHMARKS.md
//	go run ./bench -quick     # about 30 s on two cores
//	go run ./bench -json      # the figures as one JSON object
//	go run ./bench -chart docs/calls-per-second.svg
//	go run ./bench -quick -run 'fanout|sweep' -cpuprofile cpu.out
//	go run ./bench -sweep -sweep-chart docs/tuning-sweep.svg  # docs/TUNING.md
//
// The scenarios that involve a server run twice: with
// thrift.ServerConnectivityCheckInterval off (0; keys suffixed _check0) and
// then at the library's default of 5 ms (the plain keys).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"runtime/pprof"
	"slices"
	"time"

	"github.com/thriftbatch/thriftbatch/internal/checkinterval"
)

// options are the command's flags.
type options struct {
	plan    plan
	json    bool           // the JSON object instead of the table
	chart   string         // where to write the chart; "" for nowhere
	only    *regexp.Regexp // the scenarios to run, by name ("sweep" for the chart's); nil for all
	profile string         // where to write a CPU profile; "" for nowhere

	sweep      bool   // the tuning sweep (tuning.go) instead of the scenarios
	sweepChart string // where to write the tuning sweep's chart; "" for nowhere
}

func main() {
	if err := mainErr(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// mainErr parses the flags and runs.
func mainErr() error {
	o, err := parseFlags()
	if err != nil {
		return err
	}
	if o.profile != "" {
		stop, err := startProfile(o.profile)
		if err != nil {
			return err
		}
		defer stop()
	}
	return run(context.Background(), o, os.Stdout)
}

// parseFlags returns the options the command line asks for.
func parseFlags() (options, error) {
	var o options
	quick := flag.Bool("quick", false, "a shorter run: fewer rounds and shorter windows (about 30 s on two cores)")
	flag.BoolVar(&o.json, "json", false, "print the figures as one JSON object instead of the table")
	flag.StringVar(&o.chart, "chart", "", "write the chart of calls/s by batch size to this `file` (.svg, .png or .pdf)")
	only := flag.String("run", "", "run only the scenarios whose name matches this `regexp`: sequential, bulk, parallel, auto,\nfanout, throughput, percall, allocs, codecs, link, sweep (the chart's)")
	flag.StringVar(&o.profile, "cpuprofile", "", "write a CPU profile of the run to this `file`")
	flag.BoolVar(&o.sweep, "sweep", false, "run the tuning sweep of pool sizes, per-batch caps and overload policies instead (docs/TUNING.md)")
	flag.StringVar(&o.sweepChart, "sweep-chart", "", "with -sweep, write the chart of calls/s by pool size to this `file`")
	flag.Parse()
	o.plan = fullPlan()
	if *quick {
		o.plan = quickPlan()
	}
	if *only != "" {
		re, err := regexp.Compile(*only)
		if err != nil {
			return o, err
		}
		o.only = re
	}
	return o, nil
}

// startProfile starts a CPU profile written to path and returns what stops
// it.
func startProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		return nil, errors.Join(err, f.Close())
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// selected reports whether the scenario called name runs.
func (o *options) selected(name string) bool { return o.only == nil || o.only.MatchString(name) }

// run measures the plan and writes the table (or the JSON) to out, and the
// chart unless o.chart is empty.
func run(ctx context.Context, o options, out io.Writer) error {
	if o.sweep {
		return runTuning(ctx, o, out)
	}
	if o.chart != "" && !o.selected("sweep") {
		return errors.New("-chart needs the sweep: add it to -run")
	}
	res, err := measureAll(ctx, &o)
	if err != nil {
		return err
	}
	if o.chart != "" {
		sub := fmt.Sprintf("median of %d rounds; %s", o.plan.sweepRounds, res.machine.model)
		if err := writeChart(o.chart, sub, res.sweep); err != nil {
			return fmt.Errorf("chart: %w", err)
		}
	}
	if !o.json {
		return res.writeTable(out)
	}
	b, err := res.JSON()
	if err != nil {
		return err
	}
	_, err = out.Write(append(b, '\n'))
	return err
}

// measureAll runs every scenario: first those under both settings with the
// connectivity check off, then everything with the library's default (which
// leaves the setting as it found it). Lowering the interval is the risky
// direction, so it happens once, before any call.
func measureAll(ctx context.Context, o *options) (*results, error) {
	start := time.Now()
	res := &results{plan: o.plan, machine: thisMachine()}
	figs := make([][]figure, len(scenarios))
	for _, check := range []time.Duration{0, libraryCheck} {
		if err := checkinterval.Set(check); err != nil {
			return nil, err
		}
		sweep, err := phase(ctx, o, check, figs)
		if err != nil {
			return nil, err
		}
		if check == libraryCheck {
			res.sweep = sweep
		}
	}
	for i, s := range scenarios {
		if len(figs[i]) == 0 {
			continue
		}
		// The library default first, then _check0.
		slices.SortStableFunc(figs[i], func(a, b figure) int { return boolInt(a.check == 0) - boolInt(b.check == 0) })
		res.sections = append(res.sections, section{title: s.title, figures: figs[i], notes: s.notes})
	}
	res.took = time.Since(start)
	return res, nil
}

// phase starts the catalog server, runs the scenarios that run under check
// (and, under the library default, the sweep of batch sizes), appends their
// figures to figs by scenario, and stops the server.
func phase(ctx context.Context, o *options, check time.Duration, figs [][]figure) (_ []series, err error) {
	srv, err := startServer(0, framed)
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, srv.stop()) }()
	e := &env{plan: o.plan, check: check, srv: srv}
	for i, s := range scenarios {
		if check == 0 && s.checks != bothChecks || !o.selected(s.name) {
			continue
		}
		f, err := e.runScenario(ctx, s)
		if err != nil {
			return nil, err
		}
		for j := range f {
			f[j].check = check
			if s.checks == serverless {
				f[j].check = noServer
			}
		}
		figs[i] = append(figs[i], f...)
	}
	if check != libraryCheck || !o.selected("sweep") {
		return nil, nil
	}
	return e.runSweep(ctx)
}

// runSweep runs the sweep of batch sizes and closes what it opened.
func (e *env) runSweep(ctx context.Context) ([]series, error) {
	ss, err := sweep(ctx, e)
	err = errors.Join(err, e.open.Close())
	e.open = nil
	if err != nil {
		return nil, fmt.Errorf("sweep: %w", err)
	}
	return ss, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
