package wire

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"unsafe"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/thriftbatch/thriftbatch/idl/batch"
)

// DecodeBatchArgs and DecodeBatchResult are checked against the generated
// Read methods over this package's compact protocol (itself checked
// against the library's in compact_test.go): on any input both must fail,
// or both succeed with equal structs. A frame must hold the struct alone,
// so the generated read counts as failed when it leaves bytes unread.

// decodeWhole reads s from frame with the generated Read over a compact
// protocol configured with conf, and fails as DecodeBatchArgs does when
// bytes are left.
func decodeWhole(frame []byte, s thrift.TStruct, conf *thrift.TConfiguration) error {
	b := &Buffer{}
	b.Reset(frame)
	p := newCompact(b, &header{})
	p.SetTConfiguration(conf)
	if err := s.Read(context.Background(), p); err != nil {
		return err
	}
	return p.whole()
}

// envelope is an executeBatch message body DecodeBatchArgs or
// DecodeBatchResult decodes: how to decode it, with a Scratch or without,
// and the binaries a decode leaves as slices of the frame.
type envelope[T any] struct {
	decode   func(frame []byte, v *T, s *Scratch) error
	binaries func(v *T) [][]byte
}

var (
	argsEnvelope = envelope[batch.BatchServiceExecuteBatchArgs]{
		decode: func(frame []byte, a *batch.BatchServiceExecuteBatchArgs, s *Scratch) error {
			return DecodeBatchArgs(frame, a, nil, 0, s)
		},
		binaries: func(a *batch.BatchServiceExecuteBatchArgs) [][]byte {
			r := a.Request
			if r == nil {
				return nil
			}
			out := [][]byte{r.CompressedRequests}
			for _, q := range r.Requests {
				out = append(out, q.Arguments)
			}
			return out
		},
	}
	resultEnvelope = envelope[batch.BatchServiceExecuteBatchResult]{
		decode: func(frame []byte, r *batch.BatchServiceExecuteBatchResult, s *Scratch) error {
			return DecodeBatchResult(frame, r, nil, s)
		},
		binaries: func(r *batch.BatchServiceExecuteBatchResult) [][]byte {
			b := r.Success
			if b == nil {
				return nil
			}
			out := [][]byte{b.CompressedResponses}
			for _, q := range b.Responses {
				out = append(out, q.Reply)
			}
			return out
		},
	}
)

// check decodes frame with e's decoder, without a Scratch and with one a
// decode used before, and with the generated code, and fails t unless all
// agree; it returns the decoder's result. reflect.DeepEqual tells a nil
// slice or pointer from an empty or zero one, as the IsSet methods do.
func (e envelope[T]) check(t testing.TB, frame []byte) (*T, error) {
	t.Helper()
	var got, want T
	gotErr := e.decode(frame, &got, nil)
	wantErr := decodeWhole(frame, any(&want).(thrift.TStruct), nil)
	checkErrors(t, frame, gotErr, wantErr)
	withScratch(func(s *Scratch) {
		var again T
		err := e.decode(frame, &again, s)
		checkErrors(t, frame, err, wantErr)
		if err == nil && !reflect.DeepEqual(again, want) {
			t.Fatalf("input %s, with a Scratch used before:\n got %s\nwant %s", short(frame), dump(again), dump(want))
		}
	})
	if gotErr != nil {
		return nil, gotErr
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("input %s:\n got %s\nwant %s", short(frame), dump(got), dump(want))
	}
	for _, b := range e.binaries(&got) {
		checkAliased(t, frame, b)
	}
	return &got, nil
}

// checkArgs is the check of an executeBatch call's arguments.
func checkArgs(t testing.TB, frame []byte) (*batch.BatchServiceExecuteBatchArgs, error) {
	t.Helper()
	return argsEnvelope.check(t, frame)
}

// checkResult is the check of an executeBatch result.
func checkResult(t testing.TB, frame []byte) (*batch.BatchServiceExecuteBatchResult, error) {
	t.Helper()
	return resultEnvelope.check(t, frame)
}

// shared is the Scratch every check decodes with a second time, reset after
// each: so that each decode finds it as the previous input left it.
var shared struct {
	sync.Mutex
	s Scratch
}

// withScratch calls decode with the shared Scratch, and resets it after.
func withScratch(decode func(s *Scratch)) {
	shared.Lock()
	defer shared.Unlock()
	defer shared.s.Reset()
	decode(&shared.s)
}

// checkErrors fails t unless both decodes failed or neither did, and our
// error is one the compact protocol returns.
func checkErrors(t testing.TB, frame []byte, got, want error) {
	t.Helper()
	if (got == nil) != (want == nil) {
		t.Fatalf("input %s: ours returned %v, the generated code %v", short(frame), got, want)
	}
	if got == nil {
		return
	}
	switch got.(type) {
	case thrift.TProtocolException, thrift.TTransportException:
	default:
		t.Fatalf("input %s: error %v (%T) is not a TProtocolException or TTransportException", short(frame), got, got)
	}
	var g, w thrift.TProtocolException
	if errors.As(got, &g) && errors.As(want, &w) && g.TypeId() != w.TypeId() {
		t.Fatalf("input %s: ours failed with protocol error type %d (%v), the generated code with %d (%v)", short(frame), g.TypeId(), got, w.TypeId(), want)
	}
}

// checkAliased fails t unless b is a slice of frame with no room past its
// length.
func checkAliased(t testing.TB, frame, b []byte) {
	t.Helper()
	if cap(b) != len(b) {
		t.Fatalf("a binary of %d bytes has capacity %d", len(b), cap(b))
	}
	if len(b) == 0 {
		return
	}
	start := uintptr(unsafe.Pointer(unsafe.SliceData(frame)))
	at := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	if at < start || at+uintptr(len(b)) > start+uintptr(len(frame)) {
		t.Fatalf("a binary of %d bytes is not a slice of the frame", len(b))
	}
}

