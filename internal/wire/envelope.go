package wire

import (
	"context"
	"fmt"
	"sync"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/thriftbatch/thriftbatch/idl/batch"
)

// The batch envelopes, decoded without the generated code, whose Read
// methods allocate each Request and Response of a list, and each call's id,
// on its own; the functions here allocate those once per list. They read
// field by field as the generated methods do: the same fields set, unknown
// fields and fields of an unexpected type skipped, a list's declared element
// type ignored, a field given twice read twice and the last value kept.
// envelope_test.go compares the two on random and arbitrary input.

// DecodeBatchArgs decodes frame, the body of an executeBatch CALL message
// (a BatchServiceExecuteBatchArgs struct) in the compact protocol, into args.
//
// It sets what args.Read would set reading frame with a TCompactProtocol,
// and fails where that fails, with a thrift.TProtocolException or
// thrift.TTransportException. As args.Read does, it sets only the fields
// frame holds: pass a zero args. On error, args may be partly set.
//
// Its allocations are per 256 calls, not per call: the BatchRequest; for
// the list of requests, the []*batch.Request, a block of Requests it points
// into per 256 calls, and a block of int32 per 256 ids; one each for
// RequestCodec, AcceptCodecs, TimeoutMillis and Sequential when frame holds
// them. Method names are copied, but a name equal to the one before it in
// the list reuses that string, so a batch whose calls all name one method
// costs one allocation for the names. (Decode, through the generated code,
// allocates four times per call with an id: go test -bench DecodeBatch
// ./internal/wire.)
//
// Arguments and CompressedRequests are slices of frame, not copies, with
// their capacity cut to their length: frame must not change while they are
// in use, and a Request kept keeps frame and its whole list reachable.
func DecodeBatchArgs(frame []byte, args *batch.BatchServiceExecuteBatchArgs) error {
	p := getEnvelopeReader(frame)
	err := readBatchArgs(context.Background(), p, args)
	putEnvelopeReader(p)
	if err != nil {
		return thrift.PrependError("executeBatch args: ", err)
	}
	return nil
}

// DecodeBatchResult decodes frame, the body of an executeBatch REPLY
// (a BatchServiceExecuteBatchResult struct) in the compact protocol, into res.
//
// It sets what res.Read would set reading frame with a TCompactProtocol,
// and fails where that fails, with a thrift.TProtocolException or
// thrift.TTransportException. As res.Read does, it sets only the fields
// frame holds: pass a zero res. On error, res may be partly set.
//
// Its allocations are per 256 calls, not per call: the BatchResponse; for
// the list of responses, the []*batch.Response, a block of Responses it
// points into per 256 calls, a block of int32 per 256 ids and one of
// CallErrors per 256 errors; one for Codec when frame holds it; the
// BatchError and its message when frame holds one. Error messages are
// copied, but a message equal to the one before it in the list reuses that
// string. (Decode allocates three times per call that has an id and a
// reply.)
//
// Reply and CompressedResponses are slices of frame, not copies, with their
// capacity cut to their length: frame must not change while they are in
// use, and a Response kept keeps frame and its whole list reachable.
func DecodeBatchResult(frame []byte, res *batch.BatchServiceExecuteBatchResult) error {
	p := getEnvelopeReader(frame)
	err := readBatchResult(context.Background(), p, res)
	putEnvelopeReader(p)
	if err != nil {
		return thrift.PrependError("executeBatch result: ", err)
	}
	return nil
}

// envelopeReaders holds the compact protocols the two functions read with,
// so that a decode allocates none. They alias their input: binary values
// are slices of it.
var envelopeReaders = sync.Pool{New: func() any { return NewFrameReader(nil, nil) }}

func getEnvelopeReader(frame []byte) *compact {
	p := envelopeReaders.Get().(*compact)
	p.b.Reset(frame)
	return p
}

