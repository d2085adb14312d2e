package mirror

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"
)

// TestFlightOneStarter: callers of one flight share its landing, and
// exactly one caller of each flight that ran is told it started it.
// Callers that arrive after a flight landed run their own; either way,
// starters and runs match.
func TestFlightOneStarter(t *testing.T) {
	var f flights
	d := digest.FromString("flight")
	const callers = 16
	running := make(chan struct{})
	release := make(chan struct{})
	var runs atomic.Int32
	start := func() (landing, error) {
		if runs.Add(1) == 1 {
			close(running)
			<-release
		}
		return landing{kind: landedLookAgain}, nil
	}
	var starters atomic.Int32
	var wg sync.WaitGroup
	fly := func() {
		l, started, err := f.fly(context.Background(), d, start)
		if err != nil || l.kind != landedLookAgain {
			t.Errorf("caller got %v, %v; want the landing", l.kind, err)
		}
		if started {
			starters.Add(1)
		}
	}
	wg.Go(fly)
	<-running
	for range callers - 1 {
		wg.Go(fly)
	}
	close(release)
	wg.Wait()
	if starters.Load() != runs.Load() {
		t.Fatalf("%d callers told they started, %d runs; want one starter per run", starters.Load(), runs.Load())
	}
}

// TestFlightErrorKeepsStarter: a failed flight still says who ran it.
func TestFlightErrorKeepsStarter(t *testing.T) {
	var f flights
	boom := errors.New("boom")
	_, started, err := f.fly(context.Background(), digest.FromString("x"), func() (landing, error) {
		return landing{}, boom
	})
	if !errors.Is(err, boom) || !started {
		t.Fatalf("err %v, started %v; want boom, true", err, started)
	}
}

// closeCounter counts Close calls.
type closeCounter struct {
	io.Reader
	closed atomic.Int32
}

func (c *closeCounter) Close() error { c.closed.Add(1); return nil }

// TestFlightLeaverReleasesUncached: a caller whose context ends before the
// landing leaves, and an uncached download nobody claims is released.
func TestFlightLeaverReleasesUncached(t *testing.T) {
	var f flights
	body := &closeCounter{}
	cancelled := make(chan struct{})
	release := make(chan struct{})
	ctx, leave := context.WithCancel(context.Background())
	leave() // the caller has gone before the flight lands
	_, _, err := f.fly(ctx, digest.FromString("u"), func() (landing, error) {
		<-release
		return landing{kind: landedUncached, stream: &uncached{src: fillSource{body: body}, cancel: func() { close(cancelled) }}}, nil
	})
	close(release)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
	<-cancelled // the download's context is cancelled by the release
	if n := body.closed.Load(); n != 1 {
		t.Fatalf("body closed %d times, want 1", n)
	}
}