// short shows the start of an input, enough to tell which it is.
func short(b []byte) string {
	if len(b) > 256 {
		return fmt.Sprintf("%x... (%d bytes)", b[:256], len(b))
	}
	return fmt.Sprintf("%x", b)
}

// dump shows v with its pointers followed; JSON writes a nil slice as null
// and an empty one as [].
func dump(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

func encodeEnvelope(t testing.TB, s thrift.TStruct) []byte {
	t.Helper()
	b, err := Encode(context.Background(), Compact, nil, s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// encodeValue writes v, a value of compact_test.go, in the compact protocol.
func encodeValue(t testing.TB, v value) []byte {
	t.Helper()
	b := &Buffer{}
	if err := write(context.Background(), newCompact(b, &header{}), v); err != nil {
		t.Fatal(err)
	}
	return b.Out
}

// Random envelopes.

var envMethods = []string{"", "getProduct", "getProduct", "Catalog:getProduct", strings.Repeat("m", 70)}

var envMessages = []string{"", "deadline exceeded", "deadline exceeded", "boom: " + strings.Repeat("x", 80)}

func envBytes(r *rand.Rand) []byte {
	switch r.IntN(4) {
	case 0:
		return nil
	case 1:
		return []byte{}
	}
	b := make([]byte, []int{1, 10, 63, 64, 180, 300}[r.IntN(6)])
	for i := range b {
		b[i] = byte(r.IntN(256))
	}
	return b
}

func envI32(r *rand.Rand) int32 {
	if r.IntN(2) == 0 {
		return []int32{0, 1, -1, 100, 103, math.MinInt32, math.MaxInt32}[r.IntN(7)]
	}
	return r.Int32() >> r.IntN(32)
}

func envI32Ptr(r *rand.Rand) *int32 {
	if r.IntN(2) == 0 {
		return nil
	}
	v := envI32(r)
	return &v
}

func envCodec(r *rand.Rand) batch.Codec {
	return []batch.Codec{0, 1, 2, 3, 4, 5, 99, -1, math.MaxInt32}[r.IntN(9)]
}

func envCodecPtr(r *rand.Rand) *batch.Codec {
	if r.IntN(2) == 0 {
		return nil
	}
	c := envCodec(r)
	return &c
}

// envCount is a list length: nil, empty, or up to 40 elements, around the
// 14 that fit in the list header's byte.
func envCount(r *rand.Rand) int {
	return []int{-1, 0, 1, 2, 14, 15, 16, 40}[r.IntN(8)]
}

func randomArgs(r *rand.Rand) *batch.BatchServiceExecuteBatchArgs {
	if r.IntN(10) == 0 {
		return &batch.BatchServiceExecuteBatchArgs{} // written as an empty BatchRequest
	}
	req := &batch.BatchRequest{
		RequestCodec:       envCodecPtr(r),
		CompressedRequests: envBytes(r),
		TimeoutMillis:      envI32Ptr(r),
	}
	if n := envCount(r); n >= 0 {
		req.Requests = make([]*batch.Request, n)
		for i := range req.Requests {
			req.Requests[i] = &batch.Request{
				Method:    envMethods[r.IntN(len(envMethods))],
				Arguments: envBytes(r),
				ID:        envI32Ptr(r),
			}
		}
	}
	if n := envCount(r); n >= 0 {
		req.AcceptCodecs = make([]batch.Codec, n)
		for i := range req.AcceptCodecs {
			req.AcceptCodecs[i] = envCodec(r)
		}
	}
	if r.IntN(2) == 0 {
		req.Sequential = thrift.BoolPtr(r.IntN(2) == 0)
	}
	return &batch.BatchServiceExecuteBatchArgs{Request: req}
}

func randomResult(r *rand.Rand) *batch.BatchServiceExecuteBatchResult {
	res := &batch.BatchServiceExecuteBatchResult{}
	if r.IntN(5) < 3 {
		resp := &batch.BatchResponse{
			Codec:               envCodecPtr(r),
			CompressedResponses: envBytes(r),
		}
		if n := envCount(r); n >= 0 {
			resp.Responses = make([]*batch.Response, n)
			for i := range resp.Responses {
				q := &batch.Response{ID: envI32Ptr(r), Reply: envBytes(r)}
				if r.IntN(3) == 0 {
					q.Error = &batch.CallError{Type: envI32(r), Message: envMessages[r.IntN(len(envMessages))]}
				}
				resp.Responses[i] = q
			}
		}
		res.Success = resp
	}
	if r.IntN(5) < 2 {
		res.Error = &batch.BatchError{
			Code:    []batch.BatchErrorCode{0, 1, 4, 8, 99, -1}[r.IntN(6)],
			Message: envMessages[r.IntN(len(envMessages))],
		}
	}
	return res
}

// TestDecodeEnvelopesMatchGenerated checks both decoders on 2,000 random
// envelopes each, and on every prefix of 40 of them: each prefix fails in
// both or reads the same.
func TestDecodeEnvelopesMatchGenerated(t *testing.T) {
	for _, tc := range []struct {
		name   string
		seed   uint64
		random func(*rand.Rand) thrift.TStruct
		check  func(testing.TB, []byte) error
	}{
		{"args", 11, func(r *rand.Rand) thrift.TStruct { return randomArgs(r) }, func(t testing.TB, b []byte) error { _, err := checkArgs(t, b); return err }},
		{"result", 13, func(r *rand.Rand) thrift.TStruct { return randomResult(r) }, func(t testing.TB, b []byte) error { _, err := checkResult(t, b); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(tc.seed, tc.seed+1))
			prefixes := 0
			for i := range 2000 {
				frame := encodeEnvelope(t, tc.random(r))
				if err := tc.check(t, frame); err != nil {
					t.Fatalf("%s %d: %v", tc.name, i, err)
				}
				if prefixes < 40 && len(frame) <= 1500 {
					prefixes++
					for n := range frame {
						tc.check(t, frame[:n])
					}
				}
			}
		})
	}
}

// Random bytes in the envelopes' shape: the fields of each struct in any
// order, missing, given twice, or of the wrong type, among unknown fields of
// every type; lists that declare another element type than they hold.

// envField is a field of an envelope struct and a maker of its values.
type envField struct {
	id  int16
	t   thrift.TType
	gen func(r *rand.Rand) value
}

func garbledStruct(r *rand.Rand, fields []envField) value {
	var out []field
	for _, f := range fields {
		for range []int{0, 1, 1, 1, 1, 1, 2}[r.IntN(7)] {
			v := f.gen(r)
			if r.IntN(8) == 0 {
				t := f.t
				for t == f.t {
					t = allTypes[r.IntN(len(allTypes))]
				}
				v = randomValue(r, t, 2)
			}
			out = append(out, field{f.id, v})
		}
	}
	for range []int{0, 0, 0, 1, 2}[r.IntN(5)] {
		id := []int16{0, 4, 7, 15, 16, -1, 300, math.MaxInt16, math.MinInt16}[r.IntN(9)]
		out = append(out, field{id, randomValue(r, allTypes[r.IntN(len(allTypes))], 2)})
	}
	r.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return value{thrift.STRUCT, out}
}

func garbledList(elem thrift.TType, gen func(r *rand.Rand) value) func(r *rand.Rand) value {
	return func(r *rand.Rand) value {
		c := &container{elem: elem}
		if r.IntN(6) == 0 {
			c.elem = allTypes[r.IntN(len(allTypes))]
		}
		for range []int{0, 1, 2, 3, 15, 16}[r.IntN(6)] {
			v := gen(r)
			if r.IntN(30) == 0 {
				v = randomValue(r, scalarTypes[r.IntN(len(scalarTypes))], 1)
			}
			c.items = append(c.items, v)
		}
		return value{thrift.LIST, c}
	}
}

func garbledStructOf(fields ...envField) func(r *rand.Rand) value {
	return func(r *rand.Rand) value { return garbledStruct(r, fields) }
}

func genI32(r *rand.Rand) value    { return value{thrift.I32, envI32(r)} }
func genBool(r *rand.Rand) value   { return value{thrift.BOOL, r.IntN(2) == 0} }
func genBinary(r *rand.Rand) value { return value{thrift.STRING, append([]byte{}, envBytes(r)...)} }
func genMethod(r *rand.Rand) value {
	return value{thrift.STRING, []byte(envMethods[r.IntN(len(envMethods))])}
}
func genMessage(r *rand.Rand) value {
	return value{thrift.STRING, []byte(envMessages[r.IntN(len(envMessages))])}
}

var (
	garbledArgs = garbledStructOf(
		envField{1, thrift.STRUCT, garbledStructOf(
			envField{1, thrift.LIST, garbledList(thrift.STRUCT, garbledStructOf(
				envField{1, thrift.STRING, genMethod},
				envField{2, thrift.STRING, genBinary},
				envField{3, thrift.I32, genI32},
			))},
			envField{2, thrift.I32, genI32},
			envField{3, thrift.STRING, genBinary},
			envField{4, thrift.LIST, garbledList(thrift.I32, genI32)},
			envField{5, thrift.I32, genI32},
			envField{6, thrift.BOOL, genBool},
		)},
	)
	garbledResult = garbledStructOf(
		envField{0, thrift.STRUCT, garbledStructOf(
			envField{1, thrift.LIST, garbledList(thrift.STRUCT, garbledStructOf(
				envField{1, thrift.I32, genI32},
				envField{2, thrift.STRING, genBinary},
				envField{3, thrift.STRUCT, garbledStructOf(
					envField{1, thrift.I32, genI32},
					envField{2, thrift.STRING, genMessage},
				)},
			))},
			envField{2, thrift.I32, genI32},
			envField{3, thrift.STRING, genBinary},
		)},
		envField{1, thrift.STRUCT, garbledStructOf(
			envField{1, thrift.I32, genI32},
			envField{2, thrift.STRING, genMessage},
		)},
	)
)

func TestDecodeEnvelopesOfGarbledFields(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 16))
	for _, tc := range []struct {
		name  string
		gen   func(*rand.Rand) value
		check func(testing.TB, []byte) error
	}{
		{"args", garbledArgs, func(t testing.TB, b []byte) error { _, err := checkArgs(t, b); return err }},
		{"result", garbledResult, func(t testing.TB, b []byte) error { _, err := checkResult(t, b); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ok := 0
			for range 3000 {
				frame := encodeValue(t, tc.gen(r))
				if tc.check(t, frame) == nil {
					ok++
				}
				// Cut short, and with a byte changed.
				tc.check(t, frame[:r.IntN(len(frame))])
				i := r.IntN(len(frame))
				frame[i] ^= byte(1 + r.IntN(255))
				tc.check(t, frame)
			}
			// Wrong types and lists of other element types fail
			// now and then; most inputs must read, or the test
			// compares little but errors.
			if ok < 1500 {
				t.Errorf("only %d of 3000 garbled inputs read without an error", ok)
			}
		})
	}
}

