// Command example_server serves a product catalog (catalog.thrift) behind
// thriftbatch's processor, so that any Thrift client can call its methods one
// by one or many at a time in one executeBatch round trip, on the same port.
//
//	go run ./example_server                       # serve on 127.0.0.1:9090 until Ctrl-C
//	go run ./example_server -demo                 # serve in-process and compare the ways to call it
//	go run ./example_server -protocol binary -transport buffered -latency 1ms
//
// Run with -h for every flag. Invalid flag values exit with status 2,
// other failures with status 1.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/apache/thrift/lib/go/thrift"
)

func main() {
	// TSimpleServer.Stop waits for every client to hang up unless this is
	// set; a client that keeps an idle connection open would then hold up
	// shutdown forever. Once it passes, the server closes the connections.
	thrift.ServerStopTimeout = drainTimeout

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
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
	if cfg.demo {
		if err := runDemo(ctx, cfg, log, stdout); err != nil {
			fmt.Fprintf(stderr, "example_server: demo: %v\n", err)
			return exitError
		}
		return exitOK
	}
	if err := serve(ctx, cfg, log); err != nil {
		log.Error().Err(err).Msg("example_server: failed")
		return exitError
	}
	return exitOK
}
