package bombs_test

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"errors"
	"io"
	"testing"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"

	"github.com/thriftbatch/thriftbatch/internal/bombs"
)

// The builders must make valid payloads, so that a test refusing one refuses
// it for its size and not for a malformed byte. Each is decoded here, small,
// by a decoder that is not this project's.
func TestBombsDecodeToZeros(t *testing.T) {
	const n = 1 << 20
	copies := n / 258
	gz, gzn := bombs.Gzip(copies)
	zl, zln := bombs.Zlib(copies)
	var multi []byte
	for range 4 {
		multi = append(multi, bombs.Zstd(n/4, true, false)...)
	}
	for _, c := range []struct {
		name string
		want int
		read func() (io.Reader, error)
	}{
		{"zstd single-segment, size declared", n, zstdReader(bombs.Zstd(n, true, true))},
		{"zstd 128 KiB window, size declared", n, zstdReader(bombs.Zstd(n, true, false))},
		{"zstd 128 KiB window, no size", n, zstdReader(bombs.Zstd(n, false, false))},
		{"zstd stream of four frames", n, zstdReader(multi)},
		{"s2 repeat codes", n, func() (io.Reader, error) {
			b, err := s2.Decode(nil, bombs.S2(n))
			return bytes.NewReader(b), err
		}},
		{"gzip at the DEFLATE ratio limit", gzn, func() (io.Reader, error) { return gzip.NewReader(bytes.NewReader(gz)) }},
		{"zlib at the DEFLATE ratio limit", zln, func() (io.Reader, error) { return zlib.NewReader(bytes.NewReader(zl)) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			r, err := c.read()
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(r)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if len(got) != c.want || bytes.ContainsFunc(got, func(r rune) bool { return r != 0 }) {
				t.Fatalf("decoded %d bytes, want %d zero bytes", len(got), c.want)
			}
		})
	}
}

func zstdReader(b []byte) func() (io.Reader, error) {
	return func() (io.Reader, error) {
		d, err := zstd.NewReader(bytes.NewReader(b), zstd.WithDecoderConcurrency(1))
		return d, err
	}
}

func TestSnappyClaimDeclaresItsSize(t *testing.T) {
	n, err := s2.DecodedLen(bombs.SnappyClaim(1 << 30))
	if err != nil || n != 1<<30 {
		t.Fatalf("DecodedLen = %d, %v; want 1 GiB", n, err)
	}
	if _, err := s2.Decode(nil, bombs.SnappyClaim(1<<20)); err == nil {
		t.Fatal("a claim cut short decoded")
	}
}

func TestBombsAreSmall(t *testing.T) {
	gz, gzn := bombs.Gzip(1 << 22)
	if len(bombs.Zstd(1<<30, false, false)) > 40<<10 || len(bombs.S2(1<<30)) > 1<<10 || gzn < 1000*len(gz) {
		t.Fatalf("bombs larger than expected: zstd %d, s2 %d, gzip %d for %d", len(bombs.Zstd(1<<30, false, false)), len(bombs.S2(1<<30)), len(gz), gzn)
	}
}

// TestZstdWindowDeclaresItsWindow: the frame decodes to its body, and a
// decoder limited to a smaller window refuses it for the window.
func TestZstdWindowDeclaresItsWindow(t *testing.T) {
	body := []byte("tiny")
	frame := bombs.ZstdWindow(24, body)
	wide, err := zstd.NewReader(nil, zstd.WithDecoderMaxWindow(16<<20), zstd.WithDecoderLowmem(true))
	if err != nil {
		t.Fatal(err)
	}
	defer wide.Close()
	if got, err := wide.DecodeAll(frame, nil); err != nil || string(got) != string(body) {
		t.Fatalf("DecodeAll = %q, %v; want %q", got, err, body)
	}
	narrow, err := zstd.NewReader(nil, zstd.WithDecoderMaxWindow(8<<20), zstd.WithDecoderLowmem(true))
	if err != nil {
		t.Fatal(err)
	}
	defer narrow.Close()
	if _, err := narrow.DecodeAll(frame, nil); !errors.Is(err, zstd.ErrWindowSizeExceeded) {
		t.Fatalf("DecodeAll with an 8 MiB window = %v, want zstd.ErrWindowSizeExceeded", err)
	}
}