// Hand-written inputs.

func st(fields ...field) value   { return value{thrift.STRUCT, fields} }
func fl(id int16, v value) field { return field{id, v} }
func i32(v int32) value          { return value{thrift.I32, v} }
func bin(s string) value         { return value{thrift.STRING, []byte(s)} }
func boolean(v bool) value       { return value{thrift.BOOL, v} }
func list(elem thrift.TType, items ...value) value {
	return value{thrift.LIST, &container{elem: elem, items: items}}
}

// everyType returns unknown fields from id on, one of each type, with
// nested containers and structs.
func everyType(id int16) []field {
	r := rand.New(rand.NewPCG(17, 18))
	var out []field
	for _, t := range allTypes {
		out = append(out, field{id, randomValue(r, t, 3)})
		id++
	}
	// Types of every kind again, some holding bool values.
	out = append(out,
		field{id, boolean(false)},
		field{id + 1, list(thrift.BOOL, boolean(true), boolean(false))},
		field{id + 2, value{thrift.MAP, &container{key: thrift.BOOL, elem: thrift.STRUCT, items: []value{boolean(true), st(fl(1, boolean(true)))}}}},
	)
	return out
}

// nested returns depth structs, each the field 1 of the one around it.
func nested(depth int) value {
	v := st()
	for range depth {
		v = st(fl(1, v))
	}
	return v
}

