package mirror

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"nodecache/internal/registrytest"
	"nodecache/pkg/diskstore"
)

// TestFillsQueueBeyondCap: with room for one fill, a second cold digest
// waits, visibly, until the first fill ends, and then fills.
func TestFillsQueueBeyondCap(t *testing.T) {
	e, m, waiting := slotEnv(t)
	first, second := registrytest.Random(71, 1<<20), registrytest.Random(72, 1<<20)
	d2 := e.up.PushBlob(t, "test/app", second)
	rest := make(chan struct{})
	resp1 := slotHolder(t, e, first, rest)

	got2 := getLater(e.url("/v2/test/app/blobs/" + d2.String()))
	within(t, waiting, "the second fill to queue")
	if n := testutil.ToFloat64(m.fillsWaiting); n != 1 {
		t.Fatalf("fills waiting = %v, want 1", n)
	}
	if n := e.up.BlobGets(d2); n != 0 {
		t.Fatalf("upstream GETs of the queued digest = %d, want 0", n)
	}

	close(rest)
	b1, err := io.ReadAll(resp1.Body)
	if err != nil || !bytes.Equal(b1, first) {
		t.Fatalf("first: %d bytes, %v", len(b1), err)
	}
	wantAnswer(t, got2, second, "the queued fill")
	if n := testutil.ToFloat64(m.fillsWaiting); n != 0 {
		t.Fatalf("fills waiting = %v after the queue drained, want 0", n)
	}
}

// TestQueuedClientLeaves: a request that leaves while its fill waits for
// a slot leaves the queue, and a request for the same digest that came
// after it queues on its own and is served.
func TestQueuedClientLeaves(t *testing.T) {
	e, m, waiting := slotEnv(t)
	first, second := registrytest.Random(73, 1<<20), registrytest.Random(74, 1<<20)
	d2 := e.up.PushBlob(t, "test/app", second)
	rest := make(chan struct{})
	resp1 := slotHolder(t, e, first, rest)

	ctx, leave := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.url("/v2/test/app/blobs/"+d2.String()), nil)
	if err != nil {
		t.Fatal(err)
	}
	left := make(chan struct{})
	go func() {
		defer close(left)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	within(t, waiting, "the leaving client's fill to queue")
	leave()
	within(t, left, "the client to leave")

	got := getLater(e.url("/v2/test/app/blobs/" + d2.String()))
	// The later request waits in a flight of its own: the leaver's has
	// ended, so only one fill waits.
	within(t, waiting, "the later client's fill to queue")
	if n := testutil.ToFloat64(m.fillsWaiting); n != 1 {
		t.Fatalf("fills waiting = %v, want 1: the leaver is still queued", n)
	}
	close(rest)
	if _, err := io.ReadAll(resp1.Body); err != nil {
		t.Fatal(err)
	}
	wantAnswer(t, got, second, "the later client")
	if n := e.up.BlobGets(d2); n != 1 {
		t.Fatalf("upstream GETs of the queued digest = %d, want 1", n)
	}
}

// slotEnv is an env with room for one fill and metrics, whose waiting
// receives a value each time a fill queues for a slot.
func slotEnv(t *testing.T, storeOpts ...diskstore.Option) (e *env, m *Metrics, waiting chan struct{}) {
	m = NewMetrics()
	waiting = make(chan struct{}, 8)
	e = newEnvStore(t, storeOpts, nil, WithMaxConcurrentFills(1), WithMetrics(m),
		withFillWaitHook(func() { waiting <- struct{}{} }))
	return e, m, waiting
}

// answer is what a GET sent by getLater got.
type answer struct {
	body []byte
	err  error
}

// getLater sends a GET of url in a goroutine; its answer arrives on the
// channel once the body is read.
func getLater(url string) <-chan answer {
	got := make(chan answer, 1)
	go func() {
		resp, err := http.Get(url)
		if err != nil {
			got <- answer{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		got <- answer{b, err}
	}()
	return got
}

// wantAnswer waits for got (bounded, to fail rather than hang) and checks
// that its body is want.
func wantAnswer(t *testing.T, got <-chan answer, want []byte, what string) {
	t.Helper()
	select {
	case a := <-got:
		if a.err != nil || !bytes.Equal(a.body, want) {
			t.Fatalf("%s: %d bytes, %v", what, len(a.body), a.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: never served", what)
	}
}

// slotHolder pushes data as a blob whose upstream body is held after its
// first quarter until rest is closed, and starts a GET of it, which takes
// the env's one fill slot and keeps it. The caller reads the answer.
func slotHolder(t *testing.T, e *env, data []byte, rest <-chan struct{}) *http.Response {
	t.Helper()
	d := e.up.PushBlob(t, "test/app", data)
	heldBlob(e, "test/app", d, data, len(data)/4, rest)
	resp, err := http.Get(e.url("/v2/test/app/blobs/" + d.String()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// TestSlotFreeWhileCommitWaits: a fill lets go of its slot once all its
// bytes are in, before its commit (which waits for the store's fills to
// go quiet): with room for one fill, a second cold digest does not queue
// behind the first one's commit.
func TestSlotFreeWhileCommitWaits(t *testing.T) {
	held := make(chan struct{})
	var once sync.Once
	let := func() { once.Do(func() { close(held) }) }
	e, m, waiting := slotEnv(t, diskstore.WithStepHook(func(st diskstore.Step) {
		if st == diskstore.StepReleased { // the readers have the last byte
			<-held
		}
	}))
	t.Cleanup(let) // before the env's own cleanups, which wait for the fills
	first, second := registrytest.Random(75, 1<<20), registrytest.Random(76, 1<<20)
	d1, d2 := e.up.PushBlob(t, "test/app", first), e.up.PushBlob(t, "test/app", second)
	wantAnswer(t, getLater(e.url("/v2/test/app/blobs/"+d1.String())), first, "the first fill")
	if e.store.Filling(d1) == nil {
		t.Fatal("the first fill's commit is not held")
	}
	got := getLater(e.url("/v2/test/app/blobs/" + d2.String()))
	select {
	case <-waiting:
		t.Fatal("the second fill queued behind the first one's commit")
	case a := <-got:
		if a.err != nil || !bytes.Equal(a.body, second) {
			t.Fatalf("the second fill: %d bytes, %v", len(a.body), a.err)
		}
	}
	if n := testutil.ToFloat64(m.fillsInFlight); n != 0 {
		t.Errorf("fills in flight = %v with both downloads done, want 0", n)
	}
	let()
}
