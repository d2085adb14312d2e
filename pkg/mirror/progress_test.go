package mirror

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"nodecache/internal/clocktest"
	"nodecache/internal/ociref"
	"nodecache/internal/registrytest"
	"nodecache/pkg/diskstore"
	"nodecache/pkg/upstream"
)

// A fill context with no progress ends with a cause that is the fill
// timeout's DeadlineExceeded, so clients get the 504 they always got.
func TestProgressContextEndsWithoutProgress(t *testing.T) {
	ctx, cancel, _ := progressContext(context.Background(), time.Millisecond, time.Now)
	defer cancel()
	<-ctx.Done()
	cause := context.Cause(ctx)
	var np noProgressError
	if !errors.As(cause, &np) || !errors.Is(cause, context.DeadlineExceeded) {
		t.Fatalf("cause %v, want a noProgressError wrapping DeadlineExceeded", cause)
	}
}

// A watch touched more often than its window never ends, however long it
// runs in all; once touches stop for the window, it ends. Silence is
// measured by the clock given, which only the test moves.
func TestProgressContextCountsSilenceOnly(t *testing.T) {
	const after = time.Millisecond // how often the real timer looks
	clock := clocktest.New()
	ctx, cancel, touch := progressContext(context.Background(), after, clock.Now)
	defer cancel()
	for range 200 { // 100 windows in all
		clock.Advance(after / 2)
		touch()
		if ctx.Err() != nil {
			t.Fatalf("ended after touches every half window: %v", context.Cause(ctx))
		}
	}
	clock.Advance(after)
	<-ctx.Done() // the next look of the timer sees a whole silent window
	var np noProgressError
	if !errors.As(context.Cause(ctx), &np) {
		t.Fatalf("cause %v, want noProgressError", context.Cause(ctx))
	}
}

// Ending the context early is a plain cancel, not a timeout.
func TestProgressContextCancel(t *testing.T) {
	ctx, cancel, touch := progressContext(context.Background(), time.Hour, time.Now)
	touch()
	cancel()
	cancel() // twice is fine
	<-ctx.Done()
	if cause := context.Cause(ctx); !errors.Is(cause, context.Canceled) {
		t.Fatalf("cause %v, want Canceled", cause)
	}
}

// An upstream fill that takes longer than the fill timeout but keeps
// sending completes: the timeout counts time without progress.
func TestSlowUpstreamFillOutlastsFillTimeout(t *testing.T) {
	const fillTimeout = 300 * time.Millisecond
	// 1 MiB at 1 MiB/s in small paced chunks: a second of transfer, over
	// three times the fill timeout, never silent for long.
	// The server's clock stands still: silence is measured by it, so no
	// pause of this machine, however long, counts as one. An absolute
	// limit on the fill (real time) would still cut it.
	e := newEnv(t, []registrytest.Option{registrytest.WithThrottle(1 << 20)}, WithFillTimeout(fillTimeout),
		WithClock(clocktest.New().Now))
	data := registrytest.Random(5, 1<<20)
	d := e.up.PushBlob(t, "test/app", data)
	start := time.Now()
	resp, body := e.do(http.MethodGet, e.url("/v2/test/app/blobs/"+d.String()), nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, data) {
		t.Fatalf("status %d, %d bytes; want 200 and the blob", resp.StatusCode, len(body))
	}
	if took := time.Since(start); took < fillTimeout {
		t.Fatalf("the fill took %s, not longer than the fill timeout %s: the test proves nothing", took, fillTimeout)
	}
}

// A download for one client alone (the blob is too large for the store)
// that takes longer than the fill timeout but keeps sending completes too.
// The env's clock stands still, so no pause of this machine counts as
// silence; an absolute limit (real time) would still cut it.
func TestSlowUncachedDownloadOutlastsFillTimeout(t *testing.T) {
	const fillTimeout = 300 * time.Millisecond
	e := newEnvStore(t, []diskstore.Option{diskstore.WithMaxSize(1 << 20)},
		[]registrytest.Option{registrytest.WithThrottle(1 << 20)}, WithFillTimeout(fillTimeout))
	data := registrytest.Random(6, 3<<19) // 1.5 MiB: too large for the store, 1.5 s at 1 MiB/s
	d := e.up.PushBlob(t, "test/app", data)
	r := httptest.NewRequest(http.MethodGet, "/v2/test/app/blobs/"+d.String(), nil)
	q := &request{rec: &recorder{ResponseWriter: httptest.NewRecorder(), status: http.StatusOK}, r: r,
		registry: e.up.Host(), route: route{kind: ociref.KindBlobs, name: "test/app", digest: d}}
	start := time.Now()
	c, err := e.mirror.fetchUncached(q, d, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.close()
	got, err := io.ReadAll(c.(*uncachedStream).body)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("%d bytes, %v; want the blob", len(got), err)
	}
	if took := time.Since(start); took < fillTimeout {
		t.Fatalf("the download took %s, not longer than the fill timeout %s: the test proves nothing", took, fillTimeout)
	}
}

// A fill whose body stops mid-way, with nothing beneath it to end the
// body (the upstream stall timeout off), still ends after the fill
// timeout without a byte: its client's answer is cut, and nothing is
// committed.
func TestStalledFillEndsAfterFillTimeout(t *testing.T) {
	store, err := diskstore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// The real clock: the stall below never ends, so its silence passes
	// the window whatever the machine's load.
	e := newEnvClient(t, store, nil, []upstream.Option{upstream.WithStallTimeout(upstream.NoLimit)},
		WithFillTimeout(300*time.Millisecond), WithClock(time.Now))
	data := registrytest.Random(7, 1<<20)
	d := e.up.PushBlob(t, "test/app", data)
	e.up.SetFault(e.up.Stall(256<<10, registrytest.NewGate(), registrytest.Route(http.MethodGet, registrytest.KindBlobs)))
	type answer struct {
		n   int
		err error
	}
	got := make(chan answer, 1)
	go func() {
		resp, err := http.Get(e.url("/v2/test/app/blobs/" + d.String()))
		if err != nil {
			got <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		got <- answer{n: len(body), err: err}
	}()
	select {
	case a := <-got:
		if a.err == nil {
			t.Fatalf("a complete answer of %d bytes through a stalled upstream, want a cut one", a.n)
		}
	case <-time.After(30 * time.Second): // bounds a failing test only
		e.mirror.Close() // ends the fill, so that the test's servers can stop
		t.Fatal("a fill stalled mid-body never ended")
	}
	if _, err := store.Stat(d); err == nil {
		t.Fatal("a fill cut for want of progress was committed")
	}
}