func TestDecodeBatchArgsHandWritten(t *testing.T) {
	request := func(fields ...field) value { return st(fl(1, st(fields...))) }
	call := func(fields ...field) value { return request(fl(1, list(thrift.STRUCT, st(fields...)))) }
	for _, tc := range []struct {
		name  string
		in    []byte
		ok    bool
		check func(*testing.T, *batch.BatchServiceExecuteBatchArgs)
	}{
		{name: "empty input", in: []byte{}},
		{name: "a stop", in: []byte{0}, ok: true, check: func(t *testing.T, a *batch.BatchServiceExecuteBatchArgs) {
			if a.Request != nil {
				t.Error("Request set")
			}
		}},
		{name: "an empty request", in: encodeValue(t, request()), ok: true, check: func(t *testing.T, a *batch.BatchServiceExecuteBatchArgs) {
			if a.Request == nil || a.Request.Requests != nil || a.Request.AcceptCodecs != nil || a.Request.CompressedRequests != nil {
				t.Errorf("got %s", dump(a))
			}
		}},
		{name: "trailing bytes", in: append(encodeValue(t, request()), 0xff, 0xff)},
		{name: "unknown fields of every type", ok: true, in: encodeValue(t, st(append(everyType(2),
			fl(1, st(append(everyType(7),
				fl(1, list(thrift.STRUCT, st(append(everyType(4),
					fl(1, bin("m")), fl(2, bin("a")), fl(3, i32(7)))...))),
			)...)))...))},
		{name: "unknown fields of negative and large ids", ok: true, in: encodeValue(t, st(
			fl(-1, i32(1)), fl(math.MaxInt16, bin("x")), fl(math.MinInt16, nested(3)), fl(1, st(fl(-6, boolean(true)))),
		))},
		{name: "known ids of the wrong types", ok: true, in: encodeValue(t, st(
			fl(1, i32(5)),
			fl(1, st(
				fl(1, st(fl(1, bin("x")))), fl(2, bin("x")), fl(3, i32(1)), fl(4, value{thrift.SET, &container{elem: thrift.I32, items: []value{i32(1)}}}),
				fl(5, value{thrift.I64, int64(5)}), fl(6, i32(1)),
			)),
		)), check: func(t *testing.T, a *batch.BatchServiceExecuteBatchArgs) {
			if r := a.Request; r == nil || !reflect.DeepEqual(*r, batch.BatchRequest{}) {
				t.Errorf("got %s", dump(a))
			}
		}},
		{name: "request fields of the wrong types", ok: true, in: encodeValue(t, call(
			fl(1, i32(1)), fl(2, list(thrift.BYTE)), fl(3, boolean(true)), fl(3, value{thrift.I64, int64(1)}),
		)), check: func(t *testing.T, a *batch.BatchServiceExecuteBatchArgs) {
			if q := a.Request.Requests[0]; q.Method != "" || q.Arguments != nil || q.ID != nil {
				t.Errorf("got %s", dump(a))
			}
		}},
		{name: "a bool field", ok: true, in: encodeValue(t, request(fl(6, boolean(true)), fl(7, boolean(true)))),
			check: func(t *testing.T, a *batch.BatchServiceExecuteBatchArgs) {
				if s := a.Request.Sequential; s == nil || !*s {
					t.Errorf("got %s", dump(a))
				}
			}},
		{name: "requests declared as i32 elements", ok: true, in: encodeValue(t, request(fl(1, list(thrift.I32, st(fl(1, bin("m"))))))),
			check: func(t *testing.T, a *batch.BatchServiceExecuteBatchArgs) {
				if len(a.Request.Requests) != 1 || a.Request.Requests[0].Method != "m" {
					t.Errorf("got %s", dump(a))
				}
			}},
		{name: "codecs declared as structs", ok: true, in: encodeValue(t, request(fl(4, list(thrift.STRUCT, i32(1), i32(99))))),
			check: func(t *testing.T, a *batch.BatchServiceExecuteBatchArgs) {
				if !reflect.DeepEqual(a.Request.AcceptCodecs, []batch.Codec{1, 99}) {
					t.Errorf("got %s", dump(a))
				}
			}},
		{name: "requests declared as doubles, too few bytes for them", in: encodeValue(t, request(fl(1, list(thrift.DOUBLE, st(), st(), st()))))},
		{name: "fields given twice", ok: true, in: encodeValue(t, request(
			fl(1, list(thrift.STRUCT, st(fl(1, bin("first"))), st())),
			fl(1, list(thrift.STRUCT, st(fl(1, bin("a")), fl(1, bin("b")), fl(3, i32(1)), fl(3, i32(2))))),
		)), check: func(t *testing.T, a *batch.BatchServiceExecuteBatchArgs) {
			if q := a.Request.Requests; len(q) != 1 || q[0].Method != "b" || *q[0].ID != 2 {
				t.Errorf("got %s", dump(a))
			}
		}},
		{name: "an empty list", ok: true, in: encodeValue(t, request(fl(1, list(thrift.STRUCT)), fl(4, list(thrift.I32)))),
			check: func(t *testing.T, a *batch.BatchServiceExecuteBatchArgs) {
				if a.Request.Requests == nil || a.Request.AcceptCodecs == nil {
					t.Errorf("got %s", dump(a))
				}
			}},
		// field 1 STRUCT; field 1 LIST of STRUCT, 15 or more: varint count
		{name: "a list count larger than the input", in: []byte{0x1c, 0x19, 0xfc, 0xff, 0xff, 0xff, 0xff, 0x07, 0, 0, 0}},
		{name: "a list count one larger than the input", in: []byte{0x1c, 0x19, 0x3c, 0, 0}},
		{name: "a negative list count", in: []byte{0x1c, 0x19, 0xfc, 0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0, 0}},
		{name: "a negative codec count", in: []byte{0x1c, 0x49, 0xf5, 0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0, 0}},
		{name: "a list of an unknown element type", in: []byte{0x1c, 0x19, 0x1e, 0, 0, 0}},
		// ... a request: field 2 BINARY of 5 bytes, 1 there
		{name: "arguments past the end", in: []byte{0x1c, 0x19, 0x1c, 0x28, 0x05, 'a'}},
		{name: "arguments of a negative length", in: []byte{0x1c, 0x19, 0x1c, 0x28, 0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0, 0}},
		{name: "a method claiming 2 GiB", in: []byte{0x1c, 0x19, 0x1c, 0x18, 0xff, 0xff, 0xff, 0xff, 0x07, 'a', 0, 0, 0}},
		{name: "an unknown field type", in: []byte{0x1c, 0x1e, 0, 0}},
		{name: "a field id over 10 bytes", in: append([]byte{0x1c, 0x0c}, bytes.Repeat([]byte{0xff}, 11)...)},
		{name: "a request missing its stop", in: encodeValue(t, call(fl(1, bin("m"))))[:6]},
		{name: "garbage nested 10 deep", ok: true, in: encodeValue(t, call(fl(9, nested(10))))},
		{name: "garbage nested 100 deep", in: encodeValue(t, call(fl(9, nested(100))))},
		{name: "garbage nested 100 deep in lists", in: encodeValue(t, request(fl(9, func() value {
			v := list(thrift.I32)
			for range 100 {
				v = list(thrift.LIST, v)
			}
			return v
		}())))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := checkArgs(t, tc.in)
			if (err == nil) != tc.ok {
				t.Fatalf("input %s: error %v", short(tc.in), err)
			}
			if err == nil && tc.check != nil {
				tc.check(t, a)
			}
		})
	}
}

