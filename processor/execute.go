package processor

import (
	"context"
	"errors"
	"io"
	"math"
	"sync"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/thriftbatch/thriftbatch/dispatcher"
	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/internal/wire"
)

// batchFunction serves executeBatch. It answers exactly as the function the
// Thrift compiler generates for batch.BatchService would (the same replies,
// exceptions and errors), with two differences that the generated function
// cannot make:
//
//   - Over the compact protocol on a framed transport, the most common
//     deployment, it reads the message's body as one frame and decodes it
//     in memory (wire.DecodeBatchArgs: the calls' arguments are slices of
//     the frame, their Request structs one allocation per batch), and
//     encodes the reply in memory and writes it to the frame at once,
//     rather than field by field through the library's protocol.
//   - It starts no connectivity watcher of its own: execute starts one per
//     batch (see watchInterval).
type batchFunction struct{ p *Processor }

func (f batchFunction) Process(ctx context.Context, seqID int32, in, out thrift.TProtocol) (bool, thrift.TException) {
	var args batch.BatchServiceExecuteBatchArgs
	if err := readArgs(ctx, in, &args); err != nil {
		in.ReadMessageEnd(ctx)
		x := thrift.NewTApplicationException(thrift.PROTOCOL_ERROR, err.Error())
		out.WriteMessageBegin(ctx, dispatcher.MethodName, thrift.EXCEPTION, seqID)
		x.Write(ctx, out)
		out.WriteMessageEnd(ctx)
		out.Flush(ctx)
		return false, thrift.WrapTException(err)
	}
	in.ReadMessageEnd(ctx)

	var result batch.BatchServiceExecuteBatchResult
	var err thrift.TException
	resp, herr := f.p.execute(ctx, in, args.Request)
	if herr != nil {
		err = thrift.WrapTException(herr)
		var be *batch.BatchError
		switch {
		case errors.As(herr, &be):
			result.Error = be
		case errors.Is(herr, thrift.ErrAbandonRequest):
			return false, err
		default:
			x := thrift.NewTApplicationException(thrift.INTERNAL_ERROR, "Internal error processing executeBatch: "+herr.Error())
			if werr := writeMessage(ctx, out, thrift.EXCEPTION, seqID, x); werr != nil {
				return false, thrift.WrapTException(werr)
			}
			return true, err
		}
	} else {
		result.Success = resp
	}
	if werr := writeMessage(ctx, out, thrift.REPLY, seqID, &result); werr != nil {
		return false, thrift.WrapTException(werr)
	}
	return true, err
}

// readArgs reads executeBatch's arguments from in: over the compact
// protocol on a framed transport, as one frame decoded in memory.
func readArgs(ctx context.Context, in thrift.TProtocol, args *batch.BatchServiceExecuteBatchArgs) error {
	ft := framedCompact(in)
	if ft == nil {
		return args.Read(ctx, in)
	}
	n := ft.RemainingBytes()
	if n > math.MaxInt32 {
		return args.Read(ctx, in)
	}
	// The frame's size was checked against the transport's maximum when
	// it arrived, and it is in memory already: a short read can only leave
	// input that fails to decode, and does.
	frame := make([]byte, n)
	read, _ := io.ReadFull(ft, frame)
	return wire.DecodeBatchArgs(frame[:read], args)
}

// framedCompact returns p's framed transport when p is the compact protocol
// over one, and nil otherwise.
func framedCompact(p thrift.TProtocol) *thrift.TFramedTransport {
	if cp, ok := p.(*thrift.TCompactProtocol); ok {
		ft, _ := cp.Transport().(*thrift.TFramedTransport)
		return ft
	}
	return nil
}

// replyBuffers holds the buffers replies are encoded into before they are
// written to a frame; a buffer that grew past maxKept is left to the
// collector rather than kept.
var replyBuffers sync.Pool

const maxKept = 256 << 10

// writeMessage writes a message of typeID carrying s and flushes it. Over
// the compact protocol on a framed transport, s is encoded in memory and
// written at once.
func writeMessage(ctx context.Context, out thrift.TProtocol, typeID thrift.TMessageType, seqID int32, s thrift.TStruct) error {
	if err := out.WriteMessageBegin(ctx, dispatcher.MethodName, typeID, seqID); err != nil {
		return err
	}
	if ft := framedCompact(out); ft != nil {
		bp, _ := replyBuffers.Get().(*[]byte)
		if bp == nil {
			bp = new([]byte)
		}
		body, err := wire.Encode(ctx, wire.Compact, (*bp)[:0], s)
		if err != nil {
			return err
		}
		_, err = ft.Write(body)
		if cap(body) <= maxKept {
			*bp = body
			replyBuffers.Put(bp)
		}
		if err != nil {
			return thrift.NewTTransportExceptionFromError(err)
		}
	} else if err := s.Write(ctx, out); err != nil {
		return err
	}
	if err := out.WriteMessageEnd(ctx); err != nil {
		return err
	}
	return out.Flush(ctx)
}
