package client_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/thriftbatch/thriftbatch/client"
	"github.com/thriftbatch/thriftbatch/internal/poll"
	"github.com/thriftbatch/thriftbatch/processor"
	"github.com/thriftbatch/thriftbatch/tests/testsvc"
)

// testBound bounds every call of these tests, so that a call nobody answers
// fails the test instead of hanging it.
const testBound = 20 * time.Second

// sleepyInFlight starts a Sleepy of ms on tc and waits until h runs it. The
// returned channel gives its error once it returns.
func sleepyInFlight(t *testing.T, h *svc, tc *testsvc.TestClient, ms int32) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), testBound)
		defer cancel()
		_, err := tc.Sleepy(ctx, ms, 1)
		done <- err
	}()
	if !poll.Until(testBound, func() bool { return h.sleeping.Load() > 0 }) {
		t.Fatal("the sleepy call never started")
	}
	return done
}

// TestAutoCloseAnswersWaitingCallsAtOnce: calls waiting behind a batch in
// flight (gathered for the next batch, queued, or waiting for room in the
// queue) get ErrClosed as soon as Close begins, not once the batch in flight
// has ended; Close itself returns once that batch has.
func TestAutoCloseAnswersWaitingCallsAtOnce(t *testing.T) {
	h := &svc{}
	auto := mustAuto(t, start(t, h).auto, client.WithMaxInFlight(1), client.WithMaxBatch(1), client.WithMaxWait(0))
	slow := sleepyInFlight(t, h, testsvc.NewTestClient(auto), 1000)

	const waiting = 4 // one gathered, one queued, two waiting for room
	echoes := make(chan error, waiting)
	for range waiting {
		go func() {
			_, err := testsvc.NewTestClient(auto).Echo(context.Background(), "late")
			echoes <- err
		}()
	}
	time.Sleep(100 * time.Millisecond) // for them to reach their places
	closed := make(chan error, 1)
	go func() { closed <- auto.Close() }()

	for range waiting {
		select {
		case err := <-echoes:
			if !errors.Is(err, client.ErrClosed) {
				t.Errorf("a call waiting at Close = %v, want ErrClosed", err)
			}
		case err := <-slow:
			t.Fatalf("the batch in flight ended (%v) before the calls waiting behind it were answered", err)
		case <-time.After(testBound):
			t.Fatal("a call waiting at Close was never answered")
		}
	}
	if err := <-slow; err != nil {
		t.Errorf("the batch in flight at Close: %v, want its reply", err)
	}
	if err := <-closed; err != nil {
		t.Errorf("Close: %v", err)
	}
}

// gatedDial is an Auto's dial whose first dial connects at once and whose
// later ones wait for release, or fail with refuse's error when it is set.
type gatedDial struct {
	dial    dialer
	n       atomic.Int64
	release chan struct{}
	refuse  atomic.Pointer[error]
	ended   atomic.Int64 // later dials that returned because ctx ended
}

func (g *gatedDial) auto(ctx context.Context) (*client.Client, error) {
	if g.n.Add(1) == 1 {
		return g.dial(ctx)
	}
	if err := g.refuse.Load(); err != nil {
		return nil, *err
	}
	select {
	case <-g.release:
		return g.dial(ctx)
	case <-ctx.Done():
		g.ended.Add(1)
		return nil, ctx.Err()
	}
}

// TestAutoTakesAFreedConnectionWhileDialing: a batch that needs a
// connection while the only one is busy starts a dial, but takes the busy
// connection once it comes back rather than wait for a slow dial; Close ends
// the dial still in progress.
func TestAutoTakesAFreedConnectionWhileDialing(t *testing.T) {
	h := &svc{}
	g := &gatedDial{dial: start(t, h), release: make(chan struct{})}
	auto := mustAuto(t, g.auto, client.WithMaxInFlight(2), client.WithMaxWait(0))
	slow := sleepyInFlight(t, h, testsvc.NewTestClient(auto), 200)
	// Well under the dial's own 10 s bound: a batch that waited for the
	// dial would go on the freed connection only once the dial timed out.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if got, err := testsvc.NewTestClient(auto).Echo(ctx, "meanwhile"); err != nil || got != "meanwhile" {
		t.Fatalf("echo while the second connection is being dialed = %q, %v", got, err)
	}
	if err := <-slow; err != nil {
		t.Fatal(err)
	}
	if n := g.n.Load(); n != 2 {
		t.Fatalf("%d dials, want the first and the one in progress", n)
	}
	closed := make(chan error, 1)
	go func() { closed <- auto.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(5 * time.Second): // well before the dial's own 10 s bound
		t.Fatal("Close waits for a dial in progress")
	}
	if g.ended.Load() != 1 {
		t.Error("the dial in progress was not ended by Close")
	}
}

