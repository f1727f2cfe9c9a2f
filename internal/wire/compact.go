package wire

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/apache/thrift/lib/go/thrift"
)

// compact is Thrift's compact protocol over a Buffer, for the structs a
// batch encodes and decodes in memory: the calls' arguments and replies and
// the batch's own envelopes. Its bytes are those of thrift.TCompactProtocol,
// byte for byte (compact_test.go compares the two on random input).
//
// It exists because the library's protocol is written for streams: it looks
// each field's compact type up in a map (a hash per field header, 11% of a
// batch's CPU in go test -bench HundredGetProduct ./bench), reaches the
// transport through an interface for every byte, and copies every string
// of 64 bytes or more twice. Over a byte slice none of that is needed.
//
// Message headers are never written or read: WriteMessageBegin records the
// message type in hdr, ReadMessageBegin returns what hdr holds, as the
// reader and writer wrappers do for the other protocols.
type compact struct {
	// byteIO serves ReadByte and WriteByte (the i8 type), through the same
	// Buffer: its methods of those names have the signatures of Thrift's
	// interface, not io.ByteReader's and io.ByteWriter's, which go vet
	// refuses in a type declared here. They keep no state between calls.
	// Every other method is this type's own.
	byteIO
	b   *Buffer
	hdr *header

	last  int   // id of the last field written or read in the current struct
	stack []int // last of each enclosing struct

	boolID      int16 // a bool field waiting for its value (WriteFieldBegin)
	boolPending bool
	boolValue   bool // the value of the bool field just read (ReadFieldBegin)
	boolRead    bool

	conf *thrift.TConfiguration // the size limits reads obey
}

var _ thrift.TProtocol = (*compact)(nil)

type byteIO = *thrift.TCompactProtocol

func newCompact(b *Buffer, hdr *header) *compact {
	return &compact{byteIO: thrift.NewTCompactProtocolConf(b, cfg), b: b, hdr: hdr, conf: cfg}
}

// header is the message header a Call pretends to read (a CALL of name,
// sequence id 0) and the type of the one it remembers writing (0 for none).
type header struct {
	name    string
	outType thrift.TMessageType
}

// The compact protocol's type codes.
const (
	ctStop    = 0x00
	ctTrue    = 0x01
	ctFalse   = 0x02
	ctByte    = 0x03
	ctI16     = 0x04
	ctI32     = 0x05
	ctI64     = 0x06
	ctDouble  = 0x07
	ctBinary  = 0x08
	ctList    = 0x09
	ctSet     = 0x0A
	ctMap     = 0x0B
	ctStruct  = 0x0C
	ctUUID    = 0x0D
	ctUnknown = 0xFF
)

// compactTypes maps a thrift.TType to its compact code. Types without one
// map to 0, as in the library.
var compactTypes = [...]byte{
	thrift.STOP:   ctStop,
	thrift.BOOL:   ctTrue,
	thrift.BYTE:   ctByte,
	thrift.I16:    ctI16,
	thrift.I32:    ctI32,
	thrift.I64:    ctI64,
	thrift.DOUBLE: ctDouble,
	thrift.STRING: ctBinary,
	thrift.LIST:   ctList,
	thrift.SET:    ctSet,
	thrift.MAP:    ctMap,
	thrift.STRUCT: ctStruct,
	thrift.UUID:   ctUUID,
}

func compactType(t thrift.TType) byte {
	if int(t) < len(compactTypes) {
		return compactTypes[t]
	}
	return 0
}

// ttypes maps a compact code to its thrift.TType; codes without one hold
// 0xFF.
var ttypes = [16]thrift.TType{
	ctStop: thrift.STOP, ctTrue: thrift.BOOL, ctFalse: thrift.BOOL, ctByte: thrift.BYTE,
	ctI16: thrift.I16, ctI32: thrift.I32, ctI64: thrift.I64, ctDouble: thrift.DOUBLE,
	ctBinary: thrift.STRING, ctList: thrift.LIST, ctSet: thrift.SET, ctMap: thrift.MAP,
	ctStruct: thrift.STRUCT, ctUUID: thrift.UUID, 14: ctUnknown, 15: ctUnknown,
}

