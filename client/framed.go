package client

import (
	"context"
	"fmt"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/thriftbatch/thriftbatch/dispatcher"
	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/internal/wire"
)

// framed makes executeBatch calls over the compact protocol on a framed
// transport, the most common deployment, as the generated client over a
// thrift.TStandardClient makes them, with the same messages on the wire and
// errors of the same types and codes, but with the bodies encoded and
// decoded in memory by package wire: the request is encoded into one buffer
// and written to the frame at once, and the reply's frame is read at once
// and decoded, each call's reply a slice of it (wire.DecodeBatchResult: the
// Response structs a few allocations per batch). go test -bench
// HundredGetProduct ./bench.
type framed struct {
	proto *thrift.TCompactProtocol
	trans *thrift.TFramedTransport
	conf  *thrift.TConfiguration
	seqID int32
	// mem is the last reply's frame and list of responses when its caller
	// asked for them to be read into it, until the caller calls done.
	mem wire.Memory
}

// done hands back the memory of the last reply read with reuse, keeping
// what serves the next one (a frame of up to 1 MiB) and nothing of the
// reply's values.
func (f *framed) done() { f.mem.Reset() }

// newFramed returns a framed caller when proto is the compact protocol over
// a framed transport, and nil otherwise. conf bounds the replies it reads.
func newFramed(proto thrift.TProtocol, conf *thrift.TConfiguration) *framed {
	ft := wire.FramedCompact(proto)
	if ft == nil {
		return nil
	}
	return &framed{proto: proto.(*thrift.TCompactProtocol), trans: ft, conf: conf}
}

// call sends req and returns the server's BatchResponse, its BatchError, or
// the error that ended the call. The replies are slices of the reply's
// frame; with reuse, the frame and the responses are read into f's memory
// (see wire.Memory), which the caller hands back with done once it is
// through with them, before its next call.
func (f *framed) call(ctx context.Context, req *batch.BatchRequest, reuse bool) (*batch.BatchResponse, error) {
	const method = dispatcher.MethodName
	f.seqID++
	if err := wire.WriteFramed(ctx, f.proto, f.trans, method, thrift.CALL, f.seqID, &batch.BatchServiceExecuteBatchArgs{Request: req}); err != nil {
		return nil, err
	}

	name, typeID, seqID, err := f.proto.ReadMessageBegin(ctx)
	switch {
	case err != nil:
		return nil, err
	case name != method:
		return nil, thrift.NewTApplicationException(thrift.WRONG_METHOD_NAME, fmt.Sprintf("%s: wrong method name", method))
	case seqID != f.seqID:
		return nil, thrift.NewTApplicationException(thrift.BAD_SEQUENCE_ID, fmt.Sprintf("%s: out of order sequence response", method))
	case typeID == thrift.EXCEPTION:
		ex := thrift.NewTApplicationException(thrift.UNKNOWN_APPLICATION_EXCEPTION, "")
		if err := ex.Read(ctx, f.proto); err != nil {
			return nil, err
		}
		if err := f.proto.ReadMessageEnd(ctx); err != nil {
			return nil, err
		}
		return nil, ex
	case typeID != thrift.REPLY:
		return nil, thrift.NewTApplicationException(thrift.INVALID_MESSAGE_TYPE_EXCEPTION, fmt.Sprintf("%s: invalid message type", method))
	}
	var frame []byte
	var lists *wire.Scratch
	if reuse {
		frame, lists = f.mem.ReadFrame(f.trans), &f.mem.Lists
	} else {
		frame = wire.ReadFrame(f.trans, nil)
	}
	var result batch.BatchServiceExecuteBatchResult
	if err := wire.DecodeBatchResult(frame, &result, f.conf, lists); err != nil {
		return nil, err
	}
	if err := f.proto.ReadMessageEnd(ctx); err != nil {
		return nil, err
	}
	switch {
	case result.Error != nil:
		return nil, result.Error
	case result.Success == nil:
		return nil, thrift.NewTApplicationException(thrift.MISSING_RESULT, "executeBatch failed: unknown result")
	}
	return result.Success, nil
}
