// Package clocktest is a clock for tests that moves only when told to.
// Code under test takes its clock as a plain func() time.Time; a test
// passes Clock.Now.
//
// It is for tests only: it is not a scheduler, and fires no timers.
package clocktest

import (
	"sync"
	"time"
)

// Clock is a settable clock, safe for concurrent use.
type Clock struct {
	// mu guards now.
	mu  sync.Mutex
	now time.Time
}

// New returns a Clock at 2030-01-02 03:04:05 UTC: a fixed instant, so a
// test's output does not depend on when it runs, and years from the real
// time, so a value taken from the real clock by mistake stands out.
func New() *Clock { return NewAt(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)) }

// NewAt returns a Clock at t.
func NewAt(t time.Time) *Clock { return &Clock{now: t} }

// Now returns the clock's time. Pass the method value c.Now where a
// func() time.Time is wanted.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock by d, backwards if d is negative.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// Set moves the clock to t.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t
	c.mu.Unlock()
}
