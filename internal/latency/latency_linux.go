package latency

import (
	"container/heap"
	"context"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// line wakes the pending waits of the process from one timerfd, always armed
// for the earliest of them. Its goroutine runs while any wait is pending,
// reading the timerfd through the runtime's poller, and closes the channel
// of every wait that is due each time it fires.
//
// A wait parks on its own channel only. Selecting on ctx.Done() as well
// would make every wait of a batch lock the one channel their shared
// context has, twice; the line instead watches each context once, with
// context.AfterFunc, for all the waits under it (a group), and wakes them
// when it ends. Waits that each have a context of their own (as the calls
// of a generated processor have while thrift.ServerConnectivityCheckInterval
// is above 0) cost a group each: a map entry and an AfterFunc. A context's
// end takes its own waits off the heap, by index, whatever else is pending.
type line struct {
	fd   int      // the timerfd, for timerfd_settime; owned by file
	file *os.File // the timerfd, read through the poller; closed by fail only

	mu      sync.Mutex
	waits   waitHeap
	groups  map[<-chan struct{}]*group // by ctx.Done()
	running bool                       // run's goroutine is started and has not returned
	broken  bool                       // the timerfd failed: pending waits were handed to timers
}

// wait is one pending Wait: done is closed at due, or when its context
// ends, and then canceled is true.
type wait struct {
	due      time.Time
	done     chan struct{}
	index    int         // in the line's heap; -1 once off it
	group    *group      // nil when the context cannot end
	member   int         // in group.waits
	canceled bool        // written before done is closed
	timer    *time.Timer // the timer fail handed the wait to, if it did
}

// group is the pending waits under one context: the line watches the
// context while it has any.
type group struct {
	done  <-chan struct{} // the context's, the group's key
	waits []*wait
	stop  func() bool // context.AfterFunc's
}

var (
	theLine  *line
	lineOnce sync.Once
)

// getLine returns the process's line, made on first use, or nil when no
// timerfd can be made.
func getLine() *line {
	lineOnce.Do(func() { theLine, _ = newLine() }) // nil on an error: Wait uses timers
	return theLine
}

// newLine makes a line on a timerfd of its own.
func newLine() (*line, error) {
	fd, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_NONBLOCK|unix.TFD_CLOEXEC)
	if err != nil {
		return nil, err
	}
	// A non-blocking descriptor given to os.NewFile is registered with the
	// poller, so Read parks the goroutine, not a thread.
	return &line{
		fd: fd, file: os.NewFile(uintptr(fd), "latency timerfd"),
		groups: make(map[<-chan struct{}]*group),
	}, nil
}

// lineWait waits on the line until due, or until ctx ends, and reports
// whether the line took the wait (Wait uses a timer when it did not) and
// ctx's error if ctx ended first.
func lineWait(ctx context.Context, due time.Time) (took bool, err error) {
	l := getLine()
	if l == nil {
		return false, nil
	}
	ctxDone := ctx.Done()
	if ctxDone != nil {
		select { // a receive that cannot block costs no lock
		case <-ctxDone:
			return true, ctx.Err()
		default:
		}
	}
	w := &wait{due: due, done: make(chan struct{})}
	if !l.add(ctx, ctxDone, w) {
		return false, nil
	}
	<-w.done
	if w.canceled {
		return true, ctx.Err()
	}
	return true, nil
}

// add queues w, under the group of ctx when ctxDone is not nil, and reports
// false when the line is broken.
func (l *line) add(ctx context.Context, ctxDone <-chan struct{}, w *wait) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.broken {
		return false
	}
	if ctxDone != nil {
		g := l.groups[ctxDone]
		if g == nil {
			g = &group{done: ctxDone}
			l.groups[ctxDone] = g
			// If ctx has ended meanwhile, f runs at once on a goroutine
			// of its own, and waits for l.mu.
			g.stop = context.AfterFunc(ctx, func() { l.cancel(g) })
		}
		w.group, w.member = g, len(g.waits)
		g.waits = append(g.waits, w)
	}
	heap.Push(&l.waits, w)
	if l.waits[0] == w && !l.arm(w.due) {
		return true // arm handed w to a timer
	}
	if !l.running {
		l.running = true
		go l.run()
	}
	return true
}

