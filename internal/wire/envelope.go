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
// on its own; the functions here allocate those in blocks (see slab). They
// read field by field as the generated methods do: the same fields set,
// unknown fields and fields of an unexpected type skipped, a list's declared
// element type ignored, a field given twice read twice and the last value
// kept. envelope_test.go compares the two on random and arbitrary input.
// Their errors are thrift.TProtocolException or thrift.TTransportException
// where the generated code's are, of the same type id; their texts differ.

// TooManyCallsError is what DecodeBatchArgs and DecodeBatchRequest return
// for a list of more requests than their maxCalls: how many it held.
type TooManyCallsError struct{ Calls int }

func (e *TooManyCallsError) Error() string {
	return fmt.Sprintf("batch has %d calls", e.Calls)
}

// callLimit is the maxCalls of a decode, and the length of a list of
// requests read past for exceeding it.
type callLimit struct{ max, over int }

// err is the decode's outcome once the whole input has been read.
func (l *callLimit) err() error {
	if l.over > 0 {
		return &TooManyCallsError{Calls: l.over}
	}
	return nil
}

// Scratch is memory that decodes take the elements of their lists of
// requests and responses from, and the lists themselves, so that a caller
// decoding batch after batch allocates them once rather than per batch.
// Reset it once nothing of the values decoded with it is in use any more;
// a decode given a Scratch that was not reset since the last one allocates
// as if given none. The zero value is ready to use; nil means none.
//
// It keeps room for as many elements as the longest list decoded with it,
// up to maxScratchElems: a list gets its elements from that room first and
// allocates the rest as without a Scratch.
type Scratch struct {
	requests  listMemory[batch.Request]
	responses listMemory[batch.Response]
}

// Reset makes s ready for another decode: it clears what the last decode
// left in it, so that s keeps nothing of those values reachable, and makes
// room for the longest list decoded since the last Reset.
func (s *Scratch) Reset() {
	s.requests.reset()
	s.responses.reset()
}

const maxScratchElems = 4096

// requestMemory and responseMemory return s's memory for a list of
// requests or responses; a nil s has none.
func (s *Scratch) requestMemory() *listMemory[batch.Request] {
	if s == nil {
		return nil
	}
	return &s.requests
}

func (s *Scratch) responseMemory() *listMemory[batch.Response] {
	if s == nil {
		return nil
	}
	return &s.responses
}

// listMemory is a Scratch's memory for one kind of list.
type listMemory[T any] struct {
	elems []T  // zeroed elements, handed out from the start
	ptrs  []*T // the list, when its length fits
	want  int  // the length of the list taken: what reset clears and makes room for
	taken bool // a decode has used it since the last reset
}

// take returns the memory for a list of n elements: ptrs of length n, from
// m when it has room, and the zeroed elements to hand out first. A nil m,
// or one already taken since its last reset, gives new pointers and no
// elements.
func (m *listMemory[T]) take(n int) (ptrs []*T, elems []T) {
	if m == nil || m.taken {
		return make([]*T, n), nil
	}
	m.taken, m.want = true, n
	if m.ptrs == nil || cap(m.ptrs) < n { // an empty list is not nil
		m.ptrs = make([]*T, n)
	}
	return m.ptrs[:n:n], m.elems // appending to the list cannot write into m
}

func (m *listMemory[T]) reset() {
	clear(m.elems[:min(m.want, len(m.elems))])
	clear(m.ptrs[:min(m.want, len(m.ptrs))])
	if cap(m.ptrs) > maxScratchElems {
		m.ptrs = nil
	}
	if m.want > len(m.elems) && m.want <= maxScratchElems {
		m.elems = make([]T, m.want)
	}
	m.want, m.taken = 0, false
}

// DecodeBatchArgs decodes frame, the body of an executeBatch CALL message
// (a BatchServiceExecuteBatchArgs struct) in the compact protocol, into args.
// frame must hold the struct and nothing more: it is a message's frame, and
// bytes after the struct fail the decode rather than be lost.
//
// It sets what args.Read would set reading frame with a TCompactProtocol
// configured with conf (nil: the library's defaults, whose
// MaxMessageSize bounds strings and binaries and MaxContainerSize lists),
// and fails where that fails. A list of more than maxCalls requests (0: no
// limit) is read past without keeping any of its requests, and once the
// rest of frame has been read as usual, it fails with a
// *TooManyCallsError, args holding the other fields and no Requests. As
// args.Read does, it sets only the fields frame holds: pass a zero args.
// On error, args may be partly set. The list of requests and its Requests
// come from s when it has room (nil: none; see Scratch).
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
// in use, and a Request kept keeps frame reachable.
func DecodeBatchArgs(frame []byte, args *batch.BatchServiceExecuteBatchArgs, conf *thrift.TConfiguration, maxCalls int, s *Scratch) error {
	lim := callLimit{max: maxCalls}
	if err := decode(frame, conf, true, func(ctx context.Context, p *compact) error {
		return readBatchArgs(ctx, p, args, &lim, s)
	}); err != nil {
		return thrift.PrependError("executeBatch args: ", err)
	}
	return lim.err()
}