// putEnvelopeReader returns p to the pool, after a failed decode too: reset
// clears all the state a decode leaves in it.
func putEnvelopeReader(p *compact) {
	p.b.Reset(nil)
	p.reset()
	envelopeReaders.Put(p)
}

// frameBytes reads a binary value as a slice of the input, its capacity cut
// to its length so that appending to it cannot overwrite what follows.
func frameBytes(p *compact) ([]byte, error) {
	b, err := p.bytes()
	if err != nil {
		return nil, err
	}
	return b[:len(b):len(b)], nil
}

// readString reads a string, reusing *last when it is equal and making the
// new string *last otherwise.
func readString(p *compact, last *string) (string, error) {
	b, err := p.bytes()
	if err != nil {
		return "", err
	}
	if string(b) != *last {
		*last = string(b)
	}
	return *last, nil
}

// The requests.

func readBatchArgs(ctx context.Context, p *compact, args *batch.BatchServiceExecuteBatchArgs) error {
	if _, err := p.ReadStructBegin(ctx); err != nil {
		return err
	}
	for {
		_, t, id, err := p.ReadFieldBegin(ctx)
		if err != nil {
			return err
		}
		if t == thrift.STOP {
			break
		}
		if id == 1 && t == thrift.STRUCT {
			args.Request = &batch.BatchRequest{}
			err = readBatchRequest(ctx, p, args.Request)
		} else {
			err = p.Skip(ctx, t)
		}
		if err != nil {
			return err
		}
	}
	return p.ReadStructEnd(ctx)
}

func readBatchRequest(ctx context.Context, p *compact, r *batch.BatchRequest) error {
	if _, err := p.ReadStructBegin(ctx); err != nil {
		return err
	}
	for {
		_, t, id, err := p.ReadFieldBegin(ctx)
		if err != nil {
			return err
		}
		if t == thrift.STOP {
			break
		}
		switch {
		case id == 1 && t == thrift.LIST:
			err = readRequests(ctx, p, r)
		case id == 2 && t == thrift.I32:
			var v int32
			if v, err = p.ReadI32(ctx); err == nil {
				c := batch.Codec(v)
				r.RequestCodec = &c
			}
		case id == 3 && t == thrift.STRING:
			var b []byte
			if b, err = frameBytes(p); err == nil {
				r.CompressedRequests = b
			}
		case id == 4 && t == thrift.LIST:
			err = readCodecs(ctx, p, r)
		case id == 5 && t == thrift.I32:
			var v int32
			if v, err = p.ReadI32(ctx); err == nil {
				r.TimeoutMillis = &v
			}
		case id == 6 && t == thrift.BOOL:
			var v bool
			if v, err = p.ReadBool(ctx); err == nil {
				r.Sequential = &v
			}
		default:
			err = p.Skip(ctx, t)
		}
		if err != nil {
			return err
		}
	}
	return p.ReadStructEnd(ctx)
}

// slab hands out the elements of one list from blocks of up to slabBlock,
// so that a list costs a few allocations rather than one per element, and
// a count that a list header claims but the input does not hold costs one
// block at most: the generated code, too, allocates each element only once
// it reads it.
type slab[T any] struct{ block []T }

const slabBlock = 256

// next returns a zeroed element; left is how many the list may still need.
func (s *slab[T]) next(left int) *T {
	if len(s.block) == 0 {
		s.block = make([]T, max(1, min(left, slabBlock)))
	}
	e := &s.block[0]
	s.block = s.block[1:]
	return e
}

// requestList is one list of requests being read.
type requestList struct {
	reqs   slab[batch.Request]
	ids    slab[int32]
	left   int    // elements not read yet, this one included
	method string // the last method name read
}

