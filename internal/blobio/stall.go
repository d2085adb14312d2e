package blobio

import (
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"
)

// ErrStalled is wrapped by the error of a Read that a StallReader ended.
var ErrStalled = errors.New("transfer stalled")

// Timer is the part of *time.Timer a StallReader uses.
type Timer interface {
	Reset(d time.Duration) bool
	Stop() bool
}

// AfterFunc starts a Timer that calls f in its own goroutine after d, as
// time.AfterFunc does. Tests inject a fake one.
type AfterFunc func(d time.Duration, f func()) Timer

// RealTimers is time.AfterFunc as an AfterFunc.
func RealTimers(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// StallReader ends a transfer that sends nothing for a while. The timer
// of after runs only while a Read waits for rc: it starts with the reader
// (the wait for the first bytes), is Reset as each later Read begins and
// stopped as each Read returns, so time the consumer spends between Reads
// (a slow client downstream, a writer held up) never counts as silence of
// the source. If it fires, stop is called, which must make the Read in
// progress return (for an HTTP body: cancel the request's context), and
// that Read's error then wraps ErrStalled. No wall-clock limit applies to
// a transfer that makes progress.
//
// Read must not be called concurrently; Close may be called from any
// goroutine.
type StallReader struct {
	rc      io.ReadCloser
	after   time.Duration
	timer   Timer
	running bool        // the timer is armed; only Read uses it
	stalled atomic.Bool // set by the timer's goroutine
}

// NewStallReader watches rc. after is not defaulted: zero (or less) ends
// the transfer at once, so callers pass a positive timeout. afterFunc
// starts the timer; nil means RealTimers.
func NewStallReader(rc io.ReadCloser, after time.Duration, stop func(), afterFunc AfterFunc) *StallReader {
	if afterFunc == nil {
		afterFunc = RealTimers
	}
	s := &StallReader{rc: rc, after: after, running: true}
	s.timer = afterFunc(after, func() {
		s.stalled.Store(true)
		stop()
	})
	return s
}

// Read implements io.Reader.
func (s *StallReader) Read(p []byte) (int, error) {
	if !s.running {
		s.timer.Reset(s.after)
	}
	n, err := s.rc.Read(p)
	s.timer.Stop()
	s.running = false
	if err != nil && err != io.EOF && s.stalled.Load() {
		err = fmt.Errorf("%w: nothing for %s: %w", ErrStalled, s.after, err)
	}
	return n, err
}

// Close stops the timer and closes the reader.
func (s *StallReader) Close() error {
	s.timer.Stop()
	return s.rc.Close()
}