func ttype(c byte) (thrift.TType, error) {
	if t := ttypes[c&0x0f]; t != ctUnknown {
		return t, nil
	}
	return thrift.STOP, thrift.NewTProtocolException(fmt.Errorf("don't know what type: %v", c&0x0f))
}

// reset forgets any state a call left behind.
func (p *compact) reset() {
	p.last, p.stack = 0, p.stack[:0]
	p.boolPending, p.boolRead = false, false
}

// Writing.

func (p *compact) WriteMessageBegin(_ context.Context, _ string, typeID thrift.TMessageType, _ int32) error {
	p.hdr.outType = typeID
	return nil
}

func (p *compact) WriteMessageEnd(context.Context) error { return nil }

func (p *compact) WriteStructBegin(context.Context, string) error {
	p.stack = append(p.stack, p.last)
	p.last = 0
	return nil
}

func (p *compact) WriteStructEnd(context.Context) error { return p.pop("WriteStructEnd") }

// pop restores the last field id of the enclosing struct at a struct's
// end.
func (p *compact) pop(method string) error {
	n := len(p.stack)
	if n == 0 {
		return thrift.NewTProtocolExceptionWithType(thrift.INVALID_DATA, fmt.Errorf("%s called without matching %sBegin call before", method, method[:len(method)-3]))
	}
	p.last, p.stack = p.stack[n-1], p.stack[:n-1]
	return nil
}

func (p *compact) WriteFieldBegin(_ context.Context, _ string, typeID thrift.TType, id int16) error {
	if typeID == thrift.BOOL {
		// The value goes into the field header: wait for it.
		p.boolID, p.boolPending = id, true
		return nil
	}
	p.fieldHeader(compactType(typeID), id)
	return nil
}

// fieldHeader writes a field header: the id as a delta from the last
// field's in the same byte as the type when it is 1 to 15 above it, else
// the type and then the id as a zigzag varint.
func (p *compact) fieldHeader(ct byte, id int16) {
	if d := int(id) - p.last; d > 0 && d <= 15 {
		p.b.Out = append(p.b.Out, byte(d<<4)|ct)
	} else {
		p.b.Out = append(p.b.Out, ct)
		p.varint(uint64(zigzag32(int32(id))))
	}
	p.last = int(id)
}

func (p *compact) WriteFieldEnd(context.Context) error { return nil }

func (p *compact) WriteFieldStop(context.Context) error {
	p.b.Out = append(p.b.Out, ctStop)
	return nil
}

func (p *compact) WriteMapBegin(_ context.Context, keyType, valueType thrift.TType, size int) error {
	if size == 0 {
		p.b.Out = append(p.b.Out, 0)
		return nil
	}
	p.size(size)
	p.b.Out = append(p.b.Out, compactType(keyType)<<4|compactType(valueType))
	return nil
}

func (p *compact) WriteMapEnd(context.Context) error { return nil }

func (p *compact) WriteListBegin(_ context.Context, elemType thrift.TType, size int) error {
	p.collection(elemType, size)
	return nil
}

func (p *compact) WriteListEnd(context.Context) error { return nil }

func (p *compact) WriteSetBegin(_ context.Context, elemType thrift.TType, size int) error {
	p.collection(elemType, size)
	return nil
}

func (p *compact) WriteSetEnd(context.Context) error { return nil }

// collection writes a list or set header: sizes up to 14 share the byte
// with the element type.
func (p *compact) collection(elemType thrift.TType, size int) {
	if size <= 14 {
		p.b.Out = append(p.b.Out, byte(int32(size<<4)|int32(compactType(elemType))))
		return
	}
	p.b.Out = append(p.b.Out, 0xf0|compactType(elemType))
	p.size(size)
}

