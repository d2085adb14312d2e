package peer

import (
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultBadFor is how long a peer marked bad is skipped. Five minutes is
// long enough that a dead or lying node costs at most one failed attempt
// per asking node per five minutes, and short enough that a restarted node
// is used again soon after it is back. Zero passed to WithBadFor means this.
const DefaultBadFor = 5 * time.Minute

// Health remembers which peers failed recently. A peer marked bad is not
// asked for anything until its mark expires: Membership.Owner reports the
// digests it owns as this node's to fill from upstream. It is safe for
// concurrent use; IsBad takes no lock.
type Health struct {
	now    func() time.Time
	badFor time.Duration
	log    *slog.Logger

	// bad maps a peer address to the end of its mark. The map is never
	// modified once stored: MarkBad stores a new one, so readers need no
	// lock and marking (rare) pays for the copy.
	bad atomic.Pointer[map[string]time.Time]
	// mu serialises MarkBad's read-copy-store of bad.
	mu sync.Mutex
}

// NewHealth returns a Health in which every peer is healthy. Its options
// are WithClock, WithLogger and WithBadFor.
func NewHealth(opts ...HealthOption) *Health {
	o := healthOptions(opts)
	h := &Health{now: o.now, badFor: o.badFor, log: o.log}
	h.bad.Store(&map[string]time.Time{})
	return h
}

// MarkBad skips addr until DefaultBadFor (or WithBadFor) from now. reason
// is logged when the peer goes from healthy to bad, so a peer failing many
// requests at once logs one line.
func (h *Health) MarkBad(addr, reason string) {
	now := h.now()
	h.mu.Lock()
	old := *h.bad.Load()
	until, was := old[addr]
	wasBad := was && now.Before(until)
	next := make(map[string]time.Time, len(old)+1)
	for a, u := range old {
		if now.Before(u) { // drop expired marks while copying
			next[a] = u
		}
	}
	next[addr] = now.Add(h.badFor)
	h.bad.Store(&next)
	h.mu.Unlock()
	if !wasBad {
		h.log.Warn("peer marked bad", slog.String("peer", addr), slog.String("reason", reason),
			slog.Duration("for", h.badFor))
	}
}

// IsBad reports whether addr is marked bad now.
func (h *Health) IsBad(addr string) bool {
	m := *h.bad.Load()
	if len(m) == 0 {
		return false // the common case: no clock read
	}
	until, ok := m[addr]
	return ok && h.now().Before(until)
}

// Bad returns the peers marked bad now, with the end of each mark.
func (h *Health) Bad() map[string]time.Time {
	now := h.now()
	out := maps.Clone(*h.bad.Load())
	maps.DeleteFunc(out, func(_ string, until time.Time) bool { return !now.Before(until) })
	return out
}
