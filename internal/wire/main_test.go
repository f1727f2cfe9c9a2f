package wire_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"go.uber.org/goleak"

	"github.com/thriftbatch/thriftbatch/tests/testsvc"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// handler implements testsvc.Test with trivial methods.
type handler struct{}

var _ testsvc.Test = handler{}

func (handler) Echo(_ context.Context, text string) (string, error) { return text, nil }

func (handler) Divide(_ context.Context, a, b int32) (int32, error) {
	if b == 0 {
		return 0, &testsvc.DivideByZero{Why: fmt.Sprintf("%d / 0", a)}
	}
	return a / b, nil
}

func (handler) Sleepy(_ context.Context, _ int32, tag int64) (int64, error) { return tag, nil }
func (handler) Boom(context.Context) error                                  { panic("boom") }
func (handler) Failing(context.Context) error                               { return errors.New("failing on purpose") }
func (handler) Note(context.Context, string) error                          { return nil }
func (handler) WhereAmI(context.Context) (int32, error)                     { return -1, nil }

func (handler) Items(_ context.Context, count int32) ([]*testsvc.Item, error) {
	items := make([]*testsvc.Item, count)
	for i := range items {
		items[i] = &testsvc.Item{Key: int64(i), Label: fmt.Sprint("item ", i), Tags: []string{"a", "b"}}
	}
	return items, nil
}

func (handler) Nested(context.Context, string, int32) (int32, error) { return 0, nil }
func (handler) Secret(context.Context) (string, error)               { return "s", nil }
