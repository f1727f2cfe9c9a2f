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
	"sync"

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
	// the configured maximum.
	ErrTooLarge = errors.New("compress: decoded payload exceeds the limit")

	// ErrCorrupt is returned when a payload is not valid for its codec.
	ErrCorrupt = errors.New("compress: corrupt payload")
)

// Supported lists the codecs this package implements, in the order a server
// prefers them when a client accepts several: zstd, s2, snappy, gzip, zlib.
var Supported = []batch.Codec{batch.Codec_ZSTD, batch.Codec_S2, batch.Codec_SNAPPY, batch.Codec_GZIP, batch.Codec_ZLIB}

// Codecs holds the encoders and decoders for every supported codec. It is safe
// for concurrent use. The zero value is not usable; call New.
type Codecs struct {
	maxDecoded int

	zstdEnc *zstd.Encoder
	zstdDec *zstd.Decoder

	gzipLevel int
	gzipW     sync.Pool // *gzip.Writer
	gzipR     sync.Pool // *gzip.Reader
	zlibW     sync.Pool // *zlib.Writer
	zlibR     sync.Pool // io.ReadCloser that is also a zlib.Resetter
}

type config struct {
	maxDecoded int
	zstdLevel  zstd.EncoderLevel
	gzipLevel  int
}

// Option configures a Codecs.
type Option func(*config)

// WithMaxDecodedSize sets the largest payload Decode produces, in bytes.
// The default is DefaultMaxDecodedSize (64 MiB). It must be positive.
func WithMaxDecodedSize(n int) Option {
	return func(c *config) { c.maxDecoded = n }
}

// WithZstdLevel sets the zstd encoder level. The default is
// zstd.SpeedFastest, which on batch responses compresses about as well as
// zlib's default level at many times its speed.
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
// option. A Codecs holds a zstd encoder and decoder with their buffers (a few
// MiB at most, allocated as payloads need them); build one per server, not per
// batch.
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
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(cfg.zstdLevel), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, fmt.Errorf("compress: zstd encoder: %w", err)
	}
	// WithDecoderMaxMemory bounds the decoded size and, through it, the
	// window a frame may declare. It is kept at two minimum windows at
	// least, since the encoder declares a 1 or 2 KiB window even for a
	// single byte; the exact limit is checked after decoding.
	dec, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(0),
		zstd.WithDecoderMaxMemory(uint64(max(cfg.maxDecoded, 2*zstd.MinWindowSize))))
	if err != nil {
		return nil, fmt.Errorf("compress: zstd decoder: %w", err)
	}
	return &Codecs{maxDecoded: cfg.maxDecoded, zstdEnc: enc, zstdDec: dec, gzipLevel: cfg.gzipLevel}, nil
}

// MaxDecodedSize reports the largest payload Decode produces, in bytes.
func (c *Codecs) MaxDecodedSize() int { return c.maxDecoded }

// Close releases the zstd decoder's goroutines. The Codecs must not be used
// afterwards.
func (c *Codecs) Close() {
	c.zstdDec.Close()
}

