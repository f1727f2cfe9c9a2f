// Command example_server serves a product catalog (catalog.thrift) behind
// thriftbatch's processor, so that any Thrift client can call its methods one
// by one or many at a time in one executeBatch round trip, on the same port.
//
//	go run ./example_server                       # serve on 127.0.0.1:9090 until Ctrl-C
//	go run ./example_server -demo                 # serve in-process and compare the ways to call it
//	go run ./example_server -protocol binary -transport buffered -latency 1ms
//
// Run with -h for every flag. Invalid flag values exit with status 2,
// other failures with status 1. On Ctrl-C the server gives the requests in
// flight up to 5 s (drainTimeout) before it closes the connections left, and
// batches still running 5 s more, so it stops within 10 s; cutting requests
// off then is not a failure: it exits with status 0 and a warn line. A second
// Ctrl-C ends the process at once.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/rs/zerolog"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// After the first signal the default handling comes back, so that a
	// second one ends the process during the stop.
	context.AfterFunc(ctx, stop)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Exit statuses of run.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// run parses args and serves until ctx ends, or runs the demo when -demo is
// given, and returns the process's exit status. The demo's table goes to
// stdout; logs, usage and errors go to stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	cfg, err := parseConfig(args, stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case err != nil:
		return exitUsage
	}
	log := newLogger(stderr, cfg.level)
	defer routeSlog(log)()
	if cfg.demo {
		if err := runDemo(ctx, cfg, log, stdout); err != nil {
			fmt.Fprintf(stderr, "example_server: demo: %v\n", err)
			return exitError
		}
		return exitOK
	}
	if err := serve(ctx, cfg, log); err != nil {
		// Whatever -log-level says: a failure must not go unexplained.
		unfiltered := log.Level(min(cfg.level, zerolog.ErrorLevel))
		unfiltered.Error().Err(err).Msg("example_server: failed")
		return exitError
	}
	return exitOK
}

// routeSlog makes log the destination of slog's default logger, through
// which the Thrift library logs (connections that fail, for one), and of
// the log package's, which net/http uses; the lines then obey -log-level
// and are JSON like the others. It returns a func that restores both, for
// run's callers in tests.
func routeSlog(log zerolog.Logger) (restore func()) {
	prev, prevOut, prevFlags := slog.Default(), stdlog.Writer(), stdlog.Flags()
	slog.SetDefault(slog.New(closedAtDebug{zerolog.NewSlogHandler(log)}))
	return func() {
		slog.SetDefault(prev)
		// SetDefault pointed the log package at the handler; put it back.
		stdlog.SetOutput(prevOut)
		stdlog.SetFlags(prevFlags)
	}
}

// closedAtDebug is a slog.Handler that logs at debug level the records
// whose error is net.ErrClosed: the Thrift library's "error processing
// request" on a connection the server closed itself, which it does to each
// connection left at the end of the drain (and counts what they cut off).
type closedAtDebug struct{ slog.Handler }

func (h closedAtDebug) Handle(ctx context.Context, r slog.Record) error {
	if r.Level <= slog.LevelDebug || !closedConn(r) {
		return h.Handler.Handle(ctx, r)
	}
	if !h.Enabled(ctx, slog.LevelDebug) {
		return nil
	}
	debug := slog.NewRecord(r.Time, slog.LevelDebug, r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool { debug.AddAttrs(a); return true })
	return h.Handler.Handle(ctx, debug)
}

func (h closedAtDebug) WithAttrs(attrs []slog.Attr) slog.Handler {
	return closedAtDebug{h.Handler.WithAttrs(attrs)}
}

func (h closedAtDebug) WithGroup(name string) slog.Handler {
	return closedAtDebug{h.Handler.WithGroup(name)}
}

// closedConn reports whether an attribute of r is an error that is
// net.ErrClosed.
func closedConn(r slog.Record) (closed bool) {
	r.Attrs(func(a slog.Attr) bool {
		err, ok := a.Value.Any().(error)
		closed = ok && errors.Is(err, net.ErrClosed)
		return !closed
	})
	return closed
}
