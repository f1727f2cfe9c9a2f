package compress_test

import (
	"bytes"
	stdzlib "compress/zlib"
	"context"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"testing"

	"github.com/apache/thrift/lib/go/thrift"
	"github.com/klauspost/compress/zstd"

	"github.com/thriftbatch/thriftbatch/compress"
	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/tests/testsvc"
)

// thriftPayload is what a batch response compresses in practice: a
// BatchResponse of item lists, serialized with the binary protocol, of about
// size bytes.
func thriftPayload(tb testing.TB, size int) []byte {
	tb.Helper()
	ctx := context.Background()
	serialize := func(s thrift.TStruct) []byte {
		buf := thrift.NewTMemoryBuffer()
		p := thrift.NewTBinaryProtocolConf(buf, nil)
		if err := s.Write(ctx, p); err != nil {
			tb.Fatal(err)
		}
		return bytes.Clone(buf.Bytes())
	}
	words := []string{"red", "green", "blue", "large", "small", "sale", "new", "refurbished", "eu", "us"}
	resp := &batch.BatchResponse{}
	for i := 0; ; i++ {
		items := make([]*testsvc.Item, 3)
		for j := range items {
			k := i*3 + j
			items[j] = &testsvc.Item{
				Key:   int64(100000 + k*7919%100000),
				Label: "product " + strconv.Itoa(k*7919%100000) + " " + words[k%len(words)] + " " + words[(k/3)%len(words)],
				Tags:  []string{words[k%7], words[(k+3)%len(words)], "sku-" + strconv.Itoa(k*31%9973)},
			}
		}
		id := int32(i)
		resp.Responses = append(resp.Responses, &batch.Response{ID: &id, Reply: serialize(&testsvc.TestItemsResult{Success: items})})
		if out := serialize(resp); len(out) >= size {
			return out
		}
	}
}

var benchCodecs = []batch.Codec{batch.Codec_ZSTD, batch.Codec_S2, batch.Codec_SNAPPY, batch.Codec_GZIP, batch.Codec_ZLIB}

// BenchmarkEncode reports MB/s of uncompressed input on a ~100 KiB batch
// response, and the compression ratio. "stdlib-zlib-default" is
// compress/zlib at its default level, the baseline.
func BenchmarkEncode(b *testing.B) {
	payload := thriftPayload(b, 100*kib)
	c, err := compress.New()
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	for _, codec := range benchCodecs {
		b.Run(compress.Name(codec), func(b *testing.B) {
			b.SetBytes(int64(len(payload)))
			b.ReportAllocs()
			var dst []byte
			for b.Loop() {
				dst, err = c.Encode(codec, dst[:0], payload)
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(len(payload))/float64(len(dst)), "ratio")
		})
	}
	b.Run("stdlib-zlib-default", func(b *testing.B) {
		b.SetBytes(int64(len(payload)))
		b.ReportAllocs()
		var buf bytes.Buffer
		w := stdzlib.NewWriter(&buf)
		for b.Loop() {
			buf.Reset()
			w.Reset(&buf)
			w.Write(payload)
			w.Close()
		}
		b.ReportMetric(float64(len(payload))/float64(buf.Len()), "ratio")
	})
}

// BenchmarkDecode reports MB/s of decompressed output on the same payload.
func BenchmarkDecode(b *testing.B) {
	payload := thriftPayload(b, 100*kib)
	c, err := compress.New()
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	for _, codec := range benchCodecs {
		b.Run(compress.Name(codec), func(b *testing.B) {
			enc, err := c.Encode(codec, nil, payload)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(payload)))
			b.ReportAllocs()
			var dst []byte
			for b.Loop() {
				dst, err = c.Decode(codec, dst[:0], enc)
				if err != nil {
					b.Fatal(err)
				}
			}
			if !bytes.Equal(dst, payload) {
				b.Fatal("round trip differs")
			}
		})
	}
	b.Run("stdlib-zlib-default", func(b *testing.B) {
		var buf bytes.Buffer
		w := stdzlib.NewWriter(&buf)
		w.Write(payload)
		w.Close()
		enc := buf.Bytes()
		b.SetBytes(int64(len(payload)))
		b.ReportAllocs()
		var out bytes.Buffer
		r, err := stdzlib.NewReader(bytes.NewReader(enc))
		if err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			out.Reset()
			if err := r.(stdzlib.Resetter).Reset(bytes.NewReader(enc), nil); err != nil {
				b.Fatal(err)
			}
			if _, err := io.Copy(&out, r); err != nil {
				b.Fatal(err)
			}
		}
		if !bytes.Equal(out.Bytes(), payload) {
			b.Fatal("round trip differs")
		}
	})
}

func TestThriftPayloadIsAbout100KiB(t *testing.T) {
	p := thriftPayload(t, 100*kib)
	if len(p) < 100*kib || len(p) > 110*kib {
		t.Fatalf("payload is %d bytes", len(p))
	}
	c := newCodecs(t)
	for _, codec := range benchCodecs {
		enc, err := c.Encode(codec, nil, p)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d -> %d bytes (%.1fx)", compress.Name(codec), len(p), len(enc), float64(len(p))/float64(len(enc)))
	}
}

// BenchmarkEncodeParallel encodes from every processor at once through one
// Codecs, as a server's connections do: MB/s should grow with the processors
// (go test -bench EncodeParallel -cpu 1,2 ./compress), not stay at one
// encoder's pace.
func BenchmarkEncodeParallel(b *testing.B) {
	payload := thriftPayload(b, 100*kib)
	c, err := compress.New()
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	for _, codec := range []batch.Codec{batch.Codec_ZSTD, batch.Codec_GZIP} {
		b.Run(compress.Name(codec), func(b *testing.B) {
			b.SetBytes(int64(len(payload)))
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				var dst []byte
				for pb.Next() {
					var err error
					if dst, err = c.Encode(codec, dst[:0], payload); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkEncoderMemory reports the heap a new Codecs keeps, its encoder's
// buffers above all, after compressing one payload of each size at two levels:
// the figures New's comment quotes. Each sub-benchmark builds a fresh Codecs
// per iteration and reports the mean growth of the heap in use, after a
// collection, between before New and after its first Encode, while the Codecs
// is still alive.
//
//	go test -run XXX -bench EncoderMemory -benchtime 5x ./compress
func BenchmarkEncoderMemory(b *testing.B) {
	for _, level := range []zstd.EncoderLevel{zstd.SpeedFastest, zstd.SpeedDefault} {
		for _, size := range []int{17 << 10, 200 << 10} {
			payload := thriftPayload(b, size)
			b.Run(fmt.Sprintf("%v/%dKiB", level, size>>10), func(b *testing.B) {
				var grown int64
				for b.Loop() {
					before := heapInUse()
					c, err := compress.New(compress.WithZstdLevel(level))
					if err != nil {
						b.Fatal(err)
					}
					if _, err := c.Encode(batch.Codec_ZSTD, nil, payload); err != nil {
						b.Fatal(err)
					}
					grown += int64(heapInUse()) - int64(before)
					runtime.KeepAlive(c)
				}
				b.ReportMetric(float64(grown)/float64(b.N)/(1<<20), "MiB-kept")
			})
		}
	}
}

// heapInUse returns the bytes of heap in use after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}
