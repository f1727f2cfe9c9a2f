package compress_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"

	"github.com/thriftbatch/thriftbatch/compress"
	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/internal/bombs"
)

const (
	kib = 1 << 10
	mib = 1 << 20
	gib = 1 << 30
)

// newCodecs builds a Codecs and closes it when the test ends.
func newCodecs(t testing.TB, opts ...compress.Option) *compress.Codecs {
	t.Helper()
	c, err := compress.New(opts...)
	if err != nil {
		t.Fatalf("compress.New: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8 && i+j < n; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

func repetitiveBytes(n int) []byte {
	const phrase = "thriftbatch runs many calls in one round trip; "
	return []byte(strings.Repeat(phrase, n/len(phrase)+1)[:n])
}

func TestCodecsRoundTripEveryPayload(t *testing.T) {
	c := newCodecs(t)
	payloads := []struct {
		name string
		data []byte
	}{
		{"0 bytes", []byte{}},
		{"1 byte", []byte{42}},
		{"1 MiB random", randomBytes(mib, 1)},
		{"1 MiB repetitive", repetitiveBytes(mib)},
		{"1 MiB zeros", make([]byte, mib)},
	}
	for _, codec := range compress.Supported {
		for _, p := range payloads {
			t.Run(fmt.Sprintf("%s round-trips %s", compress.Name(codec), p.name), func(t *testing.T) {
				enc, err := c.Encode(codec, nil, p.data)
				if err != nil {
					t.Fatalf("Encode: %v", err)
				}
				dec, err := c.Decode(codec, nil, enc)
				if err != nil {
					t.Fatalf("Decode: %v", err)
				}
				if !bytes.Equal(dec, p.data) {
					t.Fatalf("Decode(Encode(x)) differs from x: got %d bytes, want %d", len(dec), len(p.data))
				}
				if p.name == "1 MiB repetitive" && len(enc) > len(p.data)/10 {
					t.Errorf("repetitive 1 MiB encoded to %d bytes; want it compressed at least 10x", len(enc))
				}
			})
		}
	}
}

func TestCodecsAppendToDst(t *testing.T) {
	c := newCodecs(t)
	src := repetitiveBytes(10 * kib)
	for _, codec := range compress.Supported {
		t.Run(compress.Name(codec)+" appends after what dst holds", func(t *testing.T) {
			prefix := []byte("prefix:")
			for _, dstCap := range []int{len(prefix), len(prefix) + 64*kib} {
				dst := append(make([]byte, 0, dstCap), prefix...)
				enc, err := c.Encode(codec, dst, src)
				if err != nil {
					t.Fatalf("Encode: %v", err)
				}
				if !bytes.HasPrefix(enc, prefix) {
					t.Fatalf("Encode with cap %d lost the prefix: %q", dstCap, enc[:min(len(enc), 16)])
				}
				dst = append(make([]byte, 0, dstCap), prefix...)
				dec, err := c.Decode(codec, dst, enc[len(prefix):])
				if err != nil {
					t.Fatalf("Decode with cap %d: %v", dstCap, err)
				}
				if want := append(append([]byte{}, prefix...), src...); !bytes.Equal(dec, want) {
					t.Fatalf("Decode with cap %d: got %d bytes, want prefix + %d bytes", dstCap, len(dec), len(src))
				}
			}
		})
	}
}

func TestGzipAndZlibRoundTripAtEveryLevel(t *testing.T) {
	src := repetitiveBytes(64 * kib)
	for level := gzip.HuffmanOnly; level <= gzip.BestCompression; level++ {
		t.Run(fmt.Sprintf("level %d round-trips with gzip and zlib", level), func(t *testing.T) {
			c := newCodecs(t, compress.WithGzipLevel(level))
			for _, codec := range []batch.Codec{batch.Codec_GZIP, batch.Codec_ZLIB} {
				enc, err := c.Encode(codec, nil, src)
				if err != nil {
					t.Fatalf("%s Encode: %v", compress.Name(codec), err)
				}
				dec, err := c.Decode(codec, nil, enc)
				if err != nil || !bytes.Equal(dec, src) {
					t.Fatalf("%s round trip: err %v, %d bytes, want %d", compress.Name(codec), err, len(dec), len(src))
				}
			}
		})
	}
}

func TestDecodeAtTheLimit(t *testing.T) {
	const limit = 64 * kib
	c := newCodecs(t, compress.WithMaxDecodedSize(limit))
	if got := c.MaxDecodedSize(); got != limit {
		t.Fatalf("MaxDecodedSize() = %d, want %d", got, limit)
	}
	for _, codec := range compress.Supported {
		for _, tc := range []struct {
			name    string
			size    int
			tooBig  bool
			payload func(int) []byte
		}{
			{"exactly the limit of random bytes decodes", limit, false, func(n int) []byte { return randomBytes(n, 7) }},
			{"one byte over the limit of random bytes is too large", limit + 1, true, func(n int) []byte { return randomBytes(n, 7) }},
			{"exactly the limit of zeros decodes", limit, false, func(n int) []byte { return make([]byte, n) }},
			{"one byte over the limit of zeros is too large", limit + 1, true, func(n int) []byte { return make([]byte, n) }},
		} {
			t.Run(compress.Name(codec)+": "+tc.name, func(t *testing.T) {
				src := tc.payload(tc.size)
				enc, err := c.Encode(codec, nil, src)
				if err != nil {
					t.Fatalf("Encode: %v", err)
				}
				dec, err := c.Decode(codec, nil, enc)
				if tc.tooBig {
					if !errors.Is(err, compress.ErrTooLarge) {
						t.Fatalf("Decode of %d bytes with limit %d: err = %v, want ErrTooLarge", tc.size, limit, err)
					}
					if dec != nil {
						t.Errorf("Decode returned %d bytes along with ErrTooLarge", len(dec))
					}
					return
				}
				if err != nil || !bytes.Equal(dec, src) {
					t.Fatalf("Decode of %d bytes with limit %d: err %v, got %d bytes", tc.size, limit, err, len(dec))
				}
			})
		}
	}
}

// Bombs: small payloads that expand far beyond the limit.

// blockHeader is a Snappy or S2 block declaring n decoded bytes followed by a few literal
// bytes: the header is all Decode needs to refuse it.
func blockHeader(n int) []byte {
	out := binary.AppendUvarint(nil, uint64(n))
	return append(out, 0, 0) // literal of 1 byte: 0
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

type bomb struct {
	name       string
	codec      batch.Codec
	payload    []byte
	declared   int  // bytes the payload decodes to
	headerOnly bool // only the header is real: the body is cut short
}

// bombCases returns payloads of about size zero bytes (at least size).
func bombCases(t testing.TB, size int) []bomb {
	t.Helper()
	copies := (size + 257) / 258
	gz, gzn := bombs.Gzip(copies)
	zl, zln := bombs.Zlib(copies)
	var multi []byte
	for range size / (512 * kib) {
		multi = append(multi, bombs.Zstd(512*kib, true, false)...)
	}
	enc := func(f func(dst, src []byte) []byte, n int) []byte { return f(nil, make([]byte, n)) }
	return []bomb{
		{"zstd single-segment frame declaring its size", batch.Codec_ZSTD, bombs.Zstd(size, true, true), size, false},
		{"zstd frame with a small window declaring its size", batch.Codec_ZSTD, bombs.Zstd(size, true, false), size, false},
		{"zstd frame with a small window and no declared size", batch.Codec_ZSTD, bombs.Zstd(size, false, false), size, false},
		{"zstd stream of many 512 KiB frames", batch.Codec_ZSTD, multi, size / (512 * kib) * 512 * kib, false},
		{"snappy block declaring its size", batch.Codec_SNAPPY, blockHeader(size), size, true},
		{"s2 block declaring its size", batch.Codec_S2, blockHeader(size), size, true},
		{"real snappy block of 8 MiB of zeros", batch.Codec_SNAPPY, enc(s2.EncodeSnappy, 8*mib), 8 * mib, false},
		{"real s2 block of 8 MiB of zeros", batch.Codec_S2, enc(s2.Encode, 8*mib), 8 * mib, false},
		{"gzip member of zeros at the DEFLATE ratio limit", batch.Codec_GZIP, gz, gzn, false},
		{"zlib stream of zeros at the DEFLATE ratio limit", batch.Codec_ZLIB, zl, zln, false},
	}
}

// TestBombBuildersAreValid decodes small versions of the hand-built bombs
// with a limit they fit in, so that the bomb tests below fail for the limit
// and not for a malformed payload.
func TestBombBuildersAreValid(t *testing.T) {
	c := newCodecs(t)
	for _, b := range bombCases(t, 2*mib) {
		t.Run(b.name+" decodes under a large enough limit", func(t *testing.T) {
			dec, err := c.Decode(b.codec, nil, b.payload)
			if b.headerOnly {
				if !errors.Is(err, compress.ErrCorrupt) {
					t.Fatalf("truncated block: err = %v, want ErrCorrupt", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if len(dec) != b.declared || !allZero(dec) {
				t.Fatalf("decoded %d bytes, want %d zero bytes", len(dec), b.declared)
			}
		})
	}
}

func TestDecodeRefusesBombsWithoutAllocatingThem(t *testing.T) {
	const limit = mib
	c := newCodecs(t, compress.WithMaxDecodedSize(limit))
	// Warm up the decoders, so that their one-time buffers do not count.
	for _, codec := range compress.Supported {
		enc, _ := c.Encode(codec, nil, repetitiveBytes(limit))
		if _, err := c.Decode(codec, nil, enc); err != nil {
			t.Fatalf("warm-up %s: %v", compress.Name(codec), err)
		}
	}
	for _, b := range bombCases(t, gib) {
		t.Run(b.name+" is too large", func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			dec, err := c.Decode(b.codec, nil, b.payload)
			runtime.ReadMemStats(&after)
			if !errors.Is(err, compress.ErrTooLarge) {
				t.Fatalf("Decode of %d bytes (declaring %d) with limit %d: err = %v, want ErrTooLarge", len(b.payload), b.declared, limit, err)
			}
			if dec != nil {
				t.Errorf("Decode returned %d bytes along with ErrTooLarge", len(dec))
			}
			// The payload decodes to about 1 GiB or to 8 MiB; a bounded
			// decode allocates a few times the limit at most.
			allocated := after.TotalAlloc - before.TotalAlloc
			if allocated > 16*mib {
				t.Errorf("Decode allocated %d MiB for a payload declaring %d MiB, limit %d MiB", allocated/mib, b.declared/mib, limit/mib)
			}
			t.Logf("payload %d bytes, declared %d MiB, allocated %d KiB", len(b.payload), b.declared/mib, allocated/kib)
		})
	}
}

func TestDecodeRefusesCorruptInput(t *testing.T) {
	c := newCodecs(t)
	src := repetitiveBytes(100 * kib)
	garbage := []byte("this is not a compressed payload, not in any format at all")
	for _, codec := range compress.Supported {
		valid, err := c.Encode(codec, nil, src)
		if err != nil {
			t.Fatal(err)
		}
		cases := []struct {
			name    string
			payload []byte
		}{
			{"garbage", garbage},
			{"a payload cut in half", valid[:len(valid)/2]},
			{"a payload missing its last byte", valid[:len(valid)-1]},
		}
		switch codec {
		case batch.Codec_GZIP, batch.Codec_ZLIB, batch.Codec_ZSTD:
			// These carry a checksum of the content.
			flipped := bytes.Clone(valid)
			flipped[len(flipped)-2] ^= 0xff
			cases = append(cases, struct {
				name    string
				payload []byte
			}{"a payload with a wrong checksum", flipped})
		}
		for _, tc := range cases {
			t.Run(fmt.Sprintf("%s refuses %s", compress.Name(codec), tc.name), func(t *testing.T) {
				dec, err := c.Decode(codec, nil, tc.payload)
				if !errors.Is(err, compress.ErrCorrupt) {
					t.Fatalf("err = %v (%d bytes out), want ErrCorrupt", err, len(dec))
				}
				if errors.Is(err, compress.ErrTooLarge) || errors.Is(err, compress.ErrUnsupportedCodec) {
					t.Errorf("err = %v also matches another sentinel", err)
				}
			})
		}
	}
}

func TestUnsupportedCodecs(t *testing.T) {
	c := newCodecs(t)
	for _, codec := range []batch.Codec{batch.Codec_NONE, batch.Codec(99), batch.Codec(-1)} {
		t.Run(compress.Name(codec)+" is refused by Encode and Decode", func(t *testing.T) {
			if _, err := c.Encode(codec, nil, []byte("x")); !errors.Is(err, compress.ErrUnsupportedCodec) {
				t.Errorf("Encode: err = %v, want ErrUnsupportedCodec", err)
			}
			if _, err := c.Decode(codec, nil, []byte("x")); !errors.Is(err, compress.ErrUnsupportedCodec) {
				t.Errorf("Decode: err = %v, want ErrUnsupportedCodec", err)
			}
			if compress.IsSupported(codec) {
				t.Errorf("IsSupported(%s) = true", compress.Name(codec))
			}
		})
	}
}

func TestName(t *testing.T) {
	for _, tc := range []struct {
		codec batch.Codec
		want  string
	}{
		{batch.Codec_NONE, "NONE"},
		{batch.Codec_ZSTD, "ZSTD"},
		{batch.Codec_SNAPPY, "SNAPPY"},
		{batch.Codec_S2, "S2"},
		{batch.Codec_GZIP, "GZIP"},
		{batch.Codec_ZLIB, "ZLIB"},
		{batch.Codec(42), "Codec(42)"},
	} {
		t.Run(fmt.Sprintf("codec %d is named %s", tc.codec, tc.want), func(t *testing.T) {
			if got := compress.Name(tc.codec); got != tc.want {
				t.Errorf("Name(%d) = %q, want %q", tc.codec, got, tc.want)
			}
		})
	}
}

func TestIsSupported(t *testing.T) {
	want := map[batch.Codec]bool{
		batch.Codec_NONE: false, batch.Codec_ZSTD: true, batch.Codec_SNAPPY: true,
		batch.Codec_S2: true, batch.Codec_GZIP: true, batch.Codec_ZLIB: true,
		batch.Codec(6): false, batch.Codec(-1): false,
	}
	for codec, supported := range want {
		t.Run(fmt.Sprintf("%s is supported: %v", compress.Name(codec), supported), func(t *testing.T) {
			if got := compress.IsSupported(codec); got != supported {
				t.Errorf("IsSupported(%s) = %v", compress.Name(codec), got)
			}
		})
	}
	if len(compress.Supported) != 5 {
		t.Errorf("Supported has %d codecs, want 5", len(compress.Supported))
	}
}

func TestChoose(t *testing.T) {
	for _, tc := range []struct {
		name     string
		accepted []batch.Codec
		want     batch.Codec
	}{
		{"no accepted codec gives NONE", nil, batch.Codec_NONE},
		{"only NONE gives NONE", []batch.Codec{batch.Codec_NONE}, batch.Codec_NONE},
		{"only unknown codecs give NONE", []batch.Codec{7, 99}, batch.Codec_NONE},
		{"the client's first choice wins", []batch.Codec{batch.Codec_GZIP, batch.Codec_ZSTD}, batch.Codec_GZIP},
		{"unknown codecs are skipped", []batch.Codec{99, batch.Codec_SNAPPY, batch.Codec_ZSTD}, batch.Codec_SNAPPY},
		{"NONE first is skipped", []batch.Codec{batch.Codec_NONE, batch.Codec_ZLIB}, batch.Codec_ZLIB},
		{"a single supported codec is chosen", []batch.Codec{batch.Codec_S2}, batch.Codec_S2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := compress.Choose(tc.accepted); got != tc.want {
				t.Errorf("Choose(%v) = %s, want %s", tc.accepted, compress.Name(got), compress.Name(tc.want))
			}
		})
	}
}

func TestNewRefusesInvalidOptions(t *testing.T) {
	for _, tc := range []struct {
		name string
		opt  compress.Option
	}{
		{"a zero max decoded size", compress.WithMaxDecodedSize(0)},
		{"a negative max decoded size", compress.WithMaxDecodedSize(-1)},
		{"a gzip level below HuffmanOnly", compress.WithGzipLevel(gzip.HuffmanOnly - 1)},
		{"a gzip level above BestCompression", compress.WithGzipLevel(gzip.BestCompression + 1)},
		{"an unknown zstd level", compress.WithZstdLevel(zstd.EncoderLevel(99))},
		{"a zero zstd level", compress.WithZstdLevel(zstd.EncoderLevel(0))},
	} {
		t.Run("New refuses "+tc.name, func(t *testing.T) {
			c, err := compress.New(tc.opt)
			if err == nil {
				c.Close()
				t.Fatal("New returned no error")
			}
			if c != nil {
				t.Errorf("New returned a Codecs along with %v", err)
			}
		})
	}
	for _, tc := range []struct {
		name string
		opt  compress.Option
	}{
		{"a max decoded size of 1 byte", compress.WithMaxDecodedSize(1)},
		{"gzip HuffmanOnly", compress.WithGzipLevel(gzip.HuffmanOnly)},
		{"gzip NoCompression", compress.WithGzipLevel(gzip.NoCompression)},
		{"zstd SpeedBestCompression", compress.WithZstdLevel(zstd.SpeedBestCompression)},
	} {
		t.Run("New accepts "+tc.name, func(t *testing.T) {
			c := newCodecs(t, tc.opt)
			for _, codec := range compress.Supported {
				if _, err := c.Encode(codec, nil, []byte{1}); err != nil {
					t.Fatalf("%s Encode: %v", compress.Name(codec), err)
				}
			}
		})
	}
}

func TestDefaultMaxDecodedSize(t *testing.T) {
	c := newCodecs(t)
	if got := c.MaxDecodedSize(); got != 64*mib || compress.DefaultMaxDecodedSize != 64*mib {
		t.Errorf("MaxDecodedSize() = %d, want DefaultMaxDecodedSize (64 MiB)", got)
	}
}

func TestCodecsAreSafeForConcurrentUse(t *testing.T) {
	c := newCodecs(t, compress.WithMaxDecodedSize(256*kib))
	const goroutines = 16
	var wg sync.WaitGroup
	errs := make(chan error, goroutines)
	for g := range goroutines {
		wg.Go(func() {
			for i := range 20 {
				codec := compress.Supported[(g+i)%len(compress.Supported)]
				var src []byte
				if i%2 == 0 {
					src = randomBytes(1+(g*4099+i*977)%(64*kib), uint64(g*100+i))
				} else {
					src = repetitiveBytes(1 + (g*4099+i*977)%(200*kib))
				}
				enc, err := c.Encode(codec, nil, src)
				if err != nil {
					errs <- fmt.Errorf("%s Encode: %w", compress.Name(codec), err)
					return
				}
				dec, err := c.Decode(codec, nil, enc)
				if err != nil || !bytes.Equal(dec, src) {
					errs <- fmt.Errorf("%s round trip of %d bytes: %v", compress.Name(codec), len(src), err)
					return
				}
				// A corrupt and an oversized payload in between must not
				// spoil the pooled state for the next decode.
				if _, err := c.Decode(codec, nil, enc[:len(enc)/2]); err == nil && len(enc) > 16 {
					errs <- fmt.Errorf("%s decoded a truncated payload", compress.Name(codec))
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestZstdWindowAgainstTheLimit: Decode refuses a zstd frame that declares
// a window larger than the limit, whatever its content (documented on
// Decode). A streaming encoder (the zstd CLI, klauspost's zstd.Writer after a
// Flush, most other languages' stream APIs) declares a window of a few MiB
// and no content size, so its frames need a limit at least that large. The
// frames that must decode come from klauspost's streaming encoder; those
// that must be refused are bombs.ZstdWindow's header with the same text,
// since the refusal reads the header only (an encoder with a 64 MiB window
// would allocate over 100 MiB to write 17 bytes).
func TestZstdWindowAgainstTheLimit(t *testing.T) {
	const text = "hello hello hello"
	streamed := func(window int) []byte {
		var buf bytes.Buffer
		w, err := zstd.NewWriter(&buf, zstd.WithWindowSize(window))
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(text))
		w.Flush() // forces a streaming frame: no content size, the full window
		w.Close()
		return buf.Bytes()
	}
	declared := func(log2 int) []byte { return bombs.ZstdWindow(log2, []byte(text)) }
	for _, tc := range []struct {
		name    string
		frame   []byte
		limit   int
		tooMuch bool
	}{
		{"a streamed frame with an 8 MiB window decodes under an 8 MiB limit", streamed(8 * mib), 8 * mib, false},
		{"a streamed frame with an 8 MiB window decodes under the default limit", streamed(8 * mib), compress.DefaultMaxDecodedSize, false},
		{"a frame declaring a 2 MiB window is too large under a 1 MiB limit", declared(21), mib, true},
		{"a frame declaring an 8 MiB window is too large under a 1 MiB limit", declared(23), mib, true},
		{"a frame declaring a 16 MiB window is too large under the default limit", declared(24), compress.DefaultMaxDecodedSize, true},
		{"a frame declaring a 64 MiB window is too large under the default limit", declared(26), compress.DefaultMaxDecodedSize, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCodecs(t, compress.WithMaxDecodedSize(tc.limit))
			dec, err := c.Decode(batch.Codec_ZSTD, nil, tc.frame)
			if tc.tooMuch {
				if !errors.Is(err, compress.ErrTooLarge) || !errors.Is(err, compress.ErrWindowTooLarge) {
					t.Fatalf("Decode = %q, %v; want ErrTooLarge for the window", dec, err)
				}
				return
			}
			if err != nil || string(dec) != text {
				t.Fatalf("Decode = %q, %v; want %q", dec, err, text)
			}
		})
	}
}

// TestZstdRoundTripsItsOwnOutputUpToTheLimit: whatever the limit, Decode
// must accept what Encode of the same Codecs wrote for a payload within the
// limit. Encode picks the frame's window: for 1024 bytes and less it writes a
// frame that is not single-segment, with a window of 1 KiB (up to 1023
// bytes) or 2 KiB (exactly 1024 bytes), and Decode refuses any window above
// the limit. So every zstd payload fails under a limit below 1 KiB, and a
// payload of 1024 bytes fails under any limit from 1 KiB to 2 KiB - 1.
func TestZstdRoundTripsItsOwnOutputUpToTheLimit(t *testing.T) {
	for _, limit := range []int{1, 100, 512, 1023, 1024, 1500, 2047, 2048, 4096, 64 * kib} {
		sizes := []int{1, limit / 2, min(1024, limit), limit - 1, limit}
		t.Run(fmt.Sprintf("payloads up to %d bytes round-trip under a limit of %d", limit, limit), func(t *testing.T) {
			c := newCodecs(t, compress.WithMaxDecodedSize(limit))
			for _, n := range sizes {
				if n < 1 {
					continue
				}
				src := repetitiveBytes(n)
				enc, err := c.Encode(batch.Codec_ZSTD, nil, src)
				if err != nil {
					t.Fatal(err)
				}
				if dec, err := c.Decode(batch.Codec_ZSTD, nil, enc); err != nil || !bytes.Equal(dec, src) {
					var h zstd.Header
					h.Decode(enc)
					t.Errorf("%d bytes (frame window %d, single segment %v): %v", n, h.WindowSize, h.SingleSegment, err)
				}
			}
		})
	}
}

// TestDecodeIntoRoomBeyondTheLimit: a dst with more room than the limit
// allows is not read into past the limit: a payload over the limit is
// refused, not returned and not a panic.
func TestDecodeIntoRoomBeyondTheLimit(t *testing.T) {
	const limit = 64 * kib
	c := newCodecs(t, compress.WithMaxDecodedSize(limit))
	for _, codec := range []batch.Codec{batch.Codec_ZSTD, batch.Codec_GZIP, batch.Codec_ZLIB, batch.Codec_SNAPPY, batch.Codec_S2} {
		for _, n := range []int{limit, limit + limit/2, 3 * limit} {
			t.Run(fmt.Sprintf("%v/%d bytes", codec, n), func(t *testing.T) {
				src := repetitiveBytes(n)
				enc, err := c.Encode(codec, nil, src)
				if err != nil {
					t.Fatal(err)
				}
				dec, err := c.Decode(codec, make([]byte, 0, 2*limit), enc)
				if n <= limit {
					if err != nil || !bytes.Equal(dec, src) {
						t.Fatalf("Decode of %d bytes at a limit of %d: %v", n, limit, err)
					}
					return
				}
				if !errors.Is(err, compress.ErrTooLarge) {
					t.Fatalf("Decode of %d bytes at a limit of %d into room for %d = %d bytes, %v; want ErrTooLarge", n, limit, 2*limit, len(dec), err)
				}
			})
		}
	}
}

// TestZlibRefusesBytesAfterItsStream: as gzip and zstd do, a zlib stream
// followed by more bytes is corrupt, not the stream alone.
func TestZlibRefusesBytesAfterItsStream(t *testing.T) {
	c := newCodecs(t)
	enc, err := c.Encode(batch.Codec_ZLIB, nil, []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	if dec, err := c.Decode(batch.Codec_ZLIB, nil, append(enc, "GARBAGE"...)); !errors.Is(err, compress.ErrCorrupt) {
		t.Errorf("Decode of zlib and 7 more bytes = %q, %v; want ErrCorrupt", dec, err)
	}
	if dec, err := c.Decode(batch.Codec_ZLIB, nil, enc); err != nil || string(dec) != "hello" {
		t.Errorf("Decode of the stream alone afterwards = %q, %v", dec, err)
	}
}

// TestCodecsRefuseWorkAfterClose: Encode and Decode return ErrClosed once
// Close has run, rather than wait for an encoder Close released.
func TestCodecsRefuseWorkAfterClose(t *testing.T) {
	c, err := compress.New()
	if err != nil {
		t.Fatal(err)
	}
	enc, err := c.Encode(batch.Codec_ZSTD, nil, []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	for _, codec := range compress.Supported {
		done := make(chan error, 2)
		go func() {
			_, err := c.Encode(codec, nil, []byte("hello"))
			done <- err
			_, err = c.Decode(codec, nil, enc)
			done <- err
		}()
		for range 2 {
			select {
			case err := <-done:
				if !errors.Is(err, compress.ErrClosed) {
					t.Errorf("%v after Close: %v, want ErrClosed", codec, err)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("%v after Close does not return", codec)
			}
		}
	}
}

// TestPooledDecodersKeepNoPayload: once Decode has returned, nothing the
// Codecs keep (its pooled decoders) holds the compressed input: the first
// collection frees it.
func TestPooledDecodersKeepNoPayload(t *testing.T) {
	c := newCodecs(t)
	for _, codec := range []batch.Codec{batch.Codec_ZSTD, batch.Codec_GZIP, batch.Codec_ZLIB} {
		t.Run(codec.String(), func(t *testing.T) {
			enc, err := c.Encode(codec, nil, repetitiveBytes(256*kib))
			if err != nil {
				t.Fatal(err)
			}
			src := bytes.Clone(enc)
			freed := make(chan struct{})
			runtime.AddCleanup(&src[0], func(ch chan struct{}) { close(ch) }, freed)
			if _, err := c.Decode(codec, nil, src); err != nil {
				t.Fatal(err)
			}
			src = nil
			runtime.GC()
			select {
			case <-freed:
			case <-time.After(2 * time.Second):
				t.Error("the compressed input is still reachable after Decode returned and a collection")
			}
		})
	}
}