func (p *compact) WriteBool(_ context.Context, value bool) error {
	v := byte(ctFalse)
	if value {
		v = ctTrue
	}
	if p.boolPending {
		p.boolPending = false
		p.fieldHeader(v, p.boolID)
		return nil
	}
	p.b.Out = append(p.b.Out, v)
	return nil
}

func (p *compact) WriteI16(_ context.Context, value int16) error {
	p.varint(uint64(zigzag32(int32(value))))
	return nil
}

func (p *compact) WriteI32(_ context.Context, value int32) error {
	p.varint(uint64(zigzag32(value)))
	return nil
}

func (p *compact) WriteI64(_ context.Context, value int64) error {
	p.varint(uint64(value<<1 ^ value>>63))
	return nil
}

func (p *compact) WriteDouble(_ context.Context, value float64) error {
	p.b.Out = binary.LittleEndian.AppendUint64(p.b.Out, math.Float64bits(value))
	return nil
}

func (p *compact) WriteString(_ context.Context, value string) error {
	p.size(len(value))
	p.b.Out = append(p.b.Out, value...)
	return nil
}

func (p *compact) WriteBinary(_ context.Context, value []byte) error {
	p.size(len(value))
	p.b.Out = append(p.b.Out, value...)
	return nil
}

func (p *compact) WriteUUID(_ context.Context, value thrift.Tuuid) error {
	p.b.Out = append(p.b.Out, value[:]...)
	return nil
}

// zigzag32 maps signed to unsigned so that small magnitudes stay small; the
// library writes the result as a 32-bit varint.
func zigzag32(n int32) uint32 { return uint32(n<<1 ^ n>>31) }

func (p *compact) varint(v uint64) { p.b.Out = binary.AppendUvarint(p.b.Out, v) }

// size writes a length or an element count as the library does: as a
// 32-bit value, a varint of its unsigned bits.
func (p *compact) size(n int) { p.varint(uint64(uint32(int32(n)))) }

// Reading.

func (p *compact) ReadMessageBegin(context.Context) (string, thrift.TMessageType, int32, error) {
	return p.hdr.name, thrift.CALL, 0, nil
}

func (p *compact) ReadMessageEnd(context.Context) error { return nil }

func (p *compact) ReadStructBegin(context.Context) (string, error) {
	p.stack = append(p.stack, p.last)
	p.last = 0
	return "", nil
}

func (p *compact) ReadStructEnd(context.Context) error { return p.pop("ReadStructEnd") }

func (p *compact) ReadFieldBegin(context.Context) (string, thrift.TType, int16, error) {
	t, err := p.b.ReadByte()
	if err != nil {
		return "", 0, 0, err
	}
	if t&0x0f == ctStop {
		return "", thrift.STOP, 0, nil
	}
	var id int16
	if delta := int16(t >> 4); delta != 0 {
		id = int16(p.last) + delta
	} else {
		v, err := p.varint32()
		if err != nil {
			return "", 0, 0, err
		}
		id = int16(unzigzag32(v))
	}
	typeID, err := ttype(t)
	if err != nil {
		return "", 0, 0, err
	}
	if c := t & 0x0f; c == ctTrue || c == ctFalse {
		p.boolValue, p.boolRead = c == ctTrue, true
	}
	p.last = int(id)
	return "", typeID, id, nil
}

func (p *compact) ReadFieldEnd(context.Context) error { return nil }

func (p *compact) ReadMapBegin(context.Context) (thrift.TType, thrift.TType, int, error) {
	size, err := p.varint32()
	if err != nil {
		return 0, 0, 0, err
	}
	var kv byte
	if size != 0 {
		if kv, err = p.b.ReadByte(); err != nil {
			return 0, 0, 0, err
		}
	}
	// As in the library, element types a map header cannot name read as
	// STOP, which no generated reader accepts.
	k, _ := ttype(kv >> 4)
	v, _ := ttype(kv & 0x0f)
	if err := p.checkContainer(int32(size), minSize(k)+minSize(v)); err != nil {
		return 0, 0, 0, err
	}
	return k, v, int(int32(size)), nil
}