func readRequests(ctx context.Context, p *compact, r *batch.BatchRequest) error {
	// As the generated code does, the declared element type is not
	// looked at: every element is read as a Request.
	_, n, err := p.ReadListBegin(ctx)
	if err != nil {
		return thrift.PrependError("error reading list begin: ", err)
	}
	// ReadListBegin refused a count the bytes left cannot hold at one
	// byte an element, so n is at most len(frame), and the pointers
	// cost what the generated code's cost.
	var l requestList
	ptrs := make([]*batch.Request, n)
	for i := range ptrs {
		l.left = n - i
		q := l.reqs.next(l.left)
		if err := readRequest(ctx, p, &l, q); err != nil {
			return thrift.PrependError(fmt.Sprintf("requests[%d]: ", i), err)
		}
		ptrs[i] = q
	}
	r.Requests = ptrs
	return p.ReadListEnd(ctx)
}

func readRequest(ctx context.Context, p *compact, l *requestList, q *batch.Request) error {
	if _, err := p.ReadStructBegin(ctx); err != nil {
		return err
	}
	for {
		_, t, id, err := p.ReadFieldBegin(ctx)
		if err != nil {
			return err
		}
		if t == thrift.STOP {
			break
		}
		switch {
		case id == 1 && t == thrift.STRING:
			var s string
			if s, err = readString(p, &l.method); err == nil {
				q.Method = s
			}
		case id == 2 && t == thrift.STRING:
			var b []byte
			if b, err = frameBytes(p); err == nil {
				q.Arguments = b
			}
		case id == 3 && t == thrift.I32:
			var v int32
			if v, err = p.ReadI32(ctx); err == nil {
				q.ID = l.ids.next(l.left)
				*q.ID = v
			}
		default:
			err = p.Skip(ctx, t)
		}
		if err != nil {
			return err
		}
	}
	return p.ReadStructEnd(ctx)
}

func readCodecs(ctx context.Context, p *compact, r *batch.BatchRequest) error {
	// Every element is read as an i32, whatever type the list declares.
	_, n, err := p.ReadListBegin(ctx)
	if err != nil {
		return thrift.PrependError("error reading list begin: ", err)
	}
	codecs := make([]batch.Codec, n)
	for i := range codecs {
		v, err := p.ReadI32(ctx)
		if err != nil {
			return err
		}
		codecs[i] = batch.Codec(v)
	}
	r.AcceptCodecs = codecs
	return p.ReadListEnd(ctx)
}

// The responses.

func readBatchResult(ctx context.Context, p *compact, res *batch.BatchServiceExecuteBatchResult) error {
	if _, err := p.ReadStructBegin(ctx); err != nil {
		return err
	}
	for {
		_, t, id, err := p.ReadFieldBegin(ctx)
		if err != nil {
			return err
		}
		if t == thrift.STOP {
			break
		}
		switch {
		case id == 0 && t == thrift.STRUCT:
			res.Success = &batch.BatchResponse{}
			err = readBatchResponse(ctx, p, res.Success)
		case id == 1 && t == thrift.STRUCT:
			res.Error = &batch.BatchError{}
			err = readBatchError(ctx, p, res.Error)
		default:
			err = p.Skip(ctx, t)
		}
		if err != nil {
			return err
		}
	}
	return p.ReadStructEnd(ctx)
}

func readBatchResponse(ctx context.Context, p *compact, r *batch.BatchResponse) error {
	if _, err := p.ReadStructBegin(ctx); err != nil {
		return err
	}
	for {
		_, t, id, err := p.ReadFieldBegin(ctx)
		if err != nil {
			return err
		}
		if t == thrift.STOP {
			break
		}
		switch {
		case id == 1 && t == thrift.LIST:
			err = readResponses(ctx, p, r)
		case id == 2 && t == thrift.I32:
			var v int32
			if v, err = p.ReadI32(ctx); err == nil {
				c := batch.Codec(v)
				r.Codec = &c
			}
		case id == 3 && t == thrift.STRING:
			var b []byte
			if b, err = frameBytes(p); err == nil {
				r.CompressedResponses = b
			}
		default:
			err = p.Skip(ctx, t)
		}
		if err != nil {
			return err
		}
	}
	return p.ReadStructEnd(ctx)
}

