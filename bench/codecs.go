package main

import (
	"bytes"
	"compress/zlib"
	"context"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"

	"github.com/thriftbatch/thriftbatch/compress"
	"github.com/thriftbatch/thriftbatch/example_server/catalog"
	"github.com/thriftbatch/thriftbatch/example_server/store"
	"github.com/thriftbatch/thriftbatch/idl/batch"
	"github.com/thriftbatch/thriftbatch/internal/wire"
)

// codecs compresses one encoded BatchResponse with zstd, the standard
// library's zlib and s2, round by round, and compares speed and size.
func codecs(ctx context.Context, e *env) ([]figure, error) {
	raw, err := batchResponse(ctx, e.plan.codecReplies)
	if err != nil {
		return nil, err
	}
	cs, err := compress.New()
	if err != nil {
		return nil, err
	}
	e.open = append(e.open, closerFunc(func() error { cs.Close(); return nil }))
	level3, err := compress.New(compress.WithZstdLevel(zstd.SpeedDefault))
	if err != nil {
		return nil, err
	}
	e.open = append(e.open, closerFunc(func() error { level3.Close(); return nil }))
	better, err := compress.New(compress.WithZstdLevel(zstd.SpeedBetterCompression))
	if err != nil {
		return nil, err
	}
	e.open = append(e.open, closerFunc(func() error { better.Close(); return nil }))
	var zstdOut, s2Out, level3Out, betterOut []byte
	var zlibOut bytes.Buffer
	zw := zlib.NewWriter(&zlibOut)
	ways := []way{
		{name: "zstd", run: func(context.Context) (err error) {
			zstdOut, err = cs.Encode(batch.Codec_ZSTD, zstdOut[:0], raw)
			return err
		}},
		{name: "zstd level 3", run: func(context.Context) (err error) {
			level3Out, err = level3.Encode(batch.Codec_ZSTD, level3Out[:0], raw)
			return err
		}},
		{name: "zstd better", run: func(context.Context) (err error) {
			betterOut, err = better.Encode(batch.Codec_ZSTD, betterOut[:0], raw)
			return err
		}},
		{name: "zlib", run: func(context.Context) error {
			zlibOut.Reset()
			zw.Reset(&zlibOut)
			if _, err := zw.Write(raw); err != nil {
				return err
			}
			return zw.Close()
		}},
		{name: "s2", run: func(context.Context) (err error) {
			s2Out, err = cs.Encode(batch.Codec_S2, s2Out[:0], raw)
			return err
		}},
	}
	t, err := interleave(ctx, e.plan.codecRounds, ways...)
	if err != nil {
		return nil, err
	}
	if err := roundTrips(cs, raw, zstdOut, level3Out, betterOut, s2Out, zlibOut.Bytes()); err != nil {
		return nil, err
	}
	fastest, l3, bt, zl, s2 := t[0], t[1], t[2], t[3], t[4]
	speed := func(t timed) string {
		return fmt.Sprintf("%s %s MB/s (%s)", t.name, number(float64(len(raw))/t.median.Seconds()/1e6), duration(t.median))
	}
	size := func(name string, out []byte) string {
		return fmt.Sprintf("%s %s bytes ÷ zlib %s bytes, of %s (s2: %s)", name,
			thousands(int64(len(out))), thousands(int64(zlibOut.Len())), thousands(int64(len(raw))), thousands(int64(len(s2Out))))
	}
	sizeRatio := func(out []byte) float64 { return float64(len(out)) / float64(zlibOut.Len()) }
	return []figure{
		{key: "zstd_speed_vs_stdlib_zlib", value: zl.median.Seconds() / fastest.median.Seconds(), unit: "×", detail: speed(fastest) + " ÷ " + speed(zl)},
		{key: "zstd_size_vs_stdlib_zlib", value: sizeRatio(zstdOut), unit: "×", detail: size("zstd", zstdOut)},
		{key: "s2_speed_vs_stdlib_zlib", value: zl.median.Seconds() / s2.median.Seconds(), unit: "×", detail: speed(s2) + " ÷ " + speed(zl)},
		{key: "zstd_level3_speed_vs_stdlib_zlib", value: zl.median.Seconds() / l3.median.Seconds(), unit: "×", detail: speed(l3) + " ÷ " + speed(zl)},
		{key: "zstd_level3_size_vs_stdlib_zlib", value: sizeRatio(level3Out), unit: "×", detail: size("zstd level 3", level3Out)},
		{key: "zstd_better_speed_vs_stdlib_zlib", value: zl.median.Seconds() / bt.median.Seconds(), unit: "×", detail: speed(bt) + " ÷ " + speed(zl)},
		{key: "zstd_better_size_vs_stdlib_zlib", value: sizeRatio(betterOut), unit: "×", detail: size("zstd better", betterOut)},
	}, nil
}

// batchResponse returns a BatchResponse of n getProduct replies (products 1
// to n), encoded with the compact protocol as the processor encodes it
// before compressing.
func batchResponse(ctx context.Context, n int) ([]byte, error) {
	h := store.New(products, 0)
	resp := &batch.BatchResponse{Responses: make([]*batch.Response, n)}
	for i, id := range ids(n, 1) {
		p, _ := h.Lookup(id)
		reply, err := wire.Encode(ctx, wire.Compact, nil, &catalog.CatalogGetProductResult{Success: p})
		if err != nil {
			return nil, err
		}
		resp.Responses[i] = &batch.Response{Reply: reply}
	}
	return wire.Encode(ctx, wire.Compact, nil, resp)
}

// roundTrips checks that each compressed payload decodes to raw.
func roundTrips(cs *compress.Codecs, raw, zstdOut, level3Out, betterOut, s2Out, zlibOut []byte) error {
	for _, p := range []struct {
		codec batch.Codec
		data  []byte
	}{{batch.Codec_ZSTD, zstdOut}, {batch.Codec_ZSTD, level3Out}, {batch.Codec_ZSTD, betterOut}, {batch.Codec_S2, s2Out}} {
		out, err := cs.Decode(p.codec, nil, p.data)
		if err != nil || !bytes.Equal(out, raw) {
			return fmt.Errorf("%v does not decode to its input: %v", p.codec, err)
		}
	}
	r, err := zlib.NewReader(bytes.NewReader(zlibOut))
	if err != nil {
		return err
	}
	out, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(out, raw) {
		return fmt.Errorf("zlib does not decode to its input: %v", err)
	}
	return r.Close()
}
