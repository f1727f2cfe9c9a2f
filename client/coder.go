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

// drop forgets the Call when it may not be used again: after an error, its
// protocol may be mid-struct; a JSON protocol may hold input it has not
// parsed.
func (d *coder) drop(err error) {
	if err != nil || !d.c.Reusable() {
		d.c = nil
	}
}

// encode appends s, encoded as a bare struct, to dst.
func (d *coder) encode(dst []byte, s thrift.TStruct) ([]byte, error) {
	out, err := d.call().Encode(context.Background(), dst, s)
	d.drop(err)
	return out, err
}

// decode reads the bare struct in b into s.
func (d *coder) decode(b []byte, s thrift.TStruct) error {
	err := d.call().Decode(context.Background(), b, s)
	d.drop(err)
	return err
}

// release hands the Call back to the pool.
func (d *coder) release() {
	if d.c != nil {
		wire.Put(d.c)
		d.c = nil
	}
}