func (p *compact) ReadMapEnd(context.Context) error { return nil }

func (p *compact) ReadListBegin(context.Context) (thrift.TType, int, error) {
	b, err := p.b.ReadByte()
	if err != nil {
		return 0, 0, err
	}
	size := int32(b >> 4)
	if size == 15 {
		v, err := p.varint32()
		if err != nil {
			return 0, 0, err
		}
		size = int32(v)
	}
	elem, err := ttype(b)
	if err != nil {
		return 0, 0, err
	}
	if err := p.checkContainer(size, minSize(elem)); err != nil {
		return 0, 0, err
	}
	return elem, int(size), nil
}

func (p *compact) ReadListEnd(context.Context) error { return nil }

func (p *compact) ReadSetBegin(ctx context.Context) (thrift.TType, int, error) {
	return p.ReadListBegin(ctx)
}

func (p *compact) ReadSetEnd(context.Context) error { return nil }

func (p *compact) ReadBool(context.Context) (bool, error) {
	if p.boolRead {
		p.boolRead = false
		return p.boolValue, nil
	}
	v, err := p.b.ReadByte()
	return v == ctTrue, err
}

func (p *compact) ReadI16(context.Context) (int16, error) {
	v, err := p.varint32()
	return int16(unzigzag32(v)), err
}

func (p *compact) ReadI32(context.Context) (int32, error) {
	v, err := p.varint32()
	return unzigzag32(v), err
}

func (p *compact) ReadI64(context.Context) (int64, error) {
	v, err := p.varint64()
	if err != nil {
		return 0, err
	}
	return int64(v>>1) ^ -int64(v&1), nil
}

func (p *compact) ReadDouble(context.Context) (float64, error) {
	b, err := p.next(8)
	if err != nil {
		return 0, err
	}
	return math.Float64frombits(binary.LittleEndian.Uint64(b)), nil
}

func (p *compact) ReadString(context.Context) (string, error) {
	b, err := p.bytes()
	if err != nil {
		return "", err
	}
	return p.b.substring(p.b.pos-len(b), p.b.pos), nil
}

func (p *compact) ReadBinary(context.Context) ([]byte, error) {
	b, err := p.bytes()
	if err != nil {
		return nil, err
	}
	// A copy, as the library returns: the input is reused once the call
	// is done.
	return append([]byte{}, b...), nil
}

func (p *compact) ReadUUID(context.Context) (thrift.Tuuid, error) {
	var u thrift.Tuuid
	b, err := p.next(16)
	if err == nil {
		copy(u[:], b)
	}
	return u, err
}

func (p *compact) Skip(ctx context.Context, fieldType thrift.TType) error {
	return p.skip(ctx, fieldType, thrift.DEFAULT_RECURSION_DEPTH)
}

// skip is thrift.Skip without copying strings and binaries: it reads past
// them in place. depth bounds the nesting, as the library's does.
func (p *compact) skip(ctx context.Context, t thrift.TType, depth int) error {
	if depth <= 0 {
		return thrift.NewTProtocolExceptionWithType(thrift.DEPTH_LIMIT, errors.New("Depth limit exceeded"))
	}
	switch t {
	case thrift.STRING:
		_, err := p.bytes()
		return err
	case thrift.STRUCT:
		return readFields(ctx, p, func(_ int16, ft thrift.TType) (bool, error) {
			return true, p.skip(ctx, ft, depth-1)
		})
	case thrift.LIST, thrift.SET:
		elem, n, err := p.ReadListBegin(ctx)
		if err != nil {
			return err
		}
		for range n {
			if err := p.skip(ctx, elem, depth-1); err != nil {
				return err
			}
		}
		return nil
	case thrift.MAP:
		k, v, n, err := p.ReadMapBegin(ctx)
		if err != nil {
			return err
		}
		for range n {
			if err := p.skip(ctx, k, depth-1); err != nil {
				return err
			}
			if err := p.skip(ctx, v, depth-1); err != nil {
				return err
			}
		}
		return nil
	}
	// Values of fixed size, and types without values, as the library
	// skips them.
	return thrift.Skip(ctx, p, t, depth)
}

