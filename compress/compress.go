// Package compress encodes and decodes the compressed payloads of a batch
// (BatchRequest.compressedRequests and BatchResponse.compressedResponses) with
// the codecs of the wire contract: zstd, Snappy, S2, gzip and zlib, all from
// github.com/klauspost/compress.
//
// A Codecs value is built once and shared: its zstd encoder and decoder are
// safe for concurrent use, and gzip and zlib state is pooled, so no batch
// builds a codec of its own. Every decode is bounded: a payload that would
// expand beyond the configured maximum fails with ErrTooLarge before the
// memory is spent, so a few KiB of compressed input cannot become gigabytes.
package compress

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zlib"
	"github.com/klauspost/compress/zstd"

	"github.com/thriftbatch/thriftbatch/idl/batch"
)

// DefaultMaxDecodedSize is the largest payload Decode produces unless
// WithMaxDecodedSize says otherwise: 64 MiB.
const DefaultMaxDecodedSize = 64 << 20

var (
	// ErrUnsupportedCodec is returned for a codec this package does not
	// implement (NONE included: there is nothing to encode or decode).
	ErrUnsupportedCodec = errors.New("compress: unsupported codec")

	// ErrTooLarge is returned when a payload would decode to more bytes than
	// the configured maximum, and, with ErrWindowTooLarge, when a zstd frame
	// declares a window larger than 8 MiB or than the maximum, whatever its
	// content.
	ErrTooLarge = errors.New("compress: decoded payload exceeds the limit")

	// ErrWindowTooLarge is returned along with ErrTooLarge (errors.Is holds
	// for both) for a zstd frame that declares a window larger than the
	// Codecs decode: min(8 MiB, the maximum decoded size).
	ErrWindowTooLarge = errors.New("zstd frame declares a window larger than allowed")

	// ErrCorrupt is returned when a payload is not valid for its codec.
	ErrCorrupt = errors.New("compress: corrupt payload")
)

// Supported lists the codecs this package implements: zstd, s2, snappy,
// gzip, zlib. In this order it is package client's default acceptCodecs, its
// order of preference; a server answers with the first codec of the
// client's list that it implements (Choose).
var Supported = []batch.Codec{batch.Codec_ZSTD, batch.Codec_S2, batch.Codec_SNAPPY, batch.Codec_GZIP, batch.Codec_ZLIB}

// Codecs holds the encoders and decoders for every supported codec. It is safe
// for concurrent use. The zero value is not usable; call New.
type Codecs struct {
	maxDecoded int

	// zstdW holds the idle zstd encoders, each of concurrency 1; zstdMade
	// counts those that exist, at most cap(zstdW) (GOMAXPROCS). One shared
	// zstd.Encoder would do, but its EncodeAll takes one of a fixed set of
	// encoders made up front: with a set of one, concurrent batches compress
	// one at a time; with GOMAXPROCS, every server pays for that many before
	// it needs them.
	zstdW    chan *zstd.Encoder
	zstdMade atomic.Int32
	zstdOpts []zstd.EOption
	zstdR    sync.Pool // *zstdDecoder, synchronous (no goroutines of its own)
	zstdWin  int       // the largest window a zstd frame may declare

	gzipLevel int
	gzipW     sync.Pool // *deflater over a *gzip.Writer
	gzipR     sync.Pool // *streamDecoder over a *gzip.Reader
	zlibW     sync.Pool // *deflater over a *zlib.Writer
	zlibR     sync.Pool // *streamDecoder over a zlib reader

	closed atomic.Bool
}

// maxZstdWindow bounds the window a zstd frame may declare, below the
// decoding limit when that is larger: the decoder allocates the whole window
// at a frame's first block, so a 13-byte frame declaring the limit as its
// window would cost the limit in memory. 8 MiB is the window the Zstandard
// format (RFC 8878) recommends decoders support at least, and the reference
// encoder's largest below its --ultra levels; a one-shot encoder of known
// input, as EncodeAll is, declares no more than the input's size.
const maxZstdWindow = 8 << 20

// zstdDecoder is a pooled zstd decoder with the reader it decodes from,
// emptied before the decoder goes back to the pool, so that a pooled decoder
// keeps no payload alive.
type zstdDecoder struct {
	*zstd.Decoder
	src bytes.Reader
}

