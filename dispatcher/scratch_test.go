package dispatcher

import (
	"context"
	"fmt"
	"testing"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/internal/wire"
	"github.com/thriftbatch/thriftbatch/pool"
	"github.com/thriftbatch/thriftbatch/tests/testsvc"
)

type echo struct{ testsvc.Test }

// newTestDispatcher returns a Dispatcher on a pool of its own, closed when
// the test ends.
func newTestDispatcher(t *testing.T) *Dispatcher {
	t.Helper()
	p, err := pool.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close(context.Background()) })
	d, err := New(p)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// echoArgs returns the compact encoding of echo's arguments for text.
func echoArgs(t *testing.T, text string) []byte {
	t.Helper()
	b, err := wire.Encode(context.Background(), wire.Compact, nil, &testsvc.TestEchoArgs{Text: text})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (echo) Echo(_ context.Context, s string) (string, error) { return s, nil }

// TestRunHeldReusesItsScratch: a batch released with every call returned
// hands its scratch, and the Calls its replies were held in, to a later
// batch, and a second release of the same batch does nothing. The pool the
// scratch goes back to may drop it (it does at random under the race
// detector), so the test asks for a reuse in 16 batches, not in each.
func TestRunHeldReusesItsScratch(t *testing.T) {
	d := newTestDispatcher(t)
	var reqs []*batch.Request
	for i := range 10 {
		reqs = append(reqs, &batch.Request{Method: "echo", Arguments: echoArgs(t, fmt.Sprint(i))})
	}
	b := Batch{
		Requests:  reqs,
		Functions: testsvc.NewTestProcessor(echo{}).ProcessorMap(),
		Protocol:  thrift.NewTCompactProtocolConf(thrift.NewTMemoryBuffer(), nil),
	}
	var last *scratch
	var lastCall *wire.Call
	reused := 0
	for range 16 {
		out, s, err := d.run(context.Background(), b)
		if err != nil {
			t.Fatal(err)
		}
		if want := []byte{0x08, 0x00, 0x01, '9', 0x00}; string(out[9].Reply) != string(want) { // field 0: the string "9"
			t.Fatalf("reply %x", out[9].Reply)
		}
		if s == last {
			reused++
			if s.calls[9] != lastCall {
				t.Errorf("the scratch came back without the Call its call 9 ran in")
			}
			// The last batch's release, called again, must not end
			// this batch's use of the same scratch.
			if s.release(s.use - 1) {
				t.Fatal("a second release of the last batch released this one")
			}
		}
		last, lastCall = s, s.calls[9]
		use := s.use
		if !s.release(use) {
			t.Fatal("release says a call was abandoned")
		}
		if s.release(use) {
			t.Fatal("a second release of one batch did something")
		}
	}
	if reused == 0 {
		t.Error("no batch of 16 reused the scratch of the batch before it")
	}
}

// panicky echoes, and panics for the text "panic".
type panicky struct{ testsvc.Test }

func (panicky) Echo(_ context.Context, s string) (string, error) {
	if s == "panic" {
		panic("echo panicked")
	}
	return s, nil
}

// TestRunDropsCallsThatMustNotRunAgain: the Call a handler panicked in, and
// the Call whose arguments did not decode, may be left mid-struct, so the
// batch drops them from its scratch instead of keeping them for the next
// batch's calls at the same index; the Call of a call that returned is
// kept.
func TestRunDropsCallsThatMustNotRunAgain(t *testing.T) {
	d := newTestDispatcher(t)
	b := Batch{
		Requests: []*batch.Request{
			{Method: "echo", Arguments: echoArgs(t, "kept")},
			{Method: "echo", Arguments: echoArgs(t, "panic")},
			// Field 1, a string whose length runs past the input.
			{Method: "echo", Arguments: []byte{0x18, 0xff, 0xff, 0x03}},
		},
		Functions: testsvc.NewTestProcessor(panicky{}).ProcessorMap(),
		Protocol:  thrift.NewTCompactProtocolConf(thrift.NewTMemoryBuffer(), nil),
	}
	out, s, err := d.run(context.Background(), b)
	if err != nil {
		t.Fatal(err)
	}
	if out[0].Error != nil || len(out[0].Reply) == 0 {
		t.Errorf("call 0: %+v, want a reply", out[0])
	}
	for i, code := range map[int]int32{1: thrift.INTERNAL_ERROR, 2: thrift.PROTOCOL_ERROR} {
		if out[i].Error == nil || out[i].Error.Type != code {
			t.Errorf("call %d: %+v, want error type %d", i, out[i], code)
		}
	}
	if s.calls[0] == nil {
		t.Error("the Call of the call that returned was dropped")
	}
	if s.calls[1] != nil {
		t.Error("the Call the handler panicked in is kept for the next batch")
	}
	if s.calls[2] != nil {
		t.Error("the Call whose arguments did not decode is kept for the next batch")
	}
	if !s.release(s.use) {
		t.Fatal("release says a call was abandoned")
	}
}