// DecodeBatchResult decodes frame, the body of an executeBatch REPLY
// (a BatchServiceExecuteBatchResult struct) in the compact protocol, into
// res. frame must hold the struct and nothing more, as for
// DecodeBatchArgs.
//
// It sets what res.Read would set reading frame with a TCompactProtocol
// configured with conf (nil: the library's defaults), and fails where that
// fails. As res.Read does, it sets only the fields frame holds: pass a zero
// res. On error, res may be partly set. The list of responses and its
// Responses come from s when it has room (nil: none; see Scratch).
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
// use, and a Response kept keeps frame reachable.
func DecodeBatchResult(frame []byte, res *batch.BatchServiceExecuteBatchResult, conf *thrift.TConfiguration, s *Scratch) error {
	if err := decode(frame, conf, true, func(ctx context.Context, p *compact) error {
		return readBatchResult(ctx, p, res, s)
	}); err != nil {
		return thrift.PrependError("executeBatch result: ", err)
	}
	return nil
}

// DecodeBatchRequest decodes raw, a BatchRequest in the compact protocol
// (the content of compressedRequests once decompressed), into r, as
// DecodeBatchArgs decodes the request of an executeBatch message, with the
// same limits and costs. Bytes after the struct are ignored, as the
// generated code ignores them: raw is a payload, not a frame that might
// hold another message.
func DecodeBatchRequest(raw []byte, r *batch.BatchRequest, conf *thrift.TConfiguration, maxCalls int) error {
	lim := callLimit{max: maxCalls}
	if err := decode(raw, conf, false, func(ctx context.Context, p *compact) error {
		return readBatchRequest(ctx, p, r, &lim, nil)
	}); err != nil {
		return err
	}
	return lim.err()
}

// DecodeBatchResponse decodes raw, a BatchResponse in the compact protocol
// (the content of compressedResponses once decompressed), into r, as
// DecodeBatchResult decodes the response of an executeBatch reply, with the
// same limits and costs; bytes after the struct are ignored, as for
// DecodeBatchRequest.
func DecodeBatchResponse(raw []byte, r *batch.BatchResponse, conf *thrift.TConfiguration) error {
	return decode(raw, conf, false, func(ctx context.Context, p *compact) error {
		return readBatchResponse(ctx, p, r, nil)
	})
}

// whole fails unless the struct just read was all of the input.
func (p *compact) whole() error {
	if n := p.b.RemainingBytes(); n > 0 {
		return thrift.NewTProtocolExceptionWithType(thrift.INVALID_DATA,
			fmt.Errorf("%d bytes follow the struct in its frame; a batch message must have its frame to itself", n))
	}
	return nil
}

// envelopeReaders holds the compact protocols the decoders read with, so
// that a decode allocates none.
var envelopeReaders = sync.Pool{New: func() any { return newCompact(&Buffer{}, &header{}) }}

// decode runs read over in with a pooled compact protocol bounded by conf
// (nil: the library's defaults), and, when frame is set, fails unless the
// struct read was all of in. The protocol's binary values alias in.
func decode(in []byte, conf *thrift.TConfiguration, frame bool, read func(context.Context, *compact) error) error {
	p := envelopeReaders.Get().(*compact)
	p.b.Reset(in)
	p.SetTConfiguration(conf)
	err := read(context.Background(), p)
	if err == nil && frame {
		err = p.whole()
	}
	// After a failed decode too: reset clears all the state a decode
	// leaves in p.
	p.b.Reset(nil)
	p.reset()
	p.SetTConfiguration(nil)
	envelopeReaders.Put(p)
	return err
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

// readFields reads a struct, handing each field's id and type to field,
// which reads the value of a field it knows and reports false for any
// other; those are skipped, as the generated code skips unknown fields and
// fields of an unexpected type.
func readFields(ctx context.Context, p *compact, field func(id int16, t thrift.TType) (bool, error)) error {
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
		known, err := field(id, t)
		if err == nil && !known {
			err = p.skip(ctx, t, thrift.DEFAULT_RECURSION_DEPTH)
		}
		if err != nil {
			return err
		}
	}
	return p.ReadStructEnd(ctx)
}

