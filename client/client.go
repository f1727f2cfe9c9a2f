// Package client sends batches of Thrift calls to a server wrapped by
// thriftbatch (package processor), over any protocol and transport.
//
// Two ways to batch:
//
//   - Explicit: NewBatch collects calls built from the generated args and
//     result structs, Execute sends them as one executeBatch round trip, and
//     each call then holds its own result or error.
//   - Automatic: NewAuto returns a thrift.TClient that generated clients
//     accept (NewCatalogClient(auto)); it coalesces the calls made
//     concurrently from many goroutines into executeBatch calls, like a
//     DataLoader below the generated code.
//
// Compression is negotiated: a Client tells the server which codecs it reads
// (acceptCodecs), compresses large requests, and decompresses responses,
// bounded as the server bounds them.
package client

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"sync"
	"time"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/thriftbatch/thriftbatch/compress"
	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/internal/wire"
)

// Defaults of the Client options.
const (
	// DefaultCompressOver is the size, in bytes of encoded calls, from
	// which a request is compressed (WithRequestCompression).
	DefaultCompressOver = 4096
	// DefaultMaxDecompressedBytes bounds what a compressed response may
	// decompress to (WithMaxDecompressedBytes): 64 MiB.
	DefaultMaxDecompressedBytes = compress.DefaultMaxDecodedSize
)

// Client sends batches over one Thrift connection. Like the generated
// clients, it carries one call at a time: use one Client per goroutine, or
// NewAuto to share connections.
type Client struct {
	proto        thrift.TProtocol
	tc           thrift.TClient
	svc          *batch.BatchServiceClient
	framed       *framed // set for the compact protocol over a framed transport, without WithTClient
	tconf        *thrift.TConfiguration
	kind         wire.Kind
	codecs       *compress.Codecs
	accept       []batch.Codec
	requestCodec batch.Codec
	compressOver int
}

type config struct {
	tc           thrift.TClient
	tconf        *thrift.TConfiguration
	accept       []batch.Codec
	requestCodec batch.Codec
	compressOver int
	maxDecoded   int
}

// Option configures a Client.
type Option func(*config)

// WithTClient sends the batches through tc (a client wrapped in middleware,
// say) instead of a thrift.TStandardClient over the protocol given to New.
// tc must speak that protocol. What it costs: the batch's message then goes
// through tc and the generated code, a few allocations per call, where
// without it, over the compact protocol on a framed transport, the client
// writes and reads the frame itself with a few per batch.
func WithTClient(tc thrift.TClient) Option { return func(c *config) { c.tc = tc } }

// WithTConfiguration gives the client the thrift.TConfiguration of its
// protocol, whose MaxMessageSize (the longest string or binary) and
// MaxContainerSize (the longest list) then bound the replies the client
// reads in memory, as the library's protocol bounds what it reads: over the
// compact protocol on a framed transport, the client reads a reply's frame
// itself, and the protocol's own configuration, which Thrift does not
// expose, is not seen. The default is nil: the library's defaults.
func WithTConfiguration(conf *thrift.TConfiguration) Option {
	return func(c *config) { c.tconf = conf }
}

// WithAcceptCodecs sets the codecs the client reads compressed responses in,
// in its order of preference. The default is compress.Supported (zstd, s2,
// snappy, gzip, zlib); no codecs means plain responses only. A codec package
// compress does not implement, NONE included, makes New return an error; a
// response compressed with a codec not in the list fails its batch.
func WithAcceptCodecs(codecs ...batch.Codec) Option {
	return func(c *config) { c.accept = codecs }
}

// WithRequestCompression compresses requests whose encoded calls take at
// least over bytes with codec. The default is zstd over DefaultCompressOver
// (4 KiB); codec NONE sends every request plain. A codec package compress
// does not implement, or a negative over, makes New return an error.
func WithRequestCompression(codec batch.Codec, over int) Option {
	return func(c *config) { c.requestCodec, c.compressOver = codec, over }
}

// WithMaxDecompressedBytes bounds what a compressed response may decompress
// to. The default is DefaultMaxDecompressedBytes (64 MiB); it must be
// positive. A zstd frame declaring a window over 8 MiB is refused whatever
// the bound (compress.ErrWindowTooLarge).
func WithMaxDecompressedBytes(n int) Option { return func(c *config) { c.maxDecoded = n } }

