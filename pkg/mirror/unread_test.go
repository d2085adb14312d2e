package mirror

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"nodecache/internal/registrytest"
	"nodecache/pkg/diskstore"
)

// manualTimers stands in for time.AfterFunc: its timers fire only when
// the test says, and armed gets a value each time one is armed.
type manualTimers struct {
	armed chan struct{}
	// mu guards timers.
	mu     sync.Mutex
	timers []func()
}

func newManualTimers() *manualTimers { return &manualTimers{armed: make(chan struct{}, 64)} }

func (m *manualTimers) afterFunc(_ time.Duration, f func()) func() bool {
	m.mu.Lock()
	m.timers = append(m.timers, f)
	m.mu.Unlock()
	m.armed <- struct{}{}
	return func() bool { return true }
}

// fireAll fires every timer ever armed, disarmed or not, as a real timer
// that was already firing when it was stopped would: only the current one
// may act.
func (m *manualTimers) fireAll() {
	m.mu.Lock()
	fs := append([]func(){}, m.timers...)
	m.mu.Unlock()
	for _, f := range fs {
		f()
	}
}

// logWatch is a logger whose records with message msg reach seen.
type logWatch struct {
	slog.Handler
	msg  string
	seen chan struct{}
}

func (l *logWatch) Enabled(context.Context, slog.Level) bool { return true }

func (l *logWatch) Handle(ctx context.Context, r slog.Record) error {
	if r.Message == l.msg {
		l.seen <- struct{}{}
	}
	return nil
}

func newLogWatch(msg string) (*slog.Logger, chan struct{}) {
	l := &logWatch{Handler: slog.DiscardHandler, msg: msg, seen: make(chan struct{}, 8)}
	return slog.New(l), l.seen
}

// within waits for ch, failing the test after a generous bound.
func within(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// heldBlob makes upstream send the first head bytes of data at d, then
// wait: until nodecache hangs up (gone is closed then), or until rest is
// closed, when it sends the rest.
func heldBlob(e *env, repo string, d digest.Digest, data []byte, head int, rest <-chan struct{}) (gone <-chan struct{}) {
	g := make(chan struct{})
	var once sync.Once
	e.up.SetFault(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || r.URL.Path != "/v2/"+repo+"/blobs/"+d.String() {
			return false
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.Write(data[:head])
		w.(http.Flusher).Flush()
		select {
		case <-rest:
			w.Write(data[head:])
		case <-r.Context().Done():
			once.Do(func() { close(g) })
		case <-e.t.Context().Done(): // a failed test ends
		}
		return true
	})
	return g
}

// TestUnreadFillStops: a client reads one byte of a cold 16 MiB blob and
// hangs up. When the grace ends, the fill stops: upstream sees nodecache
// hang up after the first MiB, nothing is committed and the temporary
// file is gone.
func TestUnreadFillStops(t *testing.T) {
	timers := newManualTimers()
	log, stopped := newLogWatch("fill stopped: nobody read it")
	m := NewMetrics()
	dir := t.TempDir()
	store, err := diskstore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnvOn(t, store, nil, withGraceTimer(timers.afterFunc), WithLogger(log), WithMetrics(m))
	data := registrytest.Random(61, 16<<20)
	d := e.up.PushBlob(t, "test/app", data)
	gone := heldBlob(e, "test/app", d, data, 1<<20, nil)

	resp, err := http.Get(e.url("/v2/test/app/blobs/" + d.String()))
	if err != nil {
		t.Fatal(err)
	}
	within(t, timers.armed, "the grace timer of the new fill")
	if _, err := io.ReadFull(resp.Body, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	within(t, timers.armed, "the grace timer after the client left")
	timers.fireAll()

	within(t, gone, "nodecache to hang up on upstream")
	within(t, stopped, "the fill to stop")
	if found, err := e.store.Lookup(d); err != nil || found.Presence != diskstore.Absent {
		t.Fatalf("after the stop the store has %v (%v), want nothing", found.Presence, err)
	}
	tmp, err := os.ReadDir(filepath.Join(dir, "tmp"))
	if err != nil || len(tmp) != 0 {
		t.Fatalf("temporary files left: %v (%v)", tmp, err)
	}
	if n := testutil.ToFloat64(m.fillsUnread); n != 1 {
		t.Fatalf("fills stopped unread = %v, want 1", n)
	}
}

// TestReadFillRunsOn: a fill with a client reading it is not stopped,
// whichever of its grace timers fires; nor is one that a second client
// joined during the grace after the first left; nor one that a peer
// reads through the peer API.
func TestReadFillRunsOn(t *testing.T) {
	for _, tc := range []struct {
		name string
		// read starts reading d, and returns the response and the bytes
		// read so far.
		read func(t *testing.T, e *env, d digest.Digest, timers *manualTimers) (*http.Response, []byte)
	}{
		{"client reading", func(t *testing.T, e *env, d digest.Digest, timers *manualTimers) (*http.Response, []byte) {
			return getHeld(t, e.url("/v2/test/app/blobs/"+d.String()), timers)
		}},
		{"client joined in the grace", func(t *testing.T, e *env, d digest.Digest, timers *manualTimers) (*http.Response, []byte) {
			first, _ := getHeld(t, e.url("/v2/test/app/blobs/"+d.String()), timers)
			first.Body.Close()
			within(t, timers.armed, "the grace timer after the first client left")
			resp, err := http.Get(e.url("/v2/test/app/blobs/" + d.String()))
			if err != nil {
				t.Fatal(err)
			}
			return resp, nil
		}},
		{"peer reading", func(t *testing.T, e *env, d digest.Digest, timers *manualTimers) (*http.Response, []byte) {
			peerAPI := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				e.mirror.ServePeer(w, r, e.up.Host(), "test/app", d)
			}))
			t.Cleanup(peerAPI.Close)
			return getHeld(t, peerAPI.URL, timers)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			timers := newManualTimers()
			e := newEnv(t, nil, withGraceTimer(timers.afterFunc))
			data := registrytest.Random(62, 16<<20)
			d := e.up.PushBlob(t, "test/app", data)
			rest := make(chan struct{})
			heldBlob(e, "test/app", d, data, 1<<20, rest)

			resp, head := tc.read(t, e, d, timers)
			defer resp.Body.Close()
			timers.fireAll()
			close(rest)
			got, err := io.ReadAll(resp.Body)
			got = append(head, got...)
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("read %d of %d bytes: %v", len(got), len(data), err)
			}
			if _, err := e.store.Stat(d); err != nil {
				t.Fatalf("not committed: %v", err)
			}
		})
	}
}

