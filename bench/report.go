package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"strings"
	"time"
	"unicode/utf8"
)

// figure is one number the run measured.
type figure struct {
	key    string  // JSON key, without the _check0 suffix
	value  float64 // in unit
	unit   string  // "×", "calls/s", "allocs/call", "ms"
	detail string  // what was divided by what, in absolute times and calls/s
	// check is the thrift.ServerConnectivityCheckInterval the figure ran
	// under; noServer when no server was involved.
	check time.Duration
}

// noServer marks a figure that involves no server, so no connectivity check.
const noServer time.Duration = -1

// jsonKey is the figure's key in the JSON: suffixed _check0 for a figure
// measured with the connectivity check off.
func (f figure) jsonKey() string {
	if f.check == 0 {
		return f.key + "_check0"
	}
	return f.key
}

// goal is a target a figure should meet: at least min, or at most max.
type goal struct {
	atLeast, atMost float64
}

// goals are the targets of the figures that have one, by key.
var goals = map[string]goal{
	"batch_vs_sequential_100":     {atLeast: 30},
	"batch_vs_bulk_100":           {atMost: 1.5},
	"batch_vs_parallel_conns_100": {atLeast: 5},
	"fanout_efficiency_256x5ms":   {atLeast: 0.8},
	"throughput_calls_per_s":      {atLeast: 1_000_000},
	"throughput_vs_unbatched":     {atLeast: 10},
	"per_call_cost_10k_vs_100":    {atMost: 1.2},
	"autobatch_vs_sequential_100": {atLeast: 10},
	"zstd_speed_vs_stdlib_zlib":   {atLeast: 8},
	"zstd_size_vs_stdlib_zlib":    {atMost: 1.05},
	"s2_speed_vs_stdlib_zlib":     {atLeast: 30},
}

// String writes the goal as "≥ 30" or "≤ 1.5".
func (g goal) String() string {
	if g.atMost > 0 {
		return "≤ " + number(g.atMost)
	}
	return "≥ " + number(g.atLeast)
}

// met reports whether v meets the goal.
func (g goal) met(v float64) bool {
	if g.atMost > 0 {
		return v <= g.atMost
	}
	return v >= g.atLeast
}

// results is everything a run measured.
type results struct {
	plan     plan
	machine  machine
	sections []section
	sweep    []series
	took     time.Duration
}

// section is one scenario's figures, for all the settings it ran under.
type section struct {
	title   string
	figures []figure
	notes   []string
}

// JSON returns the figures as one JSON object, key to value.
func (r *results) JSON() ([]byte, error) {
	m := make(map[string]float64)
	for _, s := range r.sections {
		for _, f := range s.figures {
			m[f.jsonKey()] = f.value
		}
	}
	return json.MarshalIndent(m, "", "  ")
}

// writeTable writes the figures as text tables, one per scenario.
func (r *results) writeTable(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "thriftbatch bench (%s plan): catalog of %s products behind processor.New (defaults), compact protocol,\n", r.plan.name, thousands(products))
	b.WriteString("framed transport, TSimpleServer on 127.0.0.1, client and server in this process.\n")
	fmt.Fprintf(&b, "%s\n", r.machine)
	b.WriteString("Ratios divide medians of interleaved rounds (A, B, A, B, ...) after a warm-up round; absolute medians are beside them.\n")
	b.WriteString("check: thrift.ServerConnectivityCheckInterval during the figure (5ms is the library default; keys with _check0 had 0).\n")
	met, total := 0, 0
	for _, s := range r.sections {
		fmt.Fprintf(&b, "\n== %s\n", s.title)
		rows := [][]string{{"key", "check", "value", "target", "met", "measured"}}
		for _, f := range s.figures {
			g, ok := goals[f.key]
			target, verdict := "", ""
			if ok {
				target, verdict = g.String(), "no"
				total++
				if g.met(f.value) {
					verdict = "yes"
					met++
				}
			}
			rows = append(rows, []string{f.jsonKey(), checkLabel(f.check), number(f.value) + " " + f.unit, target, verdict, f.detail})
		}
		writeRows(&b, rows)
		for _, n := range s.notes {
			fmt.Fprintf(&b, "  %s\n", n)
		}
	}
	if len(r.sweep) > 0 {
		b.WriteString("\n== calls/s by batch size (check 5ms; the chart)\n")
		writeRows(&b, sweepRows(r.sweep))
	}
	fmt.Fprintf(&b, "\nTargets met: %d of %d figures with a target (both settings counted). Run took %s; %s.\n", met, total, r.took.Round(time.Second), loadNote())
	_, err := io.WriteString(w, b.String())
	return err
}

