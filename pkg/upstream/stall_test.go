package upstream

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"nodecache/internal/blobio"
	"nodecache/internal/ociref"
	"nodecache/internal/registrytest"
)

// stallTimers is a blobio.AfterFunc whose timers fire only when the test
// says; created gets the index of each timer started, while it has room.
type stallTimers struct {
	created chan int

	mu     sync.Mutex // guards timers
	timers []*stallTimer
}

type stallTimer struct {
	f       func()
	d       time.Duration
	stopped bool
}

func newStallTimers() *stallTimers { return &stallTimers{created: make(chan int, 64)} }

func (st *stallTimers) afterFunc(d time.Duration, f func()) blobio.Timer {
	st.mu.Lock()
	defer st.mu.Unlock()
	t := &stallTimer{f: f, d: d}
	st.timers = append(st.timers, t)
	select {
	case st.created <- len(st.timers) - 1:
	default:
	}
	return &stallTimerHandle{st: st, t: t}
}

// stallTimerHandle is one timer as blobio sees it.
type stallTimerHandle struct {
	st *stallTimers
	t  *stallTimer
}

func (h *stallTimerHandle) Reset(d time.Duration) bool {
	h.st.mu.Lock()
	defer h.st.mu.Unlock()
	h.t.d = d
	return !h.t.stopped
}

func (h *stallTimerHandle) Stop() bool {
	h.st.mu.Lock()
	defer h.st.mu.Unlock()
	was := !h.t.stopped
	h.t.stopped = true
	return was
}

// fire runs timer i's function in a goroutine of its own, as a real timer
// does, and waits for it. It fails the test if no such timer was started.
func (st *stallTimers) fire(t *testing.T, i int) {
	t.Helper()
	st.mu.Lock()
	if i >= len(st.timers) {
		st.mu.Unlock()
		t.Fatalf("stall timer %d was never started: upstream bodies are not watched for stalls", i)
	}
	tm := st.timers[i]
	st.mu.Unlock()
	done := make(chan struct{})
	go func() {
		tm.f()
		close(done)
	}()
	<-done
}

// waitCreated waits for timer i to be started, or fails.
func (st *stallTimers) waitCreated(t *testing.T, i int) {
	t.Helper()
	for {
		select {
		case n := <-st.created:
			if n >= i {
				return
			}
		case <-time.After(10 * time.Second): // bounds a failing test only
			t.Fatalf("stall timer %d was never started", i)
		}
	}
}

// stallFixture is a registry holding one blob; holds(n) says whether the
// n-th blob GET (1-based) stalls after sending from bytes of its body.
func stallFixture(t *testing.T, from int64, holds func(n int) bool, opts ...Option) (*Client, Request, []byte, *rangeLog) {
	t.Helper()
	reg := registrytest.Start(t)
	data := registrytest.Random(11, resumeBlobSize)
	d := reg.PushBlob(t, "team/app", data)
	log := &rangeLog{}
	isBlobGet := registrytest.Route(http.MethodGet, registrytest.KindBlobs)
	hold := reg.Stall(from, registrytest.NewGate(), nil)
	reg.SetFault(func(w http.ResponseWriter, r *http.Request) bool {
		if !isBlobGet(r) || !holds(log.add(r)) {
			return false
		}
		return hold(w, r)
	})
	c := newTestClient(t, reg.URL(), opts...)
	r := Request{Registry: testRegistry, Repo: "team/app", Kind: ociref.KindBlobs, Ref: d.String(), Method: http.MethodGet}
	return c, r, data, log
}

// TestStalledBodyResumes: an upstream that sends part of a blob and then
// nothing is a broken transfer once the stall window passes, and the
// body continues by Range from a second answer.
func TestStalledBodyResumes(t *testing.T) {
	timers := newStallTimers()
	c, r, data, log := stallFixture(t, cutAt, func(n int) bool { return n == 1 }, withStallTimers(timers.afterFunc))
	resp, err := c.Fetch(testCtx(t), r)
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	defer resp.Body.Close()
	got := make([]byte, cutAt)
	if _, err := io.ReadFull(resp.Body, got); err != nil {
		t.Fatalf("reading the bytes sent before the stall: %v", err)
	}
	timers.fire(t, 0) // the upstream has sent nothing for the window
	rest, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read after the stall: %v", err)
	}
	if got = append(got, rest...); !bytes.Equal(got, data) {
		t.Fatalf("got %d bytes, not the blob", len(got))
	}
	if want := []string{"", "bytes=100000-"}; !slices.Equal(log.get(), want) {
		t.Errorf("Range headers = %q, want %q", log.get(), want)
	}
	timers.mu.Lock()
	d := timers.timers[0].d
	timers.mu.Unlock()
	if d != DefaultStallTimeout {
		t.Errorf("stall window = %s, want DefaultStallTimeout", d)
	}
}

// TestStalledBodyFails: when every answer stalls, the body fails once the
// resume budget is spent, with an error that says it stalled; it never
// ends as if complete.
func TestStalledBodyFails(t *testing.T) {
	timers := newStallTimers()
	c, r, _, log := stallFixture(t, 0, func(int) bool { return true }, withStallTimers(timers.afterFunc))
	resp, err := c.Fetch(testCtx(t), r)
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	defer resp.Body.Close()
	done := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(resp.Body)
		done <- err
	}()
	for i := 0; i <= maxResumes; i++ {
		timers.waitCreated(t, i)
		timers.fire(t, i)
	}
	select {
	case err = <-done:
	case <-time.After(10 * time.Second): // bounds a failing test only
		t.Fatal("the body is still reading after every stall window passed")
	}
	if !errors.Is(err, ErrStalled) || !errors.Is(err, ErrResume) {
		t.Fatalf("err = %v, want ErrResume wrapping ErrStalled", err)
	}
	if n := len(log.get()); n != maxResumes+1 {
		t.Errorf("requests = %d, want %d", n, maxResumes+1)
	}
}

// TestStalledManifestBody: a body that is not resumable fails with
// ErrStalled once the window passes.
func TestStalledManifestBody(t *testing.T) {
	reg := registrytest.Start(t)
	img := reg.PushSingleImage(t, "team/app", "v1", 10)
	reg.SetFault(reg.Stall(0, registrytest.NewGate(), registrytest.Route(http.MethodGet, registrytest.KindManifests)))
	timers := newStallTimers()
	c := newTestClient(t, reg.URL(), withStallTimers(timers.afterFunc))
	resp, err := c.Fetch(testCtx(t), manifestRequest("team/app", img.Tag))
	if err != nil {
		t.Fatalf("Fetch: %v", err)
	}
	defer resp.Body.Close()
	timers.fire(t, 0)
	if _, err := io.ReadAll(resp.Body); !errors.Is(err, ErrStalled) {
		t.Fatalf("err = %v, want ErrStalled", err)
	}
}

// TestStallTimeoutOption: zero is the default, a negative value turns the
// watch off.
func TestStallTimeoutOption(t *testing.T) {
	for _, tt := range []struct {
		in, want time.Duration
	}{{0, DefaultStallTimeout}, {time.Second, time.Second}, {NoLimit, NoLimit}} {
		cfg := defaultConfig()
		WithStallTimeout(tt.in)(&cfg)
		if cfg.stallTimeout != tt.want {
			t.Errorf("WithStallTimeout(%s): %s, want %s", tt.in, cfg.stallTimeout, tt.want)
		}
	}
}
