package wire

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"
	"unsafe"

	"github.com/apache/thrift/lib/go/thrift"
)

// The compact protocol of this package is checked against the library's
// thrift.TCompactProtocol: random values must encode to the same bytes, and
// any bytes must read as the same values, or fail in both.

// value is a Thrift value of any type, as the protocols read and write it.
// Doubles are kept as their bits, so that NaN equals itself.
type value struct {
	t thrift.TType
	v any // bool, int8, int16, int32, int64, uint64 (double bits), []byte, thrift.Tuuid, []field, *container
}

type field struct {
	id int16
	v  value
}

// container is a list, set or map; a map's items alternate key and value.
type container struct {
	elem, key thrift.TType
	items     []value
}

var scalarTypes = []thrift.TType{thrift.BOOL, thrift.BYTE, thrift.I16, thrift.I32, thrift.I64, thrift.DOUBLE, thrift.STRING, thrift.UUID}
var allTypes = append(append([]thrift.TType{}, scalarTypes...), thrift.STRUCT, thrift.LIST, thrift.SET, thrift.MAP)

// randomValue returns a random value of type t, nesting up to depth levels.
func randomValue(r *rand.Rand, t thrift.TType, depth int) value {
	pick := func(edges ...int64) int64 {
		if r.IntN(3) == 0 {
			return edges[r.IntN(len(edges))]
		}
		return r.Int64() >> r.IntN(64)
	}
	switch t {
	case thrift.BOOL:
		return value{t, r.IntN(2) == 0}
	case thrift.BYTE:
		return value{t, int8(pick(0, -1, math.MinInt8, math.MaxInt8))}
	case thrift.I16:
		return value{t, int16(pick(0, -1, math.MinInt16, math.MaxInt16))}
	case thrift.I32:
		return value{t, int32(pick(0, -1, math.MinInt32, math.MaxInt32))}
	case thrift.I64:
		return value{t, pick(0, -1, math.MinInt64, math.MaxInt64)}
	case thrift.DOUBLE:
		return value{t, math.Float64bits([]float64{0, -1.5, math.Inf(1), math.NaN(), r.NormFloat64() * 1e6}[r.IntN(5)])}
	case thrift.STRING:
		b := make([]byte, []int{0, 1, 63, 64, 200, r.IntN(20)}[r.IntN(6)])
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		return value{t, b}
	case thrift.UUID:
		var u thrift.Tuuid
		for i := range u {
			u[i] = byte(r.IntN(256))
		}
		return value{t, u}
	case thrift.STRUCT:
		var fields []field
		id := int16(0)
		for range r.IntN(6) {
			// Small steps use the delta form, others the long one;
			// ids may go down and below zero.
			id += int16([]int{1, 2, 15, 16, 300, -3, -40}[r.IntN(7)])
			fields = append(fields, field{id, randomValue(r, randomType(r, depth), depth-1)})
		}
		return value{t, fields}
	case thrift.LIST, thrift.SET, thrift.MAP:
		c := &container{elem: randomType(r, depth)}
		n := []int{0, 1, 14, 15, 40}[r.IntN(5)]
		if depth <= 0 {
			n = min(n, 2)
		}
		if t == thrift.MAP {
			c.key = randomType(r, depth)
			n *= 2
		}
		for i := range n {
			et := c.elem
			if t == thrift.MAP && i%2 == 0 {
				et = c.key
			}
			c.items = append(c.items, randomValue(r, et, depth-1))
		}
		return value{t, c}
	}
	panic(t)
}

func randomType(r *rand.Rand, depth int) thrift.TType {
	if depth <= 0 {
		return scalarTypes[r.IntN(len(scalarTypes))]
	}
	return allTypes[r.IntN(len(allTypes))]
}