// getHeld GETs url, a cold blob whose upstream holds its body, and reads
// its first byte: the fill is running, and this client is in it.
func getHeld(t *testing.T, url string, timers *manualTimers) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	within(t, timers.armed, "the grace timer of the new fill")
	first := make([]byte, 1)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatal(err)
	}
	return resp, first
}

// TestNearlyDone: a fill close to its end is not stopped.
func TestNearlyDone(t *testing.T) {
	for _, tc := range []struct {
		size, written int64
		want          bool
	}{
		{-1, 1 << 30, false},
		{100 << 20, 1 << 20, false},
		{100 << 20, 89 << 20, false},
		{100 << 20, 90 << 20, true},
		{3 << 20, 0, true},
		{1 << 30, 1<<30 - 4<<20, true},
	} {
		c := &fillClients{size: tc.size}
		c.written.Store(tc.written)
		if got := c.nearlyDone(); got != tc.want {
			t.Errorf("size %d, written %d: nearlyDone %v, want %v", tc.size, tc.written, got, tc.want)
		}
	}
}

// TestUnreadFillGraceOff: with NoLimit no timer is armed at all.
func TestUnreadFillGraceOff(t *testing.T) {
	s := New(nil, nil, WithUnreadFillGrace(NoLimit), withGraceTimer(func(time.Duration, func()) func() bool {
		t.Fatal("a grace timer was armed")
		return nil
	}))
	if c := s.newFillClients(1<<30, func(error) {}); c != nil {
		t.Fatal("fill clients counted with the grace off")
	}
}

// TestEndedFillArmsNoTimer: once a fill has ended, its pending timer is
// disarmed and a client leaving arms none.
func TestEndedFillArmsNoTimer(t *testing.T) {
	timers := newManualTimers()
	s := New(nil, nil, withGraceTimer(timers.afterFunc))
	var stops int
	c := s.newFillClients(1<<30, func(error) { stops++ })
	<-timers.armed
	c.join()
	c.ended()
	c.leave()
	select {
	case <-timers.armed:
		t.Fatal("a client leaving an ended fill armed a timer")
	default:
	}
	timers.fireAll()
	if stops != 0 {
		t.Fatalf("an ended fill was stopped %d times", stops)
	}
}