func TestDecodeBatchResultHandWritten(t *testing.T) {
	success := func(fields ...field) value { return st(fl(0, st(fields...))) }
	response := func(fields ...field) value { return success(fl(1, list(thrift.STRUCT, st(fields...)))) }
	for _, tc := range []struct {
		name  string
		in    []byte
		ok    bool
		check func(*testing.T, *batch.BatchServiceExecuteBatchResult)
	}{
		{name: "empty input", in: []byte{}},
		{name: "a stop", in: []byte{0}, ok: true, check: func(t *testing.T, r *batch.BatchServiceExecuteBatchResult) {
			if r.Success != nil || r.Error != nil {
				t.Errorf("got %s", dump(r))
			}
		}},
		{name: "an empty success", in: encodeValue(t, success()), ok: true, check: func(t *testing.T, r *batch.BatchServiceExecuteBatchResult) {
			if r.Success == nil || r.Success.Responses != nil || r.Error != nil {
				t.Errorf("got %s", dump(r))
			}
		}},
		{name: "success and error", ok: true, in: encodeValue(t, st(fl(0, st()), fl(1, st(fl(1, i32(99)), fl(2, bin("m")))))),
			check: func(t *testing.T, r *batch.BatchServiceExecuteBatchResult) {
				if r.Success == nil || r.Error == nil || r.Error.Code != 99 || r.Error.Message != "m" {
					t.Errorf("got %s", dump(r))
				}
			}},
		{name: "unknown fields of every type", ok: true, in: encodeValue(t, st(append(everyType(2),
			fl(1, st(append(everyType(3), fl(1, i32(2)))...)),
			fl(0, st(append(everyType(4),
				fl(1, list(thrift.STRUCT, st(append(everyType(4),
					fl(1, i32(1)), fl(2, bin("r")), fl(3, st(append(everyType(3), fl(1, i32(100)))...)))...))),
			)...)))...))},
		{name: "known ids of the wrong types", ok: true, in: encodeValue(t, st(
			fl(0, list(thrift.STRUCT, st())), fl(1, bin("x")),
			fl(0, st(fl(1, st()), fl(2, bin("x")), fl(3, i32(1)))),
		)), check: func(t *testing.T, r *batch.BatchServiceExecuteBatchResult) {
			if r.Success == nil || !reflect.DeepEqual(*r.Success, batch.BatchResponse{}) || r.Error != nil {
				t.Errorf("got %s", dump(r))
			}
		}},
		{name: "response fields of the wrong types", ok: true, in: encodeValue(t, response(
			fl(1, boolean(false)), fl(2, i32(1)), fl(3, bin("x")),
		)), check: func(t *testing.T, r *batch.BatchServiceExecuteBatchResult) {
			if q := r.Success.Responses[0]; q.ID != nil || q.Reply != nil || q.Error != nil {
				t.Errorf("got %s", dump(r))
			}
		}},
		{name: "an error given twice", ok: true, in: encodeValue(t, response(
			fl(3, st(fl(1, i32(5)), fl(2, bin("first")))), fl(3, st(fl(1, i32(6)))),
		)), check: func(t *testing.T, r *batch.BatchServiceExecuteBatchResult) {
			// The second error is a new struct: the first's message
			// is gone.
			if e := r.Success.Responses[0].Error; e == nil || e.Type != 6 || e.Message != "" {
				t.Errorf("got %s", dump(r))
			}
		}},
		{name: "an empty reply", ok: true, in: encodeValue(t, response(fl(2, bin("")))),
			check: func(t *testing.T, r *batch.BatchServiceExecuteBatchResult) {
				if q := r.Success.Responses[0]; q.Reply == nil || len(q.Reply) != 0 {
					t.Errorf("got %s", dump(r))
				}
			}},
		{name: "responses declared as bools", ok: true, in: encodeValue(t, success(fl(1, list(thrift.BOOL, st(fl(1, i32(3)))))))},
		// field 0 STRUCT (long form); field 1 LIST of STRUCT, 15 or more: varint count
		{name: "a list count larger than the input", in: []byte{0x0c, 0x00, 0x19, 0xfc, 0xff, 0xff, 0xff, 0xff, 0x07, 0, 0, 0}},
		{name: "a negative list count", in: []byte{0x0c, 0x00, 0x19, 0xfc, 0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0, 0}},
		// ... a response: field 2 BINARY of 5 bytes, 1 there
		{name: "a reply past the end", in: []byte{0x0c, 0x00, 0x19, 0x1c, 0x28, 0x05, 'a'}},
		{name: "a message of a negative length", in: []byte{0x1c, 0x28, 0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0}},
		{name: "garbage nested 100 deep", in: encodeValue(t, response(fl(3, st(fl(5, nested(100))))))},
		{name: "garbage nested 10 deep", ok: true, in: encodeValue(t, response(fl(3, st(fl(5, nested(10))))))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := checkResult(t, tc.in)
			if (err == nil) != tc.ok {
				t.Fatalf("input %s: error %v", short(tc.in), err)
			}
			if err == nil && tc.check != nil {
				tc.check(t, r)
			}
		})
	}
}