// TestAutoWaitsForAnOpenConnectionWhenADialFails: a dial that fails while
// another connection is open fails no call: the batch goes on that
// connection once it is free.
func TestAutoWaitsForAnOpenConnectionWhenADialFails(t *testing.T) {
	h := &svc{}
	g := &gatedDial{dial: start(t, h)}
	refused := errors.New("too many open files")
	g.refuse.Store(&refused)
	auto := mustAuto(t, g.auto, client.WithMaxInFlight(2), client.WithMaxWait(0))
	slow := sleepyInFlight(t, h, testsvc.NewTestClient(auto), 100)
	ctx, cancel := context.WithTimeout(context.Background(), testBound)
	defer cancel()
	if got, err := testsvc.NewTestClient(auto).Echo(ctx, "after"); err != nil || got != "after" {
		t.Fatalf("echo while dials fail and a connection is busy = %q, %v", got, err)
	}
	if err := <-slow; err != nil {
		t.Fatal(err)
	}
	if g.n.Load() < 2 {
		t.Fatal("no dial was tried: the test proves nothing")
	}
}

// TestAutoSplitsABatchOfTooManyCalls: a server that takes at most 4 calls a
// batch refuses the Auto's larger batches before running any call; the Auto
// sends them again in halves, so every call is answered, and lowers its
// MaxBatch, so that the next round of calls is not refused at all.
func TestAutoSplitsABatchOfTooManyCalls(t *testing.T) {
	h := &svc{}
	auto := mustAuto(t, start(t, h, processor.WithMaxCalls(4)).auto,
		client.WithMaxInFlight(1), client.WithMaxBatch(16), client.WithMaxWait(50*time.Millisecond))
	round := func() {
		const callers = 24
		var wg sync.WaitGroup
		errs := make(chan error, callers)
		begin := make(chan struct{})
		for i := range callers {
			wg.Go(func() {
				<-begin
				ctx, cancel := context.WithTimeout(context.Background(), testBound)
				defer cancel()
				want := strings.Repeat("x", i)
				if got, err := testsvc.NewTestClient(auto).Echo(ctx, want); err != nil || got != want {
					errs <- errors.Join(err, errors.New("echo "+got))
				}
			})
		}
		close(begin)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	}
	round()
	if h.refused.Load() == 0 {
		t.Fatal("the server refused no batch: the test proves nothing")
	}
	before := h.refused.Load()
	round()
	if n := h.refused.Load() - before; n != 0 {
		t.Errorf("the server refused %d batches of the second round: MaxBatch was not lowered", n)
	}
}

// TestAutoLeavesOutCallsWhoseCallersHaveGone: a call whose ctx ends while
// it waits for a connection is not sent once one is free.
func TestAutoLeavesOutCallsWhoseCallersHaveGone(t *testing.T) {
	h := &svc{}
	auto := mustAuto(t, start(t, h).auto, client.WithMaxInFlight(1), client.WithMaxWait(0))
	slow := sleepyInFlight(t, h, testsvc.NewTestClient(auto), 300)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := testsvc.NewTestClient(auto).Note(ctx, "gone"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a oneway call past its deadline = %v", err)
	}
	if err := <-slow; err != nil {
		t.Fatal(err)
	}
	// A later call goes after the batch the note would have been in.
	ctx, cancel = context.WithTimeout(context.Background(), testBound)
	defer cancel()
	if _, err := testsvc.NewTestClient(auto).Echo(ctx, "later"); err != nil {
		t.Fatal(err)
	}
	if n := h.notes.Load(); n != 0 {
		t.Errorf("the server ran %d notes whose caller had gone before they were sent", n)
	}
}

