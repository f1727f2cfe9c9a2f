package dispatcher_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/thriftbatch/thriftbatch/dispatcher"
	"github.com/thriftbatch/thriftbatch/tests/testsvc"
)

// Every test closes its pool. IgnoreCurrent leaves out the goroutines of the
// default pool ants builds when it is imported, which no test owns.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m, goleak.IgnoreCurrent()) }

// handler implements testsvc.Test and records what it was asked.
type handler struct {
	calls   sync.Map // method name -> *atomic.Int64
	running atomic.Int64
	maxRun  atomic.Int64

	mu    sync.Mutex
	order []int64 // sleepy tags in the order the calls started
	notes []string

	// block is what sleepy waits on, ignoring its context, when millis is
	// negative: a handler that never returns until the test ends.
	block chan struct{}
}

var _ testsvc.Test = (*handler)(nil)

func newHandler(t testing.TB) *handler {
	h := &handler{block: make(chan struct{})}
	t.Cleanup(func() { close(h.block) })
	return h
}

func (h *handler) count(method string) {
	c, _ := h.calls.LoadOrStore(method, new(atomic.Int64))
	c.(*atomic.Int64).Add(1)
}

func (h *handler) called(method string) int64 {
	c, ok := h.calls.Load(method)
	if !ok {
		return 0
	}
	return c.(*atomic.Int64).Load()
}

func (h *handler) Echo(_ context.Context, text string) (string, error) {
	h.count("echo")
	return text, nil
}

func (h *handler) Divide(_ context.Context, a, b int32) (int32, error) {
	h.count("divide")
	if b == 0 {
		return 0, &testsvc.DivideByZero{Why: fmt.Sprintf("%d / 0", a)}
	}
	return a / b, nil
}

// Sleepy sleeps for millis or until ctx ends (and then returns ctx's error);
// for millis < 0 it waits for the end of the test, ignoring ctx.
func (h *handler) Sleepy(ctx context.Context, millis int32, tag int64) (int64, error) {
	h.count("sleepy")
	n := h.running.Add(1)
	defer h.running.Add(-1)
	for {
		m := h.maxRun.Load()
		if n <= m || h.maxRun.CompareAndSwap(m, n) {
			break
		}
	}
	h.mu.Lock()
	h.order = append(h.order, tag)
	h.mu.Unlock()
	if millis < 0 {
		<-h.block
		return tag, nil
	}
	t := time.NewTimer(time.Duration(millis) * time.Millisecond)
	defer t.Stop()
	select {
	case <-t.C:
		return tag, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (h *handler) Boom(context.Context) error {
	h.count("boom")
	panic("boom: secret internal detail")
}

func (h *handler) Failing(context.Context) error {
	h.count("failing")
	return errors.New("failing on purpose")
}

func (h *handler) Note(_ context.Context, text string) error {
	h.count("note")
	h.mu.Lock()
	defer h.mu.Unlock()
	h.notes = append(h.notes, text)
	return nil
}

func (h *handler) WhereAmI(ctx context.Context) (int32, error) {
	h.count("whereAmI")
	c, ok := dispatcher.CallFromContext(ctx)
	if !ok {
		return -1, nil
	}
	return int32(c.Index), nil
}

func (h *handler) Items(_ context.Context, count int32) ([]*testsvc.Item, error) {
	h.count("items")
	items := make([]*testsvc.Item, count)
	for i := range items {
		items[i] = &testsvc.Item{Key: int64(i), Label: fmt.Sprint("item ", i)}
	}
	return items, nil
}

func (h *handler) Nested(context.Context, string, int32) (int32, error) {
	h.count("nested")
	return 0, errors.New("not in these tests")
}

func (h *handler) Secret(context.Context) (string, error) {
	h.count("secret")
	return "the secret", nil
}

// syncBuffer is a bytes.Buffer for a logger written from many goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
