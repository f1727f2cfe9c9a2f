package tests

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/thriftbatch/thriftbatch/dispatcher"
	"github.com/thriftbatch/thriftbatch/tests/testsvc"
)

// handler implements testsvc.Test.
type handler struct {
	mu    sync.Mutex
	notes []string
	// nest sends a batch of n echo calls to addr and returns how many
	// answered; set by tests that need it.
	nest func(ctx context.Context, addr string, n int) (int, error)
}

var _ testsvc.Test = (*handler)(nil)

func (h *handler) Echo(_ context.Context, text string) (string, error) { return text, nil }

func (h *handler) Divide(_ context.Context, a, b int32) (int32, error) {
	if b == 0 {
		return 0, &testsvc.DivideByZero{Why: fmt.Sprintf("%d / 0", a)}
	}
	return a / b, nil
}

func (h *handler) Sleepy(ctx context.Context, millis int32, tag int64) (int64, error) {
	select {
	case <-time.After(time.Duration(millis) * time.Millisecond):
		return tag, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (h *handler) Boom(context.Context) error { panic("boom: secret internal detail") }

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
	items := make([]*testsvc.Item, count)
	for i := range items {
		items[i] = &testsvc.Item{Key: int64(i), Label: "item number " + strconv.Itoa(i), Tags: []string{"alpha", "beta", strconv.Itoa(i % 7)}}
	}
	return items, nil
}

func (h *handler) Nested(ctx context.Context, addr string, calls int32) (int32, error) {
	n, err := h.nest(ctx, addr, int(calls))
	return int32(n), err
}

func (h *handler) Secret(context.Context) (string, error) { return "the secret", nil }
