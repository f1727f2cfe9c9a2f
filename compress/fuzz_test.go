package compress_test

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/thriftbatch/thriftbatch/internal/bombs"
	"github.com/thriftbatch/thriftbatch/internal/seedcorpus"

	"github.com/klauspost/compress/s2"

	"github.com/thriftbatch/thriftbatch/compress"
	"github.com/thriftbatch/thriftbatch/idl/batch"
)

// fuzzLimit is the decode limit of the fuzz target: small, so that a bomb
// the fuzzer finds costs little, and large enough for every seed.
const fuzzLimit = 64 * kib

// fuzzCodec maps the fuzzer's byte to a codec: -1, NONE, the five codecs
// and 6, so that one in four inputs tries a value that is not supported.
func fuzzCodec(b uint8) batch.Codec { return batch.Codec(int32(b%8) - 1) }

// codecByte is the inverse of fuzzCodec.
func codecByte(c batch.Codec) uint8 { return uint8(int32(c) + 1) }

// FuzzDecode feeds arbitrary bytes to Decode with every codec. Decode must
// not panic, must return one of the package's three errors or at most
// fuzzLimit bytes, must keep dst, and what it returns must survive a round
// trip through Encode. The input itself must round-trip too.
func FuzzDecode(f *testing.F) {
	c, err := compress.New(compress.WithMaxDecodedSize(fuzzLimit))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(c.Close)
	prefix := []byte("kept")
	f.Fuzz(func(t *testing.T, codecB uint8, data []byte) {
		codec := fuzzCodec(codecB)
		dst := bytes.Clone(prefix)
		out, err := c.Decode(codec, dst, data)
		switch {
		case !compress.IsSupported(codec):
			if !errors.Is(err, compress.ErrUnsupportedCodec) {
				t.Fatalf("%s: err = %v, want ErrUnsupportedCodec", compress.Name(codec), err)
			}
			return
		case err != nil:
			if !errors.Is(err, compress.ErrCorrupt) && !errors.Is(err, compress.ErrTooLarge) {
				t.Fatalf("%s: err = %v, want ErrCorrupt or ErrTooLarge", compress.Name(codec), err)
			}
			if out != nil {
				t.Fatalf("%s: %d bytes returned along with %v", compress.Name(codec), len(out), err)
			}
		default:
			if !bytes.HasPrefix(out, prefix) {
				t.Fatalf("%s: dst %q not kept: %q", compress.Name(codec), prefix, out[:min(len(out), 8)])
			}
			decoded := out[len(prefix):]
			if len(decoded) > fuzzLimit {
				t.Fatalf("%s: decoded %d bytes, over the limit of %d", compress.Name(codec), len(decoded), fuzzLimit)
			}
			roundTrip(t, c, codec, decoded)
		}
		roundTrip(t, c, codec, data)
	})
}

// roundTrip checks that Decode gives back what Encode wrote for src, when
// src is within the limit.
func roundTrip(t *testing.T, c *compress.Codecs, codec batch.Codec, src []byte) {
	t.Helper()
	if len(src) > fuzzLimit {
		return
	}
	enc, err := c.Encode(codec, nil, src)
	if err != nil {
		t.Fatalf("%s: Encode of %d bytes: %v", compress.Name(codec), len(src), err)
	}
	dec, err := c.Decode(codec, nil, enc)
	if len(src) == 0 && len(dec) == 0 && err == nil {
		return
	}
	if err != nil || !bytes.Equal(dec, src) {
		t.Fatalf("%s: round trip of %d bytes: %d bytes back, %v", compress.Name(codec), len(src), len(dec), err)
	}
}

// seed is one entry of a fuzz target's seed corpus.
type seed struct {
	name  string
	codec batch.Codec
	data  []byte
}

// seeds returns the seed corpus of FuzzDecode: for every codec, valid
// payloads, payloads cut short or with a flipped byte, and bombs of the
// kinds compress_test.go builds, scaled to just above fuzzLimit.
func seeds(t testing.TB) []seed {
	c := newCodecs(t)
	var out []seed
	text := repetitiveBytes(3000)
	for _, codec := range compress.Supported {
		name := compress.Name(codec)
		for _, p := range []struct {
			name string
			src  []byte
		}{{"empty", nil}, {"one-byte", []byte{'x'}}, {"text", text}, {"random", randomBytes(2000, 3)}} {
			enc, err := c.Encode(codec, nil, p.src)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, seed{name + "-" + p.name, codec, enc})
			if len(enc) > 4 {
				out = append(out, seed{name + "-" + p.name + "-cut", codec, enc[:len(enc)/2]})
				flipped := bytes.Clone(enc)
				flipped[len(flipped)/2] ^= 0x55
				out = append(out, seed{name + "-" + p.name + "-flipped", codec, flipped})
			}
		}
		out = append(out, seed{name + "-garbage", codec, []byte("not compressed in any format")})
	}
	gz, _ := bombs.Gzip(fuzzLimit/258 + 1)
	zl, _ := bombs.Zlib(fuzzLimit/258 + 1)
	var multi []byte
	for range 3 {
		multi = append(multi, bombs.Zstd(fuzzLimit/2, true, false)...)
	}
	return append(out,
		seed{"zstd-bomb-single-segment", batch.Codec_ZSTD, bombs.Zstd(fuzzLimit+1, true, true)},
		seed{"zstd-bomb-undeclared", batch.Codec_ZSTD, bombs.Zstd(fuzzLimit+1, false, false)},
		seed{"zstd-bomb-many-frames", batch.Codec_ZSTD, multi},
		seed{"snappy-bomb-header", batch.Codec_SNAPPY, blockHeader(1 << 30)},
		seed{"s2-bomb-header", batch.Codec_S2, blockHeader(1 << 30)},
		seed{"s2-zeros", batch.Codec_S2, s2.Encode(nil, make([]byte, fuzzLimit+1))},
		seed{"gzip-bomb", batch.Codec_GZIP, gz},
		seed{"zlib-bomb", batch.Codec_ZLIB, zl},
		seed{"gzip-two-members", batch.Codec_GZIP, append(mustEncode(t, c, batch.Codec_GZIP, text), mustEncode(t, c, batch.Codec_GZIP, text)...)},
		seed{"none", batch.Codec_NONE, text[:10]},
		seed{"unknown-minus-one", batch.Codec(-1), text[:10]},
		seed{"unknown-six", batch.Codec(6), text[:10]},
	)
}

func mustEncode(t testing.TB, c *compress.Codecs, codec batch.Codec, src []byte) []byte {
	t.Helper()
	enc, err := c.Encode(codec, nil, src)
	if err != nil {
		t.Fatal(err)
	}
	return enc
}

// TestFuzzSeedCorpus checks that testdata/fuzz/FuzzDecode holds the seeds
// above, which go test runs as regular tests; -update-seeds rewrites them.
// Entries the fuzzer added (crashers) are left alone.
func TestFuzzSeedCorpus(t *testing.T) {
	for _, s := range seeds(t) {
		want := []byte(fmt.Sprintf("go test fuzz v1\nbyte(%q)\n[]byte(%q)\n", codecByte(s.codec), s.data))
		seedcorpus.Check(t, "FuzzDecode", s.name, want)
	}
}
