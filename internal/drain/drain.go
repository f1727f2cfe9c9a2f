// Package drain counts the work in flight behind a gate that closes: new work
// is refused once Close has begun, and Close waits for the work already in.
package drain

import (
	"context"
	"sync"
)

// Gate admits work until it is closed. The zero value is an open gate. It is
// safe for concurrent use; Enter and Exit cost one uncontended mutex each.
type Gate struct {
	mu       sync.Mutex
	closed   bool
	inflight int
	drained  chan struct{} // made by Close; closed when inflight reaches 0
	onDrain  []func()
}

// Enter admits one piece of work and reports true, or reports false once
// Close has begun. Each true must be matched by one Exit.
func (g *Gate) Enter() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.inflight++
	return true
}

// Exit ends one piece of work admitted by Enter.
func (g *Gate) Exit() {
	g.mu.Lock()
	g.inflight--
	var run []func()
	if g.closed && g.inflight == 0 {
		run = g.drain()
	}
	g.mu.Unlock()
	for _, f := range run {
		f()
	}
}

// InFlight returns the number of pieces of work admitted and not yet ended.
func (g *Gate) InFlight() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.inflight
}

// Close refuses new work and waits until the work in flight has ended or ctx
// is done, returning ctx's error in that case. onDrain runs once, when the
// last piece of work ends (at once if none is in flight), even if that is
// after Close has returned. Calling Close again waits the same way and does
// not run onDrain again.
func (g *Gate) Close(ctx context.Context, onDrain ...func()) error {
	g.mu.Lock()
	var run []func()
	if !g.closed {
		g.closed = true
		g.drained = make(chan struct{})
		g.onDrain = onDrain
		if g.inflight == 0 {
			run = g.drain()
		}
	}
	drained := g.drained
	g.mu.Unlock()
	for _, f := range run {
		f()
	}
	select {
	case <-drained:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// drain closes the drained channel and hands back the callbacks; g.mu is
// held.
func (g *Gate) drain() []func() {
	close(g.drained)
	run := g.onDrain
	g.onDrain = nil
	return run
}