// readID reads a call's id into an int32 from ids, a slab for a list with
// left elements still to read.
func readID(ctx context.Context, p *compact, ids *slab[int32], left int) (*int32, error) {
	v, err := p.ReadI32(ctx)
	if err != nil {
		return nil, err
	}
	id := ids.next(left)
	*id = v
	return id, nil
}

// readI32 reads an i32 field into a new int32.
func readI32(ctx context.Context, p *compact) (*int32, error) {
	v, err := p.ReadI32(ctx)
	if err != nil {
		return nil, err
	}
	return &v, nil
}

// readCodec reads a Codec field into a new Codec.
func readCodec(ctx context.Context, p *compact) (*batch.Codec, error) {
	v, err := p.ReadI32(ctx)
	if err != nil {
		return nil, err
	}
	c := batch.Codec(v)
	return &c, nil
}

// The requests.

func readBatchArgs(ctx context.Context, p *compact, args *batch.BatchServiceExecuteBatchArgs, lim *callLimit, s *Scratch) error {
	return readFields(ctx, p, func(id int16, t thrift.TType) (bool, error) {
		if id != 1 || t != thrift.STRUCT {
			return false, nil
		}
		args.Request = &batch.BatchRequest{}
		return true, readBatchRequest(ctx, p, args.Request, lim, s)
	})
}

