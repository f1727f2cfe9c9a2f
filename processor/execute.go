package processor

import (
	"context"
	"errors"
	"sync"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/thriftbatch/thriftbatch/dispatcher"
	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/internal/wire"
)

// batchFunction serves executeBatch. It answers as the function the Thrift
// compiler generates for batch.BatchService would: the same replies, and
// exceptions of the same types and codes (the text of a PROTOCOL_ERROR
// names what failed in words of its own). It differs in three ways that the
// generated function cannot:
//
//   - Over the compact protocol on a framed transport, the most common
//     deployment, it reads the message's body as one frame and decodes it
//     in memory (wire.DecodeBatchArgs: the calls' arguments are slices of
//     the frame, their Request structs a few allocations per batch, a batch
//     of more calls than WithMaxCalls read past without keeping them), and
//     encodes the reply in memory and writes it to the frame at once,
//     rather than field by field through the library's protocol. The
//     message must have its frame to itself, as every Thrift client sends
//     it; bytes after it fail the message rather than be lost.
//   - It starts no connectivity watcher of its own: execute starts one per
//     batch (see watchInterval).
//   - A batch on a protocol it cannot serve (wire.KindOf) is answered with
//     an INVALID_PROTOCOL TApplicationException before it runs; the
//     generated function would wrap any error in an INTERNAL_ERROR.
type batchFunction struct{ p *Processor }

func (f batchFunction) Process(ctx context.Context, seqID int32, in, out thrift.TProtocol) (bool, thrift.TException) {
	// The protocol the batch arrived on, for its kind and its connection:
	// middleware (thrift.WrapProcessor) may hand this function another.
	proto, _ := ctx.Value(protocolKey{}).(thrift.TProtocol)
	if proto == nil {
		proto = in
	}
	var args batch.BatchServiceExecuteBatchArgs
	mem, skipped, err := readArgs(ctx, in, &args, f.p.cfg.tconf, f.p.cfg.maxCalls)
	if err != nil {
		putMemory(mem) // no call has read it
		in.ReadMessageEnd(ctx)
		// As the generated code does, the connection ends after this
		// answer, which it sends if it can.
		writeMessage(ctx, out, thrift.EXCEPTION, seqID, thrift.NewTApplicationException(thrift.PROTOCOL_ERROR, err.Error()))
		return false, thrift.WrapTException(err)
	}
	in.ReadMessageEnd(ctx)
	kind, err := wire.KindOf(proto)
	if err != nil {
		putMemory(mem) // no call has read it
		x := thrift.NewTApplicationException(thrift.INVALID_PROTOCOL, err.Error())
		return writeException(ctx, out, seqID, x, x)
	}

	var result batch.BatchServiceExecuteBatchResult
	// The batch is in flight from here until its answer has been written
	// (the deferred calls run after the write, release before Exit).
	var resp *batch.BatchResponse
	release, herr := noRelease, f.p.enter()
	if herr == nil {
		defer f.p.gate.Exit()
		resp, release, herr = f.p.execute(ctx, kind, proto, args.Request, skipped)
	}
	// The replies may be held in their calls' buffers until written; the
	// request's memory serves another batch once no call reads it.
	defer func() {
		if release() {
			putMemory(mem)
		}
	}()
	var terr thrift.TException
	if herr != nil {
		terr = thrift.WrapTException(herr)
		var be *batch.BatchError
		switch {
		case errors.As(herr, &be):
			result.Error = be
		case errors.Is(herr, thrift.ErrAbandonRequest):
			return false, terr
		default:
			// As the generated code sends any other error.
			x := thrift.NewTApplicationException(thrift.INTERNAL_ERROR, "Internal error processing executeBatch: "+herr.Error())
			return writeException(ctx, out, seqID, x, terr)
		}
	} else {
		result.Success = resp
	}
	if werr := writeMessage(ctx, out, thrift.REPLY, seqID, &result); werr != nil {
		return false, thrift.WrapTException(werr)
	}
	return true, terr
}

