package tests

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/apache/thrift/lib/go/thrift"

	"github.com/thriftbatch/thriftbatch/dispatcher"
	"github.com/thriftbatch/thriftbatch/tests/testsvc"
)

// handler implements testsvc.Test and records what it was asked to do, so
// that tests can check what ran, in which order and with what context,
// without timing.
type handler struct {
	// nest sends a batch of n echo calls to addr and returns how many
	// answered; set by tests that need it.
	nest func(ctx context.Context, addr string, n int) (int, error)

	// Set before the server starts, read-only afterwards:

	// started, when set, receives the tag of every sleepy call as it
	// starts. It should be buffered.
	started chan int64
	// gate, when set, holds every sleepy call until it is closed or the
	// call's context ends.
	gate chan struct{}
	// barrier, when set, holds every sleepy call until all its parties
	// have arrived or the call's context ends.
	barrier *barrier

	mu        sync.Mutex
	notes     []string
	echoes    []string
	secrets   int
	booms     int
	events    []string        // "start <tag>" and "end <tag>" of sleepy calls, in order
	active    int             // sleepy calls running now
	maxActive int             // the most sleepy calls that ran at once
	deadlines []time.Duration // for each sleepy call, its context's time left at start, or noDeadline
}

var _ testsvc.Test = (*handler)(nil)

// noDeadline is what the handler records for a context without a deadline.
const noDeadline = time.Duration(math.MaxInt64)

// headerPrefix makes echo answer with a THeader header read from its
// context: "header:<key>" returns "<key>=<value> listed=<bool>".
const headerPrefix = "header:"

func (h *handler) Echo(ctx context.Context, text string) (string, error) {
	h.mu.Lock()
	h.echoes = append(h.echoes, text)
	h.mu.Unlock()
	if key, ok := strings.CutPrefix(text, headerPrefix); ok {
		v, found := thrift.GetHeader(ctx, key)
		if !found {
			v = "<absent>"
		}
		return fmt.Sprintf("%s=%s listed=%v", key, v, slices.Contains(thrift.GetReadHeaderList(ctx), key)), nil
	}
	return text, nil
}

func (h *handler) Divide(_ context.Context, a, b int32) (int32, error) {
	if b == 0 {
		return 0, &testsvc.DivideByZero{Why: fmt.Sprintf("%d / 0", a)}
	}
	return a / b, nil
}

func (h *handler) Sleepy(ctx context.Context, millis int32, tag int64) (int64, error) {
	h.mu.Lock()
	h.events = append(h.events, "start "+strconv.FormatInt(tag, 10))
	h.active++
	h.maxActive = max(h.maxActive, h.active)
	left := noDeadline
	if dl, ok := ctx.Deadline(); ok {
		left = time.Until(dl)
	}
	h.deadlines = append(h.deadlines, left)
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		h.active--
		h.events = append(h.events, "end "+strconv.FormatInt(tag, 10))
		h.mu.Unlock()
	}()

	if h.started != nil {
		select {
		case h.started <- tag:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	if h.gate != nil {
		select {
		case <-h.gate:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	if h.barrier != nil {
		if err := h.barrier.wait(ctx); err != nil {
			return 0, err
		}
	}
	timer := time.NewTimer(time.Duration(millis) * time.Millisecond)
	defer timer.Stop()
	select {
	case <-timer.C:
		return tag, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (h *handler) Boom(context.Context) error {
	h.mu.Lock()
	h.booms++
	h.mu.Unlock()
	panic("boom: secret internal detail")
}

func (h *handler) Failing(context.Context) error { return errors.New("failing on purpose") }

func (h *handler) Note(_ context.Context, text string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.notes = append(h.notes, text)
	return nil
}

func (h *handler) WhereAmI(ctx context.Context) (int32, error) {
	c, ok := dispatcher.CallFromContext(ctx)
	if !ok {
		return -1, nil
	}
	return int32(c.Index), nil
}

func (h *handler) Items(_ context.Context, count int32) ([]*testsvc.Item, error) {
	return makeItems(count), nil
}

// makeItems returns what items(count) answers.
func makeItems(count int32) []*testsvc.Item {
	items := make([]*testsvc.Item, count)
	for i := range items {
		items[i] = &testsvc.Item{Key: int64(i), Label: "item number " + strconv.Itoa(i), Tags: []string{"alpha", "beta", strconv.Itoa(i % 7)}}
	}
	return items
}

func (h *handler) Nested(ctx context.Context, addr string, calls int32) (int32, error) {
	if h.nest == nil {
		return 0, errors.New("nested: no nest function set")
	}
	n, err := h.nest(ctx, addr, int(calls))
	return int32(n), err
}

func (h *handler) Secret(context.Context) (string, error) {
	h.mu.Lock()
	h.secrets++
	h.mu.Unlock()
	return "the secret", nil
}

// snapshot returns copies of what the handler recorded.
func (h *handler) snapshot() (notes, echoes, events []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.notes), slices.Clone(h.echoes), slices.Clone(h.events)
}

func (h *handler) counts() (secrets, booms, maxActive int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.secrets, h.booms, h.maxActive
}

func (h *handler) sleepDeadlines() []time.Duration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.deadlines)
}

// barrier releases its waiters once n of them have arrived.
type barrier struct {
	n       int
	mu      sync.Mutex
	arrived int
	all     chan struct{}
}

func newBarrier(n int) *barrier { return &barrier{n: n, all: make(chan struct{})} }

func (b *barrier) wait(ctx context.Context) error {
	b.mu.Lock()
	b.arrived++
	if b.arrived == b.n {
		close(b.all)
	}
	b.mu.Unlock()
	select {
	case <-b.all:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