func linePrecise() bool {
	l := getLine()
	if l == nil {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.broken
}

// run reads the timerfd each time it fires and wakes the waits that are
// due, until none is pending.
func (l *line) run() {
	var buf [8]byte // the timerfd's count of expirations, unused
	for {
		_, err := l.file.Read(buf[:])
		l.mu.Lock()
		if err != nil || l.broken {
			l.fail()
			l.running = false
			l.mu.Unlock()
			return
		}
		now := time.Now()
		for len(l.waits) > 0 && !l.waits[0].due.After(now) {
			l.wake(heap.Pop(&l.waits).(*wait), false)
		}
		if len(l.waits) == 0 || !l.arm(l.waits[0].due) {
			l.running = false
			l.mu.Unlock()
			return
		}
		l.mu.Unlock()
	}
}

// wake ends w, which is off the heap, and stops watching its context when
// it was the group's last. The caller holds l.mu.
func (l *line) wake(w *wait, canceled bool) {
	if w.timer != nil {
		w.timer.Stop() // a wait whose context ended keeps no timer armed
	}
	if g := w.group; g != nil {
		last := g.waits[len(g.waits)-1]
		g.waits[w.member], last.member = last, w.member
		g.waits[len(g.waits)-1] = nil
		g.waits = g.waits[:len(g.waits)-1]
		if len(g.waits) == 0 {
			g.stop()
			delete(l.groups, g.done)
		}
	}
	w.canceled = canceled
	close(w.done)
}

// cancel ends the pending waits of g, whose context has ended.
func (l *line) cancel(g *group) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.groups[g.done] != g {
		return // every wait of g ended before its context did
	}
	for len(g.waits) > 0 {
		w := g.waits[len(g.waits)-1]
		heap.Remove(&l.waits, w.index)
		l.wake(w, true)
	}
	if !l.running || l.broken {
		return
	}
	// Re-arm for the earliest wait left, or, when none is, for now: run
	// wakes and returns rather than wait for the time of a wait that
	// has ended.
	next := time.Now()
	if len(l.waits) > 0 {
		next = l.waits[0].due
	}
	l.arm(next)
}

// arm sets the timerfd to fire at due and reports true, or fails the line
// and reports false. The caller holds l.mu.
func (l *line) arm(due time.Time) bool {
	// A zero it_value would disarm the timerfd: a wait already due fires
	// a nanosecond from now.
	spec := unix.ItimerSpec{Value: unix.NsecToTimespec(int64(max(time.Until(due), 1)))}
	if err := unix.TimerfdSettime(l.fd, 0, &spec, nil); err != nil {
		l.fail()
		return false
	}
	return true
}

// fail gives up on the timerfd: every pending wait is handed to a timer of
// its own, every later one to Wait's timer, and the timerfd is closed, which
// ends run's read. It cannot happen short of the kernel refusing to arm the
// timerfd or a read of it failing; the line keeps every wait rather than
// leave one hanging. The caller holds l.mu.
func (l *line) fail() {
	if l.broken {
		return
	}
	l.broken = true
	_ = l.file.Close() // nothing to do about an error: the line is given up
	for _, w := range l.waits {
		// w stays on the heap, where cancel finds it; whichever of the
		// two takes it off wakes it.
		w.timer = time.AfterFunc(time.Until(w.due), func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			if w.index >= 0 { // cancel has not taken it off
				heap.Remove(&l.waits, w.index)
				l.wake(w, false)
			}
		})
	}
}

// waitHeap orders the pending waits by due, earliest first (container/heap),
// keeping each wait's index.
type waitHeap []*wait

func (h waitHeap) Len() int           { return len(h) }
func (h waitHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h waitHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}

func (h *waitHeap) Push(x any) {
	w := x.(*wait)
	w.index = len(*h)
	*h = append(*h, w)
}

func (h *waitHeap) Pop() any {
	old := *h
	w := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	w.index = -1
	return w
}
