package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/thriftbatch/thriftbatch/client"
	"github.com/thriftbatch/thriftbatch/example_server/catalog"
	"github.com/thriftbatch/thriftbatch/example_server/store"
	"github.com/thriftbatch/thriftbatch/idl/batch"
)

// Sizes of the demo.
const (
	// reps is how many timed runs each row takes the median of, after one
	// warm-up run.
	reps = 5
	// missingIDs is how many ids beyond the catalog each way of calling
	// asks for.
	missingIDs = 3
)

// runDemo starts the catalog server in-process (on a free loopback port
// unless -addr was given), makes cfg.demoCalls getProduct calls against it
// in each of four ways over loopback, sends one batch of cfg.demoBatch calls
// with and without compression, and writes what it measured to out as
// tables. It checks every answer, and returns an error if one is wrong. The
// server is stopped when it returns.
func runDemo(ctx context.Context, cfg *config, log zerolog.Logger, out io.Writer) (err error) {
	addr := "127.0.0.1:0"
	if cfg.addrSet {
		addr = cfg.addr
	}
	h := store.New(cfg.products, cfg.latency)
	s, err := startServer(cfg, addr, h, log)
	if err != nil {
		return err
	}
	defer func() {
		cut, stopErr := s.stop()
		if !cut.none() {
			stopErr = errors.Join(stopErr, fmt.Errorf("stop the server: %s", cut))
		}
		err = errors.Join(err, stopErr)
	}()
	dial, err := newDialer(s.addr.String(), cfg.protocol, cfg.transport)
	if err != nil {
		return err
	}
	d := &demo{cfg: cfg, catalog: h, dial: dial}
	return d.run(ctx, out)
}

// demo is one run of the demo.
type demo struct {
	cfg     *config
	catalog *store.Handler // the server's, to check answers against
	dial    *dialer
	checked atomic.Int64 // products found right
}

// way is a way to make getProduct calls: it returns the product or the
// error of each id, in the order of ids.
type way func(ctx context.Context, ids []int64) ([]*catalog.Product, []error)

// timing is what one row measured.
type timing struct {
	name           string
	calls          int
	took           time.Duration
	trips          int64 // round trips
	sent, received int64 // bytes on the wire
}