// responseList is one list of responses being read.
type responseList struct {
	resps   slab[batch.Response]
	ids     slab[int32]
	errs    slab[batch.CallError]
	left    int    // elements not read yet, this one included
	message string // the last error message read
}

func readResponses(ctx context.Context, p *compact, r *batch.BatchResponse) error {
	// The declared element type is not looked at, as in readRequests.
	_, n, err := p.ReadListBegin(ctx)
	if err != nil {
		return thrift.PrependError("error reading list begin: ", err)
	}
	// n is at most len(frame), as in readRequests.
	var l responseList
	ptrs := make([]*batch.Response, n)
	for i := range ptrs {
		l.left = n - i
		q := l.resps.next(l.left)
		if err := readResponse(ctx, p, &l, q); err != nil {
			return thrift.PrependError(fmt.Sprintf("responses[%d]: ", i), err)
		}
		ptrs[i] = q
	}
	r.Responses = ptrs
	return p.ReadListEnd(ctx)
}

func readResponse(ctx context.Context, p *compact, l *responseList, q *batch.Response) error {
	if _, err := p.ReadStructBegin(ctx); err != nil {
		return err
	}
	for {
		_, t, id, err := p.ReadFieldBegin(ctx)
		if err != nil {
			return err
		}
		if t == thrift.STOP {
			break
		}
		switch {
		case id == 1 && t == thrift.I32:
			var v int32
			if v, err = p.ReadI32(ctx); err == nil {
				q.ID = l.ids.next(l.left)
				*q.ID = v
			}
		case id == 2 && t == thrift.STRING:
			var b []byte
			if b, err = frameBytes(p); err == nil {
				q.Reply = b
			}
		case id == 3 && t == thrift.STRUCT:
			// A field given twice is read into a new struct, as
			// the generated code does: what the first set and the
			// second does not is lost.
			e := l.errs.next(l.left)
			q.Error = e
			err = readCallError(ctx, p, e, &l.message)
		default:
			err = p.Skip(ctx, t)
		}
		if err != nil {
			return err
		}
	}
	return p.ReadStructEnd(ctx)
}

func readCallError(ctx context.Context, p *compact, e *batch.CallError, message *string) error {
	if _, err := p.ReadStructBegin(ctx); err != nil {
		return err
	}
	for {
		_, t, id, err := p.ReadFieldBegin(ctx)
		if err != nil {
			return err
		}
		if t == thrift.STOP {
			break
		}
		switch {
		case id == 1 && t == thrift.I32:
			var v int32
			if v, err = p.ReadI32(ctx); err == nil {
				e.Type = v
			}
		case id == 2 && t == thrift.STRING:
			var s string
			if s, err = readString(p, message); err == nil {
				e.Message = s
			}
		default:
			err = p.Skip(ctx, t)
		}
		if err != nil {
			return err
		}
	}
	return p.ReadStructEnd(ctx)
}

func readBatchError(ctx context.Context, p *compact, e *batch.BatchError) error {
	if _, err := p.ReadStructBegin(ctx); err != nil {
		return err
	}
	for {
		_, t, id, err := p.ReadFieldBegin(ctx)
		if err != nil {
			return err
		}
		if t == thrift.STOP {
			break
		}
		switch {
		case id == 1 && t == thrift.I32:
			var v int32
			if v, err = p.ReadI32(ctx); err == nil {
				e.Code = batch.BatchErrorCode(v)
			}
		case id == 2 && t == thrift.STRING:
			var s string
			if s, err = p.ReadString(ctx); err == nil {
				e.Message = s
			}
		default:
			err = p.Skip(ctx, t)
		}
		if err != nil {
			return err
		}
	}
	return p.ReadStructEnd(ctx)
}