// New returns a Client that speaks proto, the protocol of an open
// connection, for both directions. It returns an error when proto is not
// binary, compact, JSON or THeader, or for an invalid option. Each Client
// has codecs of its own (compress.New, which says what they keep): a zstd
// encoder and decoder to start with, whose buffers grow with the largest
// payload they handle, and more encoders, up to GOMAXPROCS, only while
// requests are compressed concurrently, which one Client's calls never are.
func New(proto thrift.TProtocol, opts ...Option) (*Client, error) {
	cfg := config{accept: compress.Supported, requestCodec: batch.Codec_ZSTD, compressOver: DefaultCompressOver, maxDecoded: DefaultMaxDecompressedBytes}
	for _, o := range opts {
		o(&cfg)
	}
	kind, err := wire.KindOf(proto)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if cfg.requestCodec != batch.Codec_NONE && !compress.IsSupported(cfg.requestCodec) {
		return nil, fmt.Errorf("client: WithRequestCompression: codec %s is not supported", compress.Name(cfg.requestCodec))
	}
	for _, codec := range cfg.accept {
		if !compress.IsSupported(codec) {
			return nil, fmt.Errorf("client: WithAcceptCodecs: codec %s is not supported", compress.Name(codec))
		}
	}
	if cfg.compressOver < 0 {
		return nil, fmt.Errorf("client: WithRequestCompression: threshold must not be negative, got %d", cfg.compressOver)
	}
	codecs, err := compress.New(compress.WithMaxDecodedSize(cfg.maxDecoded))
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	c := &Client{
		proto: proto, tc: cfg.tc, kind: kind, codecs: codecs, tconf: cfg.tconf,
		accept: cfg.accept, requestCodec: cfg.requestCodec, compressOver: cfg.compressOver,
	}
	if c.tc == nil {
		c.tc = thrift.NewTStandardClient(proto, proto)
		c.framed = newFramed(proto, cfg.tconf)
	}
	c.svc = batch.NewBatchServiceClient(c.tc)
	return c, nil
}

// Close closes the connection (the transport of the protocol given to New)
// and releases the Client's decoders.
func (c *Client) Close() error {
	c.codecs.Close()
	return c.proto.Transport().Close()
}

// CallError is the error of one call that the server answered without a
// reply. Code is a TApplicationException code (UNKNOWN_METHOD,
// INTERNAL_ERROR, PROTOCOL_ERROR, ...) or one of thriftbatch's own
// (batch.CALL_DEADLINE_EXCEEDED, CALL_OVERLOADED, CALL_NOT_ALLOWED,
// CALL_CANCELED).
type CallError struct {
	Method  string // the call's method, as it was added to the batch
	Code    int32  // why, as above
	Message string // the server's words
}

// Error returns the method, the message and the code in one line.
func (e *CallError) Error() string {
	return fmt.Sprintf("thriftbatch: %s: %s (code %d)", e.Method, e.Message, e.Code)
}

// TypeId returns Code, so that a CallError with a TApplicationException code
// can be handled as one.
func (e *CallError) TypeId() int32 { return e.Code }

// Is makes errors.Is(err, context.DeadlineExceeded) true for a call the
// batch deadline cut off (CALL_DEADLINE_EXCEEDED), and errors.Is(err,
// context.Canceled) true for a canceled one (CALL_CANCELED), as for an
// unbatched call whose context ended.
func (e *CallError) Is(target error) bool {
	switch e.Code {
	case batch.CALL_DEADLINE_EXCEEDED:
		return target == context.DeadlineExceeded
	case batch.CALL_CANCELED:
		return target == context.Canceled
	}
	return false
}

// Call is one call of an explicit Batch. Its result and error are set by
// Execute.
type Call[R thrift.TStruct] struct {
	// Result is the result struct given to Add, filled in by Execute when
	// the call succeeded or raised a declared exception.
	Result R
	err    error
	req    batch.Request // the call on the wire, allocated with the Call
}

// Err returns the call's error after Execute: nil when it succeeded, the
// declared exception it raised (as the generated client would return it), a
// *CallError, or the error of the batch as a whole.
func (c *Call[R]) Err() error { return c.err }

// Batch collects calls for one executeBatch. It is not safe for concurrent
// use.
type Batch struct {
	c          *Client
	requests   []*batch.Request
	calls      []settler
	args       []byte // the encoded arguments of all calls, end to end
	enc        coder  // encodes them
	sequential bool
}

// settler is a Call of any result type.
type settler interface {
	settle(d *coder, r *batch.Response, batchErr error)
}

// NewBatch returns an empty batch to send over c.
func (c *Client) NewBatch() *Batch { return &Batch{c: c, enc: coder{kind: c.kind}} }

// Sequential asks the server to run the calls one at a time, in order.
func (b *Batch) Sequential() *Batch { b.sequential = true; return b }

// Len returns the number of calls added.
func (b *Batch) Len() int { return len(b.requests) }

