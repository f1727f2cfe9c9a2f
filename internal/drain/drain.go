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
	var drained chan struct{}
	if g.closed && g.inflight == 0 {
		run, drained = g.onDrain, g.drained
		g.onDrain = nil
	}
	g.mu.Unlock()
	for _, f := range run {
		f()
	}
	if drained != nil {
		close(drained)
	}
}

// InFlight returns the number of pieces of work admitted and not yet ended.
func (g *Gate) InFlight() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.inflight
}

// Closed reports whether Close has been called. It costs a lock.
func (g *Gate) Closed() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.closed
}

// Close refuses new work and waits until the work in flight has ended or ctx
// is done, returning ctx's error in that case. onDrain runs once, when the
// last piece of work ends (at once if none is in flight), even if that is
// after Close has returned. Calling Close again waits the same way and does
// not run onDrain again.
func (g *Gate) Close(ctx context.Context, onDrain ...func()) error {
	g.mu.Lock()
	var run []func()
	first := !g.closed
	if first {
		g.closed = true
		g.drained = make(chan struct{})
		g.onDrain = onDrain
		if g.inflight == 0 {
			run = g.onDrain
			g.onDrain = nil
		}
	}
	drained, now := g.drained, first && g.inflight == 0
	g.mu.Unlock()
	for _, f := range run {
		f()
	}
	if now {
		close(drained)
	}
	select {
	case <-drained: // drained already: nothing for ctx to cut short
		return nil
	default:
	}
	select {
	case <-drained:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