// streamDecoder is a pooled gzip or zlib reader with the reader it decodes
// from, emptied as zstdDecoder's is.
type streamDecoder struct {
	r   io.ReadCloser
	src bytes.Reader
}

// ErrClosed is what Encode and Decode return once Close has been called.
var ErrClosed = errors.New("compress: codecs closed")

type config struct {
	maxDecoded int
	zstdLevel  zstd.EncoderLevel
	gzipLevel  int
}

// Option configures a Codecs.
type Option func(*config)

// WithMaxDecodedSize sets the largest payload Decode produces, in bytes.
// The default is DefaultMaxDecodedSize (64 MiB). It must be positive. It
// also bounds the window a zstd frame may declare, which is at most 8 MiB
// whatever the size.
func WithMaxDecodedSize(n int) Option {
	return func(c *config) { c.maxDecoded = n }
}

// WithZstdLevel sets the zstd encoder level. The default is
// zstd.SpeedFastest: on a batch of 1,000 catalog replies (two full runs of
// go run ./bench at 1b18805, docs/BENCHMARKS.md) it made output 1.26 times
// the size of the standard library's zlib at its default level, 4.82 and
// 6.21 times as fast; zstd.SpeedDefault 1.12 times the size, 4.22 and 5.29
// times as fast; zstd.SpeedBetterCompression 1.06 times the size, 3.05 and
// 3.82 times as fast.
func WithZstdLevel(l zstd.EncoderLevel) Option {
	return func(c *config) { c.zstdLevel = l }
}

// WithGzipLevel sets the level of the gzip and zlib encoders, from
// gzip.HuffmanOnly (-2) to gzip.BestCompression (9). The default is
// gzip.BestSpeed (1).
func WithGzipLevel(level int) Option {
	return func(c *config) { c.gzipLevel = level }
}

// New builds the encoders and decoders. It returns an error for an invalid
// option. A Codecs starts with one zstd encoder and one decoder, and makes
// more zstd encoders as concurrent batches need them, up to GOMAXPROCS, so
// that compression runs on every processor. An encoder keeps the buffers of
// the largest payload it has compressed: a new Codecs holds 0.6 MiB once it
// has compressed a 17 KiB payload and 8.7 MiB after 200 KiB at the default
// level, 1.6 and 17.8 MiB at zstd.SpeedDefault (its decoder included; go
// test -run XXX -bench EncoderMemory -benchtime 5x ./compress). Build one
// per server, or per client connection, not per batch.
func New(opts ...Option) (*Codecs, error) {
	cfg := config{
		maxDecoded: DefaultMaxDecodedSize,
		zstdLevel:  zstd.SpeedFastest,
		gzipLevel:  gzip.BestSpeed,
	}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.maxDecoded <= 0 {
		return nil, fmt.Errorf("compress: max decoded size must be positive, got %d", cfg.maxDecoded)
	}
	if cfg.gzipLevel < gzip.HuffmanOnly || cfg.gzipLevel > gzip.BestCompression {
		return nil, fmt.Errorf("compress: gzip level must be between %d and %d, got %d", gzip.HuffmanOnly, gzip.BestCompression, cfg.gzipLevel)
	}
	c := &Codecs{
		maxDecoded: cfg.maxDecoded, gzipLevel: cfg.gzipLevel,
		zstdWin:  max(min(cfg.maxDecoded, maxZstdWindow), 2*zstd.MinWindowSize),
		zstdW:    make(chan *zstd.Encoder, runtime.GOMAXPROCS(0)),
		zstdOpts: []zstd.EOption{zstd.WithEncoderLevel(cfg.zstdLevel), zstd.WithEncoderConcurrency(1)},
	}
	// Making the first encoder checks the options.
	enc, err := zstd.NewWriter(nil, c.zstdOpts...)
	if err != nil {
		return nil, fmt.Errorf("compress: zstd encoder: %w", err)
	}
	c.zstdW <- enc
	c.zstdMade.Store(1)
	// Decoders are made on demand; making one checks the options.
	d, err := c.newZstdDecoder()
	if err != nil {
		return nil, fmt.Errorf("compress: zstd decoder: %w", err)
	}
	c.zstdR.Put(d)
	return c, nil
}

// MaxDecodedSize reports the largest payload Decode produces, in bytes.
func (c *Codecs) MaxDecodedSize() int { return c.maxDecoded }

