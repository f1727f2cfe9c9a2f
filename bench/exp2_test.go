package main

import (
	"context"
	"testing"

	"github.com/thriftbatch/thriftbatch/example_server/catalog"
	"github.com/thriftbatch/thriftbatch/example_server/store"
	"github.com/thriftbatch/thriftbatch/internal/wire"
)

func BenchmarkExpProductCodec(b *testing.B) {
	ctx := context.Background()
	h := store.New(100, 0)
	p, _ := h.GetProduct(ctx, 7)
	res := &catalog.CatalogGetProductResult{Success: p}
	c := wire.Get(wire.Compact)
	body, err := c.Encode(ctx, nil, res)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("%d bytes, tags %d", len(body), len(p.Tags))
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var r catalog.CatalogGetProductResult
			if err := c.Decode(ctx, body, &r); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encode", func(b *testing.B) {
		b.ReportAllocs()
		var dst []byte
		for b.Loop() {
			dst, _ = c.Encode(ctx, dst[:0], res)
		}
	})
}