func (d *demo) run(ctx context.Context, out io.Writer) error {
	c, err := d.connect(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	ids := cyclingIDs(d.cfg.demoCalls, d.cfg.products)
	timings, err := d.measure(ctx, ids, []row{
		{"one by one, one connection", c.oneByOne},
		{"one explicit batch", c.explicitBatch},
		{"automatic batching, a goroutine per call", c.automatic},
		{"getProducts, the bulk method", c.bulk},
	})
	if err != nil {
		return err
	}
	wire, err := d.wire(ctx)
	if err != nil {
		return err
	}
	raised, asked, err := d.missing(ctx, c)
	if err != nil {
		return err
	}
	if _, err := io.WriteString(out, d.report(timings, wire, raised, asked)); err != nil {
		return err
	}
	if raised != asked {
		return fmt.Errorf("%d of %d calls for ids beyond the catalog did not raise NotFound", asked-raised, asked)
	}
	return c.Close()
}

// row is one row of a table: a way of calling, and its name.
type row struct {
	name string
	get  way
}

// wire measures one batch of cfg.demoBatch calls without compression and
// with zstd both ways, each on a new connection.
func (d *demo) wire(ctx context.Context) (_ []timing, err error) {
	plain, err := d.dial.client(ctx, uncompressed...)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	defer func() { err = errors.Join(err, plain.Close()) }()
	zstd, err := d.dial.client(ctx, zstdBothWays...)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	defer func() { err = errors.Join(err, zstd.Close()) }()
	return d.measure(ctx, cyclingIDs(d.cfg.demoBatch, d.cfg.products), []row{
		{"no compression", batchOn(plain)},
		{"zstd both ways", batchOn(zstd)},
	})
}

// measure runs every row on ids once to warm up, then reps rounds of every
// row in turn, so that a busy moment of the machine slows all rows alike,
// and checks every answer. It returns each row's run of median duration,
// with the bytes of its warm-up run: on a transport that compresses a
// stream (zlib), later runs repeat what the stream has seen and take fewer.
func (d *demo) measure(ctx context.Context, ids []int64, rows []row) ([]timing, error) {
	runs := make([][]timing, len(rows)) // each row's runs, warm-up first
	for range reps + 1 {
		for i, r := range rows {
			t, err := d.runOnce(ctx, ids, r)
			if err != nil {
				return nil, err
			}
			runs[i] = append(runs[i], t)
		}
	}
	timings := make([]timing, len(rows))
	for i, rs := range runs {
		warmUp, timed := rs[0], rs[1:]
		slices.SortFunc(timed, func(a, b timing) int { return cmp.Compare(a.took, b.took) })
		timings[i] = timed[len(timed)/2]
		timings[i].sent, timings[i].received = warmUp.sent, warmUp.received
	}
	return timings, nil
}

// runOnce gets ids the row's way, checks the answers, and returns what it
// took.
func (d *demo) runOnce(ctx context.Context, ids []int64, r row) (timing, error) {
	trips, read, written := d.dial.trips.Load(), d.dial.bytes.read.Load(), d.dial.bytes.written.Load()
	start := time.Now()
	products, errs := r.get(ctx, ids)
	took := time.Since(start)
	if err := d.check(ids, products, errs); err != nil {
		return timing{}, fmt.Errorf("%s: %w", r.name, err)
	}
	return timing{
		name: r.name, calls: len(ids), took: took, trips: d.dial.trips.Load() - trips,
		sent: d.dial.bytes.written.Load() - written, received: d.dial.bytes.read.Load() - read,
	}, nil
}

// check returns the first error of errs, or an error unless products holds,
// for each of ids in order, the catalog's product with that id.
func (d *demo) check(ids []int64, products []*catalog.Product, errs []error) error {
	if err := cmp.Or(errs...); err != nil {
		return err
	}
	if len(products) != len(ids) {
		return fmt.Errorf("%d products came back for %d ids", len(products), len(ids))
	}
	for i, id := range ids {
		want, _ := d.catalog.Lookup(id)
		switch got := products[i]; {
		case got == nil:
			return fmt.Errorf("no product came back for id %d", id)
		case got.ID != id:
			return fmt.Errorf("product %d came back for id %d", got.ID, id)
		case !got.Equals(want):
			return fmt.Errorf("product %d came back different from the catalog's: %v", id, got)
		}
	}
	d.checked.Add(int64(len(ids)))
	return nil
}

// missing asks for ids beyond the catalog one by one, in an explicit batch
// and through automatic batching, and returns how many calls raised
// NotFound for the id they asked for, of how many. Any other error is
// returned.
func (d *demo) missing(ctx context.Context, c *clients) (raised, asked int, err error) {
	ids := make([]int64, missingIDs)
	for i := range ids {
		ids[i] = int64(d.cfg.products + 1 + i)
	}
	for _, get := range []way{c.oneByOne, c.explicitBatch, c.automatic} {
		_, errs := get(ctx, ids)
		for i, err := range errs {
			var notFound *catalog.NotFound
			switch {
			case errors.As(err, &notFound) && notFound.ID == ids[i]:
				raised++
			case err != nil:
				return 0, 0, err
			}
		}
		asked += len(ids)
	}
	return raised, asked, nil
}

// report returns the demo's tables.
func (d *demo) report(timings, wire []timing, raised, asked int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "thriftbatch demo: catalog of %s products on %s, %s protocol, %s transport",
		thousands(int64(d.cfg.products)), d.dial.addr, d.cfg.protocol, d.cfg.transport)
	if d.cfg.latency > 0 {
		fmt.Fprintf(&b, ", %v simulated latency per handler call", d.cfg.latency)
	}
	fmt.Fprintf(&b, "\nEach time is the median of %d runs after a warm-up run; bytes are the warm-up run's.\n\n", reps)

	rows := [][]string{{thousands(int64(timings[0].calls)) + " × getProduct, uncompressed", "total", "per call", "calls/s", "round trips", "speed-up"}}
	for _, t := range timings {
		rows = append(rows, []string{
			t.name, formatDuration(t.took), formatDuration(t.took / time.Duration(t.calls)),
			thousands(int64(float64(t.calls) / t.took.Seconds())), thousands(t.trips),
			fmt.Sprintf("%.1f×", timings[0].took.Seconds()/t.took.Seconds()),
		})
	}
	writeTable(&b, rows)

	b.WriteByte('\n')
	rows = [][]string{{"one batch of " + thousands(int64(wire[0].calls)) + " × getProduct", "bytes sent", "received", "total", "time", ""}}
	for i, w := range wire {
		ratio := ""
		if i > 0 {
			ratio = compareBytes(w.sent+w.received, wire[0].sent+wire[0].received)
		}
		rows = append(rows, []string{w.name, thousands(w.sent), thousands(w.received), thousands(w.sent + w.received), formatDuration(w.took), ratio})
	}
	writeTable(&b, rows)

	fmt.Fprintf(&b, "\nChecked %s products: each was the catalog's product with the id asked for.\n", thousands(d.checked.Load()))
	fmt.Fprintf(&b, "%d of %d calls for ids beyond %s raised NotFound (%d one by one, %d in a batch, %d automatic).\n",
		raised, asked, thousands(int64(d.cfg.products)), missingIDs, missingIDs, missingIDs)
	return b.String()
}

// compareBytes says how n bytes compare with base: "4.9× fewer bytes", or
// "about the same size" when the ratio rounds to 1.0×.
func compareBytes(n, base int64) string {
	ratio, than := float64(base)/float64(n), "fewer"
	if n > base {
		ratio, than = float64(n)/float64(base), "more"
	}
	if r := fmt.Sprintf("%.1f", ratio); r != "1.0" {
		return r + "× " + than + " bytes"
	}
	return "about the same size"
}