// newZstdDecoder returns a stream decoder. Streaming, not DecodeAll: DecodeAll
// reallocates its output for every frame that declares its size, so a few KiB
// of many small frames cost time and memory that grow with the square of the
// frame count. One goroutine (WithDecoderConcurrency(1)) decodes in the
// caller and starts none. WithDecoderMaxMemory and WithDecoderMaxWindow bound
// what a frame may declare (the window to c.zstdWin); both are kept at two
// minimum windows at least, since the encoder declares a 1 or 2 KiB window
// even for one byte, and readAll enforces the exact limit.
func (c *Codecs) newZstdDecoder() (*zstdDecoder, error) {
	d, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxMemory(uint64(max(c.maxDecoded, 2*zstd.MinWindowSize))),
		zstd.WithDecoderMaxWindow(uint64(c.zstdWin)))
	if err != nil {
		return nil, err
	}
	return &zstdDecoder{Decoder: d}, nil
}

// Close releases the pooled decoders and encoders' buffers. Encode and Decode
// called afterwards return ErrClosed; those running already finish, a zstd
// Encode with an encoder made anew when Close took the idle ones.
func (c *Codecs) Close() {
	c.closed.Store(true)
	for {
		d, ok := c.zstdR.Get().(*zstdDecoder)
		if !ok {
			break
		}
		d.Close()
	}
	for {
		select {
		case e := <-c.zstdW:
			e.Close()
			// An Encode that got past the closed check waits for an
			// encoder only while zstdMade is at its bound.
			c.zstdMade.Add(-1)
		default:
			return
		}
	}
}

// zstdEncode compresses src onto dst with an idle encoder; when none is
// idle, with a new one while fewer than GOMAXPROCS exist, or else with the
// first to come back.
func (c *Codecs) zstdEncode(dst, src []byte) ([]byte, error) {
	var e *zstd.Encoder
	select {
	case e = <-c.zstdW:
	default:
		if c.zstdMade.Add(1) > int32(cap(c.zstdW)) {
			c.zstdMade.Add(-1)
			e = <-c.zstdW // every encoder is busy: wait for one
			break
		}
		var err error
		if e, err = zstd.NewWriter(nil, c.zstdOpts...); err != nil {
			c.zstdMade.Add(-1)
			return nil, fmt.Errorf("compress: zstd encoder: %w", err)
		}
	}
	dst = e.EncodeAll(src, dst)
	c.zstdW <- e // never blocks: no more encoders exist than it holds
	return dst, nil
}

// Encode appends src compressed with codec to dst and returns the result. It
// costs one pass of the codec over src and, for gzip and zlib, no allocation
// beyond the output once the pooled writers are warm (go test -bench
// 'Encode/(GZIP|ZLIB)' -benchmem ./compress). A zstd Encode waits
// for an encoder while GOMAXPROCS others are compressing. It returns
// ErrUnsupportedCodec for a codec the package does not implement, and
// ErrClosed after Close.
func (c *Codecs) Encode(codec batch.Codec, dst, src []byte) ([]byte, error) {
	if c.closed.Load() {
		return dst, ErrClosed
	}
	switch codec {
	case batch.Codec_ZSTD:
		return c.zstdEncode(dst, src)
	case batch.Codec_SNAPPY:
		return appendBlock(dst, src, s2.EncodeSnappy), nil
	case batch.Codec_S2:
		return appendBlock(dst, src, s2.Encode), nil
	case batch.Codec_GZIP:
		return c.deflate(&c.gzipW, dst, src, func(w io.Writer) resetWriter {
			z, _ := gzip.NewWriterLevel(w, c.gzipLevel) // the level was validated in New
			return z
		})
	case batch.Codec_ZLIB:
		return c.deflate(&c.zlibW, dst, src, func(w io.Writer) resetWriter {
			z, _ := zlib.NewWriterLevel(w, c.gzipLevel)
			return z
		})
	}
	return dst, fmt.Errorf("%w: %s", ErrUnsupportedCodec, Name(codec))
}

// appendBlock appends the block encoding of src to dst. The s2 block encoders
// write into a slice they size themselves, so a dst with room is reused.
func appendBlock(dst, src []byte, encode func(dst, src []byte) []byte) []byte {
	need := s2.MaxEncodedLen(len(src))
	if cap(dst)-len(dst) >= need {
		out := encode(dst[len(dst):cap(dst)], src)
		return dst[:len(dst)+len(out)]
	}
	return append(dst, encode(nil, src)...)
}