// write writes v with p.
func write(ctx context.Context, p thrift.TProtocol, v value) error {
	switch x := v.v.(type) {
	case bool:
		return p.WriteBool(ctx, x)
	case int8:
		return p.WriteByte(ctx, x)
	case int16:
		return p.WriteI16(ctx, x)
	case int32:
		return p.WriteI32(ctx, x)
	case int64:
		return p.WriteI64(ctx, x)
	case uint64:
		return p.WriteDouble(ctx, math.Float64frombits(x))
	case []byte:
		if len(x)%2 == 0 {
			return p.WriteString(ctx, string(x))
		}
		return p.WriteBinary(ctx, x)
	case thrift.Tuuid:
		return p.WriteUUID(ctx, x)
	case []field:
		if err := p.WriteStructBegin(ctx, "s"); err != nil {
			return err
		}
		for _, f := range x {
			if err := p.WriteFieldBegin(ctx, "f", f.v.t, f.id); err != nil {
				return err
			}
			if err := write(ctx, p, f.v); err != nil {
				return err
			}
			if err := p.WriteFieldEnd(ctx); err != nil {
				return err
			}
		}
		if err := p.WriteFieldStop(ctx); err != nil {
			return err
		}
		return p.WriteStructEnd(ctx)
	case *container:
		var err error
		switch v.t {
		case thrift.LIST:
			err = p.WriteListBegin(ctx, x.elem, len(x.items))
		case thrift.SET:
			err = p.WriteSetBegin(ctx, x.elem, len(x.items))
		default:
			err = p.WriteMapBegin(ctx, x.key, x.elem, len(x.items)/2)
		}
		if err != nil {
			return err
		}
		for _, item := range x.items {
			if err := write(ctx, p, item); err != nil {
				return err
			}
		}
		return nil
	}
	panic(v)
}

// errUnreadable is read's own error for input no generated reader could
// read either: nesting too deep, or a type without values (STOP, VOID).
var errUnreadable = errors.New("unreadable")

// read reads a value of type t with p, as the generated code would for a
// field or element of that type, up to depth levels deep.
func read(ctx context.Context, p thrift.TProtocol, t thrift.TType, depth int) (value, error) {
	if depth <= 0 {
		return value{}, fmt.Errorf("%w: too deep", errUnreadable)
	}
	var v any
	var err error
	switch t {
	case thrift.BOOL:
		v, err = p.ReadBool(ctx)
	case thrift.BYTE:
		v, err = p.ReadByte(ctx)
	case thrift.I16:
		v, err = p.ReadI16(ctx)
	case thrift.I32:
		v, err = p.ReadI32(ctx)
	case thrift.I64:
		v, err = p.ReadI64(ctx)
	case thrift.DOUBLE:
		var d float64
		d, err = p.ReadDouble(ctx)
		v = math.Float64bits(d)
	case thrift.STRING:
		if depth%2 == 0 {
			var s string
			s, err = p.ReadString(ctx)
			v = []byte(s)
		} else {
			v, err = p.ReadBinary(ctx)
		}
	case thrift.UUID:
		v, err = p.ReadUUID(ctx)
	case thrift.STRUCT:
		v, err = readStruct(ctx, p, depth)
	case thrift.LIST, thrift.SET, thrift.MAP:
		v, err = readContainer(ctx, p, t, depth)
	default:
		return value{}, fmt.Errorf("%w: type %v", errUnreadable, t)
	}
	return value{t, v}, err
}

func readStruct(ctx context.Context, p thrift.TProtocol, depth int) ([]field, error) {
	if _, err := p.ReadStructBegin(ctx); err != nil {
		return nil, err
	}
	var fields []field
	for {
		_, t, id, err := p.ReadFieldBegin(ctx)
		if err != nil {
			return fields, err
		}
		if t == thrift.STOP {
			break
		}
		v, err := read(ctx, p, t, depth-1)
		fields = append(fields, field{id, v})
		if err != nil {
			return fields, err
		}
		if err := p.ReadFieldEnd(ctx); err != nil {
			return fields, err
		}
	}
	return fields, p.ReadStructEnd(ctx)
}