func readBatchRequest(ctx context.Context, p *compact, r *batch.BatchRequest, lim *callLimit, s *Scratch) error {
	return readFields(ctx, p, func(id int16, t thrift.TType) (known bool, err error) {
		switch {
		case id == 1 && t == thrift.LIST:
			return true, readRequests(ctx, p, r, lim, s)
		case id == 2 && t == thrift.I32:
			r.RequestCodec, err = readCodec(ctx, p)
		case id == 3 && t == thrift.STRING:
			r.CompressedRequests, err = p.bytes()
		case id == 4 && t == thrift.LIST:
			return true, readCodecs(ctx, p, r)
		case id == 5 && t == thrift.I32:
			r.TimeoutMillis, err = readI32(ctx, p)
		case id == 6 && t == thrift.BOOL:
			var v bool
			if v, err = p.ReadBool(ctx); err == nil {
				r.Sequential = &v
			}
		default:
			return false, nil
		}
		return true, err
	})
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

// readList reads n structs, the elements of a list whose header has been read,
// each into an element of a slab by read (given how many elements are left,
// this one included), and the list's end; the list and its first elements come
// from mem when it has them (nil: none). As the generated code does, it reads
// every element as the struct it expects, whatever element type the header
// declares.
func readList[T any](ctx context.Context, p *compact, n int, what string, mem *listMemory[T], read func(e *T, left int) error) ([]*T, error) {
	ptrs, first := mem.take(n)
	elems := slab[T]{block: first}
	for i := range ptrs {
		e := elems.next(n - i)
		if err := read(e, n-i); err != nil {
			return nil, thrift.PrependError(fmt.Sprintf("%s[%d]: ", what, i), err)
		}
		ptrs[i] = e
	}
	return ptrs, p.ReadListEnd(ctx)
}

func readRequests(ctx context.Context, p *compact, r *batch.BatchRequest, lim *callLimit, s *Scratch) error {
	_, n, err := p.ReadListBegin(ctx)
	if err != nil {
		return thrift.PrependError("error reading list begin: ", err)
	}
	if lim.max > 0 && n > lim.max {
		// Read past the requests without keeping them, so that the
		// rest of the message is checked as it would be, and say how
		// many there were once the whole message has been read.
		for i := range n {
			if err := p.skip(ctx, thrift.STRUCT, thrift.DEFAULT_RECURSION_DEPTH); err != nil {
				return thrift.PrependError(fmt.Sprintf("requests[%d]: ", i), err)
			}
		}
		lim.over = n
		return p.ReadListEnd(ctx)
	}
	// ReadListBegin refused a count the bytes left cannot hold at one
	// byte an element, so n is at most len(frame), and the pointers
	// cost what the generated code's cost.
	var ids slab[int32]
	var method string // the last method name read
	r.Requests, err = readList(ctx, p, n, "requests", s.requestMemory(), func(q *batch.Request, left int) error {
		return readRequest(ctx, p, q, &ids, left, &method)
	})
	return err
}

func readRequest(ctx context.Context, p *compact, q *batch.Request, ids *slab[int32], left int, method *string) error {
	return readFields(ctx, p, func(id int16, t thrift.TType) (known bool, err error) {
		switch {
		case id == 1 && t == thrift.STRING:
			q.Method, err = readString(p, method)
		case id == 2 && t == thrift.STRING:
			q.Arguments, err = p.bytes()
		case id == 3 && t == thrift.I32:
			q.ID, err = readID(ctx, p, ids, left)
		default:
			return false, nil
		}
		return true, err
	})
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

func readBatchResult(ctx context.Context, p *compact, res *batch.BatchServiceExecuteBatchResult, s *Scratch) error {
	return readFields(ctx, p, func(id int16, t thrift.TType) (bool, error) {
		switch {
		case id == 0 && t == thrift.STRUCT:
			res.Success = &batch.BatchResponse{}
			return true, readBatchResponse(ctx, p, res.Success, s)
		case id == 1 && t == thrift.STRUCT:
			res.Error = &batch.BatchError{}
			return true, readBatchError(ctx, p, res.Error)
		}
		return false, nil
	})
}

func readBatchResponse(ctx context.Context, p *compact, r *batch.BatchResponse, s *Scratch) error {
	return readFields(ctx, p, func(id int16, t thrift.TType) (known bool, err error) {
		switch {
		case id == 1 && t == thrift.LIST:
			return true, readResponses(ctx, p, r, s)
		case id == 2 && t == thrift.I32:
			r.Codec, err = readCodec(ctx, p)
		case id == 3 && t == thrift.STRING:
			r.CompressedResponses, err = p.bytes()
		default:
			return false, nil
		}
		return true, err
	})
}

// responseList holds what the responses of one list share.
type responseList struct {
	ids     slab[int32]
	errs    slab[batch.CallError]
	message string // the last error message read
}

func readResponses(ctx context.Context, p *compact, r *batch.BatchResponse, s *Scratch) error {
	_, n, err := p.ReadListBegin(ctx)
	if err != nil {
		return thrift.PrependError("error reading list begin: ", err)
	}
	// n is at most len(frame), as in readRequests.
	var l responseList
	r.Responses, err = readList(ctx, p, n, "responses", s.responseMemory(), func(q *batch.Response, left int) error {
		return readResponse(ctx, p, &l, q, left)
	})
	return err
}

func readResponse(ctx context.Context, p *compact, l *responseList, q *batch.Response, left int) error {
	return readFields(ctx, p, func(id int16, t thrift.TType) (known bool, err error) {
		switch {
		case id == 1 && t == thrift.I32:
			q.ID, err = readID(ctx, p, &l.ids, left)
		case id == 2 && t == thrift.STRING:
			q.Reply, err = p.bytes()
		case id == 3 && t == thrift.STRUCT:
			// A field given twice is read into a new struct, as
			// the generated code does: what the first set and the
			// second does not is lost.
			q.Error = l.errs.next(left)
			err = readCallError(ctx, p, q.Error, &l.message)
		default:
			return false, nil
		}
		return true, err
	})
}

func readCallError(ctx context.Context, p *compact, e *batch.CallError, message *string) error {
	return readFields(ctx, p, func(id int16, t thrift.TType) (known bool, err error) {
		switch {
		case id == 1 && t == thrift.I32:
			e.Type, err = p.ReadI32(ctx)
		case id == 2 && t == thrift.STRING:
			e.Message, err = readString(p, message)
		default:
			return false, nil
		}
		return true, err
	})
}

func readBatchError(ctx context.Context, p *compact, e *batch.BatchError) error {
	return readFields(ctx, p, func(id int16, t thrift.TType) (known bool, err error) {
		switch {
		case id == 1 && t == thrift.I32:
			var v int32
			v, err = p.ReadI32(ctx)
			e.Code = batch.BatchErrorCode(v)
		case id == 2 && t == thrift.STRING:
			// Its own copy, not a substring of a chunk of the frame
			// (see Buffer.substring): the error may outlive the frame
			// by long.
			var b []byte
			if b, err = p.bytes(); err == nil {
				e.Message = string(b)
			}
		default:
			return false, nil
		}
		return true, err
	})
}
