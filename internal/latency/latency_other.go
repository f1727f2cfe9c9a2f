//go:build !linux

package latency

import (
	"context"
	"time"
)

// lineWait reports that there is no poller-driven line here: Wait uses a
// timer.
func lineWait(context.Context, time.Time) (took bool, err error) { return false, nil }

func linePrecise() bool { return false }