func readContainer(ctx context.Context, p thrift.TProtocol, t thrift.TType, depth int) (*container, error) {
	c := &container{}
	var n int
	var err error
	switch t {
	case thrift.LIST:
		c.elem, n, err = p.ReadListBegin(ctx)
	case thrift.SET:
		c.elem, n, err = p.ReadSetBegin(ctx)
	default:
		c.key, c.elem, n, err = p.ReadMapBegin(ctx)
		n *= 2
	}
	if err != nil {
		return c, err
	}
	for i := range n {
		et := c.elem
		if t == thrift.MAP && i%2 == 0 {
			et = c.key
		}
		v, err := read(ctx, p, et, depth-1)
		c.items = append(c.items, v)
		if err != nil {
			return c, err
		}
	}
	return c, nil
}

// ours and theirs return this package's compact protocol and the library's
// over a fresh Buffer reading in.
func ours(in []byte) (thrift.TProtocol, *Buffer) {
	b := &Buffer{}
	b.Reset(in)
	return newCompact(b, &header{}), b
}

func theirs(in []byte) (thrift.TProtocol, *Buffer) {
	b := &Buffer{}
	b.Reset(in)
	return thrift.NewTCompactProtocolConf(b, cfg), b
}

// encodeBoth writes v with both protocols and fails t unless the bytes are
// the same.
func encodeBoth(t *testing.T, v value) []byte {
	t.Helper()
	ctx := context.Background()
	p, ob := ours(nil)
	l, lb := theirs(nil)
	if err := write(ctx, p, v); err != nil {
		t.Fatalf("ours: %v", err)
	}
	if err := write(ctx, l, v); err != nil {
		t.Fatalf("library: %v", err)
	}
	if !bytes.Equal(ob.Out, lb.Out) {
		t.Fatalf("encodings differ for %+v:\nours    %x\nlibrary %x", v, ob.Out, lb.Out)
	}
	return ob.Out
}

// skipBoth skips in as a struct with this package's protocol (the Skip
// that generated code calls for unknown fields, which reads past strings
// in place) and with the library's Skip over its protocol, and fails t
// unless both fail or both succeed having consumed the same bytes.
func skipBoth(t *testing.T, in []byte) {
	t.Helper()
	ctx := context.Background()
	p, ob := ours(in)
	l, lb := theirs(in)
	gotErr := p.Skip(ctx, thrift.STRUCT)
	wantErr := thrift.SkipDefaultDepth(ctx, l, thrift.STRUCT)
	switch {
	case (gotErr == nil) != (wantErr == nil):
		t.Fatalf("input %x: skipping, ours returned %v, the library %v", in, gotErr, wantErr)
	case gotErr == nil && ob.pos != lb.pos:
		t.Fatalf("input %x: skipping, ours consumed %d bytes, the library %d", in, ob.pos, lb.pos)
	}
}

// readBoth reads a struct from in with both protocols and fails t unless
// they read the same values, consume the same bytes, and fail together.
func readBoth(t *testing.T, in []byte) ([]field, error) {
	t.Helper()
	skipBoth(t, in)
	ctx := context.Background()
	p, ob := ours(in)
	l, lb := theirs(in)
	got, gotErr := readStruct(ctx, p, 64)
	want, wantErr := readStruct(ctx, l, 64)
	if (gotErr == nil) != (wantErr == nil) {
		t.Fatalf("input %x: ours returned %v, the library %v", in, gotErr, wantErr)
	}
	if gotErr != nil {
		// What was read before an error is discarded, by the generated
		// code too: only the error matters.
		if !errors.Is(gotErr, errUnreadable) && !errors.As(gotErr, new(thrift.TProtocolException)) && !errors.As(gotErr, new(thrift.TTransportException)) {
			t.Fatalf("input %x: error %v (%T) is not a Thrift protocol or transport error", in, gotErr, gotErr)
		}
		return nil, gotErr
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("input %x: ours read %s, the library %s", in, show(got), show(want))
	}
	if ob.pos != lb.pos {
		t.Fatalf("input %x: ours consumed %d bytes, the library %d", in, ob.pos, lb.pos)
	}
	return got, nil
}

