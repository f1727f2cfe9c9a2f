// Package store is the example catalog: products generated deterministically
// in memory, served through the catalog.Catalog interface with an optional
// simulated backend latency. The example server and the benchmarks serve it.
package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/thriftbatch/thriftbatch/example_server/catalog"
	"github.com/thriftbatch/thriftbatch/internal/latency"
)

// MaxSearchLimit caps the limit of search.
const MaxSearchLimit = 1000

// Handler implements catalog.Catalog over products kept in memory: products
// 1 to n at start (NewProduct), then whatever putProduct stores. Each call
// first waits for the simulated backend latency, if any. It is safe for
// concurrent use.
type Handler struct {
	latency time.Duration

	mu    sync.RWMutex
	byID  map[int64]entry
	ids   []int64 // byID's keys in ascending order, for search
	views atomic.Int64
}

// entry is a stored product. Stored products are never modified: putProduct
// replaces them.
type entry struct {
	product *catalog.Product
	name    string // the product's name in lower case, for search
}

var _ catalog.Catalog = (*Handler)(nil)

// New returns a handler whose catalog holds products 1 to n (none when n
// is 0 or less), and whose every call takes latency more.
func New(n int, latency time.Duration) *Handler {
	n = max(n, 0)
	h := &Handler{latency: latency, byID: make(map[int64]entry, n), ids: make([]int64, 0, n)}
	for id := range int64(n) {
		h.store(NewProduct(id + 1))
	}
	return h
}

// GetProduct returns product id, or raises NotFound.
func (h *Handler) GetProduct(ctx context.Context, id int64) (*catalog.Product, error) {
	if err := h.wait(ctx); err != nil {
		return nil, err
	}
	if p, ok := h.Lookup(id); ok {
		return p, nil
	}
	return nil, &catalog.NotFound{ID: id, Reason: "no product has this id"}
}

// GetProducts returns the products among ids that exist, in the order of ids.
func (h *Handler) GetProducts(ctx context.Context, ids []int64) ([]*catalog.Product, error) {
	if err := h.wait(ctx); err != nil {
		return nil, err
	}
	products := make([]*catalog.Product, 0, len(ids))
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, id := range ids {
		if e, ok := h.byID[id]; ok {
			products = append(products, e.product)
		}
	}
	return products, nil
}

// PutProduct stores a copy of product, replacing the product with its id.
// A product whose id is 0 or less is refused: ids start at 1. Its errors
// reach a Thrift client as a TApplicationException (INTERNAL_ERROR, the
// generated code's type for any error the IDL does not declare) whose
// message says what was wrong.
func (h *Handler) PutProduct(ctx context.Context, product *catalog.Product) error {
	if err := h.wait(ctx); err != nil {
		return err
	}
	if product == nil {
		return errors.New("putProduct: no product given")
	}
	if product.ID <= 0 {
		return fmt.Errorf("putProduct: product id %d refused: ids start at 1", product.ID)
	}
	p := *product
	p.Tags = slices.Clone(product.Tags)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.store(&p)
	return nil
}

// Search returns, in id order, up to limit products (at most MaxSearchLimit)
// whose name contains text, ignoring case. A limit of 0 or less finds none.
func (h *Handler) Search(ctx context.Context, text string, limit int32) ([]*catalog.Product, error) {
	if err := h.wait(ctx); err != nil {
		return nil, err
	}
	limit = min(limit, MaxSearchLimit)
	if limit <= 0 {
		return nil, nil
	}
	text = strings.ToLower(text)
	var found []*catalog.Product
	h.mu.RLock()
	defer h.mu.RUnlock()
	for _, id := range h.ids {
		if e := h.byID[id]; strings.Contains(e.name, text) {
			found = append(found, e.product)
			if len(found) == int(limit) {
				break
			}
		}
	}
	return found, nil
}

// CountProducts returns how many products the catalog holds.
func (h *Handler) CountProducts(ctx context.Context) (int64, error) {
	if err := h.wait(ctx); err != nil {
		return 0, err
	}
	h.mu.RLock()
	defer h.mu.RUnlock()
	return int64(len(h.byID)), nil
}

// RecordView counts a view; the id is not checked.
func (h *Handler) RecordView(ctx context.Context, _ int64) error {
	if err := h.wait(ctx); err != nil {
		return err
	}
	h.views.Add(1)
	return nil
}

// Views returns how many views RecordView has counted.
func (h *Handler) Views() int64 { return h.views.Load() }

// Lookup returns product id without the simulated latency: what a check of
// a reply compares against.
func (h *Handler) Lookup(id int64) (*catalog.Product, bool) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	e, ok := h.byID[id]
	return e.product, ok
}

// store adds or replaces p. The caller holds h.mu for writing, or is
// building h.
func (h *Handler) store(p *catalog.Product) {
	if _, ok := h.byID[p.ID]; !ok {
		i, _ := slices.BinarySearch(h.ids, p.ID)
		h.ids = slices.Insert(h.ids, i, p.ID)
	}
	h.byID[p.ID] = entry{product: p, name: strings.ToLower(p.Name)}
}

// wait waits for the simulated latency (latency.Wait: woken by the poller,
// as a reply from a real backend would be), or returns ctx's error if ctx
// ends first.
func (h *Handler) wait(ctx context.Context) error { return latency.Wait(ctx, h.latency) }