// cyclingIDs returns n ids from 1, starting over after products.
func cyclingIDs(n, products int) []int64 {
	ids := make([]int64, n)
	for i := range ids {
		ids[i] = int64(i%products) + 1
	}
	return ids
}

// clients are the demo's clients. The timed rows send and accept no
// compression, so that they compare batching alone.
type clients struct {
	conn  *conn                  // the generated client's connection
	shop  *catalog.CatalogClient // one round trip per call
	batch *client.Client         // explicit batches, on a connection of its own
	auto  *client.Auto           // automatic batching, on up to 4 connections
}

// Client options of the timed rows, and of the zstd row.
var (
	uncompressed = []client.Option{client.WithAcceptCodecs(), client.WithRequestCompression(batch.Codec_NONE, 0)}
	zstdBothWays = []client.Option{client.WithAcceptCodecs(batch.Codec_ZSTD), client.WithRequestCompression(batch.Codec_ZSTD, 0)}
)

// connect opens the clients.
func (d *demo) connect(ctx context.Context) (_ *clients, err error) {
	c := &clients{}
	defer func() {
		if err != nil {
			err = errors.Join(fmt.Errorf("connect: %w", err), c.Close())
		}
	}()
	if c.conn, err = d.dial.open(ctx); err != nil {
		return nil, err
	}
	c.shop = catalog.NewCatalogClient(c.conn.tc)
	if c.batch, err = d.dial.client(ctx, uncompressed...); err != nil {
		return nil, err
	}
	c.auto, err = client.NewAuto(ctx, func(ctx context.Context) (*client.Client, error) {
		return d.dial.client(ctx, uncompressed...)
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Close closes the clients and their connections. Closing again does
// nothing.
func (c *clients) Close() error {
	var errs []error
	if c.auto != nil {
		errs = append(errs, c.auto.Close())
		c.auto = nil
	}
	if c.batch != nil {
		errs = append(errs, c.batch.Close())
		c.batch = nil
	}
	if c.conn != nil {
		errs = append(errs, c.conn.proto.Transport().Close())
		c.conn = nil
	}
	return errors.Join(errs...)
}

// oneByOne calls getProduct for each id in turn with the generated client.
func (c *clients) oneByOne(ctx context.Context, ids []int64) ([]*catalog.Product, []error) {
	products, errs := make([]*catalog.Product, len(ids)), make([]error, len(ids))
	for i, id := range ids {
		products[i], errs[i] = getProduct(ctx, c.shop, id)
	}
	return products, errs
}

// explicitBatch sends the calls as one explicit batch.
func (c *clients) explicitBatch(ctx context.Context, ids []int64) ([]*catalog.Product, []error) {
	return inBatch(ctx, c.batch, ids)
}

// batchOn returns the way that sends the calls as one explicit batch on c.
func batchOn(c *client.Client) way {
	return func(ctx context.Context, ids []int64) ([]*catalog.Product, []error) { return inBatch(ctx, c, ids) }
}

// automatic calls getProduct for each id from a goroutine of its own, each
// with a generated client over the Auto, which batches the concurrent calls.
func (c *clients) automatic(ctx context.Context, ids []int64) ([]*catalog.Product, []error) {
	products, errs := make([]*catalog.Product, len(ids)), make([]error, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Go(func() { products[i], errs[i] = getProduct(ctx, catalog.NewCatalogClient(c.auto), id) })
	}
	wg.Wait()
	return products, errs
}

// bulk calls getProducts once for all ids.
func (c *clients) bulk(ctx context.Context, ids []int64) ([]*catalog.Product, []error) {
	products, err := c.shop.GetProducts(ctx, ids)
	if err != nil {
		return nil, []error{fmt.Errorf("getProducts: %w", err)}
	}
	return products, nil
}

// getProduct calls getProduct(id) with a generated client.
func getProduct(ctx context.Context, shop *catalog.CatalogClient, id int64) (*catalog.Product, error) {
	p, err := shop.GetProduct(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("getProduct(%d): %w", id, err)
	}
	return p, nil
}

// inBatch sends a getProduct call for each id in one explicit batch on c.
func inBatch(ctx context.Context, c *client.Client, ids []int64) ([]*catalog.Product, []error) {
	b := c.NewBatch()
	b.Grow(len(ids))
	calls := make([]*client.Call[*catalog.CatalogGetProductResult], len(ids))
	for i, id := range ids {
		calls[i] = client.Add(b, "getProduct", &catalog.CatalogGetProductArgs{ID: id}, &catalog.CatalogGetProductResult{})
	}
	if err := b.Execute(ctx); err != nil {
		return nil, []error{fmt.Errorf("executeBatch of %d getProduct calls: %w", len(ids), err)}
	}
	products, errs := make([]*catalog.Product, len(ids)), make([]error, len(ids))
	for i, call := range calls {
		if err := call.Err(); err != nil {
			errs[i] = fmt.Errorf("getProduct(%d) in a batch: %w", ids[i], err)
			continue
		}
		products[i] = call.Result.Success
	}
	return products, errs
}