// show prints fields with the containers' contents rather than pointers.
func show(fields []field) string {
	var b bytes.Buffer
	var one func(v value)
	one = func(v value) {
		switch x := v.v.(type) {
		case []field:
			b.WriteString(show(x))
		case *container:
			fmt.Fprintf(&b, "%v<%v,%v>[", v.t, x.key, x.elem)
			for _, item := range x.items {
				one(item)
				b.WriteByte(' ')
			}
			b.WriteByte(']')
		default:
			fmt.Fprintf(&b, "%v:%v", v.t, x)
		}
	}
	b.WriteByte('{')
	for _, f := range fields {
		fmt.Fprintf(&b, "%d=", f.id)
		one(f.v)
		b.WriteByte(' ')
	}
	b.WriteByte('}')
	return b.String()
}

func TestCompactMatchesLibrary(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 3000 {
		v := randomValue(r, thrift.STRUCT, 4)
		enc := encodeBoth(t, v)
		got, err := readBoth(t, enc)
		if err != nil {
			t.Fatalf("value %d: its encoding does not read back: %v", i, err)
		}
		// What was read encodes to the same bytes again (an empty map
		// reads back without its element types, so the values
		// themselves are compared through their encoding).
		if again := encodeBoth(t, value{thrift.STRUCT, got}); !bytes.Equal(again, enc) {
			t.Fatalf("value %d: read back and encoded again it differs:\n%x\n%x", i, enc, again)
		}
		// Every prefix of a valid encoding fails in both, or reads the
		// same.
		for _, cut := range []int{len(enc) / 3, len(enc) / 2, len(enc) - 1} {
			readBoth(t, enc[:max(cut, 0)])
		}
	}
}

func TestCompactRefusesWhatTheLibraryRefuses(t *testing.T) {
	for name, in := range map[string][]byte{
		"empty":                 {},
		"unknown field type":    {0x1e},
		"varint over 10 bytes":  append([]byte{0x06}, bytes.Repeat([]byte{0xff}, 11)...),
		"negative string size":  {0x18, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"string past the end":   {0x18, 0x05, 'a'},
		"list longer than data": {0x19, 0xf5, 0xff, 0xff, 0x03},
		"negative list size":    {0x19, 0xf5, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"negative map size":     {0x1b, 0xff, 0xff, 0xff, 0xff, 0x0f},
		"map longer than data":  {0x1b, 0x80, 0x08, 0x55},
		"double cut short":      {0x17, 1, 2, 3},
		"uuid cut short":        {0x1d, 1, 2, 3},
		"list of unknown type":  {0x19, 0x1e},
		"missing stop":          {0x15, 0x02},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := readBoth(t, in); err == nil {
				t.Errorf("input %x read without an error", in)
			}
		})
	}
}

// FuzzCompactMatchesLibrary reads arbitrary bytes as a struct with both
// protocols: they must read the same values and fail together.
func FuzzCompactMatchesLibrary(f *testing.F) {
	r := rand.New(rand.NewPCG(3, 4))
	for range 8 {
		b := &Buffer{}
		if err := write(context.Background(), newCompact(b, &header{}), randomValue(r, thrift.STRUCT, 3)); err != nil {
			f.Fatal(err)
		}
		f.Add(b.Out)
	}
	f.Fuzz(func(t *testing.T, in []byte) { readBoth(t, in) })
}

