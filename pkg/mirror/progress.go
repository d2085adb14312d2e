package mirror

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"
)

// A fill is limited by progress, not by wall time: --fill-timeout is how
// long a fill may go without taking in a byte (waiting for a fill slot,
// for headers, or for the body), not how long it may take in all. A 5 GiB
// layer streamed through a tree of peers can take longer than any fixed
// limit that still ends a hung fill soon, and a transfer that makes
// progress must not be cut. The bodies under a fill have their own,
// shorter stall timeouts (upstream.DefaultStallTimeout,
// peer.DefaultStallTimeout) and resume after one; this limit is the
// backstop that frees the digest's flight if everything underneath hangs.

// errNoProgress ends a fill that took in nothing for the fill timeout. It
// wraps context.DeadlineExceeded, so the client gets the fill-timeout 504.
type noProgressError struct{ after time.Duration }

func (e noProgressError) Error() string {
	return fmt.Sprintf("fill made no progress for %s", e.after)
}

func (e noProgressError) Unwrap() error { return context.DeadlineExceeded }

// progressContext returns a context cancelled, with a noProgressError as
// its cause, once touch has not been called for after by now's clock, and
// the function that ends it early.
func progressContext(parent context.Context, after time.Duration, now func() time.Time) (ctx context.Context, cancel context.CancelFunc, touch func()) {
	ctx, stop := context.WithCancelCause(parent)
	w := &progressWatch{after: after, now: now, last: now()}
	var once sync.Once
	w.timer = time.AfterFunc(after, func() { w.check(stop) })
	end := func() {
		once.Do(func() {
			w.mu.Lock()
			w.done = true
			w.timer.Stop()
			w.mu.Unlock()
			stop(nil)
		})
	}
	return ctx, end, w.touch
}

// progressWatch re-arms its timer only when it fires: a touch is a clock
// read and a store, cheap enough for every Read of a body.
type progressWatch struct {
	after time.Duration
	now   func() time.Time // the server's clock: silence is measured by it
	timer *time.Timer
	mu    sync.Mutex // guards last, done and re-arming the timer
	last  time.Time
	done  bool
}

func (w *progressWatch) touch() {
	now := w.now()
	w.mu.Lock()
	w.last = now
	w.mu.Unlock()
}

// check ends the context if nothing happened for w.after, else waits for
// the rest of the window since the last touch.
func (w *progressWatch) check(stop context.CancelCauseFunc) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return
	}
	left := w.after - w.now().Sub(w.last)
	if left > 0 {
		w.timer.Reset(left)
		return
	}
	w.done = true
	stop(noProgressError{after: w.after})
}

// progressBody touches on every Read that returns bytes.
type progressBody struct {
	io.ReadCloser
	touch func()
}

func (b progressBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.touch()
	}
	return n, err
}
