package main

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/thriftbatch/thriftbatch/client"
	"github.com/thriftbatch/thriftbatch/idl/batch"
)

// linkChunk is the most bytes a slow connection passes at once: 0.66 ms at
// 12.5 MB/s, fine enough that reads and writes interleave as on a wire.
const linkChunk = 8 << 10

// idleGap is how far behind its schedule a link may fall and still count as
// busy: time.Sleep wakes up to a millisecond late, and the next chunk makes
// up for it. A link idle for longer starts afresh, with no credit saved.
const idleGap = 2 * time.Millisecond

// link is one direction of a slow link: bytes pass at rate, one after the
// other.
type link struct {
	rate  float64 // bytes per second
	mu    sync.Mutex
	free  time.Time // when the bytes passed so far are through
	bytes atomic.Int64
}

// pass waits until n more bytes have gone through the link.
func (l *link) pass(n int) {
	l.bytes.Add(int64(n))
	l.mu.Lock()
	if now := time.Now(); now.Sub(l.free) > idleGap {
		l.free = now
	}
	l.free = l.free.Add(time.Duration(float64(n) / l.rate * float64(time.Second)))
	until := l.free
	l.mu.Unlock()
	time.Sleep(time.Until(until))
}

// slowConn is a net.Conn whose writes leave, and whose reads arrive, at the
// pace of its links: it slows a client's connection as a 100 Mbit/s line
// would, in both directions.
type slowConn struct {
	net.Conn
	up, down *link
}

// Write sends p in chunks, each once the link has carried it.
func (c *slowConn) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), linkChunk)]
		c.up.pass(len(chunk))
		n, err := c.Conn.Write(chunk)
		written += n
		if err != nil {
			return written, err
		}
		p = p[n:]
	}
	return written, nil
}

// Read reads at most a chunk and returns once the link has carried it.
func (c *slowConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p[:min(len(p), linkChunk)])
	if n > 0 {
		c.down.pass(n)
	}
	return n, err
}

// slowLine is a link in each direction, shared by the connections wrapped
// with it, counting the bytes that pass.
type slowLine struct{ up, down *link }

func newSlowLine(rate float64) *slowLine {
	return &slowLine{up: &link{rate: rate}, down: &link{rate: rate}}
}

// wrap slows nc down to the line's pace.
func (l *slowLine) wrap(nc net.Conn) net.Conn { return &slowConn{Conn: nc, up: l.up, down: l.down} }

// bytes returns the bytes that went through, both ways.
func (l *slowLine) bytes() int64 { return l.up.bytes.Load() + l.down.bytes.Load() }

// linkWay is one way of sending the large batch over a line.
type linkWay struct {
	key, name string
	zlib      bool // over the TZlibTransport server, plain batches
	codec     batch.Codec
}

var linkWays = []linkWay{
	{key: "none", name: "NONE"},
	{key: "zstd", name: "zstd", codec: batch.Codec_ZSTD},
	{key: "s2", name: "s2", codec: batch.Codec_S2},
	{key: "tzlib", name: "TZlibTransport", zlib: true},
}

// options returns the batch client's options of w.
func (w linkWay) options() []client.Option {
	if w.codec == batch.Codec_NONE {
		return plain
	}
	return []client.Option{client.WithAcceptCodecs(w.codec), client.WithRequestCompression(w.codec, client.DefaultCompressOver)}
}

// slowLink sends one large batch each way of linkWays, over the slow line
// and over plain loopback, round by round, and reports the times.
func slowLink(ctx context.Context, e *env) ([]figure, error) {
	zsrv, err := e.server(0, zlibFramed)
	if err != nil {
		return nil, err
	}
	ids := ids(e.plan.linkCalls, 1)
	var ways []way
	var lines []*slowLine
	for _, limited := range []bool{true, false} {
		for _, w := range linkWays {
			srv := e.srv
			if w.zlib {
				srv = zsrv
			}
			line := newSlowLine(e.plan.linkRate)
			wrap := line.wrap
			if !limited {
				line.up.rate, line.down.rate = 1e15, 1e15 // counts bytes, never waits
			}
			c, err := srv.batchClient(ctx, wrap, w.options()...)
			if err := e.keep(c, err); err != nil {
				return nil, err
			}
			bw := explicitBatch(c, ids)
			bw.name = w.name
			ways, lines = append(ways, bw), append(lines, line)
		}
	}
	t, err := interleave(ctx, e.plan.linkRounds, ways...)
	if err != nil {
		return nil, err
	}
	runs := int64(e.plan.linkRounds + 1)
	var figs []figure
	for i, tm := range t {
		w, where := linkWays[i%len(linkWays)], fmt.Sprintf("link_%dmbit", linkMbit)
		if i >= len(linkWays) {
			where = "loopback"
		}
		figs = append(figs, figure{
			key: fmt.Sprintf("%s_batch_1000_%s_ms", where, w.key), value: float64(tm.median) / 1e6, unit: "ms",
			detail: fmt.Sprintf("%s: %s bytes per batch, %s calls/s", strings.ReplaceAll(where, "_", " "), thousands(lines[i].bytes()/runs), thousands(int64(tm.callsPerSec()))),
		})
	}
	return figs, nil
}