// Grow makes room for n more calls, so that adding them does not grow the
// batch's lists of calls as it goes: for a caller that knows how many calls
// it will add, it saves the lists' copies and about half their memory.
// Without it, the lists double as calls are added. A negative n panics, as
// in slices.Grow.
func (b *Batch) Grow(n int) {
	b.requests = slices.Grow(b.requests, n)
	b.calls = slices.Grow(b.calls, n)
}

// Add adds a call of method with args (the generated args struct, e.g.
// CatalogGetProductArgs) and returns a Call whose Result (the generated
// result struct, e.g. CatalogGetProductResult) Execute fills in. A oneway
// method takes a nil result. It encodes args at once, into a buffer the
// batch's calls share, so args may be reused when Add returns.
func Add[R thrift.TStruct](b *Batch, method string, args thrift.TStruct, result R) *Call[R] {
	call := &Call[R]{Result: result, req: batch.Request{Method: method}}
	req := &call.req
	start := len(b.args)
	out, err := b.enc.encode(context.Background(), b.args, args)
	if err != nil {
		call.err = fmt.Errorf("thriftbatch: encode %s arguments: %w", method, err)
	} else {
		b.args = out
		req.Arguments = out[start:len(out):len(out)]
	}
	b.requests = append(b.requests, req)
	b.calls = append(b.calls, call)
	return call
}

func (call *Call[R]) settle(d *coder, r *batch.Response, batchErr error) {
	if call.err == nil {
		call.err = settle(d, call.req.Method, r, batchErr, call.Result)
	}
}

// Execute sends the calls as one executeBatch and settles each call,
// decoding the replies of a large batch on every processor. It
// returns the error of the batch as a whole (a transport error, the server's
// *batch.BatchError, or compressed responses in a codec not accepted
// (WithAcceptCodecs), corrupt, or over WithMaxDecompressedBytes), which every
// call then also returns; a call's
// own failure is in its Err only. ctx's deadline, if any, becomes the batch's
// timeoutMillis.
func (b *Batch) Execute(ctx context.Context) error {
	b.enc.release()
	// The replies are decoded (and copied) before Execute returns: their
	// memory serves the Client's next batch, and keeps nothing of this one
	// reachable while the Client is idle.
	defer b.c.doneWithReplies()
	responses, err := b.c.execute(ctx, b.requests, b.sequential, true)
	settleEach(b.c.kind, b.calls, responses, err)
	return err
}

// settleEach settles every call with its response, or with err, the
// batch's, when it is not nil, decoding the replies on every processor when
// the batch is large (spreadEach).
func settleEach[S settler](kind wire.Kind, calls []S, responses []*batch.Response, err error) {
	spreadEach(len(calls), func() (func(i int), func()) {
		d := &coder{kind: kind}
		return func(i int) {
			var r *batch.Response
			if err == nil {
				r = responses[i]
			}
			calls[i].settle(d, r, err)
		}, d.release
	})
}

// inStep is an error of execute after which the connection is still in
// step with the server: nothing was sent, or the reply was read whole.
type inStep struct{ error }

func (e inStep) Unwrap() error { return e.error }

// execute sends requests and returns exactly one response per request.
// Its errors other than the call's own (a transport or protocol error, an
// exception, the server's *batch.BatchError) are inStep. reuse reads the reply into the Client's memory, which the caller hands
// back with doneWithReplies once it is through with the responses, before
// it calls execute again.
func (c *Client) execute(ctx context.Context, requests []*batch.Request, sequential, reuse bool) ([]*batch.Response, error) {
	req := &batch.BatchRequest{Requests: requests, AcceptCodecs: c.accept}
	if sequential {
		req.Sequential = thrift.BoolPtr(true)
	}
	if dl, ok := ctx.Deadline(); ok {
		ms := max(time.Until(dl).Milliseconds(), 1)
		req.TimeoutMillis = thrift.Int32Ptr(int32(min(ms, int64(1<<31-1))))
	}
	if err := c.compressRequests(ctx, req); err != nil {
		return nil, inStep{err}
	}
	var resp *batch.BatchResponse
	var err error
	if c.framed != nil {
		resp, err = c.framed.call(ctx, req, reuse)
	} else {
		resp, err = c.svc.ExecuteBatch(ctx, req)
	}
	if err != nil {
		return nil, err
	}
	responses := resp.Responses
	if resp.IsSetCompressedResponses() {
		codec := resp.GetCodec()
		if !slices.Contains(c.accept, codec) {
			return nil, inStep{fmt.Errorf("thriftbatch: responses compressed with %s, which the client did not accept", compress.Name(codec))}
		}
		raw, err := c.codecs.Decode(codec, nil, resp.CompressedResponses)
		if err != nil {
			return nil, inStep{fmt.Errorf("thriftbatch: compressed responses (%s): %w", compress.Name(codec), err)}
		}
		var inner batch.BatchResponse
		if err := c.decodeResponses(ctx, raw, &inner); err != nil {
			return nil, inStep{fmt.Errorf("thriftbatch: compressed responses (%s) do not decode: %w", compress.Name(codec), err)}
		}
		responses = inner.Responses
	}
	if len(responses) != len(requests) {
		return nil, inStep{fmt.Errorf("thriftbatch: %d responses for %d calls", len(responses), len(requests))}
	}
	return responses, nil
}

