package client

import (
	"bytes"
	"context"
	"testing"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/thriftbatch/thriftbatch/internal/wire"
	"github.com/thriftbatch/thriftbatch/tests/testsvc"
)

// halfWritten is echo's arguments with a Write that writes part of the
// struct and panics.
type halfWritten struct{ testsvc.TestEchoArgs }

func (*halfWritten) Write(ctx context.Context, p thrift.TProtocol) error {
	_ = p.WriteStructBegin(ctx, "echo_args")
	_ = p.WriteFieldBegin(ctx, "text", thrift.STRING, 1)
	_ = p.WriteString(ctx, "partial-partial-partial")
	panic("write panics mid-struct")
}

// halfRead is echo's result with a Read that reads part of the struct and
// panics.
type halfRead struct{ testsvc.TestEchoResult }

func (*halfRead) Read(ctx context.Context, p thrift.TProtocol) error {
	_, _ = p.ReadStructBegin(ctx)
	_, _, _, _ = p.ReadFieldBegin(ctx)
	panic("read panics mid-struct")
}

// replyFunction is a processor function that writes reply as its result,
// whatever the arguments.
type replyFunction struct{ reply thrift.TStruct }

func (f replyFunction) Process(ctx context.Context, seq int32, in, out thrift.TProtocol) (bool, thrift.TException) {
	_ = out.WriteMessageBegin(ctx, "echo", thrift.REPLY, seq)
	_ = f.reply.Write(ctx, out)
	_ = out.WriteMessageEnd(ctx)
	return true, nil
}

// mustPanic runs fn, which must panic, and recovers.
func mustPanic(t *testing.T, fn func()) {
	t.Helper()
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	fn()
}

// TestACoderDropsTheCallAStructPanickedIn: a struct whose Write or Read
// panics leaves the coder's wire.Call mid-struct and, for Write, writing
// into the caller's buffer. The Auto recovers such a panic on its batch's
// goroutine and goes on with the coder, then hands it back to wire's pool,
// where the dispatcher of a server in the same process takes Calls too.
// The coder must drop that Call: the structs it codes afterwards come out
// whole, and no Call from the pool writes into memory handed out before.
func TestACoderDropsTheCallAStructPanickedIn(t *testing.T) {
	ctx := context.Background()
	t.Run("a pooled Call does not write into arguments encoded before", func(t *testing.T) {
		long := &testsvc.TestEchoResult{Success: thrift.StringPtr(string(bytes.Repeat([]byte("r"), 64)))}
		// wire's pool may drop what is put in it (always under -race,
		// now and then): rounds, so that a Call left behind would be
		// taken again in some.
		for range 20 {
			d := coder{kind: wire.Compact}
			// Room after the first arguments, as a batch's buffer of
			// arguments has: the next ones are written there.
			first, err := d.encode(ctx, make([]byte, 0, 256), &testsvc.TestEchoArgs{Text: "first call's text"})
			if err != nil {
				t.Fatal(err)
			}
			want := string(first)
			mustPanic(t, func() { _, _ = d.encode(ctx, first, &halfWritten{}) })
			d.release()
			for range 4 {
				c := wire.Get(wire.Compact)
				if _, err := c.Run(ctx, replyFunction{long}, "echo", nil); err != nil {
					t.Fatal(err)
				}
				wire.Put(c)
			}
			if string(first) != want {
				t.Fatalf("the first call's arguments became %q, want %q", first, want)
			}
		}
	})
	t.Run("JSON: the next arguments encode whole", func(t *testing.T) {
		d := coder{kind: wire.JSON}
		defer d.release()
		mustPanic(t, func() { _, _ = d.encode(ctx, nil, &halfWritten{}) })
		out, err := d.encode(ctx, nil, &testsvc.TestEchoArgs{Text: "third"})
		if err != nil {
			t.Fatal(err)
		}
		var back testsvc.TestEchoArgs
		if err := wire.Decode(ctx, wire.JSON, out, &back); err != nil || back.Text != "third" {
			t.Errorf("the next arguments: %s decode to %+v, %v; want the text third", out, back, err)
		}
	})
	t.Run("JSON: the next reply decodes", func(t *testing.T) {
		d := coder{kind: wire.JSON}
		defer d.release()
		reply, err := wire.Encode(ctx, wire.JSON, nil, &testsvc.TestEchoResult{Success: thrift.StringPtr("second")})
		if err != nil {
			t.Fatal(err)
		}
		mustPanic(t, func() { _ = d.decode(reply, &halfRead{}) })
		var r testsvc.TestEchoResult
		if err := d.decode(reply, &r); err != nil || r.GetSuccess() != "second" {
			t.Errorf("the next reply: %q, %v; want second", r.GetSuccess(), err)
		}
	})
}
