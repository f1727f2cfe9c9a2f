package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/thrift/lib/go/thrift"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/thriftbatch/thriftbatch/client"
	"github.com/thriftbatch/thriftbatch/example_server/catalog"
	"github.com/thriftbatch/thriftbatch/example_server/store"
	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/internal/poll"
	"github.com/thriftbatch/thriftbatch/internal/wire"
	"github.com/thriftbatch/thriftbatch/pool"
	"github.com/thriftbatch/thriftbatch/processor"
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
		cfg.demo || cfg.demoCalls != 100 || cfg.statsInterval != 0 || cfg.poolPrealloc || cfg.workerExpiry != pool.DefaultExpiry {
		t.Errorf("defaults: %+v", cfg)
	}
	if cfg, _ := parseConfig([]string{"-addr", "127.0.0.1:0", "-overload", "reject", "-log-level", "debug"}, io.Discard); cfg == nil ||
		!cfg.addrSet || cfg.policy != pool.Reject || cfg.level != zerolog.DebugLevel {
		t.Errorf("-addr, -overload and -log-level not applied: %+v", cfg)
	}
	if cfg, _ := parseConfig([]string{"-stats-interval", "1m30s", "-pool-prealloc", "-worker-expiry", "250ms"}, io.Discard); cfg == nil ||
		cfg.statsInterval != 90*time.Second || !cfg.poolPrealloc || cfg.workerExpiry != 250*time.Millisecond {
		t.Errorf("-stats-interval, -pool-prealloc and -worker-expiry not applied: %+v", cfg)
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
		{"an empty catalog", []string{"-products", "0"}, "products", "1 to 10,000,000"},
		{"a catalog too big to build", []string{"-products", "2000000000"}, "products", "1 to 10,000,000"},
		{"a pre-allocated pool over pool.MaxPreAllocSize", []string{"-pool-prealloc", "-pool-size", "2000000"}, "pool-size", "at most 1,048,576 (pool.MaxPreAllocSize) with -pool-prealloc"},
		{"a negative latency", []string{"-latency", "-1ms"}, "latency", "0 or more"},
		{"a pool of no workers", []string{"-pool-size", "0"}, "pool-size", "at least 1"},
		{"a negative concurrency cap", []string{"-max-concurrency", "-1"}, "max-concurrency", "0 (no cap) or more"},
		{"a negative call limit", []string{"-max-calls", "-1"}, "max-calls", "0 (no limit) or more"},
		{"a negative timeout ceiling", []string{"-max-timeout", "-1s"}, "max-timeout", "0 (none) or more"},
		{"a negative compression threshold", []string{"-compress-threshold", "-1"}, "compress-threshold", "0 or more"},
		{"a negative stats interval", []string{"-stats-interval", "-1s"}, "stats-interval", "0 (never) or more"},
		{"a worker expiry of zero", []string{"-worker-expiry", "0"}, "worker-expiry", "more than 0"},
		{"a negative worker expiry", []string{"-worker-expiry", "-1s"}, "worker-expiry", "more than 0"},
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
		{"a malformed duration exits with 2", []string{"-stats-interval", "often"}, exitUsage, "-stats-interval"},
		{"a negative stats interval exits with 2", []string{"-stats-interval", "-5s"}, exitUsage, `invalid value "-5s" for flag -stats-interval`},
		{"an unknown flag exits with 2", []string{"-color"}, exitUsage, "-color"},
		{"an argument that is not a flag exits with 2", []string{"serve"}, exitUsage, `unexpected argument "serve"`},
		{"a pre-allocated pool too big exits with 2", []string{"-pool-prealloc", "-pool-size", "2000000"}, exitUsage, `invalid value "2000000" for flag -pool-size`},
		{"-h exits with 0", []string{"-h"}, exitOK, "Usage: example_server"},
		{"-h documents the drain", []string{"-h"}, exitOK, "up to 5s to finish"},
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

func TestStatsFields(t *testing.T) {
	full := processor.Stats{
		Pool: pool.Stats{
			Capacity: 64, Running: 5, Idle: 3, Free: 59, WaitingBatches: 2, BatchesInFlight: 4, CallsInFlight: 6,
			Batches: 40, Calls: 1234, QueueWait: 10 * time.Millisecond, Rejected: 7, Inline: 8, Abandoned: 9,
		},
		MaxConcurrency: 16, BatchesInFlight: 5, Refused: 11,
	}
	tests := []struct {
		name  string
		stats processor.Stats
		want  map[string]any
	}{
		{"every figure has its field, and the mean queue wait is QueueWait/Batches in ms", full, map[string]any{
			"pool_capacity": 64.0, "running": 5.0, "idle": 3.0, "free": 59.0, "waiting_batches": 2.0,
			"batches_in_flight": 5.0, "calls_in_flight": 6.0, "batches": 40.0, "calls": 1234.0,
			"rejected": 7.0, "inline": 8.0, "abandoned": 9.0, "mean_queue_wait_ms": 0.25,
			"max_concurrency": 16.0, "refused": 11.0,
		}},
		{"before any batch there is no mean queue wait", processor.Stats{Pool: pool.Stats{Capacity: 8, Free: 8}, MaxConcurrency: 256}, map[string]any{
			"pool_capacity": 8.0, "running": 0.0, "idle": 0.0, "free": 8.0, "waiting_batches": 0.0,
			"batches_in_flight": 0.0, "calls_in_flight": 0.0, "batches": 0.0, "calls": 0.0,
			"rejected": 0.0, "inline": 0.0, "abandoned": 0.0, "max_concurrency": 256.0, "refused": 0.0,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			log := zerolog.New(&buf)
			statsFields(log.Info(), tt.stats).Msg(statsMessage)
			var got map[string]any
			if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
				t.Fatalf("not one JSON line: %v\n%s", err, &buf)
			}
			tt.want["level"], tt.want["message"] = "info", statsMessage
			if !maps.Equal(got, tt.want) {
				t.Errorf("line:\n%v\nwant:\n%v", got, tt.want)
			}
		})
	}
}