// resetWriter is a gzip or zlib writer.
type resetWriter interface {
	io.WriteCloser
	Reset(io.Writer)
}

// deflater is a pooled gzip or zlib writer with the buffer it writes to, so
// that an Encode allocates nothing but its output.
type deflater struct {
	w   resetWriter
	buf bytes.Buffer
}

// deflate compresses src onto dst with a deflater from pool, made by
// newWriter when the pool is empty.
func (c *Codecs) deflate(pool *sync.Pool, dst, src []byte, newWriter func(io.Writer) resetWriter) ([]byte, error) {
	d, _ := pool.Get().(*deflater)
	if d == nil {
		d = &deflater{}
		d.w = newWriter(&d.buf)
	}
	defer pool.Put(d)
	d.buf = *bytes.NewBuffer(dst)
	defer func() { d.buf = bytes.Buffer{} }() // the pool must not hold the output
	d.w.Reset(&d.buf)
	if _, err := d.w.Write(src); err != nil {
		return nil, err
	}
	if err := d.w.Close(); err != nil {
		return nil, err
	}
	return d.buf.Bytes(), nil
}

// Decode appends the decompressed src to dst and returns the result. It fails
// with ErrTooLarge when the output would exceed the maximum decoded size
// (checked from the header where the format has one, before allocating; a
// zstd frame that declares a window larger than the maximum or than 8 MiB is
// refused too, with ErrWindowTooLarge as well, since decoding it takes that
// much memory), with ErrCorrupt for
// invalid input (a zlib stream followed by more bytes included), with
// ErrUnsupportedCodec for an unknown codec, and with ErrClosed after Close.
// dst's room beyond the maximum is not used. A pooled decoder keeps its
// buffers (a zstd window, up to 8 MiB) but not src.
func (c *Codecs) Decode(codec batch.Codec, dst, src []byte) ([]byte, error) {
	if c.closed.Load() {
		return nil, ErrClosed
	}
	switch codec {
	case batch.Codec_ZSTD:
		d, _ := c.zstdR.Get().(*zstdDecoder)
		if d == nil {
			var err error
			if d, err = c.newZstdDecoder(); err != nil {
				return nil, fmt.Errorf("compress: zstd decoder: %w", err)
			}
		}
		d.src.Reset(src)
		if err := d.Reset(&d.src); err != nil {
			return nil, c.decodeError(codec, err)
		}
		defer func() {
			d.src.Reset(nil)
			c.zstdR.Put(d)
		}()
		return c.readAll(dst, d, codec)
	case batch.Codec_SNAPPY, batch.Codec_S2:
		// s2.Decode reads Snappy blocks too: S2 is a superset of Snappy.
		n, err := s2.DecodedLen(src)
		if err != nil {
			return nil, fmt.Errorf("%w: %v: %v", ErrCorrupt, codec, err)
		}
		if n > c.maxDecoded {
			return nil, fmt.Errorf("%w: %v payload declares %d bytes, limit %d", ErrTooLarge, codec, n, c.maxDecoded)
		}
		// A Snappy block expands at most 64 bytes per 3-byte copy: one that
		// declares more cannot be valid, and is refused before its
		// declared size is allocated.
		if codec == batch.Codec_SNAPPY && n > 22*len(src)+32 {
			return nil, fmt.Errorf("%w: snappy payload of %d bytes declares %d, more than Snappy can encode in it", ErrCorrupt, len(src), n)
		}
		out := grow(dst, n)
		dec, err := s2.Decode(out[len(dst):len(dst)+n], src)
		if err != nil {
			return nil, fmt.Errorf("%w: %v: %v", ErrCorrupt, codec, err)
		}
		return out[:len(dst)+len(dec)], nil
	case batch.Codec_GZIP:
		out, _, err := c.decodeStream(&c.gzipR, codec, dst, src, func(d *streamDecoder) (err error) {
			if d.r == nil {
				d.r, err = gzip.NewReader(&d.src)
				return err
			}
			return d.r.(*gzip.Reader).Reset(&d.src)
		})
		return out, err
	case batch.Codec_ZLIB:
		out, left, err := c.decodeStream(&c.zlibR, codec, dst, src, func(d *streamDecoder) (err error) {
			if d.r == nil {
				d.r, err = zlib.NewReader(&d.src)
				return err
			}
			return d.r.(zlib.Resetter).Reset(&d.src, nil)
		})
		if err == nil && left > 0 {
			// A gzip stream refuses what follows its end (as the header
			// of a next member); a zlib stream has no such check.
			return nil, fmt.Errorf("%w: zlib: %d bytes after the end of the stream", ErrCorrupt, left)
		}
		return out, err
	}
	return nil, fmt.Errorf("%w: %s", ErrUnsupportedCodec, Name(codec))
}

