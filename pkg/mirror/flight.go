package mirror

import (
	"context"
	"sync/atomic"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/singleflight"

	"nodecache/pkg/diskstore"
)

// A flight is the coalesced start of a fill: while one runs for a digest,
// every other caller for that digest waits for it instead of starting its
// own, and all of them get its landing. A flight ends as soon as its fill
// has started (or it found one, or found the digest committed), so it
// lasts one upstream round trip, not the whole download: later callers
// find the fill in the store and read it there.

// landingKind names how a flight ended.
type landingKind uint8

const (
	// landedFill: a fill of the digest is in progress; read it.
	landedFill landingKind = iota + 1
	// landedUncached: the store could not take the content. The download
	// is streamed, uncached, to one caller, who claims it.
	landedUncached
	// landedLookAgain: the digest was committed, or another fill of it
	// began, while the caller was looking; look in the store again.
	landedLookAgain
)

// landing is what a flight gives every caller that waited on it.
type landing struct {
	kind landingKind
	fill *fillRun // landedFill
	// began: this flight began the fill (landedFill), rather than finding
	// one in progress. Only the caller whose start ran began it; every
	// other caller, and every caller of a flight that found the fill,
	// joined it.
	began  bool
	stream *uncached // landedUncached
}

// fillRun is a fill in progress and where its bytes come from.
type fillRun struct {
	fill    *diskstore.Fill
	peer    string       // the peer it reads from; "" for upstream
	clients *fillClients // nil if this server does not run it, or lets it run unread
}

// flights runs at most one flight per digest at a time, over
// golang.org/x/sync/singleflight, with a typed landing.
type flights struct {
	group singleflight.Group
	// callers numbers the calls, so the flight can name the one whose
	// function ran: the starter.
	callers atomic.Uint64
}

// flightResult is what singleflight carries: the landing and the number
// of the caller whose function ran.
type flightResult struct {
	landing landing
	starter uint64
}

// fly runs start for d unless a flight for d is already running, and
// waits for the landing. started reports whether start ran for this
// caller. If ctx ends first, the caller leaves: an uncached download that
// nobody claims is then released, rather than holding its upstream
// connection until the fill timeout.
func (f *flights) fly(ctx context.Context, d digest.Digest, start func() (landing, error)) (l landing, started bool, err error) {
	me := f.callers.Add(1)
	ch := f.group.DoChan(d.String(), func() (any, error) {
		l, err := start()
		return flightResult{landing: l, starter: me}, err
	})
	select {
	case res := <-ch:
		r, _ := res.Val.(flightResult)
		return r.landing, r.starter == me, res.Err
	case <-ctx.Done():
		go func() {
			res := <-ch
			if r, ok := res.Val.(flightResult); ok && r.landing.stream != nil {
				r.landing.stream.release()
			}
		}()
		return landing{}, false, ctx.Err()
	}
}