func (p *compact) Flush(context.Context) error { return nil }

// SetTConfiguration sets the size limits reads obey, as
// thrift.PropagateTConfiguration does for the library's protocols; nil
// means the library's defaults.
func (p *compact) SetTConfiguration(conf *thrift.TConfiguration) {
	if conf == nil {
		conf = cfg
	}
	p.conf = conf
}

func (p *compact) Transport() thrift.TTransport { return p.b }

// bytes returns the next length-prefixed string or binary, aliasing the
// input, its capacity cut to its length so that appending to it cannot
// overwrite what follows.
func (p *compact) bytes() ([]byte, error) {
	v, err := p.varint32()
	if err != nil {
		return nil, err
	}
	n := int32(v)
	switch {
	case n < 0:
		return nil, thrift.NewTProtocolExceptionWithType(thrift.NEGATIVE_SIZE, fmt.Errorf("negative size: %d", n))
	case n > p.conf.GetMaxMessageSize():
		return nil, thrift.NewTProtocolExceptionWithType(thrift.SIZE_LIMIT, fmt.Errorf("size exceeded max allowed: %d", n))
	}
	return p.next(int(n))
}

// next consumes n bytes and returns them, aliasing the input (with no
// capacity past them).
func (p *compact) next(n int) ([]byte, error) {
	b := p.b
	if len(b.in)-b.pos < n {
		b.pos = len(b.in)
		return nil, thrift.NewTProtocolException(errShort)
	}
	out := b.in[b.pos : b.pos+n : b.pos+n]
	b.pos += n
	return out, nil
}

// checkContainer refuses a container header whose element count is
// negative, above the configured maximum, or more than the input left could
// hold at minElem bytes an element.
func (p *compact) checkContainer(size, minElem int32) error {
	switch {
	case size < 0:
		return thrift.NewTProtocolExceptionWithType(thrift.NEGATIVE_SIZE, fmt.Errorf("negative size: %d", size))
	case size > p.conf.GetMaxContainerSize():
		return thrift.NewTProtocolExceptionWithType(thrift.SIZE_LIMIT, fmt.Errorf("container of %d elements exceeds the limit of %d", size, p.conf.GetMaxContainerSize()))
	}
	if need := int64(size) * int64(minElem); need > int64(p.conf.GetMaxMessageSize()) {
		return thrift.NewTProtocolExceptionWithType(thrift.SIZE_LIMIT, fmt.Errorf("size exceeded max allowed: %d", need))
	} else if need > int64(p.b.RemainingBytes()) {
		return thrift.NewTProtocolExceptionWithType(thrift.SIZE_LIMIT, fmt.Errorf("container of %d elements needs at least %d bytes, only %d remaining", size, need, p.b.RemainingBytes()))
	}
	return nil
}

// minSize is the fewest bytes an element of type t takes, as the library
// counts them.
func minSize(t thrift.TType) int32 {
	switch t {
	case thrift.DOUBLE:
		return 8
	case thrift.UUID:
		return 16
	}
	return 1
}

func unzigzag32(v uint32) int32 { return int32(v>>1) ^ -int32(v&1) }

// varint32 reads a varint as the library does: up to 10 bytes, truncated to
// 32 bits.
func (p *compact) varint32() (uint32, error) {
	v, err := p.varint64()
	return uint32(v), err
}

func (p *compact) varint64() (uint64, error) {
	b := p.b
	var v uint64
	for i := 0; i < 10; i++ {
		if b.pos >= len(b.in) {
			return 0, thrift.NewTProtocolException(errShort)
		}
		c := b.in[b.pos]
		b.pos++
		v |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			return v, nil
		}
	}
	return 0, thrift.NewTProtocolExceptionWithType(thrift.INVALID_DATA, errors.New("variable-length int over 10 bytes"))
}