// readArgs reads executeBatch's arguments from in: over the compact
// protocol on a framed transport, as one frame decoded in memory, bounded
// by conf, into a memory from memories, which it returns (nil otherwise)
// for the caller to hand back with putMemory once no call reads the
// request. A list of more than maxCalls requests is read past rather than
// kept, and its length returned as skipped, for execute to refuse in its
// turn.
func readArgs(ctx context.Context, in thrift.TProtocol, args *batch.BatchServiceExecuteBatchArgs, conf *thrift.TConfiguration, maxCalls int) (mem *wire.Memory, skipped int, err error) {
	ft := wire.FramedCompact(in)
	if ft == nil {
		return nil, 0, args.Read(ctx, in)
	}
	mem = getMemory()
	err = wire.DecodeBatchArgs(mem.ReadFrame(ft), args, conf, maxCalls, &mem.Lists)
	var tooMany *wire.TooManyCallsError
	if errors.As(err, &tooMany) {
		return mem, tooMany.Calls, nil
	}
	return mem, 0, err
}

// memories holds the wire.Memory of finished batches' requests: a batch
// whose calls have all returned hands its memory to the next, so that a
// server running batch after batch reads them into the same memory.
var memories = sync.Pool{New: func() any { return new(wire.Memory) }}

func getMemory() *wire.Memory { return memories.Get().(*wire.Memory) }

// putMemory resets m, so that it keeps nothing of its batch reachable, and
// returns it to memories; a nil m is no memory.
func putMemory(m *wire.Memory) {
	if m == nil {
		return
	}
	m.Reset()
	memories.Put(m)
}

// detach copies the arguments and compressedRequests of req, which are
// slices of a buffer of frameLen bytes (the decompressed requests), into a
// buffer of their own when they take less than half of it and leave more
// than 64 KiB of it unused (unknown fields, say): the batch keeps what it
// uses for as long as it runs, not the whole buffer. A request read from a
// frame needs none: the frame is the batch's memory until it ends.
func detach(req *batch.BatchRequest, frameLen int) {
	if req == nil {
		return
	}
	kept := len(req.CompressedRequests)
	for _, r := range req.Requests {
		kept += len(r.Arguments)
	}
	if frameLen-kept <= 64<<10 || kept >= frameLen/2 {
		return
	}
	buf := make([]byte, 0, kept)
	own := func(b []byte) []byte {
		if b == nil {
			return nil
		}
		start := len(buf)
		buf = append(buf, b...)
		return buf[start:len(buf):len(buf)]
	}
	req.CompressedRequests = own(req.CompressedRequests)
	for _, r := range req.Requests {
		r.Arguments = own(r.Arguments)
	}
}

// writeException writes x as the EXCEPTION answer to message seqID and
// returns what Process returns then: true and answer when it was written,
// false and the write's error when the connection cannot take it.
func writeException(ctx context.Context, out thrift.TProtocol, seqID int32, x thrift.TApplicationException, answer thrift.TException) (bool, thrift.TException) {
	if err := writeMessage(ctx, out, thrift.EXCEPTION, seqID, x); err != nil {
		return false, thrift.WrapTException(err)
	}
	return true, answer
}

// writeMessage writes a message of typeID carrying s and flushes it; over
// the compact protocol on a framed transport, s is encoded in memory and
// written at once (wire.WriteFramed).
func writeMessage(ctx context.Context, out thrift.TProtocol, typeID thrift.TMessageType, seqID int32, s thrift.TStruct) error {
	if ft := wire.FramedCompact(out); ft != nil {
		return wire.WriteFramed(ctx, out, ft, dispatcher.MethodName, typeID, seqID, s)
	}
	if err := out.WriteMessageBegin(ctx, dispatcher.MethodName, typeID, seqID); err != nil {
		return err
	}
	if err := s.Write(ctx, out); err != nil {
		return err
	}
	if err := out.WriteMessageEnd(ctx); err != nil {
		return err
	}
	return out.Flush(ctx)
}