// TestAutoChecksWhatDialReturns: a dial that returns neither a Client nor an
// error, or a Client over another protocol than the first, is an error
// naming what was wrong, not a panic or a batch over the wrong protocol.
func TestAutoChecksWhatDialReturns(t *testing.T) {
	nothing := func(context.Context) (*client.Client, error) { return nil, nil }
	if _, err := client.NewAuto(context.Background(), nothing); err == nil {
		t.Error("NewAuto took a dial that returned nothing")
	}

	dial := start(t, &svc{})
	var first atomic.Pointer[client.Client]
	var binary atomic.Bool
	auto := mustAuto(t, func(ctx context.Context) (*client.Client, error) {
		if binary.Load() {
			return client.New(thrift.NewTBinaryProtocolConf(thrift.NewTMemoryBuffer(), nil))
		}
		c, err := dial(ctx)
		if err == nil {
			first.CompareAndSwap(nil, c)
		}
		return c, err
	}, client.WithMaxInFlight(1))
	tc := testsvc.NewTestClient(auto)
	ctx, cancel := context.WithTimeout(context.Background(), testBound)
	defer cancel()
	first.Load().Close() // the connection breaks under the Auto
	if _, err := tc.Echo(ctx, "broken"); err == nil {
		t.Fatal("a call on a closed connection succeeded")
	}
	binary.Store(true)
	if _, err := tc.Echo(ctx, "other protocol"); err == nil || !strings.Contains(err.Error(), "the Auto's first was over") {
		t.Errorf("a call on a connection dialed over another protocol = %v, want an error naming the protocol", err)
	}
}

// TestAutoDialsAgainOnceAConnectionCloses: a batch waiting for the open
// connection after a failed dial is told when that connection breaks, dials
// again and, that dial failing too with no connection left, gets the dial's
// error at once rather than at its own deadline.
func TestAutoDialsAgainOnceAConnectionCloses(t *testing.T) {
	h := &svc{}
	var first atomic.Pointer[client.Client]
	dial := start(t, h)
	g := &gatedDial{dial: func(ctx context.Context, opts ...client.Option) (*client.Client, error) {
		c, err := dial(ctx, opts...)
		if err == nil {
			first.CompareAndSwap(nil, c)
		}
		return c, err
	}}
	refused := errors.New("no route")
	g.refuse.Store(&refused)
	auto := mustAuto(t, g.auto, client.WithMaxInFlight(2), client.WithMaxWait(0))
	slow := sleepyInFlight(t, h, testsvc.NewTestClient(auto), 5000)
	echoed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), testBound)
		defer cancel()
		_, err := testsvc.NewTestClient(auto).Echo(ctx, "waiting")
		echoed <- err
	}()
	if !poll.Until(testBound, func() bool { return g.n.Load() >= 2 }) {
		t.Fatal("no second dial")
	}
	time.Sleep(20 * time.Millisecond) // for the echo to wait on the open connection
	first.Load().Close()              // the open connection breaks
	if err := <-slow; err == nil {
		t.Fatal("the call on the broken connection succeeded")
	}
	select {
	case err := <-echoed:
		if !errors.Is(err, refused) {
			t.Errorf("the waiting echo = %v, want the dial's error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting echo was not told that no connection is left")
	}
}

// faultyArgs is echo's arguments with a Write that fails or panics.
type faultyArgs struct {
	testsvc.TestEchoArgs
	panics bool
}

var errWriteFails = errors.New("the arguments refuse to be written")

func (a *faultyArgs) Write(ctx context.Context, p thrift.TProtocol) error {
	if a.panics {
		panic("write panics")
	}
	return errWriteFails
}

// panickyResult is echo's result with a Read that panics.
type panickyResult struct{ testsvc.TestEchoResult }

func (*panickyResult) Read(context.Context, thrift.TProtocol) error { panic("read panics") }

// callRecovering makes one call through auto and returns its error, or
// what it panicked with.
func callRecovering(auto *client.Auto, args, result thrift.TStruct) (err error, panicked any) {
	defer func() { panicked = recover() }()
	ctx, cancel := context.WithTimeout(context.Background(), testBound)
	defer cancel()
	_, err = auto.Call(ctx, "echo", args, result)
	return err, nil
}

