package client

import (
	"context"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/thriftbatch/thriftbatch/internal/wire"
)

// coder encodes or decodes structs of one kind in a row with one wire.Call
// taken from the pool once, rather than once per struct: a pool Get and Put for
// every call's arguments and every call's reply came to about 4% of the CPU of
// 16 clients sending batches of 100 to a server in the same process (a CPU
// profile of the bench's throughput scenario). It is not safe for concurrent
// use; the zero value with a kind is ready.
type coder struct {
	kind wire.Kind
	c    *wire.Call
}

func (d *coder) call() *wire.Call {
	if d.c == nil {
		d.c = wire.Get(d.kind)
	}
	return d.c
}

// take returns the Call for one struct, which the coder forgets until keep
// gives it back: a struct's Write or Read that panics leaves it unkept, and
// with it a protocol that may be mid-struct and, after Encode, an output
// buffer that is the caller's dst. A caller that recovers such a panic and
// goes on with the coder gets a new Call, and the broken one never returns
// to wire's pool.
func (d *coder) take() *wire.Call {
	c := d.call()
	d.c = nil
	return c
}

// keep gives c back after a struct that returned, unless it may not be used
// again: after an error its protocol may be mid-struct; a JSON protocol may
// hold input it has not parsed.
func (d *coder) keep(c *wire.Call, err error) {
	if err == nil && c.Reusable() {
		d.c = c
	}
}

// encode appends s, encoded as a bare struct, to dst.
func (d *coder) encode(ctx context.Context, dst []byte, s thrift.TStruct) ([]byte, error) {
	c := d.take()
	out, err := c.Encode(ctx, dst, s)
	d.keep(c, err)
	return out, err
}

// decode reads the bare struct in b into s.
func (d *coder) decode(b []byte, s thrift.TStruct) error {
	c := d.take()
	err := c.Decode(context.Background(), b, s)
	d.keep(c, err)
	return err
}

// release hands the Call back to the pool.
func (d *coder) release() {
	if d.c != nil {
		wire.Put(d.c)
		d.c = nil
	}
}
