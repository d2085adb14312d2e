package mirror

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"nodecache/pkg/diskstore"
)

// A fill nobody reads stops: a client that read one byte of a cold layer
// and hung up must not cost the whole layer's download and the room its
// commit evicts. Each fill counts its clients (fillClients): a request
// that got the fill as its content (fillingContent) is one from then
// until it closes, whether it came from a local client or from a peer
// (ServePeer serves fills the same way). When the count falls to zero, or
// at the start before the starter's own client has joined, a grace timer
// is armed; a client that joins disarms it. When it fires, the fill is
// stopped unless it is nearly done: its context is cancelled, which ends
// the source's body, and copyFill aborts the fill (nothing is committed,
// the temporary file is removed).

// DefaultUnreadFillGrace is how long a fill runs with no client before it
// stops. containerd reconnects within seconds after a broken transfer and
// resumes with a Range, and the kubelet's first image-pull back-off is
// 10 s: 30 s lets both find the fill still running, and a fill nobody
// wants stops within half a minute.
const DefaultUnreadFillGrace = 30 * time.Second

// A fill this close to its end finishes even with no client: the bytes
// left cost less than fetching the whole again when a client comes back,
// and the rest of a small blob is cheaper to fetch than to think about.
const (
	nearlyDonePercent = 90      // of a known size
	nearlyDoneBytes   = 4 << 20 // left to fetch
)

// errNoClients is why a fill that nobody read was stopped.
var errNoClients = errors.New("fill stopped: no client read it")

// WithUnreadFillGrace sets how long a fill runs with no client reading it
// before it stops (see DefaultUnreadFillGrace). Zero means
// DefaultUnreadFillGrace; a negative value (NoLimit) lets every fill run
// to its end.
func WithUnreadFillGrace(d time.Duration) Option {
	return func(s *Server) {
		if d == 0 {
			d = DefaultUnreadFillGrace
		}
		s.unreadGrace = d
	}
}

// withGraceTimer replaces time.AfterFunc for the grace timers, so tests
// fire them by hand. It returns the timer's Stop.
func withGraceTimer(afterFunc func(time.Duration, func()) func() bool) Option {
	return func(s *Server) { s.afterFunc = afterFunc }
}

func timeAfterFunc(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }

// fillClients counts the clients of one fill and stops it when none is
// left for the grace period. Its methods are safe on nil (a fill this
// server does not run, found in the store): they do nothing.
type fillClients struct {
	size      int64 // expected; -1 if unknown
	grace     time.Duration
	afterFunc func(time.Duration, func()) func() bool
	stop      context.CancelCauseFunc // stops the fill
	written   atomic.Int64            // bytes the fill has taken in

	// mu guards n, disarm, armed and over.
	mu     sync.Mutex
	n      int
	disarm func() bool // stops the pending timer; nil if none
	armed  uint64      // numbers the timers, so a late one can tell it is stale
	over   bool        // the fill has ended: no timer is armed any more
}

// newFillClients returns the count of a fill that has just begun, with
// no client yet: the grace runs until its starter's client joins.
func (s *Server) newFillClients(size int64, stop context.CancelCauseFunc) *fillClients {
	if s.unreadGrace < 0 {
		return nil
	}
	c := &fillClients{size: size, grace: s.unreadGrace, afterFunc: s.afterFunc, stop: stop}
	c.mu.Lock()
	c.armLocked()
	c.mu.Unlock()
	return c
}

// join counts a client in, disarming the grace timer.
func (c *fillClients) join() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n++
	c.armed++ // a timer already firing is stale
	if c.disarm != nil {
		c.disarm()
		c.disarm = nil
	}
}

// leave counts a client out; the last one arms the grace timer.
func (c *fillClients) leave() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n--
	if c.n == 0 && !c.over {
		c.armLocked()
	}
}

// ended disarms the grace timer of a fill that has ended, so no timer
// outlives it.
func (c *fillClients) ended() {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.armed++
	if c.disarm != nil {
		c.disarm()
		c.disarm = nil
	}
	c.over = true
}

func (c *fillClients) armLocked() {
	c.armed++
	me := c.armed
	c.disarm = c.afterFunc(c.grace, func() { c.expire(me) })
}

// expire stops the fill if timer me is still the current one, no client
// came, and the fill is not nearly done.
func (c *fillClients) expire(me uint64) {
	c.mu.Lock()
	current := me == c.armed && c.n == 0
	if current {
		c.disarm = nil
	}
	c.mu.Unlock()
	if current && !c.nearlyDone() {
		c.stop(errNoClients)
	}
}

func (c *fillClients) nearlyDone() bool {
	if c.size < 0 {
		return false // no end in sight
	}
	left := c.size - c.written.Load()
	return left <= nearlyDoneBytes || left*100 <= c.size*(100-nearlyDonePercent)
}

// countingWriter counts what a fill takes in, for nearlyDone.
type countingWriter struct {
	w interface{ Write([]byte) (int, error) }
	n *atomic.Int64
}

func (w countingWriter) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	w.n.Add(int64(n))
	return n, err
}

// runningFills holds, for each fill this server runs, what the store
// does not know of it: the peer it reads from (a request that joins such
// a fill is served by the peer, for the access log and the metrics) and
// its clients. Keyed by the fill, not the digest, so a fill that ended
// cannot be taken for the next fill of its digest. The zero value is
// empty.
type runningFills struct {
	// mu guards byFill.
	mu     sync.Mutex
	byFill map[*diskstore.Fill]fillRun
}

func (r *runningFills) add(run fillRun) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byFill == nil {
		r.byFill = make(map[*diskstore.Fill]fillRun)
	}
	r.byFill[run.fill] = run
}

func (r *runningFills) remove(f *diskstore.Fill) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.byFill, f)
}

// of returns the run of f, found in the store; one this server does not
// run (any more) reads from upstream and counts no clients.
func (r *runningFills) of(f *diskstore.Fill) fillRun {
	r.mu.Lock()
	defer r.mu.Unlock()
	if run, ok := r.byFill[f]; ok {
		return run
	}
	return fillRun{fill: f}
}