// BenchmarkCompactStruct encodes and decodes a random nested struct with
// this package's protocol and the library's, over the same Buffer.
func BenchmarkCompactStruct(b *testing.B) {
	r := rand.New(rand.NewPCG(5, 6))
	v := randomValue(r, thrift.STRUCT, 3)
	ctx := context.Background()
	for _, side := range []struct {
		name string
		new  func([]byte) (thrift.TProtocol, *Buffer)
	}{{"ours", ours}, {"library", theirs}} {
		b.Run(side.name+"/write", func(b *testing.B) {
			p, buf := side.new(nil)
			for b.Loop() {
				buf.Reset(nil)
				if err := write(ctx, p, v); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(int64(len(buf.Out)))
		})
		b.Run(side.name+"/read", func(b *testing.B) {
			var out Buffer
			if err := write(ctx, newCompact(&out, &header{}), v); err != nil {
				b.Fatal(err)
			}
			p, buf := side.new(out.Out)
			for b.Loop() {
				buf.Reset(out.Out)
				if _, err := readStruct(ctx, p, 64); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(int64(len(out.Out)))
		})
	}
}

// TestCompactRefusesContainersLargerThanInput checks the container headers
// alone: a count the input left cannot hold fails before any element is
// read, so that generated code never allocates room for it.
func TestCompactRefusesContainersLargerThanInput(t *testing.T) {
	ctx := context.Background()
	for _, newP := range []func([]byte) (thrift.TProtocol, *Buffer){ours, theirs} {
		p, _ := newP([]byte{0xf5, 0xff, 0xff, 0x03, 5, 5, 5})
		if _, n, err := p.ReadListBegin(ctx); err == nil {
			t.Errorf("%T: a list of %d i32 in 3 bytes read without an error", p, n)
		}
		p, _ = newP([]byte{0x80, 0x08, 0x55, 5, 5})
		if _, _, n, err := p.ReadMapBegin(ctx); err == nil {
			t.Errorf("%T: a map of %d i32 pairs in 2 bytes read without an error", p, n)
		}
		p, _ = newP([]byte{0x37, 1, 2, 3, 4, 5, 6, 7, 8})
		if _, n, err := p.ReadListBegin(ctx); err == nil {
			t.Errorf("%T: a list of %d doubles in 8 bytes read without an error", p, n)
		}
	}
}

// TestCompactMethodsAreItsOwn: compact embeds the library's protocol only for
// ReadByte and WriteByte. Any other method reaching the library's would
// work on state of its own (its own buffer position, field ids and limits)
// and silently disagree with this type's: every method of thrift.TProtocol
// and thrift.TConfigurationSetter but those two must be declared here.
func TestCompactMethodsAreItsOwn(t *testing.T) {
	own := reflect.TypeFor[*compact]()
	var names []string
	for _, iface := range []reflect.Type{reflect.TypeFor[thrift.TProtocol](), reflect.TypeFor[thrift.TConfigurationSetter]()} {
		for i := range iface.NumMethod() {
			names = append(names, iface.Method(i).Name)
		}
	}
	for _, name := range names {
		m, ok := own.MethodByName(name)
		if !ok {
			t.Fatalf("compact has no %s", name)
		}
		file, _ := runtime.FuncForPC(m.Func.Pointer()).FileLine(m.Func.Pointer())
		promoted := file == "<autogenerated>"
		if wantPromoted := name == "ReadByte" || name == "WriteByte"; promoted != wantPromoted {
			t.Errorf("%s: promoted from the embedded library protocol %v, want %v", name, promoted, wantPromoted)
		}
	}
}

// TestStringsShareChunks checks what ReadString allocates: the strings that
// start within stringChunk bytes of a chunk's start are substrings of that
// chunk's copy, and a string that does not fit starts a new one, so a kept
// string holds at most one chunk alive. It also checks that the strings are
// copies: the input may serve other messages once they are read.
func TestStringsShareChunks(t *testing.T) {
	ctx := context.Background()
	short := strings.Repeat("s", 20) // 21 bytes with its length: 24 fit a chunk, 25 do not
	long := strings.Repeat("l", 2*stringChunk)
	// The chunk begins at short's first byte, 1; the next string's two
	// bytes of length put its first at 23: 490 bytes end the chunk
	// exactly, 491 go one past it.
	fits, past := strings.Repeat("f", stringChunk-22), strings.Repeat("p", stringChunk-21)
	for _, tt := range []struct {
		name   string
		values []string
		allocs float64
	}{
		{"100 short strings", slices.Repeat([]string{short}, 100), 5}, // ceil(100 / 24)
		{"a long string between short ones", []string{short, long, short}, 3},
		{"a string that ends the chunk", []string{short, fits}, 1},
		{"a string one byte past the chunk", []string{short, past}, 2},
		{"empty strings", slices.Repeat([]string{""}, 10), 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var out Buffer
			w := newCompact(&out, &header{})
			for _, s := range tt.values {
				if err := w.WriteString(ctx, s); err != nil {
					t.Fatal(err)
				}
			}
			in := bytes.Clone(out.Out)
			p, buf := ours(in)
			got := make([]string, len(tt.values))
			readAll := func() {
				buf.Reset(in)
				for i := range got {
					s, err := p.ReadString(ctx)
					if err != nil {
						t.Fatal(err)
					}
					got[i] = s
				}
			}
			if allocs := testing.AllocsPerRun(20, readAll); allocs != tt.allocs {
				t.Errorf("reading %d strings allocated %v times, want %v", len(got), allocs, tt.allocs)
			}
			clear(in) // the strings must not read the input's memory
			if !slices.Equal(got, tt.values) {
				t.Errorf("read %q..., want %q...", got[0], tt.values[0])
			}
		})
	}
}

// TestSubstringCopiesAtMostTwiceTheInput reads strings laid out at random,
// as a decoder meets them (in order, each after the last), and checks that
// every string is right and that the chunks copied total at most twice the
// input: the bound substring's comment promises whatever the layout.
func TestSubstringCopiesAtMostTwiceTheInput(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for round := range 200 {
		in := make([]byte, 1+r.IntN(8*stringChunk))
		for i := range in {
			in[i] = byte(r.Uint32())
		}
		var b Buffer
		b.Reset(in)
		// Dense short strings in half the rounds, sparse long ones (some
		// crossing chunk ends) in the others.
		maxLen, maxGap := 32, 8
		if round%2 == 1 {
			maxLen, maxGap = 3*stringChunk/2, stringChunk
		}
		copied := 0
		for lo := r.IntN(4); lo < len(in); {
			n := min(len(in)-lo, r.IntN(maxLen))
			before := b.str
			if got := b.substring(lo, lo+n); got != string(in[lo:lo+n]) {
				t.Fatalf("round %d: substring(%d, %d) is not the input's bytes", round, lo, lo+n)
			}
			if unsafe.StringData(b.str) != unsafe.StringData(before) {
				copied += len(b.str)
			}
			lo += n + r.IntN(maxGap) // the bytes between: other fields
		}
		if copied > 2*len(in) {
			t.Fatalf("round %d: copied %d bytes of an input of %d", round, copied, len(in))
		}
	}

	// The layout that comes closest: a 1-byte string, then one that
	// starts in its chunk and ends just past it, and again.
	in := make([]byte, 100*(stringChunk+1))
	var b Buffer
	b.Reset(in)
	copied := 0
	for lo := 0; lo+stringChunk+1 <= len(in); lo += stringChunk + 1 {
		for _, r := range [][2]int{{lo, lo + 1}, {lo + 1, lo + stringChunk + 1}} {
			before := b.str
			b.substring(r[0], r[1])
			if unsafe.StringData(b.str) != unsafe.StringData(before) {
				copied += len(b.str)
			}
		}
	}
	if ratio := float64(copied) / float64(len(in)); ratio > 2 || ratio < 1.9 {
		t.Errorf("the closest layout copied %.3f times its input, want between 1.9 and 2", ratio)
	}
}