// decodeStream decodes src with a streamDecoder from pool, which open makes
// or resets onto d.src, into dst, and reports how many bytes of src follow
// the stream's end.
func (c *Codecs) decodeStream(pool *sync.Pool, codec batch.Codec, dst, src []byte, open func(d *streamDecoder) error) (out []byte, left int, err error) {
	d, _ := pool.Get().(*streamDecoder)
	if d == nil {
		d = new(streamDecoder)
	}
	d.src.Reset(src)
	if err := open(d); err != nil {
		return nil, 0, fmt.Errorf("%w: %s: %v", ErrCorrupt, strings.ToLower(Name(codec)), err)
	}
	defer func() {
		d.src.Reset(nil)
		pool.Put(d)
	}()
	out, err = c.readAll(dst, d.r, codec)
	return out, d.src.Len(), err
}

// readAll reads r to its end into dst, stopping with ErrTooLarge as soon as
// more than the maximum has come out. The buffer grows by doubling but never
// past what the limit allows, so a bomb costs at most about the limit; room
// dst has beyond the limit is not read into.
func (c *Codecs) readAll(dst []byte, r io.Reader, codec batch.Codec) ([]byte, error) {
	limit := len(dst) + c.maxDecoded
	out := dst
	for {
		if len(out) == min(cap(out), limit) {
			if len(out) == limit {
				// Full to the limit: one more byte means too large.
				var probe [1]byte
				n, err := io.ReadFull(r, probe[:])
				switch {
				case n > 0:
					return nil, fmt.Errorf("%w: %s payload decodes to more than %d bytes", ErrTooLarge, Name(codec), c.maxDecoded)
				case err == io.EOF:
					return out, nil
				default:
					return nil, c.decodeError(codec, err)
				}
			}
			grown := make([]byte, len(out), min(max(2*cap(out), 4096), limit))
			copy(grown, out)
			out = grown
		}
		n, err := r.Read(out[len(out):min(cap(out), limit)])
		out = out[:len(out)+n]
		switch {
		case err == io.EOF:
			return out, nil
		case err != nil:
			return nil, c.decodeError(codec, err)
		}
	}
}

// decodeError classifies an error of a streaming decoder: a declared window
// or frame beyond the limit is ErrTooLarge, anything else ErrCorrupt.
func (c *Codecs) decodeError(codec batch.Codec, err error) error {
	if errors.Is(err, zstd.ErrWindowSizeExceeded) {
		return fmt.Errorf("%w: %w: the most is %d bytes", ErrTooLarge, ErrWindowTooLarge, c.zstdWin)
	}
	if errors.Is(err, zstd.ErrDecoderSizeExceeded) || errors.Is(err, zstd.ErrFrameSizeExceeded) {
		return fmt.Errorf("%w: %s payload decodes to more than %d bytes", ErrTooLarge, Name(codec), c.maxDecoded)
	}
	return fmt.Errorf("%w: %s: %v", ErrCorrupt, Name(codec), err)
}

// grow returns dst with room for n more bytes.
func grow(dst []byte, n int) []byte {
	if cap(dst)-len(dst) >= n {
		return dst
	}
	out := make([]byte, len(dst), len(dst)+n)
	copy(out, dst)
	return out
}

// Name returns the codec's name as the wire contract spells it, or
// "Codec(N)" for a value the contract does not define.
func Name(c batch.Codec) string {
	if s := c.String(); s != "<UNSET>" {
		return s
	}
	return fmt.Sprintf("Codec(%d)", int32(c))
}

// IsSupported reports whether codec is one this package implements.
func IsSupported(codec batch.Codec) bool {
	for _, s := range Supported {
		if s == codec {
			return true
		}
	}
	return false
}

// Choose returns the first codec of accepted (the client's order of
// preference) that this package implements, or NONE when there is none.
func Choose(accepted []batch.Codec) batch.Codec {
	for _, a := range accepted {
		if IsSupported(a) {
			return a
		}
	}
	return batch.Codec_NONE
}
