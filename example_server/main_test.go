package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/thriftbatch/thriftbatch/example_server/catalog"
	"github.com/thriftbatch/thriftbatch/pool"
)

// TestMain fails the package when a test leaves a goroutine behind: a
// server, a connection, a worker pool or an automatic batching client. The
// two goroutines of the default pool that ants starts at package init,
// which nothing uses or can release, are alive already and left out.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m, goleak.IgnoreCurrent()) }

func TestParseConfigDefaults(t *testing.T) {
	cfg, err := parseConfig(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.addr != "127.0.0.1:9090" || cfg.addrSet || cfg.protocol != "compact" || cfg.transport != "framed" ||
		cfg.products != 10_000 || cfg.latency != 0 || cfg.policy != pool.CallerRuns || cfg.level != zerolog.InfoLevel ||
		cfg.demo || cfg.demoCalls != 100 {
		t.Errorf("defaults: %+v", cfg)
	}
	if cfg, _ := parseConfig([]string{"-addr", "127.0.0.1:0", "-overload", "reject", "-log-level", "debug"}, io.Discard); cfg == nil ||
		!cfg.addrSet || cfg.policy != pool.Reject || cfg.level != zerolog.DebugLevel {
		t.Errorf("-addr, -overload and -log-level not applied: %+v", cfg)
	}
}

func TestParseConfigRefusesInvalidValues(t *testing.T) {
	tests := []struct {
		name string
		args []string
		flag string
		says string // what the message must say the flag accepts
	}{
		{"an unknown protocol", []string{"-protocol", "xml"}, "protocol", "binary, compact or json"},
		{"an unknown transport", []string{"-transport", "pigeon"}, "transport", "buffered, framed, zlib, header or http"},
		{"an unknown overload policy", []string{"-overload", "drop"}, "overload", "caller-runs, wait or reject"},
		{"an unknown log level", []string{"-log-level", "loud"}, "log-level", "info"},
		{"an empty catalog", []string{"-products", "0"}, "products", "at least 1"},
		{"a negative latency", []string{"-latency", "-1ms"}, "latency", "0 or more"},
		{"a pool of no workers", []string{"-pool-size", "0"}, "pool-size", "at least 1"},
		{"a negative concurrency cap", []string{"-max-concurrency", "-1"}, "max-concurrency", "0 (no cap) or more"},
		{"a negative call limit", []string{"-max-calls", "-1"}, "max-calls", "0 (no limit) or more"},
		{"a negative timeout ceiling", []string{"-max-timeout", "-1s"}, "max-timeout", "0 (none) or more"},
		{"a negative compression threshold", []string{"-compress-threshold", "-1"}, "compress-threshold", "0 or more"},
		{"a demo of no calls", []string{"-demo", "-demo-calls", "0"}, "demo-calls", "at least 1"},
		{"a demo batch of no calls", []string{"-demo", "-demo-batch", "0"}, "demo-batch", "at least 1"},
		{"JSON inside THeader", []string{"-transport", "header", "-protocol", "json"}, "protocol", "binary or compact"},
	}
	for _, tt := range tests {
		t.Run(tt.name+" is refused, naming the flag and what it accepts", func(t *testing.T) {
			var stderr bytes.Buffer
			_, err := parseConfig(tt.args, &stderr)
			var fe *flagError
			if !errors.As(err, &fe) {
				t.Fatalf("parseConfig(%q) = %v, want a *flagError", tt.args, err)
			}
			if fe.Flag != tt.flag || !strings.Contains(err.Error(), "-"+tt.flag) || !strings.Contains(err.Error(), tt.says) {
				t.Errorf("error %q: want it to name -%s and say %q", err, tt.flag, tt.says)
			}
			if !strings.Contains(stderr.String(), err.Error()) || !strings.Contains(stderr.String(), "Usage:") {
				t.Errorf("stderr does not show the error and the usage:\n%s", &stderr)
			}
		})
	}
}

func TestRunExitStatus(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want int
		says string // on stderr
	}{
		{"an invalid value exits with 2", []string{"-transport", "pigeon"}, exitUsage, `invalid value "pigeon" for flag -transport`},
		{"a malformed number exits with 2", []string{"-products", "many"}, exitUsage, "-products"},
		{"an unknown flag exits with 2", []string{"-color"}, exitUsage, "-color"},
		{"an argument that is not a flag exits with 2", []string{"serve"}, exitUsage, `unexpected argument "serve"`},
		{"-h exits with 0", []string{"-h"}, exitOK, "Usage: example_server"},
		{"a demo that finds something wrong exits with 1", []string{"-demo", "-products", "20", "-demo-calls", "10", "-max-calls", "5"}, exitError, "TOO_MANY_CALLS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if got := run(context.Background(), tt.args, &stdout, &stderr); got != tt.want {
				t.Errorf("run(%q) = %d, want %d; stderr:\n%s", tt.args, got, tt.want, &stderr)
			}
			if !strings.Contains(stderr.String(), tt.says) {
				t.Errorf("stderr does not say %q:\n%s", tt.says, &stderr)
			}
		})
	}
}

func TestServeAnswersUntilCanceledThenStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr lockedBuffer
	exit := make(chan int, 1)
	go func() { exit <- run(ctx, []string{"-addr", "127.0.0.1:0", "-products", "5"}, io.Discard, &stderr) }()

	addr := waitForLogField(t, &stderr, "addr")
	dial, err := newDialer(addr, "compact", "framed")
	if err != nil {
		t.Fatal(err)
	}
	c, err := dial.open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n, err := catalog.NewCatalogClient(c.tc).CountProducts(ctx)
	c.proto.Transport().Close()
	if err != nil || n != 5 {
		t.Fatalf("countProducts = %d, %v; want 5", n, err)
	}

	cancel()
	select {
	case code := <-exit:
		if code != exitOK {
			t.Errorf("exit status %d after cancel; stderr:\n%s", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("server still running 10s after cancel")
	}
	if !strings.Contains(stderr.String(), `"message":"example_server: stopped"`) {
		t.Errorf("no stop line in the log:\n%s", stderr.String())
	}
}

func TestDemoMeasuresAndChecksEveryRow(t *testing.T) {
	stacks := [][]string{
		{"-protocol", "compact", "-transport", "framed"},
		{"-protocol", "binary", "-transport", "buffered"},
		{"-protocol", "json", "-transport", "http"},
		{"-protocol", "binary", "-transport", "header"},
		{"-protocol", "compact", "-transport", "zlib"},
	}
	for _, stack := range stacks {
		t.Run(strings.Join(stack, " "), func(t *testing.T) {
			cfg, err := parseConfig(append([]string{"-demo", "-demo-calls", "10", "-demo-batch", "30", "-products", "50"}, stack...), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			if err := runDemo(context.Background(), cfg, zerolog.Nop(), &out); err != nil {
				t.Fatalf("demo: %v\n%s", err, &out)
			}
			for _, want := range []string{
				"10 × getProduct", "one by one, one connection", "one explicit batch", "automatic batching",
				"getProducts, the bulk method", "one batch of 30 × getProduct", "no compression", "zstd both ways",
				"Checked 600 products", "9 of 9 calls for ids beyond 50 raised NotFound",
			} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("output lacks %q:\n%s", want, &out)
				}
			}
		})
	}
}

func TestWriteTableAlignsColumns(t *testing.T) {
	var b strings.Builder
	writeTable(&b, [][]string{{"way", "time", "×"}, {"one by one", "4.1 ms", "1.0×"}, {"batch", "812.0 µs", ""}})
	want := "" +
		"way             time     ×\n" +
		"one by one    4.1 ms  1.0×\n" +
		"batch       812.0 µs\n"
	if b.String() != want {
		t.Errorf("table:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestThousands(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", -45000: "-45,000"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d) = %q, want %q", n, got, want)
		}
	}
}

// waitForLogField waits for a JSON log line on buf with the field name and
// returns its value.
func waitForLogField(t *testing.T, buf *lockedBuffer, name string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for line := range strings.Lines(buf.String()) {
			var fields map[string]any
			if json.Unmarshal([]byte(line), &fields) == nil {
				if v, ok := fields[name].(string); ok {
					return v
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no log line with %q within 10s:\n%s", name, buf.String())
	return ""
}

// lockedBuffer is a bytes.Buffer safe for concurrent use.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