// TestDecodeEnvelopesRefuseLyingCounts checks that a list count the input
// cannot hold fails before the lists are made. A count of 2^20+1, then 1
// MiB of input: each element needs a byte, so the count is one more than
// the input can hold, and only the check against the bytes left refuses it
// (counts above MaxMessageSize, 100 MiB by default, are refused earlier).
func TestDecodeEnvelopesRefuseLyingCounts(t *testing.T) {
	allocBeforeFailing(t, []byte{0xfc, 0x81, 0x80, 0x40}, make([]byte, 1<<20), 64<<10)
}

// TestDecodeEnvelopesAllocateAsTheyRead checks a count the input could
// hold but does not: 2^20 elements claimed over 1 MiB of bytes that fail
// at the first element. The pointers to the elements are made up front, as
// the generated code makes them (8 MiB); the elements themselves only as
// they are read, so one block of them.
func TestDecodeEnvelopesAllocateAsTheyRead(t *testing.T) {
	allocBeforeFailing(t, []byte{0xfc, 0x80, 0x80, 0x40}, bytes.Repeat([]byte{0xff}, 1<<20), 8<<20+64<<10)
}

// allocBeforeFailing decodes, as an executeBatch call's body and as a
// result's, a list of structs with the compact list header header (0xfc,
// then the count as a varint) followed by tail, and fails t unless each
// decode fails having allocated at most limit bytes.
func allocBeforeFailing(t *testing.T, header, tail []byte, limit uint64) {
	t.Helper()
	for _, tc := range []struct {
		name   string
		prefix []byte // the fields that hold the list
		decode func([]byte) error
	}{
		{"args", []byte{0x1c, 0x19}, func(b []byte) error { return DecodeBatchArgs(b, &batch.BatchServiceExecuteBatchArgs{}, nil, 0, nil) }},
		{"result", []byte{0x0c, 0x00, 0x19}, func(b []byte) error { return DecodeBatchResult(b, &batch.BatchServiceExecuteBatchResult{}, nil, nil) }},
	} {
		in := append(append(slices.Clone(tc.prefix), header...), tail...)
		tc.decode(in) // warm the pool
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		err := tc.decode(in)
		runtime.ReadMemStats(&after)
		if err == nil {
			t.Fatalf("%s: no error", tc.name)
		}
		if n := after.TotalAlloc - before.TotalAlloc; n > limit {
			t.Errorf("%s: %d bytes allocated before failing, want at most %d", tc.name, n, limit)
		}
	}
}