// doneWithReplies hands back the memory of the last reply execute read with
// reuse.
func (c *Client) doneWithReplies() {
	if c.framed != nil {
		c.framed.done()
	}
}

// decodeResponses decodes raw, the decompressed compressedResponses, into
// r: the compact protocol by hand (wire.DecodeBatchResponse: a few
// allocations per batch, the replies slices of raw), the others through the
// generated code.
func (c *Client) decodeResponses(ctx context.Context, raw []byte, r *batch.BatchResponse) error {
	if c.kind == wire.Compact {
		return wire.DecodeBatchResponse(raw, r, c.tconf)
	}
	return wire.Decode(ctx, c.kind, raw, r)
}

func (c *Client) compressRequests(ctx context.Context, req *batch.BatchRequest) error {
	if c.requestCodec == batch.Codec_NONE {
		return nil
	}
	size := 0
	for _, r := range req.Requests {
		size += len(r.Method) + len(r.Arguments) + 16
	}
	if size < c.compressOver || size == 0 {
		return nil
	}
	raw, err := wire.Encode(ctx, c.kind, nil, &batch.BatchRequest{Requests: req.Requests})
	if err != nil {
		return fmt.Errorf("thriftbatch: encode requests: %w", err)
	}
	packed, err := c.codecs.Encode(c.requestCodec, nil, raw)
	if err != nil {
		return fmt.Errorf("thriftbatch: compress requests: %w", err)
	}
	if len(packed) >= len(raw) {
		return nil
	}
	codec := c.requestCodec
	req.Requests, req.RequestCodec, req.CompressedRequests = nil, &codec, packed
	return nil
}

// settle decodes one response into result with d and returns the call's
// error.
func settle(d *coder, method string, r *batch.Response, batchErr error, result thrift.TStruct) error {
	switch {
	case batchErr != nil:
		return batchErr
	case r.Error != nil:
		return &CallError{Method: method, Code: r.Error.Type, Message: r.Error.Message}
	case r.Reply == nil:
		return &CallError{Method: method, Code: thrift.MISSING_RESULT, Message: "response has neither reply nor error"}
	case result == nil || isNil(result):
		return nil // oneway
	}
	if err := d.decode(r.Reply, result); err != nil {
		return &CallError{Method: method, Code: thrift.PROTOCOL_ERROR, Message: "reply does not decode: " + err.Error()}
	}
	return declaredException(result)
}

// exceptionFields caches, per result struct type, the indexes of its fields
// other than Success whose type can hold a thrift.TException: the declared
// exceptions.
var exceptionFields sync.Map // reflect.Type -> []int

// declaredException returns the declared exception a decoded result struct
// holds, or nil: what thrift.ExtractExceptionFromResult returns, without
// listing the struct's fields by reflection for every call (3% of a batch's
// CPU in go test -bench HundredGetProduct ./bench); they are listed once
// per type.
func declaredException(result thrift.TStruct) error {
	v := reflect.Indirect(reflect.ValueOf(result))
	if v.Kind() != reflect.Struct {
		return nil
	}
	fields, ok := exceptionFields.Load(v.Type())
	if !ok {
		fields, _ = exceptionFields.LoadOrStore(v.Type(), exceptionIndexes(v.Type()))
	}
	for _, i := range fields.([]int) {
		f := v.Field(i)
		if f.IsZero() {
			continue
		}
		if ex, ok := f.Interface().(thrift.TException); ok && ex != nil && ex.TExceptionType() == thrift.TExceptionTypeCompiled {
			return ex
		}
	}
	return nil
}

var texception = reflect.TypeFor[thrift.TException]()

func exceptionIndexes(t reflect.Type) []int {
	var out []int
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Name == "Success" || !f.IsExported() {
			continue
		}
		if f.Type.Implements(texception) || (f.Type.Kind() == reflect.Interface && texception.Implements(f.Type)) {
			out = append(out, i)
		}
	}
	return out
}

// isNil reports whether a result is a typed nil pointer, which stands for no
// result as an untyped nil does.
func isNil(s thrift.TStruct) bool {
	v := reflect.ValueOf(s)
	return v.Kind() == reflect.Pointer && v.IsNil()
}