// checkLabel names a connectivity check interval for the table.
func checkLabel(d time.Duration) string {
	if d == noServer {
		return "-"
	}
	return d.String()
}

// writeRows writes rows as columns separated by two spaces, the first left
// aligned and the others right aligned, except the last, left aligned.
func writeRows(b *strings.Builder, rows [][]string) {
	widths := make([]int, len(rows[0]))
	for _, r := range rows {
		for i, c := range r {
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	for _, r := range rows {
		var line strings.Builder
		for i, c := range r {
			pad := strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c))
			switch {
			case i == len(r)-1:
				line.WriteString(c)
			case i == 0:
				line.WriteString(c + pad + "  ")
			default:
				line.WriteString(pad + c + "  ")
			}
		}
		b.WriteString(strings.TrimRight(line.String(), " ") + "\n")
	}
}

// machine describes where the run ran.
type machine struct {
	cpus, procs      int
	model, goVersion string
	loadBefore       string
}

func (m machine) String() string {
	return fmt.Sprintf("Machine: %d CPUs (GOMAXPROCS %d), %s, %s, load average before the run: %s.",
		m.cpus, m.procs, m.model, m.goVersion, m.loadBefore)
}

// thisMachine reads the CPU model and load average from /proc, where there is
// one.
func thisMachine() machine {
	return machine{
		cpus: runtime.NumCPU(), procs: runtime.GOMAXPROCS(0), model: cpuModel(),
		goVersion: runtime.Version(), loadBefore: loadAverage(),
	}
}

// cpuModel returns the first "model name" of /proc/cpuinfo.
func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// loadAverage returns the 1, 5 and 15 minute load averages of /proc/loadavg.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// loadNote is the load average after the run, for the footer.
func loadNote() string { return "load average after: " + loadAverage() }

// number formats v with three significant digits, or with thousands
// separators from 1,000.
func number(v float64) string {
	switch a := math.Abs(v); {
	case a >= 1000:
		return thousands(int64(math.Round(v)))
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.3f", v)
}

// thousands formats n with commas: 1,234,567.
func thousands(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	if neg {
		return "-" + s
	}
	return s
}

// duration formats d with three significant digits: 812 ns, 4.12 µs, 38.1 ms.
func duration(d time.Duration) string {
	switch {
	case d >= time.Second:
		return number(d.Seconds()) + " s"
	case d >= time.Millisecond:
		return number(float64(d)/1e6) + " ms"
	case d >= time.Microsecond:
		return number(float64(d)/1e3) + " µs"
	}
	return fmt.Sprintf("%d ns", d)
}

// describe says what a way measured: "one batch of 100: 512 µs, 195,312
// calls/s".
func describe(t timed) string {
	return fmt.Sprintf("%s (%s calls): %s, %s calls/s", t.name, thousands(int64(t.calls)), duration(t.median), thousands(int64(t.callsPerSec())))
}

// ratio returns a figure of a's median time divided by b's, with both in
// the detail.
func ratio(key string, a, b timed) figure {
	return figure{
		key: key, value: a.median.Seconds() / b.median.Seconds(), unit: "×",
		detail: describe(a) + " ÷ " + describe(b),
	}
}