func TestLogStatsLogsEveryIntervalUntilStopped(t *testing.T) {
	var buf lockedBuffer
	var asked atomic.Int64
	stop := logStats(func() processor.Stats {
		return processor.Stats{Pool: pool.Stats{Capacity: 3, Batches: uint64(asked.Add(1))}}
	}, time.Millisecond, zerolog.New(&buf))
	if !poll.Until(10*time.Second, func() bool { return countLines(buf.String(), statsMessage) >= 3 }) {
		stop()
		t.Fatalf("fewer than 3 stats lines 10 s after start:\n%s", buf.String())
	}
	stop()
	n := countLines(buf.String(), statsMessage)
	time.Sleep(20 * time.Millisecond)
	if m := countLines(buf.String(), statsMessage); m != n {
		t.Errorf("%d stats lines after stop returned, %d before", m, n)
	}
	stop() // a second stop returns at once
	if !strings.Contains(buf.String(), `"pool_capacity":3`) {
		t.Errorf("the lines do not carry the stats:\n%s", buf.String())
	}
}

func TestServeLogsStatsEveryIntervalAndStopsWithTheServer(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr lockedBuffer
	exit := make(chan int, 1)
	go func() {
		exit <- run(ctx, []string{"-addr", "127.0.0.1:0", "-products", "5", "-stats-interval", "5ms", "-pool-size", "7"}, io.Discard, &stderr)
	}()
	if !poll.Until(10*time.Second, func() bool { return countLines(stderr.String(), statsMessage) >= 2 }) {
		cancel()
		<-exit
		t.Fatalf("fewer than 2 stats lines within 10 s:\n%s", stderr.String())
	}
	cancel()
	select {
	case code := <-exit:
		if code != exitOK {
			t.Errorf("exit status %d; stderr:\n%s", code, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("server still running 10 s after cancel")
	}
	// The stats stop before the server does: no line after "stopped".
	out := stderr.String()
	_, after, _ := strings.Cut(out, `"message":"example_server: stopped"`)
	if strings.Contains(after, statsMessage) || !strings.Contains(out, `"pool_capacity":7,`) {
		t.Errorf("want stats lines with pool_capacity 7, none after the stop line:\n%s", out)
	}
}

// TestTuningFlagsReachTheProcessor builds the processor from parsed flags,
// as the server does, and checks that each tuning flag took effect.
func TestTuningFlagsReachTheProcessor(t *testing.T) {
	getProduct := func(t *testing.T, id int64) *batch.Request {
		b, err := wire.Encode(context.Background(), wire.Binary, nil, &catalog.CatalogGetProductArgs{ID: id})
		if err != nil {
			t.Fatal(err)
		}
		return &batch.Request{Method: "getProduct", Arguments: b}
	}
	getProducts := func(t *testing.T, n int) *batch.BatchRequest {
		req := &batch.BatchRequest{AcceptCodecs: []batch.Codec{batch.Codec_ZSTD}}
		for range n {
			req.Requests = append(req.Requests, getProduct(t, 1))
		}
		return req
	}
	tests := []struct {
		name    string
		args    []string
		latency time.Duration // of every handler call
		check   func(t *testing.T, p *processor.Processor)
	}{
		{"-pool-size, -max-concurrency and -pool-prealloc", []string{"-pool-size", "3", "-max-concurrency", "7", "-pool-prealloc"}, 0, func(t *testing.T, p *processor.Processor) {
			if s := p.Stats(); s.Pool.Capacity != 3 || s.MaxConcurrency != 7 {
				t.Errorf("Capacity = %d, MaxConcurrency = %d; want 3, 7", s.Pool.Capacity, s.MaxConcurrency)
			}
			if err := p.SetPoolSize(4); err == nil {
				t.Error("SetPoolSize succeeded on a pool built with -pool-prealloc")
			}
		}},
		{"without -pool-prealloc the pool can be resized", nil, 0, func(t *testing.T, p *processor.Processor) {
			if err := p.SetPoolSize(4); err != nil || p.Stats().Pool.Capacity != 4 {
				t.Errorf("SetPoolSize(4) = %v, Capacity %d", err, p.Stats().Pool.Capacity)
			}
		}},
		{"-worker-expiry", []string{"-worker-expiry", "5ms"}, 0, func(t *testing.T, p *processor.Processor) {
			if _, err := pool.Run(context.Background(), p.Pool(), 4, 0, func(i int) int { return i }); err != nil {
				t.Fatal(err)
			}
			var s pool.Stats
			if !poll.Until(10*time.Second, func() bool { s = p.Stats().Pool; return s.Idle == 0 && s.Running == 0 }) {
				t.Fatalf("idle workers still alive 10 s after a batch, with a 5 ms expiry: %+v", s)
			}
		}},
		{"-overload reject", []string{"-overload", "reject", "-pool-size", "1"}, 0, func(t *testing.T, p *processor.Processor) {
			started, release := make(chan struct{}), make(chan struct{})
			done := make(chan struct{})
			go func() {
				defer close(done)
				pool.Run(context.Background(), p.Pool(), 1, 0, func(int) int { close(started); <-release; return 0 })
			}()
			<-started
			res, err := pool.Run(context.Background(), p.Pool(), 1, 0, func(i int) int { return i })
			close(release)
			<-done
			if err != nil || res.Status(0) != pool.StatusOverloaded {
				t.Errorf("a batch on the saturated pool: %v, %v; want StatusOverloaded", err, res.Status(0))
			}
		}},
		{"-max-calls", []string{"-max-calls", "2"}, 0, func(t *testing.T, p *processor.Processor) {
			res := executeInMemory(t, p, getProducts(t, 3))
			if res.Error == nil || res.Error.Code != batch.BatchErrorCode_TOO_MANY_CALLS {
				t.Errorf("a batch of 3 calls: %+v, want TOO_MANY_CALLS", res)
			}
		}},
		{"-max-timeout", []string{"-max-timeout", "20ms"}, time.Minute, func(t *testing.T, p *processor.Processor) {
			res := executeInMemory(t, p, &batch.BatchRequest{Requests: []*batch.Request{getProduct(t, 1)}})
			if res.Success == nil || res.Success.Responses[0].Error == nil || res.Success.Responses[0].Error.Type != batch.CALL_DEADLINE_EXCEEDED {
				t.Errorf("a call slower than -max-timeout: %+v, want CALL_DEADLINE_EXCEEDED", res)
			}
		}},
		{"-compress-threshold above the answer's size", []string{"-compress-threshold", "100000000"}, 0, func(t *testing.T, p *processor.Processor) {
			if res := executeInMemory(t, p, getProducts(t, 100)); res.Success == nil || res.Success.GetCodec() != batch.Codec_NONE {
				t.Errorf("answer compressed under the threshold: %+v", res)
			}
		}},
		{"-compress-threshold 0", []string{"-compress-threshold", "0"}, 0, func(t *testing.T, p *processor.Processor) {
			if res := executeInMemory(t, p, getProducts(t, 100)); res.Success == nil || res.Success.GetCodec() != batch.Codec_ZSTD {
				t.Errorf("answer not compressed with a threshold of 0: %+v", res)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := parseConfig(tt.args, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			p, err := processor.New(catalog.NewCatalogProcessor(store.New(5, tt.latency)), processorOptions(cfg, zerolog.Nop())...)
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close(context.Background())
			tt.check(t, p)
		})
	}
}

// executeInMemory passes one executeBatch through p as a server would, with
// the binary protocol, and returns the decoded result.
func executeInMemory(t *testing.T, p thrift.TProcessor, req *batch.BatchRequest) *batch.BatchServiceExecuteBatchResult {
	t.Helper()
	ctx := context.Background()
	in, out := thrift.NewTMemoryBuffer(), thrift.NewTMemoryBuffer()
	w := thrift.NewTBinaryProtocolConf(in, nil)
	w.WriteMessageBegin(ctx, "executeBatch", thrift.CALL, 1)
	(&batch.BatchServiceExecuteBatchArgs{Request: req}).Write(ctx, w)
	w.WriteMessageEnd(ctx)
	if ok, err := p.Process(ctx, thrift.NewTBinaryProtocolConf(in, nil), thrift.NewTBinaryProtocolConf(out, nil)); !ok {
		t.Fatalf("Process = %v, %v", ok, err)
	}
	r := thrift.NewTBinaryProtocolConf(out, nil)
	if _, typ, _, err := r.ReadMessageBegin(ctx); err != nil || typ != thrift.REPLY {
		t.Fatalf("answer header: type %v, %v; want a REPLY", typ, err)
	}
	var res batch.BatchServiceExecuteBatchResult
	if err := res.Read(ctx, r); err != nil {
		t.Fatal(err)
	}
	return &res
}

// countLines counts the JSON log lines in s whose message is msg.
func countLines(s, msg string) int {
	n := 0
	for line := range strings.Lines(s) {
		var fields map[string]any
		if json.Unmarshal([]byte(line), &fields) == nil && fields["message"] == msg {
			n++
		}
	}
	return n
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

// TestThriftLibraryLinesGoThroughZerolog sends a connection something that
// is not a frame: the Thrift library logs "error processing request"
// through slog, which run routes to its JSON lines and their level, and
// restores when it returns.
func TestThriftLibraryLinesGoThroughZerolog(t *testing.T) {
	for _, tt := range []struct {
		level string
		shown bool
	}{{"info", true}, {"error", true}, {"fatal", false}, {"disabled", false}} {
		t.Run("-log-level "+tt.level, func(t *testing.T) {
			prevSlog, prevOut := slog.Default(), stdlog.Writer()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var stderr lockedBuffer
			exit := make(chan int, 1)
			ln, err := net.Listen("tcp", "127.0.0.1:0") // a free port, given back for the server
			if err != nil {
				t.Fatal(err)
			}
			addr := ln.Addr().String()
			ln.Close()
			go func() {
				exit <- run(ctx, []string{"-addr", addr, "-products", "1", "-log-level", tt.level}, io.Discard, &stderr)
			}()
			listening := poll.Until(10*time.Second, func() bool {
				c, err := net.Dial("tcp", addr)
				if err == nil {
					c.Close()
				}
				return err == nil
			})
			if !listening {
				cancel()
				<-exit
				t.Fatalf("the server did not listen on %s within 10 s:\n%s", addr, stderr.String())
			}
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			io.WriteString(c, "GET / HTTP/1.0\r\n\r\n")
			io.Copy(io.Discard, c) // until the server hangs up
			c.Close()
			if tt.shown && !poll.Until(10*time.Second, func() bool { return countLines(stderr.String(), "error processing request") == 1 }) {
				t.Errorf("no JSON line for the bad frame within 10 s:\n%s", stderr.String())
			}
			cancel()
			if code := <-exit; code != exitOK {
				t.Errorf("exit status %d", code)
			}
			for line := range strings.Lines(stderr.String()) {
				var fields map[string]any
				if err := json.Unmarshal([]byte(line), &fields); err != nil {
					t.Errorf("a line is not JSON: %q", line)
				}
				if fields["message"] == "error processing request" && (fields["level"] != "error" || !strings.Contains(fmt.Sprint(fields["err"]), "frame size")) {
					t.Errorf("the library's line lacks its level or error: %q", line)
				}
			}
			if !tt.shown && stderr.String() != "" {
				t.Errorf("lines logged at -log-level %s:\n%s", tt.level, stderr.String())
			}
			if slog.Default() != prevSlog || stdlog.Writer() != prevOut {
				t.Error("run did not restore slog's default logger and the log package's output")
			}
		})
	}
}

func TestStartupFailuresArePrintedWhateverTheLogLevel(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, level := range []string{"info", "fatal", "panic", "disabled"} {
		for _, tt := range []struct {
			name string
			args []string
			says string
		}{
			{"a port in use, framed", []string{"-addr", busy.Addr().String()}, "address already in use"},
			{"a port in use, http", []string{"-addr", busy.Addr().String(), "-transport", "http"}, "address already in use"},
			{"an address that is not one", []string{"-addr", "127.0.0.1:99999"}, "invalid port"},
		} {
			t.Run(tt.name+", -log-level "+level, func(t *testing.T) {
				var stderr bytes.Buffer
				args := append([]string{"-log-level", level, "-products", "1"}, tt.args...)
				if code := run(context.Background(), args, io.Discard, &stderr); code != exitError {
					t.Errorf("exit status %d, want %d", code, exitError)
				}
				if !strings.Contains(stderr.String(), tt.says) || countLines(stderr.String(), "example_server: failed") != 1 {
					t.Errorf("stderr does not say %q in one JSON line:\n%s", tt.says, &stderr)
				}
			})
		}
	}
}

// TestShutdownCutsOffWhatOutlastsTheDrain stops a server whose calls take
// 2 s with a 300 ms drain while a batch and a one-by-one call run: on
// every transport, stop closes their connections, counts them and returns
// no error, and the stop line is a warn line saying so. An idle client
// holds stop up to the drain and is not counted.
func TestShutdownCutsOffWhatOutlastsTheDrain(t *testing.T) {
	for _, transport := range []string{"framed", "buffered", "http"} {
		t.Run(transport, func(t *testing.T) {
			ctx := context.Background()
			cfg := testConfig(t, "-transport", transport, "-latency", "2s", "-products", "5")
			cfg.drain = 300 * time.Millisecond
			s, err := startServer(cfg, "127.0.0.1:0", store.New(cfg.products, cfg.latency), zerolog.Nop())
			if err != nil {
				t.Fatal(err)
			}
			dial, idle := openCompact(t, s.addr.String(), transport)
			defer idle.proto.Transport().Close()
			bc, err := dial.client(ctx, uncompressed...)
			if err != nil {
				t.Fatal(err)
			}
			defer bc.Close()
			single, err := dial.open(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer single.proto.Transport().Close()
			var wg sync.WaitGroup
			wg.Go(func() { inBatch(ctx, bc, []int64{1, 2}) })
			wg.Go(func() { catalog.NewCatalogClient(single.tc).GetProduct(ctx, 3) })
			if !poll.Until(10*time.Second, func() bool { c := s.inFlight(); return c.batches == 1 && c.calls == 1 }) {
				t.Fatalf("in flight: %+v, want 1 batch and 1 call", s.inFlight())
			}
			start := time.Now()
			cut, err := s.stop()
			took := time.Since(start)
			wg.Wait()
			if err != nil || cut.batches != 1 || cut.calls != 1 || cut.closeErr != nil {
				t.Errorf("stop = %+v, %v; want 1 batch and 1 call cut off, and no error", cut, err)
			}
			if took > 1500*time.Millisecond {
				t.Errorf("stop took %v with a 300 ms drain and calls of 2 s", took)
			}
			var buf bytes.Buffer
			logStopped(zerolog.New(&buf), cut, cfg.drain)
			var line map[string]any
			if err := json.Unmarshal(buf.Bytes(), &line); err != nil || line["level"] != "warn" ||
				line["batches_cut_off"] != 1.0 || line["single_calls_cut_off"] != 1.0 || line["drain"] != "300ms" {
				t.Errorf("stop line %s", &buf)
			}
		})
	}
	t.Run("an idle client holds stop up to the drain and is not cut off", func(t *testing.T) {
		cfg := testConfig(t, "-products", "5")
		cfg.drain = 300 * time.Millisecond
		s, err := startServer(cfg, "127.0.0.1:0", store.New(cfg.products, 0), zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		_, idle := openCompact(t, s.addr.String(), "framed")
		defer idle.proto.Transport().Close()
		if _, err := catalog.NewCatalogClient(idle.tc).CountProducts(context.Background()); err != nil {
			t.Fatal(err)
		}
		// The client has its answer before the server's goroutine is back
		// in its read: one that has not got there yet sees the stop and
		// ends the connection at once, as it should. Idle means waiting in
		// that read.
		if !poll.Until(10*time.Second, func() bool { return connsWaitingToRead() == 1 }) {
			t.Fatalf("%d connections wait for a request, want 1", connsWaitingToRead())
		}
		done := make(chan struct{})
		var cut cutOff
		start := time.Now()
		go func() { defer close(done); cut, err = s.stop() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("stop still waiting for an idle client 10 s after a 300 ms drain")
		}
		if took := time.Since(start); took < cfg.drain {
			t.Errorf("stop returned after %v, before the %v drain an idle client holds it for", took, cfg.drain)
		}
		if err != nil || !cut.none() {
			t.Errorf("stop = %+v, %v; want nothing cut off and no error", cut, err)
		}
		var buf bytes.Buffer
		logStopped(zerolog.New(&buf), cut, cfg.drain)
		if countLines(buf.String(), "example_server: stopped") != 1 || !strings.Contains(buf.String(), `"level":"info"`) {
			t.Errorf("stop line %s", &buf)
		}
	})
}

func TestHTTPAnswersAGarbagePostWith400(t *testing.T) {
	cfg := testConfig(t, "-transport", "http", "-products", "5")
	s, err := startServer(cfg, "127.0.0.1:0", store.New(cfg.products, 0), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer stopClean(t, s)
	url := "http://" + s.addr.String() + "/"
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for _, body := range []string{"garbage", ""} {
		res, err := hc.Post(url, "application/x-thrift", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		text, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusBadRequest || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/plain") ||
			!strings.Contains(string(text), "not a Thrift request") {
			t.Errorf("POST %q: %s, %s, %q; want 400 and a line of text", body, res.Status, res.Header.Get("Content-Type"), text)
		}
	}

	// Real requests are served as before: replies gzipped when the client
	// accepts gzip (each a whole stream from a pooled writer), an unknown
	// method's exception with 200.
	msg := compactMessage("countProducts", thrift.CALL, &catalog.CatalogCountProductsArgs{})
	for i := range 3 {
		req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(msg))
		req.Header.Set("Accept-Encoding", "gzip")
		res, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		gz, _ := io.ReadAll(res.Body)
		res.Body.Close()
		var reply []byte
		if zr, err := gzip.NewReader(bytes.NewReader(gz)); err == nil {
			reply, err = io.ReadAll(zr)
			if err != nil {
				reply = nil
			}
		}
		if res.StatusCode != http.StatusOK || res.Header.Get("Content-Encoding") != "gzip" || len(reply) == 0 || reply[0] != thrift.COMPACT_PROTOCOL_ID {
			t.Errorf("countProducts accepting gzip, #%d: %s, Content-Encoding %q, body % x, gunzipped % x", i+1, res.Status, res.Header.Get("Content-Encoding"), gz, reply)
		}
	}
	_, c := openCompact(t, s.addr.String(), "http")
	defer c.proto.Transport().Close()
	if n, err := catalog.NewCatalogClient(c.tc).CountProducts(context.Background()); n != 5 || err != nil {
		t.Errorf("countProducts = %d, %v", n, err)
	}
	var tae thrift.TApplicationException
	if _, err := c.tc.Call(context.Background(), "noSuchMethod", &catalog.CatalogCountProductsArgs{}, &catalog.CatalogCountProductsResult{}); !errors.As(err, &tae) || tae.TypeId() != thrift.UNKNOWN_METHOD {
		t.Errorf("an unknown method: %v, want its UNKNOWN_METHOD exception", err)
	}
}

func TestCompareBytes(t *testing.T) {
	for _, tt := range []struct {
		n, base int64
		want    string
	}{
		{607, 612, "about the same size"}, {612, 612, "about the same size"}, {640, 612, "about the same size"},
		{100, 490, "4.9× fewer bytes"}, {1000, 400, "2.5× more bytes"},
	} {
		if got := compareBytes(tt.n, tt.base); got != tt.want {
			t.Errorf("compareBytes(%d, %d) = %q, want %q", tt.n, tt.base, got, tt.want)
		}
	}
}

// TestClosedConnectionsLogAtDebug: the library's error on a connection the
// server closed at the end of the drain is a debug line, not an error.
func TestClosedConnectionsLogAtDebug(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(closedAtDebug{zerolog.NewSlogHandler(zerolog.New(&buf).Level(zerolog.DebugLevel))}).With("conn", 1)
	log.Error("error processing request", "err", thrift.NewTTransportExceptionFromError(fmt.Errorf("read tcp: %w", net.ErrClosed)))
	log.Error("error processing request", "err", errors.New("Incorrect frame size"))
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], `"level":"debug"`) || !strings.Contains(lines[0], `"conn":1`) || !strings.Contains(lines[1], `"level":"error"`) {
		t.Errorf("lines:\n%s", &buf)
	}
	buf.Reset()
	slog.New(closedAtDebug{zerolog.NewSlogHandler(zerolog.New(&buf).Level(zerolog.InfoLevel))}).Error("x", "err", net.ErrClosed)
	if buf.Len() != 0 {
		t.Errorf("a debug line logged at info level: %s", &buf)
	}
}

// TestPutProductRefusalReachesTheClient: a Thrift client learns why a
// product with id 0 was refused, one by one and in a batch.
func TestPutProductRefusalReachesTheClient(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t, "-products", "5")
	s, err := startServer(cfg, "127.0.0.1:0", store.New(cfg.products, 0), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer stopClean(t, s)
	dial, c := openCompact(t, s.addr.String(), "framed")
	defer c.proto.Transport().Close()
	var tae thrift.TApplicationException
	err = catalog.NewCatalogClient(c.tc).PutProduct(ctx, &catalog.Product{ID: 0, Name: "Test Kettle"})
	if !errors.As(err, &tae) || !strings.Contains(tae.Error(), "product id 0 refused: ids start at 1") {
		t.Errorf("putProduct(id 0) = %v, want a TApplicationException saying why", err)
	}
	bc, err := dial.client(ctx, uncompressed...)
	if err != nil {
		t.Fatal(err)
	}
	defer bc.Close()
	b := bc.NewBatch()
	call := client.Add(b, "putProduct", &catalog.CatalogPutProductArgs{Product: &catalog.Product{ID: -3}}, &catalog.CatalogPutProductResult{})
	if err := b.Execute(ctx); err != nil {
		t.Fatal(err)
	}
	if err := call.Err(); err == nil || !strings.Contains(err.Error(), "product id -3 refused: ids start at 1") {
		t.Errorf("putProduct(id -3) in a batch: %v, want an error saying why", err)
	}
}

// failingViews is the store with a recordView that always fails.
type failingViews struct{ *store.Handler }

func (failingViews) RecordView(context.Context, int64) error { return errors.New("views store down") }

// TestHTTPAnswersAFailingOnewayCallWith200: a oneway call whose handler
// fails was still a request the server read; only unreadable ones get 400.
func TestHTTPAnswersAFailingOnewayCallWith200(t *testing.T) {
	cfg := testConfig(t, "-transport", "http", "-products", "5")
	s, err := startServer(cfg, "127.0.0.1:0", failingViews{store.New(cfg.products, 0)}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer stopClean(t, s)
	msg := compactMessage("recordView", thrift.ONEWAY, &catalog.CatalogRecordViewArgs{ID: 1})
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	res, err := hc.Post("http://"+s.addr.String()+"/", "application/x-thrift", bytes.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Errorf("a oneway recordView whose handler failed: %s, want 200", res.Status)
	}
}

// TestConnSetClosesWhatArrivesAfterCloseAll: a connection accepted as the
// server stops, after its connections were closed, is closed too, not left
// open with nobody serving it.
func TestConnSetClosesWhatArrivesAfterCloseAll(t *testing.T) {
	set := &connSet{conns: map[*trackedConn]struct{}{}}
	set.closeAll()
	client, server := net.Pipe()
	defer client.Close()
	set.add(server)
	client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := client.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("reading from a connection added after closeAll: %v, want EOF (closed)", err)
	}
}

// compactMessage returns a message named name of typeID with sequence id 1
// carrying args, in the compact protocol, as an HTTP body.
func compactMessage(name string, typeID thrift.TMessageType, args thrift.TStruct) []byte {
	var msg bytes.Buffer
	w := thrift.NewTCompactProtocolConf(thrift.NewStreamTransportW(&msg), nil)
	w.WriteMessageBegin(context.Background(), name, typeID, 1)
	args.Write(context.Background(), w)
	w.WriteMessageEnd(context.Background())
	w.Flush(context.Background())
	return msg.Bytes()
}

// openCompact dials addr with the compact protocol over transport and opens
// a connection, which the caller closes (before it stops the server, or the
// stop waits for it); it returns the dialer too, for more connections.
func openCompact(t *testing.T, addr, transport string) (*dialer, *conn) {
	t.Helper()
	dial, err := newDialer(addr, "compact", transport)
	if err != nil {
		t.Fatal(err)
	}
	c, err := dial.open(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return dial, c
}

// TestCutOffSaysWhatWasCutOff: the stop's message names the counts, and the
// processor's error only when there is one.
func TestCutOffSaysWhatWasCutOff(t *testing.T) {
	if got := (cutOff{batches: 2, calls: 1}).String(); got != "2 batches and 1 one-by-one calls cut off at the end of the drain" {
		t.Errorf("without a Close error: %q", got)
	}
	if got := (cutOff{batches: 2, calls: 1, closeErr: errors.New("boom")}).String(); got != "2 batches and 1 one-by-one calls cut off at the end of the drain; processor: boom" {
		t.Errorf("with a Close error: %q", got)
	}
	if got := (cutOff{closeErr: errors.New("boom")}).String(); got != "processor: boom" {
		t.Errorf("with a Close error only: %q", got)
	}
}

// connsWaitingToRead counts the TSimpleServer connections, in every server
// of the test binary, whose goroutine waits for the socket to have bytes
// to read: idle connections, unless a request is on its way. It counts
// those of this test's server only because the package's tests run one at a
// time and each stops its servers, which closes their connections.
func connsWaitingToRead() int {
	var stacks bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&stacks, 2) // a bytes.Buffer does not fail
	n := 0
	for g := range bytes.SplitSeq(stacks.Bytes(), []byte("\n\n")) {
		if bytes.Contains(g, []byte("thrift.(*TSimpleServer).processRequests")) &&
			bytes.Contains(g, []byte("internal/poll.(*pollDesc).waitRead")) {
			n++
		}
	}
	return n
}

// testConfig parses args as the command line, failing the test on an error.
func testConfig(t *testing.T, args ...string) *config {
	t.Helper()
	cfg, err := parseConfig(args, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// stopClean stops s and fails the test if the stop cut anything off or
// failed.
func stopClean(t *testing.T, s *server) {
	t.Helper()
	if cut, err := s.stop(); err != nil || !cut.none() {
		t.Errorf("stop: %v, %s", err, cut)
	}
}
