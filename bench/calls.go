package main

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/thriftbatch/thriftbatch/client"
	"github.com/thriftbatch/thriftbatch/example_server/catalog"
)

// ids returns n product ids from first, starting over at 1 after the
// catalog's last.
func ids(n, first int) []int64 {
	out := make([]int64, n)
	for i := range out {
		out[i] = int64((first-1+i)%products) + 1
	}
	return out
}

// checkProduct returns an error unless p is product id.
func checkProduct(id int64, p *catalog.Product) error {
	switch {
	case p == nil:
		return fmt.Errorf("no product for id %d", id)
	case p.ID != id:
		return fmt.Errorf("product %d for id %d", p.ID, id)
	}
	return nil
}

// sequential calls getProduct for each id in turn with the generated client.
func sequential(s *shop, ids []int64) way {
	return way{name: "one by one", calls: len(ids), run: func(ctx context.Context) error {
		for _, id := range ids {
			p, err := s.GetProduct(ctx, id)
			if err == nil {
				err = checkProduct(id, p)
			}
			if err != nil {
				return err
			}
		}
		return nil
	}}
}

// explicitBatch sends a getProduct call for each id as one batch on c.
func explicitBatch(c *client.Client, ids []int64) way {
	return way{name: "one batch", calls: len(ids), run: func(ctx context.Context) error { return inBatch(ctx, c, ids) }}
}

// inBatch sends a getProduct call for each id as one batch on c and checks
// the answers.
func inBatch(ctx context.Context, c *client.Client, ids []int64) error {
	b := c.NewBatch()
	b.Grow(len(ids))
	calls := make([]*client.Call[*catalog.CatalogGetProductResult], len(ids))
	for i, id := range ids {
		calls[i] = client.Add(b, "getProduct", &catalog.CatalogGetProductArgs{ID: id}, &catalog.CatalogGetProductResult{})
	}
	if err := b.Execute(ctx); err != nil {
		return err
	}
	for i, call := range calls {
		err := call.Err()
		if err == nil {
			err = checkProduct(ids[i], call.Result.Success)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// batches sends ids in batches of size on c, one after the other.
func batches(c *client.Client, ids []int64, size int) way {
	return way{name: fmt.Sprintf("batches of %d", size), calls: len(ids), run: func(ctx context.Context) error {
		for lo := 0; lo < len(ids); lo += size {
			if err := inBatch(ctx, c, ids[lo:min(lo+size, len(ids))]); err != nil {
				return err
			}
		}
		return nil
	}}
}

// bulk calls the hand-written getProducts once for all ids.
func bulk(s *shop, ids []int64) way {
	return way{name: "getProducts", calls: len(ids), run: func(ctx context.Context) error {
		products, err := s.GetProducts(ctx, ids)
		if err != nil {
			return err
		}
		if len(products) != len(ids) {
			return fmt.Errorf("getProducts: %d products for %d ids", len(products), len(ids))
		}
		for i, id := range ids {
			if err := checkProduct(id, products[i]); err != nil {
				return err
			}
		}
		return nil
	}}
}

// parallelConns makes one getProduct call per id, each from a goroutine of
// its own on a connection of its own (shops[i] for ids[i]), and waits for
// all of them.
func parallelConns(shops []*shop, ids []int64) way {
	return way{name: "a connection per call", calls: len(ids), run: func(ctx context.Context) error {
		return fanOut(ids, func(i int, id int64) (*catalog.Product, error) { return shops[i].GetProduct(ctx, id) })
	}}
}

// automatic makes one getProduct call per id, each from a goroutine of its
// own with a generated client of its own over the Auto, which batches the
// concurrent calls.
func automatic(a *client.Auto, ids []int64) way {
	return way{name: "automatic batching", calls: len(ids), run: func(ctx context.Context) error {
		return fanOut(ids, func(_ int, id int64) (*catalog.Product, error) {
			return catalog.NewCatalogClient(a).GetProduct(ctx, id)
		})
	}}
}

// fanOut runs get for every id on a goroutine of its own, waits for all of
// them, and checks the products.
func fanOut(ids []int64, get func(i int, id int64) (*catalog.Product, error)) error {
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Go(func() {
			p, err := get(i, id)
			if err == nil {
				err = checkProduct(id, p)
			}
			errs[i] = err
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}