// TestDecodeEnvelopesObeyTheConfiguration checks the limits of a
// configuration against the library's TCompactProtocol reading the same
// bytes, and DecodeBatchArgs's maxCalls.
func TestDecodeEnvelopesObeyTheConfiguration(t *testing.T) {
	three := &batch.BatchServiceExecuteBatchArgs{Request: &batch.BatchRequest{Requests: []*batch.Request{
		{Method: "a", Arguments: []byte{0}}, {Method: "b", Arguments: []byte{0}}, {Method: "a-long-method-name", Arguments: []byte{0}},
	}}}
	frame := encodeEnvelope(t, three)
	library := func(conf *thrift.TConfiguration) error {
		var a batch.BatchServiceExecuteBatchArgs
		return a.Read(context.Background(), thrift.NewTCompactProtocolConf(thrift.NewStreamTransportR(bytes.NewReader(frame)), conf))
	}
	for _, tc := range []struct {
		name string
		conf *thrift.TConfiguration
		ok   bool
	}{
		{"the defaults", nil, true},
		{"three elements allowed", &thrift.TConfiguration{MaxContainerSize: 3}, true},
		{"two elements allowed", &thrift.TConfiguration{MaxContainerSize: 2}, false},
		{"strings of 17 bytes allowed", &thrift.TConfiguration{MaxMessageSize: 17}, false},
		{"strings of 18 bytes allowed", &thrift.TConfiguration{MaxMessageSize: 18}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err, want := DecodeBatchArgs(frame, &batch.BatchServiceExecuteBatchArgs{}, tc.conf, 0, nil), library(tc.conf)
			if (err == nil) != tc.ok || (want == nil) != tc.ok {
				t.Errorf("DecodeBatchArgs: %v; the library's protocol: %v; want success %v", err, want, tc.ok)
			}
		})
	}

	// A list whose elements fit in the frame but, at a byte each, not in
	// MaxMessageSize.
	thirty := &batch.BatchServiceExecuteBatchArgs{Request: &batch.BatchRequest{Requests: make([]*batch.Request, 30)}}
	for i := range thirty.Request.Requests {
		thirty.Request.Requests[i] = &batch.Request{}
	}
	frame30 := encodeEnvelope(t, thirty)
	conf := &thrift.TConfiguration{MaxMessageSize: 20}
	var lib batch.BatchServiceExecuteBatchArgs
	libErr := lib.Read(context.Background(), thrift.NewTCompactProtocolConf(thrift.NewStreamTransportR(bytes.NewReader(frame30)), conf))
	if err := DecodeBatchArgs(frame30, &batch.BatchServiceExecuteBatchArgs{}, conf, 0, nil); err == nil || libErr == nil {
		t.Errorf("30 requests with MaxMessageSize 20: ours %v, the library's protocol %v; want both to fail", err, libErr)
	}

	var tooMany *TooManyCallsError
	if err := DecodeBatchArgs(frame, &batch.BatchServiceExecuteBatchArgs{}, nil, 2, nil); !errors.As(err, &tooMany) || tooMany.Calls != 3 {
		t.Errorf("3 calls with maxCalls 2: %v, want a TooManyCallsError of 3", err)
	}
	// Too many calls are read past, not refused at the header: what
	// follows must still be a well-formed message filling its frame.
	var a batch.BatchServiceExecuteBatchArgs
	if err := DecodeBatchArgs(append(bytes.Clone(frame), 0), &a, nil, 2, nil); err == nil || errors.As(err, &tooMany) {
		t.Errorf("3 calls with maxCalls 2 and a byte after them: %v, want a protocol error", err)
	}
	if err := DecodeBatchArgs(frame[:len(frame)-4], &a, nil, 2, nil); err == nil || errors.As(err, &tooMany) {
		t.Errorf("3 calls with maxCalls 2, cut short: %v, want a protocol error", err)
	}
	a = batch.BatchServiceExecuteBatchArgs{}
	if err := DecodeBatchArgs(frame, &a, nil, 2, nil); !errors.As(err, &tooMany) || a.Request == nil || a.Request.Requests != nil {
		t.Errorf("3 calls with maxCalls 2: %v, request %+v; want the request without its calls", err, a.Request)
	}
	if err := DecodeBatchArgs(frame, &batch.BatchServiceExecuteBatchArgs{}, nil, 3, nil); err != nil {
		t.Errorf("3 calls with maxCalls 3: %v", err)
	}
}

// Fuzzing.

func FuzzDecodeBatchArgs(f *testing.F) {
	r := rand.New(rand.NewPCG(19, 20))
	for added := 0; added < 6; {
		if b := encodeEnvelope(f, randomArgs(r)); len(b) < 600 {
			f.Add(b)
			added++
		}
	}
	f.Add(encodeValue(f, garbledArgs(r)))
	f.Fuzz(func(t *testing.T, frame []byte) { checkArgs(t, frame) })
}

func FuzzDecodeBatchResult(f *testing.F) {
	r := rand.New(rand.NewPCG(21, 22))
	for added := 0; added < 6; {
		if b := encodeEnvelope(f, randomResult(r)); len(b) < 600 {
			f.Add(b)
			added++
		}
	}
	f.Add(encodeValue(f, garbledResult(r)))
	f.Fuzz(func(t *testing.T, frame []byte) { checkResult(t, frame) })
}

// Benchmarks: a batch of 100 calls, with 10 bytes of arguments each and 180
// bytes of reply.

var (
	benchArgs    *batch.BatchServiceExecuteBatchArgs
	benchResult  *batch.BatchServiceExecuteBatchResult
	benchScratch Scratch // reset before each decode: the previous one's values are not used
)

func BenchmarkDecodeBatchArgs(b *testing.B) {
	req := &batch.BatchRequest{AcceptCodecs: []batch.Codec{batch.Codec_ZSTD, batch.Codec_S2}, TimeoutMillis: thrift.Int32Ptr(500)}
	for i := range 100 {
		req.Requests = append(req.Requests, &batch.Request{
			Method:    "getProduct",
			Arguments: []byte{0x16, 0x80, 0x89, 0x7a, 0x18, 0x02, 'e', 'n', 0x00, 0x00},
			ID:        thrift.Int32Ptr(int32(i)),
		})
	}
	frame := encodeEnvelope(b, &batch.BatchServiceExecuteBatchArgs{Request: req})
	benchDecode(b, frame, &benchArgs,
		decodeWay[batch.BatchServiceExecuteBatchArgs]{"DecodeBatchArgs", func(a *batch.BatchServiceExecuteBatchArgs) error { return DecodeBatchArgs(frame, a, nil, 0, nil) }},
		decodeWay[batch.BatchServiceExecuteBatchArgs]{"DecodeBatchArgs_with_a_Scratch", func(a *batch.BatchServiceExecuteBatchArgs) error {
			benchScratch.Reset()
			return DecodeBatchArgs(frame, a, nil, 0, &benchScratch)
		}},
		decodeWay[batch.BatchServiceExecuteBatchArgs]{"Decode", func(a *batch.BatchServiceExecuteBatchArgs) error {
			return Decode(context.Background(), Compact, frame, a)
		}})
}

// decodeWay is one way of decoding a frame into a T, for benchDecode.
type decodeWay[T any] struct {
	name   string
	decode func(*T) error
}

