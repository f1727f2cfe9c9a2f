// Package latency simulates the latency of a backend call: Wait returns
// after a given duration, woken the way a reply from the network wakes a
// handler, so that a simulated wait lasts what it says.
//
// A Go timer is the obvious simulation, but while the process is otherwise
// idle the runtime sleeps in epoll_wait, whose timeout is in whole
// milliseconds (golang/go#53824), and a timer then fires up to a millisecond
// late. A handler waiting on a socket is woken by the poller as soon as the
// reply arrives. On Linux, Wait ends the same way: one timerfd, registered
// with the runtime's network poller like a socket, is armed for the earliest
// pending wait and wakes every wait that is due. On the 2-vCPU machine of
// docs/BENCHMARKS.md, after an idle pause, one wait of 5 ms returned after
// 5.07 ms and 256 overlapping ones after 5.35 ms, against 5.19 and 5.63 ms
// on timers (medians of 200 rounds: go test -run XXX -bench
// OverlappingWaits -benchtime 200x ./internal/latency). Elsewhere Wait
// uses a Go timer.
package latency

import (
	"context"
	"time"
)

// Wait returns nil once d has passed, or ctx's error if ctx ends first. d <=
// 0 returns nil at once.
//
// Cost: on Linux a channel, a heap push and pop under one process-wide
// mutex, and a timerfd_settime system call when the wait is the earliest
// pending one; a goroutine runs while any wait is pending, and a
// context.AfterFunc watches each context that waits are pending under. A
// context that ends with waits pending costs one pass over every pending
// wait, under that mutex. The first Wait opens the timerfd, which stays open
// for the life of the process. Elsewhere, a timer.
func Wait(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	if took, err := lineWait(ctx, time.Now().Add(d)); took {
		return err
	}
	return TimerWait(ctx, d)
}

// TimerWait is Wait on a Go timer, as a handler simulating latency with
// time.Sleep or time.After would wait: up to a millisecond late when the
// process is idle. The benchmarks compare it with Wait. It costs a timer.
func TimerWait(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Precise reports whether Wait is woken by the poller (on Linux, unless the
// timerfd could not be made or failed), rather than by a Go timer. On Linux
// it costs the line's mutex, and its first call, like Wait's, opens the
// timerfd.
func Precise() bool { return linePrecise() }
