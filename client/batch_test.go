package client

import (
	"testing"
	"unsafe"

	"github.com/thriftbatch/thriftbatch/example_server/catalog"
	"github.com/thriftbatch/thriftbatch/internal/wire"
)

func TestGrowMakesRoomForTheCalls(t *testing.T) {
	b := &Batch{enc: coder{kind: wire.Compact}}
	b.Grow(100)
	requests, calls := unsafe.SliceData(b.requests), unsafe.SliceData(b.calls)
	for i := range 100 {
		Add(b, "getProduct", &catalog.CatalogGetProductArgs{ID: int64(i)}, &catalog.CatalogGetProductResult{})
	}
	if unsafe.SliceData(b.requests) != requests || unsafe.SliceData(b.calls) != calls {
		t.Error("the lists of calls grew while adding as many calls as Grow made room for")
	}
	if b.Len() != 100 {
		t.Errorf("Len = %d after 100 calls", b.Len())
	}
}
