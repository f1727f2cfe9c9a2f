package wire

import (
	"context"
	"io"
	"sync"

	"github.com/apache/thrift/lib/go/thrift"
)

// FramedCompact returns p's framed transport when p is the library's compact
// protocol directly over a thrift.TFramedTransport, the case in which a
// batch's message body is read and written in memory as one frame, and nil
// otherwise.
func FramedCompact(p thrift.TProtocol) *thrift.TFramedTransport {
	if cp, ok := p.(*thrift.TCompactProtocol); ok {
		ft, _ := cp.Transport().(*thrift.TFramedTransport)
		return ft
	}
	return nil
}

// ReadFrame returns the rest of t's current frame: the body of a message
// whose header has been read, in dst when it has room (nil: a new slice).
// The frame's size was checked against the transport's maximum when it
// arrived, and the frame is in memory already, so this costs one copy of
// it, and an allocation unless dst has room.
func ReadFrame(t *thrift.TFramedTransport, dst []byte) []byte {
	n := t.RemainingBytes()
	var frame []byte
	if uint64(cap(dst)) >= n {
		frame = dst[:n]
	} else {
		frame = make([]byte, n)
	}
	// A short read cannot happen with the frame in memory; were it to,
	// the input would end early and fail to decode.
	read, _ := io.ReadFull(t, frame)
	return frame[:read]
}

// Memory is what a message's frame is read into (ReadFrame) and its lists of
// requests or responses decoded into (Lists), for a caller that reads
// message after message: once done with one message's values, Reset makes
// it ready for the next, which then allocates neither. It keeps a frame of
// up to 1 MiB, and the lists' room as Scratch does. The zero value is ready.
type Memory struct {
	frame []byte
	// Lists is the Scratch to decode the frame's message with.
	Lists Scratch
}

// maxKeptFrame is the largest frame a Memory keeps across Reset.
const maxKeptFrame = 1 << 20

// ReadFrame reads the rest of t's current frame into m, as the package's
// ReadFrame does, and returns it.
func (m *Memory) ReadFrame(t *thrift.TFramedTransport) []byte {
	m.frame = ReadFrame(t, m.frame)
	return m.frame
}

// Kept returns the capacity of the frame buffer m holds: what serves the
// next message's frame.
func (m *Memory) Kept() int { return cap(m.frame) }

// Reset makes m ready for another message, keeping nothing of the last one's
// values reachable but the bytes of its frame, which are overwritten next.
func (m *Memory) Reset() {
	if cap(m.frame) > maxKeptFrame {
		m.frame = nil
	}
	m.frame = m.frame[:0]
	m.Lists.Reset()
}

// bodies holds the buffers WriteFramed encodes into; one that grew past
// maxKeptBody is left to the collector rather than kept.
var bodies sync.Pool

const maxKeptBody = 4 << 20

// WriteFramed writes a message named name of typeID and seqID carrying s
// over p, whose framed transport is t (see FramedCompact), and flushes it.
// The header goes through p; s is encoded in memory with this package's
// compact protocol and written to the frame at once, rather than field by
// field through the library's protocol. The buffers it encodes into are
// pooled, up to 4 MiB each.
func WriteFramed(ctx context.Context, p thrift.TProtocol, t *thrift.TFramedTransport, name string, typeID thrift.TMessageType, seqID int32, s thrift.TStruct) error {
	if err := p.WriteMessageBegin(ctx, name, typeID, seqID); err != nil {
		return err
	}
	bp, _ := bodies.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	body, err := Encode(ctx, Compact, (*bp)[:0], s)
	if err != nil {
		return err
	}
	_, err = t.Write(body)
	if cap(body) <= maxKeptBody {
		*bp = body
		bodies.Put(bp)
	}
	if err != nil {
		return thrift.NewTTransportExceptionFromError(err)
	}
	if err := p.WriteMessageEnd(ctx); err != nil {
		return err
	}
	return p.Flush(ctx)
}
