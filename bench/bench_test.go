package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/apache/thrift/lib/go/thrift"
	"go.uber.org/goleak"
)

// Every scenario stops its servers and closes its connections. IgnoreCurrent
// leaves out the goroutines of the default pool ants starts when it is
// imported, which no test owns.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m, goleak.IgnoreCurrent()) }

// requiredKeys are the JSON keys every run must have.
var requiredKeys = []string{
	"batch_vs_sequential_100", "batch_vs_bulk_100", "batch_vs_parallel_conns_100",
	"fanout_efficiency_256x5ms", "throughput_calls_per_s", "throughput_vs_unbatched",
	"per_call_cost_10k_vs_100", "autobatch_vs_sequential_100",
	"zstd_speed_vs_stdlib_zlib", "zstd_size_vs_stdlib_zlib", "s2_speed_vs_stdlib_zlib",
}

// TestRunReportsEveryFigure runs every scenario at toy sizes, once, and
// checks the output, not the speed: the JSON has every key, under both
// connectivity check settings where the scenario involves a server, each
// with a positive finite value; the table names every key; the chart is an
// SVG.
func TestRunReportsEveryFigure(t *testing.T) {
	ctx := context.Background()
	res, err := measureAll(ctx, &options{plan: testPlan()})
	if err != nil {
		t.Fatal(err)
	}
	b, err := res.JSON()
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]float64
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("the JSON does not decode: %v\n%s", err, b)
	}
	for _, key := range requiredKeys {
		for _, k := range []string{key, key + "_check0"} {
			if strings.HasSuffix(k, "_check0") && (strings.HasPrefix(k, "zstd") || strings.HasPrefix(k, "s2")) {
				continue // no server involved: measured once
			}
			v, ok := got[k]
			if !ok {
				t.Errorf("the JSON has no key %s", k)
				continue
			}
			if v <= 0 || math.IsInf(v, 0) || math.IsNaN(v) {
				t.Errorf("%s = %v, want a positive finite number", k, v)
			}
		}
	}
	for k, v := range got {
		if v <= 0 || math.IsInf(v, 0) || math.IsNaN(v) {
			t.Errorf("%s = %v, want a positive finite number", k, v)
		}
	}

	var table bytes.Buffer
	if err := res.writeTable(&table); err != nil {
		t.Fatal(err)
	}
	for k := range got {
		if !strings.Contains(table.String(), k) {
			t.Errorf("the table does not show %s", k)
		}
	}

	chart := filepath.Join(t.TempDir(), "chart.svg")
	if err := writeChart(chart, "test", res.sweep); err != nil {
		t.Fatal(err)
	}
	svg, err := os.ReadFile(chart)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(svg, []byte("<svg")) {
		t.Errorf("the chart is not an SVG: %.100s", svg)
	}
}

// TestSlowConnPassesEveryByte sends data both ways through a slow
// connection and checks it arrives whole and is counted.
func TestSlowConnPassesEveryByte(t *testing.T) {
	a, b := net.Pipe()
	line := newSlowLine(1e9)
	slow := line.wrap(a)
	want := bytes.Repeat([]byte("thriftbatch "), 3*linkChunk/12)
	errs := make(chan error, 1)
	go func() {
		_, err := slow.Write(want)
		errs <- err
	}()
	got := make([]byte, len(want))
	if _, err := io.ReadFull(b, got); err != nil {
		t.Fatal(err)
	}
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	go func() {
		_, err := b.Write(want)
		errs <- err
	}()
	if _, err := io.ReadFull(slow, got); err != nil {
		t.Fatal(err)
	}
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Error("the bytes read differ from those written")
	}
	if n := line.bytes(); n != int64(2*len(want)) {
		t.Errorf("the line counted %d bytes, want %d", n, 2*len(want))
	}
	if err := errors.Join(slow.Close(), b.Close()); err != nil {
		t.Error(err)
	}
}

// TestMedianOfOddAndEvenCounts checks the median the ratios are built on.
func TestMedianOfOddAndEvenCounts(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{7}, 7},
		{nil, 0},
	} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// BenchmarkHundredGetProduct times the ways of making 100 getProduct calls
// against one in-process server, for profiling with -cpuprofile and
// -benchmem; the ratios users read come from go run ./bench.
//
//	go test -run XXX -bench HundredGetProduct -benchmem ./bench
func BenchmarkHundredGetProduct(b *testing.B) {
	for _, check := range []time.Duration{thrift.ServerConnectivityCheckInterval, 0} {
		b.Run(fmt.Sprintf("check=%v", check), func(b *testing.B) {
			defer func(was time.Duration) { thrift.ServerConnectivityCheckInterval = was }(thrift.ServerConnectivityCheckInterval)
			thrift.ServerConnectivityCheckInterval = check
			ctx := context.Background()
			s, err := startServer(0, framed)
			if err != nil {
				b.Fatal(err)
			}
			defer func() {
				if err := s.stop(); err != nil {
					b.Error(err)
				}
			}()
			sh, err := s.shop(ctx)
			if err != nil {
				b.Fatal(err)
			}
			defer sh.Close()
			c, err := s.batchClient(ctx, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			hundred := ids(100, 1)
			for _, w := range []way{explicitBatch(c, hundred), bulk(sh, hundred), sequential(sh, hundred)} {
				b.Run(strings.ReplaceAll(w.name, " ", "_"), func(b *testing.B) {
					for b.Loop() {
						if err := w.run(ctx); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		})
	}
}