// benchDecode times each way of decoding frame into a new T, kept in sink.
func benchDecode[T any](b *testing.B, frame []byte, sink **T, ways ...decodeWay[T]) {
	for _, way := range ways {
		b.Run(way.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(frame)))
			for b.Loop() {
				*sink = new(T)
				if err := way.decode(*sink); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecodeBatchResult(b *testing.B) {
	resp := &batch.BatchResponse{}
	reply := bytes.Repeat([]byte{0x5c, 0x16, 0x80, 0x89, 0x7a, 0x18, 0x0a}, 26)[:180]
	for i := range 100 {
		resp.Responses = append(resp.Responses, &batch.Response{ID: thrift.Int32Ptr(int32(i)), Reply: reply})
	}
	frame := encodeEnvelope(b, &batch.BatchServiceExecuteBatchResult{Success: resp})
	benchDecode(b, frame, &benchResult,
		decodeWay[batch.BatchServiceExecuteBatchResult]{"DecodeBatchResult", func(r *batch.BatchServiceExecuteBatchResult) error { return DecodeBatchResult(frame, r, nil, nil) }},
		decodeWay[batch.BatchServiceExecuteBatchResult]{"DecodeBatchResult_with_a_Scratch", func(r *batch.BatchServiceExecuteBatchResult) error {
			benchScratch.Reset()
			return DecodeBatchResult(frame, r, nil, &benchScratch)
		}},
		decodeWay[batch.BatchServiceExecuteBatchResult]{"Decode", func(r *batch.BatchServiceExecuteBatchResult) error {
			return Decode(context.Background(), Compact, frame, r)
		}})
}

// TestScratchIsReusedAndCleared: a decode with a Scratch that an earlier
// decode used, and that was reset since, takes its lists and elements from
// it rather than allocate them; Reset clears what the decode left there, so
// that a Scratch kept for later keeps nothing of its values reachable; and
// a decode before the Reset allocates as without a Scratch.
func TestScratchIsReusedAndCleared(t *testing.T) {
	reqs := &batch.BatchRequest{}
	resps := &batch.BatchResponse{}
	for i := range 100 {
		reqs.Requests = append(reqs.Requests, &batch.Request{Method: "m", Arguments: []byte{0}, ID: thrift.Int32Ptr(int32(i))})
		resps.Responses = append(resps.Responses, &batch.Response{Reply: []byte{0}})
	}
	argsFrame := encodeEnvelope(t, &batch.BatchServiceExecuteBatchArgs{Request: reqs})
	resultFrame := encodeEnvelope(t, &batch.BatchServiceExecuteBatchResult{Success: resps})
	var s Scratch
	decode := func(s *Scratch) (*batch.Request, *batch.Response) {
		var a batch.BatchServiceExecuteBatchArgs
		var r batch.BatchServiceExecuteBatchResult
		if err := DecodeBatchArgs(argsFrame, &a, nil, 0, s); err != nil {
			t.Fatal(err)
		}
		if err := DecodeBatchResult(resultFrame, &r, nil, s); err != nil {
			t.Fatal(err)
		}
		return a.Request.Requests[99], r.Success.Responses[99]
	}
	decode(&s) // sizes s for 100 of each
	s.Reset()
	none := bytesPerRun(20, func() { decode(nil) })
	with := bytesPerRun(20, func() { decode(&s); s.Reset() })
	unreset := bytesPerRun(20, func() { decode(&s) })
	s.Reset()
	// Without a Scratch, each list costs its pointers and a block of
	// elements, most of what the decodes allocate; with one, neither.
	if with > none/2 {
		t.Errorf("%d bytes allocated with a reset Scratch, %d without one: want half at most", with, none)
	}
	if unreset < none*9/10 {
		t.Errorf("%d bytes allocated with a Scratch not reset since its last decode, %d without one: want as many", unreset, none)
	}
	q, r := decode(&s)
	if q.Method != "m" || *q.ID != 99 || len(r.Reply) != 1 {
		t.Fatalf("decoded %v and %v", q, r)
	}
	s.Reset()
	if q.Method != "" || q.ID != nil || q.Arguments != nil || r.Reply != nil {
		t.Errorf("after Reset, the Scratch still holds %v and %v", q, r)
	}
}

// bytesPerRun returns the bytes the process allocates, on average, in a
// call of f. Unlike testing.AllocsPerRun's count, it holds under the race
// detector, whose pools drop some of what they are given.
func bytesPerRun(runs int, f func()) uint64 {
	f() // warm-up
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		f()
	}
	runtime.ReadMemStats(&after)
	return (after.TotalAlloc - before.TotalAlloc) / uint64(runs)
}

// TestDecodeBatchRequestAndResponseMatchGenerated checks the decoders of the
// decompressed payloads against the generated Read methods, on the
// requests and responses of random envelopes and on their prefixes.
func TestDecodeBatchRequestAndResponseMatchGenerated(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	ctx := context.Background()
	for i := range 1000 {
		if req := randomArgs(r).Request; req != nil {
			raw := encodeEnvelope(t, req)
			for _, in := range [][]byte{raw, raw[:len(raw)/2], append(raw, 0xff)} {
				var got, want batch.BatchRequest
				gotErr, wantErr := DecodeBatchRequest(in, &got, nil, 0), Decode(ctx, Compact, in, &want)
				checkErrors(t, in, gotErr, wantErr)
				if gotErr == nil && !reflect.DeepEqual(got, want) {
					t.Fatalf("request %d: got %s, want %s", i, dump(got), dump(want))
				}
			}
		}
		if resp := randomResult(r).Success; resp != nil {
			raw := encodeEnvelope(t, resp)
			for _, in := range [][]byte{raw, raw[:len(raw)/2], append(raw, 0xff)} {
				var got, want batch.BatchResponse
				gotErr, wantErr := DecodeBatchResponse(in, &got, nil), Decode(ctx, Compact, in, &want)
				checkErrors(t, in, gotErr, wantErr)
				if gotErr == nil && !reflect.DeepEqual(got, want) {
					t.Fatalf("response %d: got %s, want %s", i, dump(got), dump(want))
				}
			}
		}
	}
}
