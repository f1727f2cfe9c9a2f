package client

import (
	"context"
	"fmt"
	"io"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/thriftbatch/thriftbatch/dispatcher"
	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/internal/wire"
)

// framed makes executeBatch calls over the compact protocol on a framed
// transport, the most common deployment, as the generated client over a
// thrift.TStandardClient makes them, with the same messages on the wire
// and the same errors, but with the bodies encoded and decoded in memory by
// package wire: the request is encoded into one buffer and written to the
// frame at once, and the reply's frame is read at once and decoded, each
// call's reply a slice of it (wire.DecodeBatchResult: the Response structs
// one allocation per batch). go test -bench HundredGetProduct ./bench.
type framed struct {
	proto *thrift.TCompactProtocol
	trans *thrift.TFramedTransport
	seqID int32
	buf   []byte // the last request's body, kept for the next
}

// newFramed returns a framed caller when proto is the compact protocol over
// a framed transport, and nil otherwise.
func newFramed(proto thrift.TProtocol) *framed {
	cp, ok := proto.(*thrift.TCompactProtocol)
	if !ok {
		return nil
	}
	ft, ok := cp.Transport().(*thrift.TFramedTransport)
	if !ok {
		return nil
	}
	return &framed{proto: cp, trans: ft}
}

// call sends req and returns the server's BatchResponse, its BatchError, or
// the error that ended the call.
func (f *framed) call(ctx context.Context, req *batch.BatchRequest) (*batch.BatchResponse, error) {
	const method = dispatcher.MethodName
	f.seqID++
	body, err := wire.Encode(ctx, wire.Compact, f.buf[:0], &batch.BatchServiceExecuteBatchArgs{Request: req})
	if err != nil {
		return nil, err
	}
	f.buf = body
	if err := f.proto.WriteMessageBegin(ctx, method, thrift.CALL, f.seqID); err != nil {
		return nil, err
	}
	if _, err := f.trans.Write(body); err != nil {
		return nil, thrift.NewTTransportExceptionFromError(err)
	}
	if err := f.proto.WriteMessageEnd(ctx); err != nil {
		return nil, err
	}
	if err := f.proto.Flush(ctx); err != nil {
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
	// The frame's size was checked against the transport's maximum when
	// it arrived; a short read leaves input that fails to decode.
	frame := make([]byte, f.trans.RemainingBytes())
	n, _ := io.ReadFull(f.trans, frame)
	var result batch.BatchServiceExecuteBatchResult
	if err := wire.DecodeBatchResult(frame[:n], &result); err != nil {
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