// Encode appends src compressed with codec to dst and returns the result. It
// costs one pass of the codec over src and, for gzip and zlib, no allocation
// beyond the output once the pooled writers are warm.
func (c *Codecs) Encode(codec batch.Codec, dst, src []byte) ([]byte, error) {
	switch codec {
	case batch.Codec_ZSTD:
		return c.zstdEnc.EncodeAll(src, dst), nil
	case batch.Codec_SNAPPY:
		return appendBlock(dst, src, s2.EncodeSnappy), nil
	case batch.Codec_S2:
		return appendBlock(dst, src, s2.Encode), nil
	case batch.Codec_GZIP:
		buf := bytes.NewBuffer(dst)
		w, _ := c.gzipW.Get().(*gzip.Writer)
		if w == nil {
			// The level was validated in New.
			w, _ = gzip.NewWriterLevel(buf, c.gzipLevel)
		} else {
			w.Reset(buf)
		}
		defer c.gzipW.Put(w)
		return finish(buf, w, src)
	case batch.Codec_ZLIB:
		buf := bytes.NewBuffer(dst)
		w, _ := c.zlibW.Get().(*zlib.Writer)
		if w == nil {
			w, _ = zlib.NewWriterLevel(buf, c.gzipLevel)
		} else {
			w.Reset(buf)
		}
		defer c.zlibW.Put(w)
		return finish(buf, w, src)
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

func finish(buf *bytes.Buffer, w io.WriteCloser, src []byte) ([]byte, error) {
	if _, err := w.Write(src); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Decode appends the decompressed src to dst and returns the result. It fails
// with ErrTooLarge when the output would exceed the maximum decoded size
// (checked from the header where the format has one, before allocating; a
// zstd frame that declares a window larger than the maximum is refused too,
// since decoding it may take that much memory),
// with ErrCorrupt for invalid input, and with ErrUnsupportedCodec for an
// unknown codec.
func (c *Codecs) Decode(codec batch.Codec, dst, src []byte) ([]byte, error) {
	switch codec {
	case batch.Codec_ZSTD:
		out, err := c.zstdDec.DecodeAll(src, dst)
		switch {
		case errors.Is(err, zstd.ErrDecoderSizeExceeded), errors.Is(err, zstd.ErrWindowSizeExceeded), errors.Is(err, zstd.ErrFrameSizeExceeded):
			return nil, fmt.Errorf("%w: zstd payload decodes to more than %d bytes", ErrTooLarge, c.maxDecoded)
		case err != nil:
			return nil, fmt.Errorf("%w: zstd: %v", ErrCorrupt, err)
		}
		// DecodeAll checks the limit per frame; a stream of many frames is
		// checked here as a whole.
		if len(out)-len(dst) > c.maxDecoded {
			return nil, fmt.Errorf("%w: zstd payload decodes to more than %d bytes", ErrTooLarge, c.maxDecoded)
		}
		return out, nil
	case batch.Codec_SNAPPY, batch.Codec_S2:
		// s2.Decode reads Snappy blocks too: S2 is a superset of Snappy.
		n, err := s2.DecodedLen(src)
		if err != nil {
			return nil, fmt.Errorf("%w: %v: %v", ErrCorrupt, codec, err)
		}
		if n > c.maxDecoded {
			return nil, fmt.Errorf("%w: %v payload declares %d bytes, limit %d", ErrTooLarge, codec, n, c.maxDecoded)
		}
		out := grow(dst, n)
		dec, err := s2.Decode(out[len(dst):len(dst)+n], src)
		if err != nil {
			return nil, fmt.Errorf("%w: %v: %v", ErrCorrupt, codec, err)
		}
		return out[:len(dst)+len(dec)], nil
	case batch.Codec_GZIP:
		r, _ := c.gzipR.Get().(*gzip.Reader)
		var err error
		if r == nil {
			r, err = gzip.NewReader(bytes.NewReader(src))
		} else {
			err = r.Reset(bytes.NewReader(src))
		}
		if err != nil {
			return nil, fmt.Errorf("%w: gzip: %v", ErrCorrupt, err)
		}
		defer c.gzipR.Put(r)
		return c.readAll(dst, r, codec)
	case batch.Codec_ZLIB:
		var r io.ReadCloser
		var err error
		if pooled, ok := c.zlibR.Get().(io.ReadCloser); ok {
			r = pooled
			err = r.(zlib.Resetter).Reset(bytes.NewReader(src), nil)
		} else {
			r, err = zlib.NewReader(bytes.NewReader(src))
		}
		if err != nil {
			return nil, fmt.Errorf("%w: zlib: %v", ErrCorrupt, err)
		}
		defer c.zlibR.Put(r)
		return c.readAll(dst, r, codec)
	}
	return nil, fmt.Errorf("%w: %s", ErrUnsupportedCodec, Name(codec))
}

// readAll reads r to its end into dst, stopping with ErrTooLarge as soon as
// more than the maximum has come out.
func (c *Codecs) readAll(dst []byte, r io.Reader, codec batch.Codec) ([]byte, error) {
	buf := bytes.NewBuffer(dst)
	n, err := buf.ReadFrom(io.LimitReader(r, int64(c.maxDecoded)+1))
	if err != nil {
		return nil, fmt.Errorf("%w: %v: %v", ErrCorrupt, codec, err)
	}
	if n > int64(c.maxDecoded) {
		return nil, fmt.Errorf("%w: %v payload decodes to more than %d bytes", ErrTooLarge, codec, c.maxDecoded)
	}
	return buf.Bytes(), nil
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
