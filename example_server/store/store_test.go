package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/thriftbatch/thriftbatch/example_server/catalog"
)

// TestMain fails the package when a test leaves a goroutine behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestProductsAreAPureFunctionOfTheirID(t *testing.T) {
	ctx := context.Background()
	first, err := New(100, 0).GetProduct(ctx, 42)
	if err != nil {
		t.Fatal(err)
	}
	again, err := New(100, 0).GetProduct(ctx, 42)
	if err != nil {
		t.Fatal(err)
	}
	if !first.Equals(again) {
		t.Errorf("product 42 differs between two catalogs:\n%v\n%v", first, again)
	}
}

func TestProductsLookReal(t *testing.T) {
	names := map[string]bool{}
	for id := range int64(200) {
		p := NewProduct(id + 1)
		names[p.Name] = true
		switch {
		case p.ID != id+1:
			t.Errorf("product %d has id %d", id+1, p.ID)
		case len(strings.Fields(p.Name)) < 4:
			t.Errorf("product %d: name %q is not brand, adjective, material and kind", p.ID, p.Name)
		case !strings.HasSuffix(p.Description, ".") || len(p.Description) < 40:
			t.Errorf("product %d: description %q is not a sentence or two", p.ID, p.Description)
		case p.PriceCents < 100 || p.Currency != "EUR":
			t.Errorf("product %d: price %d %s", p.ID, p.PriceCents, p.Currency)
		case len(p.Tags) < 2 || len(p.Tags) > 4:
			t.Errorf("product %d: %d tags %v, want 2 to 4", p.ID, len(p.Tags), p.Tags)
		case p.Stock < 0:
			t.Errorf("product %d: stock %d", p.ID, p.Stock)
		}
	}
	if len(names) < 150 {
		t.Errorf("200 products have only %d names", len(names))
	}
}

func TestGetProductRaisesNotFoundOutsideTheCatalog(t *testing.T) {
	h := New(10, 0)
	for _, id := range []int64{0, -1, 11, 1 << 40} {
		_, err := h.GetProduct(context.Background(), id)
		var notFound *catalog.NotFound
		if !errors.As(err, &notFound) || notFound.ID != id || notFound.Reason == "" {
			t.Errorf("GetProduct(%d) = %v, want NotFound for id %d with a reason", id, err, id)
		}
	}
}

func TestGetProductsReturnsThoseThatExistInTheOrderAsked(t *testing.T) {
	products, err := New(10, 0).GetProducts(context.Background(), []int64{7, 200, 3, 7, -1, 1})
	if err != nil {
		t.Fatal(err)
	}
	var got []int64
	for _, p := range products {
		got = append(got, p.ID)
	}
	if want := []int64{7, 3, 7, 1}; !slices.Equal(got, want) {
		t.Errorf("GetProducts returned ids %v, want %v", got, want)
	}
}

func TestPutProductStoresWhatGetProductThenReturns(t *testing.T) {
	ctx := context.Background()
	h := New(10, 0)
	tests := []struct {
		name  string
		id    int64
		count int64
	}{
		{"a new id adds a product", 500, 11},
		{"an existing id replaces its product", 3, 11},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			put := &catalog.Product{ID: tt.id, Name: "Test Kettle", PriceCents: 1999, Currency: "EUR", Tags: []string{"kitchen", "new"}}
			if err := h.PutProduct(ctx, put); err != nil {
				t.Fatal(err)
			}
			put.Tags[0] = "changed after the call" // the catalog keeps its own copy
			got, err := h.GetProduct(ctx, tt.id)
			if err != nil {
				t.Fatal(err)
			}
			if got.Name != "Test Kettle" || got.Tags[0] != "kitchen" {
				t.Errorf("GetProduct(%d) = %v after putProduct", tt.id, got)
			}
			if n, _ := h.CountProducts(ctx); n != tt.count {
				t.Errorf("CountProducts = %d, want %d", n, tt.count)
			}
		})
	}
	if err := h.PutProduct(ctx, nil); err == nil {
		t.Error("PutProduct(nil) succeeded")
	}
}

func TestSearchMatchesNamesIgnoringCaseInIDOrderUpToTheLimit(t *testing.T) {
	ctx := context.Background()
	h := New(1500, 0)
	word := strings.Fields(NewProduct(1).Name)[0] // the brand of product 1
	found, err := h.Search(ctx, strings.ToUpper(word), 5)
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 5 || found[0].ID != 1 {
		t.Fatalf("Search(%q, 5) found %d products starting with %v, want 5 starting with product 1", word, len(found), found)
	}
	for i, p := range found {
		if !strings.Contains(p.Name, word) || i > 0 && p.ID <= found[i-1].ID {
			t.Errorf("result %d: product %d %q (not a match, or out of id order)", i, p.ID, p.Name)
		}
	}
	for _, tt := range []struct {
		limit int32
		want  int
	}{{0, 0}, {-3, 0}, {5000, MaxSearchLimit}} {
		if found, _ := h.Search(ctx, "", tt.limit); len(found) != tt.want {
			t.Errorf("Search(\"\", %d) found %d products, want %d", tt.limit, len(found), tt.want)
		}
	}
}

func TestRecordViewCounts(t *testing.T) {
	h := New(1, 0)
	for range 3 {
		if err := h.RecordView(context.Background(), 1); err != nil {
			t.Fatal(err)
		}
	}
	if got := h.Views(); got != 3 {
		t.Errorf("Views = %d after 3 views", got)
	}
}

func TestLatency(t *testing.T) {
	t.Run("a call waits for it", func(t *testing.T) {
		start := time.Now()
		if _, err := New(1, 20*time.Millisecond).GetProduct(context.Background(), 1); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took < 20*time.Millisecond {
			t.Errorf("GetProduct took %v with 20ms latency", took)
		}
	})
	t.Run("a call returns ctx's error when ctx ends first", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := New(1, time.Hour).GetProduct(ctx, 1)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("GetProduct = %v, want context.DeadlineExceeded", err)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("GetProduct took %v after its ctx ended", took)
		}
	})
}

func TestPutProductRefusesIDsBelowOne(t *testing.T) {
	ctx := context.Background()
	h := New(10, 0)
	for _, id := range []int64{0, -1, -1 << 40} {
		err := h.PutProduct(ctx, &catalog.Product{ID: id, Name: "Test Kettle"})
		if err == nil || !strings.Contains(err.Error(), "ids start at 1") || !strings.Contains(err.Error(), fmt.Sprint(id)) {
			t.Errorf("PutProduct(id %d) = %v, want an error naming the id and saying ids start at 1", id, err)
		}
		if _, ok := h.Lookup(id); ok {
			t.Errorf("product %d stored", id)
		}
	}
	if n, _ := h.CountProducts(ctx); n != 10 {
		t.Errorf("CountProducts = %d after refused puts, want 10", n)
	}
}

func TestNewWithNoProductsOrFewer(t *testing.T) {
	for _, n := range []int{0, -1} {
		if got, _ := New(n, 0).CountProducts(context.Background()); got != 0 {
			t.Errorf("New(%d, 0) holds %d products, want 0", n, got)
		}
	}
}