// TestAutoFailsOnlyTheCallWhoseStructsFail: the Auto encodes arguments and
// decodes replies on the batch's goroutine. Arguments that fail to encode
// end their call with that error; a panic of an argument's Write or a
// result's Read is raised again on its caller's goroutine, not on the
// Auto's (which would end the process). The calls sent in the same batch
// get their replies, and the Auto goes on serving.
func TestAutoFailsOnlyTheCallWhoseStructsFail(t *testing.T) {
	h := &svc{}
	// A wait long enough for the four calls to share a batch.
	auto := mustAuto(t, start(t, h).auto, client.WithMaxWait(50*time.Millisecond), client.WithMaxBatch(4))
	echo := func(msg string) *testsvc.TestEchoArgs { return &testsvc.TestEchoArgs{Text: msg} }
	type outcome struct {
		err      error
		panicked any
		result   *testsvc.TestEchoResult
	}
	var wg sync.WaitGroup
	out := make([]outcome, 4)
	for i, call := range []func() outcome{
		func() outcome {
			err, p := callRecovering(auto, &faultyArgs{}, testsvc.NewTestEchoResult())
			return outcome{err: err, panicked: p}
		},
		func() outcome {
			err, p := callRecovering(auto, &faultyArgs{panics: true}, testsvc.NewTestEchoResult())
			return outcome{err: err, panicked: p}
		},
		func() outcome {
			err, p := callRecovering(auto, echo("read"), &panickyResult{})
			return outcome{err: err, panicked: p}
		},
		func() outcome {
			r := testsvc.NewTestEchoResult()
			err, p := callRecovering(auto, echo("fine"), r)
			return outcome{err: err, panicked: p, result: r}
		},
	} {
		wg.Go(func() { out[i] = call() })
	}
	wg.Wait()

	if err := out[0].err; !errors.Is(err, errWriteFails) || out[0].panicked != nil {
		t.Errorf("arguments that fail to encode: %v, panic %v; want their error", err, out[0].panicked)
	}
	for i, want := range map[int]string{1: "write panics", 2: "read panics"} {
		if p, ok := out[i].panicked.(error); !ok || !strings.Contains(p.Error(), want) || !strings.Contains(p.Error(), "goroutine") {
			t.Errorf("call %d: panic %v, error %v; want a panic saying %q with the stack where it happened", i, out[i].panicked, out[i].err, want)
		}
	}
	if r := out[3].result; out[3].err != nil || out[3].panicked != nil || r.Success == nil || *r.Success != "fine" {
		t.Errorf("the call beside them: %v, panic %v, result %v; want its echo", out[3].err, out[3].panicked, r)
	}
	if h.batches.Load() != 1 {
		t.Errorf("%d batches, want the calls in one: the test proves less than it says", h.batches.Load())
	}
	if got, err := testsvc.NewTestClient(auto).Echo(context.Background(), "after"); err != nil || got != "after" {
		t.Errorf("a call after them: %q, %v", got, err)
	}
}

// watchedArgs is echo's arguments, whose Write takes about 50 µs and
// records whether it was still running after its caller had returned.
type watchedArgs struct {
	testsvc.TestEchoArgs
	returned, late atomic.Bool
}

func (a *watchedArgs) Write(ctx context.Context, p thrift.TProtocol) error {
	err := a.TestEchoArgs.Write(ctx, p)
	for start := time.Now(); time.Since(start) < 50*time.Microsecond; {
	}
	if a.returned.Load() {
		a.late.Store(true)
	}
	return err
}

