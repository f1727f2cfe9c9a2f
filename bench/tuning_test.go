package main

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestTuningReportsEveryCell runs the tuning sweep at toy sizes (every
// profile at one pool size and cap, and once under Reject) and checks the
// output, not the speed: every cell is there with positive, finite figures,
// the table names every profile, the JSON has the cells under "sweep", and
// the chart is an SVG.
func TestTuningReportsEveryCell(t *testing.T) {
	ctx := context.Background()
	p := testPlan()
	cells, err := tuning(ctx, p.tune, profiles)
	if err != nil {
		t.Fatal(err)
	}
	want := len(profiles) * (len(p.tune.pools)*len(p.tune.caps) + len(p.tune.policies))
	if len(cells) != want {
		t.Fatalf("%d cells, want %d", len(cells), want)
	}
	for _, c := range cells {
		name := c.Profile + "/" + c.Policy
		switch {
		case c.Batches <= 0:
			t.Errorf("%s: no batch completed", name)
		case c.Calls == 0 && c.Rejected == 0:
			t.Errorf("%s: the processor's statistics counted no call", name)
		case c.Policy != "reject" && !(c.CallsPerSec > 0 && !math.IsInf(c.CallsPerSec, 0)):
			t.Errorf("%s: %v calls/s", name, c.CallsPerSec)
		case !(c.P50Millis > 0 && c.P99Millis >= c.P50Millis):
			t.Errorf("%s: p50 %v ms, p99 %v ms", name, c.P50Millis, c.P99Millis)
		case c.PoolSize <= 0 || c.MaxConcurrency <= 0:
			t.Errorf("%s: pool %d, cap %d", name, c.PoolSize, c.MaxConcurrency)
		}
	}

	var table bytes.Buffer
	if err := writeTuningTable(&table, p, thisMachine(), cells, 0); err != nil {
		t.Fatal(err)
	}
	for _, pr := range profiles {
		if !strings.Contains(table.String(), "== "+pr.name+":") {
			t.Errorf("the table has no section for %s:\n%s", pr.name, table.String())
		}
	}

	dir := t.TempDir()
	chart := filepath.Join(dir, "tuning.svg")
	var out bytes.Buffer
	o := options{plan: p, json: true, sweep: true, sweepChart: chart}
	o.plan.tune.policies = nil
	o.plan.tune.batch = 5
	if err := run(ctx, o, &out); err != nil {
		t.Fatal(err)
	}
	var got map[string][]cell
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("the JSON does not decode: %v\n%s", err, out.Bytes())
	}
	if n := len(got["sweep"]); n != len(profiles) {
		t.Errorf("the JSON has %d cells under \"sweep\", want %d", n, len(profiles))
	}
	svg, err := os.ReadFile(chart)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(svg, []byte("<svg")) {
		t.Errorf("the chart is not an SVG: %.100s", svg)
	}
}