// TestAutoLetsGoOfAnAbandonedCallsArguments: once Call has returned its
// ctx's error, the caller may change its arguments; the batch's goroutine,
// which encodes them, is not running their Write then and does not start
// it afterwards. Each call's ctx is canceled at a different moment of its
// life; a Write still running when its caller has returned says so, and
// under -race changing the arguments after the return is reported too.
func TestAutoLetsGoOfAnAbandonedCallsArguments(t *testing.T) {
	auto := mustAuto(t, start(t, &svc{}).auto, client.WithMaxWait(0))
	const calls = 300
	abandoned := 0
	all := make([]*watchedArgs, calls)
	for i := range calls {
		args := &watchedArgs{TestEchoArgs: testsvc.TestEchoArgs{Text: "before"}}
		all[i] = args
		ctx, cancel := context.WithCancel(context.Background())
		// Cancel at times spread over the call's life, from before it is
		// queued to after its reply.
		go func() {
			for start := time.Now(); time.Since(start) < time.Duration(i%100)*20*time.Microsecond; {
				runtime.Gosched()
			}
			cancel()
		}()
		_, err := auto.Call(ctx, "echo", args, testsvc.NewTestEchoResult())
		args.returned.Store(true)
		args.Text = "after"
		if errors.Is(err, context.Canceled) {
			abandoned++
		} else if err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	if err := auto.Close(); err != nil { // every batch has ended
		t.Fatal(err)
	}
	if abandoned == 0 || abandoned == calls {
		t.Fatalf("%d of %d calls abandoned: the test proves nothing", abandoned, calls)
	}
	late := 0
	for _, a := range all {
		if a.late.Load() {
			late++
		}
	}
	if late > 0 {
		t.Errorf("%d arguments were still being written after their Call returned", late)
	}
	t.Logf("%d of %d calls abandoned", abandoned, calls)
}

// TestAutoKeepsItsResultsAfterTheNextBatch: as an explicit batch does, the
// Auto reads a batch's reply into the memory of its connection's previous
// reply, so nothing a caller got may point into that memory. Two rounds of
// 20 echoes of the same size on one connection, each round in one batch,
// then the first round's results checked again.
func TestAutoKeepsItsResultsAfterTheNextBatch(t *testing.T) {
	h := &svc{}
	auto := mustAuto(t, start(t, h).auto, client.WithMaxInFlight(1), client.WithMaxBatch(20), client.WithMaxWait(50*time.Millisecond))
	round := func(prefix string) []*testsvc.TestEchoResult {
		results := make([]*testsvc.TestEchoResult, 20)
		var wg sync.WaitGroup
		for i := range results {
			results[i] = testsvc.NewTestEchoResult()
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), testBound)
				defer cancel()
				if _, err := auto.Call(ctx, "echo", &testsvc.TestEchoArgs{Text: fmt.Sprintf("%s %02d", prefix, i)}, results[i]); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		return results
	}
	check := func(prefix string, results []*testsvc.TestEchoResult) {
		t.Helper()
		for i, r := range results {
			if want := fmt.Sprintf("%s %02d", prefix, i); r.GetSuccess() != want {
				t.Errorf("echo %d = %q, want %q", i, r.GetSuccess(), want)
			}
		}
	}
	first := round("AAA")
	check("AAA", first)
	check("BBB", round("BBB"))
	check("AAA", first)
	if n := h.batches.Load(); n != 2 {
		t.Errorf("%d batches, want one per round: the test proves less than it says", n)
	}
}

// heldArgs is echo's arguments whose Write says it has begun and then takes
// hold before it writes.
type heldArgs struct {
	testsvc.TestEchoArgs
	begun    chan struct{}
	finished atomic.Bool
}

func (a *heldArgs) Write(ctx context.Context, p thrift.TProtocol) error {
	close(a.begun)
	time.Sleep(20 * time.Millisecond)
	err := a.TestEchoArgs.Write(ctx, p)
	a.finished.Store(true)
	return err
}

// TestAutoCallWhoseCtxEndsDuringItsWriteReturnsAfterIt: a caller whose ctx
// ends while the batch's goroutine runs its arguments' Write returns ctx's
// error once the Write has finished, not before: the arguments are the
// caller's again when Call returns.
func TestAutoCallWhoseCtxEndsDuringItsWriteReturnsAfterIt(t *testing.T) {
	auto := mustAuto(t, start(t, &svc{}).auto, client.WithMaxWait(0))
	args := &heldArgs{TestEchoArgs: testsvc.TestEchoArgs{Text: "held"}, begun: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-args.begun
		cancel()
	}()
	_, err := auto.Call(ctx, "echo", args, testsvc.NewTestEchoResult())
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Call = %v, want the ctx's error", err)
	}
	if !args.finished.Load() {
		t.Error("Call returned while its arguments' Write was still running")
	}
}
